"""One training loop for every task.

A task supplies a model, datasets, a collate function and a *step function*
``step(model, batch, numeric) -> {"loss_total": ..., other named losses}`` that runs the forward pass
and the loss. :func:`fit` does the rest: optimiser and schedule, numeric path (autocast,
channels_last), progress, per-epoch log, best/last checkpoints, resume, and stopping on a non-finite
loss with the last good checkpoint kept.

Determinism: each epoch re-seeds torch (augmentation, dropout) and the data order from
``seed + epoch``, so resuming from an epoch checkpoint replays exactly what an uninterrupted run does.

No step reads a value back from the device: losses are summed there and read every few steps on a GPU
(:mod:`loclab.engine.epoch_losses`).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, RandomSampler
from tqdm.auto import tqdm

from loclab.config import TrainConfig
from loclab.data.device_data import DeviceBatches, DeviceDetectionData
from loclab.engine import distributed
from loclab.engine.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from loclab.engine.ema import ModelEMA
from loclab.engine.epoch_losses import EpochLosses, host_read_interval
from loclab.engine.logs import open_epoch_logs
from loclab.engine.lr_scaling import describe_lr, effective_lr
from loclab.engine.memory import freed_memory_retained
from loclab.engine.precision import NumericPath
from loclab.engine.rundir import write_json
from loclab.errors import ConfigError, LoclabError

StepFn = Callable[[nn.Module, Any, NumericPath], dict[str, Tensor]]
EpochHook = Callable[[int, nn.Module], None]


class NonFiniteLossError(LoclabError, RuntimeError):
    """Training produced a NaN or infinite loss."""


@dataclass(frozen=True)
class RunFiles:
    """Where :func:`fit` writes inside a run directory."""

    run_dir: Path
    best_name: str = "best_model.pth"

    @property
    def best(self) -> Path:
        return self.run_dir / self.best_name

    @property
    def last(self) -> Path:
        return self.run_dir / "last.pth"

    @property
    def log(self) -> Path:
        return self.run_dir / "training_log.json"


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD / Adam / AdamW; weight decay is not applied to biases and BatchNorm parameters.

    The optimisers run their fused single-kernel implementations (CPU and CUDA): the same update
    rule as the per-parameter loop, in one pass over all parameters. The learning rate is ``optim.lr`` scaled
    for the batch size by ``cfg.lr_scaling`` (:func:`loclab.engine.lr_scaling.effective_lr`).
    """
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.dim() <= 1 else decay).append(p)
    o = cfg.optim
    lr = effective_lr(cfg)
    groups = [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if o.name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=o.momentum, fused=True)
    if o.name == "adam":
        return torch.optim.Adam(groups, lr=lr, fused=True)
    if o.name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, fused=True)
    raise ConfigError(f"unknown optimizer {o.name!r}; choose sgd, adam or adamw")


# Step-based training makes every epoch at least this many optimiser steps (several passes over a small
# dataset), so that validation, precise BatchNorm and checkpoints stay a small share of the time.
MIN_STEPS_PER_EPOCH = 50


