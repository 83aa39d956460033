"""The detection task: build, train, predict, evaluate.

Training goes ``cli.cmd_train`` → ``engine.tasks.train_detector_on_root`` (reads and validates the splits) →
:func:`train_detector` here (anchors, model, datasets, loss, and the step closure of :func:`make_step`) →
``engine.train.fit`` → ``_run_epoch``, which calls the step on every batch → ``losses.detection.DetectionLoss``
→ ``ops.matching.match_batch`` / ``ops.boxes``. Prediction goes :func:`predict_images` → the model →
``ops.postprocess``. docs/architecture.md, 'From command to math', walks the same path.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from loclab.config import AugmentConfig, DetectorConfig, from_dict, to_dict
from tqdm import tqdm

from loclab.data.datasets import LETTERBOX_FILL, DetectionDataset, detection_collate, flip_horizontal
from loclab.data.device_data import DeviceDetectionData
from loclab.data.formats_detection import DetectionSplit
from loclab.data.shapes import CATEGORIES as SHAPE_CATEGORIES
from loclab.engine import distributed
from loclab.engine.autoanchor import check_anchors
from loclab.engine.checkpoint import load_checkpoint
from loclab.engine.precision import NumericPath, resolve_numeric_path
from loclab.engine.rundir import start_run
from loclab.engine.train import RunFiles, epochs_for_steps, fit
from loclab.errors import ConfigError
from loclab.losses.detection import DetectionLoss
from loclab.losses.detection_aligned import AlignedDetectionLoss
from loclab.losses.detection_grid import GridDetectionLoss
from loclab.models.detector import build_detector, flatten_predictions
from loclab.ops.augment import augment_detection_batch
from loclab.ops.mosaic import mosaic_batch
from loclab.ops.letterbox import Letterbox
from loclab.ops.anchors import anchor_scale_index, generate_anchors
from loclab.ops.boxes import BoxCoder
from loclab.ops.postprocess import ImageDetections, postprocess_detections

TASK = "detector"


@dataclass(frozen=True)
class AnchorSetup:
    """Everything derived from a :class:`DetectorConfig` that ties predictions to boxes."""

    anchors: Tensor  # [N, 4] all scales concatenated
    scales: Tensor  # [N] head index per anchor
    coder: BoxCoder

    @classmethod
    def from_config(cls, cfg: DetectorConfig) -> AnchorSetup:
        per_scale = generate_anchors(cfg.feature_map_sizes, cfg.anchor_sizes, cfg.image_size,
                                     aspect_ratios=cfg.anchor_ratios)
        num_anchors = len(cfg.anchor_sizes[0])
        return cls(
            anchors=torch.cat(per_scale),
            scales=anchor_scale_index(cfg.feature_map_sizes, num_anchors),
            coder=BoxCoder(variances=tuple(cfg.box_variances)),
        )


def num_anchors_per_cell(cfg: DetectorConfig) -> int:
    counts = {len(s) for s in cfg.anchor_sizes}
    if len(counts) != 1:
        raise ConfigError(f"every scale needs the same number of anchors per cell, got {cfg.anchor_sizes}")
    return counts.pop()


def make_model(cfg: DetectorConfig) -> nn.Module:
    return build_detector(cfg.model, num_anchors=num_anchors_per_cell(cfg), num_classes=cfg.num_classes)


def make_loss(cfg: DetectorConfig, setup: AnchorSetup) -> DetectionLoss | GridDetectionLoss:
    """The loss ``cfg.loss`` names, on the anchors of ``setup``."""
    if cfg.loss in ("grid", "aligned"):
        loss = GridDetectionLoss if cfg.loss == "grid" else AlignedDetectionLoss
        return loss(
            setup.anchors, setup.scales, cfg.strides, cfg.image_size, num_classes=cfg.num_classes, box_coder=setup.coder,
            weight_obj=cfg.weight_obj, weight_cls=cfg.weight_cls, weight_loc=cfg.weight_loc,
        )
    return DetectionLoss(
        setup.anchors, num_classes=cfg.num_classes, box_coder=setup.coder, pos_threshold=cfg.pos_threshold,
        neg_threshold=cfg.neg_threshold, min_best_iou=cfg.min_best_iou, neg_pos_ratio=cfg.neg_pos_ratio,
        weight_obj=cfg.weight_obj, weight_cls=cfg.weight_cls, weight_loc=cfg.weight_loc,
    )


class MosaicSchedule:
    """The mosaic probability of each epoch: ``augment.mosaic``, and 0 for the last ``augment.close_mosaic``
    fraction of the ``epochs`` (rounded to whole epochs), so that training ends on images as they are.

    ``start_epoch`` is :func:`loclab.engine.train.fit`'s ``on_epoch_start`` hook; before any call the
    probability is ``augment.mosaic``.
    """

    def __init__(self, augment: AugmentConfig, epochs: int):
        self.mosaic = augment.mosaic
        self.first_closed_epoch = epochs - round(augment.close_mosaic * epochs)
        self.probability = augment.mosaic

    def start_epoch(self, epoch: int) -> None:
        self.probability = self.mosaic if epoch < self.first_closed_epoch else 0.0


def make_step(cfg: DetectorConfig, loss_fn: DetectionLoss | GridDetectionLoss, mosaic: MosaicSchedule | None = None):
    """The training/validation step: optional flips (training only), forward, fp32 loss.

    ``loss_fn`` must already be on the device the step runs on (its anchors are a buffer). ``mosaic`` gives the
    mosaic probability of the current epoch (default: ``cfg.train.augment.mosaic`` throughout).
    """
    num_anchors = num_anchors_per_cell(cfg)

    augment = cfg.train.augment
    augmenting = augment.enabled  # decided once, not on every step
    mosaic = mosaic or MosaicSchedule(augment, cfg.train.epochs)

    def step(model: nn.Module, batch: Any, numeric: NumericPath) -> dict[str, Tensor]:
        images, boxes, labels, valid, _ = batch
        if model.training and augmenting:
            images, boxes, valid = images.to(numeric.device), boxes.to(numeric.device), valid.to(numeric.device)
            if mosaic.probability > 0:
                images, boxes, labels, valid = mosaic_batch(images, boxes, labels.to(numeric.device), valid,
                                                            mosaic.probability)
            images, boxes, valid = augment_detection_batch(
                images, boxes, valid, scale=augment.scale, translate=augment.translate, flip=cfg.train.hflip,
                brightness=augment.brightness, contrast=augment.contrast, saturation=augment.saturation,
                fill=LETTERBOX_FILL / 255,
            )
        elif model.training and cfg.train.hflip:
            flip = torch.rand(images.shape[0], device=images.device) < 0.5  # where the batch is: no copy
            images, boxes = flip_horizontal(images, boxes, valid, flip)
        outputs = model(numeric.images(images))
        preds = flatten_predictions(outputs, num_anchors, cfg.num_classes)
        with torch.autocast(numeric.device.type, enabled=False):
            return loss_fn(preds.float(), boxes.to(numeric.device), labels.to(numeric.device), valid.to(numeric.device))

    return step


def config_for_data(cfg: DetectorConfig, train_split: DetectionSplit, *, autoanchor: bool = False) -> DetectorConfig:
    """``cfg`` completed from the training split: its classes (count and names), and its anchors checked
    against the split's boxes (refitted with ``autoanchor``; see :mod:`loclab.engine.autoanchor`)."""
    names = tuple(train_split.categories[label] for label in sorted(train_split.categories))
    cfg = replace(cfg, num_classes=len(names), class_names=names)
    return check_anchors(cfg, train_split, refit=autoanchor)


