"""Keypoint annotation files: the stick-figure reference format and COCO keypoints, read into :class:`KeypointSplit`.

Reference (docs/data-formats.md, 'Keypoints: the reference format')::

    {"images": [{"id": 0, "file_name": "000000.png", "keypoints": [[64, 44], ...]}],
     "keypoint_names": ["head", ...], "num_keypoints": 5}

COCO keypoints: ``images`` + ``annotations`` with flat ``keypoints: [x, y, v] * K`` + ``categories``, one of which
lists the keypoint names. Each annotation is one instance (person, animal); an image holds any number of them,
none included. Crowd annotations (``iscrowd``) and annotations without any labelled keypoint (COCO has many small
ones with ``num_keypoints == 0``) are dropped. A file with a top-level ``annotations`` array is read as COCO,
otherwise as the reference format. DeepLabCut projects are read by :mod:`loclab.data.deeplabcut`.

Keypoints follow the pixel-centre convention of ``docs/architecture.md`` (integer ``x`` is the centre of pixel
column ``x``), so a keypoint is inside a ``W x H`` image when ``-0.5 <= x <= W - 0.5`` and likewise for ``y``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from loclab.atomic import write_json_atomic
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
)
from loclab.data.instances import Instance, instance_box
from loclab.data.skeleton import symmetric_pairs_from_names

logger = logging.getLogger(__name__)

REFERENCE_IMAGE_SIZE = (128, 128)  # (width, height) of reference images, which declare no size


@dataclass(frozen=True, eq=False)
class KeypointSplit:
    """A validated keypoint split: ``N`` images holding ``M`` instances (figures, people, animals) of ``K`` keypoints.

    * ``images``: the ``N`` images; an image may hold no instance (a COCO image without annotation).
    * ``keypoints``: float32 ``[M, K, 2]``, one row per instance, ``(x, y)`` image pixels in the pixel-centre
      convention, in the order of ``keypoint_names``; exactly 0 where the keypoint is not labelled.
    * ``visible``: bool ``[M, K]``; False = not labelled (COCO ``v == 0``, DeepLabCut empty cell), which losses
      and PCK ignore. COCO ``v == 1`` (labelled, occluded) and ``v == 2`` are both True.
    * ``instance_image``: int64 ``[M]``, index into ``images`` of each instance's image, ascending.
    * ``boxes``: float32 ``[M, 4]`` ``(x1, y1, x2, y2)`` instance boxes in continuous image coordinates, inside
      the image, ``x1 < x2`` and ``y1 < y2``.
    * ``symmetric_pairs``: ``(left, right)`` keypoint index pairs that mirror each other (a flip swaps them).
    * ``format``: ``"reference"``, ``"coco"`` or ``"deeplabcut"``; ``format_reason``: how the reader recognised
      the format, chose the split and what it dropped as not an instance (crowds, frames without labels).
    * ``skipped``: messages of records dropped by ``skip_bad=True``.

    Reference files hold one figure per image: there ``M == N``, ``instance_image == arange(N)`` and row ``i``
    belongs to ``images[i]``. Shapes are checked on construction (``ValueError``).
    """

    annotation_file: Path
    image_dir: Path
    images: tuple[ImageRecord, ...]
    keypoints: Tensor
    visible: Tensor
    keypoint_names: tuple[str, ...]
    format: Literal["reference", "coco", "deeplabcut"]
    instance_image: Tensor
    boxes: Tensor
    symmetric_pairs: tuple[tuple[int, int], ...]
    skipped: tuple[str, ...] = ()
    format_reason: str = ""

    def __post_init__(self) -> None:
        # Consumers index these tensors by each other; a split built by hand (or cut with dataclasses.replace)
        # with one field forgotten would otherwise fail far away, inside a DataLoader worker.
        m, k = self.keypoints.shape[0] if self.keypoints.dim() else -1, len(self.keypoint_names)
        expected = {"keypoints": (self.keypoints, (m, k, 2)), "visible": (self.visible, (m, k)),
                    "instance_image": (self.instance_image, (m,)), "boxes": (self.boxes, (m, 4))}
        for field, (tensor, shape) in expected.items():
            if tuple(tensor.shape) != shape:
                raise ValueError(f"KeypointSplit.{field} has shape {tuple(tensor.shape)}, expected {shape} "
                                 f"(M={m} instances, K={k} keypoints)")
        owners = self.instance_image
        if m and (bool((owners[1:] < owners[:-1]).any()) or int(owners.min()) < 0 or int(owners.max()) >= len(self)):
            raise ValueError(f"KeypointSplit.instance_image must ascend within 0..{len(self) - 1}")

    def __len__(self) -> int:
        """Number of images ``N``."""
        return len(self.images)

    @property
    def num_instances(self) -> int:
        """Number of instances ``M``."""
        return self.keypoints.shape[0]

    @property
    def num_keypoints(self) -> int:
        """Number of keypoints ``K`` per instance."""
        return len(self.keypoint_names)

    @property
    def num_skipped(self) -> int:
        """How many records ``skip_bad=True`` dropped."""
        return len(self.skipped)

    def select_images(self, indices: Sequence[int]) -> KeypointSplit:
        """The split restricted to ``images[i]`` for ``i`` in ``indices`` (ascending, no repeats), with their instances.

        ``instance_image`` is renumbered to the new image positions; everything else is kept.
        """
        chosen = torch.as_tensor(list(indices), dtype=torch.int64)
        if chosen.numel() and bool((chosen[1:] <= chosen[:-1]).any()):
            raise ValueError("select_images needs ascending indices without repeats")
        new_index = torch.full((len(self),), -1, dtype=torch.int64)
        new_index[chosen] = torch.arange(chosen.numel())
        keep = new_index[self.instance_image] >= 0
        return replace(
            self,
            images=tuple(self.images[i] for i in chosen.tolist()),
            keypoints=self.keypoints[keep],
            visible=self.visible[keep],
            instance_image=new_index[self.instance_image[keep]],
            boxes=self.boxes[keep],
        )


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

    Reference files: one figure per image, whose box is the whole image. COCO: one instance per annotation; its
    box is the annotation's ``bbox`` (xywh, clipped to the image) when present with positive size, else
    :func:`~loclab.data.instances.keypoint_box`. Symmetric pairs: the hands for the stick figures (the only parts
    whose side the picture does not tell), else :func:`~loclab.data.skeleton.symmetric_pairs_from_names`.

    Raises :class:`DataError` naming the file and the record (wrong keypoint count, keypoint outside the image,
    missing/unreadable/wrongly sized image, wrong types, duplicate ids, ...). With ``skip_bad=True`` bad images
    are dropped instead (with all their instances), with one :class:`DataWarning` and the messages in
    ``skipped``; file-level problems always raise.
    """
    file = Path(annotation_file)
    data = read_json_object(file)
    image_dir = Path(image_dir) if image_dir is not None else default_image_dir(file)
    log = ProblemLog(file, skip_bad)
    if "annotations" in data:
        fmt: Literal["reference", "coco"] = "coco"
        images, instances, names, reason = _read_coco(data, file, image_dir, log, check_images)
        pairs = symmetric_pairs_from_names(names)
    else:
        fmt = "reference"
        images, instances, names = _read_reference(data, file, image_dir, log, check_images)
        reason = "no top-level \"annotations\" array: the reference format, one figure per image"
        pairs = _reference_pairs(names)

    accepted: list[ImageRecord] = []
    rows: list[list[list[float]]] = []
    boxes: list[list[float]] = []
    owners: list[int] = []
    for record in images.values():
        if record.id not in instances:
            continue  # rejected by the format reader, already reported
        try:
            found = [(inst.points, instance_box(inst, names, record)) for inst in instances[record.id]]
        except RecordError as err:
            log.record(_where(record), str(err))
            continue
        for points, box in found:
            rows.append(points)
            boxes.append(box)
            owners.append(len(accepted))
        accepted.append(record)
    skipped = log.finish()

    table = torch.tensor(rows, dtype=torch.float32).reshape(len(rows), len(names), 3)
    visible = table[..., 2] > 0
    return KeypointSplit(
        annotation_file=file,
        image_dir=image_dir,
        images=tuple(accepted),
        keypoints=torch.where(visible.unsqueeze(-1), table[..., :2], 0.0),  # unlabelled points have no position
        visible=visible,
        keypoint_names=tuple(names),
        format=fmt,
        instance_image=torch.tensor(owners, dtype=torch.int64),
        boxes=torch.tensor(boxes, dtype=torch.float32).reshape(len(boxes), 4),
        symmetric_pairs=pairs,
        skipped=skipped,
        format_reason=reason,
    )


