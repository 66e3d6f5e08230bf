"""Batched sweeps: many (delta, lambda, seed) configurations of one shape in one compiled call.

``sweep(problems)`` solves the whole grid in one ``jit``-compiled call instead of one
Python call per configuration, with the iteration and stopping rule of :func:`ufm.solve`,
so each configuration ends at the same point up to rounding of the batched linear algebra.

- ``"reduced"`` (the default where :func:`ufm.solve` uses it): a work queue. ``batch_size``
  lanes run the reduced driver (:func:`ufm.reduction.reduced_step`) under ``jax.vmap``; when a lane's
  configuration stops, the lane stores its result and loads the next configuration. The work is the sum of the
  configurations' iterations (a ``vmap`` over all of them would run each one as long as the
  slowest), and a lane's arrays stay small. The seeded starts are a program of their own, the
  only one that depends on N, so sweeps that differ only in n share the queue's program.
- the other methods: the solver's compiled loop (:func:`ufm.solver.run_loop`) under ``jax.vmap``
  over chunks of ``batch_size`` configurations. The ``while_loop`` runs until every
  configuration of the chunk has stopped; one that has stopped is frozen (``vmap`` of a
  ``while_loop`` with a per-configuration predicate keeps the carry of finished members).

``python -m ufm.sweep --K 10 --n 50 --delta 0,0.05,0.1 --lam 5e-4,1e-3 --seeds 0:10 --out sweep.csv``
writes one row per configuration (CSV or JSON by the suffix, atomically, never
overwriting without ``--force``; see ``ufm._io``). The file holds no timings, so identical runs
write identical bytes; the wall and compile times are printed on stdout. SIGINT / SIGTERM stop
it at once with one line and exit code 130 / 143.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import sys
import textwrap
import time
import types
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from theory import validation
from ufm import _cache, _cli, _io, _memory, _prog, metrics, policy, solver
from ufm._compile import compile_once
from ufm._interrupt import exit_on_interrupt
from ufm.loop import MAX_ITERS_LIMIT, RUNNING, status_word
from ufm.losses import loss_spec
from ufm.methods import METHODS, method_spec
from ufm.objective import Weights
from ufm.policy import check_method_fits, default_method
from ufm.problem import Problem, initial_params, require_dtype_enabled
from ufm.reduction import ReducedRun, reduced_objective, reduced_params, reduced_run, reduced_step
from ufm.results import BatchResult
from ufm.solver import check_options, run_loop

PROG = "python -m ufm.sweep"
#: Default lanes (configurations in flight) of the ``"reduced"`` work queue: fewer lanes pay XLA's
#: per-operation overhead more often, more lanes spill the L-BFGS buffers out of the cache
#: (docs/performance.md, "Batched sweeps").
REDUCED_LANES = 16
#: Per-configuration columns of :meth:`SweepResult.rows` besides the problem's scalars.
ROW_FIELDS = ("status", "iterations", "objective", "grad_ratio", "w_norm", "h_norm", "nc1", "nc2", "nc3")
_SHAPE_FIELDS = ("K", "n", "d", "loss", "dtype")


@dataclass(frozen=True)
class SweepResult(BatchResult):
    """Outcome of :func:`sweep`: the :class:`ufm.BatchResult` of the M configurations (``result(j)`` is
    configuration j as a :class:`ufm.Result`) and the collapse measurements at each final iterate.

    Attributes (besides :class:`ufm.BatchResult`'s):
        w_norm, h_norm, nc1, nc2, nc3 ``(M,)``: mean ||w_k||, mean ||hbar_k - h_G|| and NC1-NC3
        at the final iterate (:func:`ufm.metrics.collapse`).
    """

    w_norm: np.ndarray
    h_norm: np.ndarray
    nc1: np.ndarray
    nc2: np.ndarray
    nc3: np.ndarray

    def rows(self) -> list[dict[str, Any]]:
        """One dict per configuration: its scalars and ``ROW_FIELDS``. The scalars: the loss's parameters
        (:attr:`ufm.losses.Loss.parameters`; delta for the default loss ``"ls"``), lam_W, lam_H, lam_b, seed,
        after a ``loss`` column where the loss is not Problem's default (a row without one is label smoothing,
        as every row before the sweep took other losses)."""
        ratio = np.where(
            self.initial_grad_norm > 0,
            self.grad_norm / np.where(self.initial_grad_norm > 0, self.initial_grad_norm, 1),
            0.0,
        )
        out = []
        for j, p in enumerate(self.problems):
            row: dict[str, Any] = {} if p.loss == Problem.loss else {"loss": p.loss}
            row.update({name: getattr(p, name) for name in p.loss_spec.parameters})
            row |= {
                "lam_W": p.lam_W,
                "lam_H": p.lam_H,
                "lam_b": p.lam_b,
                "seed": p.seed,
                "status": self.status[j],
                "iterations": int(self.iterations[j]),
                "objective": float(self.objective[j]),
                "grad_ratio": float(ratio[j]),
            }
            row.update({name: float(getattr(self, name)[j]) for name in ROW_FIELDS[4:]})
            out.append(row)
        return out


def grid(
    base: Problem,
    *,
    delta: Sequence[float] | None = None,
    lam: Sequence[float] | None = None,
    seed: Sequence[int] | None = None,
) -> list[Problem]:
    """The Cartesian product of ``delta x lam x seed`` around ``base`` (delta slowest, seed fastest).

    ``lam`` sets ``lam_W = lam_H = lam_b`` (like ``--lam`` of ``python -m ufm.solve``); an
    omitted axis keeps ``base``'s value. Each configuration is validated by :class:`Problem`.
    """
    if not isinstance(base, Problem):
        raise ValueError(f"base must be a ufm.Problem, got {type(base).__name__}")
    axes = [("delta", delta), ("lam", lam), ("seed", seed)]
    values: list[Sequence[Any]] = []
    for name, v in axes:
        if v is None:
            values.append([None])
            continue
        if isinstance(v, (str, bytes)) or not isinstance(v, (Sequence, range, np.ndarray)):
            raise ValueError(f"{name} must be a sequence of values (a list, range or 1-D array), got {v!r}")
        if len(v) == 0:
            raise ValueError(f"{name} must list at least one value")
        values.append(v)
    count = 1
    for v in values:
        count *= len(v)  # len of a range is O(1): nothing is built before the check
    per_configuration = _memory.SWEEP_BYTES_PER_CONFIGURATION + 8.0 * (base.d * (base.K + base.N) + base.K)

    def runs(m: int) -> float:
        """The grid of ``m`` configurations, or the sweep of them with base's default method (whichever
        is larger), so that the advice is a count that :func:`sweep` then accepts too."""
        method = default_method(base)
        lanes = min(m, REDUCED_LANES) if method_spec(method).class_means else m
        itemsize = np.dtype(base.dtype).itemsize
        return max(m * per_configuration, _memory.sweep_bytes(m, lanes, base.K, base.N, base.d, itemsize, method))

    def advice() -> str:
        m = _memory.largest_fitting(1, count, runs)
        if m is None:
            return f"even one configuration of this shape needs about {_memory.gib(runs(1))}; reduce n, K or d"
        return f"instead: at most {m} configurations (their sweep needs about {_memory.gib(runs(m))})"

    _memory.require(
        count * per_configuration,
        "a sweep grid",
        f"{count} configurations (K = {base.K}, n = {base.n}, d = {base.d})",
        advice,
    )
    values = [list(v) for v in values]
    problems = []
    for d_, l_, s_ in itertools.product(*values):
        changes: dict[str, Any] = {}
        if d_ is not None:
            changes["delta"] = d_
        if l_ is not None:
            changes.update(lam_W=l_, lam_H=l_, lam_b=l_)
        if s_ is not None:
            changes["seed"] = s_
        problems.append(dataclasses.replace(base, **changes))
    return problems


def _batched_run(seeds, scales, weights, labels, lr, tol, *, d, K, N, dtype, method, max_iters, loss_id):
    """The solver's loop under ``jax.vmap`` over a chunk of configurations, the loss fixed at trace time
    (``loss_id``: only that loss is traced), then the collapse metrics of each final iterate."""
    params0 = jax.vmap(initial_params, in_axes=(0, 0, None, None, None, None))(seeds, scales, d, K, N, dtype)
    run = partial(
        run_loop,
        method=method,
        max_iters=max_iters,
        record_every=max_iters,
        progress_every=0,
        with_history=False,
        loss_id=loss_id,
    )
    out = jax.vmap(run, in_axes=(0, None, 0, None, None))(params0, labels, weights, lr, tol)
    collapse = jax.vmap(metrics.collapse, in_axes=(0, 0, None, None))(out.params.W, out.params.H, labels, K)
    return out.params, out.value, out.grad_norm, out.g0, out.iterations, out.status, collapse


class _Lane(NamedTuple):
    """One lane of the reduced sweep's work queue: the configuration it solves (``M`` when idle), that
    configuration's weights and its run of the reduced driver (:class:`ufm.reduction.ReducedRun`)."""

    config: jnp.ndarray
    weights: Weights
    run: ReducedRun


