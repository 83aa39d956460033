"""Layout detection: each layout is recognised and says what it found; a forced format that does not match says
what is missing; a folder with no known layout lists what was looked for and what is there; keypoint layouts
dispatch to their readers; ``engine.tasks`` reads any layout."""

from __future__ import annotations

import json
import shutil

import pytest

from keypoint_writers import make_keypoint_dataset, write_coco_keypoints, write_deeplabcut
from layout_writers import NAMES, make_detection_dataset, write_coco, write_layout, write_voc, write_yolo
from loclab.data.errors import DataError
from loclab.data.formats_keypoints import load_keypoint_annotations
from loclab.data.layouts import LAYOUTS, Layout, detect_layout, load_detection_split, load_keypoint_split
from loclab.engine.tasks import detection_split, keypoint_split


@pytest.fixture(scope="module")
def ds():
    return make_detection_dataset(seed=11, n_train=8, n_val=4, specials=False)


def one_line(message: str) -> str:
    assert "\n" not in message and "Traceback" not in message, message
    return message


REASONS = {
    "reference": ["reference layout", "detection/train_annotations.json", "detection/val/"],
    "coco": ["COCO layout", "annotations/instances_train2017.json", "train images in train2017/",
             "val images in val2017/"],
    "voc": ["VOC layout: 12 XML files in Annotations/", "images in JPEGImages/", "ImageSets/Main/train.txt"],
    "yolo": ["YOLO layout: data.yaml with 7 classes", "train from images/train", "val from images/val"],
}


@pytest.mark.parametrize("name", REASONS)
def test_each_layout_is_detected_and_says_why(ds, tmp_path, name):
    root = write_layout(ds, tmp_path, name)
    layout = detect_layout(root, "detection")
    assert isinstance(layout, Layout) and layout.name == name
    assert all(part in layout.reason for part in REASONS[name]), layout.reason
    assert detect_layout(root, "detection", format=name) == layout  # forcing the right one changes nothing
    assert load_detection_split(root, "val").format_reason.startswith(layout.reason)


def test_voc_variant_without_imagesets(ds, tmp_path):
    layout = detect_layout(write_voc(ds, tmp_path, variant="kangaroo"), "detection")
    assert layout == Layout("voc", "VOC layout: 12 XML files in annots/, images in images/; no ImageSets split, so "
                                   "every 5th image (by file name) is val")


def test_roboflow_coco_export(ds, tmp_path):
    coco = write_coco(ds, tmp_path / "coco")
    root = tmp_path / "robo"
    for split, folder in (("train", "train"), ("val", "valid")):
        shutil.copytree(coco / f"{split}2017", root / folder)
        shutil.copy(coco / "annotations" / f"instances_{split}2017.json", root / folder / "_annotations.coco.json")
    layout = detect_layout(root, "detection")
    assert layout.name == "coco" and "valid/_annotations.coco.json" in layout.reason
    loaded = load_detection_split(root, "val")
    assert loaded.image_dir == root / "valid" and len(loaded) == len(ds.val)


def test_two_layouts_in_one_folder_first_wins_and_says_so(ds, tmp_path):
    write_voc(ds, tmp_path)
    write_yolo(ds, tmp_path)
    layout = detect_layout(tmp_path, "detection")
    assert layout.name == "voc" and "also looks like a yolo dataset" in layout.reason
    assert detect_layout(tmp_path, "detection", "yolo").name == "yolo"
    assert load_detection_split(tmp_path, "train", format="yolo").format == "yolo"


@pytest.mark.parametrize("forced, missing", [
    ("voc", "Annotations/, annotations/ or annots/ holding *.xml files"),
    ("yolo", "data.yaml"),
    ("coco", "annotations/instances_train*.json"),
    ("reference", "detection/train_annotations.json"),
])
def test_forced_format_that_does_not_match_says_what_is_missing(ds, tmp_path, forced, missing):
    other = "yolo" if forced != "yolo" else "voc"
    root = write_layout(ds, tmp_path, other)
    with pytest.raises(DataError) as info:
        load_detection_split(root, "train", format=forced)
    message = one_line(str(info.value))
    assert f"format '{forced}' was given" in message and missing in message and str(root) in message


