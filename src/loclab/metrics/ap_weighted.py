"""AP when each image counts a whole number of times: what the image bootstrap of AP computes, vectorised.

A bootstrap resample draws the split's images with replacement, so image ``i`` appears ``w_i`` times
(:mod:`loclab.metrics.bootstrap`). Matching is per image, so a copy of an image has the same true and false
positives as the original, and the AP of the resample follows from one matching of the real data:

1. :func:`curve_rows` lists the counted detections of each class in curve order
   (:func:`~loclab.metrics.ap.curve_order`), each with its image and whether it is a true positive.
2. :func:`curve_counts` compresses them per class: the image of each true positive, the false positives before it
   as ``(image, count)`` entries, and the counted boxes of each image.
3. For weights ``W [R, N]`` the cumulative TP and FP at every true positive of every resample are gathers of ``W``
   and cumulative sums (:func:`weighted_curve`), and :data:`WEIGHTED_AP` integrates them under each convention.

Only the points at true positives are needed: precision falls at every false positive, so the monotone envelope
(the best precision at this recall or beyond) and every recall threshold the conventions read are reached at true
positives; false positives after the last true positive change no convention, and :func:`curve_rows` drops them.
Precision and recall are computed from the same integer counts by the same divisions as
:func:`~loclab.metrics.ap.precision_recall_curve`, so with weights in ``{0, 1, 2, ...}`` the result equals
:func:`~loclab.metrics.ap.compute_ap` on the data in which image ``i`` appears ``w_i`` times, copies of an image
next to each other in image order (up to the order of float summation, ~1e-16), as long as no two detections of
one image and class tie in score: the copies of such a tie would interleave, which weights cannot express.
A class whose weighted ground truth is 0 (none of its boxes drawn) has AP NaN, as in ``compute_ap``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from loclab.metrics.ap import COCO_RECALL_THRESHOLDS, VOC07_RECALL_THRESHOLDS, curve_order
from loclab.metrics.ap_matching import Detections, GroundTruth, MatchResult

__all__ = ["WEIGHTED_AP", "APStatistic", "ClassAPStatistic", "ClassCounts", "CurveCounts", "CurveRows", "WeightedCurve",
           "curve_counts", "curve_rows", "gt_counts", "mean_over_classes", "weighted_ap", "weighted_ap_coco_101point",
           "weighted_ap_voc07_11point", "weighted_ap_voc_allpoint", "weighted_curve"]


@dataclass(frozen=True)
class CurveRows:
    """The counted detections of one matching, class after class, each class in curve order and cut after its last
    true positive.

    Attributes:
        image_index (ndarray[D] int64): index of each detection's image in the sorted evaluated image ids.
        class_index (ndarray[D] int64): index of its class in the ``class_ids`` given to :func:`curve_rows`.
        is_tp (ndarray[D] bool): true positive (else false positive).
    """

    image_index: np.ndarray
    class_index: np.ndarray
    is_tp: np.ndarray


def curve_rows(dets: Detections, match: MatchResult, image_ids: np.ndarray, class_ids: Sequence[int]) -> CurveRows:
    """The rows of each class's precision-recall curve (:func:`~loclab.metrics.ap.curve_order`) as a
    :class:`CurveRows`; ``image_ids`` is the sorted array of evaluated images (``GroundTruth.image_ids``)."""
    images, classes, hits = [], [], []
    for k, class_id in enumerate(class_ids):
        rows = curve_order(dets, match, class_id)
        is_tp = match.is_tp[rows]
        tps = np.flatnonzero(is_tp)
        rows = rows[: tps[-1] + 1] if tps.size else rows[:0]  # later false positives change no AP
        images.append(np.searchsorted(image_ids, dets.image_id[rows]))
        classes.append(np.full(len(rows), k, dtype=np.int64))
        hits.append(is_tp[: len(rows)])
    return CurveRows(np.concatenate(images or [np.zeros(0, np.int64)]).astype(np.int64),
                     np.concatenate(classes or [np.zeros(0, np.int64)]),
                     np.concatenate(hits or [np.zeros(0, bool)]))


def gt_counts(gts: GroundTruth, class_ids: Sequence[int], ignored: np.ndarray | None = None) -> np.ndarray:
    """Counted ground-truth boxes per image and class, ``int64 [N, C]`` (images in ``gts.image_ids`` order):
    every box but the difficult ones, and but ``ignored`` ([G] bool) when given."""
    counted = np.ones(len(gts), dtype=bool) if gts.difficult is None else ~gts.difficult
    if ignored is not None:
        counted &= ~ignored
    out = np.zeros((len(gts.image_ids), len(class_ids)), dtype=np.int64)
    column = {int(c): k for k, c in enumerate(class_ids)}
    for image, class_id in zip(gts.image_id[counted].tolist(), gts.category_id[counted].tolist()):
        if class_id in column:
            out[np.searchsorted(gts.image_ids, image), column[class_id]] += 1
    return out


@dataclass(frozen=True)
class ClassCounts:
    """One class's curve as per-image counts between its true positives (``n`` of them).

    Attributes:
        tp_image (ndarray[n] int64): the image of each true positive, in curve order.
        fp_image (ndarray[m] int64), fp_count (ndarray[m] float64): the false positives as ``(image, count)``
            entries, grouped by the true positive they precede (entries of one image within a group merged).
        fp_end (ndarray[n] int64): number of ``fp_*`` entries before each true positive.
    """

    tp_image: np.ndarray
    fp_image: np.ndarray
    fp_count: np.ndarray
    fp_end: np.ndarray


@dataclass(frozen=True)
class CurveCounts:
    """Per-image counts of one matching (step 2 of the module docstring).

    Attributes:
        gt (ndarray[N, C] float64): counted boxes of each image and class.
        classes (tuple of ClassCounts): one per class, in the columns' order.
    """

    gt: np.ndarray
    classes: tuple[ClassCounts, ...]

    @property
    def num_images(self) -> int:
        return self.gt.shape[0]


def curve_counts(rows: CurveRows, gt: np.ndarray) -> CurveCounts:
    """:class:`CurveCounts` of ``rows`` (:func:`curve_rows`) with ``gt`` counted boxes ``[N, C]``."""
    num_images, num_classes = gt.shape
    classes = []
    for k in range(num_classes):
        in_class = rows.class_index == k
        image, is_tp = rows.image_index[in_class], rows.is_tp[in_class]
        before = np.cumsum(is_tp)[~is_tp]  # the true positive each false positive precedes (rows end on one)
        groups, counts = np.unique(before * num_images + image[~is_tp], return_counts=True)
        fp_end = np.searchsorted(groups // num_images, np.arange(int(is_tp.sum())), side="right")
        classes.append(ClassCounts(image[is_tp], groups % num_images, counts.astype(np.float64), fp_end))
    return CurveCounts(np.asarray(gt, dtype=np.float64), tuple(classes))


@dataclass(frozen=True)
class WeightedCurve:
    """One class's curve under each row of weights ``[R, N]``, read at its true positives.

    Attributes:
        tp (ndarray[R, n]): weighted cumulative true positives (whole numbers).
        envelope (ndarray[R, n]): the monotone precision envelope.
        num_gt (ndarray[R]): weighted counted boxes of the class.
    """

    tp: np.ndarray
    envelope: np.ndarray
    num_gt: np.ndarray


def weighted_curve(counts: CurveCounts, weights: np.ndarray, k: int) -> WeightedCurve:
    """Class ``k``'s :class:`WeightedCurve` under ``weights [R, N]``: gathers and cumulative sums over its true
    positives and false-positive entries (no BLAS, whose threads only wait on a busy machine). The sums are of whole
    numbers, so they are exact in any order."""
    curve = counts.classes[k]
    tp = np.cumsum(weights[:, curve.tp_image], axis=1)
    fp_running = np.cumsum(weights[:, curve.fp_image] * curve.fp_count, axis=1)
    fp = np.concatenate([np.zeros((len(weights), 1)), fp_running], axis=1)[:, curve.fp_end]
    precision = tp / np.maximum(tp + fp, 1)
    envelope = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
    return WeightedCurve(tp, envelope, np.einsum("rn,n->r", weights, counts.gt[:, k]))


def _defined(curve: WeightedCurve, values: np.ndarray) -> np.ndarray:
    return np.where(curve.num_gt > 0, values, math.nan)  # AP is NaN where the class has no weighted box


def weighted_ap_voc_allpoint(curve: WeightedCurve) -> np.ndarray:
    """VOC all-point AP ``[R]``: the recall steps at the true positives times the envelope there."""
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = curve.tp / np.where(curve.num_gt > 0, curve.num_gt, 1.0)[:, None]
    return _defined(curve, np.sum(np.diff(recall, axis=1, prepend=0.0) * curve.envelope, axis=1))


def _first_count(num_gt: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Smallest integer ``k`` with ``k / num_gt >= t`` in float arithmetic, ``[R, T]`` (for ``num_gt > 0``).

    The curve reaches recall ``t`` at the first true positive whose cumulative count is ``>= k``: comparing counts
    reproduces the float comparison ``recall >= t`` of the plain curve exactly.
    """
    counts, row_of = np.unique(np.maximum(num_gt, 1.0), return_inverse=True)  # resamples share few distinct counts
    n = counts[:, None]
    k = np.maximum(np.ceil(thresholds[None] * n) - 1, 0)
    for _ in range(3):  # ceil(t * n) is off by at most one from the answer; settle it in float arithmetic
        k = np.where(k / n < thresholds[None], k + 1, k)
    for _ in range(3):
        k = np.where((k > 0) & ((k - 1) / n >= thresholds[None]), k - 1, k)
    return k[row_of.reshape(-1)]


