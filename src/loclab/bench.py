"""``loclab bench``: speed measured side by side in one run, never claimed.

Every ratio compares two paths timed in the same process on the same inputs:

- training and inference images/s of the detector and both keypoint models, plain fp32 eager vs
  loclab's default numeric path (bf16 autocast + channels_last on CPUs with BF16, AMP on GPUs);
- achieved FLOP/s of the detector training step against this machine's measured matmul peak;
- the share of the detector training step spent in matching + loss;
- AP evaluation time, loclab vs pycocotools, on the same detections (and their AP50, which must agree);
- data generation images/s.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from loclab.config import DetectorConfig, KeypointConfig
from loclab.engine import detection as det_task
from loclab.engine import keypoints as kp_task
from loclab.engine.precision import NumericPath, resolve_numeric_path
from loclab.engine.rundir import machine_description


def _timed(fn: Callable[[], Any], repeats: int, warmup: int = 2) -> float:
    """Median seconds per call after warm-up (median: robust to a stray slow step)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _shapes_batch(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` real shapes images rendered in memory, with padded targets."""
    from loclab.data.shapes import render_shapes_image

    rng = np.random.default_rng(0)
    images, boxes, labels = [], [], []
    for _ in range(n):
        img, objects = render_shapes_image(rng)
        images.append(torch.from_numpy(np.array(img)).permute(2, 0, 1))
        boxes.append(torch.tensor([o[2] for o in objects], dtype=torch.float32))
        labels.append(torch.tensor([o[0] for o in objects]))
    m = max(len(b) for b in boxes)
    pad_boxes = torch.zeros(n, m, 4)
    pad_labels = torch.full((n, m), -1)
    valid = torch.zeros(n, m, dtype=torch.bool)
    for i, (b, lab) in enumerate(zip(boxes, labels)):
        pad_boxes[i, : len(b)], pad_labels[i, : len(b)], valid[i, : len(b)] = b, lab, True
    return torch.stack(images).float() / 255, pad_boxes, pad_labels, valid


def _train_step(model: nn.Module, step, batch, path: NumericPath) -> Callable[[], None]:
    model = path.prepare(model).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def run() -> None:
        with path.autocast():
            loss = step(model, batch, path)["loss_total"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return run


def _infer(model: nn.Module, images: torch.Tensor, path: NumericPath) -> Callable[[], None]:
    model = path.prepare(model).eval()

    def run() -> None:
        with torch.no_grad(), path.autocast():
            model(path.images(images))

    return run


def _compare(name: str, make: Callable[[NumericPath], Callable[[], None]], n_images: int, repeats: int,
             paths: dict[str, NumericPath]) -> dict[str, Any]:
    rates = {label: n_images / _timed(make(p), repeats) for label, p in paths.items()}
    base, fast = rates["fp32_eager"], rates["default"]
    return {"name": name, "fp32_eager_img_s": base, "default_img_s": fast, "speedup": fast / base}


def detector_speed(paths, batch_size: int, repeats: int, model_name: str) -> tuple[list[dict], dict[str, Any]]:
    cfg = DetectorConfig(model=model_name)
    setup = det_task.AnchorSetup.from_config(cfg)
    images, boxes, labels, valid = _shapes_batch(batch_size)
    batch = (images, boxes, labels, valid, torch.arange(batch_size))
    step = det_task.make_step(cfg, det_task.make_loss(cfg, setup).to(paths["default"].device))

    def train(p):
        torch.manual_seed(0)
        return _train_step(det_task.make_model(cfg), step, batch, p)

    def infer(p):
        torch.manual_seed(0)
        return _infer(det_task.make_model(cfg), images, p)

    rows = [_compare(f"detector[{model_name}] train", train, batch_size, repeats, paths),
            _compare(f"detector[{model_name}] inference", infer, batch_size, repeats, paths)]
    # FLOPs of one fp32 training step (forward + backward), counted by torch's flop counter
    model = det_task.make_model(cfg).train()
    counter = FlopCounterMode(display=False)
    with counter:
        step(model, batch, resolve_numeric_path("fp32"))["loss_total"].backward()
    flops = counter.get_total_flops()
    # matching + loss share of the default-path step
    fast = paths["default"]
    net = fast.prepare(det_task.make_model(cfg)).train()
    loss_fn = det_task.make_loss(cfg, setup).to(fast.device)
    with fast.autocast():
        preds = det_task.flatten_predictions(net(fast.images(images)), len(cfg.anchor_sizes[0]), cfg.num_classes)
    preds = preds.detach().float().requires_grad_(True)

    def match_and_loss() -> None:
        loss_fn(preds, boxes, labels, valid)["loss_total"].backward()

    t_loss = _timed(match_and_loss, repeats)
    t_step = batch_size / rows[0]["default_img_s"]
    return rows, {"train_step_flops": flops, "train_step_seconds": t_step, "match_loss_seconds": t_loss}


def keypoint_speed(paths, model_name: str, batch_size: int, repeats: int) -> list[dict]:
    from loclab.data.figures import render_figure
    from loclab.ops.heatmaps import encode_heatmaps

    cfg = KeypointConfig(model=model_name)
    rng = np.random.default_rng(0)
    rendered = [render_figure(rng) for _ in range(batch_size)]
    images = torch.stack([torch.from_numpy(np.array(img)) for img, _ in rendered])[:, None].float() / 255
    keypoints = torch.tensor([kp for _, kp in rendered], dtype=torch.float32)
    if kp_task.output_type(cfg) == "heatmap":
        target = encode_heatmaps(keypoints, 128, cfg.heatmap_size, cfg.sigma)
    else:
        target = (keypoints / 128).flatten(1)
    step = kp_task.make_step(cfg)

    def train(p):
        torch.manual_seed(0)
        return _train_step(kp_task.make_model(cfg), step, (images, target), p)

    def infer(p):
        torch.manual_seed(0)
        return _infer(kp_task.make_model(cfg), images, p)

    return [_compare(f"{model_name} train", train, batch_size, repeats, paths),
            _compare(f"{model_name} inference", infer, batch_size, repeats, paths)]


def matmul_peak(dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    """Measured FLOP/s of a square matmul in ``dtype`` on the default device."""
    device = resolve_numeric_path().device
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    seconds = _timed(lambda: a @ b, repeats)
    return 2 * size**3 / seconds


def ap_speed(repeats: int) -> dict[str, Any]:
    """loclab's COCO-style AP50 vs pycocotools on identical synthetic detections of 200 images."""
    from loclab.bench_ap import pycocotools_ap50, synthetic_detections
    from loclab.metrics.ap import compute_ap

    dets, gts = synthetic_detections(num_images=200, seed=0)
    t_loclab = _timed(lambda: compute_ap(dets, gts, max_detections_per_image_class=100), repeats, warmup=1)
    ours = compute_ap(dets, gts, max_detections_per_image_class=100)["mAP50_coco"]
    t_coco, theirs = pycocotools_ap50(dets, gts, repeats)
    return {"loclab_seconds": t_loclab, "pycocotools_seconds": t_coco, "speedup": t_coco / t_loclab,
            "loclab_ap50": ours, "pycocotools_ap50": theirs, "num_detections": len(dets)}


def generation_speed(n: int = 200) -> dict[str, float]:
    from loclab.data.figures import generate_figures
    from loclab.data.shapes import generate_shapes

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, fn in (("shapes", generate_shapes), ("figures", generate_figures)):
            t0 = time.perf_counter()
            fn(Path(tmp) / name, seed=1, n_train=n, n_val=0, progress=False)
            out[f"{name}_img_s"] = n / (time.perf_counter() - t0)
    return out


def run_bench(as_json: bool = False, quick: bool = False) -> dict[str, Any]:
    repeats = 3 if quick else 6
    default = resolve_numeric_path("auto")
    paths = {"fp32_eager": resolve_numeric_path("fp32", default.device), "default": default}
    rows, step_info = detector_speed(paths, 16, repeats, "reference")
    more_rows, _ = detector_speed(paths, 16, repeats, "loclab")
    rows += more_rows
    for name in ("heatmap", "regression"):
        rows += keypoint_speed(paths, name, 32, repeats)
    low = torch.bfloat16 if default.autocast_dtype is not None else torch.float32
    peak_low, peak_fp32 = matmul_peak(low), matmul_peak(torch.float32)
    achieved = step_info["train_step_flops"] / step_info["train_step_seconds"]
    ap = ap_speed(repeats)
    result = {
        "machine": machine_description(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "default_path": default.name,
        "rows": rows,
        "detector_train_speedup": rows[0]["speedup"],
        "detector_train_flops_per_step": step_info["train_step_flops"],
        "detector_train_achieved_flops": achieved,
        "matmul_peak_flops": {str(low).removeprefix("torch."): peak_low, "float32": peak_fp32},
        "detector_train_peak_fraction": achieved / peak_low,
        "match_loss_fraction": step_info["match_loss_seconds"] / step_info["train_step_seconds"],
        "eval": ap,
        "eval_speedup_vs_pycocotools": ap["speedup"],
        "generation": generation_speed(100 if quick else 300),
    }
    if as_json:
        print(json.dumps(result, indent=1))
    else:
        _print_table(result)
    return result


def _print_table(r: dict[str, Any]) -> None:
    print(f"loclab bench — {r['machine']}, torch {r['torch']}, {r['threads']} threads, default path {r['default_path']}")
    print(f"{'':34s} {'fp32 eager':>12s} {'default':>12s} {'ratio':>7s}")
    for row in r["rows"]:
        print(f"{row['name'] + ' (img/s)':34s} {row['fp32_eager_img_s']:12.1f} {row['default_img_s']:12.1f} "
              f"{row['speedup']:6.2f}x")
    peak = ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in r["matmul_peak_flops"].items())
    print(f"detector train step: {r['detector_train_flops_per_step'] / 1e9:.1f} GFLOP, achieved "
          f"{r['detector_train_achieved_flops'] / 1e9:.0f} GFLOP/s = {100 * r['detector_train_peak_fraction']:.0f} % "
          f"of the measured matmul peak ({peak})")
    print(f"matching + loss: {100 * r['match_loss_fraction']:.1f} % of the detector training step")
    e = r["eval"]
    print(f"AP evaluation ({e['num_detections']} detections): loclab {e['loclab_seconds'] * 1e3:.0f} ms, pycocotools "
          f"{e['pycocotools_seconds'] * 1e3:.0f} ms ({e['speedup']:.1f}x); AP50 {e['loclab_ap50']:.6f} vs "
          f"{e['pycocotools_ap50']:.6f}")
    g = r["generation"]
    print(f"data generation: shapes {g['shapes_img_s']:.0f} img/s, figures {g['figures_img_s']:.0f} img/s")
