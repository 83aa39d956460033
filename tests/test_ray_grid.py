"""Ablation trials on Ray Tune give the results of running them one after another (needs ``loclab[ray]``)."""

import pytest

ray = pytest.importorskip("ray")

from loclab.config import KeypointConfig, TrainConfig
from loclab.study.trials import run_grid

pytestmark = pytest.mark.slow


@pytest.fixture
def local_ray():
    """Shuts down the local Ray instance that the Ray engine starts."""
    yield
    ray.shutdown()


def test_ray_trials_match_serial_trials(tiny_data_root, tmp_path, local_ray):
    tiny = TrainConfig(epochs=1, batch_size=6, precision="fp32", num_threads=1)
    configs = {f"hm{s}": KeypointConfig(model="heatmap", heatmap_size=s, train=tiny) for s in (32, 64)}
    serial = run_grid("keypoints", configs, tiny_data_root, tmp_path / "serial", workers=1)
    on_ray = run_grid("keypoints", configs, tiny_data_root, tmp_path / "ray", engine="ray")
    assert list(on_ray) == list(configs)
    for name in configs:
        assert (tmp_path / "ray" / name / "heatmap_model.pth").is_file()
        assert set(on_ray[name]) == set(serial[name])  # Tune's bookkeeping keys are stripped
        assert on_ray[name]["pck"] == serial[name]["pck"]
        assert on_ray[name]["per_keypoint"] == serial[name]["per_keypoint"]  # nested values survive
        assert on_ray[name]["val_loss"] == pytest.approx(serial[name]["val_loss"], rel=1e-6)
