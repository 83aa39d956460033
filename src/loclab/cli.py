"""``loclab`` command line: parse, build, call the library. Nothing here does math.

Errors a user can cause (bad data, config or checkpoint, unwritable output, diverging training: every
:class:`loclab.errors.LoclabError`, and missing files or permissions) end in one clear paragraph on stderr and
exit code 2; ``loclab --debug ...`` raises them with their traceback instead. Any other exception is a bug and
keeps its traceback.
Ctrl-C exits 130 and says how to resume.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

from dataclasses import replace

from loclab import __version__
from loclab.config import DetectorConfig, KeypointConfig, apply_override, apply_overrides
from loclab.data.layouts import LAYOUTS, detect_layout
from loclab.engine.logs import TENSORBOARD_SWITCH
from loclab.engine.lr_scaling import effective_lr, with_batch_size
from loclab.errors import LoclabError, LoclabWarning
from loclab.models.detector import DETECTOR_MODELS
from loclab.models.keypoints import KEYPOINT_MODELS
from loclab.recipes import (
    OWN_DATA_IMAGE_SIZE,
    OWN_DATA_KEYPOINT_INPUT,
    PRESETS,
    detector_config,
    keypoint_config,
    own_data_detector_config,
    own_data_keypoint_config,
    scaled_anchor_sizes,
)


def _add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE",
                   help="override any config field, e.g. --set train.optim.lr=1e-3 (repeatable)")


def _add_no_tensorboard(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-tensorboard", action="store_true",
                   help=f"no TensorBoard scalars in RUN/tensorboard/ (as {TENSORBOARD_SWITCH}=0); results.csv is "
                        "always written")


def _parser() -> argparse.ArgumentParser:
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


def _detector_config(args, layout: str) -> DetectorConfig:
    if layout == "reference":
        cfg = detector_config(args.recipe)
        if args.imgsz:
            cfg = replace(cfg, image_size=args.imgsz, anchor_sizes=scaled_anchor_sizes(args.imgsz))
    else:
        cfg = own_data_detector_config(args.recipe, args.imgsz or OWN_DATA_IMAGE_SIZE)
    if args.model:
        cfg = apply_override(cfg, f"model={args.model}")
    if args.epochs:
        cfg = apply_override(cfg, f"train.epochs={args.epochs}")
        cfg = apply_override(cfg, "train.steps=0")
    cfg = replace(cfg, train=with_batch_size(cfg.train, args.batch, args.lr_scaling))
    return _checked(apply_overrides(cfg, args.overrides))


def _checked(cfg):
    """``cfg`` once its learning rate resolves (:func:`effective_lr`): a bad batch-size rule fails before any data
    is read."""
    effective_lr(cfg.train)
    return cfg


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


def _keypoint_config(args, layout: str = "reference") -> KeypointConfig:
    if layout == "reference":
        cfg = keypoint_config(args.model, args.recipe)
        if args.input_size:
            cfg = replace(cfg, input_width=args.input_size[0], input_height=args.input_size[1])
    else:
        cfg = own_data_keypoint_config(args.model, args.recipe, args.input_size or OWN_DATA_KEYPOINT_INPUT)
    if args.loss:
        cfg = apply_override(cfg, f"loss={args.loss}")
    if args.hand_invariant:
        cfg = apply_override(cfg, "hand_invariant=true")
    if args.heatmap_size:
        cfg = apply_override(cfg, f"heatmap_size={args.heatmap_size}")
    if args.sigma:
        cfg = apply_override(cfg, f"sigma={args.sigma}")
    if args.no_skip:
        cfg = apply_override(cfg, "skip=false")
    if args.epochs:
        cfg = apply_override(cfg, f"train.epochs={args.epochs}")
        cfg = apply_override(cfg, "train.steps=0")
    cfg = replace(cfg, train=with_batch_size(cfg.train, args.batch, args.lr_scaling))
    return _checked(apply_overrides(cfg, args.overrides))


def _print_metrics(metrics: dict, as_json: bool, summary: str) -> None:
    from loclab.report.printing import clean_floats

    if as_json:  # metrics.json keeps full precision; what is printed drops float noise (0.8590000000000001)
        print(json.dumps(clean_floats(metrics), indent=1))
    else:
        print(summary)


def cmd_generate(args) -> None:
    if args.kind == "shapes":
        from loclab.data.shapes import generate_shapes as generate
    else:
        from loclab.data.figures import generate_figures as generate
    root = generate(args.out, seed=args.seed, n_train=args.train, n_val=args.val)
    print(f"wrote {root}")


def cmd_train(args) -> None:
    from loclab.engine import tasks

    if args.task == "detector":
        layout = detect_layout(args.data_root, "detection", args.format)
        print(f"data: {layout.reason}")
        cfg = _detector_config(args, layout.name)
        tasks.train_detector_on_root(cfg, args.data_root, args.out, recipe=args.recipe, resume=args.resume,
                                     skip_bad=args.skip_bad, progress=not args.quiet, autoanchor=args.autoanchor,
                                     data_format=layout.name)
    else:
        layout = detect_layout(args.data_root, "keypoints", args.format)
        print(f"data: {layout.reason}")
        cfg = _keypoint_config(args, layout.name)
        tasks.train_keypoints_on_root(cfg, args.data_root, args.out, recipe=args.recipe, resume=args.resume,
                                      skip_bad=args.skip_bad, progress=not args.quiet, data_format=layout.name)
    print(f"run directory: {args.out}")


def cmd_eval(args) -> None:
    if args.what == "detector":
        from loclab.evaluation.detection import evaluate_detector_run, summary_line
        from loclab.report.figures import write_detector_figures

        metrics = evaluate_detector_run(args.run, data_root=args.data_root, progress=not args.quiet,
                                        resamples=args.resamples)
        write_detector_figures(args.run, data_root=args.data_root)
        _print_metrics(metrics, args.json, summary_line(metrics) + f"\nwrote {args.run / 'metrics.json'}")
    elif args.what == "detections":
        from loclab.evaluation.detection import score_detection_files, summary_line

        metrics = score_detection_files(args.gt, args.pred, bbox_format=args.bbox_format, match_rule=args.match,
                                        resamples=args.resamples)
        _print_metrics(metrics, args.json, summary_line(metrics))
    else:
        from loclab.evaluation.keypoints import evaluate_keypoint_run, score_keypoint_files, summary_line

        if args.run is not None:
            from loclab.report.figures import write_keypoint_run_figures

            metrics = evaluate_keypoint_run(args.run, data_root=args.data_root, normalize_by=args.normalize,
                                            resamples=args.resamples)
            write_keypoint_run_figures(args.run, data_root=args.data_root)
        elif args.gt is not None and args.pred is not None:
            metrics = score_keypoint_files(args.gt, args.pred, normalize_by=args.normalize, resamples=args.resamples)
        else:
            raise UsageError("eval keypoints needs --run RUN, or both --gt ANNOTATIONS.json and --pred PREDICTIONS.json")
        _print_metrics(metrics, args.json, summary_line(metrics))


def cmd_ablate(args) -> None:
    from loclab.study import ablation_from_cli

    print(f"wrote {ablation_from_cli(args)}")


def cmd_run(args) -> None:
    from loclab.study import run_study

    overrides = args.overrides + ([f"ablation.seeds={args.seeds}"] if args.seeds is not None else [])
    report = run_study(args.preset, args.out, data_root=args.data_root, overrides=overrides, force=args.force)
    print(f"report: {report.with_suffix('.html')} (self-contained)\n        {report}")


def cmd_report(args) -> None:
    from loclab.report.build import build_report

    md, html = build_report(args.dir)
    print(f"report: {md}\n        {html}")


def cmd_predict(args) -> None:
    from loclab import predict

    if args.task == "detector":
        out = predict.predict_detector_files(args.weights, args.images, args.out, threshold=args.threshold)
    else:
        out = predict.predict_keypoint_files(args.weights, args.images, args.out, boxes=args.boxes,
                                             box_threshold=args.box_threshold)
    print(f"wrote {out}")


def cmd_compare(args) -> None:
    from loclab.report import compare

    comparison = compare.compare_runs(args.paths)
    if args.json:
        print(json.dumps(compare.as_json(comparison), indent=1))
    else:
        print(compare.render_markdown(comparison) if args.md else compare.render_text(comparison))


def cmd_export(args) -> None:
    from loclab.export.files import export_weights

    out = export_weights(args.weights, args.format, args.out, outputs="raw" if args.raw else "decoded",
                         batch=args.batch, dynamic_batch=args.dynamic_batch)
    print(f"wrote {out}")


def cmd_anchors(args) -> None:
    from loclab.engine import autoanchor, tasks

    layout = detect_layout(args.data_root, "detection", args.format)
    if args.run is not None:
        from loclab.config import from_dict
        from loclab.engine.rundir import read_json

        cfg = from_dict(DetectorConfig, read_json(args.run / "config.json")["detector"])
    else:
        cfg = detector_config("fast") if layout.name == "reference" else own_data_detector_config("fast")
        if args.imgsz:
            cfg = replace(cfg, image_size=args.imgsz, anchor_sizes=scaled_anchor_sizes(args.imgsz))
    split = tasks.detection_split(args.data_root, "train", data_format=layout.name)
    current = autoanchor.anchor_report(cfg, split)
    fitted = autoanchor.anchor_report(autoanchor.fitted_config(cfg, split), split)
    if args.json:
        print(json.dumps({"data": layout.reason, "configured": current, "fitted": fitted}, indent=1))
        return
    print(f"data: {layout.reason}")
    print(autoanchor.format_report("configured anchors", current))
    print(autoanchor.format_report("fitted anchors (use with --autoanchor, or --set anchor_sizes=... "
                                   "--set anchor_ratios=...)", fitted))


def cmd_bench(args) -> None:
    from loclab.bench import run_bench

    run_bench(as_json=args.json, quick=args.quick, with_compile=not args.no_compile, device=args.device,
              batch=args.batch)


class UsageError(LoclabError, ValueError):
    """The command line asked for something inconsistent."""


COMMANDS = {"generate": cmd_generate, "train": cmd_train, "eval": cmd_eval, "ablate": cmd_ablate, "run": cmd_run,
            "report": cmd_report, "predict": cmd_predict, "anchors": cmd_anchors, "bench": cmd_bench,
            "compare": cmd_compare, "export": cmd_export}


# What a user can fix: loclab's own errors, and files that are missing, in the way or not accessible.
USER_ERRORS = (LoclabError, FileNotFoundError, FileExistsError, PermissionError)


def _warning_printer(fallback):
    """A ``warnings.showwarning``: loclab's warnings as one ``loclab: warning: ...`` line on stderr, every other
    warning through ``fallback``."""
    def show(message, category, filename, lineno, file=None, line=None) -> None:
        if issubclass(category, LoclabWarning):
            print(f"loclab: warning: {message}", file=sys.stderr)
        else:
            fallback(message, category, filename, lineno, file, line)
    return show


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from loclab.engine import distributed

    distributed.init_from_env()
    if getattr(args, "no_tensorboard", False):
        os.environ[TENSORBOARD_SWITCH] = "0"  # inherited by the processes that train ablation trials
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", LoclabWarning)
            warnings.showwarning = _warning_printer(warnings.showwarning)
            COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("\ninterrupted. Finished epochs are saved; re-run the same command (with --resume for "
              "`loclab train`) to continue.", file=sys.stderr)
        return 130
    except USER_ERRORS as err:
        if args.debug:
            raise  # the whole traceback, and a debugger's post-mortem (python -m pdb -m loclab --debug ...)
        print(f"loclab: error: {err}", file=sys.stderr)
        return 2
    return 0
