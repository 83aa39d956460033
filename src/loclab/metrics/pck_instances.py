"""PCK for instances with unlabelled keypoints and any number of symmetric pairs.

The rows are instances (``M`` of them, any number per image) instead of single-figure images; everything else is
:mod:`loclab.metrics.pck`: ``(x, y)`` image pixels, float64 math, correct when ``distance / norm <= t``.

- ``visible`` ``[M, K]`` bool marks labelled keypoints. An unlabelled keypoint is in neither the numerator nor the
  denominator of any accuracy, and is not part of the ``bbox`` norm.
- Norms (:func:`instance_norms`): ``"bbox"`` the diagonal of the box around the instance's *visible* ground-truth
  keypoints; ``"torso"`` as in :mod:`loclab.metrics.pck`; a pair of keypoint indices ``(a, b)``: their distance
  (the generalisation of ``torso`` to any skeleton). An instance whose norm is undefined (no visible keypoint, or
  a norm keypoint unlabelled) is not scored at all.
- Swap-aware PCK (:func:`compute_pck_pair_aware`) forgives exchanging the two keypoints of each symmetric pair:
  per instance and pair the order with more correct keypoints counts, independently for each pair.
- A prediction may be NaN (an instance no prediction was matched to): it is scored as wrong.

Whenever every keypoint is visible, the norm is ``bbox`` or ``torso`` and there is at most one pair, each
function returns exactly what its :mod:`loclab.metrics.pck` counterpart returns (it calls it), so the reference
stick figures keep their numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from loclab.metrics.pck import (
    DEFAULT_THRESHOLDS,
    NORM_EPS,
    ArrayLike,
    _as_keypoints,
    _as_pair,
    _correct,
    best_hand_assignment,
    compute_pck,
    compute_pck_per_keypoint,
    compute_pck_swap_aware,
    keypoint_norms,
)
from loclab.ops.keypoint_pairs import Pairs, check_pairs, partner_order

Norm = str | tuple[int, int]  # "bbox", "torso", or a pair of keypoint indices


def _visible(visible: ArrayLike | None, shape: tuple[int, int]) -> Tensor | None:
    """bool ``[M, K]``, or ``None`` when every keypoint is visible (the reference path)."""
    if visible is None:
        return None
    mask = torch.as_tensor(visible).detach().cpu().bool()
    if tuple(mask.shape) != shape:
        raise ValueError(f"visible must have shape {list(shape)}, got {list(mask.shape)}")
    return None if bool(mask.all()) else mask


def _plain(visible: Tensor | None, normalize_by: Norm) -> bool:
    return visible is None and normalize_by in ("bbox", "torso")


def instance_norms(ground_truths: ArrayLike, visible: ArrayLike | None = None, normalize_by: Norm = "bbox") -> Tensor:
    """Per-instance PCK normaliser, float64 ``[M]``, NaN where it is undefined (module docstring).

    Clamped below at ``NORM_EPS`` like :func:`loclab.metrics.pck.keypoint_norms`, which this returns exactly
    when every keypoint is visible and the norm is ``bbox`` or ``torso``.
    """
    gt = _as_keypoints(ground_truths, "ground_truths")
    mask = _visible(visible, tuple(gt.shape[:2]))
    if _plain(mask, normalize_by):
        return keypoint_norms(gt, normalize_by)
    shown = torch.ones(gt.shape[:2], dtype=torch.bool) if mask is None else mask
    nan = torch.full((gt.shape[0],), float("nan"), dtype=torch.float64)
    if normalize_by == "bbox":
        big = torch.finfo(torch.float64).max
        low = torch.where(shown[..., None], gt, big).amin(dim=1)
        high = torch.where(shown[..., None], gt, -big).amax(dim=1)
        norms = torch.where(shown.any(dim=1), torch.linalg.vector_norm(high - low, dim=-1), nan)
    elif normalize_by == "torso":
        if gt.shape[1] <= 4:
            raise ValueError(f"'torso' needs head (0) and feet (3, 4); got K = {gt.shape[1]}")
        norms = keypoint_norms(gt, "torso")
        norms = torch.where(shown[:, [0, 3, 4]].all(dim=1), norms, nan)
    elif isinstance(normalize_by, tuple) and len(normalize_by) == 2:
        a, b = (int(i) for i in normalize_by)
        if a == b or not (0 <= a < gt.shape[1] and 0 <= b < gt.shape[1]):
            raise ValueError(f"norm pair {normalize_by} must be two distinct keypoint indices below {gt.shape[1]}")
        norms = torch.linalg.vector_norm(gt[:, a] - gt[:, b], dim=-1)
        norms = torch.where(shown[:, a] & shown[:, b], norms, nan)
    else:
        raise ValueError(f"normalize_by must be 'bbox', 'torso' or a pair of keypoint indices, got {normalize_by!r}")
    return norms.clamp_min(NORM_EPS)  # NaN stays NaN


def scored_keypoints(ground_truths: ArrayLike, visible: ArrayLike | None = None, normalize_by: Norm = "bbox") -> Tensor:
    """bool ``[M, K]``: the keypoints PCK counts, visible ones of instances with a defined norm."""
    gt = _as_keypoints(ground_truths, "ground_truths")
    mask = _visible(visible, tuple(gt.shape[:2]))
    shown = torch.ones(gt.shape[:2], dtype=torch.bool) if mask is None else mask
    return shown & instance_norms(gt, mask, normalize_by).isfinite()[:, None]


def _ratios(pred: Tensor, gt: Tensor, norms: Tensor) -> Tensor:
    return torch.linalg.vector_norm(pred - gt, dim=-1) / norms[:, None]


def pck_hits(
    predictions: ArrayLike, ground_truths: ArrayLike, thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    normalize_by: Norm = "bbox", *, visible: ArrayLike | None = None,
) -> tuple[Tensor, Tensor]:
    """Per instance: its correct scored keypoints at each threshold, int64 ``[M, T]``, and its scored keypoints,
    int64 ``[M]``. :func:`compute_pck_visible` is ``hits.sum(0) / scored.sum()``; the bootstrap
    (:mod:`loclab.metrics.bootstrap`) resamples these counts."""
    pred, gt = _as_pair(predictions, ground_truths)
    mask = _visible(visible, tuple(gt.shape[:2]))
    scored = scored_keypoints(gt, mask, normalize_by)
    ratios = _ratios(pred, gt, instance_norms(gt, mask, normalize_by))
    hits = [(c & scored).sum(dim=1) for c in _correct(ratios, thresholds).values()]
    return torch.stack(hits, dim=1) if hits else torch.zeros(gt.shape[0], 0, dtype=torch.int64), scored.sum(dim=1)


def _fractions(hits: Tensor, scored: Tensor, thresholds: Sequence[float]) -> dict[float, float]:
    total = int(scored.sum())
    if total == 0:
        raise ValueError("PCK needs at least one labelled keypoint to score, found none")
    return {float(t): float(hits[:, i].sum()) / total for i, t in enumerate(thresholds)}


def compute_pck_visible(
    predictions: ArrayLike, ground_truths: ArrayLike, thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    normalize_by: Norm = "bbox", *, visible: ArrayLike | None = None,
) -> dict[float, float]:
    """PCK over every scored keypoint of every instance: ``{threshold: fraction correct}``.

    ``predictions``, ``ground_truths``: ``[M, K, 2]`` pixels; ``visible``: bool ``[M, K]`` or ``None`` (all).
    """
    pred, gt = _as_pair(predictions, ground_truths)
    mask = _visible(visible, tuple(gt.shape[:2]))
    if _plain(mask, normalize_by):
        return compute_pck(pred, gt, thresholds, normalize_by)
    return _fractions(*pck_hits(pred, gt, thresholds, normalize_by, visible=mask), thresholds)


def compute_pck_per_keypoint_visible(
    predictions: ArrayLike, ground_truths: ArrayLike, thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    normalize_by: Norm = "bbox", names: Sequence[str] = (), *, visible: ArrayLike | None = None,
) -> dict[str, dict[float, float | None]]:
    """PCK of each keypoint over the instances where it is scored: ``{name: {threshold: fraction or None}}``.

    ``None`` for a keypoint that is scored in no instance (never labelled).
    """
    pred, gt = _as_pair(predictions, ground_truths)
    if len(names) != gt.shape[1]:
        raise ValueError(f"got {len(names)} names for K = {gt.shape[1]} keypoints")
    mask = _visible(visible, tuple(gt.shape[:2]))
    if _plain(mask, normalize_by):
        return compute_pck_per_keypoint(pred, gt, thresholds, normalize_by, names)
    scored = scored_keypoints(gt, mask, normalize_by)
    ratios = _ratios(pred, gt, instance_norms(gt, mask, normalize_by))
    counts = scored.sum(dim=0)
    per_t = {t: (c & scored).sum(dim=0) for t, c in _correct(ratios, thresholds).items()}
    return {name: {t: (float(hits[k]) / int(counts[k]) if counts[k] else None) for t, hits in per_t.items()}
            for k, name in enumerate(names)}


def compute_pck_pair_aware(
    predictions: ArrayLike, ground_truths: ArrayLike, pairs: Pairs, thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    normalize_by: Norm = "bbox", *, visible: ArrayLike | None = None,
) -> dict[float, float]:
    """PCK in which, per instance, threshold and symmetric pair, the pair's two keypoints count in whichever order
    scores more; unpaired keypoints as in :func:`compute_pck_visible`. Always ``>=`` it.

    Crossed, prediction ``a`` is scored against ground truth ``b`` (counted where ``b`` is scored) and vice versa,
    so both orders have the same denominator. One pair, all visible, ``bbox``/``torso``: exactly
    :func:`loclab.metrics.pck.compute_pck_swap_aware`.
    """
    pred, gt = _as_pair(predictions, ground_truths)
    checked = check_pairs(pairs, gt.shape[1])
    mask = _visible(visible, tuple(gt.shape[:2]))
    if not checked:
        return compute_pck_visible(pred, gt, thresholds, normalize_by, visible=mask)
    if len(checked) == 1 and _plain(mask, normalize_by):
        return compute_pck_swap_aware(pred, gt, thresholds, normalize_by, checked[0])
    return _fractions(*pck_hits_pair_aware(pred, gt, checked, thresholds, normalize_by, visible=mask), thresholds)


def pck_hits_pair_aware(
    predictions: ArrayLike, ground_truths: ArrayLike, pairs: Pairs, thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    normalize_by: Norm = "bbox", *, visible: ArrayLike | None = None,
) -> tuple[Tensor, Tensor]:
    """:func:`pck_hits` for :func:`compute_pck_pair_aware`: per instance, correct keypoints with each pair counted
    in its better order, int64 ``[M, T]``, and scored keypoints, int64 ``[M]`` (the same as :func:`pck_hits`')."""
    pred, gt = _as_pair(predictions, ground_truths)
    checked = check_pairs(pairs, gt.shape[1])
    mask = _visible(visible, tuple(gt.shape[:2]))
    scored = scored_keypoints(gt, mask, normalize_by)
    norms = instance_norms(gt, mask, normalize_by)
    order = partner_order(gt.shape[1], checked)
    given_ok = _correct(_ratios(pred, gt, norms), thresholds)
    crossed_ok = _correct(_ratios(pred, gt[:, order], norms), thresholds)  # prediction k vs ground truth order[k]
    paired = {i for pair in checked for i in pair}
    unpaired = [k for k in range(gt.shape[1]) if k not in paired]
    columns = []
    for t in given_ok:
        hits = (given_ok[t][:, unpaired] & scored[:, unpaired]).sum(dim=1)
        for a, b in checked:
            as_given = (given_ok[t][:, a] & scored[:, a]).long() + (given_ok[t][:, b] & scored[:, b]).long()
            crossed = (crossed_ok[t][:, a] & scored[:, b]).long() + (crossed_ok[t][:, b] & scored[:, a]).long()
            hits = hits + torch.maximum(as_given, crossed)
        columns.append(hits)
    hits = torch.stack(columns, dim=1) if columns else torch.zeros(gt.shape[0], 0, dtype=torch.int64)
    return hits, scored.sum(dim=1)


def best_pair_assignment(
    predictions: ArrayLike, ground_truths: ArrayLike, pairs: Pairs, *, visible: ArrayLike | None = None,
) -> tuple[Tensor, Tensor]:
    """Per instance and pair, reorder the predicted pair to the order closer to the ground truth.

    Returns ``(reordered predictions [M, K, 2] float64, swapped [M, P] bool)``. A pair is swapped when its summed
    distance over labelled ground truths is strictly smaller crossed than as given (ties, NaN predictions and
    fully unlabelled pairs keep the given order). One pair, all visible: exactly
    :func:`loclab.metrics.pck.best_hand_assignment`.
    """
    pred, gt = _as_pair(predictions, ground_truths)
    checked = check_pairs(pairs, gt.shape[1])
    mask = _visible(visible, tuple(gt.shape[:2]))
    if len(checked) == 1 and mask is None:
        reordered, swapped = best_hand_assignment(pred, gt, checked[0])
        return reordered, swapped[:, None]
    shown = torch.ones(gt.shape[:2], dtype=torch.bool) if mask is None else mask
    distances = torch.linalg.vector_norm(pred - gt, dim=-1)
    reordered = pred.clone()
    swaps = []
    for a, b in checked:
        zero = torch.zeros((), dtype=torch.float64)
        as_given = torch.where(shown[:, a], distances[:, a], zero) + torch.where(shown[:, b], distances[:, b], zero)
        crossed_a = torch.linalg.vector_norm(pred[:, b] - gt[:, a], dim=-1)  # the prediction for b, on a
        crossed_b = torch.linalg.vector_norm(pred[:, a] - gt[:, b], dim=-1)
        crossed = torch.where(shown[:, a], crossed_a, zero) + torch.where(shown[:, b], crossed_b, zero)
        swapped = crossed < as_given
        reordered[:, a] = torch.where(swapped[:, None], pred[:, b], pred[:, a])
        reordered[:, b] = torch.where(swapped[:, None], pred[:, a], pred[:, b])
        swaps.append(swapped)
    swapped_all = torch.stack(swaps, dim=1) if swaps else torch.zeros(gt.shape[0], 0, dtype=torch.bool)
    return reordered, swapped_all


def error_sums(predictions: ArrayLike, ground_truths: ArrayLike, *,
               visible: ArrayLike | None = None) -> tuple[Tensor, Tensor]:
    """Per instance: the summed pixel distance of its labelled keypoints with a (finite) prediction, float64
    ``[M]``, and their number, int64 ``[M]``; :func:`mean_error_px` is their ratio over all instances."""
    pred, gt = _as_pair(predictions, ground_truths)
    distances = torch.linalg.vector_norm(pred - gt, dim=-1)
    mask = _visible(visible, tuple(gt.shape[:2]))
    keep = distances.isfinite() if mask is None else distances.isfinite() & mask
    return torch.where(keep, distances, torch.zeros((), dtype=torch.float64)).sum(dim=1), keep.sum(dim=1)


def mean_error_px(predictions: ArrayLike, ground_truths: ArrayLike, *, visible: ArrayLike | None = None) -> float | None:
    """Mean Euclidean distance in pixels over the labelled keypoints with a (finite) prediction; ``None`` if none.

    All visible and all predicted: exactly the plain mean over every keypoint.
    """
    pred, gt = _as_pair(predictions, ground_truths)
    distances = torch.linalg.vector_norm(pred - gt, dim=-1)
    mask = _visible(visible, tuple(gt.shape[:2]))
    finite = distances.isfinite()
    if mask is None and bool(finite.all()):
        return distances.mean().item()
    keep = finite if mask is None else finite & mask
    return distances[keep].mean().item() if bool(keep.any()) else None
