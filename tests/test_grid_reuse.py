"""A grid trial identical to a run that already finished is not trained again: the run stands in for it."""

from dataclasses import replace

import pytest

from loclab.config import AblationConfig, KeypointConfig, TrainConfig, to_dict
from loclab.engine.rundir import read_json, write_json
from loclab.study.trials import keypoint_ablation, keypoint_trial, matching_runs, run_grid, trial_metrics

pytestmark = pytest.mark.slow

TINY = TrainConfig(epochs=1, batch_size=6, precision="fp32", num_threads=1)
BASE = KeypointConfig(model="heatmap", train=TINY)


@pytest.fixture(scope="module")
def finished_run(tiny_data_root, tmp_path_factory):
    run = tmp_path_factory.mktemp("finished") / "heatmap"
    keypoint_trial(BASE, tiny_data_root, run, progress=False, figures=False)
    return run


def fake_run(path, cfg, data_root, *, metrics=True):
    path.mkdir(parents=True)
    write_json(path / "config.json", {"task": "keypoints", "data_root": str(data_root.resolve()),
                                      "keypoints": to_dict(cfg)})
    if metrics:
        write_json(path / "metrics.json", {})
    return path


def test_only_a_finished_run_of_the_same_config_and_data_matches(tiny_data_root, tmp_path):
    configs = {"base": BASE, "sigma3": replace(BASE, sigma=3.0)}
    same = fake_run(tmp_path / "same", BASE, tiny_data_root)
    unfinished = fake_run(tmp_path / "unfinished", BASE, tiny_data_root, metrics=False)
    other_data = fake_run(tmp_path / "other_data", BASE, tmp_path)
    other_cfg = fake_run(tmp_path / "other_cfg", replace(BASE, sigma=4.0), tiny_data_root)
    assert matching_runs("keypoints", configs, tiny_data_root, [unfinished, other_data, other_cfg, same]) == {"base": same}
    assert matching_runs("keypoints", configs, tiny_data_root, [unfinished, other_data, other_cfg]) == {}
    assert matching_runs("detector", configs, tiny_data_root, [same]) == {}


def test_stand_in_gives_what_training_the_trial_gives(tiny_data_root, finished_run, tmp_path):
    stamp = (finished_run / "metrics.json").stat().st_mtime_ns
    configs = {"base": BASE, "sigma3": replace(BASE, sigma=3.0)}
    reuse = matching_runs("keypoints", configs, tiny_data_root, [finished_run])
    reused = run_grid("keypoints", configs, tiny_data_root, tmp_path / "reused", reuse=reuse)
    trained = run_grid("keypoints", configs, tiny_data_root, tmp_path / "trained")

    link = tmp_path / "reused" / "base"
    assert link.is_symlink() and link.resolve() == finished_run.resolve()
    assert (finished_run / "metrics.json").stat().st_mtime_ns == stamp  # the finished run is only read
    assert (tmp_path / "reused" / "sigma3" / "heatmap_model.pth").is_file()
    assert list(reused) == list(configs)
    for name in configs:
        assert reused[name]["pck"] == trained[name]["pck"]
        assert reused[name]["val_loss"] == pytest.approx(trained[name]["val_loss"], rel=1e-6)
    assert reused["base"] == trial_metrics("keypoints", finished_run)


def test_ablation_records_its_stand_ins_and_resumes_its_own_trials(tiny_data_root, finished_run, tmp_path):
    ablation = AblationConfig(heatmap_sizes=(64,), sigmas=(2.0, 3.0), skips=(True,), keypoint_epochs=TINY.epochs)
    out = tmp_path / "grid"
    summary = keypoint_ablation(BASE, ablation, tiny_data_root, out, finished=[finished_run])
    (name,) = summary["reused_runs"]
    assert (out / name).resolve() == finished_run.resolve()
    assert read_json(out / "baseline_results.json")["reused_runs"] == summary["reused_runs"]
    assert len(summary["factors"]["sigma"]["rows"]) == 2

    # a trial directory holding a run of its own (an interrupted grid) is resumed, not replaced by a link
    own = tmp_path / "own"
    (own / name).mkdir(parents=True)
    summary = keypoint_ablation(BASE, ablation, tiny_data_root, own, finished=[finished_run])
    assert summary["reused_runs"] == {}
    assert not (own / name).is_symlink() and (own / name / "heatmap_model.pth").is_file()


def test_cli_refuses_to_reuse_an_unfinished_run(tiny_data_root, tmp_path, capsys):
    from loclab.cli import main

    (tmp_path / "half").mkdir()
    code = main(["ablate", "keypoints", "--preset", "smoke", "--data-root", str(tiny_data_root),
                 "--out", str(tmp_path / "grid"), "--reuse", str(tmp_path / "half")])
    assert code == 2
    assert "not a finished run" in capsys.readouterr().err
    assert not (tmp_path / "grid").exists()  # refused before any trial ran
