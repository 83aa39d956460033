"""Keypoint evaluation: PCK metrics from arrays, from two JSON files, or from a trained run directory.

All coordinates are ``(x, y)`` image pixels (pixel-centre convention, ``docs/architecture.md``).
A keypoint is correct at threshold ``t`` when ``distance / norm <= t`` (:mod:`loclab.metrics.pck`); results are
keyed by the threshold written as ``"0.05"``, ``"0.1"``, ``"0.15"``, ``"0.2"`` so that they survive JSON.

Prediction files (``RUN/predictions.json`` and ``loclab eval keypoints --pred``) are a JSON array of
``{"image_id": int, "keypoints": [[x, y], ...]}`` with one record per image and ``K`` points in the order of the
annotation file's keypoint names.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from loclab.config import KeypointConfig, from_dict
from loclab.data.errors import DataError
from loclab.data.formats import is_finite_number, json_type, read_json_list
from loclab.data.formats_keypoints import KeypointSplit, load_keypoint_annotations
from loclab.engine.keypoints import checkpoint_name, load_keypoint_model, make_dataset, output_type, predict_keypoints
from loclab.engine.rundir import RunDirError, read_json, write_json
from loclab.engine.tasks import keypoint_split
from loclab.metrics.pck import (
    DEFAULT_THRESHOLDS,
    KEYPOINT_NAMES,
    ArrayLike,
    NormalizeBy,
    best_hand_assignment,
    compute_pck,
    compute_pck_per_keypoint,
    compute_pck_swap_aware,
    keypoint_distances,
    pck_ambiguity_ceiling,
)

PCK_RULE_PREFIX = "correct when distance / norm <= threshold"
NORM_RULES = {
    "bbox": "bbox norm = diagonal of the box around the image's ground-truth keypoints",
    "torso": "torso norm = distance from the head to the midpoint of the two feet",
}
VIS_DIR = "visualizations"
NUM_PREDICTION_IMAGES = 10
_SHOWN_IDS = 5  # how many ids an error message lists


def threshold_key(threshold: float) -> str:
    """The JSON key of a threshold: ``0.05 -> "0.05"``, ``0.10 -> "0.1"``, ``0.2 -> "0.2"``."""
    return f"{float(threshold):g}"


def pck_rule(normalize_by: NormalizeBy) -> str:
    """The stated correctness rule for ``normalize_by`` (``'bbox'`` or ``'torso'``)."""
    if normalize_by not in NORM_RULES:
        raise ValueError(f"normalize_by must be 'bbox' or 'torso', got {normalize_by!r}")
    return f"{PCK_RULE_PREFIX}; {NORM_RULES[normalize_by]}"


def _keyed(values: dict[float, float]) -> dict[str, float]:
    return {threshold_key(t): v for t, v in values.items()}


def _hand_indices(names: Sequence[str]) -> tuple[int, int] | None:
    """Positions of ``left_hand``/``right_hand`` in ``names``; ``None`` when the skeleton has no such pair."""
    if "left_hand" in names and "right_hand" in names:
        return names.index("left_hand"), names.index("right_hand")
    return None


def keypoint_metrics(
    predictions: ArrayLike,
    ground_truths: ArrayLike,
    normalize_by: NormalizeBy = "bbox",
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    *,
    keypoint_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """PCK report for ``predictions`` vs ``ground_truths``, both ``[N, K, 2]`` pixels, ``N >= 1``.

    Returns a JSON-ready dict:

    * ``pck``: ``{"0.05": fraction, ...}`` standard PCK over all images and keypoints.
    * ``pck_swap``: swap-aware PCK, the two hands matched per image in the closer order (SPEC §1.2: the hand
      labels cannot be told from the pixels). ``None`` when the skeleton has no left/right hand.
    * ``per_keypoint`` / ``per_keypoint_swap``: ``{name: {"0.05": fraction, ...}}``.
    * ``ceiling``: :func:`pck_ambiguity_ceiling` of these ground truths, the best expected standard PCK of a
      perfect localiser that must guess the hand labels (``None`` without hands).
    * ``normalize_by``, ``pck_rule`` (the stated rule), ``thresholds`` (the keys, in order),
      ``mean_error_px`` / ``mean_error_px_swap`` (mean Euclidean distance over all keypoints),
      ``num_images`` (N), ``keypoint_names``.

    ``keypoint_names`` defaults to the stick-figure names (SPEC §1.2) for ``K = 5``, else ``kp0, kp1, ...``;
    the hands are the keypoints named ``left_hand`` and ``right_hand``.
    """
    rule = pck_rule(normalize_by)
    distances = keypoint_distances(predictions, ground_truths)  # validates shapes, N >= 1
    num_keypoints = distances.shape[1]
    if keypoint_names is None:
        default = num_keypoints == len(KEYPOINT_NAMES)
        keypoint_names = KEYPOINT_NAMES if default else [f"kp{k}" for k in range(num_keypoints)]
    names = list(keypoint_names)
    hands = _hand_indices(names)

    metrics: dict[str, Any] = {
        "pck": _keyed(compute_pck(predictions, ground_truths, thresholds, normalize_by)),
        "pck_swap": None,
        "per_keypoint": {},
        "per_keypoint_swap": None,
        "ceiling": None,
        "normalize_by": normalize_by,
        "pck_rule": rule,
        "thresholds": [threshold_key(t) for t in thresholds],
        "mean_error_px": distances.mean().item(),
        "mean_error_px_swap": None,
        "num_images": int(distances.shape[0]),
        "keypoint_names": names,
    }
    per_kp = compute_pck_per_keypoint(predictions, ground_truths, thresholds, normalize_by, names)
    metrics["per_keypoint"] = {name: _keyed(v) for name, v in per_kp.items()}
    if hands is not None:
        matched, _ = best_hand_assignment(predictions, ground_truths, hands)
        swap = compute_pck_swap_aware(predictions, ground_truths, thresholds, normalize_by, hands)
        metrics["pck_swap"] = _keyed(swap)
        per_swap = compute_pck_per_keypoint(matched, ground_truths, thresholds, normalize_by, names)
        metrics["per_keypoint_swap"] = {name: _keyed(v) for name, v in per_swap.items()}
        metrics["ceiling"] = _keyed(pck_ambiguity_ceiling(ground_truths, thresholds, normalize_by, hands))
        metrics["mean_error_px_swap"] = keypoint_distances(matched, ground_truths).mean().item()
    return metrics


# --------------------------------------------------------------------------------------------- prediction files


def _read_json_array(path: Path) -> list[Any]:
    return read_json_list(path, "prediction file", '{"image_id": int, "keypoints": [[x, y], ...]} records')


def _point(value: Any) -> list[float] | None:
    """``[x, y]`` as two finite floats, or ``None`` when it is anything else."""
    if not isinstance(value, list) or len(value) != 2:
        return None
    if not all(is_finite_number(v) for v in value):
        return None
    return [float(value[0]), float(value[1])]


def read_keypoint_predictions(path: Path | str, split: KeypointSplit) -> Tensor:
    """Read a prediction file and align it with ``split``: float64 ``[N, K, 2]``, row ``i`` for ``split.images[i]``.

    Raises :class:`DataError` naming the file and the record index for: a top level that is not an array, a
    record that is not an object or lacks ``image_id``/``keypoints``, a non-integer or unknown or duplicate
    ``image_id``, a wrong number of keypoints, a point that is not two finite numbers, and images of the split
    without a prediction (how many, and the first few ids).
    """
    path = Path(path)
    records = _read_json_array(path)
    row_of = {record.id: i for i, record in enumerate(split.images)}
    num_keypoints = split.num_keypoints
    out = torch.zeros(len(split.images), num_keypoints, 2, dtype=torch.float64)
    seen: dict[int, int] = {}
    for index, record in enumerate(records):
        where = f"{path}: record [{index}]"
        if not isinstance(record, dict):
            raise DataError(f"{where}: is a JSON {json_type(record)}, expected an object with "
                            '"image_id" and "keypoints".')
        missing = [key for key in ("image_id", "keypoints") if key not in record]
        if missing:
            raise DataError(f"{where}: missing key(s) {', '.join(repr(k) for k in missing)} "
                            f"(found keys: {sorted(record)}).")
        image_id = record["image_id"]
        if isinstance(image_id, bool) or not isinstance(image_id, int):
            raise DataError(f"{where}: \"image_id\" is {image_id!r}, expected an integer.")
        where = f"{path}: record [{index}] (image_id {image_id})"
        if image_id not in row_of:
            raise DataError(f"{where}: image_id {image_id} is not an image of {split.annotation_file}.")
        if image_id in seen:
            raise DataError(f"{where}: duplicate image_id, already predicted by record [{seen[image_id]}].")
        seen[image_id] = index
        points = record["keypoints"]
        if not isinstance(points, list) or len(points) != num_keypoints:
            count = f"{len(points)} keypoints" if isinstance(points, list) else f"a JSON {json_type(points)}"
            raise DataError(f"{where}: \"keypoints\" has {count}, expected {num_keypoints} [x, y] pairs "
                            f"({', '.join(split.keypoint_names)}).")
        for k, raw in enumerate(points):
            point = _point(raw)
            if point is None:
                raise DataError(f"{where}: keypoint {k} ({split.keypoint_names[k]}) is {raw!r}, "
                                "expected [x, y] with two finite numbers.")
            out[row_of[image_id], k] = torch.tensor(point, dtype=torch.float64)
    absent = [record.id for record in split.images if record.id not in seen]
    if absent:
        shown = ", ".join(str(i) for i in absent[:_SHOWN_IDS]) + (", ..." if len(absent) > _SHOWN_IDS else "")
        raise DataError(f"{path}: {len(absent)} of {len(split.images)} images of {split.annotation_file} have no "
                        f"prediction (image ids {shown}).")
    return out


def prediction_records(image_ids: Sequence[int], keypoints: ArrayLike) -> list[dict[str, Any]]:
    """``[{"image_id", "keypoints": [[x, y], ...]}, ...]`` for ``keypoints [N, K, 2]`` pixels (the file format)."""
    points = torch.as_tensor(keypoints).detach().cpu().double().tolist()
    return [{"image_id": int(i), "keypoints": p} for i, p in zip(image_ids, points)]


def score_keypoint_files(gt_path: Path | str, pred_path: Path | str, normalize_by: NormalizeBy = "bbox") -> dict:
    """PCK of a prediction file against a keypoint annotation file (reference or COCO keypoints).

    Images are not opened (``check_images=False``). Every keypoint must be labelled (COCO ``v > 0``): PCK
    against an unlabelled position would be silently wrong, so such a file is refused. Returns
    :func:`keypoint_metrics` plus ``gt_file``, ``pred_file`` and ``gt_format``.
    """
    split = load_keypoint_annotations(gt_path, check_images=False)
    if len(split) == 0:
        raise DataError(f"{gt_path}: has no images to score.")
    unlabelled = [record.id for record, vis in zip(split.images, split.visible) if not bool(vis.all())]
    if unlabelled:
        raise DataError(f"{gt_path}: {len(unlabelled)} image(s) have unlabelled keypoints (COCO v = 0), e.g. image "
                        f"id {unlabelled[0]}; PCK needs every keypoint labelled.")
    predictions = read_keypoint_predictions(pred_path, split)
    metrics = keypoint_metrics(predictions, split.keypoints.double(), normalize_by,
                               keypoint_names=split.keypoint_names)
    return {**metrics, "gt_file": str(gt_path), "pred_file": str(pred_path), "gt_format": split.format}


# --------------------------------------------------------------------------------------------- run directories


def run_data_root(run_dir: Path, data_root: Path | str | None) -> Path:
    if data_root is not None:
        return Path(data_root)
    config = read_json(run_dir / "config.json")
    if "data_root" not in config:
        raise RunDirError(f"{run_dir / 'config.json'}: has no \"data_root\"; pass data_root explicitly.")
    return Path(config["data_root"])


def evaluate_keypoint_run(
    run_dir: Path | str, data_root: Path | str | None = None, normalize_by: NormalizeBy = "bbox"
) -> dict[str, Any]:
    """Evaluate a trained keypoint run on the validation split and write its metrics, predictions and figures.

    Reads ``RUN/config.json`` (``data_root``; overridden by ``data_root``) and the checkpoint named by
    :func:`checkpoint_name` (``heatmap_model.pth``, ``regression_model.pth``, ...), which carries the model's
    config. Heatmap models are decoded twice: sub-pixel (the headline ``pck``/``pck_swap``) and plain argmax
    (``pck_argmax``, ``pck_swap_argmax``, ``mean_error_px_argmax``). Writes ``RUN/metrics.json`` and
    ``RUN/predictions.json`` (sub-pixel predictions, the file format of :func:`score_keypoint_files`)
    atomically (figures: :func:`loclab.report.figures.write_keypoint_run_figures`). Returns the metrics dict.
    """
    run_dir = Path(run_dir)
    config = read_json(run_dir / "config.json")
    if "keypoints" not in config:
        raise RunDirError(f"{run_dir / 'config.json'}: no \"keypoints\" section; not a keypoint run.")
    root = run_data_root(run_dir, data_root)
    weights = run_dir / checkpoint_name(from_dict(KeypointConfig, config["keypoints"]))
    model, cfg = load_keypoint_model(weights)
    dataset = make_dataset(keypoint_split(root, "val"), cfg)
    gts = dataset.keypoints.double()
    names = list(dataset.keypoint_names)
    preds = predict_keypoints(model, cfg, dataset.images, subpixel=True)
    metrics = keypoint_metrics(preds, gts, normalize_by, keypoint_names=names)
    is_heatmap = output_type(cfg) == "heatmap"
    metrics["decoding"] = "subpixel" if is_heatmap else "regression"
    if is_heatmap:
        argmax = keypoint_metrics(predict_keypoints(model, cfg, dataset.images, subpixel=False), gts, normalize_by,
                                  keypoint_names=names)
        metrics["pck_argmax"] = argmax["pck"]
        metrics["pck_swap_argmax"] = argmax["pck_swap"]
        metrics["mean_error_px_argmax"] = argmax["mean_error_px"]
    metrics.update({"model": cfg.model, "split": "val", "data_root": str(root), "checkpoint": weights.name})
    write_json(run_dir / "predictions.json", prediction_records(dataset.image_ids, preds))
    write_json(run_dir / "metrics.json", metrics)
    return metrics


def summary_line(metrics: dict[str, Any]) -> str:
    """One line: ``heatmap  PCK@0.05 0.412  @0.1 0.731 ... | swap-aware @0.1 0.95 | ceiling @0.1 0.98 | 1.9 px``."""
    def row(values: dict[str, float] | None) -> str:
        return "  ".join(f"@{k} {v:.3f}" for k, v in (values or {}).items())

    parts = [f"{metrics.get('model', 'keypoints')} ({metrics['num_images']} images, norm {metrics['normalize_by']})",
             f"PCK {row(metrics['pck'])}"]
    if metrics.get("pck_swap"):
        parts.append(f"swap-aware {row(metrics['pck_swap'])}")
    if metrics.get("pck_argmax"):
        parts.append(f"argmax {row(metrics['pck_argmax'])}")
    if metrics.get("ceiling"):
        parts.append(f"ceiling {row(metrics['ceiling'])}")
    parts.append(f"mean error {metrics['mean_error_px']:.2f} px")
    return " | ".join(parts)
