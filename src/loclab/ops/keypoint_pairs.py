"""Symmetric keypoint pairs (a skeleton's left/right parts): checking them and the keypoint order that swaps them.

Shared by the pair-invariant losses (:mod:`loclab.losses.keypoints`), swap-aware PCK
(:mod:`loclab.metrics.pck_instances`) and mirrored training crops (:mod:`loclab.data.keypoint_dataset`).
"""

from __future__ import annotations

from collections.abc import Sequence

Pairs = Sequence[tuple[int, int]]


def check_pairs(pairs: Pairs, num_keypoints: int) -> list[tuple[int, int]]:
    """``pairs`` as int tuples; ``ValueError`` unless all their indices are distinct and in ``[0, num_keypoints)``."""
    pairs = [(int(a), int(b)) for a, b in pairs]
    flat = [i for pair in pairs for i in pair]
    if len(set(flat)) != len(flat) or not all(0 <= i < num_keypoints for i in flat):
        raise ValueError(f"symmetric pairs {pairs} must use distinct keypoint indices in [0, {num_keypoints})")
    return pairs


def partner_order(num_keypoints: int, pairs: Pairs) -> list[int]:
    """Keypoint index order with the two keypoints of each pair exchanged: ``x[:, order]`` puts each keypoint's
    pair partner in its place (unpaired keypoints stay)."""
    order = list(range(num_keypoints))
    for a, b in pairs:
        order[a], order[b] = b, a
    return order
