"""Average precision for detection: the precision-recall curve of a matching and three ways to integrate it (VOC
all-point, VOC07 11-point, COCO 101-point). Pure numpy, no plotting.

The tables (:class:`~loclab.metrics.ap_matching.Detections`, :class:`~loclab.metrics.ap_matching.GroundTruth`)
and the matching of detections to ground truth, difficult boxes included, are :mod:`loclab.metrics.ap_matching`;
its docstring gives the rules. The three numbers of :func:`compute_ap` differ only by how the curve is integrated,
except where difficult boxes or the devkit's rule for taken boxes (``match_rule="voc"``) give the COCO number a
matching of its own (:func:`ap_matches`). COCO's other summary numbers (AP@[.5:.95], by size, AR) are
:mod:`loclab.metrics.ap_coco`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

from loclab.metrics.ap_matching import Detections, GroundTruth, MatchResult, match_detections

__all__ = [
    "COCO_RECALL_THRESHOLDS",
    "VOC07_RECALL_THRESHOLDS",
    "ap_coco_101point",
    "ap_from_matches",
    "ap_matches",
    "ap_voc07_11point",
    "ap_voc_allpoint",
    "compute_ap",
    "curve_order",
    "keep_top_k_per_image",
    "keep_top_k_per_image_class",
    "precision_recall_curve",
    "rank_within_image_class",
]  # fmt: skip


VOC07_RECALL_THRESHOLDS = np.arange(0.0, 1.1, 0.1)  # as the devkit: 0.30000000000000004 and all
COCO_RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)  # as pycocotools' params.recThrs


def _rank_within_groups(scores: np.ndarray, *group_keys: np.ndarray) -> np.ndarray:
    """0-based rank of each row by decreasing score (ties in input order) among rows with equal group keys."""
    count = len(scores)
    rows = np.arange(count)
    order = np.lexsort((rows, -scores, *reversed(group_keys)))  # lexsort: last key is the primary one
    new_group = np.zeros(count, dtype=bool)
    new_group[:1] = True
    for key in group_keys:
        sorted_key = key[order]
        new_group[1:] |= sorted_key[1:] != sorted_key[:-1]
    group_start = np.maximum.accumulate(np.where(new_group, rows, 0))
    ranks = np.empty(count, dtype=np.int64)
    ranks[order] = rows - group_start
    return ranks


def keep_top_k_per_image(dets: Detections, k: int) -> Detections:
    """The ``k`` highest-scored detections of each image over all classes (ties in input order); order kept."""
    return dets.select(_rank_within_groups(dets.scores, dets.image_id) < k)


def rank_within_image_class(dets: Detections) -> np.ndarray:
    """0-based rank ``[D]`` of each detection by decreasing score among those of its image and class (ties in
    input order): the order in which matching visits them."""
    return _rank_within_groups(dets.scores, dets.image_id, dets.category_id)


def keep_top_k_per_image_class(dets: Detections, k: int) -> Detections:
    """The ``k`` highest-scored detections of each (image, class) pair (ties in input order); order kept.

    This is pycocotools' ``maxDets`` rule: despite its "per image" description, ``COCOeval`` applies the cap to
    the detections of one image *and one category* (``evaluateImg`` gets ``_dts[imgId, catId]``).
    """
    return dets.select(rank_within_image_class(dets) < k)


def curve_order(dets: Detections, match: MatchResult, category_id: int) -> np.ndarray:
    """Rows of the counted detections of one class in the order of its precision-recall curve, ``ndarray[Dc]``.

    Decreasing score; ties in score are ordered by image id, then input order, as pycocotools does (per-image
    lists concatenated in image order, then a stable sort on score); the order of tied detections changes the
    curve. Detections ignored by the matching (absorbed by a difficult box) are left out: neither true nor false
    positives, they would only repeat the previous point, which changes no AP convention (devkit and pycocotools
    keep them as such repeated points).
    """
    selected = dets.category_id == category_id
    if match.is_ignored is not None:
        selected &= ~match.is_ignored
    rows = np.flatnonzero(selected)
    return rows[np.lexsort((rows, dets.image_id[rows], -dets.scores[rows]))]


def precision_recall_curve(dets: Detections, match: MatchResult, category_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative recall and precision of one class, detection by detection in decreasing score.

    The detections and their order are :func:`curve_order`'s.

    Returns:
        recall (ndarray[Dc]), precision (ndarray[Dc]): after the first ``1..Dc`` counted detections of the class.
        Recall is NaN throughout when the class has no ground truth.
    """
    rows = curve_order(dets, match, category_id)
    tp, fp = np.cumsum(match.is_tp[rows]), np.cumsum(~match.is_tp[rows])
    num_gt = match.num_gt.get(int(category_id), 0)
    recall = tp / num_gt if num_gt > 0 else np.full(len(rows), np.nan)
    precision = tp / np.maximum(tp + fp, 1)
    return recall, precision


