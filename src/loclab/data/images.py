"""Reading image files as people have them: photos with an EXIF orientation tag, grayscale, RGBA, palette,
CMYK, 16-bit and float images, all turned into the 8-bit pixels the models see.

**Orientation.** Cameras and phones often store a photo sideways and add an EXIF ``Orientation`` tag (values
2..8) saying how to turn it for display. Annotation tools label the *displayed* image, so everything here works
in displayed (oriented) pixels: :func:`image_size` returns the size after orientation and :func:`open_image` /
:func:`load_pixels` return the turned pixels, with the transpositions of :func:`PIL.ImageOps.exif_transpose`.
The tag is read from the file's header only (what :func:`image_size` can see without decoding pixels), so the
two always agree; a PNG ``eXIf`` chunk written *after* the pixel data is therefore ignored.

**Pixel conversion** (:func:`load_pixels`), source mode -> 8-bit ``RGB`` or ``L``:

* ``1`` (1-bit): 0 -> 0, 1 -> 255. ``L``/``RGB``: as stored. ``RGB`` -> ``L`` is PIL's ITU-R 601-2 luma.
* ``P`` (palette): looked up in the palette; with a transparent index it is treated as ``RGBA``.
* ``RGBA``, ``LA``, ``PA`` (and premultiplied ``RGBa``/``La``): **composited on black**, ``c * alpha / 255``
  rounded. The colour stored under a transparent pixel is arbitrary (often garbage left by an editor), so
  dropping alpha would show the model pixels nobody saw; black is a fixed, documented background.
* ``CMYK``, ``YCbCr``, ``RGBX``, ``HSV``: PIL's conversion to RGB (CMYK without a colour profile).
* ``I;16``, ``I;16L``, ``I;16B``, ``I;16N`` (16-bit) and ``I`` (32-bit integer, which Pillow uses for
  16-bit PGM/PNG): the full 16-bit range is scaled, ``round(v * 255 / 65535)``, never clipped at 255 as
  ``Image.convert`` does. An ``I`` image with values outside ``0..65535`` is stretched from its min to its max.
* 16-bit RGB(A) PNGs: Pillow itself keeps only the high byte of each channel when it reads them; used as read.
* ``F`` (32-bit float): values in ``[0, 1]`` are scaled by 255, values in ``[0, 255]`` are kept, any other range
  is stretched from min to max; NaN is 0, infinities clip. Rounded to the nearest integer.

Every failure (missing file, not an image, truncated or corrupt data, decompression bomb, an unconvertible mode)
raises :class:`ImageReadError`, a :class:`~loclab.data.errors.DataError` whose message names the file.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import ExifTags, Image

from loclab.data.errors import DataError

__all__ = ["IMAGE_EXTENSIONS", "ImageReadError", "image_size", "load_pixels", "open_image", "orientation",
           "oriented_size"]

PixelMode = Literal["RGB", "L"]
# File extensions treated as images when a layout lists a folder (lower case; matched case-insensitively).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".pgm", ".ppm", ".mpo")

# EXIF orientation -> the transposition that shows the image upright (the table of PIL.ImageOps.exif_transpose).
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_AXES = frozenset({5, 6, 7, 8})
_SIXTEEN_BIT = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
_WITH_ALPHA = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
# What PIL raises for files that are not (complete, sane) images.
_PIL_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error, Image.DecompressionBombError)


class ImageReadError(DataError):
    """An image file that cannot be read; ``path`` is the file, ``reason`` says why (without the path)."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}.")
        self.path = Path(path)
        self.reason = reason


def orientation(image: Image.Image) -> int:
    """The EXIF orientation (1..8) of an opened image, read from its header without decoding pixels; 1 when the
    file has no tag, an invalid value or unreadable EXIF (viewers show such files as stored)."""
    try:
        # Image.Image.getexif, not the subclass's: PngImageFile.getexif decodes every pixel to look for an
        # eXIf chunk after the image data, and the base method reads only what the header put in ``info``.
        value = Image.Image.getexif(image).get(ExifTags.Base.Orientation, 1)
    except (*_PIL_ERRORS, KeyError, TypeError, IndexError):
        return 1
    return value if isinstance(value, int) and value in _TRANSPOSE else 1


def oriented_size(image: Image.Image) -> tuple[int, int]:
    """``(width, height)`` of an opened image as displayed: the stored size, swapped for EXIF orientations 5-8."""
    width, height = image.size
    return (height, width) if orientation(image) in _SWAPS_AXES else (width, height)


def image_size(path: Path | str) -> tuple[int, int]:
    """``(width, height)`` of the image file at ``path`` after EXIF orientation, from the header (no decoding).

    Raises :class:`ImageReadError` if the file is missing or not an image PIL can identify.
    """
    with _opened(Path(path)) as image:
        return oriented_size(image)


def open_image(path: Path | str) -> Image.Image:
    """The image at ``path``, fully decoded and turned upright by its EXIF orientation, in its stored mode.

    The file is closed when this returns. Raises :class:`ImageReadError` for missing, unreadable, truncated or
    corrupt files.
    """
    path = Path(path)
    with _opened(path) as image:
        turn = _TRANSPOSE.get(orientation(image))  # before load(): the header's tag, as image_size sees it
        image.load()
        return image.transpose(turn) if turn is not None else image.copy()


