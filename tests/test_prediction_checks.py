"""Scoring other tools' prediction files: COCO results accepted as they come, the usual mistakes caught with the fix
in the message (xywh boxes without --bbox-format, keypoints without v, [x, y, v] in loclab's format, mixed formats),
warnings (exit code 0) on empty and normalised-looking files, and printed numbers rounded while stored ones are not."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch

from loclab.cli import _print_metrics, main
from loclab.data.errors import DataError
from loclab.data.formats_keypoints import load_keypoint_annotations
from loclab.evaluation.detection import score_detection_files
from loclab.evaluation.keypoint_predictions import coco_result_records, prediction_records
from loclab.evaluation.keypoints import score_keypoint_files
from loclab.evaluation.prediction_checks import PredictionWarning, box_readings
from loclab.report.printing import clean_floats

# ------------------------------------------------------------------------------------------------- detections

# three 200x150 images; boxes away from the top-left corner, so that xywh read as xyxy has x2 < x1
BOXES = {1: [[60, 40, 100, 90], [120, 70, 180, 140]], 2: [[50, 30, 80, 60]], 3: [[90, 80, 150, 120]]}


@pytest.fixture
def gt(tmp_path):
    images = [{"id": i, "file_name": f"{i}.png", "width": 200, "height": 150} for i in BOXES]
    annotations = [{"id": n, "image_id": i, "category_id": 7, "bbox": box, "area": (box[2] - box[0]) * (box[3] - box[1])}
                   for n, (i, box) in enumerate((i, b) for i, boxes in BOXES.items() for b in boxes)]
    path = tmp_path / "gt.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": [{"id": 7, "name": "thing"}]}))
    return path


def _detections(xywh=False, scale=1.0):
    out = []
    for image_id, boxes in BOXES.items():
        for k, (x1, y1, x2, y2) in enumerate(boxes):
            box = [x1, y1, x2 - x1, y2 - y1] if xywh else [x1, y1, x2, y2]
            out.append({"image_id": image_id, "category_id": 7, "bbox": [v * scale for v in box], "score": 0.9 - k / 10})
    return out


def _write(tmp_path, records, name="pred.json"):
    path = tmp_path / name
    path.write_text(json.dumps(records))
    return path


def _quiet(func, *args, **kwargs):
    """``func(...)`` failing the test on any PredictionWarning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", PredictionWarning)
        return func(*args, **kwargs)


def test_coco_results_boxes_score_like_corner_boxes(gt, tmp_path):
    corners = _quiet(score_detection_files, gt, _write(tmp_path, _detections(), "xyxy.json"))
    coco = _quiet(score_detection_files, gt, _write(tmp_path, _detections(xywh=True)), bbox_format="xywh")
    assert corners["mAP50"] == coco["mAP50"] == 1.0 and coco["num_detections"] == 4


def test_xywh_without_the_flag_says_to_pass_it(gt, tmp_path):
    path = _write(tmp_path, _detections(xywh=True))
    with pytest.raises(DataError) as info:
        score_detection_files(gt, path)
    text = str(info.value)
    assert str(path) in text and "predictions[0]" in text and "negative width or height" in text
    assert "4 of its 4 boxes fit their images as xywh, 0 as xyxy. Pass --bbox-format xywh" in text


def test_a_bad_corner_box_gets_no_format_hint(gt, tmp_path):
    records = _detections()
    records[2]["bbox"] = [90, 10, 60, 40]  # one broken box in a file of corner boxes
    with pytest.raises(DataError, match=r"predictions\[2\]: bbox .* negative width or height\.$") as info:
        score_detection_files(gt, _write(tmp_path, records))
    assert "--bbox-format" not in str(info.value)


def test_corner_boxes_read_as_xywh_warn(gt, tmp_path):
    with pytest.warns(PredictionWarning, match=r"only 2 of 4 boxes fit .* leave out --bbox-format xywh"):
        score_detection_files(gt, _write(tmp_path, _detections()), bbox_format="xywh")


