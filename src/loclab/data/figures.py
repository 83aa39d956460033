"""The synthetic stick-figure keypoint dataset (docs/data-formats.md, 'Stick figures'), in the reference format.

Each 128x128 grayscale (mode L) image on white holds one figure drawn in black 3 px lines with no
anti-aliasing, so pixels are only 0 or 255. Body centre ``cx, cy`` uniform integers in 40..88; head a hollow
circle of radius 8 at ``(cx, cy-20)``; torso from ``(cx, cy-12)`` to the hip ``(cx, cy+13)``; arms of length 20
from the shoulder ``(cx, cy-6)`` at angles ``aL, aR`` uniform in -60..60 degrees, hands at
``(cx - 20 sin aL, cy - 6 + 20 cos aL)`` and ``(cx + 20 sin aR, cy - 6 + 20 cos aR)``; legs from the hip to
``(cx -/+ spread, cy + 37)`` with integer spread uniform in 10..30. Every coordinate is truncated with ``int()``.
Keypoints: head centre, left hand, right hand, left foot, right foot.

Determinism: one ``numpy.random.default_rng(seed)`` stream drawn per image in the order cx, cy, aL, aR, spread;
PNGs saved by PIL with fixed options, JSON with fixed key order.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from loclab.data.formats_keypoints import write_keypoint_annotations

IMAGE_SIZE = 128
KEYPOINT_NAMES = ("head", "left_hand", "right_hand", "left_foot", "right_foot")
LINE_WIDTH = 3
HEAD_RADIUS = 8
PNG_OPTIONS = {"format": "PNG", "compress_level": 6, "optimize": False}


def generate_figures(
    out_dir: Path | str,
    seed: int = 641,
    n_train: int = 1000,
    n_val: int = 200,
    progress: bool = True,
) -> Path:
    """Write the stick-figure dataset under ``out_dir/keypoints/`` and return that directory.

    Layout: ``keypoints/{train,val}/NNNNNN.png`` and ``keypoints/{train,val}_annotations.json``. Image ids are
    global (train ``0..n_train-1``, val continues); the file name is the zero-padded id.
    """
    root = Path(out_dir) / "keypoints"
    rng = np.random.default_rng(seed)
    next_image_id = 0
    for split, count in (("train", n_train), ("val", n_val)):
        image_dir = root / split
        image_dir.mkdir(parents=True, exist_ok=True)
        images = []
        for _ in tqdm(range(count), desc=f"figures {split}", unit="img", disable=not progress):
            file_name = f"{next_image_id:06d}.png"
            picture, keypoints = render_figure(rng)
            picture.save(image_dir / file_name, **PNG_OPTIONS)
            images.append({"id": next_image_id, "file_name": file_name, "keypoints": keypoints})
            next_image_id += 1
        write_keypoint_annotations(root / f"{split}_annotations.json", images, KEYPOINT_NAMES)
    return root


def render_figure(rng: np.random.Generator) -> tuple[Image.Image, list[list[int]]]:
    """Draw one figure; returns the mode-L image and its 5 keypoints ``[[x, y], ...]`` (ints, image pixels)."""
    cx = int(rng.integers(40, 88, endpoint=True))
    cy = int(rng.integers(40, 88, endpoint=True))
    angle_left = math.radians(rng.uniform(-60.0, 60.0))
    angle_right = math.radians(rng.uniform(-60.0, 60.0))
    spread = int(rng.integers(10, 30, endpoint=True))

    head = (cx, cy - 20)
    neck, hip, shoulder = (cx, cy - 12), (cx, cy + 13), (cx, cy - 6)
    left_hand = (int(cx - 20 * math.sin(angle_left)), int(cy - 6 + 20 * math.cos(angle_left)))
    right_hand = (int(cx + 20 * math.sin(angle_right)), int(cy - 6 + 20 * math.cos(angle_right)))
    left_foot, right_foot = (cx - spread, cy + 37), (cx + spread, cy + 37)

    picture = Image.new("L", (IMAGE_SIZE, IMAGE_SIZE), 255)
    draw = ImageDraw.Draw(picture)
    # ImageDraw never anti-aliases, so a black-on-white drawing stays strictly binary.
    r = HEAD_RADIUS
    draw.ellipse([head[0] - r, head[1] - r, head[0] + r, head[1] + r], outline=0, width=LINE_WIDTH)
    for start, end in ((neck, hip), (shoulder, left_hand), (shoulder, right_hand), (hip, left_foot), (hip, right_foot)):
        draw.line([start, end], fill=0, width=LINE_WIDTH)
    keypoints = [list(p) for p in (head, left_hand, right_hand, left_foot, right_foot)]
    return picture, keypoints
