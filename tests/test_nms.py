import importlib

import pytest
import torch

from loclab.ops import batched_nms, box_iou, nms

# The package re-exports the function nms, which shadows the submodule of the same name as an attribute.
nms_module = importlib.import_module("loclab.ops.nms")


def _reference_nms(boxes, scores, iou_threshold):
    """Slow, obviously-correct greedy NMS: a Python loop over boxes in decreasing score (stable on ties).

    IoU values come from box_iou (tested on its own in test_boxes.py) so both sides compare identical numbers.
    """
    iou = box_iou(boxes, boxes).tolist()
    order = sorted(range(len(scores)), key=lambda i: -scores[i].item())  # sorted() is stable
    keep = []
    for i in order:
        if all(iou[k][i] <= iou_threshold for k in keep):
            keep.append(i)
    return keep


def _reference_batched_nms(boxes, scores, class_ids, iou_threshold):
    keep = []
    for c in class_ids.unique().tolist():
        index = (class_ids == c).nonzero().flatten()
        keep += index[_reference_nms(boxes[index], scores[index], iou_threshold)].tolist()
    return sorted(keep, key=lambda i: (-scores[i].item(), i))


def _clustered_boxes(generator, n, clusters=4):
    # Boxes jittered around a few centres so that suppression actually happens.
    centres = torch.rand(clusters, 2, generator=generator) * 100
    pick = torch.randint(0, clusters, (n,), generator=generator)
    xy = centres[pick] + torch.randn(n, 2, generator=generator) * 4
    wh = 10 + torch.rand(n, 2, generator=generator) * 20
    return torch.cat((xy - wh / 2, xy + wh / 2), dim=1)


def _random_case(seed):
    g = torch.Generator().manual_seed(seed)
    n = int(torch.randint(0, 60, (1,), generator=g))
    boxes = _clustered_boxes(g, n)
    if seed % 4 == 0 and n > 3:
        boxes[1] = boxes[0]  # identical boxes
        boxes[3] = boxes[2]
    # Scores on a coarse grid: many exact ties, which must keep input order.
    scores = torch.randint(0, 10, (n,), generator=g).float() / 10
    threshold = [0.3, 0.5, 0.7][seed % 3]
    return boxes, scores, threshold


@pytest.mark.parametrize("seed", range(60))
def test_nms_matches_reference(seed):
    boxes, scores, threshold = _random_case(seed)
    keep = nms(boxes, scores, threshold)
    assert keep.dtype == torch.long
    assert keep.tolist() == _reference_nms(boxes, scores, threshold)


@pytest.mark.parametrize("seed", range(10))
def test_nms_matches_reference_across_chunks(seed, monkeypatch):
    # A tiny chunk size exercises the suppression by boxes kept in earlier chunks.
    monkeypatch.setattr(nms_module, "_CHUNK", 5)
    boxes, scores, threshold = _random_case(seed + 1000)
    assert nms(boxes, scores, threshold).tolist() == _reference_nms(boxes, scores, threshold)


def test_empty_input():
    keep = nms(torch.zeros(0, 4), torch.zeros(0), 0.5)
    assert keep.shape == (0,) and keep.dtype == torch.long
    assert batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5).shape == (0,)


def test_identical_boxes_and_equal_scores_keep_the_first():
    boxes = torch.tensor([[0.0, 0, 10, 10]] * 4)
    assert nms(boxes, torch.tensor([0.5, 0.9, 0.9, 0.1]), 0.5).tolist() == [1]
    assert nms(boxes, torch.ones(4), 0.99).tolist() == [0]


def test_threshold_is_strict():
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 5]])  # IoU exactly 0.5
    assert nms(boxes, torch.tensor([0.9, 0.8]), 0.5).tolist() == [0, 1]
    assert nms(boxes, torch.tensor([0.9, 0.8]), 0.49).tolist() == [0]


def test_suppression_chain_alternates():
    # Each box overlaps only its neighbours (IoU 0.6): greedy keeps 0, 2, 4, ... although every box but the first
    # overlaps a higher-scored box. Only a kept box suppresses, which a single matrix pass would get wrong.
    n = 40
    x = torch.arange(n, dtype=torch.float32) * 2.5
    boxes = torch.stack((x, torch.zeros(n), x + 10, torch.full((n,), 10.0)), dim=1)
    scores = torch.linspace(1, 0.1, n)
    keep = nms(boxes, scores, 0.5)
    assert keep.tolist() == _reference_nms(boxes, scores, 0.5)
    assert keep.tolist() == list(range(0, n, 2))  # shift 2.5 on width 10: IoU 0.6 with the next box, 0.33 after


def test_output_sorted_by_decreasing_score():
    boxes, scores, _ = _random_case(5)
    keep = nms(boxes, scores, 0.5)
    assert (scores[keep].diff() <= 0).all()


@pytest.mark.parametrize("seed", range(20))
def test_batched_nms_matches_per_class_loop(seed):
    boxes, scores, threshold = _random_case(seed + 2000)
    g = torch.Generator().manual_seed(seed)
    class_ids = torch.randint(0, 3, (boxes.shape[0],), generator=g)
    keep = batched_nms(boxes, scores, class_ids, threshold)
    assert keep.tolist() == _reference_batched_nms(boxes, scores, class_ids, threshold)


def test_batched_nms_never_suppresses_across_classes():
    boxes = torch.tensor([[0.0, 0, 10, 10]] * 3)
    keep = batched_nms(boxes, torch.tensor([0.9, 0.8, 0.7]), torch.tensor([0, 1, 0]), 0.5)
    assert keep.tolist() == [0, 1]
