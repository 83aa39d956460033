"""Overlap measures that train box regression: generalised and complete IoU of box pairs.

Both take predicted and target boxes paired element by element (``[..., 4]`` against ``[..., 4]``, xyxy) and are
differentiable in the predictions; ``1 - value`` is the loss. Plain IoU has no gradient once two boxes stop
overlapping; GIoU (Rezatofighi et al., 2019) subtracts the part of the enclosing box the two leave empty, and
CIoU (Zheng et al., 2020) instead subtracts the squared centre distance over the enclosing box's squared
diagonal and an aspect-ratio term, so that a box is pulled to the right centre and shape even while it is
inside its target.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from loclab.ops.boxes import box_center_size

__all__ = ["complete_iou", "generalized_iou", "paired_iou"]

_EPS = 1e-7


def _intersection_union(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    width = (torch.minimum(pred[..., 2], target[..., 2]) - torch.maximum(pred[..., 0], target[..., 0])).clamp(min=0)
    height = (torch.minimum(pred[..., 3], target[..., 3]) - torch.maximum(pred[..., 1], target[..., 1])).clamp(min=0)
    inter = width * height
    area_p = (pred[..., 2] - pred[..., 0]) * (pred[..., 3] - pred[..., 1])
    area_t = (target[..., 2] - target[..., 0]) * (target[..., 3] - target[..., 1])
    return inter, area_p + area_t - inter + _EPS


def _enclosing(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Width and height of the smallest box enclosing each pair."""
    width = torch.maximum(pred[..., 2], target[..., 2]) - torch.minimum(pred[..., 0], target[..., 0])
    height = torch.maximum(pred[..., 3], target[..., 3]) - torch.minimum(pred[..., 1], target[..., 1])
    return width, height


def paired_iou(pred: Tensor, target: Tensor) -> Tensor:
    """IoU of each pair ``(pred[i], target[i])`` (not all pairs: see :func:`loclab.ops.boxes.box_iou`)."""
    inter, union = _intersection_union(pred, target)
    return inter / union


def generalized_iou(pred: Tensor, target: Tensor) -> Tensor:
    """GIoU of each pair: ``IoU - (enclosing area - union) / enclosing area``, in ``(-1, 1]``."""
    inter, union = _intersection_union(pred, target)
    width, height = _enclosing(pred, target)
    hull = width * height + _EPS
    return inter / union - (hull - union) / hull


def complete_iou(pred: Tensor, target: Tensor) -> Tensor:
    """CIoU of each pair: ``IoU - rho^2 / c^2 - alpha * v``, in ``[-1.5, 1]``.

    ``rho`` is the distance between the centres, ``c`` the diagonal of the enclosing box,
    ``v = 4 / pi^2 * (atan(wt / ht) - atan(wp / hp))^2`` the aspect-ratio mismatch and
    ``alpha = v / (1 - IoU + v)`` its weight, held constant in the gradient as the paper does.
    """
    inter, union = _intersection_union(pred, target)
    iou = inter / union
    width, height = _enclosing(pred, target)
    diagonal2 = width**2 + height**2 + _EPS
    px, py, pw, ph = box_center_size(pred)
    tx, ty, tw, th = box_center_size(target)
    rho2 = (px - tx) ** 2 + (py - ty) ** 2
    v = (4 / math.pi**2) * (torch.atan(tw / (th + _EPS)) - torch.atan(pw / (ph + _EPS))) ** 2
    with torch.no_grad():
        alpha = v / (v - iou + (1 + _EPS))
    return iou - (rho2 / diagonal2 + alpha * v)
