"""Anchor coverage: how well a set of anchors can fit the ground truth, per scale and size bucket.

Why it matters: a box no anchor covers at IoU 0.5 can only become a positive by best-anchor forcing
(docs/detection.md, 'Matching').

For every ground-truth box ``g`` (boxes xyxy px, IoU without ``+1``):

* ``best_iou_per_scale[g, s]``: the highest IoU of ``g`` with any anchor of scale ``s``; ``best_iou[g]`` the
  highest over all scales and ``best_scale[g]`` the scale of that anchor (lowest anchor index on ties).
* **Best possible recall** (BPR): the fraction of boxes with some anchor at IoU ``>= iou_threshold`` (0.5) — an
  upper bound on the recall of a detector that only refines anchors it matched at that threshold. Reported per
  scale and bucket (anchors of one scale only), per bucket and overall (anchors of all scales).
* **Positives per gt** under the real training matcher, :func:`loclab.ops.matching.match_anchors_to_targets` run
  over all scales at once for each image (batched through ``match_batch``, which gives the same result per
  image; thresholds and best-anchor floor as in training): how many anchors
  learn to predict each box, in total and per scale. A box can get 0 positives when its best anchor IoU is below
  the forcing floor, or its best anchor is taken by another box.

The work is vectorised over boxes, anchors and images (batches of images, one IoU matrix against all ``N``
anchors per batch); there is no loop over anchors or boxes. Undefined ratios (a bucket without boxes) are ``None``
(JSON null).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from loclab.analysis.sizes import BUCKET_EDGES, box_sqrt_area, bucket_names, bucket_rule, size_bucket
from loclab.data.formats_detection import DetectionSplit
from loclab.ops.boxes import box_iou
from loclab.ops.matching import match_batch

_CHUNK_IMAGES = 64  # images per batched matcher call: ~25 MB of IoUs for 12k anchors and 5 boxes per image


def _per_gt(
    boxes_per_image: Sequence[Tensor], anchors_per_scale: Sequence[Tensor], pos_threshold: float,
    neg_threshold: float, min_best_iou: float,
) -> dict[str, np.ndarray]:
    """Per-box arrays over all images: boxes ``[G, 4]``, best IoU per scale ``[G, S]``, best scale ``[G]``,
    positives per scale ``[G, S]``; boxes in image order, then file order."""
    anchors = torch.cat([a.float() for a in anchors_per_scale])
    sizes = [len(a) for a in anchors_per_scale]
    scale_of_anchor = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    starts = np.cumsum([0, *sizes])
    boxes_per_image = [torch.as_tensor(b, dtype=torch.float32).reshape(-1, 4) for b in boxes_per_image]
    out: dict[str, list[Tensor]] = {"boxes": [], "best_per_scale": [], "best_scale": [], "positives": []}
    # A few large batched calls instead of one small call per image: per-call overhead dominates small tensors.
    for first in range(0, len(boxes_per_image), _CHUNK_IMAGES):
        chunk = boxes_per_image[first:first + _CHUNK_IMAGES]
        counts = torch.tensor([len(b) for b in chunk])
        slots = int(counts.max()) if len(chunk) else 0
        if slots == 0:
            continue
        valid = torch.arange(slots)[None, :] < counts[:, None]  # [B, M]
        boxes = torch.zeros(len(chunk), slots, 4)
        boxes[valid] = torch.cat(chunk)
        real = boxes[valid]  # [g, 4] in image order
        iou = box_iou(real, anchors)  # [g, N]
        out["boxes"].append(real)
        out["best_per_scale"].append(
            torch.stack([iou[:, a:b].amax(dim=1) for a, b in zip(starts[:-1], starts[1:])], dim=1))
        out["best_scale"].append(scale_of_anchor[iou.argmax(dim=1)])
        # Labels = box slot: the matcher's "class id + 1" becomes "slot + 1", so positives are counted per box.
        slot_labels = torch.arange(slots).expand(len(chunk), slots)
        matched, _, pos, _ = match_batch(anchors, boxes, slot_labels, valid, pos_threshold, neg_threshold,
                                         min_best_iou)
        image, anchor = pos.nonzero(as_tuple=True)
        per_box = torch.zeros(len(chunk), slots, len(sizes), dtype=torch.long)
        per_box.index_put_((image, matched[image, anchor] - 1, scale_of_anchor[anchor]),
                           torch.ones(len(image), dtype=torch.long), accumulate=True)
        out["positives"].append(per_box[valid])
    if not out["boxes"]:
        num_scales = len(sizes)
        return {"boxes": np.zeros((0, 4)), "best_per_scale": np.zeros((0, num_scales)),
                "best_scale": np.zeros(0, dtype=np.int64), "positives": np.zeros((0, num_scales), dtype=np.int64)}
    arrays = {key: torch.cat(values).numpy() for key, values in out.items()}
    arrays["boxes"] = arrays["boxes"].astype(np.float64)
    arrays["best_per_scale"] = arrays["best_per_scale"].astype(np.float64)
    return arrays


def _mean_by_bucket(values: np.ndarray, bucket: np.ndarray, num_buckets: int) -> list[float | None]:
    """Mean of ``values [G]`` within each size bucket; ``None`` for an empty bucket."""
    return [float(values[bucket == b].mean()) if (bucket == b).any() else None for b in range(num_buckets)]


def _mean(values: np.ndarray) -> float | None:
    return float(values.mean()) if values.size else None


def _histograms(best_per_scale: np.ndarray, best: np.ndarray, bucket: np.ndarray, num_bins: int,
                num_buckets: int) -> dict[str, Any]:
    edges = np.linspace(0.0, 1.0, num_bins + 1)

    def hist(values: np.ndarray) -> list[int]:
        return np.histogram(values, bins=edges)[0].tolist()

    return {
        "bin_edges": np.round(edges, 6).tolist(),
        "per_scale_bucket": [[hist(best_per_scale[bucket == b, s]) for b in range(num_buckets)]
                             for s in range(best_per_scale.shape[1])],
        "all_scales_per_bucket": [hist(best[bucket == b]) for b in range(num_buckets)],
    }


def anchor_sizes(anchors_per_scale: Sequence[Tensor]) -> list[list[float]]:
    """The distinct anchor widths of each scale, ascending (rounded to 0.001 px)."""
    return [sorted({round(float(w), 3) for w in (a[:, 2] - a[:, 0]).tolist()}) for a in anchors_per_scale]


def anchor_coverage(
    ground_truth: DetectionSplit | Sequence[Tensor],
    anchors_per_scale: Sequence[Tensor],
    *,
    iou_threshold: float = 0.5,
    pos_threshold: float = 0.5,
    neg_threshold: float = 0.3,
    min_best_iou: float = 0.1,
    num_bins: int = 20,
    bucket_edges: Sequence[float] = BUCKET_EDGES,
) -> dict[str, Any]:
    """Anchor coverage of a split's ground truth (definitions in the module docstring).

    Args:
        ground_truth: a :class:`DetectionSplit`, or one ``Tensor[n_i, 4]`` of xyxy boxes per image.
        anchors_per_scale: one ``Tensor[N_s, 4]`` of xyxy anchors per scale, as from
            :func:`loclab.ops.anchors.generate_anchors`.
        iou_threshold: IoU that counts as "covered" for the best possible recall.
        pos_threshold, neg_threshold, min_best_iou: the training matcher's settings (for positives per gt).
        num_bins: number of equal IoU bins on ``[0, 1]`` for the histograms.
        bucket_edges: the size-bucket edges (:func:`loclab.analysis.sizes.size_bucket`; default the course's).

    Returns:
        JSON-ready dict; ``[s][b]`` is scale-major, bucket-minor::

            {"scales": ["S1", ...], "buckets": [...], "bucket_edges": [40, 96], "bucket_rule": str,
             "anchor_sizes": [[16, 24, 32], ...], "iou_threshold": 0.5,
             "matcher": {"pos_threshold", "neg_threshold", "min_best_iou"},
             "num_gt": G, "gt_per_bucket": [3],
             "best_possible_recall": {"per_scale_bucket": [S][3], "per_scale": [S], "per_bucket": [3], "overall"},
             "mean_best_iou": {same four keys},
             "best_scale_share": [S][3]  (share of bucket b's boxes whose best anchor overall is on scale s),
             "positives_per_gt": {"mean_per_bucket": [3], "mean_per_scale_bucket": [S][3], "overall_mean",
                                  "zero_fraction_per_bucket": [3],
                                  "histogram": [number of boxes with 0, 1, 2, ... positives]},
             "histograms": {"bin_edges": [num_bins + 1], "per_scale_bucket": [S][3][num_bins],
                            "all_scales_per_bucket": [3][num_bins]},
             "per_gt": {"sqrt_area": [G], "bucket": [G], "best_iou": [G], "best_scale": [G],
                        "best_iou_per_scale": [S][G], "num_positives": [G]}}
    """
    boxes_per_image = ground_truth.boxes if isinstance(ground_truth, DetectionSplit) else ground_truth
    per_gt = _per_gt(boxes_per_image, anchors_per_scale, pos_threshold, neg_threshold, min_best_iou)
    best_per_scale, positives = per_gt["best_per_scale"], per_gt["positives"]
    num_scales = len(anchors_per_scale)
    best = best_per_scale.max(axis=1) if len(best_per_scale) else np.zeros(0)
    bucket = size_bucket(per_gt["boxes"], bucket_edges)
    num_buckets = len(bucket_edges) + 1
    covered = best_per_scale >= iou_threshold
    total_pos = positives.sum(axis=1)

    def four_ways(per_scale_values: np.ndarray, overall_values: np.ndarray) -> dict[str, Any]:
        return {
            "per_scale_bucket": [_mean_by_bucket(per_scale_values[:, s], bucket, num_buckets)
                                 for s in range(num_scales)],
            "per_scale": [_mean(per_scale_values[:, s]) for s in range(num_scales)],
            "per_bucket": _mean_by_bucket(overall_values, bucket, num_buckets),
            "overall": _mean(overall_values),
        }

    return {
        "scales": [f"S{s + 1}" for s in range(num_scales)],
        "buckets": list(bucket_names(bucket_edges)),
        "bucket_edges": [float(e) for e in bucket_edges],
        "bucket_rule": bucket_rule(bucket_edges),
        "anchor_sizes": anchor_sizes(anchors_per_scale),
        "iou_threshold": float(iou_threshold),
        "matcher": {"pos_threshold": pos_threshold, "neg_threshold": neg_threshold, "min_best_iou": min_best_iou},
        "num_gt": len(best),
        "gt_per_bucket": np.bincount(bucket, minlength=num_buckets).tolist(),
        "best_possible_recall": four_ways(covered.astype(np.float64), (best >= iou_threshold).astype(np.float64)),
        "mean_best_iou": four_ways(best_per_scale, best),
        "best_scale_share": [_mean_by_bucket((per_gt["best_scale"] == s).astype(np.float64), bucket, num_buckets)
                             for s in range(num_scales)],
        "positives_per_gt": {
            "mean_per_bucket": _mean_by_bucket(total_pos.astype(np.float64), bucket, num_buckets),
            "mean_per_scale_bucket": [_mean_by_bucket(positives[:, s].astype(np.float64), bucket, num_buckets)
                                      for s in range(num_scales)],
            "overall_mean": _mean(total_pos.astype(np.float64)),
            "zero_fraction_per_bucket": _mean_by_bucket((total_pos == 0).astype(np.float64), bucket, num_buckets),
            "histogram": np.bincount(total_pos, minlength=1).tolist(),
        },
        "histograms": _histograms(best_per_scale, best, bucket, num_bins, num_buckets),
        "per_gt": {
            "sqrt_area": np.round(box_sqrt_area(per_gt["boxes"]), 2).tolist(),
            "bucket": bucket.tolist(),
            "best_iou": np.round(best, 4).tolist(),
            "best_scale": per_gt["best_scale"].tolist(),
            "best_iou_per_scale": [np.round(best_per_scale[:, s], 4).tolist() for s in range(num_scales)],
            "num_positives": total_pos.tolist(),
        },
    }


def anchors_at_box_centres(
    anchors_per_scale: Sequence[Tensor], feature_map_sizes: Sequence[int], image_size: int, boxes: Tensor
) -> list[Tensor]:
    """Per scale, every anchor (all sizes) of the cell that holds each box's centre, e.g. to draw them.

    Args:
        anchors_per_scale: ``Tensor[H*W*A, 4]`` per scale in :func:`loclab.ops.anchors.generate_anchors` order.
        feature_map_sizes: ``H`` (= ``W``) of each scale; image_size: side of the square image.
        boxes: ``Tensor[K, 4]`` xyxy.

    Returns:
        per scale ``Tensor[K * A, 4]``: box ``k``'s cell's anchors at rows ``k * A .. k * A + A - 1``.
    """
    out = []
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    for size, anchors in zip(feature_map_sizes, anchors_per_scale):
        per_cell = anchors.shape[0] // (size * size)
        cells = (centres / (image_size / size)).floor().long().clamp(0, size - 1)  # (column j, row i)
        first = (cells[:, 1] * size + cells[:, 0]) * per_cell
        out.append(anchors[(first[:, None] + torch.arange(per_cell)[None, :]).reshape(-1)])
    return out
