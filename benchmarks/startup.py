"""Whole-process time of the README's main command, with a cold and a warm compilation cache.

``python benchmarks/startup.py [--repeats 5]``: runs ``python -m ufm.solve --K 10 --n 500
--delta 0.1 --quiet`` (the default method) and the same with ``--method gd`` as fresh
processes, timing each from start to exit (imports, tracing, compiling or loading from
the cache, solving, the comparison with theory and its Hessian spectra, the report).

- cold: an empty cache folder per run (every program is compiled, and written to the cache);
- warm: a cache folder filled by one earlier run of the same command;
- no cache: ``--no-cache`` (compiles, writes nothing).

Prints the median and the range over ``--repeats`` runs of each, the median CPU time of
the process (user + system: less disturbed than the wall time by other processes on a
shared machine, though not free of them), the load average at the start and at the end,
and the machine line. A last row times the floor of any JAX program in the same conditions,
``python -c "import jax, jax.numpy as jnp; jnp.zeros(1).block_until_ready()"``, one floor run right
after each warm run: what the command line adds is its time above that row, the last column (for the
warm rows the median of each run's difference with the floor run after it, which the machine's speed,
moving by up to 50 % between hours on the shared 2-core machine, disturbs least; for the others, the
median less the floor's median). Targets: warm <= 1.5 s, cold <= 4 s on 2 CPU
cores, default faster than gd in both; warm <= 1.0 s (the later, tighter goal). Results:
docs/performance.md, "Start-up".

Python's bytecode: the package's modules are compiled to bytecode once, before the first run
(``compileall`` into their ``__pycache__`` folders, as an installation or a first import does), and
every run reads it, whatever ``PYTHONDONTWRITEBYTECODE`` says in this environment (it only stops the
writing). JAX's own bytecode is assumed written by its installation (pip does; an installer that does not
leaves the first runs to write it: run the benchmark twice there). One more row, *warm, sources compiled
each run*, runs the default command from a copy of the package without ``__pycache__`` and with
``PYTHONDONTWRITEBYTECODE=1``: what a run costs where bytecode is never kept (the conditions of this
benchmark's tables before 2026-12-07's last session).
"""

from __future__ import annotations

import argparse
import compileall
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._common import machine, print_table  # noqa: E402

MAIN = ["-m", "ufm.solve", "--K", "10", "--n", "500", "--delta", "0.1", "--quiet"]
#: the floor: importing JAX and running one operation on its CPU backend
FLOOR = ["-c", "import jax, jax.numpy as jnp; jnp.zeros(1).block_until_ready()"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("ufm", "theory")


def _cpu() -> float:
    """User + system seconds of the children that have ended so far."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def _run(argv: list[str], cache: str | None, cpu: list[float], *, sources: str | None = None) -> float:
    """Wall seconds of one process; its CPU seconds are appended to ``cpu``. With ``sources`` (a folder
    holding a copy of the package without bytecode), the process runs there with
    ``PYTHONDONTWRITEBYTECODE=1``: every module of the package is compiled from its source."""
    env = dict(os.environ)
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if cache is not None:
        env["JAX_COMPILATION_CACHE_DIR"] = cache
    if sources is not None:  # the copy is found first on sys.path (the working folder), never the installed one
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env.pop("PYTHONSAFEPATH", None)
    before = _cpu()
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, *argv],
        env=env,
        cwd=sources or ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    seconds = time.perf_counter() - start
    cpu.append(_cpu() - before)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()[-400:]}")
    return seconds


def _source_copy(root: str) -> str:
    """A copy of the package's sources without bytecode under ``root``; checked to be what a process started
    there imports (the working folder first on ``sys.path``, before the installed package)."""
    sources = os.path.join(root, "sources")
    for package in PACKAGES:
        shutil.copytree(
            os.path.join(ROOT, package), os.path.join(sources, package), ignore=shutil.ignore_patterns("__pycache__")
        )
    where = subprocess.run(
        [sys.executable, "-c", "import ufm, theory; print(ufm.__file__, theory.__file__)"],
        cwd=sources,
        env={**{k: v for k, v in os.environ.items() if k != "PYTHONSAFEPATH"}, "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
    ).stdout.split()
    if len(where) != 2 or not all(path.startswith(sources) for path in where):
        raise SystemExit(f"the copy in {sources} is not the package imported there: {where}")
    return sources


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs per mode (default 5)")
    args = parser.parse_args(argv)
    for package in PACKAGES:  # bytecode as an installation leaves it (see the module docstring)
        compileall.compile_dir(os.path.join(ROOT, package), quiet=1)
    load = os.getloadavg()[0]
    measured = []  # (command, mode, wall seconds, cpu seconds, each run's excess over its floor run or None)
    floor: list[float] = []
    floor_cpu: list[float] = []

    def paired(command: list[str], cache: str, cpu: list[float], sources: str | None = None):
        """``args.repeats`` warm runs, each followed by a floor run in the same conditions: (times, excesses)."""
        times, above = [], []
        for _ in range(args.repeats):
            times.append(_run(command, cache, cpu, sources=sources))
            floor.append(_run(FLOOR, None, floor_cpu))
            above.append(times[-1] - floor[-1])
        return times, above

    for label, extra in (("default (reduced)", []), ("--method gd", ["--method", "gd"])):
        command = MAIN + extra
        with tempfile.TemporaryDirectory() as root:
            cpu: dict[str, list[float]] = {"cold cache": [], "warm cache": [], "--no-cache": [], "sources": []}
            cold = [_run(command, os.path.join(root, f"cold{i}"), cpu["cold cache"]) for i in range(args.repeats)]
            warm_dir = os.path.join(root, "cold0")  # filled by the first cold run
            warm, above = paired(command, warm_dir, cpu["warm cache"])
            none = [_run(command + ["--no-cache"], None, cpu["--no-cache"]) for _ in range(args.repeats)]
            measured += [
                (label, "cold cache", cold, cpu["cold cache"], None),
                (label, "warm cache", warm, cpu["warm cache"], above),
                (label, "--no-cache", none, cpu["--no-cache"], None),
            ]
            if not extra:  # the default command once more, its modules compiled from source every run
                compiled, above = paired(command, warm_dir, cpu["sources"], sources=_source_copy(root))
                measured.append((label, "warm, sources compiled each run", compiled, cpu["sources"], above))
    measured.append(("import jax + 1 op", "(floor)", floor, floor_cpu, [0.0]))
    floor_median = statistics.median(floor)
    rows = [
        [label, mode, statistics.median(times), min(times), max(times), statistics.median(cpus)]
        + [statistics.median(above) if above is not None else statistics.median(times) - floor_median]
        for label, mode, times, cpus, above in measured
    ]
    print(f"machine: {machine()}; load average {load:.2f} at the start, {os.getloadavg()[0]:.2f} at the end")
    print(f"command: python {' '.join(MAIN)} [--method gd]")
    print_table(["command", "mode", "median s", "min s", "max s", "cpu s (median)", "above floor s (median)"], rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