def test_box_readings_count_each_reading():
    sizes = {1: (100, 100)}
    records = [{"image_id": 1, "bbox": [10, 10, 30, 30]},  # both
               {"image_id": 1, "bbox": [50, 50, 20, 20]},  # xywh only
               {"image_id": 1, "bbox": [60, 60, 99, 100.5]},  # xyxy only (overhang within 1 %)
               {"image_id": 2, "bbox": [0, 0, 1, 1]}, {"image_id": 1, "bbox": [0, 0, "1", 1]}]  # not counted
    assert box_readings(records, sizes) == (3, 2, 2)


def test_empty_detections_warn_and_score_zero(gt, tmp_path, capsys):
    path = _write(tmp_path, [])
    with pytest.warns(PredictionWarning, match="holds no detections"):
        assert score_detection_files(gt, path)["mAP50"] == 0.0
    assert main(["eval", "detections", "--gt", str(gt), "--predictions", str(path)]) == 0
    out = capsys.readouterr()
    assert out.err.startswith(f"loclab: warning: {path}: holds no detections") and "mAP@0.5" in out.out


def test_normalised_boxes_warn(gt, tmp_path, capsys):
    path = _write(tmp_path, [{**r, "bbox": [r["bbox"][0] / 200, r["bbox"][1] / 150, r["bbox"][2] / 200,
                                            r["bbox"][3] / 150]} for r in _detections()])
    with pytest.warns(PredictionWarning, match=r"within \[0, 1\] while the images are up to 200x150 px"):
        score_detection_files(gt, path)
    assert main(["eval", "detections", "--gt", str(gt), "--pred", str(path)]) == 0
    assert "loclab: warning:" in capsys.readouterr().err


# -------------------------------------------------------------------------------------------------- keypoints


@pytest.fixture
def figures(tiny_data_root):
    """The reference stick figures (one two-handed figure per 128x128 image): (annotation file, split)."""
    path = tiny_data_root / "keypoints" / "val_annotations.json"
    return path, load_keypoint_annotations(path, check_images=False)


def _moved(split, seed=0):
    g = torch.Generator().manual_seed(seed)
    return split.keypoints.double() + torch.randn(split.keypoints.shape, generator=g, dtype=torch.float64) * 3


def test_coco_keypoint_results_on_the_reference_figures_score_as_loclab_records(figures, tmp_path):
    gt_file, split = figures
    predicted = _moved(split)
    ids = [r.id for r in split.images]
    loclab = _quiet(score_keypoint_files, gt_file, _write(tmp_path, prediction_records(ids, predicted), "l.json"))
    coco_records = coco_result_records(ids, predicted, scores=[0.9] * len(ids))
    far = {"image_id": ids[0], "category_id": 1, "score": 0.1, "keypoints": [500.0, 500.0, 2] * 5}  # a second instance
    coco = _quiet(score_keypoint_files, gt_file, _write(tmp_path, coco_records[::-1] + [far], "c.json"))
    for key in ("pck", "pck_swap", "per_keypoint", "mean_error_px", "mean_error_px_swap", "ceiling"):
        assert coco[key] == loclab[key], key
    assert coco["pred_format"] == "coco_results" and coco["unmatched_predictions"] == 1
    assert 0 < coco["pck"]["0.05"] < coco["pck"]["0.2"] <= 1


def _error(gt_file, tmp_path, records):
    path = _write(tmp_path, records)
    with pytest.raises(DataError) as info:
        score_keypoint_files(gt_file, path)
    text = str(info.value)
    assert str(path) in text
    return text


def test_x_y_without_visibility_says_to_add_it(figures, tmp_path):
    gt_file, split = figures
    flat = [{"image_id": r.id, "keypoints": [v for x, y in split.keypoints[i].tolist() for v in (x, y)]}
            for i, r in enumerate(split.images)]
    text = _error(gt_file, tmp_path, flat)
    assert "record [0]" in text and "has 10 values, expected 15 numbers [x, y, v] x 5" in text
    assert "10 = 5 x 2 looks like x, y without the visibility v: add v after each pair" in text


def test_x_y_v_triples_in_loclab_format_say_the_fix(figures, tmp_path):
    gt_file, split = figures
    triples = [{"image_id": r.id, "keypoints": [[x, y, 2] for x, y in split.keypoints[i].tolist()]}
               for i, r in enumerate(split.images)]
    text = _error(gt_file, tmp_path, triples)
    assert "keypoint 0 (head)" in text and "It looks like [x, y, v]: give [x, y] pairs, or write COCO keypoint" in text


