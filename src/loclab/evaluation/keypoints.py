"""Keypoint evaluation: PCK metrics from arrays, from two JSON files, or from a trained run directory.

All coordinates are ``(x, y)`` image pixels (pixel-centre convention, ``docs/architecture.md``).
A keypoint is correct at threshold ``t`` when ``distance / norm <= t`` (:mod:`loclab.metrics.pck`); results are
keyed by the threshold written as ``"0.05"``, ``"0.1"``, ``"0.15"``, ``"0.2"`` so that they survive JSON.

PCK is per instance (any number per image): unlabelled keypoints are left out of numerator and denominator
(:mod:`loclab.metrics.pck_instances`). Prediction files (``RUN/predictions.json`` and ``loclab eval keypoints
--pred``) are loclab's ``{"image_id": int, "keypoints": [[x, y], ...]}`` records (one per image) or COCO keypoint
results (any number per image); :mod:`loclab.evaluation.keypoint_predictions` reads both and states the rule that
matches predicted to ground-truth instances.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from loclab.config import KeypointConfig, from_dict
from loclab.data.errors import DataError
from loclab.data.formats_keypoints import load_keypoint_annotations
from loclab.engine.keypoints import checkpoint_name, load_keypoint_model, make_dataset, output_type, predict_dataset
from loclab.engine.rundir import RunDirError, read_json, write_json
from loclab.engine.tasks import data_options, keypoint_split
from loclab.errors import ConfigError
from loclab.evaluation.keypoint_predictions import (  # noqa: F401  (read_keypoint_predictions: re-exported)
    coco_result_records,
    match_keypoint_predictions,
    prediction_records,
    read_keypoint_predictions,
)
from loclab.evaluation.per_image import (
    PER_IMAGE_FILE,
    keypoint_per_image,
    metric_intervals,
    save_per_image,
    with_intervals,
)
from loclab.metrics.bootstrap import BOOTSTRAP_RESAMPLES
from loclab.metrics.pck import (
    DEFAULT_THRESHOLDS,
    KEYPOINT_NAMES,
    ArrayLike,
    keypoint_distances,
    pck_ambiguity_ceiling,
    pck_guessed_hand_labels,
)
from loclab.metrics.pck_instances import (
    Norm,
    best_pair_assignment,
    compute_pck_pair_aware,
    compute_pck_per_keypoint_visible,
    compute_pck_visible,
    mean_error_px,
)

PCK_RULE_PREFIX = "correct when distance / norm <= threshold"
NORM_RULES = {
    "bbox": "bbox norm = diagonal of the box around the image's ground-truth keypoints",
    "torso": "torso norm = distance from the head to the midpoint of the two feet",
}
PAIR_NORM = "pair:"  # --normalize pair:NAME_A,NAME_B
VIS_DIR = "visualizations"
NUM_PREDICTION_IMAGES = 10
# Why a ceiling is not reported for data outside the reference format.
CEILING_NOT_IDENTICAL = ("not computed: the ceiling assumes the keypoints of a symmetric pair are drawn identically, "
                         "so that their labels cannot be told from the pixels; that holds for the reference stick "
                         "figures' hands, not for {format} data, whose left and right sides differ in context")
CEILING_NO_PAIR = "not computed: the skeleton has no symmetric pair"


def threshold_key(threshold: float) -> str:
    """The JSON key of a threshold: ``0.05 -> "0.05"``, ``0.10 -> "0.1"``, ``0.2 -> "0.2"``."""
    return f"{float(threshold):g}"


def _pair_names(normalize_by: str) -> tuple[str, str] | None:
    if not normalize_by.startswith(PAIR_NORM):
        return None
    names = [n.strip() for n in normalize_by[len(PAIR_NORM):].split(",")]
    if len(names) != 2 or not all(names) or names[0] == names[1]:
        raise ConfigError(f"--normalize {normalize_by!r}: expected pair:NAME_A,NAME_B with two different keypoint names")
    return names[0], names[1]


def pck_rule(normalize_by: str) -> str:
    """The stated correctness rule for ``normalize_by`` (``'bbox'``, ``'torso'`` or ``'pair:NAME_A,NAME_B'``)."""
    pair = _pair_names(normalize_by) if isinstance(normalize_by, str) else None
    if pair is not None:
        return (f"{PCK_RULE_PREFIX}; pair norm = distance between {pair[0]} and {pair[1]} (instances where either "
                "is unlabelled are not scored)")
    if normalize_by not in NORM_RULES:
        raise ConfigError(f"normalize_by must be 'bbox', 'torso' or 'pair:NAME_A,NAME_B', got {normalize_by!r}")
    return f"{PCK_RULE_PREFIX}; {NORM_RULES[normalize_by]}"


def resolve_norm(normalize_by: str, names: Sequence[str]) -> Norm:
    """``'bbox'`` / ``'torso'`` as they are; ``'pair:A,B'`` -> the index pair of the keypoints named A and B."""
    pair = _pair_names(normalize_by)
    if pair is None:
        pck_rule(normalize_by)  # validates
        return normalize_by
    missing = [n for n in pair if n not in names]
    if missing:
        raise ConfigError(f"--normalize {normalize_by!r}: no keypoint named {', '.join(missing)} "
                          f"(the keypoints are {', '.join(names)})")
    return names.index(pair[0]), names.index(pair[1])


def _keyed(values: dict[float, float | None]) -> dict[str, float | None]:
    return {threshold_key(t): v for t, v in values.items()}


def _hand_indices(names: Sequence[str]) -> tuple[int, int] | None:
    """Positions of ``left_hand``/``right_hand`` in ``names``; ``None`` when the skeleton has no such pair."""
    if "left_hand" in names and "right_hand" in names:
        return names.index("left_hand"), names.index("right_hand")
    return None


def keypoint_metrics(
    predictions: ArrayLike,
    ground_truths: ArrayLike,
    normalize_by: str = "bbox",
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    *,
    keypoint_names: Sequence[str] | None = None,
    visible: ArrayLike | None = None,
    symmetric_pairs: Sequence[tuple[int, int]] | None = None,
    identical_pairs: bool | None = None,
    data_format: str = "this",
    num_images: int | None = None,
    instance_image: ArrayLike | None = None,
    image_ids: Sequence[int] | None = None,
    resamples: int = BOOTSTRAP_RESAMPLES,
    per_image_path: Path | str | None = None,
) -> dict[str, Any]:
    """PCK report for ``predictions`` vs ``ground_truths``, both ``[M, K, 2]`` pixels, one row per instance.

    Returns a JSON-ready dict:

    * ``pck``: ``{"0.05": fraction, ...}`` standard PCK over all instances and labelled keypoints.
    * ``pck_swap``: swap-aware PCK, the two keypoints of each symmetric pair matched per instance in the better
      order (the stick figures' hand labels cannot be told from the pixels: docs/metrics.md, 'Hand ambiguity').
      ``None`` when the skeleton has no symmetric pair.
    * ``per_keypoint`` / ``per_keypoint_swap``: ``{name: {"0.05": fraction, ...}}`` (``None`` for a keypoint
      that is never labelled).
    * ``ceiling``: :func:`pck_ambiguity_ceiling` of these ground truths, the best expected standard PCK of any
      predictor when the hand labels are a coin flip (it hedges: both hands at their midpoint where that is within
      the threshold of both); ``guessed_labels``: :func:`pck_guessed_hand_labels`, the expected standard PCK of a
      perfect localiser that guesses the labels instead. Both only for one pair drawn identically
      (``ceiling_note`` says why they are ``None`` otherwise).
    * ``normalize_by``, ``pck_rule`` (the stated rule), ``thresholds`` (the keys, in order),
      ``mean_error_px`` / ``mean_error_px_swap`` (mean Euclidean distance over labelled, predicted keypoints),
      ``num_images``, ``num_instances``, ``keypoint_names``, ``swap_pairs`` (the pairs by name).

    ``keypoint_names`` defaults to the stick-figure names (docs/data-formats.md, 'Stick figures') for ``K = 5``,
    else ``kp0, kp1, ...``. ``visible`` (bool ``[M, K]``, default all) marks labelled keypoints. ``normalize_by``:
    ``'bbox'``, ``'torso'`` or ``'pair:NAME_A,NAME_B'``. ``symmetric_pairs`` defaults to the keypoints named
    ``left_hand`` and ``right_hand``; ``identical_pairs`` (default: whether that default found the hands) says
    whether the pairs are drawn identically, which the ceiling needs; ``data_format`` names the data in the note.
    ``num_images`` defaults to ``M``. With every keypoint visible, at most one pair and a ``bbox``/``torso`` norm,
    every number is what the single-figure metrics of :mod:`loclab.metrics.pck` give.

    Intervals (:mod:`loclab.evaluation.per_image`): with ``resamples`` (default 1,000; 0 leaves them out) the dict
    has ``pck_ci95`` / ``pck_swap_ci95`` (``{"0.05": [low, high], ...}``, the swap one only with a pair),
    ``mean_error_px_ci95`` / ``mean_error_px_swap_ci95`` (``[low, high]``) and ``bootstrap``: 95 % percentile
    intervals over images, an image's instances resampled together. ``instance_image`` ``[M]`` gives each
    instance's image in ``0..num_images-1`` (default: one image per instance), ``image_ids`` the images' ids
    (default their positions). ``per_image_path``: where to write the per-image statistics.
    """
    rule = pck_rule(normalize_by)
    distances = keypoint_distances(predictions, ground_truths)  # validates shapes, M >= 1
    num_keypoints = distances.shape[1]
    if keypoint_names is None:
        default = num_keypoints == len(KEYPOINT_NAMES)
        keypoint_names = KEYPOINT_NAMES if default else [f"kp{k}" for k in range(num_keypoints)]
    names = list(keypoint_names)
    norm = resolve_norm(normalize_by, names)
    if symmetric_pairs is None:
        hands = _hand_indices(names)
        pairs = [hands] if hands is not None else []
        identical_pairs = hands is not None if identical_pairs is None else identical_pairs
    else:
        pairs = [(int(a), int(b)) for a, b in symmetric_pairs]
    if not pairs:
        note = CEILING_NO_PAIR
    elif not identical_pairs:
        note = CEILING_NOT_IDENTICAL.format(format=data_format)
    elif len(pairs) > 1:
        note = "not computed: the ceiling is defined for a single pair of identically drawn keypoints"
    else:
        note = None

    metrics: dict[str, Any] = {
        "pck": _keyed(compute_pck_visible(predictions, ground_truths, thresholds, norm, visible=visible)),
        "pck_swap": None,
        "per_keypoint": {},
        "per_keypoint_swap": None,
        "ceiling": None,
        "guessed_labels": None,
        "normalize_by": normalize_by,
        "pck_rule": rule,
        "thresholds": [threshold_key(t) for t in thresholds],
        "mean_error_px": mean_error_px(predictions, ground_truths, visible=visible),
        "mean_error_px_swap": None,
        "num_images": int(distances.shape[0]) if num_images is None else int(num_images),
        "keypoint_names": names,
        "num_instances": int(distances.shape[0]),
        "swap_pairs": [[names[a], names[b]] for a, b in pairs],
        "ceiling_note": note,
    }
    per_kp = compute_pck_per_keypoint_visible(predictions, ground_truths, thresholds, norm, names, visible=visible)
    metrics["per_keypoint"] = {name: _keyed(v) for name, v in per_kp.items()}
    if pairs:
        matched, _ = best_pair_assignment(predictions, ground_truths, pairs, visible=visible)
        swap = compute_pck_pair_aware(predictions, ground_truths, pairs, thresholds, norm, visible=visible)
        metrics["pck_swap"] = _keyed(swap)
        per_swap = compute_pck_per_keypoint_visible(matched, ground_truths, thresholds, norm, names, visible=visible)
        metrics["per_keypoint_swap"] = {name: _keyed(v) for name, v in per_swap.items()}
        metrics["mean_error_px_swap"] = mean_error_px(matched, ground_truths, visible=visible)
    if note is None and isinstance(norm, tuple):
        metrics["ceiling_note"] = "not computed for a pair norm"
    elif note is None:
        metrics["ceiling"] = _keyed(pck_ambiguity_ceiling(ground_truths, thresholds, norm, pairs[0]))
        metrics["guessed_labels"] = _keyed(pck_guessed_hand_labels(ground_truths, thresholds, norm, pairs[0]))
    if resamples or per_image_path is not None:
        if image_ids is None:
            image_ids = range(metrics["num_images"] if instance_image is not None else len(distances))
        per_image = keypoint_per_image(predictions, ground_truths, thresholds, norm, image_ids,
                                       threshold_keys=metrics["thresholds"], visible=visible, pairs=pairs,
                                       matched=matched if pairs else None, instance_image=instance_image)
        if per_image_path is not None:
            save_per_image(per_image_path, per_image)
        if resamples:
            metrics = with_intervals(metrics, metric_intervals(per_image, resamples))
    return metrics


# ------------------------------------------------------------------------------------------------ file scoring


def score_keypoint_files(gt_path: Path | str, pred_path: Path | str, normalize_by: str = "bbox", *,
                         resamples: int = BOOTSTRAP_RESAMPLES) -> dict:
    """PCK of a prediction file (loclab's or COCO results) against a keypoint annotation file (reference or COCO).

    Images are not opened (``check_images=False``). Unlabelled keypoints (COCO ``v = 0``) are not scored;
    ground-truth instances without a matched prediction count as wrong (rule:
    :mod:`loclab.evaluation.keypoint_predictions`). The ceiling is reported for the reference format only.
    Returns :func:`keypoint_metrics` plus ``gt_file``, ``pred_file`` and ``gt_format``, and for COCO results
    ``pred_format``, ``unmatched_instances`` and ``unmatched_predictions``.
    """
    split = load_keypoint_annotations(gt_path, check_images=False)
    if split.num_instances == 0:
        raise DataError(f"{gt_path}: has no {'images' if len(split) == 0 else 'instances'} to score.")
    matched = match_keypoint_predictions(pred_path, split)
    metrics = keypoint_metrics(matched.keypoints, split.keypoints.double(), normalize_by,
                               keypoint_names=split.keypoint_names, visible=split.visible,
                               symmetric_pairs=split.symmetric_pairs, identical_pairs=split.format == "reference",
                               data_format=split.format, num_images=len(split), instance_image=split.instance_image,
                               image_ids=[image.id for image in split.images], resamples=resamples)
    result = {**metrics, "gt_file": str(gt_path), "pred_file": str(pred_path), "gt_format": split.format}
    if matched.format != "loclab":
        result.update({"pred_format": matched.format, "unmatched_instances": matched.unmatched_instances,
                       "unmatched_predictions": matched.unmatched_predictions})
    return result


# --------------------------------------------------------------------------------------------- run directories


def run_data_root(run_dir: Path, data_root: Path | str | None) -> Path:
    if data_root is not None:
        return Path(data_root)
    config = read_json(run_dir / "config.json")
    if "data_root" not in config:
        raise RunDirError(f"{run_dir / 'config.json'}: has no \"data_root\"; pass data_root explicitly.")
    return Path(config["data_root"])


def evaluate_keypoint_run(
    run_dir: Path | str, data_root: Path | str | None = None, normalize_by: str = "bbox", *,
    resamples: int = BOOTSTRAP_RESAMPLES,
) -> dict[str, Any]:
    """Evaluate a trained keypoint run on the validation split and write its metrics, predictions and figures.

    Reads ``RUN/config.json`` (``data_root``; overridden by ``data_root``) and the checkpoint named by
    :func:`checkpoint_name` (``heatmap_model.pth``, ``regression_model.pth``, ...), which carries the model's
    config. Heatmap models are decoded twice: sub-pixel (the headline ``pck``/``pck_swap``) and plain argmax
    (``pck_argmax``, ``pck_swap_argmax``, ``mean_error_px_argmax``). Writes ``RUN/metrics.json`` and
    ``RUN/predictions.json`` (sub-pixel predictions in image pixels: loclab's format for the reference layout,
    COCO results otherwise; both are what :func:`score_keypoint_files` reads) atomically, and the per-image
    statistics of the headline numbers, ``RUN/per_image.npz`` (intervals with ``resamples`` bootstrap resamples:
    :func:`keypoint_metrics`) (figures: :func:`loclab.report.figures.write_keypoint_run_figures`). Returns the
    metrics dict.
    """
    run_dir = Path(run_dir)
    config = read_json(run_dir / "config.json")
    if "keypoints" not in config:
        raise RunDirError(f"{run_dir / 'config.json'}: no \"keypoints\" section; not a keypoint run.")
    root = run_data_root(run_dir, data_root)
    weights = run_dir / checkpoint_name(from_dict(KeypointConfig, config["keypoints"]))
    model, cfg = load_keypoint_model(weights)
    dataset = make_dataset(keypoint_split(root, "val", **data_options(config)), cfg)
    split = dataset.split
    gts = dataset.keypoints.double()
    options = {"keypoint_names": list(dataset.keypoint_names), "visible": dataset.visible,
               "symmetric_pairs": split.symmetric_pairs, "identical_pairs": split.format == "reference",
               "data_format": split.format, "num_images": len(split), "instance_image": dataset.instance_image,
               "image_ids": [image.id for image in split.images]}
    preds = predict_dataset(model, cfg, dataset, subpixel=True)  # image pixels, through each inverse crop
    metrics = keypoint_metrics(preds, gts, normalize_by, **options, resamples=resamples,
                               per_image_path=run_dir / PER_IMAGE_FILE)
    is_heatmap = output_type(cfg) == "heatmap"
    metrics["decoding"] = "subpixel" if is_heatmap else "regression"
    if is_heatmap:
        argmax = keypoint_metrics(predict_dataset(model, cfg, dataset, subpixel=False), gts, normalize_by, **options,
                                  resamples=0)
        metrics["pck_argmax"] = argmax["pck"]
        metrics["pck_swap_argmax"] = argmax["pck_swap"]
        metrics["mean_error_px_argmax"] = argmax["mean_error_px"]
    metrics.update({"model": cfg.model, "split": "val", "data_root": str(root), "checkpoint": weights.name})
    one_per_image = split.format == "reference" and split.num_instances == len(split)
    records = prediction_records(dataset.image_ids, preds) if one_per_image else \
        coco_result_records(dataset.image_ids, preds)
    write_json(run_dir / "predictions.json", records)
    write_json(run_dir / "metrics.json", metrics)
    return metrics


def summary_line(metrics: dict[str, Any]) -> str:
    """One line: ``heatmap  PCK@0.05 0.412  @0.1 0.731 ... | swap-aware @0.1 0.95 | ceiling @0.1 0.98 | 1.9 px``;
    a 95 % interval follows each number that has one (``[0.390, 0.433]``)."""
    def interval(bounds: Sequence[float | None] | None, digits: int = 3) -> str:
        if not bounds or None in bounds:
            return ""
        return f" [{bounds[0]:.{digits}f}, {bounds[1]:.{digits}f}]"

    def row(values: dict[str, float] | None, key: str | None = None) -> str:
        intervals = (metrics.get(f"{key}_ci95") if key else None) or {}
        return "  ".join(f"@{k} {v:.3f}{interval(intervals.get(k))}" for k, v in (values or {}).items())

    count = f"{metrics['num_images']} images"
    if metrics.get("num_instances", metrics["num_images"]) != metrics["num_images"]:
        count += f", {metrics['num_instances']} instances"
    parts = [f"{metrics.get('model', 'keypoints')} ({count}, norm {metrics['normalize_by']})",
             f"PCK {row(metrics['pck'], 'pck')}"]
    if metrics.get("pck_swap"):
        parts.append(f"swap-aware {row(metrics['pck_swap'], 'pck_swap')}")
    if metrics.get("pck_argmax"):
        parts.append(f"argmax {row(metrics['pck_argmax'])}")
    if metrics.get("ceiling"):
        parts.append(f"ceiling {row(metrics['ceiling'])}")
    if metrics.get("mean_error_px") is not None:
        parts.append(f"mean error {metrics['mean_error_px']:.2f}{interval(metrics.get('mean_error_px_ci95'), 2)} px")
    return " | ".join(parts)