def _without_pairs(lanes: _Lane) -> _Lane:
    # None is an empty pytree: the lanes travel without their (2, m, P) pair buffers, which the State
    # type (an array everywhere else) cannot say
    state = lanes.run.state._replace(pairs=None)  # type: ignore[arg-type]
    return lanes._replace(run=lanes.run._replace(state=state))


def _with_pairs(lanes: _Lane, pairs) -> _Lane:
    return lanes._replace(run=lanes.run._replace(state=lanes.run.state._replace(pairs=pairs)))


def _queue_start(seeds, scales, weights, labels, *, d, K, N, dtype, loss_id):
    """The seeded starts of M configurations for :func:`_reduced_queue`, as in :func:`ufm.solver.reduced_start`:
    ``(x0s (M, 2 d K + K), g0s (M,))``, the flat reduced starts and ``||grad L(x_0)||`` of the full L. The only
    program of a reduced sweep that depends on N."""

    def start(seed, scale, w):  # loss_id a Python int: no lax.switch over the losses
        begin = solver.reduced_start(initial_params(seed, scale, d, K, N, dtype), labels, w, loss_id=loss_id)
        return begin.x, begin.g0  # XLA drops the rest (L(x_0) and its history row), which is not used

    # one configuration at a time: a start is one gradient, and a batched map compiles several times longer
    # (its remainder batch is a second copy of the body; docs/performance.md, "Sweep set-up")
    return jax.lax.map(lambda a: start(*a), (seeds, scales, weights))


