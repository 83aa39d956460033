"""``match_rule="voc"`` (``loclab eval detections --match voc``): the VOC devkit's rule for taken boxes, checked
against the devkit's own loop (``coco_reference.devkit_matching`` with ``taken_is_fp=True``) on hand-made cases
where the two rules differ and on random scenes; the default stays pycocotools' rule."""

import json

import numpy as np
import pytest
from coco_reference import devkit_matching, devkit_voc_ap
from hypothesis import given, settings
from hypothesis import strategies as st
from test_ap_difficult import _dets, _gts

from loclab.cli import main
from loclab.evaluation.detection import score_detection_files
from loclab.metrics import compute_ap, match_detections


def _check_against_devkit(dets, gts, iou_threshold, classes=(0, 1)):
    result = compute_ap(dets, gts, iou_threshold, match_rule="voc")
    tag = round(100 * iou_threshold)
    for class_id in classes:
        rec, prec, counted, npos, _ = devkit_matching(dets, gts, iou_threshold, class_id, taken_is_fp=True)
        if npos == 0:
            continue
        assert result[f"AP{tag}"][class_id] == pytest.approx(devkit_voc_ap(rec, prec, False), abs=1e-12)
        assert result[f"AP{tag}_voc07"][class_id] == pytest.approx(devkit_voc_ap(rec, prec, True), abs=1e-12)
        np.testing.assert_allclose(result["pr_curves"][class_id]["recall"], rec[counted], rtol=0, atol=1e-15)
        np.testing.assert_allclose(result["pr_curves"][class_id]["precision"], prec[counted], rtol=0, atol=1e-15)


# --- hand-made cases where the rules differ ----------------------------------------------------------------------

# Two overlapping boxes; the second detection overlaps box 0 more (IoU 0.90) than box 1 (IoU 0.74), and box 0 is
# taken by the first detection.
GTS = [[0, 0, 0, 0, 10, 10], [0, 0, 2, 0, 12, 10]]
DETS = [[0, 0, 0, 0, 10, 10, 0.9], [0, 0, 0.5, 0, 10.5, 10, 0.8]]


def test_a_detection_whose_best_box_is_taken_is_a_false_positive_under_voc():
    gts, dets = _gts(GTS, [0]), _dets(DETS)
    coco = match_detections(dets, gts)
    voc = match_detections(dets, gts, match_rule="voc")
    assert coco.is_tp.tolist() == [True, True] and coco.matched_gt.tolist() == [0, 1]
    assert voc.is_tp.tolist() == [True, False] and voc.matched_gt.tolist() == [0, -1]
    assert compute_ap(dets, gts)["AP50"][0] == 1.0
    assert compute_ap(dets, gts, match_rule="voc")["AP50"][0] == pytest.approx(0.5)
    _check_against_devkit(dets, gts, 0.5, classes=(0,))


def test_voc_takes_the_first_box_on_equal_iou():
    # Detection 0 has IoU 1/3 with both boxes: the devkit's argmax takes box 0, pycocotools the later box 1; then
    # detection 1 (on box 0) is a false positive under voc (box 0 taken) and a true positive under coco.
    gts = _gts([[0, 0, 0, 0, 10, 10], [0, 0, 10, 0, 20, 10]], [0])
    dets = _dets([[0, 0, 5, 0, 15, 10, 0.9], [0, 0, 0, 0, 10, 10, 0.8]])
    assert match_detections(dets, gts, 0.3).matched_gt.tolist() == [1, 0]
    assert match_detections(dets, gts, 0.3, match_rule="voc").matched_gt.tolist() == [0, -1]
    _check_against_devkit(dets, gts, 0.3, classes=(0,))


def test_voc_with_difficult_boxes_follows_the_devkit():
    # The duplicate's best box is the taken ordinary one (IoU 1): an FP under voc; coco skips the taken box and the
    # difficult box behind it (IoU 0.9) absorbs the duplicate.
    gts = _gts([[0, 0, 0, 0, 10, 10], [0, 0, 0, 0, 10, 9]], [0], difficult=[False, True])
    dets = _dets([[0, 0, 0, 0, 10, 10, 0.9], [0, 0, 0, 0, 10, 10, 0.8]])
    voc = match_detections(dets, gts, match_rule="voc")
    assert voc.is_tp.tolist() == [True, False] and voc.is_ignored.tolist() == [False, False]
    assert match_detections(dets, gts).is_ignored.tolist() == [False, True]
    # a detection whose best box is difficult is ignored under both rules
    on_difficult = _dets([[0, 0, 0, 0, 10, 9, 0.7]])
    assert match_detections(on_difficult, gts, match_rule="voc").is_ignored.tolist() == [True]
    _check_against_devkit(dets, gts, 0.5, classes=(0,))