def _sampled(curve: WeightedCurve, thresholds: np.ndarray) -> np.ndarray:
    """Mean over ``thresholds`` of the envelope at the first point reaching each recall threshold, ``[R]``."""
    rows, n = curve.tp.shape
    if n == 0:
        return _defined(curve, np.zeros(rows))
    need = _first_count(curve.num_gt, thresholds).astype(np.int64)  # [R, T]
    # one searchsorted over all rows: shift row r's (non-decreasing, <= num_gt) counts by r * stride
    stride = int(curve.num_gt.max()) + 2
    offset = np.arange(rows, dtype=np.int64)[:, None] * stride
    flat = (np.rint(curve.tp).astype(np.int64) + offset).ravel()
    index = np.searchsorted(flat, (need + offset).ravel()).reshape(need.shape) - np.arange(rows)[:, None] * n
    values = np.where(index < n, np.take_along_axis(curve.envelope, np.minimum(index, n - 1), axis=1), 0.0)
    return _defined(curve, values.mean(axis=1))


def weighted_ap_voc07_11point(curve: WeightedCurve) -> np.ndarray:
    """VOC07 11-point AP ``[R]``, as :func:`~loclab.metrics.ap.ap_voc07_11point` on each resample."""
    return _sampled(curve, VOC07_RECALL_THRESHOLDS)


