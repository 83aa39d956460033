"""Detector postprocessing with fixed output shapes, for exported graphs (ONNX, TorchScript).

:func:`loclab.ops.postprocess.postprocess_detections` returns a list of variable-length results and runs NMS in
score-ordered chunks; neither can live in a graph whose batch size is only known at run time. The function here
computes the same detections for a whole batch at once and pads them to ``[B, D, 6]`` with a count per image.
It uses only tensor ops that ONNX and TorchScript express, plus one loop whose trip count depends on the data
(the greedy NMS fixed point, :func:`greedy_keep`), compiled with ``torch.jit.script`` so that tracing keeps it
as a loop.
"""

from __future__ import annotations

import warnings
from functools import lru_cache

import torch
from torch import Tensor

from loclab.ops.boxes import BoxCoder, box_iou

__all__ = ["greedy_keep", "postprocess_detections_padded"]

DETECTION_COLUMNS = ("x1", "y1", "x2", "y2", "score", "label")


def _greedy_keep(suppresses: Tensor, alive: Tensor) -> Tensor:
    keep = alive
    changed = torch.ones((), dtype=torch.bool, device=alive.device)
    while bool(changed):
        new_keep = alive & ~(suppresses & keep.unsqueeze(-1)).any(dim=-2)
        changed = (new_keep != keep).any()
        keep = new_keep
    return keep


@lru_cache(maxsize=1)
def _scripted_greedy_keep():
    # Compiled on first use, not at import, as it takes a moment. TorchScript is deprecated in favour of
    # torch.export, which cannot keep this data-dependent loop; torch is pinned, so the warning is silenced.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.script(_greedy_keep)


def greedy_keep(suppresses: Tensor, alive: Tensor) -> Tensor:
    """Greedy NMS decisions for candidates already in visiting order, several images at once.

    Args:
        suppresses (Tensor[B, K, K] bool): ``suppresses[b, j, i]`` when candidate ``j`` comes before ``i`` in
            image ``b``'s order and would suppress it (overlap above the threshold, same class). Strictly upper
            triangular in ``(j, i)``.
        alive (Tensor[B, K] bool): candidates that take part at all (above the score threshold).

    Returns:
        Tensor[B, K] bool: the unique solution of ``keep[i] = alive[i] and not any(keep[j] and suppresses[j, i])``,
        which is what the classic greedy loop keeps. Found by iterating from ``keep = alive`` until nothing
        changes: each round fixes at least one more leading candidate, so at most ``K + 1`` rounds, and in
        practice a handful (suppression chains are short). Runs as TorchScript, so a traced graph keeps the loop.
    """
    return _scripted_greedy_keep()(suppresses, alive)


def postprocess_detections_padded(
    predictions: Tensor,
    anchors: Tensor,
    box_coder: BoxCoder,
    *,
    score_threshold: float,
    nms_iou: float,
    pre_nms_top_k: int,
    max_detections: int,
    image_size: int,
) -> tuple[Tensor, Tensor]:
    """Decode, score, keep the top candidates, suppress per class, pad: the detections of
    :func:`loclab.ops.postprocess.postprocess_detections` as fixed-shape tensors.

    Args:
        predictions: ``[B, N, 5+C]`` flattened head outputs (tx, ty, tw, th, objectness, C class logits).
        anchors: ``[N, 4]`` xyxy anchors in the same order.
        score_threshold, nms_iou, pre_nms_top_k, max_detections: as in ``postprocess_detections``.
        image_size: decoded boxes are clipped to ``[0, image_size]``.

    Returns:
        ``(detections [B, D, 6] float32, counts [B] int64)`` with ``D = min(max_detections, pre-NMS candidates)``.
        Row ``r < counts[b]`` of image ``b`` is ``(x1, y1, x2, y2, score, label)`` (label a class id 0..C-1 as a
        float), by decreasing score; rows from ``counts[b]`` on are zeros. The same boxes, scores and labels as
        ``postprocess_detections``; only candidates with exactly equal scores may be visited in another order.
    """
    predictions = predictions.float()
    num_anchors, num_classes = predictions.shape[1], predictions.shape[2] - 5
    boxes = box_coder.decode(predictions[..., :4], anchors).clamp(0, image_size)  # [B, N, 4]
    scores = torch.sigmoid(predictions[..., 4:5]) * torch.softmax(predictions[..., 5:], dim=-1)  # [B, N, C]
    flat = scores.flatten(1)  # index = anchor * C + class, as postprocess_detections
    k = min(pre_nms_top_k, num_anchors * num_classes)
    # Candidates: the top k scores above the threshold, in decreasing score. (A stable sort would order ties as
    # postprocess_detections does, but the ONNX exporter cannot express one; TopK is the op both formats have.)
    cand_scores, order = torch.topk(torch.where(flat > score_threshold, flat, -1.0), k, dim=1)
    alive = cand_scores > score_threshold
    cand_labels = order % num_classes
    cand_boxes = torch.gather(boxes, 1, (order // num_classes).unsqueeze(-1).expand(-1, -1, 4))  # [B, k, 4]
    position = torch.arange(k, device=predictions.device)
    suppresses = ((box_iou(cand_boxes, cand_boxes) > nms_iou)
                  & (cand_labels.unsqueeze(-1) == cand_labels.unsqueeze(-2))
                  & (position.unsqueeze(-1) < position.unsqueeze(0)) & alive.unsqueeze(-1))
    keep = greedy_keep(suppresses, alive)
    d = min(max_detections, k)
    # The first d kept candidates (they are in score order), moved to the front in that order.
    final = keep & (torch.cumsum(keep.to(torch.int64), dim=1) <= d)
    sort_key = torch.where(final, position.to(torch.float32), float(k))
    rows = torch.topk(sort_key, d, dim=1, largest=False, sorted=True).indices  # [B, d]
    table = torch.cat((cand_boxes, cand_scores.unsqueeze(-1), cand_labels.to(torch.float32).unsqueeze(-1)), dim=-1)
    picked = torch.gather(table, 1, rows.unsqueeze(-1).expand(-1, -1, len(DETECTION_COLUMNS)))
    valid = torch.gather(final, 1, rows).unsqueeze(-1)
    detections = torch.where(valid, picked, 0.0)
    return detections, final.sum(dim=1)
