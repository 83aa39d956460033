"""The keypoint task: build, train, predict.

Heatmap models (``output_type == "heatmap"``) train on Gaussian heatmap targets; regression models
(``output_type == "regression"``) on coordinates normalised to [0, 1]. Both go through the same
:func:`loclab.engine.train.fit` loop as the detector. Top-down: every instance is cropped to the model input
(:class:`loclab.data.keypoint_dataset.KeypointDataset`), and predictions are mapped back through the inverse
crop to image pixels (:func:`predict_keypoints` with ``transforms``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from loclab.atomic import atomic_write_bytes
from loclab.config import KeypointConfig, from_dict, to_dict
from loclab.data.figures import KEYPOINT_NAMES as STICK_FIGURE_NAMES
from loclab.data.formats_keypoints import KeypointSplit
from loclab.data.keypoint_dataset import KeypointDataset, image_channels
from loclab.engine.checkpoint import load_checkpoint
from loclab.engine.precision import NumericPath, resolve_numeric_path
from loclab.engine.rundir import start_run
from loclab.engine.train import RunFiles, epochs_for_steps, fit
from loclab.errors import ConfigError
from loclab.losses.keypoints import (
    coordinate_mse_loss,
    heatmap_mse_loss,
    pair_invariant_coordinate_mse,
    pair_invariant_heatmap_loss,
    pair_invariant_spatial_cross_entropy,
    spatial_cross_entropy_loss,
)
from loclab.models.contracts import HeatmapRegression
from loclab.models.keypoints import KEYPOINT_MODELS
from loclab.ops.affine import apply_affine, invert_affine
from loclab.ops.heatmaps import decode_heatmaps_argmax, decode_heatmaps_subpixel

TASK = "keypoints"
# (model output type, loss) -> (plain loss, loss invariant to each symmetric pair's order)
LOSSES = {
    ("heatmap", "mse"): (heatmap_mse_loss, pair_invariant_heatmap_loss),
    ("heatmap", "spatial_ce"): (spatial_cross_entropy_loss, pair_invariant_spatial_cross_entropy),
    ("regression", "mse"): (coordinate_mse_loss, pair_invariant_coordinate_mse),
}
# Config fields that only a model consumes: a model that does not declare one must see it at its default,
# or the setting would silently do nothing. (The other options also shape the data, so they always matter.)
MODEL_ONLY_OPTIONS = ("heatmap_size", "skip")


def model_options(cfg: KeypointConfig) -> dict[str, Any]:
    """Every constructor option a keypoint model may declare (its ``options``, one of
    :data:`loclab.models.contracts.KEYPOINT_OPTIONS`), with its value from ``cfg``."""
    return {"num_keypoints": cfg.num_keypoints, "heatmap_size": cfg.heatmap_size, "skip": cfg.skip,
            "in_channels": cfg.in_channels, "image_size": cfg.image_size, "input_size": cfg.input_size}


def make_model(cfg: KeypointConfig) -> nn.Module:
    """Instantiate ``cfg.model`` from :data:`KEYPOINT_MODELS` with the options it declares (``options``).

    Raises :class:`ConfigError` for an unknown model, for a model that declares an option that is none of
    :func:`model_options`, and for a config that sets a model-only option (:data:`MODEL_ONLY_OPTIONS`) to a
    non-default value that this model does not take.
    """
    factory = model_class(cfg)
    declared = factory.options
    options = model_options(cfg)
    unknown = [name for name in declared if name not in options]
    if unknown:
        raise ConfigError(f"keypoint model {cfg.model!r} declares options {unknown} that loclab cannot fill; a model's "
                          f"options are chosen from {', '.join(options)} (docs/extending.md)")
    defaults = {f.name: f.default for f in fields(KeypointConfig)}
    for name in MODEL_ONLY_OPTIONS:
        if name not in declared and getattr(cfg, name) != defaults[name]:
            takers = sorted(m for m, cls in KEYPOINT_MODELS.items() if name in cls.options)
            raise ConfigError(f"{name} = {getattr(cfg, name)!r} has no effect on {cfg.model!r} models; it applies "
                              f"to {', '.join(takers)} (leave it at {defaults[name]!r})")
    return factory(**{name: options[name] for name in declared})


def config_for_data(cfg: KeypointConfig, train_split: KeypointSplit) -> KeypointConfig:
    """``cfg`` completed from the training split: keypoint count, names, symmetric pairs, and input channels
    (3 unless the data is grayscale, :func:`loclab.data.keypoint_dataset.image_channels`). Idempotent."""
    return replace(cfg, num_keypoints=train_split.num_keypoints, keypoint_names=tuple(train_split.keypoint_names),
                   symmetric_pairs=tuple(tuple(p) for p in train_split.symmetric_pairs),
                   in_channels=image_channels(train_split))


def model_class(cfg: KeypointConfig) -> type[nn.Module]:
    """The class of ``cfg.model`` in :data:`KEYPOINT_MODELS`; :class:`ConfigError` for an unknown name."""
    if cfg.model not in KEYPOINT_MODELS:
        raise ConfigError(f"unknown keypoint model {cfg.model!r}; choose one of {sorted(KEYPOINT_MODELS)}")
    return KEYPOINT_MODELS[cfg.model]


def output_type(cfg: KeypointConfig) -> str:
    return model_class(cfg).output_type


def keypoint_names(cfg: KeypointConfig) -> tuple[str, ...]:
    """The name of each keypoint: the config's (from the data), else the stick figures' (checkpoints from before
    the config stored names were all trained on them) when the count fits, else ``kp0, kp1, ...``."""
    if cfg.keypoint_names:
        return cfg.keypoint_names
    if cfg.num_keypoints == len(STICK_FIGURE_NAMES):
        return STICK_FIGURE_NAMES
    return tuple(f"kp{k}" for k in range(cfg.num_keypoints))


def checkpoint_name(cfg: KeypointConfig) -> str:
    """``heatmap_model.pth``, ``regression_model.pth``, ... (the reports' names)."""
    return f"{cfg.model}_model.pth"


def make_dataset(split: KeypointSplit, cfg: KeypointConfig, progress: bool = False, *,
                 train: bool = False) -> KeypointDataset:
    """The top-down dataset of ``split`` for ``cfg``'s model input; ``train=True`` adds ``cfg``'s augmentation."""
    width, height = cfg.heatmap_grid
    return KeypointDataset.from_split(
        split, output_type=output_type(cfg), heatmap_size=width if width == height else (width, height),
        sigma=cfg.sigma, progress=progress, input_size=cfg.input_size, in_channels=cfg.in_channels,
        box_padding=cfg.box_padding, augment=cfg.train.augment if train else None, flip=train and cfg.flip,
        symmetric_pairs=cfg.symmetric_pairs or None)


LossFn = Callable[[Tensor, Tensor, Tensor | None], Tensor]


def loss_function(cfg: KeypointConfig) -> LossFn:
    """``loss(pred, target, visible [B, K] or None)`` for ``cfg``; with ``hand_invariant`` the order of each of
    ``cfg.symmetric_pairs`` is free. Every keypoint visible: exactly the loss the reference runs trained with."""
    key = (output_type(cfg), cfg.loss)
    if key not in LOSSES:
        raise ConfigError(f"loss {cfg.loss!r} does not apply to {cfg.model!r} models ({output_type(cfg)} output)")
    plain, invariant = LOSSES[key]
    if not cfg.hand_invariant:
        return lambda pred, target, visible=None: plain(pred, target, visible)
    pairs = cfg.symmetric_pairs
    if not pairs:
        raise ConfigError("hand_invariant needs symmetric pairs, and the config has none (training fills them from "
                          "the data; this dataset's keypoint names pair nothing)")
    return lambda pred, target, visible=None: invariant(pred, target, pairs, visible)


def as_heatmaps(pred: Tensor, cfg: KeypointConfig) -> Tensor:
    """Model output as heatmaps to decode or show: spatial-CE models output logits of a spatial softmax."""
    if cfg.loss == "spatial_ce":
        return torch.softmax(pred.float().flatten(2), dim=-1).view_as(pred)
    return pred.float()


def make_step(cfg: KeypointConfig):
    loss_fn = loss_function(cfg)

    def step(model: nn.Module, batch: Any, numeric: NumericPath) -> dict[str, Tensor]:
        images, target, *rest = batch  # (images, target, visible); benchmarks pass no visibility
        visible = rest[0].to(numeric.device) if rest else None
        pred = model(numeric.images(images))
        with torch.autocast(numeric.device.type, enabled=False):
            loss = loss_fn(pred.float(), target.to(numeric.device).float(), visible)
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
                 numeric: NumericPath, cfg: KeypointConfig):
        self.file = run_dir / "heatmap_snapshots.npz"
        self.images, self.image_ids, self.epochs, self.numeric, self.cfg = images, image_ids, set(epochs), numeric, cfg
        self.saved: dict[str, np.ndarray] = {}
        if self.file.exists():
            with np.load(self.file) as data:
                self.saved = {k: data[k] for k in data.files}

    @torch.no_grad()
    def __call__(self, epoch: int, model: nn.Module) -> None:
        if epoch not in self.epochs:
            return
        model.eval()
        heatmaps_fn = model.heatmaps if isinstance(model, HeatmapRegression) else model
        with self.numeric.autocast():
            raw = heatmaps_fn(self.numeric.images(self.images.float() / 255))
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
    """Train one keypoint model into ``run_dir`` (``<model>_model.pth``, ``last.pth``, log, snapshots).

    The config is first completed from the training split (:func:`config_for_data`) and stored so in the run;
    ``train.steps`` (when set) becomes a whole number of epochs for the training set's instance count.
    """
    cfg = config_for_data(cfg, train_split)
    # the datasets draw no random numbers, so building them before the run seeds torch changes no result
    train_set = make_dataset(train_split, cfg, progress, train=True)
    val_set = make_dataset(val_split, cfg, progress)
    cfg = replace(cfg, train=epochs_for_steps(cfg.train, len(train_set)))
    run_dir, numeric = start_run(run_dir, TASK, "keypoints", cfg, cfg.train, meta)
    model = make_model(cfg)
    hook = None
    if output_type(cfg) == "heatmap" or isinstance(model, HeatmapRegression):
        n = min(cfg.num_snapshot_images, len(val_set))
        shown = val_set.images[:n] if val_set.images is not None else \
            torch.stack([val_set.input_image(i) for i in range(n)])
        hook = HeatmapSnapshots(run_dir, shown, val_set.image_ids[:n], snapshot_epochs(cfg), numeric, cfg)
    return fit(model, make_step(cfg), train_set, val_set, None, cfg.train, numeric,
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
    model: nn.Module, cfg: KeypointConfig, images: Tensor, *, transforms: Tensor | None = None,
    subpixel: bool = True, batch_size: int = 64, numeric: NumericPath | None = None,
) -> Tensor:
    """Keypoints ``[N, K, 2]`` for model inputs ``images [N, C, H_in, W_in]`` (uint8 or float in [0, 1]).

    Without ``transforms`` the keypoints are in input pixels. With ``transforms`` (float64 ``[N, 2, 3]``, row
    ``i`` mapping image ``i``'s pixels to its input, as :attr:`KeypointDataset.transforms`) each row is mapped back
    through the inverse crop into its image's pixels; identity rows are returned untouched. Heatmap models decode
    with :func:`decode_heatmaps_subpixel` (or plain argmax with ``subpixel=False``); regression models scale their
    normalised output by the input size.
    """
    numeric = numeric or resolve_numeric_path(cfg.train.precision)
    model = numeric.prepare(model).eval()
    out = []
    for start in range(0, images.shape[0], batch_size):
        out.append(_predict_batch(model, cfg, images[start:start + batch_size], subpixel, numeric))
    keypoints = torch.cat(out) if out else torch.zeros(0, cfg.num_keypoints, 2)
    return keypoints if transforms is None else to_image_pixels(keypoints, transforms)


