"""Finding a COCO dataset's files in a folder, and giving its train and val splits one label mapping.

Layouts recognised (``instances`` for detection, ``person_keypoints`` for keypoints)::

    DIR/annotations/instances_train*.json, DIR/annotations/instances_val*.json     (COCO's own)
    DIR/train/_annotations.coco.json, DIR/valid/_annotations.coco.json              (Roboflow's COCO export; val/ too)

The images of a split are where the annotation file's ``file_name`` values point, relative to the first of
``DIR/images/<name>/``, ``DIR/<name>/`` (``<name>`` = the file's stem after ``instances_``, e.g. ``train2017``),
``DIR/images/``, ``DIR/images/<split>*/``, ``DIR/<split>*/``, the annotation file's folder, ``DIR`` in which the
split's first three images exist. Only the start of the annotation file is read to find those names (COCO's
train file is 450 MB; ``images`` comes first in it), so the file is parsed once, by the reader.

COCO category ids need not be contiguous (1..90); labels are the positions of the ids in sorted order. A split's
file may list fewer categories than the other split's, which would shift its labels, so
:func:`unify_categories` maps both splits through the union of both files' categories, and refuses files that give
one id two different names.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import torch

from loclab.data.errors import DataError
from loclab.data.formats import read_json_object
from loclab.data.formats_detection import DetectionSplit, load_detection_annotations

__all__ = ["COCO_LOOKS_FOR", "CocoLayout", "find_coco", "load_coco_detection_split", "unify_categories"]

Task = Literal["detection", "keypoints"]
PREFIXES = {"detection": "instances", "keypoints": "person_keypoints"}
ROBOFLOW_FILE = "_annotations.coco.json"
ROBOFLOW_DIRS = {"train": ("train",), "val": ("valid", "val")}
COCO_LOOKS_FOR = ("annotations/{prefix}_train*.json and {prefix}_val*.json (COCO), or train/ and valid/ holding "
                  f"{ROBOFLOW_FILE} (Roboflow COCO)")
_HEAD_BYTES = 1 << 20  # how much of an annotation file is searched for the first image file names
_FILE_NAME = re.compile(r'"file_name"\s*:\s*"((?:[^"\\]|\\.)*)"')
_CATEGORIES = re.compile(r'"categories"\s*:\s*')


@dataclass(frozen=True)
class CocoLayout:
    """A COCO dataset's annotation file per split and its image folder (None: not found, the loader says so)."""

    root: Path
    task: Task
    files: dict[str, Path]
    image_dirs: dict[str, Path | None]
    reason: str


def find_coco(root: Path | str, task: Task) -> CocoLayout | None:
    """The COCO layout of ``root`` for ``task``, or None if there is none (see :data:`COCO_LOOKS_FOR`).

    Raises :class:`DataError` when the annotation files are there but ambiguous or incomplete: several files match
    a split, or only one split has a file.
    """
    root = Path(root)
    prefix = PREFIXES[task]
    folder = root / "annotations"
    found = {s: sorted(folder.glob(f"{prefix}_{s}*.json")) if folder.is_dir() else [] for s in ("train", "val")}
    where = f"annotations/{prefix}_<split>*.json"
    if not any(found.values()):
        found = {s: [root / d / ROBOFLOW_FILE for d in ROBOFLOW_DIRS[s] if (root / d / ROBOFLOW_FILE).is_file()][:1]
                 for s in ("train", "val")}
        where = f"<split>/{ROBOFLOW_FILE} (Roboflow COCO export)"
    if not any(found.values()):
        return None
    for split, files in found.items():
        if len(files) > 1:
            raise DataError(f"{root}: several COCO {split} files match {where}: {', '.join(f.name for f in files)}; "
                            "keep one per split in that folder.")
        if not files:
            (have,) = (s for s in found if found[s])
            raise DataError(f"{found[have][0]}: found, but no COCO {split} file next to it (looked for {where}).")
    files = {s: f[0] for s, f in found.items()}
    image_dirs = {s: _image_dir(root, files[s], prefix, s) for s in files}
    shown = " and ".join(str(f.relative_to(root)) for f in files.values())
    images = ", ".join(f"{s} images in {_shown(root, d)}" if d else f"{s} images not found"
                       for s, d in image_dirs.items())
    reason = f"COCO layout: {shown}; {images}"
    return CocoLayout(root, task, files, image_dirs, reason)


def image_dir_of(layout: CocoLayout, split: str) -> Path:
    """The image folder of ``split``, or :class:`DataError` listing where the images were looked for."""
    found = layout.image_dirs[split]
    if found is None:
        file = layout.files[split]
        names = _first_file_names(file)
        tried = ", ".join(_shown(layout.root, d) for d in _candidates(layout.root, file, PREFIXES[layout.task], split))
        raise DataError(f"{file}: cannot find the {split} images: \"{names[0] if names else '?'}\" is in none of "
                        f"{tried}.")
    return found


