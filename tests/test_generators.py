"""The shapes and stick-figure generators: exact reference formats, geometry, determinism."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from loclab.data import shapes
from loclab.data.figures import KEYPOINT_NAMES, generate_figures, render_figure
from loclab.data.shapes import generate_shapes, render_shapes_image

N_TRAIN, N_VAL = 4, 2


def all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("generated")
    assert generate_shapes(root, seed=5, n_train=N_TRAIN, n_val=N_VAL, progress=False) == root / "detection"
    assert generate_figures(root, seed=5, n_train=N_TRAIN, n_val=N_VAL, progress=False) == root / "keypoints"
    return root


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def test_same_seed_same_bytes_other_seed_other_bytes(generated, tmp_path):
    again, other = tmp_path / "again", tmp_path / "other"
    for root, seed in ((again, 5), (other, 6)):
        generate_shapes(root, seed=seed, n_train=N_TRAIN, n_val=N_VAL, progress=False)
        generate_figures(root, seed=seed, n_train=N_TRAIN, n_val=N_VAL, progress=False)
    reference = all_files(generated)
    assert len(reference) == 2 * (N_TRAIN + N_VAL + 2)
    assert all_files(again) == reference
    different = all_files(other)
    assert different.keys() == reference.keys()
    for task in ("detection", "keypoints"):
        name = f"{task}/train_annotations.json"
        assert different[name] != reference[name]


def test_shapes_layout_ids_and_key_order(generated):
    root = generated / "detection"
    train, val = load(root / "train_annotations.json"), load(root / "val_annotations.json")
    assert list(train) == ["images", "annotations", "categories"]
    assert train["categories"] == [{"id": 0, "name": "circle"}, {"id": 1, "name": "square"},
                                   {"id": 2, "name": "triangle"}]
    images = train["images"] + val["images"]
    assert [im["id"] for im in images] == list(range(N_TRAIN + N_VAL))  # global, val continues
    for split, data in (("train", train), ("val", val)):
        for im in data["images"]:
            assert list(im) == ["id", "file_name", "width", "height"]
            assert im["file_name"] == f"{im['id']:06d}.png" and (im["width"], im["height"]) == (224, 224)
            with Image.open(root / split / im["file_name"]) as picture:
                assert picture.mode == "RGB" and picture.size == (224, 224) and picture.format == "PNG"
    annotations = train["annotations"] + val["annotations"]
    assert [a["id"] for a in annotations] == list(range(len(annotations)))  # run on across splits
    assert {a["image_id"] for a in val["annotations"]} <= {im["id"] for im in val["images"]}
    per_image = np.bincount([a["image_id"] for a in annotations], minlength=N_TRAIN + N_VAL)
    assert per_image.min() >= 2 and per_image.max() <= 5


def test_shapes_boxes_are_integer_xyxy_of_the_class_size(generated):
    root = generated / "detection"
    sizes = {0: (16, 32), 1: (48, 96), 2: (96, 192)}
    for split in ("train", "val"):
        for a in load(root / f"{split}_annotations.json")["annotations"]:
            assert list(a) == ["id", "image_id", "category_id", "bbox", "area", "visible_fraction"]
            x1, y1, x2, y2 = a["bbox"]
            assert all(type(v) is int for v in a["bbox"]) and type(a["area"]) is int
            assert 0 <= x1 < x2 <= 224 and 0 <= y1 < y2 <= 224
            side = x2 - x1
            assert y2 - y1 == side and side % 2 == 0  # 2 * (s // 2)
            s = math.isqrt(a["area"])
            assert s * s == a["area"] and side == 2 * (s // 2)
            low, high = sizes[a["category_id"]]
            assert low <= s <= high
            assert 0.0 <= a["visible_fraction"] <= 1.0


def test_shapes_paint_inside_their_boxes_and_visible_fraction_counts_pixels():
    rng = np.random.default_rng(0)
    for _ in range(30):
        picture, objects = render_shapes_image(rng)
        pixels = np.asarray(picture)
        painted = (pixels != 255).any(axis=-1)
        inside_some_box = np.zeros_like(painted)
        for category_id, size, (x1, y1, x2, y2), visible in objects:
            inside_some_box[y1:y2, x1:x2] = True
            assert 0.0 <= visible <= 1.0
        assert not (painted & ~inside_some_box).any()
        assert objects[-1][3] == 1.0  # nothing is painted over the last object
        # Every painted pixel belongs to exactly one object on top: the visible counts add up to the painting.
        visible_pixels = sum(v * shapes._own_pixel_count(c, b) for c, _, b, v in objects)
        assert abs(visible_pixels - painted.sum()) <= 0.5 * len(objects)  # visible_fraction has 4 decimals
        # Fill colours and the black outline are the only colours drawn.
        colours = {tuple(c) for c in pixels.reshape(-1, 3)}
        assert colours <= {(255, 255, 255), (0, 0, 0), (255, 0, 0), (0, 255, 0), (0, 0, 255)}


def test_figures_format_and_binary_pixels(generated):
    root = generated / "keypoints"
    train, val = load(root / "train_annotations.json"), load(root / "val_annotations.json")
    assert list(train) == ["images", "keypoint_names", "num_keypoints"]
    assert train["keypoint_names"] == list(KEYPOINT_NAMES) == ["head", "left_hand", "right_hand", "left_foot",
                                                               "right_foot"]
    assert train["num_keypoints"] == 5
    images = train["images"] + val["images"]
    assert [im["id"] for im in images] == list(range(N_TRAIN + N_VAL))
    for split, data in (("train", train), ("val", val)):
        for im in data["images"]:
            assert list(im) == ["id", "file_name", "keypoints"]
            assert im["file_name"] == f"{im['id']:06d}.png"
            assert len(im["keypoints"]) == 5 and all(type(c) is int for p in im["keypoints"] for c in p)
            with Image.open(root / split / im["file_name"]) as picture:
                assert picture.mode == "L" and picture.size == (128, 128)
                assert set(np.unique(np.asarray(picture)).tolist()) == {0, 255}


def test_figure_geometry_matches_the_spec():
    rng = np.random.default_rng(3)
    for _ in range(200):
        picture, (head, left_hand, right_hand, left_foot, right_foot) = render_figure(rng)
        cx, cy = head[0], head[1] + 20
        assert 40 <= cx <= 88 and 40 <= cy <= 88
        assert left_foot[1] == right_foot[1] == cy + 37
        spread = cx - left_foot[0]
        assert right_foot[0] - cx == spread and 10 <= spread <= 30
        for hand in (left_hand, right_hand):
            dx, dy = hand[0] - cx, hand[1] - (cy - 6)
            # Arm length 20 at +-60 degrees (|sin| <= 0.866, cos >= 0.5); int() moves each coordinate by < 1.
            assert 18.5 <= math.hypot(dx, dy) <= 21
            assert abs(dx) < 17.33 + 1 and dy >= 9
        pixels = np.asarray(picture)
        assert pixels[head[1], head[0]] == 255  # hollow head
        assert pixels[head[1], head[0] + 8] == 0 and pixels[cy, cx] == 0  # head ring, torso
        assert pixels[left_foot[1], left_foot[0]] == 0 and pixels[right_foot[1], right_foot[0]] == 0
