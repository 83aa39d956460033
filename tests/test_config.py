import json

import pytest

from loclab.config import DetectorConfig, StudyConfig, apply_override, from_dict, to_dict
from loclab.recipes import PRESETS, detector_recipe, keypoint_recipe, study_preset


@pytest.mark.parametrize("name", PRESETS)
def test_presets_round_trip_through_json(name):
    cfg = study_preset(name)
    again = from_dict(StudyConfig, json.loads(json.dumps(to_dict(cfg))))
    assert again == cfg


def test_paper_recipes_are_the_reports_settings():
    d = detector_recipe("paper")
    assert (d.batch_size, d.optim.name, d.optim.lr, d.optim.momentum, d.epochs) == (16, "sgd", 1e-3, 0.9, 50)
    k = keypoint_recipe("paper")
    assert (k.batch_size, k.optim.name, k.optim.lr, k.epochs) == (32, "adam", 1e-3, 30)


def test_override_nested_and_typed():
    cfg = apply_override(DetectorConfig(), "train.optim.lr=0.5")
    assert cfg.train.optim.lr == 0.5
    cfg = apply_override(cfg, "anchor_sizes=[[16,24,32],[48,56,72],[112,144,192]]")
    assert cfg.anchor_sizes == ((16.0, 24.0, 32.0), (48.0, 56.0, 72.0), (112.0, 144.0, 192.0))
    cfg = apply_override(cfg, "model=reference")
    assert cfg.model == "reference"


def test_override_errors_name_the_field():
    with pytest.raises(ValueError, match="no field 'nope'"):
        apply_override(DetectorConfig(), "train.nope=1")
    with pytest.raises(ValueError, match="precision"):
        apply_override(DetectorConfig(), "train.precision=fp8")
    with pytest.raises(ValueError, match="path.to.field=value"):
        apply_override(DetectorConfig(), "model")
