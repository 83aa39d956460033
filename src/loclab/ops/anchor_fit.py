"""How well anchors fit a dataset's box shapes, and fitting anchors to them (in the spirit of YOLOv5's autoanchor).

loclab's matcher (:mod:`loclab.ops.matching`) makes an anchor positive for a box when their IoU is at least
``pos_threshold``, so the measure here is IoU, not YOLOv5's width/height ratio. Only shapes matter: a box and an
anchor are compared as if they shared one centre (:func:`shape_iou`). On the real grid a box centre lies up to
half a stride from the nearest anchor centre, so these numbers are upper bounds: *best possible* recall.

Anchors of scale ``s`` are given as side lengths ``anchor_sizes[s][a]`` (pixels of the square model input) and
optional aspect ratios ``anchor_ratios[s][a] = w / h`` (``None``: square), so an anchor is ``L * sqrt(r)`` wide
and ``L / sqrt(r)`` high (as :func:`loclab.ops.anchors.generate_anchors` builds them). Box sizes must be in the
same model-input pixels, i.e. measured after letterboxing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["anchor_quality", "anchor_shapes", "fit_anchors", "shape_iou"]


def anchor_shapes(
    anchor_sizes: Sequence[Sequence[float]],
    anchor_ratios: Sequence[Sequence[float]] | None = None,
) -> list[Tensor]:
    """Anchor widths and heights per scale.

    Args:
        anchor_sizes: side ``L`` of each anchor, one sequence per scale.
        anchor_ratios: ``r = w / h`` of each anchor, nested like ``anchor_sizes``; ``None`` for square anchors.

    Returns:
        list[Tensor[A_s, 2]] float64: ``(L * sqrt(r), L / sqrt(r))`` for every anchor of scale ``s``.
    """
    if anchor_ratios is not None and (
        len(anchor_ratios) != len(anchor_sizes) or any(len(r) != len(s) for r, s in zip(anchor_ratios, anchor_sizes))
    ):
        raise ValueError(f"anchor_ratios {anchor_ratios} must be nested like anchor_sizes {anchor_sizes}")
    shapes = []
    for s, sizes in enumerate(anchor_sizes):
        side = torch.as_tensor(sizes, dtype=torch.float64)
        if side.ndim != 1 or len(side) == 0 or not bool((side > 0).all()):
            raise ValueError(f"anchor sizes of scale {s} must be a non-empty list of positive numbers, got {sizes}")
        if anchor_ratios is None:
            root = torch.ones_like(side)
        else:
            root = torch.as_tensor(anchor_ratios[s], dtype=torch.float64)
        if not bool((root > 0).all()):
            raise ValueError(f"anchor ratios must be positive, got {anchor_ratios[s]}")
        root = root.sqrt()
        shapes.append(torch.stack((side * root, side / root), dim=1))
    return shapes


def shape_iou(wh_a: Tensor, wh_b: Tensor) -> Tensor:
    """IoU of boxes of the given sizes placed on one common centre.

    Args:
        wh_a (Tensor[N, 2]): widths and heights, non-negative.
        wh_b (Tensor[M, 2]): widths and heights, non-negative.

    Returns:
        Tensor[N, M]: ``min(w) * min(h) / (area_a + area_b - min(w) * min(h))``, in ``[0, 1]``; 0 where both boxes
        are empty. Floating inputs keep their (promoted) dtype; integer inputs give float32.
    """
    inter = torch.minimum(wh_a[:, None, 0], wh_b[None, :, 0]) * torch.minimum(wh_a[:, None, 1], wh_b[None, :, 1])
    union = (wh_a[:, 0] * wh_a[:, 1])[:, None] + (wh_b[:, 0] * wh_b[:, 1])[None, :] - inter
    if not union.is_floating_point():
        inter, union = inter.float(), union.float()
    return inter / torch.where(union > 0, union, torch.ones_like(union))


def _summary(best: Tensor, threshold: float) -> dict[str, Any]:
    count = int(best.numel())
    if count == 0:  # undefined rather than a misleading 0 or 1; None is JSON null
        return {"count": 0, "best_possible_recall": None, "mean_best_iou": None}
    return {
        "count": count,
        "best_possible_recall": float((best >= threshold).double().mean()),
        "mean_best_iou": float(best.double().mean()),
    }


def anchor_quality(
    box_wh: Tensor,
    anchor_sizes: Sequence[Sequence[float]],
    anchor_ratios: Sequence[Sequence[float]] | None = None,
    threshold: float = 0.5,
    *,
    size_edges: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Best possible recall and mean best IoU of a set of anchors over a dataset's box shapes.

    Each box's *best anchor* is the anchor of any scale with the highest :func:`shape_iou` (the lowest anchor index
    in scale-major order on ties, as the matcher breaks them); the box is *reachable* when that IoU is at least
    ``threshold``.

    Args:
        box_wh (Tensor[N, 2]): box widths and heights in model-input pixels. ``N`` may be 0.
        anchor_sizes, anchor_ratios: the anchors, as for :func:`anchor_shapes`.
        threshold: the matcher's ``pos_threshold``.
        size_edges: increasing bucket edges on the box size ``sqrt(w * h)``; ``k`` edges make ``k + 1`` buckets
            ``[0, e0), [e0, e1), ..., [e_last, inf)``.

    Returns:
        dict of plain Python values, JSON-ready (rates in ``[0, 1]``; ``None`` where no box is counted):

        - ``num_boxes``, ``threshold``;
        - ``best_possible_recall``: fraction of reachable boxes; ``mean_best_iou``: mean best IoU;
        - ``anchors_above_threshold``: mean number of anchors per box with IoU ``>= threshold``;
        - ``per_scale``: one row per scale ``{"scale", "count", "best_possible_recall", "mean_best_iou"}`` over the
          boxes whose best anchor is on that scale (counts sum to ``N``);
        - ``per_size``: one row per bucket ``{"name", "low", "high", "count", "best_possible_recall",
          "mean_best_iou"}`` (``high`` is ``None`` for the last bucket); empty without ``size_edges``.
    """
    if box_wh.ndim != 2 or box_wh.shape[1] != 2:
        raise ValueError(f"box_wh must be [N, 2], got {tuple(box_wh.shape)}")
    shapes = anchor_shapes(anchor_sizes, anchor_ratios)
    anchors = torch.cat(shapes)
    scale_of = torch.repeat_interleave(torch.arange(len(shapes)), torch.tensor([len(s) for s in shapes]))
    wh = box_wh.detach().to("cpu", torch.float64)
    iou = shape_iou(wh, anchors)  # [N, A]
    if len(wh):
        best, index = iou.max(dim=1)  # first maximum on ties
    else:
        best, index = torch.zeros(0, dtype=torch.float64), torch.zeros(0, dtype=torch.long)
    best_scale = scale_of[index]
    report: dict[str, Any] = {"num_boxes": len(wh), "threshold": float(threshold)}
    overall = _summary(best, threshold)
    report["best_possible_recall"] = overall["best_possible_recall"]
    report["mean_best_iou"] = overall["mean_best_iou"]
    report["anchors_above_threshold"] = float((iou >= threshold).sum(1).double().mean()) if len(wh) else None
    report["per_scale"] = [{"scale": s, **_summary(best[best_scale == s], threshold)} for s in range(len(shapes))]
    report["per_size"] = []
    if size_edges is not None:
        edges = [float(e) for e in size_edges]
        if any(b <= a for a, b in zip(edges[:-1], edges[1:])):
            raise ValueError(f"size_edges must be increasing, got {size_edges}")
        size = (wh[:, 0] * wh[:, 1]).clamp(min=0).sqrt()
        bounds = [0.0, *edges, math.inf]
        for low, high in zip(bounds[:-1], bounds[1:]):
            mask = (size >= low) & (size < high)
            name = f"[{low:g}, {high:g})" if high < math.inf else f">= {low:g}"
            report["per_size"].append({"name": name, "low": low, "high": high if high < math.inf else None,
                                       **_summary(best[mask], threshold)})
    return report


