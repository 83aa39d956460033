"""Writing files atomically: a temporary file beside the target, then a rename.

A process killed mid-write leaves the previous file (or none), never half a file. Every file loclab writes
goes through :func:`atomic_write_bytes`: checkpoints, JSON (annotation files, run files, predictions) and
heatmap snapshots. The live training logs are the exception, as a log must be: ``results.csv`` gets one row
appended per epoch (and is rewritten atomically when training starts) and TensorBoard writes its own event files
(:mod:`loclab.engine.logs`).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def atomic_write_bytes(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Call ``write(file_object)`` on a temp file beside ``path``, then rename it into place.

    The temp file is flushed to disk before the rename and gets the permissions of any file the user creates.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates 0600 files; give results the permissions of any file the user creates
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, obj: Any, *, indent: int | None = None, allow_nan: bool = False) -> Path:
    """Write ``obj`` as JSON plus a final newline, atomically; returns ``path``.

    ``indent=None`` writes one line with ``", "`` / ``": "`` separators (annotation files); run files use
    ``indent=1``. Keys keep the dict's order. ``allow_nan=False`` refuses NaN and infinities (a ``ValueError``),
    which are not JSON.
    """
    payload = (json.dumps(obj, indent=indent, allow_nan=allow_nan) + "\n").encode()
    atomic_write_bytes(Path(path), lambda f: f.write(payload))
    return Path(path)
