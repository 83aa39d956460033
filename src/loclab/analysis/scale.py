"""Scale specialisation: which detection head (S1, S2, S3) finds which object size
(docs/metrics.md, 'Detection analyses').

Definitions, with the AP@0.5 matching of :func:`loclab.metrics.ap_matching.match_detections` (per image and class,
by decreasing score, each detection takes the free same-class box of highest IoU ``>= iou_threshold``):

* **TP table** ``tp_counts[s][b]``: the true positives among the detections (after NMS) that head ``s`` produced,
  whose matched ground-truth box is in size bucket ``b`` (:mod:`loclab.analysis.sizes`). The matching runs once
  on *all* detections, as for AP. Because matching visits detections by decreasing score, a detection scoring
  ``>= t`` is matched exactly as if the lower-scored ones were absent, so the table restricted to scores ``>= t``
  is the same as matching only those detections.
* Two tables: **confident** (TPs with score ``>= score_threshold``, default 0.5, the display threshold) is the
  headline — it is what the detector reports at its operating point; **all** counts every TP down to the
  inference score threshold (0.01 for AP), including low-score boxes that the detector would never show.
* ``tp_share[s][b]``: ``tp_counts[s][b] / sum_s tp_counts[s][b]``, the share of bucket ``b``'s TPs found by ``s``.
* **Recall per scale** ``recall[s][b]``: a *separate* matching per head, using only head ``s``'s detections;
  ``(gt boxes of bucket b matched by head-s detections) / (gt boxes in bucket b)``. It answers "could this head
  alone find these objects?" and is not limited by other heads taking the match first, so a row can be high for a
  bucket where the TP table shows few counts; the three recalls of a bucket can sum to more than 1.
  ``recall_all_scales[b]`` is the recall of bucket ``b`` with every head's detections together.

Undefined ratios (a bucket without ground truth or TPs) are ``None`` (JSON null).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from loclab.analysis.sizes import BUCKET_EDGES, bucket_names, bucket_rule, size_bucket
from loclab.metrics.ap_matching import Detections, GroundTruth, match_detections

DEFAULT_DISPLAY_THRESHOLD = 0.5


def _ratio(num: np.ndarray, den: np.ndarray) -> list:
    """Elementwise ``num / den`` as nested lists, ``None`` where ``den == 0``."""
    out = np.where(den > 0, num / np.maximum(den, 1), np.nan)
    return [[None if np.isnan(v) else float(v) for v in row] for row in np.atleast_2d(out)]


def _matched_per_bucket(dets: Detections, gts: GroundTruth, gt_bucket: np.ndarray, iou: float,
                        num_buckets: int) -> np.ndarray:
    """How many gt boxes of each bucket some detection of ``dets`` matches: ``[num_buckets]`` int."""
    match = match_detections(dets, gts, iou)
    hit = match.matched_gt[match.is_tp]
    return np.bincount(gt_bucket[hit], minlength=num_buckets)


def _table(
    dets: Detections, scales: np.ndarray, gts: GroundTruth, gt_bucket: np.ndarray, gt_count: np.ndarray,
    is_tp: np.ndarray, matched_gt: np.ndarray, keep: np.ndarray, num_scales: int, iou: float,
) -> dict[str, Any]:
    """TP counts, shares and per-scale recall for the detections selected by ``keep`` (bool ``[D]``)."""
    num_buckets = len(gt_count)
    counts = np.zeros((num_scales, num_buckets), dtype=np.int64)
    tp = keep & is_tp
    np.add.at(counts, (scales[tp], gt_bucket[matched_gt[tp]]), 1)
    recall = np.zeros((num_scales, num_buckets))
    for s in range(num_scales):
        recall[s] = _matched_per_bucket(dets.select(keep & (scales == s)), gts, gt_bucket, iou, num_buckets)
    recall_all = _matched_per_bucket(dets.select(keep), gts, gt_bucket, iou, num_buckets)
    return {
        "num_detections": int(keep.sum()),
        "num_tp": int(tp.sum()),
        "tp_counts": counts.tolist(),
        "tp_share": _ratio(counts, counts.sum(axis=0, keepdims=True)),
        "recall": _ratio(recall, gt_count[None, :]),
        "recall_all_scales": _ratio(recall_all, gt_count)[0],
        "detections_per_scale": np.bincount(scales[keep], minlength=num_scales).tolist(),
    }


def scale_specialisation(
    detections: Detections,
    scales: np.ndarray,
    ground_truth: GroundTruth,
    iou_threshold: float = 0.5,
    score_threshold: float | None = None,
    *,
    num_scales: int = 3,
    bucket_edges: Sequence[float] = BUCKET_EDGES,
    bucket_boxes: np.ndarray | None = None,
) -> dict[str, Any]:
    """Which head produced each true positive, by size bucket of its ground truth (module docstring).

    Args:
        detections: every detection of the split after NMS (category ids as in ``ground_truth``).
        scales: ``[D]`` int, the head index (0 = S1, 1 = S2, 2 = S3) of each detection, aligned with ``detections``.
        ground_truth: the split's ground truth.
        iou_threshold: IoU for a true positive (0.5: the AP@0.5 matching).
        score_threshold: minimum score of the headline "confident" table; ``None`` means the display threshold
            :data:`DEFAULT_DISPLAY_THRESHOLD` (0.5).
        num_scales: number of heads; ``scales`` must lie in ``0..num_scales-1``.
        bucket_edges: the size-bucket edges (:func:`loclab.analysis.sizes.size_bucket`; default the course's).
        bucket_boxes: ``[G, 4]`` boxes to measure the sizes on, row ``g`` for ground-truth box ``g`` (the boxes in
            the letterboxed model input, where the anchors live); default ``ground_truth.boxes``.

    Returns:
        JSON-ready dict::

            {"scales": ["S1", "S2", "S3"], "buckets": ["small", "medium", "large"], "bucket_edges": [40, 96],
             "bucket_rule": str, "iou_threshold": 0.5, "score_threshold": 0.5, "headline": "confident",
             "gt_per_bucket": [n_small, n_medium, n_large],
             "confident": TABLE, "all": TABLE}

        where TABLE (rows = scale, columns = bucket) is ``{"num_detections", "num_tp", "tp_counts" [3][3] int,
        "tp_share" [3][3], "recall" [3][3], "recall_all_scales" [3], "detections_per_scale" [3]}``.
    """
    scales = np.asarray(scales, dtype=np.int64).reshape(-1)
    if scales.shape[0] != len(detections):
        raise ValueError(f"scales has {scales.shape[0]} entries for {len(detections)} detections")
    if scales.size and (scales.min() < 0 or scales.max() >= num_scales):
        raise ValueError(f"scales must lie in 0..{num_scales - 1}, got {scales.min()}..{scales.max()}")
    threshold = DEFAULT_DISPLAY_THRESHOLD if score_threshold is None else float(score_threshold)
    measured = ground_truth.boxes if bucket_boxes is None else np.asarray(bucket_boxes).reshape(-1, 4)
    if len(measured) != len(ground_truth.boxes):
        raise ValueError(f"bucket_boxes has {len(measured)} rows for {len(ground_truth.boxes)} ground-truth boxes")
    gt_bucket = size_bucket(measured, bucket_edges)
    gt_count = np.bincount(gt_bucket, minlength=len(bucket_edges) + 1)
    match = match_detections(detections, ground_truth, iou_threshold)
    common = (detections, scales, ground_truth, gt_bucket, gt_count, match.is_tp, match.matched_gt)
    return {
        "scales": [f"S{i + 1}" for i in range(num_scales)],
        "buckets": list(bucket_names(bucket_edges)),
        "bucket_edges": [float(e) for e in bucket_edges],
        "bucket_rule": bucket_rule(bucket_edges),
        "iou_threshold": float(iou_threshold),
        "score_threshold": threshold,
        "headline": "confident",
        "gt_per_bucket": gt_count.tolist(),
        "confident": _table(*common, detections.scores >= threshold, num_scales, iou_threshold),
        "all": _table(*common, np.ones(len(detections), dtype=bool), num_scales, iou_threshold),
    }
