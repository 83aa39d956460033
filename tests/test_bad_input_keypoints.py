"""Robustness (docs/data-formats.md, 'Bad input'), keypoints: hypothesis mutates a valid generated stick-figure
split into bad input.

The valid split is the train split of a tiny generated figures dataset, in the reference format and converted to
COCO keypoints (flat ``[x, y, 2] * K``, names in ``categories[0].keypoints``). Each example writes one mutated file and
checks the properties of ``tests/test_bad_input_detection.py``: :class:`DataError` only, one line naming the file and
the record; ``skip_bad=True`` turns record-level problems into one :class:`DataWarning`, a count and a smaller split;
prediction files of ``loclab eval keypoints`` and the CLI (a sample) likewise. The helpers both modules share live in
``tests/bad_input_support.py``; ``RAN`` counts the bad inputs actually checked, and the last test asserts at least 500
per format.
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
    dumps,
    not_arrays,
    not_integers,
    not_numbers,
    not_objects,
    not_strings,
    outward,
    rewrite,
)
from loclab.data.errors import DataWarning
from loclab.data.figures import generate_figures
from loclab.data.formats_keypoints import load_keypoint_annotations
from loclab.evaluation.keypoints import score_keypoint_files

RAN: Counter[tuple[str, str]] = Counter()  # (test, format) -> bad inputs checked
SIZE = 128  # reference stick-figure images are SIZE x SIZE

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


@pytest.fixture(scope="module")
def figures_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("figures")
    generate_figures(root, seed=641, n_train=3, n_val=2, progress=False)
    return root


@pytest.fixture(scope="module")
def bench(figures_root, tmp_path_factory):
    """``(documents by format, work dir, broken image names)``; ``work/train/`` has the real and the broken images."""
    work = tmp_path_factory.mktemp("bad_keypoints")
    return build_bench(figures_root / "keypoints", work, "L", (SIZE // 2, SIZE // 2), to_coco)


def predictions_of(document: dict) -> list[dict]:
    """Perfect predictions for the reference document."""
    return [{"image_id": im["id"], "keypoints": copy.deepcopy(im["keypoints"])} for im in document["images"]]


def check_record_level(path: Path, data: bytes, records: list[str], base: dict, check_images: bool = False) -> None:
    split = check_skippable(load_keypoint_annotations, path, data, records, check_images)
    # every base image holds one figure; a skipped annotation may leave its image with none, which is valid
    assert split.num_instances < len(base["images"])
    assert split.keypoints.shape == (split.num_instances, len(base_names(base)), 2)


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
                  "duplicate annotation id"]  # an image may hold any number of instances, none included
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
    else:  # duplicate annotation id
        other = next(a for a in anns if a is not ann)
        other["id"], where = ann["id"], [f"annotation id {ann['id']}"]
    return kind, dumps(doc), where


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
    check_file_level(load_keypoint_annotations, work / f"{fmt}_annotations.json", raw)
    RAN["json", fmt] += 1


@pytest.mark.parametrize("fmt", FORMATS)
@settings(max_examples=80, **FAST)
@given(data=st.data())
def test_bad_structure_is_a_file_level_error(bench, fmt, data):
    documents, work, _ = bench
    _, raw = data.draw(broken_structure(documents[fmt]), label="case")
    check_file_level(load_keypoint_annotations, work / f"{fmt}_annotations.json", raw)
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
    raw, where = data.draw(broken_image_files(documents[fmt], broken, SIZE), label="case")
    check_record_level(work / "train_annotations.json", raw, where, documents[fmt], check_images=True)
    RAN["images", fmt] += 1


@pytest.mark.parametrize("fmt", FORMATS)
@settings(max_examples=120, **FAST)
@given(data=st.data())
def test_bad_prediction_files_name_the_file_and_record(bench, fmt, data):
    documents, work, _ = bench
    raw, where = data.draw(bad_predictions(documents["reference"]), label="case")
    check_bad_prediction_file(score_keypoint_files, work, fmt, documents[fmt], raw, where)
    RAN["predictions", fmt] += 1


@settings(max_examples=16, **CLI)
@given(data=st.data())
def test_cli_eval_keypoints_reports_bad_files(bench, capsys, data):
    def gt_cases(document, fmt):
        return broken_json(document) | broken_structure(document) | bad_record(document)

    check_cli_eval("keypoints", data, bench, capsys, gt_cases, bad_predictions, predictions_of)


TRAIN_BREAKS = {  # edit of ROOT/keypoints, the file name the error must show
    "truncated train annotations": (lambda d: (d / "train_annotations.json").write_text('{"images": [{"id'),
                                    "train_annotations.json"),
    "val keypoint outside": (lambda d: rewrite(d / "val_annotations.json",
                                               lambda doc: doc["images"][1]["keypoints"][0].__setitem__(0, 300)),
                             "val_annotations.json"),
    "4 keypoints in train": (lambda d: rewrite(d / "train_annotations.json",
                                               lambda doc: doc["images"][0]["keypoints"].pop()),
                             "train_annotations.json"),
    "truncated train PNG": (lambda d: (d / "train" / "000001.png").write_bytes(
        (d / "train" / "000001.png").read_bytes()[:-40]), "000001.png"),
    "missing val image": (lambda d: (d / "val" / "000004.png").unlink(), "000004.png"),
    "val image of the wrong size": (lambda d: Image.new("L", (64, 64)).save(d / "val" / "000003.png"), "000003.png"),
}


@pytest.mark.parametrize("case", TRAIN_BREAKS)
def test_cli_train_keypoints_refuses_a_broken_root_before_training(figures_root, tmp_path, capsys, case):
    edit, named = TRAIN_BREAKS[case]
    check_train_refuses(figures_root / "keypoints", tmp_path, capsys, ["train", "keypoints"], edit, named)


def test_at_least_500_bad_annotation_files_per_format():
    """Runs last in this module: counts what the hypothesis tests above actually checked."""
    assert_enough_checked(RAN, "keypoint")
