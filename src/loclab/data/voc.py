"""Pascal VOC detection datasets: one XML file per image, read into a :class:`DetectionSplit`.

Layout (the VOC devkit's, and the common variants people export)::

    DIR/Annotations/*.xml           (or annotations/, annots/)
    DIR/JPEGImages/                 (or images/; without either, images sit beside their XML files)
    DIR/ImageSets/Main/train.txt    optional, one image id (XML file stem) per line
    DIR/ImageSets/Main/val.txt

Without the ImageSets files the split is fixed by file name: the XML files sorted by name, every 5th one
(index % 5 == 4) is val and the rest train, so the same folder always gives the same split.

**Coordinates.** VOC boxes are 1-based pixel indices with ``xmax``/``ymax`` inclusive: a box covering only
the image's first pixel is ``xmin = xmax = 1``. loclab boxes are continuous (pixel ``i`` spans ``[i, i+1)``,
0-based), so ``x1 = xmin - 1``, ``y1 = ymin - 1``, ``x2 = xmax``, ``y2 = ymax``. Then loclab's area
``(x2 - x1) * (y2 - y1)`` equals the devkit's ``(xmax - xmin + 1) * (ymax - ymin + 1)``, and IoUs match the
devkit's. ``xmin == xmax`` is therefore a valid one-pixel-wide box; ``xmax < xmin`` is not. Tools that write
0-based coordinates put ``xmin = 0``: a coordinate may reach 1 pixel before the border (clipped to 0), and
``xmax`` may be at most the image width.

**Classes** are the sorted object names found in *all* XML files of the dataset (not only the split's), so
train and val get the same labels ``0..C-1``; ``category_ids`` is ``0..C-1``. ``difficult`` objects are kept
and flagged in ``DetectionSplit.difficult`` (the devkit leaves them out of AP).

**Sizes** come from ``<size>`` when it gives a non-zero width and height (then checked against the image file
after EXIF orientation), else from the image file.

Bad records (raise :class:`DataError`, or are skipped with ``skip_bad=True``), each named by its XML file and,
for an object, its index: malformed XML, a missing or unreadable image, a wrong size, a missing field,
a non-numeric coordinate, a box outside the image or with ``xmax < xmin``. A bad object drops that object;
anything else drops the image.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from loclab.data.errors import DataError, ProblemLog, RecordError
from loclab.data.formats import ImageRecord, check_image_file
from loclab.data.formats_detection import DetectionSplit
from loclab.data.images import IMAGE_EXTENSIONS, ImageReadError, image_size

__all__ = ["ANNOTATION_DIRS", "IMAGE_DIRS", "VOC_LOOKS_FOR", "VocLayout", "find_voc", "load_voc_split"]

ANNOTATION_DIRS = ("Annotations", "annotations", "annots")
IMAGE_DIRS = ("JPEGImages", "images")
VOC_LOOKS_FOR = "Annotations/, annotations/ or annots/ holding *.xml files (Pascal VOC)"
VAL_EVERY = 5  # without ImageSets: val is every 5th XML file in name order
_EPS = 1e-6  # float slack on the border checks


@dataclass(frozen=True)
class VocLayout:
    """Where a VOC dataset's pieces are. ``xml_files`` are sorted by name; an image's id is its position there.
    ``split_files`` maps ``"train"``/``"val"`` to ``ImageSets/Main/*.txt``, or is None (split by file name)."""

    root: Path
    annotation_dir: Path
    image_dir: Path
    xml_files: tuple[Path, ...]
    split_files: dict[str, Path] | None
    reason: str


def find_voc(root: Path | str) -> VocLayout | None:
    """The VOC layout of ``root``, or None if ``root`` has no folder of XML files (see :data:`VOC_LOOKS_FOR`).

    Raises :class:`DataError` when the XML files are there but the rest is unusable: only one of
    ``ImageSets/Main/train.txt`` and ``val.txt``.
    """
    root = Path(root)
    for name in ANNOTATION_DIRS:
        folder = root / name
        xml_files = tuple(sorted(folder.glob("*.xml"))) if folder.is_dir() else ()
        if xml_files:
            break
    else:
        return None
    image_dir = next((root / d for d in IMAGE_DIRS if (root / d).is_dir()), folder)
    where_images = f"images in {image_dir.name}/" if image_dir != folder else "images beside them"
    sets = root / "ImageSets" / "Main"
    present = {s: sets / f"{s}.txt" for s in ("train", "val") if (sets / f"{s}.txt").is_file()}
    if len(present) == 1:
        (have,) = present
        other = "val" if have == "train" else "train"
        raise DataError(f"{sets}: has {have}.txt but no {other}.txt; a VOC dataset split needs both (or neither: "
                        f"then every {VAL_EVERY}th image by file name is val).")
    if present:
        split = "train/val split from ImageSets/Main/train.txt and val.txt"
    else:
        split = f"no ImageSets split, so every {VAL_EVERY}th image (by file name) is val"
    reason = f"VOC layout: {len(xml_files)} XML files in {folder.name}/, {where_images}; {split}"
    return VocLayout(root, folder, image_dir, xml_files, present or None, reason)


def load_voc_split(
    root: Path | str,
    split: Literal["train", "val"],
    *,
    skip_bad: bool = False,
    check_images: bool = True,
    layout: VocLayout | None = None,
) -> DetectionSplit:
    """Read the ``split`` of the VOC dataset at ``root`` into a :class:`DetectionSplit` (format ``"voc"``).

    Boxes are xyxy float32 in the image's displayed (EXIF-oriented) pixels, converted from VOC's 1-based
    inclusive coordinates as the module docstring says; labels index the sorted class names of the whole
    dataset. ``layout`` skips the search when the caller already ran :func:`find_voc`.

    Raises :class:`DataError` naming the XML file (and object index) of the first bad record; with
    ``skip_bad=True`` bad records are dropped with one warning and listed in ``skipped``. A dataset without XML
    files, an unreadable ImageSets file or a split without images raise regardless.
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    layout = layout or find_voc(root)
    if layout is None:
        raise DataError(f"{root}: no Pascal VOC dataset here (looked for {VOC_LOOKS_FOR}).")
    source = layout.split_files[split] if layout.split_files else layout.annotation_dir
    log = ProblemLog(source, skip_bad)
    trees = {xml: _parse(xml) for xml in layout.xml_files}
    names = sorted({name for tree in trees.values() if isinstance(tree, ET.Element) for name in _object_names(tree)})
    label_of = {name: label for label, name in enumerate(names)}
    index_of = {xml: i for i, xml in enumerate(layout.xml_files)}

    chosen = _split_members(layout, split, log)
    if not chosen:
        raise DataError(f"{source}: the {split} split has no images.")
    images, boxes, labels, difficult = [], [], [], []
    for xml in chosen:
        read = _read_image(xml, trees[xml], index_of[xml], layout.image_dir, label_of, log, check_images)
        if read is not None:
            images.append(read[0])
            boxes.append(torch.tensor(read[1], dtype=torch.float32).reshape(-1, 4))
            labels.append(torch.tensor(read[2], dtype=torch.int64))
            difficult.append(torch.tensor(read[3], dtype=torch.bool))
    skipped = log.finish()
    counts = [len(b) for b in boxes]
    starts = [sum(counts[:i]) for i in range(len(counts))]
    return DetectionSplit(
        annotation_file=source,
        image_dir=layout.image_dir,
        images=tuple(images),
        boxes=tuple(boxes),
        labels=tuple(labels),
        annotation_ids=tuple(torch.arange(s, s + n, dtype=torch.int64) for s, n in zip(starts, counts)),
        visible_fraction=None,
        categories=dict(enumerate(names)),
        category_ids=tuple(range(len(names))),
        format="voc",
        format_reason=layout.reason,
        skipped=skipped,
        difficult=tuple(difficult) if any(bool(d.any()) for d in difficult) else None,
    )


def _parse(xml: Path) -> ET.Element | str:
    """The XML root element, or a message saying why the file cannot be parsed."""
    try:
        return ET.parse(xml).getroot()
    except ET.ParseError as err:
        line, column = err.position
        return f"malformed XML at line {line}, column {column} ({str(err).split(':')[0]})"
    except OSError as err:
        return f"cannot be read ({err.strerror or err})"


def _object_names(root: ET.Element) -> list[str]:
    return [name for obj in root.findall("object") if (name := (obj.findtext("name") or "").strip())]


def _split_members(layout: VocLayout, split: str, log: ProblemLog) -> list[Path]:
    """The XML files of ``split``, in the order the split file lists them (or name order)."""
    if layout.split_files is None:
        return [xml for i, xml in enumerate(layout.xml_files) if (i % VAL_EVERY == VAL_EVERY - 1) == (split == "val")]
    path = layout.split_files[split]
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot be read as a list of image ids ({err}).") from None
    members, seen = [], set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        stem = line.split()[0]  # class files (ImageSets/Main/dog_train.txt) add a second column
        xml = layout.annotation_dir / f"{stem}.xml"
        if stem in seen:
            log.record(f"line {number}", f"image id \"{stem}\" is listed twice")
        elif not xml.is_file():
            log.record(f"line {number}", f"image id \"{stem}\" has no annotation file {xml}")
        else:
            members.append(xml)
        seen.add(stem)
    return members


def _read_image(
    xml: Path,
    tree: ET.Element | str,
    image_id: int,
    image_dir: Path,
    label_of: dict[str, int],
    log: ProblemLog,
    check_images: bool,
) -> tuple[ImageRecord, list[list[float]], list[int], list[bool]] | None:
    """One XML file's image record and objects; None (logged) when the image itself is bad."""
    try:
        if isinstance(tree, str):
            raise RecordError(tree)
        if tree.tag != "annotation":
            raise RecordError(f"root element is <{tree.tag}>, expected <annotation>")
        path = _image_path(xml, tree, image_dir)
        record = _image_record(tree, image_id, path, image_dir, check_images)
    except RecordError as err:
        _record(log, xml, None, str(err))
        return None
    boxes, labels, difficult = [], [], []
    for index, obj in enumerate(tree.findall("object")):
        name = (obj.findtext("name") or "").strip()
        where = f"object {index}" + (f" (\"{name}\")" if name else "")
        try:
            if not name:
                raise RecordError("missing <name>")
            box = _box(obj, record)
            hard = _flag(obj, "difficult")
        except RecordError as err:
            _record(log, xml, where, str(err))
            continue
        boxes.append(box)
        labels.append(label_of[name])
        difficult.append(hard)
    return record, boxes, labels, difficult


def _record(log: ProblemLog, xml: Path, where: str | None, what: str) -> None:
    # VOC problems are named by their own XML file, not by the log's split-level source.
    log.messages.append(f"{xml}: {where}: {what}" if where else f"{xml}: {what}")


def _image_path(xml: Path, tree: ET.Element, image_dir: Path) -> Path:
    """The image ``<filename>`` names in ``image_dir`` (or beside the XML), else the XML stem with a common
    image extension; :class:`RecordError` listing what was tried when none exists."""
    declared = (tree.findtext("filename") or "").strip()
    names = []
    if declared:
        names += [declared, Path(declared).name]
        if not Path(declared).suffix:  # some tools write the id without its extension
            names += [declared + ext for ext in IMAGE_EXTENSIONS]
    names += [xml.stem + ext for ext in (*IMAGE_EXTENSIONS, *(e.upper() for e in IMAGE_EXTENSIONS))]
    folders = [image_dir] if image_dir == xml.parent else [image_dir, xml.parent]
    for folder in folders:
        for name in dict.fromkeys(names):
            if (folder / name).is_file():
                return folder / name
    shown = f"<filename> \"{declared}\"" if declared else f"{xml.stem}.<{'|'.join(e[1:] for e in IMAGE_EXTENSIONS)}>"
    raise RecordError(f"image file not found: no {shown} in {image_dir}")


def _image_record(tree: ET.Element, image_id: int, path: Path, image_dir: Path, check: bool) -> ImageRecord:
    """The image's record: ``<size>`` when it is there and non-zero, else the file's oriented size."""
    declared = [_size_field(tree, key) for key in ("width", "height")]
    try:
        width, height = declared if all(declared) else image_size(path)
    except ImageReadError as err:
        raise RecordError(f"image file {path} {err.reason}") from None
    file_name = path.relative_to(image_dir).as_posix() if path.is_relative_to(image_dir) else path.name
    record = ImageRecord(image_id, file_name, path, int(width), int(height))
    if check:
        check_image_file(record)
    return record


def _size_field(tree: ET.Element, key: str) -> int:
    """``<size><key>`` as a positive int; 0 when missing or 0 (then the image file says)."""
    text = (tree.findtext(f"size/{key}") or "").strip()
    if not text:
        return 0
    try:
        value = float(text)
    except ValueError:
        raise RecordError(f"<size><{key}> is \"{text}\", expected a whole number") from None
    if not math.isfinite(value) or value != int(value) or value < 0:
        raise RecordError(f"<size><{key}> is \"{text}\", expected a whole number >= 0")
    return int(value)


def _coordinate(box: ET.Element, key: str) -> float:
    text = box.findtext(key)
    if text is None or not text.strip():
        raise RecordError(f"<bndbox> has no <{key}>")
    try:
        value = float(text)
    except ValueError:
        raise RecordError(f"<{key}> is \"{text.strip()}\", expected a number") from None
    if not math.isfinite(value):
        raise RecordError(f"<{key}> is \"{text.strip()}\", expected a finite number")
    return value


def _box(obj: ET.Element, image: ImageRecord) -> list[float]:
    """The object's ``<bndbox>`` as loclab xyxy (see the module docstring for the conversion and slack)."""
    bndbox = obj.find("bndbox")
    if bndbox is None:
        raise RecordError("missing <bndbox>")
    xmin, ymin, xmax, ymax = (_coordinate(bndbox, k) for k in ("xmin", "ymin", "xmax", "ymax"))
    shown = f"<bndbox> ({xmin:g}, {ymin:g}, {xmax:g}, {ymax:g})"
    if xmax < xmin:
        raise RecordError(f"{shown} has xmax < xmin")
    if ymax < ymin:
        raise RecordError(f"{shown} has ymax < ymin")
    if xmin < -_EPS or ymin < -_EPS or xmax > image.width + _EPS or ymax > image.height + _EPS:
        raise RecordError(f"{shown} lies outside the {image.width}x{image.height} image "
                          f"(1-based: 1 <= xmin <= xmax <= {image.width}, 1 <= ymin <= ymax <= {image.height})")
    x1, y1 = max(xmin - 1.0, 0.0), max(ymin - 1.0, 0.0)
    x2, y2 = min(xmax, float(image.width)), min(ymax, float(image.height))
    if x2 <= x1 or y2 <= y1:  # 0-based writers' xmin = xmax = 0: nothing left inside the image
        raise RecordError(f"{shown} is empty inside the image")
    return [x1, y1, x2, y2]


def _flag(obj: ET.Element, key: str) -> bool:
    text = (obj.findtext(key) or "0").strip()
    if text not in ("0", "1"):
        raise RecordError(f"<{key}> is \"{text}\", expected 0 or 1")
    return text == "1"
