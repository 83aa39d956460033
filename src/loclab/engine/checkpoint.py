"""Checkpoints: written atomically, read with clear errors.

A checkpoint is a dict with ``format`` = :data:`CHECKPOINT_FORMAT`, ``task`` ("detector" or
"keypoints"), ``config`` (the task config as a dict, enough to rebuild the model) and ``model`` (the
state dict). Training checkpoints (``last.pth``) add ``optimizer``, ``scheduler``, ``scaler``, ``epoch``,
``best_val``, ``log`` and ``rng``.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT_FORMAT = "loclab-checkpoint/1"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated, or not one of loclab's."""


def atomic_write_bytes(path: Path, write: Any) -> None:
    """Call ``write(file_object)`` on a temp file beside ``path``, then rename it into place.

    A process killed mid-write leaves the previous file intact, never a truncated one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates 0600 files; give results the permissions of any file the user creates
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Save ``payload`` (plus the format tag) atomically."""
    payload = {"format": CHECKPOINT_FORMAT, **payload}
    atomic_write_bytes(path, lambda f: torch.save(payload, f))


def load_checkpoint(path: Path, task: str | None = None) -> dict[str, Any]:
    """Load a loclab checkpoint on the CPU; ``task`` checks it is the expected kind."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - torch raises several types for truncated or foreign files
        raise CheckpointError(
            f"{path}: cannot read the checkpoint ({type(err).__name__}: {err}). The file is truncated "
            "or not a PyTorch checkpoint; re-run training or point to another file."
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path}: not a loclab checkpoint (expected format {CHECKPOINT_FORMAT!r}); "
            "loclab can only load weights it saved itself, with their config"
        )
    if task is not None and payload.get("task") != task:
        raise CheckpointError(f"{path}: holds a {payload.get('task')!r} model, expected a {task!r} model")
    return payload


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
