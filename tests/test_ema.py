"""The moving average of the weights: its arithmetic against a plain loop, and its place in training."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from loclab.engine.ema import ModelEMA


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))


def test_update_matches_a_plain_loop_over_the_state_dict():
    model = _model()
    model(torch.randn(2, 3, 6, 6))
    ema = ModelEMA(model, decay=0.9)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    for t in range(1, 6):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        model.train()(torch.randn(2, 3, 6, 6))  # moves BatchNorm's running statistics and its counter
        d = 0.9 * (1 - math.exp(-t / (0.2 / (1 - 0.9))))
        for k, v in model.state_dict().items():
            expected[k] = d * expected[k] + (1 - d) * v if v.is_floating_point() else v.clone()
        ema.update()
    got = ema.module.state_dict()
    for k, v in expected.items():
        torch.testing.assert_close(got[k], v, rtol=1e-6, atol=1e-6, msg=k)
    assert ema.updates == 5
    assert all(not p.requires_grad for p in ema.module.parameters())


def test_first_update_mostly_follows_the_live_weights():
    model = _model()
    model(torch.randn(2, 3, 6, 6))
    ema = ModelEMA(model, decay=0.999)
    assert ema.current_decay() < 0.01  # ramp of 200 steps: d_1 = 0.999 * (1 - e^-1/200)
    with torch.no_grad():
        model[0].weight.add_(1.0)
    ema.update()
    torch.testing.assert_close(ema.module[0].weight, model[0].weight, atol=0.01, rtol=0)


def test_state_dict_round_trip_resumes_the_same_average():
    model = _model()
    model(torch.randn(2, 3, 6, 6))
    ema = ModelEMA(model, decay=0.99)
    for _ in range(3):
        with torch.no_grad():
            model[0].weight.mul_(1.1)
        ema.update()
    restored = ModelEMA(model, decay=0.99)
    restored.load_state_dict(ema.state_dict())
    assert restored.updates == 3 and restored.current_decay() == ema.current_decay()
    with torch.no_grad():
        model[0].weight.mul_(1.1)
    ema.update()
    restored.update()
    torch.testing.assert_close(restored.module[0].weight, ema.module[0].weight)


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.5])
def test_decay_outside_the_open_unit_interval_is_refused(decay):
    with pytest.raises(ValueError, match="decay"):
        ModelEMA(_model(), decay)


def _toy_fit(run_dir, epochs, step=None, resume=False):
    from torch.utils.data import TensorDataset

    from loclab.config import OptimConfig, TrainConfig
    from loclab.engine.precision import resolve_numeric_path
    from loclab.engine.train import RunFiles, fit

    g = torch.Generator().manual_seed(0)
    x = torch.randn(48, 4, generator=g)
    data = TensorDataset(x, x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 1))
    cfg = TrainConfig(epochs=epochs, batch_size=8, optim=OptimConfig(lr=0.05), precision="fp32", ema=0.9)

    def mse(m, batch, numeric):
        if step is not None:
            step()
        return {"loss_total": nn.functional.mse_loss(m(batch[0]), batch[1])}

    log = fit(model, mse, data, data, None, cfg, resolve_numeric_path("fp32"), RunFiles(run_dir),
              {"task": "toy", "config": {}}, resume=resume, progress=False)
    return model, log


def test_training_validates_and_saves_the_average_and_resumes_it(tmp_path):
    from loclab.engine.checkpoint import load_checkpoint

    model, log = _toy_fit(tmp_path / "full", 4)
    last = load_checkpoint(tmp_path / "full" / "last.pth")
    best = load_checkpoint(tmp_path / "full" / "best_model.pth")
    # the saved best is the average, not the live weights, and its validation loss is the logged one
    averaged = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 1))
    averaged.load_state_dict(last["ema"]["module"])
    assert not torch.equal(last["ema"]["module"]["0.weight"], last["model"]["0.weight"])
    if best["epoch"] == 4:
        assert all(torch.equal(best["model"][k], v) for k, v in last["ema"]["module"].items())
    g = torch.Generator().manual_seed(0)
    x = torch.randn(48, 4, generator=g)
    with torch.no_grad():
        val = nn.functional.mse_loss(averaged(x), x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])).item()
    assert val == pytest.approx(log[-1]["val"]["loss_total"], rel=1e-5)

    calls = []

    def interrupt():
        calls.append(1)
        if len(calls) > 2 * 12:  # 6 train + 6 val steps per epoch: stop inside epoch 3
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _toy_fit(tmp_path / "cut", 4, step=interrupt)
    _, resumed_log = _toy_fit(tmp_path / "cut", 4, resume=True)
    assert [r["val"] for r in resumed_log] == [r["val"] for r in log]
