"""What an exported file says about itself: string keys and JSON values, the same in both formats.

ONNX files keep them in the model's ``metadata_props`` (``onnxruntime``: ``session.get_modelmeta().
custom_metadata_map``); TorchScript files keep one JSON object in the extra file ``loclab.json``
(``torch.jit.load(path, _extra_files={"loclab.json": ""})``). docs/export.md lists the keys.
"""

from __future__ import annotations

import json
from typing import Any

from loclab.config import DetectorConfig, KeypointConfig, from_dict, to_dict
from loclab.engine.checkpoint import CheckpointError
from loclab.engine.detection import class_names
from loclab.engine.keypoints import keypoint_names, output_type

EXPORT_FORMAT = "loclab-export/1"
TORCHSCRIPT_EXTRA_FILE = "loclab.json"
TASKS = {"detector": DetectorConfig, "keypoints": KeypointConfig}


def describe(cfg: DetectorConfig | KeypointConfig, *, outputs: str, output_names: tuple[str, ...],
             input_shape: tuple[int | str, ...]) -> dict[str, str]:
    """The metadata of an export of ``cfg``'s model: every value a string (JSON for anything structured)."""
    task = "detector" if isinstance(cfg, DetectorConfig) else "keypoints"
    channels = "RGB" if input_shape[1] == 3 else "gray"
    meta = {
        "loclab_format": EXPORT_FORMAT,
        "task": task,
        "outputs": outputs,
        "output_names": json.dumps(list(output_names)),
        "input": json.dumps({"name": "images", "shape": list(input_shape), "dtype": "uint8", "channels": channels,
                             "layout": "NCHW", "range": "0-255, divided by 255 inside the graph",
                             "frame": _frame(cfg)}),
        "config": json.dumps(to_dict(cfg)),
    }
    if isinstance(cfg, DetectorConfig):
        meta["class_names"] = json.dumps(list(class_names(cfg)))
        meta["anchors"] = json.dumps(anchor_grid(cfg))
    else:
        meta["keypoint_names"] = json.dumps(list(keypoint_names(cfg)))
        meta["model_output"] = output_type(cfg)
    return meta


def _frame(cfg: DetectorConfig | KeypointConfig) -> str:
    if isinstance(cfg, DetectorConfig):
        return (f"the image letterboxed to {cfg.image_size}x{cfg.image_size} (resized with its aspect kept, "
                "padded with grey 114); outputs are in these pixels")
    width, height = cfg.input_size
    return f"an instance crop of {width}x{height} (aspect kept); outputs are in these pixels"


def anchor_grid(cfg: DetectorConfig) -> dict[str, Any]:
    """The anchors of a raw detector export, compactly: per scale its grid, stride and anchor shapes.

    Anchor ``k = (i * size + j) * A + a`` of a scale (row ``i``, column ``j``) is centred at ``((j + 0.5) *
    stride, (i + 0.5) * stride)`` with width and height ``wh[a]``; scales follow each other in the prediction
    rows. ``box_variances`` decode the offsets (docs/detection.md).
    """
    ratios = cfg.anchor_ratios or tuple((1.0,) * len(sizes) for sizes in cfg.anchor_sizes)
    scales = []
    for size, sides, rs in zip(cfg.feature_map_sizes, cfg.anchor_sizes, ratios):
        scales.append({"size": size, "stride": cfg.image_size / size,
                       "wh": [[side * r ** 0.5, side / r ** 0.5] for side, r in zip(sides, rs)]})
    return {"scales": scales, "box_variances": list(cfg.box_variances), "image_size": cfg.image_size}


def read_config(meta: dict[str, str], where: str) -> tuple[str, str, DetectorConfig | KeypointConfig]:
    """``(task, outputs, config)`` from an exported file's metadata; :class:`CheckpointError` if it is not
    loclab's."""
    if meta.get("loclab_format") != EXPORT_FORMAT:
        raise CheckpointError(f"{where}: not a loclab export (no loclab_format {EXPORT_FORMAT!r} in its metadata); "
                              "loclab runs exported files it wrote itself (`loclab export`)")
    task, outputs = meta.get("task"), meta.get("outputs")
    if task not in TASKS or outputs not in ("decoded", "raw"):
        raise CheckpointError(f"{where}: metadata names task {task!r} and outputs {outputs!r}, which loclab does "
                              "not know")
    return task, outputs, from_dict(TASKS[task], json.loads(meta["config"]))