def _reduced_queue(x0s, g0s, n, weights, tol, max_iters, *, d, K, dtype, loss_id, lanes):
    """Method ``"reduced"`` for M configurations as a work queue over ``lanes`` vmapped L-BFGS lanes.

    Every iteration advances each busy lane by one evaluation of the reduced driver
    (:func:`ufm.reduction.reduced_step`: the step and the stopping rule of :func:`ufm.solver.reduced_loop`);
    a lane whose configuration has stopped stores its result and loads the next configuration. So the work is
    the sum of the configurations' iterations, not M times the slowest one (a plain ``vmap`` of the
    loop), and the lanes' arrays stay small enough for the cache. Starts from :func:`_queue_start`;
    ``n`` (traced, samples per class) and ``max_iters`` (traced) leave one program per (d, K, M, lanes).
    Returns ``(Params of (W, Hbar, b) over M, value, grad_norm, g0, iterations, status, collapse)``.
    """
    M = x0s.shape[0]
    concrete = lambda w: w._replace(loss_id=loss_id)  # a Python int: no lax.switch over the losses
    value_and_grad = jax.value_and_grad(lambda x, w: reduced_objective(x, concrete(w), d, K, n))

    def load(j):
        w = jax.tree_util.tree_map(lambda a: a[j], weights)
        run = reduced_run(x0s[j], lambda x: value_and_grad(x, w), g0s[j], tol, max_iters)  # nan / inf: "nonfinite"
        return _Lane(j, w, run)

    def advance(lane):
        return lane._replace(run=reduced_step(lane.run, lambda x: value_and_grad(x, lane.weights), tol, max_iters))

    first = jnp.arange(lanes)
    queue = jax.vmap(load)(jnp.minimum(first, M - 1))
    queue = queue._replace(config=jnp.where(first < M, first, M))
    P = x0s.shape[1]
    results = (
        jnp.zeros((M, P), dtype),
        jnp.zeros((M,), dtype),
        jnp.zeros((M,), dtype),
        jnp.zeros((M,), jnp.int32),
        jnp.zeros((M,), jnp.int32),
    )

    def store_and_refill(queue, finished, next_config, results):
        where = jnp.where(finished, queue.config, M)  # index M: dropped
        run = queue.run
        gnorm = jnp.linalg.norm(run.state.grad, axis=1)
        results = tuple(
            r.at[where].set(v.astype(r.dtype), mode="drop")
            for r, v in zip(results, (run.state.x, run.state.value, gnorm, run.iteration, run.status), strict=True)
        )
        wanted = next_config + jnp.cumsum(finished) - 1
        take = finished & (wanted < M)
        loaded = _without_pairs(jax.vmap(load)(jnp.minimum(wanted, M - 1)))
        queue = jax.tree_util.tree_map(
            lambda new, old: jnp.where(take.reshape((-1,) + (1,) * (old.ndim - 1)), new, old), loaded, queue
        )
        config = jnp.where(take, wanted, jnp.where(finished, M, queue.config))
        return queue._replace(config=config), jnp.minimum(next_config + jnp.sum(finished), M), results

    def body(loop):
        queue, next_config, results = loop
        queue = jax.vmap(advance)(queue)
        finished = (queue.config < M) & (queue.run.status != RUNNING)
        # the pair buffers stay out of the cond (passing them through it costs a copy per
        # iteration): a loaded lane keeps the stale pairs of its previous configuration, which
        # its empty memory (valid = False) masks out
        pairs = queue.run.state.pairs
        light, next_config, results = jax.lax.cond(
            jnp.any(finished),
            store_and_refill,
            lambda q, f, c, r: (q, c, r),
            _without_pairs(queue),
            finished,
            next_config,
            results,
        )
        return _with_pairs(light, pairs), next_config, results

    _, _, (x, value, gnorm, iterations, status) = jax.lax.while_loop(
        lambda loop: jnp.any(loop[0].config < M), body, (queue, jnp.minimum(lanes, M), results)
    )
    final = jax.vmap(lambda x: reduced_params(x, d, K, n))(x)  # (W, Hbar, b): NC metrics of Hbar Y
    collapse = jax.vmap(metrics.collapse, in_axes=(0, 0, None, None))(final.W, final.H, jnp.arange(K), K)
    return final, value, gnorm, g0s, iterations, status, collapse


