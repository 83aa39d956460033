"""Synthetic detection datasets for reader tests, written in every detection layout loclab reads.

One in-memory description (:func:`make_detection_dataset`) is written as the reference layout, COCO, Pascal VOC and
YOLO (:func:`write_reference`, :func:`write_coco`, :func:`write_voc`, :func:`write_yolo`, or :func:`write_layout` by
name), so a test can check that each reader gives back exactly what was written, and a model can be trained on any
of them:

* 7 classes (:data:`CATEGORIES`) with non-contiguous COCO ids 3, 5, 8, 13, 21, 34, 55, each a simple filled shape
  in its own colour touching all four sides of its box (a detector can learn them). The names are chosen so that
  sorted names and sorted ids give the same order, so labels agree across layouts: VOC labels by sorted name,
  COCO and the reference format by sorted id, YOLO by the class index written (the label).
* non-square images of several sizes (:data:`SIZES`, used in turn), 1 to 3 objects each, boxes with integer
  corners in displayed pixels; image ``i``'s first object is of class ``i % 7``, so with 7 images or more every
  class appears (VOC finds its classes in the data); with ``empty_image=True`` the last train image has no objects.
* the first train images are the special files (:data:`UNUSUAL_KINDS`): a grayscale JPEG, an RGBA PNG (transparent
  left columns, half-transparent top rows), a palette PNG, a 16-bit grayscale PNG, and JPEGs stored sideways with
  EXIF orientation 6 and 8 whose boxes refer to the displayed (upright) image. The rest are RGB PNGs.
* ``difficult``: every 7th object (by global index, starting at the 4th) is marked difficult; only VOC stores it.

Every layout holds byte-identical image files. :attr:`SyntheticImage.expected_rgb` is what reading the file upright
as 8-bit RGB must give: exact for the PNG kinds (alpha composited on black, 16-bit scaled by 255/65535), and PIL's
own decoding (``ImageOps.exif_transpose``) for the JPEG kinds.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import yaml
from PIL import Image, ImageDraw, ImageOps

CATEGORIES = {3: "bar", 5: "circle", 8: "cross", 13: "diamond", 21: "ring", 34: "square", 55: "triangle"}
CATEGORY_IDS = tuple(sorted(CATEGORIES))
NAMES = tuple(CATEGORIES[i] for i in CATEGORY_IDS)  # label order in every layout
assert list(NAMES) == sorted(NAMES), "sorted names must follow sorted ids so that labels agree across layouts"
COLOURS = {3: (220, 40, 40), 5: (40, 170, 40), 8: (40, 40, 220), 13: (200, 160, 0), 21: (160, 0, 160),
           34: (0, 150, 150), 55: (30, 30, 30)}
SIZES = ((96, 64), (64, 80), (120, 72))  # (width, height) of the displayed images, used in turn
UNUSUAL_KINDS = ("gray_jpeg", "rgba_png", "palette_png", "gray16_png", "exif6_jpeg", "exif8_jpeg")
TRANSPARENT_COLUMNS, HALF_ROWS = 3, 4  # RGBA kind: alpha 0 on the left columns, 128 on the top rows
LAYOUT_NAMES = ("reference", "coco", "voc", "yolo")
# How the EXIF kinds are stored: orientation tag, and the transposition that turns the upright image into the file.
_STORED = {"exif6_jpeg": (6, Image.Transpose.ROTATE_90), "exif8_jpeg": (8, Image.Transpose.ROTATE_270)}


@dataclass(frozen=True)
class SyntheticObject:
    """One object: COCO ``category_id`` and ``box`` xyxy with integer corners in displayed pixels."""

    category_id: int
    box: tuple[int, int, int, int]
    difficult: bool = False

    @property
    def label(self) -> int:
        return CATEGORY_IDS.index(self.category_id)

    @property
    def name(self) -> str:
        return CATEGORIES[self.category_id]


@dataclass(frozen=True, eq=False)
class SyntheticImage:
    """One image: ``id`` is global (train first), ``stem`` its zero-padded id, ``width``/``height`` displayed size,
    ``data`` the file's bytes, ``expected_rgb`` uint8 ``[H, W, 3]`` upright pixels (see the module docstring)."""

    id: int
    split: str
    kind: str
    width: int
    height: int
    objects: tuple[SyntheticObject, ...]
    data: bytes = field(repr=False)
    expected_rgb: np.ndarray = field(repr=False)

    @property
    def stem(self) -> str:
        return f"{self.id:06d}"

    @property
    def file_name(self) -> str:
        return self.stem + (".jpg" if self.kind.endswith("jpeg") else ".png")

    @property
    def orientation(self) -> int:
        return _STORED[self.kind][0] if self.kind in _STORED else 1

    @property
    def boxes(self) -> np.ndarray:
        """float32 ``[n, 4]`` xyxy displayed pixels."""
        return np.array([o.box for o in self.objects], dtype=np.float32).reshape(-1, 4)

    @property
    def labels(self) -> np.ndarray:
        return np.array([o.label for o in self.objects], dtype=np.int64)

    @property
    def difficult(self) -> np.ndarray:
        return np.array([o.difficult for o in self.objects], dtype=bool)


