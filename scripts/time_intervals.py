"""Evaluation time with and without the bootstrap intervals, side by side.

Usage:
    python scripts/time_intervals.py [--detector RUN] [--keypoints RUN] [--detections GT PRED ...] [--repeats 2]

``--detector`` / ``--keypoints``: evaluate a run as ``loclab eval detector|keypoints --run RUN`` does (predict the
val split, score it, write metrics.json, predictions.json and per_image.npz in RUN), with ``--resamples 0`` and
with the default 1,000, alternating, and print the best wall time of each. ``--detections GT PRED``: the same for
scoring a detections file alone (``loclab eval detections``), which isolates the cost of the metrics from the
model's forward passes. Prints one line per case: seconds without, with, and their ratio.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

from loclab.evaluation.detection import evaluate_detector_run, score_detection_files
from loclab.evaluation.keypoints import evaluate_keypoint_run
from loclab.metrics.bootstrap import BOOTSTRAP_RESAMPLES


def best_of(repeats: int, evaluate: Callable[[int], object]) -> tuple[float, float]:
    """Best wall time without and with intervals, the two alternating so that machine load hits both alike."""
    times: dict[int, list[float]] = {0: [], BOOTSTRAP_RESAMPLES: []}
    for _ in range(repeats):
        for resamples in times:
            start = time.perf_counter()
            evaluate(resamples)
            times[resamples].append(time.perf_counter() - start)
    return min(times[0]), min(times[BOOTSTRAP_RESAMPLES])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detector", type=Path, help="an evaluated or trained detector run directory")
    parser.add_argument("--keypoints", type=Path, help="a keypoint run directory")
    parser.add_argument("--detections", type=Path, nargs=2, action="append", default=[], metavar=("GT", "PRED"),
                        help="a detections file to score (repeatable)")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    cases: list[tuple[str, Callable[[int], object]]] = []
    if args.detector:
        cases.append((f"eval detector --run {args.detector}",
                      lambda r: evaluate_detector_run(args.detector, progress=False, resamples=r)))
    if args.keypoints:
        cases.append((f"eval keypoints --run {args.keypoints}",
                      lambda r: evaluate_keypoint_run(args.keypoints, resamples=r)))
    for gt, pred in args.detections:
        cases.append((f"eval detections --pred {pred}",
                      lambda r, gt=gt, pred=pred: score_detection_files(gt, pred, resamples=r)))
    print(f"{'case':<60} {'no intervals':>13} {'1000 resamples':>15} {'ratio':>6}")
    for name, evaluate in cases:
        without, with_intervals = best_of(args.repeats, evaluate)
        print(f"{name:<60} {without:>12.2f}s {with_intervals:>14.2f}s {with_intervals / without:>6.2f}")


if __name__ == "__main__":
    main()
