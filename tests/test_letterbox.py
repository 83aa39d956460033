import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from loclab.data.letterbox_image import letterbox_image
from loclab.ops.letterbox import Letterbox, letterbox_params


@pytest.mark.parametrize(
    ("width", "height", "size", "expected"),
    [
        (224, 224, 224, (224, 224, 0, 0)),  # identity
        (640, 480, 224, (224, 168, 0, 28)),  # wide 4:3, r = 0.35
        (480, 640, 224, (168, 224, 28, 0)),  # tall 3:4
        (1000, 10, 224, (224, 2, 0, 111)),  # 100:1 strip: 2.24 -> 2 px, odd padding pixel at the bottom
        (3, 5000, 224, (1, 224, 111, 0)),  # 0.13 px wide -> kept at 1 px
        (1, 1, 320, (320, 320, 0, 0)),  # tiny: upscaled
        (8000, 6000, 640, (640, 480, 0, 80)),  # huge
        (333, 250, 256, (256, 192, 0, 32)),  # 192.19 -> 192
        (100, 41, 64, (64, 26, 0, 19)),  # 26.24 -> 26, pad (64 - 26) // 2 = 19
        (100, 39, 32, (32, 12, 0, 10)),  # 12.48 -> 12
        (50, 39, 32, (32, 25, 0, 3)),  # 24.96 -> 25
        (64, 40, 32, (32, 20, 0, 6)),  # exactly 20
        (20, 13, 32, (32, 21, 0, 5)),  # 20.8 -> 21
        (4, 3, 2, (2, 2, 0, 0)),  # 1.5 rounds half up -> 2
    ],
)
def test_params_hand_computed(width, height, size, expected):
    box = letterbox_params(width, height, size)
    assert (box.new_width, box.new_height, box.pad_x, box.pad_y) == expected
    assert box.is_identity == (width == height == size)
    assert box.scale_x == box.new_width / width and box.scale_y == box.new_height / height


@given(st.integers(1, 10_000), st.integers(1, 10_000), st.integers(1, 64).map(lambda k: 32 * k))
def test_params_invariants(width, height, size):
    box = letterbox_params(width, height, size)
    r = min(size / width, size / height)
    assert max(box.new_width, box.new_height) == size  # so neither side exceeds the input
    assert min(box.new_width, box.new_height) >= 1  # a 10000:1 image still keeps one pixel row
    # Within half a pixel of the exact size (a float reference; ties are decided by the integer rounding).
    assert abs(box.new_width - max(width * r, 1)) <= 0.5 + 1e-9
    assert abs(box.new_height - max(height * r, 1)) <= 0.5 + 1e-9
    assert box.pad_x == (size - box.new_width) // 2 and box.pad_y == (size - box.new_height) // 2


@pytest.mark.parametrize("bad", [(0, 10, 32), (10, -1, 32), (10, 10, 0), (10.0, 10, 32), (True, 10, 32)])
def test_params_rejects_bad_sizes(bad):
    with pytest.raises(ValueError):
        letterbox_params(*bad)


def test_boxes_hand_computed():
    box = letterbox_params(640, 480, 224)  # scale 0.35 both ways, pad_y 28
    boxes = torch.tensor([[0.0, 0.0, 640.0, 480.0], [100.0, 200.0, 300.0, 400.0]])
    expected = torch.tensor([[0.0, 28.0, 224.0, 196.0], [35.0, 98.0, 105.0, 168.0]])
    torch.testing.assert_close(box.boxes_to_input(boxes), expected)
    # Predictions reaching into the padding are clipped back to the image unless asked not to.
    pred = torch.tensor([[-5.0, 10.0, 230.0, 200.0]])
    torch.testing.assert_close(box.boxes_to_image(pred), torch.tensor([[0.0, 0.0, 640.0, 480.0]]))
    unclipped = box.boxes_to_image(pred, clip=False)
    torch.testing.assert_close(unclipped, torch.tensor([[-5 / 0.35, -18 / 0.35, 230 / 0.35, 172 / 0.35]]))


