"""From flattened detector outputs to final detections (docs/detection.md, 'Postprocessing')."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from loclab.ops.boxes import BoxCoder
from loclab.ops.nms import batched_nms


@dataclass(frozen=True)
class ImageDetections:
    """Detections of one image: ``boxes [K, 4]`` xyxy px, ``scores [K]``, ``labels [K]`` class ids 0..C-1,
    ``scales [K]`` the head (0 = S1, 1 = S2, 2 = S3) that produced each box. Sorted by decreasing score."""

    boxes: Tensor
    scores: Tensor
    labels: Tensor
    scales: Tensor


def postprocess_detections(
    predictions: Tensor,
    anchors: Tensor,
    anchor_scale: Tensor,
    box_coder: BoxCoder,
    *,
    score_threshold: float = 0.01,
    nms_iou: float = 0.5,
    pre_nms_top_k: int = 1000,
    max_detections: int = 100,
    image_size: int | None = None,
) -> list[ImageDetections]:
    """Decode, score, filter and suppress.

    Args:
        predictions: ``[B, N, 5+C]`` flattened head outputs (channel order tx, ty, tw, th, obj, classes).
        anchors: ``[N, 4]`` xyxy anchors in the same order; ``anchor_scale``: ``[N]`` scale (head index) per anchor.
        score_threshold: keep class scores above this. Keep it low (0.001–0.01) for AP: a high cut
            truncates the precision-recall curve.
        image_size: if given, decoded boxes are clipped to the image (anchors themselves never are).

    Score of (anchor, class) = sigmoid(objectness) × softmax(class logits)[class]; every anchor may yield
    one candidate per class; per-class NMS; then the top ``max_detections`` per image.
    """
    predictions = predictions.float()
    num_classes = predictions.shape[-1] - 5
    boxes_all = box_coder.decode(predictions[..., :4], anchors)
    if image_size is not None:
        boxes_all = boxes_all.clamp(0, image_size)
    scores_all = torch.sigmoid(predictions[..., 4:5]) * torch.softmax(predictions[..., 5:], dim=-1)
    results = []
    for boxes, scores in zip(boxes_all, scores_all):
        flat = scores.flatten()  # index = anchor * C + class
        keep = torch.nonzero(flat > score_threshold).squeeze(1)
        if keep.numel() > pre_nms_top_k:
            keep = keep[flat[keep].topk(pre_nms_top_k).indices]
        anchor_idx, cls = keep // num_classes, keep % num_classes
        cand_boxes, cand_scores = boxes[anchor_idx], flat[keep]
        kept = batched_nms(cand_boxes, cand_scores, cls, nms_iou)[:max_detections]
        results.append(ImageDetections(
            boxes=cand_boxes[kept], scores=cand_scores[kept], labels=cls[kept], scales=anchor_scale[anchor_idx[kept]]
        ))
    return results
