"""Ablation grids: which trials to run, and how to summarise their results (numbers only).

Keypoint ablations vary one factor at a time around the baseline (heatmap 64x64, sigma 2, skips on):
heatmap resolution, Gaussian sigma, skip connections. They are judged by PCK on the validation split;
heatmap MSE is not comparable across sigma or resolution and is reported as a secondary column only.
Anchor ablations train the detector with other anchor sets and compare per-class AP and scale tables.

Every trial may train with several seeds (``AblationConfig.seeds``, :func:`seeded_trials`): each seed is a run of
its own, and a summary row holds the per-seed results (``seeds``) and their mean, which is the row's headline
number; :func:`seed_spread` gives the spread that tables show next to it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, TypeVar

from loclab.config import AblationConfig, DetectorConfig, KeypointConfig

C = TypeVar("C", DetectorConfig, KeypointConfig)


def seed_run_name(trial: str, offset: int) -> str:
    """The run (directory) name of ``trial`` with training seed ``train.seed + offset``: offset 0 keeps the trial's
    own name, so a one-seed grid is laid out exactly as before; offset ``k > 0`` is ``<trial>_seed<k>``."""
    return trial if offset == 0 else f"{trial}_seed{offset}"


def seeded_trials(configs: Mapping[str, C], seeds: int) -> dict[str, C]:
    """``{run name: config}``: every trial once per seed offset ``0 .. seeds - 1``, its ``train.seed`` moved by
    that offset (:func:`seed_run_name`), trial by trial."""
    return {seed_run_name(name, k): replace(cfg, train=replace(cfg.train, seed=cfg.train.seed + k))
            for name, cfg in configs.items() for k in range(seeds)}


def runs_by_trial(trials: Sequence[str], results: Mapping[str, Any], seeds: int) -> dict[str, list[tuple[str, Any]]]:
    """Regroup a grid's ``{run name: result}`` into ``{trial: [(run name, result) for each seed offset]}``."""
    return {name: [(seed_run_name(name, k), results[seed_run_name(name, k)]) for k in range(seeds)]
            for name in trials}


def seed_spread(values: Sequence[float | None]) -> dict[str, Any] | None:
    """Mean and spread of one number across seeds: ``{"n", "mean", "sd", "min", "max"}``.

    ``sd`` is the sample standard deviation (``n - 1`` in the denominator), ``None`` for one seed. ``None`` when
    any value is ``None`` (e.g. a class without validation boxes) or there is none.
    """
    if not values or any(v is None for v in values):
        return None
    n = len(values)
    mean = math.fsum(values) / n
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    return {"n": n, "mean": mean, "sd": sd, "min": min(values), "max": max(values)}


def _mean_of(dicts: Sequence[Mapping[str, float | None] | None]) -> dict[str, float | None] | None:
    """Key by key mean of per-seed dicts such as ``{"0.05": pck, ...}`` (``None`` stays ``None``)."""
    if not dicts or any(d is None for d in dicts):
        return None
    return {k: (spread["mean"] if (spread := seed_spread([d[k] for d in dicts])) else None) for k in dicts[0]}


def keypoint_trial_name(cfg: KeypointConfig) -> str:
    return f"hm{cfg.heatmap_size}_sigma{cfg.sigma:g}_{'skip' if cfg.skip else 'noskip'}"


def keypoint_ablation_trials(base: KeypointConfig, ablation: AblationConfig) -> dict[str, KeypointConfig]:
    """One config per distinct setting; the baseline appears once even though every factor includes it."""
    base = replace(base, model="heatmap", train=replace(base.train, epochs=ablation.keypoint_epochs))
    variants = [replace(base, heatmap_size=s) for s in ablation.heatmap_sizes]
    variants += [replace(base, sigma=s) for s in ablation.sigmas]
    variants += [replace(base, skip=s) for s in ablation.skips]
    trials: dict[str, KeypointConfig] = {}
    for cfg in [base, *variants]:
        trials.setdefault(keypoint_trial_name(cfg), cfg)
    return trials


def keypoint_factors(base: KeypointConfig, ablation: AblationConfig) -> dict[str, list[tuple[str, str]]]:
    """For each factor, its ``(label, trial name)`` pairs in display order."""
    def name(**change: Any) -> str:
        return keypoint_trial_name(replace(base, **change))

    return {
        "heatmap_size": [(f"{s}x{s}", name(heatmap_size=s)) for s in ablation.heatmap_sizes],
        "sigma": [(f"{s:g}", name(sigma=s)) for s in ablation.sigmas],
        "skip": [("with skip" if s else "without skip", name(skip=s)) for s in ablation.skips],
    }


