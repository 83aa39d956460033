"""Datasets: decode-once tensors, targets, detection collate and horizontal flips."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from loclab.data.datasets import DetectionDataset, KeypointDataset, detection_collate, flip_horizontal
from loclab.data.errors import DataError
from loclab.data.formats_detection import load_detection_annotations
from loclab.data.formats_keypoints import load_keypoint_annotations
from loclab.ops.heatmaps import decode_heatmaps_argmax


@pytest.fixture(scope="module")
def detection(tiny_data_root) -> DetectionDataset:
    return DetectionDataset.from_root(tiny_data_root, "train", progress=False)


def keypoint_paths(root):
    return root / "keypoints" / "train", root / "keypoints" / "train_annotations.json"


def test_detection_dataset_decodes_once_and_returns_float_images(detection, tiny_data_root):
    raw = json.loads((tiny_data_root / "detection" / "train_annotations.json").read_text())
    n = len(raw["images"])
    assert len(detection) == n and detection.images.shape == (n, 3, 224, 224) and detection.images.dtype == torch.uint8
    image, target = detection[1]
    assert image.shape == (3, 224, 224) and image.dtype == torch.float32 and 0 <= image.min() and image.max() <= 1
    first = raw["images"][1]
    with Image.open(tiny_data_root / "detection" / "train" / first["file_name"]) as png:
        expected = torch.from_numpy(np.array(png)).permute(2, 0, 1).float() / 255
    assert torch.equal(image, expected)
    boxes = [a["bbox"] for a in raw["annotations"] if a["image_id"] == first["id"]]
    assert target["boxes"].dtype == torch.float32 and target["boxes"].tolist() == boxes
    assert target["labels"].dtype == torch.int64 and len(target["labels"]) == len(boxes)
    assert target["image_id"] == first["id"] == detection.image_ids[1]


def test_detection_collate_pads(detection):
    batch = [detection[i] for i in range(3)]
    images, boxes, labels, valid, image_ids = detection_collate(batch)
    counts = [len(t["boxes"]) for _, t in batch]
    assert images.shape == (3, 3, 224, 224) and boxes.shape == (3, max(counts), 4)
    assert labels.dtype == torch.int64 and valid.dtype == torch.bool and image_ids.tolist() == detection.image_ids[:3]
    for i, (_, target) in enumerate(batch):
        n = counts[i]
        assert valid[i].tolist() == [True] * n + [False] * (max(counts) - n)
        assert torch.equal(boxes[i, :n], target["boxes"]) and torch.equal(labels[i, :n], target["labels"])
        assert (boxes[i, n:] == 0).all() and (labels[i, n:] == -1).all()
    empty = detection_collate([(torch.zeros(3, 4, 4), {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64), "image_id": 5})])
    assert empty[1].shape == (1, 0, 4) and empty[2].shape == (1, 0) and empty[4].tolist() == [5]
    loader = DataLoader(detection, batch_size=4, collate_fn=detection_collate)
    assert next(iter(loader))[0].shape == (4, 3, 224, 224)


def test_flip_horizontal_mirrors_pixels_and_boxes():
    images = torch.ones(2, 3, 10, 16)
    images[:, :, 2:5, 3:7] = 0  # a dark block over columns 3..6, i.e. box [3, 2, 7, 5]
    boxes = torch.tensor([[[3.0, 2.0, 7.0, 5.0], [0.0, 0.0, 0.0, 0.0]]] * 2)
    valid = torch.tensor([[True, False]] * 2)
    flip = torch.tensor([True, False])
    out_images, out_boxes = flip_horizontal(images, boxes, valid, flip)
    assert out_boxes[0, 0].tolist() == [16 - 7, 2, 16 - 3, 5]  # [W - x2, y1, W - x1, y2]
    dark = (out_images[0, 0] == 0).nonzero()
    assert dark[:, 1].min() == 9 and dark[:, 1].max() == 12  # columns 9..12 = box [9, 13)
    assert torch.equal(out_boxes[:, 1], torch.zeros(2, 4))  # padding stays zero
    assert torch.equal(out_images[1], images[1]) and torch.equal(out_boxes[1], boxes[1])  # not selected
    back_images, back_boxes = flip_horizontal(out_images, out_boxes, valid, flip)
    assert torch.equal(back_images, images) and torch.equal(back_boxes, boxes)


def test_flip_of_a_real_batch_is_an_involution(detection):
    images, boxes, _, valid, _ = detection_collate([detection[i] for i in range(4)])
    flip = torch.tensor([True, False, True, True])
    once = flip_horizontal(images, boxes, valid, flip)
    assert not torch.equal(once[0], images)
    twice = flip_horizontal(*once, valid, flip)
    assert torch.equal(twice[0], images) and torch.equal(twice[1], boxes)
    assert (once[1][..., 2] > once[1][..., 0])[valid].all()


def test_detection_dataset_hflip_yields_plain_or_mirrored_samples(detection):
    flipping = DetectionDataset(detection.split, hflip=True, progress=False)
    torch.manual_seed(0)
    seen = set()
    for _ in range(12):
        image, target = flipping[0]
        plain_image, plain = detection[0]
        if torch.equal(image, plain_image):
            assert torch.equal(target["boxes"], plain["boxes"])
            seen.add("plain")
        else:
            assert torch.equal(image, plain_image.flip(-1))
            x1, y1, x2, y2 = plain["boxes"].unbind(-1)
            assert torch.equal(target["boxes"], torch.stack([224 - x2, y1, 224 - x1, y2], -1))
            seen.add("flipped")
    assert seen == {"plain", "flipped"}


def test_broken_png_fails_at_construction_naming_the_file(tmp_path, tiny_data_root):
    split = load_detection_annotations(tiny_data_root / "detection" / "val_annotations.json")
    record = split.images[0]
    broken = tmp_path / record.file_name
    broken.write_bytes(record.path.read_bytes()[:200])  # header intact, pixel data cut off
    split = load_detection_annotations(split.annotation_file, tmp_path, check_images=False)
    with pytest.raises(DataError, match=rf"{broken}: image id {record.id} .* cannot be decoded"):
        DetectionDataset(split, progress=False)


def test_keypoint_dataset_heatmap_targets(tiny_data_root):
    image_dir, annotations = keypoint_paths(tiny_data_root)
    dataset = KeypointDataset(image_dir, annotations, output_type="heatmap", heatmap_size=64, sigma=2.0)
    raw = json.loads(annotations.read_text())
    n = len(raw["images"])
    assert len(dataset) == n and dataset.images.shape == (n, 1, 128, 128) and dataset.images.dtype == torch.uint8
    assert dataset.keypoints.shape == (n, 5, 2) and dataset.keypoints.dtype == torch.float32
    assert dataset.keypoints.tolist() == [im["keypoints"] for im in raw["images"]]
    assert dataset.image_ids == [im["id"] for im in raw["images"]]
    image, heatmaps, visible = dataset[2]
    assert visible.tolist() == [1.0] * 5 and visible.dtype == torch.float32
    assert image.shape == (1, 128, 128) and image.dtype == torch.float32
    assert set(image.unique().tolist()) == {0.0, 1.0}
    assert heatmaps.shape == (5, 64, 64) and heatmaps.dtype == torch.float32
    decoded, _ = decode_heatmaps_argmax(heatmaps, 128)
    assert (decoded - dataset.keypoints[2]).abs().max() <= 1.0  # half a stride of 2 px
    for size in (32, 128):
        assert KeypointDataset.from_split(dataset.split, heatmap_size=size, progress=False)[0][1].shape == (5, size, size)
    batch = next(iter(DataLoader(dataset, batch_size=4)))
    assert batch[0].shape == (4, 1, 128, 128) and batch[1].shape == (4, 5, 64, 64) and batch[2].shape == (4, 5)


def test_keypoint_dataset_regression_targets(tiny_data_root):
    split = load_keypoint_annotations(keypoint_paths(tiny_data_root)[1])
    dataset = KeypointDataset.from_split(split, output_type="regression", progress=False)
    _, target, _ = dataset[3]
    assert target.shape == (10,) and target.dtype == torch.float32
    x0, y0 = split.keypoints[3, 0].tolist()
    assert target[:2].tolist() == pytest.approx([x0 / 128, y0 / 128])
    assert torch.allclose(target.view(5, 2) * 128, split.keypoints[3])
    assert 0 <= target.min() and target.max() <= 1
    with pytest.raises(ValueError, match="output_type"):
        KeypointDataset.from_split(split, output_type="both")


def test_keypoint_dataset_weights_unlabelled_keypoints_zero(tiny_data_root):
    split = load_keypoint_annotations(keypoint_paths(tiny_data_root)[1])
    visible = split.visible.clone()
    visible[1, 2] = False
    partly = dataclasses.replace(split, visible=visible)
    _, heatmaps, weights = KeypointDataset.from_split(partly, progress=False)[1]
    assert weights.tolist() == [1.0, 1.0, 0.0, 1.0, 1.0]
    assert heatmaps[2].abs().sum() == 0 and heatmaps[1].max() > 0.5  # nothing to find where nothing is labelled
