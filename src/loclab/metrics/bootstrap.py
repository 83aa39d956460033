"""Bootstrap confidence intervals over images, and paired bootstrap differences. Pure numpy, vectorised.

How much would a metric move on another draw of validation images? The bootstrap answers by resampling the
``N`` images with replacement ``R`` times (1,000 by default) and recomputing the metric on each resample. The
resampling unit is the image: keypoint instances and detections of one image stay together.

Everything here works on a **statistic**: an object with ``num_images`` that maps image weights ``W [R, N]``
(how many times each image is drawn in each resample) to values ``[R]`` or ``[R, ...]``, vectorised over
resamples. Metrics become statistics through per-image sufficient statistics, computed once:

- :class:`RatioStatistic` (PCK, mean pixel error): ``sum_i w_i num_i / sum_i w_i den_i`` from per-image numerators
  (e.g. correct keypoints per threshold, ``[N, T]``) and denominators (labelled keypoints, ``[N]``).
- :class:`loclab.metrics.ap_weighted.APStatistic` (AP, mAP under the three conventions, AP@[.5:.95]): from the
  per-detection curve of one matching and the per-image ground-truth counts.

API (``loclab.metrics.intervals`` builds the statistics from predictions and ground truth):

- ``resample_indices(num_images, resamples=1000, seed=0) -> int64 [R, N]``: the images drawn, from
  ``np.random.default_rng(seed).integers(0, N, size=(R, N))``; ``resample_weights(indices, num_images)`` turns
  them into the multiplicity matrix ``W``.
- ``bootstrap_ci(statistic, resamples=1000, seed=0, level=0.95) -> (low, high)``: percentile interval (the
  ``(1 - level) / 2`` and ``(1 + level) / 2`` percentiles, numpy's linear interpolation) of the resampled values.
  Floats for a scalar statistic, arrays for a vector one. Same seed and resamples, same interval.
- ``paired_bootstrap_diff(statistic_a, statistic_b, resamples=1000, seed=0, level=0.95) -> PairedDiff(delta, low,
  high, significant)``: two evaluations on the same images, resampled with the same draws; ``delta`` is
  ``a - b`` on the real data, ``(low, high)`` the percentile interval of the resampled differences, and
  ``significant`` whether that interval excludes 0.

Resamples where a statistic is undefined (NaN: e.g. no box of a class drawn) are left out of its percentiles;
an interval with no defined resample is ``(nan, nan)``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Protocol

import numpy as np

__all__ = ["BOOTSTRAP_LEVEL", "BOOTSTRAP_RESAMPLES", "BOOTSTRAP_SEED", "ImageStatistic", "PairedDiff",
           "RatioStatistic", "bootstrap_ci", "bootstrap_values", "paired_bootstrap_diff", "per_image_sums",
           "percentile_interval",
           "resample_indices", "resample_weights"]

BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
BOOTSTRAP_LEVEL = 0.95
_CHUNK = 250  # resamples evaluated at once: bounds the memory of AP's [resamples x curve length] arrays


class ImageStatistic(Protocol):
    """A metric as a function of image weights: ``statistic(W [R, N]) -> ndarray [R, ...]``."""

    @property
    def num_images(self) -> int: ...

    def __call__(self, weights: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class RatioStatistic:
    """``sum_i w_i numerators[i] / sum_i w_i denominators[i]`` per resample.

    Attributes:
        numerators (ndarray[N, ...]): per-image numerators, e.g. correct keypoints ``[N, T]``.
        denominators (ndarray[N] or [N, ...]): per-image denominators, broadcast against ``numerators[i]``.
            A resample whose weighted denominator is 0 gives NaN.
    """

    numerators: np.ndarray
    denominators: np.ndarray

    def __post_init__(self) -> None:
        numerators = np.asarray(self.numerators, dtype=np.float64)
        denominators = np.asarray(self.denominators, dtype=np.float64)
        if numerators.ndim == 0 or denominators.ndim == 0 or len(numerators) != len(denominators):
            raise ValueError(f"numerators {list(numerators.shape)} and denominators {list(denominators.shape)} "
                             "need one row per image")
        object.__setattr__(self, "numerators", numerators)
        object.__setattr__(self, "denominators", denominators)

    @property
    def num_images(self) -> int:
        return len(self.numerators)

    def __call__(self, weights: np.ndarray) -> np.ndarray:
        # einsum's own loop rather than BLAS, whose threads only wait on a busy machine
        top = np.einsum("rn,n...->r...", weights, self.numerators)
        bottom = np.einsum("rn,n...->r...", weights, self.denominators)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(bottom > 0, top / np.where(bottom > 0, bottom, 1.0), math.nan)


def per_image_sums(values: np.ndarray, image_index: np.ndarray | None, num_images: int | None = None) -> np.ndarray:
    """Rows of ``values [M, ...]`` (e.g. keypoint instances) summed per image: ``[N, ...]`` float64.

    ``image_index [M]`` gives each row's image in ``0..N-1`` (``N = num_images``, default ``max + 1``); ``None``:
    every row is its own image.
    """
    values = np.asarray(values, dtype=np.float64)
    if image_index is None:
        return values.copy()
    image_index = np.asarray(image_index, dtype=np.int64).reshape(-1)
    if len(image_index) != len(values):
        raise ValueError(f"image_index has {len(image_index)} entries for {len(values)} rows")
    count = int(image_index.max()) + 1 if num_images is None and len(image_index) else int(num_images or 0)
    out = np.zeros((count, *values.shape[1:]))
    np.add.at(out, image_index, values)
    return out


def resample_indices(num_images: int, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """The images of each resample, ``int64 [R, N]``: ``N`` draws with replacement per row, seeded."""
    if num_images < 1 or resamples < 1:
        raise ValueError(f"the bootstrap needs at least one image and one resample, got {num_images} and {resamples}")
    return np.random.default_rng(seed).integers(0, num_images, size=(resamples, num_images))


def resample_weights(indices: np.ndarray, num_images: int) -> np.ndarray:
    """How many times each image is drawn in each resample, ``float64 [R, N]``, from :func:`resample_indices`."""
    rows = indices.shape[0]
    flat = (indices + np.arange(rows)[:, None] * num_images).ravel()
    return np.bincount(flat, minlength=rows * num_images).reshape(rows, num_images).astype(np.float64)


def bootstrap_values(statistic: ImageStatistic, resamples: int = BOOTSTRAP_RESAMPLES,
                     seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """The statistic on every resample, ``[R, ...]`` (resamples of :func:`resample_indices`)."""
    n = statistic.num_images
    weights = resample_weights(resample_indices(n, resamples, seed), n)
    return np.concatenate([statistic(weights[start:start + _CHUNK]) for start in range(0, resamples, _CHUNK)])


def _point(statistic: ImageStatistic) -> np.ndarray:
    return statistic(np.ones((1, statistic.num_images)))[0]


def percentile_interval(values: np.ndarray, level: float = BOOTSTRAP_LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """``(low, high)`` percentiles of resampled ``values [R, ...]`` along axis 0, NaN resamples left out."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    tail = 100 * (1 - level) / 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices give NaN, as documented
        low, high = np.nanpercentile(values, [tail, 100 - tail], axis=0)
    return low, high


