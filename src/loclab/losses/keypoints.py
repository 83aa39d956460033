"""Keypoint losses: plain heatmap/coordinate losses and hand-order-invariant variants.

Shapes: heatmaps ``[B, K, H, W]``; coordinates ``[B, 2K]`` flattened ``[x0, y0, x1, y1, ...]`` (normalised,
docs/architecture.md). Every loss returns a scalar mean and is vectorised over the batch.

Why hand-invariant losses: the two hands are drawn identically and their angles share one distribution
(docs/data-formats.md, 'Stick figures'), so which one is "left" cannot be read from the pixels. A plain loss then
pulls both predicted hands towards the average of the two possible positions. The invariant losses score each sample against whichever
hand order fits the prediction better, so the model is not punished for an unknowable label.
:func:`canonical_hand_order` is the alternative: relabel the targets so the label becomes learnable.
The ``pair_invariant_*`` losses generalise this to any set of symmetric pairs (a dataset's left/right parts).

Visibility: every loss takes an optional ``visible`` mask ``[B, K]`` (bool or 0/1; 0 = not labelled, or pushed out
of the crop by augmentation). Masked keypoints contribute nothing, and the loss is the mean over the visible
keypoints of each keypoint's mean loss (for ``[B, K, H, W]`` MSE: ``sum_visible mean_HW (p - t)^2 / #visible``).
When ``visible`` is ``None`` or all true, the original unmasked computation runs unchanged, so every
fully labelled dataset (the stick figures) trains bit for bit as before.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from loclab.ops.keypoint_pairs import Pairs, check_pairs, partner_order

HAND_INDICES: tuple[int, int] = (1, 2)


def _check_same_shape(pred: Tensor, target: Tensor) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")


def _swap_order(num_keypoints: int, hand_indices: tuple[int, int]) -> list[int]:
    """Keypoint index order with the two hands exchanged."""
    a, b = hand_indices
    if a == b or not (0 <= a < num_keypoints and 0 <= b < num_keypoints):
        raise ValueError(f"hand_indices {hand_indices} must be two distinct indices in [0, {num_keypoints})")
    order = list(range(num_keypoints))
    order[a], order[b] = b, a
    return order


def _all_visible(visible: Tensor | None) -> bool:
    return visible is None or bool(visible.all())


def _masked_mean(per_keypoint: Tensor, visible: Tensor) -> Tensor:
    """Mean of ``per_keypoint [B, K]`` over the visible entries (0 when none is visible); scalar."""
    weights = (visible != 0).to(per_keypoint.dtype)
    return (per_keypoint * weights).sum() / weights.sum().clamp_min(1)


def _squared(p: Tensor, t: Tensor) -> Tensor:
    return (p - t) ** 2


def _absolute(p: Tensor, t: Tensor) -> Tensor:
    return (p - t).abs()


def _per_keypoint(elementwise: Callable[[Tensor, Tensor], Tensor]) -> Callable[[Tensor, Tensor], Tensor]:
    """``[B, K, ...]`` pred/target -> ``[B, K]`` mean of ``elementwise`` over each keypoint's elements."""
    return lambda p, t: elementwise(p, t).flatten(2).mean(dim=2)


def heatmap_mse_loss(pred: Tensor, target: Tensor, visible: Tensor | None = None) -> Tensor:
    """Mean squared error over all elements of ``[B, K, H, W]`` heatmaps (pred = raw logits); scalar.
    ``visible [B, K]`` leaves masked keypoints out (module docstring)."""
    _check_same_shape(pred, target)
    if _all_visible(visible):
        return F.mse_loss(pred, target)
    return _masked_mean(_per_keypoint(_squared)(pred, target), visible)


