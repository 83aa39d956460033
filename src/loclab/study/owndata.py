"""``loclab run --data-root DIR`` on a user's own dataset: which tasks it holds, the study config for it, and the
stages that apply.

A data root is the course's when it does not exist, is empty, holds only the generator's ``detection/`` and
``keypoints/`` folders, or holds the reference layout of either task: the study then generates what is missing and
runs exactly as on the generated data. Any other folder is the user's dataset (:func:`dataset_layouts`): nothing is
ever generated into it, each task's layout is recognised (:func:`loclab.data.layouts.find_layout`; a COCO folder may
hold both ``instances_*`` and ``person_keypoints_*`` files, Pascal VOC and YOLO hold boxes only, DeepLabCut keypoints
only) and only the stages of the tasks it holds run. The others are recorded as skipped, with one sentence saying
why, in their stage markers (``stages/<stage>.json``: ``status: skipped``, ``reason``) and in ``data.json``; the
report prints that sentence in place of their section.

Configs (:func:`study_config_for_data`): the presets keep their names and use the own-data ``fast`` recipes
(:func:`loclab.recipes.own_data_detector_config`, :func:`loclab.recipes.own_data_keypoint_config`), which count
optimiser steps rather than epochs, so a preset costs about the same on a dataset of any size
(:data:`OWN_DATA_STUDY_STEPS`): ``quick`` caps every model at 600 steps, ``paper`` runs the full own-data recipes
(3000 steps), and ``smoke`` two epochs (one per ablation trial), as on the course data. The detector's anchors are fitted to the training boxes
(:func:`loclab.engine.autoanchor.fitted_config`, what ``loclab train detector --autoanchor`` does), and the anchor
ablation compares them with the default anchors scaled to the input instead of the course's alternative set.
``--set detector.image_size=N`` sets the detector input (the default anchors follow it), like ``--imgsz``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from loclab.config import DetectorConfig, OwnDataConfig, StudyConfig, TrainConfig, apply_overrides, to_dict
from loclab.data.coco_layout import ROBOFLOW_FILE, find_coco
from loclab.data.errors import DataError
from loclab.data.layouts import Layout, detect_layout, find_layout
from loclab.engine.autoanchor import anchor_report, fitted_config
from loclab.engine.rundir import version_info, write_json
from loclab.engine.tasks import detection_split, keypoint_split
from loclab.recipes import (
    OWN_DATA_IMAGE_SIZE,
    OWN_DATA_KEYPOINT_STEPS,
    OWN_DATA_STEPS,
    own_data_detector_config,
    own_data_keypoint_config,
    scaled_anchor_sizes,
    study_preset,
)
from loclab.study import trials
from loclab.study.stages import StageRunner

TASKS = ("detection", "keypoints")
GENERATED_FOLDERS = frozenset(TASKS)  # what `loclab generate` writes into a data root

# Optimiser steps per preset: (detector, each anchor-ablation trial, each keypoint model, each keypoint-ablation
# trial). quick keeps to minutes on a 2-core CPU whatever the dataset's size; paper is the full own-data recipes.
# smoke counts epochs, as on the course data (2 per model, the smoke ablations' 1 per trial): step-based training
# makes every epoch at least 50 steps (engine.train.MIN_STEPS_PER_EPOCH), too many for a test of the plumbing.
OWN_DATA_STUDY_STEPS: dict[str, tuple[int, int, int, int]] = {
    "smoke": (0, 0, 0, 0),
    "quick": (600, 300, 600, 200),
    "paper": (OWN_DATA_STEPS, OWN_DATA_STEPS, OWN_DATA_KEYPOINT_STEPS, OWN_DATA_KEYPOINT_STEPS),
}
_SMOKE_TRAIN = {"epochs": 2, "batch_size": 8, "precision": "fp32", "precise_bn_batches": 0}
_LABELS = {"coco": "COCO", "voc": "VOC", "yolo": "YOLO", "deeplabcut": "DeepLabCut", "reference": "reference"}


# ------------------------------------------------------------------------------------------------ the data root


def dataset_layouts(root: Path | str) -> dict[str, Layout | None] | None:
    """``{task: Layout or None}`` of a user's dataset at ``root``; ``None`` for the course's data root (module
    docstring: missing, empty, the generator's folders only, or the reference layout of either task).

    Raises :class:`DataError` when ``root`` is a file, when a layout's files are there but unusable, and when
    the folder holds no layout of either task (nothing is generated into a folder of other files).
    """
    root = Path(root)
    if not root.exists():
        return None
    if not root.is_dir():
        raise DataError(f"{root}: is not a folder; --data-root expects a dataset folder.")
    if all(entry.is_dir() and entry.name in GENERATED_FOLDERS for entry in root.iterdir()):
        return None
    found = {task: find_layout(root, task) for task in TASKS}
    if found["keypoints"] is not None and found["keypoints"].name == "coco" and not _coco_has_keypoints(root):
        found["keypoints"] = None  # a Roboflow export of boxes: its one file matches either task
    if any(layout is not None and layout.name == "reference" for layout in found.values()):
        return None
    if not any(found.values()):
        messages = []
        for task in TASKS:
            try:
                detect_layout(root, task)
            except DataError as err:
                messages.append(str(err))
        raise DataError(" ".join(messages) + " loclab run generates the course data only into a new or empty "
                                             "folder, never into a folder of other files.")
    return found


def _coco_has_keypoints(root: Path) -> bool:
    """Whether the COCO files found for keypoints declare keypoints. ``person_keypoints_*`` files do by name; a
    Roboflow export (``<split>/_annotations.coco.json``, one file for either task) only when a category lists
    keypoint names."""
    layout = find_coco(root, "keypoints")
    train = layout.files["train"]
    if train.name != ROBOFLOW_FILE:
        return True
    try:
        categories = json.loads(train.read_text()).get("categories") or []
        return any(isinstance(c, dict) and c.get("keypoints") for c in categories)
    except (OSError, ValueError, AttributeError, TypeError):
        return True  # unreadable: the keypoint reader says what is wrong with it


def layout_names(layouts: Mapping[str, Layout | str | None] | None) -> dict[str, str]:
    """``{task: layout name}``, ``""`` for a task without data."""
    names = {}
    for task in TASKS:
        layout = (layouts or {}).get(task)
        names[task] = layout.name if isinstance(layout, Layout) else (layout or "")
    return names


def skip_reasons(layouts: Mapping[str, Layout | str | None]) -> dict[str, str]:
    """One sentence per task the dataset holds no annotations for, saying why its stages are skipped."""
    names, reasons = layout_names(layouts), {}
    if not names["detection"] and names["keypoints"]:
        label = _LABELS.get(names["keypoints"], names["keypoints"])
        reasons["detection"] = (f"No box annotations in this dataset ({label} layout holds keypoints only), so the "
                                "detection study is skipped.")
    if not names["keypoints"] and names["detection"]:
        label = _LABELS.get(names["detection"], names["detection"])
        reasons["keypoints"] = (f"No keypoint annotations in this dataset ({label} layout holds boxes only), so the "
                                "keypoint study is skipped.")
    return reasons


# ------------------------------------------------------------------------------------------------------ configs


def study_config_for_data(preset: str, layouts: Mapping[str, Layout | str | None] | None) -> StudyConfig:
    """The study config of ``preset`` for a data root whose tasks have ``layouts`` (``{task: Layout, name or
    None}``, as :func:`dataset_layouts` gives). The course's preset unchanged when there are no layouts or one is
    the reference layout; else the own-data configs (module docstring) with ``own_data`` set."""
    base = study_preset(preset)
    names = layout_names(layouts)
    if not any(names.values()) or "reference" in names.values():
        return base
    detector_steps, anchor_steps, keypoint_steps, ablation_steps = OWN_DATA_STUDY_STEPS[preset]

    def steps(train: TrainConfig, count: int) -> TrainConfig:
        return replace(train, steps=count, **(_SMOKE_TRAIN if preset == "smoke" else {}))

    detector = own_data_detector_config("fast")
    heatmap, regression = (own_data_keypoint_config(model, "fast") for model in ("heatmap", "regression"))
    return replace(
        base,
        detector=replace(detector, train=steps(detector.train, detector_steps)),
        heatmap=replace(heatmap, train=steps(heatmap.train, keypoint_steps)),
        regression=replace(regression, train=steps(regression.train, keypoint_steps)),
        ablation=replace(base.ablation, anchor_sets=()),
        own_data=OwnDataConfig(detection=names["detection"], keypoints=names["keypoints"], autoanchor=True,
                               detector_ablation_steps=anchor_steps, keypoint_ablation_steps=ablation_steps),
    )


def resolve_study_config_for_data(preset: str, layouts: Mapping[str, Layout | str | None] | None,
                                  overrides: Sequence[str] = ()) -> StudyConfig:
    """:func:`study_config_for_data` with ``--set`` overrides applied in order. On own data the default anchors
    follow ``detector.image_size`` (scaled to it) unless ``detector.anchor_sizes`` is set too."""
    cfg = apply_overrides(study_config_for_data(preset, layouts), overrides)
    detector = cfg.detector
    if cfg.own_data is not None and detector.image_size != OWN_DATA_IMAGE_SIZE and \
            detector.anchor_sizes == scaled_anchor_sizes(OWN_DATA_IMAGE_SIZE):
        cfg = replace(cfg, detector=replace(detector, anchor_sizes=scaled_anchor_sizes(detector.image_size)))
    return cfg


def detector_for_data(cfg: StudyConfig, train_split) -> DetectorConfig:
    """The study's detector config completed from the training split: its classes, and (``own_data.autoanchor``)
    anchors fitted to its boxes, as ``loclab train detector --autoanchor`` fits them."""
    names = tuple(train_split.categories[label] for label in sorted(train_split.categories))
    detector = replace(cfg.detector, num_classes=len(names), class_names=names)
    if cfg.own_data is None or not cfg.own_data.autoanchor:
        return detector
    return fitted_config(detector, train_split, seed=detector.train.seed)


def anchor_trials(cfg: StudyConfig, detector: DetectorConfig) -> tuple[dict[str, DetectorConfig], dict[str, str]]:
    """The own-data anchor ablation: ``default`` (the configured anchors, by default the reference set scaled to
    the input) and ``fitted`` (``detector``'s anchors), each trained for ``own_data.detector_ablation_steps``;
    returns the configs and a description of each."""
    def trial(c: DetectorConfig) -> DetectorConfig:
        return replace(c, train=replace(c.train, steps=cfg.own_data.detector_ablation_steps,
                                        epochs=cfg.ablation.detector_epochs))

    default = replace(detector, anchor_sizes=cfg.detector.anchor_sizes, anchor_ratios=cfg.detector.anchor_ratios)
    scaled = default.anchor_sizes == scaled_anchor_sizes(default.image_size) and default.anchor_ratios is None
    configs = {"default": trial(default)}
    descriptions = {"default": (f"the default anchors (the reference set scaled to the {default.image_size} px "
                                "input)" if scaled else "the configured anchors")}
    if cfg.own_data.autoanchor:
        configs["fitted"] = trial(detector)
        descriptions["fitted"] = "the anchors fitted to the training boxes"
    return configs, descriptions


# --------------------------------------------------------------------------------------------------- the stages


def _read_splits(root: Path, layouts: Mapping[str, Layout | None]) -> dict[str, dict[str, Any]]:
    """Both splits of every task the dataset holds, read and validated (bad data fails here, before training)."""
    read = {"detection": detection_split, "keypoints": keypoint_split}
    return {task: {split: read[task](root, split) for split in ("train", "val")}
            for task, layout in layouts.items() if layout is not None}


def data_fingerprint(splits: Mapping[str, Mapping[str, Any]]) -> str:
    """A hash of everything the readers read (files, sizes, boxes, labels, keypoints): a stage is redone when its
    data changes, whatever the layout's files are."""
    h = hashlib.sha1()
    for task, by_split in sorted(splits.items()):
        for name, split in sorted(by_split.items()):
            h.update(f"{task}/{name}/{split.format}".encode())
            for record in split.images:
                h.update(f"|{record.file_name}:{record.width}x{record.height}".encode())
            if task == "detection":
                h.update(repr(sorted(split.categories.items())).encode())
                for tensors in (split.boxes, split.labels, split.difficult or ()):
                    for tensor in tensors:
                        h.update(tensor.numpy().tobytes())
            else:
                h.update(repr((split.keypoint_names, split.symmetric_pairs)).encode())
                for tensor in (split.keypoints, split.visible, split.instance_image, split.boxes):
                    h.update(tensor.numpy().tobytes())
    return h.hexdigest()[:16]


def run_own_data_stages(cfg: StudyConfig, layouts: Mapping[str, Layout | None], data_root: Path, out: Path,
                        runner: StageRunner) -> None:
    """Every stage of the study on a user's dataset, in the course study's order; stages of a task the dataset
    does not hold are skipped with their reason."""
    reasons = skip_reasons(layouts)
    for task in TASKS:
        print(f"data ({task}): {layouts[task].reason if layouts[task] else reasons[task]}", flush=True)
    names = layout_names(layouts)
    state = {task: (f"found: {layouts[task].reason}" if layouts[task] else "not in this dataset") for task in TASKS}
    data_state = runner.run("data", "data", {"root": str(data_root.resolve()), "layouts": names}, lambda: state)
    if data_state is not None:
        write_json(out / "data.json", data_state | {"skipped": reasons})
    splits = _read_splits(data_root, layouts)
    fingerprint = data_fingerprint(splits)
    seeds = {"detector": cfg.detector.train.seed} if "detection" in splits else {}
    if "keypoints" in splits:
        seeds |= {"heatmap": cfg.heatmap.train.seed, "regression": cfg.regression.train.seed}
    write_json(out / "version.json", version_info(data_fingerprint=fingerprint, seeds=seeds))

    def key(section: Any) -> dict[str, Any]:
        return {"data": fingerprint, "config": to_dict(section)}

    detector = None
    if "detection" in splits:
        train = splits["detection"]["train"]
        detector = detector_for_data(cfg, train)
        if detector.anchor_sizes != cfg.detector.anchor_sizes:
            before, after = anchor_report(cfg.detector, train), anchor_report(detector, train)
            print(f"anchors fitted to the training boxes: best possible recall {before['best_possible_recall']:.3f} "
                  f"-> {after['best_possible_recall']:.3f}, sizes {after['anchor_sizes']}", flush=True)
        runner.run("detector", "detector: train + evaluate", key(detector),
                   lambda: trials.detector_trial(detector, data_root, out / "detector"), outputs=[out / "detector"])
    else:
        runner.skip("detector", "detector: train + evaluate", reasons["detection"])
    titles = {"heatmap": "keypoints: heatmap model train + evaluate",
              "regression": "keypoints: regression model train + evaluate",
              "comparison": "keypoints: heatmap vs regression, failure analysis"}
    if "keypoints" in splits:
        for name, kcfg in (("heatmap", cfg.heatmap), ("regression", cfg.regression)):
            runner.run(name, titles[name], key(kcfg),
                       lambda kcfg=kcfg, name=name: trials.keypoint_trial(kcfg, data_root, out / "keypoints" / name),
                       outputs=[out / "keypoints" / name])
        runner.run("comparison", titles["comparison"],
                   {"data": fingerprint, "heatmap": to_dict(cfg.heatmap), "regression": to_dict(cfg.regression),
                    "threshold": cfg.failure_threshold},
                   lambda: trials.keypoint_comparison(out / "keypoints", data_root, cfg.failure_threshold))
    else:
        for name, title in titles.items():
            runner.skip(name, title, reasons["keypoints"])
    if detector is not None:
        configs, descriptions = anchor_trials(cfg, detector)
        steps = cfg.own_data.detector_ablation_steps
        runner.run("anchor_ablation", "ablation: fitted vs default anchors",
                   {"data": fingerprint, "trials": {n: to_dict(c) for n, c in configs.items()}},
                   lambda: trials.anchor_ablation(detector, cfg.ablation, data_root, out / "ablations" / "anchors",
                                                  finished=[out / "detector"], configs=configs,
                                                  extra={"steps": steps, "descriptions": descriptions}),
                   outputs=[out / "ablations" / "anchors"])
    else:
        runner.skip("anchor_ablation", "ablation: fitted vs default anchors", reasons["detection"])
    if "keypoints" in splits:
        steps = cfg.own_data.keypoint_ablation_steps
        base = replace(cfg.heatmap, train=replace(cfg.heatmap.train, steps=steps))
        runner.run("keypoint_ablation", "ablation: heatmap resolution, sigma, skips",
                   key(replace(cfg.ablation, anchor_sets=())) | {"heatmap": to_dict(base)},
                   lambda: trials.keypoint_ablation(base, cfg.ablation, data_root, out / "ablations" / "keypoints",
                                                    finished=[out / "keypoints" / "heatmap"], extra={"steps": steps}),
                   outputs=[out / "ablations" / "keypoints"])
    else:
        runner.skip("keypoint_ablation", "ablation: heatmap resolution, sigma, skips", reasons["keypoints"])
