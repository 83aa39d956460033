import math

import numpy as np
import pytest
import torch
from coco_reference import devkit_voc_ap, pycocotools_ap

from loclab.metrics import (
    Detections,
    GroundTruth,
    ap_coco_101point,
    ap_voc07_11point,
    ap_voc_allpoint,
    compute_ap,
    keep_top_k_per_image,
    keep_top_k_per_image_class,
    match_detections,
    precision_recall_curve,
)


def _dets(rows):
    """Detections from rows ``(image_id, category_id, x1, y1, x2, y2, score)``."""
    rows = np.asarray(rows, dtype=np.float64).reshape(-1, 7)
    return Detections(rows[:, 0], rows[:, 1], rows[:, 2:6], rows[:, 6])


def _gts(rows, image_ids):
    """Ground truth from rows ``(image_id, category_id, x1, y1, x2, y2)``."""
    rows = np.asarray(rows, dtype=np.float64).reshape(-1, 6)
    return GroundTruth(rows[:, 0], rows[:, 1], rows[:, 2:6], image_ids=image_ids)


# --- the three integration conventions, on a hand-computed curve --------------------------------------------------

# Two boxes, detections TP (0.9), FP (0.8), TP (0.7): recall .5 .5 1, precision 1 .5 2/3.
RECALL = np.array([0.5, 0.5, 1.0])
PRECISION = np.array([1.0, 0.5, 2 / 3])


def test_voc_allpoint_hand_computed():
    # Envelope 1, 2/3, 2/3: area 0.5 * 1 + 0.5 * 2/3.
    assert ap_voc_allpoint(RECALL, PRECISION) == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_voc07_hand_computed():
    # t = 0 .. 0.5 (6 points) reach precision 1; t = 0.6 .. 1 (5 points) reach 2/3.
    assert ap_voc07_11point(RECALL, PRECISION) == pytest.approx((6 + 5 * 2 / 3) / 11)


def test_coco_101_hand_computed():
    # Thresholds 0.00 .. 0.50 (51 points) read precision 1; 0.51 .. 1.00 (50 points) read 2/3.
    assert ap_coco_101point(RECALL, PRECISION) == pytest.approx((51 + 50 * 2 / 3) / 101)


def test_conventions_on_empty_and_partial_curves():
    for ap in (ap_voc_allpoint, ap_voc07_11point, ap_coco_101point):
        assert ap(np.array([]), np.array([])) == 0.0
        assert ap(np.array([1.0]), np.array([1.0])) == pytest.approx(1.0)
    # Recall stops at 0.5 with precision 1: the rest of the recall axis counts as precision 0.
    assert ap_voc_allpoint(np.array([0.5]), np.array([1.0])) == pytest.approx(0.5)
    assert ap_voc07_11point(np.array([0.5]), np.array([1.0])) == pytest.approx(6 / 11)
    assert ap_coco_101point(np.array([0.5]), np.array([1.0])) == pytest.approx(51 / 101)


@pytest.mark.parametrize("seed", range(20))
def test_voc_conventions_match_the_devkit_on_random_curves(seed):
    rng = np.random.default_rng(seed)
    is_tp = rng.random(int(rng.integers(1, 40))) < 0.6
    num_gt = max(1, int(is_tp.sum()) + int(rng.integers(0, 3)))  # some boxes may never be found
    tp, fp = np.cumsum(is_tp), np.cumsum(~is_tp)
    recall, precision = tp / num_gt, tp / (tp + fp)
    assert ap_voc_allpoint(recall, precision) == pytest.approx(devkit_voc_ap(recall, precision, False), abs=1e-12)
    assert ap_voc07_11point(recall, precision) == pytest.approx(devkit_voc_ap(recall, precision, True), abs=1e-12)


# --- matching ------------------------------------------------------------------------------------------------------


