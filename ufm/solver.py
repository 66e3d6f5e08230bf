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

The solver is split by concern: :mod:`ufm.methods` and :mod:`ufm.losses` (the typed specifications),
:mod:`ufm.policy` (default method and step, the rerun after a failed default step, memory advice),
:mod:`ufm.loop` (the compiled loop, the stopping rule and :class:`~ufm.loop.Status`), :mod:`ufm.reduction`
(the class-mean reduction and its L-BFGS driver), :mod:`ufm.results` (:class:`Result`, :class:`BatchResult`,
the status sentences) and :mod:`ufm._compile` (the compile cache; ``ufm.compiled_programs()``).
This module holds :func:`solve` and the programs it compiles.

Internal API (shared with :mod:`ufm.sweep`; not exported from :mod:`ufm`, may change without notice):
:func:`run_loop` (the compiled loop; for ``"reduced"`` with equal classes :func:`reduced_start` then
:func:`reduced_loop`, which :func:`solve` compiles as two programs so that the loop is shared by every n),
:func:`check_options`, :func:`tree_norm`. Names with a leading underscore are used only inside this module.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ufm import _lbfgs, _memory, metrics
from ufm._compile import compile_once
from ufm.loop import (
    HISTORY_FIELDS,
    MAX_ITERS_LIMIT,
    NO_PROGRESS_WINDOW,
    STATUS_NAMES,
    Evaluation,
    LoopOutput,
    history_row,
    history_rows,
    iterate,
    lbfgs_evaluation,
    progress_start,
    progress_update,
    start_status,
    status_word,
    step_status,
)
from ufm.methods import METHODS, method_spec
from ufm.objective import Params, objective
from ufm.policy import (
    DEFAULT_LR,
    MEASURED_STABLE_RATIO,
    STABILITY_LIMIT,
    check_method_fits,
    default_lr,
    default_method,
    fallback_step,
    memory_advice,
    solve_bytes,
    suggested_step,
)
from ufm.problem import Problem, require_dtype_enabled
from ufm.reduction import reduced_objective, reduced_params, reduced_point
from ufm.results import Result, status_advice, status_message

# names other modules and tests read from here (each is defined once, in the module it is imported from)
__all__ = [
    "DEFAULT_LR",
    "HISTORY_FIELDS",
    "METHODS",
    "NO_PROGRESS_WINDOW",
    "STABILITY_LIMIT",
    "STATUS_NAMES",
    "Result",
    "check_method_fits",
    "check_options",
    "default_lr",
    "default_method",
    "memory_advice",
    "progress_start",
    "progress_update",
    "start_status",
    "step_status",
    "reduced_loop",
    "reduced_objective",
    "reduced_point",
    "reduced_start",
    "run_loop",
    "solve",
    "solve_bytes",
    "tree_norm",
]


def tree_norm(tree):
    """The Euclidean norm of all leaves of ``tree`` together (internal API, also used by :mod:`ufm.sweep`)."""
    return jnp.sqrt(sum(jnp.sum(x**2) for x in jax.tree_util.tree_leaves(tree)))


def _project(params, grad, nonnegative: bool):
    """(params with H clipped at 0, gradient with the H entries blocked by the bound zeroed)."""
    if not nonnegative:
        return params, grad
    H = jnp.maximum(params.H, 0.0)
    return params._replace(H=H), grad._replace(H=jnp.where((H > 0) | (grad.H < 0), grad.H, 0.0))


def _static_loss(weights, loss_id: int | None):
    """``weights`` with the loss fixed at trace time to the branch ``loss_id`` (:attr:`ufm.losses.Loss.branch`,
    a Python int: only that loss is traced and compiled, and losses of one branch share a program); None: the
    traced ``weights.loss_id`` (a ``lax.switch`` over every loss)."""
    return weights if loss_id is None else weights._replace(loss_id=loss_id)


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


