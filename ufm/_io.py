"""Atomic, no-clobber writing of results users keep (JSON, CSV, PNG).

Contract of every output of the package (CLIs and experiments):

- :func:`check_writable` runs *before* computing: it refuses an existing file (unless
  overwriting), a directory, an empty name, a name longer than the file system allows, a block
  device, a socket and a symbolic link to nothing (unless overwriting: then the link is replaced),
  and a folder where no file can be created (read-only, ``/proc``, a path through a regular
  file), each with one readable line naming the flag.
- An existing character device or FIFO (``/dev/null``, ``/dev/stdout``, a named pipe), also
  through a symbolic link, is written *into*, never replaced, with or without ``--force``
  (nothing is clobbered); a FIFO waits for its reader. Only a regular file (or a symbolic link)
  is ever replaced.
- :func:`write_atomic` writes the bytes to a temporary file beside the target and then gives
  it the final name in one step, so a crash or an interrupt leaves the old file or the whole
  new one, never a partial file. Without ``overwrite`` the final name is created
  *exclusively* (``os.link`` fails if the name exists), so two concurrent writers never
  replace each other's result: the one that loses the race keeps its result under the next
  free sibling name (``r.json`` -> ``r.1.json``) and says so on stderr. With ``overwrite``
  the file is replaced atomically (``os.replace``). :func:`write_all` writes several files
  together: all to temporaries first, then all renamed.
- A result that cannot be written (disk full, a read-only file system, its folder replaced by
  a file, ``/dev/full``) is never lost silently: :class:`NotWrittenError`, one line naming the
  flag, the path and the reason, and the result kept in a new file (several: a new folder) in
  the system's temporary folder (``tempfile.gettempdir()``), named in that line; no temporary
  file is left beside the target. The command lines print that line and exit with
  :data:`EXIT_NOT_WRITTEN` (:func:`deliver`).
- Reports on standard output (:func:`emit`) never end in a traceback: characters the stream
  cannot encode (``PYTHONIOENCODING=ascii``) get ASCII stand-ins, and a failing stream (``/dev/full``,
  a closed pipe) is reported by :func:`deliver` after the result file is written.
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
import stat
import sys
import tempfile
import threading
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

#: held while a file is being written, so an interrupt (see ``ufm._interrupt``) never cuts a write short
WRITE_LOCK = threading.RLock()
#: exit code of every command line whose result was computed but could not be written (a file, or the
#: report on standard output): one ``error:`` line says which, why, and where the result was kept
EXIT_NOT_WRITTEN = 4
#: the kinds of :func:`_kind` that :func:`check_writable` lets a result replace (with ``overwrite``)
_REPLACEABLE = ("missing", "file", "dangling link")
#: ``.<12 hex digits>.tmp``: what a temporary name adds to its stem (:func:`_create_temporary`)
_TEMP_TAIL = len(".0123456789ab.tmp")


class NotWrittenError(OSError):
    """A computed result that could not be written where asked. ``str()`` is one line naming the flag,
    the path, the reason and where the result was kept; ``kept`` is that path (None: nowhere)."""

    def __init__(self, message: str, kept: Path | None = None):
        super().__init__(message)
        self.kept = kept


def _mode_kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "folder"
    if stat.S_ISCHR(mode) or stat.S_ISFIFO(mode):
        return "stream"  # a character device or FIFO: written into, never replaced
    if stat.S_ISBLK(mode):
        return "block device"
    return "socket" if stat.S_ISSOCK(mode) else "special file"


def _kind(path) -> str:
    """What is at ``path``, following symbolic links: ``"missing"``, ``"file"``, ``"folder"``, ``"stream"``
    (a character device or FIFO), ``"dangling link"``, ``"block device"``, ``"socket"`` or ``"special file"``.
    Raises ``OSError`` where the path cannot even be looked at (too long, no permission)."""
    try:
        return _mode_kind(os.stat(path).st_mode)
    except FileNotFoundError:
        return "dangling link" if os.path.islink(path) else "missing"
    except NotADirectoryError:  # through a regular file: check_folder names it
        return "missing"


def _reason(error: BaseException) -> str:
    """An OSError's reason without the (temporary) file name: ``[Errno 28] No space left on device``."""
    if isinstance(error, OSError) and error.errno is not None and error.strerror:
        return f"[Errno {error.errno}] {error.strerror}"
    return str(error)


def _name_max(folder: Path) -> int:
    """The longest file name (bytes) the file system of ``folder`` (or of its nearest existing parent) allows."""
    for place in (folder, *folder.parents):
        try:
            return os.pathconf(place, "PC_NAME_MAX")
        except (OSError, ValueError):
            continue
    return 255


