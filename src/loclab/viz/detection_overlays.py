"""Pictures drawn on images: detections vs ground truth, anchors at their true size, mean feature maps.

Images come as ``uint8`` ``[3, H, W]`` tensors or arrays (as datasets decode them) or ``[H, W, 3]`` arrays; boxes
as ``[K, 4]`` xyxy pixel arrays, drawn as rectangles from ``(x1, y1)`` to ``(x2, y2)`` in the same continuous
pixel coordinates (so a box exactly covers the pixels its object was painted in).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from loclab.viz.style import GROUND_TRUTH_COLOUR, PREDICTION_COLOUR, SCALE_COLOURS, plt

ImageBoxes = tuple[np.ndarray, np.ndarray]  # (boxes [K, 4] xyxy px, labels [K] int)
ScoredBoxes = tuple[np.ndarray, np.ndarray, np.ndarray]  # (boxes [K, 4], labels [K], scores [K])


def _hwc(image) -> np.ndarray:
    """``[3, H, W]`` or ``[H, W, 3]`` (tensor or array) to an ``[H, W, 3]`` array for ``imshow``."""
    array = np.asarray(image)
    return array.transpose(1, 2, 0) if array.ndim == 3 and array.shape[0] in (1, 3) else array


def _show(ax, image) -> None:
    # extent puts pixel column x between x and x + 1, matching continuous box coordinates.
    array = _hwc(image)
    ax.imshow(array, extent=(0, array.shape[1], array.shape[0], 0), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def _box(ax, box: Sequence[float], colour: str, **kwargs) -> None:
    x1, y1, x2, y2 = (float(v) for v in box)
    ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=colour, **kwargs))


def detections_figure(
    images: Sequence,
    ground_truth: Sequence[ImageBoxes],
    predictions: Sequence[ScoredBoxes],
    class_names: Sequence[str],
    score_threshold: float,
    titles: Sequence[str],
    columns: int = 5,
) -> Figure:
    """A grid of images: ground truth in green, predictions with ``score >= score_threshold`` in red with
    ``class score`` labels.

    Args:
        images: ``N`` images (see module docstring). ``ground_truth[i]``: ``(boxes [K, 4], labels [K])``;
        predictions[i]: ``(boxes [K, 4], labels [K], scores [K])``, all scores (filtered here).
        class_names: name per label; titles: one per image.
    """
    rows = max(1, math.ceil(len(images) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(3.1 * columns, 3.3 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image, (gt_boxes, _), (boxes, labels, scores), title in zip(
        axes.ravel(), images, ground_truth, predictions, titles
    ):
        ax.axis("on")
        _show(ax, image)
        for box in gt_boxes:
            _box(ax, box, GROUND_TRUTH_COLOUR, lw=2.0)
        shown = np.flatnonzero(np.asarray(scores) >= score_threshold)
        for k in shown:
            _box(ax, boxes[k], PREDICTION_COLOUR, lw=1.2)
            ax.text(boxes[k][0], boxes[k][1], f"{class_names[int(labels[k])]} {scores[k]:.2f}", color="white",
                    fontsize=6, va="bottom", bbox={"facecolor": PREDICTION_COLOUR, "alpha": 0.7, "pad": 1, "lw": 0})
        ax.set_title(f"{title}: {len(shown)} det, {len(gt_boxes)} gt", fontsize=8)
    fig.suptitle(f"Validation detections: predictions (red, score >= {score_threshold:g}) and ground truth (green)",
                 fontsize=10)
    fig.tight_layout()
    return fig


def anchors_on_image_figure(
    image, gt_boxes: np.ndarray, anchors_per_scale: Sequence[np.ndarray], titles: Sequence[str]
) -> Figure:
    """One panel per scale: the image, its ground truth (green) and that scale's anchors (at their true size,
    never clipped) drawn at the cells holding each ground-truth centre.

    Args:
        image: one image; gt_boxes: ``[K, 4]`` xyxy.
        anchors_per_scale: per scale, ``[M, 4]`` xyxy anchors to draw (chosen by the caller).
        titles: one per scale.
    """
    fig, axes = plt.subplots(1, len(anchors_per_scale), figsize=(4.2 * len(anchors_per_scale), 4.4), squeeze=False)
    height, width = _hwc(image).shape[:2]
    for s, (ax, anchors, title) in enumerate(zip(axes[0], anchors_per_scale, titles)):
        _show(ax, image)
        for box in gt_boxes:
            _box(ax, box, GROUND_TRUTH_COLOUR, lw=2.0)
        colour = SCALE_COLOURS[s % len(SCALE_COLOURS)]
        for box in anchors:
            _box(ax, box, colour, lw=1.2, ls="--")
        if len(anchors):
            centres = (np.asarray(anchors)[:, :2] + np.asarray(anchors)[:, 2:]) / 2
            ax.plot(centres[:, 0], centres[:, 1], "+", color=colour, ms=6)
        # Anchors are not clipped, so the view is widened to show them whole.
        lo = min(0.0, float(np.min(anchors[:, :2]))) if len(anchors) else 0.0
        hi_x = max(width, float(np.max(anchors[:, 2]))) if len(anchors) else width
        hi_y = max(height, float(np.max(anchors[:, 3]))) if len(anchors) else height
        ax.set_xlim(lo - 2, hi_x + 2)
        ax.set_ylim(hi_y + 2, lo - 2)
        ax.set_title(title, fontsize=9)
    fig.suptitle("Anchors (dashed) at the cells holding each object's centre; ground truth in green", fontsize=10)
    fig.tight_layout()
    return fig


def feature_maps_figure(image, maps: Sequence[np.ndarray], titles: Sequence[str]) -> Figure:
    """The image and the mean activation map of each scale's features, each with its own colour scale.

    Args:
        image: one image; maps: per scale an ``[h, w]`` array (mean over channels); titles: one per map.
    """
    fig, axes = plt.subplots(1, 1 + len(maps), figsize=(3.4 * (1 + len(maps)), 3.6), squeeze=False)
    _show(axes[0][0], image)
    axes[0][0].set_title("input", fontsize=9)
    height, width = _hwc(image).shape[:2]
    for ax, fmap, title in zip(axes[0][1:], maps, titles):
        # Drawn over the image's extent so that positions line up with the input.
        shown = ax.imshow(fmap, cmap="viridis", extent=(0, width, height, 0), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title, fontsize=9)
        plt.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
    fig.suptitle("Learned features: mean activation over channels per scale", fontsize=10)
    fig.tight_layout()
    return fig
