"""Annotation files: the reading, validation and writing pieces that detection and keypoints share.

The task readers live beside this module and are imported from there: :mod:`loclab.data.formats_detection`
(shapes reference format and COCO detection) and :mod:`loclab.data.formats_keypoints` (stick-figure reference
format and COCO keypoints). The formats themselves are described in docs/data-formats.md.

Annotation files are written with :func:`loclab.atomic.write_json_atomic`: one JSON object on a single line
(``", "`` / ``": "`` separators as in the examples of docs/data-formats.md, keys in a fixed order, no NaN), then a
newline, through a temporary file so that a crash never leaves half a file behind.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from PIL import Image, UnidentifiedImageError

from loclab.data.errors import DataError, ProblemLog, RecordError
from loclab.data.images import oriented_size

ANNOTATION_SUFFIX = "_annotations.json"
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


@dataclass(frozen=True)
class ImageRecord:
    """One image of a split. ``path`` is ``image_dir / file_name``; ``width``/``height`` in pixels as declared
    by the file (or the reference default when the file declares none), checked against the PNG header when
    the reader was asked to check images."""

    id: int
    file_name: str
    path: Path
    width: int
    height: int


def read_json_file(path: Path, kind: str = "annotation file") -> Any:
    """Parse ``path`` as JSON; every way that fails raises :class:`DataError` naming the file.

    Missing file, directory, non-UTF-8 bytes, empty file and malformed JSON (with line and column) are
    file-level problems: they raise regardless of ``skip_bad``. ``kind`` names the file in messages.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: {kind} does not exist.")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a {kind} (JSON).")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: is not UTF-8 text ({err.reason} at byte {err.start}).") from None
    except OSError as err:
        raise DataError(f"{path}: cannot be read ({err.strerror}).") from None
    if not text.strip():
        raise DataError(f"{path}: is empty, expected JSON.")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: malformed JSON at line {err.lineno}, column {err.colno}: {err.msg}.") from None
    except (ValueError, RecursionError) as err:  # an integer of over 4300 digits, arrays nested too deeply
        raise DataError(f"{path}: malformed JSON: {err}.") from None


def read_json_object(path: Path) -> dict[str, Any]:
    """:func:`read_json_file` whose top level must be an object (annotation files)."""
    data = read_json_file(path)
    if not isinstance(data, dict):
        raise DataError(f"{path}: top level is a JSON {json_type(data)}, expected an object.")
    return data


def read_json_list(path: Path, kind: str, expected: str) -> list[Any]:
    """:func:`read_json_file` whose top level must be a list (prediction files); ``expected`` describes a record."""
    data = read_json_file(path, kind)
    if not isinstance(data, list):
        raise DataError(f"{path}: top level is a JSON {json_type(data)}, expected a list of {expected}.")
    return data


def read_yaml_file(path: Path) -> Any:
    """Parse ``path`` as YAML (``yaml.safe_load``; an empty file is ``None``).

    Non-UTF-8 bytes and malformed YAML (with line and column where YAML knows them) raise :class:`DataError`
    naming the file; a file that cannot be read raises its ``OSError``, for the caller to word.
    """
    try:
        return yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: is not UTF-8 text ({err.reason} at byte {err.start}).") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise DataError(f"{path}: malformed YAML{at}: {problem}.") from None


def default_image_dir(annotation_file: Path) -> Path:
    """Where a split's images live when the caller gives no directory.

    ``<root>/train_annotations.json`` -> ``<root>/train/`` (the reference layout); any other file name ->
    the file's own directory.
    """
    annotation_file = Path(annotation_file)
    if annotation_file.name.endswith(ANNOTATION_SUFFIX):
        return annotation_file.with_name(annotation_file.name[: -len(ANNOTATION_SUFFIX)])
    return annotation_file.parent


def json_type(value: Any) -> str:
    """The JSON name of a parsed value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "array", dict: "object"}.get(type(value), type(value).__name__)


def require_list(data: Mapping[str, Any], key: str, file: Path) -> list[Any]:
    """Top-level ``data[key]`` must be an array; anything else is a file-level :class:`DataError`."""
    if key not in data:
        raise DataError(f"{file}: missing top-level key \"{key}\" (found keys: {sorted(data)}).")
    value = data[key]
    if not isinstance(value, list):
        raise DataError(f"{file}: top-level \"{key}\" is a JSON {json_type(value)}, expected an array.")
    return value


def field_int(record: Mapping[str, Any], key: str) -> int:
    """``record[key]`` as an int (JSON integer, not boolean, not float); :class:`RecordError` otherwise."""
    if key not in record:
        raise RecordError(f"missing key \"{key}\"")
    value = record[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise RecordError(f"\"{key}\" is {value!r} ({json_type(value)}), expected an integer")
    if not _INT64_MIN <= value <= _INT64_MAX:  # ids end up in int64 tensors and arrays
        raise RecordError(f"\"{key}\" is an integer of {len(str(abs(value)))} digits, outside the 64-bit range")
    return value


def field_str(record: Mapping[str, Any], key: str) -> str:
    """``record[key]`` as a non-empty string; :class:`RecordError` otherwise."""
    if key not in record:
        raise RecordError(f"missing key \"{key}\"")
    value = record[key]
    if not isinstance(value, str) or not value:
        raise RecordError(f"\"{key}\" is {value!r} ({json_type(value)}), expected a non-empty string")
    return value


def is_finite_number(value: Any) -> bool:
    """Whether ``value`` is a JSON number (not a boolean) that is a finite float: not NaN, not infinite, and not an
    integer too large for a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond the float range
        return False


