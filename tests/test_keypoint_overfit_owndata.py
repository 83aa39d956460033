"""End to end on a user's own data: a COCO keypoints folder with K = 7, unlabelled points, two instances per
non-square RGB image. A heatmap model memorises the training images, and the whole top-down chain (crop ->
model -> inverse crop -> PCK in original pixels, prediction files, ``loclab predict`` with detector boxes) agrees.
"""

from __future__ import annotations

import json

import pytest
import torch

from keypoint_writers import NAMES, PAIRS, make_keypoint_dataset, write_coco_keypoints
from loclab.config import KeypointConfig, OptimConfig, ScheduleConfig, TrainConfig
from loclab.engine.keypoints import load_keypoint_model, make_dataset, predict_dataset
from loclab.engine.tasks import keypoint_split, train_keypoints_on_root
from loclab.evaluation.keypoint_predictions import coco_result_records
from loclab.evaluation.keypoints import evaluate_keypoint_run, keypoint_metrics, score_keypoint_files
from loclab.predict import predict_keypoint_files

pytestmark = pytest.mark.slow


def test_heatmap_model_memorises_own_coco_data(tmp_path):
    root = tmp_path / "data"
    files = write_coco_keypoints(make_keypoint_dataset(seed=7, n_train=8, n_val=2), root)
    train = TrainConfig(steps=80, batch_size=8, optim=OptimConfig(name="adamw", lr=3e-3, weight_decay=0.0),
                        schedule=ScheduleConfig(name="cosine", warmup_epochs=2.0), precision="fp32", hflip=False,
                        grad_clip=10.0, num_threads=2)
    # boxes hug the animals' bands, and an input of their shape keeps the neighbour mostly out of the crop
    cfg = KeypointConfig(model="heatmap", loss="spatial_ce", input_width=48, input_height=80, box_padding=1.0,
                         train=train, num_snapshot_images=2)
    previous = torch.get_num_threads()
    try:
        train_keypoints_on_root(cfg, root, tmp_path / "run", progress=False)
    finally:
        torch.set_num_threads(previous)

    model, cfg = load_keypoint_model(tmp_path / "run" / "heatmap_model.pth")
    assert cfg.keypoint_names == NAMES and cfg.symmetric_pairs == PAIRS and cfg.in_channels == 3
    split = keypoint_split(root, "train")
    assert split.num_instances == 16 and not bool(split.visible.all())
    dataset = make_dataset(split, cfg)
    preds = predict_dataset(model, cfg, dataset)  # original image pixels, through each inverse crop
    metrics = keypoint_metrics(preds, split.keypoints.double(), keypoint_names=NAMES, visible=split.visible,
                               symmetric_pairs=split.symmetric_pairs, identical_pairs=False, data_format="coco")
    assert metrics["pck"]["0.1"] >= 0.9, metrics["pck"]

    # the same numbers from a COCO results file, matched to the instances by box centre
    results = tmp_path / "results.json"
    ids = [split.images[int(i)].id for i in split.instance_image]
    results.write_text(json.dumps(coco_result_records(ids, preds)))
    scored = score_keypoint_files(files["train"], results)
    assert scored["pck"] == metrics["pck"] and scored["unmatched_instances"] == 0

    # detector, then pose: `loclab predict keypoints --boxes` on the original file finds the same keypoints
    first = split.images[0]
    rows = (split.instance_image == 0).nonzero().flatten().tolist()
    detections = tmp_path / "detections.json"
    detections.write_text(json.dumps({"images": [{"file": str(first.path), "detections": [
        {"bbox": split.boxes[r].tolist(), "score": 0.9 - 0.1 * j} for j, r in enumerate(rows)] +
        [{"bbox": [0, 0, 5, 5], "score": 0.2}]}]}))  # below the threshold: not an instance
    out = predict_keypoint_files(tmp_path / "run" / "heatmap_model.pth", [first.path], tmp_path / "pred",
                                 boxes=detections)
    found = json.loads(out.read_text())
    assert found["keypoint_names"] == list(NAMES)
    instances = found["images"][0]["instances"]
    assert len(instances) == len(rows) and (tmp_path / "pred" / f"{first.path.stem}_keypoints.png").is_file()
    for instance, r in zip(instances, rows):
        located = torch.tensor([instance["keypoints"][name] for name in NAMES], dtype=torch.float64)
        assert torch.allclose(located, preds[r].double(), atol=0.02)
    whole = predict_keypoint_files(tmp_path / "run" / "heatmap_model.pth", [first.path], tmp_path / "whole")
    assert len(json.loads(whole.read_text())["images"][0]["instances"]) == 1

    # the run's own evaluation (val split) writes COCO results and figures for instances of any size
    evaluated = evaluate_keypoint_run(tmp_path / "run")
    assert evaluated["num_instances"] == 4 and evaluated["ceiling"] is None and evaluated["pck_swap"] is not None
    written = json.loads((tmp_path / "run" / "predictions.json").read_text())
    assert len(written) == 4 and len(written[0]["keypoints"]) == 21
    from loclab.report.figures import write_keypoint_run_figures

    names = {p.name for p in write_keypoint_run_figures(tmp_path / "run")}
    assert {"loss_curve.png", "heatmaps_across_epochs.png", "predictions.png"} <= names
