"""Charts of detection training and analysis numbers: loss curves, PR curves, scale table, anchor coverage, sizes.

Every function takes the JSON-ready structures the run directory stores (``training_log.json`` records, parts of
``metrics.json``) and returns a matplotlib :class:`~matplotlib.figure.Figure`; :func:`loclab.viz.style.save_figure`
writes it. Nothing here computes a number a report would quote.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from loclab.viz.style import SCALE_COLOURS, class_colour, plt

_PANELS_PER_ROW = 4  # per-class panels of a dataset with more classes wrap into rows of this many

# Panel order and titles; components not listed here follow in the log's order.
_LOSS_TITLES = {"loss_total": "total", "loss_obj": "objectness (BCE)", "loss_cls": "classification (CE)",
                "loss_loc": "localisation (Smooth-L1)"}


def _nan(value: Any) -> float:
    """JSON null (an undefined ratio) as NaN, so it plots as a gap and prints as 'n/a'."""
    return float("nan") if value is None else float(value)


def _fmt(value: Any, digits: int = 2) -> str:
    value = _nan(value)
    return "n/a" if np.isnan(value) else f"{value:.{digits}f}"


def loss_curves_figure(log: Sequence[Mapping[str, Any]]) -> Figure:
    """Train (solid) and validation (dashed) loss per epoch, one panel per component (total first).

    Args:
        log: ``training_log.json`` records ``{"epoch", "lr", "train": {"loss_obj", "loss_cls", "loss_loc",
            "loss_total"}, "val": {...}, ...}``; components are taken from the first record's ``"train"`` keys.
    """
    logged = list(log[0]["train"]) if log else list(_LOSS_TITLES)
    keys = [k for k in _LOSS_TITLES if k in logged] + [k for k in logged if k not in _LOSS_TITLES]
    cols = len(keys)
    fig, axes = plt.subplots(1, cols, figsize=(3.6 * cols, 3.2), squeeze=False)
    epochs = [record["epoch"] for record in log]
    val_total = [record.get("val", {}).get("loss_total", np.nan) for record in log]
    best = epochs[int(np.nanargmin(val_total))] if log and not np.all(np.isnan(val_total)) else None
    for ax, key in zip(axes[0], keys):
        ax.plot(epochs, [r["train"].get(key, np.nan) for r in log], "-o", ms=3, label="train")
        ax.plot(epochs, [r.get("val", {}).get(key, np.nan) for r in log], "--s", ms=3, label="val")
        if best is not None:
            ax.axvline(best, color="grey", lw=0.8, ls=":", label=f"best val (epoch {best})")
        ax.set_title(_LOSS_TITLES.get(key, key))
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("loss")
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Detector training losses (per-epoch means)")
    fig.tight_layout()
    return fig


def pr_curves_figure(metrics: Mapping[str, Any]) -> Figure:
    """Precision-recall curve per class with its monotone envelope and AP in the title.

    Args:
        metrics: ``metrics.json``: uses ``"pr_curves"`` ``{class: {"recall": [...], "precision": [...]}}``,
            ``"AP50"``, ``"AP50_coco"`` and ``"ap_convention"``.
    """
    curves = metrics["pr_curves"]
    fig, axes = _class_panels(len(curves), 3.6, 3.5)
    for i, (ax, (name, curve)) in enumerate(zip(axes.flat, curves.items())):
        recall, precision = np.asarray(curve["recall"], float), np.asarray(curve["precision"], float)
        colour = class_colour(i)
        if recall.size:
            envelope = np.maximum.accumulate(precision[::-1])[::-1]
            ax.plot(recall, precision, ".", ms=3, color=colour, alpha=0.5, label="precision at each TP")
            ax.step(recall, envelope, where="post", color=colour, label="monotone envelope")
        voc, coco = _fmt(metrics["AP50"].get(name), 3), _fmt(metrics["AP50_coco"].get(name), 3)
        ax.set_title(f"{name}: AP50 {voc} (COCO-101 {coco})", fontsize=9)
        ax.set(xlim=(0, 1.02), ylim=(0, 1.02), xlabel="recall")
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(curves):]:
        ax.axis("off")
    for row in axes:
        row[0].set_ylabel("precision")
    axes[0][0].legend(fontsize=7, loc="lower left")
    fig.suptitle(f"PR curves, IoU >= 0.5. Headline AP: {metrics.get('ap_convention', 'VOC all-point')}", fontsize=9)
    fig.tight_layout()
    return fig


def _class_panels(count: int, width: float, height: float) -> tuple[Figure, np.ndarray]:
    """One panel per class: a single row for up to :data:`_PANELS_PER_ROW` classes, else rows of that many."""
    count = max(count, 1)
    cols = count if count <= _PANELS_PER_ROW else _PANELS_PER_ROW
    rows = -(-count // cols)
    return plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)


def _heatmap(ax, values: np.ndarray, text: list[list[str]], rows: Sequence[str], cols: Sequence[str], title: str,
             vmax: float | None = None) -> None:
    image = ax.imshow(np.nan_to_num(values, nan=0.0), cmap="Blues", vmin=0, vmax=vmax)
    for r in range(values.shape[0]):
        for c in range(values.shape[1]):
            light = np.nan_to_num(values[r, c]) > 0.6 * (vmax or np.nanmax(values) or 1)
            ax.text(c, r, text[r][c], ha="center", va="center", fontsize=8, color="white" if light else "black")
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("ground-truth size bucket")
    ax.set_ylabel("detection head")
    ax.set_title(title, fontsize=9)
    plt.colorbar(image, ax=ax, fraction=0.046, pad=0.04)


def scale_specialisation_figure(table: Mapping[str, Any]) -> Figure:
    """Two scale x size heatmaps: confident TP counts (all-TP counts in brackets) and recall per head.

    Args:
        table: ``metrics["scale_specialisation"]`` as from :func:`loclab.analysis.scale.scale_specialisation`.
    """
    rows, cols = table["scales"], [f"{b}\n(n={n})" for b, n in zip(table["buckets"], table["gt_per_bucket"])]
    conf, every = table["confident"], table["all"]
    t = table["score_threshold"]
    counts = np.asarray(conf["tp_counts"], float)
    count_text = [[f"{int(a)}\n(all {int(b)})" for a, b in zip(ra, rb)]
                  for ra, rb in zip(conf["tp_counts"], every["tp_counts"])]
    recall = np.array([[_nan(v) for v in row] for row in conf["recall"]])
    recall_text = [[f"{_fmt(a)}\n(all {_fmt(b)})" for a, b in zip(ra, rb)]
                   for ra, rb in zip(conf["recall"], every["recall"])]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    _heatmap(axes[0], counts, count_text, rows, cols, f"true positives with score >= {t:g} (all scores)")
    _heatmap(axes[1], recall, recall_text, rows, cols, f"recall of each head alone, score >= {t:g} (all scores)", 1.0)
    fig.suptitle(f"Scale specialisation (IoU >= {table['iou_threshold']:g}; {table['bucket_rule']})", fontsize=9)
    fig.tight_layout()
    return fig


def anchor_coverage_figure(coverage: Mapping[str, Any]) -> Figure:
    """Best-anchor IoU histograms per bucket and scale, best possible recall, positives per gt, and anchor size vs
    object size.

    Args:
        coverage: ``metrics["anchor_coverage"]`` as from :func:`loclab.analysis.coverage.anchor_coverage`.
    """
    scales, buckets = coverage["scales"], coverage["buckets"]
    hist = coverage["histograms"]
    edges = np.asarray(hist["bin_edges"])
    thr = coverage["iou_threshold"]
    fig, axes = plt.subplots(2, 3, figsize=(14, 8))
    for b, (ax, bucket) in enumerate(zip(axes[0], buckets)):
        for s, name in enumerate(scales):
            ax.stairs(hist["per_scale_bucket"][s][b], edges, color=SCALE_COLOURS[s % 3], label=f"{name} anchors")
        ax.stairs(hist["all_scales_per_bucket"][b], edges, color="black", ls="--", label="all scales")
        ax.axvline(thr, color="grey", lw=0.8, ls=":")
        ax.set(title=f"{bucket} objects (n={coverage['gt_per_bucket'][b]})", xlabel="best anchor IoU", ylabel="boxes")
        ax.legend(fontsize=7)
    width = 0.8 / (len(scales) + 1)
    x = np.arange(len(buckets))
    bpr = coverage["best_possible_recall"]
    for s, name in enumerate(scales):
        axes[1][0].bar(x + s * width, [_nan(v) for v in bpr["per_scale_bucket"][s]], width, color=SCALE_COLOURS[s % 3],
                       label=name)
        axes[1][1].bar(x + s * width, [_nan(v) for v in coverage["positives_per_gt"]["mean_per_scale_bucket"][s]],
                       width, color=SCALE_COLOURS[s % 3], label=name)
    axes[1][0].bar(x + len(scales) * width, [_nan(v) for v in bpr["per_bucket"]], width, color="black", label="all")
    axes[1][0].set(title=f"best possible recall (some anchor IoU >= {thr:g}); overall {_fmt(bpr['overall'], 3)}",
                   ylim=(0, 1.05))
    axes[1][1].set(title="positive anchors per box (training matcher)", ylabel="mean positives")
    for ax in axes[1][:2]:
        ax.set_xticks(x + width * len(scales) / 2, buckets)
        ax.legend(fontsize=7)
    ax = axes[1][2]
    per_gt = coverage["per_gt"]
    colours = [SCALE_COLOURS[s % 3] for s in per_gt["best_scale"]]
    ax.scatter(per_gt["sqrt_area"], per_gt["best_iou"], c=colours, s=6, alpha=0.6)
    for s, sizes in enumerate(coverage["anchor_sizes"]):
        for size in sizes:
            ax.axvline(size, color=SCALE_COLOURS[s % 3], lw=1.0, alpha=0.7)
    for edge in coverage["bucket_edges"]:
        ax.axvline(edge, color="grey", ls="--", lw=0.8)
    ax.axhline(thr, color="grey", ls=":", lw=0.8)
    ax.set(title="object size vs best anchor IoU (colour: best scale;\nvertical lines: anchor sizes)",
           xlabel="object sqrt(area) [px]", ylabel="best anchor IoU", ylim=(0, 1.02))
    fig.suptitle("Anchor coverage of the ground truth, anchors " + " | ".join(
        f"{n} {'/'.join(f'{v:g}' for v in sizes)}" for n, sizes in zip(scales, coverage["anchor_sizes"])), fontsize=10)
    fig.tight_layout()
    return fig


def object_sizes_figure(sizes: Mapping[str, Any]) -> Figure:
    """Histogram of ``sqrt(area)`` per class with the size-bucket boundaries.

    Args:
        sizes: ``metrics["object_sizes"]`` as from :func:`loclab.analysis.sizes.size_distribution`.
    """
    per_class = sizes["per_class"]
    values = [v for c in per_class.values() for v in c["sqrt_area"]]
    top = max(values, default=200.0)
    bins = np.arange(0, top + 8, 4)
    if len(per_class) > 3:
        return _object_sizes_per_class(sizes, np.linspace(0, top * 1.05 + 1, 31))  # 30 bins at any object size
    fig, ax = plt.subplots(figsize=(8, 3.8))
    for i, (name, entry) in enumerate(per_class.items()):
        ax.hist(entry["sqrt_area"], bins=bins, alpha=0.7, color=class_colour(i),
                label=f"{name} (n={entry['count']}, median {_fmt(entry['median'], 0)} px)")
    for edge in sizes["bucket_edges"]:
        ax.axvline(edge, color="black", ls="--", lw=1)
    bounds = [0.0, *sizes["bucket_edges"], float(bins[-1])]
    for name, lo, hi in zip(sizes["buckets"], bounds[:-1], bounds[1:]):
        ax.text((lo + hi) / 2, 0.97, f"{name} ({sizes['bucket_counts'][name]})", transform=ax.get_xaxis_transform(),
                ha="center", va="top", fontsize=9)
    ax.set(xlabel="sqrt(box area) [px]", ylabel="objects", title=f"Object sizes ({sizes['bucket_rule']})")
    ax.legend(fontsize=8, loc="center right")
    fig.tight_layout()
    return fig


def _object_sizes_per_class(sizes: Mapping[str, Any], bins: np.ndarray) -> Figure:
    """:func:`object_sizes_figure` for more than three classes: one histogram panel per class, same bins and
    bucket edges in each, so overlapping classes stay readable."""
    per_class = sizes["per_class"]
    fig, axes = _class_panels(len(per_class), 3.4, 2.6)
    for i, (ax, (name, entry)) in enumerate(zip(axes.flat, per_class.items())):
        ax.hist(entry["sqrt_area"], bins=bins, color=class_colour(i))
        for edge in sizes["bucket_edges"]:
            ax.axvline(edge, color="black", ls="--", lw=1)
        counts = ", ".join(str(entry["bucket_counts"].get(b, 0)) for b in sizes["buckets"])
        ax.set_title(f"{name}: n={entry['count']}, median {_fmt(entry['median'], 0)} px\n"
                     f"per bucket {counts}", fontsize=8)
        ax.set_xlabel("sqrt(box area) [px]", fontsize=8)
    for ax in axes.flat[len(per_class):]:
        ax.axis("off")
    totals = ", ".join(f"{b} {sizes['bucket_counts'][b]}" for b in sizes["buckets"])
    fig.suptitle(f"Object sizes per class ({sizes['bucket_rule']}); all classes: {totals}", fontsize=9)
    fig.tight_layout()
    return fig