def finite_numbers(value: Any, length: int, what: str) -> list[float]:
    """``value`` as a list of exactly ``length`` finite numbers (ints or floats, not booleans, not NaN/inf)."""
    if not isinstance(value, list) or len(value) != length:
        shown = f"{len(value)} values" if isinstance(value, list) else f"a JSON {json_type(value)}"
        raise RecordError(f"{what} {value!r} is {shown}, expected {length} numbers")
    for item in value:
        if not is_finite_number(item):
            raise RecordError(f"{what} {value!r} contains {item!r}, expected finite numbers")
    return [float(v) for v in value]


def image_where(raw: Any, index: int) -> str:
    """How messages name an image record: ``image id 3 ("000003.png")``, or ``images[5]`` without a usable id."""
    if isinstance(raw, dict) and isinstance(raw.get("id"), int) and not isinstance(raw.get("id"), bool):
        name = raw.get("file_name")
        return f"image id {raw['id']}" + (f" (\"{name}\")" if isinstance(name, str) else "")
    return f"images[{index}]"


def image_record(raw: Any, image_dir: Path, default_size: tuple[int, int]) -> ImageRecord:
    """Validate one raw image entry (``id``, ``file_name``, optional ``width``/``height``) into a record.

    ``default_size`` is ``(width, height)`` used when the file declares neither (the reference formats
    do not always). Raises :class:`RecordError`.
    """
    if not isinstance(raw, dict):
        raise RecordError(f"is a JSON {json_type(raw)}, expected an object")
    image_id = field_int(raw, "id")
    file_name = field_str(raw, "file_name")
    size = []
    for key, default in zip(("width", "height"), default_size):
        value = field_int(raw, key) if key in raw else default
        if value <= 0:
            raise RecordError(f"\"{key}\" is {value}, expected a positive integer")
        size.append(value)
    return ImageRecord(image_id, file_name, Path(image_dir) / file_name, size[0], size[1])


def check_image_file(record: ImageRecord) -> None:
    """Check that the image exists, is an image PIL can identify, is complete, and has the declared size.

    Reads the header and walks the file's chunks and checksums (``verify``: catches truncated and corrupted files)
    without decoding pixels; pixels are decoded once, later, by the datasets. Raises :class:`RecordError`.

    The size compared is the one *after* EXIF orientation (:func:`loclab.data.images.image_size`): annotation
    tools label the displayed image, so that is what sizes and boxes refer to. A file that declares the stored,
    unturned size of an image whose orientation tag turns it is refused with a message saying so.
    """
    if not record.path.is_file():
        raise RecordError(f"image file {record.path} does not exist")
    try:
        with Image.open(record.path) as image:
            size, stored = oriented_size(image), image.size  # one open for both; image_size() would reopen
            image.verify()
        jpeg = image.format == "JPEG"
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as err:
        raise RecordError(f"image file {record.path} is not a readable image ({err})") from None
    if jpeg and not _ends_with_jpeg_marker(record.path):
        # PIL's verify() does not decode JPEG data, so a cut-off file would pass it and fail only when decoded
        raise RecordError(f"image file {record.path} is a truncated JPEG (no end-of-image marker): it cannot be "
                          "decoded completely")
    if size != (record.width, record.height) and stored == (record.width, record.height):
        raise RecordError(
            f"image file {record.path} is stored as {stored[0]}x{stored[1]}, but its EXIF orientation tag turns it "
            f"to {size[0]}x{size[1]} as displayed; the declared {record.width}x{record.height} is the unturned size. "
            "Sizes and boxes must refer to the displayed image (as annotation tools show it)"
        )
    if size != (record.width, record.height):
        raise RecordError(
            f"image file {record.path} is {size[0]}x{size[1]}, expected {record.width}x{record.height}"
        )


def _ends_with_jpeg_marker(path: Path) -> bool:
    """Whether the file ends with JPEG's end-of-image marker ``FF D9``, ignoring trailing padding (zero bytes,
    whitespace), which some cameras and tools append."""
    with open(path, "rb") as file:
        file.seek(0, os.SEEK_END)
        size = file.tell()
        for window in (65536, size):  # the whole file only when the last 64 KiB are all padding
            file.seek(max(0, size - window))
            tail = file.read().rstrip(b"\x00\r\n\t ")
            if tail or window >= size:
                return tail.endswith(b"\xff\xd9")
    return False


def parse_images(
    raw_images: list[Any],
    image_dir: Path,
    default_size: tuple[int, int],
    log: ProblemLog,
    check_images: bool,
) -> tuple[dict[int, ImageRecord], set[int]]:
    """Validate the ``images`` array. Returns (accepted records by id in file order, every id the file declares).

    A bad entry (wrong types, duplicate id, and with ``check_images`` a missing / unreadable / wrongly sized
    file) is logged and dropped; the declared ids let callers drop that image's annotations quietly instead of
    reporting them a second time as pointing to an unknown image.
    """
    images: dict[int, ImageRecord] = {}
    declared: set[int] = set()
    for index, raw in enumerate(raw_images):
        try:
            record = image_record(raw, image_dir, default_size)
            if record.id in declared:
                raise RecordError(f"duplicate image id {record.id}")
            declared.add(record.id)
            if check_images:
                check_image_file(record)
        except RecordError as err:
            log.record(image_where(raw, index), str(err))
            continue
        images[record.id] = record
    return images, declared

