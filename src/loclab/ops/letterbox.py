"""Letterbox geometry: fitting an image of any size into the square model input, and mapping coordinates.

An image of ``width x height`` pixels is resized by ``r = min(S / width, S / height)`` to
``new_width x new_height`` (rounded to whole pixels) and pasted at ``(pad_x, pad_y)`` into an ``S x S`` canvas;
the rest of the canvas is padding. Because the content size is rounded, the horizontal and vertical scales
``new_width / width`` and ``new_height / height`` differ slightly from ``r`` and from each other; coordinates are
mapped with these per-axis scales so that they land exactly on the resized pixels.

Two coordinate conventions (docs/architecture.md):

- **Boxes** are continuous: pixel column ``x`` covers ``[x, x + 1)``, so the image spans ``[0, width]`` and maps
  onto ``[pad_x, pad_x + new_width]``: ``x_in = x * scale_x + pad_x``.
- **Keypoints** use the pixel-centre convention: integer ``x`` is the centre of column ``x``, i.e. continuous
  coordinate ``x + 0.5``: ``x_in = (x + 0.5) * scale_x - 0.5 + pad_x``.

Mappings compute in float64, so a round trip is exact to ~1e-9 px; a float32 result is rounded in input pixels,
and mapping it back multiplies that rounding (relative 2**-24 of up to ``S``) by ``1 / scale``.

The image resize itself lives in :mod:`loclab.data.letterbox_image` (it needs PIL; this module is pure math).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Letterbox", "letterbox_params"]


def _work_dtype(t: Tensor) -> torch.dtype:
    # float64 keeps the round trip exact to ~1e-9 px; MPS has no float64, so it gets float32 (~1e-4 px at 4k).
    return torch.float32 if t.device.type == "mps" else torch.float64


def _out_dtype(t: Tensor) -> torch.dtype:
    return t.dtype if t.is_floating_point() else torch.float32


@dataclass(frozen=True)
class Letterbox:
    """Where an original image sits inside the square letterboxed model input.

    Build it with :func:`letterbox_params`, which enforces the invariants below.

    Attributes:
        width, height: original image size in pixels (positive).
        size: side ``S`` of the square model input.
        new_width, new_height: size of the resized content, ``round(width * r)`` and ``round(height * r)``
            (halves rounded up, at least 1, at most ``S``) with ``r = min(S / width, S / height)``; the longer
            side is exactly ``S``.
        pad_x, pad_y: left and top padding in pixels, ``(S - new_width) // 2`` and ``(S - new_height) // 2``;
            the right/bottom padding takes the odd pixel.
    """

    width: int
    height: int
    size: int
    new_width: int
    new_height: int
    pad_x: int
    pad_y: int

    @property
    def scale_x(self) -> float:
        """Horizontal scale ``new_width / width`` from original to input pixels."""
        return self.new_width / self.width

    @property
    def scale_y(self) -> float:
        """Vertical scale ``new_height / height`` from original to input pixels."""
        return self.new_height / self.height

    @property
    def is_identity(self) -> bool:
        """True when the image already is ``S x S``: every mapping is then the identity."""
        return self.width == self.height == self.size

    def boxes_to_input(self, boxes: Tensor) -> Tensor:
        """Map boxes from original-image to model-input coordinates.

        Args:
            boxes (Tensor[..., 4]): ``(x1, y1, x2, y2)`` in original-image pixels (continuous coordinates).

        Returns:
            Tensor[..., 4]: the same boxes in input pixels, ``x * scale_x + pad_x`` and ``y * scale_y + pad_y``.
            Floating inputs keep their dtype (computed in float64), integer inputs give float32. The identity
            letterbox returns a copy with the same values bit for bit.
        """
        return self._map(boxes, 4, inverse=False, centre=False)

    def boxes_to_image(self, boxes: Tensor, *, clip: bool = True) -> Tensor:
        """Map boxes from model-input to original-image coordinates; the exact inverse of :meth:`boxes_to_input`.

        Args:
            boxes (Tensor[..., 4]): ``(x1, y1, x2, y2)`` in input pixels, e.g. detections.
            clip: clamp the result to ``[0, width] x [0, height]`` (predictions may reach into the padding).

        Returns:
            Tensor[..., 4]: boxes in original-image pixels; dtype as in :meth:`boxes_to_input`.
        """
        out = self._map(boxes, 4, inverse=True, centre=False)
        if clip:
            limits = torch.tensor([self.width, self.height] * 2, dtype=out.dtype, device=out.device)
            out = torch.minimum(out.clamp(min=0), limits)
        return out

    def points_to_input(self, points: Tensor) -> Tensor:
        """Map keypoints from original-image to input coordinates (pixel-centre convention).

        Args:
            points (Tensor[..., 2]): ``(x, y)`` where integer ``x`` is the centre of pixel column ``x``.

        Returns:
            Tensor[..., 2]: ``x_in = (x + 0.5) * scale_x - 0.5 + pad_x`` (and likewise for ``y``); dtype as in
            :meth:`boxes_to_input`. The identity letterbox returns the same values bit for bit.
        """
        return self._map(points, 2, inverse=False, centre=True)

    def points_to_image(self, points: Tensor) -> Tensor:
        """Map keypoints from input to original-image coordinates; the exact inverse of :meth:`points_to_input`.

        Args:
            points (Tensor[..., 2]): ``(x, y)`` in input pixels, pixel-centre convention.

        Returns:
            Tensor[..., 2]: ``x = (x_in - pad_x + 0.5) / scale_x - 0.5`` (and likewise for ``y``), not clipped.
        """
        return self._map(points, 2, inverse=True, centre=True)

    def _map(self, coords: Tensor, last: int, *, inverse: bool, centre: bool) -> Tensor:
        if coords.shape[-1] != last:
            raise ValueError(f"expected a last dimension of {last}, got shape {tuple(coords.shape)}")
        out_dtype = _out_dtype(coords)
        if self.is_identity:
            return coords.to(out_dtype, copy=True)
        work = _work_dtype(coords)
        # Scales and pads laid out along the last dimension: (x, y) for points, (x, y, x, y) for boxes.
        repeat = last // 2
        scale = torch.tensor([self.scale_x, self.scale_y] * repeat, dtype=work, device=coords.device)
        pad = torch.tensor([float(self.pad_x), float(self.pad_y)] * repeat, dtype=work, device=coords.device)
        shift = 0.5 if centre else 0.0  # pixel centres sit half a pixel inside the continuous pixel
        x = coords.to(work)
        if inverse:
            out = (x - pad + shift) / scale - shift
        else:
            out = (x + shift) * scale - shift + pad
        return out.to(out_dtype)


def letterbox_params(width: int, height: int, size: int) -> Letterbox:
    """The letterbox that fits a ``width x height`` image into an ``size x size`` input, aspect ratio kept.

    The content sizes are computed in integer arithmetic (``round(n * size / longest)``, halves up), so the
    longer side is exactly ``size`` and the result never depends on float rounding.

    Args:
        width, height: original image size in pixels, positive ints.
        size: side ``S`` of the square model input, a positive int.

    Returns:
        Letterbox: see its attributes; ``is_identity`` when ``width == height == size``.
    """
    for name, value in (("width", width), ("height", height), ("size", size)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    longest = max(width, height)

    def resized(n: int) -> int:
        # round(n * size / longest) with halves rounded up, exactly; at least 1 px for extreme aspect ratios.
        return max(1, (2 * n * size + longest) // (2 * longest))

    new_width, new_height = resized(width), resized(height)
    return Letterbox(
        width=width,
        height=height,
        size=size,
        new_width=new_width,
        new_height=new_height,
        pad_x=(size - new_width) // 2,
        pad_y=(size - new_height) // 2,
    )
