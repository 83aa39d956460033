"""Keypoint prediction files: read them aligned with a split's instances, and write them.

Two formats are read (``loclab eval keypoints --pred``), told apart by the first record with a non-empty
``"keypoints"`` list (nested pairs or flat numbers); a file holds one format throughout:

* loclab's: a JSON array of ``{"image_id": int, "keypoints": [[x, y], ...]}``, one record per image (``K`` points
  in the annotation file's keypoint order). Every image of the split needs one.
* COCO keypoint results: ``{"image_id": int, "category_id": int, "keypoints": [x, y, v, ...], "score": float}``,
  any number of records per image (one per detected instance). Images may have none: a missed instance. An empty
  list reads as COCO results without any instance (a warning says that every score is then 0).

Matching rule (both formats): per image, predicted and ground-truth instances are paired greedily by the
distance between box centres, closest pair first (ties: ground truth, then prediction, in file order). A
predicted instance's box is the box around its keypoints (those with ``v > 0`` in COCO results, all when none
is); a ground-truth instance's box is the split's instance box. No OKS is involved. A ground-truth instance left
without a prediction gets NaN keypoints, which PCK scores as wrong; predictions left over are ignored (PCK does
not count false positives). With one instance per image on both sides this is the plain image-by-image pairing.

Coordinates are image pixels in the pixel-centre convention (``docs/architecture.md``); a file whose predicted
coordinates all lie within [0, 1] gets a warning that they look normalised
(:mod:`loclab.evaluation.prediction_checks`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from loclab.data.errors import DataError
from loclab.data.formats import is_finite_number, json_type, read_json_list
from loclab.data.formats_keypoints import KeypointSplit
from loclab.evaluation.prediction_checks import warn_if_empty, warn_if_normalised

_SHOWN_IDS = 5  # how many ids an error message lists


@dataclass(frozen=True)
class MatchedPredictions:
    """A prediction file aligned with a split: ``keypoints`` float64 ``[M, K, 2]`` (row ``i`` for instance ``i``,
    NaN where no prediction was matched), ``format`` (``"loclab"`` or ``"coco_results"``), the counts of
    ground-truth instances without a prediction and of predictions without a ground-truth instance."""

    keypoints: Tensor
    format: str
    unmatched_instances: int
    unmatched_predictions: int


def greedy_centre_matching(gt_centres: Tensor, pred_centres: Tensor) -> list[tuple[int, int]]:
    """Pairs ``(gt index, prediction index)``: repeatedly the closest remaining pair of centres (``[n, 2]``,
    ``[p, 2]``); ties go to the lower ground-truth, then the lower prediction index. ``min(n, p)`` pairs."""
    if len(gt_centres) == 0 or len(pred_centres) == 0:
        return []
    distances = torch.cdist(gt_centres.double()[None], pred_centres.double()[None])[0].flatten()
    # NaN centres (never for validated data) sort last rather than poisoning the order
    distances = torch.where(distances.isnan(), torch.full_like(distances, math.inf), distances)
    order = torch.sort(distances, stable=True).indices.tolist()
    width = len(pred_centres)
    used_gt, used_pred, pairs = set(), set(), []
    for flat in order:
        g, p = divmod(flat, width)
        if g in used_gt or p in used_pred:
            continue
        pairs.append((g, p))
        used_gt.add(g)
        used_pred.add(p)
        if len(pairs) == min(len(gt_centres), width):
            break
    return pairs


def _point(value: Any) -> list[float] | None:
    """``[x, y]`` as two finite floats, or ``None`` when it is anything else."""
    if not isinstance(value, list) or len(value) != 2:
        return None
    if not all(is_finite_number(v) for v in value):
        return None
    return [float(value[0]), float(value[1])]


def _first_with_points(records: list[Any]) -> int | None:
    """Index of the first record whose ``"keypoints"`` is a non-empty list (the one that sets the file's format)."""
    return next((i for i, r in enumerate(records)
                 if isinstance(r, dict) and isinstance(r.get("keypoints"), list) and r["keypoints"]), None)


def _is_coco_results(records: list[Any]) -> bool:
    """Whether the file is COCO keypoint results: its first record with points holds flat numbers. An empty file
    counts as COCO results without any instance."""
    if not records:
        return True
    first = _first_with_points(records)
    return first is not None and not isinstance(records[first]["keypoints"][0], list)


def read_keypoint_predictions(path: Path | str, split: KeypointSplit) -> Tensor:
    """:func:`match_keypoint_predictions` without the counts: float64 ``[M, K, 2]`` aligned with the instances."""
    return match_keypoint_predictions(path, split).keypoints


def match_keypoint_predictions(path: Path | str, split: KeypointSplit) -> MatchedPredictions:
    """Read a prediction file (either format) and match it to ``split``'s instances (module docstring).

    Raises :class:`DataError` naming the file and the record index for: a top level that is not an array, a
    record that is not an object or lacks ``image_id``/``keypoints``, a non-integer or unknown ``image_id``, a
    wrong number of keypoints or values, a value that is not a finite number, a record of the other format; for
    loclab's format also a duplicate ``image_id`` and images without a prediction (how many, the first few ids).
    """
    path = Path(path)
    records = read_json_list(path, "prediction file", '{"image_id": int, "keypoints": [[x, y], ...]} records')
    warn_if_empty(records, path, "keypoint predictions")
    row_of = {record.id: i for i, record in enumerate(split.images)}
    coco = _is_coco_results(records)
    per_image: dict[int, list[tuple[Tensor, Tensor]]] = {}  # image row -> [(points [K, 2], labelled [K])]
    seen: dict[int, int] = {}
    for index, record in enumerate(records):
        image_id = _image_id(record, index, path, row_of, split)
        where = f"{path}: record [{index}] (image_id {image_id})"
        if coco:
            points, labelled = _coco_points(record, where, split)
        else:
            if image_id in seen:
                raise DataError(f"{where}: duplicate image_id, already predicted by record [{seen[image_id]}].")
            seen[image_id] = index
            points, labelled = _loclab_points(record, where, split, _first_with_points(records))
        per_image.setdefault(row_of[image_id], []).append((points, labelled))
    if not coco:
        absent = [record.id for record in split.images if record.id not in seen]
        if absent:
            shown = ", ".join(str(i) for i in absent[:_SHOWN_IDS]) + (", ..." if len(absent) > _SHOWN_IDS else "")
            raise DataError(f"{path}: {len(absent)} of {len(split.images)} images of {split.annotation_file} have "
                            f"no prediction (image ids {shown}).")
    _warn_if_normalised(per_image, split, path)
    return _match(split, per_image, "coco_results" if coco else "loclab")


def _warn_if_normalised(per_image: dict[int, list[tuple[Tensor, Tensor]]], split: KeypointSplit, path: Path) -> None:
    """The predicted points (the labelled ones of each instance, all when none is) against their images' sizes."""
    points, sizes = [], []
    for row, predictions in per_image.items():
        image = split.images[row]
        for p, labelled in predictions:
            chosen = p[labelled] if bool(labelled.any()) else p
            points.append(chosen)
            sizes += [(image.width, image.height)] * len(chosen)
    if points:
        warn_if_normalised(torch.cat(points).numpy(), sizes, path, "keypoints")


def _image_id(record: Any, index: int, path: Path, row_of: dict[int, int], split: KeypointSplit) -> int:
    where = f"{path}: record [{index}]"
    if not isinstance(record, dict):
        raise DataError(f"{where}: is a JSON {json_type(record)}, expected an object with \"image_id\" and "
                        "\"keypoints\".")
    missing = [key for key in ("image_id", "keypoints") if key not in record]
    if missing:
        raise DataError(f"{where}: missing key(s) {', '.join(repr(k) for k in missing)} (found keys: {sorted(record)}).")
    image_id = record["image_id"]
    if isinstance(image_id, bool) or not isinstance(image_id, int):
        raise DataError(f"{where}: \"image_id\" is {image_id!r}, expected an integer.")
    if image_id not in row_of:
        raise DataError(f"{where} (image_id {image_id}): image_id {image_id} is not an image of "
                        f"{split.annotation_file}.")
    return image_id


def _loclab_points(record: dict, where: str, split: KeypointSplit, first: int | None) -> tuple[Tensor, Tensor]:
    points, k_total = record["keypoints"], split.num_keypoints
    if isinstance(points, list) and points and not isinstance(points[0], list):
        raise DataError(f"{where}: \"keypoints\" is a flat list of {len(points)} numbers (COCO keypoint results "
                        f"[x, y, v, ...] hold {3 * k_total}), but the file's first record [{first}] is in loclab's "
                        "format [[x, y], ...]: write the whole file in one of the two formats.")
    if not isinstance(points, list) or len(points) != k_total:
        count = f"{len(points)} keypoints" if isinstance(points, list) else f"a JSON {json_type(points)}"
        raise DataError(f"{where}: \"keypoints\" has {count}, expected {k_total} [x, y] pairs "
                        f"({', '.join(split.keypoint_names)}).")
    out = torch.zeros(k_total, 2, dtype=torch.float64)
    for k, raw in enumerate(points):
        point = _point(raw)
        if point is None:
            triple = isinstance(raw, list) and len(raw) == 3 and all(is_finite_number(v) for v in raw)
            hint = (" It looks like [x, y, v]: give [x, y] pairs, or write COCO keypoint results (one flat "
                    "[x, y, v, ...] list per instance).") if triple else ""
            raise DataError(f"{where}: keypoint {k} ({split.keypoint_names[k]}) is {raw!r}, "
                            f"expected [x, y] with two finite numbers.{hint}")
        out[k] = torch.tensor(point, dtype=torch.float64)
    return out, torch.ones(k_total, dtype=torch.bool)


def _coco_points(record: dict, where: str, split: KeypointSplit) -> tuple[Tensor, Tensor]:
    flat, k_total = record["keypoints"], split.num_keypoints
    if isinstance(flat, list) and any(isinstance(v, list) for v in flat):
        raise DataError(f"{where}: \"keypoints\" holds lists (loclab's format [[x, y], ...]), but the file's first "
                        "record is COCO keypoint results (a flat [x, y, v, ...] list): write the whole file in one of "
                        "the two formats.")
    if not isinstance(flat, list) or len(flat) != 3 * k_total:
        count = f"{len(flat)} values" if isinstance(flat, list) else f"a JSON {json_type(flat)}"
        hint = (f" {len(flat)} = {k_total} x 2 looks like x, y without the visibility v: add v after each pair "
                "(v > 0 for a predicted point), or write loclab's format [[x, y], ...].") \
            if isinstance(flat, list) and len(flat) == 2 * k_total else ""
        raise DataError(f"{where}: \"keypoints\" has {count}, expected {3 * k_total} numbers [x, y, v] x {k_total} "
                        f"(COCO results; the file's first record is in that format).{hint}")
    bad = next((i for i, v in enumerate(flat) if not is_finite_number(v)), None)
    if bad is not None:
        raise DataError(f"{where}: keypoint {bad // 3} ({split.keypoint_names[bad // 3]}) has {flat[bad]!r}, "
                        "expected finite numbers.")
    for key in ("score", "category_id"):
        if key in record and not is_finite_number(record[key]):
            raise DataError(f"{where}: \"{key}\" is {record[key]!r}, expected a number.")
    table = torch.tensor(flat, dtype=torch.float64).view(k_total, 3)
    return table[:, :2].clone(), table[:, 2] > 0


def _centre(points: Tensor, labelled: Tensor) -> Tensor:
    chosen = points[labelled] if bool(labelled.any()) else points
    return (chosen.amin(dim=0) + chosen.amax(dim=0)) / 2


def _match(split: KeypointSplit, per_image: dict[int, list[tuple[Tensor, Tensor]]], fmt: str) -> MatchedPredictions:
    out = torch.full((split.num_instances, split.num_keypoints, 2), math.nan, dtype=torch.float64)
    rows_of: dict[int, list[int]] = {}
    for row, image in enumerate(split.instance_image.tolist()):
        rows_of.setdefault(image, []).append(row)
    matched = predicted = 0
    for image, predictions in per_image.items():
        predicted += len(predictions)
        rows = rows_of.get(image, [])
        # box centres in pixel-centre coordinates: the box [x1, x2] spans x1 - 0.5 .. x2 - 0.5
        gt_centres = torch.stack([(split.boxes[r, :2] + split.boxes[r, 2:]).double() / 2 - 0.5 for r in rows]) \
            if rows else torch.zeros(0, 2, dtype=torch.float64)
        pred_centres = torch.stack([_centre(p, v) for p, v in predictions])
        for g, p in greedy_centre_matching(gt_centres, pred_centres):
            out[rows[g]] = predictions[p][0]
            matched += 1
    return MatchedPredictions(out, fmt, split.num_instances - matched, predicted - matched)


def prediction_records(image_ids: Sequence[int], keypoints: Tensor | Sequence) -> list[dict[str, Any]]:
    """``[{"image_id", "keypoints": [[x, y], ...]}, ...]`` for ``keypoints [N, K, 2]`` pixels (loclab's format)."""
    points = torch.as_tensor(keypoints).detach().cpu().double().tolist()
    return [{"image_id": int(i), "keypoints": p} for i, p in zip(image_ids, points)]


def coco_result_records(image_ids: Sequence[int], keypoints: Tensor, scores: Sequence[float] | None = None,
                        category_id: int = 1) -> list[dict[str, Any]]:
    """COCO keypoint results, one record per instance: ``keypoints [M, K, 2]`` pixels with ``v = 1`` for every
    point; ``scores`` per instance (1.0 when not given)."""
    points = torch.as_tensor(keypoints).detach().cpu().double()
    scores = [1.0] * len(points) if scores is None else list(scores)
    return [{"image_id": int(i), "category_id": int(category_id),
             "keypoints": [v for x, y in p.tolist() for v in (x, y, 1)], "score": float(s)}
            for i, p, s in zip(image_ids, points, scores)]
