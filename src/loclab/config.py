"""Configuration: nested frozen dataclasses, named recipes and presets.

Every run directory stores its resolved config as ``config.json``; :func:`from_dict` reads it back.
Any field can be overridden from the command line with a dotted path, e.g.
``--set train.epochs=3`` or ``--set detector.anchor_sizes=[[16,24,32],[48,56,72],[112,144,192]]``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields, is_dataclass, replace
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

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
class TrainConfig:
    epochs: int = 12
    batch_size: int = 16
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    # "auto": bf16 autocast + channels_last on CPUs with BF16, CUDA AMP on GPUs, fp32 elsewhere.
    precision: Precision = "auto"
    hflip: bool = True
    grad_clip: float = 10.0
    seed: int = 0
    num_threads: int = 0  # 0: leave torch's default (one thread per core)
    # torch.compile the training forward/backward: fuses BatchNorm/ReLU/elementwise work, at a one-off
    # compile cost (about 30 s for the detector on 2 CPU cores), so it pays off on long runs only.
    compile: bool = False


@dataclass(frozen=True)
class DetectorConfig:
    model: str = "loclab"
    image_size: int = 224
    num_classes: int = 3
    feature_map_sizes: tuple[int, ...] = (56, 28, 14)
    anchor_sizes: tuple[tuple[float, ...], ...] = ((16, 24, 32), (48, 64, 96), (96, 128, 192))
    pos_threshold: float = 0.5
    neg_threshold: float = 0.3
    min_best_iou: float = 0.1
    box_variances: tuple[float, float] = (0.1, 0.2)
    neg_pos_ratio: float = 3.0
    weight_obj: float = 1.0
    weight_cls: float = 1.0
    weight_loc: float = 2.0
    # Inference: a low score threshold so the precision-recall curve is not truncated (SPEC §2.5).
    score_threshold: float = 0.01
    nms_iou: float = 0.5
    pre_nms_top_k: int = 1000
    max_detections: int = 100
    display_threshold: float = 0.5
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass(frozen=True)
class KeypointConfig:
    model: str = "heatmap"
    image_size: int = 128
    num_keypoints: int = 5
    heatmap_size: int = 64
    sigma: float = 2.0
    skip: bool = True
    # "mse": the reports' loss; "spatial_ce": heatmaps as spatial distributions (heatmap models only).
    loss: Literal["mse", "spatial_ce"] = "mse"
    # symmetry-aware training: the two identically drawn hands may match the target in either order
    hand_invariant: bool = False
    heatmap_snapshot_epochs: tuple[int, ...] = ()  # empty: a spread of epochs chosen from the epoch count
    num_snapshot_images: int = 4
    train: TrainConfig = field(default_factory=TrainConfig)


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


@dataclass(frozen=True)
class StudyConfig:
    preset: str = "quick"
    data: DataConfig = field(default_factory=DataConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    heatmap: KeypointConfig = field(default_factory=KeypointConfig)
    regression: KeypointConfig = field(default_factory=lambda: KeypointConfig(model="regression"))
    ablation: AblationConfig = field(default_factory=AblationConfig)
    failure_threshold: float = 0.1


# --------------------------------------------------------------------------------------------------
# Recipes


def detector_recipe(name: str) -> TrainConfig:
    """Training settings for the detector.

    ``paper``: the reports' exact setting — batch 16, SGD lr 0.001 momentum 0.9, 50 epochs, constant lr,
    no augmentation, best model by validation loss. The arithmetic is loclab's default numeric path
    (bf16 autocast with fp32 weights and fp32 losses on CPUs with BF16); ``--set train.precision=fp32``
    reproduces the reports' plain fp32. ``fast``: loclab's — AdamW with warmup + cosine, horizontal flips and the
    fastest correct numeric path.
    """
    if name == "paper":
        return TrainConfig(
            epochs=50,
            batch_size=16,
            optim=OptimConfig(name="sgd", lr=1e-3, momentum=0.9, weight_decay=0.0),
            schedule=ScheduleConfig(name="constant", warmup_epochs=0.0),
            precision="auto",
            hflip=False,
            grad_clip=0.0,
        )
    if name == "fast":
        return TrainConfig(
            epochs=12,
            batch_size=16,
            optim=OptimConfig(name="adamw", lr=2e-3, weight_decay=5e-4),
            schedule=ScheduleConfig(name="cosine", warmup_epochs=1.0),
            precision="auto",
            hflip=True,
        )
    raise ValueError(f"unknown detector recipe {name!r}; choose 'fast' or 'paper'")


def keypoint_recipe(name: str) -> TrainConfig:
    """Training settings for the keypoint models.

    ``paper``: MSE, Adam lr 1e-3, batch 32, 30 epochs, constant lr — identical for both models (numeric
    path as for the detector's ``paper`` recipe).
    ``fast``: Adam with warmup + cosine and the fastest correct numeric path.
    """
    if name == "paper":
        return TrainConfig(
            epochs=30,
            batch_size=32,
            optim=OptimConfig(name="adam", lr=1e-3, weight_decay=0.0),
            schedule=ScheduleConfig(name="constant", warmup_epochs=0.0),
            precision="auto",
            hflip=False,
            grad_clip=0.0,
        )
    if name == "fast":
        return TrainConfig(
            epochs=20,
            batch_size=32,
            optim=OptimConfig(name="adamw", lr=2e-3, weight_decay=1e-4),
            schedule=ScheduleConfig(name="cosine", warmup_epochs=1.0),
            precision="auto",
            hflip=False,
        )
    raise ValueError(f"unknown keypoint recipe {name!r}; choose 'fast' or 'paper'")


def keypoint_config(model: str, recipe: str) -> KeypointConfig:
    """A keypoint model's config for a recipe: ``fast`` trains heatmap models with the spatial cross-entropy
    (plain MSE leaves them near the all-zero map for many epochs); ``paper`` uses the reports' MSE."""
    loss = "spatial_ce" if recipe == "fast" and model == "heatmap" else "mse"
    return KeypointConfig(model=model, loss=loss, train=keypoint_recipe(recipe))


def _with_epochs(train: TrainConfig, epochs: int) -> TrainConfig:
    return replace(train, epochs=epochs)


def study_preset(name: str) -> StudyConfig:
    """The named presets of ``loclab run``: ``smoke`` (seconds), ``quick`` (minutes), ``paper``."""
    if name == "smoke":
        tiny = TrainConfig(epochs=2, batch_size=8, precision="fp32")
        return StudyConfig(
            preset="smoke",
            data=DataConfig(n_train=16, n_val=8),
            detector=DetectorConfig(model="reference", train=tiny),
            heatmap=KeypointConfig(model="heatmap", train=tiny),
            regression=KeypointConfig(model="regression", train=tiny),
            ablation=AblationConfig(
                anchor_sets=(((16, 24, 32), (48, 56, 72), (112, 144, 192)),),
                heatmap_sizes=(32, 64),
                sigmas=(1.0, 2.0),
                skips=(True, False),
                detector_epochs=1,
                keypoint_epochs=1,
            ),
        )
    if name == "quick":
        return StudyConfig(
            preset="quick",
            detector=DetectorConfig(model="loclab", train=_with_epochs(detector_recipe("fast"), 6)),
            heatmap=KeypointConfig(
                model="heatmap", loss="spatial_ce", hand_invariant=True, train=_with_epochs(keypoint_recipe("fast"), 8)
            ),
            regression=KeypointConfig(
                model="regression", hand_invariant=True, train=_with_epochs(keypoint_recipe("fast"), 8)
            ),
            ablation=AblationConfig(detector_epochs=3, keypoint_epochs=3),
        )
    if name == "paper":
        return StudyConfig(
            preset="paper",
            detector=DetectorConfig(model="reference", box_variances=(1.0, 1.0), train=detector_recipe("paper")),
            heatmap=KeypointConfig(model="heatmap", train=keypoint_recipe("paper")),
            regression=KeypointConfig(model="regression", train=keypoint_recipe("paper")),
            ablation=AblationConfig(detector_epochs=50, keypoint_epochs=30),
        )
    raise ValueError(f"unknown preset {name!r}; choose one of smoke, quick, paper")


PRESETS = ("smoke", "quick", "paper")


# --------------------------------------------------------------------------------------------------
# Serialisation and overrides


def to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a (nested) config dataclass; tuples become lists."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def _coerce(value: Any, annotation: Any) -> Any:
    """Convert JSON values (lists, numbers) back to the annotated field type (tuples, floats...)."""
    origin = get_origin(annotation)
    if is_dataclass(annotation):
        return from_dict(annotation, value)
    if origin is tuple:
        args = get_args(annotation)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0]) for v in value)
        if len(args) != len(value):
            raise ValueError(f"expected {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a) for v, a in zip(value, args))
    if annotation is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if annotation is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if origin is Literal and value not in get_args(annotation):
        raise ValueError(f"{value!r} is not one of {get_args(annotation)}")
    return value


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Rebuild a config dataclass from :func:`to_dict` output (unknown keys are an error)."""
    hints = get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"unknown config keys for {cls.__name__}: {sorted(unknown)}")
    return cls(**{k: _coerce(v, hints[k]) for k, v in data.items()})


def apply_override(config: T, assignment: str) -> T:
    """Return ``config`` with one dotted-path override applied, e.g. ``"train.epochs=3"``.

    The value is parsed as JSON when possible (numbers, lists, true/false), else taken as a string.
    """
    if "=" not in assignment:
        raise ValueError(f"override {assignment!r} must look like path.to.field=value")
    path, raw = assignment.split("=", 1)
    try:
        value: Any = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return _set_path(config, path.strip().split("."), value, assignment)


def _set_path(config: Any, keys: list[str], value: Any, assignment: str) -> Any:
    hints = get_type_hints(type(config))
    key = keys[0]
    if key not in hints:
        valid = ", ".join(f.name for f in fields(config))
        raise ValueError(f"override {assignment!r}: {type(config).__name__} has no field {key!r} ({valid})")
    if len(keys) == 1:
        try:
            new = _coerce(value, hints[key])
        except (ValueError, TypeError) as err:
            raise ValueError(f"override {assignment!r}: {err}") from None
        return replace(config, **{key: new})
    return replace(config, **{key: _set_path(getattr(config, key), keys[1:], value, assignment)})