@dataclass(frozen=True, eq=False)
class SyntheticDetection:
    train: tuple[SyntheticImage, ...]
    val: tuple[SyntheticImage, ...]

    def split(self, name: str) -> tuple[SyntheticImage, ...]:
        return {"train": self.train, "val": self.val}[name]

    @property
    def images(self) -> tuple[SyntheticImage, ...]:
        return self.train + self.val

    def by_file_name(self) -> dict[str, SyntheticImage]:
        return {image.file_name: image for image in self.images}


def make_detection_dataset(
    seed: int = 0, n_train: int = 12, n_val: int = 6, *, specials: bool = True, empty_image: bool = True
) -> SyntheticDetection:
    """A dataset of ``n_train + n_val`` images; the same arguments always give the same bytes (one PIL build)."""
    rng = np.random.default_rng(seed)
    images, objects_so_far = [], 0
    for index in range(n_train + n_val):
        split = "train" if index < n_train else "val"
        kind = UNUSUAL_KINDS[index] if specials and index < min(len(UNUSUAL_KINDS), n_train) else "png"
        width, height = SIZES[index % len(SIZES)]
        empty = empty_image and split == "train" and index == n_train - 1 and n_train > len(UNUSUAL_KINDS)
        first_class = CATEGORY_IDS[index % len(CATEGORY_IDS)]  # every class appears once there are 7 images
        objects = [] if empty else _place_objects(rng, width, height, int(rng.integers(1, 4)), first_class)
        objects = [SyntheticObject(o.category_id, o.box, (objects_so_far + k) % 7 == 3) for k, o in enumerate(objects)]
        objects_so_far += len(objects)
        canvas = _draw(rng, width, height, objects)
        data, expected = _encode(canvas, kind)
        images.append(SyntheticImage(index, split, kind, width, height, tuple(objects), data, expected))
    return SyntheticDetection(tuple(images[:n_train]), tuple(images[n_train:]))


def voc_default_split(ds: SyntheticDetection) -> dict[str, list[SyntheticImage]]:
    """The split a VOC folder without ImageSets gets: every 5th image in file-name (= id) order is val."""
    ordered = sorted(ds.images, key=lambda im: im.stem)
    return {"train": [im for i, im in enumerate(ordered) if i % 5 != 4],
            "val": [im for i, im in enumerate(ordered) if i % 5 == 4]}


# ------------------------------------------------------------------------------------------------ writers


def write_layout(ds: SyntheticDetection, root: Path, name: str) -> Path:
    """Write ``ds`` to ``root`` in layout ``name`` (one of :data:`LAYOUT_NAMES`) with default options."""
    return {"reference": write_reference, "coco": write_coco, "voc": write_voc, "yolo": write_yolo}[name](ds, root)


def write_reference(ds: SyntheticDetection, root: Path) -> Path:
    """``root/detection/{split}_annotations.json`` (bbox xyxy, COCO category ids) + ``root/detection/{split}/``."""
    root = Path(root)
    for split in ("train", "val"):
        folder = root / "detection" / split
        _write_images(ds.split(split), folder)
        document = _coco_document(ds, split, xywh=False)
        (root / "detection" / f"{split}_annotations.json").write_text(json.dumps(document))
    return root


def write_coco(
    ds: SyntheticDetection, root: Path, *, images: Literal["split", "images"] = "split", suffix: str = "2017"
) -> Path:
    """``root/annotations/instances_{split}{suffix}.json`` (bbox xywh, area w*h) with the images in
    ``root/{split}{suffix}/`` (``images="split"``, as COCO downloads unpack) or all in ``root/images/``."""
    root = Path(root)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for split in ("train", "val"):
        folder = root / (f"{split}{suffix}" if images == "split" else "images")
        _write_images(ds.split(split), folder)
        document = _coco_document(ds, split, xywh=True)
        (root / "annotations" / f"instances_{split}{suffix}.json").write_text(json.dumps(document))
    return root


