"""Annotation readers: reference and COCO formats, auto-detection, and one test per kind of bad input."""

import copy
import json
import math
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image

from loclab.data import formats
from loclab.data.errors import DataError, DataWarning
from loclab.data.formats_detection import load_detection_annotations
from loclab.data.formats_keypoints import load_keypoint_annotations, write_keypoint_annotations

# Byte for byte the reference-format example of docs/data-formats.md, as the original course generator wrote it.
REFERENCE_EXAMPLE = """{"images": [{"id": 0, "file_name": "000000.png", "width": 224, "height": 224}],
 "annotations": [{"id": 0, "image_id": 0, "category_id": 2, "bbox": [60, 20, 180, 140], "area": 14400}],
 "categories": [{"id": 0, "name": "circle"}, {"id": 1, "name": "square"}, {"id": 2, "name": "triangle"}]}
"""

CATEGORIES = [{"id": 0, "name": "circle"}, {"id": 1, "name": "square"}, {"id": 2, "name": "triangle"}]
DETECTION = {
    "images": [{"id": 0, "file_name": "000000.png", "width": 224, "height": 224},
               {"id": 1, "file_name": "000001.png", "width": 224, "height": 224}],
    "annotations": [
        {"id": 0, "image_id": 0, "category_id": 2, "bbox": [60, 20, 180, 140], "area": 14400},
        {"id": 1, "image_id": 0, "category_id": 0, "bbox": [10, 10, 30, 30], "area": 441},
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [150, 100, 210, 160], "area": 3600},
    ],
    "categories": CATEGORIES,
}
NAMES = ["head", "left_hand", "right_hand", "left_foot", "right_foot"]
FIGURE = [[64, 44], [50, 70], [80, 66], [44, 101], [84, 101]]
KEYPOINTS = {
    "images": [{"id": 0, "file_name": "000000.png", "keypoints": FIGURE},
               {"id": 1, "file_name": "000001.png", "keypoints": FIGURE}],
    "keypoint_names": NAMES,
    "num_keypoints": 5,
}


def write_split(tmp_path: Path, document, size=(224, 224), mode="RGB", text=None) -> Path:
    """``tmp_path/train_annotations.json`` + a white PNG per image in ``tmp_path/train/``."""
    (tmp_path / "train").mkdir(exist_ok=True)
    for image in document.get("images", []) if isinstance(document, dict) else []:
        if isinstance(image, dict) and isinstance(image.get("file_name"), str):
            Image.new(mode, size, "white").save(tmp_path / "train" / image["file_name"])
    path = tmp_path / "train_annotations.json"
    path.write_text(text if text is not None else json.dumps(document))
    return path


def changed(document, edit):
    document = copy.deepcopy(document)
    edit(document)
    return document


# ------------------------------------------------------------------------------------------ reading good files

