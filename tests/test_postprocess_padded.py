"""The fixed-shape postprocessing of exported graphs gives postprocess_detections' detections, padded."""

import pytest
import torch

from loclab.ops.anchors import anchor_scale_index, generate_anchors
from loclab.ops.boxes import BoxCoder
from loclab.ops.postprocess import postprocess_detections
from loclab.ops.postprocess_padded import greedy_keep, postprocess_detections_padded

SIZE = 64
FEATURES = (16, 8, 4)
ANCHOR_SIZES = ((8.0, 12.0, 16.0), (24.0, 32.0, 48.0), (48.0, 64.0, 96.0))
CODER = BoxCoder((0.1, 0.2))


def _case(seed: int, batch: int, classes: int):
    g = torch.Generator().manual_seed(seed)
    anchors = torch.cat(generate_anchors(FEATURES, ANCHOR_SIZES, SIZE))
    predictions = torch.randn(batch, anchors.shape[0], 5 + classes, generator=g)
    return predictions, anchors


@pytest.mark.parametrize("seed, classes, threshold, top_k, max_det", [
    (0, 3, 0.01, 1000, 100),  # every image fills max_det: NMS, then the cut
    (1, 1, 0.3, 200, 20),
    (2, 1, 0.05, 5000, 300),  # top_k above the candidate count
    (3, 3, 0.6, 1000, 100),  # few candidates: fewer than max_det survive
    (4, 2, 0.999, 1000, 100),  # none above the threshold
])
def test_padded_equals_postprocess_detections(seed, classes, threshold, top_k, max_det):
    predictions, anchors = _case(seed, 3, classes)
    kwargs = dict(score_threshold=threshold, nms_iou=0.5, pre_nms_top_k=top_k, max_detections=max_det, image_size=SIZE)
    detections, counts = postprocess_detections_padded(predictions, anchors, CODER, **kwargs)
    expected = postprocess_detections(predictions, anchors, anchor_scale_index(FEATURES, 3), CODER, **kwargs)
    assert detections.shape == (3, min(max_det, top_k, anchors.shape[0] * classes), 6)
    assert counts.dtype == torch.int64
    for rows, count, ref in zip(detections, counts.tolist(), expected):
        assert count == len(ref.boxes)
        assert torch.equal(rows[:count, :4], ref.boxes)  # bit for bit: the same decode and the same IoUs
        assert torch.equal(rows[:count, 4], ref.scores)
        assert torch.equal(rows[:count, 5].long(), ref.labels)
        assert rows[count:].eq(0).all()


def test_batch_of_one_equals_its_row_in_a_batch():
    predictions, anchors = _case(5, 4, 3)
    kwargs = dict(score_threshold=0.05, nms_iou=0.45, pre_nms_top_k=300, max_detections=50, image_size=SIZE)
    batched, counts = postprocess_detections_padded(predictions, anchors, CODER, **kwargs)
    for b in range(4):
        single, count = postprocess_detections_padded(predictions[b:b + 1], anchors, CODER, **kwargs)
        assert torch.equal(single[0], batched[b]) and count.item() == counts[b].item()


def _reference_keep(suppresses, alive):
    """The greedy loop itself: visit in order, keep unless a kept earlier candidate suppresses it."""
    keep = []
    for i in range(len(alive)):
        keep.append(bool(alive[i]) and not any(keep[j] and bool(suppresses[j, i]) for j in range(i)))
    return keep


@pytest.mark.parametrize("seed", range(5))
def test_greedy_keep_matches_the_greedy_loop(seed):
    g = torch.Generator().manual_seed(seed)
    k = 40
    # Dense upper-triangular suppression: long chains, where the fixed point needs many rounds.
    suppresses = torch.triu(torch.rand(2, k, k, generator=g) < 0.3, diagonal=1)
    alive = torch.rand(2, k, generator=g) < 0.8
    keep = greedy_keep(suppresses, alive)
    assert [keep[b].tolist() for b in range(2)] == [_reference_keep(suppresses[b], alive[b]) for b in range(2)]
