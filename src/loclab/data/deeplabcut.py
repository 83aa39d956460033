"""DeepLabCut projects: the labelled frames of a single-animal project, read into a :class:`KeypointSplit`.

Project layout (what DeepLabCut's labelling GUI writes)::

    ROOT/config.yaml                                          bodyparts: [snout, leftear, rightear, ...]
    ROOT/labeled-data/<video>/CollectedData_<scorer>.csv      the labels, read here
    ROOT/labeled-data/<video>/CollectedData_<scorer>.h5       the same table for pandas: ignored
    ROOT/labeled-data/<video>/img005.png                      the frames, any size
    ROOT/split.json                                           optional: {"train": [paths], "val": [paths]}

A ``CollectedData`` CSV has three header rows and one row per frame; the frame's path relative to ROOT is either
the first cell or, as newer DeepLabCut versions write it, split over three index columns::

    scorer,me,me,me,me                                scorer,,,me,me
    bodyparts,snout,snout,leftear,leftear             bodyparts,,,snout,snout
    coords,x,y,x,y                                    coords,,,x,y
    labeled-data/video1/img005.png,12.5,40.2,,        labeled-data,video1,img005.png,12.5,40.2

An empty (or ``NaN``) cell is a bodypart not labelled on that frame. Coordinates are image pixels where integer
``x`` is the centre of pixel column ``x`` (DeepLabCut labels on matplotlib's ``imshow``, which puts pixel centres
at integers), i.e. loclab's pixel-centre convention, unchanged. Messages name a frame by its CSV row, counted
from 1 with the header rows, as a spreadsheet shows it: ``row 7 ("labeled-data/video1/img005.png")``.

Multi-animal projects (``multianimalproject: true``, a fourth ``individuals`` header row) are refused with a
clear :class:`DataError`: they need per-animal instances, which this reader does not build yet.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import torch
from PIL import Image, UnidentifiedImageError

from loclab.data.errors import DataError, ProblemLog, RecordError
from loclab.data.formats import ImageRecord, check_image_file, read_json_file, read_yaml_file
from loclab.data.formats_keypoints import KeypointSplit
from loclab.data.instances import Instance, instance_box
from loclab.data.skeleton import symmetric_pairs_from_names

HEADER = ("scorer", "bodyparts", "coords")
VAL_EVERY = 5  # without split.json, frame i (sorted path order) is a val frame when i % VAL_EVERY == VAL_EVERY - 1
_MISSING = ("", "nan")  # what a CSV cell of an unlabelled bodypart holds (pandas writes NaN as an empty cell)


@dataclass(frozen=True)
class _Row:
    """One frame row of a CollectedData CSV: its file, 1-based row number, image path, ``(x, y)`` text per bodypart
    in config order."""

    csv: Path
    number: int
    path: str
    cells: list[tuple[str, str]]

    @property
    def where(self) -> str:
        return f"row {self.number} (\"{self.path}\")"

    @property
    def labelled(self) -> bool:
        return any(c.strip().lower() not in _MISSING for pair in self.cells for c in pair)


def load_deeplabcut_split(
    root: Path | str,
    split: Literal["train", "val"],
    *,
    skip_bad: bool = False,
    check_images: bool = True,
) -> KeypointSplit:
    """Read the labelled frames of the DeepLabCut project at ``root`` that belong to ``split``.

    Every frame is one instance whose box is the whole image ``[0, 0, W, H]``: DeepLabCut frames come from a fixed
    camera framing one animal, so the frame is the instance, which is also what prediction uses on a new frame.
    ``keypoint_names`` are the config's bodyparts; ``symmetric_pairs`` follow from their names
    (:func:`~loclab.data.skeleton.symmetric_pairs_from_names`); ``annotation_file`` is the first CSV in sorted
    order and ``image_dir`` is ``root`` (image file names are the paths relative to it).

    Split: ``root/split.json`` when it exists, else every 5th labelled frame in sorted path order
    (index ``% 5 == 4``) is val and the rest train, so the split is the same on every machine. Frames without any
    labelled bodypart are dropped (counted in ``format_reason``). Image ids are positions in the sorted list of
    all labelled frames, so train and val ids never collide. The CSVs name no image size, so each frame's header is
    read even with ``check_images=False``, which only skips the full integrity check of
    :func:`~loclab.data.formats.check_image_file`.

    Raises :class:`DataError` naming the file and the record: a missing or malformed ``config.yaml`` or
    ``split.json``, a CSV with wrong header rows, bodyparts other than the config's or an odd number of coordinate
    columns (file-level, always raised); a row with a non-numeric cell, half a point, a missing / unreadable image,
    or a point outside the image (record-level: with ``skip_bad=True`` the frame is dropped, with one
    :class:`~loclab.data.errors.DataWarning` and the messages in ``skipped``).
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    root = Path(root)
    bodyparts = read_bodyparts(root / "config.yaml")
    files = collected_data_files(root)
    logs = {file: ProblemLog(file, skip_bad) for file in files}
    rows: dict[str, _Row] = {}
    listed: set[str] = set()  # every row's path, rejected rows included, which split.json may name
    for file in files:
        table, paths = _read_table(file, bodyparts, logs[file])
        listed |= paths
        for row in table:
            if row.path in rows:
                first = rows[row.path]
                logs[file].record(row.where, f"duplicate row for this image (first at {first.csv} row {first.number})")
            else:
                rows[row.path] = row
    labelled = sorted(path for path, row in rows.items() if row.labelled)
    if not labelled:
        if not skip_bad:
            _finish(logs, skip_bad)  # rows rejected above may be why nothing is left: name the first of them
        raise DataError(f"{root}: no labelled frame in {len(files)} CollectedData CSV(s); label frames first.")
    chosen, rule = _choose(root, split, labelled, listed)

    image_id = {path: i for i, path in enumerate(labelled)}
    records: list[ImageRecord] = []
    points: list[list[list[float]]] = []
    boxes: list[list[float]] = []
    for path in chosen:
        row = rows[path]
        try:
            record, instance = _frame(root, row, image_id[path], bodyparts, check_images)
            boxes.append(instance_box(instance, bodyparts, record))
        except RecordError as err:
            logs[row.csv].record(row.where, str(err))
            continue
        records.append(record)
        points.append(instance.points)
    skipped = _finish(logs, skip_bad)

    table = torch.tensor(points, dtype=torch.float32).reshape(len(points), len(bodyparts), 3)
    visible = table[..., 2] > 0
    dropped = len(rows) - len(labelled)
    return KeypointSplit(
        annotation_file=files[0],
        image_dir=root,
        images=tuple(records),
        keypoints=torch.where(visible.unsqueeze(-1), table[..., :2], 0.0),
        visible=visible,
        keypoint_names=tuple(bodyparts),
        format="deeplabcut",
        instance_image=torch.arange(len(records), dtype=torch.int64),
        boxes=torch.tensor(boxes, dtype=torch.float32).reshape(len(boxes), 4),
        symmetric_pairs=symmetric_pairs_from_names(bodyparts),
        skipped=skipped,
        format_reason=(f"DeepLabCut project {root}: {len(files)} CollectedData CSV(s) with {len(labelled)} labelled "
                       f"frame(s); {rule}; {dropped} frame(s) without any labelled bodypart dropped"),
    )