def test_spec_example_loads_unchanged(tmp_path):
    path = write_split(tmp_path, None, text=REFERENCE_EXAMPLE)
    Image.new("RGB", (224, 224), "white").save(tmp_path / "train" / "000000.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # unambiguous: no warning
        split = load_detection_annotations(path)
    assert split.format == "reference" and "xyxy" in split.format_reason
    assert split.image_dir == tmp_path / "train" and split.images[0].path == tmp_path / "train" / "000000.png"
    assert torch.equal(split.boxes[0], torch.tensor([[60.0, 20.0, 180.0, 140.0]]))
    assert split.boxes[0].dtype == torch.float32 and split.labels[0].dtype == torch.int64
    assert split.labels[0].tolist() == [2] and split.annotation_ids[0].tolist() == [0]
    assert split.categories == {0: "circle", 1: "square", 2: "triangle"} and split.category_ids == (0, 1, 2)
    assert split.visible_fraction is None and split.skipped == () and split.num_skipped == 0


def test_generated_files_load_with_their_extra_field(tiny_data_root):
    path = tiny_data_root / "detection" / "val_annotations.json"
    split = load_detection_annotations(path)
    raw = json.loads(path.read_text())
    assert split.format == "reference" and len(split) == len(raw["images"])
    flat = torch.cat(split.boxes)
    assert flat.tolist() == [a["bbox"] for a in raw["annotations"]]
    assert torch.cat(split.visible_fraction).tolist() == pytest.approx([a["visible_fraction"] for a in raw["annotations"]])
    kp = load_keypoint_annotations(tiny_data_root / "keypoints" / "val_annotations.json")
    raw = json.loads((tiny_data_root / "keypoints" / "val_annotations.json").read_text())
    assert kp.format == "reference" and kp.keypoint_names == tuple(NAMES) and kp.num_keypoints == 5
    assert kp.keypoints.dtype == torch.float32 and kp.keypoints.tolist() == [im["keypoints"] for im in raw["images"]]
    assert [im.id for im in kp.images] == [im["id"] for im in raw["images"]] and bool(kp.visible.all())


def test_coco_detection_is_detected_and_converted(tmp_path):
    document = {
        "info": {"year": 2024}, "licenses": [],
        "images": [{"id": 7, "file_name": "a.png", "width": 100, "height": 80, "license": 1}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 3, "bbox": [50.5, 10, 40, 60], "area": 1900.0, "iscrowd": 0},
            {"id": 2, "image_id": 7, "category_id": 7, "bbox": [70, 5, 20, 10], "area": 200, "iscrowd": 0},
            {"id": 3, "image_id": 7, "category_id": 1, "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 1},
        ],
        "categories": [{"id": 1, "name": "cat"}, {"id": 3, "name": "dog"}, {"id": 7, "name": "eel"}],
    }
    split = load_detection_annotations(write_split(tmp_path, document, size=(100, 80)))
    assert split.format == "coco" and "xywh" in split.format_reason
    assert split.boxes[0].tolist() == [[50.5, 10.0, 90.5, 70.0], [70.0, 5.0, 90.0, 15.0]]  # crowd dropped
    assert split.labels[0].tolist() == [1, 2] and split.category_ids == (1, 3, 7)
    assert split.categories == {0: "cat", 1: "dog", 2: "eel"}
    with pytest.raises(DataError, match="annotation id 1 .*x2 <= x1"):
        load_detection_annotations(tmp_path / "train_annotations.json", box_format="xyxy")


def test_explicit_box_format_overrides_and_ambiguity_warns(tmp_path):
    tiny = {"images": DETECTION["images"][:1], "categories": CATEGORIES,
            "annotations": [{"id": 0, "image_id": 0, "category_id": 0, "bbox": [10, 10, 30, 30]}]}
    path = write_split(tmp_path, tiny)
    with pytest.warns(DataWarning, match="ambiguous"):
        assert load_detection_annotations(path).boxes[0].tolist() == [[10, 10, 30, 30]]
    as_coco = load_detection_annotations(path, box_format="xywh")
    assert as_coco.format == "coco" and as_coco.boxes[0].tolist() == [[10, 10, 40, 40]]
    assert "given explicitly" in as_coco.format_reason
    with pytest.raises(ValueError):
        load_detection_annotations(path, box_format="cxcywh")


def test_image_dir_and_check_images(tmp_path):
    path = tmp_path / "labels.json"
    path.write_text(REFERENCE_EXAMPLE)
    split = load_detection_annotations(path, check_images=False)  # no image anywhere: not looked at
    assert split.image_dir == tmp_path
    other = tmp_path / "pictures"
    assert load_detection_annotations(path, other, check_images=False).images[0].path == other / "000000.png"


def test_coco_keypoints_are_read(tmp_path):
    flat = [v for x, y in FIGURE for v in (x, y, 2)]
    flat[3:6] = [0, 0, 0]  # left hand not labelled
    document = {
        "images": [{"id": 3, "file_name": "p.png", "width": 128, "height": 128}],
        "annotations": [{"id": 9, "image_id": 3, "category_id": 1, "keypoints": flat, "num_keypoints": 4}],
        "categories": [{"id": 1, "name": "person", "keypoints": NAMES, "skeleton": []}],
    }
    split = load_keypoint_annotations(write_split(tmp_path, document, size=(128, 128), mode="L"))
    assert split.format == "coco" and split.keypoint_names == tuple(NAMES)
    assert split.keypoints.shape == (1, 5, 2) and split.keypoints[0, 0].tolist() == [64, 44]
    assert split.visible.tolist() == [[True, False, True, True, True]]


def test_keypoint_writer_round_trips(tmp_path):
    (tmp_path / "val").mkdir()
    Image.new("L", (128, 128), 255).save(tmp_path / "val" / "000005.png")
    path = write_keypoint_annotations(tmp_path / "val_annotations.json",
                                      [{"id": 5, "file_name": "000005.png", "keypoints": FIGURE}], NAMES)
    assert json.loads(path.read_text())["num_keypoints"] == 5
    assert load_keypoint_annotations(path).keypoints[0].tolist() == FIGURE


def test_task_readers_have_one_home():
    """The readers and splits are imported from formats_detection / formats_keypoints only, never via formats."""
    for name in ("DetectionSplit", "KeypointSplit", "load_detection_annotations", "load_keypoint_annotations",
                 "write_detection_annotations", "write_keypoint_annotations"):
        assert not hasattr(formats, name), name


# ---------------------------------------------------------------------------------------------- file-level errors

@pytest.mark.parametrize(
    "text, problem, both_readers",
    [
        (None, "does not exist", True),
        ("", "is empty", True),
        ("  \n", "is empty", True),
        ('{"images": [],\n "annotations": [}', "malformed JSON at line 2, column", True),
        ("[1, 2]", "top level is a JSON array", True),
        ('{"images": {}, "annotations": [], "categories": []}', '"images" is a JSON object, expected an array', True),
        ('{"images": [], "categories": []}', 'missing top-level key "annotations"', False),
        ('{"images": [], "annotations": [], "categories": [{"id": 0}, {"id": 0}]}', "duplicate category id 0", False),
    ],
)
def test_file_level_problems_raise_even_with_skip_bad(tmp_path, text, problem, both_readers):
    path = tmp_path / "train_annotations.json"
    if text is not None:
        path.write_text(text)
    readers = (load_detection_annotations, load_keypoint_annotations) if both_readers else (load_detection_annotations,)
    for reader in readers:
        with pytest.raises(DataError, match=problem) as info:
            reader(path, skip_bad=True)
        assert str(path) in str(info.value)


# -------------------------------------------------------------------------------------------- record-level errors

def set_annotation(index, **fields):
    return lambda d: d["annotations"][index].update(fields)


DETECTION_CASES = {
    "bbox of 3 numbers": (set_annotation(1, bbox=[1, 2, 3]), "annotation id 1", "expected 4 numbers"),
    "bbox with NaN": (set_annotation(1, bbox=[math.nan, 2, 30, 40]), "annotation id 1", "finite numbers"),
    "bbox with inf": (set_annotation(1, bbox=[1, 2, math.inf, 40]), "annotation id 1", "finite numbers"),
    "bbox a string": (set_annotation(1, bbox="10 10 30 30"), "annotation id 1", "expected 4 numbers"),
    "bbox missing": (lambda d: d["annotations"][1].pop("bbox"), "annotation id 1", "bbox None"),
    "x2 <= x1": (set_annotation(1, bbox=[50, 10, 40, 60]), 'annotation id 1 (image 0 "000000.png")', "x2 <= x1"),
    "y2 <= y1": (set_annotation(2, bbox=[150, 100, 210, 90]), 'annotation id 2 (image 1 "000001.png")', "y2 <= y1"),
    "box outside": (set_annotation(2, bbox=[200, 100, 260, 160]), "annotation id 2", "outside the 224x224 image"),
    "negative box": (set_annotation(1, bbox=[-4, 10, 16, 30]), "annotation id 1", "outside the 224x224 image"),
    "unknown category": (set_annotation(1, category_id=7), "annotation id 1", "unknown category_id 7"),
    "unknown image": (set_annotation(1, image_id=42), "annotation id 1 (image 42)", "image_id 42 is not an id"),
    "duplicate annotation id": (set_annotation(2, id=1), "annotation id 1 (image 1", "duplicate annotation id 1"),
    "annotation not an object": (lambda d: d["annotations"].__setitem__(1, 5), "annotations[1]", "expected an object"),
    "category id a string": (set_annotation(1, category_id="0"), "annotation id 1", '"category_id" is \'0\''),
    "area a string": (set_annotation(1, area="big"), "annotation id 1", '"area"'),
    "duplicate image id": (lambda d: d["images"][1].update(id=0), 'image id 0 ("000001.png")', "duplicate image id"),
    "image id a string": (lambda d: d["images"][0].update(id="0"), "images[0]", "expected an integer"),
    "image without file_name": (lambda d: d["images"][1].pop("file_name"), "image id 1", 'missing key "file_name"'),
    "image width negative": (lambda d: d["images"][1].update(width=-3), "image id 1", '"width" is -3'),
}


@pytest.mark.parametrize("case", DETECTION_CASES, ids=list(DETECTION_CASES))
def test_bad_detection_records_name_file_and_record(tmp_path, case):
    edit, record, problem = DETECTION_CASES[case]
    path = write_split(tmp_path, changed(DETECTION, edit))
    with pytest.raises(DataError) as info:
        load_detection_annotations(path)
    message = str(info.value)
    assert str(path) in message and record in message and problem in message, message


def test_bad_image_files_are_named(tmp_path):
    path = write_split(tmp_path, DETECTION)
    image = tmp_path / "train" / "000001.png"
    image.unlink()
    with pytest.raises(DataError, match=r'image id 1 \("000001.png"\): image file .*000001.png does not exist'):
        load_detection_annotations(path)
    image.write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match=r'image id 1 .*000001.png is not a readable image'):
        load_detection_annotations(path)
    Image.new("RGB", (100, 90), "white").save(image)
    with pytest.raises(DataError, match=r"image id 1 .*000001.png is 100x90, expected 224x224"):
        load_detection_annotations(path)
    # Reference files may leave the size out: 224x224 is assumed, and checked.
    write_split(tmp_path, changed(DETECTION, lambda d: [im.pop("width") for im in d["images"]]), size=(224, 100))
    with pytest.raises(DataError, match=r"image id 0 .* is 224x100, expected 224x224"):
        load_detection_annotations(path)


