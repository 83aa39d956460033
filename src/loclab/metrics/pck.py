"""PCK (percentage of correct keypoints) for single-figure keypoint predictions.

Conventions (see ``docs/architecture.md``):

- ``predictions`` and ``ground_truths`` are ``[N, K, 2]`` arrays of ``(x, y)`` in image pixels, one figure per
  image, keypoints in the order ``head, left_hand, right_hand, left_foot, right_foot`` (docs/data-formats.md).
  A ``torch.Tensor`` or anything ``numpy`` can read is accepted; the math runs in float64 so that the
  boundary comparison below is not blurred by float32 rounding.
- A keypoint is **correct** at threshold ``t`` when ``distance / norm <= t`` (inclusive), where ``distance`` is
  the Euclidean distance to its ground truth and ``norm`` is one number per image (:func:`keypoint_norms`).
- Accuracies are returned as python floats in ``[0, 1]`` keyed by the threshold as a python float.

The two hands are drawn identically and their angles share one distribution, so the "left"/"right" label is not
recoverable from pixels. Besides standard PCK this module therefore offers a swap-aware PCK (the hand order is
chosen per image), the best expected standard PCK any predictor can reach when the labels are a coin flip (the
ambiguity ceiling, reached by hedging between the hands where they are close) and the expected standard PCK of a
perfect localiser that guesses the labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from torch import Tensor

DEFAULT_THRESHOLDS: tuple[float, ...] = (0.05, 0.10, 0.15, 0.20)
KEYPOINT_NAMES: tuple[str, ...] = ("head", "left_hand", "right_hand", "left_foot", "right_foot")
HAND_INDICES: tuple[int, int] = (1, 2)
NormalizeBy = Literal["bbox", "torso"]
ArrayLike = Tensor | np.ndarray | Sequence

# A figure whose ground-truth keypoints all coincide has a zero bbox diagonal (or a zero torso). Dividing by a
# tiny positive number instead keeps the ratio finite: an exact hit (distance 0) stays correct, any miss is wrong.
NORM_EPS = 1e-6

_HEAD, _LEFT_FOOT, _RIGHT_FOOT = 0, 3, 4


def _as_keypoints(keypoints: ArrayLike, name: str) -> Tensor:
    """Convert to a float64 ``Tensor[N, K, 2]`` on the CPU, or raise a ``ValueError`` naming the argument."""
    out = torch.as_tensor(keypoints if isinstance(keypoints, Tensor) else np.asarray(keypoints))
    out = out.detach().to(device="cpu", dtype=torch.float64)
    if out.ndim != 3 or out.shape[-1] != 2:
        raise ValueError(f"{name} must have shape [N, K, 2], got {tuple(out.shape)}")
    return out


def _as_pair(predictions: ArrayLike, ground_truths: ArrayLike) -> tuple[Tensor, Tensor]:
    pred = _as_keypoints(predictions, "predictions")
    gt = _as_keypoints(ground_truths, "ground_truths")
    if pred.shape != gt.shape:
        raise ValueError(f"predictions {tuple(pred.shape)} and ground_truths {tuple(gt.shape)} differ in shape")
    if pred.shape[0] == 0:
        # An empty split would make every accuracy 0/0; refuse instead of reporting nan or 0.
        raise ValueError("PCK needs at least one image, got N = 0")
    return pred, gt


def _check_hands(hand_indices: tuple[int, int], num_keypoints: int) -> None:
    a, b = hand_indices
    if a == b or not (0 <= a < num_keypoints and 0 <= b < num_keypoints):
        raise ValueError(f"hand_indices {hand_indices} must be two distinct indices in [0, {num_keypoints})")


def keypoint_norms(ground_truths: ArrayLike, normalize_by: NormalizeBy = "bbox") -> Tensor:
    """Per-image PCK normaliser, ``Tensor[N]`` float64.

    Args:
        ground_truths: ``[N, K, 2]`` ground-truth ``(x, y)`` in pixels.
        normalize_by:
            ``'bbox'``: diagonal ``sqrt(w**2 + h**2)`` of the axis-aligned box spanned by that image's
            ground-truth keypoints (all ``K`` of them).
            ``'torso'``: distance from the head (index 0) to the midpoint of the two feet (indices 3 and 4).
            It needs ``K >= 5`` in the stick-figure order.

    Norms are clamped below at ``NORM_EPS`` (1e-6) so a degenerate figure never divides by zero.
    """
    gt = _as_keypoints(ground_truths, "ground_truths")
    if normalize_by == "bbox":
        extent = gt.amax(dim=1) - gt.amin(dim=1)  # [N, 2] = (w, h)
        norms = torch.linalg.vector_norm(extent, dim=-1)
    elif normalize_by == "torso":
        if gt.shape[1] <= _RIGHT_FOOT:
            raise ValueError(f"'torso' needs head (0) and feet (3, 4); got K = {gt.shape[1]}")
        feet_mid = (gt[:, _LEFT_FOOT] + gt[:, _RIGHT_FOOT]) / 2
        norms = torch.linalg.vector_norm(gt[:, _HEAD] - feet_mid, dim=-1)
    else:
        raise ValueError(f"normalize_by must be 'bbox' or 'torso', got {normalize_by!r}")
    return norms.clamp_min(NORM_EPS)


def keypoint_distances(predictions: ArrayLike, ground_truths: ArrayLike) -> Tensor:
    """Euclidean distance in pixels between each prediction and its ground truth, ``Tensor[N, K]`` float64."""
    pred, gt = _as_pair(predictions, ground_truths)
    return torch.linalg.vector_norm(pred - gt, dim=-1)


def _correct(ratios: Tensor, thresholds: Sequence[float]) -> dict[float, Tensor]:
    """``{t: bool Tensor like ratios}``; the single place where the ``<=`` rule lives."""
    return {float(t): ratios <= float(t) for t in thresholds}


def _normalised_distances(pred: Tensor, gt: Tensor, normalize_by: NormalizeBy) -> Tensor:
    """``distance / norm`` as ``Tensor[N, K]``."""
    dists = torch.linalg.vector_norm(pred - gt, dim=-1)
    return dists / keypoint_norms(gt, normalize_by)[:, None]


def compute_pck(
    predictions: ArrayLike,
    ground_truths: ArrayLike,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    normalize_by: NormalizeBy = "bbox",
) -> dict[float, float]:
    """Standard PCK over all images and keypoints: ``{threshold: fraction correct}``.

    Args:
        predictions, ground_truths: ``[N, K, 2]`` ``(x, y)`` in pixels, ``N >= 1``.
        thresholds: fractions of the per-image norm.
        normalize_by: see :func:`keypoint_norms`.

    A keypoint is correct when ``distance / norm <= threshold`` (inclusive).
    """
    pred, gt = _as_pair(predictions, ground_truths)
    ratios = _normalised_distances(pred, gt, normalize_by)
    return {t: c.double().mean().item() for t, c in _correct(ratios, thresholds).items()}


def compute_pck_per_keypoint(
    predictions: ArrayLike,
    ground_truths: ArrayLike,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    normalize_by: NormalizeBy = "bbox",
    names: Sequence[str] = KEYPOINT_NAMES,
) -> dict[str, dict[float, float]]:
    """PCK of each keypoint separately: ``{name: {threshold: fraction of images where it is correct}}``.

    ``names`` has one entry per keypoint (``len(names) == K``); the rule and norms are those of
    :func:`compute_pck`, whose value is the mean of these over keypoints.
    """
    pred, gt = _as_pair(predictions, ground_truths)
    if len(names) != gt.shape[1]:
        raise ValueError(f"got {len(names)} names for K = {gt.shape[1]} keypoints")
    ratios = _normalised_distances(pred, gt, normalize_by)
    per_t = {t: c.double().mean(dim=0) for t, c in _correct(ratios, thresholds).items()}  # {t: [K]}
    return {name: {t: acc[k].item() for t, acc in per_t.items()} for k, name in enumerate(names)}


def swap_hands(keypoints: ArrayLike, hand_indices: tuple[int, int] = HAND_INDICES) -> Tensor:
    """A ``Tensor`` copy of ``keypoints`` ``[..., K, 2]`` (Tensor or array) with the two hands exchanged."""
    kp = keypoints if isinstance(keypoints, Tensor) else torch.as_tensor(np.asarray(keypoints))
    _check_hands(hand_indices, kp.shape[-2])
    order = list(range(kp.shape[-2]))
    a, b = hand_indices
    order[a], order[b] = b, a
    return kp[..., order, :].clone()


def best_hand_assignment(
    predictions: ArrayLike,
    ground_truths: ArrayLike,
    hand_indices: tuple[int, int] = HAND_INDICES,
) -> tuple[Tensor, Tensor]:
    """Per image, reorder the predicted hands to the order closer to the ground truth.

    Returns ``(reordered predictions [N, K, 2] float64, swapped [N] bool)``. An image's hands are swapped when
    the summed hand distance is strictly smaller swapped than as given (ties keep the given order).

    The choice is made by distance, not by counting correct keypoints: it is then independent of the threshold,
    so one hand order is used at every threshold and the PCK curve stays a curve of one matching. Since the norm
    is one number per image, the summed *normalised* distance picks the same order as the summed distance.
    """
    pred, gt = _as_pair(predictions, ground_truths)
    _check_hands(hand_indices, gt.shape[1])
    a, b = list(hand_indices), list(reversed(hand_indices))
    as_given = torch.linalg.vector_norm(pred[:, a] - gt[:, a], dim=-1).sum(dim=1)
    exchanged = torch.linalg.vector_norm(pred[:, b] - gt[:, a], dim=-1).sum(dim=1)
    swapped = exchanged < as_given
    reordered = torch.where(swapped[:, None, None], swap_hands(pred, hand_indices), pred)
    return reordered, swapped


def compute_pck_swap_aware(
    predictions: ArrayLike,
    ground_truths: ArrayLike,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    normalize_by: NormalizeBy = "bbox",
    hand_indices: tuple[int, int] = HAND_INDICES,
) -> dict[float, float]:
    """PCK in which, per image and threshold, the two hands count in whichever order scores better.

    The hands may be matched in either order and the better one counts (docs/metrics.md, 'Hand ambiguity'). Head
    and feet are scored exactly as in :func:`compute_pck`, so the result is always ``>=`` standard PCK and invariant to
    exchanging the predicted hands. (:func:`best_hand_assignment` gives one threshold-free matching by
    distance, for figures and failure analysis.)
    """
    pred, gt = _as_pair(predictions, ground_truths)
    _check_hands(hand_indices, gt.shape[1])
    as_given = _normalised_distances(pred, gt, normalize_by)
    exchanged = _normalised_distances(swap_hands(pred, hand_indices), gt, normalize_by)
    hands = list(hand_indices)
    others = [k for k in range(gt.shape[1]) if k not in hands]
    num_keypoints = gt.shape[1]
    given_ok, exchanged_ok = _correct(as_given, thresholds), _correct(exchanged, thresholds)
    result = {}
    for t in given_ok:
        hands_ok = torch.maximum(given_ok[t][:, hands].sum(dim=1), exchanged_ok[t][:, hands].sum(dim=1))
        correct = given_ok[t][:, others].sum(dim=1) + hands_ok
        result[t] = float(correct.sum()) / (gt.shape[0] * num_keypoints)
    return result


def pck_ambiguity_ceiling(
    ground_truths: ArrayLike,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    normalize_by: NormalizeBy = "bbox",
    hand_indices: tuple[int, int] = HAND_INDICES,
) -> dict[float, float]:
    """Best expected standard PCK of any predictor when the hand labels are a coin flip (exact expectation).

    The figure generator (docs/data-formats.md, 'Stick figures') draws both arm angles from one distribution and
    both hands identically, so the (left, right) pair is exchangeable and, given the pixels, each label order has
    probability 1/2. A predictor sees the pixels only, so the best it can do is, per image, the prediction that
    maximises the expected score over that coin flip. This function returns that maximum, averaged over images:
    no predictor's *expected* standard PCK exceeds it (a realised score can, by lucky label guesses: see below).

    Derivation. Take one image and threshold ``t``; let ``A``, ``B`` be the two ground-truth hand positions,
    ``d = |A - B|``, and ``n1`` / ``n2`` the image's norm with the labels as given / exchanged (equal for the
    ``bbox`` and ``torso`` norms of the stick figures' hands), ``r_i = t * n_i``. Score the other ``K - 2``
    keypoints as perfectly predicted (always correct: distance 0). With predictions ``p`` (labelled ``hand_a``)
    and ``q`` (``hand_b``) the expected number of correct hands is::

        E = 1/2 ([|p - A| <= r1] + [|q - B| <= r1]) + 1/2 ([|p - B| <= r2] + [|q - A| <= r2])
          = 1/2 f(p) + 1/2 g(q),   f(x) = [|x - A| <= r1] + [|x - B| <= r2],  g(x) = [|x - B| <= r1] + [|x - A| <= r2].

    ``E`` separates into one term per prediction, so ``max E = (max f + max g) / 2``. ``f(A) >= 1``, and
    ``f(x) = 2`` exactly when ``x`` lies in both the disc of radius ``r1`` around ``A`` and that of radius ``r2``
    around ``B``, which meet iff ``d <= r1 + r2``; ``g`` likewise, with the radii exchanged and the same condition.
    Hence::

        max E = 1 + [d <= t * (n1 + n2)]      (= 1 + [d / norm <= 2t] when n1 = n2 = norm)

    and the image's best expected PCK is ``(K - 1 + [d <= t * (n1 + n2)]) / K``. The optimum is reached by
    :func:`hedged_hand_predictions`: when the discs meet, both hands at a point between the two ground-truth
    hands (both at the midpoint for equal norms), which is correct whichever way the labels fall; otherwise one
    prediction on each ground-truth hand (any labelling: each order scores 2 or 0, expectation 1). A perfect
    localiser that guesses the labels (:func:`pck_guessed_hand_labels`) scores 2 hands only when ``d <= r``,
    so it reaches this optimum only at images where the hands are within ``t * norm`` or beyond ``2 t * norm``;
    between the two, hedging wins by one hand.

    The value is an expectation over the images' label coin flips. A predictor that commits to a label order (one
    prediction on each hand) in ``m`` images whose hands are more than ``t * norm`` apart scores 2 or 0 hands there
    with probability 1/2 each, so on a fixed split its realised PCK scatters around its expectation with standard
    deviation ``sqrt(m) / (N * K)`` and can exceed this value by about that much.

    Args:
        ground_truths: ``[N, K, 2]`` ground-truth ``(x, y)`` in pixels, ``N >= 1``.
        thresholds, normalize_by: as :func:`compute_pck`.
        hand_indices: the two keypoints whose labels are a coin flip.

    Returns ``{threshold: best expected standard PCK}``.
    """
    expected = ceiling_correct_per_image(ground_truths, thresholds, normalize_by, hand_indices)
    num_keypoints = _as_keypoints(ground_truths, "ground_truths").shape[1]
    return {float(t): (expected[:, i] / num_keypoints).mean().item() for i, t in enumerate(thresholds)}


def ceiling_correct_per_image(
    ground_truths: ArrayLike,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    normalize_by: NormalizeBy = "bbox",
    hand_indices: tuple[int, int] = HAND_INDICES,
) -> Tensor:
    """Expected correct keypoints of each image at the ambiguity ceiling, ``Tensor[N, T]`` float64 (``T`` thresholds
    in the order given): ``K - 1 + [d <= t * (n1 + n2)]`` (:func:`pck_ambiguity_ceiling`, whose value per threshold
    is the column mean divided by ``K``). Per image, it pairs with a model's correct keypoints on the same image."""
    gt = _as_keypoints(ground_truths, "ground_truths")
    if gt.shape[0] == 0:
        raise ValueError("PCK needs at least one image, got N = 0")
    num_keypoints = gt.shape[1]
    _check_hands(hand_indices, num_keypoints)
    hedged = _hedgeable(gt, thresholds, normalize_by, hand_indices)
    # E[#correct] = (K - 2) others + 1 (one hand for sure) + [both hands can be hit from one point]
    return torch.stack([num_keypoints - 1 + c.double() for c in hedged.values()], dim=1)