def sweep(
    problems: Sequence[Problem],
    method: str | None = None,
    *,
    lr: float | None = None,
    tol: float = 1e-10,
    max_iters: int = 20_000,
    batch_size: int | None = None,
) -> SweepResult:
    """Solve every configuration of ``problems`` (same K, n, d, loss, dtype) in vmapped, compiled calls.

    Same stopping rule and defaults as :func:`ufm.solve` (which gives, configuration by
    configuration, the same result up to rounding; tested to 1e-10), except that a fixed step is one
    for all configurations and a failed default step is not rerun (``lr`` below). No history is recorded.

    Args:
        problems: M >= 1 :class:`Problem` of one shape; delta, the lambdas, seed and
            init_scale may differ. See :func:`grid`.
        method, lr, tol, max_iters: as in :func:`ufm.solve`; one step for every configuration, by default
            the smallest :func:`ufm.policy.default_lr` among them (MSE's curvature asks for a smaller
            step). A failed default step is not rerun as :func:`ufm.solve` reruns it: its row says so.
        batch_size: configurations in flight at once: the lanes of the ``"reduced"`` queue
            (default ``REDUCED_LANES``), or the configurations per compiled call of the other
            methods (default all M). Memory grows linearly with it (L-BFGS keeps 5 (reduced)
            or 10 (lbfgs) pairs of parameter-sized vectors per configuration).

    Returns:
        :class:`SweepResult`.
    """
    problems = tuple(problems)
    if not problems or not all(isinstance(p, Problem) for p in problems):
        raise ValueError("problems must be a non-empty sequence of ufm.Problem")
    first = problems[0]
    for field in _SHAPE_FIELDS:
        values = {getattr(p, field) for p in problems}
        if len(values) > 1:
            raise ValueError(f"every problem of a sweep must have the same {field}; got {sorted(map(str, values))}")
    for p in problems:
        if p.nonnegative or p.label_noise:
            raise ValueError(
                "problems with nonnegative=True or label_noise > 0 are not supported by sweep "
                "(their constraint / labels differ per run); loop over ufm.solve instead"
            )
        if not p.balanced:
            raise ValueError(
                f"problems with unequal class_sizes are not supported by sweep (got class_sizes = "
                f"{p.class_sizes}); loop over ufm.solve, or ufm.imbalance.solve_reduced for the "
                "class-mean problem"
            )
    M = len(problems)
    method = default_method(first) if method is None else method
    check_method_fits(first, method)
    if batch_size is None:
        batch_size = min(M, REDUCED_LANES) if method_spec(method).class_means else M
    step_given = lr is not None
    lr = check_options(method, lr, tol, dict(max_iters=(max_iters, 1), batch_size=(batch_size, 1)))
    if not step_given and lr is not None:  # one step for all: every configuration's default must be safe
        lr = min(float(policy.default_lr(p, method) or lr) for p in problems)
    require_dtype_enabled(first.dtype)
    itemsize = np.dtype(first.dtype).itemsize
    lanes = min(batch_size, M)
    # the results of all M (W, H, b), twice (device and host), plus the configurations in flight
    _memory.require(
        _memory.sweep_bytes(M, lanes, first.K, first.N, first.d, itemsize, method),
        f"a sweep with {method}",
        f"M = {M} configurations of K = {first.K}, n = {first.n}, d = {first.d}, {lanes} at a time",
        "use fewer configurations, a smaller batch_size (--batch-size), or reduce n",
    )
    # jax.config's flags are dynamic attributes, absent from its type stubs
    if not jax.config.jax_enable_x64 and any(p.seed >= 2**32 for p in problems):  # type: ignore[attr-defined]
        raise ValueError("seed must be < 2**32 without 64-bit JAX (larger seeds repeat smaller ones)")
    dt = first.jnp_dtype
    if method_spec(method).class_means:
        return _sweep_reduced(problems, tol, max_iters, min(batch_size, M))
    statics = dict(
        d=first.d, K=first.K, N=first.N, dtype=dt, method=method, max_iters=max_iters, loss_id=first.loss_spec.branch
    )
    outs, seconds, compile_seconds = [], 0.0, 0.0
    for lo in range(0, M, batch_size):
        chunk = problems[lo : lo + batch_size]
        pad = chunk + (chunk[-1],) * (batch_size - len(chunk))  # one compiled shape for every chunk
        args = (*_stacked(pad, dt), first.labels(), jnp.asarray(lr or 0.0, dt), jnp.asarray(tol, dt))
        compiled, compile_time = compile_once(_batched_run, args, statics)
        compile_seconds += compile_time
        start = time.perf_counter()
        out = jax.block_until_ready(compiled(*args))
        seconds += time.perf_counter() - start
        size = len(chunk)
        outs.append(jax.tree_util.tree_map(lambda x, size=size: np.asarray(x)[:size], out))
    params, value, gnorm, g0, iterations, status, collapse = jax.tree_util.tree_map(
        lambda *xs: np.concatenate(xs), *outs
    )
    return SweepResult(
        problems=problems,
        method=method,
        lr=lr,
        tol=tol,
        max_iters=max_iters,
        W=params.W,
        H=params.H,
        b=params.b,
        objective=value,
        grad_norm=gnorm,
        initial_grad_norm=g0,
        iterations=iterations.astype(np.int64),
        status=tuple(status_word(s) for s in status),
        w_norm=collapse.w_norm,
        h_norm=collapse.h_norm,
        nc1=collapse.nc1,
        nc2=collapse.nc2,
        nc3=collapse.nc3,
        seconds=seconds,
        compile_seconds=compile_seconds,
    )


