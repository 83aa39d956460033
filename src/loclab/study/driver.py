"""``loclab run``: the whole study in one command, then the report.

Layout of a study directory::

    OUT/
      config.json, version.json        resolved study config, code version and machine
      stages/<stage>.json              cache markers and wall times
      detector/                        detector run (see docs/run-directory.md)
      keypoints/heatmap/, keypoints/regression/
      keypoints/comparison.json        PCK side by side, ambiguity ceiling, failure analysis
      keypoints/visualizations/        PCK curves, method comparison, failure cases
      ablations/anchors/<trial>/, ablations/anchors/anchor_ablation.json
                                       (a trial identical to the detector run links to it)
      ablations/keypoints/<trial>/, ablations/keypoints/baseline_results.json
                                       (a trial identical to the heatmap run links to it)
      report.md, report.html
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path
from typing import Any

from loclab.config import StudyConfig, to_dict
from loclab.engine.rundir import prepare_run_dir, version_info, write_json
from loclab.recipes import resolve_study_config
from loclab.study import trials
from loclab.study.owndata import dataset_layouts, resolve_study_config_for_data, run_own_data_stages
from loclab.study.stages import StageRunner

NUM_STAGES = 8


def ensure_data(data_root: Path, cfg: StudyConfig) -> dict[str, Any]:
    """Generate whichever task's data is missing under ``data_root``; existing data is used as-is."""
    from loclab.data.figures import generate_figures
    from loclab.data.shapes import generate_shapes

    found = {}
    for task, folder, generate in (("detection", "detection", generate_shapes), ("keypoints", "keypoints", generate_figures)):
        files = [data_root / folder / f"{s}_annotations.json" for s in ("train", "val")]
        if all(f.is_file() for f in files):
            found[task] = "found"
        else:
            generate(data_root, seed=cfg.data.seed, n_train=cfg.data.n_train, n_val=cfg.data.n_val)
            found[task] = f"generated (seed {cfg.data.seed}, {cfg.data.n_train} train / {cfg.data.n_val} val)"
    return found


def data_fingerprint(data_root: Path) -> str:
    """A hash of the four annotation files: a stage is redone when its data changes."""
    h = hashlib.sha1()
    for folder in ("detection", "keypoints"):
        for split in ("train", "val"):
            h.update((data_root / folder / f"{split}_annotations.json").read_bytes())
    return h.hexdigest()[:16]


def run_study(preset: str, out: Path, *, data_root: Path | None = None, overrides: list[str] = (),
              force: bool = False) -> Path:
    """Run every stage of the study into ``out`` and return the path of ``report.md``.

    ``data_root``: the course's data (generated there when missing), or a user's dataset in any layout loclab
    reads, on which only the stages of the tasks it holds run (:mod:`loclab.study.owndata`).
    """
    from loclab.report.build import build_report

    layouts = dataset_layouts(data_root) if data_root is not None else None
    cfg = resolve_study_config(preset, overrides) if layouts is None else \
        resolve_study_config_for_data(preset, layouts, overrides)
    out = prepare_run_dir(out)
    data_root = Path(data_root) if data_root is not None else out / "data"
    runner = StageRunner(out, NUM_STAGES, force=force)
    write_json(out / "config.json", {"preset": preset, "overrides": list(overrides), "data_root": str(data_root.resolve()),
                                     "study": to_dict(cfg)})
    if cfg.own_data is not None:
        run_own_data_stages(cfg, layouts, data_root, out, runner)
        print(f"[{NUM_STAGES}/{NUM_STAGES}] report")
        build_report(out)
        return out / "report.md"

    data_state = runner.run("data", "data", {"root": str(data_root.resolve()), "data": to_dict(cfg.data)},
                            lambda: ensure_data(data_root, cfg))
    if data_state is not None:
        write_json(out / "data.json", data_state)
    fingerprint = data_fingerprint(data_root)
    write_json(out / "version.json", version_info(data_fingerprint=fingerprint, seeds={
        "data": cfg.data.seed, "detector": cfg.detector.train.seed, "heatmap": cfg.heatmap.train.seed,
        "regression": cfg.regression.train.seed}))

    def key(section: Any) -> dict[str, Any]:
        return {"data": fingerprint, "config": to_dict(section)}

    runner.run("detector", "detector: train + evaluate", key(cfg.detector),
               lambda: trials.detector_trial(cfg.detector, data_root, out / "detector"),
               outputs=[out / "detector"])
    for name, kcfg in (("heatmap", cfg.heatmap), ("regression", cfg.regression)):
        runner.run(name, f"keypoints: {name} model train + evaluate", key(kcfg),
                   lambda kcfg=kcfg, name=name: trials.keypoint_trial(kcfg, data_root, out / "keypoints" / name),
                   outputs=[out / "keypoints" / name])
    runner.run("comparison", "keypoints: heatmap vs regression, ceiling, failure analysis",
               {"data": fingerprint, "heatmap": to_dict(cfg.heatmap), "regression": to_dict(cfg.regression),
                "threshold": cfg.failure_threshold},
               lambda: trials.keypoint_comparison(out / "keypoints", data_root, cfg.failure_threshold))
    runner.run("anchor_ablation", "ablation: anchor sets", key(replace(cfg.ablation, heatmap_sizes=(), sigmas=(), skips=())) | {"detector": to_dict(cfg.detector)},
               lambda: trials.anchor_ablation(cfg.detector, cfg.ablation, data_root, out / "ablations" / "anchors",
                                             finished=[out / "detector"]),
               outputs=[out / "ablations" / "anchors"])
    runner.run("keypoint_ablation", "ablation: heatmap resolution, sigma, skips",
               key(replace(cfg.ablation, anchor_sets=())) | {"heatmap": to_dict(cfg.heatmap)},
               lambda: trials.keypoint_ablation(cfg.heatmap, cfg.ablation, data_root, out / "ablations" / "keypoints",
                                               finished=[out / "keypoints" / "heatmap"]),
               outputs=[out / "ablations" / "keypoints"])
    # The report is cheap and reads only files, so it is always rebuilt.
    print(f"[{NUM_STAGES}/{NUM_STAGES}] report")
    build_report(out)
    return out / "report.md"
