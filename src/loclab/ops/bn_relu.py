"""Training-mode BatchNorm followed by ReLU in one kernel, for bf16 channels-last tensors on the CPU.

PyTorch runs ``BatchNorm2d -> ReLU`` as four memory-bound passes in training (statistics + normalise,
ReLU, ReLU's backward, BatchNorm's backward), each reading or writing whole activations. The kernel
in ``csrc/bn_relu.cpp`` does the same math with fewer passes: it never stores the pre-ReLU values and
recomputes the ReLU mask from the input in the backward pass. ``loclab bench`` measures the effect.

The kernel is compiled with the C++ toolchain PyTorch uses for extensions (``torch.utils.cpp_extension``,
ninja and a C++ compiler) the first time it is needed, and cached by PyTorch (``TORCH_EXTENSIONS_DIR``).
Where that is not possible loclab warns once and uses PyTorch's BatchNorm and ReLU; the environment
variable ``LOCLAB_FUSED_BN=0`` chooses that path on purpose. Both give the same results up to bf16
rounding (tests/test_bn_relu.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import warnings
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import torch

_SOURCE = Path(__file__).with_name("csrc") / "bn_relu.cpp"
_enabled = True


@contextlib.contextmanager
def fused_bn_relu(enabled: bool) -> Iterator[None]:
    """Within the block, use the fused kernel where possible (``True``) or never (``False``)."""
    global _enabled
    saved, _enabled = _enabled, enabled
    try:
        yield
    finally:
        _enabled = saved


def _cpu_signature() -> str:
    """The CPU's model and flags: the kernel is built for this CPU (-march=native), so a cache shared by
    machines of different CPUs must keep one build per CPU."""
    try:
        text = Path("/proc/cpuinfo").read_text()
        lines = [ln for ln in text.splitlines() if ln.startswith(("model name", "flags"))][:2]
    except OSError:
        lines = []
    return "\n".join([platform.machine(), platform.processor(), *lines])


@cache
def fused_kernel_available() -> bool:
    """Build (or load the cached build of) the kernel; False, with one warning, where that fails."""
    if os.environ.get("LOCLAB_FUSED_BN", "1") == "0":
        return False
    digest = hashlib.sha1(_SOURCE.read_bytes() + _cpu_signature().encode() + torch.__version__.encode())
    try:
        from torch.utils.cpp_extension import load

        load(name=f"loclab_bn_relu_{digest.hexdigest()[:12]}", sources=[str(_SOURCE)], is_python_module=False,
             extra_cflags=["-O3", "-march=native", "-fopenmp", "-ffp-contract=off"], verbose=False)
    except Exception as exc:  # noqa: BLE001 - no compiler, no ninja, a read-only cache...: the unfused path still works
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        warnings.warn(f"loclab: the fused BatchNorm+ReLU kernel could not be built ({first_line}); using "
                      "PyTorch's BatchNorm and ReLU (set LOCLAB_FUSED_BN=0 to skip the attempt)", stacklevel=2)
        return False
    return True


class _BatchNormReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, momentum: float, eps: float):
        y, mean, invstd = torch.ops.loclab_bn_relu.forward(x, weight, bias, running_mean, running_var, momentum, eps)
        ctx.save_for_backward(x, weight, bias, mean, invstd)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        x, weight, bias, mean, invstd = ctx.saved_tensors
        grad_y = grad_y.contiguous(memory_format=torch.channels_last)
        grad_x, grad_w, grad_b = torch.ops.loclab_bn_relu.backward(grad_y, x, weight, bias, mean, invstd)
        return grad_x, grad_w.to(weight.dtype), grad_b.to(bias.dtype), None, None, None, None


def can_fuse(x: torch.Tensor) -> bool:
    """Whether :func:`batch_norm_relu_train` can take ``x``: a bf16 channels-last 4-D CPU tensor, outside
    ``torch.compile`` (which fuses on its own), with the kernel available."""
    return (_enabled and x.device.type == "cpu" and x.dtype == torch.bfloat16 and x.dim() == 4
            and x.is_contiguous(memory_format=torch.channels_last)
            and not torch.compiler.is_compiling() and fused_kernel_available())


def batch_norm_relu_train(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, running_mean: torch.Tensor,
                          running_var: torch.Tensor, momentum: float, eps: float) -> torch.Tensor:
    """``relu(batch_norm(x, training=True))`` with float32 parameters and statistics, fused; differentiable.

    Updates ``running_mean`` / ``running_var`` in place as ``torch.nn.functional.batch_norm`` does.
    Only for inputs where :func:`can_fuse` is true.
    """
    return _BatchNormReLU.apply(x, weight, bias, running_mean, running_var, momentum, eps)
