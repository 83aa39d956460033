"""``loclab compare``: runs and studies side by side, read from their files alone.

One column per run and one row per field, in three sections:

* **config**: the fields of ``config.json`` flattened with ``.`` (as ``--set`` spells them: ``detector.train.optim.lr``)
  that differ. Runs of the same task are compared field by field (a field only one of them has differs too); runs
  of different tasks only on the fields both have (``task``, ``data_root``, ``recipe``, ...).
* **metrics**: the headline numbers of ``metrics.json``. Detector runs: every top-level number whose name starts
  with ``mAP``, ``mAR``, ``AP`` or ``AR`` (``mAP50``, ``mAP50_voc07``, ``mAP50_coco``, ``mAP70``, ...). Keypoint runs:
  PCK at each threshold (``pck@0.05``, ...), swap-aware PCK (``pck_swap@0.05``, ...) and the mean error in pixels
  (``mean_error_px``, ``mean_error_px_swap``). A 95 % confidence interval is shown beside a number when
  ``metrics.json`` holds one: ``<name>_ci95`` as ``[low, high]`` (for PCK ``pck_ci95: {"0.05": [low, high]}``).
* **training**, from ``training_log.json``: ``epochs``, ``train_time_s`` and ``epoch_time_s`` (summed over epochs;
  the epoch time includes validation), ``images_per_s`` (training images over training time, all epochs) and
  ``best_val_loss_total``.

A field that does not apply to a run (``mAP50`` of a keypoint run) is blank; ``n/a`` is a metric that is undefined
(``null`` in ``metrics.json``). A path may be a run (``loclab train``: ``config.json`` naming its task), a study
(``loclab run``: its ``detector``, ``keypoints/heatmap`` and ``keypoints/regression`` runs) or an ablation grid
(``loclab ablate``: every trial run beside ``anchor_ablation.json`` / ``baseline_results.json``), in any mix.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

from loclab.data.formats import read_json_file
from loclab.errors import LoclabError
from loclab.report.printing import clean_floats, fixed

TASKS = ("detector", "keypoints")
STUDY_RUNS = ("detector", "keypoints/heatmap", "keypoints/regression")
GRID_SUMMARIES = ("anchor_ablation.json", "baseline_results.json")
SECTIONS = ("config", "metrics", "training")
_HEADLINE = re.compile(r"^m?A[PR]")  # mAP50, mAP50_coco, mAR100, AP75, ...
_PCK_FAMILIES = ("pck", "pck_swap")
_ERRORS = ("mean_error_px", "mean_error_px_swap")
_TRAINING_DIGITS = {"epochs": 0, "train_time_s": 1, "epoch_time_s": 1, "images_per_s": 1, "best_val_loss_total": 4}


class NotARunError(LoclabError, ValueError):
    """A path given to ``loclab compare`` is not a run, a study or an ablation grid."""


class _Missing:
    """A field a run does not have (shown blank), as opposed to a field whose value is ``null``."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING = _Missing()


@dataclass(frozen=True)
class Metric:
    """One headline number: ``value`` (``None`` when undefined) and its 95 % interval ``(low, high)`` if known."""

    value: float | None
    ci95: tuple[float, float] | None = None


@dataclass(frozen=True)
class RunColumn:
    """One run as a column: its name (the path given, or ``STUDY/detector`` for a study's run), directory, task,
    flattened config, headline metrics (``None`` when not evaluated) and training summary (``{}`` without a log)."""

    name: str
    path: Path
    task: str
    config: dict[str, Any]
    metrics: dict[str, Metric] | None
    training: dict[str, float]


@dataclass(frozen=True)
class Comparison:
    """The table: ``rows[section][field]`` has one cell per run (``MISSING`` where the field does not apply)."""

    runs: list[RunColumn]
    rows: dict[str, dict[str, list[Any]]]
    notes: list[str]


# ------------------------------------------------------------------------------------------------- reading runs


def _task_of(run_dir: Path) -> str | None:
    """The run's task from its ``config.json``, or ``None`` when the directory is not a run."""
    config = run_dir / "config.json"
    if not config.is_file():
        return None
    data = read_json_file(config, "run config")
    task = data.get("task") if isinstance(data, dict) else None
    return task if task in TASKS else None


