"""95 % bootstrap intervals of loclab's metrics, straight from predictions and ground truth.

Each function builds the per-image statistics of one metric and calls :func:`loclab.metrics.bootstrap.bootstrap_ci`
(resampling images, ``resamples`` times, seeded); the keys follow the metric functions they mirror:

- :func:`ap_intervals` -- :func:`~loclab.metrics.ap.compute_ap`'s ``mAP{T}``, ``AP{T}``, ``*_voc07``, ``*_coco``.
- :func:`coco_ap_intervals` -- AP@[.5:.95] and AP75 of :mod:`loclab.metrics.ap_coco` (``mAP50_95``, ``AP50_95``,
  ``mAP75``, ``AP75``).
- :func:`pck_intervals` / :func:`pck_swap_intervals` -- ``{threshold: (low, high)}`` of
  :func:`~loclab.metrics.pck_instances.compute_pck_visible` /
  :func:`~loclab.metrics.pck_instances.compute_pck_pair_aware`.
- :func:`mean_error_interval` -- :func:`~loclab.metrics.pck_instances.mean_error_px`.

Keypoint rows are instances; ``image_index [M]`` says which image each belongs to (default: one per image), so an
image's instances are resampled together.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from loclab.metrics.ap import ap_matches, keep_top_k_per_image_class
from loclab.metrics.ap_coco import AREA_RANGES, IOU_THRESHOLDS, MAX_DETECTIONS, match_in_area
from loclab.metrics.ap_matching import Detections, GroundTruth, MatchResult
from loclab.metrics.ap_weighted import (
    ClassAPStatistic,
    CurveCounts,
    curve_counts,
    curve_rows,
    gt_counts,
    mean_over_classes,
)
from loclab.metrics.bootstrap import (
    BOOTSTRAP_LEVEL,
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    ImageStatistic,
    RatioStatistic,
    bootstrap_ci,
    bootstrap_values,
    per_image_sums,
    percentile_interval,
)
from loclab.metrics.pck import DEFAULT_THRESHOLDS, ArrayLike
from loclab.metrics.pck_instances import Norm, error_sums, pck_hits, pck_hits_pair_aware
from loclab.ops.keypoint_pairs import Pairs

__all__ = ["ap_intervals", "coco_ap_intervals", "mean_error_interval", "pck_intervals", "pck_swap_intervals"]

Interval = tuple[float, float]


def _interval(statistic: ImageStatistic, resamples: int, seed: int, level: float) -> Interval:
    low, high = bootstrap_ci(statistic, resamples, seed, level)
    return float(low), float(high)


def _class_ids(dets: Detections, gts: GroundTruth, class_names: Mapping[int, str] | None) -> list[int]:
    return sorted(set(gts.category_id.tolist()) | set(dets.category_id.tolist()) | set(class_names or {}))


def _counts(dets: Detections, match: MatchResult, gts: GroundTruth, class_ids: list[int]) -> CurveCounts:
    return curve_counts(curve_rows(dets, match, gts.image_ids, class_ids), gt_counts(gts, class_ids))


def _ap_keys(curves: tuple[CurveCounts, ...], conventions: dict[str, str], keys: list[Any],
             resamples: int, seed: int, level: float) -> dict[str, Any]:
    """Intervals of the mean and per-class AP for each ``{"mAP..." key: convention}``, from one set of resamples;
    the per-class key is the mean key without its leading ``m``."""
    per_class = bootstrap_values(ClassAPStatistic(curves, tuple(conventions.values())), resamples, seed)  # [R, K, C]
    low, high = percentile_interval(per_class, level)
    mean_low, mean_high = percentile_interval(mean_over_classes(per_class), level)
    result: dict[str, Any] = {}
    for c, mean_key in enumerate(conventions):
        result[mean_key] = (float(mean_low[c]), float(mean_high[c]))
        result[mean_key[1:]] = {key: (float(low[c, k]), float(high[c, k])) for k, key in enumerate(keys)}
    return result


def ap_intervals(
    predictions: Detections,
    ground_truths: GroundTruth,
    iou_threshold: float = 0.5,
    *,
    class_names: Mapping[int, str] | None = None,
    max_detections_per_image_class: int | None = None,
    match_rule: Literal["coco", "voc"] = "coco",
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    level: float = BOOTSTRAP_LEVEL,
) -> dict[str, Any]:
    """Intervals ``(low, high)`` of :func:`~loclab.metrics.ap.compute_ap`'s numbers, under the same arguments.

    Returns:
        ``{"mAP{T}": ..., "AP{T}": {class: ...}, "mAP{T}_voc07": ..., "AP{T}_voc07": {...}, "mAP{T}_coco": ...,
        "AP{T}_coco": {...}}`` with ``T = round(100 * iou_threshold)`` and ``compute_ap``'s class keys; NaN bounds
        for a class without ground truth.
    """
    dets, match, coco_match = ap_matches(predictions, ground_truths, iou_threshold,
                                         max_detections_per_image_class=max_detections_per_image_class,
                                         match_rule=match_rule)
    class_ids = _class_ids(dets, ground_truths, class_names)
    keys = [class_names.get(c, c) if class_names else c for c in class_ids]
    tag = round(100 * iou_threshold)
    voc = {f"mAP{tag}": "voc", f"mAP{tag}_voc07": "voc07"}
    coco = {f"mAP{tag}_coco": "coco"}
    curves = (_counts(dets, match, ground_truths, class_ids),)
    if coco_match is match:
        return _ap_keys(curves, {**voc, **coco}, keys, resamples, seed, level)
    coco_curves = (_counts(dets, coco_match, ground_truths, class_ids),)
    return {**_ap_keys(curves, voc, keys, resamples, seed, level),
            **_ap_keys(coco_curves, coco, keys, resamples, seed, level)}


def coco_ap_intervals(
    predictions: Detections,
    ground_truths: GroundTruth,
    *,
    class_names: Mapping[int, str] | None = None,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    level: float = BOOTSTRAP_LEVEL,
) -> dict[str, Any]:
    """Intervals of COCO's AP@[.5:.95] and AP75 (area all, 100 detections per image and class):
    ``{"mAP50_95": (low, high), "AP50_95": {class: ...}, "mAP75": ..., "AP75": {...}}``."""
    dets = keep_top_k_per_image_class(predictions, MAX_DETECTIONS[-1])
    class_ids = _class_ids(dets, ground_truths, class_names)
    keys = [class_names.get(c, c) if class_names else c for c in class_ids]
    curves = tuple(_counts(dets, match_in_area(dets, ground_truths, float(t), AREA_RANGES["all"]), ground_truths,
                           class_ids) for t in IOU_THRESHOLDS)
    t75 = int(np.flatnonzero(np.isclose(IOU_THRESHOLDS, 0.75))[0])
    return {**_ap_keys(curves, {"mAP50_95": "coco"}, keys, resamples, seed, level),
            **_ap_keys(curves[t75 : t75 + 1], {"mAP75": "coco"}, keys, resamples, seed, level)}


def _ratio_intervals(hits: np.ndarray, scored: np.ndarray, thresholds: Sequence[float], image_index: ArrayLike | None,
                     num_images: int | None, resamples: int, seed: int, level: float) -> dict[float, Interval]:
    index = None if image_index is None else np.asarray(image_index)
    statistic = RatioStatistic(per_image_sums(hits, index, num_images),
                               per_image_sums(scored, index, num_images)[:, None])
    low, high = bootstrap_ci(statistic, resamples, seed, level)
    return {float(t): (float(low[i]), float(high[i])) for i, t in enumerate(thresholds)}


def pck_intervals(
    predictions: ArrayLike, ground_truths: ArrayLike, thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    normalize_by: Norm = "bbox", *, visible: ArrayLike | None = None, image_index: ArrayLike | None = None,
    num_images: int | None = None, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
    level: float = BOOTSTRAP_LEVEL,
) -> dict[float, Interval]:
    """``{threshold: (low, high)}`` of standard PCK (:func:`~loclab.metrics.pck_instances.compute_pck_visible`).

    ``image_index [M]``: each instance's image in ``0..num_images-1`` (default ``max + 1`` images; pass
    ``num_images`` when the last images have no instance).
    """
    hits, scored = pck_hits(predictions, ground_truths, thresholds, normalize_by, visible=visible)
    return _ratio_intervals(hits.numpy(), scored.numpy(), thresholds, image_index, num_images, resamples, seed, level)


def pck_swap_intervals(
    predictions: ArrayLike, ground_truths: ArrayLike, pairs: Pairs, thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    normalize_by: Norm = "bbox", *, visible: ArrayLike | None = None, image_index: ArrayLike | None = None,
    num_images: int | None = None, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
    level: float = BOOTSTRAP_LEVEL,
) -> dict[float, Interval]:
    """``{threshold: (low, high)}`` of swap-aware PCK (:func:`~loclab.metrics.pck_instances.compute_pck_pair_aware`);
    arguments as :func:`pck_intervals`."""
    hits, scored = pck_hits_pair_aware(predictions, ground_truths, pairs, thresholds, normalize_by, visible=visible)
    return _ratio_intervals(hits.numpy(), scored.numpy(), thresholds, image_index, num_images, resamples, seed, level)


def mean_error_interval(
    predictions: ArrayLike, ground_truths: ArrayLike, *, visible: ArrayLike | None = None,
    image_index: ArrayLike | None = None, num_images: int | None = None, resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED, level: float = BOOTSTRAP_LEVEL,
) -> Interval:
    """``(low, high)`` of the mean pixel error (:func:`~loclab.metrics.pck_instances.mean_error_px`); arguments as
    :func:`pck_intervals`."""
    sums, counts = error_sums(predictions, ground_truths, visible=visible)
    index = None if image_index is None else np.asarray(image_index)
    statistic = RatioStatistic(per_image_sums(sums.numpy(), index, num_images),
                               per_image_sums(counts.numpy(), index, num_images))
    return _interval(statistic, resamples, seed, level)