def test_matching_hand_computed_and_compute_ap():
    gts = _gts([[0, 0, 0, 0, 10, 10], [0, 0, 20, 20, 30, 30]], image_ids=[0, 1])
    dets = _dets(
        [
            [0, 0, 0, 0, 10, 10, 0.9],  # TP on box 0
            [0, 0, 0, 0, 10, 10, 0.8],  # duplicate of box 0: FP
            [0, 0, 20, 20, 30, 25, 0.7],  # IoU exactly 0.5 with box 1: TP (>=)
            [1, 0, 0, 0, 10, 10, 0.95],  # image 1 has no box: FP
        ]
    )
    match = match_detections(dets, gts)
    assert match.is_tp.tolist() == [True, False, True, False]
    assert match.matched_gt.tolist() == [0, -1, 1, -1]
    assert match.num_gt == {0: 2}
    recall, precision = precision_recall_curve(dets, match, 0)
    np.testing.assert_allclose(recall, [0, 0.5, 0.5, 1])  # order 0.95 FP, 0.9 TP, 0.8 FP, 0.7 TP
    np.testing.assert_allclose(precision, [0, 1 / 2, 1 / 3, 1 / 2])
    result = compute_ap(dets, gts)
    assert result["AP50"][0] == pytest.approx(0.5 * 0.5 + 0.5 * 0.5)
    assert result["mAP50"] == result["AP50"][0]
    assert result["mAP50_voc07"] == pytest.approx(11 * 0.5 / 11)
    assert result["mAP50_coco"] == pytest.approx(0.5)
    assert result["pr_curves"][0]["recall"] == recall.tolist()
    assert result["num_gt"] == {0: 2} and result["iou_threshold"] == 0.5


def test_detection_takes_the_best_unmatched_box():
    gts = _gts([[0, 0, 0, 0, 10, 10], [0, 0, 2, 0, 12, 10]], image_ids=[0])
    dets = _dets([[0, 0, 0, 0, 10, 10, 0.9], [0, 0, 0.5, 0, 10.5, 10, 0.8]])
    # The second detection overlaps box 0 more (IoU 0.90 vs 0.74), but box 0 is taken: it gets box 1.
    match = match_detections(dets, gts)
    assert match.is_tp.tolist() == [True, True]
    assert match.matched_gt.tolist() == [0, 1]


def test_equal_iou_goes_to_the_later_box_as_in_pycocotools():
    # Detection 0 has IoU 1/3 with both boxes; detection 1 overlaps box 0 only. Taking the later box on the tie
    # (pycocotools' rule) lets both detections match.
    gts = _gts([[0, 0, 0, 0, 10, 10], [0, 0, 10, 0, 20, 10]], image_ids=[0])
    dets = _dets([[0, 0, 5, 0, 15, 10, 0.9], [0, 0, 0, 0, 10, 10, 0.8]])
    match = match_detections(dets, gts, iou_threshold=0.3)
    assert match.matched_gt.tolist() == [1, 0]


def test_classes_and_images_are_kept_apart():
    gts = _gts([[0, 0, 0, 0, 10, 10], [1, 1, 0, 0, 10, 10]], image_ids=[0, 1])
    dets = _dets([[0, 1, 0, 0, 10, 10, 0.9], [1, 0, 0, 0, 10, 10, 0.9], [1, 1, 0, 0, 10, 10, 0.5]])
    assert match_detections(dets, gts).is_tp.tolist() == [False, False, True]


def test_class_without_ground_truth_is_nan_and_left_out_of_the_mean():
    gts = _gts([[0, 0, 0, 0, 10, 10]], image_ids=[0])
    dets = _dets([[0, 0, 0, 0, 10, 10, 0.9], [0, 2, 0, 0, 10, 10, 0.9]])
    result = compute_ap(dets, gts, class_names={0: "circle", 1: "square", 2: "triangle"})
    assert result["AP50"]["circle"] == 1.0
    assert math.isnan(result["AP50"]["square"]) and math.isnan(result["AP50_coco"]["triangle"])
    assert result["mAP50"] == 1.0 and result["mAP50_voc07"] == 1.0 and result["mAP50_coco"] == 1.0
    assert result["pr_curves"]["square"] == {"recall": [], "precision": []}
    assert result["num_gt"] == {"circle": 1, "square": 0, "triangle": 0}


def test_class_with_ground_truth_but_no_detection_scores_zero():
    gts = _gts([[0, 0, 0, 0, 10, 10], [0, 1, 0, 0, 10, 10]], image_ids=[0])
    result = compute_ap(_dets([[0, 0, 0, 0, 10, 10, 0.9]]), gts)
    assert result["AP50"] == {0: 1.0, 1: 0.0}
    assert result["mAP50"] == 0.5


