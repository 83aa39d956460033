"""PCK: hand-computed cases, the inclusive boundary, norms, swap-aware matching and the label-ambiguity ceiling
(against a brute-force search over prediction pairs)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from loclab.metrics.pck import (
    KEYPOINT_NAMES,
    NORM_EPS,
    best_hand_assignment,
    ceiling_correct_per_image,
    compute_pck,
    compute_pck_per_keypoint,
    compute_pck_swap_aware,
    hedged_hand_predictions,
    keypoint_distances,
    keypoint_norms,
    pck_ambiguity_ceiling,
    pck_guessed_hand_labels,
    pck_random_hand_labels,
    swap_hands,
)

THRESHOLDS = (0.05, 0.10, 0.15, 0.20)

# One figure whose keypoint bbox is 3 x 4, so the bbox norm is exactly 5.
GT_345 = np.array([[[0.0, 0.0], [3.0, 0.0], [0.0, 4.0], [3.0, 4.0], [1.0, 1.0]]])


def synthetic_figures(n: int, seed: int) -> np.ndarray:
    """Ground-truth keypoints ``[n, 5, 2]`` drawn with the stick-figure formulas of docs/data-formats.md (no images)."""
    rng = np.random.default_rng(seed)
    cx = rng.integers(40, 89, n).astype(float)
    cy = rng.integers(40, 89, n).astype(float)
    a_left, a_right = np.deg2rad(rng.uniform(-60, 60, (2, n)))
    spread = rng.uniform(10, 30, n)
    points = [
        (cx, cy - 20),
        (cx - 20 * np.sin(a_left), cy - 6 + 20 * np.cos(a_left)),
        (cx + 20 * np.sin(a_right), cy - 6 + 20 * np.cos(a_right)),
        (cx - spread, cy + 37),
        (cx + spread, cy + 37),
    ]
    return np.trunc(np.stack([np.stack(p, axis=-1) for p in points], axis=1))


def test_hand_computed_pck():
    # distances 0, 0.5, 1, 0.25, 2 -> ratios 0, 0.1, 0.2, 0.05, 0.4 of the norm 5
    offsets = np.array([[[0, 0], [0.5, 0], [0, -1], [0, 0.25], [-2, 0]]])
    pck = compute_pck(GT_345 + offsets, GT_345, THRESHOLDS)
    assert pck == {0.05: 0.4, 0.10: 0.6, 0.15: 0.6, 0.20: 0.8}
    assert all(type(v) is float and type(k) is float for k, v in pck.items())


def test_boundary_is_inclusive():
    norm = 5.0
    exact = 0.1 * norm
    just_over = np.nextafter(exact, np.inf)
    for offset, expected in ((exact, 1.0), (just_over, 0.0)):
        pred = GT_345.copy()
        pred[0, 0, 0] += offset  # the head's gt x is 0, so the distance is `offset` with no rounding
        per_kp = compute_pck_per_keypoint(pred, GT_345, (0.1,))
        assert per_kp[KEYPOINT_NAMES[0]][0.1] == expected


def test_bbox_and_torso_norms_hand_computed():
    # head (1, 1), hands (0, 2) and (7, 3), feet (2, 5) and (6, 5)
    gt = torch.tensor([[[1.0, 1.0], [0.0, 2.0], [7.0, 3.0], [2.0, 5.0], [6.0, 5.0]]])
    assert keypoint_norms(gt, "bbox").item() == pytest.approx(math.sqrt(7**2 + 4**2))
    # midpoint of the feet (4, 5); head to it: (3, 4) -> 5
    assert keypoint_norms(gt, "torso").item() == pytest.approx(5.0)
    with pytest.raises(ValueError, match="normalize_by"):
        keypoint_norms(gt, "image")  # type: ignore[arg-type]


def test_zero_norm_is_guarded():
    gt = np.full((1, 5, 2), 10.0)
    assert keypoint_norms(gt, "bbox").item() == NORM_EPS
    assert keypoint_norms(gt, "torso").item() == NORM_EPS
    assert compute_pck(gt, gt)[0.05] == 1.0
    assert compute_pck(gt + 1.0, gt)[0.2] == 0.0


def test_distances_are_euclidean():
    pred = GT_345 + np.array([3.0, 4.0])
    assert torch.allclose(keypoint_distances(pred, GT_345), torch.full((1, 5), 5.0, dtype=torch.float64))


def test_perfect_predictions_score_one():
    gt = synthetic_figures(50, seed=1)
    for normalize_by in ("bbox", "torso"):
        assert compute_pck(gt, gt, normalize_by=normalize_by) == {t: 1.0 for t in THRESHOLDS}
        assert compute_pck_swap_aware(gt, gt, normalize_by=normalize_by) == {t: 1.0 for t in THRESHOLDS}
    per_kp = compute_pck_per_keypoint(gt, gt)
    assert list(per_kp) == list(KEYPOINT_NAMES)
    assert all(v == 1.0 for accs in per_kp.values() for v in accs.values())


def test_per_keypoint_means_to_overall_and_checks_names():
    gt = synthetic_figures(40, seed=2)
    pred = gt + np.random.default_rng(0).normal(0, 4, gt.shape)
    overall = compute_pck(pred, gt, normalize_by="torso")
    per_kp = compute_pck_per_keypoint(pred, gt, normalize_by="torso")
    for t in THRESHOLDS:
        assert np.mean([per_kp[name][t] for name in KEYPOINT_NAMES]) == pytest.approx(overall[t])
    with pytest.raises(ValueError, match="names"):
        compute_pck_per_keypoint(pred, gt, names=("a", "b"))


def test_torch_numpy_and_float32_agree():
    gt = synthetic_figures(30, seed=3)
    pred = gt + np.random.default_rng(1).normal(0, 3, gt.shape)
    reference = compute_pck(pred, gt)
    assert compute_pck(torch.from_numpy(pred).float(), torch.from_numpy(gt).float()) == reference
    assert compute_pck(pred.tolist(), gt.tolist()) == reference


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="differ in shape"):
        compute_pck(np.zeros((2, 5, 2)), np.zeros((3, 5, 2)))
    with pytest.raises(ValueError, match=r"\[N, K, 2\]"):
        compute_pck(np.zeros((2, 10)), np.zeros((2, 10)))
    with pytest.raises(ValueError, match="N = 0"):
        compute_pck(np.zeros((0, 5, 2)), np.zeros((0, 5, 2)))


def test_swap_hands_exchanges_only_hands():
    kp = torch.arange(10.0).reshape(1, 5, 2)
    swapped = swap_hands(kp)
    assert swapped[0, 1].tolist() == [4.0, 5.0] and swapped[0, 2].tolist() == [2.0, 3.0]
    assert torch.equal(swapped[:, [0, 3, 4]], kp[:, [0, 3, 4]])
    assert torch.equal(swap_hands(swapped), kp)


def test_best_hand_assignment_picks_closer_order_and_keeps_ties():
    gt = synthetic_figures(3, seed=4)
    pred = gt.copy()
    pred[1] = swap_hands(gt[1]).numpy()  # image 1 predicted with crossed labels
    pred[2, 1] = pred[2, 2]  # image 2: both hands on the same point -> tie, keep the given order
    reordered, swapped = best_hand_assignment(pred, gt)
    assert swapped.tolist() == [False, True, False]
    assert torch.equal(reordered[1], torch.from_numpy(gt[1]))
    assert torch.equal(reordered[2], torch.from_numpy(pred[2]))


def test_swap_aware_takes_the_better_order_per_threshold():
    # Torso norm 100, so threshold 0.05 is 5 px. Hands at x = 40 and 50; predicted at x = 44.5 and 34.
    # Given order: 4.5 (correct) + 16 (wrong) px. Swapped: 5.5 + 6 px, both wrong at 5 px.
    # Distance matching prefers the swapped order, but swap-aware PCK counts the better order per threshold.
    gt = np.array([[[0.0, 0.0], [40.0, 0.0], [50.0, 0.0], [-10.0, 100.0], [10.0, 100.0]]])
    pred = gt.copy()
    pred[0, 1, 0], pred[0, 2, 0] = 44.5, 34.0
    assert best_hand_assignment(pred, gt)[1].tolist() == [True]
    assert compute_pck(pred, gt, (0.05,), "torso")[0.05] == pytest.approx(4 / 5)
    assert compute_pck_swap_aware(pred, gt, (0.05,), "torso")[0.05] == pytest.approx(4 / 5)
    assert compute_pck_swap_aware(pred, gt, (0.2,), "torso")[0.2] == 1.0


@settings(max_examples=40, deadline=None)
@given(noise_seed=st.integers(0, 10_000))
def test_swap_aware_is_never_below_standard(noise_seed):
    rng = np.random.default_rng(noise_seed)
    gt = rng.uniform(20, 108, size=(30, 5, 2))
    pred = gt + rng.normal(0, 6, size=gt.shape)
    for normalize_by in ("bbox", "torso"):
        std = compute_pck(pred, gt, THRESHOLDS, normalize_by)
        aware = compute_pck_swap_aware(pred, gt, THRESHOLDS, normalize_by)
        assert all(aware[t] >= std[t] for t in THRESHOLDS)


keypoint_arrays = st.integers(1, 6).flatmap(
    lambda n: arrays(np.float64, (n, 5, 2), elements=st.floats(0, 128, allow_nan=False, width=32))
)


@settings(max_examples=40, deadline=None)
@given(gt=keypoint_arrays, noise_seed=st.integers(0, 2**16))
def test_swap_aware_invariant_to_predicted_hand_order(gt, noise_seed):
    pred = gt + np.random.default_rng(noise_seed).normal(0, 8, gt.shape)
    for normalize_by in ("bbox", "torso"):
        a = compute_pck_swap_aware(pred, gt, THRESHOLDS, normalize_by)
        b = compute_pck_swap_aware(swap_hands(pred).numpy(), gt, THRESHOLDS, normalize_by)
        assert a == b


@settings(max_examples=40, deadline=None)
@given(gt=keypoint_arrays, noise_seed=st.integers(0, 2**16))
def test_swap_aware_never_increases_hand_distance_and_keeps_other_keypoints(gt, noise_seed):
    pred = gt + np.random.default_rng(noise_seed).normal(0, 8, gt.shape)
    reordered, _ = best_hand_assignment(pred, gt)
    before = keypoint_distances(pred, gt)
    after = keypoint_distances(reordered, gt)
    assert torch.all(after[:, 1:3].sum(1) <= before[:, 1:3].sum(1) + 1e-9)
    assert torch.equal(after[:, [0, 3, 4]], before[:, [0, 3, 4]])


@settings(max_examples=40, deadline=None)
@given(gt=keypoint_arrays, flips=st.lists(st.booleans(), min_size=6, max_size=6))
def test_swap_aware_undoes_crossed_labels(gt, flips):
    # Perfect positions with arbitrarily crossed hand labels: swap-aware PCK sees a perfect localiser,
    # and is >= standard PCK (which it always is in this regime: the chosen order has distance zero).
    crossed = torch.tensor(flips[: len(gt)])[:, None, None]
    pred = torch.where(crossed, swap_hands(torch.from_numpy(gt)), torch.from_numpy(gt))
    aware = compute_pck_swap_aware(pred, gt)
    standard = compute_pck(pred, gt)
    assert aware == {t: 1.0 for t in THRESHOLDS}
    assert all(aware[t] >= standard[t] for t in THRESHOLDS)


def expected_pck_coin_flip(predictions, gt, thresholds, normalize_by="bbox", hand_indices=(1, 2)):
    """Slow reference: ``{t: Tensor[M]}``, each prediction's expected standard PCK when the ground truth's hand
    labels are a fair coin (``predictions [M, K, 2]`` all scored against the one figure ``gt [K, 2]``)."""
    pred = torch.as_tensor(predictions, dtype=torch.float64)
    truths = (torch.as_tensor(gt, dtype=torch.float64)[None], swap_hands(np.asarray(gt)[None], hand_indices))
    out = {t: torch.zeros(len(pred), dtype=torch.float64) for t in thresholds}
    for truth in truths:
        norm = keypoint_norms(truth, normalize_by)  # [1]
        ratio = torch.linalg.vector_norm(pred - truth, dim=-1) / norm
        for t in thresholds:
            out[t] += 0.5 * (ratio <= t).double().mean(dim=1)
    return out


def brute_force_ceiling(gt, grid, thresholds, normalize_by="bbox", hand_indices=(1, 2)):
    """Best expected standard PCK of one figure ``gt [K, 2]`` over every pair of hand predictions drawn from
    ``grid [G, 2]`` (the other keypoints exactly on their ground truth): ``{t: float}``."""
    a, b = hand_indices
    p, q = (g.reshape(-1) for g in torch.meshgrid(torch.arange(len(grid)), torch.arange(len(grid)), indexing="ij"))
    pred = torch.as_tensor(gt, dtype=torch.float64).repeat(p.shape[0], 1, 1)
    grid = torch.as_tensor(grid, dtype=torch.float64)
    pred[:, a], pred[:, b] = grid[p], grid[q]
    expected = expected_pck_coin_flip(pred, gt, thresholds, normalize_by, hand_indices)
    return {t: v.max().item() for t, v in expected.items()}


CEILING_THRESHOLDS = (0.05, 0.10, 0.15, 0.20, 0.30)


def test_ceiling_equals_brute_force_search_over_prediction_pairs():
    # Hands on integer pixels of a 6x6 patch, candidate predictions on its half-pixel grid: the grid holds both
    # hands and their midpoint, where the derivation puts the optimum, so the search must find the exact value.
    rng = np.random.default_rng(5)
    half = np.stack(np.meshgrid(np.arange(0, 5.5, 0.5), np.arange(0, 5.5, 0.5)), axis=-1).reshape(-1, 2)
    hedged_somewhere = guessing_loses_somewhere = False
    for _ in range(12):
        hands = rng.integers(0, 6, (2, 2)).astype(float)
        gt = np.array([[3.0, -4.0], hands[0], hands[1], [0.0, 10.0], [6.0, 10.0]])
        for normalize_by in ("bbox", "torso"):
            exact = pck_ambiguity_ceiling(gt[None], CEILING_THRESHOLDS, normalize_by)
            assert exact == brute_force_ceiling(gt, half, CEILING_THRESHOLDS, normalize_by)
            guessed = pck_guessed_hand_labels(gt[None], CEILING_THRESHOLDS, normalize_by)
            assert all(guessed[t] <= exact[t] for t in CEILING_THRESHOLDS)
            hedged_somewhere |= any(exact[t] == 1.0 and np.any(hands[0] != hands[1]) for t in exact)
            guessing_loses_somewhere |= any(guessed[t] < exact[t] for t in exact)
    assert hedged_somewhere and guessing_loses_somewhere  # the cases exercise both branches


def test_ceiling_is_an_upper_bound_when_the_norm_depends_on_the_labels():
    # Torso norm with the "pair" head / left foot: exchanging them changes the norm, so the hedge point is not the
    # midpoint. No pair on a fine grid beats the formula, and hedged_hand_predictions reach it.
    rng = np.random.default_rng(9)
    pair = (0, 3)
    for _ in range(6):
        gt = np.array([rng.uniform(0, 8, 2), [20.0, 0.0], [0.0, 20.0], rng.uniform(0, 8, 2), [8.0, 30.0]])
        exact = pck_ambiguity_ceiling(gt[None], CEILING_THRESHOLDS, "torso", pair)
        grid = np.stack(np.meshgrid(np.linspace(-2, 10, 13), np.linspace(-2, 10, 13)), axis=-1).reshape(-1, 2)
        grid = np.concatenate([grid, gt[list(pair)]])
        searched = brute_force_ceiling(gt, grid, CEILING_THRESHOLDS, "torso", pair)
        assert all(searched[t] <= exact[t] + 1e-12 for t in CEILING_THRESHOLDS)
        for t in CEILING_THRESHOLDS:
            hedged = hedged_hand_predictions(gt[None], t, "torso", pair)
            assert expected_pck_coin_flip(hedged, gt, [t], "torso", pair)[t].item() == pytest.approx(exact[t])


def test_ceiling_hand_computed():
    far = GT_345.copy()  # hands (3, 0) and (0, 4): 5 apart = the whole norm, more than 2 x 0.2 of it
    assert pck_ambiguity_ceiling(far, THRESHOLDS) == {t: pytest.approx(4 / 5) for t in THRESHOLDS}
    near = GT_345.copy()
    near[0, 2] = near[0, 1] + [0.0, 0.5]  # 0.5 apart = 0.1 of the norm: the midpoint is 0.05 from both hands
    assert pck_ambiguity_ceiling(near, THRESHOLDS) == {t: pytest.approx(1.0) for t in THRESHOLDS}
    guessed = pck_guessed_hand_labels(near, THRESHOLDS)  # crossed labels are within 0.1 of the norm, not 0.05
    assert guessed[0.05] == pytest.approx(4 / 5) and guessed[0.10] == pytest.approx(1.0)
    hedged = hedged_hand_predictions(near, 0.05)
    assert hedged[0, 1].tolist() == hedged[0, 2].tolist() == [3.0, 0.25]
    assert torch.equal(hedged[0, [0, 3, 4]], torch.as_tensor(near[0, [0, 3, 4]]))
    assert torch.equal(hedged_hand_predictions(far, 0.2), torch.as_tensor(far))  # nothing to hedge: the hands


def test_hedging_reaches_the_ceiling_and_guessing_matches_its_sampling():
    gt = synthetic_figures(2000, seed=7)
    for normalize_by in ("bbox", "torso"):
        exact = pck_ambiguity_ceiling(gt, THRESHOLDS, normalize_by)
        per_image = ceiling_correct_per_image(gt, THRESHOLDS, normalize_by)  # [N, T]: 4 or 5 expected correct
        assert per_image.shape == (2000, 4) and set(per_image.unique().tolist()) <= {4.0, 5.0}
        assert (per_image.mean(dim=0) / 5).tolist() == pytest.approx([exact[t] for t in THRESHOLDS])
        guessed = pck_guessed_hand_labels(gt, THRESHOLDS, normalize_by)
        sampled = pck_random_hand_labels(gt, THRESHOLDS, seed=11, normalize_by=normalize_by)
        for t in THRESHOLDS:
            hedged = hedged_hand_predictions(gt, t, normalize_by)
            # expected PCK over the coin flip = mean of the PCK against both label orders
            expected = (compute_pck(hedged, gt, [t], normalize_by)[t]
                        + compute_pck(hedged, swap_hands(gt), [t], normalize_by)[t]) / 2
            assert expected == pytest.approx(exact[t])
            assert 0.8 <= guessed[t] < exact[t] <= 1.0
            assert abs(guessed[t] - sampled[t]) < 0.02
    assert pck_random_hand_labels(gt, seed=3) == pck_random_hand_labels(gt, seed=3)
