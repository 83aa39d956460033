"""Robustness (SPEC §1.3), detection: hypothesis mutates a valid generated shapes split into bad input.

The valid split is the train split of a tiny generated shapes dataset, in the reference format and converted to COCO
(bbox xywh, area w*h). Each example writes one mutated file and checks:

1. loading raises :class:`DataError` (never another exception type) whose message is a single line (no traceback,
   no newline) naming the file and, for a record-level problem, the record (its id or index);
2. with ``skip_bad=True`` a record-level problem becomes one :class:`DataWarning`, a count and a smaller split,
   while a file-level problem still raises;
3. prediction files for ``loclab eval detections`` get the same treatment, and the CLI (a sample of cases) exits 2
   with ``loclab: error: ...`` naming the file, without a traceback and, for ``train``, without a checkpoint.

``RAN`` counts the bad inputs actually checked; the last test asserts at least 500 per format.
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
from loclab.data.formats_detection import load_detection_annotations
from loclab.data.shapes import generate_shapes
from loclab.evaluation.detection import PREDICTION_KEYS, score_detection_files

FORMATS = ("reference", "coco")
RAN: Counter[tuple[str, str]] = Counter()  # (test, format) -> bad inputs checked
FAST = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow, HealthCheck.filter_too_much]}
CLI = dict(FAST, suppress_health_check=[*FAST["suppress_health_check"], HealthCheck.function_scoped_fixture])
INT64 = st.integers(-(2**63), 2**63 - 1)

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
    coco = copy.deepcopy(document)
    for ann in coco["annotations"]:
        x1, y1, x2, y2 = ann["bbox"]
        ann["bbox"], ann["area"] = [x1, y1, x2 - x1, y2 - y1], (x2 - x1) * (y2 - y1)
    return coco


def png_bytes(size=(1, 1), mode="RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, "white").save(buffer, "PNG")
    return buffer.getvalue()


def write_broken_images(folder: Path, good: bytes, size: tuple[int, int], mode: str) -> list[str]:
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
    Image.new(mode, (size[0] // 2, size[1] + 3), "white").save(folder / "wrong_size.png")
    (folder / "a_directory.png").mkdir()
    return [*files, "wrong_size.png", "a_directory.png", "missing.png"]


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shapes")
    generate_shapes(root, seed=641, n_train=3, n_val=2, progress=False)
    return root


@pytest.fixture(scope="module")
def bench(shapes_root, tmp_path_factory):
    """``(documents by format, work dir, broken image names)``; ``work/train/`` has the real and the broken images."""
    folder = shapes_root / "detection"
    reference = json.loads((folder / "train_annotations.json").read_text())
    work = tmp_path_factory.mktemp("bad_detection")
    shutil.copytree(folder / "train", work / "train")
    good = (folder / "train" / reference["images"][0]["file_name"]).read_bytes()
    broken = write_broken_images(work / "train", good, (224, 224), "RGB")
    return {"reference": reference, "coco": to_coco(reference)}, work, broken


def predictions_of(document: dict) -> list[dict]:
    """Perfect xyxy predictions for the reference document."""
    return [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": list(a["bbox"]),
             "score": round(0.3 + 0.04 * k, 3)} for k, a in enumerate(document["annotations"])]


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
            load_detection_annotations(path, skip_bad=skip_bad, check_images=False)
        assert_clear(str(info.value), path)


def check_record_level(path: Path, data: bytes, records: list[str], base: dict, check_images: bool = False) -> None:
    path.write_bytes(data)
    with pytest.raises(DataError) as info:
        load_detection_annotations(path, check_images=check_images)
    assert_clear(str(info.value), path, records)
    assert "skip_bad=True" in str(info.value)  # the one-line message ends with what to do about it
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        split = load_detection_annotations(path, skip_bad=True, check_images=check_images)
    notes = [str(w.message) for w in caught if issubclass(w.category, DataWarning) and "skipped" in str(w.message)]
    assert len(notes) == 1 and str(path) in notes[0], notes
    assert split.num_skipped > 0 and all(str(path) in m and "\n" not in m for m in split.skipped)
    assert len(split) + split.num_boxes < len(base["images"]) + len(base["annotations"])  # the bad record is gone


# ------------------------------------------------------------------------------------------------ mutations


@st.composite
def broken_structure(draw, document):
    """Missing or mistyped top-level arrays and bad categories: file-level problems."""
    doc = copy.deepcopy(document)
    kind = draw(st.sampled_from(["missing key", "not an array", "category not an object", "category id",
                                 "duplicate category"]))
    key = draw(st.sampled_from(["images", "annotations", "categories"]))
    cats = doc["categories"]
    i, j = draw(st.permutations(range(len(cats))))[:2]
    if kind == "missing key":
        del doc[key]
    elif kind == "not an array":
        doc[key] = draw(not_arrays)
    elif kind == "category not an object":
        cats[i] = draw(not_objects)
    elif kind == "category id":
        if draw(st.booleans()):
            del cats[i]["id"]
        else:
            cats[i]["id"] = draw(not_integers)
    else:
        cats[i]["id"] = cats[j]["id"]
    return kind, dumps(doc)


@st.composite
def bad_record(draw, document, xywh: bool):
    """One bad image or annotation record: ``(kind, bytes, names of the record any of which the error must show)``."""
    doc = copy.deepcopy(document)
    images, anns = doc["images"], doc["annotations"]
    i, k = draw(st.permutations(range(len(images))))[:2]
    j, m = draw(st.permutations(range(len(anns))))[:2]
    image, ann = images[i], anns[j]
    at_image, at_ann = [f"images[{i}]", f"image id {image['id']}"], [f"annotations[{j}]", f"annotation id {ann['id']}"]
    kind = draw(st.sampled_from(["image not an object", "image key missing", "image id", "file_name", "image size",
                                 "image removed", "duplicate image id", "annotation not an object",
                                 "annotation key missing", "annotation int field", "unknown image", "unknown category",
                                 "bbox shape", "bbox number", "bbox inverted", "bbox outside", "area",
                                 "visible_fraction", "duplicate annotation id"]))
    where = at_ann
    if kind == "image not an object":
        images[i], where = draw(not_objects), at_image
    elif kind == "image key missing":
        del image[draw(st.sampled_from(["id", "file_name"]))]
        where = at_image
    elif kind == "image id":
        image["id"] = draw(not_integers)
        where = [f"images[{i}]"] + ([f"image id {image['id']}"] if type(image["id"]) is int else [])
    elif kind == "file_name":
        image["file_name"] = draw(st.just("") | st.none() | st.booleans() | containers | st.integers() | st.floats())
        where = at_image
    elif kind == "image size":
        image[draw(st.sampled_from(["width", "height"]))] = draw(not_integers | st.integers(max_value=0))
        where = at_image
    elif kind == "image removed":
        images.remove(image)
        where = [f"annotation id {a['id']}" for a in anns if a["image_id"] == image["id"]]
    elif kind == "duplicate image id":
        images[k]["id"], where = image["id"], [f"image id {image['id']}"]
    elif kind == "annotation not an object":
        anns[j], where = draw(not_objects), [f"annotations[{j}]"]
    elif kind == "annotation key missing":
        del ann[draw(st.sampled_from(["id", "image_id", "category_id", "bbox"]))]
    elif kind == "annotation int field":
        ann[draw(st.sampled_from(["id", "image_id", "category_id"]))] = draw(not_integers)
    elif kind == "unknown image":
        ann["image_id"] = draw(INT64.filter(lambda v: v not in {im["id"] for im in images}))
    elif kind == "unknown category":
        ann["category_id"] = draw(INT64.filter(lambda v: v not in {c["id"] for c in doc["categories"]}))
    elif kind == "bbox shape":
        ann["bbox"] = draw(not_arrays | st.lists(st.integers(0, 224), max_size=8).filter(lambda b: len(b) != 4))
    elif kind == "bbox number":
        ann["bbox"][draw(st.integers(0, 3))] = draw(not_numbers)
    elif kind == "bbox inverted":  # x2 <= x1 or y2 <= y1 (COCO: width or height <= 0)
        axis, box = draw(st.integers(0, 1)), ann["bbox"]
        box[axis + 2] = -draw(st.integers(0, 100)) if xywh else box[axis] - draw(st.integers(0, int(box[axis])))
    elif kind == "bbox outside":
        side, by, box = draw(st.integers(0, 3)), draw(outward), ann["bbox"]
        axis, limit = side % 2, (image["width"], image["height"])[side % 2]
        if side < 2:
            box[axis] = -by  # left or top edge before the image
        else:
            box[axis + 2] = (limit - box[axis] if xywh else limit) + by  # right or bottom edge after it
    elif kind == "area":
        ann["area"] = draw(not_numbers | st.integers(max_value=-1) | st.floats(max_value=-0.01))
    elif kind == "visible_fraction":
        ann["visible_fraction"] = draw(not_numbers | st.floats(1.01, 1e9) | st.floats(-1e9, -0.01))
    else:
        anns[m]["id"], where = ann["id"], [f"annotation id {ann['id']}"]
    return kind, dumps(doc), where


@st.composite
def broken_image_files(draw, document, broken: list[str]):
    """Some images point at unreadable, missing or wrongly sized files, or declare a size their file does not have."""
    doc = copy.deepcopy(document)
    chosen = sorted(draw(st.lists(st.integers(0, len(doc["images"]) - 1), min_size=1, unique=True)))
    for i in chosen:
        image = doc["images"][i]
        if draw(st.integers(0, 4)) == 0:
            image[draw(st.sampled_from(["width", "height"]))] = draw(st.integers(1, 10**6).filter(lambda v: v != 224))
        else:
            image["file_name"] = draw(st.sampled_from(broken))
    return dumps(doc), [f"image id {doc['images'][chosen[0]]['id']}"]


@st.composite
def bad_predictions(draw, document):
    """A broken predictions file (file level, any record named) or one bad record ``predictions[j]``."""
    records = predictions_of(document)
    if draw(st.integers(0, 3)) == 0:
        return draw(broken_json(records))[1], []
    j = draw(st.integers(0, len(records) - 1))
    rec, where = records[j], [f"predictions[{j}]"]
    kind = draw(st.sampled_from(["not an object", "key missing", "image_id", "category_id", "bbox shape",
                                 "bbox number", "bbox inverted", "score", "scale on some", "bad scale"]))
    if kind == "not an object":
        records[j] = draw(not_objects)
    elif kind == "key missing":
        del rec[draw(st.sampled_from(PREDICTION_KEYS))]
    elif kind in ("image_id", "category_id"):
        known = {im["id"] for im in document["images"]} | {c["id"] for c in document["categories"]}
        rec[kind] = draw(not_integers | INT64.filter(lambda v: v not in known))
    elif kind == "bbox shape":
        rec["bbox"] = draw(not_arrays | st.lists(st.integers(0, 224), max_size=8).filter(lambda b: len(b) != 4))
    elif kind == "bbox number":
        rec["bbox"][draw(st.integers(0, 3))] = draw(not_numbers)
    elif kind == "bbox inverted":
        axis = draw(st.integers(0, 1))
        rec["bbox"][axis + 2] = rec["bbox"][axis] - draw(outward)
    elif kind == "score":
        rec["score"] = draw(not_numbers)
    elif kind == "scale on some":
        rec["scale"], where = 0, [f"predictions[{0 if j else 1}]"]
    else:
        for other in records:
            other["scale"] = 1
        rec["scale"] = draw(not_integers | st.integers(max_value=-1))
    return dumps(records), where



# ------------------------------------------------------------------------------------------------ tests


@pytest.mark.parametrize("fmt", FORMATS)
def test_valid_bases_load_cleanly(bench, fmt):
    documents, work, _ = bench
    path = work / f"valid_{fmt}.json"
    path.write_bytes(dumps(documents[fmt]))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        split = load_detection_annotations(path, work / "train")
    assert split.format == fmt and split.num_skipped == 0 and split.num_boxes == len(documents[fmt]["annotations"])
    pred = work / "valid_predictions.json"
    pred.write_bytes(dumps(predictions_of(documents["reference"])))
    assert score_detection_files(path, pred)["mAP50"] == pytest.approx(1.0)


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
    _, raw, where = data.draw(bad_record(documents[fmt], xywh=fmt == "coco"), label="case")
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
        score_detection_files(gt, pred)
    assert_clear(str(info.value), pred, where)
    RAN["predictions", fmt] += 1


@settings(max_examples=16, **CLI)
@given(data=st.data())
def test_cli_eval_detections_reports_bad_files(bench, capsys, data):
    documents, work, _ = bench
    fmt = data.draw(st.sampled_from(FORMATS), label="gt format")
    gt, pred = work / "cli_gt.json", work / "cli_predictions.json"
    gt.write_bytes(dumps(documents[fmt]))
    pred.write_bytes(dumps(predictions_of(documents["reference"])))
    bad = data.draw(st.sampled_from([gt, pred]), label="broken file")
    if bad == gt:
        case = data.draw(broken_json(documents[fmt]) | broken_structure(documents[fmt])
                         | bad_record(documents[fmt], fmt == "coco"), label="case")
        gt.write_bytes(case[1])
    else:
        pred.write_bytes(data.draw(bad_predictions(documents["reference"]), label="case")[0])
    capsys.readouterr()
    code = main(["eval", "detections", "--gt", str(gt), "--pred", str(pred)])
    out, err = capsys.readouterr()
    assert code == 2 and err.startswith("loclab: error: ") and bad.name in err, err
    assert "Traceback" not in out + err and err.count("\n") == 1, err


def _rewrite(path: Path, edit) -> None:
    document = json.loads(path.read_text())
    edit(document)
    path.write_text(json.dumps(document))


TRAIN_BREAKS = {  # edit of ROOT/detection, the file name the error must show
    "truncated train annotations": (lambda d: (d / "train_annotations.json").write_text('{"images": [{"id'),
                                    "train_annotations.json"),
    "val box x2 <= x1": (lambda d: _rewrite(d / "val_annotations.json",
                                            lambda doc: doc["annotations"][1]["bbox"].__setitem__(2, 0)),
                         "val_annotations.json"),
    "unknown category": (lambda d: _rewrite(d / "train_annotations.json",
                                            lambda doc: doc["annotations"][0].update(category_id=7)),
                         "train_annotations.json"),
    "truncated train PNG": (lambda d: (d / "train" / "000001.png").write_bytes(
        (d / "train" / "000001.png").read_bytes()[:-40]), "000001.png"),
    "missing val image": (lambda d: (d / "val" / "000004.png").unlink(), "000004.png"),
    "val image of the wrong size": (lambda d: Image.new("RGB", (100, 224)).save(d / "val" / "000003.png"), "000003.png"),
}


@pytest.mark.parametrize("case", TRAIN_BREAKS)
def test_cli_train_detector_refuses_a_broken_root_before_training(shapes_root, tmp_path, capsys, case):
    root, out = tmp_path / "root", tmp_path / "run"
    shutil.copytree(shapes_root / "detection", root / "detection")
    edit, named = TRAIN_BREAKS[case]
    edit(root / "detection")
    code = main(["train", "detector", "--data-root", str(root), "--out", str(out), "--epochs", "1", "--quiet"])
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
    print(f"bad detection annotation files checked: {per_format}; prediction files: "
          f"{ {fmt: RAN['predictions', fmt] for fmt in FORMATS} }")
    assert all(n >= 500 for n in per_format.values()), per_format
