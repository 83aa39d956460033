"""Per-image statistics of an evaluation (``RUN/per_image.npz``): the bootstrap intervals of ``metrics.json`` are
computed from them, and so is a paired comparison of two runs evaluated on the same images, without running
either model again (:func:`paired_comparison`).

What is kept (docs/run-directory.md gives the file's layout):

- detection: per image and class the counted ground-truth boxes, and for each matching (``voc50``, ``voc70``:
  loclab's VOC numbers at IoU 0.5 and 0.7 under the run's match rule; ``coco50`` ... ``coco95``: pycocotools'
  rules at each COCO IoU threshold, area all, 100 detections per image and class) the counted detections in curve
  order, each with its image, class and whether it is a true positive (:mod:`loclab.metrics.ap_weighted`);
- keypoints: per image the correct keypoints at each threshold (standard and swap-aware), the scored keypoints,
  and the summed pixel error with its count (plain and after the best pair assignment).

Metric names (:func:`statistic`, :func:`paired_comparison`) are ``metrics.json`` keys, with ``[key]`` for one
entry of a per-class or per-threshold dict: detection ``mAP50``, ``mAP50_voc07``, ``mAP50_coco``, ``mAP70``,
``mAP75``, ``mAP50_95`` and e.g. ``AP50[circle]``, ``AP50_95[square]``; keypoints ``pck[0.05]``,
``pck_swap[0.1]``, ``mean_error_px``, ``mean_error_px_swap``.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from loclab.atomic import atomic_write_bytes
from loclab.errors import ConfigError, LoclabError
from loclab.metrics.ap_coco import IOU_THRESHOLDS
from loclab.metrics.ap_matching import Detections, GroundTruth, MatchResult
from loclab.metrics.ap_weighted import (
    APStatistic,
    ClassAPStatistic,
    CurveCounts,
    CurveRows,
    curve_counts,
    curve_rows,
    gt_counts,
    mean_over_classes,
)
from loclab.metrics.bootstrap import (
    BOOTSTRAP_LEVEL,
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    ImageStatistic,
    PairedDiff,
    RatioStatistic,
    bootstrap_values,
    paired_bootstrap_diff,
    per_image_sums,
    percentile_interval,
)
from loclab.metrics.pck import ArrayLike
from loclab.metrics.pck_instances import Norm, error_sums, pck_hits, pck_hits_pair_aware

PER_IMAGE_FILE = "per_image.npz"
FORMAT = "loclab-per-image/1"
COCO_MATCHINGS = tuple(f"coco{round(100 * t)}" for t in IOU_THRESHOLDS)
# metrics.json key of each mean AP -> (the matchings its per-class AP is averaged over, convention); the per-class
# dict's key is the same without the leading "m" (mAP50 -> AP50)
DETECTION_AP: dict[str, tuple[tuple[str, ...], str]] = {
    "mAP50": (("voc50",), "voc"), "mAP50_voc07": (("voc50",), "voc07"), "mAP50_coco": (("coco50",), "coco"),
    "mAP70": (("voc70",), "voc"), "mAP75": (("coco75",), "coco"), "mAP50_95": (COCO_MATCHINGS, "coco"),
}
KEYPOINT_RATIOS = {  # metrics.json key -> (numerator array, denominator array)
    "pck": ("pck.hits", "pck.scored"), "pck_swap": ("pck_swap.hits", "pck.scored"),
    "mean_error_px": ("mean_error_px.sum", "mean_error_px.count"),
    "mean_error_px_swap": ("mean_error_px_swap.sum", "mean_error_px_swap.count"),
}


class PerImageError(LoclabError, ValueError):
    """Per-image statistics that cannot serve the request (missing file, other images, unknown metric)."""


@dataclass(frozen=True)
class PerImage:
    """Per-image statistics of one evaluation.

    Attributes:
        task: ``"detection"`` or ``"keypoints"``.
        image_ids (ndarray[N] int64): the evaluated images, in the order of every per-image array.
        labels: the per-class keys (detection: class names) or threshold keys (keypoints: ``"0.05"``, ...).
        arrays: named arrays (module docstring); detection curves are ``<matching>.image``, ``.class``, ``.tp``.
    """

    task: str
    image_ids: np.ndarray
    labels: tuple[str, ...]
    arrays: Mapping[str, np.ndarray]

    @property
    def num_images(self) -> int:
        return len(self.image_ids)


def save_per_image(path: Path | str, per_image: PerImage) -> Path:
    """Write ``per_image`` as a compressed ``.npz``, atomically."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, format=np.array(FORMAT), task=np.array(per_image.task),
                        image_ids=per_image.image_ids, labels=np.array(per_image.labels, dtype=str),
                        **dict(per_image.arrays))
    atomic_write_bytes(Path(path), lambda f: f.write(buffer.getvalue()))
    return Path(path)


