"""Average precision for detection: matching detections to ground truth, and three ways to integrate the
precision-recall curve (VOC all-point, VOC07 11-point, COCO 101-point). Pure numpy, no plotting.

Data: a whole split is two flat tables, :class:`Detections` and :class:`GroundTruth`, one row per box with its
``image_id`` and ``category_id``. Boxes are ``(x1, y1, x2, y2)`` in continuous pixels, area without ``+1``.

Matching (the same for every convention, and the one pycocotools uses): per image and class, detections are
visited by decreasing score (ties in input order) and each takes the not-yet-matched ground-truth box of the same
image and class with the highest IoU, provided that IoU is ``>= iou_threshold``; otherwise it is a false positive.
The VOC devkit differs in small ways (it adds ``+1`` to widths, needs IoU ``> threshold``, and calls a detection
whose best box is already taken a false positive instead of trying the next box); loclab does not copy those, so
its three numbers differ only by how the curve is integrated.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = [
    "Detections",
    "GroundTruth",
    "MatchResult",
    "ap_coco_101point",
    "ap_voc07_11point",
    "ap_voc_allpoint",
    "compute_ap",
    "keep_top_k_per_image",
    "keep_top_k_per_image_class",
    "match_detections",
    "precision_recall_curve",
]  # fmt: skip


def _as_array(values: Any, dtype: type) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=dtype)


def _as_boxes(values: Any, count: int, name: str) -> np.ndarray:
    boxes = _as_array(values, np.float64)
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.shape != (count, 4):
        raise ValueError(f"{name} must have shape [{count}, 4], got {list(boxes.shape)}")
    return boxes


@dataclass(frozen=True)
class Detections:
    """All detections of a split, one row per box. Lists, numpy arrays and CPU tensors are accepted and stored as
    numpy arrays.

    Attributes:
        image_id (ndarray[D] int64): image of each detection.
        category_id (ndarray[D] int64): predicted class id (``0..C-1`` for loclab's datasets).
        boxes (ndarray[D, 4] float64): ``(x1, y1, x2, y2)``.
        scores (ndarray[D] float64): confidence, finite; higher is more confident.
    """

    image_id: np.ndarray
    category_id: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray

    def __post_init__(self) -> None:
        image_id = _as_array(self.image_id, np.int64).reshape(-1)
        object.__setattr__(self, "image_id", image_id)
        object.__setattr__(self, "category_id", _as_array(self.category_id, np.int64).reshape(-1))
        object.__setattr__(self, "scores", _as_array(self.scores, np.float64).reshape(-1))
        object.__setattr__(self, "boxes", _as_boxes(self.boxes, len(image_id), "Detections.boxes"))
        if not len(image_id) == len(self.category_id) == len(self.scores):
            raise ValueError("Detections: image_id, category_id and scores must have the same length")
        if not np.all(np.isfinite(self.scores)):
            raise ValueError("Detections: scores must be finite")

    def __len__(self) -> int:
        return len(self.image_id)

    def select(self, index: np.ndarray) -> Detections:
        """The detections picked by a boolean mask ``[D]`` or an integer index array, in that order."""
        return Detections(self.image_id[index], self.category_id[index], self.boxes[index], self.scores[index])


@dataclass(frozen=True)
class GroundTruth:
    """All ground-truth boxes of a split, plus the list of evaluated images.

    Attributes:
        image_id (ndarray[G] int64): image of each box.
        category_id (ndarray[G] int64): class id of each box.
        boxes (ndarray[G, 4] float64): ``(x1, y1, x2, y2)``.
        image_ids (ndarray[I] int64): every evaluated image, sorted and unique, including images without any box
            (their detections are all false positives). Detections on other images are an error.
        iscrowd (ndarray[G] bool or None): accepted for COCO compatibility but not used: every box is evaluated as
            an ordinary object (a warning says so when some box is marked crowd).
    """

    image_id: np.ndarray
    category_id: np.ndarray
    boxes: np.ndarray
    image_ids: np.ndarray
    iscrowd: np.ndarray | None = None

    def __post_init__(self) -> None:
        image_id = _as_array(self.image_id, np.int64).reshape(-1)
        object.__setattr__(self, "image_id", image_id)
        object.__setattr__(self, "category_id", _as_array(self.category_id, np.int64).reshape(-1))
        object.__setattr__(self, "boxes", _as_boxes(self.boxes, len(image_id), "GroundTruth.boxes"))
        object.__setattr__(self, "image_ids", np.unique(_as_array(self.image_ids, np.int64)))
        if len(self.category_id) != len(image_id):
            raise ValueError("GroundTruth: image_id and category_id must have the same length")
        if not np.all(np.isin(image_id, self.image_ids)):
            raise ValueError("GroundTruth: some boxes belong to images missing from image_ids")
        if self.iscrowd is not None:
            iscrowd = _as_array(self.iscrowd, bool).reshape(-1)
            if len(iscrowd) != len(image_id):
                raise ValueError("GroundTruth: iscrowd must have one entry per box")
            object.__setattr__(self, "iscrowd", iscrowd)
            if iscrowd.any():
                warnings.warn("GroundTruth: iscrowd is not supported; crowd boxes are evaluated as ordinary boxes")

    def __len__(self) -> int:
        return len(self.image_id)


@dataclass(frozen=True)
class MatchResult:
    """Outcome of :func:`match_detections`.

    Attributes:
        is_tp (ndarray[D] bool): whether each detection (in the order given) matched a ground-truth box.
        matched_gt (ndarray[D] int64): row of the matched box in the ground-truth table, -1 if none.
        num_gt (dict[int, int]): number of ground-truth boxes per class id (classes with boxes only).
        iou_threshold: the IoU needed for a match.
    """

    is_tp: np.ndarray
    matched_gt: np.ndarray
    num_gt: dict[int, int]
    iou_threshold: float


def _iou_matrix(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """IoU ``[N, M]`` of ``(x1, y1, x2, y2)`` boxes, no ``+1``; 0 where the union is empty."""
    lt = np.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
    wh = np.clip(np.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:]) - lt, 0.0, None)
    inter = wh[..., 0] * wh[..., 1]
    area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])
    union = area1[:, None] + area2[None, :] - inter
    return inter / np.where(union > 0, union, 1.0)


def _group_rows(image_id: np.ndarray, category_id: np.ndarray) -> dict[tuple[int, int], np.ndarray]:
    """Row indices per ``(image_id, category_id)``, each in input order."""
    order = np.lexsort((category_id, image_id))  # stable: rows of a group keep their input order
    if order.size == 0:
        return {}
    img, cat = image_id[order], category_id[order]
    cuts = np.flatnonzero((img[1:] != img[:-1]) | (cat[1:] != cat[:-1])) + 1
    return {(int(img[s]), int(cat[s])): rows for s, rows in zip(np.r_[0, cuts], np.split(order, cuts))}


def _greedy_match(iou: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy one-to-one matching of score-sorted detections (rows) to boxes (columns); column per row or -1."""
    matched = np.full(iou.shape[0], -1, dtype=np.int64)
    if iou.shape[1] == 0:
        return matched
    free = np.ones(iou.shape[1], dtype=bool)
    # Only detections that reach the threshold with some box can match; the loop runs over those alone.
    for row in np.flatnonzero(iou.max(axis=1) >= iou_threshold):
        candidates = np.where(free, iou[row], -1.0)
        # pycocotools keeps the *last* box on equal IoU (its loop replaces the best on ">="); argmax over the
        # reversed row reproduces that, which matters when two equally good boxes differ for later detections.
        col = candidates.shape[0] - 1 - int(np.argmax(candidates[::-1]))
        if candidates[col] >= iou_threshold:
            matched[row] = col
            free[col] = False
            if not free.any():
                break
    return matched


def match_detections(dets: Detections, gts: GroundTruth, iou_threshold: float = 0.5) -> MatchResult:
    """Mark each detection as true or false positive (rule in the module docstring).

    Args:
        dets: detections of the split; every ``image_id`` must be in ``gts.image_ids``.
        gts: ground truth of the split.
        iou_threshold: IoU needed for a match (``>=``).

    Returns:
        MatchResult with ``is_tp`` and ``matched_gt`` aligned with ``dets``; each ground-truth box is matched at
        most once.
    """
    unknown = ~np.isin(dets.image_id, gts.image_ids)
    if unknown.any():
        raise ValueError(f"detections on images not in the ground truth, e.g. image {dets.image_id[unknown][0]}")
    is_tp = np.zeros(len(dets), dtype=bool)
    matched_gt = np.full(len(dets), -1, dtype=np.int64)
    gt_rows = _group_rows(gts.image_id, gts.category_id)
    for key, det_rows in _group_rows(dets.image_id, dets.category_id).items():
        boxes_rows = gt_rows.get(key)
        if boxes_rows is None:
            continue
        det_rows = det_rows[np.argsort(-dets.scores[det_rows], kind="stable")]
        local = _greedy_match(_iou_matrix(dets.boxes[det_rows], gts.boxes[boxes_rows]), iou_threshold)
        hit = local >= 0
        is_tp[det_rows[hit]] = True
        matched_gt[det_rows[hit]] = boxes_rows[local[hit]]
    classes, counts = np.unique(gts.category_id, return_counts=True)
    num_gt = {int(c): int(n) for c, n in zip(classes, counts)}
    return MatchResult(is_tp=is_tp, matched_gt=matched_gt, num_gt=num_gt, iou_threshold=float(iou_threshold))


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


def keep_top_k_per_image_class(dets: Detections, k: int) -> Detections:
    """The ``k`` highest-scored detections of each (image, class) pair (ties in input order); order kept.

    This is pycocotools' ``maxDets`` rule: despite its "per image" description, ``COCOeval`` applies the cap to
    the detections of one image *and one category* (``evaluateImg`` gets ``_dts[imgId, catId]``).
    """
    return dets.select(_rank_within_groups(dets.scores, dets.image_id, dets.category_id) < k)


def precision_recall_curve(dets: Detections, match: MatchResult, category_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative recall and precision of one class, detection by detection in decreasing score.

    Ties in score are ordered by image id, then input order, as pycocotools does (per-image lists concatenated
    in image order, then a stable sort on score); the order of tied detections changes the curve.

    Returns:
        recall (ndarray[Dc]), precision (ndarray[Dc]): after the first ``1..Dc`` detections of the class.
        Recall is NaN throughout when the class has no ground truth.
    """
    rows = np.flatnonzero(dets.category_id == category_id)
    rows = rows[np.lexsort((rows, dets.image_id[rows], -dets.scores[rows]))]
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
    return float(np.mean(_sampled_envelope(recall, precision, np.arange(0.0, 1.1, 0.1))))


def ap_coco_101point(recall: np.ndarray, precision: np.ndarray) -> float:
    """COCO 101-point AP, exactly as pycocotools' ``COCOeval.accumulate``.

    Precision is made monotone (envelope from the right), then read at recall thresholds
    ``np.linspace(0, 1, 101)`` at ``np.searchsorted(recall, thresholds, side="left")``, 0 where a threshold is
    beyond the maximum recall, and averaged. Arguments as in :func:`ap_voc_allpoint`.
    """
    recall, precision = _check_curve(recall, precision)
    return float(np.mean(_sampled_envelope(recall, precision, np.linspace(0.0, 1.0, 101))))


def _finite_mean(values: Mapping[Any, float]) -> float:
    finite = [v for v in values.values() if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def compute_ap(
    predictions: Detections,
    ground_truths: GroundTruth,
    iou_threshold: float = 0.5,
    *,
    class_names: Mapping[int, str] | None = None,
    max_detections_per_image: int | None = None,
    max_detections_per_image_class: int | None = None,
) -> dict[str, Any]:
    """Per-class AP and mAP under the three conventions, from one matching.

    Use a very low score threshold upstream: cutting detections at e.g. 0.5 truncates the curve and understates AP.

    Args:
        predictions: all detections of the split.
        ground_truths: the split's ground truth, including images without boxes.
        iou_threshold: IoU for a true positive. Result keys are named after it: 0.5 gives ``"mAP50"``, 0.75 gives
            ``"mAP75"``.
        class_names: optional names for class ids; used as the per-class keys. Classes listed here but absent from
            the data still appear (with NaN AP).
        max_detections_per_image: keep only the top-k detections of each image over all classes before matching.
        max_detections_per_image_class: keep only the top-k detections of each (image, class) before matching;
            100 reproduces pycocotools' ``maxDets=100``.

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
    dets = predictions
    if max_detections_per_image is not None:
        dets = keep_top_k_per_image(dets, max_detections_per_image)
    if max_detections_per_image_class is not None:
        dets = keep_top_k_per_image_class(dets, max_detections_per_image_class)
    match = match_detections(dets, ground_truths, iou_threshold)

    class_ids = set(ground_truths.category_id.tolist()) | set(dets.category_id.tolist()) | set(class_names or {})
    conventions = {"": ap_voc_allpoint, "_voc07": ap_voc07_11point, "_coco": ap_coco_101point}
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
            per_class[suffix][key] = ap_fn(recall, precision)
        curves[key] = {"recall": recall.tolist(), "precision": precision.tolist()}

    tag = round(100 * iou_threshold)
    result: dict[str, Any] = {}
    for suffix in conventions:
        result[f"mAP{tag}{suffix}"] = _finite_mean(per_class[suffix])
        result[f"AP{tag}{suffix}"] = per_class[suffix]
    result.update(pr_curves=curves, num_gt=num_gt, iou_threshold=float(iou_threshold))
    return result