def test_per_axis_scales_follow_the_rounded_pixels():
    box = letterbox_params(100, 41, 64)  # content 64 x 26: vertical scale 26/41, not 64/100
    full = box.boxes_to_input(torch.tensor([[0.0, 0.0, 100.0, 41.0]], dtype=torch.float64))
    expected = torch.tensor([[0.0, 19.0, 64.0, 45.0]], dtype=torch.float64)  # the content rectangle
    torch.testing.assert_close(full, expected, atol=1e-12, rtol=0)


def _boxes(draw, width, height, n):
    rows = []
    for _ in range(n):
        x1, x2 = sorted(draw(st.floats(0, width)) for _ in range(2))
        y1, y2 = sorted(draw(st.floats(0, height)) for _ in range(2))
        rows.append([x1, y1, x2, y2])
    return rows


@st.composite
def letterbox_and_boxes(draw):
    width, height = draw(st.integers(1, 4000)), draw(st.integers(1, 4000))
    size = 32 * draw(st.integers(1, 40))
    return letterbox_params(width, height, size), _boxes(draw, width, height, draw(st.integers(0, 6)))


@settings(max_examples=200)
@given(letterbox_and_boxes())
def test_boxes_round_trip(case):
    box, rows = case
    # A float32 result is rounded once in input pixels (relative 2**-24 of up to S) and once in image pixels;
    # mapping back divides the first rounding by the scale, so a 100x downscale amplifies it 100x.
    float32_error = 2 * (box.size * 2**-24 / min(box.scale_x, box.scale_y) + 4000 * 2**-24)
    for dtype, atol in ((torch.float64, 1e-9), (torch.float32, max(float32_error, 1e-4))):
        boxes = torch.tensor(rows, dtype=dtype).reshape(-1, 4)
        inside = box.boxes_to_input(boxes)
        assert inside.dtype == dtype and inside.shape == boxes.shape
        back = box.boxes_to_image(inside, clip=False)
        torch.testing.assert_close(back, boxes, atol=atol, rtol=0)
        # Every box of the image lands inside the content rectangle of the input.
        if len(rows):
            lo = torch.tensor([box.pad_x, box.pad_y] * 2, dtype=torch.float64)
            hi = torch.tensor([box.pad_x + box.new_width, box.pad_y + box.new_height] * 2, dtype=torch.float64)
            assert ((inside.double() >= lo - 1e-3) & (inside.double() <= hi + 1e-3)).all()


@settings(max_examples=200)
@given(st.integers(1, 4000), st.integers(1, 4000), st.integers(1, 40), st.data())
def test_points_round_trip_and_reference(width, height, k, data):
    box = letterbox_params(width, height, 32 * k)
    xs = data.draw(st.lists(st.floats(-0.5, width - 0.5), min_size=1, max_size=5))
    ys = data.draw(st.lists(st.floats(-0.5, height - 0.5), min_size=len(xs), max_size=len(xs)))
    points = torch.tensor(list(zip(xs, ys)), dtype=torch.float64)
    inside = box.points_to_input(points)
    for (x, y), (xi, yi) in zip(points.tolist(), inside.tolist()):  # the formula, written out per point
        assert xi == pytest.approx((x + 0.5) * box.new_width / width - 0.5 + box.pad_x, abs=1e-9)
        assert yi == pytest.approx((y + 0.5) * box.new_height / height - 0.5 + box.pad_y, abs=1e-9)
    torch.testing.assert_close(box.points_to_image(inside), points, atol=1e-9, rtol=0)


def test_points_keep_leading_dimensions_and_pixel_centres():
    box = letterbox_params(4, 2, 8)  # scale 2, content 8 x 4, pad_y 2
    points = torch.tensor([[[0.0, 0.0], [3.0, 1.0]], [[-0.5, -0.5], [3.5, 1.5]]])
    expected = torch.tensor([[[0.5, 2.5], [6.5, 4.5]], [[-0.5, 1.5], [7.5, 5.5]]])  # centres, then pixel edges
    torch.testing.assert_close(box.points_to_input(points), expected)


