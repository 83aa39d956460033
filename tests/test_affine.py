"""Top-down crop transforms (ops/affine.py) and image warping (data/crops.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from loclab.data.crops import instance_transform, warp_image
from loclab.ops.affine import (
    apply_affine,
    crop_transform,
    crop_transforms,
    invert_affine,
    is_identity,
    transform_scale,
)

IDENTITY = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64)


def _random_crop(generator: torch.Generator) -> tuple[list[float], tuple[int, int], dict]:
    def uniform(lo: float, hi: float) -> float:
        return lo + (hi - lo) * torch.rand((), generator=generator, dtype=torch.float64).item()

    x1, y1 = uniform(-20, 300), uniform(-20, 200)
    box = [x1, y1, x1 + uniform(5, 200), y1 + uniform(5, 200)]
    size = (16 * int(uniform(2, 17)), 16 * int(uniform(2, 17)))
    augment = {"padding": uniform(1.0, 1.5), "scale": uniform(0.75, 1.25), "rotation_deg": uniform(-45, 45),
               "shift": (uniform(-0.2, 0.2), uniform(-0.2, 0.2)), "flip": bool(uniform(0, 1) < 0.5)}
    return box, size, augment


def _slow_reference(box, size, *, padding=1.0, scale=1.0, rotation_deg=0.0, shift=(0.0, 0.0), flip=False):
    """The crop as a product of 3x3 matrices, written out step by step in numpy float64."""
    x1, y1, x2, y2 = box
    w_in, h_in = size
    width, height = x2 - x1, y2 - y1
    aspect = w_in / h_in
    if width / height > aspect:
        height = width / aspect
    else:
        width = height * aspect
    width, height = width * padding * scale, height * padding * scale
    centre = np.array([(x1 + x2) / 2 - 0.5 + shift[0] * width, (y1 + y2) / 2 - 0.5 + shift[1] * height])
    to_origin = np.array([[1, 0, -centre[0]], [0, 1, -centre[1]], [0, 0, 1]], dtype=float)
    theta = math.radians(rotation_deg)
    # counter-clockwise on screen with y pointing down
    rotate = np.array([[math.cos(theta), math.sin(theta), 0], [-math.sin(theta), math.cos(theta), 0], [0, 0, 1]])
    k = w_in / width
    zoom = np.diag([k, k, 1.0])
    mirror = np.diag([-1.0 if flip else 1.0, 1.0, 1.0])
    to_input = np.array([[1, 0, (w_in - 1) / 2], [0, 1, (h_in - 1) / 2], [0, 0, 1]], dtype=float)
    return (to_input @ mirror @ zoom @ rotate @ to_origin)[:2]


def test_whole_square_image_is_the_bitwise_identity():
    for size in (32, 64, 128, 224):
        m = crop_transform([0, 0, size, size], (size, size))
        assert m.dtype == torch.float64 and torch.equal(m, IDENTITY)
        assert torch.equal(m.view(torch.int64), IDENTITY.view(torch.int64))  # +0.0 everywhere, not -0.0
        assert is_identity(m) and torch.equal(invert_affine(m).view(torch.int64), IDENTITY.view(torch.int64))
    points = torch.rand(7, 5, 2) * 128 - 0.5
    assert torch.equal(apply_affine(points, crop_transform([0, 0, 128, 128], (128, 128))), points)
    assert not is_identity(crop_transform([0, 0, 128, 128], (128, 128), flip=True))


def test_matches_slow_reference():
    generator = torch.Generator().manual_seed(0)
    for _ in range(200):
        box, size, augment = _random_crop(generator)
        m = crop_transform(box, size, **augment)
        np.testing.assert_allclose(m.numpy(), _slow_reference(box, size, **augment), rtol=1e-12, atol=1e-9)


def test_round_trip_image_input_image():
    generator = torch.Generator().manual_seed(1)
    for _ in range(100):
        box, size, augment = _random_crop(generator)
        m = crop_transform(box, size, **augment)
        points = torch.rand(20, 2, generator=generator) * 600 - 50
        back = apply_affine(apply_affine(points, m), invert_affine(m))
        assert (back - points).abs().max() < 1e-4
        composed = apply_affine(apply_affine(points.double(), invert_affine(m)), m)
        assert (composed - points.double()).abs().max() < 1e-9


def test_aspect_is_preserved_and_box_fits_centred():
    # a tall box into a wide input: one scale factor on both axes, the whole box visible and centred
    box, size = [10.0, 20.0, 50.0, 140.0], (96, 64)
    m = crop_transform(box, size)
    assert m[0, 0].item() == pytest.approx(m[1, 1].item()) and m[0, 1] == 0 and m[1, 0] == 0
    corners = torch.tensor([[10.0, 20.0], [50.0, 140.0]]) - 0.5  # box corners in pixel-centre coordinates
    mapped = apply_affine(corners, m)
    assert mapped[:, 1].tolist() == pytest.approx([-0.5, 63.5])  # the long side fills the input height
    assert (mapped[0, 0] + mapped[1, 0]).item() / 2 == pytest.approx((96 - 1) / 2)  # centred horizontally
    assert transform_scale(m).item() == pytest.approx(64 / 120)
    # padding and scale shrink the content about the same centre
    padded = crop_transform(box, size, padding=1.25, scale=1.2)
    assert transform_scale(padded).item() == pytest.approx(64 / 120 / 1.5)
    centre = torch.tensor([[29.5, 79.5]])
    assert apply_affine(centre, padded).tolist()[0] == pytest.approx([47.5, 31.5])


def test_flip_mirrors_about_the_input_centre_line():
    box, size = [3.0, 7.0, 83.0, 47.0], (64, 32)
    points = torch.tensor([[10.0, 12.0], [50.0, 30.0]])
    plain, flipped = apply_affine(points, crop_transform(box, size)), apply_affine(points, crop_transform(box, size, flip=True))
    assert torch.allclose(flipped[:, 0], size[0] - 1 - plain[:, 0]) and torch.allclose(flipped[:, 1], plain[:, 1])


def test_batched_forms_equal_the_single_ones():
    boxes = torch.tensor([[0.0, 0.0, 40.0, 80.0], [5.0, 5.0, 25.0, 15.0], [1.0, 2.0, 3.0, 4.0]])
    many = crop_transforms(boxes, (48, 64), padding=1.25, rotation_deg=[0.0, 10.0, -20.0], flip=[False, True, False])
    for i, box in enumerate(boxes):
        single = crop_transform(box, (48, 64), padding=1.25, rotation_deg=[0.0, 10.0, -20.0][i], flip=i == 1)
        assert torch.equal(many[i], single)
        assert torch.equal(invert_affine(many)[i], invert_affine(single))
    points = torch.rand(3, 5, 2) * 50
    batched = apply_affine(points, many)
    for i in range(3):
        assert torch.equal(batched[i], apply_affine(points[i], many[i]))
    assert crop_transforms(torch.zeros(0, 4), (8, 8)).shape == (0, 2, 3)


def test_bad_arguments():
    with pytest.raises(ValueError, match="x1 < x2"):
        crop_transform([5, 0, 5, 10], (8, 8))
    with pytest.raises(ValueError, match="singular"):
        invert_affine(torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"\[M, \.\.\., 2\]"):
        apply_affine(torch.zeros(2, 5, 2), torch.zeros(3, 2, 3))


# ------------------------------------------------------------------------------------------------ warping


def test_identity_warp_returns_the_array_itself():
    pixels = np.random.default_rng(0).integers(0, 256, (128, 128), dtype=np.uint8)
    assert warp_image(pixels, crop_transform([0, 0, 128, 128], (128, 128)), (128, 128)) is pixels
    m = instance_transform([0, 0, 128, 128], 128, 128, (128, 128), padding=1.25)  # whole images are not padded
    assert warp_image(pixels, m, (128, 128)) is pixels


def _centroid(image: np.ndarray) -> tuple[float, float]:
    weights = image.astype(np.float64)
    ys, xs = np.mgrid[: image.shape[0], : image.shape[1]]
    return float((weights * xs).sum() / weights.sum()), float((weights * ys).sum() / weights.sum())


@pytest.mark.parametrize("channels", [0, 3])
def test_a_bright_pixel_lands_where_the_transform_says(channels):
    """A single bright pixel at keypoint (x, y) appears at ``apply_affine((x, y), m)`` within 0.5 px."""
    rng = np.random.default_rng(2)
    for _ in range(30):
        width, height = int(rng.integers(40, 120)), int(rng.integers(40, 120))
        x, y = int(rng.integers(12, width - 12)), int(rng.integers(12, height - 12))
        pixels = np.zeros((height, width) if channels == 0 else (height, width, channels), dtype=np.uint8)
        pixels[y, x] = 255
        half = float(rng.uniform(6, 12))  # a box around the keypoint, so that the crop magnifies (1.3x - 5x)
        box = [x + 0.5 - half + rng.uniform(-2, 2), y + 0.5 - half + rng.uniform(-2, 2)]
        box += [box[0] + 2 * half, box[1] + 2 * half]
        size = (int(rng.integers(2, 5)) * 16, int(rng.integers(2, 5)) * 16)
        m = crop_transform(box, size, rotation_deg=float(rng.uniform(-40, 40)), flip=bool(rng.random() < 0.5))
        out = warp_image(pixels, m, size)
        assert out.shape == ((size[1], size[0]) if channels == 0 else (size[1], size[0], channels))
        expected = apply_affine(torch.tensor([[float(x), float(y)]]), m)[0].tolist()
        got = _centroid(out if channels == 0 else out[..., 1])
        assert math.dist(got, expected) <= 0.5, (got, expected)


def test_downscaled_blob_lands_where_the_transform_says():
    """Shrinking by 3x - 8x goes through the box-averaging path; a Gaussian blob's centre stays put."""
    rng = np.random.default_rng(3)
    for _ in range(20):
        width, height = int(rng.integers(400, 700)), int(rng.integers(400, 700))
        x, y = rng.uniform(100, width - 100), rng.uniform(100, height - 100)
        ys, xs = np.mgrid[:height, :width]
        pixels = (255 * np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * 12.0**2))).astype(np.uint8)
        size = (64, 48)
        m = crop_transform([0, 0, width, height], size, rotation_deg=float(rng.uniform(-20, 20)))
        assert transform_scale(m).item() < 1 / 3
        expected = apply_affine(torch.tensor([[x, y]]), m)[0].tolist()
        assert math.dist(_centroid(warp_image(pixels, m, size)), expected) <= 0.5


def test_fill_outside_the_image():
    pixels = np.full((10, 20, 3), 200, dtype=np.uint8)
    m = crop_transform([0, 0, 20, 10], (32, 32))  # a wide image in a square input: bands above and below
    out = warp_image(pixels, m, (32, 32), fill=7)
    assert (out[0] == 7).all() and (out[-1] == 7).all() and (out[16] == 200).all()
