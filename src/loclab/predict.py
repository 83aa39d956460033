"""``loclab predict``: run a trained model on the user's own images, draw the results, write JSON.

Images of any size are brought to the model's input (letterboxed for the detector, an aspect-preserving crop of
each instance for keypoints); predictions are mapped back to the original pixels, so the JSON and the drawings
refer to the user's image as it is displayed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

from loclab.config import DetectorConfig, KeypointConfig
from loclab.data.crops import instance_transform, to_chw, warp_image
from loclab.data.datasets import LETTERBOX_FILL
from loclab.data.errors import DataError, RecordError
from loclab.data.formats import finite_numbers, is_finite_number, read_json_object, require_list
from loclab.data.images import load_pixels
from loclab.data.letterbox_image import letterbox_image
from loclab.engine.detection import class_names, detections_to_image, load_detector, predict_images
from loclab.engine.keypoints import keypoint_names, load_keypoint_model, predict_keypoints, to_image_pixels
from loclab.engine.rundir import write_json
from loclab.export.runtime import is_exported_file, load_exported
from loclab.ops.letterbox import letterbox_params
from loclab.ops.postprocess import ImageDetections

COLOURS = ("#e41a1c", "#377eb8", "#4daf4a", "#984ea3", "#ff7f00", "#a65628", "#f781bf", "#999999")


def predict_detector_files(weights: Path, image_paths: list[Path], out: Path, threshold: float | None = None) -> Path:
    """Detect objects in each image; writes ``out/<name>_detections.png`` and ``out/detections.json``.

    Each image is letterboxed to the model input as in training, and the boxes are mapped back to the image's
    own pixels (EXIF orientation applied, as the image is displayed). ``weights`` is a loclab checkpoint or a file
    ``loclab export`` wrote (ONNX or TorchScript), which runs on the same letterboxed pixels.
    """
    cfg, detect = _detector(weights)
    threshold = cfg.display_threshold if threshold is None else threshold
    names = class_names(cfg)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for path in image_paths:
        pixels = load_pixels(path, "RGB")
        height, width = pixels.shape[:2]
        letterbox = letterbox_params(width, height, cfg.image_size)
        boxed = torch.from_numpy(np.ascontiguousarray(letterbox_image(pixels, cfg.image_size, fill=LETTERBOX_FILL)))
        det = detections_to_image(detect(boxed.permute(2, 0, 1)[None], threshold), [letterbox])[0]
        img = Image.fromarray(pixels)
        draw = ImageDraw.Draw(img)
        items = []
        for box, score, label in zip(det.boxes.tolist(), det.scores.tolist(), det.labels.tolist()):
            colour = COLOURS[label % len(COLOURS)]
            draw.rectangle(box, outline=colour, width=max(2, round(max(width, height) / 300)))
            draw.text((box[0] + 2, max(0, box[1] - 11)), f"{names[label]} {score:.2f}", fill=colour)
            items.append({"category_id": label, "category": names[label], "bbox": [round(v, 2) for v in box],
                          "score": round(score, 4)})
        img.save(out / f"{Path(path).stem}_detections.png")
        records.append({"file": str(path), "width": width, "height": height, "detections": items})
    write_json(out / "detections.json", {"weights": str(weights), "score_threshold": threshold,
                                          "bbox_format": "xyxy pixels of the original image", "images": records})
    return out / "detections.json"


def predict_keypoint_files(weights: Path, image_paths: list[Path], out: Path, *, boxes: Path | None = None,
                           box_threshold: float = 0.5) -> Path:
    """Locate the keypoints of each instance in each image, top-down; writes ``out/<name>_keypoints.png`` and
    ``out/keypoints.json``.

    Without ``boxes`` each whole image is one instance (cropped to the model input aspect-preserving, as in
    training). With ``boxes``, the detections file ``loclab predict detector`` writes (``{"images": [{"file",
    "detections": [{"bbox": [x1, y1, x2, y2], "score", ...}]}]}``, original pixels), every detection scoring at
    least ``box_threshold`` is one instance: detector, then pose. Images are read as the checkpoint's model was
    trained (grayscale or RGB, EXIF orientation applied), and keypoints are mapped back through each crop to the
    image's own pixels. Keypoint names come from the checkpoint's config. ``weights`` may also be a file
    ``loclab export`` wrote (ONNX or TorchScript), which runs on the same crops.
    """
    cfg, locate = _keypoint_model(weights)
    names = keypoint_names(cfg)
    chosen = read_detection_boxes(boxes, image_paths, box_threshold) if boxes is not None else None
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for path in image_paths:
        pixels = load_pixels(path, "L" if cfg.in_channels == 1 else "RGB")
        height, width = pixels.shape[:2]
        instances = chosen[path] if chosen is not None else [([0.0, 0.0, float(width), float(height)], None)]
        keypoints = torch.zeros(0, cfg.num_keypoints, 2)
        if instances:
            transforms = torch.stack([instance_transform(box, width, height, cfg.input_size, cfg.box_padding)
                                      for box, _ in instances])
            crops = torch.stack([to_chw(warp_image(pixels, m, cfg.input_size)) for m in transforms])
            keypoints = to_image_pixels(locate(crops), transforms)
        img = Image.fromarray(pixels).convert("RGB")
        _draw_instances(img, instances, keypoints, with_boxes=chosen is not None)
        img.save(out / f"{Path(path).stem}_keypoints.png")
        found = [{"bbox": [round(v, 2) for v in box], "score": score,
                  "keypoints": {n: [round(x, 2), round(y, 2)] for n, (x, y) in zip(names, kps.tolist())}}
                 for (box, score), kps in zip(instances, keypoints)]
        record = {"file": str(path), "width": width, "height": height, "instances": found}
        if chosen is None:
            record["keypoints"] = found[0]["keypoints"]  # one figure per image, as before detections existed
        records.append(record)
    write_json(out / "keypoints.json", {
        "weights": str(weights), "model": cfg.model, "keypoint_names": list(names),
        "boxes": None if boxes is None else str(boxes), "box_threshold": None if boxes is None else box_threshold,
        "coordinates": "original image pixels, integer x at the centre of pixel column x", "images": records})
    return out / "keypoints.json"


def _detector(weights: Path) -> tuple[DetectorConfig, Callable[[Tensor, float], list[ImageDetections]]]:
    """The config and ``detect(uint8 [B, 3, S, S], score_threshold)`` (detections in model-input pixels) of a
    checkpoint or an exported file."""
    if is_exported_file(weights):
        exported = load_exported(weights, task="detector")
        return exported.config, lambda images, threshold: exported.detect(images, score_threshold=threshold)
    model, cfg = load_detector(weights)
    return cfg, lambda images, threshold: predict_images(model, cfg, images, score_threshold=threshold)


def _keypoint_model(weights: Path) -> tuple[KeypointConfig, Callable[[Tensor], Tensor]]:
    """The config and ``locate(uint8 crops [B, C, H, W]) -> keypoints [B, K, 2]`` (input pixels) of a checkpoint
    or an exported file."""
    if is_exported_file(weights):
        exported = load_exported(weights, task="keypoints")
        return exported.config, exported.keypoints
    model, cfg = load_keypoint_model(weights)
    return cfg, lambda crops: predict_keypoints(model, cfg, crops)


def _draw_instances(img: Image.Image, instances: list, keypoints: torch.Tensor, *, with_boxes: bool) -> None:
    draw = ImageDraw.Draw(img)
    r = max(2, round(min(img.size) / 64))
    line = max(2, round(max(img.size) / 300))
    for (box, score), kps in zip(instances, keypoints):
        if with_boxes:
            draw.rectangle(box, outline="#ffffff", width=line)
            draw.text((box[0] + 2, max(0, box[1] - 11)), f"{score:.2f}", fill="#ffffff")
        for i, (x, y) in enumerate(kps.tolist()):
            colour = COLOURS[i % len(COLOURS)]
            draw.line([(x - r, y - r), (x + r, y + r)], fill=colour, width=2)
            draw.line([(x - r, y + r), (x + r, y - r)], fill=colour, width=2)


def read_detection_boxes(path: Path, image_paths: list[Path], threshold: float
                         ) -> dict[Path, list[tuple[list[float], float]]]:
    """Boxes ``[(xyxy, score), ...]`` per image of ``image_paths`` from a ``loclab predict detector`` file, those
    scoring ``>= threshold``, best first. An image's entry is found by its ``file`` as given, else the same
    resolved path, else the same file name when only one entry has it; an image without an entry is an error.
    """
    path = Path(path)
    document = read_json_object(path)
    entries = require_list(document, "images", path)
    by_text, by_resolved, by_name = {}, {}, {}
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
            raise DataError(f"{path}: images[{index}] needs a \"file\" string.")
        by_text[entry["file"]] = entry
        by_resolved[Path(entry["file"]).resolve()] = entry
        by_name.setdefault(Path(entry["file"]).name, []).append(entry)
    out: dict[Path, list[tuple[list[float], float]]] = {}
    for image in image_paths:
        named = by_name.get(Path(image).name, [])
        entry = by_text.get(str(image)) or by_resolved.get(Path(image).resolve()) or (named[0] if len(named) == 1 else None)
        if entry is None:
            raise DataError(f"{path}: has no detections for {image} (match by \"file\": path as given, resolved "
                            "path, or a unique file name).")
        chosen = []
        for k, det in enumerate(entry.get("detections", [])):
            where = f"{path}: {entry['file']} detections[{k}]"
            if not isinstance(det, dict):
                raise DataError(f"{where}: expected an object with \"bbox\" and \"score\".")
            try:
                box = finite_numbers(det.get("bbox"), 4, "bbox")
            except RecordError as err:
                raise DataError(f"{where}: {err}.") from None
            score = det.get("score", 1.0)
            if not is_finite_number(score):
                raise DataError(f"{where}: \"score\" is {score!r}, expected a number.")
            if not (box[0] < box[2] and box[1] < box[3]):
                raise DataError(f"{where}: bbox {box} is not x1 < x2, y1 < y2 (xyxy pixels).")
            if score >= threshold:
                chosen.append((box, float(score)))
        out[image] = sorted(chosen, key=lambda item: -item[1])
    return out
