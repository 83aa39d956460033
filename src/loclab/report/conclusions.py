"""Conclusions derived from measured numbers. Every sentence is computed; none is canned.

Each function takes the parsed JSON files of a study and returns sentences (an empty list when the
numbers it needs are missing), so the report never states something the run did not measure.

Comparisons speak from the intervals (:mod:`loclab.report.numbers_text`): a difference is stated as a ranking only
when its paired 95 % interval excludes 0, else as "no significant difference (Δ = …, 95 % CI […, …])"; where no
interval was recorded the numbers are given side by side without a ranking.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from loclab.report.numbers_text import ci, delta, no_difference
from loclab.report.seeds import SEED_DETECTION_MAP, SEED_REGRESSION_PCK

NO_INTERVAL = "no interval recorded, so no ranking"


def _epochs(n: int) -> str:
    return f"{n} epoch" + ("" if n == 1 else "s")


def _pct(x: float) -> str:
    return f"{100 * x:.0f} %"


def _length(summary: dict[str, Any]) -> str:
    return f"{summary['steps']} optimiser steps" if summary.get("steps") else _epochs(summary["epochs"])


def _seeds(summary: dict[str, Any]) -> str:
    """``" (means of 3 seeds)"`` for a grid trained with several seeds."""
    n = summary.get("seeds") or 1
    return f" (means of {n} seeds)" if n > 1 else ""


def _binding(records: Mapping[str, dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    """The comparison a ranking hangs on: one that is not significant if there is one, else the smallest
    difference."""
    failing = {k: r for k, r in records.items() if not r["significant"]}
    return min((failing or records).items(), key=lambda kv: abs(kv[1]["delta"] or 0.0))


def _class_ranking(ap: dict[str, float], ranking: dict[str, Any] | None) -> str:
    """AP per class, and which class is significantly the easiest / hardest (``ranking``:
    :func:`loclab.evaluation.significance.class_extremes`)."""
    listed = ", ".join(f"{c} {v:.3f}" for c, v in ap.items())
    if len(ap) < 2:
        return f"AP {listed}"
    if len(set(ap.values())) == 1:
        return f"AP per class {listed}, all equal"
    if not ranking:
        return f"AP per class {listed} ({NO_INTERVAL})"
    parts = []
    for side in ("easiest", "hardest"):
        records = ranking.get(f"{side}_vs") or {}
        if not records:
            continue
        other, record = _binding(records)
        top = max(ap, key=ap.get) if side == "easiest" else min(ap, key=ap.get)
        if ranking.get(side):
            parts.append(f"{ranking[side]} is significantly the {side} class (vs {other}: {delta(record)})")
        elif record["significant"]:  # significant, but the other way round (cannot happen for the extreme value)
            parts.append(f"no class is significantly the {side}: {top} vs {other}, {delta(record)}")
        else:
            parts.append(f"no class is significantly the {side}: {top} vs {other}, {no_difference(record)}")
        if len(ap) == 2:  # one comparison says it all
            break
    return f"AP per class {listed}; " + "; ".join(parts)


def detection(metrics: dict[str, Any] | None, quote_reports: bool = True,
              class_ranking: dict[str, Any] | None = None) -> list[str]:
    """``quote_reports``: compare with the course reports' mAP (the course's shapes only). ``class_ranking``:
    :func:`loclab.evaluation.significance.class_extremes` of the run (None: the classes are not ranked)."""
    if not metrics or metrics.get("mAP50") is None:
        return []
    ap = {name: value for name, value in metrics["AP50"].items() if value is not None}  # None: no val boxes
    if not ap:
        return []
    quoted = (f", against {' and '.join(f'{v:.2f}' for v in SEED_DETECTION_MAP.values())} in the original reports"
              if quote_reports else "")
    interval = ci(metrics.get("mAP50_ci95"))
    convention = f"VOC all-point; {interval}" if interval else "VOC all-point"
    out = [f"The detector reached mAP@0.5 = {metrics['mAP50']:.3f} ({convention}) "
           f"on {metrics['num_images']} validation images{quoted}; {_class_ranking(ap, class_ranking)}."]
    m50, m70 = metrics["mAP50"], metrics.get("mAP70")
    if m70 is not None and m50 >= 0.3:
        kept = m70 / m50
        verdict = ("box precision, not finding the objects, is what remains to gain" if kept < 0.8
                   else "the boxes that are found are also tight")
        out.append(f"At the stricter IoU 0.7, mAP is {m70:.3f} ({100 * kept:.0f} % of mAP@0.5): {verdict}.")
    m5095 = metrics.get("mAP50_95")
    if m5095 is not None:
        interval = ci(metrics.get("mAP50_95_ci95"))
        ap75 = metrics.get("mAP75")
        out.append(f"Averaged over IoU 0.5 to 0.95 (COCO), AP is {m5095:.3f}{f' ({interval})' if interval else ''}"
                   + (f", AP@0.75 {ap75:.3f}" if ap75 is not None else "") + ".")
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
    default = described.get("default", "the default anchors")
    length = f"after {_length(summary)}{_seeds(summary)}"
    for name, r in rows.items():
        if name == "default":
            continue
        these = described[name][0].upper() + described[name][1:] if name in described else f"Anchors {r['anchor_sizes']}"
        versus = r.get("vs_default")
        if not versus:
            out.append(f"{these}: mAP@0.5 {r['mAP50']:.3f} vs {base['mAP50']:.3f} with {default} {length} "
                       f"(Δ = {r['mAP50'] - base['mAP50']:+.3f}; {NO_INTERVAL}).")
            continue
        record = versus["mAP50"]
        headline = (f"{these} changed mAP@0.5 by {delta(record)} vs {default} {length}" if record["significant"]
                    else f"{these} vs {default}: {no_difference(record)} in mAP@0.5 {length}")
        changed = {c: rec for c, rec in versus.get("AP50", {}).items() if rec["significant"]}
        per_class = ("; per class, significant changes: " + ", ".join(f"{c} {delta(rec)}" for c, rec in changed.items())
                     if changed else "; no class's AP@0.5 changed significantly")
        out.append(headline + per_class + ".")
    return out


def keypoints(comparison: dict[str, Any] | None, quote_reports: bool = True) -> list[str]:
    """``quote_reports``: compare with the course reports' PCK (the course's stick figures only)."""
    if not comparison:
        return []
    models, ceiling = comparison["models"], comparison["ceiling"]
    hm, reg = models["heatmap"], models["regression"]
    quoted = (f" (the reports' regression reached {' and '.join(f'{v:.2f}' for v in SEED_REGRESSION_PCK.values())} "
              "at 0.2)" if quote_reports else "")
    differences = comparison.get("differences") or {}
    versus = differences.get("heatmap_vs_regression") or {}
    out = [f"Heatmap PCK@0.05 / @0.2 = {hm['pck']['0.05']:.3f} / {hm['pck']['0.2']:.3f} vs regression "
           f"{reg['pck']['0.05']:.3f} / {reg['pck']['0.2']:.3f}{quoted}: "
           f"{_per_threshold(versus.get('pck'), 'the heatmap model', 'regression')}."]
    if ceiling:
        out.append(_ceiling_sentence(ceiling, comparison.get("guessed_labels"),
                                     (differences.get("heatmap_vs_ceiling") or {}).get("pck"), hm["pck"])
                   if "guessed_labels" in comparison else _old_ceiling_sentence(ceiling, hm["pck"]))
    swap = _swap_difference(versus.get("pck_swap"))
    if ceiling:
        out.append(f"Swap-aware PCK, which forgives the unknowable hand label, is {hm['pck_swap']['0.05']:.3f} "
                   f"(heatmap) and {reg['pck_swap']['0.05']:.3f} (regression) at 0.05{swap}.")
    if not ceiling and hm.get("pck_swap") and reg.get("pck_swap"):
        pairs = ", ".join("/".join(pair) for pair in comparison.get("swap_pairs") or [])
        out.append(f"Swap-aware PCK@0.05, which lets the keypoints of each symmetric pair ({pairs}) match in either "
                   f"order, is {hm['pck_swap']['0.05']:.3f} (heatmap) and {reg['pck_swap']['0.05']:.3f} "
                   f"(regression){swap}.")
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


def _per_threshold(records: Mapping[str, dict[str, Any]] | None, a: str, b: str) -> str:
    """``a`` against ``b`` at every threshold, from paired records of ``a - b`` (``{threshold: record}``)."""
    if not records:
        return NO_INTERVAL
    signs = {(r["delta"] > 0) for r in records.values() if r["significant"]}
    if len(signs) == 1 and all(r["significant"] for r in records.values()):
        word = "above" if signs.pop() else "below"
        first, last = next(iter(records)), list(records)[-1]
        return (f"{a} is significantly {word} {b} at every threshold ({first}: {delta(records[first])}; "
                f"{last}: {delta(records[last])})")
    return "; ".join(f"at {t}, " + (f"{a} is significantly {'above' if r['delta'] > 0 else 'below'} {b} ({delta(r)})"
                                    if r["significant"] else no_difference(r)) for t, r in records.items())


def _swap_difference(records: Mapping[str, dict[str, Any]] | None) -> str:
    """``"; heatmap minus regression: Δ = …"`` at 0.05, or its no-significant-difference form."""
    record = (records or {}).get("0.05")
    if not record:
        return ""
    return f"; heatmap minus regression: {delta(record)}" if record["significant"] else f"; {no_difference(record)}"


def _old_ceiling_sentence(guessed: dict[str, float], pck: dict[str, float]) -> str:
    """A comparison written before loclab computed the real ambiguity ceiling: its ``ceiling`` holds what a perfect
    localiser guessing the hand labels expects, which hedging models can beat, so it is not called a ceiling."""
    values = " / ".join(f"{guessed[t]:.3f}" for t in guessed)
    return (f"A perfect localiser that guesses the identically drawn hands' labels expects {values} standard PCK; the "
            f"heatmap model scores {' / '.join(f'{pck[t]:.3f}' for t in guessed)} (this comparison was written before "
            "loclab computed the ambiguity ceiling, the best any model can expect by hedging between close hands, so "
            "a model that hedges can score above these).")


def _ceiling_sentence(ceiling: dict[str, float], guessed: dict[str, float] | None,
                      versus: Mapping[str, dict[str, Any]] | None, pck: dict[str, float]) -> str:
    """The ambiguity ceiling (best expected standard PCK with coin-flip hand labels), what guessing the labels gives,
    and where the heatmap model is against the ceiling (``versus``: paired records of heatmap minus ceiling)."""
    values = " / ".join(f"{ceiling[t]:.3f}" for t in ceiling)
    out = (f"With the identically drawn hands' labels a coin flip, no model can expect more than {values} standard "
           f"PCK (at {' / '.join(ceiling)}): the best prediction puts both hands at their midpoint wherever that is "
           f"within the threshold of both")
    if guessed:
        out += (f" (a perfect localiser that guesses the labels expects "
                f"{' / '.join(f'{guessed[t]:.3f}' for t in guessed)})")
    if not versus:
        return (f"{out}; the heatmap model scores {' / '.join(f'{pck[t]:.3f}' for t in ceiling)} "
                f"({NO_INTERVAL}).")
    return f"{out}; against that ceiling, {_per_threshold(versus, 'the heatmap model', 'the ceiling')}."


def ablations(summary: dict[str, Any] | None) -> list[str]:
    if not summary:
        return []
    out = []
    length = f"after {_length(summary)}{_seeds(summary)}"
    for factor, data in summary["factors"].items():
        rows = data["rows"]
        if len(rows) < 2:
            continue
        name = factor.replace("_", " ")
        judged = data.get("judged")
        if not judged:  # a summary without intervals: the numbers side by side, no ranking
            key = "pck_swap" if all(r.get("pck_swap") for r in rows) else "pck"
            label = "swap-aware PCK@0.05" if key == "pck_swap" else "PCK@0.05"
            values = ", ".join(f"{r['setting']} {r[key]['0.05']:.3f}" for r in rows)
            out.append(f"{name}: {label} {values} {length} ({NO_INTERVAL}).")
            continue
        key, t = judged["metric"], judged["threshold"]
        label = f"{'swap-aware PCK' if key == 'pck_swap' else 'PCK'}@{t}"
        value = {r["setting"]: r for r in rows}
        best = data.get("best")
        if best:
            others = "; ".join(f"vs {s}: {delta(r)}" for s, r in data["best_vs"].items())
            out.append(f"{name}: {best} is the best setting ({label} {value[best][key][t]:.3f}), significantly better "
                       f"than every other ({others}) {length}.")
            continue
        if data.get("vs_baseline"):  # each setting minus the baseline setting
            pairs = [(s, data["baseline"], r) for s, r in data["vs_baseline"].items()]
        else:  # the baseline is not among the settings: the top setting minus each other one
            top = max(value, key=lambda s: value[s][key][t])
            pairs = [(top, s, r) for s, r in (data.get("best_vs") or {}).items()]
        parts = [f"{a} vs {b}: " + (f"{'higher' if r['delta'] > 0 else 'lower'} {label} ({delta(r)})"
                                    if r["significant"] else no_difference(r)) for a, b, r in pairs]
        out.append(f"{name} ({label}): {'; '.join(parts)} {length}; no setting is significantly better than all "
                   "the others.")
    return out
