"""Persistent compilation cache: compile each solver program once per machine, not once per process.

A command such as ``python -m ufm.solve`` spends most of its wall time compiling
(about 4 s of XLA work for the default problem on 2 CPU cores) and a few
milliseconds solving. JAX can store every compiled executable on disk, keyed by
the program, the JAX/jaxlib versions, the backend and the compile options, and
load it in the next process instead of compiling again.

What it holds: serialized XLA executables (one file per program and shape, a few
hundred kB each; no data, no results). Where: ``$JAX_COMPILATION_CACHE_DIR`` when
that variable is set, otherwise the platform's user cache folder,
``$XDG_CACHE_HOME/ufm-collapse/jax`` (``~/.cache/ufm-collapse/jax`` when unset) on
Linux, ``~/Library/Caches/ufm-collapse/jax`` on macOS,
``%LOCALAPPDATA%\\ufm-collapse\\jax`` on Windows. Clearing it is always safe:
delete the folder (:func:`cache_dir` prints where it is).

Library code never switches the cache on by itself (importing :mod:`ufm` leaves
JAX's configuration alone); the command lines call :func:`configure` unless given
``--no-cache``, and notebooks may call :func:`enable_compilation_cache`.

A folder that cannot be created or written, or a corrupt entry, never breaks a
run: the cache is skipped (or the entry recompiled) with one warning line.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import re
import sys
import tempfile
import warnings
from pathlib import Path

#: environment variable JAX itself reads for the cache folder; honoured first
ENV_VAR = "JAX_COMPILATION_CACHE_DIR"
_APP = "ufm-collapse"


def cache_dir() -> Path:
    """The folder the command lines use for compiled programs (see the module docstring)."""
    configured = os.environ.get(ENV_VAR)
    if configured:
        return Path(configured).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / _APP / "jax"


def _usable(folder: Path) -> str | None:
    """``None`` if ``folder`` exists (created if needed) and accepts a new file; else the reason."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not folder.is_dir():
            return "not a folder"
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-"):
            pass
    except OSError as error:
        return error.strerror or type(error).__name__
    return None


def enable_compilation_cache(path=None, *, warn=None) -> Path | None:
    """Store JAX's compiled programs in ``path`` (default :func:`cache_dir`) and reuse them across processes.

    Every program is cached, however short its compile time or small its entry (the
    solver's programs compile in 0.1–3 s each). Returns the folder in use, or ``None``
    when it cannot be used: then a single line goes to ``warn`` (default: stderr) and
    JAX compiles as without a cache. Changes JAX's global configuration: call it
    before the first compilation you want cached.
    """
    import jax
    from jax.experimental.compilation_cache import compilation_cache as jax_cache

    folder = cache_dir() if path is None else Path(path).expanduser()
    problem = _usable(folder)
    if problem is not None:
        jax.config.update("jax_enable_compilation_cache", False)  # JAX would try $JAX_COMPILATION_CACHE_DIR itself
        message = f"warning: compilation cache disabled ({folder}: {problem}); compiling from scratch"
        (warn or (lambda text: print(text, file=sys.stderr, flush=True)))(message)
        return None
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    jax_cache.reset_cache()  # a cache JAX already set up (or found disabled) is re-read on next use
    jax_cache.set_cache_dir(str(folder))
    return folder


def add_argument(parser: argparse.ArgumentParser) -> None:
    """Add the command lines' ``--no-cache`` flag."""
    parser.add_argument(
        "--no-cache",
        action="store_true",
        help=f"do not read or write the persistent compilation cache (default folder: "
        f"${ENV_VAR} if set, else {cache_dir()}); see docs/cli.md, 'Compilation cache'",
    )


def configure(args: argparse.Namespace, prog: str) -> Path | None:
    """For a command line: enable the cache unless ``args.no_cache``; warnings become one line naming ``prog``.

    JAX reports an unreadable or unwritable entry with a Python warning per entry;
    here the first such warning prints ``<prog>: warning: ...`` once and the others
    are dropped, since the program is simply recompiled.
    """
    import jax

    if getattr(args, "no_cache", False):
        jax.config.update("jax_enable_compilation_cache", False)
        return None
    folder = enable_compilation_cache(warn=lambda text: print(f"{prog}: {text}", file=sys.stderr, flush=True))
    if folder is not None:
        _STATE.update(prog=prog, folder=folder, said=False)
        if warnings.showwarning is not _one_line:
            _STATE["previous"] = warnings.showwarning
            warnings.showwarning = _one_line
    return folder


#: what :func:`_one_line` needs: the program name, the cache folder, whether it has spoken, the previous hook
_STATE: dict = {"prog": "ufm", "folder": None, "said": False, "previous": warnings.showwarning}


def _one_line(message, category, filename, lineno, file=None, line=None):
    """``warnings.showwarning`` for the command lines: a cache warning becomes one line (once per process)
    and the unreadable entry is deleted, so that the recompiled program replaces it."""
    text = str(message)
    if "persistent compilation cache" not in text:
        return _STATE["previous"](message, category, filename, lineno, file, line)
    quoted = re.search(r"entry for '([^']+)'", text)
    if quoted and _STATE["folder"] is not None and text.startswith("Error reading"):
        for stale in Path(_STATE["folder"]).glob(f"{glob.escape(quoted.group(1))}-*"):
            with contextlib.suppress(OSError):
                stale.unlink()
    if not _STATE["said"]:
        _STATE["said"] = True
        print(
            f"{_STATE['prog']}: warning: compilation cache entry skipped ({text.splitlines()[0][:160]}); recompiling",
            file=sys.stderr,
            flush=True,
        )
    return None
