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

Difficult boxes (``GroundTruth.difficult``, Pascal VOC's flag) are never counted among the positives, and a
detection they absorb is *ignored*: neither a true nor a false positive, it is left out of the precision-recall
curve. Which detections they absorb depends on the convention, each following its reference tool:

* VOC all-point and VOC07 (the devkit's ``VOCevaldet`` / ``voc_eval.py``): a detection takes the box of highest
  IoU among the free ordinary boxes *and all difficult boxes* (a difficult box is never used up, so it can absorb
  any number of detections); it is ignored when that box is difficult. As above, an ordinary box already taken
  is skipped rather than making the detection a false positive.
* COCO 101-point (pycocotools' ``ignore`` boxes, ``_ignore`` in ``COCOeval.evaluateImg``): a detection takes the
  best free ordinary box when one reaches the threshold; only otherwise the best free difficult box, which is then
  used up like an ordinary one, and the detection is ignored.

Without difficult boxes both rules are the matching above, so results do not change.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from loclab.ops.boxes import box_iou_numpy

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
        difficult (ndarray[G] bool or None): Pascal VOC's "difficult" flag. Difficult boxes are not counted as
            positives and the detections they absorb are ignored (rules in the module docstring); None: none is.
    """

    image_id: np.ndarray
    category_id: np.ndarray
    boxes: np.ndarray
    image_ids: np.ndarray
    iscrowd: np.ndarray | None = None
    difficult: np.ndarray | None = None

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
        if self.difficult is not None:
            difficult = _as_array(self.difficult, bool).reshape(-1)
            if len(difficult) != len(image_id):
                raise ValueError("GroundTruth: difficult must have one entry per box")
            object.__setattr__(self, "difficult", difficult)

    def __len__(self) -> int:
        return len(self.image_id)


@dataclass(frozen=True)
class MatchResult:
    """Outcome of :func:`match_detections`.

    Attributes:
        is_tp (ndarray[D] bool): whether each detection (in the order given) matched a counted ground-truth box.
        matched_gt (ndarray[D] int64): row of the matched box in the ground-truth table (for an ignored detection,
            the difficult box that absorbed it), -1 if none.
        num_gt (dict[int, int]): number of counted (not difficult) ground-truth boxes per class id (classes with
            such boxes only).
        iou_threshold: the IoU needed for a match.
        is_ignored (ndarray[D] bool or None): detections absorbed by a difficult box, neither true nor false
            positives; None means none is.
    """

    is_tp: np.ndarray
    matched_gt: np.ndarray
    num_gt: dict[int, int]
    iou_threshold: float
    is_ignored: np.ndarray | None = None


def _group_rows(image_id: np.ndarray, category_id: np.ndarray) -> dict[tuple[int, int], np.ndarray]:
    """Row indices per ``(image_id, category_id)``, each in input order."""
    order = np.lexsort((category_id, image_id))  # stable: rows of a group keep their input order
    if order.size == 0:
        return {}
    img, cat = image_id[order], category_id[order]
    cuts = np.flatnonzero((img[1:] != img[:-1]) | (cat[1:] != cat[:-1])) + 1
    return {(int(img[s]), int(cat[s])): rows for s, rows in zip(np.r_[0, cuts], np.split(order, cuts))}


def _best_box(iou_row: np.ndarray, allowed: np.ndarray, iou_threshold: float) -> int:
    """Column of the allowed box with the highest IoU if it reaches the threshold, else -1."""
    candidates = np.where(allowed, iou_row, -1.0)
    # pycocotools keeps the *last* box on equal IoU (its loop replaces the best on ">="); argmax over the
    # reversed row reproduces that, which matters when two equally good boxes differ for later detections.
    col = candidates.shape[0] - 1 - int(np.argmax(candidates[::-1]))
    return col if candidates[col] >= iou_threshold else -1


def _greedy_match(
    iou: np.ndarray,
    iou_threshold: float,
    difficult: np.ndarray | None = None,
    difficult_rule: Literal["voc", "coco"] = "voc",
) -> np.ndarray:
    """Greedy matching of score-sorted detections (rows) to boxes (columns); column per row or -1.

    Ordinary boxes are matched at most once. ``difficult`` ([M] bool) marks difficult boxes, handled by
    ``difficult_rule`` as in the module docstring: "voc" lets them compete with the free boxes and never uses them
    up, "coco" tries them only when no free ordinary box qualifies, and uses them up.
    """
    matched = np.full(iou.shape[0], -1, dtype=np.int64)
    if iou.shape[1] == 0:
        return matched
    hard = difficult if difficult is not None and difficult.any() else None
    free = np.ones(iou.shape[1], dtype=bool)
    # Only detections that reach the threshold with some box can match; the loop runs over those alone.
    for row in np.flatnonzero(iou.max(axis=1) >= iou_threshold):
        if hard is not None and difficult_rule == "coco":
            col = _best_box(iou[row], free & ~hard, iou_threshold)
            if col < 0:
                col = _best_box(iou[row], free & hard, iou_threshold)
        else:
            col = _best_box(iou[row], free, iou_threshold)  # "voc": difficult boxes stay free
        if col >= 0:
            matched[row] = col
            if hard is None or difficult_rule == "coco" or not hard[col]:
                free[col] = False
                if not free.any():
                    break
    return matched


def match_detections(
    dets: Detections,
    gts: GroundTruth,
    iou_threshold: float = 0.5,
    *,
    difficult_rule: Literal["voc", "coco"] = "voc",
) -> MatchResult:
    """Mark each detection as true positive, false positive or ignored (rules in the module docstring).

    Args:
        dets: detections of the split; every ``image_id`` must be in ``gts.image_ids``.
        gts: ground truth of the split.
        iou_threshold: IoU needed for a match (``>=``).
        difficult_rule: how difficult boxes absorb detections, ``"voc"`` (the devkit) or ``"coco"`` (pycocotools'
            ignored boxes); no effect without difficult boxes.

    Returns:
        MatchResult with ``is_tp``, ``matched_gt`` and ``is_ignored`` aligned with ``dets``; each ordinary
        ground-truth box is matched at most once.
    """
    if difficult_rule not in ("voc", "coco"):
        raise ValueError(f'difficult_rule must be "voc" or "coco", got {difficult_rule!r}')
    unknown = ~np.isin(dets.image_id, gts.image_ids)
    if unknown.any():
        raise ValueError(f"detections on images not in the ground truth, e.g. image {dets.image_id[unknown][0]}")
    is_tp = np.zeros(len(dets), dtype=bool)
    is_ignored = np.zeros(len(dets), dtype=bool)
    matched_gt = np.full(len(dets), -1, dtype=np.int64)
    gt_rows = _group_rows(gts.image_id, gts.category_id)
    for key, det_rows in _group_rows(dets.image_id, dets.category_id).items():
        boxes_rows = gt_rows.get(key)
        if boxes_rows is None:
            continue
        det_rows = det_rows[np.argsort(-dets.scores[det_rows], kind="stable")]
        hard = None if gts.difficult is None else gts.difficult[boxes_rows]
        iou = box_iou_numpy(dets.boxes[det_rows], gts.boxes[boxes_rows])
        local = _greedy_match(iou, iou_threshold, hard, difficult_rule)
        hit = local >= 0
        ignored = hit & hard[local] if hard is not None else np.zeros_like(hit)
        is_tp[det_rows[hit & ~ignored]] = True
        is_ignored[det_rows[ignored]] = True
        matched_gt[det_rows[hit]] = boxes_rows[local[hit]]
    counted = gts.category_id if gts.difficult is None else gts.category_id[~gts.difficult]
    classes, counts = np.unique(counted, return_counts=True)
    num_gt = {int(c): int(n) for c, n in zip(classes, counts)}
    return MatchResult(
        is_tp=is_tp, matched_gt=matched_gt, num_gt=num_gt, iou_threshold=float(iou_threshold), is_ignored=is_ignored
    )


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

    Detections ignored by the matching (absorbed by a difficult box) are left out: neither true nor false
    positives, they would only repeat the previous point, which changes no AP convention (devkit and pycocotools
    keep them as such repeated points).

    Returns:
        recall (ndarray[Dc]), precision (ndarray[Dc]): after the first ``1..Dc`` counted detections of the class.
        Recall is NaN throughout when the class has no ground truth.
    """
    selected = dets.category_id == category_id
    if match.is_ignored is not None:
        selected &= ~match.is_ignored
    rows = np.flatnonzero(selected)
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
    """Per-class AP and mAP under the three conventions, from one matching (two when some box is difficult: the
    devkit's rule for the VOC numbers and curves, pycocotools' for ``*_coco``; see the module docstring).

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
    coco_match = match  # the two rules differ only when some box is difficult
    if ground_truths.difficult is not None and ground_truths.difficult.any():
        coco_match = match_detections(dets, ground_truths, iou_threshold, difficult_rule="coco")

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
