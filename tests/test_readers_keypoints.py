"""Keypoint readers into one record: COCO keypoints and DeepLabCut round trips, the reference format unchanged,
symmetric pairs from names, instance boxes, the DeepLabCut split rule and its path variants."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from PIL import Image

from keypoint_writers import (
    NAMES,
    PAIRS,
    SyntheticImage,
    SyntheticKeypoints,
    deeplabcut_path,
    make_keypoint_dataset,
    write_coco_keypoints,
    write_deeplabcut,
)
from loclab.data.deeplabcut import load_deeplabcut_split
from loclab.data.errors import DataError
from loclab.data.figures import generate_figures
from loclab.data.formats_keypoints import KeypointSplit, load_keypoint_annotations
from loclab.data.instances import keypoint_box
from loclab.data.skeleton import symmetric_pairs_from_names


@pytest.fixture(scope="module")
def ds() -> SyntheticKeypoints:
    return make_keypoint_dataset(seed=7, n_train=7, n_val=3)


def expected_instances(images: tuple[SyntheticImage, ...], first_only: bool = False):
    """``(keypoints [M, K, 2], visible [M, K], instance_image [M], boxes [M, 4] or None per instance)`` as written."""
    points, visible, owners, bboxes = [], [], [], []
    for i, image in enumerate(images):
        for instance in image.instances[:1] if first_only else image.instances:
            points.append([p if p is not None else (0.0, 0.0) for p in instance.points])
            visible.append([p is not None for p in instance.points])
            owners.append(i)
            bboxes.append(instance.bbox)
    return torch.tensor(points), torch.tensor(visible), torch.tensor(owners, dtype=torch.int64), bboxes


def expected_box(bbox, points: list, visible: list, width: int, height: int) -> list[float]:
    """COCO bbox as xyxy, or the labelled points' box (continuous coords: + 0.5) padded 25 % and clipped."""
    if bbox is not None:
        x, y, w, h = bbox
        return [x, y, x + w, y + h]
    xs = [p[0] + 0.5 for p, v in zip(points, visible) if v]
    ys = [p[1] + 0.5 for p, v in zip(points, visible) if v]
    out = []
    for values, limit in ((xs, width), (ys, height)):
        side = max(max(values) - min(values), 1.0)
        centre = (max(values) + min(values)) / 2
        out.append((max(centre - 0.75 * side, 0.0), min(centre + 0.75 * side, limit)))
    return [out[0][0], out[1][0], out[0][1], out[1][1]]


# ------------------------------------------------------------------------------------------------ COCO keypoints


@pytest.mark.parametrize("split", ["train", "val"])
def test_coco_round_trip(ds, tmp_path, split, caplog):
    files = write_coco_keypoints(ds, tmp_path)
    with caplog.at_level(logging.INFO, logger="loclab.data.formats_keypoints"):
        loaded = load_keypoint_annotations(files[split], tmp_path / "images")
    images = ds.split(split)
    keypoints, visible, owners, bboxes = expected_instances(images)
    assert loaded.format == "coco" and loaded.keypoint_names == NAMES and loaded.symmetric_pairs == PAIRS
    assert [(r.id, r.file_name, r.width, r.height) for r in loaded.images] == [
        (im.id, im.file_name, im.width, im.height) for im in images]
    assert len(loaded) == len(images) and loaded.num_instances == 2 * len(images) and loaded.num_keypoints == 7
    assert loaded.keypoints.dtype == torch.float32 and torch.equal(loaded.keypoints, keypoints.float())
    assert torch.equal(loaded.visible, visible) and torch.equal(loaded.instance_image, owners)
    boxes = [expected_box(b, p.tolist(), v.tolist(), images[o].width, images[o].height)
             for b, p, v, o in zip(bboxes, keypoints, visible, owners)]
    assert loaded.boxes.dtype == torch.float32 and torch.allclose(loaded.boxes, torch.tensor(boxes), atol=1e-5)
    assert "dropped 1 crowd annotation(s) and 1 annotation(s) without labelled keypoints" in loaded.format_reason
    assert "1 crowd" in caplog.text


def coco_document(annotations: list[dict], size=(40, 30)) -> dict:
    return {"images": [{"id": i, "file_name": f"{i}.png", "width": size[0], "height": size[1]} for i in range(3)],
            "annotations": annotations,
            "categories": [{"id": 1, "name": "cat", "keypoints": ["nose", "left_eye", "right_eye"],
                            "skeleton": [[1, 2], [1, 3]]}]}


def load_coco(tmp_path: Path, document: dict) -> KeypointSplit:
    for image in document["images"]:
        Image.new("RGB", (image["width"], image["height"])).save(tmp_path / image["file_name"])
    (tmp_path / "kp.json").write_text(json.dumps(document))
    return load_keypoint_annotations(tmp_path / "kp.json")


