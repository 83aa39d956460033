"""Model definitions: detectors (``detector.py``), keypoint models (``keypoints.py``) and the contract each task's
models keep (``contracts.py``: :class:`Detector`, :class:`KeypointModel`)."""

from .contracts import Detector, KeypointModel
from .keypoints import (
    KEYPOINT_MODELS,
    HeatmapNet,
    IntegralNet,
    KeypointEncoder,
    RegressionNet,
    SpatialRegressionNet,
    soft_argmax_2d,
)
