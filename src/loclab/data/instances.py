"""Instances as keypoint readers find them, and the checks and boxes that need their image.

Shared by :mod:`loclab.data.formats_keypoints` (reference, COCO keypoints) and :mod:`loclab.data.deeplabcut`.
Points are ``[x, y, v]`` rows in the pixel-centre convention of ``docs/architecture.md`` (integer ``x`` is the
centre of pixel column ``x``, so continuous coordinate ``x + 0.5``); ``v > 0`` means labelled. Boxes are ``xyxy``
in continuous image coordinates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from loclab.data.errors import RecordError
from loclab.data.formats import ImageRecord

KEYPOINT_BOX_PADDING = 0.25  # a box derived from keypoints grows by this fraction of its side on each side


@dataclass(frozen=True)
class Instance:
    """One instance as a reader found it, before the checks that need its image.

    ``points``: ``K`` rows ``[x, y, v]`` (``v > 0``: labelled); ``bbox``: ``[x, y, w, h]`` as the file gives it, or
    ``None`` to derive the box from the keypoints; ``label``: how messages name it (``"annotation id 7"``), or
    ``""`` when the image names it well enough (one figure per image).
    """

    points: list[list[float]]
    bbox: list[float] | None = None
    label: str = ""


def instance_box(instance: Instance, names: Sequence[str], record: ImageRecord) -> list[float]:
    """Check that the instance's labelled keypoints lie inside ``record``'s image and return its ``xyxy`` box.

    The box is ``bbox`` clipped to the image when it has positive width and height, else :func:`keypoint_box`.
    Raises :class:`RecordError` (prefixed with the instance's label) for a keypoint outside the image or a
    ``bbox`` entirely outside it.
    """
    try:
        check_inside(instance.points, names, record)
        if instance.bbox is not None and instance.bbox[2] > 0 and instance.bbox[3] > 0:
            x, y, w, h = instance.bbox
            box = [min(max(x, 0.0), record.width), min(max(y, 0.0), record.height),
                   min(max(x + w, 0.0), record.width), min(max(y + h, 0.0), record.height)]
            if not (box[0] < box[2] and box[1] < box[3]):
                shown = [int(c) if float(c).is_integer() else c for c in instance.bbox]
                raise RecordError(f"bbox {shown} lies outside the {record.width}x{record.height} image")
            return box
        return keypoint_box(instance.points, record.width, record.height)
    except RecordError as err:
        if instance.label:
            raise RecordError(f"{instance.label}: {err}") from None
        raise


def keypoint_box(points: Sequence[Sequence[float]], width: int, height: int) -> list[float]:
    """The ``xyxy`` box around the labelled (``v > 0``) points ``[x, y, v]``, grown by 25 % of its side on each side
    and clipped to the ``width x height`` image.

    Points are in the pixel-centre convention, so point ``x`` is continuous coordinate ``x + 0.5``. A side shorter
    than one pixel (a single point, points in a line) is first widened to one pixel around its centre, so the box
    is never empty. At least one point must be labelled.
    """
    labelled = [(x + 0.5, y + 0.5) for x, y, v in points if v > 0]
    if not labelled:
        raise ValueError("keypoint_box needs at least one labelled point")
    box = []
    for axis, limit in ((0, width), (1, height)):
        low, high = min(p[axis] for p in labelled), max(p[axis] for p in labelled)
        centre, side = (low + high) / 2, max(high - low, 1.0)
        half = side / 2 + KEYPOINT_BOX_PADDING * side
        box.append((max(centre - half, 0.0), min(centre + half, float(limit))))
    (x1, x2), (y1, y2) = box
    return [x1, y1, x2, y2]


def check_inside(points: Sequence[Sequence[float]], names: Sequence[str], record: ImageRecord) -> None:
    """Every labelled (``v > 0``) point ``[x, y, v]`` must lie in ``[-0.5, W - 0.5] x [-0.5, H - 0.5]``
    (pixel-centre convention); raises :class:`RecordError` naming the first keypoint that does not."""
    for k, (x, y, v) in enumerate(points):
        if v > 0 and not (-0.5 <= x <= record.width - 0.5 and -0.5 <= y <= record.height - 0.5):
            shown = [int(c) if float(c).is_integer() else c for c in (x, y)]
            raise RecordError(
                f"keypoint {k} ({names[k]}) {shown} lies outside the {record.width}x{record.height} image"
            )
