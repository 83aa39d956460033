"""Batched, box-aware augmentation of detection batches: random zoom/shift/flip, then colour jitter.

Everything works on whole batches on any device, without per-sample Python loops and without reading tensor
values back to the host. Random numbers come from the given ``torch.Generator`` (drawn on the generator's device,
then moved to the data's), or from the global RNG of the data's device.

**Representation.** A geometric transform is a batch of forward affine matrices ``M: Tensor[B, 2, 3]`` in pixel
coordinates: an input point ``(x, y)`` goes to ``M @ (x, y, 1)`` in the output. Coordinates are continuous as for
boxes (docs/architecture.md): pixel column ``j`` covers ``[j, j + 1)``, so an ``S x S`` image spans ``[0, S]``.
Boxes are mapped with ``M`` itself; images are resampled with its inverse (:func:`invert_affine`), which maps each
output pixel centre back to the input point it samples. Every function here takes the same forward ``M``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from loclab.ops.boxes import box_area

__all__ = [
    "affine_boxes",
    "affine_images",
    "augment_detection_batch",
    "colour_jitter",
    "invert_affine",
    "random_affine_params",
]

# ITU-R BT.601 luma weights, as PIL's and torchvision's greyscale conversions use.
_LUMA = (0.299, 0.587, 0.114)


def _uniform(
    shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device | str | None
) -> Tensor:
    """``U[0, 1)`` float32 samples on ``device``, drawn on the generator's device (so a seed gives the same
    numbers wherever the data lives)."""
    source = generator.device if generator is not None else device
    u = torch.rand(shape, generator=generator, device=source)
    return u if device is None else u.to(device)


def random_affine_params(
    batch: int,
    *,
    size: int,
    scale: tuple[float, float] = (1.0, 1.0),
    translate: float = 0.0,
    flip: bool = False,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Random zoom about the image centre, shift and horizontal flip, one per image.

    For each image: zoom ``s ~ U[scale[0], scale[1]]``, shift ``(tx, ty) ~ U[-translate, translate] * size``
    px each, and (when ``flip``) a mirror ``f = -1`` with probability 0.5, else ``f = 1``. With ``c = size / 2``::

        x_out = s * f * (x - c) + c + tx
        y_out = s * (y - c) + c + ty

    ``scale=(1, 1), translate=0`` with a flip gives exactly ``x_out = size - x``.

    Args:
        batch: number of images ``B`` (may be 0).
        size: side ``S`` of the square images.
        scale: range of the zoom factor, ``0 < scale[0] <= scale[1]``.
        translate: largest shift as a fraction of ``S``, ``>= 0``.
        flip: mirror half of the images left-right.
        generator, device: random source, and device of the result (default CPU).

    Returns:
        Tensor[B, 2, 3] float32: forward matrices (input pixel -> output pixel), see the module docstring.
    """
    low, high = float(scale[0]), float(scale[1])
    if not 0 < low <= high or translate < 0:
        raise ValueError(f"need 0 < scale[0] <= scale[1] and translate >= 0, got scale={scale}, translate={translate}")
    u = _uniform((batch, 4), generator, device)  # zoom, x shift, y shift, flip
    s = low + (high - low) * u[:, 0]
    tx = (2 * u[:, 1] - 1) * (translate * size)
    ty = (2 * u[:, 2] - 1) * (translate * size)
    f = torch.where(u[:, 3] < 0.5, -1.0, 1.0) if flip else torch.ones_like(s)
    c = size / 2
    zero = torch.zeros_like(s)
    row_x = torch.stack((s * f, zero, c - s * f * c + tx), dim=-1)  # c - (-1) * c == size exactly
    row_y = torch.stack((zero, s, c - s * c + ty), dim=-1)
    return torch.stack((row_x, row_y), dim=1)


def invert_affine(matrices: Tensor) -> Tensor:
    """Inverse of each affine map.

    Args:
        matrices (Tensor[B, 2, 3]): invertible affine maps ``(A | t)``, ``p -> A p + t``.

    Returns:
        Tensor[B, 2, 3]: ``(A^-1 | -A^-1 t)``, same dtype.
    """
    a, b, t0 = matrices[:, 0].unbind(-1)
    c, d, t1 = matrices[:, 1].unbind(-1)
    det = a * d - b * c
    ia, ib, ic, id_ = d / det, -b / det, -c / det, a / det
    row_x = torch.stack((ia, ib, -(ia * t0 + ib * t1)), dim=-1)
    row_y = torch.stack((ic, id_, -(ic * t0 + id_ * t1)), dim=-1)
    return torch.stack((row_x, row_y), dim=1)


