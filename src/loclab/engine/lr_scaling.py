"""The learning rate for another batch size: ``train.lr_scaling`` relative to ``train.reference_batch``.

A recipe's ``optim.lr`` was tuned for its own batch size. Training with ``B`` images per step instead of the
reference ``B0`` makes ``B / B0`` times fewer optimiser steps per epoch, each averaging the gradient of ``B / B0``
times more images. Two rules keep the training comparable:

- ``linear``: ``lr = optim.lr * B / B0`` (Goyal et al., 2017, "Accurate, Large Minibatch SGD": each step then
  moves the weights as far as the ``B / B0`` small steps it replaces, to first order; the rule for SGD);
- ``sqrt``: ``lr = optim.lr * sqrt(B / B0)`` (Krizhevsky, 2014; Malladi et al., 2022 derive it for Adam: the
  gradient noise per update then stays comparable; the usual rule for Adam-type optimisers, whose steps are
  already normalised by the gradient's scale);
- ``none``: ``lr = optim.lr`` whatever the batch (every recipe's default).

The warmup is kept as the recipe states it, in epochs (``schedule.warmup_epochs``): the same number of images
pass during the warmup whatever the batch, which is what the large-batch rules need (the first steps at the
scaled rate are the unstable ones).
"""

from __future__ import annotations

import math
from dataclasses import replace

from loclab.config import TrainConfig
from loclab.errors import ConfigError

LR_SCALING_RULES = ("none", "linear", "sqrt")


def lr_scale(batch_size: int, reference_batch: int, rule: str) -> float:
    """The factor ``rule`` multiplies the learning rate by for ``batch_size`` instead of ``reference_batch``."""
    if rule not in LR_SCALING_RULES:
        raise ConfigError(f"unknown train.lr_scaling {rule!r}; choose one of {', '.join(LR_SCALING_RULES)}")
    if batch_size < 1 or reference_batch < 1:
        raise ConfigError(f"batch sizes must be at least 1, got batch {batch_size} and reference {reference_batch}")
    if rule == "linear":
        return batch_size / reference_batch
    if rule == "sqrt":
        return math.sqrt(batch_size / reference_batch)
    return 1.0


def effective_lr(cfg: TrainConfig) -> float:
    """The base learning rate training uses (before warmup and schedule): ``optim.lr`` scaled by the rule.

    ``lr_scaling = "none"`` returns ``optim.lr`` itself. Any other rule needs ``reference_batch`` (the batch
    size ``optim.lr`` was tuned for; ``loclab train --batch`` fills it in from the recipe).
    """
    if cfg.batch_size < 1:
        raise ConfigError(f"train.batch_size must be at least 1, got {cfg.batch_size}")
    if cfg.lr_scaling not in LR_SCALING_RULES:
        raise ConfigError(f"unknown train.lr_scaling {cfg.lr_scaling!r}; choose one of {', '.join(LR_SCALING_RULES)}")
    if cfg.lr_scaling == "none":
        return cfg.optim.lr
    if cfg.reference_batch < 1:
        raise ConfigError(f"train.lr_scaling={cfg.lr_scaling} needs train.reference_batch, the batch size "
                          f"train.optim.lr was tuned for (loclab train --batch N sets it to the recipe's)")
    return cfg.optim.lr * lr_scale(cfg.batch_size, cfg.reference_batch, cfg.lr_scaling)


def with_batch_size(cfg: TrainConfig, batch_size: int | None, lr_scaling: str | None = None) -> TrainConfig:
    """``cfg`` training with ``batch_size`` images per step (``None``: unchanged) and the rule ``lr_scaling``
    (``None``: ``cfg``'s). The reference batch becomes ``cfg``'s batch size unless ``cfg`` already names one, so
    the rule scales from the batch the recipe's learning rate was tuned for."""
    if batch_size is not None:
        if batch_size < 1:
            raise ConfigError(f"--batch must be at least 1, got {batch_size}")
        cfg = replace(cfg, reference_batch=cfg.reference_batch or cfg.batch_size, batch_size=batch_size)
    if lr_scaling is not None:
        cfg = replace(cfg, lr_scaling=lr_scaling)
    return cfg


def describe_lr(cfg: TrainConfig) -> str:
    """One line for the start of training: batch size and effective learning rate, and the rule behind it."""
    line = f"batch {cfg.batch_size}, lr {effective_lr(cfg):.4g}"
    if cfg.lr_scaling != "none":
        factor = lr_scale(cfg.batch_size, cfg.reference_batch, cfg.lr_scaling)
        line += (f" (train.optim.lr {cfg.optim.lr:.4g} x {factor:.4g}: {cfg.lr_scaling} scaling from batch "
                 f"{cfg.reference_batch})")
    return line
