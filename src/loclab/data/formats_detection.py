"""Detection annotation files: the shapes reference format (bbox xyxy) and standard COCO (bbox xywh).

Both are COCO-like ``{"images": [...], "annotations": [...], "categories": [...]}``; they differ in what
``bbox`` means. The reference format (docs/data-formats.md, also what the original course generator wrote) stores
``[x1, y1, x2, y2]`` with ``area = s*s``; COCO stores ``[x, y, w, h]``.

**Auto-detection** (``box_format="auto"``). Each annotation is tested under both readings:

* as xyxy it must have ``x2 > x1``, ``y2 > y1``, lie inside its image, and, when ``area`` is present, have
  ``area == (x2-x1)*(y2-y1)`` or ``(x2-x1+1)*(y2-y1+1)`` (the reference generator writes ``s*s`` for a box of
  side ``2*(s//2)``, one pixel short for odd ``s``);
* as xywh it must have ``w, h > 0``, lie inside its image, and, when ``area`` is present, have
  ``area <= 1.01*w*h`` (COCO's area is the segment's, never much more than its box).

The reading that every annotation passes, when the other does not, wins. If both readings fit every box
(tiny files of boxes near the top-left corner) the reference xyxy reading is assumed and a :class:`DataWarning`
says so. Otherwise the reading more annotations pass is taken and the rest are reported as bad records.
The choice is logged and stored in ``DetectionSplit.format`` / ``format_reason``; ``box_format="xyxy"`` or
``"xywh"`` overrides it.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor

from loclab.atomic import write_json_atomic
from loclab.data.errors import DataError, DataWarning, ProblemLog, RecordError
from loclab.data.formats import (
    ImageRecord,
    default_image_dir,
    field_int,
    finite_numbers,
    is_finite_number,
    json_type,
    parse_images,
    read_json_object,
    require_list,
)

logger = logging.getLogger(__name__)

BoxFormat = Literal["auto", "xyxy", "xywh"]
REFERENCE_IMAGE_SIZE = (224, 224)  # (width, height) of reference images that declare no size
_EPS = 1e-3  # slack for float coordinates exactly on the image border


@dataclass(frozen=True, eq=False)
class DetectionSplit:
    """A validated detection split: images and, per image, boxes and labels.

    * ``boxes[i]``: float32 ``[n_i, 4]`` xyxy in continuous pixel coordinates of image ``images[i]``,
      ``0 <= x1 < x2 <= width``, ``0 <= y1 < y2 <= height`` (whatever the file's box format was).
    * ``labels[i]``: int64 ``[n_i]`` in ``0..C-1``, the position of the file's category id in sorted order
      (identity for the reference categories 0 circle, 1 square, 2 triangle).
    * ``annotation_ids[i]``: int64 ``[n_i]``, the file's annotation ids.
    * ``visible_fraction``: float32 ``[n_i]`` per image (NaN where an annotation lacks the field), or None when
      no annotation in the file has it.
    * ``categories``: ``{label: name}``; ``category_ids[label]`` is the file's id for that label.
    * ``format``: the annotation format read: ``"reference"`` (JSON, bbox xyxy), ``"coco"`` (JSON, bbox xywh),
      ``"voc"`` (Pascal VOC XML) or ``"yolo"`` (YOLO txt); ``format_reason`` says what was found and why.
    * ``skipped``: one message per record dropped because of ``skip_bad=True`` (empty otherwise).
    * ``difficult``: bool ``[n_i]`` per image, True for objects the file marks difficult (Pascal VOC), which the
      VOC devkit leaves out of AP (neither a hit nor a miss); None when no object is marked difficult.
    """

    annotation_file: Path
    image_dir: Path
    images: tuple[ImageRecord, ...]
    boxes: tuple[Tensor, ...]
    labels: tuple[Tensor, ...]
    annotation_ids: tuple[Tensor, ...]
    visible_fraction: tuple[Tensor, ...] | None
    categories: dict[int, str]
    category_ids: tuple[int, ...]
    format: str
    format_reason: str
    skipped: tuple[str, ...] = ()
    difficult: tuple[Tensor, ...] | None = None

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_skipped(self) -> int:
        """How many records ``skip_bad=True`` dropped."""
        return len(self.skipped)

    @property
    def num_boxes(self) -> int:
        """Total number of boxes over all images."""
        return sum(len(b) for b in self.boxes)


class _Annotation(NamedTuple):
    where: str
    id: int
    image_id: int
    label: int
    bbox: list[float]
    raw_bbox: Any
    area: float | None
    visible: float | None


def load_detection_annotations(
    annotation_file: Path | str,
    image_dir: Path | str | None = None,
    *,
    box_format: BoxFormat = "auto",
    skip_bad: bool = False,
    check_images: bool = True,
) -> DetectionSplit:
    """Read and validate a detection annotation file (reference xyxy or COCO xywh) into a :class:`DetectionSplit`.

    ``image_dir`` defaults to ``<dir>/<split>/`` for ``<dir>/<split>_annotations.json``, else the file's directory.
    Images without declared ``width``/``height`` are taken as 224x224. With ``check_images`` every image file's
    header is read to check it exists, is an image and has the declared size.

    Raises :class:`DataError` naming the file and the record for any bad input. With ``skip_bad=True``, bad
    annotations are dropped, bad images are dropped with their annotations, one :class:`DataWarning` gives the
    count, and the messages are kept in ``skipped``; file-level problems (missing file, malformed JSON, missing
    top-level keys, bad categories) raise regardless. Unknown fields are ignored; ``iscrowd`` annotations are
    dropped (they mark regions, not objects).
    """
    if box_format not in ("auto", "xyxy", "xywh"):
        raise ValueError(f"box_format must be 'auto', 'xyxy' or 'xywh', got {box_format!r}")
    file = Path(annotation_file)
    data = read_json_object(file)
    raw_images = require_list(data, "images", file)
    raw_annotations = require_list(data, "annotations", file)
    category_ids, names = _parse_categories(require_list(data, "categories", file), file)
    image_dir = Path(image_dir) if image_dir is not None else default_image_dir(file)

    log = ProblemLog(file, skip_bad)
    images, declared = parse_images(raw_images, image_dir, REFERENCE_IMAGE_SIZE, log, check_images)
    label_of = {cat_id: label for label, cat_id in enumerate(category_ids)}
    annotations = _parse_annotations(raw_annotations, images, declared, label_of, log)
    xywh, fmt, reason = _choose_box_format(annotations, images, box_format)
    logger.info("%s: %s", file, reason)

    per_image: dict[int, list[tuple[list[float], _Annotation]]] = {image_id: [] for image_id in images}
    for ann in annotations:
        try:
            box = _validated_box(ann, images[ann.image_id], xywh)
        except RecordError as err:
            log.record(ann.where, str(err))
            continue
        per_image[ann.image_id].append((box, ann))
    skipped = log.finish()

    has_visible = any(ann.visible is not None for ann in annotations)
    entries = list(per_image.values())
    return DetectionSplit(
        annotation_file=file,
        image_dir=image_dir,
        images=tuple(images.values()),
        boxes=tuple(torch.tensor([b for b, _ in e], dtype=torch.float32).reshape(-1, 4) for e in entries),
        labels=tuple(torch.tensor([a.label for _, a in e], dtype=torch.int64) for e in entries),
        annotation_ids=tuple(torch.tensor([a.id for _, a in e], dtype=torch.int64) for e in entries),
        visible_fraction=(
            tuple(
                torch.tensor([math.nan if a.visible is None else a.visible for _, a in e], dtype=torch.float32)
                for e in entries
            )
            if has_visible
            else None
        ),
        categories={label: names[cat_id] for cat_id, label in label_of.items()},
        category_ids=tuple(category_ids),
        format=fmt,
        format_reason=reason,
        skipped=skipped,
    )


def write_detection_annotations(
    path: Path | str,
    images: Sequence[Mapping[str, Any]],
    annotations: Sequence[Mapping[str, Any]],
    categories: Sequence[Mapping[str, Any]],
) -> Path:
    """Write a reference-format detection file (bbox xyxy) atomically; key order is the caller's dict order.

    ``images``: ``{"id", "file_name", "width", "height"}``; ``annotations``: ``{"id", "image_id",
    "category_id", "bbox": [x1, y1, x2, y2], "area", ...extra}``; ``categories``: ``{"id", "name"}``.
    """
    document = {"images": list(images), "annotations": list(annotations), "categories": list(categories)}
    return write_json_atomic(Path(path), document)


def _parse_categories(raw: list[Any], file: Path) -> tuple[list[int], dict[int, str]]:
    """Category ids in sorted order and their names; a bad category is a file-level problem."""
    names: dict[int, str] = {}
    for index, cat in enumerate(raw):
        if not isinstance(cat, dict):
            raise DataError(f"{file}: categories[{index}] is a JSON {json_type(cat)}, expected an object.")
        try:
            cat_id = field_int(cat, "id")
        except RecordError as err:
            raise DataError(f"{file}: categories[{index}]: {err}.") from None
        name = cat.get("name", str(cat_id))
        if cat_id in names:
            raise DataError(f"{file}: categories[{index}]: duplicate category id {cat_id}.")
        names[cat_id] = name if isinstance(name, str) else str(name)
    return sorted(names), names


def _parse_annotations(
    raw: list[Any],
    images: dict[int, ImageRecord],
    declared: set[int],
    label_of: dict[int, int],
    log: ProblemLog,
) -> list[_Annotation]:
    """Type-check every annotation and resolve its image and label; geometry is checked later."""
    parsed: list[_Annotation] = []
    seen_ids: set[int] = set()
    for index, ann in enumerate(raw):
        where = f"annotations[{index}]"
        try:
            if not isinstance(ann, dict):
                raise RecordError(f"is a JSON {json_type(ann)}, expected an object")
            ann_id = field_int(ann, "id")
            where = f"annotation id {ann_id}"
            image_id = field_int(ann, "image_id")
            image = images.get(image_id)
            where += f" (image {image_id}" + (f" \"{image.file_name}\")" if image else ")")
            if ann_id in seen_ids:
                raise RecordError(f"duplicate annotation id {ann_id}")
            seen_ids.add(ann_id)
            if image is None:
                if image_id in declared:
                    continue  # its image was bad and is already reported; the annotation goes with it
                raise RecordError(f"image_id {image_id} is not an id in \"images\"")
            category_id = field_int(ann, "category_id")
            if category_id not in label_of:
                raise RecordError(f"unknown category_id {category_id} (known: {sorted(label_of)})")
            bbox = finite_numbers(ann.get("bbox"), 4, "bbox")
            area = _optional_number(ann, "area", 0.0, math.inf)
            visible = _optional_number(ann, "visible_fraction", 0.0, 1.0)
        except RecordError as err:
            log.record(where, str(err))
            continue
        if ann.get("iscrowd"):
            continue
        parsed.append(_Annotation(where, ann_id, image_id, label_of[category_id], bbox, ann["bbox"], area, visible))
    return parsed


def _optional_number(ann: Mapping[str, Any], key: str, low: float, high: float) -> float | None:
    if key not in ann:
        return None
    value = ann[key]
    if not is_finite_number(value) or not low <= value <= high:
        raise RecordError(f"\"{key}\" is {value!r}, expected a finite number in [{low}, {high}]")
    return float(value)


def _fits(ann: _Annotation, image: ImageRecord, xywh: bool) -> bool:
    """Whether ``ann``'s bbox is a valid in-image box (and matches its area) under one reading."""
    a, b, c, d = ann.bbox
    w, h = (c, d) if xywh else (c - a, d - b)
    inside = a >= -_EPS and b >= -_EPS and a + w <= image.width + _EPS and b + h <= image.height + _EPS
    if not (w > 0 and h > 0 and inside):
        return False
    if ann.area is None:
        return True
    if xywh:
        return ann.area <= 1.01 * w * h + _EPS
    return any(abs(ann.area - v) <= _EPS * max(1.0, v) for v in (w * h, (w + 1) * (h + 1)))


def _choose_box_format(
    annotations: list[_Annotation], images: dict[int, ImageRecord], box_format: BoxFormat
) -> tuple[bool, Literal["reference", "coco"], str]:
    """Returns (bbox is xywh, format name, a sentence saying what was assumed and why)."""
    if box_format != "auto":
        xywh = box_format == "xywh"
        return xywh, "coco" if xywh else "reference", f"bbox read as {box_format} (given explicitly)"
    n = len(annotations)
    n_xyxy = sum(_fits(a, images[a.image_id], xywh=False) for a in annotations)
    n_xywh = sum(_fits(a, images[a.image_id], xywh=True) for a in annotations)
    counts = f"{n_xyxy} of {n} boxes fit xyxy, {n_xywh} fit xywh"
    if n == 0:
        return False, "reference", "bbox read as xyxy (reference format): the file has no annotations"
    if n_xyxy == n_xywh:
        reason = f"bbox read as xyxy (reference format), but the file is ambiguous ({counts})"
        warnings.warn(f"{reason}; pass box_format='xyxy' or 'xywh' to be sure.", DataWarning, stacklevel=3)
        return False, "reference", reason
    if n_xyxy > n_xywh:
        return False, "reference", f"bbox read as xyxy (reference format): {counts}"
    return True, "coco", f"bbox read as xywh (COCO format): {counts}"


def _validated_box(ann: _Annotation, image: ImageRecord, xywh: bool) -> list[float]:
    """The annotation's box as xyxy, or :class:`RecordError` if it is degenerate or outside its image."""
    a, b, c, d = ann.bbox
    x1, y1, x2, y2 = (a, b, a + c, b + d) if xywh else (a, b, c, d)
    shown = f"bbox {ann.raw_bbox!r} ({'xywh' if xywh else 'xyxy'})"
    if x2 <= x1:
        raise RecordError(f"{shown} has {'width <= 0' if xywh else 'x2 <= x1'}")
    if y2 <= y1:
        raise RecordError(f"{shown} has {'height <= 0' if xywh else 'y2 <= y1'}")
    if x1 < -_EPS or y1 < -_EPS or x2 > image.width + _EPS or y2 > image.height + _EPS:
        raise RecordError(f"{shown} lies outside the {image.width}x{image.height} image")
    return [x1, y1, x2, y2]
