"""The synthetic shapes detection dataset, written in the reference format (docs/data-formats.md, 'Shapes').

Each 224x224 RGB image on white holds 2-5 objects (count and class uniform): circles 16-32 px red, squares
48-96 px green, triangles 96-192 px blue pointing up, all with a 2 px black outline. An object of size ``s``
centred at integer ``(x, y)`` has the box ``[x - s//2, y - s//2, x + s//2, y + s//2]`` (xyxy, continuous pixel
coordinates, so it covers pixel columns ``x1 .. x2-1``) and is painted exactly inside it; ``area`` is ``s*s``
as in the original generator. Centres are drawn so the box stays inside the image; up to 50 tries keep
IoU <= 0.3 with every box already placed, after which the last try is used. Later objects are painted over
earlier ones; each annotation records ``visible_fraction``, the share of its own painted pixels (fill and
outline) that no later object covers, measured on an object-id mask drawn alongside the image.

Determinism: one ``numpy.random.default_rng(seed)`` stream, drawn in a fixed order (per image: count; per
object: class, size, then x and y per placement try), images saved by PIL as PNG with fixed options and the
annotation JSON written with fixed key order, so a seed gives byte-identical files on one software stack.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from loclab.data.formats_detection import write_detection_annotations
from loclab.ops.boxes import box_iou_pair

IMAGE_SIZE = 224
CATEGORIES = ({"id": 0, "name": "circle"}, {"id": 1, "name": "square"}, {"id": 2, "name": "triangle"})
SIZE_RANGES = ((16, 32), (48, 96), (96, 192))  # inclusive side lengths per class id
COLOURS = ((255, 0, 0), (0, 255, 0), (0, 0, 255))
OUTLINE_WIDTH = 2
MAX_PLACEMENT_TRIES = 50
MAX_PLACEMENT_IOU = 0.3
PNG_OPTIONS = {"format": "PNG", "compress_level": 6, "optimize": False}


def generate_shapes(
    out_dir: Path | str,
    seed: int = 641,
    n_train: int = 1000,
    n_val: int = 200,
    progress: bool = True,
) -> Path:
    """Write the shapes dataset under ``out_dir/detection/`` and return that directory.

    Layout: ``detection/{train,val}/NNNNNN.png`` and ``detection/{train,val}_annotations.json``. Image ids are
    global (train ``0..n_train-1``, val continues) and the file name is the zero-padded id; annotation ids run
    on across the splits. Existing files of the same names are overwritten.
    """
    root = Path(out_dir) / "detection"
    rng = np.random.default_rng(seed)
    next_image_id, next_annotation_id = 0, 0
    for split, count in (("train", n_train), ("val", n_val)):
        image_dir = root / split
        image_dir.mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for _ in tqdm(range(count), desc=f"shapes {split}", unit="img", disable=not progress):
            image_id = next_image_id
            file_name = f"{image_id:06d}.png"
            picture, objects = render_shapes_image(rng)
            picture.save(image_dir / file_name, **PNG_OPTIONS)
            images.append({"id": image_id, "file_name": file_name, "width": IMAGE_SIZE, "height": IMAGE_SIZE})
            for category_id, size, box, visible in objects:
                annotations.append({
                    "id": next_annotation_id, "image_id": image_id, "category_id": category_id,
                    "bbox": box, "area": size * size, "visible_fraction": visible,
                })
                next_annotation_id += 1
            next_image_id += 1
        write_detection_annotations(root / f"{split}_annotations.json", images, annotations, CATEGORIES)
    return root


def render_shapes_image(rng: np.random.Generator) -> tuple[Image.Image, list[tuple[int, int, list[int], float]]]:
    """Draw one image; returns it and per object ``(category_id, size, [x1, y1, x2, y2], visible_fraction)``.

    ``visible_fraction`` is rounded to 4 decimals (it goes into JSON).
    """
    picture = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), (255, 255, 255))
    ids = Image.new("L", (IMAGE_SIZE, IMAGE_SIZE), 0)  # 0 background, k + 1 where object k is on top
    draw, draw_ids = ImageDraw.Draw(picture), ImageDraw.Draw(ids)
    placed: list[tuple[int, int, list[int]]] = []
    painted: list[int] = []
    for _ in range(int(rng.integers(2, 6))):
        category_id = int(rng.integers(0, 3))
        low, high = SIZE_RANGES[category_id]
        size = int(rng.integers(low, high + 1))
        box = _place(rng, size, [b for _, _, b in placed])
        k = len(placed)
        _paint(draw, category_id, box, fill=COLOURS[category_id], outline=(0, 0, 0))
        painted.append(_own_pixel_count(category_id, box))
        _paint(draw_ids, category_id, box, fill=k + 1, outline=k + 1)
        placed.append((category_id, size, box))
    visible = np.bincount(np.asarray(ids).ravel(), minlength=len(placed) + 1)[1:]
    objects = [
        (category_id, size, box, round(float(visible[k]) / painted[k], 4))
        for k, (category_id, size, box) in enumerate(placed)
    ]
    return picture, objects


def _place(rng: np.random.Generator, size: int, boxes: list[list[int]]) -> list[int]:
    """A box of side ``2 * (size // 2)`` inside the image, preferring IoU <= 0.3 with ``boxes``."""
    half = size // 2
    for _ in range(MAX_PLACEMENT_TRIES):
        x = int(rng.integers(half, IMAGE_SIZE - half, endpoint=True))
        y = int(rng.integers(half, IMAGE_SIZE - half, endpoint=True))
        box = [x - half, y - half, x + half, y + half]
        if all(box_iou_pair(box, other) <= MAX_PLACEMENT_IOU for other in boxes):
            break
    return box  # after the last try, placed anyway (docs/data-formats.md, 'Shapes')


def _paint(draw: ImageDraw.ImageDraw, category_id: int, box: list[int], fill, outline) -> None:
    """Paint one object so it covers exactly pixel columns ``x1..x2-1`` and rows ``y1..y2-1`` of its box."""
    x1, y1, x2, y2 = box
    # PIL's shape bounds are inclusive pixel indices, the box's right/bottom edges are exclusive.
    corners = [x1, y1, x2 - 1, y2 - 1]
    if category_id == 0:
        draw.ellipse(corners, fill=fill, outline=outline, width=OUTLINE_WIDTH)
    elif category_id == 1:
        draw.rectangle(corners, fill=fill, outline=outline, width=OUTLINE_WIDTH)
    else:
        apex = ((x1 + x2) // 2, y1)
        draw.polygon([apex, (x2 - 1, y2 - 1), (x1, y2 - 1)], fill=fill, outline=outline, width=OUTLINE_WIDTH)


def _own_pixel_count(category_id: int, box: list[int]) -> int:
    """How many pixels the object paints when drawn alone (the denominator of ``visible_fraction``)."""
    x1, y1, x2, y2 = box
    # Drawn on a crop of its own box: integer translation leaves PIL's rasterisation unchanged.
    alone = Image.new("L", (x2 - x1, y2 - y1), 0)
    _paint(ImageDraw.Draw(alone), category_id, [0, 0, x2 - x1, y2 - y1], fill=1, outline=1)
    return int(np.count_nonzero(np.asarray(alone)))
