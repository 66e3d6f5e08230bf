"""The compiled loop every method runs, its stopping rule and its statuses (internal API of the solver).

One rule decides when a run stops (:func:`judge`, after every evaluation of L and its gradient): diverged (a
non-finite L or gradient, or L above :func:`divergence_level`), converged (``||grad L|| <= tol ||grad
L(x_0)||``), no progress (fixed-step methods that cycle: :func:`progress_update`), stalled (a line search
that found no decrease with an empty memory), max_iters, or still running; a diverged run keeps its last
finite iterate. Before the first step :func:`start_status` calls a non-finite start ``nonfinite``. The
statuses are one enumeration, :class:`Status`, whose words (``"converged"``, ...) are what
:attr:`ufm.Result.status` reports. :func:`iterate` is the ``lax.while_loop`` of :func:`ufm.solve` (history and
progress lines included); the sweep's work queue and :mod:`ufm.imbalance` run the same :func:`judge` on their
own carries (:mod:`ufm.reduction`). Why each threshold has its value is in :mod:`ufm.solver`'s docstring.

Internal API (not exported from :mod:`ufm`): every public name here.
"""

from __future__ import annotations

import enum
import sys
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from ufm import _lbfgs, metrics

DIVERGENCE_FACTOR = 100.0
HISTORY_FIELDS = ("iteration", "objective", "grad_norm", "nc1", "nc2", "nc3", "w_norm", "h_norm")
#: The no-progress rule of the fixed-step methods (:mod:`ufm.solver` docstring): stop after this many iterations
#: in which neither the best L fell by NO_PROGRESS_OBJECTIVE (relative) nor the best ||grad L|| by the
#: fraction NO_PROGRESS_GRADIENT while L rose above its best by more than rounding. Measured (float64,
#: per-iteration traces of L and ||grad L|| replayed through this rule): the longest such stretch before
#: convergence is 8 iterations (momentum lr 3, CLI default problem) and 0 for every GD run (monotone L); over the
#: experiments' settings (landscape: projected momentum lr 1, init scales 0.01 to 10; convergence and
#: speed_vs_kappa: GD at 1 / lambda_max) at most 52; every default step of H >= 0 at n = 20: 41.
#: The window is 2000, ~40 times that; a limit cycle is then stopped after a few thousand iterations
#: (GD lr 100 on the CLI default problem: iteration 6055 instead of running to max_iters = 10^5).
NO_PROGRESS_WINDOW = 2000
NO_PROGRESS_OBJECTIVE = 1e-6
NO_PROGRESS_GRADIENT = 1e-2
#: Largest ``max_iters`` (and ``record_every``, ``progress_every``): the iteration counters are int32.
MAX_ITERS_LIMIT = 2**31 - 1


class Status(enum.IntEnum):
    """Why a run stopped (``RUNNING`` while it has not); the code travels through compiled programs as an
    int32 and :attr:`word` is what a :class:`ufm.Result` reports."""

    RUNNING = 0
    CONVERGED = 1
    MAX_ITERS = 2
    DIVERGED = 3
    STALLED = 4
    NONFINITE = 5
    NO_PROGRESS = 6

    @property
    def word(self) -> str:
        """``"converged"``, ``"max_iters"``, ``"diverged"``, ``"stalled"``, ``"nonfinite"``, ``"no_progress"``."""
        return self.name.lower()


#: The codes as plain ints (what a compiled program compares with) and their words, for every status but RUNNING.
RUNNING, CONVERGED, MAX_ITERS, DIVERGED, STALLED, NONFINITE, NO_PROGRESS = (int(s) for s in Status)
STATUS_NAMES = {int(s): s.word for s in Status if s is not Status.RUNNING}


def status_word(code) -> str:
    """The word of a finished run's status code (a Python or numpy integer)."""
    return Status(int(code)).word


