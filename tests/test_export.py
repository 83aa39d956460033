"""`loclab export`: ONNX files run in onnxruntime and TorchScript files in torch give loclab's own predictions.

The models are randomly initialised (their outputs are what a trained model's would be for these checks: dense
candidate boxes, so NMS has work to do) and loclab's predictions come from the fp32 path the graphs compute on.
"""

import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from loclab.cli import main
from loclab.config import DetectorConfig, KeypointConfig, TrainConfig, to_dict
from loclab.engine import detection, keypoints
from loclab.engine.checkpoint import CheckpointError, save_checkpoint
from loclab.engine.precision import resolve_numeric_path
from loclab.errors import ConfigError
from loclab.export.dependencies import ExportDependencyError
from loclab.export.files import export_weights
from loclab.export.runtime import is_exported_file, load_exported

FP32 = resolve_numeric_path("fp32")
FP32_TRAIN = TrainConfig(precision="fp32")  # loclab predict then runs the fp32 path, as the exported graphs do
BOX_TOLERANCE = 1e-3  # px
KEYPOINT_TOLERANCE = 1e-3  # px


def _uint8_images(shape, seed=0):
    return torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


# ------------------------------------------------------------------------------------------------------- detector

# Fewer candidates than the default 1000 / 100 keep each test to seconds; the fixed-shape postprocessing is checked
# bit for bit at the defaults in test_postprocess_padded.py.
_POSTPROCESS = dict(pre_nms_top_k=300, max_detections=40, train=FP32_TRAIN)
DETECTORS = {
    # the course architecture, three classes, square anchors at 64 px
    "reference": DetectorConfig(model="reference", image_size=64, num_classes=3, class_names=("a", "b", "c"),
                                anchor_sizes=((8.0, 12.0, 16.0), (24.0, 32.0, 48.0), (48.0, 64.0, 96.0)),
                                **_POSTPROCESS),
    # loclab's architecture, one class, rectangular (fitted-style) anchors at 96 px
    "loclab": DetectorConfig(model="loclab", image_size=96, num_classes=1, class_names=("kangaroo",),
                             anchor_sizes=((10.0, 14.0, 20.0), (28.0, 36.0, 48.0), (56.0, 70.0, 90.0)),
                             anchor_ratios=((0.5, 1.0, 2.0), (0.7, 1.0, 1.4), (0.6, 1.0, 1.6)), **_POSTPROCESS),
    # the CSP architecture (heads at strides 8, 16, 32), two classes, trained with the grid loss
    "csp": DetectorConfig(model="csp", loss="grid", image_size=128, num_classes=2, class_names=("a", "b"),
                          anchor_sizes=((12.0, 16.0, 24.0), (32.0, 40.0, 56.0), (64.0, 80.0, 110.0)), **_POSTPROCESS),
}


def _calibrate_batchnorm(model, size):
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average: one batch sets the statistics
    model.train()
    with torch.no_grad():
        model(_uint8_images((4, 3, size, size)).float() / 255)
    model.eval()


@pytest.fixture(scope="module")
def detector_runs(tmp_path_factory):
    """name -> (run directory with best_model.pth, model, config), built on first use."""
    runs = {}

    def get(name):
        if name not in runs:
            cfg = DETECTORS[name]
            torch.manual_seed(0)
            model = detection.make_model(cfg).eval()
            if name in ("loclab", "csp"):  # their 1 % objectness prior leaves few boxes above the score threshold
                for head in model.heads:
                    head.out.bias.data.zero_()
            if name == "csp":  # BatchNorm statistics of real activations, else its deep eval-mode outputs vanish
                _calibrate_batchnorm(model, cfg.image_size)
            run = tmp_path_factory.mktemp(f"detector-{name}")
            save_checkpoint(run / "best_model.pth", {"task": "detector", "config": to_dict(cfg),
                                                     "model": model.state_dict()})
            runs[name] = (run, model, cfg)
        return runs[name]

    return get


@pytest.fixture
def detector_run(detector_runs):
    return detector_runs("reference")


def _assert_same_detections(got, expected):
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert len(g.boxes) == len(e.boxes) > 0
        assert (g.boxes - e.boxes).abs().max() <= BOX_TOLERANCE
        assert torch.equal(g.labels, e.labels)
        assert (g.scores - e.scores).abs().max() <= 1e-5


