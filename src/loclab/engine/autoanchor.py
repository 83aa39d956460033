"""Do the configured anchors fit the dataset's boxes? Measure it, and fit new anchors when asked.

Anchors live in the model input, so the boxes are measured after letterboxing to ``cfg.image_size``. The
measure is loclab's matcher's own: a box can be learnt when some anchor overlaps it with IoU >=
``cfg.pos_threshold`` once both are centred on the same point (the grid offset is ignored, so this is the
best possible recall, as YOLOv5's autoanchor reports it). ``loclab anchors`` prints the report;
training checks it and warns below :data:`MIN_BEST_POSSIBLE_RECALL`, and ``--autoanchor`` refits.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from loclab.config import DetectorConfig
from loclab.data.datasets import letterbox_split, split_letterboxes
from loclab.data.errors import DataWarning
from loclab.data.formats_detection import DetectionSplit
from loclab.ops.anchor_fit import anchor_quality, fit_anchors

logger = logging.getLogger(__name__)

MIN_BEST_POSSIBLE_RECALL = 0.98


def input_box_sizes(split: DetectionSplit, image_size: int) -> Tensor:
    """``[N, 2]`` (width, height) of every box of ``split`` after letterboxing its image to ``image_size``."""
    boxes = letterbox_split(split, split_letterboxes(split, image_size)).boxes
    return torch.cat([b[:, 2:] - b[:, :2] for b in boxes]) if boxes else torch.zeros((0, 2))


def size_edges(cfg: DetectorConfig) -> list[float]:
    """Size-bucket edges (px, on sqrt(w*h)) halfway between neighbouring scales' mean anchor sizes."""
    means = [sum(scale) / len(scale) for scale in cfg.anchor_sizes]
    return [(a + b) / 2 for a, b in zip(means[:-1], means[1:])]


def anchor_report(cfg: DetectorConfig, split: DetectionSplit) -> dict[str, Any]:
    """Best possible recall and mean best IoU of ``cfg``'s anchors on ``split``'s boxes, overall, per scale and
    per size bucket; JSON-ready, with the anchors it describes."""
    report = anchor_quality(input_box_sizes(split, cfg.image_size), cfg.anchor_sizes, cfg.anchor_ratios,
                            threshold=cfg.pos_threshold, size_edges=size_edges(cfg))
    return {"image_size": cfg.image_size, "anchor_sizes": [list(s) for s in cfg.anchor_sizes],
            "anchor_ratios": cfg.anchor_ratios and [list(r) for r in cfg.anchor_ratios], **report}


def fitted_config(cfg: DetectorConfig, split: DetectionSplit, *, seed: int = 0) -> DetectorConfig:
    """``cfg`` with anchors fitted to ``split``'s letterboxed boxes (k-means on their shapes, by size to scales)."""
    per_scale = len(cfg.anchor_sizes[0])
    sizes, ratios = fit_anchors(input_box_sizes(split, cfg.image_size), num_scales=len(cfg.anchor_sizes),
                                per_scale=per_scale, seed=seed)
    return replace(cfg, anchor_sizes=sizes, anchor_ratios=ratios)


def check_anchors(cfg: DetectorConfig, split: DetectionSplit, *, refit: bool = False) -> DetectorConfig:
    """The config to train with: ``cfg`` itself, or with refitted anchors when ``refit``.

    Logs the best possible recall; warns (:class:`DataWarning`) when it is below
    :data:`MIN_BEST_POSSIBLE_RECALL` and the anchors are kept.
    """
    before = anchor_report(cfg, split)
    if refit:
        fitted = fitted_config(cfg, split, seed=cfg.train.seed)
        after = anchor_report(fitted, split)
        logger.warning("autoanchor: best possible recall %s -> %s, mean best IoU %s -> %s with anchors %s ratios %s",
                       before["best_possible_recall"], after["best_possible_recall"], before["mean_best_iou"],
                       after["mean_best_iou"], after["anchor_sizes"], after["anchor_ratios"])
        return fitted
    recall = before["best_possible_recall"]
    if recall is not None and recall < MIN_BEST_POSSIBLE_RECALL:
        warnings.warn(
            f"the anchors reach only {before['best_possible_recall']:.3f} best possible recall on this data "
            f"(mean best IoU {before['mean_best_iou']:.3f}); some boxes can never match an anchor at IoU >= "
            f"{cfg.pos_threshold}. Pass --autoanchor to fit anchors to the data, or see `loclab anchors`.",
            DataWarning, stacklevel=2)
    return cfg


def format_report(title: str, report: dict[str, Any]) -> str:
    """:func:`anchor_report` as a few lines of text for the terminal."""
    ratios = report["anchor_ratios"] or [[1.0] * len(s) for s in report["anchor_sizes"]]
    lines = [f"{title}, {report['image_size']} px input:",
             f"  best possible recall {_number(report['best_possible_recall'])}, "
             f"mean best IoU {_number(report['mean_best_iou'])}"]
    for s, (sizes, rs) in enumerate(zip(report["anchor_sizes"], ratios)):
        shapes = ", ".join(f"{size:g}" + (f" (w/h {r:.2f})" if abs(r - 1) > 1e-6 else "") for size, r in zip(sizes, rs))
        lines.append(f"  S{s + 1}: {shapes}")
    for name, key in (("scale", "per_scale"), ("size", "per_size")):
        for row in report.get(key, []):
            label = f"S{row['scale'] + 1}" if "scale" in row else row.get("name", "?")
            lines.append(f"  {name} {label}: {row.get('count', 0)} boxes, best possible recall "
                         f"{_number(row.get('best_possible_recall'))}, mean best IoU {_number(row.get('mean_best_iou'))}")
    return "\n".join(lines)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
