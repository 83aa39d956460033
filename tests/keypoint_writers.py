"""Synthetic keypoint datasets for reader tests, written as COCO keypoints and as a DeepLabCut project.

One in-memory description (:func:`make_keypoint_dataset`) is written in both formats, so a test can check that each
reader gives back exactly what was written:

* K = 7 keypoints (:data:`NAMES`) with two left/right pairs in two spellings (``left_ear``/``right_ear``,
  ``l_paw``/``r_paw``), about one point in five not labelled (at least two labelled per instance);
* two instances per image, non-square images of several sizes (:data:`SIZES`);
* each labelled keypoint drawn as a small disc in its own colour on a dark, slightly noisy background, so a model
  could learn them; unlabelled points are not drawn (think occluded);
* coordinates are multiples of 0.25 px, exact in float32 and in decimal text, so round trips compare exactly.

:func:`write_coco_keypoints` writes ``ROOT/annotations/person_keypoints_{train,val}.json`` + ``ROOT/images/``,
adding one crowd annotation and one annotation without labelled keypoints per split (the reader drops both, as
real COCO files need). :func:`write_deeplabcut` writes ``ROOT/config.yaml`` + ``ROOT/labeled-data/<video>/``
with a ``CollectedData_<scorer>.csv`` per video; DeepLabCut labels frames, not instances, so a frame gets the first
instance of its image, and only that instance is drawn.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from PIL import Image, ImageDraw

NAMES = ("nose", "left_ear", "right_ear", "l_paw", "r_paw", "tail_base", "tail_tip")
PAIRS = ((1, 2), (3, 4))
SIZES = ((96, 72), (80, 100), (72, 72), (112, 84))  # (width, height), used in turn
COLOURS = ((255, 64, 64), (64, 255, 64), (64, 64, 255), (255, 255, 64), (255, 64, 255), (64, 255, 255),
           (255, 160, 32))
DOT_RADIUS = 2
UNLABELLED_RATE = 0.2
CATEGORY_ID = 1

Point = tuple[float, float]


@dataclass(frozen=True)
class SyntheticInstance:
    """One animal: ``points`` in :data:`NAMES` order, ``None`` = not labelled; ``bbox`` COCO ``[x, y, w, h]`` or
    ``None`` (the COCO file then has no ``bbox`` and the reader derives the box from the keypoints)."""

    points: tuple[Point | None, ...]
    bbox: tuple[float, float, float, float] | None


@dataclass(frozen=True)
class SyntheticImage:
    id: int
    file_name: str
    width: int
    height: int
    instances: tuple[SyntheticInstance, ...]


@dataclass(frozen=True)
class SyntheticKeypoints:
    """The description both writers write: ``names`` and the images of each split (ids global, train first)."""

    names: tuple[str, ...]
    train: tuple[SyntheticImage, ...]
    val: tuple[SyntheticImage, ...]

    def split(self, name: str) -> tuple[SyntheticImage, ...]:
        return {"train": self.train, "val": self.val}[name]

    @property
    def images(self) -> tuple[SyntheticImage, ...]:
        return self.train + self.val


def make_keypoint_dataset(seed: int, n_train: int, n_val: int, instances_per_image: int = 2) -> SyntheticKeypoints:
    """A seeded description: ``n_train + n_val`` images, ids ``0..``, file names ``img0000.png``, ..."""
    rng = np.random.default_rng(seed)
    images = []
    for image_id in range(n_train + n_val):
        width, height = SIZES[image_id % len(SIZES)]
        instances = tuple(_instance(rng, width, height, i, instances_per_image) for i in range(instances_per_image))
        images.append(SyntheticImage(image_id, f"img{image_id:04d}.png", width, height, instances))
    return SyntheticKeypoints(NAMES, tuple(images[:n_train]), tuple(images[n_train:]))


def _instance(rng: np.random.Generator, width: int, height: int, index: int, count: int) -> SyntheticInstance:
    # Each instance keeps to its own vertical band of the image, so instances rarely overlap.
    band = width / count
    low, high = index * band + 2, (index + 1) * band - 3
    xs = rng.integers(int(low) * 4, int(high) * 4, size=len(NAMES)) / 4
    ys = rng.integers(2 * 4, (height - 3) * 4, size=len(NAMES)) / 4
    labelled = rng.random(len(NAMES)) >= UNLABELLED_RATE
    labelled[rng.choice(len(NAMES), size=2, replace=False)] = True
    points = tuple((float(x), float(y)) if keep else None for x, y, keep in zip(xs, ys, labelled))
    bbox = None
    if index % 2 == 0:  # every other instance has a COCO bbox: a margin around all of its points, inside the image
        x1, y1 = max(float(xs.min()) - 2, 0.0), max(float(ys.min()) - 2, 0.0)
        x2, y2 = min(float(xs.max()) + 3, float(width)), min(float(ys.max()) + 3, float(height))
        bbox = (x1, y1, x2 - x1, y2 - y1)
    return SyntheticInstance(points, bbox)


def render(image: SyntheticImage, instances: Sequence[SyntheticInstance], seed: int = 0) -> Image.Image:
    """The RGB picture of ``image`` with the labelled keypoints of ``instances`` drawn as discs."""
    rng = np.random.default_rng(seed + image.id)
    background = rng.integers(20, 45, size=(image.height, image.width, 3), dtype=np.uint8)
    picture = Image.fromarray(background, "RGB")
    draw = ImageDraw.Draw(picture)
    for instance in instances:
        for k, point in enumerate(instance.points):
            if point is not None:
                x, y = point
                draw.ellipse([x - DOT_RADIUS, y - DOT_RADIUS, x + DOT_RADIUS, y + DOT_RADIUS], fill=COLOURS[k])
    return picture


def write_coco_keypoints(ds: SyntheticKeypoints, root: Path, *, with_dropped: bool = True) -> dict[str, Path]:
    """Write ``root/images/*.png`` and ``root/annotations/person_keypoints_{split}.json``; returns the files by split.

    Annotation ids count up from 1 over both splits. ``with_dropped`` adds, to the first image of each split, a
    crowd annotation and one with every keypoint ``v = 0`` (``num_keypoints: 0``).
    """
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    files, next_id = {}, 1
    for split in ("train", "val"):
        images, annotations = [], []
        for image in ds.split(split):
            render(image, image.instances).save(root / "images" / image.file_name)
            images.append({"id": image.id, "file_name": image.file_name, "width": image.width, "height": image.height})
            for instance in image.instances:
                annotations.append(_coco_annotation(next_id, image.id, instance))
                next_id += 1
        if with_dropped and images:
            first = images[0]["id"]
            zeros = [0] * (3 * len(ds.names))
            annotations.append({"id": next_id, "image_id": first, "category_id": CATEGORY_ID, "iscrowd": 1,
                                "keypoints": zeros, "num_keypoints": 0, "bbox": [0, 0, 20, 20], "area": 400,
                                "segmentation": {"counts": [0, 400], "size": [20, 20]}})
            annotations.append({"id": next_id + 1, "image_id": first, "category_id": CATEGORY_ID, "iscrowd": 0,
                                "keypoints": zeros, "num_keypoints": 0, "bbox": [1, 1, 8, 8], "area": 64})
            next_id += 2
        skeleton = [[1, 2], [1, 3], [1, 6], [6, 4], [6, 5], [6, 7]]  # 1-based, as COCO writes it
        document = {"images": images, "annotations": annotations,
                    "categories": [{"id": CATEGORY_ID, "name": "animal", "supercategory": "animal",
                                    "keypoints": list(ds.names), "skeleton": skeleton}]}
        files[split] = root / "annotations" / f"person_keypoints_{split}.json"
        files[split].write_text(json.dumps(document))
    return files


def _coco_annotation(ann_id: int, image_id: int, instance: SyntheticInstance) -> dict:
    flat: list[float] = []
    for point in instance.points:
        flat += [point[0], point[1], 2] if point is not None else [0, 0, 0]
    annotation = {"id": ann_id, "image_id": image_id, "category_id": CATEGORY_ID, "iscrowd": 0, "keypoints": flat,
                  "num_keypoints": sum(p is not None for p in instance.points)}
    if instance.bbox is not None:
        annotation["bbox"] = list(instance.bbox)
        annotation["area"] = instance.bbox[2] * instance.bbox[3]
    return annotation


def deeplabcut_path(ds: SyntheticKeypoints, image: SyntheticImage, videos: int = 1) -> str:
    """The project-relative path :func:`write_deeplabcut` gives ``image``'s frame: ``labeled-data/vidV/<file>``."""
    return f"labeled-data/vid{image.id % videos}/{image.file_name}"


def write_deeplabcut(
    ds: SyntheticKeypoints,
    root: Path,
    *,
    scorer: str = "me",
    videos: int = 1,
    index_columns: int = 1,
    split_file: bool = False,
) -> dict[int, str]:
    """Write a single-animal DeepLabCut project of every image of ``ds`` (train and val); returns image id -> path.

    Frames go to ``videos`` folders by ``id % videos`` (:func:`deeplabcut_path`), each with a
    ``CollectedData_<scorer>.csv`` (rows in path order; ``index_columns`` 1 = one path cell, 3 = ``labeled-data,
    video, file`` as newer DeepLabCut writes) and a stand-in ``.h5`` that the reader must ignore. ``split_file``
    writes ``root/split.json`` with the train/val split of ``ds``; without it the reader's default rule decides.
    """
    root = Path(root)
    paths = {image.id: deeplabcut_path(ds, image, videos) for image in ds.images}
    config = {"Task": "reaching", "scorer": scorer, "date": "Jan1", "multianimalproject": False,
              "identity": None, "project_path": str(root), "video_sets": {f"videos/vid{v}.avi": {"crop": "0, 96, 0, 72"}
                                                                         for v in range(videos)},
              "bodyparts": list(ds.names), "start": 0, "stop": 1, "numframes2pick": 20,
              "skeleton": [["nose", "tail_base"]], "TrainingFraction": [0.95]}
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    for video in range(videos):
        folder = root / "labeled-data" / f"vid{video}"
        folder.mkdir(parents=True, exist_ok=True)
        frames = sorted((img for img in ds.images if img.id % videos == video), key=lambda img: paths[img.id])
        for image in frames:
            render(image, image.instances[:1]).save(root / paths[image.id])
        pad = [""] * (index_columns - 1)
        header = [["scorer", *pad] + [scorer] * (2 * len(ds.names)),
                  ["bodyparts", *pad] + [name for name in ds.names for _ in "xy"],
                  ["coords", *pad] + ["x", "y"] * len(ds.names)]
        rows = []
        for image in frames:
            index = [paths[image.id]] if index_columns == 1 else paths[image.id].split("/")
            cells = [str(c) if p is not None else "" for p in image.instances[0].points for c in (p or (0, 0))]
            rows.append(index + cells)
        with (folder / f"CollectedData_{scorer}.csv").open("w", newline="") as handle:
            csv.writer(handle).writerows(header + rows)
        (folder / f"CollectedData_{scorer}.h5").write_bytes(b"\x89HDF\r\n\x1a\n not read by loclab")
    if split_file:
        (root / "split.json").write_text(json.dumps({split: [paths[img.id] for img in ds.split(split)]
                                                     for split in ("train", "val")}))
    return paths