@pytest.mark.parametrize("name, fmt, options, outputs", [  # each architecture in both formats, both outputs
    ("reference", "onnx", dict(dynamic_batch=True), "decoded"),
    ("reference", "torchscript", {}, "decoded"),
    ("reference", "onnx", dict(batch=2), "raw"),  # three images: a full batch, then one padded with a blank image
    ("loclab", "onnx", dict(batch=2), "decoded"),
    ("loclab", "torchscript", {}, "raw"),
    ("csp", "onnx", dict(dynamic_batch=True), "decoded"),
])
def test_exported_detector_matches_loclab(detector_runs, name, fmt, options, outputs):
    run, model, cfg = detector_runs(name)
    path = export_weights(run / "best_model.pth", fmt, run / f"model-{outputs}-{len(options)}.{fmt}", outputs=outputs,
                          **options)
    images = _uint8_images((3, 3, cfg.image_size, cfg.image_size))
    expected = detection.predict_images(model, cfg, images, numeric=FP32)
    exported = load_exported(path, task="detector")
    assert exported.outputs == outputs and exported.config == cfg
    got = exported.detect(images)
    _assert_same_detections(got, expected)
    assert [len(d.boxes) for d in got] == [cfg.max_detections] * 3  # NMS ran, then the cut at max_detections
    # a higher threshold at prediction time is a filter of the same detections
    high = detection.predict_images(model, cfg, images, numeric=FP32, score_threshold=0.3)
    _assert_same_detections(exported.detect(images, score_threshold=0.3), high)


def test_onnx_batch_dimension_is_fixed_or_free(detector_run):
    run, _, cfg = detector_run
    fixed = onnx.load(export_weights(run / "best_model.pth", "onnx", run / "fixed.onnx", batch=2))
    free = onnx.load(export_weights(run / "best_model.pth", "onnx", run / "free.onnx", dynamic_batch=True))
    dims = [[d.dim_value or d.dim_param for d in m.graph.input[0].type.tensor_type.shape.dim] for m in (fixed, free)]
    assert dims == [[2, 3, cfg.image_size, cfg.image_size], ["batch", 3, cfg.image_size, cfg.image_size]]
    assert fixed.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    meta = {p.key: p.value for p in free.metadata_props}
    assert meta["task"] == "detector" and meta["outputs"] == "decoded"
    assert json.loads(meta["class_names"]) == list(cfg.class_names)
    assert json.loads(meta["input"])["shape"] == ["batch", 3, cfg.image_size, cfg.image_size]
    assert [o.name for o in free.graph.output] == ["detections", "num_detections"] == json.loads(meta["output_names"])


def test_raw_metadata_rebuilds_the_anchors(detector_run):
    """The compact anchor description in a raw export's metadata gives exactly loclab's anchors."""
    run, _, cfg = detector_run
    path = export_weights(run / "best_model.pth", "onnx", run / "raw.onnx", outputs="raw")
    grid = json.loads({p.key: p.value for p in onnx.load(path).metadata_props}["anchors"])
    rebuilt = []
    for scale in grid["scales"]:
        centres = (torch.arange(scale["size"], dtype=torch.float64) + 0.5) * scale["stride"]
        cy, cx = torch.meshgrid(centres, centres, indexing="ij")
        wh = torch.tensor(scale["wh"], dtype=torch.float64)
        centre = torch.stack((cx, cy), dim=-1)[:, :, None, :]  # [H, W, 1, 2], anchors ordered (i, j, a)
        rebuilt.append(torch.cat((centre - wh / 2, centre + wh / 2), dim=-1).reshape(-1, 4))
    expected = detection.AnchorSetup.from_config(cfg).anchors
    torch.testing.assert_close(torch.cat(rebuilt).float(), expected, rtol=0, atol=1e-4)
    assert grid["box_variances"] == list(cfg.box_variances)


# ------------------------------------------------------------------------------------------------------ keypoints

KEYPOINT_MODELS = {
    # non-square RGB input, MSE heatmaps (raw logits: the decoder falls back to the argmax cell)
    "heatmap": KeypointConfig(model="heatmap", input_width=64, input_height=48, in_channels=3, num_keypoints=4,
                              keypoint_names=("nose", "tail", "left_paw", "right_paw"), train=FP32_TRAIN),
    # the reference's gray square input, spatial softmax heatmaps (positive: the sub-pixel parabola applies)
    "heatmap-spatial-ce": KeypointConfig(model="heatmap", image_size=64, heatmap_size=32, loss="spatial_ce",
                                         train=FP32_TRAIN),
    "regression": KeypointConfig(model="regression", input_width=48, input_height=64, in_channels=3,
                                 num_keypoints=3, train=FP32_TRAIN),
    "integral": KeypointConfig(model="integral", image_size=64, heatmap_size=32, train=FP32_TRAIN),
    "spatial_regression": KeypointConfig(model="spatial_regression", input_width=64, input_height=32,
                                         train=FP32_TRAIN),
}


