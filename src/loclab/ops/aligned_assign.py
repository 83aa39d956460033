"""Task-aligned assignment of ground-truth boxes to anchors (TOOD's assigner, the one YOLOv8 trains with).

Grid matching (:mod:`loclab.ops.grid_matching`) picks positives by geometry alone, before the model has said
anything. A task-aligned assigner asks the predictions which anchors already do well on a box, so that the
anchors trained to score high are the ones that also box it well:

1. Candidates of a box are the anchors whose centre lies strictly inside it, on every scale.
2. Each candidate gets the alignment ``t = s ** alpha * u ** beta``: ``s`` the predicted probability of the
   box's class (objectness times class probability, the score detection ranks by) and ``u`` the IoU of the
   anchor's decoded box with the box.
3. The ``top_k`` candidates of highest ``t`` (above 0) are the box's positives. An anchor positive for several
   boxes keeps the one its decoded box overlaps most (the lowest box index among equals).
4. Each positive's quality target is its alignment rescaled per box, so that the box's best-aligned positive
   gets the highest IoU any of the box's positives reaches: ``t * max(u) / max(t)`` over the box's positives.

Defaults ``alpha = 0.5``, ``beta = 6``, ``top_k = 10`` are YOLOv8's. Only the pairs of an anchor and a box
that holds its centre are scored, not all ``B x N x M``; listing them reads their count back to the host once
per batch.
"""

from __future__ import annotations

import torch
from torch import Tensor

from loclab.ops.iou_losses import paired_iou

__all__ = ["ALIGN_ALPHA", "ALIGN_BETA", "ALIGN_TOP_K", "task_aligned_assign"]

ALIGN_ALPHA, ALIGN_BETA, ALIGN_TOP_K = 0.5, 6.0, 10
_EPS = 1e-9


def task_aligned_assign(
    anchor_centres: Tensor,
    pred_boxes: Tensor,
    pred_scores: Tensor,
    boxes: Tensor,
    labels: Tensor,
    valid: Tensor,
    top_k: int = ALIGN_TOP_K,
    alpha: float = ALIGN_ALPHA,
    beta: float = ALIGN_BETA,
) -> tuple[Tensor, Tensor, Tensor]:
    """Task-aligned positives and quality targets for ``B`` images (module docstring).

    Args:
        anchor_centres (Tensor[N, 2]): ``(x, y)`` of every anchor of every scale, in input pixels.
        pred_boxes (Tensor[B, N, 4]): each anchor's decoded predicted box, ``(x1, y1, x2, y2)``.
        pred_scores (Tensor[B, N, C]): each anchor's predicted probability of each class.
        boxes (Tensor[B, M, 4]): padded ground-truth boxes, ``(x1, y1, x2, y2)``.
        labels (Tensor[B, M]): their classes in ``0..C-1``.
        valid (Tensor[B, M] bool): which entries are real boxes; padding is never assigned.
        top_k: positives per box at most, ``>= 1``.
        alpha, beta: exponents of the score and the IoU in the alignment.

    Returns:
        ``(pos [B, N] bool, gt_index [B, N] long, quality [B, N] float)``: which anchors are positive, the index
        into ``M`` of each positive's box (0 for the rest), and each positive's quality target (0 for the rest).
    """
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    num_images, max_boxes = valid.shape
    num_anchors = anchor_centres.shape[0]
    device = pred_boxes.device
    if max_boxes == 0 or num_anchors == 0:
        zeros = torch.zeros(num_images, num_anchors, dtype=torch.long, device=device)
        return zeros.bool(), zeros, zeros.float()

    boxes = boxes.float()
    cx, cy = anchor_centres.float()[None, :, 0, None], anchor_centres.float()[None, :, 1, None]  # [1, N, 1]
    x1, y1, x2, y2 = (boxes[:, None, :, k] for k in range(4))  # [B, 1, M]
    inside = (cx > x1) & (cx < x2) & (cy > y1) & (cy < y2) & valid[:, None, :]  # [B, N, M]

    # every candidate pair (image b, anchor n, box m), in that order
    b, n, m = inside.nonzero(as_tuple=True)
    iou = paired_iou(pred_boxes[b, n].float(), boxes[b, m])
    num_classes = pred_scores.shape[-1]
    score = pred_scores[b, n, labels[b, m].long().clamp(0, num_classes - 1)].float()
    align = score.pow(alpha) * iou.pow(beta)

    # rank the candidates of each box by alignment (the lower anchor index among equals); keep the top_k
    group = b * max_boxes + m
    order = torch.argsort(align, descending=True, stable=True)
    order = order[torch.argsort(group[order], stable=True)]
    grouped = group[order]
    rank = torch.arange(len(order), device=device) - torch.searchsorted(grouped, grouped, side="left")
    chosen = torch.zeros(len(order), dtype=torch.bool, device=device)
    chosen[order] = (rank < top_k) & (align[order] > 0)

    # an anchor chosen by several boxes keeps the one it overlaps most, the lowest index among equals
    slot = b * num_anchors + n
    overlap = torch.where(chosen, iou, -1.0)
    best = torch.full((num_images * num_anchors,), -1.0, device=device).scatter_reduce(0, slot, overlap, "amax")
    claim = torch.where(chosen & (overlap == best[slot]), m, max_boxes)
    gt_index = torch.full((num_images * num_anchors,), max_boxes, dtype=torch.long, device=device)
    gt_index = gt_index.scatter_reduce(0, slot, claim, "amin")
    kept = chosen & (m == gt_index[slot])

    kept_align = torch.where(kept, align, 0.0)
    per_box = torch.zeros(num_images * max_boxes, device=device)
    best_align = per_box.scatter_reduce(0, group, kept_align, "amax")
    best_iou = per_box.scatter_reduce(0, group, torch.where(kept, iou, 0.0), "amax")
    target = kept_align * best_iou[group] / (best_align[group] + _EPS)
    quality = torch.zeros(num_images * num_anchors, device=device).scatter_reduce(0, slot, target, "amax")

    gt_index = gt_index.view(num_images, num_anchors)
    pos = gt_index < max_boxes
    gt_index = torch.where(pos, gt_index, 0)
    quality = quality.view(num_images, num_anchors)
    return pos, gt_index, quality
