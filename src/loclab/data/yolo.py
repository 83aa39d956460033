"""Ultralytics YOLO detection datasets: ``data.yaml`` plus one label text file per image.

``DIR/data.yaml`` (also ``data.yml``, ``dataset.yaml``)::

    path: .               # optional dataset root; relative to the yaml's folder
    train: images/train   # a folder of images (searched recursively), a .txt listing image paths, or a list of these
    val: images/val       # ("validation" is read as "val")
    names: [cat, dog]     # or {0: cat, 1: dog}; nc: 2 may be given too (and must agree), or alone (class_0, ...)

Entries resolve against ``path`` (or the yaml's folder); an entry starting with ``../`` that does not exist
there is also tried without it, as Ultralytics does (Roboflow exports write ``train: ../train/images``). Paths in
a .txt list are relative to the list's folder. A ``path`` that does not exist (a yaml copied from another
machine) falls back to the yaml's folder, and the layout's reason says so.

**Labels.** The label of ``.../images/.../x.jpg`` is ``.../labels/.../x.txt`` (the last ``images`` path component
replaced by ``labels``; an image outside any ``images`` folder has its label beside it). One object per line,
``class cx cy w h`` normalised to ``[0, 1]`` by the image's displayed (EXIF-oriented) size. A missing or empty
label file is an image without objects; a split where no image has a label file at all is refused (the labels are
almost surely elsewhere). Segmentation lines (``class x1 y1 x2 y2 x3 y3 ...``) give their polygon's bounding
box; pose lines (``data.yaml`` has ``kpt_shape: [K, D]``) are read for their box, ``5 + K*D`` values.

Boxes become xyxy pixels ``(cx - w/2) * W`` etc. Coordinates up to 1e-3 outside ``[0, 1]`` are clipped (label
tools round); further out, ``w <= 0``, a class outside ``0..nc-1``, a wrong number of values or a non-number are
bad records named by label file and line. ``categories`` is ``{i: names[i]}``, ``category_ids`` ``0..nc-1``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from loclab.data.errors import DataError, ProblemLog, RecordError
from loclab.data.formats import ImageRecord, check_image_file, read_yaml_file
from loclab.data.formats_detection import DetectionSplit
from loclab.data.images import IMAGE_EXTENSIONS, ImageReadError, image_size

__all__ = ["YAML_NAMES", "YOLO_LOOKS_FOR", "YoloLayout", "find_yolo", "label_path", "load_yolo_split"]

YAML_NAMES = ("data.yaml", "data.yml", "dataset.yaml")
YOLO_LOOKS_FOR = "data.yaml (Ultralytics YOLO) with train, val and names"
TOLERANCE = 1e-3  # normalised coordinates this far outside [0, 1] are clipped, further is an error


@dataclass(frozen=True)
class YoloLayout:
    """A parsed ``data.yaml``: ``base`` is the folder its entries resolve against, ``entries`` the raw
    ``train``/``val`` values (each a list of strings), ``kpt_fields`` the ``K*D`` keypoint values after the box
    on each line of a pose dataset (0 otherwise)."""

    yaml_file: Path
    base: Path
    entries: dict[str, tuple[str, ...]]
    names: tuple[str, ...]
    kpt_fields: int
    reason: str


def find_yolo(root: Path | str) -> YoloLayout | None:
    """The YOLO layout of ``root``, or None if it has no ``data.yaml``. Raises :class:`DataError` naming the yaml
    when it is there but malformed: not YAML, not a mapping, no ``train``/``val``, bad ``names``/``nc``."""
    root = Path(root)
    file = next((root / n for n in YAML_NAMES if (root / n).is_file()), None)
    if file is None:
        return None
    data = _read_yaml(file)
    entries = {}
    for split, keys in (("train", ("train",)), ("val", ("val", "validation"))):
        key = next((k for k in keys if data.get(k) not in (None, "", [])), None)
        if key is None:
            raise DataError(f"{file}: no \"{keys[0]}\" entry (found keys: {sorted(map(str, data))}); it should name "
                            f"the {split} images: a folder, a .txt list of image paths, or a list of these.")
        value = data[key]
        values = value if isinstance(value, list) else [value]
        if not all(isinstance(v, str) and v for v in values):
            raise DataError(f"{file}: \"{key}\" is {value!r}, expected a path or a list of paths.")
        entries[split] = tuple(values)
    names = _names(data, file)
    base, note = yaml_base(data, file)
    kpt_fields = _kpt_fields(data, file)
    shown = {s: ", ".join(v) for s, v in entries.items()}
    reason = (f"YOLO layout: {file.name} with {len(names)} classes, train from {shown['train']}, "
              f"val from {shown['val']}{note}")
    return YoloLayout(file, base, entries, tuple(names), kpt_fields, reason)


def yaml_base(data: dict[Any, Any], file: Path) -> tuple[Path, str]:
    """The folder a data.yaml's entries resolve against, and a note for the reason when ``path`` was unusable."""
    raw = data.get("path")
    if raw in (None, ""):
        return file.parent, ""
    path = Path(str(raw)).expanduser()
    path = path if path.is_absolute() else file.parent / path
    if path.is_dir():
        return path, ""
    return file.parent, f" (its path {raw} does not exist, so paths are read from {file.name}'s folder)"


