import math

import pytest
import torch

from loclab.ops.augment import (
    affine_boxes,
    affine_images,
    augment_detection_batch,
    colour_jitter,
    invert_affine,
    random_affine_params,
)


def _seeded(seed=0):
    return torch.Generator().manual_seed(seed)


def _reference_affine(image, forward, fill):
    """Per pixel: map the output pixel centre back, bilinear over the input pixel centres, outside = fill."""
    channels, height, width = image.shape
    (a, b, t0), (c, d, t1) = forward.tolist()
    det = a * d - b * c
    out = torch.empty(channels, height, width, dtype=torch.float64)
    for i in range(height):
        for j in range(width):
            xo, yo = j + 0.5 - t0, i + 0.5 - t1
            x, y = (d * xo - b * yo) / det, (-c * xo + a * yo) / det  # input continuous coordinates
            px, py = x - 0.5, y - 0.5  # in units of pixel-centre indices
            x0, y0 = math.floor(px), math.floor(py)
            wx, wy = px - x0, py - y0
            for ch in range(channels):
                total = 0.0
                for yy, wgt_y in ((y0, 1 - wy), (y0 + 1, wy)):
                    for xx, wgt_x in ((x0, 1 - wx), (x0 + 1, wx)):
                        inside = 0 <= yy < height and 0 <= xx < width
                        total += wgt_x * wgt_y * (float(image[ch, yy, xx]) if inside else fill)
                out[ch, i, j] = total
    return out


def test_affine_images_match_a_per_pixel_reference():
    generator = _seeded(1)
    images = torch.rand(3, 2, 7, 9, generator=generator, dtype=torch.float64)
    matrices = torch.tensor(
        [
            [[1.3, 0.0, -1.7], [0.0, 0.8, 0.9]],  # zoom, uneven, shifted by fractions of a pixel
            [[-1.0, 0.0, 9.0], [0.0, 1.0, 0.0]],  # mirror
            [[0.9, 0.4, 0.3], [-0.3, 1.1, -0.6]],  # a general affine map (rotation and shear)
        ],
        dtype=torch.float64,
    )
    out = affine_images(images, matrices, fill=0.25)
    for b in range(3):
        torch.testing.assert_close(out[b], _reference_affine(images[b], matrices[b], 0.25), rtol=0, atol=1e-9)


def test_affine_images_uint8_and_half_keep_dtype():
    generator = _seeded(2)
    images = torch.randint(0, 256, (2, 3, 6, 6), generator=generator, dtype=torch.uint8)
    matrices = random_affine_params(2, size=6, scale=(0.7, 1.4), translate=0.2, flip=True, generator=generator)
    out = affine_images(images, matrices, fill=114)
    assert out.dtype == torch.uint8 and out.shape == images.shape
    for b in range(2):
        reference = _reference_affine(images[b], matrices[b].double(), 114).round()
        assert (out[b].double() - reference).abs().max() <= 1  # float32 rounding can tip a .5
    half = affine_images(images.to(torch.bfloat16) / 255, matrices, fill=114 / 255)
    assert half.dtype == torch.bfloat16


def test_identity_and_mirror_matrices_on_images():
    images = torch.rand(2, 3, 8, 8, generator=_seeded(3))
    identity = torch.tensor([[[1.0, 0, 0], [0, 1.0, 0]]]).repeat(2, 1, 1)
    torch.testing.assert_close(affine_images(images, identity, fill=0.5), images, rtol=0, atol=1e-5)
    mirror = torch.tensor([[[-1.0, 0, 8], [0, 1.0, 0]]]).repeat(2, 1, 1)
    torch.testing.assert_close(affine_images(images, mirror, fill=0.5), images.flip(-1), rtol=0, atol=1e-5)
    as_bytes = (images * 255).round().to(torch.uint8)
    assert torch.equal(affine_images(as_bytes, identity, fill=114), as_bytes)  # rounding absorbs float noise
    assert torch.equal(affine_images(as_bytes, mirror, fill=114), as_bytes.flip(-1))


def test_random_params_hand_checked():
    matrices = random_affine_params(500, size=64, scale=(0.5, 1.5), translate=0.1, flip=True, generator=_seeded(4))
    assert matrices.shape == (500, 2, 3) and matrices.dtype == torch.float32
    s = matrices[:, 1, 1]
    assert ((s >= 0.5) & (s <= 1.5)).all() and (matrices[:, 0, 0].abs() == s).all()
    assert (matrices[:, 0, 1] == 0).all() and (matrices[:, 1, 0] == 0).all()
    flipped = (matrices[:, 0, 0] < 0).float().mean()
    assert 0.4 < flipped < 0.6
    # The centre (32, 32) moves by at most the shift, 6.4 px per axis.
    centre = matrices @ torch.tensor([32.0, 32.0, 1.0])
    assert ((centre - 32).abs() <= 6.4 + 1e-4).all()
    # Without flip, no mirror; without amplitudes, the identity exactly.
    assert (random_affine_params(50, size=64, scale=(0.5, 1.5), flip=False)[:, 0, 0] > 0).all()
    still = random_affine_params(5, size=64)
    assert torch.equal(still, torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).expand(5, 2, 3))
    with pytest.raises(ValueError):
        random_affine_params(2, size=64, scale=(0.0, 1.0))


