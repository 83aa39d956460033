"""Charts of the keypoint study: PCK curves, per-keypoint PCK, the ablation grid, loss curves, heatmaps over training.

Every function draws numbers that were computed elsewhere (metrics JSON, ``training_log.json``,
``heatmap_snapshots.npz``), writes one PNG with :func:`loclab.viz.style.save_figure` and returns its path.
Threshold keys may be floats or the strings of ``metrics.json`` (``"0.05"``, ``"0.1"``, ...).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator
from torch import Tensor

from loclab.viz.style import save_figure  # selects the Agg backend before pyplot is imported

METHOD_COLOURS = {"heatmap": "tab:blue", "regression": "tab:orange"}
_FALLBACK_COLOURS = ("tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")
ABLATION_FACTORS = {"heatmap_size": "heatmap size", "sigma": "Gaussian sigma (cells)", "skip": "skip connections"}


def _sorted_curve(curve: Mapping[Any, float]) -> tuple[list[float], list[float]]:
    """``{threshold: value}`` (float or string keys) -> thresholds ascending and their values."""
    points = sorted((float(t), float(v)) for t, v in curve.items())
    return [t for t, _ in points], [v for _, v in points]


def _method_colour(label: str, assigned: dict[str, str]) -> str:
    """One colour per method (the label's first word), so a method's standard and swap-aware curves match."""
    method = label.split()[0].lower() if label.split() else label
    if method not in assigned:
        assigned[method] = METHOD_COLOURS.get(method, _FALLBACK_COLOURS[len(assigned) % len(_FALLBACK_COLOURS)])
    return assigned[method]


def plot_pck_curves(
    curves: Mapping[str, Mapping[Any, float]],
    path: Path | str,
    ceiling: Mapping[Any, float] | None = None,
    title: str = "PCK vs threshold (validation)",
    normalize_by: str = "bbox",
    guessed_labels: Mapping[Any, float] | None = None,
) -> Path:
    """PCK against threshold for several methods on one axes.

    Args:
        curves: ``{label: {threshold: pck}}``, e.g. ``{"heatmap": ..., "heatmap (swap-aware)": ...,
            "regression": ..., "regression (swap-aware)": ...}``. A label's first word picks its colour (one per
            method); labels containing ``"swap"`` are dashed, the others solid.
        ceiling: :func:`loclab.metrics.pck.pck_ambiguity_ceiling` values, drawn as a grey dotted line: the best
            standard PCK any predictor can expect when the hand labels are a coin flip (it hedges between close hands).
        guessed_labels: :func:`loclab.metrics.pck.pck_guessed_hand_labels` values, drawn as a light grey
            dash-dotted line: what a perfect localiser that guesses the hand labels can expect.
    """
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    colours: dict[str, str] = {}
    for label, curve in curves.items():
        xs, ys = _sorted_curve(curve)
        style = "--" if "swap" in label.lower() else "-"
        ax.plot(xs, ys, style, marker="o", color=_method_colour(label, colours), label=label)
    if ceiling:
        xs, ys = _sorted_curve(ceiling)
        ax.plot(xs, ys, ":", color="grey", linewidth=2, label="ambiguity ceiling: best expected standard PCK")
    if guessed_labels:
        xs, ys = _sorted_curve(guessed_labels)
        ax.plot(xs, ys, "-.", color="silver", linewidth=1.5, label="perfect localiser guessing the hand labels")
    ax.set_xlabel(f"threshold (fraction of the {normalize_by} norm; correct when distance / norm <= threshold)")
    ax.set_ylabel("PCK")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    return save_figure(fig, path)


def plot_per_keypoint(
    per_keypoint: Mapping[str, Mapping[str, Mapping[Any, float]]],
    path: Path | str,
    threshold: float = 0.1,
    title: str | None = None,
) -> Path:
    """Grouped bars: PCK of each keypoint at ``threshold``, one bar per method.

    Args:
        per_keypoint: ``{label: {keypoint name: {threshold: pck}}}`` (``metrics.json["per_keypoint"]`` or
            ``["per_keypoint_swap"]`` of each method). Keypoints in the order of the first label.
    """
    labels = list(per_keypoint)
    names = list(next(iter(per_keypoint.values()))) if labels else []
    width = 0.8 / max(len(labels), 1)
    fig, ax = plt.subplots(figsize=(1.3 * max(len(names), 3) + 1.5, 4.0))
    colours: dict[str, str] = {}
    x = np.arange(len(names))
    for i, label in enumerate(labels):
        values = [_value_at(per_keypoint[label].get(name, {}), threshold) for name in names]
        bars = ax.bar(x + (i - (len(labels) - 1) / 2) * width, values, width, label=label,
                      color=_method_colour(label, colours), hatch="//" if "swap" in label.lower() else None,
                      edgecolor="white")
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks(x, names)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel(f"PCK@{threshold:g}")
    ax.set_title(title or f"PCK@{threshold:g} per keypoint (validation)")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


def _value_at(curve: Mapping[Any, float], threshold: float) -> float:
    for t, v in curve.items():
        if abs(float(t) - threshold) < 1e-9:
            return float(v)
    return float("nan")


def plot_ablation(
    results: Mapping[str, Any],
    path: Path | str,
    thresholds: Sequence[float] = (0.05, 0.1),
    title: str = "Heatmap ablations, judged by validation PCK",
) -> Path:
    """One column per factor (heatmap size, sigma, skip connections), bars of PCK per setting.

    Args:
        results: ``baseline_results.json`` as written by
            :func:`loclab.analysis.ablation.summarise_keypoint_ablation`: ``{"factors": {factor: {"rows": [
            {"setting": "64x64", "pck": {"0.05": .., "0.1": ..}, "pck_swap": {...}, "val_mse": float | None},
            ...], "best": "64x64"}}}``, factors ``heatmap_size``, ``sigma``, ``skip`` (others are drawn too).
        thresholds: the PCK thresholds drawn as bars side by side.

    Top row: standard PCK; bottom row (when the rows carry ``pck_swap``): swap-aware PCK. PCK is the measure;
    the validation heatmap MSE, not comparable across sigma or resolution, is only printed under each tick.
    Error bars are the rows' 95 % intervals (``pck_ci95`` / ``pck_swap_ci95``: ``{threshold: [low, high]}``,
    :mod:`loclab.study.ablation_intervals`); rows with several ``seeds`` also show each seed's value as a dot. The
    factor's ``best`` setting, set only when it is significantly better than every other, is marked with ``*``.
    """
    factors = results.get("factors", {})
    names = [f for f in ABLATION_FACTORS if f in factors] + [f for f in factors if f not in ABLATION_FACTORS]
    has_swap = any(r.get("pck_swap") for f in names for r in factors[f].get("rows", []))
    metrics = ("pck", "pck_swap") if has_swap else ("pck",)
    widths = [max(len(factors[f].get("rows", [])), 2) for f in names] or [1]
    fig, axes = plt.subplots(len(metrics), len(widths), figsize=(1.3 * sum(widths) + 1.5, 3.4 * len(metrics) + 0.6),
                             squeeze=False, gridspec_kw={"width_ratios": widths})
    shades = plt.get_cmap("Blues")(np.linspace(0.45, 0.9, len(thresholds)))
    width = 0.8 / max(len(thresholds), 1)
    for c, factor in enumerate(names):
        rows = factors[factor].get("rows", [])
        x = np.arange(len(rows))
        for r, metric in enumerate(metrics):
            ax = axes[r][c]
            for j, t in enumerate(thresholds):
                values = [_value_at(row.get(metric) or {}, t) for row in rows]
                centres = x + (j - (len(thresholds) - 1) / 2) * width
                bars = ax.bar(centres, values, width, color=shades[j], label=f"PCK@{t:g}",
                              yerr=_error_bars(rows, metric, t, values), error_kw={"elinewidth": 1, "capsize": 2})
                ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=2)
                for centre, row in zip(centres, rows):  # several seeds: each seed's value as a dot
                    seeds = row.get("seeds") or []
                    if len(seeds) > 1:
                        ys = [_value_at(s.get(metric) or {}, t) for s in seeds]
                        ax.plot([centre] * len(ys), ys, ".", color="black", markersize=3)
            last = r == len(metrics) - 1  # MSE only under the bottom row's ticks
            # "best" counts only where the intervals decided it ("judged"); older summaries named their top setting
            best = factors[factor].get("best") if factors[factor].get("judged") else None
            ax.set_xticks(x, [_setting_label(row, best, last) for row in rows], fontsize=8)
            ax.set_ylim(0, 1.12)
            ax.grid(axis="y", alpha=0.3)
            if r == 0:
                ax.set_title(ABLATION_FACTORS.get(factor, factor))
        for r, metric in enumerate(metrics):
            axes[r][0].set_ylabel("swap-aware PCK" if metric == "pck_swap" else "standard PCK")
    axes[0][0].legend(fontsize=8, loc="lower left")
    fig.suptitle(f"{title}  (* significantly best; bars: 95 % CI; val MSE under the ticks is not comparable "
                 "across settings)", fontsize=10)
    return save_figure(fig, path)


def _error_bars(rows: Sequence[Mapping[str, Any]], metric: str, threshold: float,
                values: Sequence[float]) -> np.ndarray:
    """``[2, n]`` distances from each value down and up to its 95 % interval (``<metric>_ci95``); 0 without one."""
    bars = np.zeros((2, len(rows)))
    for i, (row, value) in enumerate(zip(rows, values)):
        intervals = row.get(f"{metric}_ci95") or {}
        pair = next((v for k, v in intervals.items() if abs(float(k) - threshold) < 1e-9), None)
        if pair and None not in pair and np.isfinite(value):
            bars[:, i] = max(value - pair[0], 0.0), max(pair[1] - value, 0.0)
    return bars


def _setting_label(row: Mapping[str, Any], best: str | None, with_mse: bool) -> str:
    text = str(row.get("setting", "?")) + (" *" if best is not None and row.get("setting") == best else "")
    if with_mse and row.get("val_mse") is not None:
        text += f"\nMSE {float(row['val_mse']):.1e}"
    return text


def plot_loss_curve(log: Sequence[Mapping[str, Any]], path: Path | str, title: str = "Training loss") -> Path:
    """Train and validation ``loss_total`` per epoch (log scale) from ``training_log.json`` records
    ``{"epoch", "lr", "train": {"loss_total", ...}, "val": {"loss_total", ...}}``; other loss components, when
    present, are drawn thin; the learning rate on a second axis."""
    epochs = [int(r["epoch"]) for r in log]
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    components = sorted({k for r in log for part in ("train", "val") for k in r.get(part, {}) if k != "loss_total"})
    for part, colour in (("train", "tab:blue"), ("val", "tab:orange")):
        ax.plot(epochs, [r[part]["loss_total"] for r in log], "-o", color=colour, markersize=3,
                label=f"{part} loss_total")
        for name in components:
            ax.plot(epochs, [r[part].get(name, np.nan) for r in log], "-", color=colour, linewidth=0.8, alpha=0.6,
                    label=f"{part} {name}")
    if all(r[p]["loss_total"] > 0 for r in log for p in ("train", "val")) and log:
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    if log and all("lr" in r for r in log):
        lr_ax = ax.twinx()
        lr_ax.plot(epochs, [r["lr"] for r in log], ":", color="grey", label="learning rate")
        lr_ax.set_ylabel("learning rate", color="grey")
        lr_ax.tick_params(axis="y", colors="grey")
    ax.legend(fontsize=8)
    ax.set_title(title)
    return save_figure(fig, path)


def plot_heatmaps_across_epochs(
    npz_path: Path | str,
    images: Tensor | np.ndarray | None,
    path: Path | str,
    title: str = "Predicted heatmaps across training (max over keypoints)",
) -> Path:
    """Rows = images, columns = saved epochs: the max over keypoints of each predicted heatmap over its image.

    Args:
        npz_path: ``heatmap_snapshots.npz`` with ``epoch_001``, ``epoch_005``, ... arrays
            ``[n_images, K, H, W]`` (float16, raw model outputs) and ``image_ids`` ``[n_images]``.
        images: uint8 ``[n_images, 1, S, S]`` (or ``[n_images, S, S]``) in the order of ``image_ids``, or
            ``None`` to draw the heatmaps alone.

    Each row shares one colour scale from 0 to that image's largest value over all epochs, so the columns show
    how the maps sharpen; the heatmap is stretched over the whole image (heatmap cells cover the image exactly).
    """
    with np.load(npz_path) as data:
        epochs = sorted(k for k in data.files if k.startswith("epoch_"))
        maps = {k: data[k].astype(np.float32).max(axis=1) for k in epochs}  # {epoch: [n, H, W]}
        ids = data["image_ids"].tolist() if "image_ids" in data.files else None
    if not epochs:
        raise ValueError(f"{npz_path}: holds no epoch_NNN heatmap arrays; nothing to draw")
    n_images = maps[epochs[0]].shape[0]
    pictures = None if images is None else np.asarray(images).reshape(n_images, *np.asarray(images).shape[-2:])
    fig, axes = plt.subplots(max(n_images, 1), max(len(epochs), 1), squeeze=False,
                             figsize=(1.9 * max(len(epochs), 1), 1.9 * max(n_images, 1)))
    for row in range(n_images):
        vmax = max(float(maps[e][row].max()) for e in epochs)
        for col, epoch in enumerate(epochs):
            ax = axes[row][col]
            size = pictures.shape[-1] if pictures is not None else maps[epoch].shape[-1]
            extent = (-0.5, size - 0.5, size - 0.5, -0.5)
            if pictures is not None:
                ax.imshow(pictures[row], cmap="gray", vmin=0, vmax=255, extent=extent)
            ax.imshow(np.clip(maps[epoch][row], 0, None), cmap="magma", vmin=0, vmax=max(vmax, 1e-6),
                      alpha=0.6 if pictures is not None else 1.0, extent=extent, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(f"epoch {int(epoch.split('_')[1])}", fontsize=9)
            if col == 0 and ids is not None:
                ax.set_ylabel(f"image {ids[row]}", fontsize=8)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)
