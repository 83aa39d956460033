"""Top-down keypoint samples: one sample per instance, its box cropped to the model input.

Every instance (a stick figure, a person, an animal) is cut out of its image with an aspect-preserving affine crop
of its box (:func:`loclab.data.crops.instance_transform`), as MMPose's top-down models do, and its keypoints are
mapped into the crop with the same transform. A reference stick figure fills its whole 128 x 128 image and the
input is 128 x 128, so its crop is the exact identity: the image is used as decoded (no resampling) and the
targets are bitwise those of the single-figure dataset this one replaced.

Memory: the crops are decoded once at construction while they fit ``memory_budget`` bytes (1000 stick figures:
16 MB); with augmentation the decoded source images are held instead, since every epoch crops them anew. Larger
datasets decode per sample (``streaming``), in DataLoader workers (``num_workers``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from tqdm import tqdm

from loclab.data.crops import decode_record, instance_transform, to_chw, warp_image
from loclab.data.errors import DataError
from loclab.data.formats_keypoints import KeypointSplit, load_keypoint_annotations
from loclab.errors import ConfigError
from loclab.ops.affine import apply_affine, is_identity
from loclab.ops.augment import colour_jitter
from loclab.ops.heatmaps import encode_heatmaps
from loclab.ops.keypoint_pairs import partner_order

DECODED_MEMORY_BUDGET = 2 * 1024**3  # bytes of decoded pixels held in memory before samples are streamed
_PROGRESS_MIN_IMAGES = 100  # below this a progress bar is just noise
# PIL modes with one channel of information: such data trains a 1-channel model.
GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})


def image_channels(split: KeypointSplit) -> int:
    """1 when the split is grayscale, else 3: the reference format is grayscale by definition (the stick figures
    are mode-L PNGs); other formats are grayscale when every image file's mode is (read from the headers)."""
    if split.format == "reference":
        return 1
    for record in split.images:
        try:
            with Image.open(record.path) as image:
                if image.mode not in GRAY_MODES:
                    return 3
        except OSError as err:
            raise DataError(f"{record.path}: image id {record.id} cannot be read ({err}).") from None
    return 1 if split.images else 3