def test_invert_affine_round_trips():
    matrices = torch.tensor([[[0.9, 0.4, 0.3], [-0.3, 1.1, -0.6]], [[-2.0, 0.0, 64.0], [0.0, 0.5, 3.0]]],
                            dtype=torch.float64)
    inverse = invert_affine(matrices)
    bottom = torch.tensor([[[0.0, 0.0, 1.0]]], dtype=torch.float64).expand(2, 1, 3)
    product = torch.cat((matrices, bottom), 1) @ torch.cat((inverse, bottom), 1)
    torch.testing.assert_close(product, torch.eye(3, dtype=torch.float64).expand(2, 3, 3))


def test_flip_maps_boxes_exactly():
    generator = _seeded(5)
    size = 224
    corners = torch.rand(4, 6, 2, 2, generator=generator) * size
    boxes = torch.cat((corners.amin(2), corners.amax(2)), -1) + torch.tensor([0.0, 0.0, 3.0, 3.0])
    boxes = boxes.clamp(0, size)
    valid = torch.ones(4, 6, dtype=torch.bool)
    mirror = torch.tensor([[[-1.0, 0, size], [0, 1.0, 0]]]).repeat(4, 1, 1)
    out, kept = affine_boxes(boxes, valid, mirror, size)
    x1, y1, x2, y2 = boxes.unbind(-1)
    assert torch.equal(out, torch.stack((size - x2, y1, size - x1, y2), -1)) and kept.all()
    identity = torch.tensor([[[1.0, 0, 0], [0, 1.0, 0]]]).repeat(4, 1, 1)
    same, kept = affine_boxes(boxes, valid, identity, size)
    assert torch.equal(same, boxes) and kept.all()
    # The matrices random_affine_params makes for a pure flip are the exact mirror too.
    flips = random_affine_params(4, size=size, flip=True, generator=_seeded(6))
    out, _ = affine_boxes(boxes, valid, flips, size)
    mirrored = (flips[:, 0, 0] < 0)[:, None, None]
    assert torch.equal(out, torch.where(mirrored, torch.stack((size - x2, y1, size - x1, y2), -1), boxes))


def test_boxes_pushed_out_of_frame_are_invalidated():
    size = 100
    boxes = torch.tensor([[[10.0, 10, 30, 30], [80, 40, 96, 60], [60, 0, 99, 1.5], [0, 0, 0, 0], [40, 40, 60, 60]]])
    valid = torch.tensor([[True, True, True, False, True]])
    shift = torch.tensor([[[1.0, 0, 10], [0, 1.0, 0]]])  # 10 px to the right
    out, kept = affine_boxes(boxes, valid, shift, size)
    # [80, 96] -> [90, 106], clipped to [90, 100]: 10 / 16 visible, kept. The 1.5 px sliver: too thin.
    assert kept.tolist() == [[True, True, False, False, True]]
    assert out[0, 1].tolist() == [90, 40, 100, 60] and (out[0, 2:4] == 0).all()
    far = torch.tensor([[[1.0, 0, 85], [0, 1.0, 0]]])  # [80, 96] leaves; [40, 60] -> [125, 145] leaves
    out, kept = affine_boxes(boxes, valid, far, size)
    assert kept.tolist() == [[True, False, False, False, False]]
    assert out[0, 0].tolist() == [95, 10, 100, 30]  # 5 / 20 = exactly min_visible: kept
    out, kept = affine_boxes(boxes, valid, far, size, min_visible=0.3)
    assert not kept.any()


def test_images_and_boxes_move_together():
    # A white rectangle on black: after the transform, the white pixels fill the transformed box tightly.
    size, batch = 64, 48
    generator = _seeded(7)
    lo = torch.randint(0, 40, (batch, 2), generator=generator)
    hi = lo + torch.randint(8, 24, (batch, 2), generator=generator)
    boxes = torch.cat((lo, hi), -1).float()[:, None]  # [B, 1, 4]
    images = torch.zeros(batch, 3, size, size)
    for b, (x1, y1, x2, y2) in enumerate(boxes[:, 0].long().tolist()):
        images[b, :, y1:y2, x1:x2] = 1
    valid = torch.ones(batch, 1, dtype=torch.bool)
    out, moved, kept = augment_detection_batch(images, boxes, valid, scale=(0.5, 1.5), translate=0.2, flip=True,
                                               brightness=0, contrast=0, saturation=0, fill=0.0,
                                               generator=generator)
    checked = 0
    for b in range(batch):
        white = out[b, 0] > 0.5
        if not kept[b, 0]:
            continue
        rows, cols = torch.nonzero(white, as_tuple=True)
        x1, y1, x2, y2 = moved[b, 0].tolist()
        # White pixel centres lie inside the box, and the box edges are within a pixel of the outermost ones.
        assert cols.min() + 0.5 >= x1 - 1e-3 and cols.max() + 0.5 <= x2 + 1e-3
        assert rows.min() + 0.5 >= y1 - 1e-3 and rows.max() + 0.5 <= y2 + 1e-3
        assert cols.min() + 0.5 - x1 <= 1 and x2 - cols.max() - 0.5 <= 1
        assert rows.min() + 0.5 - y1 <= 1 and y2 - rows.max() - 0.5 <= 1
        checked += 1
    assert checked > batch // 2


