"""torchrun + DistributedDataParallel on CPU (gloo): two processes match one."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from loclab.engine.checkpoint import load_checkpoint
from loclab.engine.logs import tensorboard_wanted

pytestmark = pytest.mark.slow
SCRIPT = Path(__file__).parent / "helpers" / "ddp_toy.py"


# what torchrun prints when its standalone rendezvous loses a race for a local port: the launch, not the training
_LAUNCH_RACE = ("EADDRINUSE", "address already in use", "RendezvousConnectionError", "Connection refused")


def _run(args, out, attempts=2):
    """Run the toy script; a torchrun launch that lost a port race is retried once, any other failure shows its
    output."""
    for attempt in range(attempts):
        shutil.rmtree(out, ignore_errors=True)  # a retried launch starts from nothing
        done = subprocess.run([*args, str(SCRIPT), str(out)], capture_output=True, text=True, timeout=180,
                              env={"OMP_NUM_THREADS": "1", **__import__("os").environ})
        if done.returncode == 0:
            return
        said = done.stdout + done.stderr
        if attempt + 1 == attempts or not any(sign in said for sign in _LAUNCH_RACE):
            pytest.fail(f"{' '.join(map(str, args))} exited with {done.returncode}:\n{said[-4000:]}")


def test_two_processes_match_one(tmp_path):
    _run([sys.executable], tmp_path / "single")
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"], tmp_path / "ddp")
    single = json.loads((tmp_path / "single" / "training_log.json").read_text())
    ddp = json.loads((tmp_path / "ddp" / "training_log.json").read_text())
    for a, b in zip(single, ddp):
        assert a["train"]["loss_total"] == pytest.approx(b["train"]["loss_total"], rel=1e-5)
        assert a["val"]["loss_total"] == pytest.approx(b["val"]["loss_total"], rel=1e-5)
    w_single = load_checkpoint(tmp_path / "single" / "last.pth")["model"]
    w_ddp = load_checkpoint(tmp_path / "ddp" / "last.pth")["model"]
    for k in w_single:
        assert torch.allclose(w_single[k], w_ddp[k], atol=1e-5), k
    # checkpoints and logs are written once, by rank 0: no stray temp files from a second writer
    tensorboard = ["tensorboard"] if tensorboard_wanted() else []
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == \
        ["best_model.pth", "last.pth", "results.csv", *tensorboard, "training_log.json"]
    assert len(list((tmp_path / "ddp").glob("tensorboard/*"))) == len(tensorboard)  # one event file


def test_finish_flushes_and_exits_with_the_code():
    # print without a newline: only an explicit flush gets it out before os._exit
    code = "from loclab.engine.distributed import finish; print('written', end=''); finish(3)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert (done.returncode, done.stdout) == (3, "written")
