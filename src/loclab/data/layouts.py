"""Which dataset layout a folder holds, and reading its splits into loclab's records.

Users point ``--data-root DIR`` at their dataset as it is. :func:`detect_layout` recognises, in this order:

==============  ==========================================================================  ===================
name            what is looked for in DIR                                                   tasks
==============  ==========================================================================  ===================
``reference``   ``detection/{train,val}_annotations.json`` (``keypoints/...`` for keypoints)   detection, keypoints
``coco``        ``annotations/instances_{train,val}*.json`` (``person_keypoints_...``), or   detection, keypoints
                Roboflow's ``{train,valid}/_annotations.coco.json``
``voc``         ``Annotations/``, ``annotations/`` or ``annots/`` holding ``*.xml``           detection
``yolo``        ``data.yaml``                                                               detection
``deeplabcut``  ``config.yaml`` and ``labeled-data/*/CollectedData_*.csv``                  keypoints
==============  ==========================================================================  ===================

The first match wins and :class:`Layout` says what was found (and whether another layout matched too);
``format=`` forces one. :func:`load_detection_split` and :func:`load_keypoint_split` then read a split with the
layout's reader (:mod:`~loclab.data.formats_detection`, :mod:`~loclab.data.coco_layout`, :mod:`~loclab.data.voc`,
:mod:`~loclab.data.yolo`, :mod:`~loclab.data.formats_keypoints`, :mod:`~loclab.data.deeplabcut`) into the same
:class:`DetectionSplit` / :class:`KeypointSplit` whatever the layout: boxes xyxy float32 in original image pixels,
labels ``0..C-1``, and the layout's reason at the start of ``format_reason``. Nothing above these loaders needs to
know which layout the data came from.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from loclab.data.coco_layout import COCO_LOOKS_FOR, find_coco, image_dir_of, load_coco_detection_split, unify_categories
from loclab.data.deeplabcut import load_deeplabcut_split
from loclab.data.errors import DataError
from loclab.data.formats_detection import DetectionSplit, load_detection_annotations
from loclab.data.formats_keypoints import KeypointSplit, load_keypoint_annotations
from loclab.data.voc import VOC_LOOKS_FOR, find_voc, load_voc_split
from loclab.data.yolo import YOLO_LOOKS_FOR, find_yolo, load_yolo_split

__all__ = ["DETECTION_LAYOUTS", "KEYPOINT_LAYOUTS", "LAYOUTS", "Layout", "detect_layout", "find_layout",
           "load_detection_split", "load_keypoint_split"]

logger = logging.getLogger(__name__)

Task = Literal["detection", "keypoints"]
Split = Literal["train", "val"]
DETECTION_LAYOUTS = ("reference", "coco", "voc", "yolo")
KEYPOINT_LAYOUTS = ("reference", "coco", "deeplabcut")
_LAYOUTS = {"detection": DETECTION_LAYOUTS, "keypoints": KEYPOINT_LAYOUTS}
LAYOUTS = ("auto", *dict.fromkeys(DETECTION_LAYOUTS + KEYPOINT_LAYOUTS))  # every value ``format=`` accepts
_SHOWN_ENTRIES = 12  # how much of a folder's listing an error message shows


@dataclass(frozen=True)
class Layout:
    """A recognised dataset layout: ``name`` (one of ``reference``, ``coco``, ``voc``, ``yolo``, ``deeplabcut``)
    and ``reason``, one sentence saying what was found, e.g. ``"VOC layout: 164 XML files in annots/, images in
    images/; no ImageSets split, so every 5th image (by file name) is val"``."""

    name: str
    reason: str


def detect_layout(root: Path | str, task: Task, format: str = "auto") -> Layout:
    """The layout of the dataset folder ``root`` for ``task`` (see the module docstring for what each needs).

    ``format="auto"`` takes the first layout that matches; a layout name checks that one only. Raises
    :class:`DataError`: when ``root`` is not a folder; when nothing matches (listing the layouts looked for and
    what the folder contains); when a forced layout does not match (saying what is missing) or is not one of the
    task's; when a layout's files are there but unusable (a malformed ``data.yaml``, only a train file, ...).
    Raises ``ValueError`` for a ``format`` that is no layout at all.
    """
    return _detect(Path(root), task, format)[0]