def load_per_image(path: Path | str) -> PerImage:
    """Read a file written by :func:`save_per_image`."""
    path = Path(path)
    if not path.is_file():
        raise PerImageError(f"{path}: missing; evaluate the run again (loclab eval ... --run RUN) to write it")
    with np.load(path, allow_pickle=False) as data:
        if "format" not in data.files or str(data["format"]) != FORMAT:
            raise PerImageError(f"{path}: not a {FORMAT} file")
        fixed = {"format", "task", "image_ids", "labels"}
        return PerImage(str(data["task"]), data["image_ids"], tuple(str(v) for v in data["labels"]),
                        {name: data[name] for name in data.files if name not in fixed})


# --- building them --------------------------------------------------------------------------------------------------


def detection_per_image(gts: GroundTruth, class_ids: Sequence[int], labels: Sequence[str],
                        matchings: Mapping[str, tuple[Detections, MatchResult]]) -> PerImage:
    """Per-image statistics of a detection evaluation from its matchings (``{name: (detections, match)}``, names
    as in the module docstring); ``labels`` are the per-class keys of ``class_ids``."""
    counts = gt_counts(gts, class_ids)
    arrays: dict[str, np.ndarray] = {"gt_count": counts.astype(np.int32)}
    for name, (dets, match) in matchings.items():
        expected = [match.num_gt.get(int(c), 0) for c in class_ids]
        if counts.sum(axis=0).tolist() != expected:  # e.g. a box outside COCO's area range "all"
            raise ValueError(f"matching {name!r} counts {expected} boxes per class, the ground truth {counts.sum(0)}")
        rows = curve_rows(dets, match, gts.image_ids, class_ids)
        arrays[f"{name}.image"] = rows.image_index.astype(np.int32)
        arrays[f"{name}.class"] = rows.class_index.astype(np.int16)
        arrays[f"{name}.tp"] = rows.is_tp
    return PerImage("detection", gts.image_ids.astype(np.int64), tuple(str(v) for v in labels), arrays)


def keypoint_per_image(
    predictions: ArrayLike, ground_truths: ArrayLike, thresholds: Sequence[float], normalize_by: Norm,
    image_ids: Sequence[int], *, threshold_keys: Sequence[str], visible: ArrayLike | None = None,
    pairs: Sequence[tuple[int, int]] = (), matched: ArrayLike | None = None, instance_image: ArrayLike | None = None,
) -> PerImage:
    """Per-image statistics of a keypoint evaluation (rows of ``[M, K, 2]`` are instances) over the ``N`` images
    ``image_ids``.

    ``instance_image`` ``[M]``: each instance's image in ``0..N-1`` (default: instance ``i`` is image ``i``);
    ``matched``: the predictions after the best pair assignment (for ``mean_error_px_swap``). Swap-aware PCK only
    with ``pairs``.
    """
    hits, scored = pck_hits(predictions, ground_truths, thresholds, normalize_by, visible=visible)
    index = np.arange(len(hits)) if instance_image is None else np.asarray(instance_image, dtype=np.int64)
    count = len(image_ids)
    if int(index.max(initial=-1)) >= count:
        raise ValueError(f"instances refer to more images than the {count} image ids")
    ids = np.asarray(list(image_ids), dtype=np.int64)

    def summed(values: Any) -> np.ndarray:
        return per_image_sums(np.asarray(values), index, count)

    arrays = {"pck.hits": summed(hits), "pck.scored": summed(scored)}
    if pairs:
        arrays["pck_swap.hits"] = summed(pck_hits_pair_aware(predictions, ground_truths, pairs, thresholds,
                                                             normalize_by, visible=visible)[0])
    for name, values in (("mean_error_px", predictions), ("mean_error_px_swap", matched)):
        if values is not None:
            total, number = error_sums(values, ground_truths, visible=visible)
            arrays[f"{name}.sum"], arrays[f"{name}.count"] = summed(total), summed(number)
    return PerImage("keypoints", ids, tuple(threshold_keys), arrays)


