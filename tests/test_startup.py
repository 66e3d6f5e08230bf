"""What a command line's start-up loads and compiles (issue 30, item 5; the timings are in benchmarks/startup.py,
not here): the default method never imports optax, and the programs of ``compile_once`` are read back from the
program store of the persistent cache (ufm/_cache.py) without being traced again, or recompiled after damage."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ufm import _cache

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--K", "3", "--n", "4", "--quiet", "--no-hessian"]

#: run in a fresh process: the CLI's main on argv, then what it loaded and which solver functions ran in Python
#: (a program read from the store is never traced, so its Python function is never called)
_PROBE = """
import json, sys
import ufm.solve, ufm.solver
watched = {ufm.solver.reduced_start.__code__: "reduced_start", ufm.solver.reduced_loop.__code__: "reduced_loop"}
traced = set()
sys.setprofile(lambda frame, event, arg: traced.add(watched[frame.f_code]) if event == "call" and frame.f_code in
               watched else None)
import jax
jaxprs = []  # every function JAX traced, whatever called it
jax.monitoring.register_event_duration_secs_listener(
    lambda event, duration, **kw: jaxprs.append(kw.get("fun_name", "?")) if event.endswith("jaxpr_trace_duration")
    else None)
code = ufm.solve.main(json.loads(sys.argv[1]))
sys.setprofile(None)
print(json.dumps({"code": code, "optax": "optax" in sys.modules, "traced": sorted(traced), "jaxprs": len(jaxprs)}))
"""


def _probe(argv, cache=None):
    env = {k: v for k, v in os.environ.items() if k != _cache.ENV_VAR}
    if cache is not None:
        env[_cache.ENV_VAR] = str(cache)
    import json

    done = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(argv)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1]), done.stderr


@pytest.mark.parametrize(
    "method,optax",
    [
        (None, False),  # the default, reduced: its L-BFGS is ufm._lbfgs
        ("gd", True),  # the optax methods import it when their loop is traced
    ],
)
def test_only_the_optax_methods_import_optax(method, optax):
    argv = SMALL + ["--no-cache"] + ([] if method is None else ["--method", method])
    result, _ = _probe(argv)
    assert result["code"] == 0 and result["optax"] is optax


def test_programs_come_back_from_the_store_untraced_and_damaged_ones_are_recompiled(tmp_path):
    """A cold run traces and stores the reduced programs (and the samplers and metrics around them); a warm run
    reads them all: JAX traces nothing at all; a garbage entry gives one warning line, is traced and compiled
    again, and rewritten (the next run is quiet and untraced)."""
    cache = tmp_path / "cache"
    cold, cold_err = _probe(SMALL, cache)
    assert cold["traced"] == ["reduced_loop", "reduced_start"] and cold["jaxprs"] > 0 and cold_err == ""
    entries = sorted((cache / "programs").iterdir())
    names = {entry.name.split("-")[0] for entry in entries}
    assert {"reduced_loop", "reduced_start", "_scaled_normals", "collapse"} <= names, names
    assert all(entry.stat().st_mode & 0o777 == 0o666 & ~_umask() for entry in entries)
    warm, warm_err = _probe(SMALL, cache)
    assert warm == {**cold, "traced": [], "jaxprs": 0} and warm_err == ""
    next(entry for entry in entries if entry.name.startswith("reduced_loop-")).write_bytes(os.urandom(64))
    damaged, damaged_err = _probe(SMALL, cache)
    assert damaged["traced"] == ["reduced_loop"] and damaged["code"] == cold["code"]
    lines = damaged_err.splitlines()
    assert len(lines) == 1 and "warning: compilation cache entry skipped" in lines[0], damaged_err
    again, again_err = _probe(SMALL, cache)
    assert again == warm and again_err == ""


def test_no_cache_stores_nothing(tmp_path):
    cache = tmp_path / "cache"
    result, _ = _probe(SMALL + ["--no-cache"], cache)
    assert result["traced"] == ["reduced_loop", "reduced_start"] and not (cache / "programs").exists()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _module_function(x):
    return x


@pytest.mark.parametrize(
    "function,stored",
    [
        (_module_function, True),  # a module-level function: its name says what it computes
        (lambda x: x, False),  # a lambda: every lambda has the same name
        ((lambda y: lambda x: x + y)(1), False),  # a closure: the name does not say what it closed over
    ],
)
def test_only_named_module_functions_have_an_entry(tmp_path, monkeypatch, function, stored):
    import numpy as np

    monkeypatch.setitem(_cache._STORE, "folder", tmp_path)
    entry = _cache._entry(function, (np.zeros(3),), {})
    assert (entry is not None) is stored
    if stored:  # the key changes with the shapes and with the static arguments
        assert entry != _cache._entry(function, (np.zeros(4),), {})
        assert entry != _cache._entry(function, (np.zeros(3),), {"K": 2})
        assert entry == _cache._entry(function, (np.ones(3),), {})
