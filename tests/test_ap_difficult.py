"""Pascal VOC "difficult" boxes in AP.

The VOC conventions are checked against a slow loop written from the devkit's ``voc_eval.py`` (difficult boxes are
not positives; a detection whose best box is difficult is neither TP nor FP, and difficult boxes are never used
up), the COCO convention against pycocotools itself: a box whose ``area`` lies outside the evaluated area range is
an ignored box there (``_ignore`` in ``COCOeval.evaluateImg``), which is exactly how difficult boxes are meant to be
treated. (``iscrowd`` would not do: crowd regions are matched by intersection over the detection's area.)
"""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from coco_reference import devkit_matching as _devkit_reference
from coco_reference import devkit_voc_ap, pycocotools_ap
from hypothesis import given, settings
from hypothesis import strategies as st

from loclab.metrics import Detections, GroundTruth, compute_ap, match_detections

NUM_CLASSES = 2


def _dets(rows):
    """Detections from rows ``(image_id, category_id, x1, y1, x2, y2, score)``."""
    rows = np.asarray(rows, dtype=np.float64).reshape(-1, 7)
    return Detections(rows[:, 0], rows[:, 1], rows[:, 2:6], rows[:, 6])


def _gts(rows, image_ids, difficult=None):
    """Ground truth from rows ``(image_id, category_id, x1, y1, x2, y2)``."""
    rows = np.asarray(rows, dtype=np.float64).reshape(-1, 6)
    return GroundTruth(rows[:, 0], rows[:, 1], rows[:, 2:6], image_ids=image_ids, difficult=difficult)


# --- references --------------------------------------------------------------------------------------------------


def _check_voc_against_reference(dets, gts, iou_threshold):
    result = compute_ap(dets, gts, iou_threshold)
    tag = round(100 * iou_threshold)
    for class_id in range(NUM_CLASSES):
        rec, prec, counted, npos, _ = _devkit_reference(dets, gts, iou_threshold, class_id)
        assert result["num_gt"].get(class_id, 0) == npos
        if npos == 0:
            assert class_id not in result[f"AP{tag}"] or math.isnan(result[f"AP{tag}"][class_id])
            continue
        assert result[f"AP{tag}"][class_id] == pytest.approx(devkit_voc_ap(rec, prec, False), abs=1e-12)
        assert result[f"AP{tag}_voc07"][class_id] == pytest.approx(devkit_voc_ap(rec, prec, True), abs=1e-12)
        # loclab's curve is the devkit's without the repeated points of ignored detections.
        np.testing.assert_allclose(result["pr_curves"][class_id]["recall"], rec[counted], rtol=0, atol=1e-15)
        np.testing.assert_allclose(result["pr_curves"][class_id]["precision"], prec[counted], rtol=0, atol=1e-15)


def _pycocotools_ap(dets, gts, iou_threshold):
    """Per-class COCO 101-point AP from pycocotools (area all, maxDets 100), difficult boxes as its ignored boxes."""
    per_class, _ = pycocotools_ap(zip(gts.image_id, gts.category_id, gts.boxes),
                                  zip(dets.image_id, dets.category_id, dets.boxes, dets.scores), gts.image_ids,
                                  range(NUM_CLASSES), iou_threshold, difficult=gts.difficult)
    return per_class


def _check_coco_against_pycocotools(dets, gts, iou_threshold):
    result = compute_ap(dets, gts, iou_threshold, max_detections_per_image_class=100)
    tag = round(100 * iou_threshold)
    for class_id, ap in _pycocotools_ap(dets, gts, iou_threshold).items():
        got = result[f"AP{tag}_coco"].get(class_id, math.nan)
        assert (math.isnan(got) and math.isnan(ap)) or got == pytest.approx(ap, abs=1e-12), class_id


# --- random cases ------------------------------------------------------------------------------------------------


