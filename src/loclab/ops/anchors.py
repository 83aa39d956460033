"""Anchors (square, or of given aspect ratios) on the cell centres of square feature maps.

A *scale* is one feature map (one detector head: S1, S2, S3); the anchors' side lengths are their *sizes*.

Order convention (docs/architecture.md): anchors of one scale are laid out row-major over ``(i, j, a)`` —
row, column, anchor size — so anchor ``k = (i * W + j) * A + a``. A head output ``[B, A*(5+C), H, W]`` reshaped
with ``view(B, A, 5+C, H, W).permute(0, 3, 4, 1, 2).reshape(B, H*W*A, 5+C)`` lines up with it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["anchor_scale_index", "generate_anchors"]


def generate_anchors(
    feature_map_sizes: Sequence[int],
    anchor_sizes: Sequence[Sequence[float]],
    image_size: int = 224,
    *,
    aspect_ratios: Sequence[Sequence[float]] | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> list[Tensor]:
    """Anchors for every cell of every feature map: square, or of the given aspect ratios.

    Feature map ``s`` is ``H = W = feature_map_sizes[s]`` cells over an ``image_size`` square image, so its
    stride is ``image_size / H`` (a float; it need not divide evenly). Cell ``(i, j)`` is centred at
    ``((j + 0.5) * stride, (i + 0.5) * stride)`` and carries one anchor of side ``L`` (square unless
    ``aspect_ratios`` says otherwise) for each ``L in anchor_sizes[s]``. Anchors are never clipped to the image: a
    192 px anchor near the border keeps its true size, so its IoU with a border object is not inflated.

    Args:
        feature_map_sizes: side ``H`` of each square feature map, e.g. ``(56, 28, 14)``.
        anchor_sizes: anchor side lengths in pixels per feature map, e.g. ``((16, 24, 32), (48, 64, 96), ...)``.
        image_size: side of the square input image in pixels.
        aspect_ratios: ``None`` (square anchors) or one ratio ``r = w / h > 0`` per anchor, nested like
            ``anchor_sizes``. Anchor ``(L, r)`` is ``L * sqrt(r)`` wide and ``L / sqrt(r)`` high, so its area stays
            ``L**2``; ``r = 1`` gives exactly the square anchor.
        dtype, device: of the returned tensors.

    Returns:
        list[Tensor[H*W*A, 4]]: one tensor per feature map, ``(x1, y1, x2, y2)`` boxes ordered row-major over
        ``(i, j, a)``.
    """
    if len(feature_map_sizes) != len(anchor_sizes):
        raise ValueError(
            f"{len(feature_map_sizes)} feature map sizes but {len(anchor_sizes)} lists of anchor sizes"
        )
    if aspect_ratios is not None and (
        len(aspect_ratios) != len(anchor_sizes)
        or any(len(r) != len(s) for r, s in zip(aspect_ratios, anchor_sizes))
        or any(not r > 0 for ratios in aspect_ratios for r in ratios)
    ):
        raise ValueError(f"aspect_ratios must be positive and nested like anchor_sizes, got {aspect_ratios}")
    anchors = []
    for s, (size, sides) in enumerate(zip(feature_map_sizes, anchor_sizes)):
        if size <= 0 or len(sides) == 0:
            raise ValueError(f"feature map size must be positive and anchor sizes non-empty, got {size}, {sides}")
        stride = image_size / size
        # Computed in float64 so centres such as 223.99999 do not drift in float32, then cast once.
        centres = (torch.arange(size, dtype=torch.float64) + 0.5) * stride
        cy, cx = torch.meshgrid(centres, centres, indexing="ij")  # [H, W], row i, column j
        half_w = half_h = torch.as_tensor(sides, dtype=torch.float64) / 2  # [A]
        if aspect_ratios is not None:
            root = torch.as_tensor(aspect_ratios[s], dtype=torch.float64).sqrt()  # sqrt(1) == 1: squares unchanged
            half_w, half_h = half_w * root, half_h / root
        cx = cx[:, :, None]  # [H, W, 1] broadcast against the A sizes
        cy = cy[:, :, None]
        boxes = torch.stack((cx - half_w, cy - half_h, cx + half_w, cy + half_h), dim=-1)  # [H, W, A, 4]
        anchors.append(boxes.reshape(-1, 4).to(dtype=dtype, device=device))
    return anchors


def anchor_scale_index(
    feature_map_sizes: Sequence[int],
    num_anchors_per_cell: int | Sequence[int],
    *,
    device: torch.device | str | None = None,
) -> Tensor:
    """Which feature map (scale) each anchor of the concatenated anchor list comes from.

    Used to attribute detections to the head that produced them (scale specialisation analysis).

    Args:
        feature_map_sizes: side ``H`` of each square feature map, as given to :func:`generate_anchors`.
        num_anchors_per_cell: ``A`` for every map (an int) or one ``A`` per map.

    Returns:
        Tensor[sum(H*H*A)] long: ``s`` for every anchor of map ``s``, in the order of
        ``torch.cat(generate_anchors(...))``.
    """
    if isinstance(num_anchors_per_cell, int):
        per_cell = [num_anchors_per_cell] * len(feature_map_sizes)
    else:
        per_cell = list(num_anchors_per_cell)
    if len(per_cell) != len(feature_map_sizes):
        raise ValueError(f"{len(feature_map_sizes)} feature map sizes but {len(per_cell)} anchor counts")
    counts = torch.tensor([size * size * a for size, a in zip(feature_map_sizes, per_cell)], device=device)
    return torch.repeat_interleave(torch.arange(len(counts), device=device), counts)