def test_result_keys_follow_the_iou_threshold():
    gts = _gts([[0, 0, 0, 0, 10, 10]], image_ids=[0])
    result = compute_ap(_dets([[0, 0, 0, 0, 10, 7, 0.9]]), gts, iou_threshold=0.75)  # IoU 0.7
    assert result["mAP75"] == 0.0 and set(result) >= {"AP75", "mAP75_voc07", "AP75_coco"}


def test_empty_inputs():
    gts = _gts([], image_ids=[0, 1])
    result = compute_ap(_dets([]), gts)
    assert math.isnan(result["mAP50"]) and result["AP50"] == {}
    assert match_detections(_dets([]), gts).is_tp.shape == (0,)


def test_bad_inputs_are_rejected():
    gts = _gts([[0, 0, 0, 0, 10, 10]], image_ids=[0])
    with pytest.raises(ValueError, match="not in the ground truth"):
        match_detections(_dets([[7, 0, 0, 0, 10, 10, 0.9]]), gts)
    with pytest.raises(ValueError):
        Detections([0], [0], [[0, 0, 1]], [0.5])
    with pytest.raises(ValueError):
        Detections([0], [0], [[0, 0, 1, 1]], [float("nan")])
    with pytest.raises(ValueError):
        GroundTruth([3], [0], [[0, 0, 1, 1]], image_ids=[0])


def test_top_k_helpers():
    dets = _dets(
        [
            [0, 0, 0, 0, 1, 1, 0.1],
            [0, 1, 0, 0, 1, 1, 0.9],
            [0, 0, 0, 0, 1, 1, 0.5],
            [1, 0, 0, 0, 1, 1, 0.2],
            [0, 0, 0, 0, 1, 1, 0.5],  # ties with row 2: the earlier row wins
        ]
    )
    assert keep_top_k_per_image(dets, 2).scores.tolist() == [0.9, 0.5, 0.2]
    kept = keep_top_k_per_image_class(dets, 1)
    assert kept.scores.tolist() == [0.9, 0.5, 0.2] and kept.category_id.tolist() == [1, 0, 0]
    assert len(keep_top_k_per_image_class(dets, 2)) == 4


# --- pycocotools, the real peer ------------------------------------------------------------------------------------

CLASS_SIDES = {0: (16, 32), 1: (48, 96), 2: (96, 192)}  # the shapes dataset's size range per class


def _random_scene(seed, num_images=12):
    """Shapes-like ground truth and detector-like output: noisy copies of the boxes (some with the wrong class),
    background false positives, and a few crowded images with over 100 detections of one class."""
    rng = np.random.default_rng(seed)
    image_ids = rng.permutation(np.arange(num_images) * 7 + 3)  # not contiguous, not sorted
    gts, dets = [], []
    for n, image in enumerate(image_ids):
        crowded = n < 3
        for k in range(int(rng.integers(1 if crowded else 0, 6))):
            cls = 0 if crowded and k == 0 else int(rng.integers(0, 3))
            side = rng.uniform(*CLASS_SIDES[cls])
            x, y = rng.uniform(side / 2, 224 - side / 2, size=2)
            box = [x - side / 2, y - side / 2, x + side / 2, y + side / 2]
            gts.append([image, cls, *box])
            if rng.random() < 0.1:
                gts.append([image, cls, *box])  # duplicated object: equal IoUs with both copies
            for _ in range(int(rng.integers(1 if crowded else 0, 4))):
                jitter = rng.choice([0.05, 0.15, 0.3])
                noisy = np.asarray(box) + rng.normal(0, side * jitter, size=4)
                noisy[2:] = np.maximum(noisy[2:], noisy[:2] + 1)
                det_cls = cls if rng.random() < 0.85 else int(rng.integers(0, 3))
                score = np.clip(1 - 2 * jitter + rng.normal(0, 0.2), 0.001, 1)  # better boxes score higher
                dets.append([image, det_cls, *noisy, score])
        for _ in range(int(rng.integers(120, 160)) if crowded else int(rng.integers(0, 30))):
            cls = 0 if crowded else int(rng.integers(0, 3))
            side = rng.uniform(*CLASS_SIDES[cls])
            x, y = rng.uniform(0, 224, size=2)
            # Crowded images get high-scored clutter, so the 100-detection cap drops some true positives.
            score = rng.uniform(0.3, 0.9) if crowded else rng.uniform(0.001, 0.6)
            dets.append([image, cls, x - side / 2, y - side / 2, x + side / 2, y + side / 2, score])
    dets = np.asarray(dets)
    if seed % 2 == 0:
        dets[:, 6] = np.round(dets[:, 6], 2)  # many tied scores, across and within images
    return _dets(dets), _gts(gts, image_ids=image_ids)


