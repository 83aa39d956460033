"""Training losses: keypoint losses (detection losses are added beside them)."""

from .keypoints import (
    canonical_hand_order,
    coordinate_l1_loss,
    coordinate_mse_loss,
    hand_invariant_coordinate_l1,
    hand_invariant_coordinate_mse,
    hand_invariant_heatmap_loss,
    hand_invariant_spatial_cross_entropy,
    heatmap_mse_loss,
    pair_invariant_coordinate_l1,
    pair_invariant_coordinate_mse,
    pair_invariant_heatmap_loss,
    pair_invariant_spatial_cross_entropy,
    spatial_cross_entropy_loss,
)