def _to_normalised(height: int, width: int, like: Tensor) -> tuple[Tensor, Tensor]:
    """``N`` (pixel -> normalised) and ``N^-1`` as 3x3 matrices.

    With ``align_corners=False`` grid_sample's ``-1`` and ``+1`` are the outer *edges* of the border pixels, i.e.
    pixel coordinates ``0`` and ``W``: ``u = 2 x / W - 1``. That is exactly the continuous box convention, so no
    half-pixel shift appears anywhere.
    """
    n = torch.tensor([[2 / width, 0, -1], [0, 2 / height, -1], [0, 0, 1]], dtype=like.dtype, device=like.device)
    n_inv = torch.tensor([[width / 2, 0, width / 2], [0, height / 2, height / 2], [0, 0, 1]],
                         dtype=like.dtype, device=like.device)
    return n, n_inv


def affine_images(images: Tensor, matrices: Tensor, fill: float = 0.0) -> Tensor:
    """Resample each image under its forward affine map (bilinear; outside the input reads ``fill``).

    Output pixel centre ``(j + 0.5, i + 0.5)`` takes the bilinear interpolation of the input pixel centres at
    ``M^-1 @ (j + 0.5, i + 0.5, 1)``, where pixels outside the input count as ``fill`` (so the border blends
    into the fill rather than into black).

    Args:
        images (Tensor[B, C, H, W]): uint8 or floating point.
        matrices (Tensor[B, 2, 3]): forward maps, input pixel -> output pixel (see the module docstring).
        fill: value outside the input, in the images' own units (e.g. 114 for uint8, 114 / 255 for [0, 1]).

    Returns:
        Tensor[B, C, H, W]: same dtype and device; uint8 results are rounded to nearest.
    """
    if images.ndim != 4 or matrices.shape != (images.shape[0], 2, 3):
        raise ValueError(f"expected images [B, C, H, W] and matrices [B, 2, 3], got {tuple(images.shape)} and "
                         f"{tuple(matrices.shape)}")
    if not (images.is_floating_point() or images.dtype == torch.uint8):
        raise TypeError(f"images must be uint8 or floating point, got {images.dtype}")
    if images.shape[0] == 0:
        return images.clone()
    height, width = images.shape[-2:]
    work = images.dtype if images.dtype in (torch.float32, torch.float64) else torch.float32
    inverse = invert_affine(matrices.to(work))
    bottom = torch.tensor([0, 0, 1], dtype=work, device=images.device).expand(len(inverse), 1, 3)
    n, n_inv = _to_normalised(height, width, inverse)
    # theta maps normalised output coordinates to normalised input coordinates: N @ M^-1 @ N^-1.
    theta = (n @ torch.cat((inverse, bottom), dim=1) @ n_inv)[:, :2]
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    # Zero padding of (image - fill), plus fill, is bilinear sampling of the image padded with fill.
    shifted = images.to(work) - fill
    out = F.grid_sample(shifted, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill
    if images.dtype == torch.uint8:
        return out.round().clamp(0, 255).to(torch.uint8)
    return out.to(images.dtype)


def _resample_rows(images: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
    """Bilinear resampling of the rows of ``images`` (``[B, C, H + 2, W]``, already padded by one ``0`` row on
    both sides) under ``out = scale * in + shift`` (per image ``[B]``, pixel-corner coordinates); the output has
    ``H`` rows. Reads outside the input land on the zero padding. Whole rows are gathered (``index_select``
    on contiguous rows), which a CPU does far faster than gathering element by element."""
    batch, channels, padded, width = images.shape
    length = padded - 2
    centres = torch.arange(length, dtype=images.dtype, device=images.device) + 0.5
    source = (centres[None] - shift[:, None]) / scale[:, None] - 0.5  # input row of each output row, [B, H]
    low = source.floor()
    w_high = (source - low)[:, None, :, None]
    # +1 for the padding; everything beyond the padding reads the padding too
    i_low = (low + 1).clamp(0, length + 1).long()
    i_high = (low + 2).clamp(0, length + 1).long()
    first_row = (torch.arange(batch * channels, device=images.device) * padded).view(batch, channels, 1)
    rows = images.contiguous().view(batch * channels * padded, width)
    def take(index: Tensor) -> Tensor:
        return rows.index_select(0, (first_row + index[:, None, :]).view(-1)).view(batch, channels, length, width)
    return take(i_low) * (1 - w_high) + take(i_high) * w_high


def scale_shift_images(images: Tensor, matrices: Tensor, fill: float = 0.0) -> Tensor:
    """:func:`affine_images` for maps without rotation or shear (``matrices[:, 0, 1] == matrices[:, 1, 0] == 0``:
    zoom, shift, flip), computed as two 1-D bilinear passes: the same result to float rounding, at a small
    fraction of ``grid_sample``'s cost on a CPU. The off-diagonal terms are not read."""
    if images.shape[0] == 0:
        return images.clone()
    work = images.dtype if images.dtype in (torch.float32, torch.float64) else torch.float32
    m = matrices.to(device=images.device, dtype=work)
    shifted = F.pad(images.to(work) - fill, (1, 1, 1, 1))
    rows = _resample_rows(shifted, m[:, 1, 1], m[:, 1, 2])  # [B, C, S, S + 2]
    out = _resample_rows(rows.transpose(2, 3), m[:, 0, 0], m[:, 0, 2]).transpose(2, 3).contiguous() + fill  # columns
    if images.dtype == torch.uint8:
        return out.round().clamp(0, 255).to(torch.uint8)
    return out.to(images.dtype)


def affine_boxes(
    boxes: Tensor,
    valid: Tensor,
    matrices: Tensor,
    size: int,
    *,
    min_visible: float = 0.25,
    min_side: float = 2.0,
) -> tuple[Tensor, Tensor]:
    """Map padded boxes through each image's affine transform, clip them to the image, and drop lost ones.

    Each box's four corners are transformed and the box enclosing them is taken (exact for zoom, shift and flip,
    a tight upper bound otherwise), then clipped to ``[0, S]``. A mirrored box ``(x1, y1, x2, y2)`` becomes exactly
    ``(S - x2, y1, S - x1, y2)``.

    Args:
        boxes (Tensor[B, M, 4]): ``(x1, y1, x2, y2)`` in pixels; entries where ``valid`` is False may hold anything.
        valid (Tensor[B, M] bool): which entries are real boxes.
        matrices (Tensor[B, 2, 3]): forward maps, input pixel -> output pixel.
        size: side ``S`` of the square output image.
        min_visible: a box stays valid only if its clipped area is at least this fraction of its transformed area.
        min_side: ... and both sides of the clipped box are at least this many pixels.

    Returns:
        boxes (Tensor[B, M, 4]): transformed and clipped boxes, zeros where the result is not valid.
        valid (Tensor[B, M] bool): ``valid`` and still visible enough.
    """
    if boxes.ndim != 3 or boxes.shape[-1] != 4 or valid.shape != boxes.shape[:2]:
        raise ValueError(f"expected boxes [B, M, 4] and valid [B, M], got {tuple(boxes.shape)}, {tuple(valid.shape)}")
    m = matrices.to(boxes.dtype)[:, None]  # [B, 1, 2, 3] against [B, M] boxes
    x1, y1, x2, y2 = boxes.unbind(-1)
    xs = torch.stack((x1, x2, x1, x2), dim=-1)  # the four corners, [B, M, 4]
    ys = torch.stack((y1, y1, y2, y2), dim=-1)
    # Written out rather than as a matmul so that a mirror (-1 * x + 0 * y) + S rounds exactly like S - x.
    tx = m[..., 0, 0, None] * xs + m[..., 0, 1, None] * ys + m[..., 0, 2, None]
    ty = m[..., 1, 0, None] * xs + m[..., 1, 1, None] * ys + m[..., 1, 2, None]
    moved = torch.stack((tx.amin(-1), ty.amin(-1), tx.amax(-1), ty.amax(-1)), dim=-1)
    clipped = moved.clamp(0, size)
    sides = clipped[..., 2:] - clipped[..., :2]
    keep = valid & (box_area(clipped) >= min_visible * box_area(moved)) & (sides >= min_side).all(-1)
    return torch.where(keep[..., None], clipped, torch.zeros_like(clipped)), keep


def _grey(images: Tensor) -> Tensor:
    if images.shape[1] == 1:
        return images
    r, g, b = images.unbind(1)
    return (_LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b)[:, None]


def colour_jitter(
    images: Tensor,
    *,
    brightness: float = 0.0,
    contrast: float = 0.0,
    saturation: float = 0.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Random brightness, contrast and saturation changes, one set of factors per image.

    Factors are ``1 + a * U[-1, 1]`` (at least 0) for each amplitude ``a``, applied in this order, each result
    clamped to ``[0, 1]``: brightness ``x * b``; contrast ``(x - m) * c + m`` with ``m`` the image's mean grey
    level; saturation ``(x - g) * s + g`` with ``g`` the pixel's grey level (BT.601 luma). A zero amplitude skips
    its step; all zero returns ``images`` itself. Three factors per image are drawn whatever the amplitudes.

    Args:
        images (Tensor[B, C, H, W]): floating point in ``[0, 1]``, ``C`` = 3 (RGB) or 1 (saturation then has no
            effect).
        brightness, contrast, saturation: amplitudes, ``>= 0``.
        generator: random source; the global RNG of the images' device when None.

    Returns:
        Tensor[B, C, H, W]: same dtype and device, in ``[0, 1]``.
    """
    if min(brightness, contrast, saturation) < 0:
        raise ValueError("colour jitter amplitudes must be >= 0")
    if brightness == contrast == saturation == 0:
        return images
    if not images.is_floating_point() or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise TypeError(f"expected float images [B, 1 or 3, H, W], got {images.dtype} {tuple(images.shape)}")
    u = _uniform((images.shape[0], 3), generator, images.device).to(images.dtype)
    factors = (1 + (2 * u - 1) * torch.tensor([brightness, contrast, saturation], dtype=u.dtype, device=u.device))
    factors = factors.clamp(min=0)[:, :, None, None, None]  # [B, 3, 1, 1, 1]
    out = images.clone()  # then updated in place: the arithmetic of the formulas above, without temporaries
    if brightness:
        out.mul_(factors[:, 0]).clamp_(0, 1)
    if contrast:
        mean = _grey(out).mean(dim=(1, 2, 3), keepdim=True)
        out.sub_(mean).mul_(factors[:, 1]).add_(mean).clamp_(0, 1)
    if saturation and images.shape[1] == 3:
        grey = _grey(out)
        out.sub_(grey).mul_(factors[:, 2]).add_(grey).clamp_(0, 1)
    return out


def augment_detection_batch(
    images: Tensor,
    boxes: Tensor,
    valid: Tensor,
    *,
    scale: tuple[float, float] = (0.5, 1.5),
    translate: float = 0.1,
    flip: bool = True,
    brightness: float = 0.3,
    contrast: float = 0.3,
    saturation: float = 0.5,
    fill: float = 114 / 255,
    generator: torch.Generator | None = None,
    min_visible: float = 0.25,
    min_side: float = 2.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """Random zoom/shift/flip of images and boxes together, then colour jitter of the images.

    The geometric draw (:func:`random_affine_params`) comes first, then the colour draw (:func:`colour_jitter`),
    both from ``generator``; boxes follow :func:`affine_boxes` with ``min_visible`` and ``min_side``. A flip
    without zoom or shift mirrors the pixels exactly (no resampling).

    Args:
        images (Tensor[B, C, S, S]): square images; floating point in ``[0, 1]`` (uint8 works when no colour
            jitter is asked for, with ``fill`` in 0..255).
        boxes (Tensor[B, M, 4]), valid (Tensor[B, M] bool): padded boxes in pixels, as from ``detection_collate``.
        scale, translate, flip: see :func:`random_affine_params`.
        brightness, contrast, saturation: see :func:`colour_jitter`.
        fill: value of the area uncovered by zooming out or shifting, in the images' units.

    Returns:
        ``(images, boxes, valid)`` of the same shapes, dtypes and device. With ``scale=(1, 1)``, ``translate=0``,
        ``flip=False`` and zero colour amplitudes, the inputs themselves are returned.
    """
    if images.ndim != 4 or images.shape[-1] != images.shape[-2]:
        raise ValueError(f"expected square images [B, C, S, S], got {tuple(images.shape)}")
    still = tuple(float(v) for v in scale) == (1.0, 1.0) and translate == 0
    if not still or flip:
        size = images.shape[-1]
        matrices = random_affine_params(images.shape[0], size=size, scale=scale, translate=translate, flip=flip,
                                        generator=generator, device=images.device)
        if still:  # a pure mirror: flip the pixels instead of resampling them
            mirrored = (matrices[:, 0, 0] < 0)[:, None, None, None]
            images = torch.where(mirrored, images.flip(-1), images)
        else:  # zoom, shift and flip keep the axes: separable resampling, a fraction of grid_sample's cost
            images = scale_shift_images(images, matrices, fill)
        boxes, valid = affine_boxes(boxes, valid, matrices, size, min_visible=min_visible, min_side=min_side)
    images = colour_jitter(images, brightness=brightness, contrast=contrast, saturation=saturation,
                           generator=generator)
    return images, boxes, valid
