"""Live training logs, written as each epoch ends: ``RUN/results.csv`` and TensorBoard scalars.

``results.csv`` has one row per epoch and the columns of ``training_log.json`` flattened, nested keys joined by
``/`` (``epoch, lr, train/loss_total, ..., val/loss_total, ..., train_time_s, epoch_time_s, images_per_s``). A row
is appended and flushed when its epoch ends, so ``tail -f RUN/results.csv`` follows a run. When training starts,
the file is rewritten (atomically) from the epochs the run already holds: none for a fresh run, the epochs of
``last.pth`` for a resumed one; so an interrupted and resumed run keeps its rows once each, and always agrees
with ``training_log.json``.

``RUN/tensorboard/`` gets one scalar per column (the same tags; the step is the epoch) when the ``tensorboard``
package is installed (``pip install loclab[tensorboard]``) and ``LOCLAB_TENSORBOARD`` is not ``0``
(``--no-tensorboard`` on the command line sets it). Without the package nothing is written and nothing is said.
A resumed run drops the events of epochs it trains again (TensorBoard's ``purge_step``).
"""

from __future__ import annotations

import csv
import io
import importlib.util
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from loclab.atomic import atomic_write_bytes

RESULTS_CSV = "results.csv"
TENSORBOARD_DIR = "tensorboard"
TENSORBOARD_SWITCH = "LOCLAB_TENSORBOARD"  # "0" (or false, no, off) turns TensorBoard logging off


class ScalarWriter(Protocol):
    """What :class:`EpochLogs` needs of a TensorBoard writer (``torch.utils.tensorboard.SummaryWriter`` is one)."""

    def add_scalar(self, tag: str, scalar_value: float, global_step: int) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


def flatten_record(record: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"epoch": 1, "train": {"loss_total": 2.0}}`` -> ``{"epoch": 1, "train/loss_total": 2.0}``, order kept."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_record(value, f"{name}/"))
        else:
            out[name] = value
    return out


def tensorboard_wanted() -> bool:
    """Whether TensorBoard logging is on: the ``tensorboard`` package is importable and the switch is not off."""
    if os.environ.get(TENSORBOARD_SWITCH, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    return importlib.util.find_spec("tensorboard") is not None


def open_tensorboard(log_dir: Path, first_epoch: int) -> ScalarWriter | None:
    """A SummaryWriter on ``log_dir`` that drops events from epoch ``first_epoch`` on (left by an interrupted
    process), or ``None`` when :func:`tensorboard_wanted` says no."""
    if not tensorboard_wanted():
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(log_dir), purge_step=first_epoch)


def _cell(value: Any) -> Any:
    return "" if value is None else value


def _csv_bytes(columns: Sequence[str], rows: Sequence[Mapping[str, Any]], header: bool = True) -> bytes:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    if header:
        writer.writerow(columns)
    writer.writerows([_cell(row.get(c)) for c in columns] for row in rows)
    return text.getvalue().encode()


class EpochLogs:
    """The live logs of one training run: ``results.csv`` and, optionally, a TensorBoard writer.

    ``history`` holds the epoch records the run already has (``[]`` for a fresh run); the CSV is rewritten from
    them at once. :meth:`write` then takes one record per finished epoch. Use as a context manager (or call
    :meth:`close`) so the TensorBoard writer is flushed and closed.
    """

    def __init__(self, csv_path: Path, history: Sequence[Mapping[str, Any]], writer: ScalarWriter | None = None):
        self.csv_path = Path(csv_path)
        self.writer = writer
        self.rows = [flatten_record(r) for r in history]
        self.columns = self._columns_of(self.rows)
        if self.rows:
            self._rewrite()
        else:
            self.csv_path.unlink(missing_ok=True)  # a fresh run in a used directory starts a fresh file

    @staticmethod
    def _columns_of(rows: Sequence[Mapping[str, Any]]) -> list[str]:
        columns: dict[str, None] = {}
        for row in rows:
            columns.update(dict.fromkeys(row))
        return list(columns)

    def _rewrite(self) -> None:
        payload = _csv_bytes(self.columns, self.rows)
        atomic_write_bytes(self.csv_path, lambda f: f.write(payload))

    def write(self, record: Mapping[str, Any]) -> None:
        """Append ``record`` (one epoch of ``training_log.json``) to the CSV, flushed, and to TensorBoard."""
        row = flatten_record(record)
        self.rows.append(row)
        if not self.columns or any(c not in self.columns for c in row):
            self.columns = self._columns_of(self.rows)
            self._rewrite()  # a new column: the header changes, so the whole file is written again
        else:
            with self.csv_path.open("ab") as f:
                f.write(_csv_bytes(self.columns, [row], header=False))
                f.flush()
        if self.writer is not None:
            step = int(row.get("epoch", len(self.rows)))
            for tag, value in row.items():
                if tag != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool) \
                        and math.isfinite(value):
                    self.writer.add_scalar(tag, float(value), step)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def __enter__(self) -> EpochLogs:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def open_epoch_logs(run_dir: Path, history: Sequence[Mapping[str, Any]]) -> EpochLogs:
    """:class:`EpochLogs` for ``RUN/results.csv`` and ``RUN/tensorboard/`` (when wanted), continuing ``history``."""
    run_dir = Path(run_dir)
    return EpochLogs(run_dir / RESULTS_CSV, history, open_tensorboard(run_dir / TENSORBOARD_DIR, len(history) + 1))
