"""``loclab export``: a trained checkpoint -> one self-describing ONNX or TorchScript file.

Both formats trace :mod:`loclab.export.graphs` once. ONNX goes through PyTorch's TorchScript-based exporter
(``torch.onnx.export(..., dynamo=False)``), which needs no package beyond torch to write the graph and turns the
scripted NMS fixed-point loop into an ONNX ``Loop``. The ``torch.export``-based exporter (PyTorch's default since
2.9) would add ``onnxscript`` to the dependencies and cannot take a TorchScript function; the loop would have to be
rewritten for it. The ``onnx`` package then adds the metadata (:mod:`loclab.export.metadata`) and checks the
model. Files are written atomically (:mod:`loclab.atomic`).
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from loclab.atomic import atomic_write_bytes
from loclab.config import DetectorConfig, KeypointConfig
from loclab.engine.checkpoint import load_checkpoint
from loclab.engine.detection import load_detector
from loclab.engine.keypoints import load_keypoint_model
from loclab.errors import ConfigError
from loclab.export.dependencies import import_onnx
from loclab.export.graphs import INPUT_NAME, OUTPUTS, build_graph, example_input, input_shape
from loclab.export.metadata import TORCHSCRIPT_EXTRA_FILE, describe

FORMATS = ("onnx", "torchscript")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
ONNX_OPSET = 17  # has every op the graphs use (Loop, TopK smallest-first, ...); onnxruntime runs it everywhere


def default_output(weights: Path, fmt: str) -> Path:
    """``RUN/best_model.pth`` -> ``RUN/best_model.onnx`` or ``RUN/best_model.torchscript.pt``."""
    return Path(weights).with_name(Path(weights).stem + SUFFIXES[fmt])


def export_weights(weights: Path, fmt: str, out: Path | None = None, *, outputs: str = "decoded",
                   batch: int | None = None, dynamic_batch: bool = False) -> Path:
    """Export the model of a loclab checkpoint (detector or keypoints) to ``out``; returns the path written.

    Args:
        weights: a checkpoint ``loclab train`` wrote (``best_model.pth``, ``heatmap_model.pth``, ``last.pth``, ...).
        fmt: ``"onnx"`` or ``"torchscript"``.
        out: the file to write; default :func:`default_output`.
        outputs: ``"decoded"`` (boxes after NMS, or keypoints) or ``"raw"`` (the model's own outputs).
        batch: ONNX only: the fixed batch size of the graph (default 1). TorchScript files take any batch.
        dynamic_batch: ONNX only: the batch dimension is left free (``batch`` is then only the tracing batch).
    """
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if outputs not in OUTPUTS:
        raise ConfigError(f"unknown export outputs {outputs!r}; choose one of {', '.join(OUTPUTS)}")
    if fmt == "torchscript" and (batch is not None or dynamic_batch):
        raise ConfigError("TorchScript files take any batch size; the batch options apply to ONNX export only")
    if batch is not None and batch < 1:
        raise ConfigError(f"the export batch size must be at least 1, got {batch}")
    model, cfg = _load(weights)
    graph = build_graph(model, cfg, outputs)
    out = Path(out) if out is not None else default_output(weights, fmt)
    example = example_input(cfg, batch or 1)
    free_batch = dynamic_batch or fmt == "torchscript"
    shape = ("batch", *input_shape(cfg, 1)[1:]) if free_batch else input_shape(cfg, batch or 1)
    meta = describe(cfg, outputs=outputs, output_names=graph.output_names, input_shape=shape)
    if fmt == "onnx":
        _write_onnx(graph, example, out, meta, dynamic_batch)
    else:
        _write_torchscript(graph, example, out, meta)
    return out


def _load(weights: Path) -> tuple[nn.Module, DetectorConfig | KeypointConfig]:
    task = load_checkpoint(weights).get("task")
    if task == "detector":
        return load_detector(weights)
    if task == "keypoints":
        return load_keypoint_model(weights)
    raise ConfigError(f"{weights}: holds a {task!r} model; loclab exports detector and keypoint models")


@contextlib.contextmanager
def _quiet_tracing() -> Iterator[None]:
    """Silence what tracing says about TorchScript's deprecation and about Python values frozen into the graph:
    the graphs freeze only shapes that the config fixes, and the tests run exports at two batch sizes against
    loclab's own predictions."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*(ONNX|onnx).*", category=UserWarning)
        yield


def _write_torchscript(graph: nn.Module, example: torch.Tensor, out: Path, meta: dict[str, str]) -> None:
    buffer = io.BytesIO()
    with _quiet_tracing(), torch.no_grad():
        traced = torch.jit.trace(graph, (example,), check_trace=False)
        torch.jit.save(traced, buffer, _extra_files={TORCHSCRIPT_EXTRA_FILE: json.dumps(meta)})
    atomic_write_bytes(out, lambda f: f.write(buffer.getvalue()))


def _write_onnx(graph: nn.Module, example: torch.Tensor, out: Path, meta: dict[str, str], dynamic_batch: bool) -> None:
    onnx = import_onnx()
    names = graph.output_names
    axes = {name: {0: "batch"} for name in (INPUT_NAME, *names)} if dynamic_batch else None
    with _quiet_tracing(), torch.no_grad(), tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "graph.onnx"
        torch.onnx.export(graph, (example,), str(path), dynamo=False, input_names=[INPUT_NAME],
                          output_names=list(names), dynamic_axes=axes, opset_version=ONNX_OPSET)
        proto = onnx.load(str(path))
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "loclab"
    onnx.checker.check_model(proto)
    atomic_write_bytes(out, lambda f: f.write(proto.SerializeToString()))