def _scalar(value: np.ndarray) -> float | np.ndarray:
    return float(value) if np.ndim(value) == 0 else value


def bootstrap_ci(statistic: ImageStatistic, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                 level: float = BOOTSTRAP_LEVEL) -> tuple[float | np.ndarray, float | np.ndarray]:
    """Percentile bootstrap interval ``(low, high)`` of ``statistic`` over images (module docstring)."""
    low, high = percentile_interval(bootstrap_values(statistic, resamples, seed), level)
    return _scalar(low), _scalar(high)


@dataclass(frozen=True)
class PairedDiff:
    """Paired bootstrap of ``a - b`` on the same images.

    Attributes:
        delta: ``a - b`` on the real data.
        low, high: the percentile interval of the resampled differences.
        significant: whether the interval excludes 0 (False when it is undefined).
    """

    delta: float | np.ndarray
    low: float | np.ndarray
    high: float | np.ndarray
    significant: bool | np.ndarray


def paired_bootstrap_diff(statistic_a: ImageStatistic, statistic_b: ImageStatistic,
                          resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                          level: float = BOOTSTRAP_LEVEL) -> PairedDiff:
    """Paired bootstrap of ``statistic_a - statistic_b``: both on the same resampled images (module docstring)."""
    if statistic_a.num_images != statistic_b.num_images:
        raise ValueError(f"a paired comparison needs the same images, got {statistic_a.num_images} and "
                         f"{statistic_b.num_images}")
    diffs = bootstrap_values(statistic_a, resamples, seed) - bootstrap_values(statistic_b, resamples, seed)
    low, high = percentile_interval(diffs, level)
    significant = (low > 0) | (high < 0)  # False for NaN
    return PairedDiff(_scalar(_point(statistic_a) - _point(statistic_b)), _scalar(low), _scalar(high),
                      bool(significant) if np.ndim(significant) == 0 else significant)
