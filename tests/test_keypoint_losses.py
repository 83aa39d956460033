"""Keypoint losses: hand-order invariance, agreement with the plain losses, gradients, a loop reference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from loclab.losses.keypoints import (
    canonical_hand_order,
    coordinate_l1_loss,
    coordinate_mse_loss,
    hand_invariant_coordinate_l1,
    hand_invariant_coordinate_mse,
    hand_invariant_heatmap_loss,
    heatmap_mse_loss,
)

SWAP = [0, 2, 1, 3, 4]  # keypoint order with the hands (1, 2) exchanged


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _swap_coords(coords: torch.Tensor) -> torch.Tensor:
    return coords.reshape(coords.shape[0], 5, 2)[:, SWAP].reshape(coords.shape[0], 10)


# (invariant loss, plain loss, random-input factory, hand swap of a target)
CASES = {
    "heatmap": (hand_invariant_heatmap_loss, heatmap_mse_loss, lambda g: torch.rand(4, 5, 16, 16, generator=g),
                lambda t: t[:, SWAP]),
    "coord_mse": (hand_invariant_coordinate_mse, coordinate_mse_loss, lambda g: torch.rand(4, 10, generator=g),
                  _swap_coords),
    "coord_l1": (hand_invariant_coordinate_l1, coordinate_l1_loss, lambda g: torch.rand(4, 10, generator=g),
                 _swap_coords),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_swapping_target_hands_changes_plain_not_invariant(case):
    invariant, plain, make, swap = CASES[case]
    pred, target = make(_gen(1)), make(_gen(2))
    torch.testing.assert_close(invariant(pred, swap(target)), invariant(pred, target))
    assert not torch.isclose(plain(pred, swap(target)), plain(pred, target))


@pytest.mark.parametrize("case", sorted(CASES))
def test_equals_plain_when_prediction_follows_given_order(case):
    invariant, plain, make, swap = CASES[case]
    target = make(_gen(3))
    pred = target + 0.01 * make(_gen(4))  # close to the given order, far from the swapped one
    torch.testing.assert_close(invariant(pred, target), plain(pred, target))
    # a prediction in the swapped order costs nothing under the invariant loss only
    assert invariant(swap(target), target).item() == 0.0 < plain(swap(target), target).item()


@pytest.mark.parametrize("case", sorted(CASES))
def test_gradient_flows(case):
    invariant, _, make, _ = CASES[case]
    pred = make(_gen(5)).requires_grad_()
    invariant(pred, make(_gen(6))).backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


def _reference_invariant(pred: torch.Tensor, target: torch.Tensor, elementwise) -> torch.Tensor:
    """Obviously-correct loop version: one sample at a time, both orders, keep the smaller."""
    per_sample = []
    for p, t in zip(pred, target):
        per_sample.append(min(elementwise(p, t).mean(), elementwise(p, t[SWAP]).mean()))
    return torch.stack(per_sample).mean()


def test_vectorised_losses_match_loop_reference():
    pred, target = torch.rand(6, 5, 8, 8, generator=_gen(7)), torch.rand(6, 5, 8, 8, generator=_gen(8))
    expected = _reference_invariant(pred, target, lambda p, t: (p - t) ** 2)
    torch.testing.assert_close(hand_invariant_heatmap_loss(pred, target), expected)

    pred, target = torch.rand(6, 10, generator=_gen(9)), torch.rand(6, 10, generator=_gen(10))
    pairs = (pred.reshape(6, 5, 2), target.reshape(6, 5, 2))
    torch.testing.assert_close(
        hand_invariant_coordinate_mse(pred, target), _reference_invariant(*pairs, lambda p, t: (p - t) ** 2)
    )
    torch.testing.assert_close(
        hand_invariant_coordinate_l1(pred, target), _reference_invariant(*pairs, lambda p, t: (p - t).abs())
    )


def test_per_sample_choice_mixes_orders_within_a_batch():
    target = torch.rand(2, 10, generator=_gen(11))
    pred = torch.stack([target[0], _swap_coords(target)[1]])  # sample 0 in given order, sample 1 swapped
    assert hand_invariant_coordinate_mse(pred, target).item() == 0.0


def test_plain_losses_are_torch_means():
    pred, target = torch.rand(3, 10, generator=_gen(12)), torch.rand(3, 10, generator=_gen(13))
    torch.testing.assert_close(coordinate_mse_loss(pred, target), F.mse_loss(pred, target))
    torch.testing.assert_close(coordinate_l1_loss(pred, target), F.l1_loss(pred, target))


def test_shape_errors():
    with pytest.raises(ValueError, match="differ in shape"):
        heatmap_mse_loss(torch.zeros(2, 5, 8, 8), torch.zeros(2, 5, 4, 4))
    with pytest.raises(ValueError, match=r"\[B, 2K\]"):
        hand_invariant_coordinate_mse(torch.zeros(2, 9), torch.zeros(2, 9))
    with pytest.raises(ValueError, match="hand_indices"):
        hand_invariant_heatmap_loss(torch.zeros(1, 5, 4, 4), torch.zeros(1, 5, 4, 4), hand_indices=(1, 1))


def test_canonical_hand_order():
    kp = torch.tensor([
        [[0, 0], [80, 60], [50, 70], [40, 100], [90, 100]],  # hands out of order by x
        [[0, 0], [50, 60], [80, 70], [40, 100], [90, 100]],  # already in order
        [[0, 0], [60, 90], [60, 70], [40, 100], [90, 100]],  # same x: smaller y first
    ], dtype=torch.float32)
    out = canonical_hand_order(kp)
    assert out[:, 1].tolist() == [[50, 70], [50, 60], [60, 70]]
    assert out[:, 2].tolist() == [[80, 60], [80, 70], [60, 90]]
    assert torch.equal(out[:, [0, 3, 4]], kp[:, [0, 3, 4]])
    # a function of the positions only: the incoming labels do not matter, and it is idempotent
    assert torch.equal(canonical_hand_order(kp[:, SWAP]), out)
    assert torch.equal(canonical_hand_order(out), out)
    # works on a single figure [K, 2] and on deeper batches
    assert torch.equal(canonical_hand_order(kp[0]), out[0])
    assert torch.equal(canonical_hand_order(kp[None]), out[None])
