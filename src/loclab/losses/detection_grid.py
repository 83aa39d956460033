"""The grid-matched detection loss (YOLOv5's recipe on loclab's anchors and heads; docs/detection.md, 'Loss').

Same predictions, anchors and decoding as :class:`loclab.losses.detection.DetectionLoss`; what changes is who is
positive and what each term asks:

- Matching: :func:`loclab.ops.grid_matching.grid_match`, many positives per object (its cell and the two nearest
  neighbours, every anchor of a fitting shape on every scale).
- Localisation: ``1 - CIoU`` of the decoded box and its target, averaged over positives. An IoU loss scores
  what AP scores, where Smooth-L1 on offsets weighs a 2 px error on a 20 px box like one on a 200 px box.
- Objectness: BCE on *every* anchor, the target being the detached IoU of the positive's decoded box (0 for
  the rest), averaged per scale and weighted per scale by ``balance`` (YOLOv5's 4, 1, 0.4 from the finest map to
  the coarsest). A score that tracks box quality ranks well-placed boxes first, which AP rewards; no
  negative is left out, so nothing like hard-negative mining is needed.
- Classification: cross-entropy over the C classes on positives, averaged (exactly 0 with one class).

Gains follow YOLOv5's scratch hyper-parameters for three heads: box 0.05, objectness ``(S / 640)^2`` (S the input
side: more cells, smaller per-cell mean), class 0.5; each is multiplied by the config's ``weight_loc``,
``weight_obj``, ``weight_cls``, and the total by the batch size, so the gradient has YOLOv5's scale.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from loclab.ops.boxes import BoxCoder
from loclab.ops.grid_matching import ANCHOR_SHAPE_LIMIT, AnchorCells, grid_match
from loclab.ops.iou_losses import complete_iou

BOX_GAIN, OBJ_GAIN, CLS_GAIN = 0.05, 1.0, 0.5
SCALE_BALANCE = (4.0, 1.0, 0.4)


class GridDetectionLoss(nn.Module):
    """Grid matching, CIoU, IoU-valued objectness on every anchor (module docstring).

    Returns ``{"loss_obj", "loss_cls", "loss_loc", "loss_total"}``; the three terms are the unweighted means
    described above, ``loss_total`` their weighted sum times the batch size.
    """

    def __init__(
        self,
        anchors: Tensor,
        scales: Tensor,
        strides: Sequence[float],
        image_size: int,
        num_classes: int = 3,
        box_coder: BoxCoder | None = None,
        anchor_t: float = ANCHOR_SHAPE_LIMIT,
        balance: Sequence[float] = SCALE_BALANCE,
        weight_obj: float = 1.0,
        weight_cls: float = 1.0,
        weight_loc: float = 1.0,
    ):
        super().__init__()
        num_scales = len(strides)
        if len(balance) != num_scales:
            raise ValueError(f"{num_scales} scales but {len(balance)} balance weights")
        self.register_buffer("anchors", anchors.float(), persistent=False)
        stride_of_anchor = torch.tensor([float(s) for s in strides])[scales.long()]
        self.register_buffer("strides", stride_of_anchor, persistent=False)
        cells = AnchorCells.index(anchors, stride_of_anchor)  # built once; its table moves with the module
        self.register_buffer("cell_table", cells.table, persistent=False)
        self.cell_grids = cells.grids
        # per-anchor objectness weight: balance of its scale over that scale's anchor count (a per-scale mean)
        counts = torch.bincount(scales.long(), minlength=num_scales).clamp(min=1).float()
        obj_weight = torch.tensor([float(b) for b in balance])[scales.long()] / counts[scales.long()]
        self.register_buffer("obj_weight", obj_weight, persistent=False)
        self.num_classes = num_classes
        self.box_coder = box_coder or BoxCoder()
        self.anchor_t = anchor_t
        self.gains = (
            weight_obj * OBJ_GAIN * (image_size / 640) ** 2 * 3 / num_scales,
            weight_cls * CLS_GAIN * 3 / num_scales,
            weight_loc * BOX_GAIN * 3 / num_scales,
        )

    def forward(self, predictions: Tensor, boxes: Tensor, labels: Tensor, valid: Tensor) -> dict[str, Tensor]:
        """The four losses of a batch; arguments as :meth:`loclab.losses.detection.DetectionLoss.forward`."""
        predictions = predictions.float()
        num_images = predictions.shape[0]
        with torch.no_grad():
            cells = AnchorCells(self.cell_table, self.cell_grids)
            pos, gt_index = grid_match(self.anchors, self.strides, boxes, valid, self.anchor_t, cells)

        anchors = self.anchors.expand(num_images, -1, -1)[pos]
        decoded = self.box_coder.decode(predictions[..., :4][pos], anchors)
        return self._losses(predictions, decoded, pos, gt_index, boxes, labels)

    def _losses(self, predictions: Tensor, decoded: Tensor, pos: Tensor, gt_index: Tensor, boxes: Tensor,
                labels: Tensor, quality: Tensor | None = None) -> dict[str, Tensor]:
        """The three terms and their total, given the positives ``pos [B, N]``, their boxes ``gt_index [B, N]``
        and their decoded boxes ``decoded [P, 4]``.

        ``quality`` None: every positive weighs 1 and its objectness target is its detached CIoU (this loss).
        ``quality [B, N]``: each positive's box and class terms are weighted by its quality, normalised by the
        quality's sum, and its objectness target is its quality (:mod:`loclab.losses.detection_aligned`).
        """
        num_images = predictions.shape[0]
        with torch.no_grad():
            target_boxes = boxes.float().gather(1, gt_index[..., None].expand(-1, -1, 4))[pos]
            target_labels = labels.long().gather(1, gt_index)[pos]
            weight = None if quality is None else quality[pos]
            normaliser = (pos.sum() if weight is None else weight.sum()).clamp(min=1).float()

        ciou = complete_iou(decoded, target_boxes)
        box_error = 1.0 - ciou if weight is None else (1.0 - ciou) * weight
        loss_loc = box_error.sum() / normaliser

        obj_target = torch.zeros_like(predictions[..., 4])
        obj_target[pos] = (ciou.detach().clamp(min=0) if weight is None else weight).to(obj_target.dtype)
        obj_bce = F.binary_cross_entropy_with_logits(predictions[..., 4], obj_target, reduction="none")
        loss_obj = (obj_bce * self.obj_weight).sum() / num_images

        if weight is None:
            class_error = F.cross_entropy(predictions[..., 5:][pos], target_labels, reduction="sum")
        else:
            class_error = (F.cross_entropy(predictions[..., 5:][pos], target_labels, reduction="none") * weight).sum()
        loss_cls = class_error / normaliser

        g_obj, g_cls, g_loc = self.gains
        total = (g_obj * loss_obj + g_cls * loss_cls + g_loc * loss_loc) * num_images
        return {"loss_obj": loss_obj, "loss_cls": loss_cls, "loss_loc": loss_loc, "loss_total": total}
