"""Every registered model keeps its task's contract (loclab.models.contracts), and the checks catch a model that
does not."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from loclab.config import DetectorConfig, KeypointConfig
from loclab.engine import keypoints as kp_task
from loclab.errors import ConfigError
from loclab.models.contracts import (
    KEYPOINT_OPTIONS,
    Detector,
    KeypointModel,
    detector_problems,
    keypoint_class_problems,
    keypoint_model_problems,
)
from loclab.models.detector import DETECTOR_MODELS, receptive_field
from loclab.models.keypoints import KEYPOINT_MODELS


@pytest.mark.parametrize("name", sorted(DETECTOR_MODELS))
def test_every_detector_keeps_the_contract(name):
    torch.manual_seed(0)
    model = DETECTOR_MODELS[name](num_anchors=2, num_classes=4)
    assert isinstance(model, Detector)
    assert (model.num_anchors, model.num_classes) == (2, 4)
    strides = DetectorConfig(model=name).strides
    assert detector_problems(model, num_anchors=2, num_classes=4, strides=strides, image_size=64) == []


@pytest.mark.parametrize("name", sorted(KEYPOINT_MODELS))
def test_every_keypoint_model_keeps_the_contract(name):
    cls = KEYPOINT_MODELS[name]
    assert keypoint_class_problems(cls) == []
    # a non-square RGB input of 5 keypoints, at every heatmap stride the model can be asked for
    for heatmap_size in (64, 32, 16) if "heatmap_size" in cls.options else (64,):
        cfg = KeypointConfig(model=name, image_size=64, heatmap_size=heatmap_size, num_keypoints=5, in_channels=3,
                             input_width=64, input_height=48)
        torch.manual_seed(0)
        model = kp_task.make_model(cfg)
        assert isinstance(model, KeypointModel)
        assert keypoint_model_problems(model, num_keypoints=5, in_channels=3, input_size=cfg.input_size,
                                       heatmap_stride=cfg.heatmap_stride) == [], (name, heatmap_size)


def test_the_engine_fills_exactly_the_contract_options():
    assert set(kp_task.model_options(KeypointConfig())) == set(KEYPOINT_OPTIONS)


def test_the_detector_check_names_what_breaks():
    class TwoHeads(nn.Module):
        def __init__(self, num_anchors=3, num_classes=3):
            super().__init__()
            self.num_anchors, self.num_classes = num_anchors, num_classes
            self.convs = nn.ModuleList(nn.Conv2d(3, num_anchors * (5 + num_classes), 1, stride=s) for s in (4, 8))

        def features(self, images):
            return [images[..., ::s, ::s] for s in (4, 8)]

        def forward(self, images):
            return [conv(images) for conv in self.convs]

    problems = detector_problems(TwoHeads(), num_anchors=3, num_classes=3, strides=(4, 8, 16), image_size=64)
    assert len(problems) == 2 and "expected [(2, 24, 16, 16), (2, 24, 8, 8), (2, 24, 4, 4)]" in problems[0]
    # the receptive field probe follows the heads a model has
    assert len(receptive_field(TwoHeads(), image_size=64)) == 2


def test_the_keypoint_checks_name_what_breaks():
    class Broken(nn.Module):
        output_type = "coordinates"
        options = ("num_keypoints", "width")

        def __init__(self, num_keypoints, depth):
            super().__init__()
            self.fc = nn.Linear(1, 2 * num_keypoints)

        def forward(self, x):
            return self.fc(x.mean(dim=(1, 2, 3))[:, None])[:, :-1]

    problems = keypoint_class_problems(Broken)
    assert any("output_type is 'coordinates'" in p for p in problems)
    assert any("['width'] are not keypoint options" in p for p in problems)
    assert any("no ['width'] argument" in p for p in problems)
    assert any("['depth'] are not in options and have no default" in p for p in problems)
    Broken.output_type = "regression"
    assert keypoint_model_problems(Broken(5, 1), num_keypoints=5, in_channels=1, input_size=(32, 32),
                                   heatmap_stride=2) == ["forward gave (2, 9), expected coordinates (2, 10)"]


def test_an_option_the_engine_cannot_fill_is_a_config_error(monkeypatch):
    class Wide(nn.Module):
        output_type = "regression"
        options = ("num_keypoints", "width")

        def __init__(self, num_keypoints=5, width=8):
            super().__init__()

    monkeypatch.setitem(KEYPOINT_MODELS, "wide", Wide)
    with pytest.raises(ConfigError, match=r"'wide' declares options \['width'\]"):
        kp_task.make_model(KeypointConfig(model="wide"))