def test_skip_bad_drops_bad_records_with_one_warning(tmp_path):
    document = changed(DETECTION, set_annotation(1, bbox=[200, 10, 190, 60]))
    path = write_split(tmp_path, document)
    (tmp_path / "train" / "000001.png").unlink()
    with pytest.raises(DataError, match=r"000001.png does not exist\. \(1 more problem\(s\) found\.\)"):
        load_detection_annotations(path)
    with pytest.warns(DataWarning, match="skipped 2 bad record") as caught:
        split = load_detection_annotations(path, skip_bad=True)
    assert len([w for w in caught if issubclass(w.category, DataWarning)]) == 1
    assert [im.id for im in split.images] == [0] and split.annotation_ids[0].tolist() == [0]  # image 1 dropped
    assert split.num_skipped == 2 and all(str(path) in m for m in split.skipped)
    assert "image id 1" in split.skipped[0] and "annotation id 1" in split.skipped[1]


def set_keypoints(index, value):
    return lambda d: d["images"][index].update(keypoints=value)


KEYPOINT_CASES = {
    "4 keypoints": (set_keypoints(1, FIGURE[:4]), 'image id 1 ("000001.png")', "has 4 keypoints, expected 5"),
    "keypoint outside": (set_keypoints(1, FIGURE[:4] + [[130, 40]]), "image id 1", "keypoint 4 (right_foot) [130, 40] lies outside the 128x128 image"),
    "negative keypoint": (set_keypoints(0, [[-3, 5]] + FIGURE[1:]), "image id 0", "keypoint 0 (head) [-3, 5] lies outside"),
    "keypoint not numbers": (set_keypoints(1, FIGURE[:4] + [["a", 1]]), "image id 1", "keypoint 4 (right_foot)"),
    "keypoint of 3 numbers": (set_keypoints(1, FIGURE[:4] + [[1, 2, 3]]), "image id 1", "expected 2 numbers"),
    "keypoints missing": (lambda d: d["images"][1].pop("keypoints"), "image id 1", '"keypoints" is a JSON null'),
    "duplicate image id": (lambda d: d["images"][1].update(id=0), 'image id 0 ("000001.png")', "duplicate image id"),
}


