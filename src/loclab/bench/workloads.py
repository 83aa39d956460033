"""The workloads ``loclab bench`` times: training steps and inference of every model, on every path.

A *variant* is one way to run the same model on the same batch:

- ``fp32_eager``: what plain PyTorch code does — fp32, eager, the optimiser's default loop, glibc's
  default allocator policy;
- ``fp32_retained``: the same, with freed memory retained (:mod:`loclab.engine.memory`), to show
  how much of the speed-up the allocator alone gives;
- ``unfused``: loclab's default path below, but with PyTorch's own BatchNorm and ReLU instead of
  loclab's fused kernel (:mod:`loclab.ops.bn_relu`), to show what the kernel gives;
- ``default``: loclab's training path — the numeric path of ``precision="auto"`` (bf16 autocast +
  channels_last on CPUs with BF16, AMP on GPUs), the fused BatchNorm+ReLU kernel on CPUs, the fused
  optimiser of :func:`build_optimizer`, and freed memory retained, as :func:`loclab.engine.train.fit` runs;
- ``compiled``: the default path with the model under ``torch.compile`` (``train.compile=true``).

The allocator policy is process-wide and cannot be fully undone, so :func:`measure` times every
workload's plain variant first, before any other variant has touched it; the other variants are
timed interleaved.

**One device for everything.** The bench runs on one device (``loclab bench --device``, CUDA when available):
every variant's numeric path, every model, batch and loss, the FLOP count and the matmul peak are placed on
it explicitly, never by a default that another piece could resolve differently.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from loclab.bench.convs import conv_timings
from loclab.bench.timing import step_and_peak, step_breakdown, timed
from loclab.config import DetectorConfig, KeypointConfig, TrainConfig
from loclab.engine import detection as det_task
from loclab.engine import keypoints as kp_task
from loclab.engine.memory import freed_memory_retained
from loclab.engine.precision import NumericPath, resolve_numeric_path
from loclab.engine.train import build_optimizer
from loclab.ops.bn_relu import fused_bn_relu


@dataclass(frozen=True)
class Variant:
    label: str
    numeric: NumericPath
    loclab_optimizer: bool
    retain_memory: bool
    compile: bool = False
    fused_bn: bool = True


def variants(with_compile: bool, device: torch.device | None = None) -> list[Variant]:
    """The variants on ``device`` (default: CUDA when available, else the CPU)."""
    default = resolve_numeric_path("auto", device)
    fp32 = resolve_numeric_path("fp32", default.device)
    out = [Variant("fp32_eager", fp32, False, False), Variant("fp32_retained", fp32, False, True),
           Variant("unfused", default, True, True, fused_bn=False), Variant("default", default, True, True)]
    if with_compile:
        out.append(Variant("compiled", default, True, True, compile=True))
    return out


@dataclass(frozen=True)
class Workload:
    """A named timed call: ``make(variant)`` builds the model and returns one step (or forward).

    ``flops``, for a training step: counts the FLOPs of one call (forward + backward, see
    :func:`count_train_flops`), so the bench can state the step's achieved FLOP rate.
    """

    name: str
    make: Callable[[Variant], Callable[[], None]]
    n_images: int
    flops: Callable[[], int] | None = None


def measure(workloads: list[Workload], vs: list[Variant], repeats: int) -> list[dict[str, Any]]:
    """Images/s of every workload on every variant; ``<label>_speedup`` vs fp32 eager (``speedup`` for default).

    The plain variants (glibc's allocator policy) run first, over all workloads. The others then run
    workload by workload, interleaved call by call (A, B, C, A, B, C, ...) so that the machine's drift
    over a run cannot favour one of them; each gets the median of its ``repeats`` calls. A compiled
    variant's first call (the compilation; inductor's caches are off in ``loclab bench``) is timed
    separately as ``compile_s``.
    """
    rows: list[dict[str, Any]] = [{"name": w.name} for w in workloads]
    plain = [v for v in vs if not v.retain_memory]
    retained = [v for v in vs if v.retain_memory]
    for v in plain:
        for w, row in zip(workloads, rows):
            row[f"{v.label}_img_s"] = w.n_images / timed(w.make(v), repeats)
    with freed_memory_retained():
        for w, row in zip(workloads, rows):
            calls = {}
            for v in retained:
                with fused_bn_relu(v.fused_bn):
                    calls[v.label] = fn = w.make(v)
                    t0 = time.perf_counter()
                    fn()
                    if v.compile:
                        row["compile_s"] = time.perf_counter() - t0
                    fn()  # warm-up
            times: dict[str, list[float]] = {v.label: [] for v in retained}
            for _ in range(repeats):
                for v in retained:
                    with fused_bn_relu(v.fused_bn):
                        times[v.label].append(timed(calls[v.label], 1, warmup=0))
            for label, ts in times.items():
                row[f"{label}_img_s"] = w.n_images / float(np.median(ts))
    for row in rows:
        for v in vs[1:]:
            key = "speedup" if v.label == "default" else f"{v.label}_speedup"
            row[key] = row[f"{v.label}_img_s"] / row[f"{vs[0].label}_img_s"]
    return rows


def shapes_batch(n: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                                      torch.Tensor]:
    """``n`` real shapes images rendered in memory, with padded targets, all on ``device``:
    ``(images float32 [n, 3, 224, 224] in [0, 1], boxes [n, M, 4], labels [n, M], valid [n, M])``."""
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
    out = (torch.stack(images).float() / 255, pad_boxes, pad_labels, valid)
    return tuple(t.to(device) for t in out)


def train_step(model: nn.Module, step, batch, v: Variant) -> Callable[[], None]:
    """One optimiser step of ``model`` on ``batch`` (forward, fp32 loss, backward, update)."""
    model = v.numeric.prepare(model).train()
    if v.loclab_optimizer:
        opt = build_optimizer(model, TrainConfig())
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    forward = torch.compile(model) if v.compile else model

    def run() -> None:
        with v.numeric.autocast():
            loss = step(forward, batch, v.numeric)["loss_total"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return run


def inference(model: nn.Module, images: torch.Tensor, v: Variant) -> Callable[[], None]:
    model = v.numeric.prepare(model).eval()
    forward = torch.compile(model) if v.compile else model

    def run() -> None:
        with torch.no_grad(), v.numeric.autocast():
            forward(v.numeric.images(images))

    return run


@dataclass
class DetectorBench:
    """One detector's batch, step and workloads, all on ``device``."""

    cfg: DetectorConfig
    batch: tuple
    step: Callable
    device: torch.device

    @classmethod
    def build(cls, model_name: str, batch_size: int, device: torch.device | str) -> DetectorBench:
        device = torch.device(device)
        cfg = DetectorConfig(model=model_name)
        setup = det_task.AnchorSetup.from_config(cfg)
        images, boxes, labels, valid = shapes_batch(batch_size, device)
        step = det_task.make_step(cfg, det_task.make_loss(cfg, setup).to(device))
        return cls(cfg, (images, boxes, labels, valid, torch.arange(batch_size, device=device)), step, device)

    def train(self, v: Variant) -> Callable[[], None]:
        torch.manual_seed(0)
        return train_step(det_task.make_model(self.cfg), self.step, self.batch, v)

    def infer(self, v: Variant) -> Callable[[], None]:
        torch.manual_seed(0)
        return inference(det_task.make_model(self.cfg), self.batch[0], v)

    def flops(self) -> int:
        """FLOPs of one training step on this batch (:func:`train_flops`)."""
        return train_flops(self.cfg, self.step, self.batch, self.device)

    def workloads(self) -> list[Workload]:
        n, name = len(self.batch[0]), self.cfg.model
        return [Workload(f"detector[{name}] train", self.train, n, flops=self.flops),
                Workload(f"detector[{name}] inference", self.infer, n)]

    def analyse(self, vs: list[Variant], repeats: int, flops: int | None = None) -> dict[str, Any]:
        """Step FLOPs (``flops`` when already counted), where the step's time goes, matching + loss time, and
        every convolution alone."""
        by_label = {v.label: v for v in vs}
        default = by_label["default"]
        flops = self.flops() if flops is None else flops
        low = default.numeric.autocast_dtype or torch.float32
        info: dict[str, Any] = {"train_step_flops": flops, "peak_dtype": low}
        with freed_memory_retained():
            for label in ("unfused", "default", "compiled"):
                if label in by_label:
                    with fused_bn_relu(by_label[label].fused_bn):
                        run = self.train(by_label[label])
                        info[f"rate_{label}"] = step_and_peak(run, flops, low, device=self.device)
                        info[f"breakdown_{label}"] = step_breakdown(run, device=self.device)
            info["match_loss_seconds"] = match_loss_seconds(self.cfg, self.batch, default.numeric, repeats)
            info["conv_timings"] = conv_timings(det_task.make_model(self.cfg), self.batch[0], default.numeric)
        return info