class KeypointDataset(Dataset):
    """A validated keypoint split as top-down samples, one per instance.

    ``dataset[i]`` is ``(image float32 [C, H_in, W_in] in [0, 1], target, visible float32 [K])`` for instance ``i``:

    * ``output_type="heatmap"``: target float32 ``[K, h, w]`` Gaussians of ``sigma`` cells from
      :func:`loclab.ops.heatmaps.encode_heatmaps` in model-input coordinates (zero maps for keypoints that are not
      visible). Computed per sample on access: two 1-D Gaussians and an outer product cost microseconds.
    * ``output_type="regression"``: target float32 ``[2K]`` = ``[x0 / W_in, y0 / H_in, x1 / W_in, ...]``.
    * ``visible``: 1 for a labelled keypoint inside the crop, 0 for an unlabelled one or one that the crop (or its
      augmentation) leaves out; losses ignore the zeros.

    Args:
        split: the validated split (any format).
        output_type, sigma: as above.
        heatmap_size: the heatmap side (square inputs) or ``(w, h)``; a non-square input needs the pair.
        input_size: ``(W_in, H_in)``; ``None``: the images' size when they all share one (the reference data).
        in_channels: 1 (decoded as grayscale) or 3 (RGB).
        box_padding: growth of instance boxes (whole-image boxes are never padded).
        augment: a :class:`loclab.config.AugmentConfig` (random scale of the crop, rotation, shift and colour
            jitter per sample, from torch's global generator) or ``None``; ``flip``: random mirror with the
            keypoints of each of ``symmetric_pairs`` swapped (``None``: the split's pairs). Without augmentation
            no random number is drawn.
        memory_budget: bytes of decoded pixels to hold in memory (see the module docstring).

    Attributes: ``split``, ``keypoints`` float32 ``[M, K, 2]`` and ``visible`` bool ``[M, K]`` (image pixels, the
    ground truth), ``boxes`` ``[M, 4]``, ``instance_image`` ``[M]``, ``image_ids`` (per instance),
    ``transforms`` float64 ``[M, 2, 3]`` (image -> input of the un-augmented crops), ``images`` uint8
    ``[M, C, H_in, W_in]`` (those crops, held when the dataset neither augments nor streams, else ``None``;
    :meth:`input_image` gives any of them), ``keypoint_names``, ``symmetric_pairs``, ``input_size``,
    ``streaming``.
    """

    def __init__(self, image_dir: Path | str, annotation_file: Path | str,
                 output_type: Literal["heatmap", "regression"] = "heatmap", heatmap_size: int = 64,
                 sigma: float = 2.0, *, skip_bad: bool = False, progress: bool = True, **options) -> None:
        split = load_keypoint_annotations(annotation_file, image_dir, skip_bad=skip_bad)
        self._setup(split, output_type, heatmap_size, sigma, progress=progress, **options)

    @classmethod
    def from_split(cls, split: KeypointSplit, output_type: Literal["heatmap", "regression"] = "heatmap",
                   heatmap_size: int | tuple[int, int] = 64, sigma: float = 2.0, *, progress: bool = True,
                   **options) -> KeypointDataset:
        """Build from an already loaded split (no second read of the annotation file); options as the class."""
        dataset = cls.__new__(cls)
        dataset._setup(split, output_type, heatmap_size, sigma, progress=progress, **options)
        return dataset

    def _setup(self, split: KeypointSplit, output_type: str, heatmap_size: int | tuple[int, int], sigma: float, *,
               progress: bool, input_size: tuple[int, int] | None = None, in_channels: int = 1,
               box_padding: float = 1.25, augment=None, flip: bool = False,
               symmetric_pairs: Sequence[tuple[int, int]] | None = None,
               memory_budget: int = DECODED_MEMORY_BUDGET) -> None:
        if output_type not in ("heatmap", "regression"):
            raise ConfigError(f"output_type must be 'heatmap' or 'regression', got {output_type!r}")
        map_w, map_h = (heatmap_size, heatmap_size) if isinstance(heatmap_size, int) else heatmap_size
        if min(map_w, map_h) <= 0 or sigma <= 0:
            raise ConfigError(f"heatmap_size and sigma must be positive, got {heatmap_size} and {sigma}")
        if in_channels not in (1, 3):
            raise ConfigError(f"in_channels must be 1 or 3, got {in_channels}")
        input_size = self._input_size(split, input_size)
        if isinstance(heatmap_size, int) and input_size[0] != input_size[1]:
            raise ConfigError(f"a {input_size[0]}x{input_size[1]} input needs heatmap_size as (width, height)")
        self.split, self.output_type, self.sigma = split, output_type, sigma
        self.heatmap_size, self.input_size, self.in_channels = heatmap_size, input_size, in_channels
        self.keypoint_names = split.keypoint_names
        self.symmetric_pairs = tuple(split.symmetric_pairs if symmetric_pairs is None else symmetric_pairs)
        self.keypoints, self.visible = split.keypoints.clone(), split.visible.clone()
        self.boxes, self.instance_image = split.boxes.clone(), split.instance_image.clone()
        self.image_ids = [split.images[int(i)].id for i in self.instance_image]
        self.box_padding, self.augment, self.flip = box_padding, augment, flip
        self.augmenting = flip or (augment is not None and augment.enabled)
        self._mode = "L" if in_channels == 1 else "RGB"
        # Square sizes go to encode_heatmaps as plain ints: the reference call, bit for bit.
        self._size_arg = input_size[0] if input_size[0] == input_size[1] else input_size
        self._map_arg = map_w if map_w == map_h else (map_w, map_h)
        self._flip_order = partner_order(split.num_keypoints, self.symmetric_pairs)
        self.transforms = torch.stack([self._transform(i) for i in range(len(self))]) if len(self) else \
            torch.zeros(0, 2, 3, dtype=torch.float64)
        self._identity = [is_identity(m) for m in self.transforms]
        self.images: Tensor | None = None
        self._pixels: dict[int, np.ndarray] | None = None
        self._reduced: dict[int, dict] = {}  # per held image: its box-averaged copies by factor (warp_image)
        used = sorted({int(i) for i in self.instance_image})
        channels = 1 if in_channels == 1 else 3
        if self.augmenting:
            need = sum(split.images[i].width * split.images[i].height * channels for i in used)
        else:
            need = len(self) * channels * input_size[0] * input_size[1]
        self.streaming = need > memory_budget
        if self.streaming:
            return
        if self.augmenting:
            self._pixels = {i: self._decode(i) for i in self._bar(used, progress)}
        else:
            self.images = self._crop_all(used, progress)

    @staticmethod
    def _input_size(split: KeypointSplit, input_size: tuple[int, int] | None) -> tuple[int, int]:
        if input_size is not None:
            return int(input_size[0]), int(input_size[1])
        sizes = {(r.width, r.height) for r in split.images}
        if len(sizes) != 1:
            raise ConfigError(f"{split.annotation_file}: images of {len(sizes)} sizes; pass input_size=(W, H)")
        return sizes.pop()

    def _bar(self, items: list[int], progress: bool):
        return tqdm(items, desc="decoding images", unit="img",
                    disable=not progress or len(items) < _PROGRESS_MIN_IMAGES)

    def _decode(self, image_index: int) -> np.ndarray:
        record = self.split.images[image_index]
        where = f"{record.path}: image id {record.id} of {self.split.annotation_file}"
        return decode_record(record.path, self._mode, where, (record.width, record.height))

    def _transform(self, index: int, **augment) -> Tensor:
        record = self.split.images[int(self.instance_image[index])]
        return instance_transform(self.boxes[index], record.width, record.height, self.input_size, self.box_padding,
                                  **augment)

    def _crop_all(self, used: list[int], progress: bool) -> Tensor:
        width, height = self.input_size
        out = np.empty((len(self), 1 if self._mode == "L" else 3, height, width), dtype=np.uint8)
        rows: dict[int, list[int]] = {}
        for row, image_index in enumerate(self.instance_image.tolist()):
            rows.setdefault(image_index, []).append(row)
        for image_index in self._bar(used, progress):
            pixels = self._decode(image_index)  # once per image, however many instances it holds
            for row in rows[image_index]:
                crop = warp_image(pixels, self.transforms[row], self.input_size)
                # Filled through numpy: torch's strided copy of a permuted uint8 view is ~20x slower.
                out[row] = crop.reshape(height, width, -1).transpose(2, 0, 1)
        return torch.from_numpy(out)

    @property
    def num_workers(self) -> int:
        """DataLoader workers the training loop should use: decoding in parallel only pays when streaming."""
        return min(4, os.cpu_count() or 1) if self.streaming else 0

    def __len__(self) -> int:
        return int(self.keypoints.shape[0])

    def input_image(self, index: int) -> Tensor:
        """The un-augmented crop of instance ``index``, uint8 ``[C, H_in, W_in]``."""
        if self.images is not None:
            return self.images[index]
        pixels = self._source(int(self.instance_image[index]))
        return to_chw(warp_image(pixels, self.transforms[index], self.input_size))

    def _source(self, image_index: int) -> np.ndarray:
        if self._pixels is not None:
            return self._pixels[image_index]
        return self._decode(image_index)

    def _random_crop(self, index: int) -> tuple[Tensor, Tensor, bool]:
        """A random crop of instance ``index``: ``(uint8 image [C, H_in, W_in], transform [2, 3], flipped)``."""
        aug, draws = self.augment, {}
        if aug is not None and aug.enabled:
            low, high = aug.scale
            if low != high:
                draws["scale"] = low + (high - low) * float(torch.rand(()))
            elif low != 1.0:
                draws["scale"] = low
            if aug.rotation:
                draws["rotation_deg"] = aug.rotation * (2 * float(torch.rand(())) - 1)
            if aug.translate:
                shift = aug.translate * (2 * torch.rand(2) - 1)
                draws["shift"] = (float(shift[0]), float(shift[1]))
        flipped = self.flip and bool(torch.rand(()) < 0.5)
        m = self._transform(index, flip=flipped, **draws)
        image_index = int(self.instance_image[index])
        cache = self._reduced.setdefault(image_index, {}) if self._pixels is not None else None
        return to_chw(warp_image(self._source(image_index), m, self.input_size, reduced=cache)), m, flipped

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, Tensor]:
        if self.augmenting:
            crop, m, flipped = self._random_crop(index)
            image = crop.float() / 255
            if self.augment is not None:
                image = colour_jitter(image[None], brightness=self.augment.brightness,
                                      contrast=self.augment.contrast, saturation=self.augment.saturation)[0]
        else:
            image, m, flipped = self.input_image(index).float() / 255, self.transforms[index], False
        keypoints = self.keypoints[index] if self._identity[index] and not self.augmenting else \
            apply_affine(self.keypoints[index], m)
        visible = self.visible[index]
        if flipped:  # mirrored, a left keypoint is where the right one was: swap each pair's labels
            keypoints, visible = keypoints[self._flip_order], visible[self._flip_order]
        width, height = self.input_size
        inside = (keypoints[:, 0] >= -0.5) & (keypoints[:, 0] <= width - 0.5) & \
                 (keypoints[:, 1] >= -0.5) & (keypoints[:, 1] <= height - 0.5)
        visible = visible & inside
        weights = visible.float()
        if self.output_type == "regression":
            scale = width if width == height else torch.tensor([width, height], dtype=keypoints.dtype)
            return image, (keypoints / scale).flatten(), weights
        heatmaps = encode_heatmaps(keypoints, self._size_arg, self._map_arg, self.sigma)
        if not bool(visible.all()):
            heatmaps = heatmaps * weights[:, None, None]  # nothing to find where nothing is labelled
        return image, heatmaps, weights
