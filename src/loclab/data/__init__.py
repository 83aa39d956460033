"""Data: synthetic generators, annotation readers/validators/writers, and datasets.

* ``shapes`` / ``figures``: seeded generators of the two reference datasets (docs/data-formats.md).
* ``formats`` (+ ``formats_detection``, ``formats_keypoints``): read and validate reference and COCO annotation
  files into frozen records; every bad input raises :class:`DataError` naming the file and the record.
* ``deeplabcut``: DeepLabCut projects (config.yaml + CollectedData CSVs) into the same keypoint record;
  ``instances`` (instance boxes and checks) and ``skeleton`` (symmetric pairs from keypoint names) serve both.
* ``datasets``: PyTorch datasets that decode every image once, and the detection collate / flip functions.
* ``keypoint_dataset`` (re-exported by ``datasets``): top-down keypoint samples, one crop per instance;
  ``crops``: image decoding and the affine warp to the model input.
"""

from loclab.data.datasets import (
    DetectionDataset,
    KeypointDataset,
    decode_images,
    detection_collate,
    flip_horizontal,
)
from loclab.data.deeplabcut import load_deeplabcut_split
from loclab.data.errors import DataError, DataWarning
from loclab.data.figures import KEYPOINT_NAMES, generate_figures
from loclab.data.formats import ImageRecord
from loclab.data.formats_detection import DetectionSplit, load_detection_annotations, write_detection_annotations
from loclab.data.formats_keypoints import KeypointSplit, load_keypoint_annotations, write_keypoint_annotations
from loclab.data.shapes import CATEGORIES, generate_shapes
from loclab.data.skeleton import symmetric_pairs_from_names

__all__ = [
    "CATEGORIES",
    "KEYPOINT_NAMES",
    "DataError",
    "DataWarning",
    "DetectionDataset",
    "DetectionSplit",
    "ImageRecord",
    "KeypointDataset",
    "KeypointSplit",
    "decode_images",
    "detection_collate",
    "flip_horizontal",
    "generate_figures",
    "generate_shapes",
    "load_deeplabcut_split",
    "load_detection_annotations",
    "load_keypoint_annotations",
    "symmetric_pairs_from_names",
    "write_detection_annotations",
    "write_keypoint_annotations",
]