def runs_in(path: Path | str) -> list[tuple[str, Path]]:
    """``[(column name, run directory)]`` for a run, a study or an ablation grid; :class:`NotARunError` otherwise."""
    path = Path(path)
    if not path.exists():
        raise NotARunError(f"{path}: no such file or directory.")
    if path.is_file():
        raise NotARunError(f"{path}: is a file; give the run or study directory (the folder that holds "
                           "config.json).")
    if _task_of(path) is not None:
        return [(str(path), path)]
    config = path / "config.json"
    study = read_json_file(config, "study config") if config.is_file() else None
    if isinstance(study, dict) and "study" in study:
        found = [(f"{path}/{member}", path / member) for member in STUDY_RUNS if _task_of(path / member)]
        if not found:
            raise NotARunError(f"{path}: a study without a trained run yet (none of {', '.join(STUDY_RUNS)} holds a "
                               "run's config.json).")
        return found
    if any((path / name).is_file() for name in GRID_SUMMARIES):
        trials = [(str(p), p) for p in sorted(path.iterdir()) if p.is_dir() and _task_of(p)]
        if not trials:
            raise NotARunError(f"{path}: an ablation grid without a trained trial yet.")
        return trials
    raise NotARunError(f"{path}: not a loclab run, study or ablation grid: expected config.json naming a task (a run "
                       "of `loclab train`), config.json of a study (`loclab run`), or anchor_ablation.json / "
                       "baseline_results.json (`loclab ablate`).")


def flatten_config(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"detector": {"train": {"epochs": 3}}}`` -> ``{"detector.train.epochs": 3}``; lists stay values."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            out.update(flatten_config(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _interval(value: Any) -> tuple[float, float] | None:
    """``[low, high]`` (or ``{"low", "high"}`` / ``{"lo", "hi"}``) as a pair of finite floats; anything else (an
    undefined interval included) ``None``."""
    if isinstance(value, dict):
        value = [value.get("low", value.get("lo")), value.get("high", value.get("hi"))]
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(_is_number(v) and math.isfinite(v) for v in value):
        return float(value[0]), float(value[1])
    return None


def _metric(value: Any, ci: Any) -> Metric:
    undefined = value is None or (isinstance(value, float) and math.isnan(value))
    return Metric(None if undefined else float(value), _interval(ci))


def headline_metrics(metrics: dict[str, Any]) -> dict[str, Metric]:
    """The headline numbers of one ``metrics.json`` (module docstring), in the file's order."""
    out: dict[str, Metric] = {}
    for key, value in metrics.items():
        if _HEADLINE.match(key) and not key.endswith("_ci95") and (_is_number(value) or value is None):
            out[key] = _metric(value, metrics.get(f"{key}_ci95"))
    for family in _PCK_FAMILIES:
        values = metrics.get(family)
        if isinstance(values, dict):
            cis = metrics.get(f"{family}_ci95")
            cis = cis if isinstance(cis, dict) else {}
            for threshold, value in values.items():
                out[f"{family}@{threshold}"] = _metric(value, cis.get(threshold))
    for key in _ERRORS:
        if key in metrics and (_is_number(metrics[key]) or metrics[key] is None):
            out[key] = _metric(metrics[key], metrics.get(f"{key}_ci95"))
    return out


def training_summary(log: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Epochs, summed train and epoch time, overall images/s and the best validation loss of a training log."""
    if not log:
        return {}
    out: dict[str, float] = {"epochs": len(log)}
    times = [r.get("train_time_s") for r in log]
    if all(_is_number(t) for t in times):
        out["train_time_s"] = float(sum(times))
        rates = [r.get("images_per_s") for r in log]
        if all(_is_number(v) for v in rates) and sum(times) > 0:
            out["images_per_s"] = sum(v * t for v, t in zip(rates, times)) / sum(times)
    epoch_times = [r.get("epoch_time_s") for r in log]
    if all(_is_number(t) for t in epoch_times):
        out["epoch_time_s"] = float(sum(epoch_times))
    losses = [r.get("val", {}).get("loss_total") for r in log]
    finite = [v for v in losses if _is_number(v) and math.isfinite(v)]
    if finite:
        out["best_val_loss_total"] = min(finite)
    return {k: out[k] for k in _TRAINING_DIGITS if k in out}


def read_run(name: str, run_dir: Path) -> RunColumn:
    """One run's column from its ``config.json``, ``metrics.json`` and ``training_log.json``."""
    config = read_json_file(run_dir / "config.json", "run config")
    metrics_file, log_file = run_dir / "metrics.json", run_dir / "training_log.json"
    metrics = read_json_file(metrics_file, "metrics file") if metrics_file.is_file() else None
    log = read_json_file(log_file, "training log") if log_file.is_file() else []
    return RunColumn(name, run_dir, config["task"], flatten_config(config),
                     headline_metrics(metrics) if isinstance(metrics, dict) else None,
                     training_summary(log if isinstance(log, list) else []))


# ------------------------------------------------------------------------------------------------- the table


def _same(a: Any, b: Any) -> bool:
    if a is MISSING or b is MISSING:
        return a is b
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)  # 1 and True, 1 and 1.0 differ


def differing_fields(runs: Sequence[RunColumn]) -> list[str]:
    """Config fields that differ between two runs of the same task, or between two runs that both have them."""
    fields = list(dict.fromkeys(key for run in runs for key in run.config))
    shown = []
    for key in fields:
        cells = [(run.task, run.config.get(key, MISSING)) for run in runs]
        if any(not _same(a, b) for (task_a, a), (task_b, b) in combinations(cells, 2)
               if task_a == task_b or (a is not MISSING and b is not MISSING)):
            shown.append(key)
    return shown


