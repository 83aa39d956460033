"""Which keypoints mirror each other, found from their names.

A horizontal flip swaps the two keypoints of a symmetric pair, and a swap-aware score forgives exchanging them,
so readers derive the pairs from the keypoint names instead of asking the user to list them. Two names form a
pair when they differ only by the side marker, in one of these spellings:

* the word ``left`` / ``right`` anywhere, in any case: ``left_eye``/``right_eye``, ``LeftEye``/``RightEye``,
  ``eye_left``/``eye_right``, ``leftpaw``/``rightpaw``;
* a one-letter prefix followed by ``_``, ``-`` or a space: ``l_paw``/``r_paw``, ``L-ear``/``R-ear``;
* a one-letter suffix after ``_``, ``-`` or a space: ``paw_L``/``paw_R``, ``ear_l``/``ear_r``.

The rest of the two names must be identical (case included). A bare letter without a separator (``Lpaw``) is
not a side marker: it is too often the first letter of a word (``Rump``, ``Lip``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_WORD = re.compile(r"left|right", re.IGNORECASE)
_PREFIX = re.compile(r"^([lr])([_\- ])(.+)$", re.IGNORECASE)
_SUFFIX = re.compile(r"^(.+)([_\- ])([lr])$", re.IGNORECASE)


def _sides(name: str) -> list[tuple[str, str]]:
    """Every ``(key, side)`` reading of ``name``: ``key`` is the name with one side marker masked, ``side`` is
    ``"l"`` or ``"r"``. Masks differ per spelling, so a word marker never matches a one-letter one."""
    found = [(f"{name[:m.start()]}\0word\0{name[m.end():]}", m.group().lower()[0]) for m in _WORD.finditer(name)]
    if m := _PREFIX.match(name):
        found.append((f"\0prefix{m.group(2)}{m.group(3)}", m.group(1).lower()))
    if m := _SUFFIX.match(name):
        found.append((f"{m.group(1)}{m.group(2)}\0suffix", m.group(3).lower()))
    return found


def symmetric_pairs_from_names(names: Sequence[str]) -> tuple[tuple[int, int], ...]:
    """Index pairs ``(left, right)`` of keypoints whose names differ only by the side marker (module docstring).

    Invariants: each index appears in at most one pair; a masked name that several left (or several right)
    names share is ambiguous and yields no pair; pairs are sorted by their left index. Names without a
    counterpart (``nose``, or ``left_ear`` without ``right_ear``) are in no pair.
    """
    by_key: dict[str, dict[str, list[int]]] = {}
    for index, name in enumerate(names):
        for key, side in _sides(name):
            by_key.setdefault(key, {"l": [], "r": []})[side].append(index)
    pairs: list[tuple[int, int]] = []
    used: set[int] = set()
    for key in by_key:  # insertion order: the first name that reads as sided decides, so the result is stable
        lefts, rights = by_key[key]["l"], by_key[key]["r"]
        if len(lefts) == 1 and len(rights) == 1 and not {lefts[0], rights[0]} & used and lefts[0] != rights[0]:
            pairs.append((lefts[0], rights[0]))
            used.update((lefts[0], rights[0]))
    return tuple(sorted(pairs))