def test_identity_is_bitwise_noop():
    box = letterbox_params(224, 224, 224)
    values = torch.tensor([[0.1, 1e-7, 223.99998, 3.3333333], [float("nan"), -0.0, 7.0, 1e30]])
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        boxes = values.to(dtype)
        for out in (box.boxes_to_input(boxes), box.boxes_to_image(boxes, clip=False), box.points_to_input(boxes[:, :2]),
                    box.points_to_image(boxes[:, 2:])):
            assert out.dtype == dtype
        assert torch.equal(box.boxes_to_input(boxes).view(torch.int8), boxes.view(torch.int8))
        assert torch.equal(box.boxes_to_image(boxes, clip=False).view(torch.int8), boxes.view(torch.int8))
        pts = boxes.reshape(-1, 2)
        assert torch.equal(box.points_to_input(pts).view(torch.int8), pts.view(torch.int8))
        assert torch.equal(box.points_to_image(pts).view(torch.int8), pts.view(torch.int8))
    assert box.boxes_to_input(values) is not values  # a copy: callers may write to it


def test_integer_boxes_become_float32_and_shapes_are_checked():
    box = letterbox_params(640, 480, 224)
    out = box.boxes_to_input(torch.tensor([[0, 0, 640, 480]]))
    assert out.dtype == torch.float32 and out.tolist() == [[0.0, 28.0, 224.0, 196.0]]
    assert box.boxes_to_input(torch.zeros(0, 4)).shape == (0, 4)
    with pytest.raises(ValueError):
        box.boxes_to_input(torch.zeros(3, 2))
    with pytest.raises(ValueError):
        box.points_to_input(torch.zeros(3, 4))


def test_letterbox_is_frozen():
    box = letterbox_params(10, 20, 32)
    assert isinstance(box, Letterbox)
    with pytest.raises(AttributeError):
        box.pad_x = 3


@pytest.mark.parametrize(("width", "height", "channels"), [(640, 480, 3), (37, 301, 3), (1000, 3, 1), (5, 7, 4),
                                                           (300, 300, 3), (64, 64, 2)])
def test_image_content_lands_inside_padding_is_fill(width, height, channels):
    size, fill = 64, 114
    image = np.full((height, width, channels), 200, dtype=np.uint8)
    out = letterbox_image(image, size, fill=fill)
    box = letterbox_params(width, height, size)
    assert out.shape == (size, size, channels) and out.dtype == np.uint8
    content = np.zeros((size, size), dtype=bool)
    content[box.pad_y : box.pad_y + box.new_height, box.pad_x : box.pad_x + box.new_width] = True
    assert (out[content] == 200).all()  # a flat image stays flat under any normalised filter
    assert (out[~content] == fill).all()


def test_image_matches_pil_resize_and_boxes_follow_the_pixels():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (90, 160, 3), dtype=np.uint8)
    out = letterbox_image(image, 64, fill=0)
    box = letterbox_params(160, 90, 64)
    reference = np.asarray(Image.fromarray(image).resize((box.new_width, box.new_height), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(out[box.pad_y : box.pad_y + box.new_height, :], reference)
    # A white rectangle lands where boxes_to_input puts its box (to within the one blurred pixel of the filter).
    image = np.zeros((90, 160, 3), dtype=np.uint8)
    image[30:60, 40:120] = 255
    out = letterbox_image(image, 64, fill=0)[:, :, 0] > 127
    rows, cols = np.nonzero(out)
    x1, y1, x2, y2 = box.boxes_to_input(torch.tensor([[40.0, 30.0, 120.0, 60.0]]))[0].tolist()
    assert abs(cols.min() - x1) <= 1 and abs(cols.max() + 1 - x2) <= 1
    assert abs(rows.min() - y1) <= 1 and abs(rows.max() + 1 - y2) <= 1


def test_identity_image_is_an_equal_copy():
    image = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    out = letterbox_image(image, 32)
    np.testing.assert_array_equal(out, image)
    assert out is not image


@pytest.mark.parametrize("bad", [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 3), np.float32)])
def test_image_rejects_bad_arrays(bad):
    with pytest.raises(ValueError):
        letterbox_image(bad, 32)
