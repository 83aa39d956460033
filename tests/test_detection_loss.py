import math

import pytest
import torch

from loclab.losses.detection import DetectionLoss
from loclab.ops.anchors import generate_anchors
from loclab.ops.boxes import BoxCoder
from loclab.ops.matching import match_batch

SIZES = (56, 28, 14)
ANCHOR_SIZES = ((16, 24, 32), (48, 64, 96), (96, 128, 192))


@pytest.fixture(scope="module")
def anchors():
    return torch.cat(generate_anchors(SIZES, ANCHOR_SIZES, 224))


def _batch():
    boxes = torch.tensor([[[10.0, 10, 30, 30], [60, 60, 140, 140]], [[20, 100, 200, 210], [0, 0, 0, 0]]])
    labels = torch.tensor([[0, 1], [2, -1]])
    valid = torch.tensor([[True, True], [True, False]])
    return boxes, labels, valid


def test_returns_all_terms_and_weighted_total(anchors):
    loss_fn = DetectionLoss(anchors, weight_obj=1, weight_cls=1, weight_loc=2)
    preds = torch.randn(2, anchors.shape[0], 8)
    out = loss_fn(preds, *_batch())
    assert set(out) == {"loss_obj", "loss_cls", "loss_loc", "loss_total"}
    expected = out["loss_obj"] + out["loss_cls"] + 2 * out["loss_loc"]
    assert torch.allclose(out["loss_total"], expected)


def test_perfect_predictions_have_near_zero_cls_and_loc(anchors):
    """Predictions built from the matcher's own targets: loc is exactly 0 and cls/obj are tiny."""
    coder = BoxCoder()
    boxes, labels, valid = _batch()
    matched_labels, matched_boxes, pos, neg = match_batch(anchors, boxes, labels, valid)
    preds = torch.zeros(2, anchors.shape[0], 8)
    preds[..., 4] = torch.where(pos, 20.0, -20.0)
    deltas = coder.encode(matched_boxes[pos], anchors.expand_as(matched_boxes)[pos])
    preds[..., :4][pos] = deltas
    cls_logits = torch.full((int(pos.sum()), 3), -20.0)
    cls_logits[torch.arange(cls_logits.shape[0]), matched_labels[pos] - 1] = 20.0
    preds[..., 5:][pos] = cls_logits
    out = DetectionLoss(anchors, box_coder=coder)(preds, boxes, labels, valid)
    assert out["loss_loc"].item() == pytest.approx(0.0, abs=1e-6)
    assert out["loss_cls"].item() < 1e-6 and out["loss_obj"].item() < 1e-6


def test_image_without_objects_is_finite_and_trains_negatives(anchors):
    loss_fn = DetectionLoss(anchors)
    preds = torch.randn(1, anchors.shape[0], 8, requires_grad=True)
    boxes, labels, valid = torch.zeros(1, 1, 4), torch.full((1, 1), -1), torch.zeros(1, 1, dtype=torch.bool)
    out = loss_fn(preds, boxes, labels, valid)
    assert all(math.isfinite(v.item()) for v in out.values())
    assert out["loss_cls"].item() == 0 and out["loss_loc"].item() == 0 and out["loss_obj"].item() > 0
    out["loss_total"].backward()
    assert torch.isfinite(preds.grad).all()


def test_hard_negative_quota_is_three_per_positive(anchors):
    loss_fn = DetectionLoss(anchors)
    boxes, labels, valid = _batch()
    _, _, pos, neg = match_batch(anchors, boxes, labels, valid)
    loss = torch.rand(2, anchors.shape[0])
    hard = loss_fn._hard_negatives(loss, pos, neg)
    assert (hard & ~neg).sum() == 0
    for b in range(2):
        assert hard[b].sum() == 3 * pos[b].sum()
        # the chosen ones are the highest-loss negatives
        chosen_min = loss[b][hard[b]].min()
        rest_max = loss[b][neg[b] & ~hard[b]].max()
        assert chosen_min >= rest_max


def test_box_no_anchor_can_match_trains_without_nan(anchors):
    """A 2x2 px box has IoU < min_best_iou with every anchor: no positive at all, still a finite loss."""
    loss_fn = DetectionLoss(anchors)
    boxes, labels, valid = torch.tensor([[[100.0, 100, 102, 102]]]), torch.tensor([[0]]), torch.tensor([[True]])
    _, _, pos, _ = match_batch(anchors, boxes, labels, valid)
    assert pos.sum() == 0
    preds = torch.randn(1, anchors.shape[0], 8, requires_grad=True)
    out = loss_fn(preds, boxes, labels, valid)
    assert all(math.isfinite(v.item()) for v in out.values())
    out["loss_total"].backward()
    assert torch.isfinite(preds.grad).all()
