"""The fastest correct numeric path the hardware offers.

- CPU with native BF16 (AVX-512 BF16 / AMX): bf16 autocast + channels_last.
- CUDA GPU: autocast (bf16 where supported, else fp16 with a gradient scaler) + channels_last.
- Anything else: plain fp32.
Losses are always computed in fp32 (callers cast predictions with ``.float()``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import Tensor

from loclab.errors import ConfigError


def cpu_has_bf16() -> bool:
    """True when oneDNN reports native BF16 support on this CPU."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def pick_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


@dataclass(frozen=True)
class NumericPath:
    """How tensors flow through a model: device, autocast dtype (None = fp32) and memory format."""

    device: torch.device
    autocast_dtype: torch.dtype | None
    channels_last: bool

    @property
    def name(self) -> str:
        kind = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.autocast_dtype]
        return f"{self.device.type}-{kind}" + ("-channels_last" if self.channels_last else "")

    @property
    def needs_grad_scaler(self) -> bool:
        return self.autocast_dtype is torch.float16

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def images(self, x: Tensor) -> Tensor:
        """Move an image batch to the device in the path's memory format."""
        x = x.to(self.device, non_blocking=True)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model


def resolve_numeric_path(precision: str = "auto", device: torch.device | None = None) -> NumericPath:
    """Pick the numeric path for ``precision`` in {"auto", "fp32", "bf16", "fp16"} on ``device``."""
    device = device or pick_device()
    if precision == "fp32":
        return NumericPath(device, None, False)
    if precision == "bf16":
        return NumericPath(device, torch.bfloat16, True)
    if precision == "fp16":
        if device.type != "cuda":
            raise ConfigError("fp16 autocast is only supported on CUDA; use bf16 or fp32 on a CPU")
        return NumericPath(device, torch.float16, True)
    if precision != "auto":
        raise ConfigError(f"unknown precision {precision!r}; choose auto, fp32, bf16 or fp16")
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return NumericPath(device, dtype, True)
    if device.type == "cpu" and cpu_has_bf16():
        return NumericPath(device, torch.bfloat16, True)
    return NumericPath(device, None, False)