@st.composite
def scenes(draw, min_detections=0):
    """Small integer boxes on a few images and two classes (many overlaps, IoU ties and score ties), some boxes
    difficult; detections are either anywhere or jittered copies of a box."""
    image_ids = draw(st.lists(st.integers(0, 50), min_size=1, max_size=3, unique=True))
    coord, side = st.integers(0, 6), st.integers(1, 4)
    box = st.builds(lambda x, y, w, h: [x, y, x + w, y + h], coord, coord, side, side)
    gt_rows = draw(
        st.lists(st.tuples(st.sampled_from(image_ids), st.integers(0, NUM_CLASSES - 1), box), max_size=8)
    )
    difficult = draw(st.lists(st.booleans(), min_size=len(gt_rows), max_size=len(gt_rows)))
    score = st.sampled_from([0.2, 0.4, 0.6, 0.8])
    det_rows = []
    for _ in range(draw(st.integers(min_detections, 12))):
        if gt_rows and draw(st.booleans()):
            image, cls, (x1, y1, x2, y2) = draw(st.sampled_from(gt_rows))
            dx1, dy1, dx2, dy2 = (draw(st.integers(-1, 1)) for _ in range(4))
            x1, y1 = x1 + dx1, y1 + dy1
            det_rows.append([image, cls, x1, y1, max(x2 + dx2, x1 + 1), max(y2 + dy2, y1 + 1), draw(score)])
        else:
            image, cls = draw(st.sampled_from(image_ids)), draw(st.integers(0, NUM_CLASSES - 1))
            det_rows.append([image, cls, *draw(box), draw(score)])
    gts = _gts([[i, c, *b] for i, c, b in gt_rows], image_ids, difficult=difficult)
    return _dets(det_rows), gts


@settings(max_examples=200, deadline=None)
@given(scenes(), st.sampled_from([0.3, 0.5, 0.7]))
def test_voc_conventions_follow_the_devkit_rules(scene, iou_threshold):
    _check_voc_against_reference(*scene, iou_threshold)


@settings(max_examples=60, deadline=None)
@given(scenes(min_detections=1), st.sampled_from([0.3, 0.5, 0.7]))
def test_coco_convention_equals_pycocotools_with_ignored_boxes(scene, iou_threshold):
    _check_coco_against_pycocotools(*scene, iou_threshold)


def _random_scene(seed, num_images=10, crowded=True):
    """Detector-like output on float boxes: noisy copies of the boxes, clutter, ~25% difficult boxes, and (when
    ``crowded``) two images with over 100 detections of class 0."""
    rng = np.random.default_rng(seed)
    image_ids = rng.permutation(np.arange(num_images) * 5 + 1)
    gts, difficult, dets = [], [], []
    for n, image in enumerate(image_ids):
        for _ in range(int(rng.integers(0, 6))):
            cls, side = int(rng.integers(0, NUM_CLASSES)), rng.uniform(16, 80)
            x, y = rng.uniform(side / 2, 224 - side / 2, size=2)
            box = np.array([x - side / 2, y - side / 2, x + side / 2, y + side / 2])
            gts.append([image, cls, *box])
            difficult.append(rng.random() < 0.25)
            for _ in range(int(rng.integers(0, 4))):
                jitter = rng.choice([0.05, 0.15, 0.3])
                noisy = box + rng.normal(0, side * jitter, size=4)
                noisy[2:] = np.maximum(noisy[2:], noisy[:2] + 1)
                score = np.clip(1 - 2 * jitter + rng.normal(0, 0.2), 0.001, 1)
                dets.append([image, cls if rng.random() < 0.9 else 1 - cls, *noisy, score])
        for _ in range(int(rng.integers(110, 130)) if crowded and n < 2 else int(rng.integers(0, 20))):
            cls, side = 0 if crowded and n < 2 else int(rng.integers(0, NUM_CLASSES)), rng.uniform(16, 80)
            x, y = rng.uniform(0, 224, size=2)
            dets.append([image, cls, x - side / 2, y - side / 2, x + side / 2, y + side / 2, rng.uniform(0.001, 0.7)])
    dets = np.asarray(dets)
    if seed % 2 == 0:
        dets[:, 6] = np.round(dets[:, 6], 2)  # score ties
    return _dets(dets), _gts(gts, image_ids, difficult=difficult)


