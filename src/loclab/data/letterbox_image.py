"""Letterboxing image arrays into the square model input.

The geometry (content size, padding, coordinate mapping) is :func:`loclab.ops.letterbox.letterbox_params`; this
module only does the pixel work, which needs PIL's resampling and so does not belong in the pure ``ops`` layer.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from loclab.ops.letterbox import letterbox_params

__all__ = ["letterbox_image"]

# Pillow widens the bilinear (triangle) kernel by the reduction factor when downscaling, so this antialiases
# large photos (no moire) without the ringing that bicubic/Lanczos add around sharp object edges.
DEFAULT_RESAMPLE = Image.Resampling.BILINEAR


def letterbox_image(
    image: np.ndarray,
    size: int,
    fill: int = 114,
    *,
    resample: Image.Resampling = DEFAULT_RESAMPLE,
) -> np.ndarray:
    """Resize an image to fit an ``size x size`` square, aspect ratio kept, and pad the rest with ``fill``.

    Args:
        image (np.ndarray uint8 [H, W, C]): the original image, any ``C >= 1`` (channels resized independently).
        size: side ``S`` of the model input.
        fill: padding value, ``0..255``, the same in every channel (114: YOLO's grey).
        resample: PIL filter for the resize.

    Returns:
        np.ndarray uint8 [S, S, C]: the content occupies rows ``[pad_y, pad_y + new_height)`` and columns
        ``[pad_x, pad_x + new_width)`` of ``letterbox_params(W, H, S)``; every other pixel equals ``fill``.
        An ``S x S`` image comes back as an equal copy, never resampled.
    """
    if image.ndim != 3 or image.dtype != np.uint8 or image.shape[2] < 1:
        raise ValueError(f"expected a uint8 [H, W, C] array, got {image.dtype} {image.shape}")
    if not 0 <= fill <= 255:
        raise ValueError(f"fill must be in 0..255, got {fill}")
    height, width, channels = image.shape
    box = letterbox_params(width, height, size)
    if box.is_identity:
        return image.copy()
    out = np.full((size, size, channels), fill, dtype=np.uint8)
    target = (box.new_width, box.new_height)
    # One "L" image per channel: works for any channel count, and Pillow filters RGB channel by channel anyway.
    content = np.stack(
        [np.asarray(Image.fromarray(np.ascontiguousarray(image[:, :, c])).resize(target, resample))
         for c in range(channels)],
        axis=-1,
    )
    out[box.pad_y : box.pad_y + box.new_height, box.pad_x : box.pad_x + box.new_width] = content
    return out