def _check_curve(recall: np.ndarray, precision: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    recall, precision = np.asarray(recall, np.float64).ravel(), np.asarray(precision, np.float64).ravel()
    if recall.shape != precision.shape:
        raise ValueError(f"recall and precision differ in length: {recall.shape[0]} vs {precision.shape[0]}")
    return recall, precision


def _envelope(precision: np.ndarray) -> np.ndarray:
    """Monotone (non-increasing) precision envelope: the best precision at this recall or any higher one."""
    return np.maximum.accumulate(precision[::-1])[::-1]


def ap_voc_allpoint(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC (2010+) all-point AP: the exact area under the monotone precision envelope.

    Args:
        recall (ndarray[D]): cumulative recall in decreasing-score order (non-decreasing), as from
            :func:`precision_recall_curve`.
        precision (ndarray[D]): cumulative precision, same order.

    Returns:
        AP in ``[0, 1]``; 0 for an empty curve.
    """
    recall, precision = _check_curve(recall, precision)
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = _envelope(np.concatenate(([0.0], precision, [0.0])))
    steps = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def _sampled_envelope(recall: np.ndarray, precision: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Envelope precision at the first point whose recall reaches each threshold; 0 beyond the maximum recall."""
    if recall.size == 0:
        return np.zeros(len(thresholds))
    index = np.searchsorted(recall, thresholds, side="left")
    return np.where(index < len(recall), _envelope(precision)[np.minimum(index, len(recall) - 1)], 0.0)


def ap_voc07_11point(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC2007 11-point AP: mean over ``t in {0, 0.1, ..., 1}`` of the best precision at recall ``>= t``.

    The thresholds are ``np.arange(0, 1.1, 0.1)`` as in the devkit, so e.g. ``t = 0.30000000000000004``: a recall
    of exactly 3/10 does not reach it. Arguments as in :func:`ap_voc_allpoint`.
    """
    recall, precision = _check_curve(recall, precision)
    return float(np.mean(_sampled_envelope(recall, precision, VOC07_RECALL_THRESHOLDS)))


def ap_coco_101point(recall: np.ndarray, precision: np.ndarray) -> float:
    """COCO 101-point AP, exactly as pycocotools' ``COCOeval.accumulate``.

    Precision is made monotone (envelope from the right), then read at recall thresholds
    ``np.linspace(0, 1, 101)`` at ``np.searchsorted(recall, thresholds, side="left")``, 0 where a threshold is
    beyond the maximum recall, and averaged. Arguments as in :func:`ap_voc_allpoint`.
    """
    recall, precision = _check_curve(recall, precision)
    return float(np.mean(_sampled_envelope(recall, precision, COCO_RECALL_THRESHOLDS)))


def _finite_mean(values: Mapping[Any, float]) -> float:
    finite = [v for v in values.values() if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def ap_matches(
    predictions: Detections,
    ground_truths: GroundTruth,
    iou_threshold: float = 0.5,
    *,
    max_detections_per_image: int | None = None,
    max_detections_per_image_class: int | None = None,
    match_rule: Literal["coco", "voc"] = "coco",
) -> tuple[Detections, MatchResult, MatchResult]:
    """The detections :func:`compute_ap` scores (after the top-k caps) and its two matchings.

    Returns:
        ``(detections, voc_match, coco_match)``: the matching of the VOC all-point and VOC07 numbers (difficult boxes
        by the devkit's rule, taken boxes by ``match_rule``) and that of the COCO number (pycocotools' rules for
        both). They are the same object when no box is difficult and ``match_rule`` is ``"coco"``.
    """
    dets = predictions
    if max_detections_per_image is not None:
        dets = keep_top_k_per_image(dets, max_detections_per_image)
    if max_detections_per_image_class is not None:
        dets = keep_top_k_per_image_class(dets, max_detections_per_image_class)
    match = match_detections(dets, ground_truths, iou_threshold, match_rule=match_rule)
    coco_match = match  # the rules differ only when some box is difficult or taken boxes compete
    if match_rule != "coco" or (ground_truths.difficult is not None and ground_truths.difficult.any()):
        coco_match = match_detections(dets, ground_truths, iou_threshold, difficult_rule="coco")
    return dets, match, coco_match


def compute_ap(
    predictions: Detections,
    ground_truths: GroundTruth,
    iou_threshold: float = 0.5,
    *,
    class_names: Mapping[int, str] | None = None,
    max_detections_per_image: int | None = None,
    max_detections_per_image_class: int | None = None,
    match_rule: Literal["coco", "voc"] = "coco",
) -> dict[str, Any]:
    """Per-class AP and mAP under the three conventions, from one matching (two when some box is difficult: the
    devkit's rule for the VOC numbers and curves, pycocotools' for ``*_coco``; see :mod:`loclab.metrics.ap_matching`).

    Use a very low score threshold upstream: cutting detections at e.g. 0.5 truncates the curve and understates AP.

    Args:
        predictions: all detections of the split.
        ground_truths: the split's ground truth, including images without boxes; difficult boxes (its
            ``difficult`` flag) are not counted in ``num_gt`` and absorb detections without scoring them.
        iou_threshold: IoU for a true positive. Result keys are named after it: 0.5 gives ``"mAP50"``, 0.75 gives
            ``"mAP75"``.
        class_names: optional names for class ids; used as the per-class keys. Classes listed here but absent from
            the data still appear (with NaN AP).
        max_detections_per_image: keep only the top-k detections of each image over all classes before matching.
        max_detections_per_image_class: keep only the top-k detections of each (image, class) before matching;
            100 reproduces pycocotools' ``maxDets=100``.
        match_rule: ``"coco"`` (pycocotools' matching, the default) or ``"voc"`` (the devkit's: a detection whose
            best box is taken is a false positive) for the VOC all-point and VOC07 numbers and the curves;
            ``*_coco`` always follows pycocotools.

    Returns:
        With ``T = round(100 * iou_threshold)`` (e.g. 50)::

            {"mAP{T}": VOC all-point mAP (the headline),  "AP{T}": {class: AP},
             "mAP{T}_voc07": ..., "AP{T}_voc07": {...},   "mAP{T}_coco": ..., "AP{T}_coco": {...},
             "pr_curves": {class: {"recall": [...], "precision": [...]}},
             "num_gt": {class: count}, "iou_threshold": iou_threshold}

        ``class`` is the name from ``class_names`` when given, else the int id. The classes are every id in the
        ground truth, the detections or ``class_names``. A class without ground truth has AP NaN under every
        convention, empty curves, and is left out of the means; a mean over no class is NaN.
    """
    matches = ap_matches(predictions, ground_truths, iou_threshold, max_detections_per_image=max_detections_per_image,
                         max_detections_per_image_class=max_detections_per_image_class, match_rule=match_rule)
    return ap_from_matches(*matches, ground_truths, class_names=class_names)


def ap_from_matches(
    dets: Detections,
    match: MatchResult,
    coco_match: MatchResult,
    ground_truths: GroundTruth,
    *,
    class_names: Mapping[int, str] | None = None,
) -> dict[str, Any]:
    """:func:`compute_ap` from the output of :func:`ap_matches` (for callers that use the matchings too)."""
    iou_threshold = match.iou_threshold
    class_ids = set(ground_truths.category_id.tolist()) | set(dets.category_id.tolist()) | set(class_names or {})
    conventions = {"": ap_voc_allpoint, "_voc07": ap_voc07_11point, "_coco": ap_coco_101point}
    matches = {"": match, "_voc07": match, "_coco": coco_match}
    per_class: dict[str, dict[Any, float]] = {suffix: {} for suffix in conventions}
    curves: dict[Any, dict[str, list[float]]] = {}
    num_gt: dict[Any, int] = {}
    for class_id in sorted(class_ids):
        key = class_names.get(class_id, class_id) if class_names else class_id
        num_gt[key] = match.num_gt.get(class_id, 0)
        if num_gt[key] == 0:
            for suffix in conventions:
                per_class[suffix][key] = math.nan
            curves[key] = {"recall": [], "precision": []}
            continue
        recall, precision = precision_recall_curve(dets, match, class_id)
        for suffix, ap_fn in conventions.items():
            if matches[suffix] is match:
                per_class[suffix][key] = ap_fn(recall, precision)
            else:
                per_class[suffix][key] = ap_fn(*precision_recall_curve(dets, matches[suffix], class_id))
        curves[key] = {"recall": recall.tolist(), "precision": precision.tolist()}

    tag = round(100 * iou_threshold)
    result: dict[str, Any] = {}
    for suffix in conventions:
        result[f"mAP{tag}{suffix}"] = _finite_mean(per_class[suffix])
        result[f"AP{tag}{suffix}"] = per_class[suffix]
    result.update(pr_curves=curves, num_gt=num_gt, iou_threshold=float(iou_threshold))
    return result