def _hedgeable(gt: Tensor, thresholds: Sequence[float], normalize_by: NormalizeBy,
               hand_indices: tuple[int, int]) -> dict[float, Tensor]:
    """``{t: bool Tensor[N]}``: whether one point is within ``t`` of both hands under either labelling, i.e.
    ``d <= t * (n1 + n2)`` (:func:`pck_ambiguity_ceiling`), through the one ``<=`` rule of :func:`_correct`."""
    a, b = hand_indices
    norms_sum = keypoint_norms(gt, normalize_by) + keypoint_norms(swap_hands(gt, hand_indices), normalize_by)
    distance = torch.linalg.vector_norm(gt[:, a] - gt[:, b], dim=-1)
    return _correct(distance / norms_sum, thresholds)


def hedged_hand_predictions(
    ground_truths: ArrayLike,
    threshold: float,
    normalize_by: NormalizeBy = "bbox",
    hand_indices: tuple[int, int] = HAND_INDICES,
) -> Tensor:
    """Predictions ``[N, K, 2]`` float64 that reach :func:`pck_ambiguity_ceiling` at ``threshold``.

    Every keypoint is its ground truth, except that in images where the hedge pays (``d <= t * (n1 + n2)``, see
    :func:`pck_ambiguity_ceiling`) the hands move onto the segment between them: ``hand_a`` at fraction
    ``n1 / (n1 + n2)`` from ``hand_a``'s ground truth, ``hand_b`` at fraction ``n2 / (n1 + n2)``. Each is then
    correct whichever way the labels fall; both are at the midpoint when the norm does not depend on the labels
    (``bbox``, and ``torso`` for the hands).
    """
    gt = _as_keypoints(ground_truths, "ground_truths")
    _check_hands(hand_indices, gt.shape[1])
    a, b = hand_indices
    n1, n2 = keypoint_norms(gt, normalize_by), keypoint_norms(swap_hands(gt, hand_indices), normalize_by)
    hedge = _hedgeable(gt, [threshold], normalize_by, hand_indices)[float(threshold)]
    out = gt.clone()
    for k, fraction in ((a, n1 / (n1 + n2)), (b, n2 / (n1 + n2))):
        point = gt[:, a] + (gt[:, b] - gt[:, a]) * fraction[:, None]
        out[hedge, k] = point[hedge]
    return out


