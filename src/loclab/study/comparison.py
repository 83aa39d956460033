"""Heatmap vs regression on the validation split: PCK side by side, ambiguity ceiling, failure analysis, and
paired differences with their intervals (``differences``, :func:`paired_differences`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from loclab.analysis.failures import failure_analysis, instance_failure_analysis
from loclab.analysis.translation import shift_images, translation_response
from loclab.data.datasets import decode_images
from loclab.engine.keypoints import load_keypoint_model, predict_keypoints
from loclab.engine.rundir import read_json
from loclab.engine.tasks import keypoint_split
from loclab.evaluation.keypoints import read_keypoint_predictions
from loclab.evaluation.per_image import PerImageError
from loclab.evaluation.significance import difference, load_runs, run_statistic
from loclab.metrics.bootstrap import RatioStatistic
from loclab.metrics.pck import ceiling_correct_per_image

TRANSLATION_SHIFT = 8  # px; the generator keeps every figure at least 10 px from the image border

METRIC_KEYS = ("pck", "pck_ci95", "pck_swap", "pck_swap_ci95", "pck_argmax", "pck_swap_argmax", "per_keypoint",
               "per_keypoint_swap", "mean_error_px", "mean_error_px_ci95", "mean_error_px_swap",
               "mean_error_px_swap_ci95", "decoding", "model")


def paired_differences(heatmap_dir: Path, regression_dir: Path, ceiling_gts: Any = None,
                       normalize_by: str = "bbox", image_ids: list[int] | None = None) -> dict[str, Any]:
    """Paired bootstrap differences on the same validation images (:mod:`loclab.evaluation.significance`):

    ``heatmap_vs_regression``: heatmap minus regression, ``{"pck": {t: record}, "pck_swap": {...},
    "mean_error_px": record}`` (swap-aware only with symmetric pairs); ``heatmap_vs_ceiling`` (with ``ceiling_gts``,
    the ground truths ``[N, K, 2]`` of the reference figures of ``image_ids``, which must be the evaluated images in
    their order): the heatmap's standard
    PCK minus the ambiguity ceiling, image by image (each image's expected correct keypoints at the ceiling,
    :func:`~loclab.metrics.pck.ceiling_correct_per_image`). A record is ``{"delta", "ci95", "significant"}``.
    Without per-image statistics: ``{"note": why}``.
    """
    try:
        hm, reg = load_runs([heatmap_dir, regression_dir])
    except PerImageError as err:
        return {"note": f"no paired differences: {err}"}
    thresholds = list(hm.labels)

    def diff(metric: str) -> dict[str, Any]:
        return difference(run_statistic([hm], metric), run_statistic([reg], metric))

    versus = {"pck": {t: diff(f"pck[{t}]") for t in thresholds}}
    if "pck_swap.hits" in hm.arrays and "pck_swap.hits" in reg.arrays:
        versus["pck_swap"] = {t: diff(f"pck_swap[{t}]") for t in thresholds}
    versus["mean_error_px"] = diff("mean_error_px")
    out: dict[str, Any] = {"heatmap_vs_regression": versus}
    if ceiling_gts is not None and not np.array_equal(hm.image_ids, np.asarray(image_ids)):
        out["heatmap_vs_ceiling"] = {"note": "not computed: the heatmap run was evaluated on other images"}
    elif ceiling_gts is not None:
        expected = ceiling_correct_per_image(ceiling_gts, [float(t) for t in thresholds], normalize_by).numpy()
        scored = hm.arrays["pck.scored"].astype(np.float64)
        out["heatmap_vs_ceiling"] = {"pck": {
            t: difference(run_statistic([hm], f"pck[{t}]"), RatioStatistic(expected[:, i], scored))
            for i, t in enumerate(thresholds)}}
    return out


def compare_keypoint_runs(heatmap_dir: Path, regression_dir: Path, data_root: Path, threshold: float) -> dict[str, Any]:
    """Numbers for the keypoint comparison (both runs must have been evaluated on the val split)."""
    split = keypoint_split(data_root, "val")
    gts = split.keypoints
    image_ids = [r.id for r in split.images]
    runs = {"heatmap": Path(heatmap_dir), "regression": Path(regression_dir)}
    metrics = {name: read_json(d / "metrics.json") for name, d in runs.items()}
    preds = {name: read_keypoint_predictions(d / "predictions.json", split) for name, d in runs.items()}
    if split.format != "reference":
        return _compare_instances(split, metrics, preds, threshold, runs)
    failures = failure_analysis(preds["heatmap"], preds["regression"], gts, image_ids, threshold=threshold)
    images = decode_images(split.images, "L", progress=False, source=split.annotation_file)
    moved = shift_images(images, TRANSLATION_SHIFT)
    translation = {}
    for name, run in runs.items():
        model, cfg = load_keypoint_model(run / metrics[name]["checkpoint"])
        translation[name] = translation_response(predict_keypoints(model, cfg, images),
                                                 predict_keypoints(model, cfg, moved), TRANSLATION_SHIFT)
    return {
        "split": "val",
        "num_images": len(image_ids),
        "pck_rule": metrics["heatmap"]["pck_rule"],
        "ceiling": metrics["heatmap"]["ceiling"],
        "guessed_labels": metrics["heatmap"].get("guessed_labels"),
        "models": {name: {k: m[k] for k in METRIC_KEYS if k in m} for name, m in metrics.items()},
        "differences": paired_differences(runs["heatmap"], runs["regression"],
                                          gts if metrics["heatmap"].get("ceiling") else None,
                                          metrics["heatmap"]["normalize_by"], image_ids),
        "failures": failures,
        "translation": translation,
    }


TRANSLATION_NOT_RUN = ("not run on this dataset: the test moves whole generated stick-figure images across their "
                       "white background, which a user's photos (many instances, content up to the border) do not have")


def _compare_instances(split, metrics: dict[str, Any], preds: dict[str, Any], threshold: float,
                       runs: dict[str, Path]) -> dict[str, Any]:
    """The comparison on a user's own keypoint data: per instance, labelled keypoints only, every symmetric pair
    swap-aware; no ambiguity ceiling (the metrics say why in ``ceiling_note``) and no translation test."""
    failures = instance_failure_analysis(preds["heatmap"], preds["regression"], split.keypoints, split.visible,
                                         split.keypoint_names, split.symmetric_pairs, threshold=threshold)
    return {
        "split": "val",
        "num_images": len(split),
        "num_instances": split.num_instances,
        "pck_rule": metrics["heatmap"]["pck_rule"],
        "ceiling": metrics["heatmap"].get("ceiling"),
        "ceiling_note": metrics["heatmap"].get("ceiling_note"),
        "swap_pairs": metrics["heatmap"].get("swap_pairs", []),
        "models": {name: {k: m[k] for k in METRIC_KEYS if k in m} for name, m in metrics.items()},
        "differences": paired_differences(runs["heatmap"], runs["regression"]),
        "failures": failures,
        "translation": None,
        "translation_note": TRANSLATION_NOT_RUN,
    }
