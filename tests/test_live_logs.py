"""Live training logs: results.csv agrees with training_log.json (fresh, interrupted, resumed runs), TensorBoard
scalars carry the same numbers under the same tags, and training without TensorBoard is silent."""

import csv
import json

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from loclab.config import OptimConfig, ScheduleConfig, TrainConfig
from loclab.engine import logs
from loclab.engine.logs import EpochLogs, flatten_record
from loclab.engine.precision import resolve_numeric_path
from loclab.engine.train import RunFiles, fit


def _data(n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    return TensorDataset(x, x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]))


def _step(model, batch, numeric):
    x, y = batch
    loss = nn.functional.mse_loss(model(x), y)
    return {"loss_total": loss, "loss_half": loss / 2}


def _fit(run_dir, epochs=3, step=_step, resume=False):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    cfg = TrainConfig(epochs=epochs, batch_size=8, optim=OptimConfig(name="adamw", lr=0.02),
                      schedule=ScheduleConfig(name="cosine", warmup_epochs=1), precision="fp32")
    return fit(model, step, _data(32, 0), _data(8, 1), None, cfg, resolve_numeric_path("fp32"), RunFiles(run_dir),
               {"task": "toy", "config": {}}, resume=resume, progress=False)


def _csv(run_dir):
    with (run_dir / "results.csv").open(newline="") as f:
        return list(csv.reader(f))


def _as_csv(log):
    """training_log.json as the rows results.csv must hold (header first)."""
    rows = [flatten_record(r) for r in log]
    return [list(rows[0])] + [[str(v) for v in r.values()] for r in rows]


def test_results_csv_matches_training_log(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCLAB_TENSORBOARD", "0")
    log = _fit(tmp_path)
    on_disk = json.loads((tmp_path / "training_log.json").read_text())
    rows = _csv(tmp_path)
    assert rows == _as_csv(on_disk) and len(rows) == 1 + 3
    assert rows[0] == ["epoch", "lr", "train/loss_half", "train/loss_total", "val/loss_half", "val/loss_total",
                       "train_time_s", "epoch_time_s", "images_per_s"]
    assert [float(r[3]) for r in rows[1:]] == [r["train"]["loss_total"] for r in log]  # full precision
    assert not (tmp_path / "tensorboard").exists()


def _interrupted_then_resumed(run_dir, stale_row=False, stale_event=False):
    calls = []

    def stopping_step(model, batch, numeric):
        calls.append(1)
        if len(calls) > 2 * (4 + 1):  # 4 train + 1 val steps per epoch: stop inside epoch 3
            raise KeyboardInterrupt
        return _step(model, batch, numeric)

    with pytest.raises(KeyboardInterrupt):
        _fit(run_dir, 4, stopping_step)
    assert len(_csv(run_dir)) == 1 + 2
    if stale_row:  # a process killed after writing the row of an epoch that its checkpoint does not hold
        with (run_dir / "results.csv").open("a") as f:
            f.write("3,0.1,9,9,9,9,1,1,1\n")
    if stale_event:  # the same for TensorBoard
        from torch.utils.tensorboard import SummaryWriter

        with SummaryWriter(str(run_dir / "tensorboard")) as writer:
            writer.add_scalar("train/loss_total", 99.0, 3)
    return _fit(run_dir, 4, resume=True)


@pytest.mark.parametrize("stale_row", [False, True])
def test_resume_keeps_each_row_once(tmp_path, monkeypatch, stale_row):
    monkeypatch.setenv("LOCLAB_TENSORBOARD", "0")
    log = _interrupted_then_resumed(tmp_path, stale_row)
    assert [r["epoch"] for r in log] == [1, 2, 3, 4]
    assert _csv(tmp_path) == _as_csv(json.loads((tmp_path / "training_log.json").read_text()))


def test_a_fresh_run_in_a_used_directory_starts_a_fresh_file(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCLAB_TENSORBOARD", "0")
    _fit(tmp_path, 3)
    log = _fit(tmp_path, 2)
    assert _csv(tmp_path) == _as_csv(log) and len(_csv(tmp_path)) == 1 + 2


def test_a_new_column_rewrites_the_header(tmp_path):
    with EpochLogs(tmp_path / "results.csv", [{"epoch": 1, "train": {"a": 1.0}}]) as live:
        live.write({"epoch": 2, "train": {"a": 0.5, "b": 2.0}, "note": None})
    assert _csv(tmp_path) == [["epoch", "train/a", "train/b", "note"], ["1", "1.0", "", ""], ["2", "0.5", "2.0", ""]]


class _FakeWriter:
    def __init__(self):
        self.scalars, self.flushes, self.closed = [], 0, False

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))

    def flush(self):
        self.flushes += 1

    def close(self):
        self.closed = True


