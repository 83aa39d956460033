"""Ablation trials in parallel worker processes give the results of running them one after another."""

import pytest

from loclab.config import KeypointConfig, TrainConfig
from loclab.study.trials import run_grid

pytestmark = pytest.mark.slow


def test_parallel_workers_match_serial_trials(tiny_data_root, tmp_path):
    tiny = TrainConfig(epochs=1, batch_size=6, precision="fp32", num_threads=1)
    configs = {f"hm{s}": KeypointConfig(model="heatmap", heatmap_size=s, train=tiny) for s in (32, 64)}
    serial = run_grid("keypoints", configs, tiny_data_root, tmp_path / "serial", workers=1)
    parallel = run_grid("keypoints", configs, tiny_data_root, tmp_path / "parallel", workers=2)
    assert set(parallel) == set(configs)
    for name in configs:
        assert (tmp_path / "parallel" / name / "heatmap_model.pth").is_file()
        assert parallel[name]["pck"] == serial[name]["pck"]
        assert parallel[name]["val_loss"] == pytest.approx(serial[name]["val_loss"], rel=1e-6)