def _pycocotools_ap50(dets, gts):
    """Per-class AP50 and mAP50 from pycocotools (area all, maxDets 100), with the data built in memory."""
    return pycocotools_ap(zip(gts.image_id, gts.category_id, gts.boxes),
                          zip(dets.image_id, dets.category_id, dets.boxes, dets.scores), gts.image_ids, (0, 1, 2))


@pytest.mark.parametrize("seed", range(6))
def test_coco_ap50_equals_pycocotools(seed):
    dets, gts = _random_scene(seed)
    per_image_class = np.unique(np.stack((dets.image_id, dets.category_id)), axis=1, return_counts=True)[1]
    assert per_image_class.max() > 100  # the 100-detection cap is exercised
    per_class, mean = _pycocotools_ap50(dets, gts)
    result = compute_ap(dets, gts, max_detections_per_image_class=100)
    # Same matching, same tie order, same sampling: the numbers agree to rounding, far inside the 1e-4 asked for.
    for class_id, ap in per_class.items():
        got = result["AP50_coco"][class_id]
        assert (math.isnan(got) and math.isnan(ap)) or got == pytest.approx(ap, abs=1e-9), class_id
    assert result["mAP50_coco"] == pytest.approx(mean, abs=1e-9)


def test_the_cap_is_per_image_and_class_as_in_pycocotools():
    # COCOeval's maxDets=100 keeps the top 100 detections of each (image, category), not of each image.
    dets, gts = _random_scene(5)
    _, mean = _pycocotools_ap50(dets, gts)
    assert compute_ap(dets, gts, max_detections_per_image_class=100)["mAP50_coco"] == pytest.approx(mean, abs=1e-9)
    assert compute_ap(dets, gts, max_detections_per_image=100)["mAP50_coco"] != pytest.approx(mean, abs=1e-4)
    dets, gts = _random_scene(1)
    _, mean = _pycocotools_ap50(dets, gts)
    assert compute_ap(dets, gts)["mAP50_coco"] != pytest.approx(mean, abs=1e-4)  # and without a cap it differs


def test_equal_iou_tie_rule_agrees_with_pycocotools():
    # Detection 0 (score 0.9) has IoU 9/11 with both overlapping boxes; detection 1 reaches 0.5 only with box 0.
    # Taking the later box on the tie makes both true positives; taking the first would leave detection 1 unmatched.
    gts = _gts([[5, 0, 0, 0, 10, 10], [5, 0, 2, 0, 12, 10]], image_ids=[5])
    dets = _dets([[5, 0, 1, 0, 11, 10, 0.9], [5, 0, -3, 0, 7, 10, 0.8]])
    per_class, _ = _pycocotools_ap50(dets, gts)
    assert per_class[0] == 1.0
    assert match_detections(dets, gts).matched_gt.tolist() == [1, 0]
    assert compute_ap(dets, gts)["AP50_coco"][0] == 1.0


def test_tables_accept_tensors_and_warn_about_crowds():
    dets = Detections(torch.tensor([0]), torch.tensor([1]), torch.tensor([[0.0, 0, 1, 1]]), torch.tensor([0.5]))
    assert dets.image_id.dtype == np.int64 and dets.boxes.dtype == np.float64 and dets.boxes.shape == (1, 4)
    with pytest.warns(UserWarning, match="iscrowd"):
        GroundTruth([0], [1], [[0, 0, 1, 1]], image_ids=[0], iscrowd=[1])