def find_layout(root: Path | str, task: Task) -> Layout | None:
    """:func:`detect_layout` for a folder that may hold only one of the tasks: ``None`` when no layout of ``task``
    matches at all (a Pascal VOC folder has no keypoint layout). Raises :class:`DataError` as :func:`detect_layout`
    does when a layout's files are there but unusable, and when ``root`` is no folder."""
    root = Path(root)
    if root.is_dir() and not any(_matches(name, root, task) for name in _LAYOUTS[task]):
        return None
    return detect_layout(root, task)


def load_detection_split(
    root: Path | str, split: Split, *, format: str = "auto", skip_bad: bool = False
) -> DetectionSplit:
    """Read the ``split`` (``"train"`` or ``"val"``) of the detection dataset at ``root``, whatever its layout.

    Returns a :class:`DetectionSplit`: boxes xyxy float32 in original (EXIF-oriented) image pixels; labels
    ``0..C-1`` by sorted category id (VOC: sorted class name), the same mapping for train and val;
    ``categories {label: name}``; ``format`` the annotation format and ``format_reason`` starting with the layout's
    reason. Raises :class:`DataError` as :func:`detect_layout` and the layout's reader do; ``skip_bad=True`` drops
    bad records with one warning instead (file-level problems still raise).
    """
    root = Path(root)
    _check_split(split)
    layout, found = _detect(root, "detection", format)
    logger.info("%s: %s", root, layout.reason)
    if layout.name == "coco":
        return load_coco_detection_split(root, split, skip_bad=skip_bad, layout=found)
    if layout.name == "voc":
        return load_voc_split(root, split, skip_bad=skip_bad, layout=found)
    if layout.name == "yolo":
        return load_yolo_split(root, split, skip_bad=skip_bad, layout=found)
    folder = root / "detection"
    loaded = load_detection_annotations(folder / f"{split}_annotations.json", folder / split, skip_bad=skip_bad)
    loaded = unify_categories(loaded, folder / f"{_other(split)}_annotations.json")
    return replace(loaded, format_reason=f"{layout.reason}; {loaded.format_reason}")


def load_keypoint_split(
    root: Path | str, split: Split, *, format: str = "auto", skip_bad: bool = False
) -> KeypointSplit:
    """Read the ``split`` of the keypoint dataset at ``root``: the reference layout, COCO keypoints
    (``person_keypoints_*.json``) or a DeepLabCut project. ``format_reason`` starts with the layout's reason.
    Raises :class:`DataError` as :func:`detect_layout` and the layout's reader do."""
    root = Path(root)
    _check_split(split)
    layout, found = _detect(root, "keypoints", format)
    logger.info("%s: %s", root, layout.reason)
    if layout.name == "deeplabcut":
        loaded = load_deeplabcut_split(root, split, skip_bad=skip_bad)
    elif layout.name == "coco":
        loaded = load_keypoint_annotations(found.files[split], image_dir_of(found, split), skip_bad=skip_bad)
    else:
        folder = root / "keypoints"
        loaded = load_keypoint_annotations(folder / f"{split}_annotations.json", folder / split, skip_bad=skip_bad)
    reason = f"{layout.reason}; {loaded.format_reason}" if loaded.format_reason else layout.reason
    return replace(loaded, format_reason=reason)


def _check_split(split: str) -> None:
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")


def _other(split: str) -> str:
    return "val" if split == "train" else "train"


