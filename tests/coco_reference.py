"""The references for loclab's AP: pycocotools for the COCO-style number, the VOC devkit's ``voc_ap`` for the
VOC ones; one helper each for every test that compares against them.

``tests/test_ap.py`` (random scenes), ``tests/test_ap_difficult.py`` (difficult boxes) and
``tests/test_detection_eval.py`` (real model output) ask pycocotools for its 101-point AP at one IoU threshold,
area "all", 100 detections per image and class.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Iterable, Sequence

import numpy as np


def _xywh(box: Sequence[float]) -> list[float]:
    return [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])]


def pycocotools_ap(
    ground_truth: Iterable[tuple[int, int, Sequence[float]]],
    detections: Iterable[tuple[int, int, Sequence[float], float]],
    image_ids: Iterable[int],
    category_ids: Iterable[int],
    iou_threshold: float = 0.5,
    difficult: Iterable[bool] | None = None,
) -> tuple[dict[int, float], float]:
    """pycocotools' per-class AP and mean AP at ``iou_threshold`` (area all, maxDets 100).

    Args:
        ground_truth: ``(image_id, category_id, (x1, y1, x2, y2))`` per box.
        detections: ``(image_id, category_id, (x1, y1, x2, y2), score)`` per detection.
        image_ids: every evaluated image, including images without boxes.
        category_ids: every class id.
        difficult: a flag per ground-truth box (None: none is). A flagged box gets ``area`` -1, outside the range
            "all", which makes it one of pycocotools' ignored boxes (``_ignore`` in ``COCOeval.evaluateImg``).

    Returns:
        ``({category_id: AP, NaN for a class without ground truth}, mean over the defined classes)``; the mean is
        pycocotools' own ``stats[1]`` when ``iou_threshold`` is 0.5.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    ground_truth = list(ground_truth)
    flags = [False] * len(ground_truth) if difficult is None else [bool(d) for d in difficult]
    annotations = [
        # Annotation ids start at 1: COCOeval stores matched gt ids in an array where 0 means "unmatched".
        {"id": k + 1, "image_id": int(i), "category_id": int(c), "bbox": _xywh(b),
         "area": -1.0 if hard else _xywh(b)[2] * _xywh(b)[3], "iscrowd": 0}
        for k, ((i, c, b), hard) in enumerate(zip(ground_truth, flags))
    ]  # fmt: skip
    results = [{"image_id": int(i), "category_id": int(c), "bbox": _xywh(b), "score": float(s)}
               for i, c, b, s in detections]
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco_gt = COCO()
        coco_gt.dataset = {
            "images": [{"id": int(i), "width": 224, "height": 224} for i in image_ids],
            "annotations": annotations,
            "categories": [{"id": int(c), "name": str(c)} for c in category_ids],
        }
        coco_gt.createIndex()
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(results), "bbox")
        evaluator.params.iouThrs = np.array([iou_threshold])
        evaluator.evaluate()
        evaluator.accumulate()
    precision = evaluator.eval["precision"][0, :, :, 0, -1]  # [recall thresholds, classes]; area all, maxDets 100
    per_class = {
        c: float(precision[:, k].mean()) if (precision[:, k] > -1).all() else math.nan
        for k, c in enumerate(evaluator.params.catIds)
    }
    defined = precision[precision > -1]
    return per_class, float(defined.mean()) if defined.size else math.nan


def devkit_voc_ap(rec, prec, use_07_metric):
    """The PASCAL VOC devkit's voc_ap (py-faster-rcnn's voc_eval.py), loops and all."""
    if use_07_metric:
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            p = 0 if np.sum(rec >= t) == 0 else np.max(prec[rec >= t])
            ap = ap + p / 11.0
        return ap
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    for i in range(mpre.size - 1, 0, -1):
        mpre[i - 1] = np.maximum(mpre[i - 1], mpre[i])
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1])
