"""Scoring predictions on own data: COCO keypoint results with several instances per image, matching by box centre,
unlabelled keypoints, every symmetric pair swap-aware, pair norms, and why there is no ceiling."""

from __future__ import annotations

import json
import math

import pytest
import torch

from keypoint_writers import make_keypoint_dataset, write_coco_keypoints
from loclab.data.errors import DataError
from loclab.data.formats_keypoints import load_keypoint_annotations
from loclab.errors import ConfigError
from loclab.evaluation.keypoint_predictions import (
    coco_result_records,
    greedy_centre_matching,
    match_keypoint_predictions,
    prediction_records,
)
from loclab.evaluation.keypoints import score_keypoint_files


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    """``(annotation file, split)``: 6 images, 2 instances each, K = 7 with unlabelled points."""
    root = tmp_path_factory.mktemp("coco")
    files = write_coco_keypoints(make_keypoint_dataset(seed=2, n_train=1, n_val=6), root)
    return files["val"], load_keypoint_annotations(files["val"], check_images=False)


def _write(tmp_path, records, name="results.json"):
    path = tmp_path / name
    path.write_text(json.dumps(records))
    return path


def _ids(split):
    return [split.images[int(i)].id for i in split.instance_image]


def test_perfect_results_in_any_order_with_extra_detections(coco, tmp_path):
    gt_file, split = coco
    records = coco_result_records(_ids(split), split.keypoints)
    records = records[::-1] + [{"image_id": split.images[0].id, "category_id": 1, "score": 0.1,
                                "keypoints": [500.0, 500.0, 1] * 7}]  # a false positive far away
    metrics = score_keypoint_files(gt_file, _write(tmp_path, records))
    assert metrics["pck"] == dict.fromkeys(metrics["thresholds"], 1.0)
    assert metrics["pred_format"] == "coco_results" and metrics["unmatched_predictions"] == 1
    assert metrics["unmatched_instances"] == 0 and metrics["num_instances"] == 12 and metrics["num_images"] == 6
    assert metrics["mean_error_px"] == 0.0
    assert metrics["swap_pairs"] == [["left_ear", "right_ear"], ["l_paw", "r_paw"]]
    assert metrics["ceiling"] is None and "coco data" in metrics["ceiling_note"]


def test_a_missed_instance_counts_as_wrong(coco, tmp_path):
    gt_file, split = coco
    records = coco_result_records(_ids(split), split.keypoints)
    del records[3]
    metrics = score_keypoint_files(gt_file, _write(tmp_path, records))
    labelled = int(split.visible.sum())
    assert metrics["unmatched_instances"] == 1
    assert metrics["pck"]["0.1"] == pytest.approx((labelled - int(split.visible[3].sum())) / labelled)
    assert metrics["mean_error_px"] == 0.0  # the missed instance has no distance


def test_each_pair_is_swap_aware(coco, tmp_path):
    gt_file, split = coco
    crossed = split.keypoints[:, [0, 2, 1, 4, 3, 5, 6]]
    metrics = score_keypoint_files(gt_file, _write(tmp_path, coco_result_records(_ids(split), crossed)))
    assert metrics["pck"]["0.05"] < 1.0
    assert metrics["pck_swap"] == dict.fromkeys(metrics["thresholds"], 1.0)
    assert metrics["mean_error_px_swap"] == 0.0


def test_unlabelled_points_are_not_scored(coco, tmp_path):
    gt_file, split = coco
    predicted = split.keypoints.clone()
    predicted[~split.visible] = 40.0  # anything at all where nothing is labelled
    metrics = score_keypoint_files(gt_file, _write(tmp_path, coco_result_records(_ids(split), predicted)))
    assert metrics["pck"] == dict.fromkeys(metrics["thresholds"], 1.0)
    never = [name for k, name in enumerate(split.keypoint_names) if not bool(split.visible[:, k].any())]
    assert all(metrics["per_keypoint"][name]["0.1"] is None for name in never)


def test_pair_norm(coco, tmp_path):
    gt_file, split = coco
    shifted = split.keypoints + torch.tensor([3.0, 0.0])
    path = _write(tmp_path, coco_result_records(_ids(split), shifted))
    metrics = score_keypoint_files(gt_file, path, normalize_by="pair:nose,tail_tip")
    assert "distance between nose and tail_tip" in metrics["pck_rule"]
    a, b = split.keypoint_names.index("nose"), split.keypoint_names.index("tail_tip")
    both = split.visible[:, a] & split.visible[:, b]
    norms = torch.linalg.vector_norm(split.keypoints[:, a] - split.keypoints[:, b], dim=-1)
    scored = split.visible & both[:, None]
    expected = float((scored & (3.0 / norms[:, None] <= 0.1)).sum()) / float(scored.sum())
    assert metrics["pck"]["0.1"] == pytest.approx(expected)
    with pytest.raises(ConfigError, match="no keypoint named tail"):
        score_keypoint_files(gt_file, path, normalize_by="pair:nose,tail")


