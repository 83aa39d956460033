import math

import pytest
import torch

from loclab.ops.anchors import generate_anchors

FEATURE_MAP_SIZES = (56, 28, 14)
ANCHOR_SIZES = ((16, 24, 32), (48, 64, 96), (96, 128, 192))


def test_none_and_unit_ratios_are_bit_identical_to_square_anchors():
    square = generate_anchors(FEATURE_MAP_SIZES, ANCHOR_SIZES)
    unit = generate_anchors(FEATURE_MAP_SIZES, ANCHOR_SIZES, aspect_ratios=((1.0,) * 3,) * 3)
    explicit_none = generate_anchors(FEATURE_MAP_SIZES, ANCHOR_SIZES, aspect_ratios=None)
    for a, b, c in zip(square, unit, explicit_none):
        assert torch.equal(a, b) and torch.equal(a, c)


def test_two_by_two_map_hand_computed():
    # 8 px image, 2x2 map: stride 4, centres 2 and 6; side 4 with ratio 4 -> 8 wide, 2 high; side 8 square.
    (anchors,) = generate_anchors([2], [[4, 8]], image_size=8, aspect_ratios=[[4.0, 1.0]])
    expected = torch.tensor(
        [
            [-2, 1, 6, 3], [-2, -2, 6, 6],  # i=0, j=0: centre (2, 2)
            [2, 1, 10, 3], [2, -2, 10, 6],  # i=0, j=1: centre (6, 2)
            [-2, 5, 6, 7], [-2, 2, 6, 10],  # i=1, j=0: centre (2, 6)
            [2, 5, 10, 7], [2, 2, 10, 10],  # i=1, j=1: centre (6, 6)
        ],
        dtype=torch.float32,
    )  # fmt: skip
    torch.testing.assert_close(anchors, expected, rtol=0, atol=0)


def test_ratio_sets_width_over_height_and_keeps_area_and_centre():
    ratios = ((0.5, 2.0, 3.0), (1.0, 0.25, 1.7), (4.0, 1.0, 0.6))
    anchors = generate_anchors(FEATURE_MAP_SIZES, ANCHOR_SIZES, aspect_ratios=ratios, dtype=torch.float64)
    square = generate_anchors(FEATURE_MAP_SIZES, ANCHOR_SIZES, dtype=torch.float64)
    for a, sq, sides, rs in zip(anchors, square, ANCHOR_SIZES, ratios):
        per_anchor = a.view(-1, len(sides), 4)
        w = per_anchor[..., 2] - per_anchor[..., 0]
        h = per_anchor[..., 3] - per_anchor[..., 1]
        torch.testing.assert_close(w / h, torch.tensor(rs, dtype=torch.float64).expand_as(w))
        torch.testing.assert_close(w * h, torch.tensor([s * s for s in sides], dtype=torch.float64).expand_as(w))
        torch.testing.assert_close((a[:, :2] + a[:, 2:]) / 2, (sq[:, :2] + sq[:, 2:]) / 2)
    # First cell (centre (2, 2)), side 24 with ratio 2: half width 12 * sqrt(2), half height 12 / sqrt(2).
    half_w, half_h = 12 * math.sqrt(2), 12 / math.sqrt(2)
    assert anchors[0][1].tolist() == pytest.approx([2 - half_w, 2 - half_h, 2 + half_w, 2 + half_h])


@pytest.mark.parametrize("ratios", [((1.0,),), ((1.0, 1.0),) * 2, ((1.0,), (0.0,)), ((1.0,), (-2.0,))])
def test_bad_ratios_are_rejected(ratios):
    with pytest.raises(ValueError):
        generate_anchors([4, 2], [[8], [16]], image_size=16, aspect_ratios=ratios)
