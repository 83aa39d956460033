"""Detection data held on the training device: the same batches as the DataLoader path (same seed, same order),
gathered without per-sample Python or host reads, and the same training numbers.

The device here is the CPU (the test suite has no GPU); the code is the one a GPU runs, with ``device`` a
parameter throughout.
"""

from dataclasses import replace

import pytest
import torch

from host_reads import DispatchCounter

from loclab.config import DetectorConfig, TrainConfig
from loclab.data import datasets
from loclab.data.datasets import DetectionDataset, detection_collate
from loclab.data.device_data import DeviceBatches, DeviceDetectionData
from loclab.data.errors import DataError
from loclab.engine import tasks
from loclab.engine.detection import holds_data_on_device
from loclab.engine.train import _loader, _samples_per_epoch, _set_epoch
from loclab.errors import ConfigError
from loclab.ops.augment import augment_detection_batch
from loclab.ops.mosaic import mosaic_batch
from loclab.recipes import scaled_anchor_sizes


@pytest.fixture(scope="module")
def split(tiny_data_root):
    split = tasks.detection_split(tiny_data_root, "train")
    # the first image without objects: its row must be all padding on both paths
    empty = torch.zeros((0, 4)), torch.zeros((0,), dtype=torch.int64)
    return replace(split, boxes=(empty[0],) + split.boxes[1:], labels=(empty[1],) + split.labels[1:])


@pytest.fixture(scope="module")
def dataset(split):
    return DetectionDataset(split, image_size=224, progress=False)


def _assert_same_batch(on_device, collated):
    images, boxes, labels, valid, ids = on_device
    c_images, c_boxes, c_labels, c_valid, c_ids = collated
    m = c_boxes.shape[1]
    assert torch.equal(images, c_images)  # the same float conversion, bit for bit
    assert torch.equal(ids, c_ids)
    assert torch.equal(boxes[:, :m], c_boxes) and torch.equal(labels[:, :m], c_labels)
    assert torch.equal(valid[:, :m], c_valid)
    # the slots beyond the batch's own box count are padding
    assert not valid[:, m:].any() and (labels[:, m:] == -1).all() and (boxes[:, m:] == 0).all()


@pytest.mark.parametrize(("batch_size", "steps", "shuffle"), [
    (4, 0, True),     # 3 full batches per epoch
    (5, 0, True),     # a partial batch, dropped in training
    (4, 100, True),   # step-based: many shuffled passes per epoch
    (5, 0, False),    # validation: in order, the partial batch kept
])
def test_batches_equal_the_dataloader_path(dataset, batch_size, steps, shuffle):
    cfg = TrainConfig(batch_size=batch_size, steps=steps, seed=3)
    host = _loader(dataset, detection_collate, cfg, shuffle=shuffle)
    device = _loader(DeviceDetectionData.from_dataset(dataset, "cpu"), detection_collate, cfg, shuffle=shuffle)
    assert isinstance(device, DeviceBatches)
    assert len(device) == len(host)
    assert _samples_per_epoch(device, dataset) == _samples_per_epoch(host, dataset)
    # two epochs (one of the long step-based ones); in the second, a second pass over the loader (precise BatchNorm
    # makes one) continues the same draws
    for epoch, passes in ((0, 1),) if steps else ((0, 1), (1, 2)):
        _set_epoch(host, cfg.seed, epoch)
        _set_epoch(device, cfg.seed, epoch)
        for _ in range(passes):
            for on_device, collated in zip(device, host, strict=True):
                _assert_same_batch(on_device, collated)


def test_a_batch_is_a_few_device_ops_whatever_its_size(dataset, monkeypatch):
    data = DeviceDetectionData.from_dataset(dataset, "cpu")
    counts = []
    for size in (2, 8):
        with DispatchCounter() as counter:
            data.batch(torch.arange(size))
        counts.append((counter.ops, counter.host_reads))
    assert counts[0] == counts[1] and counts[0][1] == 0
    assert counts[0][0] <= 8  # five gathers and the float conversion
    # nothing per sample: the Dataset's __getitem__ and the collate function are never called
    def refuse(*args, **kwargs):
        raise AssertionError("a per-sample path was used")

    monkeypatch.setattr(datasets.DetectionDataset, "__getitem__", refuse)
    monkeypatch.setattr(datasets, "detection_collate", refuse)
    batches = DeviceBatches(data, 4, shuffle=True, drop_last=True)
    with DispatchCounter() as counter:
        assert len(list(batches)) == 3
    assert counter.host_reads == 0


