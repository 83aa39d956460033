"""Affine crops for top-down keypoints: image pixels <-> model-input pixels.

Both sides use the pixel-centre convention of ``docs/architecture.md``: integer ``x`` is the centre of pixel
column ``x``, so a ``W``-wide image spans ``[-0.5, W - 0.5]``. Boxes are xyxy with edges on pixel corners (the box
convention), so the whole image is the box ``[0, 0, W, H]`` and a box ``[x1, x2]`` spans ``[x1 - 0.5, x2 - 0.5]``
in pixel-centre coordinates; its centre is ``(x1 + x2) / 2 - 0.5``.

A transform is a float64 ``Tensor[2, 3]`` ``m`` (or a stack ``[M, 2, 3]``) acting as
``p_input = m[:, :2] @ p_image + m[:, 2]``. Float64 because a crop is composed of a few products and the round
trip image -> input -> image must stay far below a pixel for images of any size.

:func:`crop_transform` is the exact identity matrix (every entry bitwise ``+1.0`` or ``+0.0``) when the box is the
whole ``S x S`` image, the input is ``S x S`` and nothing is augmented, and :func:`apply_affine` with that matrix
returns the points unchanged: the reference stick figures go through the same code without a single rounding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

Box = Sequence[float] | Tensor


def crop_transform(
    box: Box,
    input_size: tuple[int, int],
    *,
    padding: float = 1.0,
    scale: float = 1.0,
    rotation_deg: float = 0.0,
    shift: tuple[float, float] = (0.0, 0.0),
    flip: bool = False,
) -> Tensor:
    """The transform from image pixels to model-input pixels for an aspect-preserving crop of ``box``.

    Args:
        box: ``(x1, y1, x2, y2)`` image pixels, ``x1 < x2``, ``y1 < y2``.
        input_size: ``(W_in, H_in)`` of the model input.
        padding: the box grows by this factor around its centre (MMPose pads instance boxes by 1.25 so that
            limbs at the box edge keep some context).
        scale: augmentation factor on the crop size: ``> 1`` shows more of the image (the object looks smaller).
        rotation_deg: the content turns counter-clockwise on screen (y points down) by this angle about the
            crop centre.
        shift: the crop centre moves by ``shift * (crop width, crop height)`` in image pixels.
        flip: mirror left-right about the input's vertical centre line, ``u -> W_in - 1 - u`` (after rotation).

    Returns:
        float64 ``[2, 3]``. The box is first widened or heightened to the ``W_in : H_in`` aspect ratio about its
        centre (never cropped), then padded and scaled; one scale factor ``W_in / crop width`` applies to both
        axes, so shapes are not distorted. The crop centre lands on the input centre ``((W_in - 1) / 2,
        (H_in - 1) / 2)``.
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    w_in, h_in = (int(v) for v in input_size)
    width, height = x2 - x1, y2 - y1
    if not (width > 0 and height > 0) or not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        raise ValueError(f"box must be finite xyxy with x1 < x2 and y1 < y2, got {[x1, y1, x2, y2]}")
    if w_in <= 0 or h_in <= 0:
        raise ValueError(f"input_size must be positive (W_in, H_in), got {input_size}")
    if not (padding > 0 and scale > 0):
        raise ValueError(f"padding and scale must be positive, got {padding} and {scale}")
    # Grow the short side to the input's aspect ratio (cross-multiplied: no rounding decides the branch).
    if width * h_in > height * w_in:
        height = width * h_in / w_in
    elif width * h_in < height * w_in:
        width = height * w_in / h_in
    width, height = width * padding * scale, height * padding * scale
    k = w_in / width  # pixels of input per pixel of image, both axes
    centre_x = (x1 + x2) / 2 - 0.5 + shift[0] * width
    centre_y = (y1 + y2) / 2 - 0.5 + shift[1] * height
    # Exact 1 and 0 without rotation, so the identity crop has no rounding anywhere.
    cos, sin = (1.0, 0.0) if rotation_deg == 0 else (math.cos(math.radians(rotation_deg)),
                                                      math.sin(math.radians(rotation_deg)))
    # "0.0 - v" rather than "-v": the identity must hold +0.0, not -0.0, in every entry.
    a, b = k * cos, k * sin
    d, e = 0.0 - k * sin, k * cos
    if flip:
        a, b = 0.0 - a, 0.0 - b
    t_x = (w_in - 1) / 2 - (a * centre_x + b * centre_y)
    t_y = (h_in - 1) / 2 - (d * centre_x + e * centre_y)
    return torch.tensor([[a, b, t_x], [d, e, t_y]], dtype=torch.float64)