def coordinate_mse_loss(pred: Tensor, target: Tensor, visible: Tensor | None = None) -> Tensor:
    """Mean squared error over all elements of ``[B, 2K]`` normalised coordinates; scalar.
    ``visible [B, K]`` leaves masked keypoints (both coordinates) out."""
    _check_same_shape(pred, target)
    if _all_visible(visible):
        return F.mse_loss(pred, target)
    return _masked_mean(_per_keypoint(_squared)(_as_keypoint_pairs(pred), _as_keypoint_pairs(target)), visible)


def coordinate_l1_loss(pred: Tensor, target: Tensor, visible: Tensor | None = None) -> Tensor:
    """Mean absolute error over all elements of ``[B, 2K]`` normalised coordinates; scalar.
    ``visible [B, K]`` leaves masked keypoints out."""
    _check_same_shape(pred, target)
    if _all_visible(visible):
        return F.l1_loss(pred, target)
    return _masked_mean(_per_keypoint(_absolute)(_as_keypoint_pairs(pred), _as_keypoint_pairs(target)), visible)


def _min_over_hand_orders(
    pred: Tensor, target: Tensor, hand_indices: tuple[int, int], elementwise: Callable[[Tensor, Tensor], Tensor]
) -> Tensor:
    """Mean over samples of ``min(loss vs target, loss vs target with hands swapped)``.

    ``pred`` and ``target`` are ``[B, K, ...]``; ``elementwise`` returns an unreduced loss of the same shape.
    Each per-sample loss is the mean over that sample's elements, so the result equals the plain mean loss
    whenever the given order is the better one for every sample. Gradients flow through the chosen order only.
    """
    swapped = target[:, _swap_order(target.shape[1], hand_indices)]
    as_given = elementwise(pred, target).flatten(1).mean(dim=1)
    exchanged = elementwise(pred, swapped).flatten(1).mean(dim=1)
    return torch.minimum(as_given, exchanged).mean()


def _as_keypoint_pairs(coords: Tensor) -> Tensor:
    """``[B, 2K] -> [B, K, 2]`` view."""
    if coords.ndim != 2 or coords.shape[1] % 2:
        raise ValueError(f"coordinates must have shape [B, 2K], got {tuple(coords.shape)}")
    return coords.reshape(coords.shape[0], -1, 2)


def hand_invariant_heatmap_loss(pred: Tensor, target: Tensor, hand_indices: tuple[int, int] = HAND_INDICES) -> Tensor:
    """Heatmap MSE, per sample the smaller of the two hand orders of ``target``, averaged over the batch.

    ``pred`` and ``target`` are ``[B, K, H, W]``; returns a scalar. Invariant to exchanging the target hands.
    """
    _check_same_shape(pred, target)
    return _min_over_hand_orders(pred, target, hand_indices, lambda p, t: (p - t) ** 2)


def _spatial_ce(pred: Tensor, target: Tensor) -> Tensor:
    """``[B, K]`` cross-entropy between ``softmax`` over each map's H*W logits and the target map normalised to 1."""
    log_probs = F.log_softmax(pred.flatten(2).float(), dim=-1)
    t = target.flatten(2).float()
    t = t / t.sum(dim=-1, keepdim=True).clamp_min(1e-12)
    return -(t * log_probs).sum(dim=-1)


def spatial_cross_entropy_loss(pred: Tensor, target: Tensor, visible: Tensor | None = None) -> Tensor:
    """Heatmaps as spatial distributions: per keypoint, cross-entropy of ``softmax(pred)`` over ``H*W`` against
    the Gaussian target normalised to sum 1; mean over batch and (visible) keypoints; scalar.

    Why: with MSE the Gaussian covers a fraction of a percent of the map, so the all-zero map is a strong
    attractor and learning is slow; the spatial softmax gives every keypoint a full-strength gradient.
    Decode with argmax (same as the logits) or sub-pixel on ``softmax`` probabilities.
    """
    _check_same_shape(pred, target)
    if _all_visible(visible):
        return _spatial_ce(pred, target).mean()
    return _masked_mean(_spatial_ce(pred, target), visible)


