"""`loclab run --data-root DIR` on a user's own dataset: only the stages of the tasks it holds run, the others are
recorded as skipped with one sentence the report repeats, and nothing is generated into the dataset."""

from __future__ import annotations

import json
from pathlib import Path

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from keypoint_writers import make_keypoint_dataset, write_coco_keypoints, write_deeplabcut
from layout_writers import NAMES, make_detection_dataset, write_coco, write_voc
from loclab.analysis.failures import instance_failure_analysis
from loclab.analysis.sizes import BUCKET_RULE, bucket_rule, size_distribution
from loclab.cli import main
from loclab.config import DetectorConfig
from loclab.data.errors import DataError
from loclab.evaluation.detection import size_bucket_edges
from loclab.recipes import study_preset
from loclab.study.owndata import dataset_layouts, resolve_study_config_for_data, study_config_for_data

DETECTION_STAGES = ("detector", "anchor_ablation")
KEYPOINT_STAGES = ("heatmap", "regression", "comparison", "keypoint_ablation")
NO_KEYPOINTS = "No keypoint annotations in this dataset (VOC layout holds boxes only), so the keypoint study is skipped."
NO_BOXES = ("No box annotations in this dataset (DeepLabCut layout holds keypoints only), so the detection study is "
            "skipped.")
# tiny inputs keep each smoke stage to seconds on two cores
SMALL = ["--set", "detector.image_size=64", "--set", "heatmap.input_width=64", "--set", "heatmap.input_height=64",
         "--set", "regression.input_width=64", "--set", "regression.input_height=64"]


def _listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _markers(out: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (out / "stages").glob("*.json")}


def _section(report: str, heading: str) -> str:
    start = report.index(heading)
    end = report.find("\n## ", start + 1)
    return report[start:end if end >= 0 else None]


@pytest.fixture(scope="module")
def voc_study(tmp_path_factory):
    base = tmp_path_factory.mktemp("voc")
    data = write_voc(make_detection_dataset(seed=3, n_train=12, n_val=6), base / "voc")
    before = _listing(data)
    assert main(["run", "--preset", "smoke", "--out", str(base / "study"), "--data-root", str(data), *SMALL]) == 0
    return data, base / "study", before


@pytest.fixture(scope="module")
def dlc_study(tmp_path_factory):
    base = tmp_path_factory.mktemp("dlc")
    data = base / "dlc"
    write_deeplabcut(make_keypoint_dataset(seed=5, n_train=10, n_val=4), data)
    before = _listing(data)
    assert main(["run", "--preset", "smoke", "--out", str(base / "study"), "--data-root", str(data), *SMALL]) == 0
    return data, base / "study", before


# ---------------------------------------------------------------------------------------- layouts and configs


def test_the_course_data_root_keeps_the_course_study(tmp_path, tiny_data_root):
    assert dataset_layouts(tmp_path / "missing") is None
    assert dataset_layouts(tmp_path) is None  # empty
    assert dataset_layouts(tiny_data_root) is None  # the reference layout
    for preset in ("smoke", "quick", "paper"):
        assert study_config_for_data(preset, None) == study_preset(preset)
        assert study_config_for_data(preset, {"detection": "reference", "keypoints": None}) == study_preset(preset)
        assert study_preset(preset).own_data is None


