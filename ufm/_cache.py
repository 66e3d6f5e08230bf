"""Persistent compilation cache: compile each solver program once per machine, not once per process.

A command line solves the default problem in milliseconds and would spend seconds compiling
(docs/performance.md, "Start-up"). JAX can store every compiled executable on disk, keyed by
the program, the JAX/jaxlib versions, the backend and the compile options, and
load it in the next process instead of compiling again.

JAX must still trace and lower a program to find its key (tens to hundreds of milliseconds for
each of the solver's loops, even when the executable comes from the cache). So the programs
compiled through :func:`ufm._compile.compile_once` are also kept in a store of our own, the
subfolder ``programs/``: keyed without tracing, by what the program is made of (the source of
the ``ufm`` and ``theory`` packages, the versions of JAX, jaxlib and numpy and optax's installed file, the devices,
JAX's configuration and ``XLA_FLAGS``, the function's name, the arguments' shapes, dtypes and
shardings and the static arguments), one file of a pickled serialized executable per program
(:func:`load_program`, :func:`store_program`). Editing any file of either package makes every
entry unreachable (they are recompiled), never stale.

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
run: the cache is skipped (or the entry recompiled) with one warning line. An entry
holds executable code, like JAX's own entries beside it: the folder must be the user's own.

Internal API (:mod:`ufm._compile`): :func:`load_program`, :func:`store_program`, :func:`serializable`,
:func:`compile_fresh`, :func:`storing`, :func:`argument_shapes`.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import hashlib
import os
import pickle
import re
import sys
import tempfile
import threading
import types
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

    Every program is cached, however short its compile time or small its entry (loading even a
    small one is cheaper than compiling it again). Returns the folder in use, or ``None``
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
        _STORE["folder"] = None
        return None
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    jax_cache.reset_cache()  # a cache JAX already set up (or found disabled) is re-read on next use
    jax_cache.set_cache_dir(str(folder))
    _STORE["folder"] = folder / _PROGRAMS
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
        _STORE["folder"] = None
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


#: the subfolder of the cache folder that holds the programs of :func:`store_program`
_PROGRAMS = "programs"
#: the store's folder while the cache is on (set by :func:`enable_compilation_cache`), the key of the code
_STORE: dict = {"folder": None, "code": None}


def _code_key() -> str:
    """What the programs are made of, apart from their arguments and :func:`_settings`: a digest of every ``.py``
    file of the ``ufm`` and ``theory`` packages, the versions of the libraries that trace and compile them and
    the devices (computed once per process)."""
    if _STORE["code"] is None:
        import importlib.util

        import jax
        import jaxlib
        import numpy

        import theory

        digest = hashlib.sha256()
        for package in (Path(__file__).parent, Path(theory.__file__).parent):
            for source in sorted(package.glob("*.py")):
                digest.update(f"{package.name}/{source.name}\0".encode())
                digest.update(source.read_bytes())
        # optax (traced by the gd-type methods) is not imported for this: its installed file stands for its version
        optax = importlib.util.find_spec("optax")
        installed = os.stat(optax.origin) if optax is not None and optax.origin else None
        versions = [
            jax.__version__,
            jaxlib.__version__,
            numpy.__version__,
            None if installed is None else (optax.origin, installed.st_size, installed.st_mtime_ns),  # type: ignore[union-attr]
        ]
        devices = [(d.platform, d.device_kind, d.id, d.client.platform_version) for d in jax.devices()]
        digest.update(repr((versions, devices)).encode())
        _STORE["code"] = digest.hexdigest()
    return _STORE["code"]


def _settings() -> str:
    """JAX's configuration and ``XLA_FLAGS`` as they are now (a process may change them between two programs)."""
    import jax

    return repr((sorted((name, repr(value)) for name, value in jax.config.values.items()), os.getenv("XLA_FLAGS")))


def storing() -> bool:
    """Whether the program store is on (the persistent cache enabled through :func:`enable_compilation_cache`)."""
    return _STORE["folder"] is not None


def argument_shapes(leaves) -> tuple:
    """What a compiled program depends on in each argument leaf: ``(shape, dtype, weak type, sharding)`` (the
    in-process key of :func:`ufm._compile.compile_once` and part of the store's key)."""
    return tuple(
        (x.shape, str(x.dtype), bool(getattr(x, "weak_type", False)), str(getattr(x, "sharding", None))) for x in leaves
    )


def _entry(function, args, statics) -> Path | None:
    """The store's file for ``jit(function)`` on ``args`` with ``statics``; ``None`` when the store is off or the
    function has no stable name (a lambda, a closure, a method: its name would not say what it computes)."""
    folder = _STORE["folder"]
    name = getattr(function, "__qualname__", "")
    plain = name.isidentifier() and name == getattr(function, "__name__", None)  # not a lambda, not a method
    if folder is None or not plain or getattr(function, "__closure__", None):
        return None
    import jax

    leaves, tree = jax.tree_util.tree_flatten(args)
    shapes = list(argument_shapes(leaves))
    key = repr(
        (
            _code_key(),
            _settings(),
            function.__module__,
            name,
            str(tree),
            shapes,
            sorted((k, repr(v)) for k, v in statics.items()),
        )
    )
    if " at 0x" in key:  # an object shown by its address: a new key in every process, never found again
        return None
    return folder / f"{name}-{hashlib.sha256(key.encode()).hexdigest()}.program"


