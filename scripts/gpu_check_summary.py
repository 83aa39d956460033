"""The table and JSON of ``scripts/gpu_check.sh``: read what its commands wrote, compare with the GPU targets.

Usage: ``python scripts/gpu_check_summary.py WORK OUT.json [--bench BENCH.json]``. ``WORK`` is the folder the
shell script worked in: ``bench.json`` (``loclab bench --json``), ``detector_*`` run directories (``loclab
train`` + ``loclab eval``, each with ``wall_s`` written beside it), ``study/`` (``loclab run``) and
``study_wall_s``. Anything missing is reported as not measured, never guessed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
from pathlib import Path
from typing import Any

# What the GPU path is aiming for on an H200 (docs/gpu.md); a row says how far a measurement is from its target.
TARGETS = {
    "detector[loclab] train images/s": 8000,
    "detector train FLOP/s fraction of matmul peak": 0.30,
    "heatmap train images/s": 20000,
    "fast detector mAP@0.5": 0.93,
    "fast detector training s": 10,
    "quick preset wall s": 30,
}


def _read(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def _seconds(path: Path) -> float | None:
    return float(path.read_text()) if path.is_file() else None


def bench_summary(bench: dict[str, Any] | None) -> dict[str, Any] | None:
    """The side-by-side numbers of ``loclab bench --json``: images/s per workload and path, FLOP rates, peak."""
    if bench is None:
        return None
    rows = {}
    for row in bench["rows"]:
        rows[row["name"]] = {k: row.get(k) for k in ("fp32_eager_img_s", "default_img_s", "speedup",
                                                     "train_flops_per_image", "fp32_eager_flop_s",
                                                     "default_flop_s", "default_peak_fraction")}
    return {"device": bench.get("device", "cpu"), "machine": bench.get("machine"), "batch": bench.get("batch", 16),
            "default_path": bench.get("default_path"), "matmul_peak_flops": bench.get("matmul_peak_flops"),
            "peak_flops": bench.get("peak_flops"), "rows": rows,
            "detector_reference_train_peak_fraction": bench.get("detector_train_peak_fraction"),
            "detector_reference_step_breakdown_s": bench.get("detector_step_breakdown", {}).get("breakdown_default")}


def run_summary(run: Path) -> dict[str, Any] | None:
    """One training run: batch, learning rate, epochs, training seconds, images/s, mAP, wall time."""
    log, config = _read(run / "training_log.json"), _read(run / "config.json")
    if log is None or config is None:
        return None
    metrics = _read(run / "metrics.json") or {}
    train = config["detector"]["train"]
    speeds = [r["images_per_s"] for r in log]
    return {"batch": train["batch_size"], "lr_scaling": train.get("lr_scaling", "none"),
            "effective_lr": config.get("effective_lr"), "epochs": len(log),
            "train_s": sum(r["train_time_s"] for r in log), "epochs_s": sum(r["epoch_time_s"] for r in log),
            "images_per_s_median": statistics.median(speeds), "images_per_s_best": max(speeds),
            "mAP50": metrics.get("mAP50"), "mAP70": metrics.get("mAP70"), "wall_s": _seconds(run / "wall_s")}


def study_summary(work: Path) -> dict[str, Any] | None:
    wall = _seconds(work / "study_wall_s")
    if wall is None:
        return None
    stages = {p.stem: (_read(p) or {}).get("wall_time_s") for p in sorted((work / "study" / "stages").glob("*.json"))}
    return {"wall_s": wall, "stages_s": stages}


def _fmt(value: Any, spec: str = ".3g") -> str:
    return "not measured" if value is None else format(value, spec)


def table(summary: dict[str, Any]) -> list[str]:
    """The printed table: measurement, value, target (where one is set)."""
    lines = [f"loclab GPU check — {summary['machine']}, torch {summary['torch']}, {summary['date']}"]
    if summary.get("dry_run"):
        lines.append("DRY RUN on this machine's CPU with tiny data: these numbers say nothing about a GPU")
    rows: list[tuple[str, str, str]] = []
    bench = summary["bench"]
    if bench is not None:
        rows.append(("bench device / batch / default path", f"{bench['device']} / {bench['batch']} / "
                     f"{bench['default_path']}", ""))
        peak = bench["peak_flops"]
        rows.append(("matmul peak seen (best of the run), TFLOP/s", _fmt(peak and peak / 1e12), ""))
        for name, row in bench["rows"].items():
            target = TARGETS.get(f"{name} images/s", "") if "train" in name else ""
            rows.append((f"{name}: fp32 eager / default images/s",
                         f"{_fmt(row['fp32_eager_img_s'], '.1f')} / {_fmt(row['default_img_s'], '.1f')} "
                         f"({_fmt(row['speedup'], '.2f')}x)", str(target)))
            if row.get("default_peak_fraction") is not None:
                rows.append((f"{name}: default FLOP/s, fraction of peak",
                             f"{row['default_flop_s'] / 1e12:.2f} TFLOP/s, {row['default_peak_fraction']:.3f}",
                             str(TARGETS["detector train FLOP/s fraction of matmul peak"])
                             if name.startswith("detector") and "train" in name else ""))
    else:
        rows.append(("loclab bench", "not measured", ""))
    for key, label in (("detector_fast", "fast detector"), ("detector_fast_large_batch", "fast detector, large batch")):
        run = summary[key]
        if run is None:
            rows.append((label, "not measured", ""))
            continue
        rows.append((f"{label}: batch, lr ({run['lr_scaling']} scaling)",
                     f"{run['batch']}, {_fmt(run['effective_lr'], '.3g')}", ""))
        rows.append((f"{label}: training s ({run['epochs']} epochs) / wall s with eval",
                     f"{run['train_s']:.1f} / {_fmt(run['wall_s'], '.1f')}", str(TARGETS["fast detector training s"])))
        rows.append((f"{label}: images/s median / best epoch",
                     f"{run['images_per_s_median']:.0f} / {run['images_per_s_best']:.0f}", ""))
        rows.append((f"{label}: mAP@0.5 / mAP@0.7", f"{_fmt(run['mAP50'])} / {_fmt(run['mAP70'])}",
                     str(TARGETS["fast detector mAP@0.5"])))
    study = summary["study_quick"]
    rows.append(("loclab run --preset quick, wall s", _fmt(study and study["wall_s"], ".1f"),
                 str(TARGETS["quick preset wall s"])))
    if study:
        for stage, seconds in study["stages_s"].items():
            rows.append((f"  stage {stage}, s", _fmt(seconds, ".1f"), ""))
    if summary["failed_steps"]:
        rows.append(("steps that failed (their output is above)", ", ".join(summary["failed_steps"]), ""))
    width = max(len(r[0]) for r in rows)
    lines += [f"{'measurement':{width}s}  {'value':28s}  target", "-" * (width + 40)]
    lines += [f"{a:{width}s}  {b:28s}  {c}" for a, b, c in rows]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--bench", type=Path, default=None, help="bench JSON (default: WORK/bench.json)")
    parser.add_argument("--dry-run", action="store_true", help="mark the summary as a CPU dry run")
    args = parser.parse_args(argv)
    import torch

    from loclab.atomic import write_json_atomic
    from loclab.engine.rundir import machine_description

    work = args.work
    summary = {
        "date": datetime.date.today().isoformat(),
        "machine": machine_description(),
        "torch": torch.__version__,
        "dry_run": args.dry_run,
        "targets": TARGETS,
        "bench": bench_summary(_read(args.bench or work / "bench.json")),
        "detector_fast": run_summary(work / "detector_fast"),
        "detector_fast_large_batch": run_summary(work / "detector_fast_large_batch"),
        "study_quick": study_summary(work),
        "failed_steps": (work / "failed").read_text().split() if (work / "failed").is_file() else [],
    }
    print("\n".join(table(summary)))
    write_json_atomic(args.out, summary, indent=1)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
