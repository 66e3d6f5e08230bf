"""Suite-wide settings: float64 JAX for every verification (tolerances assume it), and one
compilation cache shared by every test process.

The cache is a temporary folder made once per run (by the controlling process when
pytest-xdist runs workers, which inherit it through ``JAX_COMPILATION_CACHE_DIR``) and
removed at the end: the CLI tests that start fresh Python processes load the solver's
programs from it instead of compiling them again, and the user's own cache is never
touched by the suite.
"""

import gc
import os
import shutil
import tempfile

import jax
import pytest
from hypothesis import HealthCheck, settings

from ufm import _cache

jax.config.update("jax_enable_x64", True)

settings.register_profile("default", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("fuzz", max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

_OWNER_VAR = "UFM_SUITE_CACHE_OWNER"


def pytest_configure(config):
    if not os.environ.get(_OWNER_VAR):  # the first (controlling) process makes the folder
        folder = tempfile.mkdtemp(prefix="ufm-suite-cache-")
        os.environ[_cache.ENV_VAR] = folder
        os.environ[_OWNER_VAR] = str(os.getpid())
        # every program, however quick to compile: JAX reads these in any Python process the tests start
        # (code blocks of the docs, the notebook's kernel), not only in the command lines
        os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
        os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "-1"
    _cache.enable_compilation_cache(os.environ[_cache.ENV_VAR])


@pytest.fixture(autouse=True)
def _suite_cache_stays_on():
    """Each test starts with the suite's cache on: a command line run in-process with ``--no-cache``
    (the CLI and fuzz tests) switches JAX's cache off for the whole process, and every later test of
    that worker would compile without reading or filling the shared folder."""
    yield
    folder = os.environ[_cache.ENV_VAR]
    if not jax.config.jax_enable_compilation_cache or jax.config.jax_compilation_cache_dir != folder:
        _cache.enable_compilation_cache(folder)


def pytest_unconfigure(config):
    if os.environ.get(_OWNER_VAR) == str(os.getpid()):
        shutil.rmtree(os.environ[_cache.ENV_VAR], ignore_errors=True)


def pytest_collection_finish(session):
    """Python's garbage collector tuned for a long run of compiled programs (a harness setting: no test
    sees it): the objects alive after collection (JAX, the test modules) are left out of its scans, and
    it runs about 14x less often. Measured on four of the largest test files with two workers: 2.9 s
    of collection per worker before, 1.2 s after."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)


#: Files whose tests take longest (experiments' quick runs, docs' code blocks, solver property tests):
#: run first, so that the two workers end on short tests instead of one of them waiting for a long one.
_LONG_FIRST = (
    "test_experiments.py",
    "test_docs.py",
    "test_sweep.py",
    "test_solver.py",
    "test_experiment_networks.py",
    "test_cli.py",
    "test_reliability_solver.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(_LONG_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the order within a file stays
