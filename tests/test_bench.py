"""The pieces ``loclab bench`` measures with: FLOP counting, the step breakdown, the peak, the comparison rows.

No timing is asserted here (a timed unit test proves nothing on a shared machine); these tests check
that each measurement measures what it says.
"""

import torch
from torch import nn

from loclab.bench.timing import _category, matmul_peak, step_and_peak, step_breakdown
from loclab.bench.workloads import Workload, inference, measure, train_flops, variants
from loclab.config import DetectorConfig
from loclab.engine import detection as det_task


def _analytic_train_flops(model: nn.Module, images: torch.Tensor) -> int:
    """2·MACs per conv forward; backward = weight grad + input grad (none for the layer fed the images)."""
    forward: list[tuple[nn.Conv2d, int]] = []

    def hook(module, inputs, output):
        k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
        forward.append((module, 2 * output.numel() * k))

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    model(images)
    for h in handles:
        h.remove()
    first = forward[0][1]
    return sum(3 * f for _, f in forward) - first


def test_train_flops_match_an_analytic_count():
    cfg = DetectorConfig(model="reference")
    setup = det_task.AnchorSetup.from_config(cfg)
    step = det_task.make_step(cfg, det_task.make_loss(cfg, setup))
    images = torch.rand(2, 3, 224, 224)
    boxes = torch.tensor([[[10.0, 10, 40, 40]], [[50, 60, 150, 170]]])
    batch = (images, boxes, torch.tensor([[0], [2]]), torch.ones(2, 1, dtype=torch.bool), torch.arange(2))
    counted = train_flops(cfg, step, batch)
    expected = _analytic_train_flops(det_task.make_model(cfg), images)
    # the loss has no matmuls, so the counts agree exactly
    assert counted == expected


def test_ops_are_grouped_by_kind():
    assert _category("aten::mkldnn_convolution") == "convolution"
    assert _category("aten::convolution_backward") == "convolution"
    assert _category("aten::native_batch_norm_backward") == "batchnorm_relu"
    assert _category("aten::threshold_backward") == "batchnorm_relu"
    assert _category("loclab_bn_relu::backward") == "batchnorm_relu"
    assert _category("aten::sort") == "other"
    assert _category("autograd::engine::evaluate_function: ConvolutionBackward0") == "other"


def test_step_breakdown_accounts_for_the_step():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 4, 1))
    opt = torch.optim.AdamW(model.parameters())
    x = torch.rand(4, 3, 32, 32)

    def run():
        loss = model(x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    parts = step_breakdown(run, steps=2)
    assert set(parts) == {"convolution", "batchnorm_relu", "optimizer", "other", "step"}
    for kind in ("convolution", "batchnorm_relu", "optimizer"):
        assert parts[kind] > 0, kind
    measured = parts["convolution"] + parts["batchnorm_relu"] + parts["optimizer"]
    assert measured <= parts["step"] * 1.01
    assert abs(measured + parts["other"] - parts["step"]) < 1e-9


def test_matmul_peak_reports_the_best_size():
    rate, size = matmul_peak(torch.float32, sizes=(32, 128), calls=2)
    assert size in (32, 128)
    assert rate > 0


def test_step_and_peak_alternates_step_timings_with_matmuls():
    calls = []
    out = step_and_peak(lambda: calls.append(1), flops=1e6, dtype=torch.float32, rounds=3)
    assert len(calls) == 1 + 3 * 2  # one warm-up, then two timed steps per round
    assert set(out) == {"achieved_flops", "peak_flops"}
    assert out["achieved_flops"] > 0 and out["peak_flops"] > 0


def test_measure_rows_hold_every_variant_and_their_ratios():
    vs = variants(with_compile=False)
    assert [v.label for v in vs] == ["fp32_eager", "fp32_retained", "unfused", "default"]
    model = nn.Conv2d(3, 8, 3)
    images = torch.rand(2, 3, 16, 16)
    rows = measure([Workload("toy", lambda v: inference(model, images, v), 2)] * 2, vs, repeats=2)
    assert len(rows) == 2
    for row in rows:
        assert row["speedup"] == row["default_img_s"] / row["fp32_eager_img_s"]
        assert row["fp32_retained_speedup"] == row["fp32_retained_img_s"] / row["fp32_eager_img_s"]
        assert "compiled_img_s" not in row