@pytest.fixture(scope="module")
def keypoint_runs(tmp_path_factory):
    runs = {}
    for name, cfg in KEYPOINT_MODELS.items():
        torch.manual_seed(1)
        model = keypoints.make_model(cfg).eval()
        run = tmp_path_factory.mktemp(f"keypoints-{name}")
        save_checkpoint(run / "model.pth", {"task": "keypoints", "config": to_dict(cfg), "model": model.state_dict()})
        runs[name] = (run, model, cfg)
    return runs


@pytest.mark.parametrize("name", sorted(KEYPOINT_MODELS))
@pytest.mark.parametrize("fmt, options, outputs", [
    ("onnx", dict(dynamic_batch=True), "decoded"),
    ("onnx", dict(batch=2), "raw"),
    ("torchscript", {}, "decoded"),
])
def test_exported_keypoint_model_matches_loclab(keypoint_runs, name, fmt, options, outputs):
    run, model, cfg = keypoint_runs[name]
    path = export_weights(run / "model.pth", fmt, run / f"model-{outputs}.{fmt}", outputs=outputs, **options)
    width, height = cfg.input_size
    images = _uint8_images((3, cfg.in_channels, height, width), seed=2)
    expected = keypoints.predict_keypoints(model, cfg, images, numeric=FP32)
    got = load_exported(path, task="keypoints").keypoints(images)
    assert got.shape == expected.shape == (3, cfg.num_keypoints, 2)
    assert (got - expected).abs().max() <= KEYPOINT_TOLERANCE


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_decoded_keypoint_graph_returns_heatmap_peaks_as_scores(keypoint_runs):
    run, model, cfg = keypoint_runs["heatmap-spatial-ce"]
    path = export_weights(run / "model.pth", "torchscript", run / "scores.pt")
    module = torch.jit.load(str(path))
    images = _uint8_images((2, 1, 64, 64), seed=3)
    coords, scores = module(images)
    with torch.no_grad():
        maps = keypoints.as_heatmaps(model(images.float() / 255), cfg)
    torch.testing.assert_close(scores, maps.flatten(2).max(dim=-1).values)
    assert coords.shape == (2, cfg.num_keypoints, 2)


# ----------------------------------------------------------------------------------------- loclab predict, the CLI

def _write_photos(folder, sizes, mode="RGB"):
    paths = []
    for k, (w, h) in enumerate(sizes):
        pixels = np.asarray(_uint8_images((h, w, 3), seed=10 + k))
        image = Image.fromarray(pixels)
        path = folder / f"photo{k}.png"
        (image.convert(mode) if mode != "RGB" else image).save(path)
        paths.append(path)
    return paths


def test_predict_detector_runs_exported_files_through_the_letterbox(detector_run, tmp_path):
    run, _, cfg = detector_run
    photos = _write_photos(tmp_path, [(150, 100), (70, 120), (cfg.image_size, cfg.image_size)])
    assert main(["export", "--weights", str(run / "best_model.pth"), "--format", "onnx", "--dynamic-batch",
                 "--out", str(tmp_path / "detector.onnx")]) == 0
    assert main(["export", "--weights", str(run / "best_model.pth"), "--format", "torchscript"]) == 0
    assert is_exported_file(run / "best_model.torchscript.pt") and not is_exported_file(run / "best_model.pth")
    results = {}
    for name, weights in [("pth", run / "best_model.pth"), ("onnx", tmp_path / "detector.onnx"),
                          ("torchscript", run / "best_model.torchscript.pt")]:
        args = ["predict", "detector", "--weights", str(weights), *map(str, photos), "--out", str(tmp_path / name),
                "--threshold", "0.2"]
        assert main(args) == 0
        results[name] = json.loads((tmp_path / name / "detections.json").read_text())["images"]
    for name in ("onnx", "torchscript"):
        for ours, theirs in zip(results["pth"], results[name]):
            assert (ours["width"], ours["height"]) == (theirs["width"], theirs["height"])
            assert len(ours["detections"]) == len(theirs["detections"]) > 0
            for a, b in zip(ours["detections"], theirs["detections"]):
                assert a["category"] == b["category"]
                # the JSON rounds boxes to 0.01 px, so a 1e-3 px difference can move the last digit
                assert np.abs(np.subtract(a["bbox"], b["bbox"])).max() <= 0.01 + 1e-9