def test_formats_of_the_other_task_and_unknown_formats(ds, tmp_path):
    root = write_layout(ds, tmp_path, "voc")
    with pytest.raises(DataError, match="not a detection layout; detection layouts are reference, coco, voc, yolo"):
        detect_layout(root, "detection", "deeplabcut")
    with pytest.raises(DataError, match="not a keypoints layout"):
        detect_layout(root, "keypoints", "yolo")
    with pytest.raises(ValueError, match="format must be one of"):
        detect_layout(root, "detection", "pascal")
    assert LAYOUTS == ("auto", "reference", "coco", "voc", "yolo", "deeplabcut")


def test_nothing_found_lists_what_was_looked_for_and_what_is_there(tmp_path):
    (tmp_path / "pictures").mkdir()
    (tmp_path / "notes.txt").write_text("my dataset")
    (tmp_path / "annotations").mkdir()  # neither COCO json nor VOC xml inside
    with pytest.raises(DataError) as info:
        detect_layout(tmp_path, "detection")
    message = one_line(str(info.value))
    for part in ("no detection dataset layout found", "reference:", "coco:", "voc:", "yolo:", "loclab generate shapes",
                 "annotations/, pictures/, notes.txt"):
        assert part in message, (part, message)
    with pytest.raises(DataError, match="does not exist"):
        detect_layout(tmp_path / "nowhere", "detection")


def test_broken_files_of_a_recognised_layout_are_reported_not_skipped(ds, tmp_path):
    root = write_layout(ds, tmp_path, "coco")
    (root / "annotations" / "instances_val2017.json").unlink()
    with pytest.raises(DataError, match="no COCO val file"):
        detect_layout(root, "detection")


def test_tasks_read_any_layout_and_keep_the_generate_hint(ds, tmp_path):
    root = write_layout(ds, tmp_path / "voc", "voc")
    split = detection_split(root, "val")
    assert split.format == "voc" and split.categories == dict(enumerate(NAMES))
    assert detection_split(root, "val", data_format="voc").format == "voc"
    (tmp_path / "empty").mkdir()
    for missing in (tmp_path / "empty", tmp_path / "absent"):
        with pytest.raises(DataError, match="create one with `loclab generate shapes"):
            detection_split(missing, "train")
        with pytest.raises(DataError, match="create one with `loclab generate figures"):
            keypoint_split(missing, "train")


# ------------------------------------------------------------------------------------------------ keypoints


def test_keypoint_reference_layout(tiny_data_root):
    layout = detect_layout(tiny_data_root, "keypoints")
    assert layout.name == "reference" and "keypoints/train_annotations.json" in layout.reason
    loaded = load_keypoint_split(tiny_data_root, "val")
    direct = load_keypoint_annotations(tiny_data_root / "keypoints" / "val_annotations.json")
    assert loaded.keypoints.equal(direct.keypoints) and loaded.format_reason.startswith(layout.reason)
    assert detect_layout(tiny_data_root, "detection").name == "reference"


def test_keypoint_coco_and_deeplabcut_layouts(tmp_path):
    kds = make_keypoint_dataset(seed=3, n_train=4, n_val=2)
    files = write_coco_keypoints(kds, tmp_path / "coco")
    layout = detect_layout(tmp_path / "coco", "keypoints")
    assert layout.name == "coco" and "person_keypoints_train.json" in layout.reason and "images/" in layout.reason
    loaded = load_keypoint_split(tmp_path / "coco", "val")
    direct = load_keypoint_annotations(files["val"], tmp_path / "coco" / "images")
    assert loaded.keypoints.equal(direct.keypoints) and loaded.keypoint_names == direct.keypoint_names
    with pytest.raises(DataError, match="format 'coco' was given"):
        detect_layout(tmp_path / "coco", "detection", "coco")  # person_keypoints files are no detection dataset

    write_deeplabcut(kds, tmp_path / "dlc")
    layout = detect_layout(tmp_path / "dlc", "keypoints")
    assert layout.name == "deeplabcut" and "config.yaml" in layout.reason
    train = load_keypoint_split(tmp_path / "dlc", "train")
    assert train.format == "deeplabcut" and len(train) > 0
    with pytest.raises(DataError, match="no detection dataset layout found"):
        detect_layout(tmp_path / "dlc", "detection")


def test_reference_label_mapping_is_shared_by_train_and_val(ds, tmp_path):
    root = write_layout(ds, tmp_path, "reference")
    file = root / "detection" / "train_annotations.json"
    document = json.loads(file.read_text())
    document["categories"][0]["name"] = "stick"
    file.write_text(json.dumps(document))
    with pytest.raises(DataError, match=r"category id 3 is \"stick\", but .*val_annotations.json names it \"bar\""):
        load_detection_split(root, "train")
