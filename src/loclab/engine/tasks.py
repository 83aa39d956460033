"""Train a task from a dataset root: read and validate both splits first, then train.

Every annotation problem is raised here, before the first epoch, never from inside a DataLoader.
"""

from __future__ import annotations

from pathlib import Path

from loclab.config import DetectorConfig, KeypointConfig
from loclab.data.errors import DataError
from loclab.data.formats_detection import DetectionSplit
from loclab.data.formats_keypoints import KeypointSplit
from loclab.data.layouts import load_detection_split, load_keypoint_split


def _require_dataset(data_root: Path, folder: str, split: str, generator: str, others: str) -> None:
    """A DataError saying how to make a dataset when ``data_root`` is missing or empty (anything else is
    for :func:`~loclab.data.layouts.detect_layout` to recognise or explain)."""
    root = Path(data_root)
    if not root.is_dir() or not any(root.iterdir()):
        raise DataError(f"{root / folder / f'{split}_annotations.json'}: not found. Expected a dataset root with "
                        f"{folder}/{split}_annotations.json (create one with `loclab generate {generator} --out "
                        f"{data_root}`) or {others}")


def data_options(run_config: dict) -> dict:
    """How a run read its data (``data_format``, ``skip_bad``, from its ``config.json``), to read it the same way
    when the run is evaluated or drawn."""
    return {"data_format": run_config.get("data_format", "auto"), "skip_bad": bool(run_config.get("skip_bad", False))}


def detection_split(data_root: Path, split: str, *, skip_bad: bool = False,
                    data_format: str = "auto") -> DetectionSplit:
    """The ``split`` of the detection dataset at ``data_root`` in any layout loclab reads (reference, COCO, Pascal
    VOC, YOLO; ``data_format`` forces one): :func:`loclab.data.layouts.load_detection_split`."""
    _require_dataset(data_root, "detection", split, "shapes", "a COCO, Pascal VOC or YOLO dataset folder")
    return load_detection_split(data_root, split, format=data_format, skip_bad=skip_bad)


def keypoint_split(data_root: Path, split: str, *, skip_bad: bool = False,
                   data_format: str = "auto") -> KeypointSplit:
    """The ``split`` of the keypoint dataset at ``data_root`` (reference, COCO keypoints or DeepLabCut;
    ``data_format`` forces one): :func:`loclab.data.layouts.load_keypoint_split`."""
    _require_dataset(data_root, "keypoints", split, "figures", "a COCO keypoints or DeepLabCut project folder")
    return load_keypoint_split(data_root, split, format=data_format, skip_bad=skip_bad)


def train_detector_on_root(cfg: DetectorConfig, data_root: Path, run_dir: Path, *, recipe: str = "fast",
                           resume: bool = False, skip_bad: bool = False, progress: bool = True,
                           autoanchor: bool = False, data_format: str = "auto") -> list[dict]:
    """Read both splits, take the classes from the data, check (or with ``autoanchor`` refit) the anchors, train."""
    from loclab.engine.detection import config_for_data, train_detector

    train = detection_split(data_root, "train", skip_bad=skip_bad, data_format=data_format)
    val = detection_split(data_root, "val", skip_bad=skip_bad, data_format=data_format)
    cfg = config_for_data(cfg, train, autoanchor=autoanchor)
    meta = {"data_root": str(Path(data_root).resolve()), "recipe": recipe, "data_format": data_format,
            "skip_bad": skip_bad}
    return train_detector(cfg, train, val, run_dir, resume=resume, progress=progress, meta=meta)


def train_keypoints_on_root(cfg: KeypointConfig, data_root: Path, run_dir: Path, *, recipe: str = "fast",
                            resume: bool = False, skip_bad: bool = False, progress: bool = True,
                            data_format: str = "auto") -> list[dict]:
    from loclab.engine.keypoints import train_keypoints

    train = keypoint_split(data_root, "train", skip_bad=skip_bad, data_format=data_format)
    val = keypoint_split(data_root, "val", skip_bad=skip_bad, data_format=data_format)
    meta = {"data_root": str(Path(data_root).resolve()), "recipe": recipe, "data_format": data_format,
            "skip_bad": skip_bad}
    return train_keypoints(cfg, train, val, run_dir, resume=resume, progress=progress, meta=meta)
