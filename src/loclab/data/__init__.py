"""Data: synthetic generators, annotation readers/validators/writers, and datasets.

* ``shapes`` / ``figures``: seeded generators of the two reference datasets (SPEC §1.1, §1.2).
* ``formats`` (+ ``formats_detection``, ``formats_keypoints``): read and validate reference and COCO annotation
  files into frozen records; every bad input raises :class:`DataError` naming the file and the record.
* ``datasets``: PyTorch datasets that decode every image once, and the detection collate / flip functions.
"""

from loclab.data.datasets import (
    DetectionDataset,
    KeypointDataset,
    decode_images,
    detection_collate,
    flip_horizontal,
)
from loclab.data.errors import DataError, DataWarning
from loclab.data.figures import KEYPOINT_NAMES, generate_figures
from loclab.data.formats import ImageRecord
from loclab.data.formats_detection import DetectionSplit, load_detection_annotations, write_detection_annotations
from loclab.data.formats_keypoints import KeypointSplit, load_keypoint_annotations, write_keypoint_annotations
from loclab.data.shapes import CATEGORIES, generate_shapes

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
    "load_detection_annotations",
    "load_keypoint_annotations",
    "write_detection_annotations",
    "write_keypoint_annotations",
]