def write_voc(ds: SyntheticDetection, root: Path, *, variant: Literal["voc", "kangaroo"] = "voc") -> Path:
    """Pascal VOC. ``variant="voc"``: ``Annotations/``, ``JPEGImages/``, ``ImageSets/Main/{train,val}.txt`` (the
    dataset's own split). ``variant="kangaroo"``: ``annots/`` + ``images/`` without ImageSets (the reader then
    splits by file name, see :func:`voc_default_split`), and every 3rd XML file leaves out ``<size>``."""
    root = Path(root)
    xml_dir, image_dir = (root / "Annotations", root / "JPEGImages") if variant == "voc" else (
        root / "annots", root / "images")
    xml_dir.mkdir(parents=True, exist_ok=True)
    _write_images(ds.images, image_dir)
    for image in ds.images:
        with_size = variant == "voc" or image.id % 3 != 2
        (xml_dir / f"{image.stem}.xml").write_text(voc_xml(image, folder=image_dir.name, with_size=with_size))
    if variant == "voc":
        sets = root / "ImageSets" / "Main"
        sets.mkdir(parents=True, exist_ok=True)
        for split in ("train", "val"):
            (sets / f"{split}.txt").write_text("".join(f"{im.stem}\n" for im in ds.split(split)))
    return root


def voc_xml(image: SyntheticImage, *, folder: str = "JPEGImages", with_size: bool = True) -> str:
    """One VOC annotation file as labelImg writes it; corners 1-based inclusive: ``xmin = x1 + 1``, ``xmax = x2``."""
    size = (f"<size><width>{image.width}</width><height>{image.height}</height><depth>3</depth></size>"
            if with_size else "")
    objects = "".join(
        f"<object><name>{o.name}</name><pose>Unspecified</pose><truncated>0</truncated>"
        f"<difficult>{int(o.difficult)}</difficult><bndbox><xmin>{o.box[0] + 1}</xmin><ymin>{o.box[1] + 1}</ymin>"
        f"<xmax>{o.box[2]}</xmax><ymax>{o.box[3]}</ymax></bndbox></object>"
        for o in image.objects
    )
    return (f"<annotation><folder>{folder}</folder><filename>{image.file_name}</filename>"
            f"<path>/home/someone/data/{folder}/{image.file_name}</path><source><database>Unknown</database></source>"
            f"{size}<segmented>0</segmented>{objects}</annotation>\n")