def _check_name_lengths(text: str, what: str) -> None:
    """Every part of the path ``text`` fits the file system's name limit; ValueError naming ``what`` if not."""
    path = Path(text)
    limit = _name_max(path.parent)
    for part in path.parts:
        size = len(os.fsencode(part))
        if size > limit:
            shown = part if len(part) <= 40 else f"{part[:40]}..."
            raise ValueError(f"{what}: the name {shown} is {size} bytes long; this file system allows at most {limit}")


def check_writable(path, *, overwrite: bool, what: str = "output") -> Path:
    """Make sure a file can be written at ``path`` before any computation; returns ``Path(path)``.

    Raises ``ValueError`` for an empty name or one too long for the file system, ``IsADirectoryError``
    for a directory, ``FileExistsError`` for an existing file or symbolic link unless ``overwrite``
    and for a block device or socket always, and ``NotADirectoryError`` / ``PermissionError`` where
    no file can be created. A character device or FIFO passes (it is written into, not replaced) if
    it may be written. Each message is one line that starts with ``what`` (the flag, e.g.
    ``"--json"``) and names the path. Creates missing parent folders.
    """
    text = os.fspath(path)
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{what} must be a file name, got {text!r}")
    _check_name_lengths(text, what)
    path = Path(text)
    try:
        kind = _kind(path)
    except OSError as error:
        raise PermissionError(f"{what} {text}: cannot be used as an output: {_reason(error)}") from None
    if kind == "folder" or text.endswith(os.sep):
        raise IsADirectoryError(f"{what} {text} is a directory, not a file path")
    if kind == "stream":
        if not os.access(path, os.W_OK):
            raise PermissionError(f"{what} {text}: no permission to write into it")
        return path
    if kind not in _REPLACEABLE:
        raise FileExistsError(f"{what} {text} is a {kind}, not a regular file; refusing to write into or replace it")
    if kind != "missing" and not overwrite:
        link = f" (a symbolic link to the missing {os.readlink(path)})" if kind == "dangling link" else ""
        raise FileExistsError(f"{what} {path} already exists{link}; pass --force to overwrite it")
    check_folder(path.parent, what=what)
    return path


def check_folder(folder, *, what: str = "output") -> Path:
    """Create ``folder`` if needed and prove a file can be created in it (a probe file, removed).

    Raises ``NotADirectoryError`` / ``PermissionError`` with one line starting with ``what``.
    """
    folder = Path(folder)
    try:
        kind = _kind(folder)
    except OSError as error:
        raise PermissionError(f"{what}: cannot use the folder {folder}: {_reason(error)}") from None
    if kind not in ("missing", "folder"):
        raise NotADirectoryError(f"{what}: {folder} is a {kind}, not a folder; choose another output location")
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


def _create_temporary(folder: Path, stem: str, tail: str = ".tmp") -> tuple[int, str]:
    """A new file ``<stem>.<hex><tail>`` in ``folder`` opened for writing, mode ``0o666 & ~umask`` (the kernel
    applies it); the stem is shortened to keep the name within the file system's limit."""
    room = _name_max(Path(folder)) - _TEMP_TAIL + len(".tmp") - len(os.fsencode(tail))
    stem = os.fsdecode(os.fsencode(stem)[:room])
    for _ in range(100):
        name = os.path.join(folder, f"{stem}.{secrets.token_hex(6)}{tail}")
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


class Staged(NamedTuple):
    """A result ready to be given its name (:func:`stage`): the complete temporary file ``tmp`` beside
    ``path``, or ``None`` where ``path`` is a character device or FIFO (written into by :func:`publish`)."""

    path: Path
    tmp: str | None
    write: Callable


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:  # exist_ok: something that is not a folder is there (replaced meanwhile)
        raise NotADirectoryError(errno.ENOTDIR, f"{folder} is not a folder") from None


def stage(path, write) -> Staged:
    """Call ``write(file_object)`` on a new temporary file beside ``path``, flushed to disk; on any failure
    the temporary file is removed and the error raised. Nothing is staged for a character device or FIFO."""
    path = Path(path)
    if _kind(path) == "stream":
        return Staged(path, None, write)
    _make_folder(path.parent)
    fd, tmp = _create_temporary(path.parent, f".{path.name}")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        _discard(tmp)
        raise
    return Staged(path, tmp, write)


def _write_into(path: Path, write) -> None:
    """``write`` into the character device or FIFO at ``path``: opened without creating or truncating
    anything (a FIFO waits for its reader); refused if a regular file took its place meanwhile."""
    fd = os.open(path, os.O_WRONLY | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "wb") as handle:
        if _mode_kind(os.fstat(fd).st_mode) != "stream":
            raise FileExistsError(errno.EEXIST, f"{path} was replaced while it was being opened")
        write(handle)
        handle.flush()


