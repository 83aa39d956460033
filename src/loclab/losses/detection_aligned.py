"""The task-aligned detection loss: the grid loss's terms with TOOD's assignment (docs/detection.md, 'Loss').

What changes from :class:`loclab.losses.detection_grid.GridDetectionLoss` is who is positive and how much
each positive counts, not the predictions, anchors, decoding or gains:

- Assignment: :func:`loclab.ops.aligned_assign.task_aligned_assign` on the current predictions (detached):
  at most ``top_k`` positives per box, the anchors inside it whose score and decoded box already agree best.
- Each positive carries a quality target in ``[0, 1]`` (its alignment rescaled per box). Objectness is asked
  for that quality (0 on every other anchor); the CIoU and class terms are weighted by it and divided by the
  qualities' sum (at least 1), as YOLOv8 weights its box and class terms by its target scores.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from loclab.losses.detection_grid import SCALE_BALANCE, GridDetectionLoss
from loclab.ops.aligned_assign import ALIGN_ALPHA, ALIGN_BETA, ALIGN_TOP_K, task_aligned_assign
from loclab.ops.boxes import BoxCoder, box_center_size


class AlignedDetectionLoss(GridDetectionLoss):
    """Task-aligned assignment, quality-valued objectness, quality-weighted CIoU and classes (module docstring).

    Returns the same four losses as :class:`GridDetectionLoss`.
    """

    def __init__(
        self,
        anchors: Tensor,
        scales: Tensor,
        strides: Sequence[float],
        image_size: int,
        num_classes: int = 3,
        box_coder: BoxCoder | None = None,
        balance: Sequence[float] = SCALE_BALANCE,
        weight_obj: float = 1.0,
        weight_cls: float = 1.0,
        weight_loc: float = 1.0,
        top_k: int = ALIGN_TOP_K,
        alpha: float = ALIGN_ALPHA,
        beta: float = ALIGN_BETA,
    ):
        super().__init__(anchors, scales, strides, image_size, num_classes=num_classes, box_coder=box_coder,
                         balance=balance, weight_obj=weight_obj, weight_cls=weight_cls, weight_loc=weight_loc)
        cx, cy, _, _ = box_center_size(anchors.float())
        self.register_buffer("centres", torch.stack((cx, cy), dim=-1), persistent=False)
        self.top_k, self.alpha, self.beta = top_k, alpha, beta

    def forward(self, predictions: Tensor, boxes: Tensor, labels: Tensor, valid: Tensor) -> dict[str, Tensor]:
        """The four losses of a batch; arguments as :meth:`loclab.losses.detection.DetectionLoss.forward`."""
        predictions = predictions.float()
        decoded = self.box_coder.decode(predictions[..., :4], self.anchors)  # [B, N, 4], every anchor
        with torch.no_grad():
            scores = torch.sigmoid(predictions[..., 4:5]) * torch.softmax(predictions[..., 5:], dim=-1)
            pos, gt_index, quality = task_aligned_assign(self.centres, decoded.detach(), scores, boxes, labels,
                                                         valid, self.top_k, self.alpha, self.beta)
        return self._losses(predictions, decoded[pos], pos, gt_index, boxes, labels, quality)