def test_each_task_is_found_in_the_layouts_that_hold_it(tmp_path):
    coco = tmp_path / "coco"
    write_coco(make_detection_dataset(seed=1, n_train=4, n_val=2, specials=False), coco)
    write_coco_keypoints(make_keypoint_dataset(seed=1, n_train=4, n_val=2), coco)
    layouts = dataset_layouts(coco)
    assert {task: layout.name for task, layout in layouts.items()} == {"detection": "coco", "keypoints": "coco"}
    voc = write_voc(make_detection_dataset(seed=1, n_train=4, n_val=2, specials=False), tmp_path / "voc")
    layouts = dataset_layouts(voc)
    assert layouts["detection"].name == "voc" and layouts["keypoints"] is None
    roboflow = tmp_path / "roboflow"  # one COCO file per split, which matches either task's search
    write_coco(make_detection_dataset(seed=1, n_train=4, n_val=2, specials=False), roboflow, suffix="")
    for split in ("train", "val"):
        (roboflow / "annotations" / f"instances_{split}.json").rename(roboflow / split / "_annotations.coco.json")
    layouts = dataset_layouts(roboflow)
    assert layouts["detection"].name == "coco" and layouts["keypoints"] is None
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("not a dataset")
    with pytest.raises(DataError, match="no detection dataset layout found"):
        dataset_layouts(other)
    assert _listing(other) == ["notes.txt"]  # nothing generated into it


def test_own_data_configs_follow_the_preset_and_the_input_size():
    quick = resolve_study_config_for_data("quick", {"detection": "voc", "keypoints": None})
    paper = resolve_study_config_for_data("paper", {"detection": "voc", "keypoints": None})
    assert quick.own_data.detection == "voc" and quick.own_data.keypoints == "" and quick.own_data.autoanchor
    assert quick.detector.train.steps == 600 and paper.detector.train.steps == 3200
    assert quick.detector.model == "csp" and quick.detector.loss == "grid" and quick.detector.image_size == 320
    assert quick.heatmap.input_size == (192, 192) and quick.heatmap.train.steps == 600
    assert quick.ablation.anchor_sets == ()
    wide = resolve_study_config_for_data("quick", {"detection": "voc"}, ["detector.image_size=512"])
    assert wide.detector.anchor_sizes[0] == (36.6, 54.9, 73.1)  # the reference anchors scaled to 512 px


def test_size_buckets_follow_the_anchors_except_on_the_course_shapes():
    course = DetectorConfig()
    assert size_bucket_edges(course, SimpleNamespace(format="reference")) == [40.0, 96.0]
    assert size_bucket_edges(replace(course, image_size=448), SimpleNamespace(format="reference")) == [80.0, 192.0]
    own = DetectorConfig(image_size=256, anchor_sizes=((10.0, 20.0, 30.0), (40.0, 50.0, 60.0), (100.0, 120.0, 140.0)))
    assert size_bucket_edges(own, SimpleNamespace(format="voc")) == [35.0, 85.0]
    assert bucket_rule([40.0, 96.0]) == BUCKET_RULE
    assert bucket_rule([35.0, 85.0]).startswith("small: sqrt(area) < 35 px <= medium < 85 px <= large")
    sizes = size_distribution(np.array([[0, 0, 30, 30], [0, 0, 50, 50], [0, 0, 90, 90]]), np.array([0, 1, 1]),
                              {0: "a", 1: "b"}, [35.0, 85.0])
    assert sizes["bucket_counts"] == {"small": 1, "medium": 1, "large": 1} and sizes["bucket_edges"] == [35.0, 85.0]


def test_instance_failures_score_labelled_keypoints_and_every_pair():
    gt = torch.tensor([[[0.0, 0.0], [10.0, 0.0], [20.0, 0.0]], [[0.0, 0.0], [10.0, 10.0], [0.0, 10.0]]])
    visible = torch.tensor([[True, True, True], [True, True, False]])
    heatmap = gt.clone()
    heatmap[0, 1], heatmap[0, 2] = gt[0, 2], gt[0, 1]  # the pair (1, 2) swapped: forgiven
    regression = gt.clone()
    regression[1, 2] = torch.tensor([50.0, 50.0])  # an unlabelled keypoint: not scored
    regression[0, 0] = torch.tensor([9.0, 9.0])  # wrong
    result = instance_failure_analysis(heatmap, regression, gt, visible, ["a", "b", "c"], [(1, 2)], threshold=0.1)
    assert result["unit"] == "instances" and result["num_images"] == 2
    assert result["image_ids"] == {"A": [0], "B": [], "C": []} and result["counts"]["both_correct"] == 1
    assert result["failing_by_image"]["0"]["regression"] == ["a"]
    assert result["keypoint_accuracy"]["regression"]["c"] == 1.0  # instance 1's c is unlabelled


