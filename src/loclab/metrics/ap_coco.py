"""COCO's twelve detection summary numbers (pycocotools' ``COCOeval.stats``), computed by loclab in numpy.

The rules are pycocotools' (``COCOeval.evaluateImg``, ``accumulate``, ``summarize``), so the numbers equal its
``stats`` on the same detections (tested against pycocotools itself):

- Each image and class keeps its 100 best detections (``maxDets=100``,
  :func:`~loclab.metrics.ap.keep_top_k_per_image_class`).
- IoU thresholds ``np.linspace(0.5, 0.95, 10)`` (:data:`IOU_THRESHOLDS`); a match needs IoU ``>=`` the threshold.
- Area ranges (:data:`AREA_RANGES`, box area ``w * h`` in pixels, both ends inclusive): all ``[0, 1e10]``, small
  ``[0, 32**2]``, medium ``[32**2, 96**2]``, large ``[96**2, 1e10]``. For one range, a ground-truth box outside it
  is an *ignored* box: not counted among the positives, and a detection takes one only when no counted box
  qualifies (pycocotools' ``_ignore``; exactly the ``"coco"`` rule for difficult boxes of
  :mod:`loclab.metrics.ap_matching`, so difficult boxes are ignored in every range). A detection matched to an
  ignored box, or left unmatched while its own area is outside the range, is ignored: neither TP nor FP.
- AP of a class at one threshold and range: COCO 101-point interpolation
  (:func:`~loclab.metrics.ap.ap_coco_101point`). AR: recall after the best ``maxDets`` detections of each image and
  class (1, 10 or 100), i.e. true positives among them over the counted boxes.
- Means are over the classes with counted boxes in the range (and over the IoU thresholds); a class without any is
  left out, a mean over none is NaN (pycocotools prints -1).

Ground-truth ``area`` here is the box area. pycocotools takes it from the annotation's ``area`` field, which COCO
files fill with the *segment* area; on files whose ``area`` is the box area (every file loclab writes) the two agree.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from loclab.metrics.ap import (
    ap_coco_101point,
    keep_top_k_per_image_class,
    precision_recall_curve,
    rank_within_image_class,
)
from loclab.metrics.ap_matching import Detections, GroundTruth, MatchResult, match_detections_grid

__all__ = ["AREA_RANGES", "IOU_THRESHOLDS", "MAX_DETECTIONS", "STATS_KEYS", "CocoMatches", "coco_matches",
           "coco_summary", "match_in_area"]

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)  # exactly pycocotools' params.iouThrs
AREA_RANGES: dict[str, tuple[float, float]] = {
    "all": (0.0, 1e5**2), "small": (0.0, 32.0**2), "medium": (32.0**2, 96.0**2), "large": (96.0**2, 1e5**2),
}
MAX_DETECTIONS = (1, 10, 100)
# metrics keys of pycocotools' stats[0..11], in its order ("mAP50_coco" is stats[1], also given by compute_ap)
STATS_KEYS = ("mAP50_95", "mAP50_coco", "mAP75", "mAP50_95_small", "mAP50_95_medium", "mAP50_95_large",
              "AR1", "AR10", "AR100", "AR100_small", "AR100_medium", "AR100_large")


def _areas(boxes: np.ndarray) -> np.ndarray:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def _outside(areas: np.ndarray, area_range: tuple[float, float]) -> np.ndarray:
    return (areas < area_range[0]) | (areas > area_range[1])


def _area_matches(dets: Detections, gts: GroundTruth, iou_thresholds: list[float],
                  area_ranges: list[tuple[float, float]]) -> list[list[MatchResult]]:
    """``[range][threshold]`` matchings by pycocotools' rules (module docstring), each image's IoU computed once."""
    gt_areas, det_areas = _areas(gts.boxes), _areas(dets.boxes)
    grid = match_detections_grid(dets, gts, iou_thresholds, [_outside(gt_areas, r) for r in area_ranges],
                                 difficult_rule="coco")
    out = []
    for limits, per_threshold in zip(area_ranges, grid):
        det_outside = _outside(det_areas, limits)
        out.append([replace(m, is_ignored=m.is_ignored | ((m.matched_gt < 0) & det_outside)) for m in per_threshold])
    return out


def match_in_area(dets: Detections, gts: GroundTruth, iou_threshold: float,
                  area_range: tuple[float, float]) -> MatchResult:
    """pycocotools' matching for one IoU threshold and one area range (rules in the module docstring).

    Returns:
        MatchResult aligned with ``dets``: ``num_gt`` counts the ordinary boxes inside the range, ``is_ignored``
        marks detections matched to an ignored box and unmatched detections outside the range.
    """
    return _area_matches(dets, gts, [iou_threshold], [area_range])[0][0]


@dataclass(frozen=True)
class CocoMatches:
    """The detections COCO scores (100 per image and class) and their matchings: ``matches[area][t]`` for each
    area name of :data:`AREA_RANGES` and each threshold index of :data:`IOU_THRESHOLDS`."""

    detections: Detections
    matches: dict[str, list[MatchResult]]


def coco_matches(predictions: Detections, ground_truths: GroundTruth) -> CocoMatches:
    """Cap to pycocotools' ``maxDets=100`` per image and class, then match at every threshold and area range."""
    dets = keep_top_k_per_image_class(predictions, MAX_DETECTIONS[-1])
    grid = _area_matches(dets, ground_truths, [float(t) for t in IOU_THRESHOLDS], list(AREA_RANGES.values()))
    return CocoMatches(dets, dict(zip(AREA_RANGES, grid)))


