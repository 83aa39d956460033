"""loclab compare on hand-made run directories: differing config fields only, headline metrics with their intervals,
training time and images/s, any mix of detector runs, keypoint runs, studies and ablation grids; text, Markdown and
JSON; clear errors for paths that are not runs."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from loclab.cli import main
from loclab.config import DetectorConfig, KeypointConfig, to_dict
from loclab.data.errors import DataError
from loclab.report.compare import (
    MISSING,
    Metric,
    NotARunError,
    compare_runs,
    headline_metrics,
    render_markdown,
    render_text,
    training_summary,
)

DETECTOR_METRICS = {"mAP50": 0.8123, "mAP50_ci95": [0.78, 0.84], "AP50": {"circle": 0.8}, "ap_convention": "VOC",
                    "mAP50_voc07": 0.8, "mAP50_coco": 0.81, "mAP70": None, "num_images": 6}
KEYPOINT_METRICS = {"pck": {"0.05": 0.5, "0.1": 0.75}, "pck_ci95": {"0.05": [0.4, 0.6]},
                    "pck_swap": {"0.05": 0.55, "0.1": 0.8}, "mean_error_px": 3.14159, "num_images": 6}


def _log(epochs, seconds=2.0, rate=10.0):
    return [{"epoch": e, "lr": 0.01, "train": {"loss_total": 2.0 / e}, "val": {"loss_total": 3.0 / e + (e == 2)},
             "train_time_s": seconds * e, "epoch_time_s": seconds * e + 1, "images_per_s": rate * e}
            for e in range(1, epochs + 1)]


def _run(path, task, cfg, metrics=None, log=None, **meta):
    path.mkdir(parents=True)
    config = {"task": task, "data_root": "/data/shapes", "recipe": "fast", **meta,
              ("detector" if task == "detector" else "keypoints"): to_dict(cfg)}
    (path / "config.json").write_text(json.dumps(config))
    if metrics is not None:
        (path / "metrics.json").write_text(json.dumps(metrics))
    if log is not None:
        (path / "training_log.json").write_text(json.dumps(log))
    return path


@pytest.fixture
def runs(tmp_path):
    base = DetectorConfig()
    fast = _run(tmp_path / "det_a", "detector", base, DETECTOR_METRICS, _log(3))
    slow = _run(tmp_path / "det_b", "detector", replace(base, train=replace(base.train, epochs=7)),
                {**DETECTOR_METRICS, "mAP50": 0.7, "mAP50_ci95": None}, _log(2, seconds=4.0))
    keypoints = _run(tmp_path / "kp", "keypoints", KeypointConfig(), KEYPOINT_METRICS, _log(1),
                     data_root="/data/figures")
    return fast, slow, keypoints


def test_only_differing_fields_and_blank_where_a_metric_does_not_apply(runs):
    comparison = compare_runs(runs)
    assert [r.name for r in comparison.runs] == [str(p) for p in runs]
    config = comparison.rows["config"]
    # two detector runs differ in epochs; across tasks only the fields both have are compared
    assert list(config) == ["task", "data_root", "detector.train.epochs"]
    assert config["detector.train.epochs"] == [DetectorConfig().train.epochs, 7, MISSING]
    assert config["data_root"] == ["/data/shapes", "/data/shapes", "/data/figures"]
    metrics = comparison.rows["metrics"]
    assert list(metrics) == ["mAP50", "mAP50_voc07", "mAP50_coco", "mAP70", "pck@0.05", "pck@0.1", "pck_swap@0.05",
                             "pck_swap@0.1", "mean_error_px"]
    assert metrics["mAP50"][2] is MISSING and metrics["pck@0.05"][0] is MISSING
    assert metrics["mAP50"][0].ci95 == (0.78, 0.84) and metrics["mAP50"][1].ci95 is None
    assert metrics["pck@0.05"][2].ci95 == (0.4, 0.6) and metrics["pck@0.1"][2].ci95 is None
    assert metrics["mAP70"][0].value is None  # undefined, not missing


def test_training_summary_sums_time_and_weights_the_rate():
    log = [{"train_time_s": 1.0, "epoch_time_s": 1.5, "images_per_s": 100.0, "val": {"loss_total": 2.0}},
           {"train_time_s": 3.0, "epoch_time_s": 3.5, "images_per_s": 20.0, "val": {"loss_total": float("nan")}}]
    assert training_summary(log) == {"epochs": 2, "train_time_s": 4.0, "epoch_time_s": 5.0,
                                     "images_per_s": (100 + 60) / 4, "best_val_loss_total": 2.0}
    assert training_summary([]) == {}


def test_text_table(runs):
    text = render_text(compare_runs(runs))
    lines = text.splitlines()
    assert lines[0].split() == ["field", *(str(p) for p in runs)]
    row = {line.split()[0]: line for line in lines[1:] if line.startswith("  ")}
    assert row["mAP50"].split()[1:] == ["0.812", "[0.780,", "0.840]", "0.700"]
    assert row["pck@0.05"].split()[1:] == ["0.500", "[0.400,", "0.600]"]
    assert row["mAP70"].split()[1:] == ["n/a", "n/a"] and row["mean_error_px"].split()[1:] == ["3.14"]
    assert row["train_time_s"].split()[1:] == ["12.0", "12.0", "2.0"]
    assert row["images_per_s"].split()[1:] == [f"{(20 + 80 + 180) / 12:.1f}", f"{(40 + 160) / 12:.1f}", "10.0"]
    assert row["best_val_loss_total"].split()[1:] == ["1.0000", "2.5000", "3.0000"]
    # a column stays aligned whatever the cells hold
    epochs = row["detector.train.epochs"]
    assert epochs[lines[0].index(str(runs[0])):].startswith("12 ") and epochs[lines[0].index(str(runs[1])):] == "7"


def test_markdown_and_json(runs, capsys):
    assert main(["compare", *map(str, runs), "--md"]) == 0
    md = capsys.readouterr().out.splitlines()
    assert md[0] == "| field | " + " | ".join(map(str, runs)) + " |" and md[1] == "|---|---|---|---|"
    assert "| **metrics** | | | |" in md and "| mAP50 | 0.812 [0.780, 0.840] | 0.700 |  |" in md
    assert main(["compare", *map(str, runs), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [r["task"] for r in data["runs"]] == ["detector", "detector", "keypoints"]
    assert data["metrics"]["mAP50"] == [{"value": 0.8123, "ci95": [0.78, 0.84]}, {"value": 0.7, "ci95": None}, None]
    assert data["metrics"]["mean_error_px"][2] == {"value": 3.14159, "ci95": None}  # full precision in JSON
    assert data["config"]["detector.train.epochs"][2] is None and data["training"]["epochs"] == [3, 2, 1]


def test_studies_grids_and_unevaluated_runs(tmp_path):
    study = tmp_path / "study"
    study.mkdir()
    (study / "config.json").write_text(json.dumps({"preset": "smoke", "study": {}}))
    _run(study / "detector", "detector", DetectorConfig(), DETECTOR_METRICS, _log(2))
    _run(study / "keypoints" / "heatmap", "keypoints", KeypointConfig(), KEYPOINT_METRICS, _log(2))
    grid = tmp_path / "grid"
    (grid / "sigma_1").mkdir(parents=True)
    (grid / "baseline_results.json").write_text("{}")
    _run(grid / "sigma_2", "keypoints", replace(KeypointConfig(), sigma=2.5), KEYPOINT_METRICS, _log(2))
    _run(grid / "sigma_3", "keypoints", replace(KeypointConfig(), sigma=3.0), log=_log(2))
    comparison = compare_runs([study, grid])
    assert [r.name for r in comparison.runs] == [f"{study}/detector", f"{study}/keypoints/heatmap",
                                                 str(grid / "sigma_2"), str(grid / "sigma_3")]
    assert comparison.rows["config"]["keypoints.sigma"] == [MISSING, KeypointConfig().sigma, 2.5, 3.0]
    assert comparison.rows["metrics"]["pck@0.1"][3] is MISSING
    assert comparison.notes == [f"{grid / 'sigma_3'}: not evaluated (no metrics.json): "
                                f"loclab eval keypoints --run {grid / 'sigma_3'}"]


def _dir_with(name, text):
    def make(path):
        path.mkdir()
        (path / name).write_text(text)
        return path
    return make


@pytest.mark.parametrize("make, error, message", [
    (lambda p: p, NotARunError, "no such file or directory"),
    (lambda p: _dir_with("metrics.json", "{}")(p) / "metrics.json", NotARunError, "is a file; give the run"),
    (_dir_with("notes.txt", ""), NotARunError, "not a loclab run, study or ablation grid"),
    (_dir_with("config.json", '{"task": "segmentation"}'), NotARunError, "not a loclab run"),
    (_dir_with("config.json", '{"study": {}}'), NotARunError, "a study without a trained run"),
    (_dir_with("anchor_ablation.json", "{}"), NotARunError, "an ablation grid without a trained trial"),
    (_dir_with("config.json", "{"), DataError, "malformed JSON"),
])
def test_paths_that_are_not_runs(runs, tmp_path, capsys, make, error, message):
    bad = make(tmp_path / "bad")
    with pytest.raises(error, match=message):
        compare_runs([runs[0], bad])
    assert main(["compare", str(runs[0]), str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"loclab: error: {bad}") and message in err


def test_markdown_escapes_pipes(tmp_path):
    run = _run(tmp_path / "a|b", "detector", DetectorConfig(), DETECTOR_METRICS, _log(1))
    assert "| field | a\\|b |" in render_markdown(compare_runs([run])).replace(str(tmp_path) + "/", "")


def test_headline_metrics_and_their_intervals():
    metrics = {"mAP50": 0.5, "mAP50_ci95": [float("nan"), float("nan")], "mAP50_95": 0.3,
               "mAP50_95_ci95": {"low": 0.2, "high": 0.4}, "AP50": {"a": 0.5}, "iou_threshold": 0.5,
               "pck": {"0.1": float("nan")}, "mean_error_px_swap": None}
    assert headline_metrics(metrics) == {"mAP50": Metric(0.5), "mAP50_95": Metric(0.3, (0.2, 0.4)),
                                         "pck@0.1": Metric(None), "mean_error_px_swap": Metric(None)}
