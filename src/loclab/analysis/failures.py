"""Failure cases of the keypoint study: where the heatmap model and the regression model disagree
(docs/keypoints.md, 'Failure analysis').

Mine these on the **validation** split only; training images have been fitted and say little about failures.

Per image a model is **correct at threshold t** when *all* K keypoints satisfy ``distance / norm <= t``, the rule
and norms of :mod:`loclab.metrics.pck` (``bbox``: diagonal of the box around the image's ground-truth keypoints).
By default the rule is **swap-aware**: before scoring, each model's two hands are matched to the ground truth in
the order with the smaller summed distance (:func:`loclab.metrics.pck.best_hand_assignment`). The stick
figures' hands are drawn identically and their angles share one distribution, so the "left"/"right" labels cannot
be told from the pixels (docs/metrics.md, 'Hand ambiguity'); without the swap, half of all images would "fail"
for a label coin toss that no model can win. ``swap_aware=False`` gives the plain-label rule.

Types: **A** heatmap correct, regression wrong; **B** regression correct, heatmap wrong; **C** both wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from loclab.metrics.pck import (
    HAND_INDICES,
    KEYPOINT_NAMES,
    ArrayLike,
    NormalizeBy,
    best_hand_assignment,
    keypoint_distances,
    keypoint_norms,
)
from loclab.metrics.pck_instances import best_pair_assignment, instance_norms

FAILURE_TYPES: tuple[str, ...] = ("A", "B", "C")
TYPE_MEANINGS: dict[str, str] = {
    "A": "heatmap correct, regression wrong",
    "B": "regression correct, heatmap wrong",
    "C": "both wrong",
}
MODELS: tuple[str, str] = ("heatmap", "regression")


def failure_rule(threshold: float, normalize_by: NormalizeBy, swap_aware: bool) -> str:
    """The stated per-image correctness rule, for reports."""
    norm = {"bbox": "the diagonal of the box around the image's ground-truth keypoints",
            "torso": "the distance from the head to the midpoint of the two feet"}[normalize_by]
    hands = ("the two hands are first matched per image in the order with the smaller summed distance "
             "(hand labels cannot be told from the pixels)" if swap_aware else "hands scored by their labels")
    return (f"an image is correct for a model when all keypoints satisfy distance / norm <= {threshold:g}, "
            f"norm = {norm}; {hands}")


def keypoint_correctness(
    predictions: ArrayLike,
    ground_truths: ArrayLike,
    threshold: float = 0.1,
    normalize_by: NormalizeBy = "bbox",
    swap_aware: bool = True,
    hand_indices: tuple[int, int] = HAND_INDICES,
) -> tuple[Tensor, Tensor]:
    """Which keypoints are correct, after the optional hand matching.

    Args:
        predictions, ground_truths: ``[N, K, 2]`` ``(x, y)`` pixels.
        threshold: fraction of the per-image norm; correct when ``distance / norm <= threshold``.
        swap_aware: match the hands per image first (:func:`best_hand_assignment`).

    Returns:
        ``(correct bool [N, K], matched predictions float64 [N, K, 2])``; the matched predictions are the
        input with each image's hands in the order that was scored (unchanged when ``swap_aware=False``).
    """
    if swap_aware:
        matched, _ = best_hand_assignment(predictions, ground_truths, hand_indices)
    else:
        matched = torch.as_tensor(predictions).detach().cpu().double()
    ratios = keypoint_distances(matched, ground_truths) / keypoint_norms(ground_truths, normalize_by)[:, None]
    return ratios <= float(threshold), matched


def failure_analysis(
    heatmap_pred: ArrayLike,
    regression_pred: ArrayLike,
    ground_truths: ArrayLike,
    image_ids: Sequence[int],
    threshold: float = 0.1,
    normalize_by: NormalizeBy = "bbox",
    swap_aware: bool = True,
    keypoint_names: Sequence[str] = KEYPOINT_NAMES,
) -> dict[str, Any]:
    """Classify validation images into failure types A/B/C and count which keypoints fail.

    Args:
        heatmap_pred, regression_pred, ground_truths: ``[N, K, 2]`` pixels, row ``i`` for ``image_ids[i]``.
        image_ids: ``N`` image ids (validation split).
        threshold, normalize_by: the per-image rule (module docstring); ``swap_aware`` defaults to True.
        keypoint_names: ``K`` names, in keypoint order.

    Returns a JSON-ready dict:

    * ``rule`` (text), ``threshold``, ``normalize_by``, ``swap_aware``, ``num_images``, ``types`` (meanings);
    * ``counts``: ``{"A": n, "B": n, "C": n, "both_correct": n}`` (they sum to ``num_images``);
    * ``image_ids``: ``{"A": [ids], "B": [...], "C": [...]}`` in input order;
    * ``failing_keypoints``: ``{type: {"heatmap": {name: n}, "regression": {name: n}}}``, how many images of
      that type have each keypoint wrong for each model (the correct model's counts are 0 in A and B);
    * ``keypoint_accuracy``: ``{"heatmap": {name: fraction}, "regression": {...}}`` over all images, same rule;
    * ``failing_by_image``: ``{str(id): {"type": t, "heatmap": [names], "regression": [names]}}`` for every
      image of type A, B or C.
    """
    ids = [int(i) for i in image_ids]
    names = list(keypoint_names)
    correct = {
        "heatmap": keypoint_correctness(heatmap_pred, ground_truths, threshold, normalize_by, swap_aware)[0],
        "regression": keypoint_correctness(regression_pred, ground_truths, threshold, normalize_by, swap_aware)[0],
    }
    num_images, num_keypoints = correct["heatmap"].shape
    if correct["regression"].shape != correct["heatmap"].shape:
        raise ValueError(f"heatmap_pred and regression_pred differ in shape: {tuple(correct['heatmap'].shape)} "
                         f"vs {tuple(correct['regression'].shape)}")
    if len(ids) != num_images:
        raise ValueError(f"got {len(ids)} image_ids for {num_images} images")
    if len(names) != num_keypoints:
        raise ValueError(f"got {len(names)} keypoint_names for K = {num_keypoints}")

    image_ok = {model: c.all(dim=1) for model, c in correct.items()}  # [N] bool each
    masks = {
        "A": image_ok["heatmap"] & ~image_ok["regression"],
        "B": ~image_ok["heatmap"] & image_ok["regression"],
        "C": ~image_ok["heatmap"] & ~image_ok["regression"],
    }
    both = image_ok["heatmap"] & image_ok["regression"]

    failing: dict[str, dict[str, dict[str, int]]] = {}
    for kind, mask in masks.items():
        failing[kind] = {}
        for model in MODELS:
            wrong = (~correct[model][mask]).sum(dim=0)  # [K]
            failing[kind][model] = {name: int(wrong[k]) for k, name in enumerate(names)}

    by_image: dict[str, dict[str, Any]] = {}
    for kind, mask in masks.items():
        for row in torch.nonzero(mask).flatten().tolist():
            wrong = {model: [names[k] for k in range(num_keypoints) if not bool(correct[model][row, k])]
                     for model in MODELS}
            by_image[str(ids[row])] = {"type": kind, **wrong}

    return {
        "rule": failure_rule(threshold, normalize_by, swap_aware),
        "threshold": float(threshold),
        "normalize_by": normalize_by,
        "swap_aware": bool(swap_aware),
        "num_images": int(num_images),
        "types": dict(TYPE_MEANINGS),
        "counts": {**{kind: int(mask.sum()) for kind, mask in masks.items()}, "both_correct": int(both.sum())},
        "image_ids": {kind: [ids[i] for i in torch.nonzero(mask).flatten().tolist()] for kind, mask in masks.items()},
        "failing_keypoints": failing,
        "keypoint_accuracy": {
            model: {name: c[:, k].double().mean().item() for k, name in enumerate(names)}
            for model, c in correct.items()
        },
        "failing_by_image": by_image,
    }


def instance_failure_analysis(
    heatmap_pred: ArrayLike,
    regression_pred: ArrayLike,
    ground_truths: ArrayLike,
    visible: ArrayLike,
    keypoint_names: Sequence[str],
    symmetric_pairs: Sequence[tuple[int, int]] = (),
    threshold: float = 0.1,
) -> dict[str, Any]:
    """:func:`failure_analysis` per instance, for data with unlabelled keypoints and any symmetric pairs (a user's
    own dataset, many instances per image).

    An instance is correct for a model when every *labelled* keypoint satisfies ``distance / norm <= threshold``,
    norm = the diagonal of the box around the instance's labelled keypoints
    (:func:`loclab.metrics.pck_instances.instance_norms`); with ``symmetric_pairs`` each pair is first matched in
    the order closer to the ground truth (:func:`~loclab.metrics.pck_instances.best_pair_assignment`). Instances
    without a labelled keypoint are not classified. A NaN prediction (no prediction matched) is wrong.

    Returns the keys of :func:`failure_analysis`, with ``unit: "instances"``, ``num_images`` = the number of
    instances classified, and ids (``image_ids``, ``failing_by_image``) that are instance indices (rows of the
    split's keypoints); ``keypoint_accuracy`` counts labelled keypoints only.
    """
    gt = torch.as_tensor(ground_truths).detach().cpu().double()
    shown = torch.as_tensor(visible).detach().cpu().bool()
    names, pairs = list(keypoint_names), [(int(a), int(b)) for a, b in symmetric_pairs]
    norms = instance_norms(gt, shown, "bbox")
    scored = shown & norms.isfinite()[:, None]
    rows = torch.nonzero(scored.any(dim=1)).flatten()
    correct = {}
    for model, pred in zip(MODELS, (heatmap_pred, regression_pred)):
        pred = torch.as_tensor(pred).detach().cpu().double()
        if tuple(pred.shape) != tuple(gt.shape):
            raise ValueError(f"{model} predictions have shape {tuple(pred.shape)}, ground truths {tuple(gt.shape)}")
        if pairs:
            pred, _ = best_pair_assignment(pred, gt, pairs, visible=shown)
        ratios = torch.linalg.vector_norm(pred - gt, dim=-1) / norms[:, None]
        correct[model] = ((ratios <= float(threshold)) | ~scored)[rows]  # NaN compares False: wrong
    scored, ids = scored[rows], rows.tolist()
    ok = {model: c.all(dim=1) for model, c in correct.items()}
    masks = {"A": ok["heatmap"] & ~ok["regression"], "B": ~ok["heatmap"] & ok["regression"],
             "C": ~ok["heatmap"] & ~ok["regression"]}
    pairs_text = (f"each symmetric pair ({', '.join(f'{names[a]}/{names[b]}' for a, b in pairs)}) is first matched "
                  "in the order closer to the ground truth" if pairs else "no symmetric pairs")
    return {
        "rule": (f"an instance is correct for a model when all its labelled keypoints satisfy distance / norm <= "
                 f"{threshold:g}, norm = the diagonal of the box around the instance's labelled keypoints; "
                 f"{pairs_text}"),
        "threshold": float(threshold),
        "normalize_by": "bbox",
        "swap_aware": bool(pairs),
        "unit": "instances",
        "num_images": len(ids),
        "types": dict(TYPE_MEANINGS),
        "counts": {**{kind: int(mask.sum()) for kind, mask in masks.items()},
                   "both_correct": int((ok["heatmap"] & ok["regression"]).sum())},
        "image_ids": {kind: [ids[i] for i in torch.nonzero(mask).flatten().tolist()] for kind, mask in masks.items()},
        "failing_keypoints": {kind: {model: {name: int((~correct[model][mask][:, k]).sum()) for k, name in enumerate(names)}
                                     for model in MODELS} for kind, mask in masks.items()},
        "keypoint_accuracy": {model: {name: (float((c[:, k] & scored[:, k]).sum() / scored[:, k].sum())
                                             if bool(scored[:, k].any()) else None) for k, name in enumerate(names)}
                              for model, c in correct.items()},
        "failing_by_image": {str(ids[row]): {"type": kind, **{model: [names[k] for k in range(len(names))
                                                                      if not bool(correct[model][row, k])]
                                                             for model in MODELS}}
                             for kind, mask in masks.items() for row in torch.nonzero(mask).flatten().tolist()},
    }
