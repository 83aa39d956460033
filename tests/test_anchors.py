import pytest
import torch

from loclab.ops import anchor_scale_index, generate_anchors

FEATURE_MAP_SIZES = (56, 28, 14)
ANCHOR_SIZES = ((16, 24, 32), (48, 64, 96), (96, 128, 192))


def test_two_by_two_map_hand_computed():
    # 8 px image, 2x2 map: stride 4, centres 2 and 6; anchors of side 4 and 8, order (i, j, a).
    (anchors,) = generate_anchors([2], [[4, 8]], image_size=8)
    expected = torch.tensor(
        [
            [0, 0, 4, 4], [-2, -2, 6, 6],  # i=0, j=0: centre (2, 2)
            [4, 0, 8, 4], [2, -2, 10, 6],  # i=0, j=1: centre (6, 2)
            [0, 4, 4, 8], [-2, 2, 6, 10],  # i=1, j=0: centre (2, 6)
            [4, 4, 8, 8], [2, 2, 10, 10],  # i=1, j=1: centre (6, 6)
        ],
        dtype=torch.float32,
    )  # fmt: skip
    assert anchors.dtype == torch.float32
    torch.testing.assert_close(anchors, expected, rtol=0, atol=0)


def test_default_setup_counts_and_corner_anchors():
    anchors = generate_anchors(FEATURE_MAP_SIZES, ANCHOR_SIZES, image_size=224)
    assert [a.shape for a in anchors] == [(56 * 56 * 3, 4), (28 * 28 * 3, 4), (14 * 14 * 3, 4)]
    # (first anchor, last anchor) per scale; strides 4, 8, 16; first centre stride/2, last 224 - stride/2.
    expected = [
        ([-6, -6, 10, 10], [206, 206, 238, 238]),  # centre 2, side 16 / centre 222, side 32
        ([-20, -20, 28, 28], [172, 172, 268, 268]),  # centre 4, side 48 / centre 220, side 96
        ([-40, -40, 56, 56], [120, 120, 312, 312]),  # centre 8, side 96 / centre 216, side 192
    ]
    for a, (first, last) in zip(anchors, expected):
        assert a[0].tolist() == first
        assert a[-1].tolist() == last


def test_row_major_order_over_row_column_anchor():
    (s1,) = generate_anchors([56], [[16, 24, 32]])
    i, j, a = 1, 2, 1
    # Row i sets y, column j sets x: centre (x, y) = ((2 + 0.5) * 4, (1 + 0.5) * 4) = (10, 6), side 24.
    assert s1[(i * 56 + j) * 3 + a].tolist() == [-2, -6, 22, 18]


def test_order_matches_the_head_reshape_convention():
    # A head output [B, A*(5+C), H, W] reshaped as in docs/architecture.md must put anchor k's prediction at k.
    size, num_anchors, channels = 5, 3, 4
    (anchors,) = generate_anchors([size], [[8, 16, 24]], image_size=40)
    head = torch.zeros(1, num_anchors * channels, size, size)
    for a in range(num_anchors):  # encode (a, i, j) in the first three channels of anchor a
        ii, jj = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        head[0, a * channels + 0] = a
        head[0, a * channels + 1] = ii
        head[0, a * channels + 2] = jj
    flat = head.view(1, num_anchors, channels, size, size).permute(0, 3, 4, 1, 2).reshape(1, -1, channels)[0]
    stride, sides = 40 / size, torch.tensor([8.0, 16.0, 24.0])
    centre_x = (flat[:, 2] + 0.5) * stride
    centre_y = (flat[:, 1] + 0.5) * stride
    side = sides[flat[:, 0].long()]
    expected = torch.stack((centre_x - side / 2, centre_y - side / 2, centre_x + side / 2, centre_y + side / 2), 1)
    torch.testing.assert_close(anchors, expected)


def test_anchors_are_not_clipped_and_stride_may_be_fractional():
    anchors = torch.cat(generate_anchors(FEATURE_MAP_SIZES, ANCHOR_SIZES))
    assert anchors.min() < 0 and anchors.max() > 224
    (odd,) = generate_anchors([3], [[10]], image_size=224)  # stride 74.67
    centres = (odd[:, 0] + odd[:, 2]) / 2
    torch.testing.assert_close(centres, torch.tensor([224 / 6, 224 / 2, 224 * 5 / 6] * 3))


def test_anchor_scale_index_follows_concatenation_order():
    index = anchor_scale_index(FEATURE_MAP_SIZES, 3)
    anchors = generate_anchors(FEATURE_MAP_SIZES, ANCHOR_SIZES)
    assert index.dtype == torch.long
    assert index.shape[0] == sum(a.shape[0] for a in anchors)
    assert torch.bincount(index).tolist() == [9408, 2352, 588]
    assert (index.diff() >= 0).all()  # scale 0 block, then 1, then 2
    assert anchor_scale_index([2, 1], [1, 2]).tolist() == [0, 0, 0, 0, 1, 1]


def test_mismatched_lengths_are_rejected():
    with pytest.raises(ValueError):
        generate_anchors([56, 28], [[16]])
    with pytest.raises(ValueError):
        anchor_scale_index([56, 28], [3])
