"""AP-evaluation workload for ``loclab bench``: synthetic detections, loclab and pycocotools on the same input."""

from __future__ import annotations

import contextlib
import io
import time
from typing import Any

import numpy as np

from loclab.bench.timing import timed
from loclab.metrics.ap import compute_ap
from loclab.metrics.ap_matching import Detections, GroundTruth


def synthetic_detections(num_images: int = 200, seed: int = 0) -> tuple[Detections, GroundTruth]:
    """Ground truth like the shapes val split and detections like a detector's: jittered true boxes,
    duplicates and false positives with random scores (about 100 detections per image)."""
    rng = np.random.default_rng(seed)
    g_img, g_cls, g_box, d_img, d_cls, d_box, d_score = [], [], [], [], [], [], []
    for image in range(num_images):
        n = rng.integers(2, 6)
        cls = rng.integers(0, 3, n)
        size = np.array([rng.uniform(*{0: (16, 32), 1: (48, 96), 2: (96, 192)}[c]) for c in cls])
        xy = rng.uniform(0, 224 - size[:, None], (n, 2))
        boxes = np.concatenate([xy, xy + size[:, None]], axis=1)
        g_img += [image] * n
        g_cls += cls.tolist()
        g_box.append(boxes)
        k = 100
        src = rng.integers(0, n, k)
        jitter = rng.normal(0, 0.08, (k, 4)) * size[src, None]
        fake = rng.random(k) < 0.3
        noisy = np.where(fake[:, None], rng.uniform(0, 200, (k, 1)) + np.array([0, 0, 24, 24]), boxes[src] + jitter)
        noisy[:, 2:] = np.maximum(noisy[:, 2:], noisy[:, :2] + 1)
        d_img += [image] * k
        d_cls += np.where(rng.random(k) < 0.1, rng.integers(0, 3, k), cls[src]).tolist()
        d_box.append(noisy)
        d_score.append(rng.random(k))
    gts = GroundTruth(image_id=np.array(g_img), category_id=np.array(g_cls), boxes=np.concatenate(g_box),
                      image_ids=np.arange(num_images))
    dets = Detections(image_id=np.array(d_img), category_id=np.array(d_cls), boxes=np.concatenate(d_box),
                      scores=np.concatenate(d_score))
    return dets, gts


def pycocotools_ap50(dets: Detections, gts: GroundTruth, repeats: int) -> tuple[float, float]:
    """(median seconds, AP50) of pycocotools' COCOeval (bbox, area all, maxDets 100) on the same input.

    Timed: building the COCO objects from in-memory dicts, evaluate, accumulate — what a user runs.
    """
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise RuntimeError("the AP benchmark needs pycocotools: pip install 'loclab[test]'") from None

    def xywh(b: np.ndarray) -> list[float]:
        return [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]

    gt_json = {
        "images": [{"id": int(i), "width": 224, "height": 224} for i in gts.image_ids],
        "annotations": [{"id": k + 1, "image_id": int(i), "category_id": int(c), "bbox": xywh(b), "iscrowd": 0,
                         "area": float((b[2] - b[0]) * (b[3] - b[1]))}
                        for k, (i, c, b) in enumerate(zip(gts.image_id, gts.category_id, gts.boxes))],
        # every class of the data: pycocotools scores only the categories listed here
        "categories": [{"id": int(c)} for c in np.union1d(gts.category_id, dets.category_id)],
    }
    results = [{"image_id": int(i), "category_id": int(c), "bbox": xywh(b), "score": float(s)}
               for i, c, b, s in zip(dets.image_id, dets.category_id, dets.boxes, dets.scores)]

    def run() -> float:
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO()
            coco.dataset = gt_json
            coco.createIndex()
            evaluator = COCOeval(coco, coco.loadRes(results), "bbox")
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        return float(evaluator.stats[1])

    ap = run()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), ap


def ap_speed(repeats: int) -> dict[str, Any]:
    """loclab's COCO-style AP50 vs pycocotools on identical synthetic detections of 200 images."""
    dets, gts = synthetic_detections(num_images=200, seed=0)
    t_loclab = timed(lambda: compute_ap(dets, gts, max_detections_per_image_class=100), repeats, warmup=1)
    ours = compute_ap(dets, gts, max_detections_per_image_class=100)["mAP50_coco"]
    t_coco, theirs = pycocotools_ap50(dets, gts, repeats)
    return {"loclab_seconds": t_loclab, "pycocotools_seconds": t_coco, "speedup": t_coco / t_loclab,
            "loclab_ap50": ours, "pycocotools_ap50": theirs, "num_detections": len(dets)}
