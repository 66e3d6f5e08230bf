"""The persistent compilation cache (ufm/_cache.py): where it lives, that importing the package
touches nothing, and that a corrupt or unusable cache never breaks a run."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ufm import _cache

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["-m", "ufm.solve", "--K", "3", "--n", "4", "--quiet", "--no-hessian"]


def _env(**extra):
    # neither the suite's cache folder nor its cache settings (tests/conftest.py): JAX's defaults, as a user has
    env = {k: v for k, v in os.environ.items() if k != _cache.ENV_VAR and not k.startswith("JAX_PERSISTENT_CACHE")}
    env.update(extra)
    return env


def _cli(argv, **extra):
    return subprocess.run(
        [sys.executable, *argv], cwd=ROOT, env=_env(**extra), capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize(
    "env,expected",
    [
        ({"JAX_COMPILATION_CACHE_DIR": "/somewhere/jax", "XDG_CACHE_HOME": "/xdg"}, "/somewhere/jax"),
        ({"XDG_CACHE_HOME": "/xdg"}, "/xdg/ufm-collapse/jax"),
        ({"HOME": "/home/someone"}, "/home/someone/.cache/ufm-collapse/jax"),
    ],
)
def test_cache_dir_follows_the_environment_then_xdg(monkeypatch, env, expected):
    for name in ("JAX_COMPILATION_CACHE_DIR", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(sys, "platform", "linux")
    assert _cache.cache_dir() == Path(expected)


def test_importing_the_package_leaves_jax_untouched():
    """No backend initialised and no configuration changed by `import ufm, theory` (and the CLI modules)."""
    code = (
        "import jax, ufm, theory, ufm.solve, ufm.sweep, ufm._cache\n"
        "from jax._src import xla_bridge\n"
        "print(xla_bridge.backends_are_initialized(), jax.config.jax_enable_x64,\n"
        "      jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False", "None", "1.0"]  # JAX's own defaults


def test_cli_fills_the_cache_and_corrupt_entries_give_one_warning_line_and_are_replaced(tmp_path):
    """--no-cache writes nothing; a run fills the folder; then corrupt entries (garbage, truncated) are
    compiled again with one warning line, the same verdict, and rewritten (one folder throughout: JAX's
    keys depend on the folder's path, so a copied cache would read as empty). The two smallest programs of
    the store are corrupted (every program of this run is read from there, not from JAX's entries): the
    solver's loop is read intact, so the third run compiles only those two."""
    cache = tmp_path / "cache"
    assert _cli(SMALL + ["--no-cache"], JAX_COMPILATION_CACHE_DIR=str(cache)).returncode == 0
    assert not cache.exists() or not any(cache.iterdir())
    first = _cli(SMALL, JAX_COMPILATION_CACHE_DIR=str(cache))
    assert first.returncode == 0 and first.stderr == "", first.stderr
    programs = cache / "programs"
    entries = sorted(programs.glob("*.program"), key=lambda p: p.stat().st_size)
    assert len(entries) >= 2
    garbage, truncated = entries[:2]
    garbage.write_bytes(os.urandom(64))
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    corrupt = _cli(SMALL, JAX_COMPILATION_CACHE_DIR=str(cache))
    verdict = lambda done: [line for line in done.stdout.splitlines() if line.startswith("VERDICT")]
    assert corrupt.returncode == 0 and verdict(corrupt) == verdict(first) != []
    lines = corrupt.stderr.splitlines()
    assert len(lines) == 1 and "warning: compilation cache entry skipped" in lines[0], corrupt.stderr
    again = _cli(SMALL, JAX_COMPILATION_CACHE_DIR=str(cache))  # the entries were rewritten
    assert again.returncode == 0 and again.stderr == "" and verdict(again) == verdict(first)


def test_unusable_cache_folder_falls_back_with_one_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    done = _cli(SMALL, JAX_COMPILATION_CACHE_DIR=str(blocker / "jax"))
    assert done.returncode == 0 and "VERDICT" in done.stdout
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and "warning: compilation cache disabled" in lines[0], done.stderr


_STORE_SCRIPT = """
import sys, argparse, jax, numpy as np
jax.config.update("jax_enable_x64", True)
from ufm import _cache, _compile, metrics
_cache.configure(argparse.Namespace(no_cache=False), "test")
rng = np.random.default_rng(0)
W, H = rng.normal(size=(10, 10)), rng.normal(size=(10, 5000))
y = jax.device_put(np.repeat(np.arange(10), 500))
on_device = lambda: metrics.collapse(jax.device_put(W), jax.device_put(H), y, 10)
raw = metrics.collapse.__wrapped__  # the function compile_once keeps: two keys below, one lowered module
run = lambda *args: _compile.compile_once(raw, args, {"K": 10})[0](*args)
step = sys.argv[1]
if step == "jit":  # JAX's own cache only: the plain jit program
    print(float(jax.jit(raw, static_argnames="K")(jax.device_put(W), jax.device_put(H), y, K=10).nc1))
elif step == "both":  # the first read by JAX from its cache, the second the same module again (in memory)
    run(jax.device_put(W), jax.device_put(H), y)
    print(float(run(W, H, y).nc1))
elif step == "load":  # a new process runs the stored program of the numpy key
    print(float(run(W, H, y).nc1))
else:  # the device call alone: stored by the first process, read by the second
    value = float(on_device().nc1)
    package_body = "scipy.linalg" in sys.modules  # whether scipy.linalg's __init__ ran before the program did
    import scipy.linalg
    from scipy.linalg import cython_lapack
    assert cython_lapack is sys.modules["scipy.linalg.cython_lapack"]
    assert np.allclose(scipy.linalg.eigvalsh(np.diag([2.0, 1.0])), [1.0, 2.0])  # scipy still whole afterwards
    print(package_body, value)
"""


def test_stored_programs_carry_their_code_after_jax_cache_hits(tmp_path):
    """An executable JAX read from its persistent cache, or returned again from its in-memory cache for the same
    module (here: one function under two keys of the store, device and numpy arguments, after JAX's cache
    holds it), has no code of its own to serialize; stored as it was, the next process to run it failed with
    ``NOT_FOUND: Function ... not found`` (seen with ufm.metrics.collapse: the CLI's gd run, then any run).
    Each stored program must run in a fresh process and give the value of the process that stored it."""
    env = {"JAX_COMPILATION_CACHE_DIR": str(tmp_path / "cache"), "JAX_PLATFORMS": "cpu"}
    run = lambda step: _cli(["-c", _STORE_SCRIPT, step], **env)
    outputs = [run(step) for step in ("jit", "both", "load")]
    for done in outputs:
        assert done.returncode == 0, done.stderr[-2000:]
    values = [float(done.stdout.split()[-1]) for done in outputs]
    assert values[0] == values[1] == values[2]  # one program, bit for bit
    assert any(path.name.startswith("collapse-") for path in (tmp_path / "cache" / "programs").iterdir())


def test_a_stored_program_that_calls_lapack_runs_as_a_process_first_program(tmp_path):
    """NC1's pseudo-inverse calls LAPACK through a custom call that JAX registers when it lowers such an operation;
    a process that only reads the program from the store lowers nothing, and ran it against an empty target
    (a segmentation fault: the CLI's second run) until the store registered the kernels before reading."""
    env = {"JAX_COMPILATION_CACHE_DIR": str(tmp_path / "cache"), "JAX_PLATFORMS": "cpu"}
    first, second = (_cli(["-c", _STORE_SCRIPT, "device"], **env) for _ in range(2))
    assert first.returncode == 0 and second.returncode == 0, (second.returncode, second.stderr[-2000:])
    assert first.stdout.split()[-1] == second.stdout.split()[-1] != ""  # one program: the same NC1, bit for bit
    # the kernels came from scipy's two LAPACK/BLAS table modules alone, not through scipy.linalg's package body
    # (0.13-0.19 s of the warm command line), and scipy.linalg imported afterwards is whole
    assert second.stdout.split()[0] == "False", second.stdout


_FALLBACK_SCRIPT = """
import importlib.machinery, sys
import jax, jax.numpy as jnp, numpy as np
from ufm import _cache
loader = importlib.machinery.ExtensionFileLoader
exec_module = loader.exec_module
def failing(self, module):  # the second table (LAPACK's) fails to load after the first (BLAS's) was registered
    if module.__name__.endswith("cython_lapack"):
        raise ImportError("simulated")
    return exec_module(self, module)
loader.exec_module = failing
_cache._load_scipy_lapack_tables()
loader.exec_module = exec_module
assert not any(name.startswith("scipy.linalg") for name in sys.modules), sorted(sys.modules)  # undone
values = jnp.linalg.eigvalsh(jax.device_put(np.diag([2.0, 1.0])))  # JAX registers LAPACK its own way
print("scipy.linalg" in sys.modules, [float(v) for v in values] == [1.0, 2.0])
"""


_THREADS_SCRIPT = """
import importlib.machinery, sys, threading, time
import jax, jax.numpy as jnp, numpy as np
from ufm import _cache
loader = importlib.machinery.ExtensionFileLoader
exec_module = loader.exec_module
loads = []
def slow(self, module):  # a slow load, so that the threads below overlap inside it
    loads.append(module.__name__)
    time.sleep(0.2)
    return exec_module(self, module)
loader.exec_module = slow
start = threading.Barrier(4)
results = []
def ready():
    start.wait()
    results.append(_cache._lapack_ready())
threads = [threading.Thread(target=ready) for _ in range(4)]
[thread.start() for thread in threads]
[thread.join() for thread in threads]
loader.exec_module = exec_module
tables = sorted(name for name in loads if name.startswith("scipy.linalg"))  # each loaded once, and nothing else
body = "scipy.linalg" in sys.modules
values = jnp.linalg.eigvalsh(jax.device_put(np.diag([2.0, 1.0])))  # the kernels work
print(results == [True] * 4, tables, body, [float(v) for v in values])
"""


def test_threads_reading_programs_at_once_load_the_lapack_tables_once():
    done = _cli(["-c", _THREADS_SCRIPT], JAX_PLATFORMS="cpu")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("[")[0].split() == ["True"], done.stdout
    assert "['scipy.linalg.cython_blas', 'scipy.linalg.cython_lapack'] False [1.0, 2.0]" in done.stdout, done.stdout


def test_a_failed_load_of_the_lapack_tables_leaves_the_imports_as_they_were():
    done = _cli(["-c", _FALLBACK_SCRIPT], JAX_PLATFORMS="cpu")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["True", "True"]


def test_with_the_store_off_a_program_is_compiled_once_and_the_cache_stays_off(monkeypatch):
    """With the store off (``--no-cache``: JAX's cache off too), a program JAX hands back from its in-memory cache
    (here the plain ``jit`` of the same function, called first) is used as it is: not compiled again, and JAX's
    persistent cache is not switched back on behind the user's back (as compiling afresh for the store does)."""
    import jax
    import numpy as np

    from ufm import _compile, metrics

    monkeypatch.setitem(_cache._STORE, "folder", None)
    jax.config.update("jax_enable_compilation_cache", False)  # the suite's fixture turns it on again after
    rng = np.random.default_rng(1)
    W, H = jax.device_put(rng.normal(size=(5, 7))), jax.device_put(rng.normal(size=(5, 77)))
    y = jax.device_put(np.arange(77) % 7)
    expected = metrics.collapse.jitted(W, H, y, K=7)
    compiles = []
    listener = lambda event, duration_secs, **_: compiles.append(event) if event == _compile._XLA_COMPILE else None
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        measured = metrics.collapse(W, H, y, 7)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert compiles == []  # JAX's in-memory program: no compilation at all
    assert not jax.config.jax_enable_compilation_cache
    assert [float(x) for x in measured] == [float(x) for x in expected]  # bit for bit: one program
