"""Size buckets, scale specialisation and anchor coverage on hand-built cases, plus slow loop references."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from loclab.analysis.coverage import anchor_coverage, anchors_at_box_centres
from loclab.analysis.scale import scale_specialisation
from loclab.analysis.sizes import SIZE_BUCKETS, object_size_distribution, size_bucket
from loclab.data.formats_detection import load_detection_annotations
from loclab.metrics.ap_matching import Detections, GroundTruth
from loclab.ops.anchors import generate_anchors
from loclab.ops.matching import match_anchors_to_targets


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Small tensors: on a busy 2-core machine a second torch thread mostly waits (10x slower here), so one."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _squares(sides):
    return np.array([[0, 0, s, s] for s in sides], dtype=np.float64)


# --- size buckets -------------------------------------------------------------------------------------------------


def test_size_bucket_edges_separate_the_shape_classes():
    sides = [16, 32, 39.9, 40, 48, 94, 95.9, 96, 192]
    expected = [0, 0, 0, 1, 1, 1, 1, 2, 2]  # a 96 px box (square or triangle) is large
    assert size_bucket(_squares(sides)).tolist() == expected
    as_tensor = size_bucket(torch.tensor(_squares(sides), dtype=torch.float32))
    assert as_tensor.dtype == torch.int64 and as_tensor.tolist() == expected
    assert size_bucket(np.zeros((0, 4))).shape == (0,)


def test_object_size_distribution_counts_and_summaries(tmp_path):
    boxes = {0: [[0, 0, 16, 16], [10, 10, 42, 42]], 1: [[0, 0, 48, 48], [0, 0, 96, 96]], 2: [[0, 0, 192, 192]]}
    anns = [{"id": i, "image_id": 0, "category_id": c, "bbox": b}
            for i, (c, b) in enumerate((c, b) for c, bs in boxes.items() for b in bs)]
    file = tmp_path / "val_annotations.json"
    file.write_text(json.dumps({
        "images": [{"id": 0, "file_name": "000000.png", "width": 224, "height": 224}], "annotations": anns,
        "categories": [{"id": 0, "name": "circle"}, {"id": 1, "name": "square"}, {"id": 2, "name": "triangle"}]}))
    sizes = object_size_distribution(load_detection_annotations(file, box_format="xyxy", check_images=False))
    assert sizes["bucket_counts"] == {"small": 2, "medium": 1, "large": 2}
    circle, square = sizes["per_class"]["circle"], sizes["per_class"]["square"]
    assert circle["sqrt_area"] == [16.0, 32.0] and (circle["min"], circle["median"], circle["max"]) == (16, 24, 32)
    assert square["bucket_counts"] == {"small": 0, "medium": 1, "large": 1}
    assert sizes["per_class"]["triangle"]["count"] == 1


# --- scale specialisation -----------------------------------------------------------------------------------------

# Ground truth: image 0 circle (20 px, small), square (70 px, medium), triangle (150 px, large);
# image 1 circle (24 px, small), square (60 px, medium).
GT = GroundTruth(
    image_id=[0, 0, 0, 1, 1],
    category_id=[0, 1, 2, 0, 1],
    boxes=[[10, 10, 30, 30], [50, 50, 120, 120], [0, 70, 150, 220], [100, 100, 124, 124], [10, 10, 70, 70]],
    image_ids=[0, 1],
)
# (image, class, box, score, scale) and what each detection is in the joint AP@0.5 matching.
DETS = [
    (0, 0, [10, 10, 30, 30], 0.9, 0),  # TP small by S1, confident
    (0, 1, [50, 50, 120, 120], 0.8, 1),  # TP medium by S2, confident
    (0, 2, [0, 72, 150, 220], 0.3, 2),  # TP large by S3, low score
    (0, 0, [11, 10, 30, 30], 0.7, 1),  # duplicate of the circle: FP jointly, but S2 alone would find it
    (1, 0, [100, 100, 124, 124], 0.6, 0),  # TP small by S1, confident
    (1, 1, [40, 40, 100, 100], 0.95, 1),  # FP (IoU 0.29 with the square)
    (1, 1, [10, 10, 70, 70], 0.2, 2),  # TP medium by S3, low score
]


def _dets():
    image, cls, boxes, scores, scales = zip(*DETS)
    return Detections(image, cls, boxes, scores), np.array(scales)


def test_scale_table_on_a_hand_built_case():
    dets, scales = _dets()
    table = scale_specialisation(dets, scales, GT)
    assert table["score_threshold"] == 0.5 and table["headline"] == "confident"
    assert table["gt_per_bucket"] == [2, 2, 1]
    confident, every = table["confident"], table["all"]
    assert confident["tp_counts"] == [[2, 0, 0], [0, 1, 0], [0, 0, 0]]
    assert every["tp_counts"] == [[2, 0, 0], [0, 1, 0], [0, 1, 1]]
    assert confident["num_tp"] == 3 and every["num_tp"] == 5
    assert every["tp_share"] == [[1.0, 0.0, 0.0], [0.0, 0.5, 0.0], [0.0, 0.5, 1.0]]
    assert confident["tp_share"][0][2] is None  # no confident TP of a large object: undefined share
    # Per-head recall uses a separate matching per head: S2's duplicate circle counts for S2 alone.
    assert confident["recall"] == [[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 0.0]]
    assert every["recall"] == [[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 0.5, 1.0]]
    assert confident["recall_all_scales"] == [1.0, 0.5, 0.0]
    assert every["recall_all_scales"] == [1.0, 1.0, 1.0]
    assert confident["detections_per_scale"] == [2, 3, 0]
    json.dumps(table, allow_nan=False)  # JSON-ready


def test_scale_table_threshold_and_input_checks():
    dets, scales = _dets()
    assert scale_specialisation(dets, scales, GT, score_threshold=0.0)["confident"]["tp_counts"] == \
        [[2, 0, 0], [0, 1, 0], [0, 1, 1]]
    with pytest.raises(ValueError, match="scales"):
        scale_specialisation(dets, scales[:-1], GT)
    with pytest.raises(ValueError, match="0..2"):
        scale_specialisation(dets, scales + 1, GT)


# --- anchor coverage ----------------------------------------------------------------------------------------------


def test_coverage_hand_built_case():
    # 64 px image: S1 4x4 cells of 16 px anchors, S2 2x2 cells of 32 px anchors.
    anchors = generate_anchors((4, 2), ((16,), (32,)), image_size=64)
    boxes = [torch.tensor([[0.0, 0, 16, 16]]), torch.zeros(0, 4), torch.tensor([[32.0, 32, 64, 64]])]
    cov = anchor_coverage(boxes, anchors)
    per_gt = cov["per_gt"]
    assert per_gt["best_iou_per_scale"] == [[1.0, 0.25], [0.25, 1.0]]  # a gt equal to an anchor: best IoU 1
    assert per_gt["best_iou"] == [1.0, 1.0] and per_gt["best_scale"] == [0, 1]
    assert per_gt["bucket"] == [0, 0] and cov["gt_per_bucket"] == [2, 0, 0]
    assert per_gt["num_positives"] == [1, 1]
    assert cov["positives_per_gt"]["mean_per_scale_bucket"] == [[0.5, None, None], [0.5, None, None]]
    bpr = cov["best_possible_recall"]
    assert bpr["per_scale_bucket"] == [[0.5, None, None], [0.5, None, None]]
    assert bpr["per_bucket"] == [1.0, None, None] and bpr["overall"] == 1.0
    assert cov["anchor_sizes"] == [[16.0], [32.0]]
    assert sum(cov["histograms"]["all_scales_per_bucket"][0]) == 2
    json.dumps(cov, allow_nan=False)


def _iou_by_hand(box, anchors):
    """IoU of one xyxy box with each anchor, written out from the definition (no shared code with ops)."""
    w = np.clip(np.minimum(box[2], anchors[:, 2]) - np.maximum(box[0], anchors[:, 0]), 0, None)
    h = np.clip(np.minimum(box[3], anchors[:, 3]) - np.maximum(box[1], anchors[:, 1]), 0, None)
    inter = w * h
    area = (box[2] - box[0]) * (box[3] - box[1])
    return inter / (area + (anchors[:, 2] - anchors[:, 0]) * (anchors[:, 3] - anchors[:, 1]) - inter)


def test_coverage_matches_loop_reference_on_default_anchors():
    anchors = generate_anchors((56, 28, 14), ((16, 24, 32), (48, 64, 96), (96, 128, 192)))
    gen = torch.Generator().manual_seed(0)
    images = []
    for n in (3, 5, 0, 2):
        centre = torch.rand(n, 2, generator=gen) * 224
        side = 16 + torch.rand(n, 1, generator=gen) * 176
        images.append(torch.cat([centre - side / 2, centre + side / 2], dim=1))
    cov = anchor_coverage(images, anchors)
    all_anchors = torch.cat(anchors)
    k = 0
    for boxes in images:
        labels = torch.arange(len(boxes))
        matched, _, pos, _ = match_anchors_to_targets(all_anchors, boxes, labels)
        for g, box in enumerate(boxes):
            for s, scale_anchors in enumerate(anchors):
                best = _iou_by_hand(box.numpy(), scale_anchors.numpy()).max()
                assert cov["per_gt"]["best_iou_per_scale"][s][k] == pytest.approx(best, abs=1e-4)
            assert cov["per_gt"]["num_positives"][k] == int((matched[pos] == g + 1).sum())
            k += 1
    assert cov["num_gt"] == k == 10


def test_anchors_at_box_centres_picks_the_cell_of_each_centre():
    anchors = generate_anchors((56, 28), ((16, 24), (48, 64)))
    boxes = torch.tensor([[0.0, 0, 10, 10], [100, 60, 140, 100]])  # centres (5, 5) and (120, 80)
    s1, s2 = anchors_at_box_centres(anchors, (56, 28), 224, boxes)
    assert s1.shape == (4, 4) and s2.shape == (4, 4)
    centres = (s1[:, :2] + s1[:, 2:]) / 2
    assert centres.tolist() == [[6, 6], [6, 6], [122, 82], [122, 82]]  # stride 4: cells (1, 1) and (30, 20)
    assert (s2[2:, 2] - s2[2:, 0]).tolist() == [48, 64]


def test_analysis_modules_do_not_import_matplotlib():
    code = ("import sys, loclab.analysis.sizes, loclab.analysis.scale, loclab.analysis.coverage, "
            "loclab.evaluation.detection; assert 'matplotlib' not in sys.modules, 'matplotlib imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_bucket_names():
    assert SIZE_BUCKETS == ("small", "medium", "large")