@pytest.mark.parametrize("seed", range(4))
def test_detector_like_scenes_against_devkit_rules_and_pycocotools(seed):
    dets, gts = _random_scene(seed)
    assert gts.difficult.any() and (~gts.difficult).any()
    _check_voc_against_reference(dets, gts, 0.5)
    _check_coco_against_pycocotools(dets, gts, 0.5)


def test_equals_the_devkit_itself_when_no_detection_falls_on_a_taken_box():
    # loclab's only departure from voc_eval.py's matching is skipping taken boxes; whenever the devkit never meets
    # a taken box (float boxes: no IoU ties), the two agree exactly, difficult boxes included.
    agreeing = 0
    for seed in range(60):
        dets, gts = _random_scene(seed, num_images=3, crowded=False)
        result = compute_ap(dets, gts)
        for class_id in range(NUM_CLASSES):
            rec, prec, _, npos, hit_taken = _devkit_reference(dets, gts, 0.5, class_id, taken_is_fp=True)
            if hit_taken or npos == 0:
                continue
            agreeing += 1
            assert result["AP50"][class_id] == pytest.approx(devkit_voc_ap(rec, prec, False), abs=1e-12)
            assert result["AP50_voc07"][class_id] == pytest.approx(devkit_voc_ap(rec, prec, True), abs=1e-12)
    assert agreeing >= 20


# --- hand-made cases ---------------------------------------------------------------------------------------------


def test_detection_on_a_difficult_box_is_neither_tp_nor_fp():
    gts = _gts([[0, 0, 0, 0, 10, 10], [0, 0, 50, 50, 60, 60]], image_ids=[0], difficult=[False, True])
    dets = _dets([[0, 0, 50, 50, 60, 60, 0.9], [0, 0, 0, 0, 10, 10, 0.8], [0, 0, 100, 100, 110, 110, 0.7]])
    match = match_detections(dets, gts)
    assert match.is_tp.tolist() == [False, True, False]
    assert match.is_ignored.tolist() == [True, False, False]
    assert match.matched_gt.tolist() == [1, 0, -1]
    assert match.num_gt == {0: 1}
    result = compute_ap(dets, gts)
    # The ignored detection leaves no point: TP (recall 1, precision 1), then FP (recall 1, precision 1/2).
    assert result["pr_curves"][0] == {"recall": [1.0, 1.0], "precision": [1.0, 0.5]}
    assert result["num_gt"] == {0: 1}
    assert result["AP50"][0] == result["AP50_voc07"][0] == result["AP50_coco"][0] == 1.0
    # Not flagged, the same box would be a positive found only by the first detection.
    plain = compute_ap(dets, _gts([[0, 0, 0, 0, 10, 10], [0, 0, 50, 50, 60, 60]], image_ids=[0]))
    assert plain["num_gt"] == {0: 2} and plain["AP50"][0] == 1.0
    assert plain["pr_curves"][0]["recall"] == [0.5, 1.0, 1.0]


def test_a_difficult_box_absorbs_every_detection_in_voc_but_one_in_coco():
    gts = _gts([[0, 0, 0, 0, 10, 10], [0, 0, 50, 50, 60, 60]], image_ids=[0], difficult=[False, True])
    dets = _dets([[0, 0, 50, 50, 60, 60, 0.9], [0, 0, 50, 50, 60, 61, 0.85], [0, 0, 0, 0, 10, 10, 0.8]])
    voc = match_detections(dets, gts)
    assert voc.is_ignored.tolist() == [True, True, False] and voc.is_tp.tolist() == [False, False, True]
    coco = match_detections(dets, gts, difficult_rule="coco")
    assert coco.is_ignored.tolist() == [True, False, False] and coco.is_tp.tolist() == [False, False, True]
    result = compute_ap(dets, gts)
    assert result["AP50"][0] == 1.0  # VOC: FP-free
    assert result["AP50_coco"][0] == 0.5  # COCO: the second detection is an FP ahead of the TP
    assert result["pr_curves"][0] == {"recall": [1.0], "precision": [1.0]}  # curves follow the VOC matching
    _check_coco_against_pycocotools(dets, gts, 0.5)
    _check_voc_against_reference(dets, gts, 0.5)


