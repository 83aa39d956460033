"""Single-shot detection loss (docs/detection.md, 'Loss')."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from loclab.ops.boxes import BoxCoder
from loclab.ops.matching import match_batch


class DetectionLoss(nn.Module):
    """Objectness BCE + classification CE + localisation Smooth-L1 over all anchors of all scales.

    - Matching over all scales at once (:func:`loclab.ops.matching.match_batch`).
    - Objectness: BCE on positives and on hard-mined negatives, ``neg_pos_ratio`` negatives per positive
      per image, chosen by loss value (ignored anchors never count).
    - Classification: cross-entropy over the C classes on positives.
    - Localisation: Smooth-L1 (beta 1) on encoded offsets of positives.
    - Each term is summed and divided by the number of positives in the batch (at least 1), so an image
      with no objects trains its negatives without dividing by zero.

    Returns ``{"loss_obj", "loss_cls", "loss_loc", "loss_total"}`` with
    ``loss_total = w_obj * loss_obj + w_cls * loss_cls + w_loc * loss_loc``.
    """

    def __init__(
        self,
        anchors: Tensor,
        num_classes: int = 3,
        box_coder: BoxCoder | None = None,
        pos_threshold: float = 0.5,
        neg_threshold: float = 0.3,
        min_best_iou: float = 0.1,
        neg_pos_ratio: float = 3.0,
        weight_obj: float = 1.0,
        weight_cls: float = 1.0,
        weight_loc: float = 2.0,
    ):
        super().__init__()
        self.register_buffer("anchors", anchors.float(), persistent=False)
        self.num_classes = num_classes
        self.box_coder = box_coder or BoxCoder()
        self.pos_threshold, self.neg_threshold, self.min_best_iou = pos_threshold, neg_threshold, min_best_iou
        self.neg_pos_ratio = neg_pos_ratio
        self.weights = (weight_obj, weight_cls, weight_loc)

    def forward(self, predictions: Tensor, boxes: Tensor, labels: Tensor, valid: Tensor) -> dict[str, Tensor]:
        """
        Args:
            predictions: ``[B, N, 5+C]`` flattened head outputs (any float dtype; computed in fp32).
            boxes: ``[B, M, 4]`` padded ground-truth boxes, xyxy pixels.
            labels: ``[B, M]`` class ids 0..C-1 (padding ignored).
            valid: ``[B, M]`` bool, which ground-truth slots are real.
        """
        predictions = predictions.float()
        with torch.no_grad():
            matched_labels, matched_boxes, pos, neg = match_batch(
                self.anchors,
                boxes,
                labels,
                valid,
                pos_threshold=self.pos_threshold,
                neg_threshold=self.neg_threshold,
                min_best_iou=self.min_best_iou,
            )
            num_pos = pos.sum()
            normaliser = num_pos.clamp(min=1).float()

        obj_logits = predictions[..., 4]
        obj_loss_all = F.binary_cross_entropy_with_logits(obj_logits, pos.float(), reduction="none")
        hard_neg = self._hard_negatives(obj_loss_all.detach(), pos, neg)
        loss_obj = (obj_loss_all * (pos | hard_neg)).sum() / normaliser

        cls_logits = predictions[..., 5:][pos]
        cls_target = matched_labels[pos] - 1
        loss_cls = F.cross_entropy(cls_logits, cls_target, reduction="sum") / normaliser

        anchors = self.anchors.expand_as(matched_boxes)[pos]
        target_deltas = self.box_coder.encode(matched_boxes[pos], anchors)
        loss_loc = F.smooth_l1_loss(predictions[..., :4][pos], target_deltas, beta=1.0, reduction="sum")
        loss_loc = loss_loc / normaliser

        w_obj, w_cls, w_loc = self.weights
        total = w_obj * loss_obj + w_cls * loss_cls + w_loc * loss_loc
        return {"loss_obj": loss_obj, "loss_cls": loss_cls, "loss_loc": loss_loc, "loss_total": total}

    def _hard_negatives(self, loss: Tensor, pos: Tensor, neg: Tensor) -> Tensor:
        """``[B, N]`` mask of the ``ratio * num_pos`` highest-loss negatives of each image.

        An image without positives keeps ``ratio`` negatives so that it still teaches "nothing here".
        """
        quota = (pos.sum(dim=1, keepdim=True) * self.neg_pos_ratio).clamp(min=self.neg_pos_ratio).long()
        # the largest quota of the batch, not a full sort: top-k is several times cheaper than argsort
        k = min(int(quota.max()), loss.shape[1])
        masked = torch.where(neg, loss, torch.full_like(loss, -1.0))  # losses are >= 0
        top = masked.topk(k, dim=1).indices  # [B, k], hardest first
        within_quota = torch.arange(k, device=loss.device)[None, :] < quota
        hard = torch.zeros_like(neg).scatter_(1, top, within_quota)
        return hard & neg
