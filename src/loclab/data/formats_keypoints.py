"""Keypoint annotation files: the stick-figure reference format and COCO keypoints.

Reference (SPEC §1.2)::

    {"images": [{"id": 0, "file_name": "000000.png", "keypoints": [[64, 44], ...]}],
     "keypoint_names": ["head", ...], "num_keypoints": 5}

COCO keypoints: ``images`` + ``annotations`` with flat ``keypoints: [x, y, v] * K`` + ``categories``, one of which
lists the keypoint names. loclab models one figure per image, so an image needs exactly one annotation.
A file with a top-level ``annotations`` array is read as COCO, otherwise as the reference format.

Keypoints follow the pixel-centre convention of ``docs/architecture.md`` (integer ``x`` is the centre of pixel
column ``x``), so a keypoint is inside a ``W x H`` image when ``-0.5 <= x <= W - 0.5`` and likewise for ``y``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from loclab.data.errors import DataError, ProblemLog, RecordError
from loclab.data.formats import (
    ImageRecord,
    default_image_dir,
    field_int,
    finite_numbers,
    image_where,
    json_type,
    parse_images,
    read_json_object,
    require_list,
    write_json_atomic,
)

REFERENCE_IMAGE_SIZE = (128, 128)  # (width, height) of reference images, which declare no size


@dataclass(frozen=True, eq=False)
class KeypointSplit:
    """A validated keypoint split: one figure per image.

    * ``keypoints``: float32 ``[N, K, 2]`` ``(x, y)`` image pixels (pixel-centre convention), row ``i`` for
      ``images[i]``, in the order of ``keypoint_names``.
    * ``visible``: bool ``[N, K]``; COCO ``v == 0`` (not labelled) is False, everything else True.
    * ``format``: ``"reference"`` or ``"coco"``; ``skipped``: messages of records dropped by ``skip_bad=True``.
    """

    annotation_file: Path
    image_dir: Path
    images: tuple[ImageRecord, ...]
    keypoints: Tensor
    visible: Tensor
    keypoint_names: tuple[str, ...]
    format: Literal["reference", "coco"]
    skipped: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_keypoints(self) -> int:
        return len(self.keypoint_names)

    @property
    def num_skipped(self) -> int:
        """How many records ``skip_bad=True`` dropped."""
        return len(self.skipped)


def load_keypoint_annotations(
    annotation_file: Path | str,
    image_dir: Path | str | None = None,
    *,
    skip_bad: bool = False,
    check_images: bool = True,
) -> KeypointSplit:
    """Read and validate a keypoint annotation file (reference or COCO keypoints) into a :class:`KeypointSplit`.

    ``image_dir`` defaults to ``<dir>/<split>/`` for ``<dir>/<split>_annotations.json``, else the file's directory;
    images without declared ``width``/``height`` are taken as 128x128. With ``check_images`` each image file's
    header is read (exists, is an image, has the declared size).

    Raises :class:`DataError` naming the file and the record (wrong keypoint count, keypoint outside the image,
    several or no figures on an image, missing/unreadable/wrongly sized image, wrong types, duplicate ids, ...).
    With ``skip_bad=True`` bad images are dropped instead, with one :class:`DataWarning` and the messages in
    ``skipped``; file-level problems always raise.
    """
    file = Path(annotation_file)
    data = read_json_object(file)
    image_dir = Path(image_dir) if image_dir is not None else default_image_dir(file)
    log = ProblemLog(file, skip_bad)
    if "annotations" in data:
        fmt: Literal["reference", "coco"] = "coco"
        images, coords, names = _read_coco(data, file, image_dir, log, check_images)
    else:
        fmt = "reference"
        images, coords, names = _read_reference(data, file, image_dir, log, check_images)

    accepted: list[ImageRecord] = []
    rows: list[list[list[float]]] = []
    for record in images.values():
        if record.id not in coords:
            continue
        try:
            _check_inside(coords[record.id], names, record)
        except RecordError as err:
            log.record(_where(record), str(err))
            continue
        accepted.append(record)
        rows.append(coords[record.id])
    skipped = log.finish()

    table = torch.tensor(rows, dtype=torch.float32).reshape(len(rows), len(names), 3)
    return KeypointSplit(
        annotation_file=file,
        image_dir=image_dir,
        images=tuple(accepted),
        keypoints=table[..., :2].contiguous(),
        visible=table[..., 2] > 0,
        keypoint_names=tuple(names),
        format=fmt,
        skipped=skipped,
    )


def write_keypoint_annotations(
    path: Path | str, images: Sequence[Mapping[str, Any]], keypoint_names: Sequence[str]
) -> Path:
    """Write a reference-format keypoint file atomically.

    ``images``: ``{"id", "file_name", "keypoints": [[x, y], ...]}`` in ``keypoint_names`` order.
    """
    document = {"images": list(images), "keypoint_names": list(keypoint_names), "num_keypoints": len(keypoint_names)}
    return write_json_atomic(Path(path), document)


def _where(record: ImageRecord) -> str:
    return f"image id {record.id} (\"{record.file_name}\")"


def _names(value: Any, file: Path, what: str) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(n, str) for n in value):
        raise DataError(f"{file}: {what} is {value!r}, expected a non-empty array of strings.")
    return value


def _read_reference(
    data: dict[str, Any], file: Path, image_dir: Path, log: ProblemLog, check_images: bool
) -> tuple[dict[int, ImageRecord], dict[int, list[list[float]]], list[str]]:
    """Images, ``[x, y, 1]`` rows per image id, and keypoint names from a reference-format file."""
    raw_images = require_list(data, "images", file)
    names = _names(require_list(data, "keypoint_names", file), file, "\"keypoint_names\"")
    if "num_keypoints" not in data:
        raise DataError(f"{file}: missing top-level key \"num_keypoints\" (found keys: {sorted(data)}).")
    count = data["num_keypoints"]
    if isinstance(count, bool) or not isinstance(count, int) or count != len(names):
        raise DataError(f"{file}: \"num_keypoints\" is {count!r} but \"keypoint_names\" lists {len(names)} names.")

    images, _ = parse_images(raw_images, image_dir, REFERENCE_IMAGE_SIZE, log, check_images)
    coords: dict[int, list[list[float]]] = {}
    for index, raw in enumerate(raw_images):
        image_id = raw.get("id") if isinstance(raw, dict) else None
        if type(image_id) is not int or image_id not in images or image_id in coords:
            continue  # bad image (already reported) or a later duplicate of its id
        try:
            points = raw.get("keypoints")
            if not isinstance(points, list):
                raise RecordError(f"\"keypoints\" is a JSON {json_type(points)}, expected an array of [x, y]")
            if len(points) != len(names):
                raise RecordError(f"has {len(points)} keypoints, expected {len(names)} (num_keypoints)")
            coords[image_id] = [finite_numbers(p, 2, f"keypoint {k} ({names[k]})") + [1.0] for k, p in enumerate(points)]
        except RecordError as err:
            log.record(image_where(raw, index), str(err))
    return images, coords, names


def _read_coco(
    data: dict[str, Any], file: Path, image_dir: Path, log: ProblemLog, check_images: bool
) -> tuple[dict[int, ImageRecord], dict[int, list[list[float]]], list[str]]:
    """Images, ``[x, y, v]`` rows per image id, and keypoint names from a COCO keypoints file."""
    raw_images = require_list(data, "images", file)
    raw_annotations = require_list(data, "annotations", file)
    raw_categories = require_list(data, "categories", file)
    with_names = [c for c in raw_categories if isinstance(c, dict) and "keypoints" in c]
    if len(with_names) != 1:
        raise DataError(f"{file}: expected exactly one category with \"keypoints\" names, found {len(with_names)}.")
    category = with_names[0]
    names = _names(category["keypoints"], file, "the category's \"keypoints\"")
    category_id = category.get("id")

    images, declared = parse_images(raw_images, image_dir, REFERENCE_IMAGE_SIZE, log, check_images)
    found: dict[int, list[tuple[int, list[float]]]] = {}
    bad_images: set[int] = set()
    seen_ids: set[int] = set()
    for index, ann in enumerate(raw_annotations):
        where = f"annotations[{index}]"
        image_id = None
        try:
            if not isinstance(ann, dict):
                raise RecordError(f"is a JSON {json_type(ann)}, expected an object")
            ann_id = field_int(ann, "id")
            image_id = field_int(ann, "image_id")
            image = images.get(image_id)
            where = f"annotation id {ann_id} (image {image_id}" + (f" \"{image.file_name}\")" if image else ")")
            if ann_id in seen_ids:
                raise RecordError(f"duplicate annotation id {ann_id}")
            seen_ids.add(ann_id)
            if ann.get("category_id", category_id) != category_id:
                continue  # another category's object: not a figure
            if image is None:
                if image_id in declared:
                    continue  # its image was bad and is already reported
                raise RecordError(f"image_id {image_id} is not an id in \"images\"")
            flat = finite_numbers(ann.get("keypoints"), 3 * len(names), f"keypoints (3 x {len(names)} values)")
            if any(v not in (0.0, 1.0, 2.0) for v in flat[2::3]):
                raise RecordError(f"keypoint visibility flags {flat[2::3]} must each be 0, 1 or 2")
        except RecordError as err:
            log.record(where, str(err))
            if image_id is not None:
                bad_images.add(image_id)
            continue
        found.setdefault(image_id, []).append((ann_id, [flat[i : i + 3] for i in range(0, len(flat), 3)]))

    coords: dict[int, list[list[float]]] = {}
    for image_id, record in images.items():
        figures = found.get(image_id, [])
        if image_id in bad_images:
            continue  # its annotation is already reported
        if len(figures) != 1:
            ids = ", ".join(str(ann_id) for ann_id, _ in figures)
            what = "no keypoint annotation" if not figures else f"{len(figures)} keypoint annotations (ids {ids})"
            log.record(_where(record), f"has {what}; loclab expects exactly one figure per image")
            continue
        coords[image_id] = figures[0][1]
    return images, coords, names


def _check_inside(points: list[list[float]], names: list[str], record: ImageRecord) -> None:
    """Every labelled keypoint must lie in ``[-0.5, W - 0.5] x [-0.5, H - 0.5]`` (pixel-centre convention)."""
    for k, (x, y, v) in enumerate(points):
        if v > 0 and not (-0.5 <= x <= record.width - 0.5 and -0.5 <= y <= record.height - 0.5):
            shown = [int(c) if float(c).is_integer() else c for c in (x, y)]
            raise RecordError(
                f"keypoint {k} ({names[k]}) {shown} lies outside the {record.width}x{record.height} image"
            )