def _reference_pairs(names: Sequence[str]) -> tuple[tuple[int, int], ...]:
    # The stick figures draw both hands identically, from one angle distribution, so their labels can swap; each
    # foot always lies on its own side of the hip, so the feet are not a pair. Other names get the name rule.
    if "left_hand" in names and "right_hand" in names:
        return ((names.index("left_hand"), names.index("right_hand")),)
    return symmetric_pairs_from_names(names)


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
) -> tuple[dict[int, ImageRecord], dict[int, list[Instance]], list[str]]:
    """Images, the one figure per image id (``[x, y, 1]`` rows, box the whole image), and keypoint names from a
    reference-format file."""
    raw_images = require_list(data, "images", file)
    names = _names(require_list(data, "keypoint_names", file), file, "\"keypoint_names\"")
    if "num_keypoints" not in data:
        raise DataError(f"{file}: missing top-level key \"num_keypoints\" (found keys: {sorted(data)}).")
    count = data["num_keypoints"]
    if isinstance(count, bool) or not isinstance(count, int) or count != len(names):
        raise DataError(f"{file}: \"num_keypoints\" is {count!r} but \"keypoint_names\" lists {len(names)} names.")

    images, _ = parse_images(raw_images, image_dir, REFERENCE_IMAGE_SIZE, log, check_images)
    figures: dict[int, list[Instance]] = {}
    for index, raw in enumerate(raw_images):
        image_id = raw.get("id") if isinstance(raw, dict) else None
        if type(image_id) is not int or image_id not in images or image_id in figures:
            continue  # bad image (already reported) or a later duplicate of its id
        try:
            points = raw.get("keypoints")
            if not isinstance(points, list):
                raise RecordError(f"\"keypoints\" is a JSON {json_type(points)}, expected an array of [x, y]")
            if len(points) != len(names):
                raise RecordError(f"has {len(points)} keypoints, expected {len(names)} (num_keypoints)")
            rows = [finite_numbers(p, 2, f"keypoint {k} ({names[k]})") + [1.0] for k, p in enumerate(points)]
        except RecordError as err:
            log.record(image_where(raw, index), str(err))
            continue
        record = images[image_id]
        # One figure drawn on its own image: the whole image is its box.
        figures[image_id] = [Instance(rows, bbox=[0.0, 0.0, float(record.width), float(record.height)])]
    return images, figures, names


