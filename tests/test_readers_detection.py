"""Detection readers of every layout give one record: the same boxes in original pixels, class names and labels
whatever the layout; images of every common kind (EXIF-rotated, grayscale, RGBA, palette, 16-bit) read upright as
8-bit pixels; VOC's coordinate convention, default split and difficult flags; YOLO's and COCO's variants."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image, ImageOps

from layout_writers import (
    CATEGORY_IDS,
    LAYOUT_NAMES,
    NAMES,
    SyntheticDetection,
    make_detection_dataset,
    voc_default_split,
    write_coco,
    write_layout,
    write_reference,
    write_voc,
    write_yolo,
)
from loclab.data.errors import DataError
from loclab.data.formats_detection import load_detection_annotations
from loclab.data.images import ImageReadError, image_size, load_pixels, open_image
from loclab.data.layouts import load_detection_split
from loclab.data.voc import load_voc_split
from loclab.data.yolo import label_path, load_yolo_split


@pytest.fixture(scope="module")
def ds() -> SyntheticDetection:
    return make_detection_dataset(seed=5, n_train=10, n_val=5)


@pytest.fixture(scope="module")
def roots(ds, tmp_path_factory) -> dict[str, Path]:
    """Every layout, plus the common variants, written once for the module."""
    base = tmp_path_factory.mktemp("layouts")
    written = {name: write_layout(ds, base / name, name) for name in LAYOUT_NAMES}
    written["coco_images_dir"] = write_coco(ds, base / "coco_images_dir", images="images", suffix="")
    written["voc_kangaroo"] = write_voc(ds, base / "voc_kangaroo", variant="kangaroo")
    written["yolo_dict_txt"] = write_yolo(ds, base / "yolo_dict_txt", names="dict", val="txt")
    return written


def expected_split(ds: SyntheticDetection, variant: str, split: str):
    return voc_default_split(ds)[split] if variant == "voc_kangaroo" else list(ds.split(split))


VARIANTS = [*LAYOUT_NAMES, "coco_images_dir", "voc_kangaroo", "yolo_dict_txt"]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("split", ["train", "val"])
def test_every_layout_reads_back_what_was_written(ds, roots, variant, split):
    loaded = load_detection_split(roots[variant], split)
    expected = expected_split(ds, variant, split)
    assert [Path(r.file_name).name for r in loaded.images] == [im.file_name for im in expected]
    assert loaded.format == variant.split("_")[0]
    assert loaded.categories == dict(enumerate(NAMES)) and loaded.num_skipped == 0
    ids = CATEGORY_IDS if loaded.format in ("reference", "coco") else tuple(range(len(NAMES)))
    assert loaded.category_ids == ids
    for record, boxes, labels, image in zip(loaded.images, loaded.boxes, loaded.labels, expected):
        assert (record.width, record.height) == (image.width, image.height)  # displayed size, also for EXIF files
        assert boxes.dtype == torch.float32 and labels.dtype == torch.int64
        # YOLO stores 6 decimals of normalised coordinates: 1e-6 * 120 px
        np.testing.assert_allclose(boxes.numpy(), image.boxes, atol=2e-4 if loaded.format == "yolo" else 0)
        np.testing.assert_array_equal(labels.numpy(), image.labels)
        assert load_pixels(record.path, "RGB").shape == (image.height, image.width, 3)


def test_labels_agree_across_layouts(ds, roots):
    by_layout = {}
    for variant in VARIANTS:
        for split in ("train", "val"):
            loaded = load_detection_split(roots[variant], split)
            for record, labels in zip(loaded.images, loaded.labels):
                by_layout.setdefault(Path(record.file_name).name, {})[variant] = labels.tolist()
    assert len(by_layout) == len(ds.images)
    for name, labels in by_layout.items():
        assert len(labels) == len(VARIANTS) and len({tuple(v) for v in labels.values()}) == 1, (name, labels)


def test_reasons_say_what_was_found(roots):
    assert "reference layout" in load_detection_split(roots["reference"], "train").format_reason
    coco = load_detection_split(roots["coco"], "val").format_reason
    assert "instances_val2017.json" in coco and "val2017/" in coco and "xywh" in coco
    assert "images/" in load_detection_split(roots["coco_images_dir"], "train").format_reason
    voc = load_detection_split(roots["voc_kangaroo"], "train").format_reason
    assert "annots/" in voc and "images in images/" in voc and "every 5th image" in voc


# ------------------------------------------------------------------------------------------------ pixels


@pytest.mark.parametrize("index", range(7))
def test_pixels_of_every_image_kind(ds, roots, index):
    image = ds.train[index]
    path = roots["coco"] / "train2017" / image.file_name
    rgb = load_pixels(path, "RGB")
    assert rgb.dtype == np.uint8 and rgb.flags.c_contiguous
    np.testing.assert_array_equal(rgb, image.expected_rgb)
    gray = load_pixels(path, "L")
    np.testing.assert_array_equal(gray, np.asarray(Image.fromarray(image.expected_rgb).convert("L")))
    assert image_size(path) == (image.width, image.height)
    opened = open_image(path)  # upright, in the stored mode (PIL's convert would clip 16-bit and drop alpha)
    assert opened.size == (image.width, image.height)
    if image.kind not in ("rgba_png", "gray16_png"):
        np.testing.assert_array_equal(np.asarray(opened.convert("RGB")), image.expected_rgb)


def test_exif_rotated_files_are_stored_sideways(ds, roots):
    for image in ds.train:
        if image.orientation == 1:
            continue
        path = roots["coco"] / "train2017" / image.file_name
        with Image.open(path) as stored:
            assert stored.size == (image.height, image.width)  # as stored: turned
            expected = np.asarray(ImageOps.exif_transpose(stored).convert("RGB"))
        assert image_size(path) == (image.width, image.height)
        np.testing.assert_array_equal(load_pixels(path, "RGB"), expected)


def test_sixteen_bit_and_other_modes_are_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257, 65535, 32767, 128, 40000]], dtype=np.uint16)
    expected = np.array([[0, 1, 255, 127, 0, 156]], dtype=np.uint8)  # round(v * 255 / 65535)
    Image.fromarray(values).save(tmp_path / "sixteen.png")
    Image.frombytes("I;16B", (6, 1), values.astype(">u2").tobytes()).save(tmp_path / "sixteen_be.tif")
    Image.fromarray(values.astype(np.int32)).save(tmp_path / "thirty_two.tif")
    for name in ("sixteen.png", "sixteen_be.tif", "thirty_two.tif"):
        np.testing.assert_array_equal(load_pixels(tmp_path / name, "L"), expected, err_msg=name)
        np.testing.assert_array_equal(load_pixels(tmp_path / name, "RGB"), np.repeat(expected[..., None], 3, 2))
    Image.fromarray(np.array([[0, 0.5, 1, 0.25, np.nan]], dtype=np.float32)).save(tmp_path / "unit.tif")
    np.testing.assert_array_equal(load_pixels(tmp_path / "unit.tif", "L"), [[0, 128, 255, 64, 0]])
    Image.fromarray(np.array([[0, 50, 255, 100]], dtype=np.float32)).save(tmp_path / "bytes.tif")
    np.testing.assert_array_equal(load_pixels(tmp_path / "bytes.tif", "L"), [[0, 50, 255, 100]])
    Image.fromarray(np.array([[-100, 0, 300]], dtype=np.float32)).save(tmp_path / "any.tif")
    np.testing.assert_array_equal(load_pixels(tmp_path / "any.tif", "L"), [[0, 64, 255]])
    Image.fromarray(np.array([[0, 1, 1, 0]], dtype=bool)).save(tmp_path / "bits.png")
    np.testing.assert_array_equal(load_pixels(tmp_path / "bits.png", "L"), [[0, 255, 255, 0]])


def test_alpha_is_composited_on_black(tmp_path):
    la = np.array([[[200, 255], [200, 128], [200, 0]]], dtype=np.uint8)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    np.testing.assert_array_equal(load_pixels(tmp_path / "la.png", "L"), [[200, 100, 0]])
    palette = Image.new("P", (3, 1), 0)
    palette.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    palette.putpixel((1, 0), 1)
    palette.save(tmp_path / "palette.png", transparency=1)  # index 1 (green) fully transparent
    np.testing.assert_array_equal(load_pixels(tmp_path / "palette.png", "RGB"), [[[255, 0, 0], [0, 0, 0], [255, 0, 0]]])
    Image.new("CMYK", (2, 1), (0, 255, 255, 0)).save(tmp_path / "cmyk.tif")
    np.testing.assert_array_equal(load_pixels(tmp_path / "cmyk.tif", "RGB"), [[[255, 0, 0], [255, 0, 0]]])


def test_unreadable_images_raise_naming_the_file(ds, tmp_path):
    jpeg = next(im for im in ds.train if im.kind == "exif6_jpeg")
    (tmp_path / "cut.jpg").write_bytes(jpeg.data[: len(jpeg.data) // 2])
    (tmp_path / "text.png").write_text("not an image")
    for name, problem in (("cut.jpg", "truncated"), ("text.png", "not a readable image"),
                          ("missing.png", "does not exist")):
        with pytest.raises(ImageReadError, match=problem) as info:
            load_pixels(tmp_path / name, "RGB")
        assert str(tmp_path / name) in str(info.value) and isinstance(info.value, DataError)
    with pytest.raises(ValueError):
        load_pixels(tmp_path / "cut.jpg", "RGBA")


def test_a_declared_unturned_size_is_refused_with_the_reason(ds, tmp_path):
    write_reference(ds, tmp_path)
    file = tmp_path / "detection" / "train_annotations.json"
    document = json.loads(file.read_text())
    turned = next(im for im in ds.train if im.orientation != 1)
    entry = next(e for e in document["images"] if e["id"] == turned.id)
    entry["width"], entry["height"] = turned.height, turned.width  # the stored size
    file.write_text(json.dumps(document))
    with pytest.raises(DataError, match=r"EXIF orientation tag turns it .* displayed") as info:
        load_detection_annotations(file)
    assert f"image id {turned.id}" in str(info.value)


# ------------------------------------------------------------------------------------------------ VOC


def test_voc_default_split_is_every_fifth_file(ds, roots):
    expected = voc_default_split(ds)
    for split in ("train", "val"):
        loaded = load_voc_split(roots["voc_kangaroo"], split)
        assert [r.file_name for r in loaded.images] == [im.file_name for im in expected[split]]
        assert [r.id for r in loaded.images] == [im.id for im in expected[split]]  # position in name order
    assert {im.id for im in expected["val"]} == {i for i in range(len(ds.images)) if i % 5 == 4}


def test_voc_difficult_flags_and_devkit_area(ds, roots):
    loaded = load_voc_split(roots["voc"], "train")
    assert loaded.difficult is not None
    for flags, image, boxes in zip(loaded.difficult, ds.train, loaded.boxes):
        np.testing.assert_array_equal(flags.numpy(), image.difficult)
        for box, obj in zip(boxes.tolist(), image.objects):
            xmin, ymin, xmax, ymax = obj.box[0] + 1, obj.box[1] + 1, obj.box[2], obj.box[3]
            assert (box[2] - box[0]) * (box[3] - box[1]) == (xmax - xmin + 1) * (ymax - ymin + 1)
    assert any(bool(f.any()) for f in loaded.difficult)
    assert load_detection_split(roots["coco"], "train").difficult is None


def test_voc_zero_based_and_one_pixel_boxes(ds, tmp_path):
    write_voc(ds, tmp_path)
    image = ds.train[6]
    xml = tmp_path / "Annotations" / f"{image.stem}.xml"
    text = xml.read_text()
    obj = (f"<object><name>bar</name><bndbox><xmin>0</xmin><ymin>0</ymin><xmax>1</xmax><ymax>1</ymax></bndbox>"
           f"</object><object><name>bar</name><bndbox><xmin>5</xmin><ymin>5</ymin><xmax>5</xmax><ymax>5</ymax>"
           f"</bndbox></object><object><name>bar</name><bndbox><xmin>1</xmin><ymin>1</ymin>"
           f"<xmax>{image.width}</xmax><ymax>{image.height}</ymax></bndbox></object></annotation>")
    xml.write_text(text.replace("</annotation>", obj))
    loaded = load_voc_split(tmp_path, "train")
    index = [r.id for r in loaded.images].index(image.id)
    added = loaded.boxes[index][-3:].tolist()
    assert added == [[0, 0, 1, 1], [4, 4, 5, 5], [0, 0, image.width, image.height]]


# ------------------------------------------------------------------------------------------------ YOLO


def test_yolo_label_paths():
    assert label_path(Path("/d/images/train/a.jpg")) == Path("/d/labels/train/a.txt")
    assert label_path(Path("/images/x/images/b.png")) == Path("/images/x/labels/b.txt")  # the last one
    assert label_path(Path("/d/pics/c.jpeg")) == Path("/d/pics/c.txt")
    assert label_path(Path("/d/images.jpg")) == Path("/d/images.txt")


def test_yolo_tolerance_polygons_pose_and_roboflow_paths(ds, tmp_path):
    root = write_yolo(ds, tmp_path / "data")
    image = ds.val[0]
    label = root / "labels" / "val" / f"{image.stem}.txt"
    label.write_text("0 0.5 0.5 1.0008 0.5\n1 0.1 0.1 0.3 0.1 0.2 0.4\n")  # 0.8 px over the edge: clipped
    loaded = load_yolo_split(root, "val")
    w, h = image.width, image.height
    np.testing.assert_allclose(loaded.boxes[0].numpy(), [[0, 0.25 * h, w, 0.75 * h], [0.1 * w, 0.1 * h, 0.3 * w,
                                                                                        0.4 * h]], atol=1e-4)
    # Roboflow's export: data.yaml beside train/ and valid/, entries written as ../train/images
    robo = tmp_path / "robo"
    for split, folder in (("train", "train"), ("val", "valid")):
        shutil.copytree(root / "images" / split, robo / folder / "images")
        shutil.copytree(root / "labels" / split, robo / folder / "labels")
    data = {"train": "../train/images", "val": "../valid/images", "nc": 7, "names": list(NAMES),
            "kpt_shape": [2, 3]}
    (robo / "data.yaml").write_text(yaml.safe_dump(data))
    (robo / "valid" / "labels" / f"{image.stem}.txt").write_text("2 0.5 0.5 0.5 0.5 0.1 0.1 2 0.2 0.2 1\n")
    loaded = load_yolo_split(robo, "val")
    assert loaded.labels[0].tolist() == [2] and "../valid/images" in loaded.format_reason
    np.testing.assert_allclose(loaded.boxes[0].numpy(), [[0.25 * w, 0.25 * h, 0.75 * w, 0.75 * h]], atol=1e-4)


def test_yolo_reads_images_with_no_label_file_as_empty(ds, tmp_path):
    root = write_yolo(ds, tmp_path)
    (root / "labels" / "train" / f"{ds.train[0].stem}.txt").unlink()
    loaded = load_yolo_split(root, "train")
    assert len(loaded) == len(ds.train) and loaded.boxes[0].shape == (0, 4)
    empty = [i for i, im in enumerate(ds.train) if not im.objects]
    assert empty and all(loaded.boxes[i].shape == (0, 4) for i in empty)


# ------------------------------------------------------------------------------------------------ COCO


def test_coco_splits_share_one_label_mapping(ds, tmp_path):
    root = write_coco(ds, tmp_path)
    val_file = root / "annotations" / "instances_val2017.json"
    document = json.loads(val_file.read_text())
    first = CATEGORY_IDS[0]  # val lists no "bar" (and has none): alone, its labels would all shift by one
    document["categories"] = [c for c in document["categories"] if c["id"] != first]
    document["annotations"] = [a for a in document["annotations"] if a["category_id"] != first]
    val_file.write_text(json.dumps(document))
    for split in ("train", "val"):
        loaded = load_detection_split(root, split)
        assert loaded.category_ids == CATEGORY_IDS and loaded.categories == dict(enumerate(NAMES))
        for labels, image in zip(loaded.labels, ds.split(split)):
            assert labels.tolist() == [o.label for o in image.objects if split == "train" or o.category_id != first]
    alone = load_detection_annotations(val_file, root / "val2017")
    assert alone.category_ids == CATEGORY_IDS[1:]  # what the file alone gives


def test_coco_reads_only_the_head_of_big_files_to_find_images(ds, tmp_path):
    """The image folder is found from the first file names; a file with them late is parsed whole, same result."""
    root = write_coco(ds, tmp_path, images="images")
    file = root / "annotations" / "instances_train2017.json"
    document = json.loads(file.read_text())
    padded = {"info": {"description": "x" * (1 << 20)}, **document}
    file.write_text(json.dumps(padded))
    loaded = load_detection_split(root, "train")
    assert loaded.image_dir == root / "images" and len(loaded) == len(ds.train)


def test_jpeg_bytes_are_identical_in_every_layout(ds, roots):
    image = ds.train[0]
    files = [roots["coco"] / "train2017", roots["voc"] / "JPEGImages", roots["yolo"] / "images" / "train",
             roots["reference"] / "detection" / "train"]
    assert all((folder / image.file_name).read_bytes() == image.data for folder in files)
    assert Image.open(io.BytesIO(image.data)).mode == "L"
