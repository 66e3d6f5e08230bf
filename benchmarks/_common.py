"""Shared helpers of the benchmark scripts (timing, peak memory, table printing)."""

from __future__ import annotations

import os
import platform
import resource
import time

import jax


def machine() -> str:
    """One line naming the machine the table was measured on."""
    cores = os.cpu_count()
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{platform.processor() or platform.machine()}, {cores} cores, {mem_gb:.0f} GiB, "
        f"jax {jax.__version__} ({jax.default_backend()}), Python {platform.python_version()}"
    )


def peak_rss_gib() -> float:
    """Peak resident memory of this process so far (``ru_maxrss`` is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def best_of(repeats: int, run):
    """Run ``run()`` ``repeats`` times; return (smallest wall time in seconds, last return value)."""
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = run()
        best = min(best, time.perf_counter() - start)
    return best, out


def print_table(header: list[str], rows: list[list]) -> None:
    """Fixed-width text table (also valid Markdown)."""
    cells = [header] + [[c if isinstance(c, str) else f"{c:.4g}" for c in row] for row in rows]
    widths = [max(len(row[j]) for row in cells) for j in range(len(header))]
    line = lambda row: "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
    print(line(cells[0]))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells[1:]:
        print(line(row))