def load_program(function, args, statics):
    """The compiled ``jit(function)`` for these arguments from the store, or ``None`` (not stored, store off).
    An entry that cannot be read is removed with one warning (:func:`configure`'s line) and compiled again."""
    entry = _entry(function, args, statics)
    if entry is None or not entry.is_file():
        return None
    from jax.experimental import serialize_executable

    if not _lapack_ready():
        return None
    try:
        payload, in_tree, out_tree = pickle.loads(entry.read_bytes())
        return serialize_executable.deserialize_and_load(payload, in_tree, out_tree)
    except Exception as error:  # any damage to the file (truncated, garbage, another version's pickle)
        with contextlib.suppress(OSError):
            entry.unlink()
        warnings.warn(f"Error reading persistent compilation cache program {entry.name}: {error}", stacklevel=2)
        return None


def _lapack_ready() -> bool:
    """Register the CPU's LAPACK kernels with XLA, as JAX does when it lowers a linear-algebra operation or loads
    an exported program: an executable read from the store is never lowered in this process, and one that calls
    LAPACK (an eigendecomposition, a pseudo-inverse) would otherwise call an empty target (a segmentation fault,
    seen with :func:`ufm.metrics.collapse`). False when this JAX has no such hook: nothing is read from the store."""
    try:
        from jax._src.lax import linalg

        with _LAPACK_LOCK:  # one thread loads the tables; the others find them in sys.modules
            _load_scipy_lapack_tables()
            linalg.initialize_lapack()
    except (ImportError, AttributeError):
        return False
    return True


#: :func:`_lapack_ready` across threads (programs read from the store by several threads at once): the tables are
#: loaded outside Python's import lock, and an extension module loaded twice in one process fails the second time
_LAPACK_LOCK = threading.Lock()


def _load_scipy_lapack_tables() -> None:
    """Load ``scipy.linalg.cython_blas`` and ``scipy.linalg.cython_lapack`` from their files, without
    ``scipy.linalg``'s package body, when no part of ``scipy.linalg`` is imported yet.

    jaxlib registers its CPU LAPACK kernels with the function pointers of those two extension modules, which
    it imports by name; importing them by name first runs ``scipy/linalg/__init__.py`` (0.13 to 0.19 s on
    the 2-core machine: it imports scipy's array-API layer, which imports ``numpy.f2py`` and
    ``numpy.testing``), most of the warm command line's time above JAX's own import (docs/performance.md,
    "Start-up"). Loaded alone they take about 8 ms. Each is registered in ``sys.modules`` under its own name,
    where jaxlib's import (and any later ``from scipy.linalg import cython_lapack``) finds it; a later
    ``import scipy.linalg`` runs the package body as usual. Anything unexpected (another layout of scipy,
    a failing load) leaves ``sys.modules`` as it was and jaxlib imports the modules its own way."""
    names = ("scipy.linalg.cython_blas", "scipy.linalg.cython_lapack")  # BLAS first: the LAPACK one imports it
    if any(name in sys.modules for name in ("scipy.linalg", *names)):
        return
    import importlib.machinery
    import importlib.util

    added: list[tuple[str, types.ModuleType]] = []
    try:
        scipy_spec = importlib.util.find_spec("scipy")
        if scipy_spec is None or not scipy_spec.submodule_search_locations:
            return
        for name in names:
            spec = importlib.machinery.PathFinder.find_spec(
                name, [os.path.join(folder, "linalg") for folder in scipy_spec.submodule_search_locations]
            )
            if spec is None or not isinstance(spec.loader, importlib.machinery.ExtensionFileLoader):
                raise ImportError(name)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            added.append((name, module))
            spec.loader.exec_module(module)
    except Exception:  # noqa: BLE001 -- any failure: undo, and let jaxlib import scipy.linalg as it would
        for name, module in added:
            if sys.modules.get(name) is module:  # only what this call registered
                del sys.modules[name]


def serializable(compiled) -> bool:
    """Whether ``compiled`` can be kept in the store at all (not a program with a host callback)."""
    from jax.experimental import serialize_executable

    try:
        pickle.dumps(serialize_executable.serialize(compiled))
    except Exception:  # the loop's progress lines are a Python callback: they do not pickle
        return False
    return True


#: a compiler option at its default value: a compilation with it is not the one JAX's in-memory cache holds
_FRESH = {"xla_embed_ir_in_executable": False}


def compile_fresh(lowered):
    """``lowered.compile()`` by XLA itself, neither from JAX's persistent cache nor from its in-memory one (an
    executable read from the persistent cache serializes without its code). JAX's cache is off during this one
    compilation and on again after it, in the same folder."""
    import jax
    from jax.experimental.compilation_cache import compilation_cache as jax_cache

    folder = jax.config.jax_compilation_cache_dir  # type: ignore[attr-defined]
    jax.config.update("jax_enable_compilation_cache", False)
    jax_cache.reset_cache()
    try:
        return lowered.compile(_FRESH)
    finally:
        jax.config.update("jax_enable_compilation_cache", True)
        jax_cache.reset_cache()
        jax_cache.set_cache_dir(folder)


def store_program(function, args, statics, compiled) -> None:
    """Keep ``compiled`` (a fresh compilation of ``jit(function)``, not one JAX read from its cache: such an
    executable serializes without its code) in the store. A program that cannot be serialized (one with a host
    callback) or a store that cannot be written is left alone: JAX's own cache still holds the program."""
    entry = _entry(function, args, statics)
    if entry is None:
        return
    from jax.experimental import serialize_executable

    from ufm import _io

    try:
        data = pickle.dumps(serialize_executable.serialize(compiled))
    except Exception:  # not serializable (a host callback: the loop's progress lines): left to JAX's cache
        return
    try:
        staged = _io.stage(entry, lambda handle: handle.write(data))  # complete beside its name, umask honoured
    except OSError:
        return
    try:
        _io.publish(staged, overwrite=True)  # atomic: a reader sees the whole entry or none
    except OSError:
        with contextlib.suppress(OSError, TypeError):
            os.unlink(staged.tmp)  # type: ignore[arg-type]
