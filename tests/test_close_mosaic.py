"""Close-mosaic: the last fraction of the epochs trains without mosaic, and the detection step follows it."""

from dataclasses import replace

import pytest
import torch

from loclab.config import AugmentConfig, DetectorConfig
from loclab.engine.detection import AnchorSetup, MosaicSchedule, make_loss, make_step
from loclab.engine.precision import resolve_numeric_path
from loclab.errors import ConfigError


def test_the_last_fraction_of_epochs_is_closed():
    schedule = MosaicSchedule(AugmentConfig(mosaic=0.7, close_mosaic=0.2), epochs=10)
    assert schedule.probability == 0.7  # before any epoch
    probabilities = []
    for epoch in range(10):
        schedule.start_epoch(epoch)
        probabilities.append(schedule.probability)
    assert probabilities == [0.7] * 8 + [0.0] * 2


def test_no_closing_keeps_mosaic_throughout_and_rounding_is_to_whole_epochs():
    open_ = MosaicSchedule(AugmentConfig(mosaic=1.0), epochs=5)
    open_.start_epoch(4)
    assert open_.probability == 1.0
    assert MosaicSchedule(AugmentConfig(mosaic=1.0, close_mosaic=0.1), epochs=44).first_closed_epoch == 40


@pytest.mark.parametrize("field", ["mosaic", "close_mosaic"])
def test_fractions_outside_0_1_are_config_errors(field):
    with pytest.raises(ConfigError, match=field):
        AugmentConfig(**{field: 1.5})


def test_the_step_mosaics_only_while_the_schedule_is_open(monkeypatch):
    import loclab.engine.detection as detection

    calls = []

    def spy(images, boxes, labels, valid, probability):
        calls.append(probability)
        return images, boxes, labels, valid

    monkeypatch.setattr(detection, "mosaic_batch", spy)
    cfg = DetectorConfig(image_size=64, anchor_sizes=((8.0,), (16.0,), (32.0,)), num_classes=1)
    cfg = replace(cfg, train=replace(cfg.train, epochs=4, augment=AugmentConfig(mosaic=1.0, close_mosaic=0.5)))
    schedule = MosaicSchedule(cfg.train.augment, cfg.train.epochs)
    step = make_step(cfg, make_loss(cfg, AnchorSetup.from_config(cfg)), schedule)
    model = detection.make_model(cfg).train()
    batch = (torch.rand(2, 3, 64, 64), torch.tensor([[[8.0, 8.0, 40.0, 40.0]]] * 2), torch.zeros(2, 1, dtype=torch.long),
             torch.ones(2, 1, dtype=torch.bool), None)
    numeric = resolve_numeric_path("fp32")
    for epoch in range(4):
        schedule.start_epoch(epoch)
        step(model, batch, numeric)
    assert calls == [1.0, 1.0]
