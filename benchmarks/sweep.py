"""Batched sweep vs a Python loop over ``ufm.solve`` (1,000 configurations of the sweep CLI's default problem).

``python benchmarks/sweep.py [--methods gd,reduced] [--loop-subset 100] [--lanes 16] [--max-iters 20000]``: a
grid of 10 deltas x 10 lambdas x 10 seeds around K = 10, n = 50, d = 10 (the default problem of
``python -m ufm.sweep``; float64, tol 1e-10) solved, for each method, by ``ufm.sweep`` in one vmapped, compiled
call and by a Python loop over ``ufm.solve`` on the first ``--loop-subset`` configurations (a deterministic
subset spread over the grid), whose time is extrapolated linearly to all configurations (each solve is
independent, so the loop time is additive). The sweep's seconds are its compiled calls
(``SweepResult.seconds``; compilation reported separately), the loop's the wall time of its solves after a
first solve compiled them (Python included). ``--max-iters`` caps both alike (on a loaded machine a cap keeps
the gd row short: the cost per iteration is what is compared). Checks that the two agree on the subset
(objective and mean ||w_k||, relative).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

import ufm  # noqa: E402
from benchmarks._common import machine, peak_rss_gib, print_table  # noqa: E402
from ufm.sweep import grid, sweep  # noqa: E402


def _measure(problems, method: str, loop_subset: int, lanes: int | None, cap: int) -> tuple[list[list], str]:
    """The table rows (loop, sweep) of one method and a line on convergence and agreement."""
    M = len(problems)
    swept = sweep(problems, method, batch_size=lanes, max_iters=cap)
    compile_seconds, sweep_seconds = swept.compile_seconds, swept.seconds
    subset = problems[:: max(1, M // loop_subset)][:loop_subset]
    index = {id(p): j for j, p in enumerate(problems)}
    ufm.solve(subset[0], method, max_iters=cap, history=False)  # compiles
    start = time.perf_counter()
    singles = [ufm.solve(p, method, max_iters=cap, history=False) for p in subset]
    loop_seconds = (time.perf_counter() - start) * M / len(subset)
    worst = 0.0
    for p, single in zip(subset, singles, strict=True):
        j = index[id(p)]
        worst = max(worst, abs(swept.objective[j] - single.objective) / abs(single.objective))
        collapse = ufm.collapse(single.W, single.H, p.labels(), p.K)
        worst = max(worst, abs(swept.w_norm[j] - float(collapse.w_norm)) / max(float(collapse.w_norm), 1e-300))
    rows = [
        [method, f"loop over ufm.solve ({len(subset)} run, x{M / len(subset):g})", M, loop_seconds, "-", 1.0],
        [method, "ufm.sweep (one compiled call)", M, sweep_seconds, compile_seconds, loop_seconds / sweep_seconds],
    ]
    note = (
        f"{method}: converged {int(swept.converged.sum())}/{M}; max iterations {int(swept.iterations.max())}; "
        f"largest relative difference sweep vs loop (objective, mean ||w_k||) on the subset: {worst:.1e}"
    )
    return rows, note


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="gd,reduced", help="comma-separated methods (default gd,reduced)")
    parser.add_argument("--loop-subset", type=int, default=100)
    parser.add_argument("--lanes", type=int, default=None, help="batch_size of ufm.sweep (default: its default)")
    parser.add_argument("--configs-per-axis", type=int, default=10)
    parser.add_argument("--max-iters", type=int, default=20_000, help="iteration cap of both (default 20000)")
    args = parser.parse_args(argv)
    m = args.configs_per_axis
    base = ufm.Problem(K=10, n=50)
    problems = grid(
        base, delta=np.linspace(0.0, 0.3, m).tolist(), lam=np.geomspace(1e-4, 2e-3, m).tolist(), seed=list(range(m))
    )
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.1f} at the start")
    print(f"{len(problems)} configurations, K=10 n=50 d=10 float64, tol 1e-10, max_iters {args.max_iters}")
    rows, notes = [], []
    for method in args.methods.split(","):
        method_rows, note = _measure(problems, method, args.loop_subset, args.lanes, args.max_iters)
        rows += method_rows
        notes.append(note)
    header = ["method", "how", "configurations", "seconds", "compile s", "speed-up vs loop"]
    print_table(header, rows)
    print(f"peak RSS {peak_rss_gib():.2f} GiB; load average {os.getloadavg()[0]:.1f} at the end")
    print("\n".join(notes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
