"""Box geometry: areas, IoU, format conversions and the anchor-offset box coder.

Every box here is ``(x1, y1, x2, y2)`` in continuous pixel coordinates with ``x1 <= x2`` and ``y1 <= y2``;
the area is ``(x2 - x1) * (y2 - y1)`` with no ``+1`` (see docs/architecture.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "BoxCoder",
    "box_area",
    "box_center_size",
    "box_iou",
    "box_iou_numpy",
    "box_iou_pair",
    "compute_iou",
    "cxcywh_to_xyxy",
    "xywh_to_xyxy",
    "xyxy_to_cxcywh",
    "xyxy_to_xywh",
]


def box_area(boxes: Tensor) -> Tensor:
    """Area of each box.

    Args:
        boxes (Tensor[..., 4]): boxes in ``(x1, y1, x2, y2)`` format with ``x1 <= x2``, ``y1 <= y2``.

    Returns:
        Tensor[...]: ``(x2 - x1) * (y2 - y1)`` for every box (no ``+1``).
    """
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise intersection-over-union.

    Args:
        boxes1 (Tensor[..., N, 4]): boxes in ``(x1, y1, x2, y2)`` format, ``x1 <= x2``, ``y1 <= y2``.
        boxes2 (Tensor[..., M, 4]): boxes in the same format; leading dimensions (a batch of images, say)
            broadcast against those of ``boxes1``.

    Returns:
        Tensor[..., N, M]: IoU of every pair, in ``[0, 1]``. ``N`` or ``M`` may be 0. A pair whose union is empty
        (two degenerate boxes) has IoU 0 rather than NaN. Integer inputs give a floating-point result.
    """
    area1 = box_area(boxes1)
    area2 = box_area(boxes2)
    lt = torch.maximum(boxes1[..., :, None, :2], boxes2[..., None, :, :2])  # [..., N, M, 2]
    rb = torch.minimum(boxes1[..., :, None, 2:], boxes2[..., None, :, 2:])  # [..., N, M, 2]
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area1[..., :, None] + area2[..., None, :] - inter
    if not union.is_floating_point():
        inter, union = inter.float(), union.float()
    # inter <= union always, so an empty union means an empty intersection: dividing by 1 there gives 0.
    return inter / torch.where(union > 0, union, 1.0)


def box_iou_numpy(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """:func:`box_iou` for numpy arrays ``[N, 4]`` and ``[M, 4]``: the same rule, ``[N, M]`` float64.

    Why a second implementation: AP matching (:mod:`loclab.metrics.ap_matching`) computes one small IoU matrix per image
    and class, and on such sizes (tens of boxes) numpy is 2-4x faster than a round trip through torch. The data
    All IoU implementations here are tested against one slow reference.
    """
    boxes1 = np.asarray(boxes1, dtype=np.float64).reshape(-1, 4)
    boxes2 = np.asarray(boxes2, dtype=np.float64).reshape(-1, 4)
    lt = np.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
    wh = np.clip(np.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:]) - lt, 0.0, None)
    inter = wh[..., 0] * wh[..., 1]
    area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])
    union = area1[:, None] + area2[None, :] - inter
    return inter / np.where(union > 0, union, 1.0)


