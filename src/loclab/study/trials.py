"""The study's units of work: train + evaluate one run, compare keypoint models, run ablation grids.

Ablation trials are independent runs, each in its own directory, so they can run in parallel worker
processes (``AblationConfig.workers``) or be scheduled by any cluster engine: a trial is fully
described by ``(task config, data root, run directory)`` — see :func:`run_trial`. A trial whose config
and data equal those of a run that already finished (the study's own detector or heatmap run, say) is
not trained again: the finished run stands in for it (:func:`matching_runs`). With ``AblationConfig.seeds`` = N,
every trial is N runs, ``OUT/<trial>`` and ``OUT/<trial>_seed1`` .. ``_seed<N-1>``
(:func:`loclab.analysis.ablation.seeded_trials`), each resumed, reused or trained like any other.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
from collections.abc import Iterable, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from loclab.analysis.ablation import (
    anchor_ablation_trials,
    keypoint_ablation_trials,
    runs_by_trial,
    seeded_trials,
    summarise_anchor_ablation,
    summarise_keypoint_ablation,
)
from loclab.config import (
    AblationConfig,
    DetectorConfig,
    KeypointConfig,
    from_dict,
    to_dict,
    without_data_fields,
)
from loclab.engine.rundir import read_json, write_json
from loclab.engine.tasks import train_detector_on_root, train_keypoints_on_root
from loclab.errors import ConfigError
from loclab.recipes import resolve_study_config
from loclab.study.ablation_intervals import anchor_ablation_intervals, keypoint_ablation_intervals


def detector_trial(cfg: DetectorConfig, data_root: Path, run_dir: Path, *, progress: bool = True,
                   figures: bool = True) -> dict[str, Any]:
    """Train (resuming if interrupted) and evaluate a detector; returns its metrics."""
    from loclab.evaluation.detection import evaluate_detector_run
    from loclab.report.figures import write_detector_figures

    train_detector_on_root(cfg, data_root, run_dir, resume=True, progress=progress)
    evaluate_detector_run(run_dir, progress=progress)
    if figures:
        write_detector_figures(run_dir)
    return trial_metrics("detector", run_dir)


def keypoint_trial(cfg: KeypointConfig, data_root: Path, run_dir: Path, *, progress: bool = True,
                   figures: bool = True) -> dict[str, Any]:
    """Train (resuming if interrupted) and evaluate a keypoint model; returns its metrics."""
    from loclab.evaluation.keypoints import evaluate_keypoint_run
    from loclab.report.figures import write_keypoint_run_figures

    train_keypoints_on_root(cfg, data_root, run_dir, resume=True, progress=progress)
    evaluate_keypoint_run(run_dir)
    if figures:
        write_keypoint_run_figures(run_dir)
    return trial_metrics("keypoints", run_dir)


def trial_metrics(task: str, run_dir: Path) -> dict[str, Any]:
    """What a trial reports, read from its finished run: ``metrics.json`` plus the training time (and, for
    keypoint runs, the best validation loss) from ``training_log.json``, and the training seed from
    ``config.json``."""
    log = read_json(Path(run_dir) / "training_log.json")
    out = {**read_json(Path(run_dir) / "metrics.json"), "train_time_s": sum(r["train_time_s"] for r in log)}
    if task != "detector":
        out["val_loss"] = min(r["val"]["loss_total"] for r in log)
    recorded = read_json(Path(run_dir) / "config.json") if (Path(run_dir) / "config.json").is_file() else {}
    section = recorded.get("detector" if task == "detector" else "keypoints") or {}
    out["seed"] = section.get("train", {}).get("seed")
    return out


def matching_runs(task: str, configs: Mapping[str, Any], data_root: Path, runs: Iterable[Path]) -> dict[str, Path]:
    """``{trial: run}`` for each trial whose config equals a finished run's, trained on the same data root.

    A run counts as finished when it has ``metrics.json``; its config and data root are read from its own
    ``config.json``, so a run of another config or other data never stands in for a trial.
    """
    cls, section = (DetectorConfig, "detector") if task == "detector" else (KeypointConfig, "keypoints")
    found: dict[str, Path] = {}
    for run in map(Path, runs):
        if not (run / "metrics.json").is_file() or not (run / "config.json").is_file():
            continue
        recorded = read_json(run / "config.json")
        if section not in recorded or Path(recorded.get("data_root", "")) != Path(data_root).resolve():
            continue
        done = comparable(from_dict(cls, recorded[section]))
        for name, cfg in configs.items():
            if comparable(cfg) == done:
                found.setdefault(name, run)
    return found


def comparable(cfg: Any) -> Any:
    """A config as trials compare it: keypoint runs store the skeleton their data gave them and detector runs their
    classes, trials do not; a config that trains for a number of steps stores the epochs its data gave it, trials
    do not."""
    cfg = without_data_fields(cfg) if isinstance(cfg, KeypointConfig) else cfg
    if isinstance(cfg, DetectorConfig):
        cfg = replace(cfg, class_names=(), num_classes=DetectorConfig().num_classes)
    if isinstance(cfg, (DetectorConfig, KeypointConfig)) and cfg.train.steps > 0:
        cfg = replace(cfg, train=replace(cfg.train, epochs=0))
    return cfg


def _usable(reuse: Mapping[str, Path], out: Path) -> dict[str, Path]:
    """The stand-ins to use: not for a trial whose directory already holds a run of its own."""
    return {name: run for name, run in reuse.items() if (out / name).is_symlink() or not (out / name).exists()}


def _stand_in(trial_dir: Path, run: Path) -> None:
    """Make ``trial_dir`` show ``run``: a relative symlink, or a copy without checkpoints where links fail."""
    trial_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        trial_dir.symlink_to(os.path.relpath(run.resolve(), trial_dir.parent.resolve()), target_is_directory=True)
    except OSError:
        shutil.copytree(run, trial_dir, ignore=shutil.ignore_patterns("*.pth"))


def run_trial(task: str, config: dict[str, Any], data_root: str, run_dir: str, threads: int = 0) -> dict[str, Any]:
    """One ablation trial from plain arguments (picklable: usable from worker processes or a cluster).

    Trials write numbers only; the grid's summary figure compares them.
    """
    if threads:
        torch.set_num_threads(threads)
    if task == "detector":
        return detector_trial(from_dict(DetectorConfig, config), Path(data_root), Path(run_dir), progress=False,
                              figures=False)
    return keypoint_trial(from_dict(KeypointConfig, config), Path(data_root), Path(run_dir), progress=False,
                          figures=False)


def run_grid(task: str, configs: dict[str, Any], data_root: Path, out: Path, workers: int = 1, *,
             reuse: Mapping[str, Path] | None = None, engine: str = "local", ray_address: str | None = None,
             ray_cpus_per_trial: int = 1) -> dict[str, dict]:
    """Run every trial of a grid, ``workers`` at a time; each worker gets an equal share of the cores.

    ``reuse``: ``{trial: finished run}`` (see :func:`matching_runs`); those trials are not trained, their
    directory ``OUT/<trial>`` links to the run. A trial directory that already holds a run of its own (an
    interrupted grid) is resumed instead.
    ``engine="ray"`` runs the trials on Ray Tune instead (``loclab[ray]``; ``workers`` is then unused): see
    :func:`loclab.study.ray_grid.run_grid_ray`, which joins the cluster at ``ray_address`` and gives each
    trial ``ray_cpus_per_trial`` CPUs (and as many torch threads).
    """
    if engine not in ("local", "ray"):
        raise ConfigError(f"unknown grid engine {engine!r}; expected 'local' or 'ray'")
    done: dict[str, dict] = {}
    for name, run in _usable(reuse or {}, out).items():
        trial_dir = out / name
        if not trial_dir.exists():
            _stand_in(trial_dir, run)
        print(f"  trial {name}: the finished run {run} has the same config and data, not trained again", flush=True)
        done[name] = trial_metrics(task, trial_dir)
    todo = {name: cfg for name, cfg in configs.items() if name not in done}
    results = _run_trials(task, todo, data_root, out, workers, engine, ray_address, ray_cpus_per_trial) if todo else {}
    return {name: {**done, **results}[name] for name in configs}


def _run_trials(task: str, configs: dict[str, Any], data_root: Path, out: Path, workers: int, engine: str,
                ray_address: str | None, ray_cpus_per_trial: int) -> dict[str, dict]:
    if engine == "ray":
        from loclab.study.ray_grid import run_grid_ray

        return run_grid_ray(task, configs, data_root, out, run_trial, cpus_per_trial=ray_cpus_per_trial,
                            address=ray_address)
    jobs = {name: (task, to_dict(cfg), str(data_root), str(out / name)) for name, cfg in configs.items()}
    if workers <= 1:
        results = {}
        for i, (name, args) in enumerate(jobs.items(), 1):
            print(f"  trial {i}/{len(jobs)}: {name}", flush=True)
            results[name] = run_trial(*args)
        return results
    threads = max(1, (os.cpu_count() or 1) // workers)
    # spawn, not fork: a forked child of a process whose OpenMP threads are running can deadlock
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {name: pool.submit(run_trial, *args, threads) for name, args in jobs.items()}
        return {name: f.result() for name, f in futures.items()}


def anchor_ablation(base: DetectorConfig, ablation: AblationConfig, data_root: Path, out: Path,
                    finished: Iterable[Path] = (), *, configs: Mapping[str, DetectorConfig] | None = None,
                    extra: Mapping[str, Any] | None = None, **engine: Any) -> dict[str, Any]:
    """Train the detector with each anchor set; write ``anchor_ablation.json`` side by side, with intervals and
    paired comparisons against the default anchors (:mod:`loclab.study.ablation_intervals`).

    ``finished``: runs that may stand in for identical trials (:func:`matching_runs`).
    ``configs``: the trials ``{name: config}`` (default :func:`anchor_ablation_trials` of ``base``; a trial named
    ``default`` is the baseline the conclusions compare with); ``extra``: more keys for the summary.
    ``engine``: :func:`run_grid`'s ``engine`` / ``ray_address`` / ``ray_cpus_per_trial``.
    """
    configs = dict(configs) if configs is not None else anchor_ablation_trials(base, ablation)
    runs = seeded_trials(configs, ablation.seeds)
    reuse = _usable(matching_runs("detector", runs, data_root, finished), out)
    metrics = run_grid("detector", runs, data_root, out, ablation.workers, reuse=reuse, **engine)
    summary = (summarise_anchor_ablation(configs, runs_by_trial(list(configs), metrics, ablation.seeds))
               | dict(extra or {}) | {"reused_runs": _reused(reuse, out)})
    summary = anchor_ablation_intervals(summary, out)
    write_json(out / "anchor_ablation.json", summary)
    return summary


def keypoint_ablation(base: KeypointConfig, ablation: AblationConfig, data_root: Path, out: Path,
                      finished: Iterable[Path] = (), *, extra: Mapping[str, Any] | None = None,
                      **engine: Any) -> dict[str, Any]:
    """Heatmap resolution, sigma and skip grid; writes ``baseline_results.json`` (with intervals and paired
    comparisons, :mod:`loclab.study.ablation_intervals`) and the ablation plot.

    ``finished``: runs that may stand in for identical trials (:func:`matching_runs`).
    ``extra``: more keys for the summary.
    ``engine``: :func:`run_grid`'s ``engine`` / ``ray_address`` / ``ray_cpus_per_trial``.
    """
    from loclab.report.figures import write_ablation_figures

    configs = keypoint_ablation_trials(base, ablation)
    runs = seeded_trials(configs, ablation.seeds)
    reuse = _usable(matching_runs("keypoints", runs, data_root, finished), out)
    metrics = run_grid("keypoints", runs, data_root, out, ablation.workers, reuse=reuse, **engine)
    summary = (summarise_keypoint_ablation(base, ablation, runs_by_trial(list(configs), metrics, ablation.seeds))
               | dict(extra or {}) | {"reused_runs": _reused(reuse, out)})
    summary = keypoint_ablation_intervals(summary, out)
    write_json(out / "baseline_results.json", summary)
    write_ablation_figures(out)
    return summary


def _reused(reuse: Mapping[str, Path], out: Path) -> dict[str, str]:
    """``{trial: run}`` for the summary, each run relative to the grid's directory where it can be."""
    return {name: os.path.relpath(Path(run).resolve(), Path(out).resolve()) for name, run in reuse.items()}


