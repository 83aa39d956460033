"""Assigning ground-truth boxes to anchors by grid cell and shape, as YOLOv5 does, for a padded batch.

The IoU matching of :mod:`loclab.ops.matching` gives an object only the few anchors that overlap it by half,
so a photo with one kangaroo trains a handful of positives. Grid matching gives every object many: an anchor
is a candidate for a box when

1. its cell is the cell holding the box centre on the anchor's own feature map, or one of the two neighbouring
   cells nearest that centre (left or right, up or down: the one on the side of the centre within its cell),
   and
2. its shape is within ``anchor_t`` of the box's: ``max(w / aw, aw / w, h / ah, ah / h) < anchor_t``
   (4 in YOLOv5), on any scale.

A box can therefore be claimed by up to three cells times every anchor of a suitable shape on every scale.
An anchor that is a candidate for several boxes goes to the one it overlaps most (IoU of the anchor as laid
out, lowest box index on ties). Every anchor that is no candidate is a negative: there is no ignored band.
"""

from __future__ import annotations

import torch
from torch import Tensor

from loclab.ops.boxes import box_center_size, box_iou

__all__ = ["ANCHOR_SHAPE_LIMIT", "grid_match"]

# YOLOv5's anchor_t: a box and an anchor whose widths or heights differ by 4x or more are not matched
ANCHOR_SHAPE_LIMIT = 4.0


def grid_match(
    anchors: Tensor,
    strides: Tensor,
    boxes: Tensor,
    valid: Tensor,
    anchor_t: float = ANCHOR_SHAPE_LIMIT,
) -> tuple[Tensor, Tensor]:
    """Grid-and-shape matching of the same anchors to the padded ground truth of ``B`` images.

    Args:
        anchors (Tensor[N, 4]): all anchors of all scales concatenated, ``(x1, y1, x2, y2)``, each centred in
            its cell as :func:`loclab.ops.anchors.generate_anchors` lays them out.
        strides (Tensor[N]): the stride (cell side, px) of each anchor's feature map.
        boxes (Tensor[B, M, 4]): padded ground-truth boxes, ``(x1, y1, x2, y2)``.
        valid (Tensor[B, M] bool): which entries are real boxes; padding is never matched.
        anchor_t: the shape limit of rule 2, ``> 1``.

    Returns:
        ``(pos_mask [B, N] bool, gt_index [B, N] long)``: which anchors are positive, and the index into ``M``
        of the box each positive anchor is assigned to (0 for negatives).
    """
    if anchor_t <= 1:
        raise ValueError(f"anchor_t must exceed 1, got {anchor_t}")
    num_images, max_boxes = valid.shape
    num_anchors = anchors.shape[0]
    if max_boxes == 0 or num_anchors == 0:
        zeros = torch.zeros(num_images, num_anchors, dtype=torch.long, device=anchors.device)
        return zeros.bool(), zeros

    ax, ay, aw, ah = box_center_size(anchors.float())
    strides = strides.float()
    cell_i = torch.floor(ay / strides)[None, :, None]  # [1, N, 1]
    cell_j = torch.floor(ax / strides)[None, :, None]
    gx, gy, gw, gh = box_center_size(boxes.float())  # [B, M]
    fx = gx[:, None, :] / strides[None, :, None]  # [B, N, M]: box centre in the anchor's grid
    fy = gy[:, None, :] / strides[None, :, None]
    box_j, box_i = torch.floor(fx), torch.floor(fy)
    side_j = torch.where(fx - box_j < 0.5, -1.0, 1.0)  # the neighbour nearest the centre
    side_i = torch.where(fy - box_i < 0.5, -1.0, 1.0)
    dj, di = cell_j - box_j, cell_i - box_i
    in_cells = ((di == 0) & ((dj == 0) | (dj == side_j))) | ((dj == 0) & (di == side_i))

    tiny = torch.finfo(torch.float32).tiny
    rw = gw.clamp(min=tiny)[:, None, :] / aw[None, :, None]
    rh = gh.clamp(min=tiny)[:, None, :] / ah[None, :, None]
    worst = torch.maximum(torch.maximum(rw, 1 / rw), torch.maximum(rh, 1 / rh))
    candidate = in_cells & (worst < anchor_t) & valid[:, None, :]  # [B, N, M]

    iou = box_iou(anchors.float(), boxes.float().reshape(-1, 4)).view(num_anchors, num_images, max_boxes)
    iou = iou.permute(1, 0, 2)
    gt_index = torch.where(candidate, iou, torch.full_like(iou, -1.0)).argmax(dim=2)  # first max on ties
    pos_mask = candidate.any(dim=2)
    return pos_mask, torch.where(pos_mask, gt_index, torch.zeros_like(gt_index))