@pytest.mark.parametrize("case", KEYPOINT_CASES, ids=list(KEYPOINT_CASES))
def test_bad_keypoint_records_name_file_and_record(tmp_path, case):
    edit, record, problem = KEYPOINT_CASES[case]
    path = write_split(tmp_path, changed(KEYPOINTS, edit), size=(128, 128), mode="L")
    with pytest.raises(DataError) as info:
        load_keypoint_annotations(path)
    message = str(info.value)
    assert str(path) in message and record in message and problem in message, message
    with pytest.warns(DataWarning):
        assert len(load_keypoint_annotations(path, skip_bad=True)) == 1


@pytest.mark.parametrize(
    "edit, problem",
    [
        (lambda d: d.update(num_keypoints=4), '"num_keypoints" is 4 but "keypoint_names" lists 5'),
        (lambda d: d.pop("num_keypoints"), 'missing top-level key "num_keypoints"'),
        (lambda d: d.update(keypoint_names="head"), '"keypoint_names" is a JSON string'),
    ],
)
def test_keypoint_file_level_problems(tmp_path, edit, problem):
    path = write_split(tmp_path, changed(KEYPOINTS, edit), size=(128, 128), mode="L")
    with pytest.raises(DataError, match=problem):
        load_keypoint_annotations(path, skip_bad=True)