def test_difficult_box_of_higher_overlap_wins_in_voc_but_not_in_coco():
    # The detection overlaps the difficult box more (IoU 0.9) than the ordinary one (IoU 0.6): the devkit takes the
    # box of maximum overlap and ignores the detection; pycocotools prefers any qualifying ordinary box.
    gts = _gts([[0, 0, 0, 0, 10, 10], [0, 0, 0, 0, 10, 15]], image_ids=[0], difficult=[True, False])
    dets = _dets([[0, 0, 0, 0, 10, 9, 0.9]])
    voc = match_detections(dets, gts)
    assert voc.is_ignored.tolist() == [True] and voc.matched_gt.tolist() == [0]
    coco = match_detections(dets, gts, difficult_rule="coco")
    assert coco.is_tp.tolist() == [True] and coco.matched_gt.tolist() == [1]
    result = compute_ap(dets, gts)
    assert result["AP50"][0] == 0.0 and result["AP50_coco"][0] == 1.0
    _check_coco_against_pycocotools(dets, gts, 0.5)
    _check_voc_against_reference(dets, gts, 0.5)


def test_duplicate_on_a_taken_ordinary_box_is_a_false_positive():
    gts = _gts([[0, 0, 0, 0, 10, 10], [0, 0, 50, 50, 60, 60]], image_ids=[0], difficult=[False, True])
    dets = _dets([[0, 0, 0, 0, 10, 10, 0.9], [0, 0, 0, 0, 10, 10, 0.8]])
    for rule in ("voc", "coco"):
        match = match_detections(dets, gts, difficult_rule=rule)
        assert match.is_tp.tolist() == [True, False] and match.is_ignored.tolist() == [False, False]
    assert compute_ap(dets, gts)["pr_curves"][0] == {"recall": [1.0, 1.0], "precision": [1.0, 0.5]}


def test_taken_box_is_skipped_so_a_difficult_box_behind_it_absorbs_the_duplicate():
    # loclab skips taken boxes (its matching rule without difficult boxes, kept here): the duplicate's best box is
    # taken, its next one (IoU 0.9 >= 0.5) is difficult, so it is ignored. The devkit would call it an FP.
    gts = _gts([[0, 0, 0, 0, 10, 10], [0, 0, 0, 0, 10, 9]], image_ids=[0], difficult=[False, True])
    dets = _dets([[0, 0, 0, 0, 10, 10, 0.9], [0, 0, 0, 0, 10, 10, 0.8]])
    match = match_detections(dets, gts)
    assert match.is_tp.tolist() == [True, False] and match.is_ignored.tolist() == [False, True]
    assert _devkit_reference(dets, gts, 0.5, 0, taken_is_fp=True)[4]  # the devkit meets the taken box
    _check_voc_against_reference(dets, gts, 0.5)


def test_class_with_only_difficult_boxes_has_no_ap():
    gts = _gts([[0, 0, 0, 0, 10, 10], [0, 1, 20, 20, 30, 30]], image_ids=[0, 1], difficult=[False, True])
    dets = _dets([[0, 0, 0, 0, 10, 10, 0.9], [0, 1, 20, 20, 30, 30, 0.9], [1, 1, 0, 0, 10, 10, 0.5]])
    result = compute_ap(dets, gts, class_names={0: "circle", 1: "square"})
    assert result["num_gt"] == {"circle": 1, "square": 0}
    for suffix in ("", "_voc07", "_coco"):
        assert math.isnan(result[f"AP50{suffix}"]["square"]) and result[f"mAP50{suffix}"] == 1.0
    assert match_detections(dets, gts).num_gt == {0: 1}


