"""Without Ray installed, the Ray engine says how to install it."""

import sys

import pytest

from loclab.cli import main
from loclab.config import KeypointConfig
from loclab.study.trials import run_grid


def test_ray_engine_without_ray_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(ImportError, match=r"loclab\[ray\]"):
        run_grid("keypoints", {"hm32": KeypointConfig()}, tmp_path / "data", tmp_path / "out", engine="ray")


def test_cli_without_ray_is_a_usage_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)
    code = main(["ablate", "keypoints", "--data-root", str(tmp_path), "--out", str(tmp_path / "out"),
                 "--engine", "ray"])
    err = capsys.readouterr().err
    assert code == 2 and "loclab[ray]" in err and "Traceback" not in err


def test_unknown_engine_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown grid engine"):
        run_grid("keypoints", {"hm32": KeypointConfig()}, tmp_path / "data", tmp_path / "out", engine="slurm")
