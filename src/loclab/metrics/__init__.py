"""Pure metrics, no plotting."""

from loclab.metrics.ap import (
    ap_coco_101point,
    ap_voc07_11point,
    ap_voc_allpoint,
    compute_ap,
    keep_top_k_per_image,
    keep_top_k_per_image_class,
    precision_recall_curve,
)
from loclab.metrics.ap_matching import Detections, GroundTruth, MatchResult, match_detections
from loclab.metrics.pck import (
    best_hand_assignment,
    ceiling_correct_per_image,
    compute_pck,
    compute_pck_per_keypoint,
    compute_pck_swap_aware,
    hedged_hand_predictions,
    keypoint_distances,
    keypoint_norms,
    pck_ambiguity_ceiling,
    pck_guessed_hand_labels,
    pck_random_hand_labels,
    swap_hands,
)