def test_num_gt_counts_ordinary_boxes_only():
    dets, gts = _random_scene(3)
    result = compute_ap(dets, gts)
    for class_id in range(NUM_CLASSES):
        in_class = gts.category_id == class_id
        assert result["num_gt"][class_id] == int((in_class & ~gts.difficult).sum()) < int(in_class.sum())


# --- no difficult box: nothing changes ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_all_ordinary_equals_no_flags_bit_for_bit(seed):
    dets, flagged = _random_scene(seed)
    unflagged = GroundTruth(flagged.image_id, flagged.category_id, flagged.boxes, flagged.image_ids)
    ordinary = GroundTruth(
        flagged.image_id, flagged.category_id, flagged.boxes, flagged.image_ids, difficult=np.zeros(len(flagged))
    )
    for kwargs in ({}, {"max_detections_per_image_class": 100}, {"iou_threshold": 0.7}):
        # repr of a float is exact, NaN included, so equal reprs are bit-identical results.
        assert repr(compute_ap(dets, ordinary, **kwargs)) == repr(compute_ap(dets, unflagged, **kwargs))
    for rule in ("voc", "coco"):
        a, b = match_detections(dets, ordinary, difficult_rule=rule), match_detections(dets, unflagged)
        assert np.array_equal(a.is_tp, b.is_tp) and np.array_equal(a.matched_gt, b.matched_gt)
        assert a.num_gt == b.num_gt and not a.is_ignored.any()


@settings(max_examples=100, deadline=None)
@given(scenes(), st.sampled_from([0.3, 0.5, 0.7]))
def test_all_ordinary_equals_no_flags_on_random_cases(scene, iou_threshold):
    dets, gts = scene
    unflagged = GroundTruth(gts.image_id, gts.category_id, gts.boxes, gts.image_ids)
    ordinary = GroundTruth(gts.image_id, gts.category_id, gts.boxes, gts.image_ids, difficult=np.zeros(len(gts)))
    assert repr(compute_ap(dets, ordinary, iou_threshold)) == repr(compute_ap(dets, unflagged, iou_threshold))


# --- tables and the evaluation entry point -----------------------------------------------------------------------


def test_difficult_flags_are_validated():
    gts = GroundTruth([0, 0], [0, 0], torch.zeros(2, 4), image_ids=[0], difficult=torch.tensor([True, False]))
    assert gts.difficult.dtype == bool and gts.difficult.tolist() == [True, False]
    with pytest.raises(ValueError, match="difficult"):
        GroundTruth([0, 0], [0, 0], np.zeros((2, 4)), image_ids=[0], difficult=[True])
    with pytest.raises(ValueError, match="difficult_rule"):
        match_detections(_dets([]), gts, difficult_rule="devkit")


def _split(difficult=None):
    """A stand-in for DetectionSplit with the fields ground_truth_table reads (two images, the second empty)."""
    split = SimpleNamespace(
        images=(SimpleNamespace(id=4), SimpleNamespace(id=9)),
        boxes=(torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]]), torch.zeros(0, 4)),
        labels=(torch.tensor([0, 1]), torch.zeros(0, dtype=torch.int64)),
    )
    if difficult is not None:
        split.difficult = difficult
    return split


def test_ground_truth_table_passes_the_split_difficult_flags():
    from loclab.evaluation.detection import ground_truth_table

    assert ground_truth_table(_split()).difficult is None  # a split without the field
    assert ground_truth_table(_split(difficult=None)).difficult is None
    gts = ground_truth_table(_split(difficult=(torch.tensor([False, True]), torch.zeros(0, dtype=torch.bool))))
    assert gts.difficult.tolist() == [False, True] and gts.image_ids.tolist() == [4, 9]
    assert compute_ap(_dets([[4, 1, 20, 20, 30, 30, 0.9]]), gts)["num_gt"] == {0: 1, 1: 0}