def train_detector(
    cfg: DetectorConfig,
    train_split: DetectionSplit,
    val_split: DetectionSplit,
    run_dir: Path,
    *,
    resume: bool = False,
    progress: bool = True,
    meta: dict[str, Any] | None = None,
) -> list[dict]:
    """Train a detector into ``run_dir`` (config, version, log, ``best_model.pth``, ``last.pth``).

    The decoded splits are held on the training device and batched there when :func:`holds_data_on_device`
    says so (on a GPU by default), else batched on the host by a DataLoader.
    """
    train_set = DetectionDataset(train_split, image_size=cfg.image_size, progress=progress)
    val_set = DetectionDataset(val_split, image_size=cfg.image_size, progress=progress)
    cfg = replace(cfg, train=epochs_for_steps(cfg.train, len(train_set)))
    run_dir, numeric = start_run(run_dir, TASK, "detector", cfg, cfg.train, meta)
    setup = AnchorSetup.from_config(cfg)
    model = make_model(cfg)
    mosaic = MosaicSchedule(cfg.train.augment, cfg.train.epochs)
    step = make_step(cfg, make_loss(cfg, setup).to(numeric.device), mosaic)
    train_data, val_data = train_set, val_set
    if holds_data_on_device(cfg.train.device_data, numeric.device, train_set.streaming or val_set.streaming):
        train_data = DeviceDetectionData.from_dataset(train_set, numeric.device)
        val_data = DeviceDetectionData.from_dataset(val_set, numeric.device)
    return fit(model, step, train_data, val_data, detection_collate, cfg.train, numeric, RunFiles(run_dir),
               {"task": TASK, "config": to_dict(cfg)}, resume=resume, on_epoch_start=mosaic.start_epoch,
               progress=progress, desc="detector")


def holds_data_on_device(device_data: str, device: torch.device, streaming: bool) -> bool:
    """Whether detection training holds its decoded data on ``device`` and gathers batches there
    (:mod:`loclab.data.device_data`), for ``train.device_data``: ``"auto"`` on a GPU in one process, ``"on"``
    on any device, ``"off"`` never. A dataset ``streaming`` from disk never is; asking for ``"on"`` then is a
    :class:`ConfigError`."""
    if device_data not in ("auto", "on", "off"):
        raise ConfigError(f"unknown train.device_data {device_data!r}; choose auto, on or off")
    if device_data == "off":
        return False
    if streaming:
        if device_data == "on":
            raise ConfigError("train.device_data=on: this dataset is too large to hold decoded (it is streamed "
                              "from disk), so it cannot be held on the training device; use auto or off")
        return False
    return device_data == "on" or (device.type == "cuda" and not distributed.active())


