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

The candidates are found per box, not per anchor-box pair: :class:`AnchorCells` indexes the anchors by scale and
cell once, so a batch costs ``B x M x 3 cells x A anchors`` per scale instead of ``B x N x M`` (N = every anchor
of every scale, thousands at 320 px). Like the rest of loclab's step it reads nothing back to the host.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from loclab.ops.boxes import box_center_size, box_iou

__all__ = ["ANCHOR_SHAPE_LIMIT", "AnchorCells", "grid_match"]

# YOLOv5's anchor_t: a box and an anchor whose widths or heights differ by 4x or more are not matched
ANCHOR_SHAPE_LIMIT = 4.0
_TINY = torch.finfo(torch.float32).tiny


@dataclass(frozen=True)
class AnchorCells:
    """The anchors of every scale indexed by grid cell: which anchors sit in cell ``(i, j)`` of a scale.

    Attributes:
        table (Tensor[cells, A] long): row ``first + i * cols + j`` holds the indices (into the concatenated
            anchors) of the anchors of cell ``(i, j)`` of a scale, ``-1`` where a cell has fewer than ``A``.
        grids: per scale ``(stride, rows, cols, first)``: the cell side in pixels, the grid's shape and the
            scale's first row of ``table``.
    """

    table: Tensor
    grids: tuple[tuple[float, int, int, int], ...]

    @classmethod
    def index(cls, anchors: Tensor, strides: Tensor) -> AnchorCells:
        """Index ``anchors`` (``[N, 4]`` xyxy, each centred in its cell) with their feature maps' ``strides``
        (``[N]``); a cell is ``floor(centre / stride)``, as the matching rule reads it. Runs on the host."""
        anchors, strides = anchors.detach().float().cpu(), strides.detach().float().cpu()
        ax, ay, _, _ = box_center_size(anchors)
        cell_i, cell_j = torch.floor(ay / strides).long(), torch.floor(ax / strides).long()
        grids, rows_of_cells = [], []
        first = 0
        for stride in sorted(set(strides.tolist())):
            members = (strides == stride).nonzero().flatten()
            rows, cols = int(cell_i[members].max()) + 1, int(cell_j[members].max()) + 1
            cell = first + cell_i[members] * cols + cell_j[members]
            grids.append((stride, rows, cols, first))
            rows_of_cells.append((cell, members))
            first += rows * cols
        width = max(int(torch.bincount(cell).max()) for cell, _ in rows_of_cells) if rows_of_cells else 0
        table = torch.full((first, width), -1, dtype=torch.long)
        for cell, members in rows_of_cells:
            order = torch.argsort(cell, stable=True)  # by cell, anchors in their given order within a cell
            cell, members = cell[order], members[order]
            starts = torch.searchsorted(cell, cell, side="left")
            table[cell, torch.arange(len(cell)) - starts] = members
        return cls(table, tuple(grids))

    def to(self, device: torch.device | str) -> AnchorCells:
        return replace(self, table=self.table.to(device))


