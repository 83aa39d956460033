"""The ``loclab`` command line's grammar: every subcommand, its arguments, their defaults and help.

:func:`build_parser` is all :mod:`loclab.cli` needs from here; what each command does lives there.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from loclab import __version__
from loclab.data.layouts import LAYOUTS
from loclab.engine.logs import TENSORBOARD_SWITCH
from loclab.models.detector import DETECTOR_MODELS
from loclab.models.keypoints import KEYPOINT_MODELS
from loclab.recipes import OWN_DATA_IMAGE_SIZE, OWN_DATA_KEYPOINT_INPUT, PRESETS


def _input_size(text: str) -> tuple[int, int]:
    """``"256x192"`` -> ``(256, 192)``; ``"128"`` -> ``(128, 128)``."""
    parts = text.lower().split("x")
    try:
        size = tuple(int(v) for v in parts)
    except ValueError:
        size = ()
    if len(size) == 1:
        size = (size[0], size[0])
    if len(size) != 2 or min(size) <= 0:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 256x192, got {text!r}")
    return size


def _add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE",
                   help="override any config field, e.g. --set train.optim.lr=1e-3 (repeatable)")


def _add_no_tensorboard(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-tensorboard", action="store_true",
                   help=f"no TensorBoard scalars in RUN/tensorboard/ (as {TENSORBOARD_SWITCH}=0); results.csv is "
                        "always written")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="loclab", description="A lab bench for object-localisation experiments.")
    parser.add_argument("--version", action="version", version=f"loclab {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="raise user errors (bad data, config, checkpoint...) with their traceback")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="generate a synthetic dataset in the reference format")
    gen.add_argument("kind", choices=["shapes", "figures"])
    gen.add_argument("--out", type=Path, required=True, help="dataset root (writes DIR/detection or DIR/keypoints)")
    gen.add_argument("--seed", type=int, default=641)
    gen.add_argument("--train", type=int, default=1000)
    gen.add_argument("--val", type=int, default=200)

    train = sub.add_parser("train", help="train a detector or a keypoint model into a run directory")
    tsub = train.add_subparsers(dest="task", required=True)
    td = tsub.add_parser("detector")
    td.add_argument("--model", choices=list(DETECTOR_MODELS), default=None,
                    help="detector architecture (default: the recipe's, loclab for fast and reference for paper)")
    td.add_argument("--imgsz", type=int, default=None,
                    help=f"square model input side, a multiple of 32; images are letterboxed to it (default: 224 for "
                         f"the reference layout, {OWN_DATA_IMAGE_SIZE} for your own data)")
    td.add_argument("--autoanchor", action="store_true",
                    help="fit the anchors to the training boxes (k-means on their shapes) instead of the defaults")
    tk = tsub.add_parser("keypoints")
    tk.add_argument("--model", choices=list(KEYPOINT_MODELS), default="heatmap", help="keypoint model")
    tk.add_argument("--loss", choices=["mse", "spatial_ce"], default=None,
                    help="heatmap loss: mse (the reports') or spatial_ce (spatial softmax cross-entropy)")
    tk.add_argument("--hand-invariant", action="store_true",
                    help="symmetry-aware training: do not punish the unknowable left/right hand label")
    tk.add_argument("--heatmap-size", type=int, choices=[32, 64, 128], default=None)
    tk.add_argument("--sigma", type=float, default=None)
    tk.add_argument("--no-skip", action="store_true", help="HeatmapNet without skip connections")
    tk.add_argument("--input-size", type=_input_size, default=None, metavar="WxH",
                    help="model input, width x height in pixels, multiples of 16, e.g. 256x192 (or one side for a "
                         "square); each instance box is cropped to it, aspect kept. Default: 128x128 for the reference "
                         f"layout; {OWN_DATA_KEYPOINT_INPUT[0]}x{OWN_DATA_KEYPOINT_INPUT[1]} for your own data, square "
                         "so that neither tall person boxes nor wide full video frames (DeepLabCut) lose more than a "
                         "quarter of it to padding, at the resolution SimpleBaseline uses")
    for p in (td, tk):
        p.add_argument("--data-root", type=Path, required=True)
        p.add_argument("--format", choices=LAYOUTS, default="auto",
                       help="dataset layout (default: detected from the folder, and said)")
        p.add_argument("--recipe", choices=["fast", "paper"], default="fast")
        p.add_argument("--out", type=Path, required=True, help="run directory")
        p.add_argument("--epochs", type=int, default=None)
        p.add_argument("--batch", type=int, default=None, metavar="N",
                       help="images per optimiser step (default: the recipe's); the learning rate follows "
                            "--lr-scaling from the recipe's batch size")
        p.add_argument("--lr-scaling", choices=["none", "linear", "sqrt"], default=None,
                       help="learning rate for another batch size: none (the recipe's lr, the default), linear "
                            "(lr x N / recipe batch) or sqrt (lr x sqrt(N / recipe batch)); warmup is kept")
        p.add_argument("--resume", action="store_true", help="continue from RUN/last.pth")
        p.add_argument("--skip-bad", action="store_true", help="skip bad annotation records with a warning")
        p.add_argument("--quiet", action="store_true", help="no progress bars")
        _add_no_tensorboard(p)
        _add_set(p)

    ev = sub.add_parser("eval", help="evaluate a run, or score any model's predictions")
    esub = ev.add_subparsers(dest="what", required=True)
    ed = esub.add_parser("detector", help="evaluate a trained detector run on its val split")
    ed.add_argument("--run", type=Path, required=True)
    ed.add_argument("--data-root", type=Path, default=None, help="default: the run's own data root")
    eds = esub.add_parser("detections", help="score a detections file against annotations")
    eds.add_argument("--gt", type=Path, required=True)
    eds.add_argument("--pred", "--predictions", dest="pred", type=Path, required=True,
                     help="detections: loclab's xyxy records or COCO results (with --bbox-format xywh)")
    eds.add_argument("--bbox-format", choices=["xyxy", "xywh"], default="xyxy",
                     help="box format of the predictions (xywh = COCO results)")
    eds.add_argument("--match", choices=["coco", "voc"], default="coco",
                     help="matching rule of the VOC numbers: coco (pycocotools: the best free box; default) or voc "
                          "(the VOC devkit: a detection whose best box is taken is a false positive)")
    ek = esub.add_parser("keypoints", help="evaluate a keypoint run, or score a predictions file")
    ek.add_argument("--run", type=Path, default=None)
    ek.add_argument("--gt", type=Path, default=None)
    ek.add_argument("--pred", "--predictions", dest="pred", type=Path, default=None,
                    help="loclab's {image_id, keypoints: [[x, y], ...]} records or COCO keypoint results")
    ek.add_argument("--normalize", default="bbox", metavar="NORM",
                    help="PCK norm: bbox (diagonal of the box around the labelled keypoints; default), torso (stick "
                         "figures), or pair:NAME_A,NAME_B (the distance between two keypoints)")
    ek.add_argument("--data-root", type=Path, default=None)
    for p in (ed, eds, ek):
        p.add_argument("--json", action="store_true", help="print the metrics as JSON on stdout")
        p.add_argument("--quiet", action="store_true")
        p.add_argument("--resamples", type=int, default=1000, metavar="N",
                       help="bootstrap resamples of the images for the 95%% intervals (default 1000; 0: none)")

    ab = sub.add_parser("ablate", help="ablation grids")
    ab.add_argument("what", choices=["anchors", "keypoints"])
    ab.add_argument("--data-root", type=Path, required=True)
    ab.add_argument("--out", type=Path, required=True)
    ab.add_argument("--preset", choices=PRESETS, default="quick")
    ab.add_argument("--epochs", type=int, default=None)
    ab.add_argument("--workers", type=int, default=None, help="trials in parallel (default: from the preset)")
    ab.add_argument("--seeds", type=int, default=None, metavar="N",
                    help="train every trial with N seeds (the configured seed + 0 .. N-1; default: from the preset)")
    ab.add_argument("--engine", choices=["local", "ray"], default="local",
                    help="run trials in local processes, or on Ray Tune (needs loclab[ray]; --workers unused)")
    ab.add_argument("--ray-address", default=None,
                    help="Ray cluster to join, e.g. auto (default: start a local Ray instance)")
    ab.add_argument("--ray-cpus-per-trial", type=int, default=1, metavar="N",
                    help="CPUs Ray reserves for each trial, also its torch threads (default 1)")
    _add_no_tensorboard(ab)
    ab.add_argument("--reuse", type=Path, nargs="+", default=[], metavar="RUN",
                    help="finished runs that stand in for trials of the same config and data (not retrained)")
    _add_set(ab)

    run = sub.add_parser("run", help="run the whole study and write the report")
    run.add_argument("--preset", choices=PRESETS, default="quick")
    run.add_argument("--out", type=Path, required=True)
    run.add_argument("--data-root", type=Path, default=None,
                     help="the course data (generated there when missing or empty), or your own dataset (COCO, "
                          "Pascal VOC, YOLO, DeepLabCut): only the stages of the tasks it holds run")
    run.add_argument("--force", action="store_true", help="re-run stages even if their results exist")
    run.add_argument("--seeds", type=int, default=None, metavar="N",
                     help="train every ablation trial with N seeds (same as --set ablation.seeds=N)")
    _add_no_tensorboard(run)
    _add_set(run)

    rep = sub.add_parser("report", help="rebuild report.md / report.html from a study directory")
    rep.add_argument("dir", type=Path)

    cmp = sub.add_parser("compare", help="runs and studies side by side: differing config, metrics, training time")
    cmp.add_argument("paths", type=Path, nargs="+", metavar="RUN_OR_STUDY",
                     help="run directories (loclab train), studies (loclab run) or ablation grids (loclab ablate)")
    shape = cmp.add_mutually_exclusive_group()
    shape.add_argument("--json", action="store_true", help="print the comparison as JSON")
    shape.add_argument("--md", action="store_true", help="print the comparison as a Markdown table")

    pr = sub.add_parser("predict", help="run a trained model on your own images")
    psub = pr.add_subparsers(dest="task", required=True)
    for name in ("detector", "keypoints"):
        p = psub.add_parser(name)
        p.add_argument("--weights", type=Path, required=True,
                       help="a checkpoint (RUN/best_model.pth), or an ONNX / TorchScript file from `loclab export`")
        p.add_argument("images", type=Path, nargs="+")
        p.add_argument("--out", type=Path, default=Path("predictions"))
        if name == "detector":
            p.add_argument("--threshold", type=float, default=None, help="display/score threshold")
        else:
            p.add_argument("--boxes", type=Path, default=None, metavar="DETECTIONS.json",
                           help="instance boxes from `loclab predict detector` (default: each whole image is one "
                                "instance)")
            p.add_argument("--box-threshold", type=float, default=0.5,
                           help="use detections with at least this score (default 0.5)")

    ex = sub.add_parser("export", help="write a trained model as an ONNX or TorchScript file")
    ex.add_argument("--weights", type=Path, required=True, help="a checkpoint, e.g. RUN/best_model.pth")
    ex.add_argument("--format", choices=["onnx", "torchscript"], required=True)
    ex.add_argument("--out", type=Path, default=None,
                    help="file to write (default: beside the weights, RUN/best_model.onnx or .torchscript.pt)")
    ex.add_argument("--raw", action="store_true",
                    help="return the model's own outputs (detector head outputs, heatmaps or normalised "
                         "coordinates) instead of boxes after NMS or decoded keypoints")
    batch = ex.add_mutually_exclusive_group()
    batch.add_argument("--batch", type=int, default=None, metavar="N",
                       help="ONNX: the graph's fixed batch size (default 1)")
    batch.add_argument("--dynamic-batch", action="store_true", help="ONNX: any batch size at run time")

    anc = sub.add_parser("anchors", help="how well the anchors fit a dataset's boxes; fit new ones")
    anc.add_argument("--data-root", type=Path, required=True)
    anc.add_argument("--format", choices=LAYOUTS, default="auto")
    anc.add_argument("--imgsz", type=int, default=None, help="model input side (default as for train detector)")
    anc.add_argument("--run", type=Path, default=None, help="check the anchors of this run's config instead")
    anc.add_argument("--json", action="store_true")

    bench = sub.add_parser("bench", help="measure speed side by side")
    bench.add_argument("--json", action="store_true")
    bench.add_argument("--quick", action="store_true", help="fewer repetitions")
    bench.add_argument("--no-compile", action="store_true",
                       help="skip the torch.compile column (it compiles 8 graphs, a few minutes on a small CPU)")
    bench.add_argument("--device", default="auto", metavar="DEVICE",
                       help="auto (CUDA when available, else the CPU), cpu, cuda or cuda:N")
    bench.add_argument("--batch", type=int, default=None, metavar="N",
                       help="detector images per timed step, keypoint workloads 2N (default 16 on a CPU, 128 on "
                            "a GPU)")
    return parser
