"""Every figure of a run or a study, rebuilt from its files alone (docs/run-directory.md).

This is the one place that turns run files into pictures: evaluation writes numbers, ``viz`` draws,
and these functions connect the two. Each figure whose input is missing is skipped with a warning.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from loclab.analysis.coverage import anchors_at_box_centres
from loclab.config import DetectorConfig, KeypointConfig, from_dict
from loclab.data.datasets import DetectionDataset, decode_images
from loclab.data.errors import DataError
from loclab.data.formats_detection import DetectionSplit
from loclab.data.formats_keypoints import KeypointSplit
from loclab.data.keypoint_dataset import KeypointDataset
from loclab.engine.detection import load_detector
from loclab.engine.rundir import read_json
from loclab.engine.tasks import data_options, detection_split, keypoint_split
from loclab.evaluation.detection import NUM_DETECTION_IMAGES, predictions_table
from loclab.evaluation.keypoints import NUM_PREDICTION_IMAGES, VIS_DIR, read_keypoint_predictions, run_data_root
from loclab.metrics.pck_instances import best_pair_assignment
from loclab.ops.affine import apply_affine
from loclab.ops.anchors import generate_anchors
from loclab.viz import detection_overlays as overlays
from loclab.viz import detection_plots as plots
from loclab.viz.keypoint_overlays import draw_failure_examples, draw_keypoint_predictions, draw_method_comparison
from loclab.viz.keypoint_plots import plot_ablation, plot_heatmaps_across_epochs, plot_loss_curve, plot_pck_curves
from loclab.viz.style import save_figure

logger = logging.getLogger(__name__)


def _read_optional(path: Path) -> Any:
    return read_json(path) if path.is_file() else None


def _val_sample(root: Path | str | None, count: int, image_size: int,
                options: dict) -> tuple[DetectionSplit, DetectionDataset, list[int]]:
    """The val split (read with the run's ``options``, see :func:`~loclab.engine.tasks.data_options`), its first
    ``count`` images letterboxed to the model input, and their indices."""
    if not root:
        raise DataError("config.json names no data_root and none was given")
    split = detection_split(root, "val", **options)
    shown = list(range(min(count, len(split))))
    if not shown:
        raise DataError(f"{split.annotation_file}: the val split has no images")
    sample = replace(split, **{field: getattr(split, field)[:len(shown)] for field in
                               ("images", "boxes", "labels", "annotation_ids")})
    return split, DetectionDataset(sample, image_size=image_size, progress=False), shown


def write_detector_figures(run_dir: Path | str, data_root: Path | str | None = None) -> list[Path]:
    """Rebuild every detection figure of a run from its files alone, into ``RUN/visualizations/``.

    ``training_log.json`` -> loss_curves.png; ``metrics.json`` -> pr_curves.png, scale_specialisation.png,
    anchor_coverage.png, object_sizes.png; ``predictions.json`` + val images -> detections.png; ``config.json`` + one
    val image -> anchors_on_image.png; ``best_model.pth`` + one val image -> feature_maps.png. A figure whose input
    is missing is skipped with a logged warning naming it and the missing file (e.g. feature_maps.png without
    ``best_model.pth``). Returns the paths written, in that order.
    """
    run_dir = Path(run_dir)
    written: list[Path] = []
    config = _read_optional(run_dir / "config.json") or {}
    cfg = from_dict(DetectorConfig, config["detector"]) if "detector" in config else DetectorConfig()
    log, metrics = _read_optional(run_dir / "training_log.json"), _read_optional(run_dir / "metrics.json") or {}
    predictions = _read_optional(run_dir / "predictions.json")

    def make(name: str, ready: bool, missing: str, draw) -> None:
        if ready:
            written.append(save_figure(draw(), run_dir / "visualizations" / name))
        else:
            logger.warning("%s: skipped %s (%s)", run_dir, name, missing)

    make("loss_curves.png", bool(log), "no training_log.json", lambda: plots.loss_curves_figure(log))
    for name, key, draw in (("pr_curves.png", "pr_curves", plots.pr_curves_figure),
                            ("scale_specialisation.png", "scale_specialisation", plots.scale_specialisation_figure),
                            ("anchor_coverage.png", "anchor_coverage", plots.anchor_coverage_figure),
                            ("object_sizes.png", "object_sizes", plots.object_sizes_figure)):
        part = metrics if key == "pr_curves" else metrics.get(key)
        make(name, key in metrics, f"no \"{key}\" in metrics.json", lambda draw=draw, part=part: draw(part))
    try:
        val, sample, shown = _val_sample(data_root if data_root is not None else config.get("data_root"),
                                         NUM_DETECTION_IMAGES, cfg.image_size, data_options(config))
    except (DataError, OSError) as err:
        for name in ("detections.png", "anchors_on_image.png", "feature_maps.png"):
            logger.warning("%s: skipped %s (val images unavailable: %s)", run_dir, name, err)
        return written
    # drawn in the letterboxed model input, where predictions are mapped back from image pixels
    split, images = sample.input_split, torch.stack([sample.input_image(i) for i in shown])
    ids = [split.images[i].id for i in shown]

    def detections_figure():
        table, _ = predictions_table(predictions, val, "xyxy", run_dir / "predictions.json")
        preds = [(sample.letterboxes[k].boxes_to_input(torch.from_numpy(table.boxes[m])).numpy(),
                  table.category_id[m], table.scores[m]) for k, m in enumerate(table.image_id == i for i in ids)]
        gts = [(split.boxes[i].numpy(), split.labels[i].numpy()) for i in shown]
        names = [split.categories[label] for label in sorted(split.categories)]
        return overlays.detections_figure(images, gts, preds, names, cfg.display_threshold, [f"image {i}" for i in ids])

    def anchors_figure():
        anchors = generate_anchors(cfg.feature_map_sizes, cfg.anchor_sizes, cfg.image_size,
                                   aspect_ratios=cfg.anchor_ratios)
        cells = anchors_at_box_centres(anchors, cfg.feature_map_sizes, cfg.image_size, split.boxes[0])
        titles = [f"S{s + 1}: {n}x{n} cells, stride {cfg.image_size / n:g}, anchors " + "/".join(map("{:g}".format, a))
                  for s, (n, a) in enumerate(zip(cfg.feature_map_sizes, cfg.anchor_sizes))]
        return overlays.anchors_on_image_figure(images[0], split.boxes[0].numpy(), [c.numpy() for c in cells], titles)

    def feature_maps_figure():
        model, _ = load_detector(run_dir / "best_model.pth")
        with torch.no_grad():
            features = model.features(images[:1].float() / 255)
        return overlays.feature_maps_figure(images[0], [f[0].mean(dim=0).numpy() for f in features], [
            f"S{s + 1}: mean of {f.shape[1]} channels, {f.shape[2]}x{f.shape[3]}" for s, f in enumerate(features)])

    make("detections.png", predictions is not None, "no predictions.json", detections_figure)
    make("anchors_on_image.png", True, "", anchors_figure)
    make("feature_maps.png", (run_dir / "best_model.pth").is_file(), "no best_model.pth", feature_maps_figure)
    return written


def write_keypoint_run_figures(run_dir: Path | str, data_root: Path | str | None = None) -> list[Path]:
    """Rebuild a keypoint run's figures from its files alone, into ``RUN/visualizations/``.

    * ``loss_curve.png`` from ``training_log.json``;
    * ``heatmaps_across_epochs.png`` from ``heatmap_snapshots.npz`` (runs of heatmap-producing models);
    * ``predictions.png``: the first 10 validation images with ground truth and ``predictions.json``.

    A figure whose source file is missing is skipped. Validation images and ground truth come from
    ``data_root``, else the ``data_root`` recorded in ``metrics.json`` or ``config.json``. Returns the paths
    written.
    """
    run_dir = Path(run_dir)
    out_dir = run_dir / VIS_DIR
    written: list[Path] = []
    model = read_json(run_dir / "config.json").get("keypoints", {}).get("model", "keypoint model")
    if (run_dir / "training_log.json").is_file():
        written.append(plot_loss_curve(read_json(run_dir / "training_log.json"), out_dir / "loss_curve.png",
                                       title=f"{model}: training loss"))
    snapshots = run_dir / "heatmap_snapshots.npz"
    predictions = run_dir / "predictions.json"
    if not snapshots.is_file() and not predictions.is_file():
        return written
    if data_root is None and (run_dir / "metrics.json").is_file():
        data_root = read_json(run_dir / "metrics.json").get("data_root")
    split = keypoint_split(run_data_root(run_dir, data_root), "val")
    if split.format != "reference":
        return written + _own_data_keypoint_figures(run_dir, split, model, snapshots, predictions)
    if snapshots.is_file():
        with np.load(snapshots) as data:
            ids = [int(i) for i in data["image_ids"]] if "image_ids" in data.files else []
        records = {record.id: record for record in split.images}
        images = None
        if ids and all(i in records for i in ids):
            images = decode_images([records[i] for i in ids], "L", progress=False, source=split.annotation_file)
        written.append(plot_heatmaps_across_epochs(snapshots, images, out_dir / "heatmaps_across_epochs.png"))
    if predictions.is_file():
        n = min(NUM_PREDICTION_IMAGES, len(split))
        preds = read_keypoint_predictions(predictions, split)[:n]
        images = decode_images(split.images[:n], "L", progress=False, source=split.annotation_file)
        written.append(draw_keypoint_predictions(
            images, split.keypoints[:n], preds, out_dir / "predictions.png",
            title=f"{model}: validation predictions (green o ground truth, red x prediction)",
            image_ids=[record.id for record in split.images[:n]]))
    return written


def _own_data_keypoint_figures(run_dir: Path, split: KeypointSplit, model: str, snapshots: Path,
                               predictions: Path) -> list[Path]:
    """The snapshot and prediction figures for instances of any size: drawn on the model-input crops of the
    first validation instances (gray), with ground truth and predictions mapped into each crop."""
    cfg = from_dict(KeypointConfig, read_json(run_dir / "config.json")["keypoints"])
    n = min(NUM_PREDICTION_IMAGES, split.num_instances)
    if n == 0:
        return []
    sample = split.select_images(range(int(split.instance_image[n - 1]) + 1))
    width, height = cfg.heatmap_grid
    crops = KeypointDataset.from_split(sample, heatmap_size=(width, height), progress=False,
                                       input_size=cfg.input_size, in_channels=1, box_padding=cfg.box_padding)
    images, transforms = crops.images[:n], crops.transforms[:n]
    out_dir, written = run_dir / VIS_DIR, []
    if snapshots.is_file():  # taken on the first validation instances, in order
        with np.load(snapshots) as data:
            shown = len(data["image_ids"]) if "image_ids" in data.files else 0
        written.append(plot_heatmaps_across_epochs(snapshots, images[:shown] if 0 < shown <= n else None,
                                                   out_dir / "heatmaps_across_epochs.png"))
    if predictions.is_file():
        gts = apply_affine(split.keypoints[:n].double(), transforms)
        gts[~split.visible[:n]] = float("nan")  # unlabelled: nothing to draw
        preds = apply_affine(read_keypoint_predictions(predictions, split)[:n], transforms)
        written.append(draw_keypoint_predictions(
            images, gts, preds, out_dir / "predictions.png",
            title=f"{model}: validation instances in the model input (green o ground truth, red x prediction)",
            image_ids=crops.image_ids[:n]))
    return written


def write_comparison_figures(keypoint_dir: Path, data_root: Path) -> list[Path]:
    """PCK curves, side-by-side predictions and failure examples from ``keypoints/comparison.json``."""
    keypoint_dir = Path(keypoint_dir)
    comparison = read_json(keypoint_dir / "comparison.json")
    out = keypoint_dir / VIS_DIR
    curves: dict[str, dict[float, float]] = {}
    for name, m in comparison["models"].items():
        curves[f"{name} standard"] = {float(t): v for t, v in m["pck"].items()}
        if m.get("pck_swap"):  # None for a skeleton without symmetric pairs
            curves[f"{name} swap-aware"] = {float(t): v for t, v in m["pck_swap"].items()}
    ceiling, guessed = ({float(t): v for t, v in comparison[key].items()} if comparison.get(key) else None
                        for key in ("ceiling", "guessed_labels"))
    written = [plot_pck_curves(curves, out / "pck_curves.png", ceiling=ceiling, guessed_labels=guessed,
                               title="PCK on the validation split: heatmap vs regression")]
    split = keypoint_split(data_root, "val")
    preds = {m: read_keypoint_predictions(keypoint_dir / m / "predictions.json", split) for m in ("heatmap", "regression")}
    if split.format != "reference":
        return written + _own_data_comparison_figures(keypoint_dir, split, preds, comparison["failures"])
    n = min(NUM_PREDICTION_IMAGES, len(split))
    images = decode_images(split.images, "L", progress=False, source=split.annotation_file)
    ids = [r.id for r in split.images]
    written.append(draw_method_comparison(images[:n], split.keypoints[:n], preds["heatmap"][:n],
                                          preds["regression"][:n], out / "method_comparison.png", image_ids=ids[:n]))
    failures = comparison["failures"]
    written.append(draw_failure_examples(images, split.keypoints, preds["heatmap"], preds["regression"],
                                         failures["image_ids"], out / "failure_cases.png", image_ids=ids,
                                         threshold=failures["threshold"], normalize_by=failures["normalize_by"],
                                         swap_aware=failures["swap_aware"]))
    return written


def _instance_crops(keypoint_dir: Path, split: KeypointSplit, rows: list[int],
                    preds: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor], list[int]]:
    """The model-input crops (gray) of the instances ``rows`` of ``split`` and of the other instances of their
    images: ``(images, ground truths, {model: predictions}, instance index of each crop)``, keypoints mapped into
    the crops, unlabelled ground truths NaN (not drawn)."""
    cfg = from_dict(KeypointConfig, read_json(keypoint_dir / "heatmap" / "config.json")["keypoints"])
    chosen = sorted({int(split.instance_image[r]) for r in rows})
    held = torch.nonzero(torch.isin(split.instance_image, torch.tensor(chosen, dtype=torch.int64))).flatten()
    crops = KeypointDataset.from_split(split.select_images(chosen), heatmap_size=cfg.heatmap_grid, progress=False,
                                       input_size=cfg.input_size, in_channels=1, box_padding=cfg.box_padding)
    images = crops.images if crops.images is not None else torch.stack([crops.input_image(i)
                                                                         for i in range(len(crops))])
    gts = apply_affine(split.keypoints[held].double(), crops.transforms)
    gts[~split.visible[held]] = float("nan")
    mapped = {m: apply_affine(p[held].double(), crops.transforms) for m, p in preds.items()}
    return images, gts, mapped, held.tolist()


def _own_data_comparison_figures(keypoint_dir: Path, split: KeypointSplit, preds: dict[str, torch.Tensor],
                                 failures: dict[str, Any]) -> list[Path]:
    """Method comparison and failure examples for instances of any size: drawn on their model-input crops, as
    :func:`_own_data_keypoint_figures` draws a run's predictions; ids are instance indices."""
    out, written = Path(keypoint_dir) / VIS_DIR, []
    n = min(NUM_PREDICTION_IMAGES, split.num_instances)
    if n == 0:
        return written
    images, gts, mapped, held = _instance_crops(keypoint_dir, split, list(range(n)), preds)
    first = [held.index(i) for i in range(n)]
    written.append(draw_method_comparison(images[first], gts[first], mapped["heatmap"][first],
                                          mapped["regression"][first], out / "method_comparison.png",
                                          title="Heatmap (top) vs regression (bottom) on the same validation instances",
                                          image_ids=list(range(n))))
    shown = sorted({i for ids in failures["image_ids"].values() for i in ids[:3]})
    if split.symmetric_pairs and failures["swap_aware"]:  # drawn in the order the analysis scored
        preds = {m: best_pair_assignment(p, split.keypoints.double(), split.symmetric_pairs, visible=split.visible)[0]
                 for m, p in preds.items()}
    if shown:  # else no instance failed: the figure says so for each type
        images, gts, mapped, held = _instance_crops(keypoint_dir, split, shown, preds)
    names = list(split.keypoint_names)
    failing = {model: torch.tensor([[name in failures["failing_by_image"].get(str(i), {}).get(model, [])
                                     for name in names] for i in held], dtype=torch.bool)
               for model in ("heatmap", "regression")}
    written.append(draw_failure_examples(images, gts, mapped["heatmap"], mapped["regression"], failures["image_ids"],
                                         out / "failure_cases.png", image_ids=held, threshold=failures["threshold"],
                                         normalize_by=failures["normalize_by"], swap_aware=failures["swap_aware"],
                                         keypoint_names=names, failing=failing))
    return written


def write_ablation_figures(ablation_dir: Path) -> list[Path]:
    """The keypoint ablation plot from ``baseline_results.json``."""
    ablation_dir = Path(ablation_dir)
    return [plot_ablation(read_json(ablation_dir / "baseline_results.json"), ablation_dir / VIS_DIR / "ablation.png")]