def _stacked(problems, dt):
    """The configurations' seeds ``(M,)``, init scales ``(M,)`` and :class:`Weights` of ``(M,)`` arrays
    (built in numpy: far cheaper than one ``Problem.weights()`` per configuration; docs/performance.md,
    "Sweep set-up")."""
    first = problems[0].weights()
    # every field of Weights but loss_id is the Problem attribute of the same name; the loss is shared
    columns = {f: np.array([getattr(p, f) for p in problems]) for f in Weights._fields if f != "loss_id"}
    columns["loss_id"] = np.full(len(problems), int(first.loss_id))
    seed_dtype = jnp.uint64 if jax.config.jax_enable_x64 else jnp.uint32  # type: ignore[attr-defined]  # the key of ufm.solve's seed, bit for bit
    return (
        jnp.asarray(np.array([p.seed for p in problems], dtype=np.uint64), dtype=seed_dtype),
        jnp.asarray(np.array([p.init_scale for p in problems]), dtype=dt),
        Weights(**{f: jnp.asarray(columns[f], dtype=getattr(first, f).dtype) for f in Weights._fields}),
    )


def _sweep_reduced(problems, tol, max_iters, lanes) -> SweepResult:
    first = problems[0]
    dt = first.jnp_dtype
    loss_id = first.loss_spec.branch
    seeds, scales, weights = _stacked(problems, dt)
    start_args = (seeds, scales, weights, first.labels())
    start_statics = dict(d=first.d, K=first.K, N=first.N, dtype=dt, loss_id=loss_id)
    start_program, start_seconds = compile_once(_queue_start, start_args, start_statics)
    begin = time.perf_counter()
    x0s, g0s = jax.block_until_ready(start_program(*start_args))
    seconds = time.perf_counter() - begin
    # every shape below is N-free: sweeps that differ only in n share the queue's program
    args = (x0s, g0s, jnp.asarray(first.n, dt), weights, jnp.asarray(tol, dt), jnp.asarray(max_iters, jnp.int32))
    statics = dict(d=first.d, K=first.K, dtype=dt, loss_id=loss_id, lanes=lanes)
    compiled, queue_seconds = compile_once(_reduced_queue, args, statics)
    compile_seconds = start_seconds + queue_seconds
    begin = time.perf_counter()
    final, value, gnorm, g0, iterations, status, collapse = jax.block_until_ready(compiled(*args))
    seconds += time.perf_counter() - begin
    return SweepResult(
        problems=problems,
        method="reduced",
        lr=None,
        tol=tol,
        max_iters=max_iters,
        W=np.asarray(final.W),
        H=np.repeat(np.asarray(final.H), first.n, axis=2),
        b=np.asarray(final.b),
        objective=np.asarray(value),
        grad_norm=np.asarray(gnorm),
        initial_grad_norm=np.asarray(g0),
        iterations=np.asarray(iterations).astype(np.int64),
        status=tuple(status_word(s) for s in status),
        **{name: np.asarray(getattr(collapse, name)) for name in ("w_norm", "h_norm", "nc1", "nc2", "nc3")},
        seconds=seconds,
        compile_seconds=compile_seconds,
    )


