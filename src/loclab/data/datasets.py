"""PyTorch datasets over validated splits; every PNG is decoded once, at construction, into a uint8 tensor.

Decoding up front means a broken image fails with a :class:`DataError` naming it before training starts, never
inside a DataLoader worker, and an epoch costs no PNG decoding. Memory: 1000 shapes images are 150 MB of uint8,
1000 stick figures 16 MB.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset
from tqdm import tqdm

from loclab.data.errors import DataError
from loclab.data.formats import ImageRecord
from loclab.data.formats_detection import DetectionSplit, load_detection_annotations
from loclab.data.images import ImageReadError, load_pixels
from loclab.data.keypoint_dataset import KeypointDataset  # noqa: F401  (top-down; re-exported here)
from loclab.data.letterbox_image import letterbox_image
from loclab.ops.letterbox import Letterbox, letterbox_params

DetectionTarget = dict[str, Tensor | int]
_PROGRESS_MIN_IMAGES = 100  # below this a progress bar is just noise
# Decoded model inputs above this many bytes are streamed from disk instead of held in memory.
DECODED_MEMORY_BUDGET = 2 * 1024**3
LETTERBOX_FILL = 114  # grey padding, the value YOLO-family detectors use


def decode_images(
    records: Sequence[ImageRecord], mode: Literal["RGB", "L"], *, progress: bool = True, source: Path | None = None
) -> Tensor:
    """Decode every image into one uint8 tensor ``[N, C, H, W]`` (C = 3 for "RGB", 1 for "L").

    Images are converted to ``mode``. All images must have the size of the first; a different size or an image
    that fails to decode raises :class:`DataError` naming the image (and ``source``, its annotation file).
    """
    channels = 3 if mode == "RGB" else 1
    width, height = (records[0].width, records[0].height) if records else (0, 0)
    out = np.empty((len(records), channels, height, width), dtype=np.uint8)
    of = f" of {source}" if source else ""
    bar = tqdm(records, desc="decoding images", unit="img", disable=not progress or len(records) < _PROGRESS_MIN_IMAGES)
    for i, record in enumerate(bar):
        where = f"{record.path}: image id {record.id}{of}"
        try:
            pixels = load_pixels(record.path, mode)  # upright (EXIF), 8-bit; as stored for 8-bit RGB/L PNGs
        except ImageReadError as err:
            raise DataError(f"{where} cannot be decoded ({err.reason}).") from None
        if pixels.shape[:2] != (height, width):
            raise DataError(
                f"{where} is {pixels.shape[1]}x{pixels.shape[0]}, but the dataset's images are {width}x{height}; "
                "a dataset needs images of one size."
            )
        # Filled through numpy: torch's strided copy of a permuted uint8 view is ~20x slower.
        out[i] = pixels.reshape(height, width, channels).transpose(2, 0, 1)
    return torch.from_numpy(out)


def flip_horizontal(images: Tensor, boxes: Tensor, valid: Tensor, flip: Tensor) -> tuple[Tensor, Tensor]:
    """Mirror the images selected by ``flip`` left-right, with their boxes.

    Args:
        images: ``[B, C, H, W]``.
        boxes: ``[B, M, 4]`` xyxy pixels, zero-padded where not ``valid``.
        valid: bool ``[B, M]``, which box slots are real.
        flip: bool ``[B]``, which images to mirror.

    Returns:
        ``(images, boxes)``, new tensors of the same shapes. A mirrored box ``[x1, y1, x2, y2]`` becomes
        ``[W - x2, y1, W - x1, y2]``; padding stays zero. Applying it twice with the same mask is the identity.
    """
    width = images.shape[-1]
    flip = flip.to(images.device)
    images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    mirrored = torch.stack([width - boxes[..., 2], boxes[..., 1], width - boxes[..., 0], boxes[..., 3]], dim=-1)
    boxes = torch.where((flip[:, None] & valid)[..., None], mirrored, boxes)
    return images, boxes


def detection_collate(
    batch: Sequence[tuple[Tensor, DetectionTarget]],
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Stack ``(image, target)`` samples into padded tensors.

    Returns ``(images [B, 3, H, W], boxes [B, M, 4] zero-padded, labels [B, M] int64 padded with -1,
    valid [B, M] bool, image_ids [B] int64)`` with ``M`` the largest box count in the batch (0 if none).
    """
    counts = [len(target["boxes"]) for _, target in batch]
    size, slots = len(batch), max(counts, default=0)
    images = torch.stack([image for image, _ in batch])
    boxes = torch.zeros((size, slots, 4), dtype=torch.float32)
    labels = torch.full((size, slots), -1, dtype=torch.int64)
    valid = torch.zeros((size, slots), dtype=torch.bool)
    for i, ((_, target), n) in enumerate(zip(batch, counts)):
        boxes[i, :n] = target["boxes"]
        labels[i, :n] = target["labels"]
        valid[i, :n] = True
    image_ids = torch.tensor([int(target["image_id"]) for _, target in batch], dtype=torch.int64)
    return images, boxes, labels, valid, image_ids


