"""Shared helpers of the bad-input property suites (docs/data-formats.md, 'Bad input'):
``test_bad_input_detection.py`` and ``test_bad_input_keypoints.py``.

Bad-value strategies, broken JSON and broken image files, the benches both suites mutate, and the checks they share:
loading raises :class:`DataError` with a one-line message naming the file (and the record), ``skip_bad=True`` turns a
record-level problem into one :class:`DataWarning`, and the CLI exits 2 with ``loclab: error: ...``. Each suite keeps
its own ``RAN`` counter of the bad inputs it checked; :func:`assert_enough_checked` reads it.
"""

from __future__ import annotations

import copy
import io
import json
import math
import re
import shutil
import struct
import warnings
import zlib
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck
from hypothesis import strategies as st
from PIL import Image

from loclab.cli import main
from loclab.data.errors import DataError, DataWarning

FORMATS = ("reference", "coco")
FAST = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow, HealthCheck.filter_too_much]}
CLI = dict(FAST, suppress_health_check=[*FAST["suppress_health_check"], HealthCheck.function_scoped_fixture])
INT64 = st.integers(-(2**63), 2**63 - 1)
GENERATORS = [(name, fmt) for name in ("json", "structure", "records", "images") for fmt in FORMATS]

# ------------------------------------------------------------------------------------------------ bad values

huge_ints = st.sampled_from([2**63, -(2**63) - 1, 10**30, 10**400]) | st.integers(2**63, 10**320)
containers = st.lists(st.integers(-5, 300), max_size=3) | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)
not_json_numbers = st.text(max_size=8) | st.none() | st.booleans() | containers
non_finite = st.sampled_from([math.nan, math.inf, -math.inf]) | st.integers(2**1024, 10**400)  # no float holds these
not_integers = not_json_numbers | st.floats() | huge_ints
not_numbers = not_json_numbers | non_finite
not_objects = st.text(max_size=5) | st.none() | st.booleans() | st.integers() | st.floats() | containers
not_arrays = st.text(max_size=5) | st.none() | st.booleans() | st.integers() | st.floats() | st.dictionaries(
    st.text(max_size=3), st.integers(), max_size=2)