def test_keypoint_image_must_be_128_by_default(tmp_path):
    path = write_split(tmp_path, KEYPOINTS, size=(64, 64), mode="L")
    with pytest.raises(DataError, match=r'image id 0 \("000000.png"\): image file .* is 64x64, expected 128x128'):
        load_keypoint_annotations(path)


def coco_keypoints(annotations):
    flat = [v for x, y in FIGURE for v in (x, y, 2)]
    return {
        "images": [{"id": i, "file_name": f"{i:06d}.png", "width": 128, "height": 128} for i in range(2)],
        "annotations": [{"id": a, "image_id": i, "category_id": 1, "keypoints": list(flat)} for a, i in annotations],
        "categories": [{"id": 1, "name": "person", "keypoints": NAMES}],
    }


@pytest.mark.parametrize(
    "document, record, problem",
    [
        (changed(coco_keypoints([(0, 0), (1, 1)]), lambda d: d["annotations"][1]["keypoints"].pop()),
         'annotation id 1 (image 1 "000001.png")', "expected 15 numbers"),
        (changed(coco_keypoints([(0, 0), (1, 1)]), lambda d: d["annotations"][1]["keypoints"].__setitem__(2, 5)),
         "annotation id 1", "visibility flags"),
        (coco_keypoints([(0, 0), (1, 1), (2, 9)]), "annotation id 2 (image 9)", "image_id 9 is not an id"),
    ],
)
def test_bad_coco_keypoint_records(tmp_path, document, record, problem):
    path = write_split(tmp_path, document, size=(128, 128), mode="L")
    with pytest.raises(DataError) as info:
        load_keypoint_annotations(path)
    message = str(info.value)
    assert str(path) in message and record in message and problem in message, message


def test_coco_images_may_hold_several_instances_or_none(tmp_path):
    path = write_split(tmp_path, coco_keypoints([(1, 1), (2, 1)]), size=(128, 128), mode="L")
    split = load_keypoint_annotations(path)
    assert len(split) == 2 and split.num_instances == 2 and split.instance_image.tolist() == [1, 1]
