"""Train a task from a dataset root: read and validate both splits first, then train.

Every annotation problem is raised here, before the first epoch, never from inside a DataLoader.
"""

from __future__ import annotations

from pathlib import Path

from loclab.config import DetectorConfig, KeypointConfig
from loclab.data.errors import DataError
from loclab.data.formats_detection import DetectionSplit, load_detection_annotations
from loclab.data.formats_keypoints import KeypointSplit, load_keypoint_annotations


def _split_files(data_root: Path, folder: str, split: str, generator: str) -> tuple[Path, Path]:
    """``(annotation file, image dir)`` of ``data_root/<folder>/<split>``, or a DataError saying how to make it."""
    annotations = Path(data_root) / folder / f"{split}_annotations.json"
    if not annotations.is_file():
        raise DataError(f"{annotations}: not found. Expected a dataset root with {folder}/{split}_annotations.json "
                        f"(create one with `loclab generate {generator} --out {data_root}`)")
    return annotations, annotations.parent / split


def detection_split(data_root: Path, split: str, *, skip_bad: bool = False) -> DetectionSplit:
    """``data_root/detection/{split}_annotations.json`` with images in ``data_root/detection/{split}/``."""
    return load_detection_annotations(*_split_files(data_root, "detection", split, "shapes"), skip_bad=skip_bad)


def keypoint_split(data_root: Path, split: str, *, skip_bad: bool = False) -> KeypointSplit:
    """``data_root/keypoints/{split}_annotations.json`` with images in ``data_root/keypoints/{split}/``."""
    return load_keypoint_annotations(*_split_files(data_root, "keypoints", split, "figures"), skip_bad=skip_bad)


def train_detector_on_root(cfg: DetectorConfig, data_root: Path, run_dir: Path, *, recipe: str = "fast",
                           resume: bool = False, skip_bad: bool = False, progress: bool = True) -> list[dict]:
    from loclab.engine.detection import train_detector

    train, val = detection_split(data_root, "train", skip_bad=skip_bad), detection_split(data_root, "val", skip_bad=skip_bad)
    meta = {"data_root": str(Path(data_root).resolve()), "recipe": recipe}
    return train_detector(cfg, train, val, run_dir, resume=resume, progress=progress, meta=meta)


def train_keypoints_on_root(cfg: KeypointConfig, data_root: Path, run_dir: Path, *, recipe: str = "fast",
                            resume: bool = False, skip_bad: bool = False, progress: bool = True) -> list[dict]:
    from loclab.engine.keypoints import train_keypoints

    train, val = keypoint_split(data_root, "train", skip_bad=skip_bad), keypoint_split(data_root, "val", skip_bad=skip_bad)
    meta = {"data_root": str(Path(data_root).resolve()), "recipe": recipe}
    return train_keypoints(cfg, train, val, run_dir, resume=resume, progress=progress, meta=meta)
