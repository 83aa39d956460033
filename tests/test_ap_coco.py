"""COCO's twelve summary numbers (AP@[.5:.95], AP50, AP75, AP by size, AR@1/10/100, AR by size) against
pycocotools' ``COCOeval.stats`` on the same detections, and the matching grid they rest on."""

import json
import math

import numpy as np
import pycocotools  # noqa: F401  (a test dependency: a missing one must fail, not skip)
import pytest
from coco_reference import pycocotools_stats
from test_ap import _random_scene as shapes_scene
from test_ap_difficult import _random_scene as difficult_scene

from loclab.data.formats_detection import load_detection_annotations
from loclab.evaluation.detection import score_detection_files, summary_line
from loclab.metrics import Detections, GroundTruth, compute_ap, match_detections
from loclab.metrics.ap_coco import AREA_RANGES, IOU_THRESHOLDS, STATS_KEYS, coco_matches, coco_summary, match_in_area
from loclab.metrics.ap_matching import match_detections_grid


def _ours(dets, gts, class_ids):
    stats = coco_summary(coco_matches(dets, gts), class_ids)["coco_stats"]
    return np.array([-1.0 if math.isnan(v) else v for v in stats])


def _theirs(dets, gts, class_ids):
    return pycocotools_stats(zip(gts.image_id, gts.category_id, gts.boxes),
                             zip(dets.image_id, dets.category_id, dets.boxes, dets.scores), gts.image_ids, class_ids,
                             difficult=gts.difficult)


@pytest.mark.parametrize("seed", range(4))
def test_stats_equal_pycocotools_on_shapes_like_scenes(seed):
    # three classes of three size ranges, crowded images over the 100-detection cap, tied scores (even seeds)
    dets, gts = shapes_scene(seed)
    ours, theirs = _ours(dets, gts, [0, 1, 2]), _theirs(dets, gts, [0, 1, 2])
    assert (theirs > 0).all()  # every number is defined and exercised
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_stats_equal_pycocotools_with_difficult_boxes(seed):
    # difficult boxes are pycocotools' ignored boxes in every area range; no large object: -1 / NaN there
    dets, gts = difficult_scene(seed)
    ours, theirs = _ours(dets, gts, [0, 1]), _theirs(dets, gts, [0, 1])
    assert theirs[5] == -1 and theirs[11] == -1
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)


def test_box_areas_on_the_range_edges():
    # 32 x 32 = 1024 is both small and medium (pycocotools' ranges include both ends); 96 x 96 medium and large
    gts = GroundTruth([0, 0, 1], [0, 0, 0], [[0, 0, 32, 32], [40, 40, 136, 136], [0, 0, 31, 33]], image_ids=[0, 1])
    dets = Detections([0, 0, 1, 1], [0, 0, 0, 0], [[0, 0, 32, 32], [41, 40, 136, 136], [0, 0, 31, 33],
                                                   [100, 100, 140, 140]], [0.9, 0.8, 0.7, 0.6])
    np.testing.assert_allclose(_ours(dets, gts, [0]), _theirs(dets, gts, [0]), rtol=0, atol=1e-12)
    counted = {area: match_in_area(dets, gts, 0.5, limits).num_gt.get(0, 0) for area, limits in AREA_RANGES.items()}
    assert counted == {"all": 3, "small": 2, "medium": 2, "large": 1}  # 1023 and 1024; 1024 and 9216; 9216


def test_per_class_and_ap75_agree_with_compute_ap_at_those_thresholds():
    dets, gts = shapes_scene(1)
    summary = coco_summary(coco_matches(dets, gts), [0, 1, 2], {0: "circle", 1: "square", 2: "triangle"})
    per_threshold = [compute_ap(dets, gts, float(t), max_detections_per_image_class=100) for t in IOU_THRESHOLDS]
    for k, name in enumerate(["circle", "square", "triangle"]):
        expected = np.mean([r[f"AP{round(100 * t)}_coco"][k] for r, t in zip(per_threshold, IOU_THRESHOLDS)])
        assert summary["AP50_95"][name] == pytest.approx(expected, abs=1e-12)
        assert summary["AP75"][name] == pytest.approx(per_threshold[5]["AP75_coco"][k], abs=1e-12)
    assert summary["mAP50_coco"] == pytest.approx(per_threshold[0]["mAP50_coco"], abs=1e-12)
    assert list(summary)[:12] == list(STATS_KEYS)


def test_empty_detections_and_classes_without_boxes():
    gts = GroundTruth([0], [0], [[0, 0, 10, 10]], image_ids=[0, 1])
    summary = coco_summary(coco_matches(Detections([], [], np.zeros((0, 4)), []), gts), [0, 1])
    assert summary["mAP50_95"] == 0.0 and summary["AR100"] == 0.0
    assert math.isnan(summary["mAP50_95_large"]) and math.isnan(summary["AP50_95"][1])


def test_the_grid_equals_one_matching_at_a_time():
    dets, gts = difficult_scene(2)
    extra = [None, gts.boxes[:, 2] - gts.boxes[:, 0] > 40]
    grid = match_detections_grid(dets, gts, [0.5, 0.7], extra, difficult_rule="coco")
    for i, also in enumerate(extra):
        hard = gts.difficult if also is None else gts.difficult | also
        single_gts = GroundTruth(gts.image_id, gts.category_id, gts.boxes, gts.image_ids, difficult=hard)
        for j, t in enumerate([0.5, 0.7]):
            single = match_detections(dets, single_gts, t, difficult_rule="coco")
            got = grid[i][j]
            assert np.array_equal(got.is_tp, single.is_tp) and np.array_equal(got.is_ignored, single.is_ignored)
            assert np.array_equal(got.matched_gt, single.matched_gt) and got.num_gt == single.num_gt


def test_detection_metrics_carry_the_coco_summary(tmp_path):
    from test_detection_eval import _jittered_predictions, _write_reference_annotations

    gt_file = _write_reference_annotations(tmp_path / "val_annotations.json", 60, seed=3)
    split = load_detection_annotations(gt_file, check_images=False)
    records = _jittered_predictions(split, seed=4, crowd_image=1000)
    pred_file = tmp_path / "predictions.json"
    pred_file.write_text(json.dumps(records))
    metrics = score_detection_files(gt_file, pred_file, resamples=0)
    ground_truth = [(image.id, split.category_ids[label], box)
                    for image, boxes, labels in zip(split.images, split.boxes, split.labels)
                    for box, label in zip(boxes.tolist(), labels.tolist())]
    expected = pycocotools_stats(ground_truth, [(r["image_id"], r["category_id"], r["bbox"], r["score"])
                                                for r in records], [i.id for i in split.images], split.category_ids)
    got = [metrics[key] for key in STATS_KEYS]
    np.testing.assert_allclose([-1 if v is None else v for v in got], expected, rtol=0, atol=1e-4)
    assert metrics["coco_stats"] == got and metrics["mAP50_95"] > 0.1
    assert set(metrics["AP50_95"]) == set(metrics["AP75"]) == {"circle", "square", "triangle"}
    assert "COCO AP@[.5:.95]" in summary_line(metrics).splitlines()[1]
