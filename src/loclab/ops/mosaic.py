"""Mosaic augmentation of detection batches: four images tiled, then a random window of one image's size.

Each chosen image becomes the top-left tile of a ``2S x 2S`` canvas whose other three tiles are other images of
the batch; an ``S x S`` window at a random integer offset ``(ox, oy)`` in ``[0, S]`` is cut out, so the four
images meet at a random point of the result. Objects keep their size (no resampling), a batch shows more objects
in more contexts, and objects are cut by the window's edges: boxes are clipped to it and dropped when too little
of them remains. This is the augmentation that lets single-shot detectors learn from a few hundred photos from
scratch (YOLOv4 introduced it).

Batched and sync-free like :mod:`loclab.ops.augment`: no per-image Python, no values read back to the host.
"""

from __future__ import annotations

import torch
from torch import Tensor

from loclab.ops.augment import affine_boxes

__all__ = ["mosaic_batch"]


def mosaic_batch(
    images: Tensor,
    boxes: Tensor,
    labels: Tensor,
    valid: Tensor,
    probability: float,
    *,
    generator: torch.Generator | None = None,
    min_visible: float = 0.25,
    min_side: float = 2.0,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Replace each image of the batch, with ``probability``, by a mosaic of it and three others of the batch.

    Args:
        images (Tensor[B, C, S, S]): any dtype.
        boxes (Tensor[B, M, 4]) xyxy pixels, labels (Tensor[B, M]), valid (Tensor[B, M] bool): padded boxes,
            as from ``detection_collate``.
        probability: chance that an image is replaced by a mosaic; 0 returns the inputs themselves.
        generator: random source (the global RNG of the images' device when None).
        min_visible, min_side: as :func:`loclab.ops.augment.affine_boxes`, for boxes cut by the window.

    Returns:
        ``(images [B, C, S, S], boxes [B, 4M, 4], labels [B, 4M], valid [B, 4M])``: an image left as it was
        keeps its boxes in the first ``M`` slots and invalid padding (zero boxes, label -1) after them.
    """
    batch, _, size, width = images.shape
    if probability <= 0 or batch == 0:
        return images, boxes, labels, valid
    if size != width:
        raise ValueError(f"expected square images [B, C, S, S], got {tuple(images.shape)}")
    device = images.device
    source = generator.device if generator is not None else device
    # tile 0 is the image itself, tiles 1-3 come from other images (random permutations of the batch)
    order = torch.stack([torch.arange(batch, device=source)] +
                        [torch.randperm(batch, generator=generator, device=source) for _ in range(3)]).to(device)
    offsets = torch.randint(0, size + 1, (batch, 2), generator=generator, device=source).to(device)
    chosen = torch.rand(batch, generator=generator, device=source).to(device) < probability
    images = _mosaic_images(images, order, torch.where(chosen[:, None], offsets, 0))

    shifts = torch.tensor([[0, 0], [size, 0], [0, size], [size, size]], dtype=boxes.dtype, device=device)
    tiled = torch.cat([boxes[order[k]] + shifts[k].repeat(2) for k in range(4)], dim=1)  # [B, 4M, 4]
    tiled_valid = torch.cat([valid[order[k]] for k in range(4)], dim=1)
    tiled_labels = torch.cat([labels[order[k]] for k in range(4)], dim=1)
    to_window = torch.zeros((batch, 2, 3), dtype=boxes.dtype, device=device)
    to_window[:, 0, 0] = to_window[:, 1, 1] = 1
    to_window[:, :, 2] = -offsets.to(boxes.dtype)
    cut, cut_valid = affine_boxes(tiled, tiled_valid, to_window, size, min_visible=min_visible, min_side=min_side)

    kept = torch.cat((boxes, torch.zeros_like(boxes).repeat(1, 3, 1)), dim=1)
    kept_valid = torch.cat((valid, torch.zeros_like(valid).repeat(1, 3)), dim=1)
    kept_labels = torch.cat((labels, torch.full_like(labels, -1).repeat(1, 3)), dim=1)
    boxes = torch.where(chosen[:, None, None], cut, kept)
    labels = torch.where(chosen[:, None], tiled_labels, kept_labels)
    valid = torch.where(chosen[:, None], cut_valid, kept_valid)
    return images, boxes, labels, valid


def _mosaic_images(images: Tensor, order: Tensor, offsets: Tensor) -> Tensor:
    """The ``S x S`` window at ``offsets`` (``[B, 2]``, x then y) of each image's ``2S x 2S`` canvas of tiles
    ``order[:, b]`` (top-left, top-right, bottom-left, bottom-right); offset ``(0, 0)`` is tile 0 as it is.

    One gather of whole pixels: each output pixel's source image and position are computed first, and the
    canvas is never built. The result has channels-last strides (the pixels are gathered as rows of ``C``)."""
    batch, channels, size, _ = images.shape
    area = size * size
    steps = torch.arange(size, device=images.device)
    rows = offsets[:, 1, None] + steps  # [B, S]: canvas row of each output row
    cols = offsets[:, 0, None] + steps
    below, right = rows >= size, cols >= size
    # flat source index = first pixel of the tile's image + row within the tile * S + column within the tile
    tile_start = (order.T * area).view(batch, 2, 2)  # [B, tile row, tile column]
    start = tile_start.gather(1, below.long()[:, :, None].expand(-1, -1, 2))  # [B, S, 2]: per output row
    start = start.gather(2, right.long()[:, None, :].expand(-1, size, -1))  # [B, S, S]
    row_part = (rows - below * size) * size
    col_part = cols - right * size
    index = start + row_part[:, :, None] + col_part[:, None, :]
    pixels = images.permute(0, 2, 3, 1).reshape(-1, channels)  # [B * S * S, C]
    gathered = pixels.index_select(0, index.view(-1))
    return gathered.view(batch, size, size, channels).permute(0, 3, 1, 2)
