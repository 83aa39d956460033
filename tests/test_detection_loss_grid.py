"""The grid-matched detection loss (loclab.losses.detection_grid) and its wiring through DetectorConfig.loss."""

import math

import pytest
import torch

from loclab.config import DetectorConfig
from loclab.engine.detection import AnchorSetup, make_loss
from loclab.errors import ConfigError
from loclab.losses.detection_grid import GridDetectionLoss
from loclab.ops.grid_matching import grid_match


@pytest.fixture(scope="module")
def loss_fn():
    cfg = DetectorConfig(loss="grid", weight_loc=1.0)
    loss = make_loss(cfg, AnchorSetup.from_config(cfg))
    assert isinstance(loss, GridDetectionLoss)
    return loss


def _batch():
    boxes = torch.tensor([[[10.0, 10, 30, 30], [60, 60, 140, 140]], [[20, 100, 200, 210], [0, 0, 0, 0]]])
    labels = torch.tensor([[0, 1], [2, -1]])
    valid = torch.tensor([[True, True], [True, False]])
    return boxes, labels, valid


def test_total_is_the_gain_weighted_sum_times_the_batch(loss_fn):
    preds = torch.randn(2, loss_fn.anchors.shape[0], 8)
    out = loss_fn(preds, *_batch())
    g_obj, g_cls, g_loc = loss_fn.gains
    assert (g_obj, g_cls, g_loc) == pytest.approx(((224 / 640) ** 2, 0.5, 0.05))  # YOLOv5's, at 224 px
    expected = 2 * (g_obj * out["loss_obj"] + g_cls * out["loss_cls"] + g_loc * out["loss_loc"])
    assert torch.allclose(out["loss_total"], expected)


def test_perfect_predictions_have_near_zero_terms(loss_fn):
    """Every positive decodes exactly onto its box, scores objectness 1 and its class: all three terms ~0."""
    boxes, labels, valid = _batch()
    pos, index = grid_match(loss_fn.anchors, loss_fn.strides, boxes, valid)
    targets = boxes.gather(1, index[..., None].expand(-1, -1, 4))
    preds = torch.zeros(2, loss_fn.anchors.shape[0], 8)
    preds[..., :4] = loss_fn.box_coder.encode(targets.clamp(min=0) + torch.tensor([0, 0, 1e-3, 1e-3]),
                                              loss_fn.anchors.expand_as(targets))
    preds[..., 4] = torch.where(pos, 30.0, -30.0)
    cls = torch.full((2, loss_fn.anchors.shape[0], 3), -30.0)
    cls.scatter_(2, labels.clamp(min=0).gather(1, index)[..., None], 30.0)
    preds[..., 5:] = cls
    out = loss_fn(preds, boxes, labels, valid)
    assert out["loss_loc"].item() < 1e-3 and out["loss_cls"].item() < 1e-6 and out["loss_obj"].item() < 1e-3


def test_objectness_target_is_the_box_quality(loss_fn):
    """A positive whose box is off learns a lower objectness than one whose box is right."""
    boxes, labels, valid = _batch()
    preds = torch.zeros(2, loss_fn.anchors.shape[0], 8, requires_grad=True)
    loss_fn(preds, boxes, labels, valid)["loss_total"].backward()
    pos, _ = grid_match(loss_fn.anchors, loss_fn.strides, boxes, valid)
    # logit 0 = objectness 0.5: negatives are pushed down; positives are pushed towards their (lower) IoU
    assert (preds.grad[..., 4][~pos] > 0).all()
    assert preds.grad[..., :4][pos].abs().sum() > 0 and preds.grad[..., :4][~pos].abs().sum() == 0


def test_image_without_objects_and_one_class(loss_fn):
    preds = torch.randn(1, loss_fn.anchors.shape[0], 8, requires_grad=True)
    out = loss_fn(preds, torch.zeros(1, 1, 4), torch.full((1, 1), -1), torch.zeros(1, 1, dtype=torch.bool))
    assert all(math.isfinite(v.item()) for v in out.values())
    assert out["loss_cls"].item() == 0 and out["loss_loc"].item() == 0 and out["loss_obj"].item() > 0
    out["loss_total"].backward()
    one = DetectorConfig(loss="grid", num_classes=1)
    single = make_loss(one, AnchorSetup.from_config(one))
    boxes, _, valid = _batch()
    out = single(torch.randn(2, single.anchors.shape[0], 6), boxes, torch.zeros(2, 2, dtype=torch.long), valid)
    assert out["loss_cls"].item() == 0  # one class: classification is objectness alone


def test_unknown_loss_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown detector loss 'yolo'"):
        DetectorConfig(loss="yolo")