def read_bodyparts(config: Path) -> list[str]:
    """The ``bodyparts`` list of a DeepLabCut ``config.yaml``: non-empty, unique strings, in the config's order.

    Raises :class:`DataError` for a missing or unparsable file, a missing or malformed list, and multi-animal
    projects (not supported yet).
    """
    if not config.is_file():
        raise DataError(f"{config}: does not exist; a DeepLabCut project root holds config.yaml and labeled-data/.")
    data = read_yaml_file(config)
    if not isinstance(data, dict):
        raise DataError(f"{config}: top level is {type(data).__name__}, expected a mapping with \"bodyparts\".")
    if data.get("multianimalproject") or data.get("bodyparts") == "MULTI!":
        raise _multi_animal(config)
    names = data.get("bodyparts")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        raise DataError(f"{config}: \"bodyparts\" is {names!r}, expected a non-empty list of names.")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise DataError(f"{config}: \"bodyparts\" lists {', '.join(repeated)} more than once.")
    return names


def collected_data_files(root: Path) -> list[Path]:
    """``root/labeled-data/*/CollectedData_*.csv`` in sorted order, one per video folder.

    A folder with several such CSVs (labels of several scorers) must hold one named after the config's
    ``scorer``, which is then the one read. Folders without a CSV (frames extracted, not yet labelled) are ignored.
    """
    folder = root / "labeled-data"
    found = sorted(folder.glob("*/CollectedData_*.csv"))
    if not found:
        raise DataError(f"{folder}: no labeled-data/<video>/CollectedData_<scorer>.csv; label frames in DeepLabCut "
                        "first (loclab reads the CSV, not the .h5 file).")
    by_video: dict[Path, list[Path]] = {}
    for file in found:
        by_video.setdefault(file.parent, []).append(file)
    chosen = []
    for video, files in by_video.items():
        if len(files) > 1:
            scorer = _config_scorer(root / "config.yaml")
            files = [f for f in files if f.name == f"CollectedData_{scorer}.csv"]
            if len(files) != 1:
                names = ", ".join(f.name for f in by_video[video])
                raise DataError(f"{video}: holds several label files ({names}) and none is CollectedData_{scorer}.csv "
                                "for the config's scorer; keep one.")
        chosen.append(files[0])
    return chosen


