"""Named recipes and presets: the configs of :mod:`loclab.config` that loclab trains with.

Recipes (``paper``, ``fast``) for the reference datasets and for a user's own data (any layout but the reference
one), the presets of ``loclab run`` (``smoke``, ``quick``, ``paper``) and :func:`resolve_study_config`, a preset
with ``--set`` overrides applied.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from loclab.config import (
    REFERENCE_ANCHOR_SIZES,
    AblationConfig,
    AugmentConfig,
    DataConfig,
    DetectorConfig,
    KeypointConfig,
    OptimConfig,
    ScheduleConfig,
    StudyConfig,
    TrainConfig,
    apply_overrides,
)
from loclab.errors import ConfigError


def scaled_anchor_sizes(image_size: int) -> tuple[tuple[float, ...], ...]:
    """The reference anchors (chosen for 224 px inputs) scaled to another input size."""
    factor = image_size / 224
    return tuple(tuple(round(a * factor, 1) for a in scale) for scale in REFERENCE_ANCHOR_SIZES)


def _paper_train(*, epochs: int, batch_size: int, optim: OptimConfig) -> TrainConfig:
    """The reports' training: constant lr, no flips, no gradient clipping, on loclab's default numeric path."""
    return TrainConfig(epochs=epochs, batch_size=batch_size, optim=optim,
                       schedule=ScheduleConfig(name="constant", warmup_epochs=0.0), precision="auto", hflip=False,
                       grad_clip=0.0)


def _fast_train(*, epochs: int, batch_size: int, optim: OptimConfig, hflip: bool) -> TrainConfig:
    """loclab's training: one warmup epoch, then a cosine schedule, on the fastest correct numeric path."""
    return TrainConfig(epochs=epochs, batch_size=batch_size, optim=optim,
                       schedule=ScheduleConfig(name="cosine", warmup_epochs=1.0), precision="auto", hflip=hflip)


# --------------------------------------------------------------------------------------------------
# Detector


def detector_recipe(name: str) -> TrainConfig:
    """Training settings for the detector.

    ``paper``: the reports' exact setting — batch 16, SGD lr 0.001 momentum 0.9, 50 epochs, constant lr,
    no augmentation, best model by validation loss. The arithmetic is loclab's default numeric path
    (bf16 autocast with fp32 weights and fp32 losses on CPUs with BF16); ``--set train.precision=fp32``
    reproduces the reports' plain fp32. ``fast``: loclab's — AdamW with warmup + cosine, horizontal flips and the
    fastest correct numeric path.
    """
    if name == "paper":
        return _paper_train(epochs=50, batch_size=16,
                            optim=OptimConfig(name="sgd", lr=1e-3, momentum=0.9, weight_decay=0.0))
    if name == "fast":
        return _fast_train(epochs=12, batch_size=16, optim=OptimConfig(name="adamw", lr=2e-3, weight_decay=5e-4),
                           hflip=True)
    raise ConfigError(f"unknown detector recipe {name!r}; choose 'fast' or 'paper'")


def detector_config(recipe: str) -> DetectorConfig:
    """The detector config of a recipe on the reference shapes: ``paper`` is the reports' reference model with
    unit box variances, ``fast`` loclab's model (see :func:`detector_recipe` for the training settings)."""
    if recipe == "paper":
        return DetectorConfig(model="reference", box_variances=(1.0, 1.0), train=detector_recipe("paper"))
    return DetectorConfig(train=detector_recipe(recipe))


# The own-data `fast` detector: the ``csp`` model with the grid loss at 320 px, 3,200 steps with mosaic on half the
# images and a moving average of the weights. On 132 kangaroo photos it scored mAP@0.5 0.74 (0.73 for two seeds
# at 2,500 steps) where the ``loclab`` model with the SSD loss scored 0.68-0.70 in about the same time; 416 px
# for 1,800 steps and 256 px for 4,400 scored alike (README, "Your own data"). 3,200 steps keep a run near 19
# minutes of training on a 2-core CPU; a 10 % object is 32 px, above the smallest anchors. ``--imgsz`` trades
# speed for small objects.
OWN_DATA_IMAGE_SIZE = 320
OWN_DATA_STEPS = 3200
OWN_DATA_AUGMENT = AugmentConfig(scale=(0.5, 1.5), translate=0.2, brightness=0.3, contrast=0.3, saturation=0.5,
                                 mosaic=0.5)
OWN_DATA_EMA = 0.999


def own_data_detector_config(recipe: str, image_size: int = OWN_DATA_IMAGE_SIZE) -> DetectorConfig:
    """The detector config for a user's dataset (any layout but the reference one).

    ``fast``: the ``csp`` model and the ``grid`` loss (docs/detection.md) at ``image_size`` with the reference
    anchors scaled to it, trained for :data:`OWN_DATA_STEPS` optimiser steps whatever the dataset's size, with
    random zoom/shift, flips, colour jitter and mosaic, and the moving average of the weights as the validated
    model (a few hundred photos from scratch overfit without them). ``paper``: the reports' setting as on the
    shapes, at ``image_size``.
    """
    base = detector_config(recipe)
    train = base.train
    if recipe == "fast":
        train = replace(train, steps=OWN_DATA_STEPS, augment=OWN_DATA_AUGMENT, precise_bn_batches=4, ema=OWN_DATA_EMA)
        base = replace(base, model="csp", loss="grid", weight_loc=1.0)  # every grid-loss weight 1
    return replace(base, image_size=image_size, anchor_sizes=scaled_anchor_sizes(image_size), train=train)