def _predict_batch(model: nn.Module, cfg: KeypointConfig, batch: Tensor, subpixel: bool,
                   numeric: NumericPath) -> Tensor:
    if batch.dtype == torch.uint8:
        batch = batch.float() / 255
    with numeric.autocast():
        pred = model(numeric.images(batch))
    keypoints, _ = decode_output(pred.float().cpu(), cfg, subpixel=subpixel)
    return keypoints


def decode_output(pred: Tensor, cfg: KeypointConfig, *, subpixel: bool = True) -> tuple[Tensor, Tensor]:
    """A keypoint model's float output -> ``(keypoints [B, K, 2] in input pixels, confidence [B, K])``.

    Heatmap models decode with :func:`decode_heatmaps_subpixel` (plain argmax with ``subpixel=False``) and their
    confidence is each map's peak (a logit for MSE models, a probability for spatial-CE ones); regression models
    scale their normalised ``[B, 2K]`` output by the input size and have no confidence (all ones). Only tensor
    ops, so exported graphs trace it as it is.
    """
    width, height = cfg.input_size
    if output_type(cfg) == "heatmap":
        size = width if width == height else (width, height)  # square: the reference int path, bit for bit
        decode = decode_heatmaps_subpixel if subpixel else decode_heatmaps_argmax
        return decode(as_heatmaps(pred, cfg), size)
    scale = width if width == height else torch.tensor([width, height], dtype=pred.dtype, device=pred.device)
    keypoints = pred.view(pred.shape[0], -1, 2) * scale
    return keypoints, torch.ones_like(keypoints[..., 0])