def publish(staged: Staged, *, overwrite: bool = False) -> Path:
    """Give a staged result (:func:`stage`) its name and return the path written: replaced atomically with
    ``overwrite``, else claimed exclusively (:func:`_claim`: a name taken meanwhile keeps the other
    file, and this result goes to the first free sibling, announced on stderr). A character device or
    FIFO is written into; a special file that appeared meanwhile is never replaced."""
    path, tmp = staged.path, staged.tmp
    kind = _kind(path)
    if tmp is None or kind == "stream":
        _write_into(path, staged.write)
        if tmp is not None:
            _discard(tmp)
        return path
    if overwrite:
        if kind not in _REPLACEABLE:
            raise FileExistsError(errno.EEXIST, f"{path} is now a {kind}, which is never replaced")
        os.replace(tmp, path)
        return path
    written = _claim(tmp, path)
    os.unlink(tmp)
    if written != path:
        print(
            f"warning: {path} was created by another writer while this one computed; this result is kept as {written}",
            file=sys.stderr,
            flush=True,
        )
    return written


def _discard(tmp: str | None) -> None:
    """Remove a temporary file if it is still there (a failure to do so is not this write's error)."""
    if tmp is not None:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def _keep(items: list[tuple[str, Callable]], label: str) -> Path | None:
    """Write results that could not be written where asked into the system's temporary folder: one
    result as a new file ``ufm-unsaved-<name>.<hex><suffix>``, several in a new folder
    ``ufm-unsaved-<label>.<hex>``; returns that path, or None where this failed too."""
    try:
        folder = Path(tempfile.gettempdir())
        if len(items) > 1:
            folder = Path(tempfile.mkdtemp(prefix=f"ufm-unsaved-{label}.", dir=folder))
        for name, write in items:
            if len(items) > 1:
                fd, kept = os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), str(folder / name)
            else:
                fd, kept = _create_temporary(folder, f"ufm-unsaved-{Path(name).stem}", Path(name).suffix)
            with os.fdopen(fd, "wb") as handle:
                write(handle)
        return folder if len(items) > 1 else Path(kept)
    except OSError:
        return None


def _not_written(what: str, target: Path, error: BaseException, items, written=()) -> NotWrittenError:
    """The one-line error of results not written at ``target`` for ``error``; keeps them (:func:`_keep`)."""
    kept = _keep(items, target.name)
    several = len(items) > 1
    where = (
        f"the result{'s are' if several else ' is'} kept in {kept}"
        if kept is not None
        else "it could not be kept in the temporary folder either"
    )
    done = (
        f"; only {', '.join(p.name for p in written)} {'were' if len(written) > 1 else 'was'} written there"
        if written
        else ""
    )
    return NotWrittenError(f"{what} {target} was not written ({_reason(error)}){done}; {where}", kept)


def write_atomic(path, write, *, overwrite: bool = False, what: str = "output") -> Path:
    """Call ``write(file_object)`` on a temporary file beside ``path`` and give it its final name.

    Returns the path actually written: ``path``, or, when ``overwrite`` is False and
    ``path`` was created by someone else meanwhile, the first free sibling (announced on
    stderr). A crash or an interrupt leaves no partial and no temporary file. Where the
    file system refuses (full, read-only, the folder gone), raises :class:`NotWrittenError`
    (``what``: the flag it names) after calling ``write`` once more to keep the result.
    """
    return write_all({path: write}, overwrite=overwrite, what=what)[0]


def write_all(files: dict, *, overwrite: bool = False, what: str = "output") -> list[Path]:
    """Write several results together (``{path: write}``, ``write(file_object)`` or ready bytes), as nearly
    all-or-nothing as a file system allows: each to a complete temporary file beside its path first
    (:func:`stage`), then all given their names (:func:`publish`); returns the paths written.

    A failure while staging (a full disk) removes the temporaries written so far, so nothing changes;
    one while naming (the folder replaced meanwhile) leaves the files already named. Either way
    :class:`NotWrittenError` names what was written and what not, why, and where all the results are
    kept; an interrupt (any other exception) removes the temporaries and is raised as it is.
    """
    items = [(Path(path), _writer(data)) for path, data in files.items()]
    target = items[0][0] if len(items) == 1 else Path(os.path.commonpath([path for path, _ in items]))
    staged: list[Staged] = []
    written: list[Path] = []
    current = target
    with WRITE_LOCK:
        try:
            for current, write in items:
                staged.append(stage(current, write))
            for one in staged:
                current = one.path
                written.append(publish(one, overwrite=overwrite))
        except OSError as error:
            for one in staged:
                _discard(one.tmp)
            name = f"{current.name}: " if len(items) > 1 else ""
            raise _not_written(what, target, _Named(name, error), [(p.name, w) for p, w in items], written) from error
        except BaseException:
            for one in staged:
                _discard(one.tmp)
            raise
    return written


