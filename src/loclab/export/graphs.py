"""The modules that get exported: a trained model with its input scaling and, optionally, its decoding.

Both take what an image file holds, ``uint8 [B, C, H, W]`` (RGB for detectors; RGB or gray, as trained, for
keypoint models) already brought to the model input: letterboxed to ``S x S`` for a detector, an instance cropped
to ``input_size`` for a keypoint model. They divide by 255 as loclab's own prediction does, so the exported graph
sees the numbers loclab feeds the model when it predicts, and they compute in float32.

- :class:`DetectorGraph`: ``decoded`` returns ``detections [B, D, 6]`` (x1, y1, x2, y2, score, label in
  model-input pixels) and ``num_detections [B]`` (:func:`loclab.ops.postprocess_padded.postprocess_detections_padded`
  with the run's thresholds); ``raw`` returns the flattened head outputs ``predictions [B, N, 5+C]``.
- :class:`KeypointGraph`: ``decoded`` returns ``keypoints [B, K, 2]`` in model-input pixels and ``scores [B, K]``
  (:func:`loclab.engine.keypoints.decode_output`); ``raw`` returns the model's output (heatmap logits
  ``[B, K, H / t, W / t]`` or normalised coordinates ``[B, 2K]``).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from loclab.config import DetectorConfig, KeypointConfig
from loclab.engine.detection import AnchorSetup, num_anchors_per_cell
from loclab.engine.keypoints import decode_output, output_type
from loclab.models.detector import flatten_predictions
from loclab.ops.postprocess_padded import postprocess_detections_padded

Outputs = Literal["decoded", "raw"]
OUTPUTS: tuple[Outputs, ...] = ("decoded", "raw")
INPUT_NAME = "images"


def _scaled(images: Tensor) -> Tensor:
    # The same two ops as engine.detection.predict_images / engine.keypoints.predict_keypoints on uint8 input.
    return images.float().div(255)


class DetectorGraph(nn.Module):
    """A detector from uint8 input images to padded detections (``decoded``) or raw predictions (``raw``)."""

    def __init__(self, model: nn.Module, cfg: DetectorConfig, outputs: Outputs) -> None:
        super().__init__()
        self.model, self.cfg, self.outputs = model, cfg, outputs
        self.num_anchors = num_anchors_per_cell(cfg)
        setup = AnchorSetup.from_config(cfg)
        self.coder = setup.coder
        self.register_buffer("anchors", setup.anchors, persistent=False)

    @property
    def output_names(self) -> tuple[str, ...]:
        return ("detections", "num_detections") if self.outputs == "decoded" else ("predictions",)

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        heads = self.model(_scaled(images))
        predictions = flatten_predictions([h.float() for h in heads], self.num_anchors, self.cfg.num_classes)
        if self.outputs == "raw":
            return (predictions,)
        cfg = self.cfg
        return postprocess_detections_padded(
            predictions, self.anchors, self.coder, score_threshold=cfg.score_threshold, nms_iou=cfg.nms_iou,
            pre_nms_top_k=cfg.pre_nms_top_k, max_detections=cfg.max_detections, image_size=cfg.image_size)


class KeypointGraph(nn.Module):
    """A keypoint model from uint8 input crops to keypoints and scores (``decoded``) or its output (``raw``)."""

    def __init__(self, model: nn.Module, cfg: KeypointConfig, outputs: Outputs) -> None:
        super().__init__()
        self.model, self.cfg, self.outputs = model, cfg, outputs

    @property
    def output_names(self) -> tuple[str, ...]:
        if self.outputs == "decoded":
            return ("keypoints", "scores")
        return ("heatmaps",) if output_type(self.cfg) == "heatmap" else ("coordinates",)

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        pred = self.model(_scaled(images)).float()
        if self.outputs == "raw":
            return (pred,)
        return decode_output(pred, self.cfg)


def input_shape(cfg: DetectorConfig | KeypointConfig, batch: int) -> tuple[int, int, int, int]:
    """``(batch, C, H, W)`` of the graph input for ``cfg``'s model."""
    if isinstance(cfg, DetectorConfig):
        return (batch, 3, cfg.image_size, cfg.image_size)
    width, height = cfg.input_size
    return (batch, cfg.in_channels, height, width)


def build_graph(model: nn.Module, cfg: DetectorConfig | KeypointConfig,
                outputs: Outputs) -> DetectorGraph | KeypointGraph:
    """The module to export for a trained ``model`` (put in eval mode, float32) and its config."""
    model = model.float().eval()
    if isinstance(cfg, DetectorConfig):
        return DetectorGraph(model, cfg, outputs).eval()
    return KeypointGraph(model, cfg, outputs).eval()


def example_input(cfg: DetectorConfig | KeypointConfig, batch: int) -> Tensor:
    """A deterministic uint8 input to trace with (its values do not shape the graph)."""
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, input_shape(cfg, batch), generator=generator, dtype=torch.uint8)
