"""Per-instance PCK with visibility masks, pair norms and symmetric-pair swaps, against brute-force loops; and the
reference numbers, which must be exactly those of the single-figure metrics."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from loclab.metrics.pck import (
    best_hand_assignment,
    compute_pck,
    compute_pck_per_keypoint,
    compute_pck_swap_aware,
    keypoint_norms,
)
from loclab.metrics.pck_instances import (
    best_pair_assignment,
    compute_pck_pair_aware,
    compute_pck_per_keypoint_visible,
    compute_pck_visible,
    instance_norms,
    mean_error_px,
)

THRESHOLDS = (0.05, 0.1, 0.2, 0.5)
PAIRS = ((1, 2), (3, 4))


def _case(seed: int, m: int = 40, k: int = 7):
    g = torch.Generator().manual_seed(seed)
    gt = torch.rand(m, k, 2, generator=g, dtype=torch.float64) * 100
    pred = gt + torch.randn(m, k, 2, generator=g, dtype=torch.float64) * 6
    swap = torch.rand(m, generator=g) < 0.4  # some instances predict pair (1, 2) crossed
    pred[swap] = pred[swap][:, [0, 2, 1, *range(3, k)]]
    visible = torch.rand(m, k, generator=g) > 0.25
    visible[0] = False  # an instance with nothing labelled: not scored
    visible[1] = False
    visible[1, k - 2] = True  # one labelled point: bbox norm 0 -> clamped, scored
    return pred, gt, visible


def _norm(gt_i, vis_i, normalize_by):
    """One instance's norm, written out: None when it is undefined."""
    if isinstance(normalize_by, tuple):
        a, b = normalize_by
        return max(math.dist(gt_i[a].tolist(), gt_i[b].tolist()), 1e-6) if vis_i[a] and vis_i[b] else None
    points = [gt_i[k].tolist() for k in range(len(vis_i)) if vis_i[k]]
    if not points:
        return None
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return max(math.hypot(max(xs) - min(xs), max(ys) - min(ys)), 1e-6)


def _brute_pck(pred, gt, visible, t, normalize_by="bbox", pairs=()):
    """Loop over instances; for each, try every combination of pair orders and keep the most correct."""
    correct = total = 0
    for p, g, v in zip(pred, gt, visible):
        norm = _norm(g, v, normalize_by)
        if norm is None:
            continue
        total += int(v.sum())
        best = 0
        for flips in itertools.product([False, True], repeat=len(pairs)):
            order = list(range(len(v)))
            for flip, (a, b) in zip(flips, pairs):
                if flip:
                    order[a], order[b] = b, a
            # prediction k is scored against ground truth order[k], where that ground truth is labelled
            hits = sum(1 for k in range(len(v)) if v[order[k]] and
                       math.dist(p[k].tolist(), g[order[k]].tolist()) / norm <= t)
            best = max(best, hits)
        correct += best
    return correct / total


@pytest.mark.parametrize("normalize_by", ["bbox", (0, 6)])
def test_masked_pck_matches_the_loop(normalize_by):
    pred, gt, visible = _case(0)
    ours = compute_pck_visible(pred, gt, THRESHOLDS, normalize_by, visible=visible)
    for t in THRESHOLDS:
        assert ours[t] == pytest.approx(_brute_pck(pred, gt, visible, t, normalize_by), abs=1e-12)
    swap = compute_pck_pair_aware(pred, gt, PAIRS, THRESHOLDS, normalize_by, visible=visible)
    for t in THRESHOLDS:
        assert swap[t] == pytest.approx(_brute_pck(pred, gt, visible, t, normalize_by, PAIRS), abs=1e-12)
        assert swap[t] >= ours[t]


def test_unlabelled_points_do_not_count_anywhere():
    pred, gt, visible = _case(1)
    moved = pred.clone()
    moved[~visible] = 1e6  # wild predictions of unlabelled points
    gt_moved = gt.clone()
    gt_moved[~visible] = -1e6  # and wild ground truth where nothing is labelled
    for a, b in ((pred, gt), (moved, gt_moved)):
        assert compute_pck_visible(a, b, THRESHOLDS, visible=visible) == compute_pck_visible(pred, gt, THRESHOLDS,
                                                                                             visible=visible)
    assert mean_error_px(moved, gt_moved, visible=visible) == pytest.approx(mean_error_px(pred, gt, visible=visible))
    assert math.isnan(instance_norms(gt, visible)[0]) and instance_norms(gt, visible)[1] == 1e-6