def reduced_start(params0, labels, weights, *, loss_id: int | None = None) -> ReducedStart:
    """The :class:`ReducedStart` of the full point ``params0`` (W: (d, K), H: (d, N), b: (K,)) with
    class-major balanced ``labels (N,)``. ``loss_id`` (static): as in :func:`run_loop`. The row of x_0 has
    NaN for NC1-NC3 and the norms (:func:`ufm.loop.history_row`): :func:`solve` fills them in."""
    weights = _static_loss(weights, loss_id)
    K = params0.W.shape[1]
    value, grad = jax.value_and_grad(lambda p: objective(p, labels, weights))(params0)
    g0 = tree_norm(grad)
    n = jnp.asarray(params0.H.shape[1] // K, value.dtype)
    row = history_row(0, value, g0, params0.W, params0.H, labels, K, with_metrics=False)
    return ReducedStart(reduced_point(params0, labels), n, value, g0, row)


def reduced_loop(
    start: ReducedStart, weights, tol, max_iters, record_every, *, d, K, loss_id: int | None = None, **options
) -> LoopOutput:
    """The compiled loop of ``"reduced"`` with equal classes, from :func:`reduced_start`: one program per
    (d, K), whatever n. Returns :func:`run_loop`'s :class:`~ufm.loop.LoopOutput` with the class means
    ``Hbar (d, K)`` as ``H``. ``loss_id`` and ``options`` (static): ``progress_every``, ``with_history``, ``rows``,
    as in :func:`run_loop`."""
    weights = _static_loss(weights, loss_id)
    value_and_grad = jax.value_and_grad(lambda x: reduced_objective(x, weights, d, K, start.n))
    value0, flat_grad0 = value_and_grad(start.x)

    # the K class means as they are when balanced: same NC metrics as Hbar Y
    classes = jnp.arange(K)

    def row_at(state, i, value, gnorm):
        params = reduced_params(state.x, d, K, start.n)
        return history_row(i, value, gnorm, params.W, params.H, classes, K)

    out = iterate(
        lambda state: lbfgs_evaluation(state, value_and_grad),
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
    return out._replace(params=reduced_params(out.params.x, d, K, start.n))


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
    loss_id: int | None = None,
    balanced=True,
    rows=None,
) -> LoopOutput:
    """The compiled loop of ``method`` (a name or :class:`~ufm.methods.Method`). Returns a
    :class:`~ufm.loop.LoopOutput` (params, value, grad_norm, g0, iterations, status, history, count).

    ``max_iters`` and ``record_every`` may be traced (int32 scalars: one program serves every cap);
    ``rows`` (static) sizes the history buffer (``None``: :func:`~ufm.loop.history_rows` of concrete
    ``max_iters`` and ``record_every``).

    ``nonnegative``: project H onto H >= 0 after each step (gd/momentum/nesterov only); the stopping
    rule then uses the projected gradient. ``with_history=False`` skips the history (one row at x_0
    only, its NC metrics NaN: :func:`solve` computes them outside): under ``jax.vmap`` (:mod:`ufm.sweep`)
    the recording ``cond`` would become a ``select`` and compute NC1-NC3 at every iteration. The
    balanced ``"reduced"`` path's row at x_0 has NaN NC metrics with or without history
    (:func:`reduced_start`). ``loss_id`` (static, :attr:`ufm.losses.Loss.branch`): the loss fixed at compile
    time, so only that loss is traced and compiled (``None``: the traced ``weights.loss_id`` picks it, a
    ``lax.switch`` over every loss). ``balanced=False`` (static): unequal class sizes, counted from ``labels``; only
    ``"reduced"`` needs them (weighted L_red, module docstring). ``"reduced"`` with equal classes is
    :func:`reduced_start` then :func:`reduced_loop` (which :func:`solve` compiles as two programs).
    """
    spec = method_spec(method)
    weights = _static_loss(weights, loss_id)
    K = params0.W.shape[1]
    n_records = history_rows(max_iters, record_every, with_history) if rows is None else rows
    options = dict(progress_every=progress_every, with_history=with_history, rows=n_records)
    if spec.class_means and balanced:
        d = params0.W.shape[0]
        out = reduced_loop(
            reduced_start(params0, labels, weights), weights, tol, max_iters, record_every, d=d, K=K, **options
        )
        n = params0.H.shape[1] // K
        return out._replace(params=out.params._replace(H=jnp.repeat(out.params.H, n, axis=1)))
    start_value, start_grad = jax.value_and_grad(lambda p: objective(p, labels, weights))(params0)
    g0 = tree_norm(_project(params0, start_grad, nonnegative)[1])  # ||grad L(x_0)|| of the given x_0
    first_row = history_row(0, start_value, g0, params0.W, params0.H, labels, K, with_metrics=with_history)

    if spec.class_means:  # unequal classes: weighted L_red (module docstring), L-BFGS of ufm._lbfgs
        d = params0.W.shape[0]
        n = jnp.bincount(labels, length=K).astype(start_value.dtype)  # the (K,) class sizes n_k (exact)
        value_and_grad = jax.value_and_grad(lambda x: reduced_objective(x, weights, d, K, n))
        flat0 = reduced_point(params0, labels, n)
        value0, flat_grad0 = value_and_grad(flat0)
        state0: Any = _lbfgs.init(flat0, value0, flat_grad0)
        gnorm0 = jnp.linalg.norm(flat_grad0)  # = ||grad L(W, Hbar Y, b)|| (module docstring)

        def advance(state):
            return lbfgs_evaluation(state, value_and_grad)

        def view(state):  # the full Hbar Y (h_G then weights class k by n_k / N)
            params = reduced_params(state.x, d, K, n)
            return params._replace(H=params.H[:, labels])

        def row_at(state, i, value, gnorm):
            params = view(state)
            return history_row(i, value, gnorm, params.W, params.H, labels, K)
    else:
        import optax  # here, not at import: the default method (reduced) never loads it (about 0.1 s)

        f = lambda p: objective(p, labels, weights)
        assert spec.optimizer is not None  # every method but the class-mean one is an optax transformation
        opt = spec.optimizer(lr)
        line_search_value_and_grad = optax.value_and_grad_from_state(f) if spec.line_search else None
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
            return Evaluation((new_params, new_opt_state, new_value, new_grad), new_value, gnorm, False, True)

        def row_at(state, i, value, gnorm):
            return history_row(i, value, gnorm, state[0].W, state[0].H, labels, K)

        view = lambda state: state[0]

    out = iterate(
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
        watch_progress=not spec.line_search,  # a fixed step can cycle (module docstring)
        **options,
    )
    return out._replace(params=view(out.params))


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
        parameters = problem.loss_spec.parameters
        if "mse_kappa" in parameters:
            terms["mse_kappa"] = 2 * (log(2 * problem.mse_kappa * problem.mse_beta))
        if "gamma" in parameters:
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
    spec = method_spec(method)  # ValueError naming method and the choices
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
    if spec.line_search:
        return None
    lr = (spec.default_lr if problem is None else default_lr(problem, spec)) if lr is None else lr
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
        # numpy scalars: the compiled programs take them as they are (jnp.asarray compiles a conversion per dtype)
        np.asarray(lr or 0.0, dt),
        np.asarray(tol, dt),
        np.asarray(max_iters, np.int32),
        np.asarray(record_every, np.int32),
    )
    statics = dict(
        method=method,
        rows=rows,
        progress_every=progress_every,
        nonnegative=problem.nonnegative,
        with_history=bool(history),
        loss_id=problem.loss_spec.branch,
        balanced=problem.balanced,
    )
    if method_spec(method).class_means and problem.balanced and not shard:
        return _solve_reduced(problem, tol, params0, init is not None, args, statics)
    compiled, compile_seconds = compile_once(run_loop, args, statics)
    start = time.perf_counter()
    out = jax.block_until_ready(compiled(*args))
    seconds = time.perf_counter() - start
    note = ""
    status = status_word(out.status)
    if not step_given and lr is not None and status in ("diverged", "no_progress", "max_iters"):
        fallback = fallback_step(problem, method, lr, params0)
        # max_iters alone is no sign of a too large step, unless the step was well above the limit at x_0
        too_large = lambda top: lr * top > MEASURED_STABLE_RATIO * STABILITY_LIMIT[method]
        if fallback is not None and (status != "max_iters" or too_large(fallback[0])):
            top, step = fallback
            iterations = int(out.iterations)
            failed = {
                "diverged": f"diverged at iteration {iterations + 1}",
                "no_progress": f"no progress after {iterations} iterations",
                "max_iters": f"not converged after max_iters = {iterations} iterations",
            }[status]
            note = (
                f"the default step lr = {lr:g} failed ({failed}); the largest Hessian eigenvalue of L at the start "
                f"is {top:.4g}, so {method} is locally stable there only for lr < {STABILITY_LIMIT[method]:g} / "
                f"{top:.4g} = {method_spec(method).safe_step(top, fraction=1.0):.4g}: rerun with lr = {step:g}. "
            )
            lr, args = step, (*args[:3], np.asarray(step, dt), *args[4:])
            start = time.perf_counter()
            out = jax.block_until_ready(compiled(*args))
            seconds = time.perf_counter() - start  # of the run reported (its iterations and history)
    result = _result(problem, method, lr, tol, params0, labels, init is not None, out, seconds, compile_seconds)
    return dataclasses.replace(result, message=note + result.message, note=note) if note else result


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
    means = out.params
    out = out._replace(params=means._replace(H=jax.device_put(np.repeat(np.asarray(means.H), problem.n, axis=1))))
    return _result(
        problem, "reduced", None, tol, params0, labels, given_init, out, seconds, start_compile + loop_compile
    )