def _read_coco(
    data: dict[str, Any], file: Path, image_dir: Path, log: ProblemLog, check_images: bool
) -> tuple[dict[int, ImageRecord], dict[int, list[Instance]], list[str], str]:
    """Images, the instances of each image id (``[x, y, v]`` rows, possibly none), keypoint names, and the format
    reason (which says what was dropped as not an instance) from a COCO keypoints file."""
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
    found: dict[int, list[Instance]] = {}
    bad_images: set[int] = set()
    seen_ids: set[int] = set()
    crowds = unlabelled = 0
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
                continue  # another category's object: not an instance
            if image is None:
                if image_id in declared:
                    continue  # its image was bad and is already reported
                raise RecordError(f"image_id {image_id} is not an id in \"images\"")
            crowd = ann.get("iscrowd", 0)
            if crowd not in (0, 1):  # True and False compare equal to 1 and 0, as JSON writers mean them
                raise RecordError(f"\"iscrowd\" is {crowd!r}, expected 0 or 1")
            if crowd:
                crowds += 1
                continue  # a crowd region has no keypoints of its own
            flat = finite_numbers(ann.get("keypoints"), 3 * len(names), f"keypoints (3 x {len(names)} values)")
            if any(v not in (0.0, 1.0, 2.0) for v in flat[2::3]):
                raise RecordError(f"keypoint visibility flags {flat[2::3]} must each be 0, 1 or 2")
            bbox = ann.get("bbox")
            bbox = None if bbox is None else finite_numbers(bbox, 4, "bbox")
        except RecordError as err:
            log.record(where, str(err))
            if image_id is not None:
                bad_images.add(image_id)
            continue
        if not any(flat[2::3]):
            unlabelled += 1
            continue  # nothing to learn or score: COCO keeps such small or distant people with num_keypoints 0
        points = [flat[i : i + 3] for i in range(0, len(flat), 3)]
        found.setdefault(image_id, []).append(Instance(points, bbox, f"annotation id {ann_id}"))

    instances = {image_id: found.get(image_id, []) for image_id in images if image_id not in bad_images}
    reason = "top-level \"annotations\" array: COCO keypoints"
    if crowds or unlabelled:
        dropped = f"dropped {crowds} crowd annotation(s) and {unlabelled} annotation(s) without labelled keypoints"
        logger.info("%s: %s", file, dropped)
        reason += f"; {dropped}"
    return images, instances, names, reason