def passes_per_epoch(cfg: TrainConfig, num_train: int) -> int:
    """How many shuffled passes over the training set one epoch makes: 1, except in step-based training on a
    dataset too small for :data:`MIN_STEPS_PER_EPOCH` steps per pass."""
    if cfg.steps <= 0:
        return 1
    per_pass = max(1, num_train // cfg.batch_size if num_train > cfg.batch_size else 1)
    return max(1, math.ceil(MIN_STEPS_PER_EPOCH / per_pass))


def epochs_for_steps(cfg: TrainConfig, num_train: int) -> TrainConfig:
    """``cfg`` with ``epochs`` derived from ``steps`` (when set) for a training set of ``num_train`` samples:
    the fewest whole epochs (of :func:`passes_per_epoch` passes) that make at least ``steps`` optimiser steps
    (the last partial batch of an epoch is dropped)."""
    if cfg.steps <= 0:
        return cfg
    passes = passes_per_epoch(cfg, num_train)
    samples = num_train * passes
    per_epoch = max(1, samples // cfg.batch_size if samples > cfg.batch_size else 1)
    return replace(cfg, epochs=max(1, math.ceil(cfg.steps / per_epoch)))


def lr_factor(step: int, total_steps: int, warmup_steps: int, cfg: TrainConfig) -> float:
    """Multiplier of the base learning rate at optimiser step ``step`` (linear warmup, then the schedule)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if cfg.schedule.name == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    floor = cfg.schedule.final_lr_fraction
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _mean(sums: dict[str, float], n: int) -> dict[str, float]:
    return {k: v / max(n, 1) for k, v in sums.items()}


def _run_epoch(model, loader: Iterable, step: StepFn, numeric: NumericPath, *, optimizer=None, scheduler=None,
               scaler=None, grad_clip: float = 0.0, ema: ModelEMA | None = None, epoch: int = 0,
               bar=None, read_every: int | None = None) -> dict[str, float]:
    """One pass over ``loader`` (training when ``optimizer`` is given); returns the mean of each named loss.

    Nothing in a step reads a value back from the device: the losses are summed there
    (:class:`~loclab.engine.epoch_losses.EpochLosses`) and read every ``read_every`` steps (default
    :func:`~loclab.engine.epoch_losses.host_read_interval`: every step on a CPU) for the progress bar and the
    non-finite check, and once at the end. A non-finite ``loss_total`` raises :class:`NonFiniteLossError`
    naming the epoch and the first bad step, at the first read after it.
    """
    training = optimizer is not None
    model.train(training)
    read_every = read_every or host_read_interval(numeric.device)
    losses_so_far = EpochLosses()
    for i, batch in enumerate(loader):
        with torch.set_grad_enabled(training), numeric.autocast():
            losses = step(model, batch, numeric)
        losses_so_far.add(losses, _batch_size(batch))
        if (i + 1) % read_every == 0:  # before the update, so that on a CPU a bad step never updates the weights
            _stop_if_not_finite(losses_so_far, training, epoch)
            if bar is not None:
                bar.set_postfix(loss=f"{losses_so_far.running_mean():.4f}", refresh=False)
        if training:
            loss = losses["loss_total"]
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
            else:
                loss.backward()
            if grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            scheduler.step()
            if ema is not None:
                ema.update()
        if bar is not None:
            bar.update(1)
    _stop_if_not_finite(losses_so_far, training, epoch)  # the steps since the last read
    sums = distributed.all_reduce_sums(losses_so_far.sums(), losses_so_far.count)
    return _mean(sums, int(sums.pop("_count")))


def _stop_if_not_finite(losses: EpochLosses, training: bool, epoch: int) -> None:
    bad = losses.first_non_finite()
    if bad is None:
        return
    where = "training" if training else "validation"
    late = ""
    if bad.step + 1 < losses.steps:
        late = f" (noticed at step {losses.steps}: the device is read every few steps)"
    raise NonFiniteLossError(
        f"{where} loss became {bad.values['loss_total']} at epoch {epoch + 1}, step {bad.step + 1}{late} "
        f"({', '.join(f'{k}={v:.4g}' for k, v in bad.values.items())}). "
        "Training stopped; the last good checkpoint is kept. Lower the learning rate or check the data."
    )


@torch.no_grad()
def recompute_batchnorm_statistics(model: nn.Module, loader: Iterable, step: StepFn, numeric: NumericPath,
                                   max_batches: int) -> None:
    """Replace every BatchNorm layer's running statistics by their exact average over ``max_batches`` training
    batches, run through ``step`` in training mode without gradients ("precise BatchNorm").

    The running averages that BatchNorm keeps while training trail the weights; on a few hundred images trained
    at a high learning rate they can trail so far that the model scores far worse in eval mode than in training
    mode on the very same images. Recomputing them for the current weights removes that gap.
    """
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not layers or max_batches <= 0:
        return
    momenta = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches below
    model.train()
    try:
        for i, batch in enumerate(loader):
            if i >= max_batches:
                break
            with numeric.autocast():
                step(model, batch, numeric)
    finally:
        for m, momentum in zip(layers, momenta):
            m.momentum = momentum


def _batch_size(batch: Any) -> int:
    first = batch[0] if isinstance(batch, (tuple, list)) else batch
    return int(first.shape[0])


def fit(
    model: nn.Module,
    step: StepFn,
    train_set: Dataset | DeviceDetectionData,
    val_set: Dataset | DeviceDetectionData,
    collate_fn: Callable,
    cfg: TrainConfig,
    numeric: NumericPath,
    files: RunFiles,
    checkpoint_meta: dict[str, Any],
    *,
    resume: bool = False,
    on_epoch_start: Callable[[int], None] | None = None,
    on_epoch_end: EpochHook | None = None,
    progress: bool = True,
    desc: str = "train",
) -> list[dict]:
    """Train ``model`` and return the per-epoch log (also written to ``training_log.json``).

    ``checkpoint_meta`` (task name, config dict) goes into every checkpoint so a checkpoint alone can
    rebuild its model. With ``resume=True`` training continues from ``last.pth`` if it exists.
    The best model (lowest validation ``loss_total``) is saved to ``files.best``. With ``cfg.ema`` > 0 the
    model validated, saved as best and handed to ``on_epoch_end`` is the moving average of the weights
    (:mod:`loclab.engine.ema`); ``last.pth`` keeps both. ``on_epoch_start(epoch)`` (0-based) runs before each
    epoch on every process, also after a resume. Datasets held on the device
    (:class:`~loclab.data.device_data.DeviceDetectionData`) are batched there (``collate_fn`` unused), in the
    DataLoader's order.
    """
    model = numeric.prepare(model)
    train_model = distributed.wrap_model(model)
    if cfg.compile:
        # validation stays eager: eval-mode BatchNorm would be a second compiled graph for few steps
        train_model = torch.compile(train_model)
    optimizer = build_optimizer(model, cfg)
    train_loader = _loader(train_set, collate_fn, cfg, shuffle=True)
    val_loader = _loader(val_set, collate_fn, cfg, shuffle=False)
    steps_per_epoch = len(train_loader)
    samples_per_epoch = _samples_per_epoch(train_loader, train_set)
    total_steps = steps_per_epoch * cfg.epochs
    warmup = round(cfg.schedule.warmup_epochs * steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total_steps, warmup, cfg))
    scaler = torch.amp.GradScaler("cuda") if numeric.needs_grad_scaler else None
    ema = ModelEMA(model, cfg.ema) if cfg.ema > 0 else None
    eval_model = ema.module if ema is not None else model

    log: list[dict] = []
    best_val = math.inf
    start_epoch = 0
    if resume and files.last.exists():
        state = load_checkpoint(files.last)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        if ema is not None and state.get("ema"):
            ema.load_state_dict(state["ema"])
        set_rng_state(state["rng"])
        log, best_val, start_epoch = state["log"], state["best_val"], state["epoch"]
        if distributed.is_main() and start_epoch < cfg.epochs:
            tqdm.write(f"{desc}: resuming from {files.last} after epoch {start_epoch}")

    main = distributed.is_main()
    if main and start_epoch < cfg.epochs:
        tqdm.write(f"{desc}: {describe_lr(cfg)}")
    # freed activations stay in the process: no page faults on every step (see engine.memory)
    with freed_memory_retained(numeric.device.type == "cpu"), \
            (open_epoch_logs(files.run_dir, log) if main else nullcontext()) as live_logs:
        for epoch in range(start_epoch, cfg.epochs):
            torch.manual_seed(cfg.seed * 100_003 + epoch)
            _set_epoch(train_loader, cfg.seed, epoch)
            if on_epoch_start is not None:  # on every process: it may change what the step does
                on_epoch_start(epoch)
            t0 = time.perf_counter()
            with tqdm(total=steps_per_epoch, desc=f"{desc} {epoch + 1}/{cfg.epochs}", leave=False,
                      disable=not (progress and main), dynamic_ncols=True) as bar:
                train_losses = _run_epoch(train_model, train_loader, step, numeric, optimizer=optimizer,
                                          scheduler=scheduler, scaler=scaler, grad_clip=cfg.grad_clip,
                                          ema=ema, epoch=epoch, bar=bar)
            train_time = time.perf_counter() - t0
            recompute_batchnorm_statistics(eval_model, train_loader, step, numeric, cfg.precise_bn_batches)
            with torch.no_grad():
                val_losses = _run_epoch(eval_model, val_loader, step, numeric, epoch=epoch)
            record = {
                "epoch": epoch + 1,
                "lr": optimizer.param_groups[0]["lr"],
                "train": train_losses,
                "val": val_losses,
                "train_time_s": train_time,
                "epoch_time_s": time.perf_counter() - t0,
                "images_per_s": samples_per_epoch / train_time,
            }
            log.append(record)
            improved = val_losses["loss_total"] < best_val
            best_val = min(best_val, val_losses["loss_total"])
            if main:
                live_logs.write(record)  # results.csv and TensorBoard (engine.logs)
                if improved:
                    save_checkpoint(files.best, {**checkpoint_meta, "model": eval_model.state_dict(), "epoch": epoch + 1,
                                                 "val_loss": best_val})
                save_checkpoint(files.last, {
                    **checkpoint_meta,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict() if scaler is not None else None,
                    "ema": ema.state_dict() if ema is not None else None,
                    "epoch": epoch + 1,
                    "best_val": best_val,
                    "log": log,
                    "rng": rng_state(),
                })
                write_json(files.log, log)
                tqdm.write(
                    f"{desc} epoch {epoch + 1}/{cfg.epochs}  train {train_losses['loss_total']:.4f}  "
                    f"val {val_losses['loss_total']:.4f}{' *' if improved else ''}  "
                    f"lr {record['lr']:.2e}  {train_time:.0f}s ({record['images_per_s']:.1f} img/s)"
                )
                sys.stdout.flush()
            if on_epoch_end is not None and main:
                on_epoch_end(epoch + 1, eval_model)
            distributed.barrier()
        return log


def _loader(dataset: Dataset | DeviceDetectionData, collate_fn: Callable, cfg: TrainConfig, *,
            shuffle: bool) -> DataLoader | DeviceBatches:
    # Data held on the training device is batched there, in the order the DataLoader below would give.
    if isinstance(dataset, DeviceDetectionData):
        if distributed.active():
            raise ConfigError("data held on the training device is for one process; under torchrun set "
                              "train.device_data=off")
        passes = passes_per_epoch(cfg, len(dataset)) if shuffle else 1
        return DeviceBatches(dataset, cfg.batch_size, shuffle=shuffle, passes=passes,
                             drop_last=shuffle and len(dataset) > cfg.batch_size)
    # Datasets that hold decoded tensors in memory ask for no workers (they would only add IPC overhead);
    # datasets too large for memory decode in workers (their ``num_workers``).
    sampler = distributed.sampler(dataset, shuffle=shuffle, seed=cfg.seed)
    generator = torch.Generator()
    passes = passes_per_epoch(cfg, len(dataset)) if shuffle and sampler is None else 1
    if passes > 1:  # whole shuffled passes, back to back, drawn from the loader's seeded generator
        sampler = RandomSampler(dataset, num_samples=passes * len(dataset), generator=generator)
    return DataLoader(dataset, batch_size=distributed.per_rank_batch(cfg.batch_size),
                      shuffle=shuffle and sampler is None, sampler=sampler,
                      collate_fn=collate_fn, num_workers=getattr(dataset, "num_workers", 0), generator=generator,
                      persistent_workers=getattr(dataset, "num_workers", 0) > 0,
                      # a final batch of one would break BatchNorm in training
                      drop_last=shuffle and len(dataset) > cfg.batch_size)


def _samples_per_epoch(loader: DataLoader | DeviceBatches, dataset) -> int:
    if isinstance(loader, DeviceBatches):
        return loader.num_samples
    return len(loader.sampler) if isinstance(loader.sampler, RandomSampler) else len(dataset)


def _set_epoch(loader: DataLoader | DeviceBatches, seed: int, epoch: int) -> None:
    if hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch)
    if loader.generator is not None:
        loader.generator.manual_seed(seed * 100_003 + epoch)