def test_coco_instances_boxes_and_visibility_rules(tmp_path):
    split = load_coco(tmp_path, coco_document([
        # v = 0 keeps no position even when the file writes one; v = 1 (occluded) is labelled
        {"id": 5, "image_id": 2, "category_id": 1, "keypoints": [10, 12, 2, 7, 7, 0, 20, 12, 1]},
        {"id": 6, "image_id": 0, "category_id": 1, "keypoints": [3, 4, 2, 0, 0, 0, 0, 0, 0], "bbox": [1, 2, 0, 5]},
        {"id": 7, "image_id": 2, "category_id": 1, "keypoints": [30, 20, 2, 0, 0, 0, 0, 0, 0],
         "bbox": [25, 15, 30, 30]},
        {"id": 8, "image_id": 2, "category_id": 1, "keypoints": [0] * 9, "num_keypoints": 0},
    ]))
    assert len(split) == 3 and split.num_instances == 3  # image 1 has none and stays
    assert split.instance_image.tolist() == [0, 2, 2]  # ascending image order, file order within an image
    assert split.visible.tolist() == [[True, False, False], [True, False, True], [True, False, False]]
    assert split.keypoints[1].tolist() == [[10, 12], [0, 0], [20, 12]]
    # zero-width bbox -> one point widened to a pixel, padded 25 %; bbox clipped to the 40x30 image
    assert split.boxes.tolist() == [[2.75, 3.75, 4.25, 5.25], [10.5 - 2.5, 12.5 - 0.75, 20.5 + 2.5, 12.5 + 0.75],
                                    [25.0, 15.0, 40.0, 30.0]]
    assert split.symmetric_pairs == ((1, 2),)


def test_coco_keypoint_outside_names_image_and_annotation(tmp_path):
    with pytest.raises(DataError) as info:
        load_coco(tmp_path, coco_document([{"id": 3, "image_id": 1, "category_id": 1,
                                            "keypoints": [10, 12, 2, 50, 5, 2, 0, 0, 0]}]))
    assert 'image id 1 ("1.png"): annotation id 3: keypoint 1 (left_eye) [50, 5] lies outside the 40x30 image' in str(
        info.value)


def test_keypoint_box_edges():
    assert keypoint_box([[0, 0, 1]], 10, 10) == [0.0, 0.0, 1.25, 1.25]  # clipped at the top-left corner
    assert keypoint_box([[1, 1, 1], [5, 9, 0], [3, 3, 2]], 10, 10) == [1.0, 1.0, 4.0, 4.0]
    with pytest.raises(ValueError):
        keypoint_box([[1, 1, 0]], 10, 10)


# ------------------------------------------------------------------------------------------------ reference format


def test_reference_format_yields_the_old_values(tmp_path):
    root = generate_figures(tmp_path, seed=3, n_train=4, n_val=1, progress=False)
    raw = json.loads((root / "train_annotations.json").read_text())
    split = load_keypoint_annotations(root / "train_annotations.json")
    assert split.format == "reference" and split.keypoint_names == tuple(raw["keypoint_names"])
    assert split.keypoints.tolist() == [im["keypoints"] for im in raw["images"]] and bool(split.visible.all())
    assert len(split) == split.num_instances == 4 and split.instance_image.tolist() == [0, 1, 2, 3]
    assert split.boxes.tolist() == [[0, 0, 128, 128]] * 4
    assert split.symmetric_pairs == ((1, 2),)  # the hands only: each foot keeps to its own side


def test_split_checks_shapes_and_selects_images(ds, tmp_path):
    files = write_coco_keypoints(ds, tmp_path)
    split = load_keypoint_annotations(files["train"], tmp_path / "images")
    part = split.select_images([1, 4])
    assert [r.id for r in part.images] == [split.images[1].id, split.images[4].id]
    assert part.instance_image.tolist() == [0, 0, 1, 1]
    assert torch.equal(part.keypoints, split.keypoints[[2, 3, 8, 9]])  # image i holds instances 2i, 2i + 1
    assert torch.equal(part.boxes, split.boxes[[2, 3, 8, 9]]) and torch.equal(part.visible, split.visible[[2, 3, 8, 9]])
    with pytest.raises(ValueError, match="boxes has shape"):
        replace(split, keypoints=split.keypoints[:3], visible=split.visible[:3],
                instance_image=split.instance_image[:3])
    with pytest.raises(ValueError, match="ascend"):
        replace(split, instance_image=split.instance_image.flip(0))


# ------------------------------------------------------------------------------------------------ symmetric pairs


@pytest.mark.parametrize(
    "names, pairs",
    [
        (["nose", "left_eye", "right_eye", "left_ear", "right_ear"], ((1, 2), (3, 4))),
        (["right_eye", "left_eye"], ((1, 0),)),  # (left, right) whatever the order in the file
        (["LeftEye", "RightEye", "eye_left", "eye_right", "leftpaw", "rightpaw"], ((0, 1), (2, 3), (4, 5))),
        (["l_paw", "r_paw", "L-ear", "R-ear", "paw_L", "paw_R", "tail_l", "tail_r"], ((0, 1), (2, 3), (4, 5), (6, 7))),
        (["left_eye", "right_ear", "nose"], ()),  # the rest differs
        (["Lpaw", "Rpaw", "lip", "rip"], ()),  # a bare letter is no side marker
        (["left_eye", "left_eye", "right_eye"], ()),  # ambiguous: two left eyes
        (["left", "right"], ((0, 1),)),
        ([], ()),
        (["head", "left_hand", "right_hand", "left_foot", "right_foot"], ((1, 2), (3, 4))),
    ],
)
def test_symmetric_pairs_from_names(names, pairs):
    assert symmetric_pairs_from_names(names) == pairs