def grid_match(
    anchors: Tensor,
    strides: Tensor,
    boxes: Tensor,
    valid: Tensor,
    anchor_t: float = ANCHOR_SHAPE_LIMIT,
    cells: AnchorCells | None = None,
) -> tuple[Tensor, Tensor]:
    """Grid-and-shape matching of the same anchors to the padded ground truth of ``B`` images.

    Args:
        anchors (Tensor[N, 4]): all anchors of all scales concatenated, ``(x1, y1, x2, y2)``, each centred in
            its cell as :func:`loclab.ops.anchors.generate_anchors` lays them out.
        strides (Tensor[N]): the stride (cell side, px) of each anchor's feature map.
        boxes (Tensor[B, M, 4]): padded ground-truth boxes, ``(x1, y1, x2, y2)``.
        valid (Tensor[B, M] bool): which entries are real boxes; padding is never matched.
        anchor_t: the shape limit of rule 2, ``> 1``.
        cells: ``AnchorCells.index(anchors, strides)`` on the anchors' device; built here when None (a loss
            that matches every step builds it once).

    Returns:
        ``(pos_mask [B, N] bool, gt_index [B, N] long)``: which anchors are positive, and the index into ``M``
        of the box each positive anchor is assigned to (0 for negatives).
    """
    if anchor_t <= 1:
        raise ValueError(f"anchor_t must exceed 1, got {anchor_t}")
    num_images, max_boxes = valid.shape
    num_anchors = anchors.shape[0]
    device = anchors.device
    if max_boxes == 0 or num_anchors == 0:
        zeros = torch.zeros(num_images, num_anchors, dtype=torch.long, device=device)
        return zeros.bool(), zeros
    if cells is None:
        cells = AnchorCells.index(anchors, strides).to(device)

    anchors = anchors.float()
    boxes = boxes.float()
    gx, gy, gw, gh = box_center_size(boxes)  # [B, M]
    image_of, box_of, anchor_of, score = [], [], [], []
    for stride, rows, cols, first in cells.grids:
        fx, fy = gx / stride, gy / stride
        box_j, box_i = torch.floor(fx), torch.floor(fy)
        side_j = torch.where(fx - box_j < 0.5, -1.0, 1.0)  # the neighbour nearest the centre
        side_i = torch.where(fy - box_i < 0.5, -1.0, 1.0)
        ci = torch.stack((box_i, box_i, box_i + side_i), dim=-1)  # [B, M, 3]: the centre's cell, then neighbours
        cj = torch.stack((box_j, box_j + side_j, box_j), dim=-1)
        inside = (ci >= 0) & (ci < rows) & (cj >= 0) & (cj < cols) & valid[..., None]
        row = first + ci.clamp(0, rows - 1).long() * cols + cj.clamp(0, cols - 1).long()
        members = cells.table[row]  # [B, M, 3, A]
        real = inside[..., None] & (members >= 0)
        members = members.clamp(min=0)
        anchor = anchors[members]  # [B, M, 3, A, 4]
        _, _, aw, ah = box_center_size(anchor)
        rw = gw.clamp(min=_TINY)[..., None, None] / aw
        rh = gh.clamp(min=_TINY)[..., None, None] / ah
        worst = torch.maximum(torch.maximum(rw, 1 / rw), torch.maximum(rh, 1 / rh))
        candidate = real & (worst < anchor_t)
        iou = box_iou(anchor[..., None, :], boxes[:, :, None, None, None, :])[..., 0, 0]  # [B, M, 3, A]
        shape = members.shape
        image_of.append(torch.arange(num_images, device=device).view(-1, 1, 1, 1).expand(shape).reshape(-1))
        box_of.append(torch.arange(max_boxes, device=device).view(1, -1, 1, 1).expand(shape).reshape(-1))
        anchor_of.append(members.reshape(-1))
        score.append(torch.where(candidate, iou, -1.0).reshape(-1))  # -1: not a candidate
    image_of, box_of, anchor_of, score = (torch.cat(t) for t in (image_of, box_of, anchor_of, score))

    # each anchor goes to its candidate of highest IoU, the lowest box index among equals
    slot = image_of * num_anchors + anchor_of
    best = torch.full((num_images * num_anchors,), -1.0, device=device).scatter_reduce(0, slot, score, "amax")
    winner = (score >= 0) & (score == best[slot])
    claim = torch.where(winner, box_of, max_boxes)
    gt_index = torch.full((num_images * num_anchors,), max_boxes, dtype=torch.long, device=device)
    gt_index = gt_index.scatter_reduce(0, slot, claim, "amin").view(num_images, num_anchors)
    pos_mask = gt_index < max_boxes
    return pos_mask, torch.where(pos_mask, gt_index, torch.zeros_like(gt_index))