def divergence_level(value0):
    """The objective above which a run counts as diverged, ``DIVERGENCE_FACTOR * max(|L(x_0)|, 1)``."""
    return DIVERGENCE_FACTOR * jnp.maximum(jnp.abs(value0), 1.0)


def start_status(value0, gnorm0, g0, tol, max_iters):
    """The status before the first step: ``nonfinite`` when L(x_0), its gradient norm or ``||grad L(x_0)||``
    is nan or inf (then ``gnorm0 <= tol * g0`` could read ``inf <= inf`` as converged), converged when x_0
    already meets the tolerance, else running."""
    finite = jnp.isfinite(value0) & jnp.isfinite(gnorm0) & jnp.isfinite(g0)
    return jnp.where(
        ~finite, NONFINITE, jnp.where(gnorm0 <= tol * g0, CONVERGED, jnp.where(max_iters == 0, MAX_ITERS, RUNNING))
    )


def step_status(i, value, gnorm, g0, tol, blowup, max_iters, stalled=False, completed=True, no_progress=False):
    """The stopping rule after step ``i``: diverged, converged, no_progress (:func:`progress_update`), stalled
    (a line search cannot decrease L), max_iters, or still running. ``completed=False`` (a line search still
    under way) is always running. Never converged unless L and ||grad L|| are finite."""
    diverged = ~jnp.isfinite(value) | ~jnp.isfinite(gnorm) | (value > blowup)
    status = jnp.where(
        diverged,
        DIVERGED,
        jnp.where(
            gnorm <= tol * g0,
            CONVERGED,
            jnp.where(
                no_progress, NO_PROGRESS, jnp.where(stalled, STALLED, jnp.where(i >= max_iters, MAX_ITERS, RUNNING))
            ),
        ),
    )
    return jnp.where(completed, status, RUNNING)


def progress_start(value0, gnorm0):
    """The no-progress tracker at x_0 (see :func:`progress_update`): ``(best L, best ||grad L||, iteration of
    the last progress, largest L since then)``."""
    return value0, gnorm0, jnp.zeros((), jnp.int32), value0


def progress_update(tracker, i, value, gnorm):
    """``(tracker, stuck)`` after step ``i`` with objective ``value`` and gradient norm ``gnorm``.

    Progress: L below the best by ``NO_PROGRESS_OBJECTIVE`` relative, or ``||grad L||`` below the best
    by the fraction ``NO_PROGRESS_GRADIENT`` (the bests are updated only then, so slow gains add up
    until they count). ``stuck``: ``NO_PROGRESS_WINDOW`` iterations without progress during which L
    rose above its best by more than ``sqrt(eps) |L_best|`` (the iterates move, yet nothing improves:
    a cycle; a run flat at its rounding floor is not stuck). Works lane by lane under ``jax.vmap``.
    """
    best_value, best_gnorm, last, highest = tracker
    improved = (value < best_value - NO_PROGRESS_OBJECTIVE * jnp.abs(best_value)) | (
        gnorm < (1.0 - NO_PROGRESS_GRADIENT) * best_gnorm
    )
    best_value = jnp.where(improved, jnp.minimum(best_value, value), best_value)
    tracker = (
        best_value,
        jnp.where(improved, jnp.minimum(best_gnorm, gnorm), best_gnorm),
        jnp.where(improved, jnp.asarray(i, jnp.int32), last),
        jnp.where(improved, value, jnp.maximum(highest, value)),
    )
    rose = tracker[3] - best_value > jnp.sqrt(jnp.finfo(jnp.result_type(value)).eps) * jnp.abs(best_value)
    return tracker, (i - tracker[2] >= NO_PROGRESS_WINDOW) & rose


class Evaluation(NamedTuple):
    """One evaluation of a method's step: the new ``state``, L there (``value``), ``||grad L||`` (``gnorm``),
    whether the line search gave up with an empty memory (``stalled``) and whether the iteration is complete
    (``completed``: False while a line search is still under way)."""

    state: Any
    value: jnp.ndarray
    gnorm: jnp.ndarray
    stalled: Any
    completed: Any


