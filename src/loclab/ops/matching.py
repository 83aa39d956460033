"""Assigning ground-truth boxes to anchors (docs/detection.md, 'Matching'), for one image or a padded batch.

Rules, with ``iou[n, g]`` the IoU of anchor ``n`` and ground-truth box ``g``:

1. Each anchor looks at its best box (highest IoU; the lowest box index on ties). IoU ``>= pos_threshold``:
   positive. IoU ``< neg_threshold``: negative. In between: ignored (in neither mask), so that half-overlapping
   anchors teach the objectness head nothing either way.
2. Each box also claims its single best anchor over *all* anchors of all scales concatenated (lowest anchor index
   on ties), provided that IoU is ``>= min_best_iou``. That anchor becomes positive for that box even if it is
   below ``pos_threshold`` or another box overlaps it more, so that every object gets at least one positive
   anchor. Forcing over all scales at once, never per scale, keeps a 16 px circle from becoming a positive for a
   192 px anchor, which would destroy scale specialisation.
3. When several boxes claim the same anchor, the anchor goes to the claimant with the highest IoU with it (the
   lowest box index on ties); the other claimants lose that anchor and get no replacement.

Labels: ``matched_labels`` is 0 for background (and for ignored anchors) and ``class id + 1`` (1..C) for positives.
``matched_boxes`` holds, for every anchor, the box it is assigned to (its claimant, else its best box) whenever the
anchor overlaps some box or was claimed; anchors that touch no box get zeros. Only positives' boxes are
regression targets; the others are kept for analysis (e.g. anchor coverage).
"""

from __future__ import annotations

import torch
from torch import Tensor

from loclab.ops.boxes import box_iou

__all__ = ["match_anchors_to_targets", "match_batch"]


def match_anchors_to_targets(
    anchors: Tensor,
    boxes: Tensor,
    labels: Tensor,
    pos_threshold: float = 0.5,
    neg_threshold: float = 0.3,
    min_best_iou: float = 0.1,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Match the anchors of one image to its ground-truth boxes (rules in the module docstring).

    Args:
        anchors (Tensor[N, 4]): all anchors of all scales concatenated, ``(x1, y1, x2, y2)``.
        boxes (Tensor[M, 4]): ground-truth boxes, ``(x1, y1, x2, y2)``. ``M`` may be 0.
        labels (Tensor[M]): class ids ``0..C-1``.
        pos_threshold: IoU at or above which an anchor is positive.
        neg_threshold: IoU below which an anchor is negative; ``<= pos_threshold``.
        min_best_iou: smallest IoU for which a box's best anchor is forced positive; ``> 0`` (use a value
            above 1 to switch forcing off).

    Returns:
        matched_labels (Tensor[N] long): 0 = background or ignored, ``1..C`` = class id + 1 for positives.
        matched_boxes (Tensor[N, 4]): the assigned box for every anchor, zeros where none (see module docstring).
        pos_mask (Tensor[N] bool): positives.
        neg_mask (Tensor[N] bool): negatives; disjoint from ``pos_mask``. With ``M = 0`` every anchor is negative.
    """
    valid = torch.ones(labels.shape, dtype=torch.bool, device=labels.device)
    out = match_batch(anchors, boxes[None], labels[None], valid[None], pos_threshold, neg_threshold, min_best_iou)
    matched_labels, matched_boxes, pos_mask, neg_mask = (t[0] for t in out)
    return matched_labels, matched_boxes, pos_mask, neg_mask


def match_batch(
    anchors: Tensor,
    boxes: Tensor,
    labels: Tensor,
    valid: Tensor,
    pos_threshold: float = 0.5,
    neg_threshold: float = 0.3,
    min_best_iou: float = 0.1,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Match the same anchors to the padded ground truth of ``B`` images at once, without Python loops.

    Image ``b`` has the boxes ``boxes[b, valid[b]]``; padded entries (``valid`` False) are never matched and
    may hold anything, including zeros. The result for image ``b`` equals
    ``match_anchors_to_targets(anchors, boxes[b, valid[b]], labels[b, valid[b]], ...)``.

    Args:
        anchors (Tensor[N, 4]): all anchors of all scales concatenated, ``(x1, y1, x2, y2)``.
        boxes (Tensor[B, M, 4]): padded ground-truth boxes, ``(x1, y1, x2, y2)``.
        labels (Tensor[B, M]): class ids ``0..C-1`` (anything in padded entries).
        valid (Tensor[B, M] bool): which entries are real boxes.
        pos_threshold, neg_threshold, min_best_iou: as in :func:`match_anchors_to_targets`.

    Returns:
        ``(matched_labels [B, N] long, matched_boxes [B, N, 4], pos_mask [B, N] bool, neg_mask [B, N] bool)``,
        each as in :func:`match_anchors_to_targets`.
    """
    if neg_threshold > pos_threshold:
        raise ValueError(f"neg_threshold {neg_threshold} must not exceed pos_threshold {pos_threshold}")
    if min_best_iou <= 0:
        raise ValueError(f"min_best_iou must be positive, got {min_best_iou}")
    num_images, max_boxes = labels.shape
    num_anchors = anchors.shape[0]
    device = anchors.device
    if max_boxes == 0 or num_anchors == 0:
        return (
            torch.zeros(num_images, num_anchors, dtype=torch.long, device=device),
            torch.zeros(num_images, num_anchors, 4, dtype=anchors.dtype, device=device),
            torch.zeros(num_images, num_anchors, dtype=torch.bool, device=device),
            torch.ones(num_images, num_anchors, dtype=torch.bool, device=device),
        )

    iou = box_iou(anchors, boxes.reshape(-1, 4)).view(num_anchors, num_images, max_boxes).permute(1, 0, 2)
    # Padding gets IoU -1: it loses every argmax against a real box, and an image without real boxes
    # leaves every anchor at "best IoU" -1 < neg_threshold, i.e. negative.
    iou = iou.masked_fill(~valid[:, None, :], -1.0)  # [B, N, M]

    # Rule 1: each anchor's best box. argmax returns the first maximum: lowest box index on ties.
    best_gt = iou.argmax(dim=2)  # [B, N]
    best_iou = iou.gather(2, best_gt[..., None])[..., 0]

    # Rule 2: each box's best anchor over all scales (lowest anchor index on ties).
    best_anchor = iou.argmax(dim=1)  # [B, M]
    claims = valid & (iou.gather(1, best_anchor[:, None, :])[:, 0, :] >= min_best_iou)  # [B, M]
    anchor_ids = torch.arange(num_anchors, device=device)
    claimed = (anchor_ids[None, :, None] == best_anchor[:, None, :]) & claims[:, None, :]  # [B, N, M]
    is_claimed = claimed.any(dim=2)
    # Rule 3: among the claimants of an anchor, the highest IoU wins (first index on ties).
    claimant = torch.where(claimed, iou, torch.full_like(iou, -2.0)).argmax(dim=2)

    gt_index = torch.where(is_claimed, claimant, best_gt)  # [B, N]
    pos_mask = (best_iou >= pos_threshold) | is_claimed
    neg_mask = (best_iou < neg_threshold) & ~pos_mask
    overlaps = (best_iou > 0) | is_claimed

    class_ids = labels.long().gather(1, gt_index)
    matched_labels = torch.where(pos_mask, class_ids + 1, torch.zeros_like(class_ids))
    gathered = boxes.gather(1, gt_index[..., None].expand(-1, -1, 4)).to(anchors.dtype)
    matched_boxes = torch.where(overlaps[..., None], gathered, torch.zeros_like(gathered))
    return matched_labels, matched_boxes, pos_mask, neg_mask
