"""Heatmap vs regression on the validation split: PCK side by side, ambiguity ceiling, failure analysis."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from loclab.analysis.failures import failure_analysis, instance_failure_analysis
from loclab.analysis.translation import shift_images, translation_response
from loclab.data.datasets import decode_images
from loclab.engine.keypoints import load_keypoint_model, predict_keypoints
from loclab.engine.rundir import read_json
from loclab.engine.tasks import keypoint_split
from loclab.evaluation.keypoints import read_keypoint_predictions

TRANSLATION_SHIFT = 8  # px; the generator keeps every figure at least 10 px from the image border

METRIC_KEYS = ("pck", "pck_swap", "pck_argmax", "pck_swap_argmax", "per_keypoint", "per_keypoint_swap",
               "mean_error_px", "mean_error_px_swap", "decoding", "model")


def compare_keypoint_runs(heatmap_dir: Path, regression_dir: Path, data_root: Path, threshold: float) -> dict[str, Any]:
    """Numbers for the keypoint comparison (both runs must have been evaluated on the val split)."""
    split = keypoint_split(data_root, "val")
    gts = split.keypoints
    image_ids = [r.id for r in split.images]
    runs = {"heatmap": Path(heatmap_dir), "regression": Path(regression_dir)}
    metrics = {name: read_json(d / "metrics.json") for name, d in runs.items()}
    preds = {name: read_keypoint_predictions(d / "predictions.json", split) for name, d in runs.items()}
    if split.format != "reference":
        return _compare_instances(split, metrics, preds, threshold)
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
        "models": {name: {k: m[k] for k in METRIC_KEYS if k in m} for name, m in metrics.items()},
        "failures": failures,
        "translation": translation,
    }


TRANSLATION_NOT_RUN = ("not run on this dataset: the test moves whole generated stick-figure images across their "
                       "white background, which a user's photos (many instances, content up to the border) do not have")


def _compare_instances(split, metrics: dict[str, Any], preds: dict[str, Any], threshold: float) -> dict[str, Any]:
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
        "failures": failures,
        "translation": None,
        "translation_note": TRANSLATION_NOT_RUN,
    }
