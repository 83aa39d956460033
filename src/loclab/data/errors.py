"""Errors for bad input data, and the bookkeeping that turns bad records into one clear message.

Every problem with user data surfaces as a :class:`DataError` whose message is one paragraph naming the file
and the record, e.g.::

    /data/detection/train_annotations.json: annotation id 17 (image 3 "000003.png"): box [10, 5, 8, 40] has x2 <= x1

so it never shows up later as a stack trace from deep inside a DataLoader worker.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from loclab.errors import LoclabError


class DataError(LoclabError, ValueError):
    """Input data that loclab refuses to use; the message names the file and the record."""


class DataWarning(UserWarning):
    """Bad records were skipped (``skip_bad=True``); the message gives the count and the first problem."""


class RecordError(Exception):
    """One record is bad. Raised by field checks, caught by the reader, which adds the file and record name."""


class ProblemLog:
    """Collects record-level problems of one annotation file and decides what to do with them.

    Readers drop a bad record and go on either way, so both modes validate the same way; at the end
    :meth:`finish` either raises the first problem (``skip_bad=False``) or warns once with a count and
    returns every message (``skip_bad=True``). File-level problems always raise at once (:meth:`fail`).
    """

    def __init__(self, file: Path, skip_bad: bool) -> None:
        self.file = Path(file)
        self.skip_bad = skip_bad
        self.messages: list[str] = []

    def fail(self, what: str) -> DataError:
        """A file-level problem: return the error for the caller to raise (``raise log.fail(...)``)."""
        return DataError(f"{self.file}: {what}")

    def record(self, where: str, what: str) -> None:
        """Note that the record described by ``where`` is bad because of ``what``; the caller drops it."""
        self.messages.append(f"{self.file}: {where}: {what}")

    def finish(self) -> tuple[str, ...]:
        """Raise (strict) or warn (skip_bad) about the collected problems; returns the skipped messages."""
        if not self.messages:
            return ()
        first, more = self.messages[0], len(self.messages) - 1
        if not self.skip_bad:
            end = "" if first.endswith((".", ")")) else "."
            tail = f" ({more} more problem(s) found.)" if more else ""
            raise DataError(f"{first}{end}{tail} Fix the record, or skip bad records with a warning and a count "
                            "(--skip-bad on the command line, skip_bad=True in Python).")
        summary = f"{self.file}: skipped {len(self.messages)} bad record(s); first: {first}"
        warnings.warn(summary, DataWarning, stacklevel=3)
        return tuple(self.messages)