def lbfgs_evaluation(state: _lbfgs.State, value_and_grad: Callable, active=True) -> Evaluation:
    """One evaluation of the class-mean L-BFGS (:func:`ufm._lbfgs.evaluate`) as an :class:`Evaluation`. Its
    line search failing with an empty memory (a step along ``-grad L`` itself found no decrease) is
    ``stalled``: the tolerance is below what rounding resolves."""
    new, completed, failed = _lbfgs.evaluate(state, value_and_grad, active=active)
    return Evaluation(new, new.value, jnp.linalg.norm(new.grad), failed & ~jnp.any(state.valid), completed)


class Judged(NamedTuple):
    """The outcome of :func:`judge`: the iteration count, the iterate kept (the last finite one after a
    divergence), its L and ``||grad L||``, the status code and the no-progress tracker."""

    iteration: Any
    state: Any
    value: Any
    gnorm: Any
    status: Any
    tracker: Any


def judge(
    iteration,
    old,
    evaluation: Evaluation,
    g0,
    tol,
    blowup,
    max_iters,
    tracker=None,
    watch_progress=False,
    kept_fields: tuple[str, ...] | None = None,
) -> Judged:
    """The one stopping rule, after one evaluation (``old``: ``(state, value, gnorm)`` before it): counts a
    completed iteration, updates the no-progress ``tracker`` (``watch_progress``: the fixed-step methods, whose
    iterates can cycle), applies :func:`step_status` and keeps ``old`` if the run diverged. ``kept_fields``: only
    these fields of a NamedTuple state go back (the iterate; a stopped run's other fields are never read, and
    under ``vmap`` restoring them all is a select over the L-BFGS pair buffers at every evaluation)."""
    iteration = iteration + evaluation.completed
    stuck = False
    if watch_progress:
        tracker, stuck = progress_update(tracker, iteration, evaluation.value, evaluation.gnorm)
    status = step_status(
        iteration,
        evaluation.value,
        evaluation.gnorm,
        g0,
        tol,
        blowup,
        max_iters,
        evaluation.stalled,
        evaluation.completed,
        stuck,
    )
    diverged = status == DIVERGED  # keep the last finite iterate
    back = lambda new, before: jax.tree_util.tree_map(lambda a, b: jnp.where(diverged, b, a), new, before)
    if kept_fields is None:
        state, value, gnorm = back((evaluation.state, evaluation.value, evaluation.gnorm), old)
    else:
        fields = {f: back(getattr(evaluation.state, f), getattr(old[0], f)) for f in kept_fields}
        state = evaluation.state._replace(**fields)
        value, gnorm = back((evaluation.value, evaluation.gnorm), old[1:])
    return Judged(iteration, state, value, gnorm, status, tracker)


class LoopOutput(NamedTuple):
    """What the compiled loop returns: the final ``params`` (or the method's state, inside the loop), L there
    (``value``), ``grad_norm`` and ``g0 = ||grad L(x_0)||``, the ``iterations`` taken, the ``status`` code
    (:class:`Status`), the ``history`` buffer ``(rows, len(HISTORY_FIELDS))`` and the number of rows ``recorded``."""

    params: Any
    value: Any
    grad_norm: Any
    g0: Any
    iterations: Any
    status: Any
    history: Any
    recorded: Any


def history_row(i, value, gnorm, W, H, labels, K, with_metrics=True):
    """A history row (``HISTORY_FIELDS``); ``with_metrics=False``: NaN for NC1-NC3 and the norms (the row
    at x_0 of a program that records nothing else: :func:`ufm.solve` computes those outside)."""
    if not with_metrics:
        missing = jnp.full(len(HISTORY_FIELDS) - 3, jnp.nan, value.dtype)
        return jnp.concatenate([jnp.stack([jnp.asarray(i, value.dtype), value, gnorm]), missing])
    nc = metrics.collapse(W, H, labels, K)
    return jnp.stack([jnp.asarray(i, value.dtype), value, gnorm, *nc])