def test_per_keypoint_is_none_for_a_never_labelled_keypoint():
    pred, gt, visible = _case(2)
    visible[:, 6] = False
    names = [f"k{i}" for i in range(7)]
    per = compute_pck_per_keypoint_visible(pred, gt, THRESHOLDS, "bbox", names, visible=visible)
    assert per["k6"] == dict.fromkeys(THRESHOLDS)
    scored = visible & instance_norms(gt, visible).isfinite()[:, None]
    for k in range(6):
        hits = [math.dist(pred[i, k].tolist(), gt[i, k].tolist()) / float(instance_norms(gt, visible)[i]) <= 0.1
                for i in range(len(gt)) if scored[i, k]]
        assert per[f"k{k}"][0.1] == pytest.approx(sum(hits) / len(hits))


def test_best_pair_assignment_brings_swapped_pairs_back():
    _, gt, visible = _case(3)
    crossed = gt[:, [0, 2, 1, 4, 3, 5, 6]]
    reordered, swapped = best_pair_assignment(crossed, gt, PAIRS)
    assert torch.equal(reordered, gt) and swapped.all()
    reordered, swapped = best_pair_assignment(crossed, gt, PAIRS, visible=visible)
    both_unlabelled = torch.stack([~visible[:, 1] & ~visible[:, 2], ~visible[:, 3] & ~visible[:, 4]], dim=1)
    assert torch.equal(swapped, ~both_unlabelled)


def test_nan_predictions_are_wrong_and_left_out_of_the_mean_error():
    pred, gt, _ = _case(4)
    pred[3] = float("nan")
    full = compute_pck_visible(pred, gt, (0.5,))[0.5]
    assert full <= 1 - 7 / (7 * len(gt)) + 1e-12
    finite = torch.ones(len(gt), dtype=torch.bool)
    finite[3] = False
    assert mean_error_px(pred, gt) == pytest.approx(torch.linalg.vector_norm(pred[finite] - gt[finite], dim=-1).mean().item())


@pytest.mark.parametrize("normalize_by", ["bbox", "torso"])
def test_all_visible_reference_numbers_are_exactly_the_single_figure_ones(normalize_by):
    pred, gt, _ = _case(5, m=30, k=5)
    everything = torch.ones(30, 5, dtype=torch.bool)
    for visible in (None, everything):
        assert compute_pck_visible(pred, gt, THRESHOLDS, normalize_by, visible=visible) == \
            compute_pck(pred, gt, THRESHOLDS, normalize_by)
        assert compute_pck_pair_aware(pred, gt, [(1, 2)], THRESHOLDS, normalize_by, visible=visible) == \
            compute_pck_swap_aware(pred, gt, THRESHOLDS, normalize_by, (1, 2))
        names = list("abcde")
        assert compute_pck_per_keypoint_visible(pred, gt, THRESHOLDS, normalize_by, names, visible=visible) == \
            compute_pck_per_keypoint(pred, gt, THRESHOLDS, normalize_by, names)
        assert torch.equal(instance_norms(gt, visible, normalize_by), keypoint_norms(gt, normalize_by))
        reordered, swapped = best_pair_assignment(pred, gt, [(1, 2)], visible=visible)
        old, old_swapped = best_hand_assignment(pred, gt, (1, 2))
        assert torch.equal(reordered, old) and torch.equal(swapped[:, 0], old_swapped)
    if normalize_by == "bbox":  # two pairs, all visible: the general path
        assert compute_pck_pair_aware(pred, gt, [(1, 2), (3, 4)], THRESHOLDS)[0.1] == \
            pytest.approx(_brute_pck(pred, gt, everything, 0.1, "bbox", [(1, 2), (3, 4)]))


def test_bad_pairs_and_norms():
    pred, gt, visible = _case(6)
    with pytest.raises(ValueError, match="distinct keypoint indices"):
        compute_pck_pair_aware(pred, gt, [(1, 2), (2, 3)], visible=visible)
    with pytest.raises(ValueError, match="norm pair"):
        compute_pck_visible(pred, gt, normalize_by=(1, 1), visible=visible)
    with pytest.raises(ValueError, match="at least one labelled keypoint"):
        compute_pck_visible(pred, gt, visible=torch.zeros_like(visible))