# --- statistics and intervals ----------------------------------------------------------------------------------------


def _curves(per_image: PerImage, matchings: Sequence[str], cache: dict[str, CurveCounts] | None = None
            ) -> tuple[CurveCounts, ...]:
    cache = {} if cache is None else cache
    for name in matchings:
        if name not in cache:
            rows = CurveRows(per_image.arrays[f"{name}.image"].astype(np.int64),
                             per_image.arrays[f"{name}.class"].astype(np.int64), per_image.arrays[f"{name}.tp"])
            cache[name] = curve_counts(rows, per_image.arrays["gt_count"])
    return tuple(cache[name] for name in matchings)


def _split_name(metric: str) -> tuple[str, str | None]:
    if metric.endswith("]") and "[" in metric:
        name, key = metric[:-1].split("[", 1)
        return name, key
    return metric, None


def _known(per_image: PerImage) -> list[str]:
    if per_image.task == "detection":
        means = [key for key, (matchings, _) in DETECTION_AP.items()
                 if all(f"{m}.tp" in per_image.arrays for m in matchings)]
        return means + [f"{key[1:]}[CLASS]" for key in means]
    names = [key for key, (top, _) in KEYPOINT_RATIOS.items() if top in per_image.arrays]
    return [f"{key}[THRESHOLD]" if key.startswith("pck") else key for key in names]


def statistic(per_image: PerImage, metric: str) -> ImageStatistic:
    """The statistic of image weights behind ``metric`` (a name of the module docstring)."""
    name, key = _split_name(metric)
    unknown = PerImageError(f"no per-image statistics for {metric!r} in this {per_image.task} evaluation "
                            f"(known: {', '.join(_known(per_image))})")
    if per_image.task == "detection":
        mean_key = name if key is None else f"m{name}"
        if mean_key not in DETECTION_AP or (key is not None and key not in per_image.labels):
            raise unknown
        matchings, convention = DETECTION_AP[mean_key]
        if not all(f"{m}.tp" in per_image.arrays for m in matchings):
            raise unknown
        index = None if key is None else per_image.labels.index(key)
        return APStatistic(_curves(per_image, matchings), convention, index)
    if name not in KEYPOINT_RATIOS or KEYPOINT_RATIOS[name][0] not in per_image.arrays:
        raise unknown
    top, bottom = (per_image.arrays[a].astype(np.float64) for a in KEYPOINT_RATIOS[name])
    if name.startswith("pck"):
        if key not in per_image.labels:
            raise unknown
        return RatioStatistic(top[:, per_image.labels.index(key)], bottom)
    if key is not None:
        raise unknown
    return RatioStatistic(top, bottom)


def _pair(low: float, high: float) -> list[float | None]:
    return [None if math.isnan(v) else float(v) for v in (low, high)]


def _detection_intervals(per_image: PerImage, resamples: int, seed: int, level: float) -> dict[str, Any]:
    metrics = {key: value for key, value in DETECTION_AP.items()
               if all(f"{m}.tp" in per_image.arrays for m in value[0])}
    conventions: dict[str, list[str]] = {}  # matching -> the conventions some metric needs of it
    for matchings, convention in metrics.values():
        for name in matchings:
            conventions.setdefault(name, [])
            if convention not in conventions[name]:
                conventions[name].append(convention)
    cache: dict[str, CurveCounts] = {}
    values = {name: bootstrap_values(ClassAPStatistic(_curves(per_image, [name], cache), tuple(convs)),
                                     resamples, seed) for name, convs in conventions.items()}  # [R, K, C] each
    out: dict[str, Any] = {}
    for key, (matchings, convention) in metrics.items():
        per_class = sum(values[m][:, conventions[m].index(convention)] for m in matchings) / len(matchings)
        low, high = percentile_interval(per_class, level)
        out[f"{key}_ci95"] = _pair(*percentile_interval(mean_over_classes(per_class), level))
        out[f"{key[1:]}_ci95"] = {label: _pair(low[k], high[k]) for k, label in enumerate(per_image.labels)}
    return out


