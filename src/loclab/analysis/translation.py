"""Does a keypoint model see *where* things are? Shift the images and see if the predictions follow.

A model whose head is translation-invariant (global average pooling before the FC layers) predicts
nearly the same coordinates wherever the figure is, so its regression can only learn average positions.
"""

from __future__ import annotations

import torch
from torch import Tensor

BACKGROUND = 255


def shift_images(images: Tensor, shift: int) -> Tensor:
    """``images [N, C, H, W]`` (uint8, white background) moved ``shift`` px to the right.

    Raises ``ValueError`` if any image has non-background pixels in the ``shift`` right-most columns, which
    would wrap around instead of leaving the frame.
    """
    if shift <= 0:
        raise ValueError(f"shift must be a positive number of pixels, got {shift}")
    if (images[..., -shift:] != BACKGROUND).any():
        raise ValueError(f"some images have content in their last {shift} columns; choose a smaller shift")
    return torch.roll(images, shifts=shift, dims=-1)


def translation_response(original: Tensor, shifted: Tensor, shift: int) -> dict[str, float]:
    """How far predictions ``[N, K, 2]`` (px) moved when the images moved ``shift`` px along x.

    ``follow_ratio`` = mean x displacement / shift: 1 for a model that tracks the figure, 0 for one that
    ignores where it is.
    """
    delta = (shifted - original).double()
    dx = float(delta[..., 0].mean())
    return {"shift_px": float(shift), "mean_dx_px": dx, "mean_abs_dy_px": float(delta[..., 1].abs().mean()),
            "follow_ratio": dx / shift}
