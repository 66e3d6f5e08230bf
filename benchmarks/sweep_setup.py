"""The two set-up choices of ``ufm.sweep`` that its code states as a one-line rationale (docs/performance.md,
"Sweep set-up"), measured.

``python benchmarks/sweep_setup.py [--K 4] [--n 5] [--M 20] [--batch 16]``:

1. the seeded starts of a ``"reduced"`` sweep (one gradient of the full L per configuration): compile time of
   ``jax.lax.map`` one configuration at a time (what ``ufm.sweep`` does) against a batched ``lax.map``
   (``batch_size``; M not a multiple of it, so the remainder batch is a second copy of the body), best of 3
   fresh compilations each (the in-process cache is bypassed: a new function object each time);
2. the per-configuration :class:`ufm.objective.Weights` of M configurations: one ``Problem.weights()`` per
   configuration against the fields read into numpy columns (what ``ufm.sweep`` does), per configuration.
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

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import ufm  # noqa: E402
from benchmarks._common import best_of, machine, print_table  # noqa: E402
from ufm import solver  # noqa: E402
from ufm.objective import Weights  # noqa: E402
from ufm.problem import initial_params  # noqa: E402


def _starts(problems, batch_size):
    """A fresh jitted program of the seeded starts (x_0 and ||grad L(x_0)||) of ``problems``."""
    first = problems[0]
    d, K, N, dt = first.d, first.K, first.N, first.jnp_dtype
    loss_id = first.loss_spec.branch

    def start(seed, scale, w):
        begin = solver.reduced_start(initial_params(seed, scale, d, K, N, dt), first.labels(), w, loss_id=loss_id)
        return begin.x, begin.g0

    return jax.jit(lambda s, c, w: jax.lax.map(lambda a: start(*a), (s, c, w), batch_size=batch_size))


def _columns(problems) -> Weights:
    columns = {f: np.array([getattr(p, f) for p in problems]) for f in Weights._fields if f != "loss_id"}
    columns["loss_id"] = np.full(len(problems), int(problems[0].weights().loss_id))
    return Weights(**{f: jnp.asarray(v) for f, v in columns.items()})


def _each(problems) -> Weights:
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *[p.weights() for p in problems])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--K", type=int, default=4)
    parser.add_argument("--n", type=int, default=5)
    parser.add_argument("--M", type=int, default=20, help="configurations (default 20)")
    parser.add_argument("--batch", type=int, default=16, help="batch_size of the batched map (default 16)")
    args = parser.parse_args(argv)
    problems = ufm.grid(ufm.Problem(K=args.K, n=args.n), seed=range(args.M))
    seeds = jnp.asarray(np.arange(args.M, dtype=np.uint64))
    scales = jnp.full(args.M, problems[0].init_scale)
    weights = _columns(problems)
    rows = []
    maps = (("lax.map, one at a time (ufm.sweep)", None), (f"lax.map, batch_size {args.batch}", args.batch))
    for label, batch in maps:
        seconds, _ = best_of(3, lambda batch=batch: _starts(problems, batch).lower(seeds, scales, weights).compile())
        rows.append([f"starts: compile, {label}", seconds])
    for label, build in (("numpy columns (ufm.sweep)", _columns), ("one Problem.weights() each", _each)):
        build(problems)  # warm: jnp.asarray / stack programs compiled once
        start = time.perf_counter()
        jax.block_until_ready(build(problems))
        rows.append([f"Weights of M: {label}, per configuration", (time.perf_counter() - start) / args.M])
    print(f"K = {args.K}, n = {args.n}, M = {args.M}; {machine()}; load {os.getloadavg()[0]:.1f}")
    print_table(["what", "seconds"], rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