def _config_scorer(config: Path) -> str:
    data = read_yaml_file(config)  # already parsed once by read_bodyparts
    return str(data.get("scorer", ""))


def _multi_animal(file: Path) -> DataError:
    return DataError(f"{file}: a multi-animal DeepLabCut project; loclab reads single-animal projects (one labelled "
                     "animal per frame) and does not support multi-animal ones yet.")


def _read_table(file: Path, bodyparts: Sequence[str], log: ProblemLog) -> tuple[list[_Row], set[str]]:
    """The frame rows of one CollectedData CSV, cells reordered to ``bodyparts``, and the paths of all its rows.

    Header problems raise :class:`DataError`; a row whose path or cell count is wrong is logged and left out."""
    try:
        text = file.read_text(encoding="utf-8-sig")  # spreadsheet programs add a byte-order mark
    except UnicodeDecodeError as err:
        raise log.fail(f"is not UTF-8 text ({err.reason} at byte {err.start}).") from None
    except OSError as err:
        raise log.fail(f"cannot be read ({err.strerror}).") from None
    try:
        table = list(csv.reader(text.splitlines()))
    except csv.Error as err:
        raise log.fail(f"malformed CSV: {err}.") from None
    index_columns, columns = _parse_header(table, bodyparts, log)
    width = index_columns + 2 * len(bodyparts)
    rows, paths = [], set()
    for number, cells in enumerate(table[len(HEADER):], start=len(HEADER) + 1):
        if not any(c.strip() for c in cells):
            continue  # a blank line
        path = "/".join(cells[:index_columns]).replace("\\", "/")  # Windows projects write backslashes
        paths.add(path)
        try:
            if len(cells) != width:
                raise RecordError(f"has {len(cells)} cells, expected {width} (path and x, y per bodypart)")
            pure = PurePosixPath(path)
            if (not all(cells[:index_columns]) or not pure.parts or pure.is_absolute() or ".." in pure.parts
                    or ":" in pure.parts[0]):  # a Windows drive
                raise RecordError(f"image path {path!r} is not a path relative to the project root")
        except RecordError as err:
            log.record(f"row {number} (\"{path}\")", str(err))
            continue
        rows.append(_Row(file, number, path, [(cells[columns[b]], cells[columns[b] + 1]) for b in bodyparts]))
    return rows, paths


def _parse_header(table: list[list[str]], bodyparts: Sequence[str], log: ProblemLog) -> tuple[int, dict[str, int]]:
    """``(number of index columns, column of each bodypart's x)`` from the three header rows; DataError otherwise."""
    if len(table) > 1 and table[1][:1] == ["individuals"]:
        raise _multi_animal(log.file)
    firsts = [row[0] if row else "" for row in table[: len(HEADER)]]
    if firsts != list(HEADER):
        raise log.fail(f"header rows start with {firsts}, expected {list(HEADER)} (a DeepLabCut CollectedData table).")
    scorer, parts, coords = table[: len(HEADER)]
    if not (len(scorer) == len(parts) == len(coords)):
        raise log.fail(f"header rows have {len(scorer)}, {len(parts)} and {len(coords)} cells; expected equal counts.")
    index_columns = next((i for i, c in enumerate(coords[1:], start=1) if c), len(coords))
    if index_columns not in (1, 3):
        raise log.fail(f"has {index_columns} image path column(s), expected 1 (the path) or 3 (labeled-data, video, "
                       "file name).")
    data = len(coords) - index_columns
    if data % 2:
        raise log.fail(f"has an odd number ({data}) of coordinate columns; expected an x and a y column per bodypart.")
    columns: dict[str, int] = {}
    for c in range(index_columns, len(coords), 2):
        name = parts[c]
        if coords[c : c + 2] != ["x", "y"] or parts[c + 1] != name:
            raise log.fail(f"columns {c + 1}-{c + 2} are {parts[c:c + 2]} / {coords[c:c + 2]}; expected one bodypart "
                           "with coords x, y (a likelihood column means a prediction file, not labels).")
        if name in columns:
            raise log.fail(f"bodypart \"{name}\" has more than one x, y column pair.")
        columns[name] = c
    if set(columns) != set(bodyparts):
        missing = [b for b in bodyparts if b not in columns]
        extra = [b for b in columns if b not in bodyparts]
        raise log.fail(f"bodyparts do not match config.yaml: missing {missing}, not in config.yaml {extra}.")
    return index_columns, columns


