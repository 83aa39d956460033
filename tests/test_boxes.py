import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from loclab.ops import (
    BoxCoder,
    box_area,
    box_center_size,
    box_iou,
    box_iou_numpy,
    box_iou_pair,
    compute_iou,
    cxcywh_to_xyxy,
    xywh_to_xyxy,
    xyxy_to_cxcywh,
    xyxy_to_xywh,
)


def _reference_iou(a, b):
    """Obviously-correct IoU of two (x1, y1, x2, y2) boxes in Python floats."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _random_boxes(n, generator, size=100.0):
    xy = torch.rand(n, 2, generator=generator, dtype=torch.float64) * size
    wh = torch.rand(n, 2, generator=generator, dtype=torch.float64) * size / 2
    return torch.cat((xy, xy + wh), dim=1)


def test_box_area_has_no_plus_one():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 5.0], [2.0, 3.0, 2.0, 7.0], [1.5, 1.5, 2.5, 4.0]])
    assert box_area(boxes).tolist() == [50.0, 0.0, 2.5]


@pytest.mark.parametrize(
    "box1, box2, expected",
    [
        ([0, 0, 10, 10], [0, 0, 10, 10], 1.0),
        ([0, 0, 2, 2], [1, 0, 3, 2], 2 / 6),  # half-shifted: inter 2, union 6
        ([0, 0, 4, 4], [1, 1, 3, 3], 4 / 16),  # nested
        ([0, 0, 10, 10], [10, 0, 20, 10], 0.0),  # touching edges
        ([0, 0, 10, 10], [20, 20, 30, 30], 0.0),  # disjoint
        ([0, 0, 10, 10], [0, 0, 10, 5], 0.5),
    ],
)
def test_box_iou_hand_computed(box1, box2, expected):
    iou = box_iou(torch.tensor([box1], dtype=torch.float64), torch.tensor([box2], dtype=torch.float64))
    assert iou.shape == (1, 1)
    assert iou.item() == pytest.approx(expected, abs=1e-12)
    assert box_iou_numpy(np.array([box1]), np.array([box2]))[0, 0] == pytest.approx(expected, abs=1e-12)
    assert box_iou_pair(box1, box2) == pytest.approx(expected, abs=1e-12)


def test_box_iou_matches_reference_on_random_boxes():
    g = torch.Generator().manual_seed(0)
    a, b = _random_boxes(13, g), _random_boxes(7, g)
    expected = torch.tensor([[_reference_iou(x, y) for y in b.tolist()] for x in a.tolist()], dtype=torch.float64)
    torch.testing.assert_close(box_iou(a, b), expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(box_iou(b, a), expected.T, rtol=0, atol=1e-12)  # symmetric
    np.testing.assert_allclose(box_iou_numpy(a.numpy(), b.numpy()), expected.numpy(), rtol=0, atol=1e-12)
    pairs = [[box_iou_pair(x, y) for y in b.tolist()] for x in a.tolist()]
    np.testing.assert_allclose(pairs, expected.numpy(), rtol=0, atol=1e-12)


def test_box_iou_batched_equals_one_image_at_a_time():
    g = torch.Generator().manual_seed(1)
    a = torch.stack([_random_boxes(6, g) for _ in range(3)]).float()  # [3, 6, 4]
    b = torch.stack([_random_boxes(4, g) for _ in range(3)]).float()
    batched = box_iou(a, b)
    assert batched.shape == (3, 6, 4)
    for k in range(3):
        assert torch.equal(batched[k], box_iou(a[k], b[k]))  # bit for bit: the same ops per image


def test_box_iou_empty_inputs():
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0]] * 3)
    assert box_iou(boxes[:0], boxes).shape == (0, 3)
    assert box_iou(boxes, boxes[:0]).shape == (3, 0)
    assert box_iou(boxes[:0], boxes[:0]).shape == (0, 0)


def test_box_iou_degenerate_boxes_give_zero_not_nan():
    degenerate = torch.tensor([[5.0, 5.0, 5.0, 5.0], [0.0, 0.0, 0.0, 10.0]])
    normal = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    iou = box_iou(torch.cat((degenerate, normal)), torch.cat((degenerate, normal)))
    assert torch.isfinite(iou).all()
    assert iou[:2, :2].eq(0).all()  # empty union
    assert iou[2, 2] == 1.0
    np.testing.assert_array_equal(box_iou_numpy(torch.cat((degenerate, normal)).numpy(),
                                                torch.cat((degenerate, normal)).numpy()), iou.numpy())
    assert box_iou_numpy(np.zeros((0, 4)), normal.numpy()).shape == (0, 1)


def test_box_iou_integer_boxes_give_float():
    iou = box_iou(torch.tensor([[0, 0, 2, 2]]), torch.tensor([[1, 0, 3, 2]]))
    assert iou.is_floating_point()
    assert iou.item() == pytest.approx(1 / 3)


def test_compute_iou_is_the_course_name_for_box_iou():
    assert compute_iou is box_iou


def test_format_conversions_round_trip():
    g = torch.Generator().manual_seed(1)
    boxes = _random_boxes(20, g).view(4, 5, 4)  # any leading dims
    torch.testing.assert_close(xywh_to_xyxy(xyxy_to_xywh(boxes)), boxes)
    torch.testing.assert_close(cxcywh_to_xyxy(xyxy_to_cxcywh(boxes)), boxes)
    assert xyxy_to_xywh(torch.tensor([1.0, 2.0, 4.0, 8.0])).tolist() == [1.0, 2.0, 3.0, 6.0]
    assert xyxy_to_cxcywh(torch.tensor([1.0, 2.0, 4.0, 8.0])).tolist() == [2.5, 5.0, 3.0, 6.0]
    cx, cy, w, h = box_center_size(torch.tensor([[0.0, 0.0, 4.0, 2.0]]))
    assert (cx.item(), cy.item(), w.item(), h.item()) == (2.0, 1.0, 4.0, 2.0)


def test_encode_hand_computed():
    anchor = torch.tensor([0.0, 0.0, 10.0, 20.0])  # centre (5, 10), size (10, 20)
    box = torch.tensor([2.0, 6.0, 22.0, 16.0])  # centre (12, 11), size (20, 10)
    deltas = BoxCoder().encode(box, anchor)
    torch.testing.assert_close(deltas, torch.tensor([0.7, 0.05, math.log(2.0), math.log(0.5)]))
    deltas = BoxCoder(variances=(0.1, 0.2)).encode(box, anchor)
    torch.testing.assert_close(deltas, torch.tensor([7.0, 0.5, math.log(2.0) / 0.2, math.log(0.5) / 0.2]))


@pytest.mark.parametrize("variances", [(1.0, 1.0), (0.1, 0.2)])
def test_decode_inverts_encode_with_batch_dims(variances):
    g = torch.Generator().manual_seed(2)
    coder = BoxCoder(variances)
    anchors = _random_boxes(50, g) + torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=torch.float64)  # positive size
    boxes = _random_boxes(3 * 50, g).view(3, 50, 4) + torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=torch.float64)
    deltas = coder.encode(boxes, anchors)  # anchors broadcast over the leading batch dim
    assert deltas.shape == (3, 50, 4)
    torch.testing.assert_close(coder.decode(deltas, anchors), boxes, rtol=0, atol=1e-9)
    torch.testing.assert_close(coder.encode(coder.decode(deltas, anchors), anchors), deltas, rtol=0, atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(
    anchor=st.tuples(*[st.floats(-300, 300)] * 2, *[st.floats(8, 400)] * 2),
    box=st.tuples(*[st.floats(-300, 300)] * 2, *[st.floats(1, 400)] * 2),
)
def test_round_trip_property(anchor, box):
    # Box at most 400/8 = 50 times its anchor: below the decode clamp (1000/16), so the round trip is exact.
    a = cxcywh_to_xyxy(torch.tensor(anchor, dtype=torch.float64))
    b = cxcywh_to_xyxy(torch.tensor(box, dtype=torch.float64))
    coder = BoxCoder((0.1, 0.2))
    torch.testing.assert_close(coder.decode(coder.encode(b, a), a), b, rtol=1e-9, atol=1e-9)


def test_decode_clamps_huge_sizes_instead_of_overflowing():
    anchor = torch.tensor([[0.0, 0.0, 16.0, 16.0]])
    deltas = torch.tensor([[0.0, 0.0, 1e4, -5.0]])
    box = BoxCoder().decode(deltas, anchor)
    assert torch.isfinite(box).all()
    _, _, w, h = box_center_size(box)
    assert w.item() == pytest.approx(1000.0, rel=1e-5)  # clamped at 1000/16 times the anchor width
    assert h.item() == pytest.approx(16 * math.exp(-5.0), rel=1e-5)  # small sizes are not clamped


def test_box_coder_rejects_bad_variances():
    with pytest.raises(ValueError):
        BoxCoder((0.0, 1.0))