def write_yolo(
    ds: SyntheticDetection,
    root: Path,
    *,
    names: Literal["list", "dict"] = "list",
    val: Literal["dir", "txt"] = "dir",
) -> Path:
    """Ultralytics YOLO: ``root/data.yaml``, ``root/images/{split}/``, ``root/labels/{split}/<stem>.txt`` with
    ``label cx cy w h`` normalised (6 decimals; an image without objects gets an empty file). ``names`` as a list
    or an ``{id: name}`` mapping; ``val="txt"`` lists the val images in ``root/val.txt`` (``./images/val/...``)."""
    root = Path(root)
    for split in ("train", "val"):
        _write_images(ds.split(split), root / "images" / split)
        labels = root / "labels" / split
        labels.mkdir(parents=True, exist_ok=True)
        for image in ds.split(split):
            (labels / f"{image.stem}.txt").write_text("".join(yolo_line(o, image) + "\n" for o in image.objects))
    if val == "txt":
        (root / "val.txt").write_text("".join(f"./images/val/{im.file_name}\n" for im in ds.val))
    data = {"path": ".", "train": "images/train", "val": "val.txt" if val == "txt" else "images/val",
            "nc": len(NAMES), "names": list(NAMES) if names == "list" else dict(enumerate(NAMES))}
    (root / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return root


def yolo_line(obj: SyntheticObject, image: SyntheticImage) -> str:
    x1, y1, x2, y2 = obj.box
    w, h = image.width, image.height
    return f"{obj.label} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}"


# ------------------------------------------------------------------------------------------------ internals


def _write_images(images, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for image in images:
        (folder / image.file_name).write_bytes(image.data)


def _coco_document(ds: SyntheticDetection, split: str, *, xywh: bool) -> dict:
    images, annotations = [], []
    next_id = sum(len(im.objects) for im in ds.images if im.split == "train") if split == "val" else 0
    for image in ds.split(split):
        images.append({"id": image.id, "file_name": image.file_name, "width": image.width, "height": image.height})
        for obj in image.objects:
            x1, y1, x2, y2 = obj.box
            annotations.append({"id": next_id, "image_id": image.id, "category_id": obj.category_id,
                                "bbox": [x1, y1, x2 - x1, y2 - y1] if xywh else [x1, y1, x2, y2],
                                "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
            next_id += 1
    categories = [{"id": cat_id, "name": CATEGORIES[cat_id], "supercategory": "shape"} for cat_id in CATEGORY_IDS]
    return {"images": images, "annotations": annotations, "categories": categories}


def _place_objects(
    rng: np.random.Generator, width: int, height: int, count: int, first_class: int
) -> list[SyntheticObject]:
    """Up to ``count`` objects with IoU <= 0.1 between any two, at least 2 px from the border; the first one
    (always placed) of class ``first_class``."""
    placed: list[SyntheticObject] = []
    for k in range(count):
        for _ in range(30):
            cat_id = first_class if k == 0 else CATEGORY_IDS[int(rng.integers(len(CATEGORY_IDS)))]
            side = int(rng.integers(12, min(28, width // 2, height // 2) + 1))
            w, h = (side, max(5, side // 3)) if CATEGORIES[cat_id] == "bar" else (side, side)
            x1, y1 = int(rng.integers(2, width - w - 1)), int(rng.integers(2, height - h - 1))
            box = (x1, y1, x1 + w, y1 + h)
            if all(_iou(box, other.box) <= 0.1 for other in placed):
                placed.append(SyntheticObject(cat_id, box))
                break
    return placed


def _iou(a, b) -> float:
    iw = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _draw(rng: np.random.Generator, width: int, height: int, objects) -> Image.Image:
    """Light background, each object's shape filling its box (pixel columns ``x1 .. x2 - 1``)."""
    background = tuple(int(v) for v in rng.integers(190, 246, size=3))
    canvas = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(canvas)
    for obj in objects:
        x1, y1, x2, y2 = obj.box
        r, b = x2 - 1, y2 - 1  # PIL's inclusive right and bottom edges
        colour, name = COLOURS[obj.category_id], obj.name
        cx, cy = (x1 + r) / 2, (y1 + b) / 2
        if name in ("bar", "square"):
            draw.rectangle([x1, y1, r, b], fill=colour)
        elif name == "circle":
            draw.ellipse([x1, y1, r, b], fill=colour)
        elif name == "ring":
            draw.ellipse([x1, y1, r, b], outline=colour, width=3)
        elif name == "cross":
            t = max(2, (x2 - x1) // 3)
            draw.rectangle([x1, round(cy - t / 2), r, round(cy + t / 2)], fill=colour)
            draw.rectangle([round(cx - t / 2), y1, round(cx + t / 2), b], fill=colour)
        elif name == "diamond":
            draw.polygon([(cx, y1), (r, cy), (cx, b), (x1, cy)], fill=colour)
        else:
            draw.polygon([(cx, y1), (r, b), (x1, b)], fill=colour)
    return canvas


def _encode(canvas: Image.Image, kind: str) -> tuple[bytes, np.ndarray]:
    """The file bytes of ``canvas`` stored as ``kind``, and the upright RGB pixels reading it must give."""
    buffer = io.BytesIO()
    rgb = np.asarray(canvas)
    if kind == "png":
        canvas.save(buffer, "PNG")
        expected = rgb
    elif kind == "gray_jpeg":
        canvas.convert("L").save(buffer, "JPEG", quality=95)
        expected = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    elif kind == "rgba_png":
        alpha = np.full(rgb.shape[:2], 255, dtype=np.uint8)
        alpha[:HALF_ROWS] = 128
        alpha[:, :TRANSPARENT_COLUMNS] = 0
        stored = rgb.copy()
        stored[:, :TRANSPARENT_COLUMNS] = 255  # colour under fully transparent pixels: invisible, so arbitrary
        Image.fromarray(np.dstack([stored, alpha]), "RGBA").save(buffer, "PNG")
        expected = ((stored.astype(np.uint16) * alpha[..., None] + 127) // 255).astype(np.uint8)
    elif kind == "palette_png":
        palette = canvas.quantize(colors=32)
        palette.save(buffer, "PNG")
        expected = np.asarray(palette.convert("RGB"))
    elif kind == "gray16_png":
        gray = np.asarray(canvas.convert("L")).astype(np.uint16)
        rows, cols = np.indices(gray.shape)
        # v = 257 * g + small offset: 8-bit g scaled to 16 bits, with low bits that proper scaling rounds away
        Image.fromarray(gray * 257 + ((rows + cols) % 100).astype(np.uint16)).save(buffer, "PNG")
        expected = np.repeat(gray.astype(np.uint8)[..., None], 3, axis=2)
    elif kind in _STORED:
        tag, turn = _STORED[kind]
        exif = Image.Exif()
        exif[0x0112] = tag
        canvas.transpose(turn).save(buffer, "JPEG", quality=95, exif=exif.tobytes())
        expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(buffer.getvalue()))).convert("RGB"))
    else:
        raise ValueError(f"unknown image kind {kind!r}")
    return buffer.getvalue(), np.ascontiguousarray(expected)