def _choose(root: Path, split: str, labelled: list[str], known: set[str]) -> tuple[list[str], str]:
    """The labelled frame paths of ``split`` (sorted) and a sentence saying how they were chosen."""
    file = root / "split.json"
    if not file.exists():
        chosen = [p for i, p in enumerate(labelled) if (i % VAL_EVERY == VAL_EVERY - 1) == (split == "val")]
        return chosen, (f"no split.json: val is every {VAL_EVERY}th labelled frame in sorted path order "
                        f"(index % {VAL_EVERY} == {VAL_EVERY - 1}), train the rest")
    lists = _split_lists(read_json_file(file, "split file"), file)
    both = sorted(set(lists["train"]) & set(lists["val"]))
    if both:
        raise DataError(f"{file}: {len(both)} path(s) are in both \"train\" and \"val\", e.g. \"{both[0]}\".")
    unknown = sorted(set(lists["train"] + lists["val"]) - known)
    if unknown:
        raise DataError(f"{file}: {len(unknown)} path(s) are no row of any CollectedData CSV, e.g. \"{unknown[0]}\".")
    wanted = set(lists[split])
    unused = len(set(labelled) - set(lists["train"]) - set(lists["val"]))
    rule = f"split from {file}" + (f" ({unused} labelled frame(s) in neither list)" if unused else "")
    return [p for p in labelled if p in wanted], rule


def _split_lists(data: Any, file: Path) -> dict[str, list[str]]:
    if not isinstance(data, dict) or not {"train", "val"} <= set(data):
        raise DataError(f"{file}: expected an object {{\"train\": [paths], \"val\": [paths]}}.")
    lists = {}
    for key in ("train", "val"):
        value = data[key]
        if not isinstance(value, list) or not all(isinstance(p, str) and p for p in value):
            raise DataError(f"{file}: \"{key}\" is {value!r:.80}, expected an array of image paths relative to the "
                            "project root.")
        lists[key] = [p.replace("\\", "/") for p in value]
    return lists


def _frame(root: Path, row: _Row, image_id: int, bodyparts: Sequence[str], check_images: bool
           ) -> tuple[ImageRecord, Instance]:
    """The image record (size from the file's header) and the frame's instance; :class:`RecordError` if bad."""
    points = [_point(x, y, name) for (x, y), name in zip(row.cells, bodyparts)]
    path = root / row.path
    if not path.is_file():
        raise RecordError(f"image file {path} does not exist")
    try:
        with Image.open(path) as image:
            width, height = image.size
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as err:
        raise RecordError(f"image file {path} is not a readable image ({err})") from None
    record = ImageRecord(image_id, row.path, path, width, height)
    if check_images:
        check_image_file(record)
    # A fixed camera frames one animal: the frame is the instance.
    return record, Instance(points, bbox=[0.0, 0.0, float(width), float(height)])


def _point(x: str, y: str, name: str) -> list[float]:
    """``[x, y, 1]`` for a labelled bodypart, ``[0, 0, 0]`` for two empty cells; :class:`RecordError` otherwise."""
    empty = [c.strip().lower() in _MISSING for c in (x, y)]
    if all(empty):
        return [0.0, 0.0, 0.0]
    if any(empty):
        raise RecordError(f"bodypart \"{name}\" has x {x!r} and y {y!r}; expected both or neither")
    values = []
    for axis, text in (("x", x), ("y", y)):
        try:
            value = float(text)
        except ValueError:
            raise RecordError(f"bodypart \"{name}\" {axis} is {text!r}, expected a number or an empty cell") from None
        if not math.isfinite(value):
            raise RecordError(f"bodypart \"{name}\" {axis} is {text!r}, expected a finite number")
        values.append(value)
    return [*values, 1.0]


def _finish(logs: dict[Path, ProblemLog], skip_bad: bool) -> tuple[str, ...]:
    """One verdict for all CSVs of the project: raise the first problem, or warn once and return every message."""
    messages = [m for log in logs.values() for m in log.messages]
    if not messages:
        return ()
    first_file = next(file for file, log in logs.items() if log.messages)
    combined = ProblemLog(first_file, skip_bad)
    combined.messages = messages
    return combined.finish()
