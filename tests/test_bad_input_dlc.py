"""Bad DeepLabCut projects: every problem is one DataError line naming the file and the record (CSV row and
bodypart); record-level problems are skipped with a count by ``skip_bad=True``, project-level ones always raise."""

from __future__ import annotations

import csv
import json
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest

from keypoint_writers import NAMES, make_keypoint_dataset, write_deeplabcut
from loclab.data.deeplabcut import load_deeplabcut_split
from loclab.data.errors import DataError, DataWarning

FIRST_ROW = 4  # three header rows, then the frames in path order: frame j is on row 4 + j
CSV = "labeled-data/vid0/CollectedData_me.csv"


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A valid project of 8 frames (6 train, 2 val by split.json) in one video folder."""
    root = tmp_path_factory.mktemp("dlc") / "project"
    write_deeplabcut(make_keypoint_dataset(seed=3, n_train=6, n_val=2), root, split_file=True)
    return root


@pytest.fixture
def copy(project, tmp_path) -> Path:
    shutil.copytree(project, tmp_path / "project")
    return tmp_path / "project"


def edit_csv(root: Path, edit: Callable[[list[list[str]]], None]) -> None:
    path = root / CSV
    with path.open(newline="") as handle:
        table = list(csv.reader(handle))
    edit(table)
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows(table)


def set_cell(row: int, column: int, value: str) -> Callable[[list[list[str]]], None]:
    """Row numbers as messages count them (from 1, header included); column 0 is the path, 1/2 are nose x/y, ..."""
    return lambda table: table[row - 1].__setitem__(column, value)


def set_point(row: int, bodypart: str, x: str, y: str) -> Callable[[list[list[str]]], None]:
    """Both cells of ``bodypart`` on ``row`` (whether or not the frame labels it)."""
    column = 1 + 2 * NAMES.index(bodypart)
    return lambda table: table[row - 1].__setitem__(slice(column, column + 2), [x, y])


def append_row(path: str) -> Callable[[list[list[str]]], None]:
    """A copy of the first frame's row under another path."""
    return lambda table: table.append([path, *table[3][1:]])


def edit_text(relative: str, change: Callable[[str], str]) -> Callable[[Path], None]:
    return lambda root: (root / relative).write_text(change((root / relative).read_text()))


def one_line(message: str) -> None:
    assert "\n" not in message and "Traceback" not in message, message


# --------------------------------------------------------------------------------------------- record level

RECORD_CASES = {  # edit, the words every message must hold
    "non-numeric x": (set_point(5, "left_ear", "12,5px", "3"),
                      ["row 5", '"left_ear" x is \'12,5px\'', "a number or an empty cell"]),
    "infinite y": (set_point(4, "nose", "3", "inf"), ["row 4", 'bodypart "nose" y', "finite number"]),
    "half a point": (set_point(6, "tail_tip", "3", ""), ["row 6", '"tail_tip" has x', "both or neither"]),
    "point outside": (set_point(4, "nose", "500", "3"), ["row 4", "keypoint 0 (nose) [500, 3]", "the 96x72 image"]),
    "negative point": (set_point(7, "right_ear", "10", "-3"), ["row 7", "(right_ear) [10, -3] lies outside"]),
    "extra cell": (lambda t: t[7].append("1.0"), ["row 8", "has 16 cells, expected 15"]),
    "missing cells": (lambda t: t.__setitem__(4, t[4][:9]), ["row 5", "has 9 cells, expected 15"]),
    "absolute path": (append_row("/data/img0002.png"), ["row 12", "not a path relative to the project root"]),
    "parent path": (append_row("labeled-data/../img0002.png"), ["row 12", "not a path relative"]),
    "windows drive": (append_row("C:\\data\\img0002.png"), ["row 12", "'C:/data/img0002.png' is not a path"]),
    "duplicate row": (lambda t: t.append(list(t[3])), ["row 12", "duplicate row for this image", "row 4"]),
}
LEFT_IN = {"duplicate row": 6, "absolute path": 6, "parent path": 6, "windows drive": 6}  # train frames kept


