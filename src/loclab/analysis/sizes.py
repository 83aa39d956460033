"""Object size buckets by ``sqrt(area)`` of the ground-truth box, and the object size distribution of a split.

Buckets (edges in pixels of ``sqrt((x2 - x1) * (y2 - y1))``)::

    small   sqrt(area) <  40
    medium  40 <= sqrt(area) < 96
    large   96 <= sqrt(area)

Why these edges: the shapes classes have sides circle 16–32, square 48–96, triangle 96–192 (a box of size ``s`` is
``2 * (s // 2)`` px wide, so the sides seen are even numbers in those ranges). 40 sits in the empty gap between the
largest circle (32) and the smallest square (48), so small = circles exactly. The square and triangle ranges meet
at 96: a 96 px square and a 96 or 97 px triangle have the same 96 px box and no size rule can separate them; they
fall into **large** (the ``<`` is strict), so "medium" holds squares of 48–94 px and "large" holds every triangle
plus the rare 96 px square (1 size value of the 49 a square can take). The edges are not COCO's (32², 96² in
area): 32 would split nothing useful here, as every circle is <= 32.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor

from loclab.data.formats_detection import DetectionSplit

SIZE_BUCKETS: tuple[str, str, str] = ("small", "medium", "large")
BUCKET_EDGES: tuple[float, float] = (40.0, 96.0)
"""``sqrt(area)`` edges between small|medium and medium|large; a value equal to an edge goes to the larger bucket."""
BUCKET_RULE = "small: sqrt(area) < 40 px <= medium < 96 px <= large (a 96 px square is large)"
"""The course rule, for the reference shapes at the 224 px input; other data gets :func:`bucket_rule` of the edges that
its detector's anchors give (:func:`loclab.engine.autoanchor.size_edges`)."""

ArrayT = TypeVar("ArrayT", Tensor, np.ndarray)


def box_sqrt_area(boxes: ArrayT) -> ArrayT:
    """``sqrt((x2 - x1) * (y2 - y1))`` of ``boxes [N, 4]`` xyxy (Tensor or ndarray); returns ``[N]`` float."""
    if isinstance(boxes, Tensor):
        boxes = boxes.float().reshape(-1, 4)
        return ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).clamp(min=0).sqrt()
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.sqrt(np.clip((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), 0, None))


def bucket_names(edges: Sequence[float] = BUCKET_EDGES) -> tuple[str, ...]:
    """The names of the ``len(edges) + 1`` buckets: :data:`SIZE_BUCKETS` for three, ``size 1``, ``size 2``, ... else."""
    count = len(edges) + 1
    return SIZE_BUCKETS if count == len(SIZE_BUCKETS) else tuple(f"size {b + 1}" for b in range(count))


def bucket_rule(edges: Sequence[float] = BUCKET_EDGES) -> str:
    """The stated rule of ``edges``: :data:`BUCKET_RULE` for the course edges, else e.g. ``"small: sqrt(area) <
    47 px <= medium < 104 px <= large (edges halfway between neighbouring scales' mean anchor sizes)"``."""
    edges = tuple(float(e) for e in edges)
    if edges == BUCKET_EDGES:
        return BUCKET_RULE
    names = bucket_names(edges)
    parts = [f"{names[0]}: sqrt(area) < {edges[0]:.0f} px"] if edges else [f"{names[0]}: every box"]
    parts += [f"<= {name} < {edge:.0f} px" for name, edge in zip(names[1:], edges[1:])]
    if edges:
        parts.append(f"<= {names[-1]}")
    return " ".join(parts) + " (edges halfway between neighbouring scales' mean anchor sizes, model-input pixels)"


def size_bucket(boxes: ArrayT, edges: Sequence[float] = BUCKET_EDGES) -> ArrayT:
    """Size bucket index of each box: 0 small, 1 medium, 2 large (names in :data:`SIZE_BUCKETS`).

    Args:
        boxes: ``[N, 4]`` xyxy boxes, a Tensor or an ndarray.
        edges: ascending ``sqrt(area)`` edges between neighbouring buckets (default: the course's 40 and 96 px).

    Returns:
        ``[N]`` int64 of the same kind (LongTensor or ndarray).
    """
    side = box_sqrt_area(boxes)
    if isinstance(side, Tensor):
        edges = torch.tensor(tuple(edges), dtype=side.dtype, device=side.device)
        return torch.bucketize(side, edges, right=True)  # right=True: a value on an edge goes up
    return np.searchsorted(np.asarray(tuple(edges), dtype=np.float64), side, side="right").astype(np.int64)


def _summary(values: np.ndarray) -> dict[str, float | None]:
    if values.size == 0:
        return {"min": None, "median": None, "max": None}
    return {"min": float(values.min()), "median": float(np.median(values)), "max": float(values.max())}


def size_distribution(boxes: np.ndarray, labels: np.ndarray, class_names: dict[int, str],
                      edges: Sequence[float] = BUCKET_EDGES) -> dict[str, Any]:
    """Object sizes per class and bucket from flat arrays.

    Args:
        boxes: ``[G, 4]`` xyxy ground-truth boxes of the whole split.
        labels: ``[G]`` class ids (keys of ``class_names``).
        class_names: ``{class id: name}``.
        edges: the size-bucket edges (:func:`size_bucket`).

    Returns:
        JSON-ready ``{"buckets": [...], "bucket_edges": [40, 96], "bucket_rule": str, "num_objects": G,
        "bucket_counts": {bucket: n}, "per_class": {name: {"count", "sqrt_area": [...] (rounded to 0.01),
        "bucket_counts": {bucket: n}, "min", "median", "max"}}}``; min/median/max are null for an empty class.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    side = box_sqrt_area(boxes)
    bucket = size_bucket(boxes, edges)
    names = bucket_names(edges)
    per_class: dict[str, Any] = {}
    for class_id, name in sorted(class_names.items()):
        mask = labels == class_id
        counts = np.bincount(bucket[mask], minlength=len(names))
        per_class[name] = {
            "count": int(mask.sum()),
            "sqrt_area": np.round(side[mask], 2).tolist(),
            "bucket_counts": dict(zip(names, counts.tolist())),
            **_summary(side[mask]),
        }
    return {
        "buckets": list(names),
        "bucket_edges": [float(e) for e in edges],
        "bucket_rule": bucket_rule(edges),
        "num_objects": len(labels),
        "bucket_counts": dict(zip(names, np.bincount(bucket, minlength=len(names)).tolist())),
        "per_class": per_class,
    }


def object_size_distribution(split: DetectionSplit, edges: Sequence[float] = BUCKET_EDGES) -> dict[str, Any]:
    """:func:`size_distribution` of every ground-truth box of ``split`` (classes from ``split.categories``)."""
    boxes = torch.cat(split.boxes).numpy() if split.boxes else np.zeros((0, 4))
    labels = torch.cat(split.labels).numpy() if split.labels else np.zeros(0, dtype=np.int64)
    return size_distribution(boxes, labels, split.categories, edges)
