"""Pure tensor math: boxes, anchors, matching, NMS. Tensors in, tensors out; no I/O."""

from loclab.ops.anchors import anchor_scale_index, generate_anchors
from loclab.ops.boxes import (
    BoxCoder,
    box_area,
    box_center_size,
    box_iou,
    box_iou_numpy,
    box_iou_pair,
    compute_iou,
    cxcywh_to_xyxy,
    xywh_to_xyxy,
    xyxy_to_cxcywh,
    xyxy_to_xywh,
)
from loclab.ops.matching import match_anchors_to_targets, match_batch
from loclab.ops.nms import batched_nms, nms
