"""What a model must be for loclab to train, evaluate and analyse it: one protocol per task.

The training engine builds models by name from two registries, :data:`loclab.models.detector.DETECTOR_MODELS` and
:data:`loclab.models.keypoints.KEYPOINT_MODELS` (name -> class), and relies on nothing but what the protocols below
say. A new model is an ``nn.Module`` subclass that satisfies :class:`Detector` or :class:`KeypointModel`, added to
its registry under a new name; ``--model NAME`` and ``--set model=NAME`` then offer it (docs/extending.md walks
through both). The docstrings below are the contract.

:func:`detector_problems`, :func:`keypoint_class_problems` and :func:`keypoint_model_problems` check a model
against it and say what breaks it; ``tests/test_model_contracts.py`` runs them on every registered model.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import ClassVar, Literal, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

__all__ = ["KEYPOINT_OPTIONS", "OUTPUT_TYPES", "Detector", "HeatmapRegression", "KeypointModel", "OutputType",
           "detector_problems", "keypoint_class_problems", "keypoint_model_problems"]


@runtime_checkable
class Detector(Protocol):
    """A single-shot anchor detector with one head per scale (S1, S2, S3).

    **Construction.** ``cls(num_anchors=A, num_classes=C)``, keywords only: ``A`` anchors per cell (the same on
    every head, ``len(cfg.anchor_sizes[s])``) and ``C`` classes (from the data). Images are always RGB (the
    datasets convert grayscale, RGBA and palette images), so there is no channel argument. Any other constructor
    argument needs a default. The model keeps ``num_anchors`` and ``num_classes`` as attributes.

    **forward(images) -> list[Tensor].** ``images``: float ``[B, 3, S, S]`` in ``[0, 1]``, ``S`` the config's
    ``image_size`` (a multiple of 32). Returns one tensor per scale, in the order of ``DetectorConfig.strides``
    (4, 8, 16 unless ``loclab.config.DETECTOR_STRIDES`` names others for the model): scale ``s`` is ``[B, A*(5+C), S / stride_s, S / stride_s]``, raw values (no activation). Channel
    ``a*(5+C) + k`` is, for anchor ``a`` of the cell, ``k = 0..3`` the box offsets ``tx, ty, tw, th``, ``k = 4``
    the objectness logit and ``k = 5..4+C`` the class logits.
    :func:`loclab.models.detector.flatten_predictions` turns the list into ``[B, N, 5+C]`` in the anchor order of
    :func:`loclab.ops.anchors.generate_anchors`; the matching, the loss and the postprocessing read nothing else.

    **features(images) -> list[Tensor].** The feature map each head reads, one per scale, ``[B, channels_s,
    S / stride_s, S / stride_s]`` (the feature-map figure of a run shows them).

    **Numerics.** The engine moves the model to its device and may run it under bf16/fp16 autocast in
    channels-last memory format (:mod:`loclab.engine.precision`), so the model fixes neither dtype nor memory
    format; outputs may come back in low precision (the loss casts them to fp32). BatchNorm layers are fine
    (``ConvBNReLU`` in :mod:`loclab.models.blocks` uses the fused CPU kernel where it applies).
    """

    num_anchors: int
    num_classes: int

    def __init__(self, *, num_anchors: int, num_classes: int) -> None: ...

    def features(self, images: Tensor) -> list[Tensor]: ...

    def forward(self, images: Tensor) -> list[Tensor]: ...


OutputType = Literal["heatmap", "regression"]
OUTPUT_TYPES: tuple[OutputType, ...] = ("heatmap", "regression")

# Every constructor option a keypoint model may declare in ``options``; the engine fills them from the
# KeypointConfig (``loclab.engine.keypoints.model_options``). A model that declares any other name is refused.
KEYPOINT_OPTIONS: dict[str, str] = {
    "num_keypoints": "K, keypoints per instance (from the data)",
    "in_channels": "input channels: 1 grayscale, 3 RGB (from the data)",
    "input_size": "(W, H) of the model input in pixels, multiples of 16",
    "image_size": "the input side heatmap_size refers to (128 for the stick figures)",
    "heatmap_size": "heatmap side for an image_size input: the heatmap stride is image_size / heatmap_size, 1, 2 or 4",
    "skip": "skip connections from the encoder to the heatmap decoder",
}


@runtime_checkable
class KeypointModel(Protocol):
    """A top-down keypoint model: one instance crop in, ``K`` keypoints out, as heatmaps or coordinates.

    **Class attributes.**

    - ``output_type``: ``"heatmap"`` or ``"regression"``; it picks the training targets, the losses and the
      decoding (:mod:`loclab.engine.keypoints`).
    - ``options``: the names of the constructor arguments the engine fills from the config, a subset of
      :data:`KEYPOINT_OPTIONS`. Every other constructor argument keeps its default. A name outside
      :data:`KEYPOINT_OPTIONS` is a :class:`~loclab.errors.ConfigError` when the model is built, and so is a config
      that sets ``heatmap_size`` or ``skip`` away from its default for a model that does not declare it (the
      setting would do nothing).

    **Construction.** ``cls(**{name: value for name in options})``, keywords only.

    **forward(x) -> Tensor.** ``x``: float ``[B, C, H, W]`` in ``[0, 1]``, ``C = in_channels``, ``(W, H)`` the
    config's ``input_size`` (multiples of 16; 128 x 128 for the stick figures).

    - ``"heatmap"`` models return raw logits ``[B, K, H / t, W / t]`` (no activation) with the heatmap stride
      ``t = image_size / heatmap_size`` (``KeypointConfig.heatmap_stride``, 2 by default), trained against
      Gaussian heatmaps; heatmap cell ``u`` is centred on input pixel ``(u + 0.5) * t - 0.5`` (docs/keypoints.md).
      A heatmap model that does not declare ``heatmap_size`` and ``image_size`` must work at the default stride.
    - ``"regression"`` models return ``[B, 2K]`` = ``[x0, y0, x1, y1, ...]`` normalised as ``(x / W, y / H)``
      (pixel-centre convention, docs/architecture.md), trained with coordinate losses.

    **Optional: heatmaps(x) -> Tensor.** A regression model that regresses through heatmaps (e.g. a soft-argmax)
    may expose them, ``[B, K, H / t, W / t]``: it then satisfies :class:`HeatmapRegression`, and training saves
    them for the heatmaps-across-epochs figure as it does for heatmap models.

    **Numerics** as for :class:`Detector`: any device, autocast dtype and memory format.
    """

    output_type: ClassVar[OutputType]
    options: ClassVar[tuple[str, ...]]

    def forward(self, x: Tensor) -> Tensor: ...


@runtime_checkable
class HeatmapRegression(Protocol):
    """A regression :class:`KeypointModel` that shows the heatmaps its coordinates come from."""

    def heatmaps(self, x: Tensor) -> Tensor: ...


def detector_problems(model: nn.Module, *, num_anchors: int, num_classes: int, strides: Sequence[int],
                      image_size: int = 64, batch: int = 2) -> list[str]:
    """How ``model`` (built with ``num_anchors`` and ``num_classes``) breaks the :class:`Detector` contract on a
    ``[batch, 3, image_size, image_size]`` input; empty when it keeps it. Runs the model in eval mode."""
    problems = [f"no attribute {name!r}" for name in ("num_anchors", "num_classes") if not hasattr(model, name)]
    problems += [f"no {name}() method" for name in ("features", "forward") if not callable(getattr(model, name, None))]
    if problems:
        return problems
    x = torch.rand(batch, 3, image_size, image_size)
    model = model.eval()
    with torch.no_grad():
        outputs, features = model(x), model.features(x)
    expected = [(batch, num_anchors * (5 + num_classes), image_size // s, image_size // s) for s in strides]
    if not isinstance(outputs, (list, tuple)) or not all(isinstance(o, Tensor) for o in outputs):
        return [f"forward returned {type(outputs).__name__}, expected a list of {len(strides)} tensors"]
    shapes = [tuple(o.shape) for o in outputs]
    if shapes != expected:
        problems.append(f"forward gave {shapes} for a {image_size} px input, expected {expected} "
                        f"(one [B, A*(5+C), S/stride, S/stride] per stride {tuple(strides)})")
    grids = [tuple(f.shape[-2:]) for f in features] if isinstance(features, (list, tuple)) else None
    if grids != [e[-2:] for e in expected]:
        problems.append(f"features gave maps of {grids}, expected one per head of {[e[-2:] for e in expected]}")
    return problems


def keypoint_class_problems(cls: type) -> list[str]:
    """How the class ``cls`` breaks the :class:`KeypointModel` contract (its class attributes and constructor)."""
    problems = []
    kind = getattr(cls, "output_type", None)
    if kind not in OUTPUT_TYPES:
        problems.append(f"output_type is {kind!r}, expected one of {OUTPUT_TYPES}")
    options = getattr(cls, "options", None)
    if not isinstance(options, tuple) or not all(isinstance(o, str) for o in options):
        return problems + [f"options is {options!r}, expected a tuple of option names"]
    unknown = [o for o in options if o not in KEYPOINT_OPTIONS]
    if unknown:
        problems.append(f"options {unknown} are not keypoint options ({', '.join(KEYPOINT_OPTIONS)})")
    parameters = inspect.signature(cls).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
    missing = [o for o in options if o not in parameters and not takes_any]
    if missing:
        problems.append(f"the constructor takes no {missing} argument, yet options declares it")
    required = [n for n, p in parameters.items() if n not in options and p.default is p.empty
                and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if required:
        problems.append(f"constructor arguments {required} are not in options and have no default")
    return problems


def keypoint_model_problems(model: nn.Module, *, num_keypoints: int, in_channels: int, input_size: tuple[int, int],
                            heatmap_stride: int, batch: int = 2) -> list[str]:
    """How the built ``model`` breaks the :class:`KeypointModel` contract on a ``[batch, in_channels, H, W]`` input
    (``input_size = (W, H)``): its output shape, and its ``heatmaps`` if it has them. Empty when it keeps it."""
    width, height = input_size
    x = torch.rand(batch, in_channels, height, width)
    model = model.eval()
    with torch.no_grad():
        out = model(x)
    grid = (batch, num_keypoints, height // heatmap_stride, width // heatmap_stride)
    problems = []
    if getattr(model, "output_type", None) == "heatmap":
        if tuple(out.shape) != grid:
            problems.append(f"forward gave {tuple(out.shape)}, expected heatmaps {grid}")
    else:
        if tuple(out.shape) != (batch, 2 * num_keypoints):
            problems.append(f"forward gave {tuple(out.shape)}, expected coordinates {(batch, 2 * num_keypoints)}")
        if isinstance(model, HeatmapRegression):
            with torch.no_grad():
                maps = model.heatmaps(x)
            if tuple(maps.shape) != grid:
                problems.append(f"heatmaps gave {tuple(maps.shape)}, expected {grid}")
    return problems
