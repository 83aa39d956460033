"""Configuration: nested frozen dataclasses, their serialisation and ``--set`` overrides.

The named recipes and presets built from these dataclasses are :mod:`loclab.recipes`.
Every run directory stores its resolved config as ``config.json``; :func:`from_dict` reads it back.
Any field can be overridden from the command line with a dotted path, e.g.
``--set train.epochs=3`` or ``--set detector.anchor_sizes=[[16,24,32],[48,56,72],[112,144,192]]``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields, is_dataclass, replace
import types
import typing
from collections.abc import Sequence
from typing import Any, ClassVar, Literal, TypeVar, get_args, get_origin, get_type_hints

from loclab.errors import ConfigError

T = TypeVar("T")

Precision = Literal["auto", "fp32", "bf16", "fp16"]


@dataclass(frozen=True)
class OptimConfig:
    name: Literal["sgd", "adam", "adamw"] = "adamw"
    lr: float = 2e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4


@dataclass(frozen=True)
class ScheduleConfig:
    """Learning-rate schedule, stepped once per optimiser step."""

    name: Literal["constant", "cosine"] = "cosine"
    warmup_epochs: float = 1.0
    final_lr_fraction: float = 0.02


@dataclass(frozen=True)
class AugmentConfig:
    """Random geometric and colour augmentation of training batches, shared by both tasks.

    Every amplitude defaults to "off", which is what the reference datasets' recipes use; the own-data
    recipes turn them on (small real datasets need them far more than the synthetic ones do).
    ``scale``: range of the random zoom factor; ``translate``: largest shift as a fraction of the input side;
    ``rotation``: largest rotation in degrees (keypoints only); ``brightness`` / ``contrast`` / ``saturation``:
    largest relative change of each.
    """

    scale: tuple[float, float] = (1.0, 1.0)
    translate: float = 0.0
    rotation: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    # detection only: chance that a training image is replaced by a mosaic of four (loclab.ops.mosaic), and the
    # final fraction of the epochs trained without it, so that training ends on images as they are (YOLOv8's
    # close_mosaic; loclab.engine.detection.MosaicSchedule)
    mosaic: float = 0.0
    close_mosaic: float = 0.0

    def __post_init__(self) -> None:
        for name in ("mosaic", "close_mosaic"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"augment.{name} must be a fraction in [0, 1], got {getattr(self, name)}")

    @property
    def enabled(self) -> bool:
        return self != AugmentConfig()


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 12
    # > 0: train for this many optimiser steps (epochs are derived from the training set's size), so a recipe
    # suits datasets of any size; 0: train for ``epochs``.
    steps: int = 0
    batch_size: int = 16
    # The learning rate for another batch size (loclab.engine.lr_scaling): "linear" multiplies optim.lr by
    # batch_size / reference_batch, "sqrt" by its square root, "none" keeps optim.lr. reference_batch is the
    # batch size optim.lr was tuned for (0: none named; `loclab train --batch N` sets it to the recipe's).
    lr_scaling: Literal["none", "linear", "sqrt"] = "none"
    reference_batch: int = 0
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    # "auto": bf16 autocast + channels_last on CPUs with BF16, CUDA AMP on GPUs, fp32 elsewhere.
    precision: Precision = "auto"
    hflip: bool = True
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # > 0: after every epoch, BatchNorm statistics are recomputed over this many training batches
    # (engine.train.recompute_batchnorm_statistics); 0 keeps BatchNorm's running averages.
    precise_bn_batches: int = 0
    # > 0: validate and save a moving average of the weights with this decay (loclab.engine.ema); 0: the weights
    ema: float = 0.0
    grad_clip: float = 10.0
    seed: int = 0
    num_threads: int = 0  # 0: leave torch's default (one thread per core)
    # torch.compile the training forward/backward: fuses BatchNorm/ReLU/elementwise work, at a one-off
    # compile cost (about 30 s for the detector on 2 CPU cores), so it pays off on long runs only.
    compile: bool = False
    # Detection: hold the decoded training and validation images and their padded boxes on the training device
    # and gather batches there (loclab.data.device_data): "auto" does so on a GPU, "on" on any device (the
    # CPU too, which is how it is tested), "off" never. Datasets streamed from disk (over 2 GB decoded) cannot.
    device_data: Literal["auto", "on", "off"] = "auto"


REFERENCE_ANCHOR_SIZES = ((16.0, 24.0, 32.0), (48.0, 64.0, 96.0), (96.0, 128.0, 192.0))

# Head strides of the detectors whose heads are not at 4, 8 and 16 px (loclab.models.detector.DETECTOR_MODELS)
DEFAULT_STRIDES = (4, 8, 16)
DETECTOR_STRIDES = {"csp": (8, 16, 32)}

# ``DetectorConfig.loss``: how anchors are matched to boxes and what each term of the loss asks
DETECTOR_LOSSES = {
    "ssd": "IoU matching, hard-negative objectness, Smooth-L1 offsets (loclab.losses.detection)",
    "grid": "grid-cell matching, IoU-valued objectness on every anchor, CIoU boxes (loclab.losses.detection_grid)",
    "aligned": "task-aligned assignment (TOOD, YOLOv8), quality-valued objectness, quality-weighted CIoU boxes "
               "(loclab.losses.detection_aligned)",
}


@dataclass(frozen=True)
class DetectorConfig:
    """A detector, its anchors and its training.

    ``image_size`` is the side of the square model input (a multiple of 32): every image is letterboxed to it.
    The feature maps follow from it (``image_size / stride`` for the :attr:`strides` of the three heads),
    and ``anchor_sizes`` are side lengths in model-input pixels; ``anchor_ratios`` (width / height per anchor,
    same nesting) make them rectangular, ``None`` keeps them square. ``class_names`` are the dataset's class
    names by label (empty: the reference shapes). ``loss`` is one of :data:`DETECTOR_LOSSES`; the thresholds
    and ``neg_pos_ratio`` belong to ``ssd`` (and to the anchor-coverage analysis), the weights multiply either
    loss's terms.
    """

    model: str = "loclab"
    image_size: int = 224
    num_classes: int = 3
    anchor_sizes: tuple[tuple[float, ...], ...] = REFERENCE_ANCHOR_SIZES
    anchor_ratios: tuple[tuple[float, ...], ...] | None = None
    class_names: tuple[str, ...] = ()
    loss: str = "ssd"
    pos_threshold: float = 0.5
    neg_threshold: float = 0.3
    min_best_iou: float = 0.1
    box_variances: tuple[float, float] = (0.1, 0.2)
    neg_pos_ratio: float = 3.0
    weight_obj: float = 1.0
    weight_cls: float = 1.0
    weight_loc: float = 2.0
    # Inference: a low score threshold so the precision-recall curve is not truncated
    # (docs/metrics.md, 'Score threshold').
    score_threshold: float = 0.01
    nms_iou: float = 0.5
    pre_nms_top_k: int = 1000
    max_detections: int = 100
    display_threshold: float = 0.5
    train: TrainConfig = field(default_factory=TrainConfig)

    @property
    def strides(self) -> tuple[int, ...]:
        """Stride of each head, from :data:`DETECTOR_STRIDES` (4, 8, 16 unless the model says otherwise)."""
        return DETECTOR_STRIDES.get(self.model, DEFAULT_STRIDES)

    @property
    def feature_map_sizes(self) -> tuple[int, ...]:
        """Side of each head's square feature map: ``image_size / stride``."""
        return tuple(self.image_size // s for s in self.strides)

    def __post_init__(self) -> None:
        if self.image_size <= 0 or self.image_size % 32:
            raise ConfigError(f"detector image_size must be a positive multiple of 32, got {self.image_size}")
        if self.loss not in DETECTOR_LOSSES:
            raise ConfigError(f"unknown detector loss {self.loss!r}; choose one of {sorted(DETECTOR_LOSSES)}")
        if self.anchor_ratios is not None and [len(r) for r in self.anchor_ratios] != [len(s) for s in self.anchor_sizes]:
            raise ConfigError(f"anchor_ratios {self.anchor_ratios} must have the shape of anchor_sizes {self.anchor_sizes}")


@dataclass(frozen=True)
class KeypointConfig:
    """A keypoint model, its targets and its training (top-down: one model input per instance).

    The model input is ``input_size`` = ``(input_width, input_height)``; 0 means ``image_size``, so the
    reference configs (which only know ``image_size``) keep their square 128 px input. Each instance box is
    cropped to it aspect-preserving (:mod:`loclab.ops.affine`), instance boxes padded by ``box_padding``.
    ``heatmap_size`` is the heatmap side for an ``image_size`` input, which fixes the heatmap stride
    ``image_size / heatmap_size`` (4, 2 or 1: the decoder's depth); any input gets heatmaps of
    ``input / stride`` cells (:attr:`heatmap_grid`).

    ``num_keypoints``, ``keypoint_names``, ``symmetric_pairs`` and ``in_channels`` describe the data; training
    fills them from the training split (``loclab.engine.keypoints.config_for_data``) and the run's config.json
    keeps them, so a checkpoint knows its skeleton. ``hand_invariant`` makes the losses invariant to exchanging
    the keypoints of each symmetric pair (the stick figures' identically drawn hands are their one pair).
    Augmentation: ``train.augment`` (scale, rotation, brightness, contrast, saturation) and ``flip`` (mirror with
    the pairs swapped); all off by default, which the reference recipes rely on. ``train.hflip`` is the
    detector's switch and keypoint models ignore it.
    """

    model: str = "heatmap"
    image_size: int = 128
    num_keypoints: int = 5
    heatmap_size: int = 64
    sigma: float = 2.0
    skip: bool = True
    # "mse": the reports' loss; "spatial_ce": heatmaps as spatial distributions (heatmap models only).
    loss: Literal["mse", "spatial_ce"] = "mse"
    # symmetry-aware training: the keypoints of each symmetric pair may match the target in either order
    hand_invariant: bool = False
    heatmap_snapshot_epochs: tuple[int, ...] = ()  # empty: a spread of epochs chosen from the epoch count
    num_snapshot_images: int = 4
    input_width: int = 0  # 0: image_size
    input_height: int = 0  # 0: image_size
    in_channels: int = 1  # 1 grayscale, 3 RGB
    keypoint_names: tuple[str, ...] = ()
    symmetric_pairs: tuple[tuple[int, int], ...] = ()
    # MMPose's SimpleBaseline value: limbs at the edge of a tight box keep some context. Whole-image boxes
    # (reference figures, DeepLabCut frames) are never padded: nothing lies outside them.
    box_padding: float = 1.25
    flip: bool = False  # random left-right mirror of training crops, symmetric pairs swapped
    train: TrainConfig = field(default_factory=TrainConfig)

    heatmap_strides: ClassVar[tuple[int, ...]] = (1, 2, 4)

    @property
    def input_size(self) -> tuple[int, int]:
        """``(width, height)`` of the model input."""
        return (self.input_width or self.image_size, self.input_height or self.image_size)

    @property
    def heatmap_stride(self) -> int:
        """Input pixels per heatmap cell: ``image_size / heatmap_size``."""
        return self.image_size // self.heatmap_size

    @property
    def heatmap_grid(self) -> tuple[int, int]:
        """``(width, height)`` of the heatmaps: the input size divided by :attr:`heatmap_stride`."""
        width, height = self.input_size
        return width // self.heatmap_stride, height // self.heatmap_stride

    def __post_init__(self) -> None:
        if self.heatmap_size <= 0 or self.image_size % self.heatmap_size or \
                self.image_size // self.heatmap_size not in self.heatmap_strides:
            raise ConfigError(f"image_size / heatmap_size must be one of {self.heatmap_strides}, got "
                              f"{self.image_size} / {self.heatmap_size}")
        width, height = self.input_size
        if width <= 0 or height <= 0 or width % 16 or height % 16:
            raise ConfigError(f"the keypoint model input must be a positive multiple of 16 on each side (four 2x "
                              f"poolings), got {width}x{height}")
        if self.in_channels not in (1, 3):
            raise ConfigError(f"in_channels must be 1 (grayscale) or 3 (RGB), got {self.in_channels}")
        if self.keypoint_names and len(self.keypoint_names) != self.num_keypoints:
            raise ConfigError(f"{len(self.keypoint_names)} keypoint_names for num_keypoints = {self.num_keypoints}")
        for a, b in self.symmetric_pairs:
            if a == b or not (0 <= a < self.num_keypoints and 0 <= b < self.num_keypoints):
                raise ConfigError(f"symmetric pair {(a, b)} must be two distinct keypoint indices below "
                                  f"{self.num_keypoints}")
        if self.box_padding <= 0:
            raise ConfigError(f"box_padding must be positive, got {self.box_padding}")


@dataclass(frozen=True)
class DataConfig:
    root: str = "data"
    seed: int = 641
    n_train: int = 1000
    n_val: int = 200


@dataclass(frozen=True)
class AblationConfig:
    anchor_sets: tuple[tuple[tuple[float, ...], ...], ...] = (
        ((16, 24, 32), (48, 56, 72), (112, 144, 192)),
    )
    heatmap_sizes: tuple[int, ...] = (32, 64, 128)
    sigmas: tuple[float, ...] = (1.0, 2.0, 3.0, 4.0)
    skips: tuple[bool, ...] = (True, False)
    detector_epochs: int = 6
    keypoint_epochs: int = 10
    workers: int = 1
    # every trial trains once per seed: train.seed + 0, 1, ..., seeds - 1 (loclab.analysis.ablation.seeded_trials)
    seeds: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.seeds, bool) or not isinstance(self.seeds, int) or self.seeds < 1:
            raise ConfigError(f"ablation.seeds must be a whole number >= 1 (training seeds per trial), "
                              f"got {self.seeds!r}")