def keypoint_comparison(keypoint_dir: Path, data_root: Path, threshold: float) -> dict[str, Any]:
    """Heatmap vs regression on the val split: PCK side by side, the ambiguity ceiling, failure analysis."""
    from loclab.report.figures import write_comparison_figures
    from loclab.study.comparison import compare_keypoint_runs

    result = compare_keypoint_runs(keypoint_dir / "heatmap", keypoint_dir / "regression", data_root, threshold)
    write_json(keypoint_dir / "comparison.json", result)
    write_comparison_figures(keypoint_dir, data_root)
    return result


def ablation_from_cli(args) -> Path:
    """``loclab ablate anchors|keypoints``: the preset's grid, optionally with other epochs/workers/seeds/engine."""
    from dataclasses import replace

    cfg = resolve_study_config(args.preset, args.overrides)
    ablation = cfg.ablation
    if args.epochs:
        ablation = replace(ablation, detector_epochs=args.epochs, keypoint_epochs=args.epochs)
    if args.workers:
        ablation = replace(ablation, workers=args.workers)
    if args.seeds is not None:
        ablation = replace(ablation, seeds=args.seeds)
    engine = {"engine": args.engine, "ray_address": args.ray_address, "ray_cpus_per_trial": args.ray_cpus_per_trial}
    for run in args.reuse:
        if not (run / "metrics.json").is_file():
            raise FileNotFoundError(f"--reuse {run}: not a finished run (no metrics.json)")
    if args.what == "anchors":
        anchor_ablation(cfg.detector, ablation, args.data_root, args.out, finished=args.reuse, **engine)
        return args.out / "anchor_ablation.json"
    keypoint_ablation(cfg.heatmap, ablation, args.data_root, args.out, finished=args.reuse, **engine)
    return args.out / "baseline_results.json"


def load_metrics(run_dir: Path) -> dict[str, Any]:
    return read_json(Path(run_dir) / "metrics.json")
