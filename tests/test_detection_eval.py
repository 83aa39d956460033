"""Detection evaluation: COCO AP50 against pycocotools on real model output and on a realistic 200-image case,
prediction-file validation, and figures rebuilt from a run directory's files."""

import json
import logging
import math
from dataclasses import replace

import numpy as np
import pycocotools  # noqa: F401  (a test dependency: a missing one must fail, not skip)
import pytest
import torch
from coco_reference import pycocotools_ap

from loclab.analysis.coverage import anchor_coverage
from loclab.analysis.sizes import object_size_distribution
from loclab.config import DetectorConfig, to_dict
from loclab.data.datasets import DetectionDataset
from loclab.data.errors import DataError
from loclab.data.formats_detection import load_detection_annotations
from loclab.data.shapes import generate_shapes
from loclab.engine.checkpoint import save_checkpoint
from loclab.engine.detection import detections_to_records, make_model, predict_images
from loclab.engine.rundir import write_json
from loclab.engine.tasks import detection_split
from loclab.evaluation.detection import (
    evaluate_detections,
    evaluate_detector_run,
    predictions_table,
    score_detection_files,
    summary_line,
)
from loclab.evaluation.prediction_checks import PredictionWarning
from loclab.ops.anchors import generate_anchors
from loclab.report.figures import write_detector_figures


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Small tensors: on a busy 2-core machine a second torch thread mostly waits (10x slower here), so one."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)

FIGURES = ["loss_curves.png", "pr_curves.png", "scale_specialisation.png", "anchor_coverage.png",
           "object_sizes.png", "detections.png", "anchors_on_image.png", "feature_maps.png"]


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    generate_shapes(root, seed=641, n_train=6, n_val=6, progress=False)
    return root


def _pycocotools_ap50(split, records):
    """pycocotools' AP50 (bbox, area all, maxDets 100: its ``stats[1]``) for xyxy prediction records of ``split``."""
    ground_truth = [(image.id, split.category_ids[label], box)
                    for image, boxes, labels in zip(split.images, split.boxes, split.labels)
                    for box, label in zip(boxes.tolist(), labels.tolist())]
    detections = [(r["image_id"], r["category_id"], r["bbox"], r["score"]) for r in records]
    return pycocotools_ap(ground_truth, detections, [image.id for image in split.images], split.category_ids)[1]


def _jittered_predictions(split, seed, crowd_image=None):
    """Realistic xyxy prediction records: jittered ground truth (some missed, some with the wrong class, some
    duplicated), random false positives, scores rounded to 2 decimals (many ties), ``scale`` from the box size."""
    rng = np.random.default_rng(seed)
    records = []

    def add(image_id, label, box, score):
        x1, x2 = sorted(box[0::2])
        y1, y2 = sorted(box[1::2])
        side = math.sqrt(max((x2 - x1) * (y2 - y1), 0.0))
        records.append({"image_id": image_id, "category_id": split.category_ids[label], "bbox": [x1, y1, x2, y2],
                        "score": round(float(score), 2), "scale": int(side >= 40) + int(side >= 96)})

    for image, boxes, labels in zip(split.images, split.boxes, split.labels):
        for box, label in zip(boxes.tolist(), labels.tolist()):
            side = box[2] - box[0]
            for copy in range(1 + (rng.random() < 0.2)):
                if rng.random() < 0.85:
                    wrong = rng.random() < 0.1
                    add(image.id, int(rng.integers(0, 3)) if wrong else label,
                        (np.array(box) + rng.normal(0, 0.1 * side * (1 + copy), 4)).tolist(),
                        np.clip(rng.normal(0.7 - 0.2 * copy, 0.2), 0.01, 1))
        for _ in range(rng.poisson(3)):
            x, y, s = rng.uniform(0, 200), rng.uniform(0, 200), rng.uniform(10, 150)
            add(image.id, int(rng.integers(0, 3)), [x, y, x + s, y + s], rng.uniform(0.01, 0.8))
    if crowd_image is not None:  # more than 100 detections of one class on one image: pycocotools' cap matters
        for _ in range(150):
            x, y = rng.uniform(0, 200, 2)
            add(crowd_image, 0, [x, y, x + 20, y + 20], rng.uniform(0.3, 0.9))
    return records


def _write_reference_annotations(path, n_images, seed):
    """A reference-format (xyxy) annotation file laid out like the shapes generator, plus one empty image."""
    rng = np.random.default_rng(seed)
    sizes = ((16, 32), (48, 96), (96, 192))
    images, annotations = [], []
    for image_id in range(1000, 1000 + n_images):
        images.append({"id": image_id, "file_name": f"{image_id:06d}.png", "width": 224, "height": 224})
        for _ in range(int(rng.integers(2, 6)) if image_id < 1000 + n_images - 1 else 0):
            label = int(rng.integers(0, 3))
            size = int(rng.integers(sizes[label][0], sizes[label][1] + 1))
            half = size // 2
            x, y = (int(v) for v in rng.integers(half, 224 - half, size=2, endpoint=True))
            annotations.append({"id": len(annotations), "image_id": image_id, "category_id": label,
                                "bbox": [x - half, y - half, x + half, y + half], "area": size * size})
    categories = [{"id": 0, "name": "circle"}, {"id": 1, "name": "square"}, {"id": 2, "name": "triangle"}]
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