def box_iou_pair(box1: Sequence[float], box2: Sequence[float]) -> float:
    """IoU of two single ``(x1, y1, x2, y2)`` boxes given as plain numbers: the rule of :func:`box_iou`.

    Why a third implementation: the shapes generator tests one candidate box at a time against the boxes already
    placed, tens of times per image; plain Python arithmetic takes under a microsecond there, where each numpy
    call costs about 20, which made generation 1.7x slower.
    """
    iw = min(box1[2], box2[2]) - max(box1[0], box2[0])
    ih = min(box1[3], box2[3]) - max(box1[1], box2[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / ((box1[2] - box1[0]) * (box1[3] - box1[1]) + (box2[2] - box2[0]) * (box2[3] - box2[1]) - inter)


compute_iou = box_iou
"""Same as :func:`box_iou`; ``compute_iou`` is the name the course code uses, kept so that code written against
it runs unchanged."""


def xywh_to_xyxy(boxes: Tensor) -> Tensor:
    """COCO ``(x, y, w, h)`` (top-left corner and size) to ``(x1, y1, x2, y2)``. Shape ``[..., 4]`` kept."""
    x, y, w, h = boxes.unbind(-1)
    return torch.stack((x, y, x + w, y + h), dim=-1)


def xyxy_to_xywh(boxes: Tensor) -> Tensor:
    """``(x1, y1, x2, y2)`` to COCO ``(x, y, w, h)`` (top-left corner and size). Shape ``[..., 4]`` kept."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack((x1, y1, x2 - x1, y2 - y1), dim=-1)


def cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """``(cx, cy, w, h)`` (centre and size) to ``(x1, y1, x2, y2)``. Shape ``[..., 4]`` kept."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack((cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h), dim=-1)


def xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """``(x1, y1, x2, y2)`` to ``(cx, cy, w, h)`` (centre and size). Shape ``[..., 4]`` kept."""
    return torch.stack(box_center_size(boxes), dim=-1)


def box_center_size(boxes: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Split ``(x1, y1, x2, y2)`` boxes of shape ``[..., 4]`` into four ``[...]`` tensors ``(cx, cy, w, h)``."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    w = x2 - x1
    h = y2 - y1
    return x1 + 0.5 * w, y1 + 0.5 * h, w, h


# Largest log size ratio decode will exponentiate: a box at most 1000/16 times its anchor. Untrained heads can
# emit huge tw/th; without the clamp exp() overflows to inf and poisons the loss and NMS.
_LOG_SIZE_CLAMP = math.log(1000.0 / 16)


@dataclass(frozen=True)
class BoxCoder:
    """Encodes boxes as centre/size offsets from anchors, and decodes them back.

    With anchor centre ``(ax, ay)`` and size ``(aw, ah)``, box centre ``(gx, gy)`` and size ``(gw, gh)``::

        tx = (gx - ax) / aw / vc        tw = log(gw / aw) / vs
        ty = (gy - ay) / ah / vc        th = log(gh / ah) / vs

    where ``variances = (vc, vs)``. ``(1, 1)`` gives the plain offsets of the course code; SSD-style
    coders use ``(0.1, 0.2)`` to bring the targets to roughly unit scale.

    ``decode`` is the exact inverse of ``encode`` for every box whose size is at most ``1000/16`` times its
    anchor's: beyond that, decode clamps ``tw * vs`` and ``th * vs`` at ``log(1000/16)`` before ``exp``.

    Attributes:
        variances: ``(centre variance, size variance)``, both positive.
    """

    variances: tuple[float, float] = (1.0, 1.0)

    def __post_init__(self) -> None:
        if len(self.variances) != 2 or min(self.variances) <= 0:
            raise ValueError(f"variances must be two positive numbers, got {self.variances!r}")

    def encode(self, boxes: Tensor, anchors: Tensor) -> Tensor:
        """Offsets that move each anchor onto its box.

        Args:
            boxes (Tensor[..., 4]): target boxes, ``(x1, y1, x2, y2)``, positive width and height.
            anchors (Tensor[..., 4]): anchors in the same format, broadcastable against ``boxes``.

        Returns:
            Tensor[..., 4]: ``(tx, ty, tw, th)`` for every box/anchor pair (broadcast shape).
        """
        vc, vs = self.variances
        gx, gy, gw, gh = box_center_size(boxes)
        ax, ay, aw, ah = box_center_size(anchors)
        tx = (gx - ax) / aw / vc
        ty = (gy - ay) / ah / vc
        tw = torch.log(gw / aw) / vs
        th = torch.log(gh / ah) / vs
        return torch.stack((tx, ty, tw, th), dim=-1)

    def decode(self, deltas: Tensor, anchors: Tensor) -> Tensor:
        """Boxes obtained by applying offsets to anchors; the inverse of :meth:`encode`.

        Args:
            deltas (Tensor[..., 4]): ``(tx, ty, tw, th)`` as produced by :meth:`encode` or a detection head.
            anchors (Tensor[..., 4]): anchors, ``(x1, y1, x2, y2)``, broadcastable against ``deltas``.

        Returns:
            Tensor[..., 4]: boxes in ``(x1, y1, x2, y2)`` format (broadcast shape), never clipped to the image.
        """
        vc, vs = self.variances
        tx, ty, tw, th = deltas.unbind(-1)
        ax, ay, aw, ah = box_center_size(anchors)
        cx = tx * vc * aw + ax
        cy = ty * vc * ah + ay
        w = torch.exp((tw * vs).clamp(max=_LOG_SIZE_CLAMP)) * aw
        h = torch.exp((th * vs).clamp(max=_LOG_SIZE_CLAMP)) * ah
        return torch.stack((cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h), dim=-1)