def _keypoint_intervals(per_image: PerImage, resamples: int, seed: int, level: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, (top, bottom) in KEYPOINT_RATIOS.items():
        if top not in per_image.arrays:
            continue
        low, high = percentile_interval(bootstrap_values(
            RatioStatistic(per_image.arrays[top], per_image.arrays[bottom][:, None] if key.startswith("pck")
                           else per_image.arrays[bottom]), resamples, seed), level)
        out[f"{key}_ci95"] = ({t: _pair(low[i], high[i]) for i, t in enumerate(per_image.labels)}
                              if key.startswith("pck") else _pair(low, high))
    return out


def metric_intervals(per_image: PerImage, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                     level: float = BOOTSTRAP_LEVEL) -> dict[str, Any]:
    """The ``<key>_ci95`` entries of ``metrics.json``: ``[low, high]`` (``null`` where undefined) next to every
    mean, and ``{class or threshold: [low, high]}`` next to every per-class or per-threshold dict, plus
    ``"bootstrap"``: how they were computed. All from the same ``resamples`` draws of images."""
    if resamples < 1:
        raise ConfigError(f"bootstrap resamples must be at least 1 (0 leaves the intervals out), got {resamples}")
    compute = _detection_intervals if per_image.task == "detection" else _keypoint_intervals
    out = compute(per_image, resamples, seed, level)
    out["bootstrap"] = {"resamples": resamples, "seed": seed, "level": level, "unit": "image",
                        "interval": "percentile", "num_images": per_image.num_images}
    return out


def with_intervals(metrics: dict[str, Any], intervals: Mapping[str, Any]) -> dict[str, Any]:
    """``metrics`` with each ``<key>_ci95`` of ``intervals`` placed right after ``<key>`` (the rest at the end)."""
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        out[key] = value
        if f"{key}_ci95" in intervals:
            out[f"{key}_ci95"] = intervals[f"{key}_ci95"]
    out.update({k: v for k, v in intervals.items() if k not in out})
    return out


# --- paired comparisons ----------------------------------------------------------------------------------------------


def paired_diff(a: PerImage, b: PerImage, metric: str, resamples: int = BOOTSTRAP_RESAMPLES,
                seed: int = BOOTSTRAP_SEED, level: float = BOOTSTRAP_LEVEL) -> PairedDiff:
    """Paired bootstrap of ``metric`` (a name of the module docstring) between two evaluations of the same images:
    ``delta = a - b`` and the interval of the resampled differences
    (:func:`loclab.metrics.bootstrap.paired_bootstrap_diff`)."""
    if a.task != b.task:
        raise PerImageError(f"cannot compare a {a.task} evaluation with a {b.task} one")
    if not np.array_equal(a.image_ids, b.image_ids):
        only_a = np.setdiff1d(a.image_ids, b.image_ids).tolist()
        only_b = np.setdiff1d(b.image_ids, a.image_ids).tolist()
        how = (f"{len(only_a)} only in the first, {len(only_b)} only in the second, e.g. image "
               f"{(only_a or only_b)[0]}" if only_a or only_b else "the same images in another order")
        raise PerImageError(f"the two evaluations are not on the same images ({a.num_images} vs {b.num_images} "
                            f"images; {how})")
    if a.labels != b.labels:
        what = "classes" if a.task == "detection" else "thresholds"
        raise PerImageError(f"the two evaluations differ in their {what}: {list(a.labels)} vs {list(b.labels)}")
    return paired_bootstrap_diff(statistic(a, metric), statistic(b, metric), resamples, seed, level)


def paired_comparison(run_a: Path | str, run_b: Path | str, metric: str, resamples: int = BOOTSTRAP_RESAMPLES,
                      seed: int = BOOTSTRAP_SEED, level: float = BOOTSTRAP_LEVEL) -> PairedDiff:
    """:func:`paired_diff` of two evaluated run directories (their ``per_image.npz``): ``a - b``."""
    return paired_diff(load_per_image(Path(run_a) / PER_IMAGE_FILE), load_per_image(Path(run_b) / PER_IMAGE_FILE),
                       metric, resamples, seed, level)