@pytest.mark.parametrize("case", RECORD_CASES, ids=list(RECORD_CASES))
def test_bad_rows_are_named_and_skippable(copy, case):
    edit, words = RECORD_CASES[case]
    edit_csv(copy, edit)
    with pytest.raises(DataError) as info:
        load_deeplabcut_split(copy, "train")
    message = str(info.value)
    one_line(message)
    assert message.startswith(str(copy / CSV)) and "skip_bad=True" in message, message
    assert all(w in message for w in words), (words, message)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        split = load_deeplabcut_split(copy, "train", skip_bad=True)
    notes = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    assert len(notes) == 1 and "skipped 1 bad record(s)" in notes[0], notes
    assert split.num_skipped == 1 and str(copy / CSV) in split.skipped[0]
    # a bad frame row leaves 5 of the 6 train frames; an extra bad row leaves all 6
    assert len(split) == LEFT_IN.get(case, 5) == split.num_instances


def test_missing_image_is_named_and_skippable(copy):
    (copy / "labeled-data/vid0/img0001.png").unlink()
    with pytest.raises(DataError, match=r'CollectedData_me.csv: row 5 \("labeled-data/vid0/img0001.png"\): image file '
                                        r".*img0001.png does not exist"):
        load_deeplabcut_split(copy, "train")
    with pytest.warns(DataWarning):
        assert len(load_deeplabcut_split(copy, "train", skip_bad=True, check_images=False)) == 5