def test_predict_keypoints_runs_exported_files_through_the_crop(keypoint_runs, tmp_path):
    run, _, cfg = keypoint_runs["heatmap"]
    photos = _write_photos(tmp_path, [(100, 70), (40, 90)])
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"images": [
        {"file": str(photos[0]), "detections": [{"bbox": [10, 5, 60, 50], "score": 0.9},
                                                {"bbox": [50, 20, 95, 68], "score": 0.8}]},
        {"file": str(photos[1]), "detections": [{"bbox": [3, 10, 35, 80], "score": 0.7}]}]}))
    onnx_path = export_weights(run / "model.pth", "onnx", tmp_path / "pose.onnx", batch=1)
    results = {}
    for name, weights in [("pth", run / "model.pth"), ("onnx", onnx_path)]:
        assert main(["predict", "keypoints", "--weights", str(weights), *map(str, photos), "--boxes", str(boxes),
                     "--out", str(tmp_path / name)]) == 0
        results[name] = json.loads((tmp_path / name / "keypoints.json").read_text())
    assert results["onnx"]["keypoint_names"] == list(cfg.keypoint_names)
    ours = [i["keypoints"] for image in results["pth"]["images"] for i in image["instances"]]
    theirs = [i["keypoints"] for image in results["onnx"]["images"] for i in image["instances"]]
    assert len(ours) == len(theirs) == 3
    for a, b in zip(ours, theirs):
        assert a.keys() == b.keys()
        assert max(abs(a[k][d] - b[k][d]) for k in a for d in (0, 1)) <= 0.01 + 1e-9


# ------------------------------------------------------------------------------------------------------ bad input

def test_a_threshold_below_the_baked_one_is_refused(detector_run, tmp_path):
    run, _, cfg = detector_run
    exported = load_exported(export_weights(run / "best_model.pth", "torchscript", tmp_path / "m.pt"))
    images = _uint8_images((1, 3, cfg.image_size, cfg.image_size))
    with pytest.raises(ConfigError, match="--raw"):
        exported.detect(images, score_threshold=cfg.score_threshold / 2)


def test_wrong_task_and_foreign_files_are_refused(keypoint_runs, tmp_path):
    run, *_ = keypoint_runs["regression"]
    path = export_weights(run / "model.pth", "onnx", tmp_path / "pose.onnx")
    code = main(["predict", "detector", "--weights", str(path), str(tmp_path / "x.png")])
    assert code == 2
    with pytest.raises(CheckpointError, match="expected a 'detector' model"):
        load_exported(path, task="detector")
    foreign = tmp_path / "foreign.onnx"
    model = onnx.load(path)
    del model.metadata_props[:]
    foreign.write_bytes(model.SerializeToString())
    with pytest.raises(CheckpointError, match="not a loclab export"):
        load_exported(foreign)


def test_torchscript_has_no_fixed_batch(keypoint_runs, tmp_path):
    run, *_ = keypoint_runs["regression"]
    with pytest.raises(ConfigError, match="any batch size"):
        export_weights(run / "model.pth", "torchscript", tmp_path / "m.pt", batch=4)


def test_loclab_imports_no_onnx_package_until_an_onnx_file_is_used():
    """`make run` installs loclab without the export extra: nothing outside ONNX export and inference needs it."""
    code = ("import sys, loclab.cli, loclab.predict, loclab.export.files, loclab.export.runtime; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('onnx', 'onnxruntime', 'onnxscript')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_missing_onnx_packages_name_the_extra(keypoint_runs, tmp_path, monkeypatch, capsys):
    run, *_ = keypoint_runs["regression"]
    path = export_weights(run / "model.pth", "onnx", tmp_path / "pose.onnx")
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` now raises ImportError
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    code = main(["export", "--weights", str(run / "model.pth"), "--format", "onnx", "--out", str(tmp_path / "b.onnx")])
    err = capsys.readouterr().err
    assert code == 2 and "loclab[export]" in err and "Traceback" not in err
    with pytest.raises(ExportDependencyError, match=r"loclab\[export\]"):
        load_exported(path)
    # TorchScript needs neither
    assert load_exported(export_weights(run / "model.pth", "torchscript", tmp_path / "m.pt")).task == "keypoints"


def test_exporting_a_file_that_is_no_checkpoint_is_a_checkpoint_error(tmp_path):
    (tmp_path / "notes.pth").write_text("not a checkpoint")
    with pytest.raises(CheckpointError):
        export_weights(tmp_path / "notes.pth", "onnx")
    with pytest.raises(ConfigError, match="unknown export format"):
        export_weights(tmp_path / "notes.pth", "tflite")
