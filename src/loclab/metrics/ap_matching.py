"""Detections and ground truth of a split as two flat tables, and matching detections to ground truth for AP.

Pure numpy, no plotting; the precision-recall curve and the three AP conventions built on this matching are
:mod:`loclab.metrics.ap`.

Data: a whole split is two flat tables, :class:`Detections` and :class:`GroundTruth`, one row per box with its
``image_id`` and ``category_id``. Boxes are ``(x1, y1, x2, y2)`` in continuous pixels, area without ``+1``.

Matching (``match_rule="coco"``, the default for every convention, and the one pycocotools uses): per image and
class, detections are visited by decreasing score (ties in input order) and each takes the not-yet-matched
ground-truth box of the same image and class with the highest IoU (the later box on equal IoU), provided that IoU
is ``>= iou_threshold``; otherwise it is a false positive. The VOC devkit differs in small ways (it adds ``+1`` to
widths, needs IoU ``> threshold``, and calls a detection whose best box is already taken a false positive instead
of trying the next box); by default loclab copies none of those, so its three numbers differ only by how the curve
is integrated.

``match_rule="voc"`` is the devkit's rule for taken boxes, for comparisons with devkit numbers: each detection
looks at *every* box of its image and class, taken or not, and picks the one of highest IoU (the first box on equal
IoU, as the devkit's ``argmax``); if that IoU is ``>= iou_threshold`` the detection is a true positive when the box
is free, a false positive when it is already taken. Widths and the threshold comparison stay loclab's (no ``+1``,
``>=``).

Difficult boxes (``GroundTruth.difficult``, Pascal VOC's flag) are never counted among the positives, and a
detection they absorb is *ignored*: neither a true nor a false positive, it is left out of the precision-recall
curve. Which detections they absorb depends on the convention, each following its reference tool:

* VOC all-point and VOC07 (the devkit's ``VOCevaldet`` / ``voc_eval.py``): a detection takes the box of highest
  IoU among the free ordinary boxes *and all difficult boxes* (a difficult box is never used up, so it can absorb
  any number of detections); it is ignored when that box is difficult. As above, an ordinary box already taken
  is skipped rather than making the detection a false positive (with ``match_rule="voc"`` it competes, and a
  detection that picks it is a false positive, as in the devkit).
* COCO 101-point (pycocotools' ``ignore`` boxes, ``_ignore`` in ``COCOeval.evaluateImg``): a detection takes the
  best free ordinary box when one reaches the threshold; only otherwise the best free difficult box, which is then
  used up like an ordinary one, and the detection is ignored.

Without difficult boxes both rules are the matching above, so results do not change.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from loclab.ops.boxes import box_iou_numpy

__all__ = ["Detections", "GroundTruth", "MatchResult", "match_detections", "match_detections_grid"]


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


def _devkit_match(iou: np.ndarray, iou_threshold: float, hard: np.ndarray | None) -> np.ndarray:
    """``match_rule="voc"``: each row takes its best box of all (first on ties); a taken ordinary box gives -1."""
    matched = np.full(iou.shape[0], -1, dtype=np.int64)
    free = np.ones(iou.shape[1], dtype=bool)
    best = np.argmax(iou, axis=1)  # the first maximum, as the devkit's argmax
    for row in np.flatnonzero(iou[np.arange(iou.shape[0]), best] >= iou_threshold):
        col = int(best[row])
        if hard is not None and hard[col]:
            matched[row] = col  # absorbed by a difficult box, which is never used up
        elif free[col]:
            matched[row] = col
            free[col] = False
    return matched


def _greedy_match(
    iou: np.ndarray,
    iou_threshold: float,
    difficult: np.ndarray | None = None,
    difficult_rule: Literal["voc", "coco"] = "voc",
    match_rule: Literal["coco", "voc"] = "coco",
) -> np.ndarray:
    """Greedy matching of score-sorted detections (rows) to boxes (columns); column per row or -1.

    Ordinary boxes are matched at most once. ``difficult`` ([M] bool) marks difficult boxes, handled by
    ``difficult_rule`` as in the module docstring: "voc" lets them compete with the free boxes and never uses them
    up, "coco" tries them only when no free ordinary box qualifies, and uses them up. ``match_rule="voc"`` (which
    comes with ``difficult_rule="voc"``) lets taken boxes compete too, as in the module docstring.
    """
    matched = np.full(iou.shape[0], -1, dtype=np.int64)
    if iou.shape[1] == 0:
        return matched
    hard = difficult if difficult is not None and difficult.any() else None
    if match_rule == "voc":
        return _devkit_match(iou, iou_threshold, hard)
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
    match_rule: Literal["coco", "voc"] = "coco",
) -> MatchResult:
    """Mark each detection as true positive, false positive or ignored (rules in the module docstring).

    Args:
        dets: detections of the split; every ``image_id`` must be in ``gts.image_ids``.
        gts: ground truth of the split.
        iou_threshold: IoU needed for a match (``>=``).
        difficult_rule: how difficult boxes absorb detections, ``"voc"`` (the devkit) or ``"coco"`` (pycocotools'
            ignored boxes); no effect without difficult boxes.
        match_rule: what a detection does about boxes already taken: ``"coco"`` (pycocotools: it takes the best
            free box) or ``"voc"`` (the devkit: it picks its best box of all, and a taken one makes it a false
            positive). ``"voc"`` needs ``difficult_rule="voc"``, the devkit's.

    Returns:
        MatchResult with ``is_tp``, ``matched_gt`` and ``is_ignored`` aligned with ``dets``; each ordinary
        ground-truth box is matched at most once.
    """
    return match_detections_grid(dets, gts, [iou_threshold], difficult_rule=difficult_rule, match_rule=match_rule)[0][0]


def match_detections_grid(
    dets: Detections,
    gts: GroundTruth,
    iou_thresholds: Sequence[float],
    also_difficult: Sequence[np.ndarray | None] = (None,),
    *,
    difficult_rule: Literal["voc", "coco"] = "voc",
    match_rule: Literal["coco", "voc"] = "coco",
) -> list[list[MatchResult]]:
    """:func:`match_detections` at several IoU thresholds and with several sets of boxes treated as difficult, with
    each image and class's IoU computed once (COCO's summary matches 10 thresholds x 4 area ranges).

    Returns:
        ``result[i][j]``: exactly ``match_detections(dets, gts', iou_thresholds[j], ...)`` where ``gts'`` is
        ``gts`` with ``difficult = gts.difficult | also_difficult[i]`` (``None``: ``gts`` as it is).
    """
    if difficult_rule not in ("voc", "coco"):
        raise ValueError(f'difficult_rule must be "voc" or "coco", got {difficult_rule!r}')
    if match_rule not in ("voc", "coco"):
        raise ValueError(f'match_rule must be "coco" or "voc", got {match_rule!r}')
    if match_rule == "voc" and difficult_rule != "voc":
        raise ValueError('match_rule "voc" is the devkit\'s rule, whose difficult boxes follow difficult_rule "voc"')
    unknown = ~np.isin(dets.image_id, gts.image_ids)
    if unknown.any():
        raise ValueError(f"detections on images not in the ground truth, e.g. image {dets.image_id[unknown][0]}")
    hard_sets = []  # per set: [G] bool, or None when no box is difficult
    for extra in also_difficult:
        hard = gts.difficult if extra is None else _as_array(extra, bool).reshape(-1) | (
            np.zeros(len(gts), bool) if gts.difficult is None else gts.difficult)
        if hard is not None and len(hard) != len(gts):
            raise ValueError("also_difficult: each set needs one entry per ground-truth box")
        hard_sets.append(hard)
    shape = (len(hard_sets), len(iou_thresholds), len(dets))
    is_tp, is_ignored = np.zeros(shape, dtype=bool), np.zeros(shape, dtype=bool)
    matched_gt = np.full(shape, -1, dtype=np.int64)
    gt_rows = _group_rows(gts.image_id, gts.category_id)
    for key, det_rows in _group_rows(dets.image_id, dets.category_id).items():
        boxes_rows = gt_rows.get(key)
        if boxes_rows is None:
            continue
        det_rows = det_rows[np.argsort(-dets.scores[det_rows], kind="stable")]
        iou = box_iou_numpy(dets.boxes[det_rows], gts.boxes[boxes_rows])
        done: dict[tuple[bytes, int], np.ndarray] = {}  # sets that agree on this group's boxes match alike
        for i, hard_all in enumerate(hard_sets):
            hard = None if hard_all is None else hard_all[boxes_rows]
            signature = b"" if hard is None else hard.tobytes()
            for j, threshold in enumerate(iou_thresholds):
                local = done.get((signature, j))
                if local is None:
                    local = done[signature, j] = _greedy_match(iou, threshold, hard, difficult_rule, match_rule)
                hit = local >= 0
                ignored = hit & hard[local] if hard is not None else np.zeros_like(hit)
                is_tp[i, j, det_rows[hit & ~ignored]] = True
                is_ignored[i, j, det_rows[ignored]] = True
                matched_gt[i, j, det_rows[hit]] = boxes_rows[local[hit]]
    results = []
    for i, hard in enumerate(hard_sets):
        counted = gts.category_id if hard is None else gts.category_id[~hard]
        classes, counts = np.unique(counted, return_counts=True)
        num_gt = {int(c): int(n) for c, n in zip(classes, counts)}
        results.append([MatchResult(is_tp=is_tp[i, j], matched_gt=matched_gt[i, j], num_gt=num_gt,
                                    iou_threshold=float(threshold), is_ignored=is_ignored[i, j])
                        for j, threshold in enumerate(iou_thresholds)])
    return results