def class_names(cfg: DetectorConfig) -> tuple[str, ...]:
    """The name of each label ``0..C-1``: the config's (from the data), else the shapes' (circle, square,
    triangle; checkpoints from before the config stored names were trained on them), else the label itself."""
    names = cfg.class_names or tuple(c["name"] for c in SHAPE_CATEGORIES)[: cfg.num_classes]
    return tuple(names) + tuple(str(i) for i in range(len(names), cfg.num_classes))


def detections_to_image(detections: list[ImageDetections], letterboxes: list[Letterbox]) -> list[ImageDetections]:
    """Detections in model-input pixels -> the same detections in each original image's pixels (clipped to it)."""
    return [d if lb.is_identity else replace(d, boxes=lb.boxes_to_image(d.boxes))
            for d, lb in zip(detections, letterboxes)]


def predict_dataset(model: nn.Module, cfg: DetectorConfig, dataset: DetectionDataset, *, batch_size: int = 32,
                    score_threshold: float | None = None, numeric: NumericPath | None = None,
                    progress: bool = False) -> list[ImageDetections]:
    """Detections for every image of ``dataset``, in original image pixels."""
    out: list[ImageDetections] = []
    starts = range(0, len(dataset), batch_size)
    for start in tqdm(starts, desc="predicting", unit="batch", disable=not progress or len(starts) < 2):
        indices = range(start, min(start + batch_size, len(dataset)))
        batch = torch.stack([dataset.input_image(i) for i in indices])
        out += predict_images(model, cfg, batch, batch_size=batch_size, score_threshold=score_threshold,
                              numeric=numeric)
    return detections_to_image(out, dataset.letterboxes)


def load_detector(weights: Path) -> tuple[nn.Module, DetectorConfig]:
    """Rebuild a detector and its config from a loclab checkpoint, in eval mode on the CPU."""
    state = load_checkpoint(weights, task=TASK)
    cfg = from_dict(DetectorConfig, state["config"])
    model = make_model(cfg)
    model.load_state_dict(state["model"])
    return model.eval(), cfg


@torch.no_grad()
def predict_images(
    model: nn.Module, cfg: DetectorConfig, images: Tensor, *, batch_size: int = 32,
    score_threshold: float | None = None, numeric: NumericPath | None = None,
) -> list[ImageDetections]:
    """Detections for ``images [N, 3, H, W]`` (float in [0, 1] or uint8), on the fastest numeric path."""
    numeric = numeric or resolve_numeric_path(cfg.train.precision)
    model = numeric.prepare(model).eval()
    setup = AnchorSetup.from_config(cfg)
    anchors, scales = setup.anchors.to(numeric.device), setup.scales.to(numeric.device)
    num_anchors = num_anchors_per_cell(cfg)
    out: list[ImageDetections] = []
    for start in range(0, images.shape[0], batch_size):
        batch = images[start:start + batch_size]
        if batch.dtype == torch.uint8:
            batch = batch.float().div_(255)
        with numeric.autocast():
            outputs = model(numeric.images(batch))
        preds = flatten_predictions([o.float() for o in outputs], num_anchors, cfg.num_classes)
        dets = decode_predictions(preds, cfg, replace(setup, anchors=anchors, scales=scales),
                                  score_threshold=score_threshold)
        out.extend(ImageDetections(*(t.cpu() for t in (d.boxes, d.scores, d.labels, d.scales))) for d in dets)
    return out


def decode_predictions(preds: Tensor, cfg: DetectorConfig, setup: AnchorSetup, *,
                       score_threshold: float | None = None) -> list[ImageDetections]:
    """Flattened predictions ``[B, N, 5+C]`` -> detections per image in model-input pixels, with ``cfg``'s
    postprocessing (its score threshold unless ``score_threshold`` is given). ``setup`` on ``preds``' device."""
    return postprocess_detections(
        preds, setup.anchors, setup.scales, setup.coder,
        score_threshold=cfg.score_threshold if score_threshold is None else score_threshold,
        nms_iou=cfg.nms_iou, pre_nms_top_k=cfg.pre_nms_top_k, max_detections=cfg.max_detections,
        image_size=cfg.image_size,
    )


def detections_to_records(image_ids: list[int], detections: list[ImageDetections]) -> list[dict]:
    """The JSON prediction format of ``loclab eval detections``: one record per box, xyxy pixels."""
    records = []
    for image_id, d in zip(image_ids, detections):
        for box, score, label, scale in zip(d.boxes.tolist(), d.scores.tolist(), d.labels.tolist(), d.scales.tolist()):
            records.append({"image_id": int(image_id), "category_id": int(label),
                            "bbox": [round(v, 3) for v in box], "score": round(score, 6), "scale": int(scale)})
    return records

