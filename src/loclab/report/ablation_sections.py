"""The report's ablation sections (anchor sets; heatmap resolution, sigma, skips): tables that speak from intervals.

Each number is the mean over the trial's seeds, written ``mean ± sd`` (sample standard deviation across seeds) when
there are several; next to it the pooled 95 % bootstrap interval over the validation images and the paired
difference from the baseline (``(n.s.)``: the interval contains 0). A setting is starred only when it is
significantly better than every other one (:mod:`loclab.study.ablation_intervals`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from loclab.report.document import Document, Heading, Paragraph, Table
from loclab.report.numbers_text import anchor_sizes, bracket, difference_cell, number, spread


def intervals_note(summary: dict[str, Any]) -> str:
    """One sentence on what the table's intervals cover (or why there are none)."""
    if summary.get("intervals_note"):
        return f" No intervals: {summary['intervals_note'].removeprefix('no intervals: ')}."
    boot = summary.get("bootstrap")
    if not boot:
        return " No intervals were recorded for this grid, so no setting is ranked."
    seeds = summary.get("seeds") or 1
    spread_text = (f"; ± is the sample standard deviation across the {seeds} seeds, and the interval is that of the "
                   "seed-averaged number (each resample scored by every seed's run)" if seeds > 1 else
                   "; one training seed per setting, so the intervals do not cover training noise")
    return (f" Intervals: 95 % percentile bootstrap over the validation images ({boot['resamples']} resamples), "
            f"differences paired on the same images, (n.s.) where the interval contains 0{spread_text}.")


def reused_note(ablation: dict[str, Any], grid: Path, out: Path) -> str:
    """Which trials are a finished run of the study standing in (same config and data), for a caption."""
    notes = []
    for name, run in (ablation.get("reused_runs") or {}).items():
        path = (grid / run).resolve()
        shown = path.relative_to(out.resolve()) if path.is_relative_to(out.resolve()) else path
        notes.append(f"; trial {name} is the run in {shown}/ (identical config and data), not trained twice")
    return "".join(notes)


def _length(summary: dict[str, Any]) -> str:
    """How long each trial trained: optimiser steps (own data) or epochs."""
    if summary.get("steps"):
        return f"{summary['steps']} optimiser steps"
    return f"{summary['epochs']} epoch{'' if summary['epochs'] == 1 else 's'}"


def _seed_values(row: dict[str, Any], key: str, sub: str | None = None) -> list[Any]:
    """The per-seed values of ``row[key]`` (``[sub]``); a row written before seeds existed is its own one seed."""
    seeds = row.get("seeds") or [row]
    return [(s.get(key) or {}).get(sub) if sub is not None else s.get(key) for s in seeds]


def anchor_ablation_section(doc: Document, summary: dict[str, Any] | None, grid: Path, out: Path) -> None:
    doc.add(Heading("Anchor ablation", 3))
    if not summary:
        doc.add(Paragraph("The anchor ablation has not run."))
        return
    a = summary
    classes = list(a["rows"][0]["AP50"])
    rows, buckets = [], ("small", "medium", "large")
    for r in a["rows"]:
        table = r.get("scale_specialisation") or {}
        buckets = table.get("buckets", buckets)
        counts = table.get("confident", {}).get("tp_counts")
        diag = "/".join(str(counts[i][i]) for i in range(min(len(counts), len(counts[0])))) if counts else "—"
        bpr = r.get("best_possible_recall") or {}
        rows.append((r["trial"], anchor_sizes(r["anchor_sizes"]), spread(_seed_values(r, "mAP50")),
                     bracket(r.get("mAP50_ci95")) or "—", difference_cell((r.get("vs_default") or {}).get("mAP50")),
                     *(spread(_seed_values(r, "AP50", c)) for c in classes),
                     diag, ", ".join(number(x, 2) for x in bpr.get("per_bucket", [])) or "—"))
    diagonal = "/".join(f"S{i + 1}-{b}" for i, b in enumerate(buckets))
    length = _length(a)
    seeds = a.get("seeds") or 1
    caption = f"Each anchor set trained for {length} with the same recipe"
    caption += f", {seeds} seeds each" if seeds > 1 else ""
    if a.get("descriptions"):  # own data: default vs fitted anchors
        described = "; ".join(f"{name}: {text}" for name, text in a["descriptions"].items())
        caption += f" ({described}); each trial's size buckets follow its own anchors"
    caption += reused_note(a, grid, out) + "." + intervals_note(a)
    doc.add(Table(("trial", "anchors", "mAP@0.5", "95 % CI", "Δ mAP@0.5 vs default [95 % CI]", *classes,
                   f"TPs {diagonal}", "best possible recall"), tuple(rows), caption=caption))


def keypoint_ablation_section(doc: Document, summary: dict[str, Any] | None, grid: Path, out: Path) -> None:
    doc.add(Heading("Ablations: heatmap resolution, sigma, skip connections", 3))
    if not summary:
        doc.add(Paragraph("The keypoint ablation has not run."))
        return
    a = summary
    length = _length(a)
    seeds = a.get("seeds") or 1
    doc.add(Paragraph(f"Judged by {a['judged_by']}. Each setting trained for {length}"
                      f"{f' with {seeds} seeds' if seeds > 1 else ''}{reused_note(a, grid, out)}. ★ marks a setting "
                      "that is significantly better than every other setting of its factor (paired bootstrap); "
                      "without one, no setting is ranked." + intervals_note(a)))
    rows = []
    judged_label = "judged metric"
    for factor, data in a["factors"].items():
        judged = data.get("judged") or {}
        key, at = judged.get("metric", "pck"), judged.get("threshold", "0.05")
        judged_label = f"{'swap-aware PCK' if key == 'pck_swap' else 'PCK'}@{at}"
        versus = data.get("vs_baseline") or {}
        for r in data["rows"]:
            # a summary written before intervals existed named its top setting "best" without any test
            star = " ★" if data.get("judged") and r["setting"] == data.get("best") else ""
            baseline = " (baseline)" if r["setting"] == data.get("baseline") else ""
            rows.append((factor.replace("_", " "), r["setting"] + baseline + star,
                         *(spread(_seed_values(r, "pck", t)) for t in ("0.05", "0.1")),
                         *(spread(_seed_values(r, "pck_swap", t)) if r.get("pck_swap") else "—"
                           for t in ("0.05", "0.1")),
                         bracket((r.get(f"{key}_ci95") or {}).get(at)) or "—",
                         difference_cell(versus.get(r["setting"])) if r["setting"] in versus else "—",
                         number(r.get("val_mse"), 5)))
    doc.add(Table(("factor", "setting", "PCK@0.05", "PCK@0.1", "swap-aware @0.05", "swap-aware @0.1",
                   f"{judged_label} 95 % CI", f"Δ {judged_label} vs baseline [95 % CI]", "val MSE (secondary)"),
                  tuple(rows)))
    doc.figure(grid / "visualizations" / "ablation.png",
               "Ablations judged by PCK; error bars: 95 % bootstrap intervals" +
               (", dots: the individual seeds" if seeds > 1 else ""))