# --------------------------------------------------------------------------------------------------
# Keypoints


def keypoint_recipe(name: str) -> TrainConfig:
    """Training settings for the keypoint models.

    ``paper``: MSE, Adam lr 1e-3, batch 32, 30 epochs, constant lr — identical for both models (numeric
    path as for the detector's ``paper`` recipe).
    ``fast``: Adam with warmup + cosine and the fastest correct numeric path.
    """
    if name == "paper":
        return _paper_train(epochs=30, batch_size=32, optim=OptimConfig(name="adam", lr=1e-3, weight_decay=0.0))
    if name == "fast":
        return _fast_train(epochs=20, batch_size=32, optim=OptimConfig(name="adamw", lr=2e-3, weight_decay=1e-4),
                           hflip=False)
    raise ConfigError(f"unknown keypoint recipe {name!r}; choose 'fast' or 'paper'")


def keypoint_config(model: str, recipe: str) -> KeypointConfig:
    """A keypoint model's config for a recipe: ``fast`` trains heatmap models with the spatial cross-entropy
    (plain MSE leaves them near the all-zero map for many epochs); ``paper`` uses the reports' MSE."""
    loss = "spatial_ce" if recipe == "fast" and model == "heatmap" else "mse"
    return KeypointConfig(model=model, loss=loss, train=keypoint_recipe(recipe))


# The own-data keypoint input is square, so neither tall person boxes nor wide full video frames (DeepLabCut) lose
# more than a quarter of it to padding; ``--input-size WxH`` fits it to the data's boxes (e.g. 192x256 for standing
# people). The default keeps a `fast` run on a small project (a DeepLabCut project of 50 frames: over 200 passes
# over its instances) to about 11 minutes on a 2-core CPU: 600 steps of 16 crops of 192 x 192 px. A larger
# dataset, or a GPU, wants more steps (``--set train.steps=N``) and perhaps a larger ``--input-size``.
OWN_DATA_KEYPOINT_INPUT = (192, 192)
OWN_DATA_KEYPOINT_STEPS = 600
OWN_DATA_KEYPOINT_BATCH = 16
# MMPose's top-down recipe: random scale 0.75-1.25, rotation up to 30 degrees, flips (with ``flip``), colour.
OWN_DATA_KEYPOINT_AUGMENT = AugmentConfig(scale=(0.75, 1.25), rotation=30.0, brightness=0.2, contrast=0.2,
                                          saturation=0.2)


def own_data_keypoint_config(model: str, recipe: str,
                             input_size: tuple[int, int] = OWN_DATA_KEYPOINT_INPUT) -> KeypointConfig:
    """A keypoint model's config for a user's dataset (any layout but the reference one).

    ``fast``: :func:`keypoint_config`'s model and loss at ``input_size`` (width, height), trained for
    :data:`OWN_DATA_KEYPOINT_STEPS` optimiser steps of :data:`OWN_DATA_KEYPOINT_BATCH` crops whatever the dataset's
    size, with random scale, rotation, flips and colour jitter. ``paper``: the reports' setting as on the stick
    figures, at ``input_size``.
    """
    base = keypoint_config(model, recipe)
    train, flip = base.train, False
    if recipe == "fast":
        train, flip = replace(train, steps=OWN_DATA_KEYPOINT_STEPS, batch_size=OWN_DATA_KEYPOINT_BATCH,
                              augment=OWN_DATA_KEYPOINT_AUGMENT), True
    return replace(base, input_width=input_size[0], input_height=input_size[1], flip=flip, train=train)


# --------------------------------------------------------------------------------------------------
# Study presets


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
            ablation=AblationConfig(detector_epochs=3, keypoint_epochs=3, seeds=1),  # minutes: one seed per trial
        )
    if name == "paper":
        return StudyConfig(
            preset="paper",
            detector=detector_config("paper"),
            heatmap=KeypointConfig(model="heatmap", train=keypoint_recipe("paper")),
            regression=KeypointConfig(model="regression", train=keypoint_recipe("paper")),
            # One seed per trial. The preset takes about an hour (README, "Study presets": 59 min), and each further
            # seed would add about another hour: two more 50-epoch detector trainings of about 20 min each (default
            # and alternative anchors; only the first seed of the default is the detector run itself) and six more
            # 30-epoch keypoint trials of about 3 min. Its conclusions therefore rest on the bootstrap intervals
            # over validation images, which the report says do not cover training noise; `--seeds 3` (about 3 h in
            # all) adds the spread across seeds where that time is available.
            ablation=AblationConfig(detector_epochs=50, keypoint_epochs=30, seeds=1),
        )
    raise ConfigError(f"unknown preset {name!r}; choose one of smoke, quick, paper")


PRESETS = ("smoke", "quick", "paper")


def resolve_study_config(preset: str, overrides: Sequence[str] = ()) -> StudyConfig:
    """The study config of ``loclab run`` / ``loclab ablate``: a preset with ``--set`` overrides applied in order."""
    return apply_overrides(study_preset(preset), overrides)
