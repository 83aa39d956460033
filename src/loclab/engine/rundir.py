"""The run directory: one folder per run with a fixed layout (docs/run-directory.md).

```
RUN/
  config.json          resolved config (task, data root, recipe, model and training settings)
  version.json         loclab version, code commit, torch/python versions, machine, numeric path, seeds
  training_log.json    one record per epoch
  results.csv          the same, one CSV row per epoch, appended as each epoch ends (engine.logs)
  tensorboard/         the same as TensorBoard scalars, when the tensorboard package is installed
  best_model.pth       best by validation loss (keypoint runs: heatmap_model.pth / regression_model.pth ...)
  last.pth             full training state for --resume
  metrics.json         evaluation results
  predictions.json     validation-split predictions the metrics were computed from
  visualizations/      figures
```
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

import loclab
from loclab.config import TrainConfig, to_dict
from loclab.atomic import write_json_atomic
from loclab.engine.lr_scaling import effective_lr
from loclab.engine.precision import NumericPath, resolve_numeric_path
from loclab.errors import LoclabError


class RunDirError(LoclabError, RuntimeError):
    """The output directory cannot be used."""


def prepare_run_dir(run_dir: Path) -> Path:
    """Create ``run_dir`` and prove it is writable before any training starts."""
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_bytes(b"0" * 4096)
        probe.unlink()
    except OSError as err:
        raise RunDirError(f"{run_dir}: cannot write to the output directory ({err.strerror or err})") from None
    return run_dir


def write_json(path: Path, data: Any) -> None:
    """Write a run file: JSON indented by 1, atomically (:func:`loclab.atomic.write_json_atomic`).

    NaN is written as ``NaN`` as :func:`json.dumps` does by default; metrics replace undefined values with null
    before they get here.
    """
    write_json_atomic(Path(path), data, indent=1, allow_nan=True)


def read_json(path: Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise RunDirError(f"{path}: missing (is this a loclab run directory?)")
    return json.loads(path.read_text())


def code_version() -> str:
    """The git commit of the loclab source tree (with ``-dirty`` if modified), or the package version."""
    src = Path(__file__).resolve().parents[3]
    try:
        commit = subprocess.run(["git", "-C", str(src), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5, check=False).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return f"loclab {loclab.__version__}"


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return f"{cpu}, {os.cpu_count()} cores{gpu}"


def version_info(**extra: Any) -> dict[str, Any]:
    return {
        "loclab": loclab.__version__,
        "code_version": code_version(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": machine_description(),
        "threads": torch.get_num_threads(),
        **extra,
    }


def start_run(run_dir: Path, task: str, section: str, cfg: Any, train: TrainConfig,
              meta: dict[str, Any] | None = None) -> tuple[Path, NumericPath]:
    """Prepare a training run: writable directory, seeds, threads, numeric path, config.json, version.json.

    Seeds torch before the caller builds its model, so the same config always starts from the same weights.
    ``config.json`` also records ``effective_lr``, the learning rate the optimiser starts from after the batch-size
    rule (:func:`loclab.engine.lr_scaling.effective_lr`; ``train.optim.lr`` itself without one).
    """
    lr = effective_lr(train)  # a bad batch-size rule fails before anything is written
    run_dir = prepare_run_dir(run_dir)
    torch.manual_seed(train.seed)
    if train.num_threads:
        torch.set_num_threads(train.num_threads)
    numeric = resolve_numeric_path(train.precision)
    write_json(run_dir / "config.json", {"task": task, **(meta or {}), section: to_dict(cfg),
                                         "effective_lr": lr})
    write_json(run_dir / "version.json", version_info(numeric_path=numeric.name, seed=train.seed))
    return run_dir, numeric
