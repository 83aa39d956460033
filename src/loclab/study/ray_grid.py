"""Ablation grids on Ray Tune (the optional ``loclab[ray]`` extra).

:func:`run_grid_ray` runs the trials of a grid as a Ray Tune grid search: one Tune trial per ablation trial,
each calling the trial function it is given (:func:`loclab.study.trials.run_trial`, passed in by
:func:`loclab.study.trials.run_grid` so that this module does not import the grid module that imports it) into
``OUT/<trial name>``, exactly as the local engine does, and returns the same ``{trial name: metrics}``. Ray's own
experiment records go to ``OUT/_ray``.

On one machine, ``loclab ablate keypoints --data-root DATA --out DIR --engine ray`` starts a local Ray
instance and runs as many trials at a time as there are CPUs. To run the same grid on a cluster, install
loclab (with this extra) on every node, start Ray there (``ray start --head`` on one node,
``ray start --address HEAD:6379`` on the others), put the data root and the output directory on storage
that every node sees at the same path, and run on a node of the cluster::

    loclab ablate keypoints --data-root /shared/data --out /shared/ablations --engine ray --ray-address auto

Trials resume from their run directories, so re-running an interrupted grid finishes only what is missing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loclab.errors import LoclabError

TrialFn = Callable[[str, dict[str, Any], str, str, int], dict[str, Any]]


class RayMissingError(LoclabError, ImportError):
    """Ray Tune is not installed; ``loclab ablate`` reports it as one paragraph that names the extra."""


def _tune_bookkeeping_keys() -> frozenset[str]:
    """The keys Tune adds to every reported result (timing, host, trial id, config, ...)."""
    from ray.tune import result

    return frozenset(result.AUTO_RESULT_KEYS) | {
        result.DONE, result.TRIAL_ID, result.EXPERIMENT_TAG, result.TIMESTAMP, result.TIME_THIS_ITER_S,
        result.SHOULD_CHECKPOINT,
    }


def _tune_trial(config: dict[str, str], *, task: str, jobs: dict[str, tuple], threads: int, trial: TrialFn) -> None:
    """Tune's function trainable: run the ablation trial named by ``config["trial"]`` and report its metrics."""
    from ray import tune

    config_dict, data_root, run_dir = jobs[config["trial"]]
    metrics = trial(task, config_dict, data_root, run_dir, threads)
    clashes = set(metrics) & _tune_bookkeeping_keys()
    if clashes:
        raise ValueError(f"metric names {sorted(clashes)} are reserved by Ray Tune")
    tune.report(metrics)


def run_grid_ray(task: str, configs: dict[str, Any], data_root: Path, out: Path, trial: TrialFn, *,
                 cpus_per_trial: int = 1, address: str | None = None) -> dict[str, dict]:
    """Run every trial of a grid on Ray Tune; returns ``{trial name: metrics}`` like ``run_grid``.

    Args:
        task: ``"detector"`` or ``"keypoints"``.
        configs: trial name -> the trial's ``DetectorConfig`` / ``KeypointConfig``.
        data_root: the dataset root.
        out: the grid's directory; trial ``name`` runs in ``out/name``, Ray's records go to ``out/_ray``.
        trial: runs one trial from plain arguments, ``trial(task, config_dict, data_root, run_dir, threads)``
            returning its metrics: :func:`loclab.study.trials.run_trial`.
        cpus_per_trial: CPUs Ray reserves for each trial, also its number of torch threads.
        address: the Ray cluster to join: ``None`` starts a local Ray instance (or uses the one this process
            already started), ``"auto"`` joins the cluster running on this node, ``"HOST:PORT"`` a given one.
            On a cluster, ``data_root`` and ``out`` must be on storage every node sees at the same path.

    Raises:
        RayMissingError: Ray Tune is not installed.
        RuntimeError: a trial failed (the first failure is chained).
    """
    try:
        import ray
        from ray import tune
    except ImportError as err:
        message = "the Ray engine needs Ray Tune, which is not installed: pip install 'loclab[ray]'"
        raise RayMissingError(message) from err
    from loclab.config import to_dict

    data_root, out = Path(data_root).resolve(), Path(out).resolve()
    jobs = {name: (to_dict(cfg), str(data_root), str(out / name)) for name, cfg in configs.items()}
    if not ray.is_initialized():
        ray.init(address=address, logging_level=logging.WARNING)
    trainable = tune.with_parameters(_tune_trial, task=task, jobs=jobs, threads=cpus_per_trial, trial=trial)
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": cpus_per_trial}),
        param_space={"trial": tune.grid_search(list(jobs))},
        run_config=tune.RunConfig(name=f"{task}_grid", storage_path=str(out / "_ray"), verbose=0),
    )
    results = tuner.fit()
    failed = [r for r in results if r.error is not None]
    if failed:
        names = ", ".join(r.config["trial"] for r in failed)
        raise RuntimeError(f"{len(failed)} of {len(jobs)} Ray trials failed: {names}") from failed[0].error
    bookkeeping = _tune_bookkeeping_keys()
    by_name = {r.config["trial"]: {k: v for k, v in r.metrics.items() if k not in bookkeeping} for r in results}
    return {name: by_name[name] for name in jobs}
