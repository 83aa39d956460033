"""Per-convolution FLOP rates: which layers of a network keep its training step from the matmul peak.

Each ``nn.Conv2d`` of the model is timed alone at the shapes it sees in a forward pass, in the numeric
path's dtype and memory format, for the three products a training step computes: the forward, the
input gradient (skipped for a layer fed the images, which need none) and the weight gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from loclab.bench.timing import timed
from loclab.engine.precision import NumericPath


@dataclass(frozen=True)
class ConvTiming:
    layer: str
    shape: str  # "Cin->Cout kxk /stride @HxW"
    flops: int  # one product (forward); each gradient costs the same
    forward_s: float
    input_grad_s: float | None  # None: the layer's input needs no gradient
    weight_grad_s: float

    @property
    def seconds(self) -> float:
        return self.forward_s + (self.input_grad_s or 0.0) + self.weight_grad_s

    @property
    def total_flops(self) -> int:
        return self.flops * (3 if self.input_grad_s is not None else 2)


def _conv_inputs(model: nn.Module, images: torch.Tensor) -> list[tuple[str, nn.Conv2d, torch.Size]]:
    seen: list[tuple[str, nn.Conv2d, torch.Size]] = []
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(
                lambda m, inputs, out, name=name: seen.append((name, m, inputs[0].shape))))
    with torch.no_grad():
        model(images)
    for h in handles:
        h.remove()
    return seen


def conv_timings(model: nn.Module, images: torch.Tensor, numeric: NumericPath, repeats: int = 3) -> list[ConvTiming]:
    """Time every convolution of ``model`` alone, at its shapes for ``images``, on ``numeric`` (its device too:
    the shapes are found by one forward pass of ``model`` and ``images`` moved there)."""
    dtype = numeric.autocast_dtype or torch.float32
    fmt = torch.channels_last if numeric.channels_last else torch.contiguous_format
    model = model.to(numeric.device).eval()
    images = images.to(numeric.device)
    first = True
    out = []
    for name, conv, shape in _conv_inputs(model, images):
        x = torch.randn(shape, device=numeric.device, dtype=dtype).contiguous(memory_format=fmt)
        w = conv.weight.detach().to(numeric.device, dtype).contiguous(memory_format=fmt)
        args = (conv.stride, conv.padding, conv.dilation, False, [0, 0], conv.groups)
        y = torch.ops.aten.convolution(x, w, None, *args)
        grad = torch.randn_like(y)

        def backward(mask: list[bool], x=x, w=w, grad=grad, args=args) -> None:
            torch.ops.aten.convolution_backward(grad, x, w, None, *args, mask)

        forward_s = timed(lambda x=x, w=w, args=args: torch.ops.aten.convolution(x, w, None, *args), repeats, 1)
        input_grad_s = None if first else timed(lambda: backward([True, False, False]), repeats, 1)
        weight_grad_s = timed(lambda: backward([False, True, False]), repeats, 1)
        k = conv.kernel_size[0] * conv.kernel_size[1] * conv.in_channels // conv.groups
        out.append(ConvTiming(
            layer=name,
            shape=f"{conv.in_channels}->{conv.out_channels} {conv.kernel_size[0]}x{conv.kernel_size[1]} "
                  f"/{conv.stride[0]} @{shape[-2]}x{shape[-1]}",
            flops=2 * y.numel() * k,
            forward_s=forward_s,
            input_grad_s=input_grad_s,
            weight_grad_s=weight_grad_s,
        ))
        first = False
    return out