# ----------------------------------------------------------------------------------------- CLI


def _seeds(text: str) -> Sequence[int]:
    """``--seeds``: comma-separated seeds (integers >= 0, each checked as ``ufm.solve``'s ``--seed``) or a range
    ``LO:HI``, HI exclusive, kept a ``range`` (not listed: :func:`grid` checks its size first)."""
    if ":" not in text:
        return _cli.values_type("--seeds", validation.integer_type("--seeds", 0))(text)
    try:
        lo, hi = (int(x) for x in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--seeds must be comma-separated integers or a range LO:HI, got {text!r}"
        ) from None
    if lo < 0 or hi <= lo:
        raise argparse.ArgumentTypeError(f"--seeds must be a range LO:HI with 0 <= LO < HI, got {text!r}")
    return range(lo, hi)


#: ``--n``'s default: not ``ufm.solve``'s 500, because a sweep's full-feature methods (``--float32``, ``--method
#: lbfgs``/``gd``/...) hold and step every configuration's K n samples at once (docs/cli.md, "Sweeps").
N_DEFAULT = 50
N_HELP = (
    f"samples per class (>= 1; default {N_DEFAULT}, not ufm.solve's 500: a sweep's full-feature methods step "
    "every configuration's K n samples at once, 16 float32 seeds 16x slower at 500; see docs/cli.md)"
)

