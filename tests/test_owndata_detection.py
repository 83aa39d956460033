"""Detection on a user's own dataset: non-square photos of several sizes, 7 classes with non-contiguous ids,
grayscale / RGBA / palette / 16-bit / EXIF-rotated files, in the COCO, VOC and YOLO layouts.

The overfit run must memorise its training images when scored in original image pixels (so letterboxing and its
inverse are right end to end), with AP50 equal to pycocotools' on the same detections.
"""

import json
from dataclasses import replace

import pytest
import torch

from layout_writers import NAMES, make_detection_dataset, write_coco, write_layout
from loclab.bench.ap import pycocotools_ap50
from loclab.cli import main
from loclab.config import OptimConfig, ScheduleConfig, TrainConfig
from loclab.data.datasets import DetectionDataset
from loclab.engine.detection import config_for_data, load_detector, predict_dataset, train_detector
from loclab.engine.tasks import detection_split
from loclab.evaluation.detection import detections_table, evaluate_detections, ground_truth_table
from loclab.metrics.ap import compute_ap
from loclab.ops.boxes import box_iou
from loclab.predict import predict_detector_files
from loclab.recipes import own_data_detector_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory):
    return write_coco(make_detection_dataset(seed=3, n_train=10, n_val=4), tmp_path_factory.mktemp("coco"))


def test_detector_memorises_own_data_in_original_pixels(coco_root, tmp_path):
    train = detection_split(coco_root, "train")
    assert train.format == "coco" and tuple(train.categories.values()) == NAMES
    # loclab's model and the SSD loss (the own-data default, csp with the grid loss, is the next test)
    base = replace(own_data_detector_config("fast", image_size=128), model="loclab", loss="ssd", weight_loc=2.0)
    cfg = replace(base, train=TrainConfig(
        epochs=1, steps=150, batch_size=5, optim=OptimConfig(name="adamw", lr=3e-3, weight_decay=0.0),
        schedule=ScheduleConfig(name="cosine", warmup_epochs=2), precision="fp32", hflip=False, grad_clip=10.0, precise_bn_batches=2))
    cfg = config_for_data(cfg, train, autoanchor=True)
    assert cfg.num_classes == 7 and cfg.class_names == NAMES and cfg.anchor_ratios is not None
    train_detector(cfg, train, train, tmp_path, progress=False)

    model, cfg = load_detector(tmp_path / "best_model.pth")
    assert cfg.image_size == 128 and cfg.class_names == NAMES  # the anchors and classes travel with the weights
    dataset = DetectionDataset(train, image_size=cfg.image_size, progress=False)
    assert not all(lb.is_identity for lb in dataset.letterboxes)
    detections = predict_dataset(model, cfg, dataset)
    image_ids = [r.id for r in train.images]
    metrics = evaluate_detections(train, image_ids, detections, [d.scales for d in detections])
    assert metrics["mAP50"] >= 0.9, metrics["AP50"]
    assert set(metrics["AP50"]) == set(NAMES)

    table, _ = detections_table(image_ids, detections)
    ours = compute_ap(table, ground_truth_table(train), max_detections_per_image_class=100)["mAP50_coco"]
    theirs = pycocotools_ap50(table, ground_truth_table(train), repeats=1)[1]
    assert abs(ours - theirs) < 1e-4, (ours, theirs)

    # `loclab predict` on an EXIF-rotated JPEG returns boxes in the upright image's pixels, with class names
    exif = next(i for i, r in enumerate(train.images) if r.file_name.endswith(".jpg") and r.width != r.height)
    out = predict_detector_files(tmp_path / "best_model.pth", [train.images[exif].path], tmp_path / "pred",
                                 threshold=0.3)
    record = json.loads(out.read_text())["images"][0]
    assert (record["width"], record["height"]) == (train.images[exif].width, train.images[exif].height)
    found = torch.tensor([d["bbox"] for d in record["detections"]]).reshape(-1, 4)
    assert len(found) and (box_iou(train.boxes[exif], found).max(dim=1).values >= 0.5).all()
    assert {d["category"] for d in record["detections"]} <= set(NAMES)


def test_csp_model_with_the_grid_loss_memorises_own_data(coco_root, tmp_path):
    """The own-data default: the CSP model (heads at strides 8, 16, 32) and the grid loss, through the same engine."""
    train = detection_split(coco_root, "train")
    base = own_data_detector_config("fast", image_size=192)
    assert (base.model, base.loss, base.train.augment.mosaic, base.train.ema) == ("csp", "grid", 0.5, 0.999)
    cfg = replace(base, train=TrainConfig(
        epochs=1, steps=200, batch_size=5, optim=OptimConfig(name="adamw", lr=3e-3, weight_decay=0.0),
        schedule=ScheduleConfig(name="cosine", warmup_epochs=2), precision="fp32", hflip=False, grad_clip=10.0,
        precise_bn_batches=2))
    cfg = config_for_data(cfg, train, autoanchor=True)
    assert cfg.feature_map_sizes == (24, 12, 6)
    train_detector(cfg, train, train, tmp_path, progress=False)
    model, cfg = load_detector(tmp_path / "best_model.pth")
    assert (cfg.model, cfg.loss) == ("csp", "grid")
    detections = predict_dataset(model, cfg, DetectionDataset(train, image_size=cfg.image_size, progress=False))
    metrics = evaluate_detections(train, [r.id for r in train.images], detections, [d.scales for d in detections])
    assert metrics["mAP50"] >= 0.9, metrics["AP50"]


@pytest.mark.parametrize("layout", ["voc", "yolo"])
def test_cli_trains_and_evaluates_each_layout(layout, tmp_path, capsys):
    root = write_layout(make_detection_dataset(seed=5, n_train=8, n_val=4), tmp_path / "data", layout)
    run = tmp_path / "run"
    assert main(["train", "detector", "--data-root", str(root), "--out", str(run), "--imgsz", "96",
                 "--set", "train.steps=2", "--set", "train.batch_size=4", "--quiet"]) == 0
    said = capsys.readouterr().out
    assert f"data: {layout.upper() if layout == 'voc' else 'YOLO'}" in said
    config = json.loads((run / "config.json").read_text())["detector"]
    assert config["image_size"] == 96 and config["num_classes"] == 7 and config["class_names"] == list(NAMES)
    assert config["train"]["augment"]["scale"] == [0.5, 1.5]  # the own-data recipe
    assert main(["eval", "detector", "--run", str(run), "--json", "--quiet"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert set(metrics["AP50"]) == set(NAMES) and metrics["run"]["image_size"] == 96
    split = detection_split(root, "val")
    sizes = {r.id: (r.width, r.height) for r in split.images}
    for rec in json.loads((run / "predictions.json").read_text()):
        w, h = sizes[rec["image_id"]]
        x1, y1, x2, y2 = rec["bbox"]
        assert 0 <= x1 <= x2 <= w + 1e-3 and 0 <= y1 <= y2 <= h + 1e-3  # original pixels, not the 96 px input


def test_anchors_command_reports_and_fits(coco_root, capsys):
    assert main(["anchors", "--data-root", str(coco_root), "--imgsz", "128"]) == 0
    out = capsys.readouterr().out
    assert "COCO" in out and "best possible recall" in out and "fitted anchors" in out
    assert main(["anchors", "--data-root", str(coco_root), "--imgsz", "128", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["fitted"]["mean_best_iou"] >= report["configured"]["mean_best_iou"]
    assert report["configured"]["image_size"] == 128