def crop_transforms(
    boxes: Tensor,
    input_size: tuple[int, int],
    *,
    padding: float | Sequence[float] = 1.0,
    scale: float | Sequence[float] = 1.0,
    rotation_deg: float | Sequence[float] = 0.0,
    flip: bool | Sequence[bool] = False,
) -> Tensor:
    """:func:`crop_transform` for each row of ``boxes [M, 4]``; returns float64 ``[M, 2, 3]``.

    Every keyword is one value for all boxes or a sequence of ``M`` values. Row ``i`` equals
    ``crop_transform(boxes[i], ...)`` bitwise (it is computed by it).
    """
    count = len(boxes)

    def per_box(value, name: str) -> list:
        if isinstance(value, (int, float, bool)):
            return [value] * count
        values = [v.item() if isinstance(v, Tensor) else v for v in value]
        if len(values) != count:
            raise ValueError(f"{name} has {len(values)} values for {count} boxes")
        return values

    rows = zip(boxes.tolist() if isinstance(boxes, Tensor) else boxes, per_box(padding, "padding"),
               per_box(scale, "scale"), per_box(rotation_deg, "rotation_deg"), per_box(flip, "flip"))
    matrices = [crop_transform(box, input_size, padding=p, scale=s, rotation_deg=r, flip=bool(f))
                for box, p, s, r, f in rows]
    return torch.stack(matrices) if matrices else torch.zeros(0, 2, 3, dtype=torch.float64)


def invert_affine(m: Tensor) -> Tensor:
    """The inverse transform of ``m [..., 2, 3]`` (model input -> image for a crop); same shape, float64.

    Closed-form 2x2 inverse; the identity inverts to the identity bitwise. Raises ``ValueError`` for a singular
    transform.
    """
    m = m.to(torch.float64)
    a, b, t_x = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    d, e, t_y = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    det = a * e - b * d
    if bool((det == 0).any()):
        raise ValueError("the affine transform is singular")
    ia, ib = e / det, (0.0 - b) / det
    id_, ie = (0.0 - d) / det, a / det
    out_x = 0.0 - (ia * t_x + ib * t_y)
    out_y = 0.0 - (id_ * t_x + ie * t_y)
    return torch.stack([torch.stack([ia, ib, out_x], -1), torch.stack([id_, ie, out_y], -1)], -2)


def apply_affine(points: Tensor, m: Tensor) -> Tensor:
    """Map ``points [..., 2]`` through ``m``; returns the points' shape and floating dtype (float32 for ints).

    ``m`` is ``[2, 3]`` (one transform for all points) or ``[M, 2, 3]`` with ``points [M, ..., 2]`` (transform
    ``i`` for the points of row ``i``, the batched form). The arithmetic runs in float64 as
    ``a * x + b * y + t``, so the identity returns every finite point unchanged.
    """
    if points.shape[-1] != 2:
        raise ValueError(f"points must have shape [..., 2], got {tuple(points.shape)}")
    dtype = points.dtype if points.is_floating_point() else torch.float32
    m = m.to(device=points.device, dtype=torch.float64)
    if m.ndim == 3:
        if points.ndim < 2 or points.shape[0] != m.shape[0]:
            raise ValueError(f"batched transforms {tuple(m.shape)} need points [M, ..., 2], got {tuple(points.shape)}")
        m = m.reshape(m.shape[0], *([1] * (points.ndim - 2)), 2, 3)
    elif m.shape != (2, 3):
        raise ValueError(f"m must be [2, 3] or [M, 2, 3], got {tuple(m.shape)}")
    x, y = points[..., 0].to(torch.float64), points[..., 1].to(torch.float64)
    out_x = m[..., 0, 0] * x + m[..., 0, 1] * y + m[..., 0, 2]
    out_y = m[..., 1, 0] * x + m[..., 1, 1] * y + m[..., 1, 2]
    return torch.stack([out_x, out_y], dim=-1).to(dtype)


def is_identity(m: Tensor) -> bool:
    """Whether ``m [2, 3]`` is exactly ``[[1, 0, 0], [0, 1, 0]]`` (the crop needs no resampling)."""
    return m.shape == (2, 3) and bool(torch.equal(m.to(torch.float64), _IDENTITY))


def transform_scale(m: Tensor) -> Tensor:
    """Input pixels per image pixel of ``m [..., 2, 3]`` (the square root of the determinant); ``[...]``."""
    m = m.to(torch.float64)
    return (m[..., 0, 0] * m[..., 1, 1] - m[..., 0, 1] * m[..., 1, 0]).abs().sqrt()


_IDENTITY = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
