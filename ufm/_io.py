"""Atomic, no-clobber writing of results users keep (JSON, CSV, PNG)."""

from __future__ import annotations

import json
import os
import tempfile
import threading
from pathlib import Path

#: held while a file is being written, so an interrupt (see ``ufm._interrupt``) never cuts a write short
WRITE_LOCK = threading.RLock()


def check_writable(path, *, overwrite: bool) -> Path:
    """Refuse to overwrite an existing file unless asked; make sure the folder exists."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass --force to overwrite it")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory, not a file path")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def write_atomic(path, write) -> Path:
    """Call ``write(file_object)`` on a temporary file beside ``path``, then rename it onto ``path``.

    A crash or an interrupt leaves either the old file or the complete new one,
    never a partial file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with WRITE_LOCK:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                write(handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    return path


def write_json(path, data) -> Path:
    """Atomically write ``data`` as indented, key-sorted JSON (NaN/inf written as null)."""
    text = json.dumps(_finite(data), indent=2, sort_keys=True) + "\n"
    return write_atomic(path, lambda handle: handle.write(text.encode()))


def _finite(value):
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
