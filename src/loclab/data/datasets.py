"""PyTorch datasets over validated splits; every PNG is decoded once, at construction, into a uint8 tensor.

Decoding up front means a broken image fails with a :class:`DataError` naming it before training starts, never
inside a DataLoader worker, and an epoch costs no PNG decoding. Memory: 1000 shapes images are 150 MB of uint8,
1000 stick figures 16 MB.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from tqdm import tqdm

from loclab.data.errors import DataError
from loclab.data.formats import ImageRecord
from loclab.data.formats_detection import DetectionSplit, load_detection_annotations
from loclab.data.formats_keypoints import KeypointSplit, load_keypoint_annotations
from loclab.ops.heatmaps import encode_heatmaps

DetectionTarget = dict[str, Tensor | int]
_PROGRESS_MIN_IMAGES = 100  # below this a progress bar is just noise


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
            with Image.open(record.path) as image:
                pixels = np.asarray(image.convert(mode))
        except (OSError, ValueError) as err:
            raise DataError(f"{where} cannot be decoded ({err}).") from None
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
    """Shapes (or any validated detection split) as tensors.

    ``dataset[i]`` is ``(image float32 [3, H, W] in [0, 1], {"boxes": float32 [n, 4] xyxy, "labels": int64 [n],
    "image_id": int})``. Attributes: ``images`` uint8 ``[N, 3, H, W]``, ``image_ids`` list of int, ``split``.
    With ``hflip=True`` each sample is mirrored with probability 0.5 from torch's global generator; training
    loops that batch first can use :func:`flip_horizontal` on the batch instead.
    """

    def __init__(self, split: DetectionSplit, *, hflip: bool = False, progress: bool = True) -> None:
        self.split = split
        self.hflip = hflip
        self.images = decode_images(split.images, "RGB", progress=progress, source=split.annotation_file)
        self.image_ids = [record.id for record in split.images]

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
        image = self.images[index].float() / 255
        boxes = self.split.boxes[index].clone()
        if self.hflip and bool(torch.rand(()) < 0.5):
            flipped, mirrored = flip_horizontal(
                image[None], boxes[None], torch.ones((1, len(boxes)), dtype=torch.bool), torch.ones(1, dtype=torch.bool)
            )
            image, boxes = flipped[0], mirrored[0]
        return image, {"boxes": boxes, "labels": self.split.labels[index].clone(), "image_id": self.image_ids[index]}


class KeypointDataset(Dataset):
    """Stick figures (or any validated single-figure keypoint split) as tensors (SPEC §3.1).

    ``dataset[i]`` is ``(image float32 [1, S, S] in [0, 1], target)`` with target

    * ``output_type="heatmap"``: float32 ``[K, heatmap_size, heatmap_size]`` Gaussians of ``sigma`` heatmap cells
      from :func:`loclab.ops.heatmaps.encode_heatmaps` (pixel-centre convention). They are computed per sample
      on access, not cached: two 1-D Gaussians and an outer product cost microseconds, are exact float32, and a
      cache would take up to 330 MB (1000 x 5 x 128 x 128 float32) or lose precision as float16.
    * ``output_type="regression"``: float32 ``[2K]`` = ``[x0, y0, x1, y1, ...] / S`` in ``[0, 1]``.

    Attributes: ``images`` uint8 ``[N, 1, S, S]``, ``keypoints`` float32 ``[N, K, 2]`` image pixels,
    ``image_ids`` list of int, ``keypoint_names``, ``image_size`` (S), ``split``.
    """

    def __init__(
        self,
        image_dir: Path | str,
        annotation_file: Path | str,
        output_type: Literal["heatmap", "regression"] = "heatmap",
        heatmap_size: int = 64,
        sigma: float = 2.0,
        *,
        skip_bad: bool = False,
        progress: bool = True,
    ) -> None:
        split = load_keypoint_annotations(annotation_file, image_dir, skip_bad=skip_bad)
        self._setup(split, output_type, heatmap_size, sigma, progress)

    @classmethod
    def from_split(
        cls,
        split: KeypointSplit,
        output_type: Literal["heatmap", "regression"] = "heatmap",
        heatmap_size: int = 64,
        sigma: float = 2.0,
        *,
        progress: bool = True,
    ) -> KeypointDataset:
        """Build from an already loaded split (no second read of the annotation file)."""
        dataset = cls.__new__(cls)
        dataset._setup(split, output_type, heatmap_size, sigma, progress)
        return dataset

    def _setup(self, split: KeypointSplit, output_type: str, heatmap_size: int, sigma: float, progress: bool) -> None:
        if output_type not in ("heatmap", "regression"):
            raise ValueError(f"output_type must be 'heatmap' or 'regression', got {output_type!r}")
        if heatmap_size <= 0 or sigma <= 0:
            raise ValueError(f"heatmap_size and sigma must be positive, got {heatmap_size} and {sigma}")
        for record, visible in zip(split.images, split.visible):
            if not bool(visible.all()):
                raise DataError(
                    f"{split.annotation_file}: image id {record.id} (\"{record.file_name}\") has unlabelled keypoints "
                    "(COCO v = 0); the keypoint models need every keypoint labelled."
                )
            if record.width != record.height:
                raise DataError(f"{record.path}: image id {record.id} is {record.width}x{record.height}; "
                                "keypoint images must be square.")
        self.split = split
        self.output_type = output_type
        self.heatmap_size = heatmap_size
        self.sigma = sigma
        self.images = decode_images(split.images, "L", progress=progress, source=split.annotation_file)
        self.image_size = self.images.shape[-1]
        self.keypoints = split.keypoints.clone()
        self.keypoint_names = split.keypoint_names
        self.image_ids = [record.id for record in split.images]
        self._regression = (self.keypoints / self.image_size).flatten(1)  # [N, 2K]; tiny, so precomputed

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image = self.images[index].float() / 255
        if self.output_type == "regression":
            return image, self._regression[index].clone()
        return image, encode_heatmaps(self.keypoints[index], self.image_size, self.heatmap_size, self.sigma)
