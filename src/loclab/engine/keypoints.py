"""The keypoint task: build, train, predict.

Heatmap models (``output_type == "heatmap"``) train on Gaussian heatmap targets; regression models
(``output_type == "regression"``) on coordinates normalised to [0, 1]. Both go through the same
:func:`loclab.engine.train.fit` loop as the detector.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from loclab.config import KeypointConfig, from_dict, to_dict
from loclab.data.datasets import KeypointDataset
from loclab.data.formats import KeypointSplit
from loclab.engine.checkpoint import atomic_write_bytes, load_checkpoint
from loclab.engine.precision import NumericPath, resolve_numeric_path
from loclab.engine.rundir import start_run
from loclab.engine.train import RunFiles, fit
from loclab.losses.keypoints import (
    coordinate_mse_loss,
    hand_invariant_coordinate_mse,
    hand_invariant_heatmap_loss,
    hand_invariant_spatial_cross_entropy,
    heatmap_mse_loss,
    spatial_cross_entropy_loss,
)
from loclab.models.keypoints import KEYPOINT_MODELS
from loclab.ops.heatmaps import decode_heatmaps_argmax, decode_heatmaps_subpixel

TASK = "keypoints"
# (model output type, loss, hand_invariant) -> loss function
LOSSES = {
    ("heatmap", "mse", False): heatmap_mse_loss,
    ("heatmap", "mse", True): hand_invariant_heatmap_loss,
    ("heatmap", "spatial_ce", False): spatial_cross_entropy_loss,
    ("heatmap", "spatial_ce", True): hand_invariant_spatial_cross_entropy,
    ("regression", "mse", False): coordinate_mse_loss,
    ("regression", "mse", True): hand_invariant_coordinate_mse,
}


def make_model(cfg: KeypointConfig) -> nn.Module:
    """Instantiate ``cfg.model`` from :data:`KEYPOINT_MODELS`, passing the options it takes."""
    if cfg.model not in KEYPOINT_MODELS:
        raise ValueError(f"unknown keypoint model {cfg.model!r}; choose one of {sorted(KEYPOINT_MODELS)}")
    factory = KEYPOINT_MODELS[cfg.model]
    options = {"num_keypoints": cfg.num_keypoints, "heatmap_size": cfg.heatmap_size, "skip": cfg.skip}
    accepted = inspect.signature(factory).parameters
    return factory(**{k: v for k, v in options.items() if k in accepted})


def output_type(cfg: KeypointConfig) -> str:
    return KEYPOINT_MODELS[cfg.model].output_type


def checkpoint_name(cfg: KeypointConfig) -> str:
    """``heatmap_model.pth``, ``regression_model.pth``, ... (the reports' names)."""
    return f"{cfg.model}_model.pth"


def make_dataset(split: KeypointSplit, cfg: KeypointConfig, progress: bool = False) -> KeypointDataset:
    return KeypointDataset.from_split(split, output_type=output_type(cfg), heatmap_size=cfg.heatmap_size,
                                      sigma=cfg.sigma, progress=progress)


def loss_function(cfg: KeypointConfig):
    key = (output_type(cfg), cfg.loss, cfg.hand_invariant)
    if key not in LOSSES:
        raise ValueError(f"loss {cfg.loss!r} does not apply to {cfg.model!r} models ({output_type(cfg)} output)")
    return LOSSES[key]


def as_heatmaps(pred: Tensor, cfg: KeypointConfig) -> Tensor:
    """Model output as heatmaps to decode or show: spatial-CE models output logits of a spatial softmax."""
    if cfg.loss == "spatial_ce":
        return torch.softmax(pred.float().flatten(2), dim=-1).view_as(pred)
    return pred.float()


def make_step(cfg: KeypointConfig):
    loss_fn = loss_function(cfg)

    def step(model: nn.Module, batch: Any, path: NumericPath) -> dict[str, Tensor]:
        images, target = batch
        pred = model(path.images(images))
        with torch.autocast(path.device.type, enabled=False):
            loss = loss_fn(pred.float(), target.to(path.device).float())
        return {"loss_total": loss}

    return step


def snapshot_epochs(cfg: KeypointConfig) -> tuple[int, ...]:
    """Epochs after which predicted heatmaps of fixed val images are saved (first, a few between, last)."""
    if cfg.heatmap_snapshot_epochs:
        return cfg.heatmap_snapshot_epochs
    n = cfg.train.epochs
    return tuple(sorted({1, max(1, n // 4), max(1, n // 2), n}))


class HeatmapSnapshots:
    """Saves ``[num_images, K, H, W]`` predicted heatmaps at chosen epochs into ``heatmap_snapshots.npz``."""

    def __init__(self, run_dir: Path, images: Tensor, image_ids: list[int], epochs: tuple[int, ...],
                 path: NumericPath, cfg: KeypointConfig):
        self.file = run_dir / "heatmap_snapshots.npz"
        self.images, self.image_ids, self.epochs, self.path, self.cfg = images, image_ids, set(epochs), path, cfg
        self.saved: dict[str, np.ndarray] = {}
        if self.file.exists():
            with np.load(self.file) as data:
                self.saved = {k: data[k] for k in data.files}

    @torch.no_grad()
    def __call__(self, epoch: int, model: nn.Module) -> None:
        if epoch not in self.epochs:
            return
        model.eval()
        heatmaps_fn = getattr(model, "heatmaps", model)
        with self.path.autocast():
            raw = heatmaps_fn(self.path.images(self.images.float() / 255))
        maps = as_heatmaps(raw, self.cfg).cpu().numpy()
        self.saved[f"epoch_{epoch:03d}"] = maps.astype(np.float16)
        self.saved["image_ids"] = np.asarray(self.image_ids)
        atomic_write_bytes(self.file, lambda f: np.savez_compressed(f, **self.saved))


def train_keypoints(
    cfg: KeypointConfig,
    train_split: KeypointSplit,
    val_split: KeypointSplit,
    run_dir: Path,
    *,
    resume: bool = False,
    progress: bool = True,
    meta: dict[str, Any] | None = None,
) -> list[dict]:
    """Train one keypoint model into ``run_dir`` (``<model>_model.pth``, ``last.pth``, log, snapshots)."""
    run_dir, path = start_run(run_dir, TASK, "keypoints", cfg, cfg.train, meta)
    model = make_model(cfg)
    train_set = make_dataset(train_split, cfg, progress)
    val_set = make_dataset(val_split, cfg, progress)
    hook = None
    if output_type(cfg) == "heatmap" or hasattr(model, "heatmaps"):
        n = min(cfg.num_snapshot_images, len(val_set))
        hook = HeatmapSnapshots(run_dir, val_set.images[:n], val_set.image_ids[:n], snapshot_epochs(cfg), path, cfg)
    return fit(model, make_step(cfg), train_set, val_set, None, cfg.train, path,
               RunFiles(run_dir, checkpoint_name(cfg)), {"task": TASK, "config": to_dict(cfg)},
               resume=resume, on_epoch_end=hook, progress=progress, desc=cfg.model)


def load_keypoint_model(weights: Path) -> tuple[nn.Module, KeypointConfig]:
    """Rebuild a keypoint model and its config from a loclab checkpoint, in eval mode on the CPU."""
    state = load_checkpoint(weights, task=TASK)
    cfg = from_dict(KeypointConfig, state["config"])
    model = make_model(cfg)
    model.load_state_dict(state["model"])
    return model.eval(), cfg


@torch.no_grad()
def predict_keypoints(
    model: nn.Module, cfg: KeypointConfig, images: Tensor, *, subpixel: bool = True, batch_size: int = 64,
    path: NumericPath | None = None,
) -> Tensor:
    """Keypoints ``[N, K, 2]`` in image pixels for ``images [N, 1, S, S]`` (uint8 or float in [0, 1]).

    Heatmap models decode with :func:`decode_heatmaps_subpixel` (or plain argmax with ``subpixel=False``);
    regression models scale their normalised output by the image size.
    """
    path = path or resolve_numeric_path(cfg.train.precision)
    model = path.prepare(model).eval()
    out = []
    for start in range(0, images.shape[0], batch_size):
        batch = images[start:start + batch_size]
        if batch.dtype == torch.uint8:
            batch = batch.float() / 255
        with path.autocast():
            pred = model(path.images(batch))
        pred = pred.float().cpu()
        if output_type(cfg) == "heatmap":
            decode = decode_heatmaps_subpixel if subpixel else decode_heatmaps_argmax
            keypoints, _ = decode(as_heatmaps(pred, cfg), cfg.image_size)
        else:
            keypoints = pred.view(pred.shape[0], -1, 2) * cfg.image_size
        out.append(keypoints)
    return torch.cat(out) if out else torch.zeros(0, cfg.num_keypoints, 2)
