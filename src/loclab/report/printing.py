"""Numbers as they are printed: rounded in tables and summaries, free of float noise in printed JSON.

Files keep full precision (``metrics.json``, ``training_log.json``). What loclab prints for a person is rounded
(:func:`fixed`); JSON printed on stdout (``--json``) keeps every meaningful digit but not the last-bit noise of
binary floats, so ``0.8590000000000001`` prints as ``0.859`` (:func:`clean_floats`).
"""

from __future__ import annotations

import math
from typing import Any

SIGNIFICANT_DIGITS = 12  # far below float64's ~16, far above any metric's meaningful precision


def clean_float(value: float) -> float:
    """``value`` rounded to :data:`SIGNIFICANT_DIGITS` significant digits (NaN and infinities unchanged)."""
    if not math.isfinite(value) or value == 0:
        return value
    return float(f"{value:.{SIGNIFICANT_DIGITS}g}")


def clean_floats(value: Any) -> Any:
    """``value`` (JSON-like: dicts, lists, tuples, scalars) with every float passed through :func:`clean_float`."""
    if isinstance(value, bool):
        return value
    if isinstance(value, float):
        return clean_float(value)
    if isinstance(value, dict):
        return {k: clean_floats(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_floats(v) for v in value]
    return value


def fixed(value: float | int | None, digits: int = 3) -> str:
    """``value`` with ``digits`` decimals; ``""`` for ``None`` and ``"n/a"`` for NaN (undefined)."""
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    return f"{value:.{digits}f}"