not_strings = st.none() | st.booleans() | st.integers() | st.floats() | containers
outward = st.integers(1, 10**6) | st.floats(0.01, 1e6)  # how far a coordinate is pushed out of the image
INVALID_UTF8 = [b"\xff", b"\xfe\xfe", b"\xc3\x28", b"\x80", b"\xa0\xa1", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80"]


def dumps(value) -> bytes:
    return json.dumps(value).encode()


def parses_as(data: bytes, kind: type) -> bool:
    try:
        return isinstance(json.loads(data.decode("utf-8")), kind)
    except (ValueError, RecursionError):
        return False


@st.composite
def broken_json(draw, document):
    """Bytes that are not a JSON document of ``document``'s top-level type: every case is a file-level problem."""
    top = type(document)
    data = dumps(document)
    kind = draw(st.sampled_from(["truncated", "garbage", "invalid utf-8", "empty", "wrong top level", "extra data",
                                 "utf-16/32", "deep nesting", "4301+ digit integer"]))
    opener, rest = data[:1], data[1:]
    if kind == "truncated":
        return kind, data[: draw(st.integers(1, len(data) - 1))]
    if kind == "garbage":
        return kind, draw(st.binary(min_size=1, max_size=300).filter(lambda b: not parses_as(b, top)))
    if kind == "invalid utf-8":
        at = draw(st.integers(0, len(data)))
        return kind, data[:at] + draw(st.sampled_from(INVALID_UTF8)) + data[at:]
    if kind == "empty":
        return kind, draw(st.sampled_from([b"", b" ", b"\n", b"\r\n\t  \n"]))
    if kind == "wrong top level":
        other = st.lists(st.integers(), max_size=3) if top is dict else st.dictionaries(st.text(max_size=3),
                                                                                       st.integers(), max_size=2)
        value = draw(other | st.text(max_size=10) | st.integers() | st.floats() | st.none() | st.booleans())
        return kind, dumps(value)
    if kind == "extra data":
        return kind, data + draw(st.sampled_from([b"}", b"]", b",", b" x", b"{}", b"\x00", b"[]"]))
    if kind == "utf-16/32":
        return kind, json.dumps(document).encode(draw(st.sampled_from(["utf-16", "utf-32"])))
    if kind == "deep nesting":  # well-formed, but nested deeper than Python's json can recurse
        depth = draw(st.integers(5_000, 100_000))
        value = b"[" * depth + b"]" * depth
    else:  # Python refuses to parse integers of more than 4300 digits
        value = b"9" * draw(st.integers(4301, 20_000))
    return kind, opener + (b'"extra": ' if top is dict else b"") + value + b", " + rest


@st.composite
def broken_image_files(draw, document, broken: list[str], size: int):
    """Some images point at unreadable, missing or wrongly sized files, or declare a size their file does not have.

    ``size`` is the true width and height of the images of ``document``.
    """
    doc = copy.deepcopy(document)
    chosen = sorted(draw(st.lists(st.integers(0, len(doc["images"]) - 1), min_size=1, unique=True)))
    for i in chosen:
        image = doc["images"][i]
        if draw(st.integers(0, 4)) == 0:
            image[draw(st.sampled_from(["width", "height"]))] = draw(st.integers(1, 10**6).filter(lambda v: v != size))
        else:
            image["file_name"] = draw(st.sampled_from(broken))
    return dumps(doc), [f"image id {doc['images'][chosen[0]]['id']}"]


# ------------------------------------------------------------------------------------------------ benches


def png_bytes(size=(1, 1), mode="RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, "white").save(buffer, "PNG")
    return buffer.getvalue()


def write_broken_images(folder: Path, good: bytes, mode: str, wrong_size: tuple[int, int]) -> list[str]:
    """Unreadable, incomplete or wrongly sized image files in ``folder``; returns their names and one missing name."""
    idat = good.index(b"IDAT") + 6
    bomb = bytearray(png_bytes(mode=mode))  # an IHDR claiming 30000 x 30000 pixels, with a correct checksum
    bomb[16:24] = struct.pack(">II", 30_000, 30_000)
    bomb[29:33] = struct.pack(">I", zlib.crc32(bytes(bomb[12:29])))
    files = {
        "not_a_png.png": b"this is not a PNG file\n",
        "empty.png": b"",
        "cut_in_header.png": good[:20],
        "header_only.png": good[:33],
        "truncated.png": good[: len(good) // 2],
        "bad_checksum.png": good[:idat] + bytes([good[idat] ^ 0xFF]) + good[idat + 1:],
        "bomb.png": bytes(bomb),
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    Image.new(mode, wrong_size, "white").save(folder / "wrong_size.png")
    (folder / "a_directory.png").mkdir()
    return [*files, "wrong_size.png", "a_directory.png", "missing.png"]


def build_bench(folder: Path, work: Path, mode: str, wrong_size: tuple[int, int], to_coco):
    """``(documents by format, work dir, broken image names)`` for the train split of ``folder``.

    ``work/train/`` gets the real images of the split and the broken ones of :func:`write_broken_images`.
    """
    reference = json.loads((folder / "train_annotations.json").read_text())
    shutil.copytree(folder / "train", work / "train")
    good = (folder / "train" / reference["images"][0]["file_name"]).read_bytes()
    broken = write_broken_images(work / "train", good, mode, wrong_size)
    return {"reference": reference, "coco": to_coco(reference)}, work, broken


def rewrite(path: Path, edit) -> None:
    """Apply ``edit`` to the JSON document at ``path`` in place."""
    document = json.loads(path.read_text())
    edit(document)
    path.write_text(json.dumps(document))


# ------------------------------------------------------------------------------------------------ checks


def assert_clear(message: str, path: Path, records=()) -> None:
    assert str(path) in message, message
    assert "\n" not in message and "Traceback" not in message, message
    if records:
        assert any(re.search(re.escape(r) + r"(?!\d)", message) for r in records), (records, message)


def check_file_level(load, path: Path, data: bytes) -> None:
    """``data`` written to ``path`` is refused by ``load`` whether or not bad records are skipped."""
    path.write_bytes(data)
    for skip_bad in (False, True):
        with pytest.raises(DataError) as info:
            load(path, skip_bad=skip_bad, check_images=False)
        assert_clear(str(info.value), path)


def check_skippable(load, path: Path, data: bytes, records: list[str], check_images: bool = False):
    """``data`` written to ``path`` is refused naming one of ``records``, and skipped with one warning by
    ``skip_bad=True``; returns the split loaded with ``skip_bad=True``."""
    path.write_bytes(data)
    with pytest.raises(DataError) as info:
        load(path, check_images=check_images)
    assert_clear(str(info.value), path, records)
    assert "skip_bad=True" in str(info.value)  # the one-line message ends with what to do about it
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        split = load(path, skip_bad=True, check_images=check_images)
    notes = [str(w.message) for w in caught if issubclass(w.category, DataWarning) and "skipped" in str(w.message)]
    assert len(notes) == 1 and str(path) in notes[0], notes
    assert split.num_skipped > 0 and all(str(path) in m and "\n" not in m for m in split.skipped)
    return split


def check_bad_prediction_file(score, work: Path, fmt: str, gt_document: dict, raw: bytes, where: list[str]) -> None:
    """``score`` of ground truth ``gt_document`` and the predictions ``raw`` raises, naming the file and ``where``."""
    gt = work / f"gt_{fmt}.json"
    if not gt.exists():
        gt.write_bytes(dumps(gt_document))
    pred = work / "predictions.json"
    pred.write_bytes(raw)
    with pytest.raises(DataError) as info:
        score(gt, pred)
    assert_clear(str(info.value), pred, where)


def check_cli_eval(task: str, data, bench, capsys, gt_cases, bad_predictions, predictions_of) -> None:
    """``loclab eval TASK`` with a broken ground truth (``gt_cases(document, fmt)``) or predictions file exits 2."""
    documents, work, _ = bench
    fmt = data.draw(st.sampled_from(FORMATS), label="gt format")
    gt, pred = work / "cli_gt.json", work / "cli_predictions.json"
    gt.write_bytes(dumps(documents[fmt]))
    pred.write_bytes(dumps(predictions_of(documents["reference"])))
    bad = data.draw(st.sampled_from([gt, pred]), label="broken file")
    if bad == gt:
        case = data.draw(gt_cases(documents[fmt], fmt), label="case")
        gt.write_bytes(case[1])
    else:
        pred.write_bytes(data.draw(bad_predictions(documents["reference"]), label="case")[0])
    capsys.readouterr()
    code = main(["eval", task, "--gt", str(gt), "--pred", str(pred)])
    out, err = capsys.readouterr()
    assert code == 2 and err.startswith("loclab: error: ") and bad.name in err, err
    assert "Traceback" not in out + err and err.count("\n") == 1, err


def check_train_refuses(source: Path, tmp_path: Path, capsys, command: list[str], edit, named: str) -> None:
    """``loclab train ...`` on a copy of ``source`` broken by ``edit`` exits 2 naming ``named``, before training."""
    root, out = tmp_path / "root", tmp_path / "run"
    shutil.copytree(source, root / source.name)
    edit(root / source.name)
    code = main([*command, "--data-root", str(root), "--out", str(out), "--epochs", "1", "--quiet"])
    _, err = capsys.readouterr()
    assert code == 2 and err.startswith("loclab: error: ") and named in err, err
    assert "Traceback" not in err and err.count("\n") == 1, err
    assert not (out.exists() and any(out.rglob("*.pth"))), "a checkpoint was written"


def assert_enough_checked(ran: Counter, what: str) -> None:
    """At least 500 bad annotation files per format were checked by the generating tests counted in ``ran``."""
    missing = [key for key in GENERATORS if not ran[key]]
    assert not missing, f"cannot count bad inputs: generating tests {missing} did not run in this session"
    per_format = {fmt: sum(ran[name, f] for name, f in GENERATORS if f == fmt) for fmt in FORMATS}
    print(f"bad {what} annotation files checked: {per_format}; prediction files: "
          f"{ {fmt: ran['predictions', fmt] for fmt in FORMATS} }")
    assert all(n >= 500 for n in per_format.values()), per_format
