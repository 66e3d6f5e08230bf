"""Gradient methods on the free variables (W, H, b) behind one compiled loop.

``solve(problem, method=...)`` runs a ``jax.lax.while_loop`` that is compiled
once per problem shape and method; there is no Python work per iteration.
Methods: ``"gd"`` (plain full-batch gradient descent, the papers' method and
the reference), ``"momentum"`` and ``"nesterov"`` (heavy ball / Nesterov, optax
``sgd`` with momentum 0.9), ``"lbfgs"`` (``optax.lbfgs`` with a zoom line
search) and ``"reduced"`` (the default: L-BFGS on the class-mean reduction below).

``"reduced"``: replace H by its class means, ``H -> Hbar Y`` (Hbar: (d, K)), then run
L-BFGS on ``L_red(W, Hbar, b) = (1/K) sum_k loss(W^T hbar_k + b, k) + lam_W/2 ||W||^2
+ n lam_H/2 ||Hbar||^2 + lam_b/2 ||b||^2``, which equals ``L(W, Hbar Y, b)``. Exact for a
loss convex in the logits (CE / label smoothing): by Jensen the projection never
increases L, and for fixed (W, b) the H-problem splits into strictly convex per-sample
problems whose solution depends only on the label, so every minimizer of L is of the
form ``(W, Hbar Y, b)`` with ``(W, Hbar, b)`` minimizing L_red. A point ``(W, Hbar Y, b)``
has ``grad_W L = grad_W L_red``, ``grad_b L = grad_b L_red`` and H-columns
``grad_hbar_k L_red / n``; in the variables ``Htilde = sqrt(n) Hbar`` (which balance the
scales of W and H) ``||grad L(W, Hbar Y, b)|| = ||grad_(W, Htilde, b) L_red||``, so the
stopping rule below is applied to the exact gradient of the full L. An iteration costs
``K/N`` of a full one. Needs the class-major labels of :class:`Problem`. The
history starts at the given x_0 (NC1 > 0) and is collapsed (NC1 = 0) from the first step
on: use ``"gd"`` or ``"lbfgs"`` to study the training dynamics, ``"reduced"`` for the minimizer.

Unequal class sizes (``problem.class_sizes = (n_1, ..., n_K)``, ``N = sum_k n_k``). The same two
facts hold (Jensen per class; strictly convex per-sample H-problems), so every minimizer is again
``(W, Hbar Y, b)``. At such a point the loss term is ``(1/N) sum_k n_k loss(W^T hbar_k + b, k)`` and
``||H||^2 = sum_k n_k ||hbar_k||^2``, hence ``L(W, Hbar Y, b) = L_red`` with (Y the K x N one-hot labels)

    L_red(W, Hbar, b) = sum_k (n_k/N) loss(W^T hbar_k + b, k) + lam_W/2 ||W||^2
                        + sum_k n_k lam_H/2 ||hbar_k||^2 + lam_b/2 ||b||^2

(n_k = n gives the balanced form above). Gradients: ``grad_W L = sum_k (n_k/N) hbar_k g_k^T + lam_W W
= grad_W L_red`` (g_k the gradient of loss(., k) at the logits of class k), likewise for b; each
of the ``n_k`` H-columns of class k of ``grad_H L`` is ``u_k = W g_k / N + lam_H hbar_k``, while
``grad_hbar_k L_red = n_k u_k``. So ``||grad_H L||^2 = sum_k n_k ||u_k||^2``, and with
``Htilde_k = sqrt(n_k) hbar_k`` (column-wise) ``grad_Htilde_k L_red = grad_hbar_k L_red / sqrt(n_k)
= sqrt(n_k) u_k``: the identity ``||grad L(W, Hbar Y, b)|| = ||grad_(W, Htilde, b) L_red||`` holds for
any class sizes, and in these variables the feature penalty is simply ``lam_H/2 ||Htilde||^2``.
The reduced functions below take ``n`` as one number (balanced: a Python int, or a traced scalar in
:func:`reduced_loop`) or as the ``(K,)`` class sizes (which may even be real numbers: L_red depends on them only
through ``n_k/N`` and ``n_k lam_H``; :mod:`ufm.imbalance` uses that for continuous ratios).

Non-negative features (``problem.nonnegative``): projected gradient, ``H <- max(H, 0)``
after every step of gd/momentum/nesterov, and the stopping rule uses the projected
gradient (entries of H at 0 whose gradient pushes them negative count as 0). L-BFGS
is rejected there: its line search and curvature pairs assume an unconstrained problem.

Stopping rule: ``||grad L|| <= tol * ||grad L(x_0)||`` (converged), or
``max_iters`` steps, or divergence: a non-finite objective or gradient, or an
objective above ``DIVERGENCE_FACTOR * max(|L(x_0)|, 1)``, or (fixed-step methods
gd/momentum/nesterov) no progress: a step too large for the problem but too small to blow
up makes the iterates cycle or wander chaotically (GD at lr 100 on the CLI default
problem: L between 0.95 and 30 for 10^5 iterations). Such a run is stopped as
``"no_progress"`` once ``NO_PROGRESS_WINDOW`` iterations have passed in which neither the
best objective fell by ``NO_PROGRESS_OBJECTIVE`` (relative) nor the best gradient norm by
the fraction ``NO_PROGRESS_GRADIENT``, and the objective rose above its best by more than
rounding (``sqrt(eps) |L_best|``; a run sitting at its rounding floor is not stopped: it
keeps running to ``max_iters`` as before, so ``tol=1e-300`` still runs exactly
``max_iters`` steps). Gradient descent with a stable step decreases L monotonically, so it
can never meet the last condition; why the window is safe for momentum is measured at
``NO_PROGRESS_WINDOW``. The ``message`` of the :class:`Result` says which rule stopped the run.

Internal API (shared with :mod:`ufm.sweep`, which runs the same loop and stopping rule on many
configurations; not exported from :mod:`ufm`, may change without notice): :func:`run_loop` (the
compiled loop; for ``"reduced"`` with equal classes :func:`reduced_start` then :func:`reduced_loop`,
which :func:`solve` compiles as two programs so that the loop is shared by every n),
:func:`start_status`, :func:`step_status`, :func:`divergence_level` and the status codes
``RUNNING``, ``CONVERGED``, ``MAX_ITERS``, ``DIVERGED``, ``STALLED``, ``NONFINITE``,
``NO_PROGRESS`` (the stopping rule), :func:`progress_start`, :func:`progress_update`, :func:`status_message`,
:func:`tree_norm`, :func:`compile_once`, :func:`history_rows`. Names with a leading underscore
are used only inside this module.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ufm import _lbfgs, _memory, metrics
from ufm.losses import LOSS_IDS, per_sample_loss
from ufm.objective import Params, objective, regularization
from ufm.problem import Problem, require_dtype_enabled

METHODS = ("reduced", "lbfgs", "gd", "momentum", "nesterov")
DEFAULT_METHOD = "reduced"
#: The default in float32: ``reduced`` stalls at ~2e-5 relative error there (its K-sample gradient
#: carries the float32 cancellation in 1 - p_t, which the N-sample full gradient averages out);
#: full L-BFGS reaches 5e-6 (README "Performance").
DEFAULT_METHOD_FLOAT32 = "lbfgs"


def _reduction_is_exact(problem: Problem) -> bool:
    """The class-mean reduction of ``"reduced"`` is exact for a loss convex in the logits (CE, LS, MSE),
    free features and balanced class-major labels (no label noise)."""
    return problem.loss in ("ce", "ls", "mse") and not problem.nonnegative and problem.label_noise == 0


def default_method(problem: Problem) -> str:
    """The method used when none is given.

    ``"momentum"`` (projected) for H >= 0; ``DEFAULT_METHOD`` (``"reduced"``) in float64 where the
    class-mean reduction is exact; otherwise ``DEFAULT_METHOD_FLOAT32`` (``"lbfgs"``): in float32
    the reduced gradient stalls near 2e-5 relative error, and focal loss (not convex) and noisy
    labels (unbalanced observed classes) fall outside the reduction.
    """
    if problem.nonnegative:
        return "momentum"
    if problem.dtype == "float64" and _reduction_is_exact(problem):
        return DEFAULT_METHOD
    return DEFAULT_METHOD_FLOAT32


def check_method_fits(problem: Problem, method: str) -> None:
    """Refuse a method that cannot solve ``problem`` (names the method and what to use instead)."""
    if problem.nonnegative and method in _LINE_SEARCH_METHODS:
        raise ValueError(
            f"method {method!r} does not support nonnegative=True (projected gradient only); "
            "use method 'gd', 'momentum' or 'nesterov'"
        )
    if method == "reduced" and not _reduction_is_exact(problem):
        raise ValueError(
            f"method 'reduced' is exact only for loss ce/ls/mse without label noise (got loss = "
            f"{problem.loss!r}, label_noise = {problem.label_noise:g}); use method 'lbfgs'"
        )


def default_lr(problem: Problem, method: str) -> float | None:
    """The step of ``method`` when ``lr`` is not given (None for the line-search methods).

    ``min(DEFAULT_LR[method], SAFE_FRACTION * STABILITY_LIMIT[method] / c)`` with ``c`` an estimate of
    the largest curvature of L along the run: ``max(lam_W, lam_H, lam_b)`` (the regularisation's share),
    plus ``2 max(mse_kappa, 1)`` for MSE. MSE's Hessian in the logits is the constant
    ``2 diag(kappa at the target, 1 elsewhere)``, so L keeps that curvature from x_0 to the optimum
    (measured, CLI default problem: lambda_max 2.00 at x_0 and 2.01 at the optimum; 2.13 and 2.02 with
    H >= 0); the softmax losses' logit Hessian ``diag(p) - p p^T`` is largest at the uniform start
    (1/K) and falls as ``p_t -> 1`` (0.10 at x_0, 0.024 at the optimum), and ``DEFAULT_LR`` was
    measured on them. ``tests/test_reliability_solver.py`` runs every loss and flag combination.
    """
    default = DEFAULT_LR[method]
    if default is None:  # the line-search methods (_LINE_SEARCH_METHODS)
        return None
    curvature = max(problem.lam_W, problem.lam_H, problem.lam_b)
    if problem.loss == "mse":
        curvature += 2.0 * max(problem.mse_kappa, 1.0)
    return min(default, float(f"{SAFE_FRACTION * STABILITY_LIMIT[method] / curvature:.3g}"))


#: Step sizes used when ``lr`` is not given (L-BFGS takes its step from the line search).
#: Measured on the CLI default problem (K=10, n=500, delta=0.1, lam=5e-4, float64): GD is
#: stable up to lr ~ 30 and cycles at 100; these defaults keep a margin (GD: 2169 iterations
#: to tol 1e-10, momentum/Nesterov: ~1240; L-BFGS: 200).
DEFAULT_LR = {"gd": 20.0, "momentum": 3.0, "nesterov": 3.0, "lbfgs": None, "reduced": None}
_LINE_SEARCH_METHODS = ("lbfgs", "reduced")
#: The largest ``lr * lambda`` for which each fixed-step method is stable on a quadratic of curvature
#: lambda: GD 2; heavy ball with momentum beta = 0.9: 2 (1 + beta); Nesterov: 2 (1 + beta) / (1 + 2 beta).
STABILITY_LIMIT = {"gd": 2.0, "momentum": 2.0 * 1.9, "nesterov": 2.0 * 1.9 / 2.8}
#: The fraction of that limit used by :func:`default_lr` and by the step suggested after a divergence
#: or a cycle (for GD the textbook ``1 / lambda_max``).
SAFE_FRACTION = 0.5
#: Steps up to this multiple of ``STABILITY_LIMIT[method] / lambda_max(x_0)`` converged in every case
#: measured (:func:`_fallback_step`): a default step that ran to max_iters below it is slow, not unstable.
MEASURED_STABLE_RATIO = 1.25
DIVERGENCE_FACTOR = 100.0
HISTORY_FIELDS = ("iteration", "objective", "grad_norm", "nc1", "nc2", "nc3", "w_norm", "h_norm")

RUNNING, CONVERGED, MAX_ITERS, DIVERGED, STALLED, NONFINITE, NO_PROGRESS = 0, 1, 2, 3, 4, 5, 6
STATUS_NAMES = {
    CONVERGED: "converged",
    MAX_ITERS: "max_iters",
    DIVERGED: "diverged",
    STALLED: "stalled",
    NONFINITE: "nonfinite",
    NO_PROGRESS: "no_progress",
}
#: The no-progress rule of the fixed-step methods (module docstring): stop after this many iterations
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


@dataclass(frozen=True)
class Result:
    """Outcome of :func:`solve` (numpy arrays; like scipy's ``OptimizeResult``).

    Attributes:
        problem, method, lr, tol: what was run (lr None for L-BFGS: line search).
        W ``(d, K)``, H ``(d, N)``, b ``(K,)``: the final iterate (the last finite one if diverged).
        objective: L at the final iterate. grad_norm / initial_grad_norm: ||grad L|| there and at x_0.
        iterations: steps taken. status: ``"converged"``, ``"max_iters"``, ``"diverged"``, ``"stalled"``
            (``"reduced"`` only: its line search can no longer decrease L, as when tol is below rounding),
            ``"no_progress"`` (gd/momentum/nesterov: the iterates cycle, module docstring) or ``"nonfinite"``.
        converged: ``status == "converged"``. message: one readable sentence.
        history: dict of arrays over recorded iterations, keys ``HISTORY_FIELDS``.
        seconds: wall time of the compiled run; compile_seconds: tracing + compilation of the solver's
            programs (not of ``ufm.collapse`` at x_0, which fills the start row's NC metrics when the
            programs do not record them: about 0.2 s once per shape, shared with the comparison).
        suggested_lr: after a divergence or no progress of a fixed step only: the default step unless the
            start's curvature asks for less, always at most lr / 2 (``_suggested_step``; lambda_max of the
            joint Hessian of L, :mod:`ufm.curvature`); GD is locally stable only for ``lr < 2 / lambda_max``.
    """

    problem: Problem
    method: str
    lr: float | None
    tol: float
    W: np.ndarray
    H: np.ndarray
    b: np.ndarray
    objective: float
    grad_norm: float
    initial_grad_norm: float
    iterations: int
    status: str
    message: str
    history: dict[str, np.ndarray]
    seconds: float
    compile_seconds: float
    suggested_lr: float | None = None

    @property
    def converged(self) -> bool:
        return self.status == "converged"

    @property
    def params(self) -> Params:
        return Params(jnp.asarray(self.W), jnp.asarray(self.H), jnp.asarray(self.b))


def tree_norm(tree):
    """The Euclidean norm of all leaves of ``tree`` together (internal API, also used by :mod:`ufm.sweep`)."""
    return jnp.sqrt(sum(jnp.sum(x**2) for x in jax.tree_util.tree_leaves(tree)))


def _optimizer(method: str, lr):
    if method == "gd":
        return optax.sgd(lr)
    if method == "momentum":
        return optax.sgd(lr, momentum=0.9)
    if method == "nesterov":
        return optax.sgd(lr, momentum=0.9, nesterov=True)
    return optax.lbfgs(linesearch=optax.scale_by_zoom_linesearch(max_linesearch_steps=40))


def _print_progress(iteration, value, grad_ratio):
    print(
        f"  iter {int(iteration):>8d}   L = {float(value):.12e}   |g|/|g0| = {float(grad_ratio):.3e}",
        file=sys.stderr,
        flush=True,
    )


def _project(params, grad, nonnegative: bool):
    """(params with H clipped at 0, gradient with the H entries blocked by the bound zeroed)."""
    if not nonnegative:
        return params, grad
    H = jnp.maximum(params.H, 0.0)
    return params._replace(H=H), grad._replace(H=jnp.where((H > 0) | (grad.H < 0), grad.H, 0.0))


def divergence_level(value0):
    """The objective above which a run counts as diverged, ``DIVERGENCE_FACTOR * max(|L(x_0)|, 1)``
    (the ``blowup`` of :func:`step_status`; internal API, also used by :mod:`ufm.sweep`)."""
    return DIVERGENCE_FACTOR * jnp.maximum(jnp.abs(value0), 1.0)


def start_status(value0, gnorm0, g0, tol, max_iters):
    """The status before the first step (also used by :mod:`ufm.sweep`): ``nonfinite`` when L(x_0),
    its gradient norm or ``||grad L(x_0)||`` is nan or inf (then ``gnorm0 <= tol * g0`` could read
    ``inf <= inf`` as converged), converged when x_0 already meets the tolerance, else running."""
    finite = jnp.isfinite(value0) & jnp.isfinite(gnorm0) & jnp.isfinite(g0)
    return jnp.where(
        ~finite, NONFINITE, jnp.where(gnorm0 <= tol * g0, CONVERGED, jnp.where(max_iters == 0, MAX_ITERS, RUNNING))
    )


def step_status(i, value, gnorm, g0, tol, blowup, max_iters, stalled=False, completed=True, no_progress=False):
    """The stopping rule after step ``i`` (also used by :mod:`ufm.sweep`): diverged, converged,
    no_progress (:func:`progress_update`), stalled (the line search of ``"reduced"`` cannot decrease L),
    max_iters, or still running. ``completed=False`` (a line search of ``"reduced"`` still under way)
    is always running. Never converged unless L and ||grad L|| are finite."""
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
    """The no-progress tracker at x_0 (internal API, see :func:`progress_update`): ``(best L, best
    ||grad L||, iteration of the last progress, largest L since then)``."""
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


def reduced_point(params: Params, labels, sizes=None) -> jnp.ndarray:
    """The flat start ``x = (vec W, vec Htilde, b)``, ``Htilde = sqrt(n) Hbar``, of ``"reduced"`` (module
    docstring) from a full point ``params`` (W: (d, K), H: (d, N), b: (K,)); shape ``(2 d K + K,)``.
    ``sizes``: the ``(K,)`` class sizes of unequal classes (``Htilde_k = sqrt(n_k) hbar_k``); None: balanced."""
    K = params.W.shape[1]
    n = params.H.shape[1] // K if sizes is None else sizes
    Htilde = metrics.class_means(params.H, labels, K)
    Htilde = jnp.sqrt(n) * Htilde if sizes is None else Htilde * jnp.sqrt(sizes)
    return jnp.concatenate([params.W.ravel(), Htilde.ravel(), params.b])


def reduced_params(x, d: int, K: int, n) -> Params:
    """``(W: (d, K), Hbar: (d, K), b: (K,))`` of a flat reduced point ``x`` (inverse of :func:`reduced_point`);
    ``n``: samples per class, or the ``(K,)`` class sizes (column k divided by ``sqrt(n_k)``)."""
    W = x[: d * K].reshape(d, K)
    Hbar = x[d * K : 2 * d * K].reshape(d, K) / jnp.sqrt(n)
    return Params(W, Hbar, x[2 * d * K :])


def reduced_objective(x, weights, d: int, K: int, n):
    """``L_red`` (module docstring) at the flat point ``x``: ``L(W, Hbar Y, b)`` for the full ``weights``.
    ``n``: an int (balanced), or the ``(K,)`` class sizes ``n_k`` (class k weighted by ``n_k / N``, feature
    penalty ``lam_H/2 ||Htilde||^2 = sum_k n_k lam_H/2 ||hbar_k||^2``)."""
    if jnp.ndim(n) > 0:
        W, Hbar, b = reduced_params(x, d, K, n)
        losses = per_sample_loss(W.T @ Hbar + b[:, None], jnp.arange(K), weights)
        Htilde = x[d * K : 2 * d * K]
        return jnp.sum(n * losses) / jnp.sum(n) + regularization(Params(W, Htilde, b), weights)
    return objective(reduced_params(x, d, K, n), jnp.arange(K), weights._replace(lam_H=n * weights.lam_H))


class ReducedStart(NamedTuple):
    """What the balanced ``"reduced"`` loop needs of the full start x_0 (:func:`reduced_start`), so that
    the loop itself (:func:`reduced_loop`) depends on (d, K) only, not on N: ``x (2 d K + K,)`` the flat
    reduced start, ``n ()`` the samples per class (working dtype), ``value ()`` = L(x_0), ``g0 ()`` =
    ``||grad L(x_0)||`` and ``row (len(HISTORY_FIELDS),)`` the history row of x_0 (NC metrics NaN)."""

    x: jnp.ndarray
    n: jnp.ndarray
    value: jnp.ndarray
    g0: jnp.ndarray
    row: jnp.ndarray


def _history_row(i, value, gnorm, W, H, labels, K, with_metrics=True):
    """A history row (``HISTORY_FIELDS``); ``with_metrics=False``: NaN for NC1-NC3 and the norms (the row
    at x_0 of a program that records nothing else: :func:`solve` computes those outside, see
    :func:`_start_metrics`)."""
    if not with_metrics:
        missing = jnp.full(len(HISTORY_FIELDS) - 3, jnp.nan, value.dtype)
        return jnp.concatenate([jnp.stack([jnp.asarray(i, value.dtype), value, gnorm]), missing])
    nc = metrics.collapse(W, H, labels, K)
    return jnp.stack([jnp.asarray(i, value.dtype), value, gnorm, *nc])


def _lbfgs_advance(value_and_grad):
    """The ``advance`` of :func:`_iterate` for L-BFGS of :mod:`ufm._lbfgs`: one evaluation per call; an
    iteration ends when the line search does."""

    def advance(state):
        new, completed, failed = _lbfgs.evaluate(state, value_and_grad)
        return new, new.value, jnp.linalg.norm(new.grad), failed & ~jnp.any(state.valid), completed

    return advance


def reduced_start(params0, labels, weights, *, loss_id=None) -> ReducedStart:
    """The :class:`ReducedStart` of the full point ``params0`` (W: (d, K), H: (d, N), b: (K,)) with
    class-major balanced ``labels (N,)``. ``loss_id`` (static): as in :func:`run_loop`. The row of x_0 has
    NaN for NC1-NC3 and the norms (:func:`_history_row`): :func:`solve` fills them in."""
    if loss_id is not None:
        weights = weights._replace(loss_id=loss_id)
    K = params0.W.shape[1]
    value, grad = jax.value_and_grad(lambda p: objective(p, labels, weights))(params0)
    g0 = tree_norm(grad)
    n = jnp.asarray(params0.H.shape[1] // K, value.dtype)
    row = _history_row(0, value, g0, params0.W, params0.H, labels, K, with_metrics=False)
    return ReducedStart(reduced_point(params0, labels), n, value, g0, row)


def reduced_loop(start: ReducedStart, weights, tol, max_iters, record_every, *, d, K, loss_id=None, **options):
    """The compiled loop of ``"reduced"`` with equal classes, from :func:`reduced_start`: one program per
    (d, K), whatever n. Returns :func:`run_loop`'s tuple with the class means ``Hbar (d, K)`` as ``H``.
    ``loss_id`` and ``options`` (static): ``progress_every``, ``with_history``, ``rows``, as in :func:`run_loop`."""
    if loss_id is not None:
        weights = weights._replace(loss_id=loss_id)
    value_and_grad = jax.value_and_grad(lambda x: reduced_objective(x, weights, d, K, start.n))
    value0, flat_grad0 = value_and_grad(start.x)

    advance = _lbfgs_advance(value_and_grad)

    # the K class means as they are when balanced: same NC metrics as Hbar Y
    classes = jnp.arange(K)

    def row_at(state, i, value, gnorm):
        params = reduced_params(state.x, d, K, start.n)
        return _history_row(i, value, gnorm, params.W, params.H, classes, K)

    out = _iterate(
        advance,
        row_at,
        _lbfgs.init(start.x, value0, flat_grad0),
        value0,
        jnp.linalg.norm(flat_grad0),  # = ||grad L(W, Hbar Y, b)|| (module docstring)
        start.g0,
        start.row,
        tol,
        max_iters,
        record_every,
        watch_progress=False,
        **options,
    )
    state, rest = out[0], out[1:]
    return (reduced_params(state.x, d, K, start.n), *rest)


def run_loop(
    params0,
    labels,
    weights,
    lr,
    tol,
    max_iters,
    record_every,
    *,
    method,
    progress_every,
    nonnegative=False,
    with_history=True,
    loss_id=None,
    balanced=True,
    rows=None,
):
    """The compiled loop. Returns (params, value, grad_norm, g0, iterations, status, history, count).

    ``max_iters`` and ``record_every`` may be traced (int32 scalars: one program serves every cap);
    ``rows`` (static) sizes the history buffer (``None``: :func:`history_rows` of concrete ``max_iters``
    and ``record_every``).

    ``nonnegative``: project H onto H >= 0 after each step (gd/momentum/nesterov only); the stopping
    rule then uses the projected gradient. ``with_history=False`` skips the history (one row at x_0
    only, its NC metrics NaN: :func:`solve` computes them outside): under ``jax.vmap`` (:mod:`ufm.sweep`)
    the recording ``cond`` would become a ``select`` and compute NC1-NC3 at every iteration. The
    balanced ``"reduced"`` path's row at x_0 has NaN NC metrics with or without history
    (:func:`reduced_start`). ``loss_id`` (static): the loss branch, fixed at compile time, so
    only that loss is traced and compiled (``None``: the traced ``weights.loss_id`` picks it, as in sweeps
    that mix losses). ``balanced=False`` (static): unequal class sizes, counted from ``labels``; only
    ``"reduced"`` needs them (weighted L_red, module docstring). ``"reduced"`` with equal classes is
    :func:`reduced_start` then :func:`reduced_loop` (which :func:`solve` compiles as two programs).
    """
    if loss_id is not None:
        weights = weights._replace(loss_id=loss_id)
    K = params0.W.shape[1]
    n_records = history_rows(max_iters, record_every, with_history) if rows is None else rows
    options = dict(progress_every=progress_every, with_history=with_history, rows=n_records)
    if method == "reduced" and balanced:
        d = params0.W.shape[0]
        params, *rest = reduced_loop(
            reduced_start(params0, labels, weights), weights, tol, max_iters, record_every, d=d, K=K, **options
        )
        n = params0.H.shape[1] // K
        return (params._replace(H=jnp.repeat(params.H, n, axis=1)), *rest)
    start_value, start_grad = jax.value_and_grad(lambda p: objective(p, labels, weights))(params0)
    g0 = tree_norm(_project(params0, start_grad, nonnegative)[1])  # ||grad L(x_0)|| of the given x_0
    first_row = _history_row(0, start_value, g0, params0.W, params0.H, labels, K, with_metrics=with_history)

    if method == "reduced":  # unequal classes: weighted L_red (module docstring), L-BFGS of ufm._lbfgs
        d = params0.W.shape[0]
        n = jnp.bincount(labels, length=K).astype(start_value.dtype)  # the (K,) class sizes n_k (exact)
        value_and_grad = jax.value_and_grad(lambda x: reduced_objective(x, weights, d, K, n))
        flat0 = reduced_point(params0, labels, n)
        value0, flat_grad0 = value_and_grad(flat0)
        state0 = _lbfgs.init(flat0, value0, flat_grad0)
        gnorm0 = jnp.linalg.norm(flat_grad0)  # = ||grad L(W, Hbar Y, b)|| (module docstring)

        advance = _lbfgs_advance(value_and_grad)

        def view(state):  # the full Hbar Y (h_G then weights class k by n_k / N)
            params = reduced_params(state.x, d, K, n)
            return params._replace(H=params.H[:, labels])

        def row_at(state, i, value, gnorm):
            params = view(state)
            return _history_row(i, value, gnorm, params.W, params.H, labels, K)
    else:
        f = lambda p: objective(p, labels, weights)
        opt = _optimizer(method, lr)
        line_search_value_and_grad = optax.value_and_grad_from_state(f) if method == "lbfgs" else None
        value0 = start_value
        state0 = (params0, opt.init(params0), start_value, start_grad)
        gnorm0 = g0

        def advance(state):
            params, opt_state, value, grad = state
            updates, new_opt_state = opt.update(grad, opt_state, params, value=value, grad=grad, value_fn=f)
            new_params = _project(optax.apply_updates(params, updates), grad, nonnegative)[0]
            if line_search_value_and_grad is None:
                new_value, new_grad = jax.value_and_grad(f)(new_params)
            else:
                new_value, new_grad = line_search_value_and_grad(new_params, state=new_opt_state)
            gnorm = tree_norm(_project(new_params, new_grad, nonnegative)[1])
            return (new_params, new_opt_state, new_value, new_grad), new_value, gnorm, False, True

        def row_at(state, i, value, gnorm):
            return _history_row(i, value, gnorm, state[0].W, state[0].H, labels, K)

        view = lambda state: state[0]

    state, *rest = _iterate(
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
        watch_progress=method not in _LINE_SEARCH_METHODS,  # a fixed step can cycle (module docstring)
        **options,
    )
    return (view(state), *rest)


def _iterate(
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
):
    """The ``while_loop`` shared by every method: ``advance(state) -> (state, value, gnorm, stalled,
    completed)`` makes one evaluation; the stopping rule, the history (``rows`` rows, the first
    ``first_row``; ``row_at(state, i, value, gnorm)`` after that) and the progress lines are here.
    Returns (state, value, grad_norm, g0, iterations, status, history, count)."""
    blowup = divergence_level(value0)
    history = jnp.full((rows, len(HISTORY_FIELDS)), jnp.nan, dtype=value0.dtype)
    history, count = history.at[0].set(first_row.astype(history.dtype)), 1
    status0 = start_status(value0, gnorm0, g0, tol, max_iters)
    init = (0, state0, value0, gnorm0, status0, history, count, progress_start(value0, gnorm0))

    def body(loop):
        i, state, value, gnorm, _, history, count, tracker = loop
        new_state, new_value, new_gnorm, stalled, completed = advance(state)
        i = i + completed
        stuck = False
        if watch_progress:
            tracker, stuck = progress_update(tracker, i, new_value, new_gnorm)
        status = step_status(i, new_value, new_gnorm, g0, tol, blowup, max_iters, stalled, completed, stuck)
        diverged = status == DIVERGED  # keep the last finite iterate
        keep = lambda new, old: jax.tree_util.tree_map(lambda a, b: jnp.where(diverged, b, a), new, old)
        new_state, new_value, new_gnorm = keep((new_state, new_value, new_gnorm), (state, value, gnorm))
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
    return state, value, gnorm, g0, i, status, history, count


_COMPILED: dict[Any, Any] = {}


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


def compile_once(function, args, statics):
    """``(compiled, compile seconds)`` of ``jit(function)`` for these argument shapes, dtypes and
    shardings and these static arguments; compiled once per key (seconds 0.0 afterwards).
    Also used by :mod:`ufm.sweep`."""
    shapes = tuple((x.shape, str(x.dtype), str(getattr(x, "sharding", None))) for x in jax.tree_util.tree_leaves(args))
    key = (function, shapes, tuple(sorted((k, str(v)) for k, v in statics.items())))
    if key not in _COMPILED:
        start = time.perf_counter()
        lowered = jax.jit(function, static_argnames=tuple(statics)).lower(*args, **statics)
        _COMPILED[key] = (lowered.compile(), time.perf_counter() - start)
        return _COMPILED[key]
    return _COMPILED[key][0], 0.0


def _suggested_step(problem: Problem, method: str, lr, points) -> tuple[float, float] | None:
    """``(lambda_max, suggested lr)`` after a fixed step ``lr`` diverged or cycled; ``points``: (x_0, the
    last finite iterate). None for the line-search methods or when no finite positive curvature is found.

    ``min(default_lr, STABILITY_LIMIT[method] / lambda_max(x_0))`` when that is at most ``lr / 2``: the
    default (measured to converge) unless it exceeds the stability limit at the start (a wider init, larger
    lambdas). The full limit there, not a fraction: the softmax losses' curvature is largest at the
    uniform start and falls on the way (half the limit cost 4x the default's iterations at K = 5).
    Else the problem is outside what the default covers (a step below it failed),
    and the suggestion is ``min(SAFE_FRACTION * STABILITY_LIMIT[method] / lambda_max, lr / 2)`` over
    both points. Not 1 / lambda_max at the last iterate alone: after a blow-up that point's curvature is
    far above anything on a converging path (GD lr 1e4, K = 10, n = 50: it suggested 0.444, which needs
    91,556 iterations against 2,023 at the default 20). Rounded to 3 digits (what the message prints).
    """
    if lr is None:
        return None
    limit = SAFE_FRACTION * STABILITY_LIMIT[method]
    default = default_lr(problem, method)  # not None: STABILITY_LIMIT holds the fixed-step methods only
    if default is None:
        return None
    top = _curvature_at(problem, points[0])
    if top is None or not (np.isfinite(top) and top > 0):
        return None
    step = min(default, STABILITY_LIMIT[method] / top)
    if step > lr / 2:
        at_last = _curvature_at(problem, points[1])
        if at_last is None or not np.isfinite(top := max(top, at_last)):
            return None
        step = min(limit / top, lr / 2)
    return top, float(f"{step:.3g}")


def _curvature_at(problem: Problem, point: Params) -> float | None:
    """lambda_max of the joint Hessian of ``problem``'s L at ``point`` (Lanczos, ARPACK tolerance 1e-3, the
    accuracy a step size needs); None when ARPACK fails on a pathological point."""
    from ufm import curvature

    try:
        return curvature.largest_curvature(point, problem.labels(), problem.weights(), tol=1e-3)
    except (ArithmeticError, ValueError, RuntimeError):
        return None


def status_message(status: str, iterations: int, ratio: float, tol: float, method: str, lr, step=None) -> str:
    """The readable sentence of :attr:`Result.message` for ``status`` (internal API, also used by
    :mod:`ufm.sweep`); ``step``: ``(lambda_max, suggested lr)`` after a divergence or a cycle, if known."""
    if status == "converged":
        return f"converged: |grad L| / |grad L(x0)| = {ratio:.2e} <= tol = {tol:.1e} after {iterations} iterations"
    if status == "stalled":
        return (
            f"stalled after {iterations} iterations at |grad L| / |grad L(x0)| = {ratio:.2e} > tol = {tol:.1e}: "
            "the line search found no decrease of L even along -grad L, so tol is below what rounding in this "
            "precision resolves; raise --tol"
        )
    if status == "nonfinite":
        return (
            "nonfinite: the objective or its gradient at the start is nan or inf (overflow), so no step was "
            "taken; reduce the lambdas, init_scale or the loss parameters"
        )
    if status == "max_iters":
        advice = (
            "raise --max-iters, or --tol if the ratio has stopped falling (rounding)"
            if method in _LINE_SEARCH_METHODS
            else "raise --max-iters or use --method lbfgs"
        )
        return (
            f"stopped at max_iters = {iterations} with |grad L| / |grad L(x0)| = {ratio:.2e} > tol = {tol:.1e}; "
            + advice
        )
    if step is not None:
        top, suggested = step
        limit = STABILITY_LIMIT[method]
        advice = (
            f"the largest Hessian eigenvalue of L (Lanczos, at the start or the last finite iterate) is "
            f"{top:.4g}: {method} is locally stable only for lr < {limit:.4g} / {top:.4g} = {limit / top:.4g}; "
            f"try --lr {suggested:.3g}"
        )
    else:
        advice = "reduce --lr (e.g. by 10x)" if lr is not None else "try --method gd with a small --lr"
    if status == "no_progress":
        return (
            f"no progress: stopped after {iterations} iterations ({method}, lr = {lr}) at |grad L| / |grad L(x0)| "
            f"= {ratio:.2e} > tol = {tol:.1e}: for {NO_PROGRESS_WINDOW} iterations neither L fell "
            f"{NO_PROGRESS_OBJECTIVE:g} (relative) nor |grad L| {100 * NO_PROGRESS_GRADIENT:g}% below its best "
            f"while L rose above its best, "
            f"so the step is too large and the iterates cycle instead of converging (more iterations will not "
            f"help); {advice}"
        )
    return (
        f"diverged at iteration {iterations + 1} ({method}, lr = {lr}): the objective became non-finite or "
        f"exceeded {DIVERGENCE_FACTOR:g}x its initial value; {advice}"
    )


def solve_bytes(problem: Problem, method: str, history_rows: int = 1) -> float:
    """Estimated peak bytes of :func:`solve` (:func:`ufm._memory.solve_bytes`)."""
    return _memory.solve_bytes(problem.K, problem.N, problem.d, np.dtype(problem.dtype).itemsize, method, history_rows)


def memory_advice(problem: Problem, method: str, history_rows: int = 1) -> list[tuple[str, float]]:
    """What else could be run when ``method`` does not fit: ``(option, estimated bytes)``, each a real
    alternative (never the method already chosen; ``"reduced"`` is not offered in float32, where it
    stalls), for :func:`ufm._memory.require` to offer only those that fit; the last one is the largest
    ``n`` that fits with the chosen method."""
    single = lambda m: _memory.solve_bytes(problem.K, problem.N, problem.d, 4, m, history_rows)
    options = []
    if method != "gd":
        options.append(("--method gd (fewest copies)", solve_bytes(problem, "gd", history_rows)))
    if problem.dtype == "float64":
        float32_method = method if method != "reduced" else DEFAULT_METHOD_FLOAT32
        options.append((f"--float32 --method {float32_method}", single(float32_method)))
        if float32_method != "gd":
            options.append(("--float32 --method gd", single("gd")))
    if history_rows > 2:
        options.append(("fewer history rows (larger record_every)", solve_bytes(problem, method, 1)))
    needed = lambda n: _memory.solve_bytes(
        problem.K, n * problem.K, problem.d, np.dtype(problem.dtype).itemsize, method, history_rows
    )
    n_max = _memory.largest_fitting(1, problem.n - 1, needed) if problem.n > 1 else None
    if n_max is not None:
        options.append((f"n <= {n_max} with {method}", needed(n_max)))
    return options


def _nonfinite_message(problem: Problem, params0: Params, value: float, g0: float, given_init: bool) -> str:
    """Why L(x_0) or its gradient is not finite: the largest of the start's terms, by name."""
    with np.errstate(over="ignore", invalid="ignore"):
        W, H = (np.asarray(x, np.float64) for x in (params0.W, params0.H))
        log = lambda x: float(np.log10(x)) if x > 0 else -np.inf
        norm = lambda A: np.max(np.abs(A)) * np.linalg.norm(A / np.max(np.abs(A))) if np.any(A) else 0.0
        norm_W, norm_H = log(norm(W)), log(norm(H))
        terms = {
            "lam_W": 2 * (log(problem.lam_W) + norm_W),
            "lam_H": 2 * (log(problem.lam_H) + norm_H),
            "init_scale": 2 * max(norm_W, norm_H),
        }
        if problem.loss == "mse":
            terms["mse_kappa"] = 2 * (log(2 * problem.mse_kappa * problem.mse_beta))
        if problem.loss == "focal":
            terms["gamma"] = log(problem.gamma)
    cause = max(terms, key=terms.__getitem__)
    if given_init:
        return (
            f"nonfinite: at the given init L(x0) = {value:g} and |grad L(x0)| = {g0:g} in {problem.dtype} "
            f"(|W0| = {norm(W):.3g}, |H0| = {norm(H):.3g}), so no step was taken; "
            "use a smaller init"
        )
    return (
        f"nonfinite: at the start L(x0) = {value:g} and |grad L(x0)| = {g0:g} in {problem.dtype}, so no step "
        f"was taken; the largest term is set by {cause} = {getattr(problem, cause):g} (|grad L|^2 ~ 1e"
        f"{terms[cause]:.0f} against the largest {problem.dtype} {float(np.finfo(problem.dtype).max):.3g}); "
        f"reduce {cause}"
    )


def _check_init(problem: Problem, init) -> Params:
    shapes = {"W": (problem.d, problem.K), "H": (problem.d, problem.N), "b": (problem.K,)}
    expected = "a triple (W, H, b) of finite real arrays of shapes " + ", ".join(map(str, shapes.values()))
    try:
        parts = [np.asarray(x, dtype=np.float64) for x in init]
    except (TypeError, ValueError):
        raise ValueError(f"init must be {expected}, got {type(init).__name__}") from None
    if len(parts) != 3 or any(p.shape != shape for p, shape in zip(parts, shapes.values(), strict=True)):
        raise ValueError(f"init must be {expected}, got shapes {[p.shape for p in parts]}")
    if not all(np.all(np.isfinite(p)) for p in parts):
        raise ValueError("init must be finite (it contains nan or inf)")
    return Params(*(jnp.asarray(p, problem.jnp_dtype) for p in parts))


def _is_number(value) -> bool:
    """A real Python or numpy scalar (not a bool, not an array)."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def check_options(method: str, lr, tol, integers: dict, problem: Problem | None = None) -> float | None:
    """Validate the solver options (also used by :mod:`ufm.sweep`); returns the step size to use
    (None for L-BFGS). ``integers`` maps a name to ``(value, lowest allowed)``; each must also be at
    most ``MAX_ITERS_LIMIT`` (int32 counters). Numpy scalars are accepted like Python numbers.
    ``problem``: for the default step of ``"gd"``/``"momentum"``/``"nesterov"`` (:func:`default_lr`)."""
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not (_is_number(tol) and 0.0 < float(tol) < 1.0):
        raise ValueError(f"tol must be in (0, 1), got {tol!r}")
    for name, (value, low) in integers.items():
        if (
            not isinstance(value, (int, np.integer))
            or isinstance(value, (bool, np.bool_))
            or not low <= int(value) <= MAX_ITERS_LIMIT
        ):
            raise ValueError(
                f"{name} must be an integer in [{low}, {MAX_ITERS_LIMIT}] (2**31 - 1: the counters "
                f"are int32), got {value!r}"
            )
    if method in _LINE_SEARCH_METHODS:
        return None
    lr = (DEFAULT_LR[method] if problem is None else default_lr(problem, method)) if lr is None else lr
    if not _is_number(lr) or not np.isfinite(float(lr)) or float(lr) <= 0:
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    return float(lr)


def _shard_samples(params: Params, labels):
    """Place H (and the labels) split along N over a 1-D mesh of all devices; W, b replicated."""
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    devices = jax.devices()
    N = params.H.shape[1]
    if N % len(devices):
        raise ValueError(f"shard=True needs N = n K divisible by the number of devices ({len(devices)}), got N = {N}")
    mesh = Mesh(np.array(devices), ("data",))
    replicated = NamedSharding(mesh, PartitionSpec())
    return (
        Params(
            jax.device_put(params.W, replicated),
            jax.device_put(params.H, NamedSharding(mesh, PartitionSpec(None, "data"))),
            jax.device_put(params.b, replicated),
        ),
        jax.device_put(labels, NamedSharding(mesh, PartitionSpec("data"))),
    )


def solve(
    problem: Problem,
    method: str | None = None,
    *,
    lr: float | None = None,
    tol: float = 1e-10,
    max_iters: int = 20_000,
    record_every: int = 10,
    progress_every: int = 0,
    init: Params | None = None,
    shard: bool = False,
    history: bool = True,
) -> Result:
    """Minimise the UFM objective of ``problem`` from its seeded initialisation.

    Args:
        problem: the :class:`~ufm.problem.Problem`.
        method: one of ``METHODS``; default :func:`default_method` of the problem's dtype.
        lr: step size (default :func:`default_lr`; unused by ``"lbfgs"`` and ``"reduced"``). When the
            default step of gd/momentum/nesterov diverges, cycles, or runs to ``max_iters`` from more than
            ``MEASURED_STABLE_RATIO`` times the stability limit at x_0, the solve is run once more with
            ``min(lr / 2, STABILITY_LIMIT[method] / lambda_max(x_0))`` (Lanczos), and the message says so;
            the result (iterations, history, seconds) is the second run's. A default-step run stopped by
            ``max_iters`` costs one Lanczos estimate to tell the two cases apart.
        tol: relative gradient-norm tolerance, in (0, 1).
        max_iters: iteration cap (>= 1).
        record_every: record objective, gradient norm and NC1-NC3 every this many iterations (>= 1).
        history: record at all; ``False`` keeps only the row at x_0 in ``Result.history`` and compiles
            a smaller program (no NC1-NC3 inside the loop; the CLI's choice, about 0.5 s less to compile).
        progress_every: print a progress line to stderr every this many iterations (0: never).
        init: optional starting point instead of ``problem.init()``.
        shard: split H ``(d, N)`` and the labels along the sample axis N over all
            ``jax.devices()`` (a 1-D ``Mesh`` named ``"data"``, ``NamedSharding``
            ``P(None, "data")``; W and b replicated). XLA then computes the logits and
            gradients of each device's samples locally and all-reduces the sums (gradient of
            W, b and the scalars). N must be divisible by the number of devices. Same result
            as ``shard=False`` up to the order of floating-point sums.

    Returns:
        :class:`Result`. Divergence is reported in the result, never raised.
    """
    method = default_method(problem) if method is None else method
    step_given = lr is not None
    lr = check_options(
        method,
        lr,
        tol,
        dict(max_iters=(max_iters, 1), record_every=(record_every, 1), progress_every=(progress_every, 0)),
        problem,
    )
    check_method_fits(problem, method)
    require_dtype_enabled(problem.dtype)
    max_iters, record_every, progress_every = int(max_iters), int(record_every), int(progress_every)
    rows = history_rows(max_iters, record_every, history)
    _memory.require(
        solve_bytes(problem, method, rows),
        f"solving with {method}",
        f"K = {problem.K}, n = {problem.n}, d = {problem.d}" + (f", {rows} history rows" if rows > 1 else ""),
        lambda: memory_advice(problem, method, rows),
    )
    params0 = problem.init() if init is None else _check_init(problem, init)
    if problem.nonnegative:
        params0 = params0._replace(H=jnp.maximum(params0.H, 0.0))
    dt = problem.jnp_dtype
    labels = problem.labels()
    if shard:
        params0, labels = _shard_samples(params0, labels)
    args = (
        params0,
        labels,
        problem.weights(),
        jnp.asarray(lr or 0.0, dt),
        jnp.asarray(tol, dt),
        jnp.asarray(max_iters, jnp.int32),
        jnp.asarray(record_every, jnp.int32),
    )
    statics = dict(
        method=method,
        rows=rows,
        progress_every=progress_every,
        nonnegative=problem.nonnegative,
        with_history=bool(history),
        loss_id=LOSS_IDS[problem.loss],
        balanced=problem.balanced,
    )
    if method == "reduced" and problem.balanced and not shard:
        return _solve_reduced(problem, tol, params0, init is not None, args, statics)
    compiled, compile_seconds = compile_once(run_loop, args, statics)
    start = time.perf_counter()
    out = jax.block_until_ready(compiled(*args))
    seconds = time.perf_counter() - start
    note = ""
    status = STATUS_NAMES[int(out[5])]
    if not step_given and lr is not None and status in ("diverged", "no_progress", "max_iters"):
        fallback = _fallback_step(problem, method, lr, params0)
        # max_iters alone is no sign of a too large step, unless the step was well above the limit at x_0
        too_large = lambda top: lr * top > MEASURED_STABLE_RATIO * STABILITY_LIMIT[method]
        if fallback is not None and (status != "max_iters" or too_large(fallback[0])):
            top, step = fallback
            iterations = int(out[4])
            failed = {
                "diverged": f"diverged at iteration {iterations + 1}",
                "no_progress": f"no progress after {iterations} iterations",
                "max_iters": f"not converged after max_iters = {iterations} iterations",
            }[status]
            note = (
                f"the default step lr = {lr:g} failed ({failed}); the largest Hessian eigenvalue of L at the start "
                f"is {top:.4g}, so {method} is locally stable there only for lr < {STABILITY_LIMIT[method]:g} / "
                f"{top:.4g} = {STABILITY_LIMIT[method] / top:.4g}: rerun with lr = {step:g}. "
            )
            lr, args = step, (*args[:3], jnp.asarray(step, dt), *args[4:])
            start = time.perf_counter()
            out = jax.block_until_ready(compiled(*args))
            seconds = time.perf_counter() - start  # of the run reported (its iterations and history)
    result = _result(problem, method, lr, tol, params0, labels, init is not None, out, seconds, compile_seconds)
    return dataclasses.replace(result, message=note + result.message) if note else result


def _fallback_step(problem: Problem, method: str, lr: float, params0: Params) -> tuple[float, float] | None:
    """``(lambda_max(x_0), step)`` for a rerun after the *default* step of a fixed-step method failed
    (diverged, cycled, or ran to max_iters from above the stability limit at x_0): ``min(lr / 2,
    STABILITY_LIMIT[method] / lambda_max(x_0))`` rounded down to 3 digits (Lanczos at the start). None when
    no finite positive curvature is found.

    The default (``DEFAULT_LR``) was measured at K = 10, where the softmax losses' curvature at the default
    start is about 1/K = 0.1 (GD: lr 20 is 2 / lambda_max). Smaller K, a wider start or a larger d raise
    lambda_max(x_0) (K = 3: 0.34, so lr 20 diverges). Measured for GD on K in {2, 3, 4, 6, 10, 20}, n in
    {4, 50}, CE, LS (delta 0.1) and focal (gamma 2), seeds 0 and 1 (72 problems): the step
    ``r * 2 / lambda_max(x_0)`` converged in all of them for every r <= 1.25, while lr 20 failed in 14 of the
    48 with K <= 6. With this rerun all 48 converge (measured; ``tests/test_reliability_solver.py`` runs one
    problem of each way of failing), as do 32 problems at K in {2, 3, 4}, n in {3, 4}, seeds 0-3: among
    them K = 4, n = 3, delta 0.1, seed 3, which wanders
    at lr 20 for 20,000 iterations without meeting the no-progress rule (hence max_iters counts when the
    step was above ``MEASURED_STABLE_RATIO`` times the limit). The full stability limit, not a fraction of
    it: the curvature is largest at the uniform start and falls on the way (see :func:`_suggested_step`).
    A wide start converges more slowly at the step it allows (K = 3, d = 30, init_scale 2, n = 4:
    lambda_max(x_0) = 9.3, lr 0.215, ratio 6e-8 after 100,000 iterations; then max_iters says so).
    Measured for GD only: momentum and Nesterov take their own limits (``STABILITY_LIMIT``) and converged
    at their defaults wherever they were run (the failing GD problems included), so their rerun is
    untested in practice.
    """
    top = _curvature_at(problem, params0)
    if top is None or not (np.isfinite(top) and top > 0):
        return None
    step = min(lr / 2, STABILITY_LIMIT[method] / top)
    digits = 10.0 ** (np.floor(np.log10(step)) - 2)
    return top, float(f"{np.floor(step / digits) * digits:.3g}")


def _solve_reduced(problem: Problem, tol: float, params0: Params, given_init: bool, args, statics) -> Result:
    """``"reduced"`` with equal classes as two programs: :func:`reduced_start` (depends on N) and
    :func:`reduced_loop` (on d and K only, so problems that differ only in n share it)."""
    _, labels, weights, _, traced_tol, max_iters, record_every = args  # args[0] is params0
    loss_id = statics["loss_id"]
    start_program, start_compile = compile_once(reduced_start, (params0, labels, weights), dict(loss_id=loss_id))
    loop_args = (start_program(params0, labels, weights), weights, traced_tol, max_iters, record_every)
    loop_statics = dict(
        d=problem.d,
        K=problem.K,
        progress_every=statics["progress_every"],
        with_history=statics["with_history"],
        loss_id=loss_id,
        rows=statics["rows"],
    )
    loop_program, loop_compile = compile_once(reduced_loop, loop_args, loop_statics)
    begin = time.perf_counter()
    out = jax.block_until_ready(loop_program(*loop_args))
    seconds = time.perf_counter() - begin
    means = out[0]
    params = means._replace(H=jnp.asarray(np.repeat(np.asarray(means.H), problem.n, axis=1)))  # Hbar Y (a copy)
    out = (params, *out[1:])
    return _result(
        problem, "reduced", None, tol, params0, labels, given_init, out, seconds, start_compile + loop_compile
    )


def _start_metrics(rows: np.ndarray, params0: Params, labels, K: int) -> np.ndarray:
    """``rows`` with the NC metrics of x_0 filled in where the program left them NaN (without history, and
    on the balanced reduced path): :func:`ufm.metrics.collapse` at ``params0``, a program of its own per
    shape, which the comparison at the solution (same shapes) shares. Computed inside the programs it
    made each take 0.2-0.3 s longer to compile (measured at K = 10, n = 500: the GD loop without history
    0.62 -> 0.44 s, L-BFGS 1.64 -> 1.46 s, the reduced start 0.53 -> 0.23 s).
    A row whose metrics are NaN because collapse gives NaN at x_0 is computed again to the same NaN."""
    if rows.shape[0] and np.all(np.isnan(rows[0, 3:])):
        rows = rows.copy()
        rows[0, 3:] = np.asarray(metrics.collapse(params0.W, params0.H, labels, K), dtype=rows.dtype)
    return rows


def _result(problem, method, lr, tol, params0, labels, given_init: bool, out, seconds, compile_seconds) -> Result:
    """The :class:`Result` of a finished loop ``out`` (:func:`run_loop`'s tuple) started at ``params0``
    (with ``labels``, as the loop saw them)."""
    params, value, gnorm, g0, iterations, status, recorded, count = out
    status = STATUS_NAMES[int(status)]
    rows_kept = _start_metrics(np.asarray(recorded)[: int(count)], params0, labels, problem.K)
    ratio = float(gnorm) / float(g0) if float(g0) > 0 else 0.0
    step = _suggested_step(problem, method, lr, (params0, params)) if status in ("diverged", "no_progress") else None
    message = status_message(status, int(iterations), ratio, tol, method, lr, step)
    if status == "nonfinite":
        message = _nonfinite_message(problem, params0, float(value), float(g0), given_init)
    return Result(
        problem=problem,
        method=method,
        lr=lr,
        tol=tol,
        W=np.asarray(params.W),
        H=np.asarray(params.H),
        b=np.asarray(params.b),
        objective=float(value),
        grad_norm=float(gnorm),
        initial_grad_norm=float(g0),
        iterations=int(iterations),
        status=status,
        message=message,
        history={name: rows_kept[:, j] for j, name in enumerate(HISTORY_FIELDS)},
        seconds=seconds,
        compile_seconds=compile_seconds,
        suggested_lr=None if step is None else step[1],
    )
