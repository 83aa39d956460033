"""Detection evaluation (docs/metrics.md): AP under three conventions, scale and anchor analyses, the run's figures.

Entry points with one set of metrics keys: :func:`evaluate_detector_run` (a run directory: predict the val split,
write ``metrics.json``, ``predictions.json``, ``visualizations/``), :func:`score_detection_files` (any model's
predictions file against any annotation file) and :func:`evaluate_detections` (in-memory detections).

The headline is AP@0.5 **VOC all-point** (area under the monotone precision envelope, IoU >= 0.5, continuous
coordinates without ``+1``). ``*_voc07`` is the 11-point VOC2007 number; ``*_coco`` is COCO's 101-point number under
pycocotools' ``maxDets=100`` rule, which keeps the 100 best detections of each image *and class* (pycocotools'
``evaluateImg`` caps per image-category pair), so it equals pycocotools' AP50 on the same detections.
Next to them: COCO's twelve summary numbers (AP@[.5:.95], AP75, AP/AR by object size, AR@1/10/100;
:mod:`loclab.metrics.ap_coco`, equal to pycocotools' ``stats``), the matching rule (``match_rule``), and a 95 %
bootstrap interval over images next to every AP number (``<key>_ci95``; :mod:`loclab.evaluation.per_image`).
Undefined values (e.g. AP of a class without ground truth) are ``null`` in the JSON, never NaN.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from loclab.analysis.coverage import anchor_coverage
from loclab.analysis.scale import DEFAULT_DISPLAY_THRESHOLD, scale_specialisation
from loclab.analysis.sizes import BUCKET_EDGES, object_size_distribution
from loclab.data.datasets import DetectionDataset
from loclab.data.errors import DataError, RecordError
from loclab.data.formats import field_int, finite_numbers, is_finite_number, json_type, read_json_list
from loclab.data.formats_detection import DetectionSplit, load_detection_annotations
from loclab.config import DetectorConfig
from loclab.engine.autoanchor import size_edges
from loclab.engine.detection import detections_to_records, load_detector, predict_dataset
from loclab.engine.precision import resolve_numeric_path
from loclab.engine.rundir import RunDirError, read_json, write_json
from loclab.engine.tasks import data_options, detection_split
from loclab.errors import ConfigError
from loclab.evaluation.prediction_checks import (
    warn_if_empty,
    warn_if_normalised,
    warn_if_xyxy_read_as_xywh,
    xywh_hint,
)
from loclab.evaluation.per_image import (
    PER_IMAGE_FILE,
    detection_per_image,
    metric_intervals,
    save_per_image,
    with_intervals,
)
from loclab.metrics.ap import ap_from_matches, ap_matches, compute_ap
from loclab.metrics.ap_coco import IOU_THRESHOLDS, STATS_KEYS, coco_matches, coco_summary
from loclab.metrics.ap_matching import Detections, GroundTruth
from loclab.metrics.bootstrap import BOOTSTRAP_RESAMPLES
from loclab.ops.anchors import generate_anchors
from loclab.ops.postprocess import ImageDetections

logger = logging.getLogger(__name__)

AP_CONVENTION = "VOC all-point (area under the monotone precision envelope), IoU >= 0.5, continuous coordinates"
COCO_CONVENTION = ("COCO 101-point interpolation at IoU 0.5, top 100 detections per image and class "
                   "(pycocotools maxDets=100)")
COCO_MAX_DETECTIONS = 100
COCO_SUMMARY_CONVENTION = ("pycocotools' COCOeval.stats: COCO 101-point AP averaged over IoU 0.50:0.05:0.95 "
                           "(mAP50_95) or at IoU 0.75 (mAP75); object sizes by box area, small <= 32^2 < medium <= "
                           "96^2 < large; AR: recall with the best 1, 10 or 100 detections per image and class")
MATCH_RULES = {
    "coco": "pycocotools: a detection takes the free ground-truth box of highest IoU (>= the threshold)",
    "voc": "VOC devkit: a detection takes the ground-truth box of highest IoU, taken or not; a box already taken "
           "makes it a false positive",
}
PREDICTION_KEYS = ("image_id", "category_id", "bbox", "score")
NEGATIVE_SIZE = "negative width or height"
NUM_DETECTION_IMAGES = 10  # images in detections.png
_PREDICT_BATCH = 32


def ground_truth_table(split: DetectionSplit) -> GroundTruth:
    """The split's boxes as a flat :class:`GroundTruth` over every image of the split (images without boxes too);
    category ids are the split's labels ``0..C-1``. The split's ``difficult`` flags, when it has them, are passed on
    (difficult boxes are ignored by AP as in the VOC devkit)."""
    ids = [record.id for record in split.images]
    difficult = getattr(split, "difficult", None)  # per-image bool [n_i], or None when the split has no flags
    if difficult is not None:
        difficult = np.concatenate([np.asarray(d, dtype=bool).reshape(-1) for d in difficult]) if ids else np.zeros(0)
    return GroundTruth(
        image_id=np.repeat(np.asarray(ids, dtype=np.int64), [len(b) for b in split.boxes]),
        category_id=torch.cat(split.labels).numpy() if ids else np.zeros(0),
        boxes=torch.cat(split.boxes).numpy() if ids else np.zeros((0, 4)),
        image_ids=ids,
        difficult=difficult,
    )


def detections_table(image_ids: Sequence[int], detections: Sequence[ImageDetections]) -> tuple[Detections, np.ndarray]:
    """Per-image detections as one flat table plus the head index ``[D]`` of each row."""
    if len(image_ids) != len(detections):
        raise ValueError(f"{len(image_ids)} image ids for {len(detections)} images of detections")
    if not detections:
        return Detections(np.zeros(0), np.zeros(0), np.zeros((0, 4)), np.zeros(0)), np.zeros(0, dtype=np.int64)
    counts = [len(d.scores) for d in detections]
    table = Detections(
        image_id=np.repeat(np.asarray(image_ids, dtype=np.int64), counts),
        category_id=torch.cat([d.labels for d in detections]).numpy(),
        boxes=torch.cat([d.boxes for d in detections]).numpy(),
        scores=torch.cat([d.scores for d in detections]).numpy(),
    )
    return table, torch.cat([d.scales for d in detections]).numpy().astype(np.int64)


def _json_ready(value: Any) -> Any:
    """NaN and infinities become ``None``, dict keys strings, numpy floats Python floats; the rest is kept."""
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def _tp_points(curve: dict[str, list[float]]) -> dict[str, list[float]]:
    """The curve at each true positive (where recall steps up) and at the last detection, rounded to 6 decimals.
    The envelope and all three AP conventions depend only on the TP points, so AP recomputed from them is exact up
    to the rounding."""
    recall, precision = np.asarray(curve["recall"]), np.asarray(curve["precision"])
    if recall.size == 0:
        return {"recall": [], "precision": []}
    keep = np.union1d(np.flatnonzero(np.diff(recall, prepend=0.0) > 0), [recall.size - 1])
    return {"recall": np.round(recall[keep], 6).tolist(), "precision": np.round(precision[keep], 6).tolist()}


def evaluate_detections(
    split: DetectionSplit,
    image_ids: Sequence[int] | None,
    detections: Sequence[ImageDetections] | Detections,
    scales: np.ndarray | None = None,
    class_names: dict[int, str] | None = None,
    *,
    display_threshold: float | None = None,
    num_scales: int = 3,
    bucket_edges: Sequence[float] = BUCKET_EDGES,
    bucket_split: DetectionSplit | None = None,
    match_rule: str = "coco",
    resamples: int = BOOTSTRAP_RESAMPLES,
    per_image_path: Path | str | None = None,
) -> dict[str, Any]:
    """AP@0.5 (three conventions), AP@0.7, COCO's summary numbers, PR curves, intervals and the scale table for
    detections of ``split``.

    Args:
        split: the ground truth.
        image_ids: with per-image ``detections``, ``image_ids[i]`` is the image of ``detections[i]`` (required);
            ignored for a :class:`Detections` table. Every image of the split is evaluated either way.
        detections: per-image :class:`ImageDetections` (labels ``0..C-1``, carrying their ``scales``), or a flat
            :class:`Detections` table whose ``category_id`` are the split's labels ``0..C-1``.
        scales: ``[D]`` head index per row of a :class:`Detections` table; ``None``: no scale table.
        class_names: ``{label: name}``, default ``split.categories``; display_threshold: default 0.5.
        bucket_edges: the scale table's size-bucket edges (default the course's 40 / 96 px).
        bucket_split: ``split`` with the boxes to measure sizes on (the letterboxed model input, where the anchors
            live: ``DetectionDataset.input_split``); default ``split`` itself.
        match_rule: ``"coco"`` (pycocotools' matching, the default) or ``"voc"`` (the devkit's) for the VOC
            numbers (``mAP50``, ``mAP50_voc07``, ``mAP70``) and the curves; COCO numbers always follow pycocotools.
        resamples: bootstrap resamples of the images for the ``*_ci95`` intervals; 0 leaves them out.
        per_image_path: where to write the per-image statistics (``per_image.npz``); ``None``: nowhere.

    Returns:
        ``{"mAP50", "AP50": {name: AP}, "ap_convention", "mAP50_voc07", "AP50_voc07", "mAP50_coco", "AP50_coco",
        "coco_convention", "mAP70", "AP70", "match_rule", "match_rule_description", "mAP50_95", "AP50_95",
        "mAP75", "AP75", "mAP50_95_small", "mAP50_95_medium", "mAP50_95_large", "AR1", "AR10", "AR100",
        "AR100_small", "AR100_medium", "AR100_large", "coco_stats" (the twelve in pycocotools' order),
        "coco_summary_convention", "num_gt": {name: n}, "pr_curves": {name: {"recall", "precision"}},
        "scale_specialisation" (when scales are known), "num_images", "num_detections", "iou_threshold",
        "display_threshold"}``, and with ``resamples`` a ``<key>_ci95`` after each AP key (``mAP50_ci95``:
        ``[low, high]``, ``AP50_ci95``: ``{name: [low, high]}``, ...; not for the size and AR numbers) and
        ``"bootstrap"``. ``pr_curves`` keep the points at each true positive and the last detection.
    """
    if match_rule not in MATCH_RULES:
        raise ConfigError(f"match rule must be one of {', '.join(MATCH_RULES)}, got {match_rule!r}")
    if not isinstance(detections, Detections):
        if image_ids is None:
            raise ValueError("image_ids is required with per-image detections")
        detections, scales = detections_table(image_ids, detections)
    table = detections  # labels 0..C-1 and xyxy boxes from here on
    names = dict(class_names or split.categories)
    gts = ground_truth_table(split)
    voc_matches = {name: ap_matches(table, gts, t, match_rule=match_rule)
                   for name, t in (("voc50", 0.5), ("voc70", 0.7))}
    voc = ap_from_matches(*voc_matches["voc50"], gts, class_names=names)
    coco = compute_ap(table, gts, 0.5, class_names=names, max_detections_per_image_class=COCO_MAX_DETECTIONS)
    strict = ap_from_matches(*voc_matches["voc70"], gts, class_names=names)
    class_ids = sorted(set(names) | set(gts.category_id.tolist()) | set(table.category_id.tolist()))
    coco_all = coco_matches(table, gts)
    summary = coco_summary(coco_all, class_ids, names)
    threshold = DEFAULT_DISPLAY_THRESHOLD if display_threshold is None else float(display_threshold)
    metrics: dict[str, Any] = {
        "mAP50": voc["mAP50"], "AP50": voc["AP50"], "ap_convention": AP_CONVENTION,
        "mAP50_voc07": voc["mAP50_voc07"], "AP50_voc07": voc["AP50_voc07"],
        "mAP50_coco": coco["mAP50_coco"], "AP50_coco": coco["AP50_coco"], "coco_convention": COCO_CONVENTION,
        "mAP70": strict["mAP70"], "AP70": strict["AP70"],
        "match_rule": match_rule, "match_rule_description": MATCH_RULES[match_rule],
        "mAP50_95": summary["mAP50_95"], "AP50_95": summary["AP50_95"],
        "mAP75": summary["mAP75"], "AP75": summary["AP75"],
        **{key: summary[key] for key in STATS_KEYS if key not in ("mAP50_95", "mAP50_coco", "mAP75")},
        "coco_stats": summary["coco_stats"], "coco_summary_convention": COCO_SUMMARY_CONVENTION,
        "num_gt": voc["num_gt"],
        "pr_curves": {name: _tp_points(curve) for name, curve in voc["pr_curves"].items()},
        "num_images": len(gts.image_ids), "num_detections": len(table),
        "iou_threshold": 0.5, "display_threshold": threshold,
    }
    if scales is not None:
        num_scales = max(num_scales, int(np.max(scales)) + 1) if len(scales) else num_scales
        measured = None if bucket_split is None else ground_truth_table(bucket_split).boxes
        metrics["scale_specialisation"] = scale_specialisation(table, scales, gts, 0.5, threshold,
                                                               num_scales=num_scales, bucket_edges=bucket_edges,
                                                               bucket_boxes=measured)
    if resamples or per_image_path is not None:
        matchings = {name: matches[:2] for name, matches in voc_matches.items()}
        matchings.update({f"coco{round(100 * t)}": (coco_all.detections, match)
                          for t, match in zip(IOU_THRESHOLDS, coco_all.matches["all"])})
        per_image = detection_per_image(gts, class_ids, [str(names.get(c, c)) for c in class_ids], matchings)
        if per_image_path is not None:
            save_per_image(per_image_path, per_image)
        if resamples:
            metrics = with_intervals(metrics, metric_intervals(per_image, resamples))
    return _json_ready(metrics)


# --- prediction files --------------------------------------------------------------------------------------------


def _read_predictions(path: Path) -> list[Any]:
    return read_json_list(path, "predictions file", 'detections {"image_id", "category_id", "bbox", "score"}')


def _parse_record(rec: Any, images: set[int], label_of: dict[int, int], xywh: bool, gt: Path) -> tuple:
    if not isinstance(rec, dict):
        raise RecordError(f"is a JSON {json_type(rec)}, expected an object")
    missing = [k for k in PREDICTION_KEYS if k not in rec]
    if missing:
        raise RecordError(f"missing key(s) {', '.join(repr(k) for k in missing)} (needs {', '.join(PREDICTION_KEYS)})")
    image_id = field_int(rec, "image_id")
    if image_id not in images:
        raise RecordError(f"image_id {image_id} is not an image of {gt}")
    category = field_int(rec, "category_id")
    if category not in label_of:
        raise RecordError(f"unknown category_id {category} (known: {sorted(label_of)})")
    a, b, c, d = finite_numbers(rec["bbox"], 4, "bbox")
    box = (a, b, a + c, b + d) if xywh else (a, b, c, d)
    if box[2] < box[0] or box[3] < box[1]:
        raise RecordError(f"bbox {rec['bbox']!r} ({'xywh' if xywh else 'xyxy'}) has {NEGATIVE_SIZE}")
    score = rec["score"]
    if not is_finite_number(score):
        raise RecordError(f"score {score!r} ({json_type(score)}) is not a finite number")
    if "scale" in rec and field_int(rec, "scale") < 0:
        raise RecordError(f"scale {rec['scale']} is negative, expected a head index 0, 1, 2, ...")
    return image_id, label_of[category], box, float(score), rec.get("scale")


def _image_sizes(split: DetectionSplit) -> dict[int, tuple[int, int]]:
    return {record.id: (record.width, record.height) for record in split.images}


def predictions_table(
    records: list[Any], split: DetectionSplit, bbox_format: str = "xyxy", source: Path | str = "predictions"
) -> tuple[Detections, np.ndarray | None]:
    """Validate prediction records ``{"image_id", "category_id", "bbox", "score", ["scale"]}`` against ``split``.

    ``category_id`` is the annotation file's id (mapped here to the split's label); ``bbox`` is xyxy pixels, or
    COCO xywh with ``bbox_format="xywh"``. The optional ``scale`` (head index) must be on every record or none.
    Raises :class:`DataError` naming ``source`` and the record index for any bad record; a box of negative size read
    as xyxy in a file whose boxes fit their images better as xywh adds the hint to pass ``--bbox-format xywh``.

    Returns:
        ``(Detections with labels 0..C-1 and xyxy boxes, scales [D] int64 or None)``.
    """
    if bbox_format not in ("xyxy", "xywh"):
        raise ValueError(f"bbox_format must be 'xyxy' or 'xywh', got {bbox_format!r}")
    images = {record.id for record in split.images}
    label_of = {cat_id: label for label, cat_id in enumerate(split.category_ids)}
    parsed = []
    for index, rec in enumerate(records):
        try:
            parsed.append(_parse_record(rec, images, label_of, bbox_format == "xywh", split.annotation_file))
        except RecordError as err:
            negative = bbox_format == "xyxy" and NEGATIVE_SIZE in str(err)
            hint = xywh_hint(records, _image_sizes(split)) if negative else ""
            raise DataError(f"{source}: predictions[{index}]: {err}.{hint}") from None
    with_scale = [p[4] is not None for p in parsed]
    if any(with_scale) and not all(with_scale):
        raise DataError(f"{source}: predictions[{with_scale.index(False)}]: missing key 'scale' that other records "
                        "have (give it on every record or on none).")
    columns = list(zip(*parsed)) if parsed else [[], [], [], [], []]
    table = Detections(columns[0], columns[1], np.asarray(columns[2], dtype=np.float64).reshape(-1, 4), columns[3])
    return table, (np.asarray(columns[4], dtype=np.int64) if parsed and all(with_scale) else None)


def score_detection_files(gt_path: Path | str, pred_path: Path | str, bbox_format: str = "xyxy", *,
                          match_rule: str = "coco", resamples: int = BOOTSTRAP_RESAMPLES) -> dict[str, Any]:
    """Score a predictions JSON list against an annotation file (reference xyxy or COCO; images not needed).

    Args:
        gt_path: annotation file, read with :func:`load_detection_annotations` (format auto-detected).
        pred_path: JSON list of ``{"image_id", "category_id", "bbox", "score"}`` (optional ``"scale"``); ``bbox``
            is xyxy pixels, or COCO xywh with ``bbox_format="xywh"``.
        match_rule, resamples: as in :func:`evaluate_detections`.

    Returns:
        the keys of :func:`evaluate_detections` (``scale_specialisation`` only when records carry ``scale``),
        ``"object_sizes"`` of the annotation file and ``"source": {"gt", "pred", "bbox_format", "gt_format"}``;
        no ``"anchor_coverage"`` (it needs a model's anchors). Every image of the annotation file is evaluated.

    Warns (:class:`loclab.evaluation.prediction_checks.PredictionWarning`) on an empty file, on boxes that all lie
    within [0, 1] (normalised coordinates), and on xyxy boxes read as xywh.
    """
    split = load_detection_annotations(gt_path, check_images=False)
    pred_path = Path(pred_path)
    records = _read_predictions(pred_path)
    warn_if_empty(records, pred_path, "detections")
    table, scales = predictions_table(records, split, bbox_format, pred_path)
    sizes = _image_sizes(split)
    warn_if_normalised(table.boxes.reshape(-1, 2), [sizes[int(i)] for i in np.repeat(table.image_id, 2)], pred_path,
                       "boxes")
    if bbox_format == "xywh":
        warn_if_xyxy_read_as_xywh(records, sizes, pred_path)
    metrics = evaluate_detections(split, None, table, scales, match_rule=match_rule, resamples=resamples)
    metrics["object_sizes"] = _json_ready(object_size_distribution(split))
    metrics["source"] = {"gt": str(gt_path), "pred": str(pred_path), "bbox_format": bbox_format,
                         "gt_format": split.format_reason}
    return metrics


def summary_line(metrics: dict[str, Any]) -> str:
    """One line, plus a second with COCO's summary when the metrics have it: ``mAP@0.5 (VOC all-point) 0.812
    [0.790, 0.833] | circle 0.80 square 0.85 triangle 0.79 | VOC07 0.80 | COCO-101 0.81 | mAP@0.7 0.65`` and
    ``COCO AP@[.5:.95] 0.612 [0.590, 0.634] | AP75 0.65 | AP small/medium/large 0.50/0.60/0.70 | AR@1/10/100
    0.40/0.68/0.70``; an interval appears where the metrics have one (``*_ci95``)."""
    def fmt(value: Any, digits: int) -> str:  # null and NaN: undefined (no ground truth)
        return "n/a" if value is None or value != value else f"{value:.{digits}f}"

    def with_ci(key: str, digits: int) -> str:
        interval = metrics.get(f"{key}_ci95")
        bounds = f" [{fmt(interval[0], digits)}, {fmt(interval[1], digits)}]" if interval else ""
        return fmt(metrics[key], digits) + bounds

    per_class = " ".join(f"{name} {fmt(ap, 2)}" for name, ap in metrics["AP50"].items())
    line = (f"mAP@0.5 (VOC all-point) {with_ci('mAP50', 3)} | {per_class} | "
            f"VOC07 {fmt(metrics['mAP50_voc07'], 2)} | COCO-101 {fmt(metrics['mAP50_coco'], 2)}")
    line += f" | mAP@0.7 {fmt(metrics['mAP70'], 2)}" if "mAP70" in metrics else ""
    if metrics.get("match_rule", "coco") != "coco":
        line += f" | {metrics['match_rule']} matching"
    if "mAP50_95" not in metrics:
        return line
    sizes = "/".join(fmt(metrics[f"mAP50_95_{size}"], 2) for size in ("small", "medium", "large"))
    recalls = "/".join(fmt(metrics[f"AR{n}"], 2) for n in (1, 10, 100))
    return (f"{line}\nCOCO AP@[.5:.95] {with_ci('mAP50_95', 3)} | AP75 {fmt(metrics['mAP75'], 2)} | "
            f"AP small/medium/large {sizes} | AR@1/10/100 {recalls}")


def size_bucket_edges(cfg: DetectorConfig, split: DetectionSplit) -> list[float]:
    """The size-bucket edges of a run's analyses, in model-input pixels: the course's 40 / 96 px for the reference
    shapes (scaled from the 224 px input they were chosen for), else halfway between neighbouring scales' mean
    anchor sizes (:func:`loclab.engine.autoanchor.size_edges`), so each bucket is the objects one head is for."""
    if split.format == "reference":
        return [edge * cfg.image_size / 224 for edge in BUCKET_EDGES]
    return size_edges(cfg)


def evaluate_detector_run(run_dir: Path | str, data_root: Path | str | None = None, progress: bool = True, *,
                          resamples: int = BOOTSTRAP_RESAMPLES) -> dict:
    """Evaluate ``RUN/best_model.pth`` on the val split of the run's data root (or ``data_root``).

    Writes ``RUN/predictions.json`` (records of :func:`detections_to_records`, ``category_id`` = the annotation
    file's id, so ``score_detection_files(val annotations, predictions.json)`` reproduces the numbers),
    ``RUN/metrics.json`` (computed from exactly those records, with ``resamples`` bootstrap resamples for its
    intervals) and ``RUN/per_image.npz`` (:mod:`loclab.evaluation.per_image`) (figures:
    :func:`loclab.report.figures.write_detector_figures`).

    Returns:
        the metrics: :func:`evaluate_detections` keys plus ``"anchor_coverage"``, ``"object_sizes"`` and
        ``"run"`` (checkpoint, data root, model, anchors, inference settings, numeric path, timing).
    """
    run_dir = Path(run_dir)
    run_config = read_json(run_dir / "config.json")
    root = data_root if data_root is not None else run_config.get("data_root")
    if not root:
        raise RunDirError(f"{run_dir / 'config.json'}: no \"data_root\"; pass the dataset root explicitly")
    model, cfg = load_detector(run_dir / "best_model.pth")
    if cfg.train.num_threads:  # as in training: 0 leaves torch's default
        torch.set_num_threads(cfg.train.num_threads)
    split = detection_split(root, "val", **data_options(run_config))
    dataset = DetectionDataset(split, image_size=cfg.image_size, progress=progress)
    numeric = resolve_numeric_path(cfg.train.precision)
    start = time.perf_counter()
    detections = predict_dataset(model, cfg, dataset, batch_size=_PREDICT_BATCH, numeric=numeric, progress=progress)
    seconds = time.perf_counter() - start
    image_ids = [record.id for record in split.images]
    records = detections_to_records(image_ids, detections)
    for record in records:
        record["category_id"] = split.category_ids[record["category_id"]]
    table, scales = predictions_table(records, split, "xyxy", run_dir / "predictions.json")
    edges = size_bucket_edges(cfg, split)
    metrics = evaluate_detections(split, image_ids, table, scales, display_threshold=cfg.display_threshold,
                                  bucket_edges=edges, bucket_split=dataset.input_split,
                                  num_scales=len(cfg.feature_map_sizes), resamples=resamples,
                                  per_image_path=run_dir / PER_IMAGE_FILE)
    # anchors live in the model input, so coverage and sizes are measured on the letterboxed boxes
    anchors = generate_anchors(cfg.feature_map_sizes, cfg.anchor_sizes, cfg.image_size, aspect_ratios=cfg.anchor_ratios)
    metrics["anchor_coverage"] = _json_ready(anchor_coverage(dataset.input_split, anchors, pos_threshold=cfg.pos_threshold,
                                                             neg_threshold=cfg.neg_threshold,
                                                             min_best_iou=cfg.min_best_iou, bucket_edges=edges))
    metrics["object_sizes"] = _json_ready(object_size_distribution(dataset.input_split, edges))
    metrics["run"] = {
        "checkpoint": str(run_dir / "best_model.pth"), "data_root": str(root), "split": "val", "model": cfg.model,
        "feature_map_sizes": list(cfg.feature_map_sizes), "anchor_sizes": [list(s) for s in cfg.anchor_sizes],
        "score_threshold": cfg.score_threshold, "nms_iou": cfg.nms_iou, "max_detections": cfg.max_detections,
        "numeric_path": numeric.name, "predict_seconds": seconds, "images_per_s": len(dataset) / max(seconds, 1e-9),
        "image_size": cfg.image_size, "anchor_ratios": cfg.anchor_ratios and [list(r) for r in cfg.anchor_ratios],
    }
    write_json(run_dir / "predictions.json", records)
    write_json(run_dir / "metrics.json", metrics)
    return metrics