def test_held_data_sits_on_the_requested_device(dataset):
    data = DeviceDetectionData.from_dataset(dataset, "meta")
    assert {t.device.type for t in (data.images, data.boxes, data.labels, data.valid, data.image_ids)} == {"meta"}
    assert data.images.dtype == torch.uint8 and data.images.shape == dataset.images.shape
    slots = max(len(b) for b in dataset.input_split.boxes)
    assert data.boxes.shape == (len(dataset), slots, 4) and data.valid.shape == (len(dataset), slots)


def test_a_streamed_dataset_cannot_be_held(split):
    streamed = DetectionDataset(split, image_size=224, progress=False, memory_budget=1)
    with pytest.raises(DataError, match="streamed from disk"):
        DeviceDetectionData.from_dataset(streamed, "cpu")


def test_augmented_targets_equal_the_dataloader_paths(dataset):
    index = [3, 0, 7, 5]
    collated = detection_collate([dataset[i] for i in index])
    on_device = DeviceDetectionData.from_dataset(dataset, "cpu").batch(torch.tensor(index))
    _assert_same_batch(on_device, collated)
    outputs = []
    for images, boxes, labels, valid, _ in (on_device, collated):
        g = torch.Generator().manual_seed(0)
        images, boxes, labels, valid = mosaic_batch(images, boxes, labels, valid, 0.5, generator=g)
        images, boxes, valid = augment_detection_batch(images, boxes, valid, scale=(0.5, 1.5), translate=0.2,
                                                       generator=g)
        assert ((boxes >= 0) & (boxes <= 224)).all()
        assert (labels[valid] >= 0).all()
        outputs.append((images, boxes, labels, valid))
    (images, boxes, labels, valid), (c_images, c_boxes, c_labels, c_valid) = outputs
    assert torch.equal(images, c_images)
    for b in range(len(index)):  # mosaic lays the four tiles' slots out by M: compare each image's objects
        objects = sorted(zip(labels[b][valid[b]].tolist(), boxes[b][valid[b]].tolist()))
        assert objects == sorted(zip(c_labels[b][c_valid[b]].tolist(), c_boxes[b][c_valid[b]].tolist()))
    assert valid.sum() > 0


def test_training_on_held_data_gives_the_dataloader_numbers(tiny_data_root, tmp_path, one_thread):
    logs = {}
    for mode in ("off", "on"):
        train = TrainConfig(epochs=2, batch_size=4, precision="fp32", precise_bn_batches=1, device_data=mode)
        # 64 px inputs (letterboxed from 224) keep the two runs to seconds
        cfg = DetectorConfig(model="loclab", image_size=64, anchor_sizes=scaled_anchor_sizes(64), train=train)
        log = tasks.train_detector_on_root(cfg, tiny_data_root, tmp_path / mode, progress=False)
        logs[mode] = [(r["train"], r["val"]) for r in log]
    assert logs["on"] == logs["off"]


@pytest.mark.parametrize(("mode", "device", "streaming", "held"), [
    ("auto", "cpu", False, False),   # a CPU keeps today's DataLoader path
    ("auto", "cuda", False, True),   # a GPU holds its data
    ("auto", "cuda", True, False),   # ... unless it is streamed from disk
    ("on", "cpu", False, True),      # asked for: the tests' path on a CPU
    ("off", "cuda", False, False),
])
def test_where_data_is_held(mode, device, streaming, held):
    assert holds_data_on_device(mode, torch.device(device), streaming) is held


def test_asking_to_hold_what_cannot_be_held_is_a_config_error():
    with pytest.raises(ConfigError, match="streamed"):
        holds_data_on_device("on", torch.device("cpu"), True)
    with pytest.raises(ConfigError, match="unknown train.device_data"):
        holds_data_on_device("always", torch.device("cpu"), False)