@dataclass(frozen=True)
class OwnDataConfig:
    """What ``loclab run`` does with a user's dataset (any layout but the reference one).

    ``detection`` / ``keypoints``: the layout of each task's annotations (``voc``, ``coco``, ``deeplabcut``, ...),
    ``""`` when the dataset holds none, so that task's stages are skipped. ``autoanchor``: the detector's anchors
    are fitted to the training boxes (the anchor ablation then compares them with the default anchors scaled to
    the input). The own-data recipes count optimiser steps, not epochs: ``detector_ablation_steps`` and
    ``keypoint_ablation_steps`` are the ablation trials' steps.
    """

    detection: str = ""
    keypoints: str = ""
    autoanchor: bool = True
    detector_ablation_steps: int = 0
    keypoint_ablation_steps: int = 0


@dataclass(frozen=True)
class StudyConfig:
    preset: str = "quick"
    data: DataConfig = field(default_factory=DataConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    heatmap: KeypointConfig = field(default_factory=KeypointConfig)
    regression: KeypointConfig = field(default_factory=lambda: KeypointConfig(model="regression"))
    ablation: AblationConfig = field(default_factory=AblationConfig)
    failure_threshold: float = 0.1
    # None: the reference datasets (found or generated); set for a user's own dataset (study_config_for_data).
    own_data: OwnDataConfig | None = None


KEYPOINT_DATA_FIELDS = ("num_keypoints", "keypoint_names", "symmetric_pairs", "in_channels")


def without_data_fields(cfg: KeypointConfig) -> KeypointConfig:
    """``cfg`` with the fields that training fills from the data (:data:`KEYPOINT_DATA_FIELDS`) at their defaults.

    A run stores its completed config; a trial's config, written before any data is read, does not know them.
    Runs on the same data agree on these fields, so this is what to compare to find a run that stands in for a
    trial.
    """
    defaults = KeypointConfig()
    return replace(cfg, **{name: getattr(defaults, name) for name in KEYPOINT_DATA_FIELDS})


# --------------------------------------------------------------------------------------------------
# Serialisation and overrides


def to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a (nested) config dataclass; tuples become lists."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def _coerce(value: Any, annotation: Any) -> Any:
    """Convert JSON values (lists, numbers) back to the annotated field type (tuples, floats...)."""
    origin = get_origin(annotation)
    if origin in (typing.Union, types.UnionType):  # ``X | None``
        if value is None:
            return None
        return _coerce(value, next(a for a in get_args(annotation) if a is not type(None)))
    if is_dataclass(annotation):
        return from_dict(annotation, value)
    if origin is tuple:
        args = get_args(annotation)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0]) for v in value)
        if len(args) != len(value):
            raise ConfigError(f"expected {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a) for v, a in zip(value, args))
    if annotation is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if annotation is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if origin is Literal and value not in get_args(annotation):
        raise ConfigError(f"{value!r} is not one of {get_args(annotation)}")
    return value


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Rebuild a config dataclass from :func:`to_dict` output (unknown keys are an error)."""
    hints = get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    data = _migrate(cls, data)
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"unknown config keys for {cls.__name__}: {sorted(unknown)}")
    return cls(**{k: _coerce(v, hints[k]) for k, v in data.items()})


def _migrate(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """Read configs written by earlier loclab versions: detector feature-map sizes were stored, now derived."""
    if cls is DetectorConfig and "feature_map_sizes" in data:
        data = dict(data)
        stored = tuple(data.pop("feature_map_sizes"))
        derived = tuple(data.get("image_size", 224) // s for s in DEFAULT_STRIDES)  # older models: 4, 8, 16
        if stored != derived:
            raise ConfigError(f"feature_map_sizes {list(stored)} do not follow from image_size "
                              f"{data.get('image_size', 224)} (expected {list(derived)})")
    return data


def apply_override(config: T, override: str) -> T:
    """Return ``config`` with one dotted-path override applied, e.g. ``"train.epochs=3"``.

    The value is parsed as JSON when possible (numbers, lists, true/false), else taken as a string.
    """
    if "=" not in override:
        raise ConfigError(f"override {override!r} must look like path.to.field=value")
    path, raw = override.split("=", 1)
    try:
        value: Any = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return _set_path(config, path.strip().split("."), value, override)


def apply_overrides(config: T, overrides: Sequence[str]) -> T:
    """:func:`apply_override` for each of ``overrides`` in order (the repeatable ``--set PATH=VALUE``)."""
    for override in overrides:
        config = apply_override(config, override)
    return config


def _set_path(config: Any, keys: list[str], value: Any, override: str) -> Any:
    hints = get_type_hints(type(config))
    key = keys[0]
    if key not in hints:
        valid = ", ".join(f.name for f in fields(config))
        raise ConfigError(f"override {override!r}: {type(config).__name__} has no field {key!r} ({valid})")
    if len(keys) == 1:
        try:
            new = _coerce(value, hints[key])
        except (ValueError, TypeError) as err:
            raise ConfigError(f"override {override!r}: {err}") from None
        return replace(config, **{key: new})
    return replace(config, **{key: _set_path(getattr(config, key), keys[1:], value, override)})