def pck_guessed_hand_labels(
    ground_truths: ArrayLike,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    normalize_by: NormalizeBy = "bbox",
    hand_indices: tuple[int, int] = HAND_INDICES,
) -> dict[float, float]:
    """Expected standard PCK of a perfect localiser that guesses the hand labels (exact expectation).

    Every keypoint is put exactly on a ground-truth position and the hand order is a fair coin (every rule for
    choosing it has that expectation, since the pixels do not reveal it). Per image the ``K - 2`` other keypoints
    are correct; with the right order both hands are; crossed, each hand is scored against the other's ground
    truth at distance ``d = |hand_a - hand_b|``, so both are correct iff ``d / norm <= t``. Expected PCK per image is
    ``(K - 1 + [d / norm <= t]) / K``; the result is its mean over images. It is below
    :func:`pck_ambiguity_ceiling` wherever the hands are between ``t`` and ``2t`` norms apart, because hedging beats
    guessing there. :func:`pck_random_hand_labels` samples the same quantity.
    """
    gt = _as_keypoints(ground_truths, "ground_truths")
    if gt.shape[0] == 0:
        raise ValueError("PCK needs at least one image, got N = 0")
    num_keypoints = gt.shape[1]
    _check_hands(hand_indices, num_keypoints)
    a, b = hand_indices
    ratio = torch.linalg.vector_norm(gt[:, a] - gt[:, b], dim=-1) / keypoint_norms(gt, normalize_by)
    # E[#correct] = (K - 2) others + 1/2 * 2 (right order) + 1/2 * 2 * [crossed still within threshold].
    return {
        t: ((num_keypoints - 1 + c.double()) / num_keypoints).mean().item()
        for t, c in _correct(ratio, thresholds).items()
    }


def pck_random_hand_labels(
    ground_truths: ArrayLike,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    seed: int = 0,
    normalize_by: NormalizeBy = "bbox",
    hand_indices: tuple[int, int] = HAND_INDICES,
) -> dict[float, float]:
    """Standard PCK of perfect predictions whose hand labels are exchanged in a random half of the images.

    Each image's hands are exchanged independently with probability 1/2 (``torch.Generator`` seeded with
    ``seed``, so the result is deterministic). A Monte-Carlo check of :func:`pck_guessed_hand_labels`.
    """
    gt = _as_keypoints(ground_truths, "ground_truths")
    _check_hands(hand_indices, gt.shape[1])
    generator = torch.Generator().manual_seed(seed)
    crossed = torch.rand(gt.shape[0], generator=generator, dtype=torch.float64) < 0.5
    predictions = torch.where(crossed[:, None, None], swap_hands(gt, hand_indices), gt)
    return compute_pck(predictions, gt, thresholds, normalize_by)