def summarise_keypoint_ablation(base: KeypointConfig, ablation: AblationConfig,
                                metrics: Mapping[str, Sequence[tuple[str, dict[str, Any]]]]) -> dict[str, Any]:
    """``baseline_results.json``: per factor, per setting, PCK (primary) and val MSE (secondary).

    ``metrics``: ``{trial: [(run name, metrics) per seed]}`` (:func:`runs_by_trial`). A row's ``pck``, ``pck_swap``
    and ``val_mse`` are the means over its seeds, ``train_time_s`` their sum, and ``seeds`` lists each seed's run.
    Each factor names its ``baseline`` setting (the one of ``base``; ``None`` when the factor's settings leave it
    out) and ``best: None``: :func:`loclab.study.ablation_intervals.keypoint_ablation_intervals` sets a best
    setting only where it is significantly better than all the others.
    """
    out: dict[str, Any] = {
        "judged_by": "PCK on the validation split (bbox-diagonal norm, distance / norm <= threshold); "
                     "val heatmap MSE is secondary and not comparable across sigma or resolution",
        "epochs": ablation.keypoint_epochs,
        "seeds": ablation.seeds,
        "factors": {},
    }
    for factor, pairs in keypoint_factors(base, ablation).items():
        rows = []
        for label, trial in pairs:
            per_seed = [{"run": run, "seed": m.get("seed"), "pck": m["pck"], "pck_swap": m["pck_swap"],
                         "val_mse": m.get("val_loss")} for run, m in metrics[trial]]
            mse = seed_spread([r["val_mse"] for r in per_seed])
            rows.append({"setting": label, "trial": trial, "pck": _mean_of([r["pck"] for r in per_seed]),
                         "pck_swap": _mean_of([r["pck_swap"] for r in per_seed]),
                         "val_mse": mse["mean"] if mse else None,
                         "train_time_s": sum(m.get("train_time_s") or 0.0 for _, m in metrics[trial]),
                         "seeds": per_seed})
        # "best" is only ever a setting that is significantly better than every other one, which takes the
        # intervals of loclab.study.ablation_intervals; until they are added, no setting is marked
        baseline = next((label for label, trial in pairs if trial == keypoint_trial_name(base)), None)
        out["factors"][factor] = {"rows": rows, "baseline": baseline, "best": None}
    return out


def anchor_set_name(anchor_sizes: tuple[tuple[float, ...], ...]) -> str:
    return "_".join("-".join(f"{a:g}" for a in scale) for scale in anchor_sizes)


def anchor_ablation_trials(base: DetectorConfig, ablation: AblationConfig) -> dict[str, DetectorConfig]:
    """The default anchors plus each alternative set, all with the ablation's epoch count."""
    base = replace(base, train=replace(base.train, epochs=ablation.detector_epochs))
    trials = {"default": base}
    for sizes in ablation.anchor_sets:
        trials.setdefault(anchor_set_name(sizes), replace(base, anchor_sizes=tuple(tuple(s) for s in sizes)))
    return trials


def summarise_anchor_ablation(configs: dict[str, DetectorConfig],
                              metrics: Mapping[str, Sequence[tuple[str, dict[str, Any]]]]) -> dict:
    """Side by side: anchors, mAP, per-class AP, confident-TP scale table and best possible recall.

    ``metrics``: ``{trial: [(run name, metrics) per seed]}`` (:func:`runs_by_trial`). ``mAP50``, ``AP50`` and
    ``mAP70`` are means over the seeds (``seeds`` lists each seed's run); the scale table is the first seed's, and
    the best possible recall is a property of the anchors, the same for every seed.
    """
    rows = []
    for name, cfg in configs.items():
        runs = metrics[name]
        first = runs[0][1]
        per_seed = [{"run": run, "seed": m.get("seed"), "mAP50": m["mAP50"], "AP50": m["AP50"],
                     "mAP70": m.get("mAP70")} for run, m in runs]
        map50, map70 = (seed_spread([r[key] for r in per_seed]) for key in ("mAP50", "mAP70"))
        rows.append({
            "trial": name,
            "anchor_sizes": [list(s) for s in cfg.anchor_sizes],
            "mAP50": map50["mean"] if map50 else None,
            "AP50": _mean_of([r["AP50"] for r in per_seed]),
            "mAP70": map70["mean"] if map70 else None,
            "scale_specialisation": first.get("scale_specialisation"),
            "best_possible_recall": first.get("anchor_coverage", {}).get("best_possible_recall"),
            "seeds": per_seed,
        })
    return {"epochs": next(iter(configs.values())).train.epochs, "seeds": len(next(iter(metrics.values()))),
            "rows": rows}