def _class_mean(values: np.ndarray) -> float:
    """Mean over the classes (columns) with counted boxes of the mean over thresholds (rows); NaN if none."""
    defined = ~np.isnan(values[0])  # a class has counted boxes at every threshold or at none
    return float(np.mean(values[:, defined].mean(axis=0))) if defined.any() else math.nan


def coco_summary(coco: CocoMatches, class_ids: list[int],
                 class_names: Mapping[int, str] | None = None) -> dict[str, Any]:
    """pycocotools' twelve summary numbers and the per-class AP behind the first and third.

    Args:
        coco: from :func:`coco_matches`.
        class_ids: the classes to average over (those without counted boxes in a range are left out there).
        class_names: optional names, the per-class keys.

    Returns:
        ``{key: value for key in STATS_KEYS}`` (NaN where pycocotools says -1), ``"AP50_95"`` and ``"AP75"``
        (``{class: AP}``, NaN without ground truth) and ``"coco_stats"``: the twelve values in pycocotools' order.
    """
    dets = coco.detections
    rank = rank_within_image_class(dets)
    ap: dict[str, np.ndarray] = {}  # area -> [T, C] AP (NaN: no counted box)
    ar: dict[tuple[str, int], np.ndarray] = {}  # (area, maxDets) -> [T, C] recall
    for area, per_threshold in coco.matches.items():
        ap[area] = np.full((len(IOU_THRESHOLDS), len(class_ids)), math.nan)
        for max_dets in MAX_DETECTIONS if area == "all" else MAX_DETECTIONS[-1:]:
            ar[area, max_dets] = np.full_like(ap[area], math.nan)
        for t, match in enumerate(per_threshold):
            for k, class_id in enumerate(class_ids):
                num_gt = match.num_gt.get(class_id, 0)
                if num_gt == 0:
                    continue
                ap[area][t, k] = ap_coco_101point(*precision_recall_curve(dets, match, class_id))
                hits = match.is_tp & (dets.category_id == class_id)
                for (a, max_dets), recall in ar.items():
                    if a == area:
                        recall[t, k] = np.count_nonzero(hits & (rank < max_dets)) / num_gt

    t75 = int(np.flatnonzero(np.isclose(IOU_THRESHOLDS, 0.75))[0])
    stats = [_class_mean(ap["all"]), _class_mean(ap["all"][:1]), _class_mean(ap["all"][t75 : t75 + 1])]
    stats += [_class_mean(ap[area]) for area in ("small", "medium", "large")]
    stats += [_class_mean(ar["all", max_dets]) for max_dets in MAX_DETECTIONS]
    stats += [_class_mean(ar[area, MAX_DETECTIONS[-1]]) for area in ("small", "medium", "large")]
    keys = [class_names.get(c, c) if class_names else c for c in class_ids]
    result: dict[str, Any] = dict(zip(STATS_KEYS, stats))
    result["AP50_95"] = dict(zip(keys, ap["all"].mean(axis=0).tolist()))  # NaN for a class without ground truth
    result["AP75"] = dict(zip(keys, ap["all"][t75].tolist()))
    result["coco_stats"] = stats
    return result
