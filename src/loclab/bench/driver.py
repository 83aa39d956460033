"""``loclab bench``: every speed figure measured side by side in one run, never claimed.

Every ratio compares paths timed in the same process on the same inputs (see
:mod:`loclab.bench.workloads` for the variants fp32 eager / default / compiled). Everything runs on one
device, ``--device`` (CUDA when available); on a GPU the batches are larger (:func:`default_batch`) and the
table adds each training workload's achieved FLOP rate against the bf16 matmul rate measured in the run.
"""

from __future__ import annotations

import json
from typing import Any

import torch
import torch._inductor.config

from loclab.bench.ap import ap_speed
from loclab.bench.convs import ConvTiming
from loclab.bench.timing import matmul_peak
from loclab.bench.workloads import DetectorBench, generation_speed, keypoint_workloads, measure, variants
from loclab.engine.precision import pick_device
from loclab.engine.rundir import machine_description
from loclab.errors import ConfigError

# Detector images per timed batch (keypoint workloads take twice as many): the CPU bench's batch, the
# training recipes' 16, and on a GPU a batch large enough to keep these small models' kernels busy.
CPU_BATCH = 16
GPU_BATCH = 128


def default_batch(device: torch.device) -> int:
    return GPU_BATCH if device.type == "cuda" else CPU_BATCH


def bench_device(requested: str = "auto") -> torch.device:
    """``auto``: CUDA when available, else the CPU; ``cpu`` / ``cuda`` / ``cuda:N`` as asked (CUDA must exist)."""
    try:
        device = pick_device(requested)
    except RuntimeError:  # torch's message for a string that names no device
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise ConfigError(f"loclab bench runs on cpu or cuda, not {requested!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {requested}: this torch build sees no CUDA device; use --device cpu")
    return device