def weighted_ap_coco_101point(curve: WeightedCurve) -> np.ndarray:
    """COCO 101-point AP ``[R]``, as :func:`~loclab.metrics.ap.ap_coco_101point` on each resample."""
    return _sampled(curve, COCO_RECALL_THRESHOLDS)


WEIGHTED_AP: dict[str, Callable[[WeightedCurve], np.ndarray]] = {
    "voc": weighted_ap_voc_allpoint, "voc07": weighted_ap_voc07_11point, "coco": weighted_ap_coco_101point,
}


def weighted_ap(counts: CurveCounts, weights: np.ndarray, conventions: Sequence[str]) -> np.ndarray:
    """AP of every class under every convention (keys of :data:`WEIGHTED_AP`) and row of ``weights [R, N]``:
    ``[R, len(conventions), C]``; each class's curve is computed once for all conventions."""
    out = np.empty((weights.shape[0], len(conventions), counts.gt.shape[1]))
    for k in range(counts.gt.shape[1]):
        curve = weighted_curve(counts, weights, k)
        for c, convention in enumerate(conventions):
            out[:, c, k] = WEIGHTED_AP[convention](curve)
    return out


def mean_over_classes(per_class: np.ndarray) -> np.ndarray:
    """``[..., C] -> [...]``: the mean over the classes with a defined AP (as ``compute_ap``'s mAP); NaN if none."""
    defined = ~np.isnan(per_class)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(defined, per_class, 0.0).sum(axis=-1) / defined.sum(axis=-1)


@dataclass(frozen=True)
class ClassAPStatistic:
    """Per-class AP as a statistic of image weights (:mod:`loclab.metrics.bootstrap`):
    ``weights [R, N] -> [R, len(conventions), C]``, each convention (keys of :data:`WEIGHTED_AP`) averaged over
    ``curves``: one matching per IoU threshold, one for AP50, ten for COCO's AP@[.5:.95]."""

    curves: tuple[CurveCounts, ...]
    conventions: tuple[str, ...]

    def __post_init__(self) -> None:
        unknown = [c for c in self.conventions if c not in WEIGHTED_AP]
        if unknown or not self.conventions:
            raise ValueError(f"conventions must be some of {sorted(WEIGHTED_AP)}, got {self.conventions!r}")
        if not self.curves:
            raise ValueError("an AP statistic needs at least one CurveCounts")

    @property
    def num_images(self) -> int:
        return self.curves[0].num_images

    def __call__(self, weights: np.ndarray) -> np.ndarray:
        return sum(weighted_ap(c, weights, self.conventions) for c in self.curves) / len(self.curves)


@dataclass(frozen=True)
class APStatistic:
    """One AP number as a statistic of image weights, ``weights [R, N] -> [R]``: under ``convention``, averaged
    over ``curves`` (as :class:`ClassAPStatistic`), the class ``class_index``, or with ``None`` the mean over the
    classes (:func:`mean_over_classes`, ``compute_ap``'s mAP)."""

    curves: tuple[CurveCounts, ...]
    convention: str
    class_index: int | None = None

    @property
    def num_images(self) -> int:
        return self.curves[0].num_images

    def __call__(self, weights: np.ndarray) -> np.ndarray:
        values = ClassAPStatistic(self.curves, (self.convention,))(weights)[:, 0]
        return mean_over_classes(values) if self.class_index is None else values[:, self.class_index]