def to_image_pixels(keypoints: Tensor, transforms: Tensor) -> Tensor:
    """Input-pixel ``keypoints [N, K, 2]`` -> image pixels through the inverse of each row's ``transforms [N, 2, 3]``.

    Rows whose transform is the identity keep their values bitwise (the reference path never resamples).
    """
    if keypoints.shape[0] != transforms.shape[0]:
        raise ValueError(f"{keypoints.shape[0]} rows of keypoints for {transforms.shape[0]} transforms")
    if keypoints.shape[0] == 0:
        return keypoints
    identity = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    same = (transforms.to(torch.float64) == identity).flatten(1).all(dim=1)
    mapped = apply_affine(keypoints, invert_affine(transforms))
    return torch.where(same[:, None, None], keypoints, mapped)


def predict_dataset(model: nn.Module, cfg: KeypointConfig, dataset: KeypointDataset, *, subpixel: bool = True,
                    batch_size: int = 64, numeric: NumericPath | None = None) -> Tensor:
    """Keypoints ``[M, K, 2]`` in image pixels for every instance of ``dataset`` (its un-augmented crops)."""
    out = []
    for start in range(0, len(dataset), batch_size):
        rows = range(start, min(start + batch_size, len(dataset)))
        images = dataset.images[start:rows.stop] if dataset.images is not None else \
            torch.stack([dataset.input_image(i) for i in rows])
        out.append(predict_keypoints(model, cfg, images, transforms=dataset.transforms[start:rows.stop],
                                     subpixel=subpixel, batch_size=batch_size, numeric=numeric))
    return torch.cat(out) if out else torch.zeros(0, cfg.num_keypoints, 2)