class _Named(Exception):
    """An error's :func:`_reason` prefixed by the name of the file it stopped (``"r.png: [Errno 28] ..."``)."""

    def __init__(self, name: str, error: BaseException):
        super().__init__(f"{name}{_reason(error)}")


def _writer(data) -> Callable:
    """``data`` as a ``write(file_object)`` callable (ready bytes, or already one)."""
    return data if callable(data) else (lambda handle: handle.write(data))


def write_bytes(path, data: bytes, *, overwrite: bool = False, what: str = "output") -> Path:
    """:func:`write_atomic` of ready bytes."""
    return write_atomic(path, _writer(data), overwrite=overwrite, what=what)


def write_json(path, data, *, overwrite: bool = False, what: str = "output") -> Path:
    """Atomically write ``data`` as indented, key-sorted JSON (:func:`clean`: NaN/inf as null, -0.0 as 0.0)."""
    return write_bytes(path, json_bytes(data), overwrite=overwrite, what=what)


#: ASCII stand-ins for the reports' non-ASCII characters, where standard output cannot encode them
_ASCII = {
    "·": ".",
    "—": "-",
    "–": "-",
    "−": "-",
    "≥": ">=",
    "≤": "<=",
    "≈": "~",
    "×": "x",
    "±": "+-",
    "→": "->",
    "√": "sqrt",
    "‖": "||",
    "∞": "inf",
    "∇": "grad",
    "…": "...",
    "λ": "lam",
    "δ": "delta",
    "κ": "kappa",
    "μ": "mu",
    "γ": "gamma",
    "η": "eta",
    "α": "alpha",
    "φ": "phi",
    "σ": "sigma",
    "ℓ": "l",
}


def encodable(text: str, stream) -> str:
    """``text`` as ``stream``'s encoding can write it: unchanged where it can, else every character it
    cannot encode replaced by an ASCII stand-in (``·`` -> ``.``, ``—`` -> ``-``, ``λ`` -> ``lam``, an accent
    dropped, ``?`` for the rest)."""
    encoding = getattr(stream, "encoding", None) or "utf-8"
    try:
        text.encode(encoding)
        return text
    except UnicodeEncodeError:
        pass
    except LookupError:  # an encoding Python does not know: the stream will say so itself
        return text

    def fits(char: str) -> bool:
        try:
            char.encode(encoding)
            return True
        except UnicodeEncodeError:
            return False

    def ascii_of(char: str) -> str:
        return _ASCII.get(char) or unicodedata.normalize("NFKD", char).encode("ascii", "ignore").decode() or "?"

    return "".join(char if fits(char) else ascii_of(char) for char in text)


def emit(text: str, stream=None) -> OSError | None:
    """Print ``text`` on ``stream`` (default standard output) as it can encode it (:func:`encodable`),
    flushed. Returns the ``OSError`` that stopped it (the reader gone: ``BrokenPipeError``; ``/dev/full``:
    ENOSPC), None once printed. After a failure the stream's file descriptor points to ``os.devnull``,
    so the interpreter's last flush does not fail again."""
    stream = sys.stdout if stream is None else stream
    try:
        print(encodable(text, stream), file=stream, flush=True)
    except OSError as error:
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, stream.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):  # no file descriptor behind it (captured, replaced)
            pass
        return error
    return None


def deliver(prog: str, report: str | None, write: Callable | None = None, *, code: int = 0, announce=sys.stderr) -> int:
    """The end of a command line: print ``report`` on standard output, then write the result file(s)
    (``write()`` returns the path or paths written), whatever became of the report, and announce each as
    ``wrote PATH`` on ``announce`` (None: silent). Returns ``code``, or :data:`EXIT_NOT_WRITTEN` after one
    ``<prog>: error:`` line per output that failed: the file (:class:`NotWrittenError`: the path, the
    reason, where the result is kept) or standard output. A reader of standard output that went away
    raises ``BrokenPipeError`` after the file is written (``ufm._interrupt``: exit 141, no traceback)."""
    failed = None if report is None else emit(report)
    if write is not None:
        try:
            written = write()
        except NotWrittenError as error:
            print(f"{prog}: error: {error}", file=sys.stderr, flush=True)
            code = EXIT_NOT_WRITTEN
        else:
            for path in written if isinstance(written, list) else [written]:
                if announce is not None and not (failed and announce is sys.stdout):
                    problem = emit(f"wrote {path}", announce)
                    failed = failed or (problem if announce is sys.stdout else None)
    if isinstance(failed, BrokenPipeError):
        raise failed
    if failed is not None:
        print(f"{prog}: error: standard output: {_reason(failed)}; the report was not printed", file=sys.stderr)
        return EXIT_NOT_WRITTEN
    return code


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