def compare_runs(paths: Sequence[Path | str]) -> Comparison:
    """The comparison of every run found under ``paths`` (runs, studies, ablation grids), in the order given."""
    runs = [read_run(name, run_dir) for path in paths for name, run_dir in runs_in(path)]
    config = {key: [run.config.get(key, MISSING) for run in runs] for key in differing_fields(runs)}
    metric_names = list(dict.fromkeys(key for run in runs for key in (run.metrics or {})))
    metrics = {key: [(run.metrics or {}).get(key, MISSING) for run in runs] for key in metric_names}
    training = {key: [run.training.get(key, MISSING) for run in runs] for key in _TRAINING_DIGITS
                if any(key in run.training for run in runs)}
    notes = [f"{run.name}: not evaluated (no metrics.json): loclab eval {run.task} --run {run.path}"
             for run in runs if run.metrics is None]
    notes += [f"{run.name}: no training_log.json" for run in runs if not run.training]
    return Comparison(runs, {"config": config, "metrics": metrics, "training": training}, notes)


# ------------------------------------------------------------------------------------------------- rendering


def _metric_text(field: str, metric: Metric) -> str:
    digits = 2 if field in _ERRORS else 3
    if metric.value is None:
        return "n/a"
    text = fixed(metric.value, digits)
    if metric.ci95 is not None:
        text += f" [{fixed(metric.ci95[0], digits)}, {fixed(metric.ci95[1], digits)}]"
    return text


def cell_text(section: str, field: str, value: Any) -> str:
    """One cell as printed: metrics with 3 decimals (pixels 2) and their interval, times and rates 1 decimal."""
    if value is MISSING:
        return ""
    if section == "metrics":
        return _metric_text(field, value)
    if section == "training":
        return fixed(value, _TRAINING_DIGITS[field])
    return value if isinstance(value, str) else json.dumps(clean_floats(value))


def _table(comparison: Comparison) -> list[tuple[str, str, list[str]]]:
    """``[(section, field, cells)]`` in print order."""
    return [(section, field, [cell_text(section, field, v) for v in values])
            for section in SECTIONS for field, values in comparison.rows[section].items()]


_TITLES = {"config": "config (fields that differ)", "metrics": "metrics", "training": "training"}


def render_text(comparison: Comparison) -> str:
    """An aligned plain-text table, one column per run, section titles on their own lines, then the notes."""
    table = _table(comparison)
    names = [run.name for run in comparison.runs]
    first = max([len("field")] + [len(f) + 2 for _, f, _ in table] + [len(_TITLES[s]) for s in SECTIONS])
    widths = [max([len(name)] + [len(cells[i]) for _, _, cells in table]) for i, name in enumerate(names)]

    def line(label: str, cells: Sequence[str]) -> str:
        return "  ".join([label.ljust(first), *(c.ljust(w) for c, w in zip(cells, widths))]).rstrip()

    out = [line("field", names)]
    for section in SECTIONS:
        rows = [(f, cells) for s, f, cells in table if s == section]
        out.append(_TITLES[section] + ("" if rows else ": none"))
        out += [line(f"  {field}", cells) for field, cells in rows]
    return "\n".join(out + [f"note: {note}" for note in comparison.notes])


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown(comparison: Comparison) -> str:
    """One Markdown table (section titles as bold rows), then the notes as a list."""
    names = [run.name for run in comparison.runs]
    out = ["| field | " + " | ".join(_md(n) for n in names) + " |", "|---" * (len(names) + 1) + "|"]
    table = _table(comparison)
    for section in SECTIONS:
        out.append(f"| **{_TITLES[section]}** |" + " |" * len(names))
        out += [f"| {_md(field)} | " + " | ".join(_md(c) for c in cells) + " |"
                for s, field, cells in table if s == section]
    return "\n".join(out + ([""] + [f"- {_md(note)}" for note in comparison.notes] if comparison.notes else []))


def _json_cell(value: Any) -> Any:
    if value is MISSING:
        return None
    if isinstance(value, Metric):
        return {"value": value.value, "ci95": list(value.ci95) if value.ci95 else None}
    return value


def as_json(comparison: Comparison) -> dict[str, Any]:
    """``{"runs": [{"name", "path", "task", "evaluated"}], "config" | "metrics" | "training": {field: [cell per
    run]}, "notes"}``; a metric cell is ``{"value", "ci95"}``, ``null`` where the field does not apply."""
    runs = [{"name": r.name, "path": str(r.path), "task": r.task, "evaluated": r.metrics is not None}
            for r in comparison.runs]
    sections = {s: {f: [_json_cell(v) for v in values] for f, values in comparison.rows[s].items()}
                for s in SECTIONS}
    return clean_floats({"runs": runs, **sections, "notes": comparison.notes})
