"""Conclusions derived from measured numbers. Every sentence is computed; none is canned.

Each function takes the parsed JSON files of a study and returns sentences (an empty list when the
numbers it needs are missing), so the report never states something the run did not measure.
"""

from __future__ import annotations

from typing import Any

from loclab.report.seeds import SEED_DETECTION_MAP, SEED_REGRESSION_PCK


def _epochs(n: int) -> str:
    return f"{n} epoch" + ("" if n == 1 else "s")


def _pct(x: float) -> str:
    return f"{100 * x:.0f} %"


def detection(metrics: dict[str, Any] | None, quote_reports: bool = True) -> list[str]:
    """``quote_reports``: compare with the course reports' mAP (the course's shapes only)."""
    if not metrics or metrics.get("mAP50") is None:
        return []
    ap = {name: value for name, value in metrics["AP50"].items() if value is not None}  # None: no val boxes
    if not ap:
        return []
    best, worst = max(ap, key=ap.get), min(ap, key=ap.get)
    quoted = (f", against {' and '.join(f'{v:.2f}' for v in SEED_DETECTION_MAP.values())} in the original reports"
              if quote_reports else "")
    out = [f"The detector reached mAP@0.5 = {metrics['mAP50']:.3f} (VOC all-point) on {metrics['num_images']} "
           f"validation images{quoted}; {best} is the easiest class (AP {ap[best]:.3f}), {worst} the hardest "
           f"(AP {ap[worst]:.3f})."]
    m50, m70 = metrics["mAP50"], metrics.get("mAP70")
    if m70 is not None and m50 >= 0.3:
        kept = m70 / m50
        verdict = ("box precision, not finding the objects, is what remains to gain" if kept < 0.8
                   else "the boxes that are found are also tight")
        out.append(f"At the stricter IoU 0.7, mAP is {m70:.3f} ({100 * kept:.0f} % of mAP@0.5): {verdict}.")
    return out


def scale(metrics: dict[str, Any] | None) -> list[str]:
    table = (metrics or {}).get("scale_specialisation")
    if not table:
        return []
    conf = table[table.get("headline", "confident")]
    counts = conf["tp_counts"]  # [scale][bucket]
    out = []
    for b, bucket in enumerate(table["buckets"]):
        column = [counts[s][b] for s in range(len(counts))]
        total = sum(column)
        if total == 0:
            continue
        s = max(range(len(column)), key=column.__getitem__)
        out.append(f"{table['scales'][s]} produced {_pct(column[s] / total)} of the {total} confident "
                   f"{bucket}-object true positives.")
    return out


def coverage(metrics: dict[str, Any] | None) -> list[str]:
    cov = (metrics or {}).get("anchor_coverage")
    if not cov:
        return []
    bpr = cov["best_possible_recall"]["per_bucket"]
    filled = [b for b, value in enumerate(bpr) if value is not None]  # None: no object of that size
    if not filled:
        return []
    worst = min(filled, key=bpr.__getitem__)
    tail = ("every object has an anchor it can be matched to, so recall is not limited by the anchors"
            if bpr[worst] >= 0.999 else f"the weakest bucket is {cov['buckets'][worst]}")
    values = " / ".join("n/a" if value is None else f"{value:.2f}" for value in bpr)
    return [f"Best possible recall of the anchors at IoU 0.5 is {values} for {' / '.join(cov['buckets'])} "
            f"objects: {tail}."]


def anchor_ablation(summary: dict[str, Any] | None) -> list[str]:
    if not summary or len(summary.get("rows", [])) < 2:
        return []
    rows = {r["trial"]: r for r in summary["rows"]}
    base = rows.get("default")
    if base is None:
        return []
    out = []
    described = summary.get("descriptions") or {}  # own data: "fitted" vs "default", trained for steps
    length = f"{summary['steps']} optimiser steps" if summary.get("steps") else _epochs(summary["epochs"])
    for name, r in rows.items():
        if name == "default":
            continue
        delta = r["mAP50"] - base["mAP50"]
        per_class = ", ".join(f"{c} {r['AP50'][c] - base['AP50'][c]:+.3f}" for c in base["AP50"]
                              if r["AP50"].get(c) is not None and base["AP50"][c] is not None)
        these = described[name][0].upper() + described[name][1:] if name in described else f"Anchors {r['anchor_sizes']}"
        out.append(f"{these} changed mAP@0.5 by {delta:+.3f} vs {described.get('default', 'the default anchors')} "
                   f"after {length} ({per_class}).")
    return out


