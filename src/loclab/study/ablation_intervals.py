"""Intervals and paired comparisons of the ablation grids, added to their summaries.

Every trial's runs (one per seed) were evaluated on the same validation images and wrote their per-image
statistics, so the grids can say which differences are more than noise (:mod:`loclab.evaluation.significance`):

- keypoint ablation (``baseline_results.json``), per factor: each setting's pooled 95 % interval of PCK and
  swap-aware PCK at every threshold (``pck_ci95``, ``pck_swap_ci95``); the judged metric (swap-aware PCK@0.05 where
  the skeleton has symmetric pairs, else PCK@0.05: ``judged``); each setting against the factor's baseline
  setting (``vs_baseline``); and ``best``: the setting with the highest judged value *only if* it is significantly
  better than every other setting (paired), else ``None``, with those comparisons in ``best_vs``.
- anchor ablation (``anchor_ablation.json``): each trial's pooled interval of mAP@0.5 (``mAP50_ci95``) and, against
  the ``default`` trial, the paired difference of mAP@0.5 and of each class's AP@0.5 (``vs_default``).

A grid whose runs lack per-image statistics (evaluated by an older loclab) keeps its numbers and gains
``intervals_note`` saying why it has no intervals.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from loclab.evaluation.per_image import PerImage, PerImageError
from loclab.evaluation.significance import difference, interval, load_runs, run_statistic, significant_extreme
from loclab.metrics.bootstrap import BOOTSTRAP_LEVEL, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED

JUDGED_THRESHOLD = "0.05"
BOOTSTRAP = {"resamples": BOOTSTRAP_RESAMPLES, "seed": BOOTSTRAP_SEED, "level": BOOTSTRAP_LEVEL, "unit": "image",
             "interval": "percentile", "seeds": "pooled: each resample scored by every seed's run, then averaged"}


class _Trials:
    """The per-image statistics of each trial's runs, and statistics by ``(trial, metric)``, computed once."""

    def __init__(self, grid: Path, rows: Iterable[dict[str, Any]]):
        self.runs: dict[str, list[PerImage]] = {}
        for row in rows:
            if row["trial"] not in self.runs:  # rows written before seeds existed name one run: the trial
                runs = [s["run"] for s in row.get("seeds") or [{"run": row["trial"]}]]
                self.runs[row["trial"]] = load_runs([Path(grid) / run for run in runs])
        first_trial, first = next(iter(self.runs.items()))
        for trial, runs in self.runs.items():  # paired comparisons need the same images everywhere
            if not np.array_equal(runs[0].image_ids, first[0].image_ids):
                raise PerImageError(f"trials {first_trial} and {trial} were evaluated on different images")
        self._cache: dict[tuple[str, str], Any] = {}

    def stat(self, trial: str, metric: str) -> Any:
        if (trial, metric) not in self._cache:
            self._cache[trial, metric] = run_statistic(self.runs[trial], metric)
        return self._cache[trial, metric]


def keypoint_ablation_intervals(summary: dict[str, Any], grid: Path) -> dict[str, Any]:
    """``summary`` (:func:`loclab.analysis.ablation.summarise_keypoint_ablation`) with the intervals and paired
    comparisons of the module docstring, read from the runs under ``grid``."""
    rows = [row for data in summary["factors"].values() for row in data["rows"]]
    try:
        trials = _Trials(grid, rows)
    except PerImageError as err:
        return summary | {"intervals_note": f"no intervals: {err}"}
    for data in summary["factors"].values():
        rows = data["rows"]
        for row in rows:
            for key in ("pck", "pck_swap"):
                if row.get(key):
                    row[f"{key}_ci95"] = {t: interval(trials.stat(row["trial"], f"{key}[{t}]")) for t in row[key]}
        key = "pck_swap" if all(r.get("pck_swap") for r in rows) else "pck"
        metric = f"{key}[{JUDGED_THRESHOLD}]"
        trial_of = {r["setting"]: r["trial"] for r in rows}

        def compare(a: str, b: str) -> dict[str, Any]:
            return difference(trials.stat(trial_of[a], metric), trials.stat(trial_of[b], metric))

        best, records = significant_extreme({r["setting"]: r[key][JUDGED_THRESHOLD] for r in rows}, compare)
        data["judged"] = {"metric": key, "threshold": JUDGED_THRESHOLD}
        data["best"], data["best_vs"] = best, records
        baseline = data.get("baseline")
        if baseline in trial_of:
            data["vs_baseline"] = {s: compare(s, baseline) for s in trial_of if s != baseline}
    return summary | {"bootstrap": BOOTSTRAP}


def anchor_ablation_intervals(summary: dict[str, Any], grid: Path) -> dict[str, Any]:
    """``summary`` (:func:`loclab.analysis.ablation.summarise_anchor_ablation`) with each trial's interval of
    mAP@0.5 and its paired differences from the ``default`` trial, read from the runs under ``grid``."""
    try:
        trials = _Trials(grid, summary["rows"])
    except PerImageError as err:
        return summary | {"intervals_note": f"no intervals: {err}"}
    for row in summary["rows"]:
        row["mAP50_ci95"] = interval(trials.stat(row["trial"], "mAP50"))
        if row["trial"] == "default" or not any(r["trial"] == "default" for r in summary["rows"]):
            continue
        row["vs_default"] = {
            "mAP50": difference(trials.stat(row["trial"], "mAP50"), trials.stat("default", "mAP50")),
            "AP50": {c: difference(trials.stat(row["trial"], f"AP50[{c}]"), trials.stat("default", f"AP50[{c}]"))
                     for c, value in row["AP50"].items() if value is not None},
        }
    return summary | {"bootstrap": BOOTSTRAP}
