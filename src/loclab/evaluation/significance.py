"""Intervals and paired comparisons across runs, for the study's tables and conclusions.

Builds on the per-image statistics of each evaluated run (:mod:`loclab.evaluation.per_image`, ``RUN/per_image.npz``)
and the image bootstrap (:mod:`loclab.metrics.bootstrap`; 1,000 resamples, seed 0, 95 % percentile intervals):

- :class:`SeedMean`: a metric averaged over runs that differ only in their training seed, as one image statistic.
  Each resample of the images is scored by every seed's run and the scores are averaged, so its interval is the
  *pooled* interval of the seed-averaged number. It covers the sampling of the validation images; the spread
  across seeds is reported next to it, and with one seed training noise is not covered at all.
- :func:`run_statistic`: that statistic for a list of run directories and a metric name of
  :mod:`loclab.evaluation.per_image` (``"mAP50"``, ``"AP50[circle]"``, ``"pck[0.05]"``, ...).
- :func:`interval` and :func:`difference`: a statistic's interval, and a paired difference ``a - b`` of two
  statistics on the same images, as JSON records (:data:`Difference`).
- :func:`significant_extreme`: the one entry that is significantly better (or worse) than every other, or None.

A difference is *significant* when its 95 % interval excludes 0; everything else is reported as no significant
difference, never as a ranking.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from loclab.evaluation.per_image import PER_IMAGE_FILE, PerImage, PerImageError, load_per_image, statistic
from loclab.metrics.bootstrap import (
    BOOTSTRAP_LEVEL,
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    ImageStatistic,
    bootstrap_ci,
    paired_bootstrap_diff,
)

# A paired difference as JSON: {"delta": a - b, "ci95": [low, high] (null where undefined), "significant": bool}
Difference = dict[str, Any]


@dataclass(frozen=True)
class SeedMean:
    """The mean of several statistics of the same images (one per training seed): ``W [R, N] -> [R, ...]``."""

    statistics: tuple[ImageStatistic, ...]

    def __post_init__(self) -> None:
        sizes = {s.num_images for s in self.statistics}
        if len(sizes) != 1:
            raise PerImageError(f"seed runs evaluated on different numbers of images: {sorted(sizes)}")

    @property
    def num_images(self) -> int:
        return self.statistics[0].num_images

    def __call__(self, weights: np.ndarray) -> np.ndarray:
        return np.mean([s(weights) for s in self.statistics], axis=0)


def load_runs(run_dirs: Sequence[Path | str]) -> list[PerImage]:
    """The per-image statistics of each run; raises :class:`PerImageError` when a run has none or the runs were
    evaluated on different images."""
    loaded = [load_per_image(Path(run) / PER_IMAGE_FILE) for run in run_dirs]
    for run, per_image in zip(run_dirs[1:], loaded[1:]):
        if not np.array_equal(per_image.image_ids, loaded[0].image_ids):
            raise PerImageError(f"{run}: evaluated on other images than {run_dirs[0]}")
    return loaded


def run_statistic(runs: Sequence[PerImage], metric: str) -> ImageStatistic:
    """``metric`` (a name of :mod:`loclab.evaluation.per_image`) averaged over ``runs`` (:class:`SeedMean`)."""
    stats = tuple(statistic(run, metric) for run in runs)
    return stats[0] if len(stats) == 1 else SeedMean(stats)


def _finite(value: float) -> float | None:
    return None if not np.isfinite(value) else float(value)


def interval(stat: ImageStatistic, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
             level: float = BOOTSTRAP_LEVEL) -> list[float | None]:
    """``[low, high]`` of a scalar statistic (``null`` where undefined)."""
    low, high = bootstrap_ci(stat, resamples, seed, level)
    return [_finite(low), _finite(high)]


def difference(a: ImageStatistic, b: ImageStatistic, resamples: int = BOOTSTRAP_RESAMPLES,
               seed: int = BOOTSTRAP_SEED, level: float = BOOTSTRAP_LEVEL) -> Difference:
    """Paired bootstrap of ``a - b`` (scalar statistics of the same images) as a :data:`Difference` record."""
    diff = paired_bootstrap_diff(a, b, resamples, seed, level)
    return {"delta": _finite(diff.delta), "ci95": [_finite(diff.low), _finite(diff.high)],
            "significant": bool(diff.significant)}


def significant_extreme(values: Mapping[str, float], compare: Callable[[str, str], Difference], *,
                        highest: bool = True) -> tuple[str | None, dict[str, Difference]]:
    """The entry of ``values`` with the highest (``highest=False``: lowest) value, if it is significantly above
    (below) every other entry, else ``None``; and its comparison with each other entry (``compare(a, b)`` is the
    record of ``a - b``). With fewer than two entries there is nothing to rank: ``(None, {})``."""
    known = {name: v for name, v in values.items() if v is not None}
    if len(known) < 2:
        return None, {}
    top = (max if highest else min)(known, key=known.get)
    records = {other: compare(top, other) for other in known if other != top}
    wins = all(r["significant"] and (r["delta"] > 0 if highest else r["delta"] < 0) for r in records.values())
    return (top if wins else None), records


def class_extremes(per_image: PerImage, values: Mapping[str, float | None], family: str = "AP50") -> dict[str, Any]:
    """Whether one class is significantly the easiest and one the hardest of a detection evaluation.

    ``values``: ``{class: AP}`` of ``metrics.json``'s ``family`` (``"AP50"``: per-class AP@0.5); classes are
    compared pairwise on the same resampled images (per-class AP of one run, :mod:`loclab.evaluation.per_image`).
    Returns ``{"metric": family, "easiest": class | None, "easiest_vs": {other: record}, "hardest": ...,
    "hardest_vs": ...}`` (:func:`significant_extreme`; records of ``easiest - other`` and ``hardest - other``).
    """
    stats: dict[str, ImageStatistic] = {}

    def stat(name: str) -> ImageStatistic:
        if name not in stats:
            stats[name] = statistic(per_image, f"{family}[{name}]")
        return stats[name]

    def compare(a: str, b: str) -> Difference:
        return difference(stat(a), stat(b))

    easiest, easiest_vs = significant_extreme(values, compare, highest=True)
    hardest, hardest_vs = significant_extreme(values, compare, highest=False)
    return {"metric": family, "easiest": easiest, "easiest_vs": easiest_vs, "hardest": hardest,
            "hardest_vs": hardest_vs}
