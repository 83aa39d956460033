"""GIoU and CIoU (loclab.ops.iou_losses) against their definitions written out for one pair of boxes."""

import math

import pytest
import torch

from loclab.ops.iou_losses import complete_iou, generalized_iou, paired_iou


def _slow(p, t):
    iw = max(0.0, min(p[2], t[2]) - max(p[0], t[0]))
    ih = max(0.0, min(p[3], t[3]) - max(p[1], t[1]))
    inter = iw * ih
    union = (p[2] - p[0]) * (p[3] - p[1]) + (t[2] - t[0]) * (t[3] - t[1]) - inter
    iou = inter / union
    cw, ch = max(p[2], t[2]) - min(p[0], t[0]), max(p[3], t[3]) - min(p[1], t[1])
    giou = iou - (cw * ch - union) / (cw * ch)
    rho2 = ((p[0] + p[2]) / 2 - (t[0] + t[2]) / 2) ** 2 + ((p[1] + p[3]) / 2 - (t[1] + t[3]) / 2) ** 2
    v = 4 / math.pi**2 * (math.atan((t[2] - t[0]) / (t[3] - t[1])) - math.atan((p[2] - p[0]) / (p[3] - p[1]))) ** 2
    alpha = v / (1 - iou + v) if v > 0 else 0.0
    return iou, giou, iou - rho2 / (cw**2 + ch**2) - alpha * v


@pytest.mark.parametrize("seed", range(5))
def test_match_the_formulas_on_random_pairs(seed):
    gen = torch.Generator().manual_seed(seed)
    xy = torch.rand(50, 2, 2, generator=gen, dtype=torch.float64) * 100
    wh = 1 + torch.rand(50, 2, 2, generator=gen, dtype=torch.float64) * 60
    pred, target = torch.cat([xy[:, 0], xy[:, 0] + wh[:, 0]], 1), torch.cat([xy[:, 1], xy[:, 1] + wh[:, 1]], 1)
    want = torch.tensor([_slow(p, t) for p, t in zip(pred.tolist(), target.tolist())], dtype=torch.float64)
    assert torch.allclose(paired_iou(pred, target), want[:, 0], atol=1e-6)
    assert torch.allclose(generalized_iou(pred, target), want[:, 1], atol=1e-6)
    assert torch.allclose(complete_iou(pred, target), want[:, 2], atol=1e-6)


def test_identical_boxes_score_one_and_disjoint_boxes_still_have_a_gradient():
    box = torch.tensor([[10.0, 20.0, 50.0, 40.0]])
    assert torch.allclose(complete_iou(box, box), torch.ones(1), atol=1e-5)
    assert torch.allclose(generalized_iou(box, box), torch.ones(1), atol=1e-5)
    far = torch.tensor([[100.0, 100.0, 120.0, 130.0]], requires_grad=True)
    for fn in (complete_iou, generalized_iou):
        value = fn(far, box)
        assert value.item() < 0
        (grad,) = torch.autograd.grad(value.sum(), far)
        assert grad.abs().sum() > 0