#: History buffers up to this many rows are rounded up to a power of two (:func:`history_rows`).
HISTORY_ROWS_ROUNDED = 2**16
#: ... and have at least this many: the rows of a default solve (``20_000 // 10 + 2`` rounded up), 128 KiB
#: in float64, so every solve with the default caps or smaller ones shares one compiled program.
HISTORY_ROWS_MIN = 2**11


def history_rows(max_iters: int, record_every: int, history: bool = True) -> int:
    """Rows of the history buffer of a solve: 1 without history; else the ``max_iters // record_every + 2``
    records it can hold, rounded up to a power of two, at least ``HISTORY_ROWS_MIN``, while at most
    ``HISTORY_ROWS_ROUNDED`` (so solves that differ only in their caps share one compiled program; at most
    64 K rows x 8 fields x 8 bytes = 4 MiB, and above ``HISTORY_ROWS_MIN`` never more than twice the rows
    needed)."""
    if not history:
        return 1
    needed = int(max_iters) // int(record_every) + 2
    if needed > HISTORY_ROWS_ROUNDED:
        return needed
    return max(HISTORY_ROWS_MIN, 1 << (needed - 1).bit_length())


def _print_progress(iteration, value, grad_ratio):
    print(
        f"  iter {int(iteration):>8d}   L = {float(value):.12e}   |g|/|g0| = {float(grad_ratio):.3e}",
        file=sys.stderr,
        flush=True,
    )


def iterate(
    advance,
    row_at,
    state0,
    value0,
    gnorm0,
    g0,
    first_row,
    tol,
    max_iters,
    record_every,
    *,
    watch_progress,
    progress_every,
    with_history,
    rows,
) -> LoopOutput:
    """The ``while_loop`` shared by every method: ``advance(state) -> Evaluation`` makes one evaluation;
    the stopping rule (:func:`judge`), the history (``rows`` rows, the first ``first_row``;
    ``row_at(state, i, value, gnorm)`` after that) and the progress lines are here. Returns a
    :class:`LoopOutput` whose ``params`` is the method's final state."""
    blowup = divergence_level(value0)
    history = jnp.full((rows, len(HISTORY_FIELDS)), jnp.nan, dtype=value0.dtype)
    history, count = history.at[0].set(first_row.astype(history.dtype)), 1
    status0 = start_status(value0, gnorm0, g0, tol, max_iters)
    init = (0, state0, value0, gnorm0, status0, history, count, progress_start(value0, gnorm0))

    def body(loop):
        i, state, value, gnorm, _, history, count, tracker = loop
        evaluation = advance(state)
        i, new_state, new_value, new_gnorm, status, tracker = judge(
            i, (state, value, gnorm), evaluation, g0, tol, blowup, max_iters, tracker, watch_progress
        )
        completed = evaluation.completed
        if with_history:
            history, count = jax.lax.cond(
                completed & ((i % record_every == 0) | (status != RUNNING)),
                lambda h, c: (h.at[c].set(row_at(new_state, i, new_value, new_gnorm).astype(h.dtype)), c + 1),
                lambda h, c: (h, c),
                history,
                count,
            )
        if progress_every:
            jax.lax.cond(
                completed & (i % progress_every == 0),
                lambda: jax.debug.callback(_print_progress, i, new_value, new_gnorm / g0),
                lambda: None,
            )
        return (i, new_state, new_value, new_gnorm, status, history, count, tracker)

    i, state, value, gnorm, status, history, count, _ = jax.lax.while_loop(lambda loop: loop[4] == RUNNING, body, init)
    return LoopOutput(state, value, gnorm, g0, i, status, history, count)