def label_path(image: Path) -> Path:
    """The label file of an image: the last ``images`` path component replaced by ``labels``, suffix ``.txt``;
    beside the image when no component is ``images``."""
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):  # a directory component, never the file name itself
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts).with_suffix(".txt")
    return image.with_suffix(".txt")


def load_yolo_split(
    root: Path | str,
    split: Literal["train", "val"],
    *,
    skip_bad: bool = False,
    check_images: bool = True,
    layout: YoloLayout | None = None,
) -> DetectionSplit:
    """Read the ``split`` of the YOLO dataset at ``root`` into a :class:`DetectionSplit` (format ``"yolo"``).

    Images are sorted by path; image ids are their positions. Boxes are xyxy float32 pixels of the displayed
    image; labels are the class ids of the label files. Raises :class:`DataError` naming the label file and line
    (or the image) of the first bad record; ``skip_bad=True`` drops bad records with one warning and lists them in
    ``skipped``. A bad ``data.yaml``, a missing train/val folder or list, a split without images and a split
    without any label file raise regardless.
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    layout = layout or find_yolo(root)
    if layout is None:
        raise DataError(f"{root}: no YOLO dataset here (looked for {', '.join(YAML_NAMES)}).")
    log = ProblemLog(layout.yaml_file, skip_bad)
    listed = _split_images(layout, split, log)
    if not listed:
        raise DataError(f"{layout.yaml_file}: the {split} split ({', '.join(layout.entries[split])}) has no images.")
    labels_found = [label_path(path) for _, path in listed]
    if not any(p.is_file() for p in labels_found):
        raise DataError(f"{layout.yaml_file}: none of the {len(listed)} {split} images has a label file; for "
                        f"{listed[0][1]} it would be {labels_found[0]} (\"images\" replaced by \"labels\").")
    images, boxes, labels = [], [], []
    for (file_name, path), label_file in zip(listed, labels_found):
        try:
            record = _image_record(len(images), file_name, path, check_images)
        except RecordError as err:
            log.messages.append(f"{path}: {err}")  # named by the image file, not by data.yaml
            continue
        image_boxes, image_labels = _read_labels(label_file, record, layout, log)
        images.append(record)
        boxes.append(torch.tensor(image_boxes, dtype=torch.float32).reshape(-1, 4))
        labels.append(torch.tensor(image_labels, dtype=torch.int64))
    skipped = log.finish()
    counts = [len(b) for b in boxes]
    starts = [sum(counts[:i]) for i in range(len(counts))]
    return DetectionSplit(
        annotation_file=layout.yaml_file,
        image_dir=_image_dir(layout, split),
        images=tuple(images),
        boxes=tuple(boxes),
        labels=tuple(labels),
        annotation_ids=tuple(torch.arange(s, s + n, dtype=torch.int64) for s, n in zip(starts, counts)),
        visible_fraction=None,
        categories=dict(enumerate(layout.names)),
        category_ids=tuple(range(len(layout.names))),
        format="yolo",
        format_reason=layout.reason,
        skipped=skipped,
    )


def _read_yaml(file: Path) -> dict[Any, Any]:
    try:
        data = read_yaml_file(file)
    except OSError as err:
        raise DataError(f"{file}: cannot be read ({err.strerror or err}).") from None
    if not isinstance(data, dict):
        raise DataError(f"{file}: top level is {type(data).__name__ if data is not None else 'empty'}, expected a "
                        "mapping with train, val and names.")
    return data


def _names(data: dict[Any, Any], file: Path) -> list[str]:
    """Class names from ``names`` (list, or dict of ids ``0..nc-1``) and/or ``nc``."""
    raw, nc = data.get("names"), data.get("nc")
    if nc is not None and (isinstance(nc, bool) or not isinstance(nc, int) or nc < 1):
        raise DataError(f"{file}: nc is {nc!r}, expected a positive integer.")
    if raw is None:
        if nc is None:
            raise DataError(f"{file}: has neither names nor nc; it should list the class names.")
        return [f"class_{i}" for i in range(nc)]
    if isinstance(raw, list):
        names = [str(n) for n in raw]  # YAML may read a name like 1 or yes as a number or boolean
    elif isinstance(raw, dict):
        try:
            ids = {int(k): v for k, v in raw.items() if not isinstance(k, bool)}
        except (TypeError, ValueError):
            ids = {}
        if len(ids) != len(raw) or sorted(ids) != list(range(len(raw))):
            raise DataError(f"{file}: names keys are {list(raw)}, expected the class ids 0..{len(raw) - 1}.")
        names = [str(ids[i]) for i in range(len(ids))]
    else:
        raise DataError(f"{file}: names is {raw!r}, expected a list of class names or a mapping id: name.")
    if not names:
        raise DataError(f"{file}: names is empty.")
    if nc is not None and nc != len(names):
        raise DataError(f"{file}: nc is {nc} but names lists {len(names)} classes.")
    return names


def _kpt_fields(data: dict[Any, Any], file: Path) -> int:
    shape = data.get("kpt_shape")
    if shape is None:
        return 0
    if (not isinstance(shape, list) or len(shape) != 2 or not all(isinstance(v, int) and v > 0 for v in shape)
            or shape[1] not in (2, 3)):
        raise DataError(f"{file}: kpt_shape is {shape!r}, expected [keypoints, 2 or 3].")
    return shape[0] * shape[1]


def _resolve(layout: YoloLayout, value: str) -> Path:
    """An entry of train/val as an existing path, trying ``base/value`` and, for ``../x``, ``base/x``."""
    path = Path(value).expanduser()
    tried = [path] if path.is_absolute() else [layout.base / path]
    if value.startswith("../"):
        tried.append(layout.base / value[3:])
    for candidate in tried:
        if candidate.exists():
            return candidate
    raise DataError(f"{layout.yaml_file}: \"{value}\" not found (looked for {' and '.join(map(str, tried))}).")


def _image_dir(layout: YoloLayout, split: str) -> Path:
    first = _resolve(layout, layout.entries[split][0])
    return first if first.is_dir() else first.parent


def _split_images(layout: YoloLayout, split: str, log: ProblemLog) -> list[tuple[str, Path]]:
    """``(file_name, path)`` of every image of ``split``, sorted by path, without duplicates."""
    found: dict[Path, str] = {}
    for value in layout.entries[split]:
        source = _resolve(layout, value)
        if source.is_dir():
            for path in source.rglob("*"):
                if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file():
                    found.setdefault(path, path.relative_to(source).as_posix())
        elif source.suffix.lower() == ".txt":
            for path in _listed(source, log):
                found.setdefault(path, path.name)
        elif source.suffix.lower() in IMAGE_EXTENSIONS:
            found.setdefault(source, source.name)
        else:
            raise DataError(f"{layout.yaml_file}: \"{value}\" ({source}) is neither a folder, a .txt list nor an "
                            "image.")
    return [(found[p], p) for p in sorted(found)]


def _listed(txt: Path, log: ProblemLog) -> list[Path]:
    """The image paths a .txt list names (relative ones from the list's folder); missing files are logged."""
    try:
        lines = txt.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{txt}: cannot be read as a list of image paths ({err}).") from None
    listed = []
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text:
            continue
        path = Path(text).expanduser()
        path = path if path.is_absolute() else txt.parent / text.removeprefix("./")
        if path.is_file():
            listed.append(path)
        else:
            log.messages.append(f"{txt}: line {number}: image file {path} does not exist")
    return listed


def _image_record(image_id: int, file_name: str, path: Path, check: bool) -> ImageRecord:
    try:
        width, height = image_size(path)
    except ImageReadError as err:
        raise RecordError(err.reason) from None
    record = ImageRecord(image_id, file_name, path, width, height)
    if check:
        check_image_file(record)  # the full walk over the file: truncated and corrupt data
    return record


def _read_labels(
    file: Path, image: ImageRecord, layout: YoloLayout, log: ProblemLog
) -> tuple[list[list[float]], list[int]]:
    """The boxes (pixel xyxy) and class ids of one label file; bad lines are logged and dropped."""
    if not file.exists():
        return [], []
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        log.messages.append(f"{file}: cannot be read as YOLO labels ({err})")
        return [], []
    boxes, classes = [], []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            cls, box = _parse_line(line.split(), len(layout.names), layout.kpt_fields)
        except RecordError as err:
            log.messages.append(f"{file}: line {number}: {err}")
            continue
        boxes.append([box[0] * image.width, box[1] * image.height, box[2] * image.width, box[3] * image.height])
        classes.append(cls)
    return boxes, classes


def _parse_line(fields: list[str], nc: int, kpt_fields: int) -> tuple[int, list[float]]:
    """``(class, normalised xyxy clipped to [0, 1])`` of one label line."""
    n = len(fields)
    polygon = not kpt_fields and n >= 7 and n % 2 == 1
    if n != 5 and n != 5 + kpt_fields and not polygon:
        expected = f"5 (class cx cy w h){f' or {5 + kpt_fields} (box and keypoints)' if kpt_fields else ''}"
        raise RecordError(f"has {n} values, expected {expected}")
    values = []
    for text in fields:
        try:
            value = float(text)
        except ValueError:
            raise RecordError(f"\"{text}\" is not a number") from None
        if not math.isfinite(value):
            raise RecordError(f"\"{text}\" is not a finite number")
        values.append(value)
    cls = values[0]
    if cls != int(cls) or not 0 <= cls < nc:
        raise RecordError(f"class {fields[0]} is not a class id 0..{nc - 1}")
    if polygon:
        xs, ys = values[1::2], values[2::2]
        x1, y1, x2, y2 = min(xs), min(ys), max(xs), max(ys)
    else:
        cx, cy, w, h = values[1:5]
        if w <= 0 or h <= 0:
            raise RecordError(f"box (cx {cx:g}, cy {cy:g}, w {w:g}, h {h:g}) has a width or height <= 0")
        x1, y1, x2, y2 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
    if min(x1, y1) < -TOLERANCE or max(x2, y2) > 1 + TOLERANCE:
        shown = "polygon" if polygon else f"box (cx {values[1]:g}, cy {values[2]:g}, w {values[3]:g}, h {values[4]:g})"
        raise RecordError(f"{shown} reaches ({x1:g}, {y1:g})-({x2:g}, {y2:g}), outside the image's [0, 1]")
    x1, y1, x2, y2 = (min(max(v, 0.0), 1.0) for v in (x1, y1, x2, y2))
    if x2 <= x1 or y2 <= y1:
        raise RecordError("box is empty inside the image")
    return int(cls), [x1, y1, x2, y2]