def keypoints(comparison: dict[str, Any] | None, quote_reports: bool = True) -> list[str]:
    """``quote_reports``: compare with the course reports' PCK (the course's stick figures only)."""
    if not comparison:
        return []
    models, ceiling = comparison["models"], comparison["ceiling"]
    hm, reg = models["heatmap"], models["regression"]
    quoted = (f" (the reports' regression reached {' and '.join(f'{v:.2f}' for v in SEED_REGRESSION_PCK.values())} "
              "at 0.2)" if quote_reports else "")
    out = [f"Heatmap PCK@0.05 / @0.2 = {hm['pck']['0.05']:.3f} / {hm['pck']['0.2']:.3f} vs regression "
           f"{reg['pck']['0.05']:.3f} / {reg['pck']['0.2']:.3f}{quoted}."]
    if ceiling:
        gap = max(ceiling[t] - hm["pck"][t] for t in ceiling)
        where = ("within 0.01 of it (or above it) at every threshold" if gap <= 0.01
                 else f"up to {gap:.3f} below it")
        out.append(f"A perfect localiser that cannot tell the identically drawn hands apart scores "
                   f"{' / '.join(f'{ceiling[t]:.3f}' for t in ceiling)} standard PCK; the heatmap model is {where}.")
        out.append(f"Swap-aware PCK, which forgives the unknowable hand label, is {hm['pck_swap']['0.05']:.3f} "
                   f"(heatmap) and {reg['pck_swap']['0.05']:.3f} (regression) at 0.05.")
    if not ceiling and hm.get("pck_swap") and reg.get("pck_swap"):
        pairs = ", ".join("/".join(pair) for pair in comparison.get("swap_pairs") or [])
        out.append(f"Swap-aware PCK@0.05, which lets the keypoints of each symmetric pair ({pairs}) match in either "
                   f"order, is {hm['pck_swap']['0.05']:.3f} (heatmap) and {reg['pck_swap']['0.05']:.3f} (regression).")
    tr = comparison.get("translation") or {}
    blind = [n for n, t in tr.items() if t["follow_ratio"] < 0.5]
    for n in blind:
        out.append(f"When every figure moves {tr[n]['shift_px']:.0f} px, the {n} model's predictions move only "
                   f"{tr[n]['mean_dx_px']:.2f} px: its head cannot see position, which caps its PCK.")
    f = comparison.get("failures")
    if f:
        c = f["counts"]
        unit = f.get("unit", "images")
        out.append(f"At threshold {f['threshold']:g} ({'swap-aware' if f.get('swap_aware') else 'standard'}), "
                   f"{c['A']} val {unit} fail only for regression (type A), {c['B']} only for the heatmap (B) and "
                   f"{c['C']} for both (C), of {f['num_images']}.")
    return out


def ablations(summary: dict[str, Any] | None) -> list[str]:
    if not summary:
        return []
    out = []
    for factor, data in summary["factors"].items():
        rows = data["rows"]
        if len(rows) < 2:
            continue
        # swap-aware PCK where the skeleton has symmetric pairs, else standard PCK
        key, label = ("pck_swap", "swap-aware PCK@0.05") if all(r.get("pck_swap") for r in rows) else \
            ("pck", "PCK@0.05")
        ranked = sorted(rows, key=lambda r: r[key]["0.05"], reverse=True)
        spread = ranked[0][key]["0.05"] - ranked[-1][key]["0.05"]
        length = f"{summary['steps']} optimiser steps" if summary.get("steps") else _epochs(summary["epochs"])
        out.append(f"{factor.replace('_', ' ')}: best is {ranked[0]['setting']} ({label} "
                   f"{ranked[0][key]['0.05']:.3f}), worst {ranked[-1]['setting']} "
                   f"({ranked[-1][key]['0.05']:.3f}); spread {spread:.3f} after {length}.")
    return out
