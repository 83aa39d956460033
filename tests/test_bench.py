"""The pieces ``loclab bench`` measures with: FLOP counting, the step breakdown, the peak, the comparison rows.

No timing is asserted here (a timed unit test proves nothing on a shared machine); these tests check
that each measurement measures what it says.
"""

import pytest
import torch
from torch import nn

from loclab.bench.driver import _add_flop_rates, bench_device, default_batch
from loclab.bench.timing import _category, matmul_peak, step_and_peak, step_breakdown
from loclab.bench.workloads import (
    DetectorBench,
    Workload,
    count_train_flops,
    inference,
    keypoint_workloads,
    measure,
    shapes_batch,
    train_flops,
    variants,
)
from loclab.config import DetectorConfig
from loclab.engine import detection as det_task
from loclab.errors import ConfigError


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
    counted = train_flops(cfg, step, batch, "cpu")
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


# ------------------------------------------------------------------------------------------------ one device
#
# On a GPU the bench once crashed: the batch went to CUDA while a model built for the FLOP count stayed on the
# CPU. Everything is now placed on the bench's device explicitly. Without a GPU in the test suite, the "meta"
# device stands in for it: a tensor left on the CPU by mistake shows up as not-meta.


def _hand_counted_conv_net_flops() -> int:
    """Conv(3->8, 3x3, pad 1) -> ReLU -> Conv(8->4, 1x1) on one 3x8x8 image, forward + backward, by hand.

    Forward: 2 * outputs * (Cin * k * k) per conv: 2 * (8*8*8) * 27 = 27,648 and 2 * (4*8*8) * 8 = 4,096.
    Backward: the weight gradient of each conv costs its forward again; the input gradient only for the second
    conv (the images need no gradient): 27,648 + 2 * 4,096.
    """
    first, second = 2 * (8 * 8 * 8) * (3 * 3 * 3), 2 * (4 * 8 * 8) * 8
    return (first + second) + (first + second) + second


def _tiny_conv_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 1))


def test_train_flops_of_a_tiny_conv_net_match_a_hand_count():
    images = torch.rand(1, 3, 8, 8)

    def step(model, batch, numeric):
        return {"loss_total": model(numeric.images(batch)).square().mean()}

    assert count_train_flops(_tiny_conv_net(), step, images, "cpu") == _hand_counted_conv_net_flops() == 67_584


def test_flops_are_counted_with_model_and_batch_on_the_requested_device():
    seen = []

    def step(model, batch, numeric):
        seen.append((numeric.device.type, {p.device.type for p in model.parameters()}, batch.device.type))
        return {"loss_total": model(batch).sum()}

    # the model is built on the CPU, as every model is; the count moves it to the batch's device
    flops = count_train_flops(_tiny_conv_net(), step, torch.empty(1, 3, 8, 8, device="meta"), "meta")
    assert seen == [("meta", {"meta"}, "meta")]
    assert flops == _hand_counted_conv_net_flops()


def test_workloads_put_batch_loss_and_variants_on_the_bench_device():
    vs = variants(with_compile=False, device=torch.device("meta"))
    assert {v.numeric.device.type for v in vs} == {"meta"}
    bench = DetectorBench.build("loclab", 2, "meta")
    assert bench.device.type == "meta"
    assert {t.device.type for t in bench.batch} == {"meta"}
    for name in ("heatmap", "regression"):
        assert keypoint_workloads(name, 2, "meta")[0].flops is not None
    model = vs[-1].numeric.prepare(det_task.make_model(bench.cfg))
    assert {p.device.type for p in model.parameters()} == {"meta"}


def test_cpu_workloads_stay_on_the_cpu():
    bench = DetectorBench.build("reference", 2, "cpu")
    assert {t.device.type for t in bench.batch} == {"cpu"}
    assert {t.device.type for t in shapes_batch(2, "cpu")} == {"cpu"}
    assert {v.numeric.device.type for v in variants(False, torch.device("cpu"))} == {"cpu"}


def test_bench_device_resolution():
    assert bench_device("cpu") == torch.device("cpu")
    assert bench_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert default_batch(torch.device("cpu")) == 16 and default_batch(torch.device("cuda")) == 128
    with pytest.raises(ConfigError, match="cpu or cuda"):
        bench_device("nonsense")
    with pytest.raises(ConfigError, match="cpu or cuda"):
        bench_device("meta")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device"):
            bench_device("cuda")


def test_flop_rates_of_a_row_follow_its_images_per_second():
    vs = variants(with_compile=False, device=torch.device("cpu"))
    row = {f"{v.label}_img_s": 10.0 * (i + 1) for i, v in enumerate(vs)}
    _add_flop_rates(row, flops=8_000, n_images=4, vs=vs, peak=1e5)
    assert row["train_flops_per_image"] == 2_000
    assert row["fp32_eager_flop_s"] == 10.0 * 2_000 and row["default_flop_s"] == 40.0 * 2_000
    assert row["default_peak_fraction"] == 40.0 * 2_000 / 1e5
