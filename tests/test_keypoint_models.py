"""Keypoint models: output shapes for every option, ranges, soft-argmax, the integral pixel convention."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from loclab.models.keypoints import (
    KEYPOINT_MODELS,
    HeatmapNet,
    IntegralNet,
    KeypointEncoder,
    RegressionNet,
    SpatialRegressionNet,
    soft_argmax_2d,
)


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(2, 1, 128, 128, generator=torch.Generator().manual_seed(0))


def test_encoder_returns_four_block_outputs(images):
    shapes = [tuple(f.shape) for f in KeypointEncoder()(images)]
    assert shapes == [(2, 32, 64, 64), (2, 64, 32, 32), (2, 128, 16, 16), (2, 256, 8, 8)]


@pytest.mark.parametrize("skip", [True, False])
@pytest.mark.parametrize("heatmap_size", [32, 64, 128])
def test_heatmap_net_output_shape(images, heatmap_size, skip):
    model = HeatmapNet(num_keypoints=5, heatmap_size=heatmap_size, skip=skip).eval()
    with torch.no_grad():
        out = model(images)
    assert out.shape == (2, 5, heatmap_size, heatmap_size)
    # reference layer widths: the up-sampling stage after each concat takes twice the channels with skips
    assert model.up2[0].in_channels == (256 if skip else 128)
    assert model.head.in_channels == (32 if heatmap_size > 32 else (128 if skip else 64))


def test_heatmap_net_rejects_other_sizes():
    with pytest.raises(ValueError, match="heatmap_size"):
        HeatmapNet(heatmap_size=48)


@pytest.mark.parametrize("model_cls", [RegressionNet, SpatialRegressionNet, IntegralNet])
def test_coordinate_models_output_normalised_coordinates(images, model_cls):
    model = model_cls(num_keypoints=5).eval()
    with torch.no_grad():
        out = model(images)
    assert out.shape == (2, 10)
    assert torch.all((out >= 0) & (out <= 1))


def test_registry_and_output_types(images):
    assert set(KEYPOINT_MODELS) == {"heatmap", "regression", "integral", "spatial_regression"}
    expected = {"heatmap": (2, 5, 64, 64), "regression": (2, 10)}
    for name, build in KEYPOINT_MODELS.items():
        model = build().eval()
        assert model.output_type in expected, name
        with torch.no_grad():
            assert model(images).shape == expected[model.output_type], name


@pytest.mark.parametrize("name", sorted(KEYPOINT_MODELS))
def test_batch_of_one_equals_single(images, name):
    model = KEYPOINT_MODELS[name]().eval()
    with torch.no_grad():
        batched = model(images)
        single = model(images[1:2])
    torch.testing.assert_close(batched[1:2], single, rtol=1e-4, atol=1e-5)


def test_initialisation():
    model = HeatmapNet()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) and m.bias is not None:
            assert torch.all(m.bias == 0)


def test_soft_argmax_finds_a_peaked_cell():
    logits = torch.zeros(2, 3, 16, 24)
    logits[1, 2, 5, 17] = 60.0  # row 5, column 17 -> (x, y) = (17, 5)
    xy = soft_argmax_2d(logits, beta=1.0)
    assert xy.shape == (2, 3, 2)
    torch.testing.assert_close(xy[1, 2], torch.tensor([17.0, 5.0]), atol=1e-3, rtol=0)
    # a flat map gives the centre of the grid, (W - 1) / 2 and (H - 1) / 2
    torch.testing.assert_close(xy[0, 0], torch.tensor([11.5, 7.5]))


def test_soft_argmax_beta_sharpens():
    logits = torch.zeros(1, 1, 8, 8)
    logits[0, 0, 2, 6] = 3.0
    soft = soft_argmax_2d(logits, beta=1.0)[0, 0]
    sharp = soft_argmax_2d(logits, beta=20.0)[0, 0]
    target = torch.tensor([6.0, 2.0])
    assert (sharp - target).norm() < 1e-3 < (soft - target).norm()


class _FixedHeatmaps(nn.Module):
    """Stands in for the heatmap decoder: one sharp peak per keypoint at a known cell."""

    def __init__(self, cells: list[tuple[int, int]], size: int) -> None:
        super().__init__()
        self.cells, self.size = cells, size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(x.shape[0], len(self.cells), self.size, self.size)
        for k, (row, col) in enumerate(self.cells):
            logits[:, k, row, col] = 100.0
        return logits


@pytest.mark.parametrize("heatmap_size", [32, 64, 128])
def test_integral_net_uses_pixel_centre_convention(heatmap_size):
    model = IntegralNet(num_keypoints=2, heatmap_size=heatmap_size)
    cells = [(0, 0), (10, 25)]
    model.heatmap_net = _FixedHeatmaps(cells, heatmap_size)
    out = model(torch.zeros(1, 1, 128, 128)).reshape(2, 2)
    stride = 128 / heatmap_size
    for k, (row, col) in enumerate(cells):
        # cell u has its centre at image pixel (u + 0.5) * stride - 0.5, then normalised by the image size
        expected = torch.tensor([(col + 0.5) * stride - 0.5, (row + 0.5) * stride - 0.5]) / 128
        torch.testing.assert_close(out[k], expected, atol=1e-5, rtol=0)


def test_integral_net_is_differentiable(images):
    model = IntegralNet()
    model(images).sum().backward()
    grad = model.heatmap_net.head.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