def test_loclab_format_on_images_with_two_instances(coco, tmp_path):
    """One prediction per image goes to the instance whose box centre is nearest; the other is missed."""
    gt_file, split = coco
    firsts = [int((split.instance_image == i).nonzero()[0]) for i in range(len(split))]
    path = _write(tmp_path, prediction_records([r.id for r in split.images], split.keypoints[firsts]))
    matched = match_keypoint_predictions(path, split)
    assert matched.format == "loclab" and matched.unmatched_instances == len(split)
    assert torch.equal(matched.keypoints[firsts], split.keypoints[firsts].double())
    seconds = [i for i in range(split.num_instances) if i not in firsts]
    assert matched.keypoints[seconds].isnan().all()
    assert "pred_format" not in score_keypoint_files(gt_file, path)


@pytest.mark.parametrize("record, message", [
    ({"image_id": 0, "keypoints": [1.0, 2.0, 1] * 6}, "has 18 values, expected 21"),
    ({"image_id": 0, "keypoints": [1.0, 2.0, 1] * 6 + [1.0, "x", 1]}, "keypoint 6 (tail_tip)"),
    ({"image_id": 0, "keypoints": [1.0, 2.0, 1] * 7, "score": "high"}, "\"score\" is 'high'"),
])
def test_bad_coco_results_name_the_record(coco, tmp_path, record, message):
    gt_file, split = coco
    record = {**record, "image_id": split.images[0].id}
    good = coco_result_records(_ids(split)[:1], split.keypoints[:1])
    path = _write(tmp_path, good + [record])
    with pytest.raises(DataError) as info:
        score_keypoint_files(gt_file, path)
    assert str(path) in str(info.value) and "record [1]" in str(info.value) and message in str(info.value)


def _slow_greedy(gt, pred):
    pairs, free_g, free_p = [], set(range(len(gt))), set(range(len(pred)))
    while free_g and free_p:
        g, p = min(((g, p) for g in sorted(free_g) for p in sorted(free_p)),
                   key=lambda gp: (math.dist(gt[gp[0]], pred[gp[1]]), gp[0], gp[1]))
        pairs.append((g, p))
        free_g.discard(g)
        free_p.discard(p)
    return pairs


def test_greedy_centre_matching_matches_a_slow_loop():
    g = torch.Generator().manual_seed(0)
    for n, p in [(0, 3), (3, 0), (1, 1), (3, 5), (5, 2), (6, 6)]:
        gt = (torch.rand(n, 2, generator=g) * 10).round().double()  # rounded: ties happen
        pred = (torch.rand(p, 2, generator=g) * 10).round().double()
        assert greedy_centre_matching(gt, pred) == _slow_greedy(gt.tolist(), pred.tolist())


# ------------------------------------------------------------------------------------------- command line, config


def test_cli_scores_coco_results_with_a_pair_norm(coco, tmp_path, capsys):
    from loclab.cli import main

    gt_file, split = coco
    path = _write(tmp_path, coco_result_records(_ids(split), split.keypoints))
    assert main(["eval", "keypoints", "--gt", str(gt_file), "--pred", str(path), "--normalize", "pair:nose,tail_tip",
                 "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["normalize_by"] == "pair:nose,tail_tip" and printed["pck"]["0.1"] == 1.0
    assert main(["eval", "keypoints", "--gt", str(gt_file), "--pred", str(path), "--normalize", "pair:nose"]) == 2
    assert "pair:NAME_A,NAME_B" in capsys.readouterr().err


def test_cli_keypoint_configs_per_layout():
    from loclab.cli import _keypoint_config
    from loclab.cli_parser import build_parser

    def config(*extra, layout="reference"):
        args = build_parser().parse_args(["train", "keypoints", "--data-root", "d", "--out", "o", *extra])
        return _keypoint_config(args, layout)

    reference = config()
    assert reference.input_size == (128, 128) and not reference.flip and not reference.train.augment.enabled
    own = config(layout="coco")
    assert own.input_size == (192, 192) and own.heatmap_grid == (96, 96) and own.flip
    assert own.train.augment.scale == (0.75, 1.25) and own.train.augment.rotation == 30 and own.train.steps > 0
    sized = config("--input-size", "256x192", "--epochs", "3", layout="deeplabcut")
    assert sized.input_size == (256, 192) and sized.heatmap_grid == (128, 96) and sized.train.steps == 0
    assert config("--input-size", "96").input_size == (96, 96)
    with pytest.raises(SystemExit):
        config("--input-size", "wide")


def test_old_configs_load_and_trials_compare_without_data_fields():
    from loclab.config import KeypointConfig, from_dict, to_dict, without_data_fields

    old = {"model": "heatmap", "image_size": 128, "num_keypoints": 5, "heatmap_size": 64, "sigma": 2.0, "skip": True,
           "loss": "mse", "hand_invariant": False, "heatmap_snapshot_epochs": [], "num_snapshot_images": 4}
    cfg = from_dict(KeypointConfig, old)
    assert cfg == KeypointConfig() and cfg.input_size == (128, 128) and cfg.heatmap_grid == (64, 64)
    filled = KeypointConfig(num_keypoints=7, keypoint_names=tuple("abcdefg"), symmetric_pairs=((1, 2),),
                            in_channels=3)
    assert from_dict(KeypointConfig, to_dict(filled)) == filled
    assert without_data_fields(filled) == KeypointConfig()
    with pytest.raises(ConfigError, match="multiple of 16"):
        KeypointConfig(input_width=100)
    with pytest.raises(ConfigError, match="image_size / heatmap_size"):
        KeypointConfig(heatmap_size=48)
