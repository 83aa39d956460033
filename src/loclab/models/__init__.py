"""Model definitions: keypoint models (detector models are added beside them)."""

from .keypoints import (
    KEYPOINT_MODELS,
    HeatmapNet,
    IntegralNet,
    KeypointEncoder,
    RegressionNet,
    SpatialRegressionNet,
    soft_argmax_2d,
)
