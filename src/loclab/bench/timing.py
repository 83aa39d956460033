"""How ``loclab bench`` measures: median wall time, the machine's matmul peak, and where a step's time goes."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

from loclab.engine.precision import pick_device


def synchronize() -> None:
    """Wait for queued GPU work (a no-op without CUDA): a wall-clock timing must include it."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], repeats: int, warmup: int = 2) -> float:
    """Median seconds per call after warm-up (median: robust to a stray slow step)."""
    for _ in range(warmup):
        fn()
    synchronize()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        synchronize()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _square_operands(dtype: torch.dtype, size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.randn(size, size, device=device).to(dtype), torch.randn(size, size, device=device).to(dtype))


def _best_matmul_rate(operands: dict[int, tuple[torch.Tensor, torch.Tensor]], calls: int) -> tuple[float, int]:
    """The best FLOP/s of any single call (the peak is what the machine can deliver at its best)."""
    best, best_size = 0.0, 0
    for size, (a, b) in operands.items():
        a @ b
        for _ in range(calls):
            synchronize()
            t0 = time.perf_counter()
            a @ b
            synchronize()
            rate = 2 * size**3 / (time.perf_counter() - t0)
            if rate > best:
                best, best_size = rate, size
    return best, best_size


def matmul_sizes(device: torch.device) -> tuple[int, ...]:
    """Square matmul sizes the peak is taken over: a GPU needs large ones to fill its SMs (a 1024-square
    bf16 matmul is a few microseconds on a data-centre GPU, mostly launch cost)."""
    return (1024, 2048, 4096, 8192) if device.type == "cuda" else (1024, 2048, 4096)


def matmul_peak(dtype: torch.dtype, sizes: tuple[int, ...] | None = None, calls: int = 10,
                device: torch.device | None = None) -> tuple[float, int]:
    """The best FLOP/s of square matmuls in ``dtype`` on ``device`` (default: CUDA when available) over
    ``sizes`` (default :func:`matmul_sizes`), and the size that reached it.

    The best over several sizes and calls, not one, so "fraction of peak" is measured against the
    highest rate this machine actually delivers (on the 2-core test CPU 1024 beats 2048 by about 7 %).
    """
    device = device or pick_device()
    operands = {size: _square_operands(dtype, size, device) for size in sizes or matmul_sizes(device)}
    return _best_matmul_rate(operands, calls)


def step_and_peak(step: Callable[[], None], flops: float, dtype: torch.dtype, rounds: int = 5,
                  device: torch.device | None = None) -> dict[str, float]:
    """FLOP/s of ``step`` (median over rounds) and the best matmul FLOP/s on ``device`` seen between its timings.

    On the 2-core test machine the step's FLOP rate is steady (within 3 % over six runs) while the same
    bf16 matmuls measure anywhere from 800 to 910 GFLOP/s from one minute to the next, so a peak
    taken once, at another time, would move the fraction by 10 %. Each round times two steps, then
    the matmuls; the peak is the best rate of any round, i.e. what the machine delivered at its best.
    The matmuls are 1024- and 2048-square on a CPU (its fastest sizes), 4096 and 8192 on a GPU.
    """
    device = device or pick_device()
    sizes = (4096, 8192) if device.type == "cuda" else (1024, 2048)
    operands = {size: _square_operands(dtype, size, device) for size in sizes}
    step()
    rates, peaks = [], []
    for _ in range(rounds):
        rates.append(flops / timed(step, 2, warmup=0))
        peaks.append(_best_matmul_rate(operands, 5)[0])
    return {"achieved_flops": float(np.median(rates)), "peak_flops": max(peaks)}


# Self time of these ops is the convolution arithmetic itself (forward, and both backward gradients).
_CONV_OPS = ("convolution", "conv2d", "mkldnn_conv")
_NORM_ACT_OPS = ("batch_norm", "threshold", "relu", "clamp_min")


def _category(name: str) -> str:
    if name.startswith("loclab_bn_relu::"):  # loclab's fused BatchNorm+ReLU kernel (loclab.ops.bn_relu)
        return "batchnorm_relu"
    if not name.startswith("aten::"):
        return "other"
    if any(k in name for k in _CONV_OPS):
        return "convolution"
    if any(k in name for k in _NORM_ACT_OPS):
        return "batchnorm_relu"
    return "other"


@contextlib.contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """Silence what native code writes to file descriptor 2 (the profiler's start/stop trace lines)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def step_breakdown(run: Callable[[], None], steps: int = 3, device: torch.device | None = None) -> dict[str, float]:
    """Seconds per step spent in convolutions, in BatchNorm/ReLU, in the optimiser, and in everything else.

    Measured with torch's profiler over ``steps`` calls of ``run`` (one training step each): the
    self time of each op, grouped by kind. On a GPU (``device``, default: CUDA when available) the
    device time is used. Compiled graphs fuse BatchNorm/ReLU into generated kernels, which then count
    as "other".
    """
    run()
    synchronize()
    cuda = (device or pick_device()).type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    t0 = time.perf_counter()
    with _quiet_native_stderr(), profile(activities=activities) as prof:
        for _ in range(steps):
            run()
        synchronize()
    wall = (time.perf_counter() - t0) / steps
    seconds = {"convolution": 0.0, "batchnorm_relu": 0.0, "optimizer": 0.0}
    for event in prof.key_averages():
        if event.key.startswith("Optimizer.step#"):
            seconds["optimizer"] += event.cpu_time_total / 1e6 / steps
            continue
        kind = _category(event.key)
        if kind != "other":
            self_us = event.self_device_time_total if cuda else event.self_cpu_time_total
            seconds[kind] += self_us / 1e6 / steps
    seconds["other"] = max(0.0, wall - sum(seconds.values()))
    seconds["step"] = wall
    return seconds
