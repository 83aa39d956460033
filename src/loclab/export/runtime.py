"""Running exported files inside loclab: what ``loclab predict --weights MODEL.onnx`` (or a TorchScript file) uses.

:func:`load_exported` reads the file and its metadata (:mod:`loclab.export.metadata`); the returned
:class:`ExportedModel` takes the same uint8 model inputs as loclab's own prediction functions and returns the same
kinds of results, in model-input pixels, so the caller's letterbox / crop and the inverse mapping are the ones used
for native checkpoints. ONNX files run in ``onnxruntime`` on the CPU (an optional package,
:mod:`loclab.export.dependencies`), TorchScript files in torch.
"""

from __future__ import annotations

import json
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from loclab.config import DetectorConfig, KeypointConfig
from loclab.engine.checkpoint import CheckpointError
from loclab.engine.detection import AnchorSetup, decode_predictions
from loclab.engine.keypoints import decode_output
from loclab.errors import ConfigError
from loclab.export.dependencies import import_onnxruntime
from loclab.export.metadata import TORCHSCRIPT_EXTRA_FILE, read_config
from loclab.ops.postprocess import ImageDetections

Runner = Callable[[Tensor], tuple[Tensor, ...]]


def is_exported_file(path: Path) -> bool:
    """Whether ``path`` is an export rather than a loclab checkpoint: an ``.onnx`` file, or a TorchScript archive
    holding loclab's metadata (checkpoints are zip archives too, without it)."""
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        return True
    if not path.is_file() or not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith(f"/extra/{TORCHSCRIPT_EXTRA_FILE}") for name in archive.namelist())


@dataclass(frozen=True)
class ExportedModel:
    """An exported detector or keypoint model, ready to run on uint8 model inputs.

    ``outputs`` is ``"decoded"`` (NMS or the heatmap decode ran inside the file) or ``"raw"`` (loclab decodes the
    model's outputs here, exactly as for a checkpoint).
    """

    path: Path
    task: str
    outputs: str
    config: DetectorConfig | KeypointConfig
    run: Runner

    def detect(self, images: Tensor, *, score_threshold: float | None = None) -> list[ImageDetections]:
        """Detections of ``images`` (uint8 ``[B, 3, S, S]``, letterboxed), in model-input pixels, scoring above
        ``score_threshold`` (default: the run's). ``scales`` are -1 when NMS ran inside the file (it does not
        return which head found a box)."""
        cfg = self._config(DetectorConfig, "detector")
        if self.outputs == "raw":
            (preds,) = self.run(images)
            return decode_predictions(preds.float(), cfg, AnchorSetup.from_config(cfg),
                                      score_threshold=score_threshold)
        if score_threshold is not None and score_threshold < cfg.score_threshold:
            raise ConfigError(f"{self.path}: the file keeps detections scoring above {cfg.score_threshold} (its NMS "
                              f"runs inside the graph), so a threshold of {score_threshold} cannot be applied; export "
                              "with --raw to choose any threshold at prediction time")
        threshold = cfg.score_threshold if score_threshold is None else score_threshold
        detections, counts = self.run(images)
        out = []
        for rows, count in zip(detections, counts.tolist()):
            rows = rows[:count]
            rows = rows[rows[:, 4] > threshold]
            out.append(ImageDetections(boxes=rows[:, :4], scores=rows[:, 4], labels=rows[:, 5].long(),
                                       scales=torch.full((rows.shape[0],), -1, dtype=torch.long)))
        return out

    def keypoints(self, images: Tensor) -> Tensor:
        """Keypoints ``[B, K, 2]`` of ``images`` (uint8 ``[B, C, H, W]`` instance crops) in model-input pixels."""
        cfg = self._config(KeypointConfig, "keypoints")
        (out, *_) = self.run(images)
        return out if self.outputs == "decoded" else decode_output(out.float(), cfg)[0]

    def _config(self, kind: type, task: str):
        if not isinstance(self.config, kind):
            raise CheckpointError(f"{self.path}: holds an exported {self.task!r} model, expected a {task!r} model")
        return self.config


def load_exported(path: Path, task: str | None = None) -> ExportedModel:
    """Open an ONNX or TorchScript file that ``loclab export`` wrote; :class:`CheckpointError` for anything else,
    and for a file of another task than ``task`` (``"detector"`` or ``"keypoints"``) when given."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: exported model not found")
    meta, run = _open_onnx(path) if path.suffix.lower() == ".onnx" else _open_torchscript(path)
    found, outputs, cfg = read_config(meta, str(path))
    if task is not None and found != task:
        raise CheckpointError(f"{path}: holds an exported {found!r} model, expected a {task!r} model")
    return ExportedModel(path=path, task=found, outputs=outputs, config=cfg, run=run)


def _open_torchscript(path: Path) -> tuple[dict[str, str], Runner]:
    extra = {TORCHSCRIPT_EXTRA_FILE: ""}
    try:
        with warnings.catch_warnings():  # TorchScript is deprecated in favour of torch.export; torch is pinned
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except Exception as err:  # noqa: BLE001 - torch raises several types for truncated or foreign archives
        raise CheckpointError(f"{path}: cannot read the TorchScript file ({type(err).__name__}: {err})") from None
    meta = json.loads(extra[TORCHSCRIPT_EXTRA_FILE] or "{}")

    @torch.no_grad()
    def run(images: Tensor) -> tuple[Tensor, ...]:
        return tuple(module(_uint8(images)))

    return meta, run


def _open_onnx(path: Path) -> tuple[dict[str, str], Runner]:
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # the thread count loclab uses everywhere else
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # noqa: BLE001 - onnxruntime raises its own exception types for unreadable models
        raise CheckpointError(f"{path}: cannot load the ONNX file ({type(err).__name__}: {err})") from None
    meta = dict(session.get_modelmeta().custom_metadata_map)
    graph_input = session.get_inputs()[0]
    fixed = graph_input.shape[0] if isinstance(graph_input.shape[0], int) else None

    def run(images: Tensor) -> tuple[Tensor, ...]:
        images = _uint8(images)
        if fixed is None:
            return tuple(torch.from_numpy(o) for o in session.run(None, {graph_input.name: images.numpy()}))
        # A fixed-batch graph takes exactly `fixed` images: run in chunks, the last one padded with blank images.
        parts = []
        for start in range(0, max(images.shape[0], 1), fixed):  # no images: one blank chunk, sliced to none
            chunk = images[start:start + fixed]
            n = chunk.shape[0]
            if n < fixed:
                chunk = torch.cat((chunk, chunk.new_zeros((fixed - n, *chunk.shape[1:]))))
            parts.append([o[:n] for o in session.run(None, {graph_input.name: chunk.numpy()})])
        return tuple(torch.from_numpy(np.concatenate(outs)) for outs in zip(*parts))

    return meta, run


def _uint8(images: Tensor) -> Tensor:
    if images.dtype != torch.uint8:
        raise ValueError(f"exported models take uint8 images, got {images.dtype}")
    return images.contiguous()