def _fitness(wh: Tensor, centres: Tensor) -> float:
    return float(shape_iou(wh, centres).max(dim=1).values.mean())


def _init_centres(wh: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """k-means++ seeding with distance ``1 - IoU``; jittered copies once every box coincides with a centre."""
    n = len(wh)
    chosen = [wh[int(torch.randint(n, (1,), generator=generator))]]
    real = 1  # the first ``real`` centres are boxes; jittered copies are only ever made of those
    for _ in range(1, k):
        distance = 1 - shape_iou(wh, torch.stack(chosen)).max(dim=1).values
        weight = distance.clamp(min=0) ** 2
        if float(weight.sum()) > 0:
            pick = int(torch.multinomial(weight, 1, generator=generator))
            chosen.append(wh[pick])
            real += 1
        else:
            # Fewer distinct shapes than clusters: a copy of a random box centre scaled by exp(+-0.1) (about
            # +-10%) on each axis, so that the k anchors stay distinct and close to the data.
            base = chosen[int(torch.randint(real, (1,), generator=generator))]
            jitter = torch.exp((torch.rand(2, generator=generator, dtype=torch.float64) - 0.5) * 0.2)
            chosen.append(base * jitter)
    return torch.stack(chosen)


def _kmeans(wh: Tensor, k: int, generator: torch.Generator, iterations: int) -> Tensor:
    """Lloyd iterations on ``1 - IoU``: assign each box to its highest-IoU centre, move centres to the median."""
    centres = _init_centres(wh, k, generator)
    assign = None
    for _ in range(iterations):
        new = shape_iou(wh, centres).argmax(dim=1)
        if assign is not None and torch.equal(new, assign):
            break
        assign = new
        for c in range(k):
            members = wh[assign == c]
            if len(members):  # an empty cluster keeps its centre
                # The median keeps a few huge or sliver-thin boxes from dragging a whole cluster.
                centres[c] = members.median(dim=0).values
    return centres


def fit_anchors(
    box_wh: Tensor,
    num_scales: int = 3,
    per_scale: int = 3,
    *,
    seed: int = 0,
    iterations: int = 300,
    restarts: int = 4,
    max_boxes: int = 50_000,
) -> tuple[tuple[tuple[float, ...], ...], tuple[tuple[float, ...], ...]]:
    """Anchors fitted to a dataset's box shapes, ordered by size onto the scales.

    1. k-means with ``k = num_scales * per_scale`` on the box ``(w, h)`` with distance ``1 - shape_iou``,
       k-means++ seeding and median centres, at most ``iterations`` Lloyd steps, ``restarts`` times; the run with
       the highest mean best IoU is kept. With fewer distinct box shapes than ``k``, the missing centres are
       copies of chosen ones jittered by up to 10% per axis, so ``k`` distinct anchors always come back.
    2. Centres sorted by area: the smallest ``per_scale`` go to scale 0, the next to scale 1, and so on.

    Median centres beat mean (and geometric-mean) centres on mean best IoU and best possible recall on skewed
    size distributions. A YOLOv5-style random-perturbation refinement afterwards was tried and dropped: it moved
    the mean best IoU by less than 0.001.

    Deterministic for a given ``seed`` (a private ``torch.Generator``; the global RNG is untouched). The cost is
    ``O(N * k * restarts * iterations)`` at worst; Lloyd steps stop as soon as no box changes cluster, and
    datasets of more than ``max_boxes`` boxes are fitted on a seeded random subset of that many.

    Args:
        box_wh (Tensor[N, 2]): box widths and heights in model-input pixels; boxes with a non-positive or
            non-finite side are ignored. At least one box must remain.
        num_scales, per_scale: the anchor layout, ``num_scales`` lists of ``per_scale`` anchors.
        seed: seeds the k-means++ initialisations.
        iterations, restarts: at most ``iterations`` Lloyd steps for each of ``restarts`` initialisations.
        max_boxes: largest number of boxes used for the fit.

    Returns:
        ``(anchor_sizes, anchor_ratios)``: ``num_scales`` tuples of ``per_scale`` floats each, sizes
        ``sqrt(w * h)`` rounded to 0.1 px and ratios ``w / h`` rounded to 0.001, increasing size within a scale.
        Ready for ``generate_anchors(..., anchor_sizes, aspect_ratios=anchor_ratios)``.
    """
    if num_scales < 1 or per_scale < 1 or restarts < 1 or max_boxes < 1 or iterations < 0:
        raise ValueError("num_scales, per_scale, restarts and max_boxes must be positive and iterations >= 0")
    if box_wh.ndim != 2 or box_wh.shape[1] != 2:
        raise ValueError(f"box_wh must be [N, 2], got {tuple(box_wh.shape)}")
    wh = box_wh.detach().to("cpu", torch.float64)
    wh = wh[torch.isfinite(wh).all(dim=1) & (wh > 0).all(dim=1)]
    if len(wh) == 0:
        raise ValueError("no box with a positive width and height to fit anchors to")
    k = num_scales * per_scale
    generator = torch.Generator().manual_seed(seed)
    if len(wh) > max_boxes:
        wh = wh[torch.randperm(len(wh), generator=generator)[:max_boxes]]
    runs = [_kmeans(wh, k, generator, iterations) for _ in range(restarts)]
    centres = max(runs, key=lambda c: _fitness(wh, c))  # first run on ties
    area = centres[:, 0] * centres[:, 1]
    centres = centres[torch.sort(area, stable=True).indices]
    sizes = [max(round(math.sqrt(w * h), 1), 0.1) for w, h in centres.tolist()]
    ratios = [max(round(w / h, 3), 0.001) for w, h in centres.tolist()]
    return (
        tuple(tuple(sizes[s * per_scale : (s + 1) * per_scale]) for s in range(num_scales)),
        tuple(tuple(ratios[s * per_scale : (s + 1) * per_scale]) for s in range(num_scales)),
    )