#: the columns the command line adds to :meth:`SweepResult.rows`: p_t measured at the solution, and theory's
#: p_t and kappa = K p_t (Guo et al. Thm 4.2; NaN past the phase boundary or for d < K, 1 for K = 2)
CLI_COLUMNS = ("p_t", "p_t_theory", "kappa_theory")

EXIT_CODES = _cli.exit_codes(
    (0, "every configuration converged"),
    (1, "at least one did not (its row says why)"),
    bad_input="bad input: one error: line naming the flag (also an --out file that exists, without --force); "
    "no file written",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.fill(
            "Solve a grid of UFM configurations (delta x lam x seed) of one shape and loss in one vmapped, "
            "compiled call and write one row per configuration: the configuration, status, iterations, objective, "
            "|grad L| / "
            "|grad L(x0)|, the norms, NC1-NC3, p_t (measured at the solution), p_t_theory and kappa_theory (K p_t, "
            "the condition number of the loss blocks over their non-zero eigenvalues; Guo et al. Thm 4.2; nan past "
            "the phase boundary and for d < K). The measured kappa needs the Hessian: "
            "ufm.compare(SweepResult.result(j)).",
            width=100,
        ),
        epilog=EXIT_CODES,
    )
    _cli.add_problem_flags(parser, "K")
    parser.add_argument("--n", type=validation.integer_type("--n", 1), default=N_DEFAULT, help=N_HELP)
    _cli.add_problem_flags(parser, "d", "loss", "lam", grid=("delta", "lam"))
    parser.add_argument(
        "--seeds",
        type=_seeds,
        default=[0],
        help="comma-separated seeds or a range LO:HI, HI exclusive (0:3 is 0, 1, 2; default 0)",
    )
    _cli.add_problem_flags(parser, "float32")
    parser.add_argument(
        "--method", choices=METHODS, default=None, help="optimizer (default reduced in float64, lbfgs in float32)"
    )
    _cli.add_solver_flags(parser, "lr", "tol", "max_iters")
    parser.add_argument(
        "--batch-size",
        type=validation.integer_type("--batch-size", 1, MAX_ITERS_LIMIT),
        default=None,
        help=f"configurations in flight at once (default: {REDUCED_LANES} queue lanes for "
        "reduced, all configurations in one call for the other methods)",
    )
    parser.add_argument("--out", metavar="PATH", default=None, help="write the rows to PATH (.csv or .json)")
    _cli.add_output_flags(parser, "force", output="--out")
    _cache.add_argument(parser)
    return parser


def _rows(result: SweepResult) -> list[dict[str, Any]]:
    """:meth:`SweepResult.rows` with the :data:`CLI_COLUMNS` (theory through :mod:`ufm.compare`, which sees both)."""
    from ufm.compare import measured_probabilities, predicted_p_t_kappa

    rows = result.rows()
    for j, row in enumerate(rows):  # p_t: a softmax probability, none for MSE (nan, null in JSON)
        softmax = result.problems[j].loss_spec.softmax
        row["p_t"] = measured_probabilities(result.result(j))[0] if softmax else float("nan")
        row["p_t_theory"], row["kappa_theory"] = predicted_p_t_kappa(result.problems[j])
    return rows