def load_pixels(path: Path | str, mode: PixelMode) -> np.ndarray:
    """Decode the image at ``path`` upright into 8-bit pixels: uint8 ``[H, W, 3]`` for ``"RGB"``, ``[H, W]``
    for ``"L"``; ``H, W`` are :func:`image_size`'s. See the module docstring for how each source mode converts
    (alpha is composited on black, 16-bit is scaled, not clipped).

    Raises :class:`ImageReadError` naming the file for missing, unreadable, truncated or corrupt files and for
    pixel modes that cannot be converted.
    """
    if mode not in ("RGB", "L"):
        raise ValueError(f"mode must be 'RGB' or 'L', got {mode!r}")
    path = Path(path)
    with _opened(path) as image:
        turn = _TRANSPOSE.get(orientation(image))
        image.load()
        try:
            pixels = _to_uint8(image, mode)
        except ValueError as err:  # a conversion PIL does not implement, e.g. LAB -> RGB
            raise ImageReadError(path, f"has pixel mode {image.mode}, which cannot be converted to {mode} ({err})")
    if turn is not None:
        pixels = _transpose_array(pixels, turn)
    return pixels


@contextmanager
def _opened(path: Path) -> Iterator[Image.Image]:
    """``Image.open(path)`` whose every failure, while opening or inside the block, is an :class:`ImageReadError`."""
    if not path.exists():
        raise ImageReadError(path, "image file does not exist")
    if not path.is_file():
        raise ImageReadError(path, "is not a file, expected an image")
    try:
        with Image.open(path) as image:
            yield image
    except ImageReadError:
        raise
    except Image.DecompressionBombError as err:
        raise ImageReadError(path, f"is too large to decode safely ({err})") from None
    except _PIL_ERRORS as err:
        raise ImageReadError(path, f"is not a readable image ({type(err).__name__}: {err})") from None


def _to_uint8(image: Image.Image, mode: PixelMode) -> np.ndarray:
    """The loaded ``image`` as uint8 ``[H, W, 3]`` (``"RGB"``) or ``[H, W]`` (``"L"``)."""
    if image.mode in _SIXTEEN_BIT or image.mode == "F":
        values = np.asarray(image)
        gray = _scale_float(values) if image.mode == "F" else _scale_integers(values, image.mode)
        return gray if mode == "L" else np.repeat(gray[..., None], 3, axis=2)
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in _WITH_ALPHA:
        return _on_black(image, mode)
    if image.mode == mode:
        return np.asarray(image)  # the common case; same bytes as np.asarray(image.convert(mode))
    if image.mode == "1" or (mode == "RGB" and image.mode != "L"):
        return np.asarray(image.convert(mode))
    if mode == "L":  # CMYK, YCbCr, ... go through RGB so that "L" is always the luma of what "RGB" shows
        return np.asarray(image.convert("RGB").convert("L"))
    return np.asarray(image.convert(mode))  # L -> RGB: gray replicated


def _on_black(image: Image.Image, mode: PixelMode) -> np.ndarray:
    """Composite an image with alpha on black: ``round(c * a / 255)`` per channel."""
    gray = mode == "L" and image.mode in ("LA", "La")
    values = np.asarray(image.convert("LA" if gray else "RGBA")).astype(np.uint16)
    colour, alpha = values[..., :-1], values[..., -1:]
    # (x + 127) // 255 rounds x / 255 to the nearest integer (no ties: 255 is odd).
    composited = ((colour * alpha + 127) // 255).astype(np.uint8)
    if gray:
        return composited[..., 0]
    if mode == "RGB":
        return composited
    return np.asarray(Image.fromarray(composited, "RGB").convert("L"))


def _scale_integers(values: np.ndarray, pil_mode: str) -> np.ndarray:
    """16-bit (or 32-bit ``I``) gray to uint8: ``round(v * 255 / 65535)``, or a min-max stretch for an ``I``
    image outside ``0..65535``."""
    values = values.astype(np.int64)
    if values.size and pil_mode == "I" and (values.min() < 0 or values.max() > 65535):
        low, high = int(values.min()), int(values.max())
        stretched = ((values - low) * 510 + (high - low)) // (2 * (high - low))  # round((v - low) * 255 / range)
        return stretched.astype(np.uint8)
    return ((values * 255 + 32767) // 65535).astype(np.uint8)


def _scale_float(values: np.ndarray) -> np.ndarray:
    """Float gray to uint8: ``[0, 1]`` scaled by 255, ``[0, 255]`` kept, anything else stretched min..max."""
    values = values.astype(np.float64)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.zeros(values.shape, dtype=np.uint8)
    low, high = float(finite.min()), float(finite.max())
    values = np.nan_to_num(values, nan=0.0, posinf=high, neginf=low)
    if low >= 0.0 and high <= 1.0:
        scaled = values * 255.0
    elif low >= 0.0 and high <= 255.0:
        scaled = values
    elif high > low:
        scaled = (values - low) * (255.0 / (high - low))
    else:
        scaled = np.zeros_like(values)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _transpose_array(pixels: np.ndarray, turn: Image.Transpose) -> np.ndarray:
    """Apply a PIL transposition to ``[H, W]`` or ``[H, W, C]`` pixels (cheaper than converting twice in PIL,
    and the same for every mode)."""
    if turn == Image.Transpose.FLIP_LEFT_RIGHT:
        out = pixels[:, ::-1]
    elif turn == Image.Transpose.FLIP_TOP_BOTTOM:
        out = pixels[::-1]
    elif turn == Image.Transpose.ROTATE_180:
        out = pixels[::-1, ::-1]
    elif turn == Image.Transpose.ROTATE_90:  # counter-clockwise
        out = np.rot90(pixels, 1)
    elif turn == Image.Transpose.ROTATE_270:
        out = np.rot90(pixels, -1)
    elif turn == Image.Transpose.TRANSPOSE:  # mirror over the main diagonal
        out = np.swapaxes(pixels, 0, 1)
    else:  # TRANSVERSE: mirror over the anti-diagonal
        out = np.swapaxes(pixels, 0, 1)[::-1, ::-1]
    return np.ascontiguousarray(out)
