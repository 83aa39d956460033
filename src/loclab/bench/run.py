"""``loclab bench``: every speed figure measured side by side in one run, never claimed.

Every ratio compares paths timed in the same process on the same inputs (see
:mod:`loclab.bench.workloads` for the variants fp32 eager / default / compiled).
"""

from __future__ import annotations

import json
from typing import Any

import torch

from loclab.bench.ap import ap_speed
from loclab.bench.timing import matmul_peak
from loclab.bench.workloads import detector_speed, generation_speed, keypoint_speed, variants
from loclab.engine.rundir import machine_description


def run_bench(as_json: bool = False, quick: bool = False, with_compile: bool = True) -> dict[str, Any]:
    """Run every measurement and print a table (or JSON); returns the results."""
    repeats = 3 if quick else 6
    vs = variants(with_compile)
    default = vs[1].path
    rows, step = detector_speed(vs, 16, repeats, "reference", breakdown=True)
    rows += detector_speed(vs, 16, repeats, "loclab")[0]
    for name in ("heatmap", "regression"):
        rows += keypoint_speed(vs, name, 32, repeats)
    low = torch.bfloat16 if default.autocast_dtype is not None else torch.float32
    peak_low, size_low = matmul_peak(low)
    peak_fp32, size_fp32 = matmul_peak(torch.float32)
    flops = step["train_step_flops"]
    default_step = step["breakdown_default"]
    step_seconds = 16 / rows[0]["default_img_s"]
    ap = ap_speed(repeats)
    result: dict[str, Any] = {
        "machine": machine_description(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "default_path": default.name,
        "rows": rows,
        "detector_train_speedup": rows[0]["speedup"],
        "detector_train_flops_per_step": flops,
        "detector_train_achieved_flops": flops / step_seconds,
        "matmul_peak_flops": {_dtype_name(low): peak_low, "float32": peak_fp32},
        "matmul_peak_size": {_dtype_name(low): size_low, "float32": size_fp32},
        "detector_train_peak_fraction": flops / step_seconds / peak_low,
        # the convolutions' own FLOP rate: the network's FLOPs are all convolution FLOPs
        "detector_conv_peak_fraction": flops / default_step["convolution"] / peak_low,
        "detector_step_breakdown": {k: v for k, v in step.items() if k.startswith("breakdown_")},
        "match_loss_fraction": step["match_loss_seconds"] / step_seconds,
        "eval": ap,
        "eval_speedup_vs_pycocotools": ap["speedup"],
        "generation": generation_speed(100 if quick else 300),
    }
    if "compiled_img_s" in rows[0]:
        result["detector_train_speedup_compiled"] = rows[0]["compiled_speedup"]
        result["detector_train_peak_fraction_compiled"] = flops * rows[0]["compiled_img_s"] / 16 / peak_low
    if as_json:
        print(json.dumps(result, indent=1))
    else:
        print_table(result)
    return result


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def print_table(r: dict[str, Any]) -> None:
    compiled = "compiled_img_s" in r["rows"][0]
    print(f"loclab bench — {r['machine']}, torch {r['torch']}, {r['threads']} threads, default path {r['default_path']}")
    head = f"{'images/s':34s} {'fp32 eager':>11s} {'default':>9s} {'ratio':>7s}"
    print(head + (f" {'compiled':>9s} {'ratio':>7s} {'1st call':>8s}" if compiled else ""))
    for row in r["rows"]:
        line = f"{row['name']:34s} {row['fp32_eager_img_s']:11.1f} {row['default_img_s']:9.1f} {row['speedup']:6.2f}x"
        if compiled:
            line += f" {row['compiled_img_s']:9.1f} {row['compiled_speedup']:6.2f}x {row['compile_s']:7.0f}s"
        print(line)
    peak = ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s (n={r['matmul_peak_size'][k]})" for k, v in r["matmul_peak_flops"].items())
    print(f"\nmatmul peak, best square size: {peak}")
    print(f"detector[reference] train step: {r['detector_train_flops_per_step'] / 1e9:.1f} GFLOP, "
          f"{r['detector_train_achieved_flops'] / 1e9:.0f} GFLOP/s = {100 * r['detector_train_peak_fraction']:.0f} % "
          f"of the peak" + (f" (compiled {100 * r['detector_train_peak_fraction_compiled']:.0f} %)" if compiled else ""))
    print(f"  its convolutions alone run at {100 * r['detector_conv_peak_fraction']:.0f} % of the peak")
    for label, parts in r["detector_step_breakdown"].items():
        total = parts["step"]
        shares = ", ".join(f"{k} {100 * v / total:.0f} %" for k, v in parts.items() if k != "step")
        print(f"  {label.removeprefix('breakdown_')} step {1e3 * total:.0f} ms (profiled): {shares}")
    print(f"matching + loss: {100 * r['match_loss_fraction']:.1f} % of the detector training step")
    e = r["eval"]
    print(f"AP evaluation ({e['num_detections']} detections): loclab {e['loclab_seconds'] * 1e3:.0f} ms, pycocotools "
          f"{e['pycocotools_seconds'] * 1e3:.0f} ms ({e['speedup']:.1f}x); AP50 {e['loclab_ap50']:.6f} vs "
          f"{e['pycocotools_ap50']:.6f}")
    g = r["generation"]
    print(f"data generation: shapes {g['shapes_img_s']:.0f} img/s, figures {g['figures_img_s']:.0f} img/s")