# ------------------------------------------------------------------------------------------------ end to end


def test_voc_dataset_runs_the_detection_stages_only(voc_study):
    data, out, before = voc_study
    assert _listing(data) == before  # nothing generated into the user's dataset
    markers = _markers(out)
    assert all(markers[s]["status"] == "done" for s in ("data", *DETECTION_STAGES))
    assert all(markers[s]["status"] == "skipped" and markers[s]["reason"] == NO_KEYPOINTS for s in KEYPOINT_STAGES)
    assert not (out / "keypoints").exists() and not (out / "ablations" / "keypoints").exists()
    assert json.loads((out / "data.json").read_text())["keypoints"] == "not in this dataset"

    metrics = json.loads((out / "detector" / "metrics.json").read_text())
    assert set(metrics["AP50"]) == set(NAMES)
    config = json.loads((out / "detector" / "config.json").read_text())["detector"]
    means = [sum(scale) / len(scale) for scale in config["anchor_sizes"]]
    edges = [(a + b) / 2 for a, b in zip(means[:-1], means[1:])]  # buckets from the (fitted) anchors
    assert metrics["anchor_coverage"]["bucket_edges"] == pytest.approx(edges)
    assert metrics["object_sizes"]["bucket_edges"] == pytest.approx(edges)
    if "scale_specialisation" in metrics:  # absent when a two-step model detects nothing at score >= 0.01
        assert metrics["scale_specialisation"]["bucket_edges"] == pytest.approx(edges)
    ablation = json.loads((out / "ablations" / "anchors" / "anchor_ablation.json").read_text())
    assert [r["trial"] for r in ablation["rows"]] == ["default", "fitted"]
    assert ablation["rows"][1]["anchor_sizes"] == config["anchor_sizes"]

    report = (out / "report.md").read_text()
    assert NO_KEYPOINTS in _section(report, "## Problem 2")
    detection = _section(report, "## Problem 1")
    assert all(name in detection for name in NAMES)
    assert "(quoted)" not in report and "three classes" not in report and "hands" not in report
    assert "anchors fitted to the training boxes" in report


def test_deeplabcut_project_runs_the_keypoint_stages_only(dlc_study):
    data, out, before = dlc_study
    assert _listing(data) == before
    markers = _markers(out)
    assert all(markers[s]["status"] == "done" for s in ("data", *KEYPOINT_STAGES))
    assert all(markers[s]["status"] == "skipped" and markers[s]["reason"] == NO_BOXES for s in DETECTION_STAGES)
    assert not (out / "detector").exists() and not (out / "ablations" / "anchors").exists()
    for model in ("heatmap", "regression"):
        assert (out / "keypoints" / model / "metrics.json").is_file()
    comparison = json.loads((out / "keypoints" / "comparison.json").read_text())
    assert comparison["ceiling"] is None and comparison["ceiling_note"]
    assert comparison["failures"]["unit"] == "instances"
    for figure in ("pck_curves.png", "method_comparison.png", "failure_cases.png"):
        assert (out / "keypoints" / "visualizations" / figure).is_file()
    assert (out / "ablations" / "keypoints" / "baseline_results.json").is_file()

    report = (out / "report.md").read_text()
    assert NO_BOXES in _section(report, "## Problem 1")
    keypoints = _section(report, "## Problem 2")
    assert "No ambiguity ceiling for this dataset (not computed" in keypoints  # and why
    assert "(quoted)" not in report and "hands" not in _section(report, "## Conclusions")


def test_rerun_on_own_data_skips_finished_stages(voc_study, capsys):
    data, out, _ = voc_study
    assert main(["run", "--preset", "smoke", "--out", str(out), "--data-root", str(data), *SMALL]) == 0
    printed = capsys.readouterr().out
    assert "VOC layout" in printed and "done earlier" in printed and NO_KEYPOINTS in printed