def test_broken_image_files_are_named(copy):
    (copy / "labeled-data/vid0/img0001.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match=r'row 5 \("labeled-data/vid0/img0001.png"\): image file .* not a readable'):
        load_deeplabcut_split(copy, "train", check_images=False)  # the size is needed either way
    (copy / "labeled-data/vid0/img0001.png").unlink()
    write_deeplabcut(make_keypoint_dataset(seed=3, n_train=6, n_val=2), copy / "again")
    png = (copy / "again/labeled-data/vid0/img0001.png").read_bytes()
    (copy / "labeled-data/vid0/img0001.png").write_bytes(png[: len(png) // 2])  # header fine, pixels cut
    assert len(load_deeplabcut_split(copy, "train", check_images=False)) == 6
    with pytest.raises(DataError, match=r"row 5 .*img0001.png"):
        load_deeplabcut_split(copy, "train")


def test_bad_rows_of_the_other_split_are_checked_when_it_is_loaded(copy):
    edit_csv(copy, set_point(11, "left_ear", "abc", "1"))  # img0007, a val frame
    assert len(load_deeplabcut_split(copy, "train")) == 6
    with pytest.raises(DataError, match=r'row 11 .*"left_ear" x is \'abc\''):
        load_deeplabcut_split(copy, "val")


def test_problems_in_several_csvs_give_one_warning(tmp_path):
    root = tmp_path / "project"
    write_deeplabcut(make_keypoint_dataset(seed=3, n_train=8, n_val=2), root, videos=2)
    for video in ("vid0", "vid1"):
        path = root / "labeled-data" / video / "CollectedData_me.csv"
        lines = path.read_text().splitlines()
        lines[3] = lines[3].replace(",", ",abc,", 1).rsplit(",", 1)[0]  # first frame's nose x unreadable
        path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"vid0/CollectedData_me.csv: row 4 .*\(1 more problem"):
        load_deeplabcut_split(root, "train")
    with pytest.warns(DataWarning, match="skipped 2 bad record"):
        assert load_deeplabcut_split(root, "train", skip_bad=True).num_skipped == 2


# --------------------------------------------------------------------------------------------- project level

def insert_column(table: list[list[str]]) -> None:
    for row in table:
        row.insert(3, row[0][:3] if row in table[:3] else "1")


PROJECT_CASES = {  # edit of the project root, file the message names, words it must hold
    "no config": (lambda r: (r / "config.yaml").unlink(), "config.yaml", ["does not exist"]),
    "malformed yaml": (edit_text("config.yaml", lambda t: t.replace("bodyparts:", "bodyparts: [")), "config.yaml",
                       ["malformed YAML at line"]),
    "config not a mapping": (edit_text("config.yaml", lambda t: "- a\n- b\n"), "config.yaml", ["expected a mapping"]),
    "no bodyparts": (edit_text("config.yaml", lambda t: t.replace("bodyparts:", "bodyparts_old:")), "config.yaml",
                     ['"bodyparts" is None']),
    "repeated bodypart": (edit_text("config.yaml", lambda t: t.replace("- tail_tip", "- nose")), "config.yaml",
                          ["lists nose more than once"]),
    "multi-animal config": (edit_text("config.yaml", lambda t: t.replace("multianimalproject: false",
                                                                         "multianimalproject: true")),
                            "config.yaml", ["multi-animal", "not support"]),
    "multi-animal csv": (lambda r: edit_csv(r, lambda t: t.insert(1, ["individuals"] + ["mouse1"] * 14)), CSV,
                         ["multi-animal", "not support"]),
    "no CSV": (lambda r: (r / CSV).unlink(), "labeled-data", ["no labeled-data/<video>/CollectedData_<scorer>.csv"]),
    "wrong header": (lambda r: edit_csv(r, set_cell(2, 0, "bodypart")), CSV,
                     ["header rows start with ['scorer', 'bodypart', 'coords']"]),
    "header row missing": (lambda r: edit_csv(r, lambda t: t.pop(0)), CSV, ["header rows start with"]),
    "renamed bodypart": (lambda r: edit_csv(r, lambda t: t[1].__setitem__(3, "lefty") or t[1].__setitem__(4, "lefty")),
                         CSV, ["do not match config.yaml", "missing ['left_ear']", "['lefty']"]),
    "odd coordinate columns": (lambda r: edit_csv(r, lambda t: [row.pop() for row in t]), CSV,
                               ["odd number (13) of coordinate columns"]),
    "likelihood column": (lambda r: edit_csv(r, lambda t: t[2].__setitem__(2, "likelihood")), CSV,
                          ["columns 2-3", "likelihood"]),
    "two index columns": (lambda r: edit_csv(r, lambda t: [row.insert(1, "") for row in t]), CSV,
                          ["2 image path column(s)"]),
    "bodypart twice": (lambda r: edit_csv(r, lambda t: (t[1].__setitem__(13, "nose"), t[1].__setitem__(14, "nose"))),
                       CSV, ['bodypart "nose" has more than one']),
    "unequal header rows": (lambda r: edit_csv(r, lambda t: t[0].pop()), CSV, ["header rows have 14, 15 and 15"]),
    "not UTF-8": (lambda r: (r / CSV).write_bytes(b"scorer,\xff\n"), CSV, ["not UTF-8"]),
    "nothing labelled": (lambda r: edit_csv(r, lambda t: [row.__setitem__(slice(1, None), [""] * 14) for row in t[3:]]),
                         "project", ["no labelled frame"]),
    "split.json not an object": (lambda r: (r / "split.json").write_text("[1]"), "split.json",
                                 ['expected an object {"train"']),
    "split.json malformed": (lambda r: (r / "split.json").write_text('{"train": ['), "split.json",
                             ["malformed JSON"]),
    "split.json paths not strings": (lambda r: (r / "split.json").write_text('{"train": [3], "val": []}'),
                                     "split.json", ['"train" is [3]']),
    "split.json path in both": (edit_text("split.json", lambda t: t.replace('"val": [', '"val": ["labeled-data/vid0/'
                                                                              'img0000.png", ')),
                                "split.json", ["in both", "img0000.png"]),
    "split.json unknown path": (edit_text("split.json", lambda t: t.replace('"val": [', '"val": ["x/y.png", ')),
                                "split.json", ["no row of any CollectedData CSV", "x/y.png"]),
}


@pytest.mark.parametrize("case", PROJECT_CASES, ids=list(PROJECT_CASES))
def test_project_level_problems_raise_even_with_skip_bad(copy, case):
    edit, named, words = PROJECT_CASES[case]
    edit(copy)
    for skip_bad in (False, True):
        with pytest.raises(DataError) as info:
            load_deeplabcut_split(copy, "train", skip_bad=skip_bad)
        message = str(info.value)
        one_line(message)
        assert message.startswith(str(copy / named) if named != "project" else str(copy)), message
        assert all(w in message for w in words), (words, message)


def test_several_scorers_without_the_configs_one_is_refused(copy):
    shutil.copy(copy / CSV, copy / "labeled-data/vid0/CollectedData_a.csv")
    (copy / CSV).rename(copy / "labeled-data/vid0/CollectedData_b.csv")
    with pytest.raises(DataError, match=r"vid0: holds several label files .* none is CollectedData_me.csv"):
        load_deeplabcut_split(copy, "train")


def test_unknown_split_name_is_a_value_error(project):
    with pytest.raises(ValueError, match="'train' or 'val'"):
        load_deeplabcut_split(project, "test")  # type: ignore[arg-type]


def test_split_json_is_read_as_json_of_paths(copy):
    (copy / "split.json").write_text(json.dumps({"train": ["labeled-data/vid0/img0003.png"], "val": []}))
    split = load_deeplabcut_split(copy, "train")
    assert [r.file_name for r in split.images] == ["labeled-data/vid0/img0003.png"]
    assert "7 labelled frame(s) in neither list" in split.format_reason
