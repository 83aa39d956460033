"""Checkpoints: written atomically, read with clear errors.

A checkpoint is a dict with ``format`` = :data:`CHECKPOINT_FORMAT`, ``task`` ("detector" or
"keypoints"), ``config`` (the task config as a dict, enough to rebuild the model) and ``model`` (the
state dict). Training checkpoints (``last.pth``) add ``optimizer``, ``scheduler``, ``scaler``, ``epoch``,
``best_val``, ``log`` and ``rng``.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from loclab.atomic import atomic_write_bytes
from loclab.errors import LoclabError

CHECKPOINT_FORMAT = "loclab-checkpoint/1"


class CheckpointError(LoclabError, RuntimeError):
    """A checkpoint is missing, truncated, or not one of loclab's."""


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
