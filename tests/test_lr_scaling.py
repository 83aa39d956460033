"""The learning rate for another batch size: the rules, their defaults (off for every recipe), and where training
states the rate it used (printed at the start, ``effective_lr`` in config.json)."""

import json
import math

import pytest
from torch import nn

from loclab.cli import main
from loclab.config import OptimConfig, TrainConfig
from loclab.engine.lr_scaling import effective_lr, lr_scale, with_batch_size
from loclab.engine.train import build_optimizer
from loclab.errors import ConfigError
from loclab.recipes import (
    PRESETS,
    detector_config,
    keypoint_config,
    own_data_detector_config,
    own_data_keypoint_config,
    study_preset,
)


@pytest.mark.parametrize(("batch", "reference", "rule", "factor"), [
    (256, 16, "linear", 16.0),
    (256, 16, "sqrt", 4.0),
    (8, 32, "linear", 0.25),
    (8, 32, "sqrt", 0.5),
    (16, 16, "linear", 1.0),
    (512, 16, "none", 1.0),
])
def test_rules(batch, reference, rule, factor):
    assert lr_scale(batch, reference, rule) == factor


def test_the_effective_rate_scales_the_configured_one():
    cfg = TrainConfig(batch_size=128, reference_batch=32, lr_scaling="sqrt", optim=OptimConfig(lr=1e-3))
    assert effective_lr(cfg) == pytest.approx(2e-3, rel=1e-15)
    assert effective_lr(TrainConfig(batch_size=128, reference_batch=32, lr_scaling="linear",
                                    optim=OptimConfig(lr=1e-3))) == pytest.approx(4e-3, rel=1e-15)


def _all_recipe_trains():
    yield from (detector_config(r).train for r in ("fast", "paper"))
    yield from (own_data_detector_config(r).train for r in ("fast", "paper"))
    for model in ("heatmap", "regression"):
        yield from (keypoint_config(model, r).train for r in ("fast", "paper"))
        yield from (own_data_keypoint_config(model, r).train for r in ("fast", "paper"))
    for name in PRESETS:
        preset = study_preset(name)
        yield from (preset.detector.train, preset.heatmap.train, preset.regression.train)


def test_no_recipe_or_preset_scales_its_rate():
    for train in _all_recipe_trains():
        assert train.lr_scaling == "none"
        assert effective_lr(train) == train.optim.lr  # the very same float: reference numbers cannot move


def test_batch_flag_scales_from_the_recipes_batch():
    recipe = detector_config("fast").train  # batch 16, lr 2e-3
    cfg = with_batch_size(recipe, 256, "linear")
    assert (cfg.batch_size, cfg.reference_batch, cfg.lr_scaling) == (256, 16, "linear")
    assert effective_lr(cfg) == pytest.approx(recipe.optim.lr * 16)
    # a second change keeps the reference the rate was tuned for; without a rule the rate stays
    assert with_batch_size(cfg, 64).reference_batch == 16
    assert effective_lr(with_batch_size(recipe, 256)) == recipe.optim.lr
    # an explicitly named reference is kept
    assert with_batch_size(TrainConfig(batch_size=16, reference_batch=64), 128).reference_batch == 64
    assert with_batch_size(recipe, None) == recipe


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError, match="needs train.reference_batch"):
        effective_lr(TrainConfig(batch_size=64, lr_scaling="linear"))
    with pytest.raises(ConfigError, match="unknown train.lr_scaling 'cubic'"):
        effective_lr(TrainConfig(lr_scaling="cubic"))
    with pytest.raises(ConfigError, match="at least 1"):
        effective_lr(TrainConfig(batch_size=0))
    with pytest.raises(ConfigError, match="--batch must be at least 1"):
        with_batch_size(TrainConfig(), 0)


def test_the_optimiser_starts_from_the_effective_rate():
    cfg = TrainConfig(batch_size=64, reference_batch=16, lr_scaling="sqrt", optim=OptimConfig(name="sgd", lr=0.01))
    optimizer = build_optimizer(nn.Linear(2, 2), cfg)
    assert [g["lr"] for g in optimizer.param_groups] == [effective_lr(cfg)] * 2 == [0.02] * 2


def test_train_prints_the_rate_and_stores_it_in_config_json(tiny_data_root, tmp_path, capsys):
    run = tmp_path / "run"
    code = main(["train", "detector", "--data-root", str(tiny_data_root), "--out", str(run), "--epochs", "1",
                 "--batch", "8", "--lr-scaling", "sqrt", "--quiet", "--no-tensorboard",
                 "--set", "train.precision=fp32", "--set", "model=reference"])
    assert code == 0
    config = json.loads((run / "config.json").read_text())
    train = config["detector"]["train"]
    assert (train["batch_size"], train["reference_batch"], train["lr_scaling"]) == (8, 16, "sqrt")
    assert config["effective_lr"] == pytest.approx(2e-3 * math.sqrt(8 / 16))
    out = capsys.readouterr().out
    assert "detector: batch 8, lr 0.001414 (train.optim.lr 0.002 x 0.7071: sqrt scaling from batch 16)" in out


def test_a_rule_without_its_reference_fails_before_training(tiny_data_root, tmp_path, capsys):
    code = main(["train", "detector", "--data-root", str(tiny_data_root), "--out", str(tmp_path / "run"),
                 "--set", "train.batch_size=8", "--lr-scaling", "linear"])
    assert code == 2
    assert "needs train.reference_batch" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
