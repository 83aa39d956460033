"""``loclab predict``: run a trained model on the user's own images, draw the results, write JSON.

Images of any size are resized to the model's input size; predictions are mapped back to the original
pixels, so the JSON and the drawings refer to the user's image as it is on disk.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, UnidentifiedImageError

from loclab.data.errors import DataError
from loclab.engine.checkpoint import atomic_write_bytes
from loclab.engine.detection import load_detector, predict_images
from loclab.engine.keypoints import load_keypoint_model, predict_keypoints

COLOURS = ("#e41a1c", "#377eb8", "#4daf4a", "#984ea3", "#ff7f00")


def _open(path: Path, mode: str) -> Image.Image:
    try:
        with Image.open(path) as img:
            return img.convert(mode)
    except FileNotFoundError:
        raise DataError(f"{path}: image not found") from None
    except (UnidentifiedImageError, OSError) as err:
        raise DataError(f"{path}: cannot read the image ({err})") from None


def _batch(images: list[Image.Image], size: int, channels: int) -> torch.Tensor:
    arrays = [np.asarray(img.resize((size, size), Image.BILINEAR)) for img in images]
    batch = torch.from_numpy(np.stack(arrays))
    return batch.permute(0, 3, 1, 2).contiguous() if channels == 3 else batch[:, None]


def _write_json(path: Path, data) -> None:
    payload = json.dumps(data, indent=1).encode()
    atomic_write_bytes(path, lambda f: f.write(payload))


def predict_detector_files(weights: Path, image_paths: list[Path], out: Path, threshold: float | None = None) -> Path:
    """Detect objects in each image; writes ``out/<name>_detections.png`` and ``out/detections.json``."""
    model, cfg = load_detector(weights)
    threshold = cfg.display_threshold if threshold is None else threshold
    names = {0: "circle", 1: "square", 2: "triangle"} if cfg.num_classes == 3 else {i: str(i) for i in range(cfg.num_classes)}
    images = [_open(p, "RGB") for p in image_paths]
    detections = predict_images(model, cfg, _batch(images, cfg.image_size, 3), score_threshold=threshold)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for path, img, det in zip(image_paths, images, detections):
        sx, sy = img.width / cfg.image_size, img.height / cfg.image_size
        boxes = det.boxes * torch.tensor([sx, sy, sx, sy])
        draw = ImageDraw.Draw(img)
        items = []
        for box, score, label in zip(boxes.tolist(), det.scores.tolist(), det.labels.tolist()):
            colour = COLOURS[label % len(COLOURS)]
            draw.rectangle(box, outline=colour, width=2)
            draw.text((box[0] + 2, max(0, box[1] - 11)), f"{names[label]} {score:.2f}", fill=colour)
            items.append({"category_id": label, "category": names[label], "bbox": [round(v, 2) for v in box],
                          "score": round(score, 4)})
        img.save(out / f"{Path(path).stem}_detections.png")
        records.append({"file": str(path), "width": img.width, "height": img.height, "detections": items})
    _write_json(out / "detections.json", {"weights": str(weights), "score_threshold": threshold,
                                          "bbox_format": "xyxy pixels of the original image", "images": records})
    return out / "detections.json"


def predict_keypoint_files(weights: Path, image_paths: list[Path], out: Path) -> Path:
    """Locate the keypoints in each image; writes ``out/<name>_keypoints.png`` and ``out/keypoints.json``."""
    model, cfg = load_keypoint_model(weights)
    images = [_open(p, "L") for p in image_paths]
    keypoints = predict_keypoints(model, cfg, _batch(images, cfg.image_size, 1))
    names = ("head", "left_hand", "right_hand", "left_foot", "right_foot")[: cfg.num_keypoints]
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for path, img, kps in zip(image_paths, images, keypoints):
        # the pixel-centre convention maps pixel x of the resized image to (x + 0.5) * scale - 0.5 here
        scale = torch.tensor([img.width / cfg.image_size, img.height / cfg.image_size])
        kps = (kps + 0.5) * scale - 0.5
        rgb = img.convert("RGB")
        draw = ImageDraw.Draw(rgb)
        r = max(2, round(min(img.size) / 64))
        for i, (x, y) in enumerate(kps.tolist()):
            colour = COLOURS[i % len(COLOURS)]
            draw.line([(x - r, y - r), (x + r, y + r)], fill=colour, width=2)
            draw.line([(x - r, y + r), (x + r, y - r)], fill=colour, width=2)
        rgb.save(out / f"{Path(path).stem}_keypoints.png")
        records.append({"file": str(path), "width": img.width, "height": img.height,
                        "keypoints": {n: [round(x, 2), round(y, 2)] for n, (x, y) in zip(names, kps.tolist())}})
    _write_json(out / "keypoints.json", {"weights": str(weights), "model": cfg.model, "images": records})
    return out / "keypoints.json"