def _detect(root: Path, task: Task, format: str) -> tuple[Layout, Any]:
    """``(layout, the finder's result for its loader)``; see :func:`detect_layout`."""
    if task not in _LAYOUTS:
        raise ValueError(f"task must be 'detection' or 'keypoints', got {task!r}")
    names = _LAYOUTS[task]
    if format not in LAYOUTS:
        raise ValueError(f"format must be one of {', '.join(LAYOUTS)}, got {format!r}")
    if not root.is_dir():
        raise DataError(f"{root}: {'is not a folder' if root.exists() else 'does not exist'}; expected a dataset "
                        "folder.")
    if format != "auto":
        if format not in names:
            raise DataError(f"{root}: format '{format}' is not a {task} layout; {task} layouts are "
                            f"{', '.join(names)}.")
        found = _probe(format, root, task)
        if found is None:
            raise DataError(f"{root}: format '{format}' was given, but the folder has no {_looks_for(format, task)}.")
        return Layout(format, found[0]), found[1]
    for i, name in enumerate(names):
        found = _probe(name, root, task)
        if found is None:
            continue
        also = [other for other in names[i + 1:] if _matches(other, root, task)]
        note = f" (it also looks like a {' and '.join(also)} dataset; pass format= to choose)" if also else ""
        return Layout(name, found[0] + note), found[1]
    looked = "; ".join(f"{name}: {_looks_for(name, task)}" for name in names)
    raise DataError(f"{root}: no {task} dataset layout found. Looked for {looked}. The folder contains "
                    f"{_listing(root)}.")


def _probe(name: str, root: Path, task: Task) -> tuple[str, Any] | None:
    """``(reason, finder result)`` when ``root`` has layout ``name``, None when it has not; :class:`DataError`
    when its files are there but unusable."""
    if name == "reference":
        folder = root / ("detection" if task == "detection" else "keypoints")
        splits = [s for s in ("train", "val") if (folder / f"{s}_annotations.json").is_file()]
        if not splits:
            return None
        files = " and ".join(f"{folder.name}/{s}_annotations.json" for s in splits)
        return f"reference layout: {files}, images in {' and '.join(f'{folder.name}/{s}/' for s in splits)}", folder
    if name == "coco":
        found = find_coco(root, task)
    elif name == "voc":
        found = find_voc(root)
    elif name == "yolo":
        found = find_yolo(root)
    else:
        return _probe_deeplabcut(root)
    return None if found is None else (found.reason, found)


def _probe_deeplabcut(root: Path) -> tuple[str, Any] | None:
    csvs = sorted(root.glob("labeled-data/*/CollectedData_*.csv"))
    if not (root / "config.yaml").is_file() or not csvs:
        return None
    folders = len({c.parent for c in csvs})
    split = "split.json" if (root / "split.json").is_file() else "every 5th labelled frame is val"
    return (f"DeepLabCut layout: config.yaml and {len(csvs)} CollectedData_*.csv file(s) in {folders} "
            f"labeled-data/ folder(s); split: {split}"), root


def _matches(name: str, root: Path, task: Task) -> bool:
    try:
        return _probe(name, root, task) is not None
    except DataError:  # its files are there, if unusable: still worth mentioning
        return True


def _looks_for(name: str, task: Task) -> str:
    sub = "detection" if task == "detection" else "keypoints"
    return {
        "reference": (f"{sub}/train_annotations.json and {sub}/val_annotations.json (loclab reference, as "
                      f"`loclab generate {'shapes' if task == 'detection' else 'figures'}` writes)"),
        "coco": COCO_LOOKS_FOR.format(prefix="instances" if task == "detection" else "person_keypoints"),
        "voc": VOC_LOOKS_FOR,
        "yolo": YOLO_LOOKS_FOR,
        "deeplabcut": "config.yaml and labeled-data/*/CollectedData_*.csv (DeepLabCut project)",
    }[name]


def _listing(root: Path) -> str:
    """What a folder holds, for messages: ``"annots/, images/, notes.txt"``, cut after a dozen entries."""
    entries = sorted(root.iterdir(), key=lambda p: (not p.is_dir(), p.name))
    if not entries:
        return "nothing (it is empty)"
    shown = [f"{p.name}/" if p.is_dir() else p.name for p in entries[:_SHOWN_ENTRIES]]
    more = f" and {len(entries) - _SHOWN_ENTRIES} more" if len(entries) > _SHOWN_ENTRIES else ""
    return ", ".join(shown) + more
