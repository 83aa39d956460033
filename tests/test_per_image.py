"""Intervals in metrics.json and paired comparisons of evaluated runs (loclab.evaluation.per_image)."""

import json
import math

import numpy as np
import pytest
from test_detection_eval import _jittered_predictions, _write_reference_annotations

from loclab.data.formats_detection import load_detection_annotations
from loclab.errors import ConfigError
from loclab.evaluation.detection import evaluate_detections, ground_truth_table, predictions_table
from loclab.evaluation.keypoints import keypoint_metrics
from loclab.evaluation.keypoints import summary_line as keypoint_summary
from loclab.evaluation.per_image import (
    PER_IMAGE_FILE,
    PerImageError,
    load_per_image,
    paired_comparison,
    paired_diff,
    statistic,
)
from loclab.metrics.bootstrap import bootstrap_ci
from loclab.metrics.intervals import ap_intervals, coco_ap_intervals, pck_intervals

NAMES = ["circle", "square", "triangle"]


@pytest.fixture(scope="module")
def detection_case(tmp_path_factory):
    root = tmp_path_factory.mktemp("det")
    gt_file = _write_reference_annotations(root / "val_annotations.json", 40, seed=3)
    split = load_detection_annotations(gt_file, check_images=False)
    return split, _jittered_predictions(split, seed=4), _jittered_predictions(split, seed=5)


def _evaluate(split, records, run_dir, resamples=300):
    table, scales = predictions_table(records, split)
    return evaluate_detections(split, None, table, scales, resamples=resamples, per_image_path=run_dir / PER_IMAGE_FILE)


def test_detection_metrics_have_intervals_next_to_each_ap(detection_case, tmp_path):
    split, records, _ = detection_case
    metrics = _evaluate(split, records, tmp_path)
    keys = list(metrics)
    for key in ("mAP50", "AP50", "mAP50_voc07", "AP50_voc07", "mAP50_coco", "AP50_coco", "mAP70", "AP70",
                "mAP50_95", "AP50_95", "mAP75", "AP75"):
        assert keys[keys.index(key) + 1] == f"{key}_ci95"
    low, high = metrics["mAP50_ci95"]
    assert low < metrics["mAP50"] < high and high - low < 0.3
    assert set(metrics["AP50_ci95"]) == set(NAMES) and metrics["bootstrap"]["resamples"] == 300
    json.dumps(metrics, allow_nan=False)
    # the same numbers as the metrics layer's intervals on the same detections and draws
    table, _ = predictions_table(records, split)
    gts = ground_truth_table(split)
    direct = ap_intervals(table, gts, class_names=dict(enumerate(NAMES)), resamples=300)
    assert metrics["mAP50_ci95"] == pytest.approx(list(direct["mAP50"]), abs=1e-12)
    assert metrics["AP50_voc07_ci95"]["square"] == pytest.approx(list(direct["AP50_voc07"]["square"]), abs=1e-12)
    coco = coco_ap_intervals(table, gts, class_names=dict(enumerate(NAMES)), resamples=300)
    assert metrics["mAP50_95_ci95"] == pytest.approx(list(coco["mAP50_95"]), abs=1e-12)
    # and what the saved per-image statistics give
    saved = load_per_image(tmp_path / PER_IMAGE_FILE)
    assert saved.task == "detection" and saved.labels == tuple(NAMES) and saved.num_images == 40
    assert list(bootstrap_ci(statistic(saved, "AP70[triangle]"), 300)) == pytest.approx(
        metrics["AP70_ci95"]["triangle"], abs=1e-12)
    assert statistic(saved, "mAP50")(np.ones((1, 40)))[0] == pytest.approx(metrics["mAP50"], abs=1e-12)


def test_no_resamples_no_intervals(detection_case, tmp_path):
    split, records, _ = detection_case
    metrics = _evaluate(split, records, tmp_path, resamples=0)
    assert not any(key.endswith("_ci95") for key in metrics) and "bootstrap" not in metrics
    assert (tmp_path / PER_IMAGE_FILE).is_file()  # the statistics are saved all the same
    with pytest.raises(ConfigError, match="at least 1"):
        _evaluate(split, records, tmp_path, resamples=-5)


def test_paired_comparison_of_two_detector_runs(detection_case, tmp_path):
    split, first, second = detection_case
    a, b = _evaluate(split, first, tmp_path / "a", 0), _evaluate(split, second, tmp_path / "b", 0)
    diff = paired_comparison(tmp_path / "a", tmp_path / "b", "mAP50", resamples=300)
    assert diff.delta == pytest.approx(a["mAP50"] - b["mAP50"], abs=1e-12)
    assert diff.low <= diff.delta <= diff.high
    assert paired_comparison(tmp_path / "a", tmp_path / "a", "mAP50_95").significant is False
    per_class = paired_comparison(tmp_path / "a", tmp_path / "b", "AP50_95[circle]", resamples=300)
    assert per_class.delta == pytest.approx(a["AP50_95"]["circle"] - b["AP50_95"]["circle"], abs=1e-12)
    # every box moved by a few more pixels is a real difference on 40 images
    rng = np.random.default_rng(0)
    noisy = [{**r, "bbox": (np.array(r["bbox"]) + np.tile(rng.normal(0, 6, 2), 2)).tolist()} for r in first]
    _evaluate(split, noisy, tmp_path / "noisy", 0)
    worse = paired_comparison(tmp_path / "a", tmp_path / "noisy", "mAP50_95", resamples=300)
    assert worse.significant and worse.low > 0


