"""Keypoint predictions drawn on their images: one method, two methods side by side, and failure examples.

One drawing convention everywhere: ground truth as green circles, predictions as red crosses, a dashed line from
each ground-truth keypoint to its prediction (its error). Images are grayscale uint8 ``[N, 1, S, S]`` (or
``[N, S, S]``); keypoints ``[N, K, 2]`` ``(x, y)`` image pixels with integer ``x`` at the centre of pixel column
``x`` (``docs/architecture.md``), which is exactly where ``imshow`` puts pixel centres.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from torch import Tensor

from loclab.analysis.failures import FAILURE_TYPES, TYPE_MEANINGS, keypoint_correctness
from loclab.viz.style import GROUND_TRUTH_COLOUR, PREDICTION_COLOUR, save_figure

Array = Tensor | np.ndarray
FAILING_COLOUR = "orange"
_COLUMNS = 5
_PANEL = 2.2  # inches per image panel


def _numpy(values: Array | Sequence[Any], dtype: type = np.float64) -> np.ndarray:
    if isinstance(values, Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=dtype)


def _gray(images: Array) -> np.ndarray:
    """``[N, 1, S, S]`` or ``[N, S, S]`` -> uint8 ``[N, S, S]``."""
    pictures = _numpy(images, np.uint8)
    return pictures.reshape(pictures.shape[0], *pictures.shape[-2:])


def _draw_panel(ax: Any, image: np.ndarray, gt: np.ndarray, pred: np.ndarray, title: str = "",
                failing: np.ndarray | None = None, names: Sequence[str] | None = None) -> None:
    """One image with ``gt [K, 2]`` (green o), ``pred [K, 2]`` (red x) and dashed error lines.

    ``failing`` (bool ``[K]``) marks wrong predictions with an orange square and the keypoint's name.
    """
    ax.imshow(image, cmap="gray", vmin=0, vmax=255)
    for (gx, gy), (px, py) in zip(gt, pred):
        ax.plot([gx, px], [gy, py], "--", color=PREDICTION_COLOUR, linewidth=0.8, alpha=0.8)
    ax.scatter(gt[:, 0], gt[:, 1], s=45, facecolors="none", edgecolors=GROUND_TRUTH_COLOUR, linewidths=1.5)
    ax.scatter(pred[:, 0], pred[:, 1], s=35, marker="x", color=PREDICTION_COLOUR, linewidths=1.5)
    if failing is not None:
        for k in np.flatnonzero(failing):
            ax.scatter(pred[k, 0], pred[k, 1], s=110, marker="s", facecolors="none", edgecolors=FAILING_COLOUR,
                       linewidths=1.5)
            label = names[k] if names is not None else str(k)
            ax.annotate(label, (pred[k, 0], pred[k, 1]), xytext=(4, 4), textcoords="offset points", fontsize=7,
                        color=FAILING_COLOUR)
    size = image.shape[-1]
    ax.set_xlim(-0.5, size - 0.5)
    ax.set_ylim(image.shape[0] - 0.5, -0.5)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=7)


def _mean_error(gt: np.ndarray, pred: np.ndarray) -> float:
    distances = np.linalg.norm(pred - gt, axis=-1)
    # unlabelled keypoints (NaN ground truth) are not drawn and not counted
    return float(np.nanmean(distances) if np.isnan(distances).any() else distances.mean())


def draw_keypoint_predictions(
    images: Array,
    gts: Array,
    preds: Array,
    path: Path | str,
    title: str = "Predictions (green o ground truth, red x prediction)",
    image_ids: Sequence[int] | None = None,
) -> Path:
    """A grid (5 per row) of images with ground truth, predictions and error lines; panel titles give the mean
    error in pixels. ``gts``/``preds``: ``[N, K, 2]`` pixels; ``image_ids`` (optional) label the panels."""
    pictures, gt, pred = _gray(images), _numpy(gts), _numpy(preds)
    n = pictures.shape[0]
    cols = min(max(n, 1), _COLUMNS)
    rows = max(1, -(-n // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(_PANEL * cols, _PANEL * rows + 0.4), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.axis("off")
            continue
        name = f"id {image_ids[i]}: " if image_ids is not None else ""
        _draw_panel(ax, pictures[i], gt[i], pred[i], f"{name}mean error {_mean_error(gt[i], pred[i]):.1f} px")
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def draw_method_comparison(
    images: Array,
    gts: Array,
    heatmap_preds: Array,
    regression_preds: Array,
    path: Path | str,
    title: str = "Heatmap (top) vs regression (bottom) on the same validation images",
    image_ids: Sequence[int] | None = None,
) -> Path:
    """Two rows over the same ``N`` images (typically 10 validation images): heatmap predictions on top,
    regression predictions below. All keypoint arrays ``[N, K, 2]`` pixels."""
    pictures, gt = _gray(images), _numpy(gts)
    rows = {"heatmap": _numpy(heatmap_preds), "regression": _numpy(regression_preds)}
    n = pictures.shape[0]
    fig, axes = plt.subplots(2, max(n, 1), figsize=(_PANEL * 0.9 * max(n, 1), _PANEL * 2 + 0.5), squeeze=False)
    for r, (method, pred) in enumerate(rows.items()):
        for i in range(n):
            name = f"id {image_ids[i]} " if image_ids is not None else ""
            _draw_panel(axes[r][i], pictures[i], gt[i], pred[i], f"{name}{_mean_error(gt[i], pred[i]):.1f} px")
        axes[r][0].set_ylabel(method, fontsize=10)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def draw_failure_examples(
    images: Array,
    gts: Array,
    heatmap_preds: Array,
    regression_preds: Array,
    ids_by_type: Mapping[str, Sequence[int]],
    path: Path | str,
    *,
    image_ids: Sequence[int] | None = None,
    per_type: int = 3,
    threshold: float = 0.1,
    normalize_by: str = "bbox",
    swap_aware: bool = True,
    keypoint_names: Sequence[str] | None = None,
    failing: Mapping[str, Array] | None = None,
) -> Path:
    """A few examples of each failure type (rows A, B, C); each example as a heatmap panel and a regression panel.

    Args:
        images, gts, heatmap_preds, regression_preds: the validation images ``[N, 1, S, S]`` and keypoints
            ``[N, K, 2]``, row ``i`` for image ``image_ids[i]`` (row index when ``image_ids`` is None).
        ids_by_type: ``{"A": [ids], "B": [...], "C": [...]}`` (``failure_analysis(...)["image_ids"]``).
        threshold, normalize_by, swap_aware: the rule the analysis used; keypoints that fail it are marked with
            an orange square and their name. With ``swap_aware`` the hands are drawn in the matched order.
        failing: ``{"heatmap": bool [N, K], "regression": ...}``, the keypoints that failed, as the analysis found
            them (a user's own data: unlabelled keypoints, any symmetric pairs); the rule above is then not
            recomputed and the predictions are drawn as given.
    """
    pictures, gt = _gray(images), _numpy(gts)
    row_of = {int(i): r for r, i in enumerate(image_ids)} if image_ids is not None else None
    scored = {}
    for method, preds in (("heatmap", heatmap_preds), ("regression", regression_preds)):
        if failing is not None:
            scored[method] = (_numpy(failing[method], bool), _numpy(preds))
            continue
        correct, matched = keypoint_correctness(_numpy(preds), gt, threshold, normalize_by, swap_aware)
        scored[method] = (~correct.numpy(), matched.numpy())
    cols = max(1, per_type) * 2
    fig, axes = plt.subplots(len(FAILURE_TYPES), cols, figsize=(_PANEL * 0.9 * cols, _PANEL * 3 + 0.6),
                             squeeze=False)
    for r, kind in enumerate(FAILURE_TYPES):
        chosen = list(ids_by_type.get(kind, []))[:per_type]
        for c in range(cols):
            ax = axes[r][c]
            if c // 2 >= len(chosen):
                ax.axis("off")
                if c == 0:
                    ax.text(0.5, 0.5, f"no type {kind} {'instances' if failing is not None else 'images'}", ha="center", va="center", fontsize=8,
                            transform=ax.transAxes)
                continue
            image_id = int(chosen[c // 2])
            row = row_of[image_id] if row_of is not None else image_id
            method = "heatmap" if c % 2 == 0 else "regression"
            failing, matched = scored[method]
            _draw_panel(ax, pictures[row], gt[row], matched[row], f"{kind} id {image_id}: {method}",
                        failing=failing[row], names=keypoint_names)
        axes[r][0].set_ylabel(f"type {kind}", fontsize=10)
    if failing is not None:
        rule = "symmetric pairs matched either way" if swap_aware else "no symmetric pairs"
    else:
        rule = "swap-aware hands" if swap_aware else "hands by label"
    meanings = ";  ".join(f"{kind}: {TYPE_MEANINGS[kind]}" for kind in FAILURE_TYPES)
    fig.suptitle(f"Failure examples at threshold {threshold:g} ({normalize_by} norm, {rule}); "
                 f"orange squares: keypoints that fail\n{meanings}", fontsize=9)
    return save_figure(fig, path)
