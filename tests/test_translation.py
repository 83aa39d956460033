import pytest
import torch

from loclab.analysis.translation import shift_images, translation_response


def test_shift_moves_content_right_and_refuses_wrapping():
    img = torch.full((1, 1, 8, 8), 255, dtype=torch.uint8)
    img[0, 0, 3, 2] = 0
    moved = shift_images(img, 3)
    assert moved[0, 0, 3, 5] == 0 and (moved == 0).sum() == 1
    with pytest.raises(ValueError, match="last 6 columns"):
        shift_images(img, 6)  # column 2 is inside the 6 right-most columns: it would wrap around


def test_response_of_a_tracking_and_a_blind_model():
    base = torch.rand(5, 3, 2) * 100
    tracked = base + torch.tensor([8.0, 0.0])
    r = translation_response(base, tracked, 8)
    assert r["follow_ratio"] == pytest.approx(1.0) and r["mean_abs_dy_px"] == pytest.approx(0.0)
    assert translation_response(base, base, 8)["follow_ratio"] == 0.0
