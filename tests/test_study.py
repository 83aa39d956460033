"""`loclab run --preset smoke`: every stage end to end, caching, refusal to overwrite, kill + resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loclab.cli import main

pytestmark = pytest.mark.slow

EXPECTED_FILES = [
    "report.md", "report.html", "detector/metrics.json", "detector/best_model.pth",
    "detector/visualizations/detections.png", "keypoints/heatmap/heatmap_model.pth",
    "keypoints/regression/regression_model.pth", "keypoints/comparison.json",
    "keypoints/visualizations/pck_curves.png", "keypoints/visualizations/failure_cases.png",
    "ablations/anchors/anchor_ablation.json", "ablations/keypoints/baseline_results.json",
    "ablations/keypoints/visualizations/ablation.png",
]


def _metrics(out: Path) -> dict:
    files = ["detector/metrics.json", "keypoints/heatmap/metrics.json", "keypoints/regression/metrics.json"]
    result = {}
    for f in files:
        m = json.loads((out / f).read_text())
        result[f] = {k: m[k] for k in ("mAP50", "AP50", "pck", "pck_swap") if k in m}
    return result


def _smoke_command(out: Path, data: Path) -> list[str]:
    return [sys.executable, "-m", "loclab", "run", "--preset", "smoke", "--out", str(out), "--data-root", str(data)]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    # A fresh process, like the killed run below: same thread count, so the same floating-point sums.
    out = tmp_path_factory.mktemp("study")
    subprocess.run(_smoke_command(out / "run", out / "data"), check=True, capture_output=True)
    return out


def test_smoke_runs_every_stage_and_writes_the_report(smoke_run):
    run = smoke_run / "run"
    for name in EXPECTED_FILES:
        assert (run / name).is_file(), name
    report = (run / "report.md").read_text()
    for section in ("## Setup", "Problem 1", "Scale specialisation", "Anchor coverage", "Anchor ablation",
                    "Problem 2", "ambiguity ceiling", "Failure cases", "## Conclusions"):
        assert section in report, section
    html = (run / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 10 and "figure not available" not in html


def test_rerun_skips_finished_stages_and_report_rebuilds_from_files(smoke_run, capsys):
    run = smoke_run / "run"
    before = _metrics(run)
    t0 = time.perf_counter()
    assert main(["run", "--preset", "smoke", "--out", str(run), "--data-root", str(smoke_run / "data")]) == 0
    assert "skipped" in capsys.readouterr().out
    assert time.perf_counter() - t0 < 20
    assert _metrics(run) == before
    (run / "report.md").unlink()
    assert main(["report", str(run)]) == 0
    assert (run / "report.md").is_file()


def test_changed_config_is_refused_without_force(smoke_run, capsys):
    code = main(["run", "--preset", "smoke", "--out", str(smoke_run / "run"), "--data-root", str(smoke_run / "data"),
                 "--set", "detector.train.optim.lr=0.01"])
    assert code == 2
    assert "different config" in capsys.readouterr().err


def test_killed_run_resumes_to_the_same_metrics(smoke_run, tmp_path):
    """SIGKILL the study during detector training; re-running resumes and matches the uninterrupted run."""
    out = tmp_path / "killed"
    cmd = _smoke_command(out, smoke_run / "data")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = out / "detector" / "training_log.json"
    deadline = time.time() + 120
    while not log.exists() and time.time() < deadline:  # epoch 1 done: now inside epoch 2
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "report.md").exists()  # the study really was cut short
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert _metrics(out) == _metrics(smoke_run / "run")
