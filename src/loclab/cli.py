"""``loclab`` command line: parse (the grammar is :mod:`loclab.cli_parser`), build, call the library. Nothing
here does math.

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
from dataclasses import replace

from loclab.cli_parser import build_parser
from loclab.config import DetectorConfig, KeypointConfig, apply_override, apply_overrides
from loclab.data.layouts import detect_layout
from loclab.engine.logs import TENSORBOARD_SWITCH
from loclab.engine.lr_scaling import effective_lr, with_batch_size
from loclab.errors import LoclabError, LoclabWarning
from loclab.recipes import (
    OWN_DATA_IMAGE_SIZE,
    OWN_DATA_KEYPOINT_INPUT,
    detector_config,
    keypoint_config,
    own_data_detector_config,
    own_data_keypoint_config,
    scaled_anchor_sizes,
)


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
    args = build_parser().parse_args(argv)
    from loclab.engine import distributed

    distributed.init_from_env()
    code = _run_command(args)
    if distributed.active():
        distributed.finish(code)
    return code


def _run_command(args: argparse.Namespace) -> int:
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