def load_coco_detection_split(
    root: Path | str, split: Literal["train", "val"], *, skip_bad: bool = False, layout: CocoLayout | None = None
) -> DetectionSplit:
    """Read the ``split`` of the COCO detection dataset at ``root`` (bbox ``[x, y, w, h]``) with
    :func:`load_detection_annotations`, labels mapped through both splits' categories (:func:`unify_categories`).
    ``format`` is ``"coco"``; ``format_reason`` starts with the layout's reason."""
    layout = layout or find_coco(root, "detection")
    if layout is None:
        raise DataError(f"{root}: no COCO dataset here (looked for {COCO_LOOKS_FOR.format(prefix='instances')}).")
    file = layout.files[split]
    loaded = load_detection_annotations(file, image_dir_of(layout, split), box_format="xywh", skip_bad=skip_bad)
    loaded = unify_categories(loaded, layout.files["val" if split == "train" else "train"])
    return replace(loaded, format_reason=f"{layout.reason}; {loaded.format_reason}")


def unify_categories(split: DetectionSplit, other_file: Path) -> DetectionSplit:
    """``split`` with labels over the union of its categories and those of ``other_file`` (the other split's
    annotation file), so train and val agree on every label. Unchanged when the other file lists no category the
    split lacks, or cannot be read (its own loading reports that).

    Raises :class:`DataError` when the two files give one category id different names.
    """
    other = _categories(Path(other_file))
    mine = dict(zip(split.category_ids, (split.categories[label] for label in range(len(split.category_ids)))))
    for cat_id in sorted(mine.keys() & other.keys()):
        if mine[cat_id] != other[cat_id]:
            raise DataError(f"{split.annotation_file}: category id {cat_id} is \"{mine[cat_id]}\", but {other_file} "
                            f"names it \"{other[cat_id]}\"; train and val must use the same categories.")
    union = sorted(mine.keys() | other.keys())
    if union == list(split.category_ids):
        return split
    new_label = torch.tensor([union.index(cat_id) for cat_id in split.category_ids], dtype=torch.int64)
    names = {**other, **mine}
    return replace(
        split,
        labels=tuple(new_label[labels] for labels in split.labels),
        categories={label: names[cat_id] for label, cat_id in enumerate(union)},
        category_ids=tuple(union),
    )


def _categories(file: Path) -> dict[int, str]:
    """``{id: name}`` of a COCO file's categories; {} when the file is missing or unreadable.

    COCO files end with their (small) ``categories`` array, so it is decoded from its key onwards before falling
    back to parsing the whole file."""
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return {}
    raw = None
    key = _CATEGORIES.match(text, max(text.rfind('"categories"'), 0))
    if key is not None:
        try:
            raw, _ = json.JSONDecoder().raw_decode(text, key.end())
        except (ValueError, RecursionError):
            raw = None
    if not isinstance(raw, list):
        try:
            raw = read_json_object(file).get("categories")
        except DataError:
            return {}
    names = {}
    for cat in raw if isinstance(raw, list) else []:
        if isinstance(cat, dict) and isinstance(cat.get("id"), int) and not isinstance(cat.get("id"), bool):
            name = cat.get("name", str(cat["id"]))
            names[cat["id"]] = name if isinstance(name, str) else str(name)
    return names


def _first_file_names(file: Path, count: int = 3) -> list[str]:
    """The first ``count`` image ``file_name`` values of a COCO file, from its first megabyte when they are there."""
    try:
        with file.open("rb") as stream:
            head = stream.read(_HEAD_BYTES).decode("utf-8", errors="ignore")
    except OSError:
        return []
    names = []
    for match in _FILE_NAME.findall(head)[:count]:
        try:
            names.append(json.loads(f'"{match}"'))
        except ValueError:  # an invalid escape: the reader will report the file
            return []
    if names:
        return names
    try:
        images = read_json_object(file).get("images")
    except DataError:
        return []
    if not isinstance(images, list):
        return []
    return [im["file_name"] for im in images[:count] if isinstance(im, dict) and isinstance(im.get("file_name"), str)]


def _candidates(root: Path, file: Path, prefix: str, split: str) -> list[Path]:
    name = file.stem.removeprefix(f"{prefix}_")
    listed = [root / "images" / name, root / name, root / "images",
              *sorted(root.glob(f"images/{split}*")), *sorted(root.glob(f"{split}*")), file.parent, root]
    return [d for d in dict.fromkeys(listed) if d.is_dir()]


def _image_dir(root: Path, file: Path, prefix: str, split: str) -> Path | None:
    names, candidates = _first_file_names(file), _candidates(root, file, prefix, split)
    if not names:  # a split without images, or a file the reader will refuse: any folder will do
        return candidates[0] if candidates else root
    return next((d for d in candidates if all((d / n).is_file() for n in names)), None)


def _shown(root: Path, folder: Path) -> str:
    return "the dataset folder" if folder == root else f"{folder.relative_to(root).as_posix()}/"