class DetectionDataset(Dataset):
    """A validated detection split as letterboxed model inputs.

    Every image is letterboxed to the square model input of side ``image_size`` (aspect kept, padded with grey;
    see :mod:`loclab.ops.letterbox`) and its boxes mapped with it. Images already of that size (the reference
    shapes) are used exactly as decoded. Images are decoded once at construction while the decoded inputs fit
    ``memory_budget`` bytes; larger datasets are decoded per sample (``streaming``; the training loop then reads
    them through DataLoader worker processes).

    ``dataset[i]`` is ``(image float32 [3, S, S] in [0, 1], {"boxes": float32 [n, 4] xyxy in the model input,
    "labels": int64 [n], "image_id": int})``. Attributes: ``images`` uint8 ``[N, 3, S, S]`` (None when
    streaming), ``image_ids``, ``letterboxes`` (one :class:`~loclab.ops.letterbox.Letterbox` per image, to map
    predictions back to image pixels), ``split`` (original pixels) and ``input_split`` (the same split in
    model-input pixels, what anchors are compared with). With ``hflip=True`` each sample is mirrored with
    probability 0.5 from torch's global generator; training loops that batch first can use
    :func:`flip_horizontal` on the batch instead.
    """

    def __init__(self, split: DetectionSplit, *, image_size: int | None = None, hflip: bool = False,
                 progress: bool = True, memory_budget: int = DECODED_MEMORY_BUDGET) -> None:
        self.split = split
        self.hflip = hflip
        if image_size is None:
            image_size = split.images[0].width if split.images else 224
        self.image_size = image_size
        self.letterboxes = split_letterboxes(split, image_size)
        self.input_split = letterbox_split(split, self.letterboxes)
        self.image_ids = [record.id for record in split.images]
        self.streaming = len(split.images) * 3 * image_size * image_size > memory_budget
        self.images: Tensor | None = None
        if self.streaming:
            return
        if all(lb.is_identity for lb in self.letterboxes):
            self.images = decode_images(split.images, "RGB", progress=progress, source=split.annotation_file)
            return
        self.images = torch.empty((len(split.images), 3, image_size, image_size), dtype=torch.uint8)
        bar = tqdm(range(len(split.images)), desc="decoding images", unit="img",
                   disable=not progress or len(split.images) < _PROGRESS_MIN_IMAGES)
        for i in bar:
            self.images[i] = self._decode(i)

    @property
    def num_workers(self) -> int:
        """DataLoader workers the training loop should use: decoding in parallel only pays when streaming."""
        return min(4, os.cpu_count() or 1) if self.streaming else 0

    def input_image(self, index: int) -> Tensor:
        """Image ``index`` letterboxed to the model input, uint8 ``[3, S, S]``."""
        return self._decode(index) if self.images is None else self.images[index]

    def _decode(self, index: int) -> Tensor:
        record = self.split.images[index]
        pixels = load_pixels(record.path, "RGB")
        boxed = letterbox_image(pixels, self.image_size, fill=LETTERBOX_FILL)
        return torch.from_numpy(np.ascontiguousarray(boxed.transpose(2, 0, 1)))

    @classmethod
    def from_root(
        cls,
        data_root: Path | str,
        split: str,
        *,
        skip_bad: bool = False,
        hflip: bool = False,
        progress: bool = True,
    ) -> DetectionDataset:
        """Read ``data_root/detection/{split}_annotations.json`` with images in ``data_root/detection/{split}/``."""
        folder = Path(data_root) / "detection"
        loaded = load_detection_annotations(folder / f"{split}_annotations.json", folder / split, skip_bad=skip_bad)
        return cls(loaded, hflip=hflip, progress=progress)

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> tuple[Tensor, DetectionTarget]:
        image = self.input_image(index).float() / 255
        boxes = self.input_split.boxes[index].clone()
        if self.hflip and bool(torch.rand(()) < 0.5):
            flipped, mirrored = flip_horizontal(
                image[None], boxes[None], torch.ones((1, len(boxes)), dtype=torch.bool), torch.ones(1, dtype=torch.bool)
            )
            image, boxes = flipped[0], mirrored[0]
        return image, {"boxes": boxes, "labels": self.split.labels[index].clone(), "image_id": self.image_ids[index]}


def split_letterboxes(split: DetectionSplit, image_size: int) -> list[Letterbox]:
    """The letterbox of every image of ``split`` into a square model input of side ``image_size``."""
    return [letterbox_params(r.width, r.height, image_size) for r in split.images]


def letterbox_split(split: DetectionSplit, letterboxes: Sequence[Letterbox]) -> DetectionSplit:
    """``split`` with every box mapped into its image's letterboxed model input and every image declared
    ``S x S``. Identity letterboxes leave the split as it is (the same object)."""
    if all(lb.is_identity for lb in letterboxes):
        return split
    images = tuple(replace(r, width=lb.size, height=lb.size) for r, lb in zip(split.images, letterboxes))
    boxes = tuple(lb.boxes_to_input(b) for b, lb in zip(split.boxes, letterboxes))
    return replace(split, images=images, boxes=boxes)
