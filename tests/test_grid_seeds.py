"""Ablation trials with several training seeds: run names, per-seed results, stand-ins and resuming."""

import math
import shutil
from dataclasses import replace

import pytest

from loclab.analysis.ablation import runs_by_trial, seed_run_name, seed_spread, seeded_trials
from loclab.config import AblationConfig, KeypointConfig, TrainConfig
from loclab.engine.rundir import read_json
from loclab.errors import ConfigError
from loclab.recipes import resolve_study_config, study_preset
from loclab.study.trials import keypoint_ablation, keypoint_trial

TINY = TrainConfig(epochs=1, batch_size=6, precision="fp32", num_threads=1, seed=5)
BASE = KeypointConfig(model="heatmap", train=TINY)


def test_seeded_trials_offset_the_configured_seed_and_keep_one_seed_grids_as_they_were():
    configs = {"a": BASE, "b": replace(BASE, sigma=3.0)}
    assert seeded_trials(configs, 1) == configs
    runs = seeded_trials(configs, 3)
    assert list(runs) == ["a", "a_seed1", "a_seed2", "b", "b_seed1", "b_seed2"]
    assert [runs[f"a{s}"].train.seed for s in ("", "_seed1", "_seed2")] == [5, 6, 7]
    assert runs["b_seed2"] == replace(configs["b"], train=replace(TINY, seed=7))
    grouped = runs_by_trial(["a", "b"], {name: name.upper() for name in runs}, 3)
    assert grouped["b"] == [("b", "B"), ("b_seed1", "B_SEED1"), ("b_seed2", "B_SEED2")]
    assert seed_run_name("a", 0) == "a"


def test_seed_spread_is_the_sample_standard_deviation():
    spread = seed_spread([0.5, 0.7, 0.9])
    assert spread["mean"] == pytest.approx(0.7) and spread["sd"] == pytest.approx(0.2)
    assert (spread["min"], spread["max"], spread["n"]) == (0.5, 0.9, 3)
    assert seed_spread([0.4]) == {"n": 1, "mean": 0.4, "sd": None, "min": 0.4, "max": 0.4}
    assert seed_spread([0.4, None]) is None and seed_spread([]) is None


def test_seeds_are_a_preset_field_overridable_and_checked():
    assert study_preset("quick").ablation.seeds == 1 and study_preset("smoke").ablation.seeds == 1
    assert resolve_study_config("smoke", ["ablation.seeds=3"]).ablation.seeds == 3
    for bad in ("0", "-1", "1.5"):
        with pytest.raises(ConfigError, match="ablation.seeds"):
            resolve_study_config("smoke", [f"ablation.seeds={bad}"])


@pytest.mark.slow
def test_every_trial_trains_per_seed_reuses_seed_zero_and_resumes(tiny_data_root, tmp_path):
    finished = tmp_path / "finished" / "heatmap"
    keypoint_trial(BASE, tiny_data_root, finished, progress=False, figures=False)
    ablation = AblationConfig(heatmap_sizes=(64,), sigmas=(2.0, 3.0), skips=(True,), keypoint_epochs=TINY.epochs,
                              seeds=2)
    out = tmp_path / "grid"
    summary = keypoint_ablation(BASE, ablation, tiny_data_root, out, finished=[finished])
    assert summary["seeds"] == 2
    # only the baseline's first seed equals the finished run; its second seed is trained
    (base_name,) = summary["reused_runs"]
    assert (out / base_name).is_symlink() and not (out / f"{base_name}_seed1").is_symlink()
    rows = summary["factors"]["sigma"]["rows"]
    for row in rows:
        runs = [r["run"] for r in row["seeds"]]
        assert runs == [row["trial"], f"{row['trial']}_seed1"]
        assert [r["seed"] for r in row["seeds"]] == [5, 6]
        for t, value in row["pck"].items():
            assert value == pytest.approx(math.fsum(r["pck"][t] for r in row["seeds"]) / 2)
        for seed in row["seeds"]:  # each seed's numbers are its own run's metrics
            assert seed["pck"] == read_json(out / seed["run"] / "metrics.json")["pck"]

    # an interrupted grid: one seed's run is gone; re-running trains only that one and gives the same summary
    other = rows[1]["seeds"][1]["run"]
    kept = {r["run"]: (out / r["run"] / "training_log.json").stat().st_mtime_ns
            for row in rows for r in row["seeds"] if r["run"] != other and not (out / r["run"]).is_symlink()}
    shutil.rmtree(out / other)
    again = keypoint_ablation(BASE, ablation, tiny_data_root, out, finished=[finished])
    assert {run: (out / run / "training_log.json").stat().st_mtime_ns for run in kept} == kept
    assert (out / other / "metrics.json").is_file()
    for before, after in zip(rows, again["factors"]["sigma"]["rows"]):
        assert [r["pck"] for r in after["seeds"]] == [r["pck"] for r in before["seeds"]]
