"""Checks on other tools' prediction files that catch the usual mistakes and say the fix.

A prediction file can be valid and still not mean what its author meant. Three such cases are cheap to spot, and
each gets a :class:`PredictionWarning` (the command line prints ``loclab: warning: ...`` and exits 0) or a hint in
the error message:

* an **empty** list: every score is 0, which is right for a model that found nothing and wrong for a file written
  before the model ran;
* coordinates that look **normalised**: every predicted x and y lies in ``[0, 1]`` while the images are larger.
  loclab scores pixels, so such a file scores 0; the fix is to multiply by each image's width and height;
* the **box format**: boxes read as the wrong one of xyxy / xywh. Each reading is tried on every box against its
  image's size (:func:`box_readings`); a box fits a reading when its width and height are positive and it lies
  inside the image, give or take 1 % of the image's size (models' boxes may overhang a little). The reading more
  boxes fit is what the file most likely holds.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from loclab.data.formats import is_finite_number
from loclab.errors import LoclabWarning

OVERHANG = 0.01  # fraction of the image size a predicted box may stick out of the image and still fit

BBOX_FLAG = "--bbox-format xywh (bbox_format='xywh' in Python)"


class PredictionWarning(LoclabWarning):
    """A prediction file that is valid but probably not what was meant; the message says what to check."""


def warn_if_empty(records: Sequence[Any], path: Path | str, what: str) -> None:
    """Warn that ``path`` holds no ``what`` (e.g. ``"detections"``), so every score will be 0."""
    if len(records) == 0:
        warnings.warn(f"{path}: holds no {what} (an empty list), so every score is 0; check that the model wrote "
                      "its predictions to this file.", PredictionWarning, stacklevel=2)


def warn_if_normalised(points: np.ndarray, image_sizes: np.ndarray, path: Path | str, what: str) -> None:
    """Warn when every coordinate of ``points`` (float ``[N, 2]`` x, y) lies in ``[0, 1]`` although the images they
    belong to (``image_sizes`` ``[N, 2]`` width, height) are larger than 1 px; nothing for ``N == 0``."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    sizes = np.asarray(image_sizes, dtype=np.float64).reshape(-1, 2)
    if len(points) == 0 or not (np.all(points >= 0) and np.all(points <= 1)) or not np.any(sizes > 1):
        return
    width, height = (int(v) for v in sizes.max(axis=0))
    warnings.warn(f"{path}: every coordinate of the {what} lies within [0, 1] while the images are up to "
                  f"{width}x{height} px: the {what} look normalised. loclab scores image pixels; multiply each x by "
                  "its image's width and each y by its height.", PredictionWarning, stacklevel=2)


def _fitting(boxes: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """bool ``[N]``: xyxy ``boxes [N, 4]`` with positive width and height inside their ``sizes [N, 2]``."""
    slack = OVERHANG * sizes
    return ((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            & (boxes[:, 0] >= -slack[:, 0]) & (boxes[:, 1] >= -slack[:, 1])
            & (boxes[:, 2] <= sizes[:, 0] + slack[:, 0]) & (boxes[:, 3] <= sizes[:, 1] + slack[:, 1]))


def box_readings(records: Sequence[Any], image_sizes: Mapping[int, tuple[int, int]]) -> tuple[int, int, int]:
    """``(boxes, fitting as xyxy, fitting as xywh)`` over the records with a known ``image_id`` and a ``bbox`` of
    four finite numbers; the rest are left for the record checks to report."""
    raw, sizes = [], []
    for rec in records:
        if not isinstance(rec, dict) or rec.get("image_id") not in image_sizes:
            continue
        bbox = rec.get("bbox")
        if isinstance(bbox, list) and len(bbox) == 4 and all(is_finite_number(v) for v in bbox):
            raw.append([float(v) for v in bbox])
            sizes.append(image_sizes[rec["image_id"]])
    if not raw:
        return 0, 0, 0
    boxes, sizes = np.asarray(raw), np.asarray(sizes, dtype=np.float64)
    as_xywh = np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)
    return len(boxes), int(_fitting(boxes, sizes).sum()), int(_fitting(as_xywh, sizes).sum())


def xywh_hint(records: Sequence[Any], image_sizes: Mapping[int, tuple[int, int]]) -> str:
    """For an error on a box read as xyxy: a sentence pointing at ``--bbox-format xywh`` when more boxes of the file
    fit their images as xywh than as xyxy, else ``""``."""
    total, xyxy, xywh = box_readings(records, image_sizes)
    if xywh <= xyxy:
        return ""
    return (f" The file looks like COCO results [x, y, width, height]: {xywh} of its {total} boxes fit their images "
            f"as xywh, {xyxy} as xyxy. Pass {BBOX_FLAG}.")


def warn_if_xyxy_read_as_xywh(records: Sequence[Any], image_sizes: Mapping[int, tuple[int, int]],
                              path: Path | str) -> None:
    """With ``--bbox-format xywh``: warn when more boxes fit their images as xyxy than as xywh."""
    total, xyxy, xywh = box_readings(records, image_sizes)
    if xyxy > xywh:
        warnings.warn(f"{path}: read as xywh, only {xywh} of {total} boxes fit their images, while {xyxy} fit as "
                      "[x1, y1, x2, y2]; if the file holds corners, leave out --bbox-format xywh.",
                      PredictionWarning, stacklevel=2)
