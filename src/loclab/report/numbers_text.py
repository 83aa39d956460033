"""How the report writes numbers: plain values, intervals, paired differences, seed spreads, anchor sizes (one
wording everywhere).

Records come from :mod:`loclab.evaluation.significance`: an interval is ``[low, high]`` (``None`` where undefined), a
difference ``{"delta", "ci95": [low, high], "significant"}``. A difference whose interval contains 0 is written as
"no significant difference (Δ = …, 95 % CI […, …])", never as a ranking.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from loclab.analysis.ablation import seed_spread


def number(x: Any, digits: int = 3) -> str:
    """``x`` with ``digits`` decimals, ``"—"`` for ``None``."""
    return "—" if x is None else f"{x:.{digits}f}"


def anchor_sizes(sizes: list | None, digits: int = 1) -> str:
    """Anchor sizes (or ratios) as a nested list rounded to ``digits``: fitted anchors are k-means centres with
    many decimals; the course's whole-pixel anchors print as before."""
    return str(sizes) if sizes is None else str([[round(a, digits) for a in scale] for scale in sizes])


def _number(x: float | None, digits: int, signed: bool) -> str:
    if x is None:
        return "n/a"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def ci(pair: Sequence[float | None] | None, digits: int = 3, signed: bool = False) -> str:
    """``"95 % CI [0.912, 0.951]"``; ``""`` without an interval."""
    if not pair:
        return ""
    return f"95 % CI [{_number(pair[0], digits, signed)}, {_number(pair[1], digits, signed)}]"


def bracket(pair: Sequence[float | None] | None, digits: int = 3, signed: bool = False) -> str:
    """``"[0.912, 0.951]"`` for a table cell; ``""`` without an interval."""
    if not pair:
        return ""
    return f"[{_number(pair[0], digits, signed)}, {_number(pair[1], digits, signed)}]"


def delta(record: Mapping[str, Any], digits: int = 3) -> str:
    """``"Δ = +0.021, 95 % CI [+0.004, +0.039]"``."""
    return f"Δ = {_number(record['delta'], digits, True)}, {ci(record['ci95'], digits, signed=True)}"


def no_difference(record: Mapping[str, Any], digits: int = 3) -> str:
    """``"no significant difference (Δ = +0.002, 95 % CI [-0.010, +0.014])"``."""
    return f"no significant difference ({delta(record, digits)})"


def difference_cell(record: Mapping[str, Any] | None, digits: int = 3) -> str:
    """A table cell: ``"+0.021 [+0.004, +0.039]"``, with ``" (n.s.)"`` when the interval contains 0."""
    if not record:
        return "—"
    cell = f"{_number(record['delta'], digits, True)} {bracket(record['ci95'], digits, signed=True)}"
    return cell if record["significant"] else f"{cell} (n.s.)"


def spread(values: Sequence[float | None], digits: int = 3) -> str:
    """Mean of per-seed values, with ``± sd`` when there are several: ``"0.959 ± 0.004"`` (sd: the sample standard
    deviation, :func:`~loclab.analysis.ablation.seed_spread`)."""
    summary = seed_spread(values)
    if summary is None:
        return "—"
    if summary["sd"] is None:
        return f"{summary['mean']:.{digits}f}"
    return f"{summary['mean']:.{digits}f} ± {summary['sd']:.{digits}f}"