def test_every_numeric_column_goes_to_the_writer(tmp_path):
    writer = _FakeWriter()
    with EpochLogs(tmp_path / "results.csv", [], writer) as live:
        live.write({"epoch": 1, "lr": 0.1, "train": {"loss_total": 2.0}, "val": {"loss_total": float("nan")},
                    "images_per_s": 30})
        live.write({"epoch": 2, "lr": 0.05, "train": {"loss_total": 1.0}, "val": {"loss_total": 1.5},
                    "images_per_s": 31.5})
    assert writer.scalars == [("lr", 0.1, 1), ("train/loss_total", 2.0, 1), ("images_per_s", 30.0, 1),
                              ("lr", 0.05, 2), ("train/loss_total", 1.0, 2), ("val/loss_total", 1.5, 2),
                              ("images_per_s", 31.5, 2)]
    assert writer.flushes == 2 and writer.closed


def _scalars(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_tensorboard_scalars_after_an_interrupted_and_resumed_run(tmp_path, monkeypatch):
    monkeypatch.delenv("LOCLAB_TENSORBOARD", raising=False)
    log = _interrupted_then_resumed(tmp_path, stale_event=True)
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    scalars = _scalars(tmp_path)
    assert set(scalars) == set(_as_csv(log)[0]) - {"epoch"}
    for tag in ("train/loss_total", "val/loss_total", "lr", "images_per_s"):
        expected = [(r["epoch"], flatten_record(r)[tag]) for r in log]
        assert [step for step, _ in scalars[tag]] == [1, 2, 3, 4], tag
        assert [value for _, value in scalars[tag]] == pytest.approx([v for _, v in expected], rel=1e-6), tag


def test_without_tensorboard_training_is_silent(tmp_path, monkeypatch, capfd):
    real_find_spec = logs.importlib.util.find_spec
    monkeypatch.setattr(logs.importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorboard" else real_find_spec(name, *a))
    monkeypatch.delenv("LOCLAB_TENSORBOARD", raising=False)
    assert not logs.tensorboard_wanted()
    capfd.readouterr()
    _fit(tmp_path, 2)
    out = capfd.readouterr()
    assert "tensorboard" not in (out.out + out.err).lower()
    assert not (tmp_path / "tensorboard").exists() and len(_csv(tmp_path)) == 1 + 2


@pytest.mark.parametrize("value, wanted", [("0", False), ("off", False), ("1", True)])
def test_the_switch(monkeypatch, value, wanted):
    monkeypatch.setenv("LOCLAB_TENSORBOARD", value)
    assert logs.tensorboard_wanted() is wanted  # the test extra installs tensorboard


@pytest.mark.slow
def test_both_engines_write_live_logs_and_compare_reads_the_runs(tiny_data_root, tmp_path, monkeypatch, capsys):
    from loclab.cli import main

    monkeypatch.setenv("LOCLAB_TENSORBOARD", "1")  # restored after the test, which --no-tensorboard changes
    detector, keypoints = tmp_path / "detector", tmp_path / "keypoints"
    common = ["--data-root", str(tiny_data_root), "--epochs", "1", "--quiet", "--set", "train.batch_size=8"]
    assert main(["train", "detector", "--out", str(detector), "--imgsz", "64", *common]) == 0
    assert main(["train", "keypoints", "--out", str(keypoints), "--input-size", "64", "--no-tensorboard", *common]) == 0
    for run in (detector, keypoints):
        assert _csv(run) == _as_csv(json.loads((run / "training_log.json").read_text()))
    assert {"train/loss_total", "val/loss_loc", "lr", "images_per_s"} <= set(_scalars(detector))
    assert not (keypoints / "tensorboard").exists()
    capsys.readouterr()
    assert main(["compare", str(detector), str(keypoints), "--json"]) == 0
    compared = json.loads(capsys.readouterr().out)
    assert [r["task"] for r in compared["runs"]] == ["detector", "keypoints"]
    assert compared["config"]["task"] == ["detector", "keypoints"] and compared["training"]["epochs"] == [1, 1]
