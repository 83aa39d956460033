"""Ablation grids: which trials to run, and how to summarise their results (numbers only).

Keypoint ablations vary one factor at a time around the baseline (heatmap 64x64, sigma 2, skips on):
heatmap resolution, Gaussian sigma, skip connections. They are judged by PCK on the validation split;
heatmap MSE is not comparable across sigma or resolution and is reported as a secondary column only.
Anchor ablations train the detector with other anchor sets and compare per-class AP and scale tables.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from loclab.config import AblationConfig, DetectorConfig, KeypointConfig


def keypoint_trial_name(cfg: KeypointConfig) -> str:
    return f"hm{cfg.heatmap_size}_sigma{cfg.sigma:g}_{'skip' if cfg.skip else 'noskip'}"


def keypoint_ablation_trials(base: KeypointConfig, ablation: AblationConfig) -> dict[str, KeypointConfig]:
    """One config per distinct setting; the baseline appears once even though every factor includes it."""
    base = replace(base, model="heatmap", train=replace(base.train, epochs=ablation.keypoint_epochs))
    variants = [replace(base, heatmap_size=s) for s in ablation.heatmap_sizes]
    variants += [replace(base, sigma=s) for s in ablation.sigmas]
    variants += [replace(base, skip=s) for s in ablation.skips]
    trials: dict[str, KeypointConfig] = {}
    for cfg in [base, *variants]:
        trials.setdefault(keypoint_trial_name(cfg), cfg)
    return trials


def keypoint_factors(base: KeypointConfig, ablation: AblationConfig) -> dict[str, list[tuple[str, str]]]:
    """For each factor, its ``(label, trial name)`` pairs in display order."""
    def name(**change: Any) -> str:
        return keypoint_trial_name(replace(base, **change))

    return {
        "heatmap_size": [(f"{s}x{s}", name(heatmap_size=s)) for s in ablation.heatmap_sizes],
        "sigma": [(f"{s:g}", name(sigma=s)) for s in ablation.sigmas],
        "skip": [("with skip" if s else "without skip", name(skip=s)) for s in ablation.skips],
    }


def summarise_keypoint_ablation(base: KeypointConfig, ablation: AblationConfig,
                                metrics: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``baseline_results.json``: per factor, per setting, PCK (primary) and val MSE (secondary)."""
    out: dict[str, Any] = {
        "judged_by": "PCK on the validation split (bbox-diagonal norm, distance / norm <= threshold); "
                     "val heatmap MSE is secondary and not comparable across sigma or resolution",
        "epochs": ablation.keypoint_epochs,
        "factors": {},
    }
    for factor, pairs in keypoint_factors(base, ablation).items():
        rows = []
        for label, trial in pairs:
            m = metrics[trial]
            rows.append({"setting": label, "trial": trial, "pck": m["pck"], "pck_swap": m["pck_swap"],
                         "val_mse": m.get("val_loss"), "train_time_s": m.get("train_time_s")})
        # a skeleton without symmetric pairs has no swap-aware PCK: standard PCK decides alone
        best = max(rows, key=lambda r: ((r["pck_swap"] or r["pck"])["0.05"], r["pck"]["0.05"]))
        out["factors"][factor] = {"rows": rows, "best": best["setting"]}
    return out


def anchor_set_name(anchor_sizes: tuple[tuple[float, ...], ...]) -> str:
    return "_".join("-".join(f"{a:g}" for a in scale) for scale in anchor_sizes)


def anchor_ablation_trials(base: DetectorConfig, ablation: AblationConfig) -> dict[str, DetectorConfig]:
    """The default anchors plus each alternative set, all with the ablation's epoch count."""
    base = replace(base, train=replace(base.train, epochs=ablation.detector_epochs))
    trials = {"default": base}
    for sizes in ablation.anchor_sets:
        trials.setdefault(anchor_set_name(sizes), replace(base, anchor_sizes=tuple(tuple(s) for s in sizes)))
    return trials


def summarise_anchor_ablation(configs: dict[str, DetectorConfig], metrics: dict[str, dict[str, Any]]) -> dict:
    """Side by side: anchors, mAP, per-class AP, confident-TP scale table and best possible recall."""
    rows = []
    for name, cfg in configs.items():
        m = metrics[name]
        coverage = m.get("anchor_coverage", {})
        rows.append({
            "trial": name,
            "anchor_sizes": [list(s) for s in cfg.anchor_sizes],
            "mAP50": m["mAP50"],
            "AP50": m["AP50"],
            "mAP70": m.get("mAP70"),
            "scale_specialisation": m.get("scale_specialisation"),
            "best_possible_recall": coverage.get("best_possible_recall"),
        })
    return {"epochs": next(iter(configs.values())).train.epochs, "rows": rows}