# --- COCO AP50 equals pycocotools' ------------------------------------------------------------------------------


def test_coco_ap50_equals_pycocotools_on_untrained_model_output(shapes_root, tmp_path):
    # Up to 1000 boxes per image, so that pycocotools' cap of 100 per image and class is exercised.
    cfg = DetectorConfig(model="reference", max_detections=1000, pre_nms_top_k=5000)
    torch.manual_seed(0)
    model = make_model(cfg).eval()
    split = detection_split(shapes_root, "val")
    detections = predict_images(model, cfg, DetectionDataset(split, progress=False).images)
    records = detections_to_records([image.id for image in split.images], detections)
    assert max(len(d.scores) for d in detections) > 100 * 2
    pred_file = tmp_path / "predictions.json"
    pred_file.write_text(json.dumps(records))
    metrics = score_detection_files(shapes_root / "detection" / "val_annotations.json", pred_file)
    expected = _pycocotools_ap50(split, records)
    assert expected > 0  # some untrained boxes do land on objects
    assert metrics["mAP50_coco"] == pytest.approx(expected, abs=1e-4)
    assert metrics["mAP50_coco"] != pytest.approx(metrics["mAP50"], abs=1e-6)  # the cap and 101 points matter


def test_coco_ap50_equals_pycocotools_on_realistic_predictions(tmp_path):
    gt_file = _write_reference_annotations(tmp_path / "val_annotations.json", 200, seed=3)
    split = load_detection_annotations(gt_file, check_images=False)
    records = _jittered_predictions(split, seed=4, crowd_image=1000)
    xywh = [{**r, "bbox": [r["bbox"][0], r["bbox"][1], r["bbox"][2] - r["bbox"][0], r["bbox"][3] - r["bbox"][1]]}
            for r in records]
    pred_file = tmp_path / "results.json"
    pred_file.write_text(json.dumps(xywh))
    metrics = score_detection_files(gt_file, pred_file, bbox_format="xywh")
    expected = _pycocotools_ap50(split, records)
    assert 0.3 < expected < 0.95
    assert metrics["mAP50_coco"] == pytest.approx(expected, abs=1e-4)
    assert metrics["num_images"] == 200 and metrics["num_detections"] == len(records)
    assert metrics["scale_specialisation"]["all"]["num_tp"] > 0
    assert set(metrics["AP50"]) == {"circle", "square", "triangle"}
    json.dumps(metrics, allow_nan=False)


# --- prediction files ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_gt(tmp_path_factory):
    return _write_reference_annotations(tmp_path_factory.mktemp("gt") / "val_annotations.json", 3, seed=1)


@pytest.mark.parametrize("content, message", [
    ({"image_id": 1000}, "expected a list"),
    ([{"image_id": 1000, "category_id": 0, "bbox": [0, 0, 5, 5], "score": 0.5}, {"image_id": 1000}],
     r"predictions\[1\]: missing key\(s\) 'category_id', 'bbox', 'score'"),
    ([{"image_id": 1000, "category_id": 0, "bbox": [0, 0, 5], "score": 0.5}], r"predictions\[0\]: bbox"),
    ([{"image_id": 1000, "category_id": 0, "bbox": [0, 0, 5, 5], "score": "high"}], r"predictions\[0\]: score"),
    ([{"image_id": 1000, "category_id": 0, "bbox": [0, 0, 5, 5], "score": True}], r"predictions\[0\]: score"),
    ([{"image_id": 7, "category_id": 0, "bbox": [0, 0, 5, 5], "score": 0.5}], "image_id 7 is not an image"),
    ([{"image_id": 1000, "category_id": 9, "bbox": [0, 0, 5, 5], "score": 0.5}], "unknown category_id 9"),
    ([{"image_id": 1000, "category_id": 0, "bbox": [9, 0, 5, 5], "score": 0.5}], "negative width"),
    ([{"image_id": 1000, "category_id": 0, "bbox": [0, 0, 5, 5], "score": 0.5, "scale": 1},
      {"image_id": 1000, "category_id": 0, "bbox": [0, 0, 5, 5], "score": 0.5}],
     r"predictions\[1\]: missing key 'scale'"),
])
def test_bad_prediction_files_name_the_file_and_record(tiny_gt, tmp_path, content, message):
    pred_file = tmp_path / "bad.json"
    pred_file.write_text(json.dumps(content))
    with pytest.raises(DataError, match=message) as err:
        score_detection_files(tiny_gt, pred_file)
    assert str(pred_file) in str(err.value)


