"""Robustness (SPEC §1.3), keypoints: hypothesis mutates a valid generated stick-figure split into bad input.

The valid split is the train split of a tiny generated figures dataset, in the reference format and converted to
COCO keypoints (flat ``[x, y, 2] * K``, names in ``categories[0].keypoints``). Each example writes one mutated file and
checks the properties of ``tests/test_bad_input_detection.py``: :class:`DataError` only, one line naming the file and
the record; ``skip_bad=True`` turns record-level problems into one :class:`DataWarning`, a count and a smaller split;
prediction files of ``loclab eval keypoints`` and the CLI (a sample) likewise. The helpers are repeated here so that
each module runs on its own; ``RAN`` counts the bad inputs actually checked, and the last test asserts at least 500
per format.
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
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from loclab.cli import main
from loclab.data.errors import DataError, DataWarning
from loclab.data.figures import generate_figures
from loclab.data.formats_keypoints import load_keypoint_annotations
from loclab.evaluation.keypoints import score_keypoint_files

FORMATS = ("reference", "coco")
RAN: Counter[tuple[str, str]] = Counter()  # (test, format) -> bad inputs checked
FAST = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow, HealthCheck.filter_too_much]}
CLI = dict(FAST, suppress_health_check=[*FAST["suppress_health_check"], HealthCheck.function_scoped_fixture])
INT64 = st.integers(-(2**63), 2**63 - 1)
SIZE = 128  # reference stick-figure images are SIZE x SIZE

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


# ------------------------------------------------------------------------------------------------ fixtures


def to_coco(document: dict) -> dict:
    """The reference document as COCO keypoints; annotation ids start at 100 so they differ from image ids."""
    names = document["keypoint_names"]
    return {
        "images": [{"id": im["id"], "file_name": im["file_name"], "width": SIZE, "height": SIZE}
                   for im in document["images"]],
        "annotations": [{"id": 100 + n, "image_id": im["id"], "category_id": 1, "num_keypoints": len(names),
                         "keypoints": [v for x, y in im["keypoints"] for v in (x, y, 2)]}
                        for n, im in enumerate(document["images"])],
        "categories": [{"id": 1, "name": "person", "keypoints": list(names), "skeleton": []}],
    }


def write_broken_images(folder: Path, good: bytes, mode: str) -> list[str]:
    """Unreadable, incomplete or wrongly sized image files in ``folder``; returns their names and one missing name."""
    idat = good.index(b"IDAT") + 6
    buffer = io.BytesIO()
    Image.new(mode, (1, 1), "white").save(buffer, "PNG")
    bomb = bytearray(buffer.getvalue())  # an IHDR claiming 30000 x 30000 pixels, with a correct checksum
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
    Image.new(mode, (SIZE // 2, SIZE // 2), "white").save(folder / "wrong_size.png")
    (folder / "a_directory.png").mkdir()
    return [*files, "wrong_size.png", "a_directory.png", "missing.png"]


@pytest.fixture(scope="module")
def figures_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("figures")
    generate_figures(root, seed=641, n_train=3, n_val=2, progress=False)
    return root


@pytest.fixture(scope="module")
def bench(figures_root, tmp_path_factory):
    """``(documents by format, work dir, broken image names)``; ``work/train/`` has the real and the broken images."""
    folder = figures_root / "keypoints"
    reference = json.loads((folder / "train_annotations.json").read_text())
    work = tmp_path_factory.mktemp("bad_keypoints")
    shutil.copytree(folder / "train", work / "train")
    good = (folder / "train" / reference["images"][0]["file_name"]).read_bytes()
    broken = write_broken_images(work / "train", good, "L")
    return {"reference": reference, "coco": to_coco(reference)}, work, broken


def predictions_of(document: dict) -> list[dict]:
    """Perfect predictions for the reference document."""
    return [{"image_id": im["id"], "keypoints": copy.deepcopy(im["keypoints"])} for im in document["images"]]


# ------------------------------------------------------------------------------------------------ checks


def assert_clear(message: str, path: Path, records=()) -> None:
    assert str(path) in message, message
    assert "\n" not in message and "Traceback" not in message, message
    if records:
        assert any(re.search(re.escape(r) + r"(?!\d)", message) for r in records), (records, message)


def check_file_level(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    for skip_bad in (False, True):
        with pytest.raises(DataError) as info:
            load_keypoint_annotations(path, skip_bad=skip_bad, check_images=False)
        assert_clear(str(info.value), path)


def check_record_level(path: Path, data: bytes, records: list[str], base: dict, check_images: bool = False) -> None:
    path.write_bytes(data)
    with pytest.raises(DataError) as info:
        load_keypoint_annotations(path, check_images=check_images)
    assert_clear(str(info.value), path, records)
    assert "skip_bad=True" in str(info.value)  # the one-line message ends with what to do about it
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        split = load_keypoint_annotations(path, skip_bad=True, check_images=check_images)
    notes = [str(w.message) for w in caught if issubclass(w.category, DataWarning) and "skipped" in str(w.message)]
    assert len(notes) == 1 and str(path) in notes[0], notes
    assert split.num_skipped > 0 and all(str(path) in m and "\n" not in m for m in split.skipped)
    assert len(split) < len(base["images"]) and split.keypoints.shape == (len(split), len(base_names(base)), 2)


def base_names(document: dict) -> list[str]:
    return document.get("keypoint_names") or document["categories"][0]["keypoints"]


# ------------------------------------------------------------------------------------------------ mutations


@st.composite
def broken_structure(draw, document):
    """Missing or mistyped top-level keys, keypoint names and counts, keypoint categories: file-level problems."""
    doc = copy.deepcopy(document)
    coco = "annotations" in doc
    keys = ["images", "annotations", "categories"] if coco else ["images", "keypoint_names", "num_keypoints"]
    kind = draw(st.sampled_from(["missing key", "not an array", "names", "name not a string"]
                                + (["no keypoint category", "two keypoint categories", "category not an object"]
                                   if coco else ["num_keypoints"])))
    names = doc["categories"][0]["keypoints"] if coco else doc["keypoint_names"]
    if kind == "missing key":
        del doc[draw(st.sampled_from(keys))]
    elif kind == "not an array":
        doc[draw(st.sampled_from(keys[:2] + (keys[2:] if coco else [])))] = draw(not_arrays)
    elif kind == "names":
        (doc["categories"][0] if coco else doc)["keypoints" if coco else "keypoint_names"] = draw(
            not_arrays | st.just([]))
    elif kind == "name not a string":
        names[draw(st.integers(0, len(names) - 1))] = draw(not_strings)
    elif kind == "num_keypoints":
        doc["num_keypoints"] = draw(not_integers | st.integers().filter(lambda n: n != len(names)))
    elif kind == "no keypoint category":
        del doc["categories"][0]["keypoints"]
    elif kind == "two keypoint categories":
        doc["categories"].append({"id": draw(INT64), "name": "other", "keypoints": list(names)})
    else:
        doc["categories"][0] = draw(not_objects)
    return kind, dumps(doc)


def points_out(draw, points: list, k: int) -> None:
    """Push one coordinate of ``points[k]`` (an ``[x, y, ...]`` slice) out of the SIZE x SIZE image."""
    c = draw(st.integers(0, 1))
    points[k + c] = -0.5 - draw(outward) if draw(st.booleans()) else SIZE - 0.5 + draw(outward)


@st.composite
def bad_record(draw, document):
    """One bad image or annotation record: ``(kind, bytes, names of the record any of which the error must show)``."""
    doc = copy.deepcopy(document)
    coco = "annotations" in doc
    images, anns = doc["images"], doc.get("annotations", [])
    num_kp = len(base_names(doc))
    i, n = draw(st.permutations(range(len(images))))[:2]
    image = images[i]
    at_image = [f"images[{i}]", f"image id {image['id']}"]
    kinds = ["image not an object", "image key missing", "image id", "file_name", "image size", "duplicate image id"]
    if coco:
        kinds += ["image removed", "annotation not an object", "annotation key missing", "annotation int field",
                  "unknown image", "flat keypoints", "keypoint number", "visibility", "keypoint outside",
                  "duplicate annotation id", "annotation removed", "two figures", "other category"]
    else:
        kinds += ["keypoints", "keypoint count", "point", "keypoint number", "keypoint outside"]
    kind = draw(st.sampled_from(kinds))
    j = next(a for a, ann in enumerate(anns) if ann["image_id"] == image["id"]) if coco else None
    ann = anns[j] if coco else None
    at_ann = [f"annotations[{j}]", f"annotation id {ann['id']}"] if coco else []
    where = at_image
    if kind == "image not an object":
        images[i], where = draw(not_objects), [f"images[{i}]"]
    elif kind == "image key missing":
        del image[draw(st.sampled_from(["id", "file_name"]))]
    elif kind == "image id":
        image["id"] = draw(not_integers)
        where = [f"images[{i}]"] + ([f"image id {image['id']}"] if type(image["id"]) is int else [])
    elif kind == "file_name":
        image["file_name"] = draw(st.just("") | not_strings)
    elif kind == "image size":
        image[draw(st.sampled_from(["width", "height"]))] = draw(not_integers | st.integers(max_value=0))
    elif kind == "duplicate image id":
        images[n]["id"], where = image["id"], [f"image id {image['id']}"]
    elif kind == "keypoints":
        if draw(st.booleans()):
            del image["keypoints"]
        else:
            image["keypoints"] = draw(not_arrays)
    elif kind == "keypoint count":
        extra = st.lists(st.tuples(st.integers(0, SIZE - 1), st.integers(0, SIZE - 1)).map(list), min_size=1,
                         max_size=4)
        image["keypoints"] = (image["keypoints"][: draw(st.integers(0, num_kp - 1))] if draw(st.booleans())
                              else image["keypoints"] + draw(extra))
    elif kind == "point":
        image["keypoints"][draw(st.integers(0, num_kp - 1))] = draw(
            not_arrays | st.lists(st.integers(0, SIZE - 1), max_size=5).filter(lambda p: len(p) != 2))
    elif kind == "keypoint number":
        k = draw(st.integers(0, num_kp - 1))
        if coco:
            ann["keypoints"][3 * k + draw(st.integers(0, 2))], where = draw(not_numbers), at_ann
        else:
            image["keypoints"][k][draw(st.integers(0, 1))] = draw(not_numbers)
    elif kind == "keypoint outside":
        k = draw(st.integers(0, num_kp - 1))
        points_out(draw, ann["keypoints"] if coco else image["keypoints"][k], 3 * k if coco else 0)
        where = [f"image id {image['id']}"]
    elif kind == "image removed":
        images.remove(image)
        where = [f"annotation id {ann['id']}"]
    elif kind == "annotation not an object":
        anns[j], where = draw(not_objects), [f"annotations[{j}]"]
    elif kind == "annotation key missing":
        del ann[draw(st.sampled_from(["id", "image_id", "keypoints"]))]
        where = at_ann
    elif kind == "annotation int field":
        ann[draw(st.sampled_from(["id", "image_id"]))], where = draw(not_integers), at_ann
    elif kind == "unknown image":
        ann["image_id"] = draw(INT64.filter(lambda v: v not in {im["id"] for im in images}))
        where = at_ann
    elif kind == "flat keypoints":
        ann["keypoints"] = draw(not_arrays | st.lists(st.integers(0, SIZE - 1), max_size=3 * num_kp + 4).filter(
            lambda f: len(f) != 3 * num_kp))
        where = at_ann
    elif kind == "visibility":
        flag = draw(st.integers().filter(lambda v: v not in (0, 1, 2)) | st.sampled_from([0.5, 1.5, 2.0001, -0.0001]))
        ann["keypoints"][3 * draw(st.integers(0, num_kp - 1)) + 2], where = flag, at_ann
    elif kind == "duplicate annotation id":
        other = next(a for a in anns if a is not ann)
        other["id"], where = ann["id"], [f"annotation id {ann['id']}"]
    elif kind == "annotation removed":
        anns.remove(ann)
    elif kind == "two figures":
        anns.append(dict(copy.deepcopy(ann), id=max(a["id"] for a in anns) + 1))
        where = [f"image id {image['id']}"]
    else:  # an annotation of another category is not a figure: its image has none
        ann["category_id"], where = draw(INT64.filter(lambda v: v != 1)), [f"image id {image['id']}"]
    return kind, dumps(doc), where


@st.composite
def broken_image_files(draw, document, broken: list[str]):
    """Some images point at unreadable, missing or wrongly sized files, or declare a size their file does not have."""
    doc = copy.deepcopy(document)
    chosen = sorted(draw(st.lists(st.integers(0, len(doc["images"]) - 1), min_size=1, unique=True)))
    for i in chosen:
        image = doc["images"][i]
        if draw(st.integers(0, 4)) == 0:
            image[draw(st.sampled_from(["width", "height"]))] = draw(st.integers(1, 10**6).filter(lambda v: v != SIZE))
        else:
            image["file_name"] = draw(st.sampled_from(broken))
    return dumps(doc), [f"image id {doc['images'][chosen[0]]['id']}"]


@st.composite
def bad_predictions(draw, document):
    """A broken predictions file (file level, any record named) or one bad record ``record [j]``."""
    records = predictions_of(document)
    if draw(st.integers(0, 3)) == 0:
        return draw(broken_json(records))[1], []
    j, m = draw(st.permutations(range(len(records))))[:2]
    rec, where = records[j], [f"record [{j}]"]
    num_kp = len(document["keypoint_names"])
    kind = draw(st.sampled_from(["not an object", "key missing", "image_id", "unknown image", "duplicate image",
                                 "keypoints", "point", "missing record"]))
    if kind == "not an object":
        records[j] = draw(not_objects)
    elif kind == "key missing":
        del rec[draw(st.sampled_from(["image_id", "keypoints"]))]
    elif kind == "image_id":
        rec["image_id"] = draw(not_integers)
    elif kind == "unknown image":
        rec["image_id"] = draw(INT64.filter(lambda v: v not in {im["id"] for im in document["images"]}))
    elif kind == "duplicate image":
        records[m]["image_id"], where = rec["image_id"], [f"record [{max(j, m)}]"]
    elif kind == "keypoints":
        rec["keypoints"] = draw(not_arrays | st.lists(st.just([1, 2]), max_size=8).filter(lambda p: len(p) != num_kp))
    elif kind == "point":
        rec["keypoints"][draw(st.integers(0, num_kp - 1))] = draw(
            not_arrays | st.lists(st.integers(0, 9), max_size=4).filter(lambda p: len(p) != 2)
            | st.tuples(st.integers(0, 9), not_numbers).map(list))
    else:
        records.remove(rec)
        where = [f"image ids {rec['image_id']}"]
    return dumps(records), where


# ------------------------------------------------------------------------------------------------ tests


@pytest.mark.parametrize("fmt", FORMATS)
def test_valid_bases_load_cleanly(bench, fmt):
    documents, work, _ = bench
    path = work / f"valid_{fmt}.json"
    path.write_bytes(dumps(documents[fmt]))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        split = load_keypoint_annotations(path, work / "train")
    assert split.format == fmt and split.num_skipped == 0 and len(split) == len(documents[fmt]["images"])
    pred = work / "valid_predictions.json"
    pred.write_bytes(dumps(predictions_of(documents["reference"])))
    assert score_keypoint_files(path, pred)["mean_error_px"] == 0.0


@pytest.mark.parametrize("fmt", FORMATS)
@settings(max_examples=170, **FAST)
@given(data=st.data())
def test_malformed_json_is_a_file_level_error(bench, fmt, data):
    documents, work, _ = bench
    _, raw = data.draw(broken_json(documents[fmt]), label="case")
    check_file_level(work / f"{fmt}_annotations.json", raw)
    RAN["json", fmt] += 1


@pytest.mark.parametrize("fmt", FORMATS)
@settings(max_examples=80, **FAST)
@given(data=st.data())
def test_bad_structure_is_a_file_level_error(bench, fmt, data):
    documents, work, _ = bench
    _, raw = data.draw(broken_structure(documents[fmt]), label="case")
    check_file_level(work / f"{fmt}_annotations.json", raw)
    RAN["structure", fmt] += 1


@pytest.mark.parametrize("fmt", FORMATS)
@settings(max_examples=300, **FAST)
@given(data=st.data())
def test_bad_records_are_named_and_skippable(bench, fmt, data):
    documents, work, _ = bench
    _, raw, where = data.draw(bad_record(documents[fmt]), label="case")
    check_record_level(work / f"{fmt}_annotations.json", raw, where, documents[fmt])
    RAN["records", fmt] += 1


@pytest.mark.parametrize("fmt", FORMATS)
@settings(max_examples=40, **FAST)
@given(data=st.data())
def test_broken_image_files_are_named_and_skippable(bench, fmt, data):
    documents, work, broken = bench
    raw, where = data.draw(broken_image_files(documents[fmt], broken), label="case")
    check_record_level(work / "train_annotations.json", raw, where, documents[fmt], check_images=True)
    RAN["images", fmt] += 1


@pytest.mark.parametrize("fmt", FORMATS)
@settings(max_examples=120, **FAST)
@given(data=st.data())
def test_bad_prediction_files_name_the_file_and_record(bench, fmt, data):
    documents, work, _ = bench
    gt = work / f"gt_{fmt}.json"
    if not gt.exists():
        gt.write_bytes(dumps(documents[fmt]))
    raw, where = data.draw(bad_predictions(documents["reference"]), label="case")
    pred = work / "predictions.json"
    pred.write_bytes(raw)
    with pytest.raises(DataError) as info:
        score_keypoint_files(gt, pred)
    assert_clear(str(info.value), pred, where)
    RAN["predictions", fmt] += 1


@settings(max_examples=16, **CLI)
@given(data=st.data())
def test_cli_eval_keypoints_reports_bad_files(bench, capsys, data):
    documents, work, _ = bench
    fmt = data.draw(st.sampled_from(FORMATS), label="gt format")
    gt, pred = work / "cli_gt.json", work / "cli_predictions.json"
    gt.write_bytes(dumps(documents[fmt]))
    pred.write_bytes(dumps(predictions_of(documents["reference"])))
    bad = data.draw(st.sampled_from([gt, pred]), label="broken file")
    if bad == gt:
        case = data.draw(broken_json(documents[fmt]) | broken_structure(documents[fmt]) | bad_record(documents[fmt]),
                         label="case")
        gt.write_bytes(case[1])
    else:
        pred.write_bytes(data.draw(bad_predictions(documents["reference"]), label="case")[0])
    capsys.readouterr()
    code = main(["eval", "keypoints", "--gt", str(gt), "--pred", str(pred)])
    out, err = capsys.readouterr()
    assert code == 2 and err.startswith("loclab: error: ") and bad.name in err, err
    assert "Traceback" not in out + err and err.count("\n") == 1, err


def _rewrite(path: Path, edit) -> None:
    document = json.loads(path.read_text())
    edit(document)
    path.write_text(json.dumps(document))


TRAIN_BREAKS = {  # edit of ROOT/keypoints, the file name the error must show
    "truncated train annotations": (lambda d: (d / "train_annotations.json").write_text('{"images": [{"id'),
                                    "train_annotations.json"),
    "val keypoint outside": (lambda d: _rewrite(d / "val_annotations.json",
                                                lambda doc: doc["images"][1]["keypoints"][0].__setitem__(0, 300)),
                             "val_annotations.json"),
    "4 keypoints in train": (lambda d: _rewrite(d / "train_annotations.json",
                                                lambda doc: doc["images"][0]["keypoints"].pop()),
                             "train_annotations.json"),
    "truncated train PNG": (lambda d: (d / "train" / "000001.png").write_bytes(
        (d / "train" / "000001.png").read_bytes()[:-40]), "000001.png"),
    "missing val image": (lambda d: (d / "val" / "000004.png").unlink(), "000004.png"),
    "val image of the wrong size": (lambda d: Image.new("L", (64, 64)).save(d / "val" / "000003.png"), "000003.png"),
}


@pytest.mark.parametrize("case", TRAIN_BREAKS)
def test_cli_train_keypoints_refuses_a_broken_root_before_training(figures_root, tmp_path, capsys, case):
    root, out = tmp_path / "root", tmp_path / "run"
    shutil.copytree(figures_root / "keypoints", root / "keypoints")
    edit, named = TRAIN_BREAKS[case]
    edit(root / "keypoints")
    code = main(["train", "keypoints", "--data-root", str(root), "--out", str(out), "--epochs", "1", "--quiet"])
    _, err = capsys.readouterr()
    assert code == 2 and err.startswith("loclab: error: ") and named in err, err
    assert "Traceback" not in err and err.count("\n") == 1, err
    assert not (out.exists() and any(out.rglob("*.pth"))), "a checkpoint was written"


GENERATORS = [(name, fmt) for name in ("json", "structure", "records", "images") for fmt in FORMATS]


def test_at_least_500_bad_annotation_files_per_format():
    """Runs last in this module: counts what the hypothesis tests above actually checked."""
    if not all(RAN[key] for key in GENERATORS):
        pytest.skip("the generating tests of this module did not all run in this session")
    per_format = {fmt: sum(RAN[name, f] for name, f in GENERATORS if f == fmt) for fmt in FORMATS}
    print(f"bad keypoint annotation files checked: {per_format}; prediction files: "
          f"{ {fmt: RAN['predictions', fmt] for fmt in FORMATS} }")
    assert all(n >= 500 for n in per_format.values()), per_format
