"""Train the toy regression task of tests/test_distributed.py, single-process or under torchrun."""

import sys
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import TensorDataset

from loclab.config import OptimConfig, ScheduleConfig, TrainConfig
from loclab.engine import distributed
from loclab.engine.precision import resolve_numeric_path
from loclab.engine.train import RunFiles, fit


def data(n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    return TensorDataset(x, x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]))


def step(model, batch, numeric):
    x, y = batch
    return {"loss_total": nn.functional.mse_loss(model(x), y)}


if __name__ == "__main__":
    distributed.init_from_env()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1))
    # full-batch steps: the gradient averaged over ranks equals the single-process gradient
    cfg = TrainConfig(epochs=5, batch_size=32, optim=OptimConfig(name="sgd", lr=0.05, momentum=0.9, weight_decay=0.0),
                      schedule=ScheduleConfig(name="constant", warmup_epochs=0), precision="fp32", grad_clip=0.0)
    fit(model, step, data(32, 0), data(16, 1), None, cfg, resolve_numeric_path("fp32"), RunFiles(Path(sys.argv[1])),
        {"task": "toy", "config": {}}, progress=False)
    if distributed.active():
        distributed.finish(0)