def _write(path, result: SweepResult, extra: dict, *, overwrite: bool):
    """The rows as CSV or JSON (by the suffix), atomically; returns the path written (see ``ufm._io``)."""
    rows = _rows(result)
    if str(path).endswith(".json"):
        return _io.write_json(path, {**extra, "rows": rows}, overwrite=overwrite, what="--out")
    return _io.write_bytes(path, _io.csv_bytes(rows, lineterminator="\n"), overwrite=overwrite, what="--out")


def main(argv=None) -> int:
    """Run the sweep CLI on ``argv`` (default ``sys.argv[1:]``). Exit code 0 when every
    configuration converged, 1 otherwise, 2 for bad arguments (or an existing --out without --force),
    4 when the --out file or the summary on standard output could not be written (one ``error:`` line
    naming the path, the reason and where the rows were kept), 130 / 143 when interrupted by SIGINT /
    SIGTERM."""
    with exit_on_interrupt(PROG):  # one line and exit 130 / 143 at once, compilation included
        return _main(argv)


def _main(argv) -> int:
    parser = build_parser()
    args = _prog.start(parser, argv, prog=PROG, x64=False)
    if isinstance(args, int):
        return args
    dtype = "float32" if args.float32 else "float64"
    if dtype == "float64":
        jax.config.update("jax_enable_x64", True)  # the CLI owns its process, as in ufm.solve
    tol = args.tol if args.tol is not None else (1e-5 if args.float32 else 1e-10)
    try:
        _cli.resolve_loss_flags(args)  # --loss ls by default; a --delta grid with another loss is refused
        if args.out is not None:
            if not str(args.out).endswith((".csv", ".json")):
                raise ValueError(f"--out must end in .csv or .json, got {args.out!r}")
            _io.check_writable(args.out, overwrite=args.force, what="--out")
        loss = loss_spec(args.loss)
        scalars = {p: getattr(args, p) for p in loss.parameters if p != "delta"}  # delta: the grid's axis
        base = Problem(K=args.K, n=args.n, d=args.d, dtype=dtype, loss=args.loss, **scalars)
        method = default_method(base) if args.method is None else args.method
        _cli.check_method_flags(method, lr=args.lr, float32=args.float32)
        deltas = None  # another loss keeps delta 0
        if "delta" in loss.parameters:
            deltas = args.delta if isinstance(args.delta, list) else [args.delta]  # not given: the default
        problems = grid(base, delta=deltas, lam=args.lam, seed=args.seeds)
        watch = _cli.CompileWatch()
        with watch.watching():
            result = sweep(
                problems,
                method,
                lr=args.lr,
                tol=tol,
                max_iters=_cli.max_iters(method, args.max_iters),
                batch_size=args.batch_size,
            )
    except (ValueError, OSError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    done = int(np.sum(result.converged))
    extra = {
        "K": base.K,
        "n": base.n,
        "d": base.d,
        "dtype": dtype,
        "method": result.method,
        "tol": tol,
        "jax_version": jax.__version__,
    }
    # wall times go to stdout only: the --out file is byte-identical across identical runs
    return _io.deliver(
        PROG,
        f"{len(result)} configurations (K = {base.K}, n = {base.n}, d = {base.d}, {dtype}, {result.method}): "
        f"{done} converged, {result.seconds:.2f} s (+ {watch.phrase(result.compile_seconds)}), "
        f"{int(result.iterations.max())} iterations at most",
        None if args.out is None else lambda: _write(args.out, result, extra, overwrite=args.force),
        code=0 if done == len(result) else 1,
        announce=sys.stdout,
    )


class _CallableModule(types.ModuleType):
    """``ufm.sweep(problems, ...)`` calls :func:`sweep` although ``ufm.sweep`` is also this module (CLI)."""

    __call__ = staticmethod(lambda *args, **kwargs: sweep(*args, **kwargs))


sys.modules[__name__].__class__ = _CallableModule

if __name__ == "__main__":
    raise SystemExit(main())
