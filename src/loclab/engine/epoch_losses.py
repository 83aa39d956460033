"""An epoch's losses, summed on the device they are computed on, read back to the host only when asked.

Reading a value from a GPU (``loss.item()``, ``float(loss)``, ``if not torch.isfinite(loss)``) waits until every
queued kernel has run, so a training loop that reads its loss every step keeps the GPU idle while Python
prepares the next step. :class:`EpochLosses` keeps the running sums and the non-finite check as tensors on the
losses' device; the training loop reads them every :func:`host_read_interval` steps and once at the end of the
epoch. On a CPU a read costs nothing, and the loop reads every step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

# Steps between two reads of the device on an accelerator: the progress bar's running loss and the non-finite
# check are that many steps late at most, and the queue of GPU work is drained once per that many steps.
HOST_READ_EVERY = 50


def host_read_interval(device: torch.device) -> int:
    """Steps between reads of the losses: 1 on a CPU, :data:`HOST_READ_EVERY` elsewhere."""
    return 1 if device.type == "cpu" else HOST_READ_EVERY


@dataclass(frozen=True)
class NonFiniteStep:
    """The first step (0-based, within the epoch) whose ``loss_total`` was NaN or infinite, with every loss's
    value at that step."""

    step: int
    values: dict[str, float]


class EpochLosses:
    """Sums of each named loss times its batch size over the steps of one epoch, kept on the losses' device.

    The sums are float64 and added in step order, exactly as Python floats would be
    (``sum += float(loss) * batch_size``), so the epoch's means are the same to the last bit whether they are
    read every step or once. Every step's losses must have the names of the first step's. The first step
    whose ``loss_total`` is not finite is recorded on the device too (its index and every loss's value), so a
    late check still names it.
    """

    def __init__(self) -> None:
        self.names: tuple[str, ...] = ()
        self.count = 0  # samples so far; batch sizes are shapes, known on the host without a read
        self.steps = 0
        self._sums: Tensor | None = None  # float64 [K]
        self._first_bad: Tensor | None = None  # int64 scalar, -1 while every step was finite
        self._bad_values: Tensor | None = None  # float64 [K], the losses at the first bad step

    def add(self, losses: dict[str, Tensor], batch_size: int) -> None:
        """Add one step's losses (0-dim tensors, ``loss_total`` among them) for a batch of ``batch_size``."""
        if self._sums is None:
            self.names = tuple(losses)
            device = losses["loss_total"].device
            self._sums = torch.zeros(len(self.names), dtype=torch.float64, device=device)
            self._first_bad = torch.full((), -1, dtype=torch.int64, device=device)
            self._bad_values = torch.zeros_like(self._sums)
        elif tuple(losses) != self.names:
            raise ValueError(f"a step returned the losses {sorted(losses)}, earlier steps {sorted(self.names)}")
        values = torch.stack([losses[name].detach().reshape(()) for name in self.names]).to(torch.float64)
        first = ~torch.isfinite(values[self.names.index("loss_total")]) & (self._first_bad < 0)
        self._first_bad = torch.where(first, self.steps, self._first_bad)
        self._bad_values = torch.where(first, values, self._bad_values)
        self._sums += values * batch_size
        self.count += batch_size
        self.steps += 1

    def first_non_finite(self) -> NonFiniteStep | None:
        """The first step whose ``loss_total`` was not finite, or None (reads the device)."""
        if self._first_bad is None:
            return None
        step = int(self._first_bad)
        if step < 0:
            return None
        return NonFiniteStep(step, dict(zip(self.names, self._bad_values.tolist())))

    def running_mean(self, name: str = "loss_total") -> float:
        """The mean of ``name`` over the samples so far (reads the device)."""
        if self._sums is None:
            return float("nan")
        return float(self._sums[self.names.index(name)]) / max(self.count, 1)

    def sums(self) -> dict[str, float]:
        """Each loss's sum (times batch size) over the epoch, as Python floats (reads the device once)."""
        if self._sums is None:
            return {}
        return dict(zip(self.names, self._sums.tolist()))
