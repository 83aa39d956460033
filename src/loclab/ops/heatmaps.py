"""Keypoint heatmaps: encode image-pixel keypoints as Gaussians, decode heatmaps back to image pixels.

One coordinate convention everywhere (``docs/architecture.md``): integer ``x`` is the centre of pixel column
``x``. A heatmap of size ``h`` over an image of size ``S`` has stride ``s = S / h`` and cell ``u`` is centred at
image coordinate ``(u + 0.5) * s - 0.5``, so

    x_hm = (x + 0.5) / s - 0.5        x = (x_hm + 0.5) * s - 0.5

which is exact for every heatmap size (32, 64, 128 over 128 px) and the identity when ``s = 1``. Encoding and
decoding use these two maps and nothing else, so encode -> decode round-trips for any heatmap size.

Sizes are side lengths of square images and heatmaps (an ``int``), or ``(width, height)`` pairs for the
non-square model inputs of top-down crops; then each axis has its own stride ``W / w`` and ``H / h``. Equal
strides take the square code path, so a square size written as a pair gives bitwise the same result.
Pure tensor functions.
"""

from __future__ import annotations

import torch
from torch import Tensor

Size = int | tuple[int, int]  # a square side, or (width, height)


def _pair(size: Size) -> tuple[int, int]:
    """``(width, height)`` of a size."""
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _strides(image_size: Size, heatmap_size: Size) -> tuple[float, float]:
    (image_w, image_h), (map_w, map_h) = _pair(image_size), _pair(heatmap_size)
    return image_w / map_w, image_h / map_h


def keypoints_to_heatmap_coords(keypoints: Tensor, image_size: Size, heatmap_size: Size) -> Tensor:
    """Image-pixel coordinates ``[..., 2]`` -> continuous heatmap-cell coordinates ``[..., 2]`` (same shape)."""
    stride_x, stride_y = _strides(image_size, heatmap_size)
    if stride_x == stride_y:
        return (keypoints + 0.5) / stride_x - 0.5
    strides = torch.tensor([stride_x, stride_y], dtype=keypoints.dtype, device=keypoints.device)
    return (keypoints + 0.5) / strides - 0.5


def heatmap_to_image_coords(coords: Tensor, image_size: Size, heatmap_size: Size) -> Tensor:
    """Continuous heatmap-cell coordinates ``[..., 2]`` -> image-pixel coordinates ``[..., 2]``; inverse of
    :func:`keypoints_to_heatmap_coords`."""
    stride_x, stride_y = _strides(image_size, heatmap_size)
    if stride_x == stride_y:
        return (coords + 0.5) * stride_x - 0.5
    strides = torch.tensor([stride_x, stride_y], dtype=coords.dtype, device=coords.device)
    return (coords + 0.5) * strides - 0.5


def encode_heatmaps(keypoints: Tensor, image_size: Size, heatmap_size: Size, sigma: float) -> Tensor:
    """Gaussian heatmaps for keypoints.

    Args:
        keypoints: ``[..., K, 2]`` ``(x, y)`` in image pixels (any float or int dtype).
        image_size: side of the square image in pixels, or ``(width, height)``.
        heatmap_size: side ``H = W`` of the square heatmap, or ``(W, H)``.
        sigma: Gaussian standard deviation in heatmap cells.

    Returns:
        ``[..., K, H, W]`` float (float32 for integer input): ``exp(-((u - x_hm)^2 + (v - y_hm)^2) / (2 sigma^2))``
        at cell ``(row v, column u)``, with ``(x_hm, y_hm)`` the continuous heatmap position. The peak is exactly 1
        when the keypoint sits on a cell centre, and slightly less otherwise (the Gaussian is not re-normalised,
        so the target keeps the sub-cell position).
    """
    if not keypoints.is_floating_point():
        keypoints = keypoints.float()
    centres = keypoints_to_heatmap_coords(keypoints, image_size, heatmap_size)
    map_w, map_h = _pair(heatmap_size)
    grid_x = torch.arange(map_w, dtype=keypoints.dtype, device=keypoints.device)
    grid_y = grid_x if map_h == map_w else torch.arange(map_h, dtype=keypoints.dtype, device=keypoints.device)
    # The 2-D Gaussian factorises into an x profile times a y profile: O(K*(H+W)) exps instead of O(K*H*W).
    gx = torch.exp(-((grid_x - centres[..., 0:1]) ** 2) / (2 * sigma**2))  # [..., K, W]
    gy = torch.exp(-((grid_y - centres[..., 1:2]) ** 2) / (2 * sigma**2))  # [..., K, H]
    return gy.unsqueeze(-1) * gx.unsqueeze(-2)