def test_paired_comparison_refuses_what_it_cannot_compare(detection_case, tmp_path):
    split, first, _ = detection_case
    _evaluate(split, first, tmp_path / "a", 0)
    fewer = load_detection_annotations(_write_reference_annotations(tmp_path / "other.json", 30, seed=3),
                                       check_images=False)
    _evaluate(fewer, [r for r in first if r["image_id"] < 1030], tmp_path / "fewer", 0)
    with pytest.raises(PerImageError, match="not on the same images"):
        paired_comparison(tmp_path / "a", tmp_path / "fewer", "mAP50")
    with pytest.raises(PerImageError, match=r"known: mAP50, .*AP50\[CLASS\]"):
        paired_comparison(tmp_path / "a", tmp_path / "a", "mAP42")
    with pytest.raises(PerImageError, match="no per-image statistics"):
        paired_comparison(tmp_path / "a", tmp_path / "a", "AP50[hexagon]")
    with pytest.raises(PerImageError, match="missing"):
        paired_comparison(tmp_path / "a", tmp_path / "nowhere", "mAP50")
    _, keypoints = _keypoint_run(tmp_path / "kp", *_figures(np.random.default_rng(0), 0.5))
    with pytest.raises(PerImageError, match="cannot compare a detection evaluation with a keypoints one"):
        paired_diff(load_per_image(tmp_path / "a" / PER_IMAGE_FILE), keypoints, "mAP50")


def test_match_rule_voc_has_its_own_intervals(detection_case):
    split, records, _ = detection_case
    table, _ = predictions_table(records, split)
    voc = evaluate_detections(split, None, table, match_rule="voc", resamples=200)
    direct = ap_intervals(table, ground_truth_table(split), class_names=dict(enumerate(NAMES)), match_rule="voc",
                          resamples=200)
    assert voc["mAP50_ci95"] == pytest.approx(list(direct["mAP50"]), abs=1e-12)
    with pytest.raises(ConfigError, match="match rule"):
        evaluate_detections(split, None, table, match_rule="devkit")


# --- keypoints ---------------------------------------------------------------------------------------------------


def _figures(rng, spread, count=60):
    gt = rng.uniform(10, 110, (count, 5, 2))
    return gt + rng.normal(0, spread, gt.shape), gt


def _keypoint_run(run_dir, pred, gt):
    """keypoint_metrics as an evaluated run directory writes them; returns the metrics and the saved statistics."""
    metrics = keypoint_metrics(pred, gt, resamples=0, per_image_path=run_dir / PER_IMAGE_FILE,
                               image_ids=range(100, 100 + len(gt)))
    return metrics, load_per_image(run_dir / PER_IMAGE_FILE)


def test_keypoint_metrics_have_intervals():
    pred, gt = _figures(np.random.default_rng(1), 3.0)
    metrics = keypoint_metrics(pred, gt, resamples=400)
    keys = list(metrics)
    for key in ("pck", "pck_swap", "mean_error_px", "mean_error_px_swap"):
        assert keys[keys.index(key) + 1] == f"{key}_ci95"
    assert list(metrics["pck_ci95"]) == list(metrics["pck"]) == list(metrics["pck_swap_ci95"])
    for threshold, (low, high) in metrics["pck_ci95"].items():
        assert low <= metrics["pck"][threshold] <= high
    direct = pck_intervals(pred, gt, resamples=400)
    assert [metrics["pck_ci95"][f"{t:g}"] for t in direct] == [pytest.approx(list(v), abs=1e-12)
                                                                 for v in direct.values()]
    low, high = metrics["mean_error_px_ci95"]
    assert low < metrics["mean_error_px"] < high
    assert "PCK @0.05" in keypoint_summary(metrics) and f"[{low:.2f}, {high:.2f}] px" in keypoint_summary(metrics)
    no_pairs = keypoint_metrics(pred[:, :3], gt[:, :3], resamples=100)
    assert no_pairs["pck_swap"] is None and "pck_swap_ci95" not in no_pairs


def test_keypoint_instances_of_an_image_are_resampled_together():
    rng = np.random.default_rng(2)
    pred, gt = _figures(rng, 4.0, count=40)
    image = np.repeat(np.arange(20), [1, 2, 3, 4, 0] * 4)  # 40 instances on 20 images, some with none
    metrics = keypoint_metrics(pred, gt, instance_image=image, num_images=20, resamples=300)
    direct = pck_intervals(pred, gt, image_index=image, num_images=20, resamples=300)
    assert metrics["pck_ci95"]["0.1"] == pytest.approx(list(direct[0.1]), abs=1e-12)
    assert metrics["bootstrap"]["num_images"] == 20
    one_per_row = keypoint_metrics(pred, gt, resamples=300)
    assert one_per_row["pck_ci95"]["0.1"] != metrics["pck_ci95"]["0.1"]


def test_paired_comparison_of_two_keypoint_evaluations(tmp_path):
    pred, gt = _figures(np.random.default_rng(3), 2.0)
    good_metrics, good = _keypoint_run(tmp_path / "good", pred, gt)
    bad_metrics, bad = _keypoint_run(tmp_path / "bad", pred + np.random.default_rng(4).normal(0, 3, pred.shape), gt)
    assert good.task == "keypoints" and good.labels == ("0.05", "0.1", "0.15", "0.2")
    assert good.image_ids.tolist() == list(range(100, 160))
    diff = paired_comparison(tmp_path / "good", tmp_path / "bad", "pck[0.05]", resamples=300)
    assert diff.delta == pytest.approx(good_metrics["pck"]["0.05"] - bad_metrics["pck"]["0.05"], abs=1e-12)
    assert diff.significant and diff.low > 0
    error = paired_diff(good, bad, "mean_error_px", resamples=300)
    assert error.delta < 0 and error.high < 0
    assert math.isfinite(paired_diff(good, bad, "pck_swap[0.2]").delta)
    with pytest.raises(PerImageError, match=r"pck\[THRESHOLD\]"):
        paired_diff(good, bad, "pck[0.3]")
