"""Atomic, no-clobber writing of results users keep (JSON, CSV, PNG).

Contract of every output of the package (CLIs and experiments):

- :func:`check_writable` runs *before* computing: it refuses an existing file (unless
  overwriting), a directory, an empty name, and a folder where no file can be created
  (read-only, ``/proc``, a path through a regular file), each with one readable line.
- :func:`write_atomic` writes the bytes to a temporary file beside the target and then gives
  it the final name in one step, so a crash or an interrupt leaves the old file or the whole
  new one, never a partial file. Without ``overwrite`` the final name is created
  *exclusively* (``os.link`` fails if the name exists), so two concurrent writers never
  replace each other's result: the one that loses the race keeps its result under the next
  free sibling name (``r.json`` -> ``r.1.json``) and says so on stderr. With ``overwrite``
  the file is replaced atomically (``os.replace``).
- Files get the mode ``0o666 & ~umask`` (like any file the user creates), not mkstemp's 0600.
- Output values are normalised by :func:`clean`: ``-0.0`` is written as ``0.0`` and, in JSON,
  NaN/inf as ``null``.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import math
import numbers
import os
import secrets
import sys
import threading
from pathlib import Path

#: held while a file is being written, so an interrupt (see ``ufm._interrupt``) never cuts a write short
WRITE_LOCK = threading.RLock()


def check_writable(path, *, overwrite: bool, what: str = "output") -> Path:
    """Make sure a file can be written at ``path`` before any computation; returns ``Path(path)``.

    Raises ``ValueError`` for an empty name, ``IsADirectoryError`` for a directory,
    ``FileExistsError`` for an existing file unless ``overwrite``, and ``NotADirectoryError`` /
    ``PermissionError`` where no file can be created. Each message is one line that starts with
    ``what`` (the flag, e.g. ``"--json"``) and names the path. Creates missing parent folders.
    """
    text = os.fspath(path)
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{what} must be a file name, got {text!r}")
    path = Path(text)
    if path.is_dir() or text.endswith(os.sep):
        raise IsADirectoryError(f"{what} {text} is a directory, not a file path")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{what} {path} already exists; pass --force to overwrite it")
    check_folder(path.parent, what=what)
    return path


def check_folder(folder, *, what: str = "output") -> Path:
    """Create ``folder`` if needed and prove a file can be created in it (a probe file, removed).

    Raises ``NotADirectoryError`` / ``PermissionError`` with one line starting with ``what``.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{what}: {folder} is a file, not a folder; choose another output location")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise PermissionError(f"{what}: cannot create the folder {folder}: {error.strerror or error}") from None
    try:
        fd, probe = _create_temporary(folder, ".ufm-write-probe")
    except OSError as error:
        raise PermissionError(f"{what}: cannot write in {folder}: {error.strerror or error}") from None
    os.close(fd)
    os.unlink(probe)
    return folder


def _create_temporary(folder: Path, stem: str) -> tuple[int, str]:
    """A new hidden file in ``folder`` opened for writing, mode ``0o666 & ~umask`` (the kernel applies it)."""
    for _ in range(100):
        name = os.path.join(folder, f"{stem}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666), name
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(folder))


def sibling(path: Path, k: int) -> Path:
    """The ``k``-th alternative name of ``path``: ``r.json`` -> ``r.1.json`` (``k`` before the suffix)."""
    return path.with_name(f"{path.stem}.{k}{path.suffix}") if path.suffix else path.with_name(f"{path.name}.{k}")


def _claim(tmp: str, path: Path) -> Path:
    """Give the finished temporary file ``tmp`` a final name that did not exist: ``path`` or the
    first free :func:`sibling`. Exclusive: ``os.link`` fails if the name exists (where hard links are
    not supported, the name is reserved with ``O_EXCL`` and then replaced atomically)."""
    for k in range(10_000):
        target = path if k == 0 else sibling(path, k)
        try:
            os.link(tmp, target)
            return target
        except FileExistsError:
            continue
        except OSError as error:
            if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                raise
        try:  # no hard links on this file system: reserve the name, then replace it in one step
            os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        os.replace(tmp, target)
        return target
    raise FileExistsError(f"{path} and its first 9999 alternative names all exist")


def write_atomic(path, write, *, overwrite: bool = False) -> Path:
    """Call ``write(file_object)`` on a temporary file beside ``path`` and give it its final name.

    Returns the path actually written: ``path``, or, when ``overwrite`` is False and
    ``path`` was created by someone else meanwhile, the first free sibling (announced on
    stderr). A crash or an interrupt leaves no partial and no temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with WRITE_LOCK:
        fd, tmp = _create_temporary(path.parent, f".{path.name}")
        try:
            with os.fdopen(fd, "wb") as handle:
                write(handle)
                handle.flush()
                os.fsync(handle.fileno())
            if overwrite:
                os.replace(tmp, path)
                return path
            written = _claim(tmp, path)
            os.unlink(tmp)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    if written != path:
        print(
            f"warning: {path} was created by another writer while this one computed; this result is kept as {written}",
            file=sys.stderr,
            flush=True,
        )
    return written


def write_bytes(path, data: bytes, *, overwrite: bool = False) -> Path:
    """:func:`write_atomic` of ready bytes."""
    return write_atomic(path, lambda handle: handle.write(data), overwrite=overwrite)


def write_json(path, data, *, overwrite: bool = False) -> Path:
    """Atomically write ``data`` as indented, key-sorted JSON (:func:`clean`: NaN/inf as null, -0.0 as 0.0)."""
    return write_bytes(path, json_bytes(data), overwrite=overwrite)


def json_bytes(data) -> bytes:
    """``data`` as indented, key-sorted JSON bytes, values :func:`clean` (NaN/inf as null)."""
    return (json.dumps(clean(data, for_json=True), indent=2, sort_keys=True) + "\n").encode()


def clean(value, *, for_json: bool = False):
    """``value`` with every float ``-0.0`` replaced by ``0.0`` (and NaN/inf by None if ``for_json``),
    through dicts, lists and tuples; numpy floats become Python floats."""
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        value = float(value) + 0.0  # -0.0 + 0.0 == +0.0
        if for_json and not math.isfinite(value):
            return None
        return value
    if isinstance(value, dict):
        return {k: clean(v, for_json=for_json) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v, for_json=for_json) for v in value]
    return value


def csv_bytes(rows: list[dict], *, lineterminator: str = "\r\n") -> bytes:
    """``rows`` (dicts with the keys of the first) as CSV bytes with a header, values :func:`clean`."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator=lineterminator)
    writer.writeheader()
    writer.writerows(clean(rows))
    return buffer.getvalue().encode()
