"""The training loop on a toy task: resume, divergence, checkpoints, schedule."""

import json
from dataclasses import replace

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from loclab.config import OptimConfig, ScheduleConfig, TrainConfig
from loclab.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from loclab.engine.precision import resolve_numeric_path
from loclab.engine.train import NonFiniteLossError, RunFiles, fit, lr_factor


def _data(n=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.1 * torch.randn(n, 1, generator=g)
    return TensorDataset(x, y)


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 1))


def _step(model, batch, numeric):
    x, y = batch
    return {"loss_total": nn.functional.mse_loss(model(x), y)}


def _cfg(epochs, lr=0.05):
    return TrainConfig(epochs=epochs, batch_size=8, optim=OptimConfig(name="adamw", lr=lr, weight_decay=0.01),
                       schedule=ScheduleConfig(name="cosine", warmup_epochs=1), precision="fp32", grad_clip=1.0)


def _fit(run_dir, epochs, *, resume=False, lr=0.05):
    cfg = _cfg(epochs, lr)
    model = _model()
    log = fit(model, _step, _data(), _data(16, seed=1), None, cfg, resolve_numeric_path("fp32"),
              RunFiles(run_dir), {"task": "toy", "config": {}}, resume=resume, progress=False)
    return model, log


def test_loss_falls_and_files_are_written(tmp_path):
    _, log = _fit(tmp_path, 4)
    assert log[-1]["train"]["loss_total"] < log[0]["train"]["loss_total"]
    assert json.loads((tmp_path / "training_log.json").read_text()) == log
    assert (tmp_path / "best_model.pth").exists() and (tmp_path / "last.pth").exists()
    assert load_checkpoint(tmp_path / "last.pth", task="toy")["epoch"] == 4


def test_resume_replays_the_uninterrupted_run(tmp_path):
    full_model, full_log = _fit(tmp_path / "full", 4)
    # an interrupted run: the same 4-epoch schedule stopped after 2 epochs, then resumed
    cfg = _cfg(4)
    model = _model()
    files = RunFiles(tmp_path / "cut")
    steps = []

    def stopping_step(m, batch, numeric):
        steps.append(1)
        if len(steps) > 2 * 8:  # 6 train + 2 val steps per epoch: stop inside epoch 3
            raise KeyboardInterrupt
        return _step(m, batch, numeric)

    with pytest.raises(KeyboardInterrupt):
        fit(model, stopping_step, _data(), _data(16, seed=1), None, cfg, resolve_numeric_path("fp32"), files,
            {"task": "toy", "config": {}}, progress=False)
    assert load_checkpoint(files.last)["epoch"] == 2
    resumed = _model()
    log = fit(resumed, _step, _data(), _data(16, seed=1), None, cfg, resolve_numeric_path("fp32"), files,
              {"task": "toy", "config": {}}, resume=True, progress=False)
    assert [r["val"] for r in log] == [r["val"] for r in full_log]
    for a, b in zip(resumed.state_dict().values(), full_model.state_dict().values()):
        assert torch.equal(a, b)


def test_divergence_stops_with_epoch_and_step_and_keeps_last_good_checkpoint(tmp_path):
    with pytest.raises(NonFiniteLossError, match=r"epoch \d+, step \d+"):
        _fit(tmp_path, 50, lr=1e12)
    # whatever finished before the blow-up is intact and loadable
    if (tmp_path / "last.pth").exists():
        state = load_checkpoint(tmp_path / "last.pth")
        assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_truncated_and_foreign_checkpoints_fail_clearly(tmp_path):
    save_checkpoint(tmp_path / "ok.pth", {"task": "toy", "model": {}})
    data = (tmp_path / "ok.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pth.*truncated"):
        load_checkpoint(tmp_path / "cut.pth")
    torch.save({"state_dict": {}}, tmp_path / "foreign.pth")
    with pytest.raises(CheckpointError, match="not a loclab checkpoint"):
        load_checkpoint(tmp_path / "foreign.pth")
    with pytest.raises(CheckpointError, match="expected a 'detector'"):
        load_checkpoint(tmp_path / "ok.pth", task="detector")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pth")


def test_warmup_then_cosine_schedule():
    cfg = _cfg(10)
    factors = [lr_factor(s, 100, 10, cfg) for s in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))
    assert factors[-1] == pytest.approx(cfg.schedule.final_lr_fraction, abs=1e-3)


@pytest.mark.slow
def test_compiled_training_matches_eager_and_saves_a_plain_checkpoint(tmp_path):
    def run(compile_: bool):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 1))  # no dropout: same RNG use
        cfg = replace(_cfg(2), compile=compile_)
        log = fit(model, _step, _data(), _data(16, seed=1), None, cfg, resolve_numeric_path("fp32"),
                  RunFiles(tmp_path / str(compile_)), {"task": "toy", "config": {}}, progress=False)
        return model, log

    eager_model, eager_log = run(False)
    compiled_model, compiled_log = run(True)
    for e, c in zip(eager_log, compiled_log):
        assert c["val"]["loss_total"] == pytest.approx(e["val"]["loss_total"], rel=1e-4)
    state = load_checkpoint(tmp_path / "True" / "last.pth", task="toy")["model"]
    assert set(state) == set(eager_model.state_dict())  # no torch.compile wrapper prefix
    for name, value in compiled_model.state_dict().items():
        torch.testing.assert_close(value, eager_model.state_dict()[name], rtol=1e-4, atol=1e-5)


def test_epoch_start_hook_sees_every_epoch_also_after_a_resume(tmp_path):
    cfg, files = _cfg(3), RunFiles(tmp_path)
    seen = []
    fit(_model(), _step, _data(), _data(16, seed=1), None, replace(cfg, epochs=2), resolve_numeric_path("fp32"),
        files, {"task": "toy", "config": {}}, on_epoch_start=seen.append, progress=False)
    fit(_model(), _step, _data(), _data(16, seed=1), None, cfg, resolve_numeric_path("fp32"), files,
        {"task": "toy", "config": {}}, resume=True, on_epoch_start=seen.append, progress=False)
    assert seen == [0, 1, 2]
