"""Bad input in the VOC, YOLO and COCO layouts: each bad record raises a one-line :class:`DataError` naming its file
and record (XML file and object index, label file and line, image file, annotation id); ``skip_bad=True`` drops it
with one warning and a count; problems with the dataset as a whole (a bad data.yaml, a half ImageSets split, no
label files at all) raise either way."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import yaml

from layout_writers import make_detection_dataset, write_coco, write_voc, write_yolo
from loclab.data.errors import DataError, DataWarning
from loclab.data.layouts import load_detection_split


@pytest.fixture(scope="module")
def ds():
    return make_detection_dataset(seed=23, n_train=7, n_val=3)  # train[4] is EXIF 6, train[6] has no objects


def check_bad(root: Path, split: str, file: Path, record: str | None, problem: str, *, skipped: int = 1,
              images_left: int | None = None):
    """The split raises naming ``file``, ``record`` and ``problem``; with skip_bad, ``skipped`` records go with one
    warning. Returns the skip_bad split."""
    with pytest.raises(DataError) as info:
        load_detection_split(root, split)
    message = str(info.value)
    assert "\n" not in message and str(file) in message and problem in message, message
    assert record is None or record in message, message
    assert "skip_bad=True" in message
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = load_detection_split(root, split, skip_bad=True)
    notes = [w for w in caught if issubclass(w.category, DataWarning) and "skipped" in str(w.message)]
    assert len(notes) == 1 and f"skipped {skipped} bad record(s)" in str(notes[0].message)
    assert loaded.num_skipped == skipped and any(str(file) in m for m in loaded.skipped)
    if images_left is not None:
        assert len(loaded) == images_left
    return loaded


def check_file_level(root: Path, split: str, named: Path, problem: str) -> None:
    for skip_bad in (False, True):
        with pytest.raises(DataError) as info:
            load_detection_split(root, split, skip_bad=skip_bad)
        message = str(info.value)
        assert "\n" not in message and str(named) in message and problem in message, message


# ------------------------------------------------------------------------------------------------ VOC

VOC_OBJECT_EDITS = {  # (edit of the first object's XML text, problem)
    "missing xmax": (lambda t: t.replace("<xmax>", "<xmaximum>", 1).replace("</xmax>", "</xmaximum>", 1),
                     "<bndbox> has no <xmax>"),
    "non-numeric": (lambda t: _set_first(t, "ymin", "twelve"), "<ymin> is \"twelve\", expected a number"),
    "xmax < xmin": (lambda t: _set_first(t, "xmax", "1"), "has xmax < xmin"),
    "outside": (lambda t: _set_first(t, "ymax", "500"), "lies outside the"),
    "no name": (lambda t: t.replace("<name>", "<label>", 1).replace("</name>", "</label>", 1), "missing <name>"),
    "difficult": (lambda t: t.replace("<difficult>0</difficult>", "<difficult>yes</difficult>", 1)
                  .replace("<difficult>1</difficult>", "<difficult>yes</difficult>", 1), "<difficult> is \"yes\""),
}


def _set_first(text: str, tag: str, value: str) -> str:
    start = text.index(f"<{tag}>") + len(tag) + 2
    return text[:start] + value + text[text.index(f"</{tag}>", start):]


@pytest.mark.parametrize("case", VOC_OBJECT_EDITS)
def test_voc_bad_object_names_xml_and_object(ds, tmp_path, case):
    write_voc(ds, tmp_path)
    image = ds.train[1]
    xml = tmp_path / "Annotations" / f"{image.stem}.xml"
    edit, problem = VOC_OBJECT_EDITS[case]
    xml.write_text(edit(xml.read_text()))
    loaded = check_bad(tmp_path, "train", xml, "object 0", problem, images_left=len(ds.train))
    assert len(loaded.boxes[1]) == len(image.objects) - 1  # only the object went


VOC_IMAGE_BREAKS = {  # (edit of root, image index, problem)
    "malformed XML": (lambda x, i: x.write_text(x.read_text()[:150]), "malformed XML at line 1"),
    "wrong root": (lambda x, i: x.write_text("<annotations></annotations>"), "root element is <annotations>"),
    "missing image": (lambda x, i: i.unlink(), "image file not found"),
    "unreadable image": (lambda x, i: i.write_bytes(b"GIF89a not really"), "is not a readable image"),
    "wrong size": (lambda x, i: x.write_text(_set_first(x.read_text(), "width", "50")), "expected 50x"),
    "bad size text": (lambda x, i: x.write_text(_set_first(x.read_text(), "height", "tall")), "<size><height>"),
}


@pytest.mark.parametrize("case", VOC_IMAGE_BREAKS)
def test_voc_bad_image_names_the_xml_file(ds, tmp_path, case):
    write_voc(ds, tmp_path)
    image = ds.train[2]
    xml = tmp_path / "Annotations" / f"{image.stem}.xml"
    edit, problem = VOC_IMAGE_BREAKS[case]
    edit(xml, tmp_path / "JPEGImages" / image.file_name)
    loaded = check_bad(tmp_path, "train", xml, None, problem, images_left=len(ds.train) - 1)
    assert image.id not in [r.id for r in loaded.images]


def test_voc_unturned_size_of_an_exif_image(ds, tmp_path):
    write_voc(ds, tmp_path)
    image = ds.train[4]
    assert image.orientation == 6
    xml = tmp_path / "Annotations" / f"{image.stem}.xml"
    text = _set_first(_set_first(xml.read_text(), "width", str(image.height)), "height", str(image.width))
    xml.write_text(text)
    check_bad(tmp_path, "train", xml, None, "EXIF orientation tag turns it")


def test_voc_imagesets_problems(ds, tmp_path):
    write_voc(ds, tmp_path)
    listing = tmp_path / "ImageSets" / "Main" / "val.txt"
    listing.write_text(listing.read_text() + "999999\n")
    check_bad(tmp_path, "val", listing, "line 4", "image id \"999999\" has no annotation file")
    (tmp_path / "ImageSets" / "Main" / "train.txt").unlink()
    check_file_level(tmp_path, "val", tmp_path / "ImageSets" / "Main", "has val.txt but no train.txt")


# ------------------------------------------------------------------------------------------------ YOLO

YOLO_LINES = {  # (label line, problem)
    "class out of range": ("7 0.5 0.5 0.2 0.2", "class 7 is not a class id 0..6"),
    "negative class": ("-1 0.5 0.5 0.2 0.2", "class -1 is not a class id"),
    "fractional class": ("1.5 0.5 0.5 0.2 0.2", "class 1.5 is not a class id"),
    "four values": ("1 0.5 0.5 0.2", "has 4 values, expected 5"),
    "six values": ("1 0.5 0.5 0.2 0.2 0.9", "has 6 values, expected 5"),
    "not a number": ("1 0.5 half 0.2 0.2", "\"half\" is not a number"),
    "nan": ("1 0.5 nan 0.2 0.2", "\"nan\" is not a finite number"),
    "outside": ("1 0.95 0.5 0.2 0.2", "outside the image's [0, 1]"),
    "zero width": ("1 0.5 0.5 0 0.2", "width or height <= 0"),
    "pixel coordinates": ("1 40 30 12 10", "outside the image's [0, 1]"),
}


@pytest.mark.parametrize("case", YOLO_LINES)
def test_yolo_bad_line_names_label_file_and_line(ds, tmp_path, case):
    write_yolo(ds, tmp_path)
    image = ds.val[1]
    label = tmp_path / "labels" / "val" / f"{image.stem}.txt"
    line, problem = YOLO_LINES[case]
    label.write_text(label.read_text() + line + "\n")
    loaded = check_bad(tmp_path, "val", label, f"line {len(image.objects) + 1}", problem, images_left=len(ds.val))
    assert len(loaded.boxes[1]) == len(image.objects)


def test_yolo_bad_images(ds, tmp_path):
    write_yolo(ds, tmp_path, val="txt")
    broken = tmp_path / "images" / "val" / ds.val[0].file_name
    broken.write_bytes(broken.read_bytes()[:40])
    check_bad(tmp_path, "val", broken, None, "not a readable image", images_left=len(ds.val) - 1)
    listing = tmp_path / "val.txt"
    listing.write_text(listing.read_text() + "./images/val/gone.png\n")
    check_bad(tmp_path, "val", listing, f"line {len(ds.val) + 1}", "does not exist", skipped=2)


def test_yolo_label_file_that_is_not_text(ds, tmp_path):
    write_yolo(ds, tmp_path)
    label = tmp_path / "labels" / "train" / f"{ds.train[0].stem}.txt"
    label.write_bytes(b"\xff\xfe\x00garbage")
    check_bad(tmp_path, "train", label, None, "cannot be read as YOLO labels")


YAML_BREAKS = {  # (data.yaml text, problem)
    "malformed": ("train: images/train\nval: [images/val\nnames: [a]\n", "malformed YAML at line"),
    "a list": ("- train\n- val\n", "top level is list, expected a mapping"),
    "empty": ("", "top level is empty"),
    "no val": ("train: images/train\nnames: [a, b]\n", "no \"val\" entry"),
    "no names": ("train: images/train\nval: images/val\n", "has neither names nor nc"),
    "names gap": ("train: images/train\nval: images/val\nnames: {0: a, 2: b}\n", "expected the class ids 0..1"),
    "nc mismatch": ("train: images/train\nval: images/val\nnc: 3\nnames: [a, b]\n", "nc is 3 but names lists 2"),
    "nc not a number": ("train: images/train\nval: images/val\nnc: many\n", "nc is 'many'"),
    "val folder missing": ("train: images/train\nval: images/test\nnames: [a, b, c, d, e, f, g]\n",
                           "\"images/test\" not found"),
}


@pytest.mark.parametrize("case", YAML_BREAKS)
def test_bad_data_yaml_is_a_file_level_error(ds, tmp_path, case):
    write_yolo(ds, tmp_path)
    text, problem = YAML_BREAKS[case]
    (tmp_path / "data.yaml").write_text(text)
    check_file_level(tmp_path, "val", tmp_path / "data.yaml", problem)


def test_yolo_without_any_label_file(ds, tmp_path):
    write_yolo(ds, tmp_path)
    for label in (tmp_path / "labels" / "val").iterdir():
        label.unlink()
    check_file_level(tmp_path, "val", tmp_path / "data.yaml", "none of the 3 val images has a label file")


# ------------------------------------------------------------------------------------------------ COCO


def test_coco_bad_records_and_files(ds, tmp_path):
    write_coco(ds, tmp_path)
    file = tmp_path / "annotations" / "instances_train2017.json"
    document = json.loads(file.read_text())
    document["annotations"][2]["bbox"][2] = 500
    file.write_text(json.dumps(document))
    bad_id = document["annotations"][2]["id"]
    check_bad(tmp_path, "train", file, f"annotation id {bad_id}", "lies outside")
    document["annotations"][2]["bbox"][2] = 5
    file.write_text(json.dumps(document))
    (tmp_path / "train2017" / ds.train[5].file_name).unlink()  # not among the first images: the folder is found
    check_bad(tmp_path, "train", file, f"image id {ds.train[5].id}", "does not exist",
              images_left=len(ds.train) - 1)
    for image in ds.train[:3]:
        (tmp_path / "train2017" / image.file_name).unlink()
    check_file_level(tmp_path, "train", file, "cannot find the train images")


def test_coco_files_that_disagree_on_a_category(ds, tmp_path):
    write_coco(ds, tmp_path)
    val_file = tmp_path / "annotations" / "instances_val2017.json"
    document = json.loads(val_file.read_text())
    document["categories"][2]["name"] = "plus"
    val_file.write_text(json.dumps(document))
    check_file_level(tmp_path, "train", tmp_path / "annotations" / "instances_train2017.json",
                     "category id 8 is \"cross\", but")
    (tmp_path / "annotations" / "instances_val2017.json").write_text('{"images": [')
    check_file_level(tmp_path, "val", val_file, "malformed JSON")
    assert len(load_detection_split(tmp_path, "train")) == len(ds.train)  # the broken val file is val's problem


def test_yaml_names_that_yaml_reads_as_other_types(ds, tmp_path):
    """YAML 1.1 reads ``no``/``on`` as booleans and ``1`` as a number; names are kept as text anyway."""
    write_yolo(ds, tmp_path)
    data = yaml.safe_load((tmp_path / "data.yaml").read_text())
    data["names"] = ["bar", 1, "cross", "diamond", "ring", "square", "triangle"]
    (tmp_path / "data.yaml").write_text(yaml.safe_dump(data))
    assert load_detection_split(tmp_path, "val").categories[1] == "1"
