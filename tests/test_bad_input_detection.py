"""Robustness (docs/data-formats.md, 'Bad input'), detection: hypothesis mutates a valid generated shapes split
into bad input.

The valid split is the train split of a tiny generated shapes dataset, in the reference format and converted to COCO
(bbox xywh, area w*h). Each example writes one mutated file and checks:

1. loading raises :class:`DataError` (never another exception type) whose message is a single line (no traceback,
   no newline) naming the file and, for a record-level problem, the record (its id or index);
2. with ``skip_bad=True`` a record-level problem becomes one :class:`DataWarning`, a count and a smaller split,
   while a file-level problem still raises;
3. prediction files for ``loclab eval detections`` get the same treatment, and the CLI (a sample of cases) exits 2
   with ``loclab: error: ...`` naming the file, without a traceback and, for ``train``, without a checkpoint.

``RAN`` counts the bad inputs actually checked; the last test asserts at least 500 per format.
The helpers shared with ``tests/test_bad_input_keypoints.py`` live in ``tests/bad_input_support.py``.
"""

from __future__ import annotations

import copy
import warnings
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from bad_input_support import (
    CLI,
    FAST,
    FORMATS,
    INT64,
    assert_enough_checked,
    broken_image_files,
    broken_json,
    build_bench,
    check_bad_prediction_file,
    check_cli_eval,
    check_file_level,
    check_skippable,
    check_train_refuses,
    containers,
    dumps,
    not_arrays,
    not_integers,
    not_numbers,
    not_objects,
    outward,
    rewrite,
)
from loclab.data.errors import DataWarning
from loclab.data.formats_detection import load_detection_annotations
from loclab.data.shapes import generate_shapes
from loclab.evaluation.detection import PREDICTION_KEYS, score_detection_files

RAN: Counter[tuple[str, str]] = Counter()  # (test, format) -> bad inputs checked
SIZE = 224  # generated shapes images are SIZE x SIZE

# ------------------------------------------------------------------------------------------------ fixtures


def to_coco(document: dict) -> dict:
    coco = copy.deepcopy(document)
    for ann in coco["annotations"]:
        x1, y1, x2, y2 = ann["bbox"]
        ann["bbox"], ann["area"] = [x1, y1, x2 - x1, y2 - y1], (x2 - x1) * (y2 - y1)
    return coco


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shapes")
    generate_shapes(root, seed=641, n_train=3, n_val=2, progress=False)
    return root


@pytest.fixture(scope="module")
def bench(shapes_root, tmp_path_factory):
    """``(documents by format, work dir, broken image names)``; ``work/train/`` has the real and the broken images."""
    work = tmp_path_factory.mktemp("bad_detection")
    return build_bench(shapes_root / "detection", work, "RGB", (SIZE // 2, SIZE + 3), to_coco)


def predictions_of(document: dict) -> list[dict]:
    """Perfect xyxy predictions for the reference document."""
    return [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": list(a["bbox"]),
             "score": round(0.3 + 0.04 * k, 3)} for k, a in enumerate(document["annotations"])]


def check_record_level(path: Path, data: bytes, records: list[str], base: dict, check_images: bool = False) -> None:
    split = check_skippable(load_detection_annotations, path, data, records, check_images)
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
    check_file_level(load_detection_annotations, work / f"{fmt}_annotations.json", raw)
    RAN["json", fmt] += 1


@pytest.mark.parametrize("fmt", FORMATS)
@settings(max_examples=80, **FAST)
@given(data=st.data())
def test_bad_structure_is_a_file_level_error(bench, fmt, data):
    documents, work, _ = bench
    _, raw = data.draw(broken_structure(documents[fmt]), label="case")
    check_file_level(load_detection_annotations, work / f"{fmt}_annotations.json", raw)
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
    raw, where = data.draw(broken_image_files(documents[fmt], broken, SIZE), label="case")
    check_record_level(work / "train_annotations.json", raw, where, documents[fmt], check_images=True)
    RAN["images", fmt] += 1


@pytest.mark.parametrize("fmt", FORMATS)
@settings(max_examples=120, **FAST)
@given(data=st.data())
def test_bad_prediction_files_name_the_file_and_record(bench, fmt, data):
    documents, work, _ = bench
    raw, where = data.draw(bad_predictions(documents["reference"]), label="case")
    check_bad_prediction_file(score_detection_files, work, fmt, documents[fmt], raw, where)
    RAN["predictions", fmt] += 1


@settings(max_examples=16, **CLI)
@given(data=st.data())
def test_cli_eval_detections_reports_bad_files(bench, capsys, data):
    def gt_cases(document, fmt):
        return broken_json(document) | broken_structure(document) | bad_record(document, fmt == "coco")

    check_cli_eval("detections", data, bench, capsys, gt_cases, bad_predictions, predictions_of)


TRAIN_BREAKS = {  # edit of ROOT/detection, the file name the error must show
    "truncated train annotations": (lambda d: (d / "train_annotations.json").write_text('{"images": [{"id'),
                                    "train_annotations.json"),
    "val box x2 <= x1": (lambda d: rewrite(d / "val_annotations.json",
                                           lambda doc: doc["annotations"][1]["bbox"].__setitem__(2, 0)),
                         "val_annotations.json"),
    "unknown category": (lambda d: rewrite(d / "train_annotations.json",
                                           lambda doc: doc["annotations"][0].update(category_id=7)),
                         "train_annotations.json"),
    "truncated train PNG": (lambda d: (d / "train" / "000001.png").write_bytes(
        (d / "train" / "000001.png").read_bytes()[:-40]), "000001.png"),
    "missing val image": (lambda d: (d / "val" / "000004.png").unlink(), "000004.png"),
    "val image of the wrong size": (lambda d: Image.new("RGB", (100, 224)).save(d / "val" / "000003.png"), "000003.png"),
}


@pytest.mark.parametrize("case", TRAIN_BREAKS)
def test_cli_train_detector_refuses_a_broken_root_before_training(shapes_root, tmp_path, capsys, case):
    edit, named = TRAIN_BREAKS[case]
    check_train_refuses(shapes_root / "detection", tmp_path, capsys, ["train", "detector"], edit, named)


def test_at_least_500_bad_annotation_files_per_format():
    """Runs last in this module: counts what the hypothesis tests above actually checked."""
    assert_enough_checked(RAN, "detection")