def _start_metrics(rows: np.ndarray, params0: Params, labels, K: int) -> np.ndarray:
    """``rows`` with the NC metrics of x_0 filled in where the program left them NaN (without history, and
    on the balanced reduced path): :func:`ufm.metrics.collapse` at ``params0``, a program of its own per
    shape, which the comparison at the solution (same shapes) shares; inside the loops' programs it made each
    slower to compile (docs/performance.md, "Start-up").
    A row whose metrics are NaN because collapse gives NaN at x_0 is computed again to the same NaN."""
    if rows.shape[0] and np.all(np.isnan(rows[0, 3:])):
        rows = rows.copy()
        rows[0, 3:] = np.asarray(metrics.collapse(params0.W, params0.H, labels, K), dtype=rows.dtype)
    return rows


def _result(problem, method, lr, tol, params0, labels, given_init: bool, out, seconds, compile_seconds) -> Result:
    """The :class:`Result` of a finished loop ``out`` (:func:`run_loop`'s :class:`~ufm.loop.LoopOutput`) started
    at ``params0`` (with ``labels``, as the loop saw them)."""
    params, value, gnorm, g0, iterations, status, recorded, count = out
    status = status_word(status)
    rows_kept = _start_metrics(np.asarray(recorded)[: int(count)], params0, labels, problem.K)
    ratio = float(gnorm) / float(g0) if float(g0) > 0 else 0.0
    step = suggested_step(problem, method, lr, (params0, params)) if status in ("diverged", "no_progress") else None
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
        curvature=None if step is None else step[0],
        advice=status_advice(status, method, lr, step),
    )