def run_bench(as_json: bool = False, quick: bool = False, with_compile: bool = True, device: str = "auto",
              batch: int | None = None) -> dict[str, Any]:
    """Run every measurement on ``device`` and print a table (or JSON); returns the results.

    ``batch``: detector images per timed step (keypoint workloads take twice as many); default
    :func:`default_batch` (16 on a CPU, 128 on a GPU).
    """
    dev = bench_device(device)
    batch = batch or default_batch(dev)
    if batch < 2:
        raise ConfigError(f"bench batch must be at least 2 (BatchNorm needs two images), got {batch}")
    repeats = 3 if quick else 6
    vs = variants(with_compile, dev)
    default = next(v.numeric for v in vs if v.label == "default")
    reference = DetectorBench.build("reference", batch, dev)
    workloads = reference.workloads() + DetectorBench.build("loclab", batch, dev).workloads()
    for name in ("heatmap", "regression"):
        workloads += keypoint_workloads(name, 2 * batch, dev)
    # compile times are measured cold: inductor's on-disk caches would hide them on a second run
    with torch._inductor.config.patch(force_disable_caches=True):
        rows = measure(workloads, vs, repeats)
        # counted after the timings: measure() times the plain variants before anything else has run
        flops = {w.name: w.flops() for w in workloads if w.flops is not None}  # FLOPs per call
        step = reference.analyse(vs, repeats, flops=flops[workloads[0].name])
    low = step["peak_dtype"]
    peak_low, size_low = matmul_peak(low, device=dev)
    peak_fp32, size_fp32 = matmul_peak(torch.float32, device=dev)
    # the peak: the best matmul rate this run saw, standalone or between the step's timings
    peak = max(peak_low, *(step[f"rate_{k}"]["peak_flops"] for k in ("unfused", "default", "compiled")
                           if f"rate_{k}" in step))
    for w, row in zip(workloads, rows):
        if w.name in flops:
            _add_flop_rates(row, flops[w.name], w.n_images, vs, peak)
    flops = step["train_step_flops"]
    default_step = step["breakdown_default"]
    step_seconds = batch / rows[0]["default_img_s"]
    ap = ap_speed(repeats)
    result: dict[str, Any] = {
        "machine": machine_description(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": str(dev),
        "batch": batch,
        "default_path": default.name,
        "rows": rows,
        "detector_train_speedup": rows[0]["speedup"],
        "detector_train_flops_per_step": flops,
        # achieved FLOP/s (timed in alternation with matmuls, see step_and_peak) over the best matmul rate seen
        "detector_train_achieved_flops": step["rate_default"]["achieved_flops"],
        "detector_train_peak_fraction": step["rate_default"]["achieved_flops"] / peak,
        "detector_train_peak_fraction_unfused": step["rate_unfused"]["achieved_flops"] / peak,
        "peak_flops": peak,
        "matmul_peak_flops": {_dtype_name(low): peak_low, "float32": peak_fp32},
        "matmul_peak_size": {_dtype_name(low): size_low, "float32": size_fp32},
        # the convolutions' own FLOP rate: the network's FLOPs are all convolution FLOPs
        "detector_conv_peak_fraction": flops / default_step["convolution"] / peak,
        "detector_step_breakdown": {k: v for k, v in step.items() if k.startswith("breakdown_")},
        "detector_conv_layers": [_conv_row(c) for c in step["conv_timings"]],
        "match_loss_fraction": step["match_loss_seconds"] / step_seconds,
        "eval": ap,
        "eval_speedup_vs_pycocotools": ap["speedup"],
        "generation": generation_speed(100 if quick else 300),
    }
    if "compiled_img_s" in rows[0]:
        result["detector_train_speedup_compiled"] = rows[0]["compiled_speedup"]
        result["detector_train_peak_fraction_compiled"] = step["rate_compiled"]["achieved_flops"] / peak
    if as_json:
        print(json.dumps(result, indent=1))
    else:
        print_table(result)
    return result


def _add_flop_rates(row: dict[str, Any], flops: int, n_images: int, vs, peak: float) -> None:
    """A training row's FLOPs per image and, per variant, achieved FLOP/s and its fraction of ``peak``."""
    row["train_flops_per_image"] = flops / n_images
    for v in vs:
        rate = row[f"{v.label}_img_s"] * flops / n_images
        row[f"{v.label}_flop_s"] = rate
        row[f"{v.label}_peak_fraction"] = rate / peak


def _conv_row(c: ConvTiming) -> dict[str, Any]:
    def rate(seconds: float | None) -> float | None:
        return None if seconds is None else c.flops / seconds

    return {"layer": c.layer, "shape": c.shape, "gflop": c.total_flops / 1e9, "seconds": c.seconds,
            "forward_flops": rate(c.forward_s), "input_grad_flops": rate(c.input_grad_s),
            "weight_grad_flops": rate(c.weight_grad_s)}


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def print_table(r: dict[str, Any]) -> None:
    compiled = "compiled_img_s" in r["rows"][0]
    print(f"loclab bench — {r['machine']}, torch {r['torch']}, {r['threads']} threads, default path {r['default_path']}")
    head = (f"{'images/s':34s} {'fp32 eager':>10s} {'+retained':>10s} {'ratio':>6s} {'unfused':>8s} {'ratio':>6s} "
            f"{'default':>8s} {'ratio':>6s}")
    print(head + (f" {'compiled':>8s} {'ratio':>6s} {'1st call':>8s}" if compiled else ""))
    for row in r["rows"]:
        line = (f"{row['name']:34s} {row['fp32_eager_img_s']:10.1f} {row['fp32_retained_img_s']:10.1f} "
                f"{row['fp32_retained_speedup']:5.2f}x {row['unfused_img_s']:8.1f} {row['unfused_speedup']:5.2f}x "
                f"{row['default_img_s']:8.1f} {row['speedup']:5.2f}x")
        if compiled:
            line += f" {row['compiled_img_s']:8.1f} {row['compiled_speedup']:5.2f}x {row['compile_s']:7.0f}s"
        print(line)
    peak = ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s (n={r['matmul_peak_size'][k]})" for k, v in r["matmul_peak_flops"].items())
    print(f"\nmatmul, best square size standalone: {peak}; best seen in the run: {r['peak_flops'] / 1e9:.0f} GFLOP/s")
    if r.get("device", "cpu").startswith("cuda"):
        _print_flop_rates(r)
    print(f"detector[reference] train step: {r['detector_train_flops_per_step'] / 1e9:.1f} GFLOP, "
          f"{r['detector_train_achieved_flops'] / 1e9:.0f} GFLOP/s = {100 * r['detector_train_peak_fraction']:.0f} % "
          f"of the peak; unfused BatchNorm+ReLU {100 * r['detector_train_peak_fraction_unfused']:.0f} %"
          + (f"; compiled {100 * r['detector_train_peak_fraction_compiled']:.0f} %" if compiled else ""))
    print(f"  its convolutions alone run at {100 * r['detector_conv_peak_fraction']:.0f} % of the peak")
    for label, parts in r["detector_step_breakdown"].items():
        total = parts["step"]
        shares = ", ".join(f"{k} {100 * v / total:.0f} %" for k, v in parts.items() if k != "step")
        print(f"  {label.removeprefix('breakdown_')} step {1e3 * total:.0f} ms (profiled): {shares}")
    _print_convs(r)
    print(f"matching + loss: {100 * r['match_loss_fraction']:.1f} % of the detector training step")
    e = r["eval"]
    print(f"AP evaluation ({e['num_detections']} detections): loclab {e['loclab_seconds'] * 1e3:.0f} ms, pycocotools "
          f"{e['pycocotools_seconds'] * 1e3:.0f} ms ({e['speedup']:.1f}x); AP50 {e['loclab_ap50']:.6f} vs "
          f"{e['pycocotools_ap50']:.6f}")
    g = r["generation"]
    print(f"data generation: shapes {g['shapes_img_s']:.0f} img/s, figures {g['figures_img_s']:.0f} img/s")


def _print_flop_rates(r: dict[str, Any]) -> None:
    """Achieved FLOP/s of every training workload, fp32 eager and the default path, against the peak."""
    peak = r["peak_flops"]
    print(f"training steps, achieved FLOP/s (TFLOP/s and % of the {peak / 1e12:.0f} TFLOP/s matmul peak):")
    for row in r["rows"]:
        if "train_flops_per_image" in row:
            print(f"  {row['name']:32s} {row['train_flops_per_image'] / 1e9:6.1f} GFLOP/image   fp32 eager "
                  f"{row['fp32_eager_flop_s'] / 1e12:7.1f} ({100 * row['fp32_eager_peak_fraction']:4.1f} %)   "
                  f"default {row['default_flop_s'] / 1e12:7.1f} ({100 * row['default_peak_fraction']:4.1f} %)")


def _print_convs(r: dict[str, Any]) -> None:
    peak = r["peak_flops"]
    rows = r["detector_conv_layers"]
    print("  each convolution alone, % of the peak (forward / input grad / weight grad), its share of conv time:")
    total = sum(c["seconds"] for c in rows)
    for c in rows:
        rates = " / ".join("—" if v is None else f"{100 * v / peak:3.0f}" for v in
                           (c["forward_flops"], c["input_grad_flops"], c["weight_grad_flops"]))
        print(f"    {c['layer']:16s} {c['shape']:26s} {rates:>15s}   {100 * c['seconds'] / total:3.0f} % of time, "
              f"{100 * c['gflop'] / sum(x['gflop'] for x in rows):3.0f} % of FLOPs")