def test_mixed_formats_say_to_use_one(figures, tmp_path):
    gt_file, split = figures
    ids = [r.id for r in split.images]
    records = prediction_records(ids, split.keypoints)
    records[1] = coco_result_records(ids[1:2], split.keypoints[1:2])[0]
    text = _error(gt_file, tmp_path, records)
    assert "record [1]" in text and "flat list of 15 numbers (COCO keypoint results" in text
    assert "first record [0] is in loclab's format" in text and "one of the two formats" in text
    records = coco_result_records(ids, split.keypoints)
    records[2] = prediction_records(ids[2:3], split.keypoints[2:3])[0]
    text = _error(gt_file, tmp_path, records)
    assert "record [2]" in text and "holds lists (loclab's format" in text


def test_an_empty_first_record_does_not_decide_the_format(figures, tmp_path):
    gt_file, split = figures
    ids = [r.id for r in split.images]
    text = _error(gt_file, tmp_path, [{"image_id": ids[0], "keypoints": []}] + coco_result_records(ids, split.keypoints))
    assert "record [0]" in text and "has 0 values, expected 15" in text  # read as COCO results, like the rest


def test_empty_keypoint_predictions_warn_and_score_zero(figures, tmp_path, capsys):
    gt_file, split = figures
    path = _write(tmp_path, [])
    with pytest.warns(PredictionWarning, match="holds no keypoint predictions"):
        metrics = score_keypoint_files(gt_file, path)
    assert set(metrics["pck"].values()) == {0.0} and metrics["unmatched_instances"] == split.num_instances
    assert main(["eval", "keypoints", "--gt", str(gt_file), "--predictions", str(path)]) == 0
    assert capsys.readouterr().err.startswith("loclab: warning:")


def test_normalised_keypoints_warn(figures, tmp_path, capsys):
    gt_file, split = figures
    path = _write(tmp_path, prediction_records([r.id for r in split.images], split.keypoints / 128))
    with pytest.warns(PredictionWarning, match=r"keypoints lies within \[0, 1\] while the images are up to 128x128"):
        score_keypoint_files(gt_file, path)
    assert main(["eval", "keypoints", "--gt", str(gt_file), "--pred", str(path)]) == 0
    err = capsys.readouterr().err
    assert err.count("loclab: warning:") == 1 and "multiply each x by its image's width" in err


# -------------------------------------------------------------------------------------------- printed numbers


def test_printed_json_drops_float_noise_and_the_summary_is_rounded(capsys):
    noisy = 0.1 + 0.2  # 0.30000000000000004
    assert clean_floats({"a": [noisy, 0.8590000000000001, 1e-30], "b": True, "c": 3, "d": None}) == \
        {"a": [0.3, 0.859, 1e-30], "b": True, "c": 3, "d": None}
    assert math.isnan(clean_floats(float("nan")))
    assert clean_floats(2 / 3) == 0.666666666667
    _print_metrics({"mAP50": 0.8590000000000001}, True, "")
    assert capsys.readouterr().out == '{\n "mAP50": 0.859\n}\n'


def test_cli_prints_rounded_numbers_and_stores_full_ones(figures, tmp_path, capsys):
    gt_file, split = figures
    path = _write(tmp_path, prediction_records([r.id for r in split.images], _moved(split)))
    stored = score_keypoint_files(gt_file, path)
    assert main(["eval", "keypoints", "--gt", str(gt_file), "--pred", str(path)]) == 0
    line = capsys.readouterr().out
    # rounded numbers, each followed by its 95 % interval
    assert f"@0.05 {stored['pck']['0.05']:.3f} [" in line and f"mean error {stored['mean_error_px']:.2f} [" in line
    assert main(["eval", "keypoints", "--gt", str(gt_file), "--pred", str(path), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["mean_error_px"] == pytest.approx(stored["mean_error_px"], rel=1e-11)
    assert len(repr(stored["mean_error_px"])) > len(repr(printed["mean_error_px"]))  # full precision is stored only
    assert np.isclose(printed["pck"]["0.1"], stored["pck"]["0.1"])
