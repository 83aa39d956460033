"""Failure analysis (types A/B/C) on a hand-built case, and the overlay figures that show predictions."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from loclab.analysis.failures import failure_analysis, keypoint_correctness
from loclab.metrics.pck import swap_hands

# Four figures; each bbox is 30 x 40 px, so the norm is 50 px and threshold 0.1 allows 5 px.
FIGURE = np.array([[64, 44], [49, 70], [79, 70], [49, 84], [79, 84]], dtype=float)
GT = np.stack([FIGURE + shift for shift in (0, 3, -5, 8)])
IDS = [100, 101, 102, 103]
HEAD, LEFT_HAND, RIGHT_FOOT = 0, 1, 4


def _off(points: np.ndarray, image: int, keypoint: int, dx: float = 10.0) -> np.ndarray:
    out = points.copy()
    out[image, keypoint, 0] += dx
    return out


# image 100: heatmap exact, regression head 10 px off                 -> A
# image 101: heatmap right foot 10 px off, regression exact           -> B
# image 102: heatmap head off, regression left hand off               -> C
# image 103: both exact, but regression has the hands exchanged       -> correct only when swap-aware
HEATMAP = _off(_off(GT, 1, RIGHT_FOOT), 2, HEAD)
REGRESSION = _off(_off(GT, 0, HEAD), 2, LEFT_HAND)
REGRESSION[3] = swap_hands(GT[3:]).numpy()[0]


def test_swap_aware_types():
    result = failure_analysis(HEATMAP, REGRESSION, GT, IDS)
    assert result["swap_aware"] is True and result["threshold"] == 0.1
    assert result["counts"] == {"A": 1, "B": 1, "C": 1, "both_correct": 1}
    assert result["image_ids"] == {"A": [100], "B": [101], "C": [102]}
    failing = result["failing_keypoints"]
    assert failing["A"]["regression"]["head"] == 1 and sum(failing["A"]["heatmap"].values()) == 0
    assert failing["B"]["heatmap"]["right_foot"] == 1 and sum(failing["B"]["regression"].values()) == 0
    assert failing["C"]["heatmap"] == {"head": 1, "left_hand": 0, "right_hand": 0, "left_foot": 0, "right_foot": 0}
    assert failing["C"]["regression"]["left_hand"] == 1
    assert result["failing_by_image"]["102"] == {"type": "C", "heatmap": ["head"], "regression": ["left_hand"]}
    assert "103" not in result["failing_by_image"]
    assert "all keypoints" in result["rule"] and "hands" in result["rule"]
    assert result["keypoint_accuracy"]["heatmap"]["head"] == 0.75


def test_plain_labels_count_the_exchanged_hands_as_a_failure():
    result = failure_analysis(HEATMAP, REGRESSION, GT, IDS, swap_aware=False)
    assert result["counts"] == {"A": 2, "B": 1, "C": 1, "both_correct": 0}
    assert result["image_ids"]["A"] == [100, 103]
    assert result["failing_keypoints"]["A"]["regression"]["left_hand"] == 1
    assert result["failing_keypoints"]["A"]["regression"]["right_hand"] == 1


def test_threshold_is_inclusive_and_validated():
    at_limit = GT.copy()
    at_limit[:, HEAD, 0] += 5.0  # exactly 0.1 of the 50 px norm
    correct, _ = keypoint_correctness(at_limit, GT, threshold=0.1)
    assert bool(correct.all())
    assert failure_analysis(at_limit, GT, GT, IDS)["counts"]["both_correct"] == 4
    with pytest.raises(ValueError, match="image_ids"):
        failure_analysis(HEATMAP, REGRESSION, GT, IDS[:3])


def test_analysis_and_evaluation_do_not_import_matplotlib():
    code = ("import sys, loclab.analysis.failures, loclab.evaluation.keypoints; "
            "sys.exit('matplotlib' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0


# --------------------------------------------------------------------------------------------------- overlays


def _images(n: int) -> np.ndarray:
    images = np.full((n, 1, 128, 128), 255, dtype=np.uint8)
    images[:, :, 60:70, 40:90] = 0
    return images


def test_overlay_figures_are_written(tmp_path):
    from loclab.viz.keypoint_overlays import (
        draw_failure_examples,
        draw_keypoint_predictions,
        draw_method_comparison,
    )

    images = _images(4)
    paths = [
        draw_keypoint_predictions(images, GT, HEATMAP, tmp_path / "pred.png", image_ids=IDS),
        draw_method_comparison(images, GT, HEATMAP, REGRESSION, tmp_path / "compare.png"),
        draw_failure_examples(images, GT, HEATMAP, REGRESSION, {"A": [100], "B": [101], "C": []},
                              tmp_path / "fail.png", image_ids=IDS, keypoint_names=["h", "lh", "rh", "lf", "rf"]),
    ]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000