def test_identity_settings_return_the_inputs():
    images = torch.rand(2, 3, 16, 16)
    boxes, valid = torch.rand(2, 3, 4), torch.ones(2, 3, dtype=torch.bool)
    out = augment_detection_batch(images, boxes, valid, scale=(1, 1), translate=0, flip=False, brightness=0,
                                  contrast=0, saturation=0)
    assert out[0] is images and out[1] is boxes and out[2] is valid
    assert colour_jitter(images) is images


def test_pure_flip_mirrors_pixels_exactly():
    images = torch.rand(6, 3, 16, 16, generator=_seeded(8))
    boxes = torch.tensor([[[1.0, 2.0, 9.0, 12.0]]]).repeat(6, 1, 1)
    valid = torch.ones(6, 1, dtype=torch.bool)
    out, moved, kept = augment_detection_batch(images, boxes, valid, scale=(1, 1), translate=0, flip=True,
                                               brightness=0, contrast=0, saturation=0, generator=_seeded(9))
    flipped = moved[:, 0, 0] != 1
    assert 0 < flipped.sum() < 6 and kept.all()
    for b in range(6):
        expected = images[b].flip(-1) if flipped[b] else images[b]
        assert torch.equal(out[b], expected)
        assert moved[b, 0].tolist() == ([7.0, 2.0, 15.0, 12.0] if flipped[b] else [1.0, 2.0, 9.0, 12.0])


def test_seeded_generator_is_deterministic_and_global_rng_untouched():
    images = torch.rand(4, 3, 16, 16, generator=_seeded(10))
    boxes = torch.tensor([[[2.0, 2.0, 12.0, 12.0]]]).repeat(4, 1, 1)
    valid = torch.ones(4, 1, dtype=torch.bool)
    state = torch.get_rng_state()
    first = augment_detection_batch(images, boxes, valid, generator=_seeded(11))
    second = augment_detection_batch(images, boxes, valid, generator=_seeded(11))
    third = augment_detection_batch(images, boxes, valid, generator=_seeded(12))
    assert torch.equal(torch.get_rng_state(), state)
    for a, b in zip(first, second):
        assert torch.equal(a, b)
    assert not torch.equal(first[0], third[0])
    assert first[0].dtype == images.dtype and first[0].shape == images.shape


def test_empty_batches_and_no_boxes():
    for batch, slots in ((0, 3), (2, 0), (0, 0)):
        images = torch.rand(batch, 3, 16, 16)
        boxes, valid = torch.zeros(batch, slots, 4), torch.zeros(batch, slots, dtype=torch.bool)
        out, moved, kept = augment_detection_batch(images, boxes, valid, generator=_seeded(13))
        assert out.shape == images.shape and moved.shape == boxes.shape and kept.shape == valid.shape
        assert kept.dtype == torch.bool


def test_colour_jitter_against_per_image_formulas():
    images = torch.rand(3, 3, 5, 5, generator=_seeded(14), dtype=torch.float64)
    out = colour_jitter(images, brightness=0.4, contrast=0.3, saturation=0.5, generator=_seeded(15))
    u = torch.rand(3, 3, generator=_seeded(15)).double()
    for b in range(3):
        fb, fc, fs = (1 + (2 * u[b] - 1) * torch.tensor([0.4, 0.3, 0.5], dtype=torch.float64)).tolist()
        x = (images[b] * fb).clamp(0, 1)
        grey = 0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]
        x = ((x - grey.mean()) * fc + grey.mean()).clamp(0, 1)
        grey = 0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]
        x = ((x - grey) * fs + grey).clamp(0, 1)
        torch.testing.assert_close(out[b], x, rtol=0, atol=1e-6)
    assert out.min() >= 0 and out.max() <= 1
    # Brightness alone scales every pixel of an image by one factor.
    bright = colour_jitter(images, brightness=0.5, generator=_seeded(16))
    ratio = bright / images
    unclamped = bright < 1
    per_image = [ratio[b][unclamped[b]] for b in range(3)]
    assert all((r - r[0]).abs().max() < 1e-9 for r in per_image)
    with pytest.raises(TypeError):
        colour_jitter(torch.zeros(1, 3, 2, 2, dtype=torch.uint8), brightness=0.1)
