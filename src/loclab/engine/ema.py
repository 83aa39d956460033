"""An exponential moving average of a model's weights, the model that is validated and saved.

Averaging the weights over the last few hundred optimiser steps smooths out the step-to-step noise of a
small batch on a small dataset; the average generalises better than any single iterate (Polyak averaging;
the "model EMA" of the YOLO and timm training recipes). With ``decay`` ``d`` after ``t`` updates::

    d_t = d * (1 - exp(-t / ramp)),   ramp = 0.2 / (1 - d)
    ema = d_t * ema + (1 - d_t) * weights

The ramp lets the average follow the fast-moving weights of the first steps (``d_t`` near 0) and settle to
a horizon of about ``1 / (1 - d)`` steps later on (``ramp`` is 200 steps for ``d = 0.999``). BatchNorm
running statistics are averaged the same way; when precise BatchNorm is on they are recomputed for the
averaged weights instead (:func:`loclab.engine.train.recompute_batchnorm_statistics`).
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import Tensor, nn


class ModelEMA:
    """The moving average of ``model``'s floating-point parameters and buffers (integer buffers are copied).

    ``module`` is a deep copy of the model (same dtype and memory format) that :meth:`update` pulls toward the
    live model after each optimiser step. It is the model to validate and save.
    """

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.ramp = 0.2 / (1.0 - decay)
        self.updates = 0
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self._source = model
        self._pairs = self._pair_tensors(model)

    def _pair_tensors(self, model: nn.Module) -> tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor]]:
        ema_state, live_state = self.module.state_dict(keep_vars=True), model.state_dict(keep_vars=True)
        floats_ema, floats_live, ints_ema, ints_live = [], [], [], []
        for name, ema_t in ema_state.items():
            live_t = live_state[name]
            if ema_t.is_floating_point():
                floats_ema.append(ema_t.data)
                floats_live.append(live_t.data)
            else:
                ints_ema.append(ema_t.data)
                ints_live.append(live_t.data)
        return floats_ema, floats_live, ints_ema, ints_live

    def current_decay(self) -> float:
        """The decay ``d_t`` the next :meth:`update` applies."""
        return self.decay * (1.0 - math.exp(-(self.updates + 1) / self.ramp))

    @torch.no_grad()
    def update(self) -> None:
        """Move the average one step toward the live model's current weights."""
        d = self.current_decay()
        floats_ema, floats_live, ints_ema, ints_live = self._pairs
        torch._foreach_lerp_(floats_ema, floats_live, 1.0 - d)
        for e, v in zip(ints_ema, ints_live):
            e.copy_(v)
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {"module": self.module.state_dict(), "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
