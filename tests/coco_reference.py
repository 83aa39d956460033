"""The references for loclab's AP: pycocotools for the COCO-style number, the VOC devkit's ``voc_ap`` for the
VOC ones; one helper each for every test that compares against them.

``tests/test_ap.py`` (random scenes), ``tests/test_ap_difficult.py`` (difficult boxes) and
``tests/test_detection_eval.py`` (real model output) ask pycocotools for its 101-point AP at one IoU threshold,
area "all", 100 detections per image and class; ``tests/test_ap_coco.py`` for its twelve summary numbers.
:func:`devkit_matching` is the devkit's matching loop (``voc_eval.py``), for the VOC rules.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Iterable, Sequence

import numpy as np


def _xywh(box: Sequence[float]) -> list[float]:
    return [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])]


def _evaluator(ground_truth, detections, image_ids, category_ids, difficult):
    """A ``COCOeval`` over the data built in memory, not yet run."""
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
        return COCOeval(coco_gt, coco_gt.loadRes(results), "bbox")


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
    evaluator = _evaluator(ground_truth, detections, image_ids, category_ids, difficult)
    evaluator.params.iouThrs = np.array([iou_threshold])
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
        evaluator.accumulate()
    precision = evaluator.eval["precision"][0, :, :, 0, -1]  # [recall thresholds, classes]; area all, maxDets 100
    per_class = {
        c: float(precision[:, k].mean()) if (precision[:, k] > -1).all() else math.nan
        for k, c in enumerate(evaluator.params.catIds)
    }
    defined = precision[precision > -1]
    return per_class, float(defined.mean()) if defined.size else math.nan


def pycocotools_stats(
    ground_truth: Iterable[tuple[int, int, Sequence[float]]],
    detections: Iterable[tuple[int, int, Sequence[float], float]],
    image_ids: Iterable[int],
    category_ids: Iterable[int],
    difficult: Iterable[bool] | None = None,
) -> np.ndarray:
    """pycocotools' ``COCOeval.stats`` (twelve numbers, default parameters), arguments as :func:`pycocotools_ap`;
    -1 where pycocotools has no defined value."""
    evaluator = _evaluator(ground_truth, detections, image_ids, category_ids, difficult)
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return np.asarray(evaluator.stats, dtype=np.float64)


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


def _iou(a, b):
    """IoU of two ``(x1, y1, x2, y2)`` boxes, no ``+1``, with the same operations as loclab (so ties are exact)."""
    iw = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0)
    ih = max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def devkit_matching(dets, gts, iou_threshold, class_id, taken_is_fp=False):
    """voc_eval.py's loop for one class, on loclab's IoU (no ``+1``, match at ``>=``) and tie order (score, then
    image id, then input order).

    Each detection takes the box of maximum overlap among the boxes of its image and class; difficult boxes are
    never marked taken. If that overlap reaches the threshold and the box is difficult the detection is neither TP
    nor FP; a free ordinary box makes it a TP; anything else an FP. ``taken_is_fp=True`` is the devkit's own rule:
    taken boxes compete (first box on ties) and winning one is an FP. By default loclab's: taken ordinary boxes are
    skipped and the last box wins ties.

    Returns recall and precision with the devkit's repeated points for ignored detections, a mask of the counted
    (TP or FP) detections, the number of positives, and whether some detection's best box was already taken.
    """
    difficult = np.zeros(len(gts), bool) if gts.difficult is None else gts.difficult
    boxes_of_image = {}
    for g in range(len(gts)):
        if gts.category_id[g] == class_id:
            boxes_of_image.setdefault(int(gts.image_id[g]), []).append(g)
    npos = sum(not difficult[g] for rows in boxes_of_image.values() for g in rows)
    rows = [d for d in range(len(dets)) if dets.category_id[d] == class_id]
    rows.sort(key=lambda d: (-dets.scores[d], dets.image_id[d], d))
    tp, fp = np.zeros(len(rows)), np.zeros(len(rows))
    taken, hit_taken = set(), False
    for k, d in enumerate(rows):
        ovmax, jmax = -math.inf, -1
        for g in boxes_of_image.get(int(dets.image_id[d]), []):
            if g in taken and not taken_is_fp:
                continue
            ov = _iou(dets.boxes[d], gts.boxes[g])
            if ov > ovmax or (ov == ovmax and not taken_is_fp):
                ovmax, jmax = ov, g
        if ovmax >= iou_threshold:
            if difficult[jmax]:
                continue  # neither TP nor FP
            if jmax not in taken:
                tp[k] = 1
                taken.add(jmax)
            else:
                fp[k] = 1
                hit_taken = True
        else:
            fp[k] = 1
    counted = (tp + fp) > 0
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    with np.errstate(invalid="ignore", divide="ignore"):
        rec = tp / npos
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return rec, prec, counted, npos, hit_taken