def count_train_flops(model: nn.Module, step, batch, device: torch.device | str) -> int:
    """FLOPs of one training step of ``model`` (forward + backward) on ``batch``, counted by torch's flop counter
    in fp32 on ``device`` (the counter reads shapes, not values: ``meta`` tensors work wherever the step's ops
    take them).

    The counter counts matrix products and convolutions (``2 * multiply-adds``), nothing elementwise; the
    backward of a convolution costs one product per gradient it computes (none for the images' gradient).
    """
    numeric = resolve_numeric_path("fp32", torch.device(device))
    model = numeric.prepare(model).train()
    counter = FlopCounterMode(display=False)
    with counter:
        step(model, batch, numeric)["loss_total"].backward()
    return counter.get_total_flops()


def train_flops(cfg: DetectorConfig, step, batch, device: torch.device | str | None = None) -> int:
    """FLOPs of one detector training step (:func:`count_train_flops`), on ``device`` (default: the batch's)."""
    return count_train_flops(det_task.make_model(cfg), step, batch, device or batch[0].device)


def match_loss_seconds(cfg: DetectorConfig, batch, numeric: NumericPath, repeats: int) -> float:
    """Median seconds of anchor matching + the loss and its backward, on the default path's predictions."""
    images, boxes, labels, valid, _ = batch
    net = numeric.prepare(det_task.make_model(cfg)).train()
    loss_fn = det_task.make_loss(cfg, det_task.AnchorSetup.from_config(cfg)).to(numeric.device)
    with numeric.autocast():
        preds = det_task.flatten_predictions(net(numeric.images(images)), len(cfg.anchor_sizes[0]), cfg.num_classes)
    preds = preds.detach().float().requires_grad_(True)
    boxes, labels, valid = boxes.to(numeric.device), labels.to(numeric.device), valid.to(numeric.device)
    return timed(lambda: loss_fn(preds, boxes, labels, valid)["loss_total"].backward(), repeats)


def keypoint_workloads(model_name: str, batch_size: int, device: torch.device | str = "cpu") -> list[Workload]:
    """Training and inference of a keypoint model on ``batch_size`` stick figures, batch and target on ``device``."""
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
    images, target = images.to(device), target.to(device)
    step = kp_task.make_step(cfg)

    def train(v: Variant) -> Callable[[], None]:
        torch.manual_seed(0)
        return train_step(kp_task.make_model(cfg), step, (images, target), v)

    def infer(v: Variant) -> Callable[[], None]:
        torch.manual_seed(0)
        return inference(kp_task.make_model(cfg), images, v)

    def flops() -> int:
        torch.manual_seed(0)
        return count_train_flops(kp_task.make_model(cfg), step, (images, target), device)

    return [Workload(f"{model_name} train", train, batch_size, flops=flops),
            Workload(f"{model_name} inference", infer, batch_size)]


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
