"""The fused BatchNorm+ReLU kernel against PyTorch's BatchNorm and ReLU computed in float64."""

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from loclab.models.blocks import ConvBNReLU
from loclab.ops.bn_relu import batch_norm_relu_train, can_fuse, fused_kernel_available

needs_kernel = pytest.mark.skipif(not fused_kernel_available(), reason="fused BatchNorm+ReLU kernel not built here")

BF16 = 2.0**-8  # bf16's relative rounding step


def channels_last_bf16(*shape, mean=0.0, std=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g) * std + mean
    return x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)


def reference(x, weight, bias, running_mean, running_var, grad_y, momentum=0.1, eps=1e-5):
    """float64 BatchNorm (training) + ReLU and its gradients, by autograd, from the same bf16 inputs."""
    x64 = x.double().requires_grad_()
    w64, b64 = weight.double().requires_grad_(), bias.double().requires_grad_()
    rm, rv = running_mean.double(), running_var.double()
    y = F.relu(F.batch_norm(x64, rm, rv, w64, b64, training=True, momentum=momentum, eps=eps))
    y.backward(grad_y.double())
    return y, x64.grad, w64.grad, b64.grad, rm, rv


def fused(x, weight, bias, running_mean, running_var, grad_y):
    x = x.clone().requires_grad_()
    w, b = weight.clone().requires_grad_(), bias.clone().requires_grad_()
    rm, rv = running_mean.clone(), running_var.clone()
    y = batch_norm_relu_train(x, w, b, rm, rv, 0.1, 1e-5)
    y.backward(grad_y)
    return y, x.grad, w.grad, b.grad, rm, rv


def close(actual, expected, rel):
    """Max error relative to the largest value of the expected tensor."""
    scale = expected.abs().max().item() or 1.0
    return (actual.double() - expected).abs().max().item() / scale <= rel


@needs_kernel
@pytest.mark.parametrize("shape", [(4, 8, 9, 7), (2, 64, 16, 16), (3, 5, 1, 1)])
@pytest.mark.parametrize("mean", [0.0, 100.0])
def test_matches_float64_batchnorm_relu(shape, mean):
    c = shape[1]
    x = channels_last_bf16(*shape, mean=mean, std=2.0, seed=1)
    g = torch.Generator().manual_seed(2)
    weight, bias = torch.randn(c, generator=g), torch.randn(c, generator=g)
    running_mean, running_var = torch.randn(c, generator=g), torch.rand(c, generator=g) + 0.5
    grad_y = channels_last_bf16(*shape, seed=3)
    ours = fused(x, weight, bias, running_mean, running_var, grad_y)
    ref = reference(x, weight, bias, running_mean, running_var, grad_y)
    names = ("output", "grad_x", "grad_weight", "grad_bias", "running_mean", "running_var")
    for name, a, e in zip(names, ours, ref, strict=True):
        # outputs and grad_x are rounded to bf16; the rest is accumulated in float/double
        rel = 2 * BF16 if name in ("output", "grad_x") else 1e-4
        assert close(a, e, rel), name
    assert ours[0].dtype == torch.bfloat16 and ours[0].is_contiguous(memory_format=torch.channels_last)
    assert ours[2].dtype == torch.float32


@needs_kernel
def test_relu_mask_and_gradient_where_the_relu_blocks():
    x = channels_last_bf16(2, 4, 6, 6, seed=4)
    weight, bias = torch.ones(4), torch.full((4,), -0.5)
    grad_y = torch.ones_like(x)
    y, grad_x, *_ = fused(x, weight, bias, torch.zeros(4), torch.ones(4), grad_y)
    ref_y, ref_grad_x, *_ = reference(x, weight, bias, torch.zeros(4), torch.ones(4), grad_y)
    assert torch.equal(y > 0, ref_y > 0)
    assert close(grad_x, ref_grad_x, 2 * BF16)


@needs_kernel
def test_results_do_not_depend_on_the_thread_count():
    x = channels_last_bf16(4, 16, 32, 32, seed=5)
    grad_y = channels_last_bf16(4, 16, 32, 32, seed=6)
    args = (torch.randn(16), torch.randn(16), torch.zeros(16), torch.ones(16), grad_y)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = fused(x, *args)
        torch.set_num_threads(2)
        two = fused(x, *args)
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(one, two, strict=True):
        assert torch.equal(a, b)


@needs_kernel
def test_block_fuses_in_bf16_training_and_matches_the_unfused_block():
    torch.manual_seed(0)
    block = ConvBNReLU(nn.Conv2d(3, 8, 3, padding=1, bias=False), 8, nn.MaxPool2d(2)).to(memory_format=torch.channels_last)
    plain = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
                          nn.MaxPool2d(2)).to(memory_format=torch.channels_last)
    assert block.state_dict().keys() == plain.state_dict().keys()  # checkpoints of either load into the other
    plain.load_state_dict(block.state_dict())
    x = torch.rand(4, 3, 16, 16).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert can_fuse(block[0](x))
        out, ref = block(x), plain(x)
    out.float().sum().backward()
    ref.float().sum().backward()
    assert close(out.float(), ref.double(), 4 * BF16)
    assert close(block[0].weight.grad, plain[0].weight.grad.double(), 0.05)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        assert torch.allclose(getattr(block[1], name).double(), getattr(plain[1], name).double(), rtol=1e-2, atol=1e-3)


def test_unfused_inputs_take_the_layers_one_by_one():
    torch.manual_seed(0)
    block = ConvBNReLU(nn.Conv2d(3, 8, 3, padding=1, bias=False), 8)
    x = torch.rand(2, 3, 8, 8)
    assert not can_fuse(block[0](x))  # float32, contiguous: not the kernel's case
    expected = block[2](block[1](block[0](x)))
    block.eval()
    with torch.no_grad():
        assert torch.equal(block(x), block[2](block[1](block[0](x))))
    assert expected.shape == block(x).shape


def test_switching_the_kernel_off():
    code = "from loclab.ops.bn_relu import fused_kernel_available as f; print(f())"
    env = {**os.environ, "LOCLAB_FUSED_BN": "0"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
