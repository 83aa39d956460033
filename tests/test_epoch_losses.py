"""The training loop reads nothing back from the device inside a step: losses are summed where they are computed,
and read every few steps (every step on a CPU) and once per epoch, with the same numbers to the last bit."""

import pytest
import torch
from torch import nn

from host_reads import DispatchCounter

from loclab.config import TrainConfig
from loclab.engine.epoch_losses import HOST_READ_EVERY, EpochLosses, host_read_interval
from loclab.engine.precision import resolve_numeric_path
from loclab.engine.train import NonFiniteLossError, _run_epoch, build_optimizer

CPU_FP32 = resolve_numeric_path("fp32", torch.device("cpu"))


def _losses(n_steps: int, seed: int = 0) -> list[tuple[dict[str, torch.Tensor], int]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_steps):
        a, b = torch.rand(2, generator=g) * 10
        out.append(({"loss_a": a, "loss_b": b, "loss_total": a + 2 * b}, int(torch.randint(1, 33, (), generator=g))))
    return out


def test_sums_equal_python_float_sums_bit_for_bit():
    steps = _losses(40)
    sums = EpochLosses()
    expected: dict[str, float] = {}
    for losses, batch in steps:
        sums.add(losses, batch)
        for name, value in losses.items():  # what the loop did before: one host read per loss and step
            expected[name] = expected.get(name, 0.0) + float(value) * batch
    assert sums.sums() == expected
    assert sums.count == sum(batch for _, batch in steps)
    assert sums.running_mean() == expected["loss_total"] / sums.count
    assert sums.first_non_finite() is None


def test_first_non_finite_step_is_recorded_with_its_values():
    sums = EpochLosses()
    for i, (losses, batch) in enumerate(_losses(6)):
        if i in (2, 4):
            losses = {**losses, "loss_total": torch.tensor(float("nan") if i == 2 else float("inf"))}
        sums.add(losses, batch)
    bad = sums.first_non_finite()
    assert bad.step == 2
    assert set(bad.values) == {"loss_a", "loss_b", "loss_total"}
    assert bad.values["loss_total"] != bad.values["loss_total"]  # NaN
    assert bad.values["loss_a"] == float(_losses(6)[2][0]["loss_a"])


def test_a_step_with_other_loss_names_is_refused():
    sums = EpochLosses()
    sums.add({"loss_total": torch.tensor(1.0)}, 2)
    with pytest.raises(ValueError, match="earlier steps"):
        sums.add({"loss_total": torch.tensor(1.0), "loss_x": torch.tensor(0.0)}, 2)


def test_read_interval_is_every_step_on_a_cpu_only():
    assert host_read_interval(torch.device("cpu")) == 1
    assert host_read_interval(torch.device("cuda")) == HOST_READ_EVERY > 1
    assert host_read_interval(torch.device("meta")) == HOST_READ_EVERY


def _toy(n_batches: int):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 1))
    optimizer = build_optimizer(model, TrainConfig())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    g = torch.Generator().manual_seed(1)
    data = [(torch.randn(8, 4, generator=g), torch.randn(8, 1, generator=g)) for _ in range(n_batches)]
    return model, optimizer, scheduler, data


def _step(model, batch, numeric):
    x, y = batch
    return {"loss_total": nn.functional.mse_loss(model(x), y)}


def _epoch(n_batches: int, read_every: int, step=_step):
    model, optimizer, scheduler, data = _toy(n_batches)
    return _run_epoch(model, data, step, CPU_FP32, optimizer=optimizer, scheduler=scheduler, grad_clip=1.0,
                      read_every=read_every)


def test_a_training_step_reads_nothing_from_the_device():
    reads = []
    for n_batches in (4, 12):
        with DispatchCounter() as counter:
            _epoch(n_batches, read_every=100)
        reads.append(counter.host_reads)
    # the end-of-epoch check and the reduction of the sums, however many steps ran
    assert reads[0] == reads[1] <= 2


def test_reading_every_few_steps_gives_the_same_epoch_means():
    assert _epoch(9, read_every=4) == _epoch(9, read_every=1)


@pytest.mark.parametrize("read_every", [1, 4])
def test_non_finite_loss_names_the_epoch_and_first_bad_step(read_every):
    calls = []

    def diverging(model, batch, numeric):
        calls.append(1)
        losses = _step(model, batch, numeric)
        if len(calls) >= 3:
            losses["loss_total"] = losses["loss_total"] * float("inf")
        return losses

    with pytest.raises(NonFiniteLossError, match=r"training loss became inf at epoch 1, step 3\b") as err:
        _epoch(8, read_every=read_every, step=diverging)
    # on a CPU (every step read) the loop stops at the bad step; reading every 4 steps, at the next read
    assert len(calls) == (3 if read_every == 1 else 4)
    assert ("noticed at step 4" in str(err.value)) == (read_every == 4)