def _argmax_cells(heatmaps: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Row, column (int64 ``[..., K]``) and value (``[..., K]``) of each map's maximum; first maximum on ties."""
    width = heatmaps.shape[-1]
    maxvals, flat = heatmaps.flatten(-2).max(dim=-1)
    return flat // width, flat % width, maxvals


def decode_heatmaps_argmax(heatmaps: Tensor, image_size: Size) -> tuple[Tensor, Tensor]:
    """Keypoints at the heatmap maxima, mapped back to image pixels.

    Args:
        heatmaps: ``[..., K, H, W]``, any real values (raw network outputs are fine).
        image_size: side of the square image the heatmaps cover, or ``(width, height)`` of a non-square one.

    Returns:
        ``(keypoints [..., K, 2] (x, y) image pixels float32, maxvals [..., K])``. The error is at most half a
        stride (``image_size / W / 2`` px) per axis for a unimodal map; see :func:`decode_heatmaps_subpixel`.
    """
    rows, cols, maxvals = _argmax_cells(heatmaps)
    cells = torch.stack([cols, rows], dim=-1).float()
    return heatmap_to_image_coords(cells, image_size, _map_size(heatmaps)), maxvals


def _map_size(heatmaps: Tensor) -> Size:
    """The side of square maps (the original int path), else ``(W, H)``."""
    height, width = (int(n) for n in heatmaps.shape[-2:])  # ints even where an ONNX trace gives size tensors
    return width if width == height else (width, height)


extract_keypoints_from_heatmaps = decode_heatmaps_argmax
"""Same as :func:`decode_heatmaps_argmax`; the name the course code uses for plain argmax decoding, kept so that
code written against it runs unchanged."""


def decode_heatmaps_subpixel(heatmaps: Tensor, image_size: Size) -> tuple[Tensor, Tensor]:
    """Argmax refined per axis by a parabola through the log of the maximum and its two neighbours.

    For a Gaussian ``g(u) = exp(-(u - m)^2 / (2 sigma^2))`` the log is an exact parabola, so the offset
    ``0.5 * (L[-1] - L[+1]) / (L[-1] - 2 L[0] + L[+1])`` recovers ``m`` exactly whatever sigma is (the 1-D form
    of DARK, Zhang et al. 2020). Where that cannot be trusted the axis falls back to the argmax cell: at the
    heatmap border, where any of the three values is <= 0 (log undefined, e.g. raw logits), or where the
    three points are not strictly concave. Offsets are clamped to ``[-0.5, 0.5]`` cell.

    Args / returns as :func:`decode_heatmaps_argmax`: ``(keypoints [..., K, 2] image px, maxvals [..., K])``.
    """
    rows, cols, maxvals = _argmax_cells(heatmaps)
    maps = heatmaps.float()
    offset_x = _log_parabola_offset(maps, rows, cols)
    offset_y = _log_parabola_offset(maps.transpose(-1, -2), cols, rows)  # rows become columns
    cells = torch.stack([cols + offset_x, rows + offset_y], dim=-1)
    return heatmap_to_image_coords(cells, image_size, _map_size(heatmaps)), maxvals


def _log_parabola_offset(maps: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """Sub-cell offset along the last axis at ``(rows, cols)`` of ``maps [..., K, H, W]``; ``[..., K]`` float32."""
    size = maps.shape[-1]
    line = torch.gather(maps, -2, rows[..., None, None].expand(*rows.shape, 1, size)).squeeze(-2)  # [..., K, W]
    left = torch.gather(line, -1, (cols - 1).clamp(min=0)[..., None]).squeeze(-1)
    centre = torch.gather(line, -1, cols[..., None]).squeeze(-1)
    right = torch.gather(line, -1, (cols + 1).clamp(max=size - 1)[..., None]).squeeze(-1)
    usable = (cols > 0) & (cols < size - 1) & (left > 0) & (centre > 0) & (right > 0)
    tiny = torch.finfo(maps.dtype).tiny
    log_l, log_c, log_r = (torch.log(v.clamp(min=tiny)) for v in (left, centre, right))
    curvature = log_l - 2 * log_c + log_r
    usable = usable & (curvature < 0)  # not &=: ONNX has no in-place and
    offset = 0.5 * (log_l - log_r) / torch.where(usable, curvature, torch.ones_like(curvature))
    return torch.where(usable, offset.clamp(-0.5, 0.5), torch.zeros_like(offset))