def hand_invariant_spatial_cross_entropy(pred: Tensor, target: Tensor,
                                         hand_indices: tuple[int, int] = HAND_INDICES) -> Tensor:
    """:func:`spatial_cross_entropy_loss`, per sample the smaller of the two hand orders of ``target``; scalar."""
    _check_same_shape(pred, target)
    swapped = target[:, _swap_order(target.shape[1], hand_indices)]
    return torch.minimum(_spatial_ce(pred, target).mean(dim=1), _spatial_ce(pred, swapped).mean(dim=1)).mean()


def hand_invariant_coordinate_mse(pred: Tensor, target: Tensor, hand_indices: tuple[int, int] = HAND_INDICES) -> Tensor:
    """Coordinate MSE on ``[B, 2K]``, per sample the smaller of the two hand orders of ``target``; scalar."""
    _check_same_shape(pred, target)
    return _min_over_hand_orders(
        _as_keypoint_pairs(pred), _as_keypoint_pairs(target), hand_indices, lambda p, t: (p - t) ** 2
    )


def hand_invariant_coordinate_l1(pred: Tensor, target: Tensor, hand_indices: tuple[int, int] = HAND_INDICES) -> Tensor:
    """Coordinate L1 on ``[B, 2K]``, per sample the smaller of the two hand orders of ``target``; scalar."""
    _check_same_shape(pred, target)
    return _min_over_hand_orders(
        _as_keypoint_pairs(pred), _as_keypoint_pairs(target), hand_indices, lambda p, t: (p - t).abs()
    )


def canonical_hand_order(keypoints: Tensor, hand_indices: tuple[int, int] = HAND_INDICES) -> Tensor:
    """Relabel hands so that the first hand index holds the hand with the smaller ``x``; ``[..., K, 2]`` copy.

    Ties in ``x`` are broken by the smaller ``y``; if both coincide the order does not matter. This is a
    deterministic function of the hand *positions*, which the pixels do show, so a model can learn the new
    labels ("image-left hand" / "image-right hand") with plain losses. Apply it to targets (and to ground truth
    at evaluation) consistently; it changes what "left_hand" means.
    """
    if keypoints.ndim < 2 or keypoints.shape[-1] != 2:
        raise ValueError(f"keypoints must have shape [..., K, 2], got {tuple(keypoints.shape)}")
    a, b = hand_indices
    order = _swap_order(keypoints.shape[-2], hand_indices)
    first, second = keypoints[..., a, :], keypoints[..., b, :]
    out_of_order = (first[..., 0] > second[..., 0]) | (
        (first[..., 0] == second[..., 0]) & (first[..., 1] > second[..., 1])
    )
    return torch.where(out_of_order[..., None, None], keypoints[..., order, :], keypoints)


# ------------------------------------------------------------------------------------------ symmetric pairs


def _min_over_pair_orders(given: Tensor, exchanged: Tensor, pairs: list[tuple[int, int]],
                          visible: Tensor | None) -> Tensor:
    """Visible-weighted mean loss with, per sample and pair, the better of the two orders of that pair.

    ``given [B, K]``: each keypoint's loss against its own target; ``exchanged [B, K]``: against the target of its
    pair partner (itself when unpaired). A keypoint counts with the visibility of the target it is scored
    against, so the denominator (the visible count) is the same in both orders. The total is a sum over
    keypoints, so choosing each pair's order separately finds the best of all ``2^P`` combinations.
    """
    weights = torch.ones_like(given) if visible is None else (visible != 0).to(given.dtype)
    order = partner_order(given.shape[1], pairs)
    paired = {i for pair in pairs for i in pair}
    unpaired = [k for k in range(given.shape[1]) if k not in paired]
    total = (given[:, unpaired] * weights[:, unpaired]).sum()
    swapped_weights = weights[:, order]
    for a, b in pairs:
        as_given = given[:, a] * weights[:, a] + given[:, b] * weights[:, b]
        crossed = exchanged[:, a] * swapped_weights[:, a] + exchanged[:, b] * swapped_weights[:, b]
        total = total + torch.minimum(as_given, crossed).sum()
    return total / weights.sum().clamp_min(1)