def test_malformed_and_empty_prediction_files(tiny_gt, tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text("[{")
    with pytest.raises(DataError, match="malformed JSON at line 1"):
        score_detection_files(tiny_gt, broken)
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    with pytest.warns(PredictionWarning, match="holds no detections"):
        metrics = score_detection_files(tiny_gt, empty)
    assert metrics["mAP50"] == 0.0 and metrics["num_detections"] == 0 and "scale_specialisation" not in metrics


def test_summary_line():
    metrics = {"mAP50": 0.8123, "AP50": {"circle": 0.8, "square": 0.85, "triangle": None}, "mAP50_voc07": 0.8,
               "mAP50_coco": 0.81, "mAP70": 0.654}
    assert summary_line(metrics) == ("mAP@0.5 (VOC all-point) 0.812 | circle 0.80 square 0.85 triangle n/a | "
                                     "VOC07 0.80 | COCO-101 0.81 | mAP@0.7 0.65")


# --- run directories ----------------------------------------------------------------------------------------------


def _training_log(epochs=3):
    def losses(scale):
        return {"loss_obj": 1.0 * scale, "loss_cls": 0.5 * scale, "loss_loc": 0.3 * scale, "loss_total": 2.1 * scale}
    return [{"epoch": e, "lr": 1e-3, "train": losses(1 / e), "val": losses(1.2 / e), "train_time_s": 1.0,
             "images_per_s": 6.0} for e in range(1, epochs + 1)]


def test_figures_from_a_fake_run_without_checkpoint(shapes_root, tmp_path, caplog):
    cfg = DetectorConfig(model="reference")
    split = detection_split(shapes_root, "val")
    records = _jittered_predictions(split, seed=5)
    table, scales = predictions_table(records, split)
    metrics = evaluate_detections(split, None, table, scales)
    metrics["anchor_coverage"] = anchor_coverage(split, generate_anchors(cfg.feature_map_sizes, cfg.anchor_sizes))
    metrics["object_sizes"] = object_size_distribution(split)
    run = tmp_path / "run"
    write_json(run / "config.json", {"task": "detector", "data_root": str(shapes_root), "detector": to_dict(cfg)})
    write_json(run / "training_log.json", _training_log())
    write_json(run / "metrics.json", metrics)
    write_json(run / "predictions.json", records)
    with caplog.at_level(logging.WARNING):
        written = write_detector_figures(run)
    assert [p.name for p in written] == FIGURES[:-1]
    assert all(p.stat().st_size > 10_000 for p in written)
    assert not (run / "visualizations" / "feature_maps.png").exists()
    assert "skipped feature_maps.png (no best_model.pth)" in caplog.text


@pytest.mark.slow
def test_evaluate_detector_run_end_to_end(shapes_root, tmp_path):
    """An untrained checkpoint evaluated like a trained one; predictions.json re-scored gives the same numbers."""
    cfg = replace(DetectorConfig(model="reference"), train=replace(DetectorConfig().train, precision="fp32"))
    torch.manual_seed(1)
    run = tmp_path / "run"
    save_checkpoint(run / "best_model.pth", {"task": "detector", "config": to_dict(cfg),
                                             "model": make_model(cfg).state_dict()})
    write_json(run / "config.json", {"task": "detector", "data_root": str(shapes_root), "detector": to_dict(cfg)})
    write_json(run / "training_log.json", _training_log())
    metrics = evaluate_detector_run(run, progress=False)
    write_detector_figures(run)
    on_disk = json.loads((run / "metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(metrics))
    for key in ("mAP50", "AP50", "mAP50_voc07", "AP50_voc07", "mAP50_coco", "AP50_coco", "ap_convention", "mAP70",
                "AP70", "pr_curves", "scale_specialisation", "num_images", "num_detections", "anchor_coverage",
                "object_sizes", "run"):
        assert key in on_disk, key
    assert on_disk["num_images"] == 6 and on_disk["run"]["numeric_path"]
    assert sorted(p.name for p in (run / "visualizations").iterdir()) == sorted(FIGURES)
    assert (run / "per_image.npz").is_file() and on_disk["match_rule"] == "coco"
    rescored = score_detection_files(shapes_root / "detection" / "val_annotations.json", run / "predictions.json")
    for key in ("mAP50", "AP50", "mAP50_coco", "AP50_voc07", "mAP70", "scale_specialisation", "pr_curves",
                "mAP50_ci95", "AP50_ci95", "mAP50_95", "mAP50_95_ci95", "mAP75", "AR100", "coco_stats"):
        assert rescored[key] == on_disk[key], key
