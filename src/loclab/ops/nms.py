"""Greedy non-maximum suppression in plain vectorised torch.

torchvision's compiled NMS does not load with the CPU-only PyTorch wheels used here, so loclab has its own.
Semantics are exactly the classic greedy loop: visit boxes by decreasing score (ties in input order) and keep a
box unless its IoU with an already *kept* box is strictly greater than ``iou_threshold``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from loclab.ops.boxes import box_iou

__all__ = ["batched_nms", "nms"]

# Boxes are processed in score-ordered chunks of this size: memory stays O(N * chunk) instead of O(N^2), and the
# fixed-point iteration inside a chunk needs at most chunk + 1 rounds even for long suppression chains.
_CHUNK = 512


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy non-maximum suppression.

    Args:
        boxes (Tensor[N, 4]): boxes in ``(x1, y1, x2, y2)`` format.
        scores (Tensor[N]): their scores.
        iou_threshold: a box is discarded when its IoU with a higher-scored kept box is ``> iou_threshold``.

    Returns:
        Tensor[K] long: indices of the kept boxes, sorted by decreasing score; equal scores keep input order
        (stable sort). Capping ``N`` (e.g. a top-k before NMS) is the caller's job.
    """
    groups = torch.zeros(scores.shape, dtype=torch.long, device=scores.device)
    return _greedy_nms(boxes, scores, groups, iou_threshold)


def batched_nms(boxes: Tensor, scores: Tensor, class_ids: Tensor, iou_threshold: float) -> Tensor:
    """Non-maximum suppression run independently for each class.

    Args:
        boxes (Tensor[N, 4]): boxes in ``(x1, y1, x2, y2)`` format.
        scores (Tensor[N]): their scores.
        class_ids (Tensor[N]): integer class (or any group) id per box; boxes of different ids never suppress
            each other.
        iou_threshold: as in :func:`nms`.

    Returns:
        Tensor[K] long: indices of the kept boxes of all classes together, sorted by decreasing score (stable).
        The same set as running :func:`nms` on each class separately.
    """
    # The usual trick shifts each class by an offset of about C * image size so classes cannot overlap. In float32
    # that shift rounds the coordinates and moves IoUs near the threshold, so per-class results could differ
    # from plain NMS. Masking cross-class pairs out of the suppression matrix costs the same and is exact.
    return _greedy_nms(boxes, scores, class_ids, iou_threshold)


def _greedy_nms(boxes: Tensor, scores: Tensor, groups: Tensor, iou_threshold: float) -> Tensor:
    """Greedy NMS where only boxes of the same group suppress each other; returns kept indices by score."""
    if boxes.shape[0] == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    boxes, groups = boxes[order], groups[order]
    keep = torch.zeros(order.shape[0], dtype=torch.bool, device=boxes.device)
    kept_boxes, kept_groups = boxes[:0], groups[:0]
    for start in range(0, boxes.shape[0], _CHUNK):
        chunk, chunk_groups = boxes[start : start + _CHUNK], groups[start : start + _CHUNK]
        # Boxes overlapping a box kept in an earlier (higher-scored) chunk are out, whatever happens here.
        by_earlier = (box_iou(kept_boxes, chunk) > iou_threshold) & (kept_groups[:, None] == chunk_groups[None, :])
        alive = ~by_earlier.any(dim=0)
        # suppresses[j, i]: j precedes i in score order, overlaps it, and is still alive.
        suppresses = torch.triu(box_iou(chunk, chunk) > iou_threshold, diagonal=1)
        suppresses &= (chunk_groups[:, None] == chunk_groups[None, :]) & alive[:, None]
        chunk_keep = _fixed_point_keep(suppresses, alive)
        keep[start : start + chunk.shape[0]] = chunk_keep
        kept_boxes = torch.cat((kept_boxes, chunk[chunk_keep]))
        kept_groups = torch.cat((kept_groups, chunk_groups[chunk_keep]))
    return order[keep]


def _fixed_point_keep(suppresses: Tensor, alive: Tensor) -> Tensor:
    """Solve ``keep[i] = alive[i] and not any(keep[j] and suppresses[j, i])`` for a strictly upper-triangular
    ``suppresses [C, C]``.

    The equations define ``keep`` by induction on ``i``, so they have exactly one solution: the greedy one.
    Iterating from ``keep = alive`` fixes at least one more leading entry per round, so the loop ends after at most
    ``C + 1`` rounds (typically a handful, as suppression chains are short) and a round with no change means the
    solution is reached.
    """
    keep = alive.clone()
    while True:
        new_keep = alive & ~(suppresses & keep[:, None]).any(dim=0)
        if torch.equal(new_keep, keep):
            return keep
        keep = new_keep
