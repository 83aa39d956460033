"""Heatmap encode/decode: the pixel-centre convention, exact peaks, and round trips at 32, 64 and 128."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from loclab.ops.heatmaps import (
    decode_heatmaps_argmax,
    decode_heatmaps_subpixel,
    encode_heatmaps,
    extract_keypoints_from_heatmaps,
    heatmap_to_image_coords,
    keypoints_to_heatmap_coords,
)

IMAGE_SIZE = 128
SUBPIXEL_TOLERANCE_PX = 0.01  # log-parabola decoding is exact for Gaussian targets up to float32 rounding


def reference_heatmap(x: float, y: float, image_size: int, heatmap_size: int, sigma: float) -> torch.Tensor:
    """Obviously-correct loop version of one Gaussian heatmap."""
    s = image_size / heatmap_size
    cx, cy = (x + 0.5) / s - 0.5, (y + 0.5) / s - 0.5
    out = torch.empty(heatmap_size, heatmap_size)
    for v in range(heatmap_size):
        for u in range(heatmap_size):
            out[v, u] = math.exp(-((u - cx) ** 2 + (v - cy) ** 2) / (2 * sigma**2))
    return out


def test_coordinate_maps_follow_the_pixel_centre_convention():
    kp = torch.tensor([[0.0, 0.0], [1.0, 127.0], [63.5, 2.25]])
    # 128 px over 64 cells: stride 2, cell u centred at image x = 2u + 0.5.
    expected = torch.tensor([[-0.25, -0.25], [0.25, 63.25], [31.5, 0.875]])
    assert torch.allclose(keypoints_to_heatmap_coords(kp, 128, 64), expected)
    assert torch.allclose(heatmap_to_image_coords(torch.tensor([[0.0, 63.0]]), 128, 64), torch.tensor([[0.5, 126.5]]))
    assert torch.equal(keypoints_to_heatmap_coords(kp, 128, 128), kp)  # stride 1: identity
    for size in (32, 64, 128):
        back = heatmap_to_image_coords(keypoints_to_heatmap_coords(kp, 128, size), 128, size)
        assert torch.allclose(back, kp, atol=1e-5)


@pytest.mark.parametrize("heatmap_size", [32, 64, 128])
def test_encode_matches_loop_reference(heatmap_size):
    kp = torch.tensor([[10.0, 20.0], [77.3, 5.9], [127.0, 0.0]])
    maps = encode_heatmaps(kp, IMAGE_SIZE, heatmap_size, sigma=2.0)
    assert maps.shape == (3, heatmap_size, heatmap_size) and maps.dtype == torch.float32
    for k, (x, y) in enumerate(kp.tolist()):
        assert torch.allclose(maps[k], reference_heatmap(x, y, IMAGE_SIZE, heatmap_size, 2.0), atol=1e-6)


@pytest.mark.parametrize("heatmap_size", [32, 64, 128])
def test_peak_is_exactly_one_at_a_cell_centre(heatmap_size):
    s = IMAGE_SIZE / heatmap_size
    cells = torch.tensor([[3, 7], [heatmap_size // 2, 1], [heatmap_size - 2, heatmap_size - 3]])
    kp = (cells + 0.5) * s - 0.5  # image coordinates of those cell centres
    maps = encode_heatmaps(kp, IMAGE_SIZE, heatmap_size, sigma=1.5)
    for k, (u, v) in enumerate(cells.tolist()):
        assert maps[k, v, u].item() == 1.0
        assert maps[k].max().item() == 1.0
    decoded, maxvals = decode_heatmaps_argmax(maps, IMAGE_SIZE)
    assert torch.allclose(decoded, kp) and torch.all(maxvals == 1.0)


def test_integer_keypoints_are_accepted():
    maps = encode_heatmaps(torch.tensor([[5, 9]]), IMAGE_SIZE, 128, sigma=2.0)
    assert maps.dtype == torch.float32 and maps[0, 9, 5].item() == 1.0


def test_batch_dimensions_and_batch_of_one():
    kp = torch.rand(2, 3, 5, 2, generator=torch.Generator().manual_seed(1)) * 120
    maps = encode_heatmaps(kp, IMAGE_SIZE, 32, sigma=2.0)
    assert maps.shape == (2, 3, 5, 32, 32)
    assert torch.equal(maps[1, 2], encode_heatmaps(kp[1, 2], IMAGE_SIZE, 32, sigma=2.0))
    for decode in (decode_heatmaps_argmax, decode_heatmaps_subpixel):
        coords, maxvals = decode(maps, IMAGE_SIZE)
        assert coords.shape == (2, 3, 5, 2) and maxvals.shape == (2, 3, 5)
        single, _ = decode(maps[1, 2], IMAGE_SIZE)
        assert torch.equal(coords[1, 2], single)


@pytest.mark.parametrize("heatmap_size", [32, 64, 128])
@pytest.mark.parametrize("sigma", [1.0, 2.0, 3.0])
def test_round_trip_integer_and_fractional_keypoints(heatmap_size, sigma):
    s = IMAGE_SIZE / heatmap_size
    g = torch.Generator().manual_seed(heatmap_size)
    margin = 2 * s  # subpixel refinement needs the argmax off the heatmap border
    fractional = torch.rand(200, 5, 2, generator=g) * (IMAGE_SIZE - 1 - 2 * margin) + margin
    for kp in (fractional, fractional.round()):
        maps = encode_heatmaps(kp, IMAGE_SIZE, heatmap_size, sigma)
        coarse, _ = decode_heatmaps_argmax(maps, IMAGE_SIZE)
        assert (coarse - kp).abs().max().item() <= s / 2 + 1e-4
        fine, _ = decode_heatmaps_subpixel(maps, IMAGE_SIZE)
        assert (fine - kp).abs().max().item() <= SUBPIXEL_TOLERANCE_PX


@settings(max_examples=60, deadline=None)
@given(
    x=st.floats(0, IMAGE_SIZE - 1),
    y=st.floats(0, IMAGE_SIZE - 1),
    heatmap_size=st.sampled_from([32, 64, 128]),
)
def test_argmax_round_trip_anywhere_in_the_image(x, y, heatmap_size):
    s = IMAGE_SIZE / heatmap_size
    kp = torch.tensor([[x, y]])
    maps = encode_heatmaps(kp, IMAGE_SIZE, heatmap_size, sigma=2.0)
    for decode in (decode_heatmaps_argmax, decode_heatmaps_subpixel):
        coords, _ = decode(maps, IMAGE_SIZE)
        # Up to half a stride, plus float32 rounding of the mapped coordinates.
        assert (coords - kp).abs().max().item() <= s / 2 + 1e-3


def test_subpixel_falls_back_to_argmax_at_the_border_and_for_non_positive_maps():
    maps = encode_heatmaps(torch.tensor([[0.0, 60.0]]), IMAGE_SIZE, 32, sigma=2.0)
    coarse, _ = decode_heatmaps_argmax(maps, IMAGE_SIZE)
    fine, _ = decode_heatmaps_subpixel(maps, IMAGE_SIZE)
    assert fine[0, 0] == coarse[0, 0]  # argmax column 0 is on the border: no refinement in x
    assert abs(fine[0, 1].item() - 60.0) <= SUBPIXEL_TOLERANCE_PX  # y is interior

    logits = torch.randn(4, 5, 64, 64, generator=torch.Generator().manual_seed(0))
    coords, _ = decode_heatmaps_subpixel(logits, IMAGE_SIZE)
    assert torch.isfinite(coords).all()
    assert coords.min() >= -0.5 and coords.max() <= IMAGE_SIZE - 0.5
    flat = torch.zeros(1, 16, 16)  # all ties: first cell, no offset
    assert torch.equal(decode_heatmaps_subpixel(flat, 64)[0], decode_heatmaps_argmax(flat, 64)[0])


def test_argmax_ties_take_the_first_maximum_and_report_maxvals():
    maps = torch.zeros(1, 2, 8, 8)
    maps[0, 0, 2, 5] = 0.7
    maps[0, 1, 1, 1] = maps[0, 1, 6, 6] = 0.9
    coords, maxvals = decode_heatmaps_argmax(maps, 8)
    assert coords.tolist() == [[[5.0, 2.0], [1.0, 1.0]]]
    assert torch.allclose(maxvals, torch.tensor([[0.7, 0.9]]))


def test_course_name_is_the_argmax_decoder():
    assert extract_keypoints_from_heatmaps is decode_heatmaps_argmax