# ------------------------------------------------------------------------------------------------ DeepLabCut


@pytest.mark.parametrize("split", ["train", "val"])
def test_deeplabcut_round_trip_with_split_file(ds, tmp_path, split):
    paths = write_deeplabcut(ds, tmp_path, split_file=True)
    loaded = load_deeplabcut_split(tmp_path, split)
    images = ds.split(split)
    keypoints, visible, _, _ = expected_instances(images, first_only=True)
    assert loaded.format == "deeplabcut" and loaded.keypoint_names == NAMES and loaded.symmetric_pairs == PAIRS
    assert [r.file_name for r in loaded.images] == [paths[im.id] for im in images]
    assert [r.path for r in loaded.images] == [tmp_path / paths[im.id] for im in images]
    assert [(r.width, r.height) for r in loaded.images] == [(im.width, im.height) for im in images]
    assert torch.equal(loaded.keypoints, keypoints.float()) and torch.equal(loaded.visible, visible)
    assert loaded.instance_image.tolist() == list(range(len(images)))
    assert loaded.boxes.tolist() == [[0, 0, im.width, im.height] for im in images]
    assert loaded.annotation_file == tmp_path / "labeled-data" / "vid0" / "CollectedData_me.csv"
    assert loaded.image_dir == tmp_path and "split.json" in loaded.format_reason


def test_deeplabcut_default_split_is_every_fifth_sorted_frame(ds, tmp_path):
    write_deeplabcut(ds, tmp_path, videos=2)
    train, val = load_deeplabcut_split(tmp_path, "train"), load_deeplabcut_split(tmp_path, "val")
    ordered = sorted(deeplabcut_path(ds, im, 2) for im in ds.images)
    assert [r.file_name for r in val.images] == ordered[4::5]
    assert [r.file_name for r in train.images] == [p for i, p in enumerate(ordered) if i % 5 != 4]
    ids = [r.id for r in train.images + val.images]
    assert sorted(ids) == list(range(len(ordered)))  # positions in the sorted list: unique across splits
    assert "index % 5 == 4" in val.format_reason and "2 CollectedData CSV(s)" in val.format_reason
    assert train.annotation_file.parent.name == "vid0"


def test_deeplabcut_three_index_columns_read_like_one(ds, tmp_path):
    write_deeplabcut(ds, tmp_path / "one")
    write_deeplabcut(ds, tmp_path / "three", index_columns=3)
    assert "labeled-data,vid0,img0000.png," in (tmp_path / "three/labeled-data/vid0/CollectedData_me.csv").read_text()
    for split in ("train", "val"):
        one, three = load_deeplabcut_split(tmp_path / "one", split), load_deeplabcut_split(tmp_path / "three", split)
        assert [r.file_name for r in one.images] == [r.file_name for r in three.images]
        assert torch.equal(one.keypoints, three.keypoints) and torch.equal(one.visible, three.visible)


def test_deeplabcut_unlabelled_frames_nan_cells_and_backslashes(ds, tmp_path):
    write_deeplabcut(ds, tmp_path)
    csv_file = tmp_path / "labeled-data" / "vid0" / "CollectedData_me.csv"
    lines = csv_file.read_text().splitlines()
    width = lines[2].count(",")
    # a frame extracted but never labelled, a NaN cell (as some pandas versions write), a Windows path
    shutil.copy(tmp_path / "labeled-data/vid0/img0000.png", tmp_path / "labeled-data/vid0/img9999.png")
    lines.append("labeled-data/vid0/img9999.png" + "," * width)
    cells = lines[3].split(",")
    cells[0], cells[1], cells[2] = "labeled-data\\vid0\\img0000.png", "NaN", "nan"
    lines[3] = ",".join(cells)
    csv_file.write_text("\n".join(lines) + "\n")
    train = load_deeplabcut_split(tmp_path, "train")
    assert train.images[0].file_name == "labeled-data/vid0/img0000.png"
    assert not bool(train.visible[0, 0]) and train.keypoints[0, 0].tolist() == [0, 0]
    assert "1 frame(s) without any labelled bodypart dropped" in train.format_reason
    assert "img9999" not in " ".join(r.file_name for r in train.images)


def test_deeplabcut_config_scorer_picks_among_several_csvs(ds, tmp_path):
    write_deeplabcut(ds, tmp_path, scorer="me")
    folder = tmp_path / "labeled-data" / "vid0"
    shutil.copy(folder / "CollectedData_me.csv", folder / "CollectedData_other.csv")
    (folder / "CollectedData_other.csv").write_text("garbage\n")
    assert load_deeplabcut_split(tmp_path, "val").annotation_file.name == "CollectedData_me.csv"
