"""Top-down crops of images: decode pixels, warp an instance box to the model input.

The transforms come from :mod:`loclab.ops.affine` (image pixels -> model-input pixels, pixel-centre convention).
PIL does the resampling: ``Image.transform(..., AFFINE, data)`` maps each output pixel to an input position in
pixel-*corner* coordinates (it samples output pixel ``u`` at ``u + 0.5``), so :func:`warp_image` converts the
inverse transform from loclab's pixel-centre convention before handing it over.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from loclab.data.errors import DataError
from loclab.data.images import ImageReadError, load_pixels
from loclab.ops.affine import crop_transform, invert_affine, is_identity, transform_scale

Mode = Literal["RGB", "L"]


def decode_record(path: Path, mode: Mode, where: str, size: tuple[int, int] | None = None) -> np.ndarray:
    """:func:`loclab.data.images.load_pixels` (uint8 ``[H, W, 3]`` for "RGB", ``[H, W]`` for "L", EXIF-upright)
    that raises :class:`DataError` naming ``where`` for an unreadable image, or for one whose ``(width, height)``
    differs from ``size`` (the annotation's, which the keypoints were checked against)."""
    try:
        pixels = load_pixels(path, mode)
    except ImageReadError as err:
        raise DataError(f"{where} cannot be decoded ({err.reason}).") from None
    if size is not None and (pixels.shape[1], pixels.shape[0]) != tuple(size):
        raise DataError(f"{where} is {pixels.shape[1]}x{pixels.shape[0]}, but its annotation says "
                        f"{size[0]}x{size[1]}.")
    return pixels


def is_whole_image(box: Tensor | list[float], width: int, height: int) -> bool:
    """Whether ``box`` (xyxy) is exactly ``[0, 0, width, height]``."""
    return [float(v) for v in box] == [0.0, 0.0, float(width), float(height)]


def instance_transform(box: Tensor | list[float], width: int, height: int, input_size: tuple[int, int],
                       padding: float, **augment) -> Tensor:
    """:func:`loclab.ops.affine.crop_transform` of an instance ``box`` in a ``width x height`` image.

    ``padding`` applies to instance boxes only: a box that is the whole image (reference and DeepLabCut data,
    or ``loclab predict`` without detections) has nothing around it to show, so it is never padded, and a
    whole ``S x S`` image into an ``S x S`` input stays the exact identity.
    """
    pad = 1.0 if is_whole_image(box, width, height) else padding
    return crop_transform(box, input_size, padding=pad, **augment)


def warp_image(pixels: np.ndarray, m: Tensor, input_size: tuple[int, int], fill: int = 0, *,
               reduced: dict[int, Image.Image] | None = None) -> np.ndarray:
    """Resample ``pixels`` (uint8 ``[H, W]`` or ``[H, W, C]``) into the model input of ``m`` (image -> input).

    Returns uint8 ``[H_in, W_in]`` / ``[H_in, W_in, C]``, bilinear, ``fill`` outside the image. When ``m`` is the
    identity and the sizes match, ``pixels`` itself is returned: no resampling, not even a copy. Where the crop
    shrinks the image by 2x or more, the image is first box-averaged by the integer factor (``Image.reduce``), so
    a downscale does not skip pixels (plain bilinear samples 2x2 neighbours whatever the scale). ``reduced``, a
    dict kept by the caller per source image, caches those box-averaged images by factor: random crops of one
    photo then reduce it once, not once per sample.
    """
    w_in, h_in = (int(v) for v in input_size)
    height, width = pixels.shape[:2]
    if (width, height) == (w_in, h_in) and is_identity(m):
        return pixels
    m = m.to(torch.float64)
    factor = int(1.0 / float(transform_scale(m))) if float(transform_scale(m)) > 0 else 1
    if factor >= 2:
        # reduce(f) averages f x f blocks: reduced pixel x is centred on image pixel (x + 0.5) * f - 0.5
        image = reduced.get(factor) if reduced is not None else None
        if image is None:
            image = Image.fromarray(pixels).reduce(factor)
            if reduced is not None:
                reduced[factor] = image
        to_reduced = torch.tensor([[1.0 / factor, 0.0, 0.5 / factor - 0.5], [0.0, 1.0 / factor, 0.5 / factor - 0.5]],
                                  dtype=torch.float64)
        m = _compose(m, invert_affine(to_reduced))
    else:
        image = Image.fromarray(pixels)
    inverse = invert_affine(m)  # input pixel centres -> image pixel centres
    (a, b, c), (d, e, f) = inverse.tolist()
    # PIL evaluates the map at output corner coordinates u + 0.5 and returns corner coordinates x + 0.5.
    coefficients = (a, b, c + 0.5 - 0.5 * (a + b), d, e, f + 0.5 - 0.5 * (d + e))
    colour = fill if pixels.ndim == 2 else (fill,) * pixels.shape[2]
    out = image.transform((w_in, h_in), Image.Transform.AFFINE, data=coefficients,
                          resample=Image.Resampling.BILINEAR, fillcolor=colour)
    return np.asarray(out)


def _compose(outer: Tensor, inner: Tensor) -> Tensor:
    """The transform ``outer(inner(p))`` of two ``[2, 3]`` transforms."""
    linear = outer[:, :2] @ inner[:, :2]
    offset = outer[:, :2] @ inner[:, 2] + outer[:, 2]
    return torch.cat([linear, offset[:, None]], dim=1)


def to_chw(pixels: np.ndarray) -> Tensor:
    """uint8 ``[H, W]`` or ``[H, W, C]`` -> uint8 tensor ``[C, H, W]`` (C = 1 for gray)."""
    array = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
    return torch.from_numpy(np.array(array, order="C"))  # a copy: decoded PIL pixels are read-only