def test_the_coco_number_keeps_pycocotools_rule_and_bad_rules_are_refused():
    gts, dets = _gts(GTS, [0]), _dets(DETS)
    voc = compute_ap(dets, gts, match_rule="voc", max_detections_per_image_class=100)
    assert voc["AP50_coco"][0] == 1.0 and voc["AP50"][0] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="match_rule"):
        match_detections(dets, gts, match_rule="devkit")
    with pytest.raises(ValueError, match="difficult_rule"):
        match_detections(dets, gts, match_rule="voc", difficult_rule="coco")


# --- random scenes -----------------------------------------------------------------------------------------------


@st.composite
def scenes(draw):
    """Small integer boxes (many overlaps and IoU ties, so taken boxes are met often), two classes, a few images,
    some boxes difficult, tied scores."""
    image_ids = draw(st.lists(st.integers(0, 50), min_size=1, max_size=3, unique=True))
    coord, side = st.integers(0, 6), st.integers(1, 4)
    box = st.builds(lambda x, y, w, h: [x, y, x + w, y + h], coord, coord, side, side)
    gt_rows = draw(st.lists(st.tuples(st.sampled_from(image_ids), st.integers(0, 1), box), max_size=8))
    difficult = draw(st.lists(st.booleans(), min_size=len(gt_rows), max_size=len(gt_rows)))
    det_rows = [[image, cls, *b, draw(st.sampled_from([0.2, 0.4, 0.6, 0.8]))]
                for image, cls, b in draw(st.lists(st.tuples(st.sampled_from(image_ids), st.integers(0, 1), box),
                                                   max_size=12))]
    return _dets(det_rows), _gts([[i, c, *b] for i, c, b in gt_rows], image_ids, difficult=difficult)


@settings(max_examples=200, deadline=None)
@given(scenes(), st.sampled_from([0.3, 0.5, 0.7]))
def test_voc_rule_equals_the_devkit_loop_on_random_scenes(scene, iou_threshold):
    _check_against_devkit(*scene, iou_threshold)


def test_the_rules_differ_on_some_random_scene():
    # The comparison above is not vacuous: on detector-like scenes the devkit meets taken boxes and the numbers move.
    rng = np.random.default_rng(0)
    gts, dets = [], []
    for image in range(20):
        for _ in range(4):
            x, y = rng.uniform(0, 60, 2)
            gts.append([image, 0, x, y, x + 20, y + 20])
            for _ in range(3):
                dets.append([image, 0, *(np.array([x, y, x + 20, y + 20]) + rng.normal(0, 3, 4)), rng.random()])
    dets, gts = _dets(dets), _gts(gts, range(20))
    assert devkit_matching(dets, gts, 0.5, 0, taken_is_fp=True)[4]
    assert compute_ap(dets, gts, match_rule="voc")["mAP50"] < compute_ap(dets, gts)["mAP50"]
    _check_against_devkit(dets, gts, 0.5, classes=(0,))


# --- files and the command line -----------------------------------------------------------------------------------


def _files(tmp_path):
    # GTS and DETS shifted by 20 px, so that the boxes read as xyxy only (as xywh they would leave the image)
    gt = {"images": [{"id": 1, "file_name": "a.png", "width": 32, "height": 32}],
          "annotations": [{"id": k + 1, "image_id": 1, "category_id": 0, "bbox": [v + 20 for v in g[2:]]}
                          for k, g in enumerate(GTS)],
          "categories": [{"id": 0, "name": "thing"}]}
    pred = [{"image_id": 1, "category_id": 0, "bbox": [v + 20 for v in d[2:6]], "score": d[6]} for d in DETS]
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "pred.json").write_text(json.dumps(pred))
    return tmp_path / "gt.json", tmp_path / "pred.json"


def test_metrics_state_the_match_rule(tmp_path):
    gt, pred = _files(tmp_path)
    default = score_detection_files(gt, pred, resamples=0)
    devkit = score_detection_files(gt, pred, match_rule="voc", resamples=0)
    assert default["match_rule"] == "coco" and devkit["match_rule"] == "voc"
    assert "pycocotools" in default["match_rule_description"] and "devkit" in devkit["match_rule_description"]
    assert default["mAP50"] == 1.0 and devkit["mAP50"] == pytest.approx(0.5)
    assert devkit["mAP50_coco"] == default["mAP50_coco"] == 1.0  # COCO numbers follow pycocotools either way


def test_cli_match_voc(tmp_path, capsys):
    gt, pred = _files(tmp_path)
    assert main(["eval", "detections", "--gt", str(gt), "--pred", str(pred), "--match", "voc", "--json",
                 "--resamples", "0"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["match_rule"] == "voc" and metrics["mAP50"] == pytest.approx(0.5)
    assert main(["eval", "detections", "--gt", str(gt), "--pred", str(pred), "--resamples", "0"]) == 0
    assert "mAP@0.5 (VOC all-point) 1.000" in capsys.readouterr().out