def _pair_invariant(pred: Tensor, target: Tensor, pairs: Pairs, visible: Tensor | None,
                    per_keypoint: Callable[[Tensor, Tensor], Tensor], *, plain: Callable[..., Tensor],
                    one_pair: Callable[[Tensor, Tensor, tuple[int, int]], Tensor], coordinates: bool = False) -> Tensor:
    """The body of every ``pair_invariant_*`` loss. Without pairs: ``plain``, the visibility-masked loss; one pair
    and every keypoint visible: ``one_pair``, the hand-invariant loss; else ``per_keypoint`` (``[B, K, ...]`` ->
    ``[B, K]``) in the better order of each pair. ``coordinates``: ``[B, 2K]`` inputs, scored as ``[B, K, 2]``."""
    _check_same_shape(pred, target)
    if not pairs:
        return plain(pred, target, visible)
    if len(pairs) == 1 and _all_visible(visible):
        return one_pair(pred, target, tuple(pairs[0]))
    if coordinates:
        pred, target = _as_keypoint_pairs(pred), _as_keypoint_pairs(target)
    checked = check_pairs(pairs, target.shape[1])
    order = partner_order(target.shape[1], checked)
    return _min_over_pair_orders(per_keypoint(pred, target), per_keypoint(pred, target[:, order]), checked, visible)


def pair_invariant_heatmap_loss(pred: Tensor, target: Tensor, pairs: Pairs,
                                visible: Tensor | None = None) -> Tensor:
    """Heatmap MSE (``[B, K, H, W]``) invariant to exchanging the targets of each symmetric pair; scalar.

    Per sample and pair the better order counts; ``visible [B, K]`` masks keypoints. With one pair and every
    keypoint visible this is exactly :func:`hand_invariant_heatmap_loss`; without pairs, :func:`heatmap_mse_loss`.
    """
    return _pair_invariant(pred, target, pairs, visible, _per_keypoint(_squared), plain=heatmap_mse_loss,
                           one_pair=hand_invariant_heatmap_loss)


def pair_invariant_spatial_cross_entropy(pred: Tensor, target: Tensor, pairs: Pairs,
                                         visible: Tensor | None = None) -> Tensor:
    """:func:`spatial_cross_entropy_loss` invariant to exchanging the targets of each symmetric pair; scalar.
    One pair, all visible: exactly :func:`hand_invariant_spatial_cross_entropy`."""
    return _pair_invariant(pred, target, pairs, visible, _spatial_ce, plain=spatial_cross_entropy_loss,
                           one_pair=hand_invariant_spatial_cross_entropy)


def pair_invariant_coordinate_mse(pred: Tensor, target: Tensor, pairs: Pairs,
                                  visible: Tensor | None = None) -> Tensor:
    """Coordinate MSE on ``[B, 2K]`` invariant to exchanging the targets of each symmetric pair; scalar.
    One pair, all visible: exactly :func:`hand_invariant_coordinate_mse`."""
    return _pair_invariant(pred, target, pairs, visible, _per_keypoint(_squared), plain=coordinate_mse_loss,
                           one_pair=hand_invariant_coordinate_mse, coordinates=True)


def pair_invariant_coordinate_l1(pred: Tensor, target: Tensor, pairs: Pairs,
                                 visible: Tensor | None = None) -> Tensor:
    """Coordinate L1 on ``[B, 2K]`` invariant to exchanging the targets of each symmetric pair; scalar.
    One pair, all visible: exactly :func:`hand_invariant_coordinate_l1`."""
    return _pair_invariant(pred, target, pairs, visible, _per_keypoint(_absolute), plain=coordinate_l1_loss,
                           one_pair=hand_invariant_coordinate_l1, coordinates=True)
