"""Tooling: ruff and mypy stay clean (configuration in pyproject.toml), and the packages ship ``py.typed``.

ruff checks ``theory/``, ``ufm/``, ``experiments/``, ``benchmarks/`` and ``tests/``; mypy the paths of
``[tool.mypy] files``. Both run as subprocesses of this interpreter (installed by the ``test`` extra), so
a missing tool fails here instead of passing unnoticed.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_ruff_check_is_clean():
    done = _run(["ruff", "check", "--no-cache", "theory", "ufm", "experiments", "benchmarks", "tests"])
    assert done.returncode == 0, done.stdout + done.stderr


def test_ruff_format_is_applied():
    done = _run(["ruff", "format", "--check", "--no-cache", "theory", "ufm", "experiments", "benchmarks", "tests"])
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_is_clean():
    # no cache read or written (a stale cache from another checkout can hide errors); not writing one
    # also saves ~0.7 s of the ~8 s run
    done = _run(["mypy", "--no-incremental", "--cache-dir", os.devnull])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Success" in done.stdout, done.stdout


def test_packages_ship_py_typed(tmp_path):
    """setuptools copies the PEP 561 markers into the build (checked on a copy: no build files in the tree)."""
    src = tmp_path / "src"
    for package in ("theory", "ufm"):
        assert (ROOT / package / "py.typed").is_file(), package
        shutil.copytree(ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    build = tmp_path / "lib"
    done = subprocess.run(
        [sys.executable, "-c", "from setuptools import setup; setup()", "-q", "build_py", "--build-lib", str(build)],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for package in ("theory", "ufm"):
        assert (build / package / "py.typed").is_file(), package
