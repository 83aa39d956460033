"""Keypoint evaluation: metrics from arrays, prediction-file scoring and its errors, a tiny run end to end."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from loclab.data.errors import DataError
from loclab.evaluation.keypoints import (
    evaluate_keypoint_run,
    keypoint_metrics,
    prediction_records,
    score_keypoint_files,
    summary_line,
    threshold_key,
)
from loclab.metrics.pck import KEYPOINT_NAMES, swap_hands

KEYS = ["0.05", "0.1", "0.15", "0.2"]
NAMES = list(KEYPOINT_NAMES)
# Two figures with the hands far apart (|hand_a - hand_b| = 30 px, bbox diagonal 50 px: ratio 0.6).
GT = np.array([
    [[64, 44], [49, 70], [79, 70], [49, 84], [79, 84]],
    [[40, 30], [25, 56], [55, 56], [25, 70], [55, 70]],
], dtype=float)


def test_perfect_predictions_score_one():
    metrics = keypoint_metrics(GT, GT)
    assert list(metrics["pck"]) == KEYS
    assert metrics["pck"] == dict.fromkeys(KEYS, 1.0)
    assert metrics["pck_swap"] == dict.fromkeys(KEYS, 1.0)
    assert metrics["per_keypoint"] == {name: dict.fromkeys(KEYS, 1.0) for name in NAMES}
    assert metrics["mean_error_px"] == 0.0
    assert metrics["num_images"] == 2
    assert metrics["normalize_by"] == "bbox"
    assert metrics["pck_rule"] == ("correct when distance / norm <= threshold; bbox norm = diagonal of the box "
                                   "around the image's ground-truth keypoints")
    # hands 30 px apart, norm 50: no point is within 0.2 x 50 px of both hands, so hedging cannot help and the
    # ceiling is 4/5 + 0, as is a crossed guess
    assert metrics["ceiling"] == pytest.approx(dict.fromkeys(KEYS, 0.8))
    assert metrics["guessed_labels"] == pytest.approx(dict.fromkeys(KEYS, 0.8))
    json.dumps(metrics)  # JSON-ready


def test_swapped_hands_drop_standard_pck_but_not_swap_aware():
    metrics = keypoint_metrics(swap_hands(GT).numpy(), GT)
    assert metrics["pck"] == pytest.approx(dict.fromkeys(KEYS, 0.6))
    assert metrics["pck_swap"] == dict.fromkeys(KEYS, 1.0)
    assert metrics["per_keypoint"]["left_hand"] == dict.fromkeys(KEYS, 0.0)
    assert metrics["per_keypoint"]["head"] == dict.fromkeys(KEYS, 1.0)
    assert metrics["per_keypoint_swap"]["left_hand"] == dict.fromkeys(KEYS, 1.0)
    assert metrics["mean_error_px"] == pytest.approx(2 * 30 / 5)
    assert metrics["mean_error_px_swap"] == 0.0


def test_threshold_keys_and_torso_rule():
    assert [threshold_key(t) for t in (0.05, 0.10, 0.15, 0.20)] == KEYS
    metrics = keypoint_metrics(GT + 1.0, GT, normalize_by="torso")
    assert metrics["normalize_by"] == "torso" and "torso" in metrics["pck_rule"]
    assert "PCK" in summary_line(metrics)


def test_other_skeletons_have_no_hand_metrics():
    gt = GT[:, :3]
    metrics = keypoint_metrics(gt, gt, keypoint_names=["a", "b", "c"])
    assert metrics["pck_swap"] is None and metrics["ceiling"] is None
    assert list(metrics["per_keypoint"]) == ["a", "b", "c"]


# ------------------------------------------------------------------------------------------------ file scoring


def _reference_file(tmp_path: Path) -> Path:
    images = [{"id": 10 + i, "file_name": f"{10 + i:06d}.png", "keypoints": GT[i].tolist()} for i in range(2)]
    path = tmp_path / "val_annotations.json"
    path.write_text(json.dumps({"images": images, "keypoint_names": NAMES, "num_keypoints": 5}))
    return path


def _predictions_file(tmp_path: Path, records) -> Path:
    path = tmp_path / "predictions.json"
    path.write_text(json.dumps(records))
    return path


def test_score_files_round_trip(tmp_path):
    gt = _reference_file(tmp_path)
    preds = GT.copy()
    preds[1] = swap_hands(GT[1:]).numpy()[0]
    records = prediction_records([11, 10], preds[::-1].copy())  # any record order
    metrics = score_keypoint_files(gt, _predictions_file(tmp_path, records))
    assert metrics == {**keypoint_metrics(preds, GT, keypoint_names=NAMES),
                       "gt_file": str(gt), "pred_file": str(tmp_path / "predictions.json"), "gt_format": "reference"}
    assert metrics["pck"]["0.1"] == pytest.approx(0.8)
    assert metrics["pck_swap"]["0.1"] == 1.0


GOOD = {"image_id": 10, "keypoints": GT[0].tolist()}
OTHER = {"image_id": 11, "keypoints": GT[1].tolist()}


@pytest.mark.parametrize("records, where, message", [
    ({"image_id": 10}, None, "top level is a JSON"),
    ([GOOD, "oops"], "record [1]", "expected an object"),
    ([GOOD, {"image_id": 11}], "record [1]", "missing key(s) 'keypoints'"),
    ([{"keypoints": []}, OTHER], "record [0]", "missing key(s) 'image_id'"),
    ([GOOD, {"image_id": "11", "keypoints": GT[1].tolist()}], "record [1]", "expected an integer"),
    ([GOOD, {"image_id": 11, "keypoints": GT[1].tolist()[:4]}], "record [1] (image_id 11)", "has 4 keypoints"),
    ([GOOD, {"image_id": 11, "keypoints": [[1, 2]] * 4 + [["x", 2]]}], "record [1] (image_id 11)",
     "keypoint 4 (right_foot)"),
    ([GOOD, {"image_id": 11, "keypoints": [[1, 2]] * 4 + [[1, 2, 3]]}], "record [1]", "two finite numbers"),
    ([GOOD, {"image_id": 99, "keypoints": GT[1].tolist()}], "record [1] (image_id 99)", "not an image of"),
    ([GOOD, OTHER, GOOD], "record [2] (image_id 10)", "duplicate image_id, already predicted by record [0]"),
    ([OTHER], None, "1 of 2 images"),
])
def test_prediction_file_errors_name_file_and_record(tmp_path, records, where, message):
    gt = _reference_file(tmp_path)
    pred = _predictions_file(tmp_path, records)
    with pytest.raises(DataError) as info:
        score_keypoint_files(gt, pred)
    text = str(info.value)
    assert str(pred) in text and message in text
    if where is not None:
        assert where in text
    if message == "1 of 2 images":
        assert "image ids 10" in text


def test_malformed_prediction_json_names_the_file(tmp_path):
    pred = tmp_path / "predictions.json"
    pred.write_text("[{")
    with pytest.raises(DataError, match="malformed JSON"):
        score_keypoint_files(_reference_file(tmp_path), pred)
    with pytest.raises(DataError, match="does not exist"):
        score_keypoint_files(_reference_file(tmp_path), tmp_path / "missing.json")


def test_coco_ground_truth_is_read(tmp_path):
    flat = [[v for x, y in fig for v in (x, y, 2)] for fig in GT.tolist()]
    coco = {"images": [{"id": 10 + i, "file_name": f"{i}.png", "width": 128, "height": 128} for i in range(2)],
            "annotations": [{"id": i, "image_id": 10 + i, "category_id": 1, "keypoints": flat[i]} for i in range(2)],
            "categories": [{"id": 1, "name": "person", "keypoints": NAMES}]}
    gt = tmp_path / "coco.json"
    gt.write_text(json.dumps(coco))
    metrics = score_keypoint_files(gt, _predictions_file(tmp_path, prediction_records([10, 11], GT)))
    assert metrics["gt_format"] == "coco" and metrics["pck"] == dict.fromkeys(KEYS, 1.0)


# ------------------------------------------------------------------------------------------------- a tiny run


def test_evaluate_run_writes_metrics_predictions_and_figures(tiny_data_root, tmp_path):
    import torch

    from loclab.config import KeypointConfig, TrainConfig
    from loclab.engine.tasks import train_keypoints_on_root

    # one thread through the config: the run sets it, and it is restored afterwards
    previous = torch.get_num_threads()
    train = replace(TrainConfig(), epochs=1, batch_size=6, precision="fp32", num_threads=1)
    cfg = KeypointConfig(model="heatmap", heatmap_size=32, train=train, num_snapshot_images=2)
    run = tmp_path / "run"
    try:
        train_keypoints_on_root(cfg, tiny_data_root, run, progress=False)
    finally:
        torch.set_num_threads(previous)

    metrics = evaluate_keypoint_run(run)
    from loclab.report.figures import write_keypoint_run_figures

    write_keypoint_run_figures(run)
    saved = json.loads((run / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(metrics))
    for key in ("pck", "pck_swap", "pck_argmax", "pck_swap_argmax", "ceiling", "per_keypoint"):
        assert list(saved[key]) == KEYS or key == "per_keypoint"
    assert saved["num_images"] == 6 and saved["model"] == "heatmap" and saved["decoding"] == "subpixel"
    rescored = score_keypoint_files(tiny_data_root / "keypoints" / "val_annotations.json", run / "predictions.json")
    assert rescored["pck"] == metrics["pck"]
    assert (run / "per_image.npz").is_file() and list(saved["pck_ci95"]) == KEYS
    assert rescored["pck_ci95"] == saved["pck_ci95"] and rescored["pck_swap_ci95"] == saved["pck_swap_ci95"]
    for name in ("loss_curve.png", "heatmaps_across_epochs.png", "predictions.png"):
        assert (run / "visualizations" / name).stat().st_size > 0


# ------------------------------------------------------------------------------------------------------ charts


def _is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000


def test_charts_are_written(tmp_path):
    from loclab.viz.keypoint_plots import (
        plot_ablation,
        plot_heatmaps_across_epochs,
        plot_loss_curve,
        plot_pck_curves,
        plot_per_keypoint,
    )

    heatmap = keypoint_metrics(GT + 1.0, GT)
    regression = keypoint_metrics(swap_hands(GT).numpy() + 2.0, GT)
    curves = {"heatmap": heatmap["pck"], "heatmap (swap-aware)": heatmap["pck_swap"],
              "regression": regression["pck"], "regression (swap-aware)": regression["pck_swap"]}
    row = {"pck": heatmap["pck"], "pck_swap": heatmap["pck_swap"], "val_mse": 1e-3}
    ablation = {"factors": {
        "heatmap_size": {"rows": [{**row, "setting": f"{s}x{s}"} for s in (32, 64, 128)], "best": "64x64"},
        "sigma": {"rows": [{**row, "setting": f"{s}"} for s in (1, 2, 3, 4)], "best": "2"},
        "skip": {"rows": [{**row, "setting": "with skip"}, {**row, "setting": "without skip", "val_mse": None}],
                 "best": "with skip"},
    }}
    log = [{"epoch": e, "lr": 1e-3 / e, "train": {"loss_total": 1.0 / e}, "val": {"loss_total": 1.2 / e}}
           for e in (1, 2, 3)]
    rng = np.random.default_rng(0)
    npz = tmp_path / "heatmap_snapshots.npz"
    np.savez_compressed(npz, image_ids=np.array([7, 8]),
                        **{f"epoch_{e:03d}": rng.random((2, 5, 16, 16)).astype(np.float16) for e in (1, 3)})
    images = np.full((2, 1, 128, 128), 255, dtype=np.uint8)
    paths = [
        plot_pck_curves(curves, tmp_path / "pck.png", ceiling=heatmap["ceiling"]),
        plot_per_keypoint({"heatmap": heatmap["per_keypoint"], "regression": regression["per_keypoint"]},
                          tmp_path / "per_kp.png"),
        plot_ablation(ablation, tmp_path / "ablation.png"),
        plot_loss_curve(log, tmp_path / "loss.png"),
        plot_heatmaps_across_epochs(npz, images, tmp_path / "heatmaps.png"),
        plot_heatmaps_across_epochs(npz, None, tmp_path / "heatmaps_alone.png"),
    ]
    assert all(_is_png(p) for p in paths)
