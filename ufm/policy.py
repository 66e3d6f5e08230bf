"""Which method and step a problem gets, what to try after a failure, and what fits in memory: the solver's
policy and heuristics, as properties of the :class:`~ufm.losses.Loss` and :class:`~ufm.methods.Method`
specifications (no loss or method is named here except the defaults).

Every step computed from a curvature goes through the package's one step-size rule,
:meth:`ufm.methods.Method.safe_step` (``fraction * stability_limit / lambda_max``, the fraction and the limit
from the method's spec); what this module adds is which curvature, which cap, and the rounding to 3
significant digits of the steps it prints in its advice (:func:`default_lr`, :func:`fallback_step`,
:func:`suggested_step`), so the step a message names is the step that is run. Memory advice is structured
(:class:`ufm.results.Alternative`: parameters and values with their estimates), worded by
:class:`ufm.MemoryEstimateError` for Python and as flags by the command lines.

Internal API (:mod:`ufm.solver`, :mod:`ufm.sweep`, the command lines; not exported from :mod:`ufm`): every
public name here.
"""

from __future__ import annotations

import numpy as np

from ufm import _memory
from ufm.losses import LOSS_SPECS
from ufm.methods import METHOD_SPECS, Method, method_spec
from ufm.objective import Params
from ufm.problem import Problem
from ufm.results import Advice, Alternative

DEFAULT_METHOD = "reduced"
#: The default in float32: ``reduced`` stalls at ~2e-5 relative error there (its K-sample gradient
#: carries the float32 cancellation in 1 - p_t, which the N-sample full gradient averages out);
#: full L-BFGS reaches 5e-6 (README "Performance").
DEFAULT_METHOD_FLOAT32 = "lbfgs"
#: The default of the fixed-step methods with H >= 0 (projected gradient; L-BFGS assumes no constraint).
DEFAULT_METHOD_NONNEGATIVE = "momentum"
#: Step sizes used when ``lr`` is not given, by method (None: line search); from :data:`METHOD_SPECS`.
DEFAULT_LR = {name: spec.default_lr for name, spec in METHOD_SPECS.items()}
#: The stability limit ``lr * lambda`` of each fixed-step method (:attr:`Method.stability_limit`).
STABILITY_LIMIT: dict[str, float] = {
    name: spec.stability_limit for name, spec in METHOD_SPECS.items() if spec.stability_limit is not None
}
#: Steps up to this multiple of ``STABILITY_LIMIT[method] / lambda_max(x_0)`` converged in every case
#: measured (:func:`fallback_step`): a default step that ran to max_iters below it is slow, not unstable.
MEASURED_STABLE_RATIO = 1.25


def reduction_is_exact(problem: Problem) -> bool:
    """The class-mean reduction of ``"reduced"`` is exact for a loss convex in the logits (CE, LS, MSE),
    free features and clean labels (no label noise)."""
    return problem.loss_spec.convex_in_logits and not problem.nonnegative and problem.label_noise == 0


def default_method(problem: Problem) -> str:
    """The method used when none is given.

    ``"momentum"`` (projected) for H >= 0; ``DEFAULT_METHOD`` (``"reduced"``) in float64 where the
    class-mean reduction is exact; otherwise ``DEFAULT_METHOD_FLOAT32`` (``"lbfgs"``): in float32
    the reduced gradient stalls near 2e-5 relative error, and focal loss (not convex) and noisy
    labels (unbalanced observed classes) fall outside the reduction.
    """
    if problem.nonnegative:
        return DEFAULT_METHOD_NONNEGATIVE
    if problem.dtype == "float64" and reduction_is_exact(problem):
        return DEFAULT_METHOD
    return DEFAULT_METHOD_FLOAT32


def check_method_fits(problem: Problem, method: str | Method) -> None:
    """Refuse a method that cannot solve ``problem`` (names the method and what to use instead)."""
    spec = method_spec(method)
    if problem.nonnegative and spec.line_search:
        fixed = [name for name, s in METHOD_SPECS.items() if not s.line_search]
        raise ValueError(
            f"method {spec.name!r} does not support nonnegative=True (projected gradient only); "
            f"use method {', '.join(map(repr, fixed[:-1]))} or {fixed[-1]!r}"
        )
    if spec.class_means and not reduction_is_exact(problem):
        exact = [name for name, s in LOSS_SPECS.items() if s.convex_in_logits]
        raise ValueError(
            f"method {spec.name!r} is exact only for loss {'/'.join(exact)} without label noise (got loss = "
            f"{problem.loss!r}, label_noise = {problem.label_noise:g}); use method {DEFAULT_METHOD_FLOAT32!r}"
        )


def default_lr(problem: Problem, method: str | Method) -> float | None:
    """The step of ``method`` when ``lr`` is not given (None for the line-search methods).

    ``min(default_lr, safe_step(c))`` (:meth:`~ufm.methods.Method.safe_step`: ``safe_fraction * stability_limit / c``,
    rounded to 3 significant digits, the step the messages print) with ``c`` an estimate of the largest curvature of
    L along the run: ``max(lam_W, lam_H, lam_b)`` (the regularisation's share) plus the loss's
    :attr:`~ufm.losses.Loss.logit_curvature` (MSE: its constant logit Hessian ``2 diag(kappa at the target, 1
    elsewhere)``, so L keeps that curvature from x_0 to the optimum; measured, CLI default problem: lambda_max 2.00
    at x_0 and 2.01 at the optimum; 2.13 and 2.02 with H >= 0). The softmax losses' logit Hessian ``diag(p) - p
    p^T`` is largest at the uniform start (1/K) and falls as ``p_t -> 1`` (0.10 at x_0, 0.024 at the optimum), and
    the defaults were measured on them. ``tests/test_reliability_solver.py`` runs every loss
    and flag combination.
    """
    spec = method_spec(method)
    if spec.default_lr is None or spec.stability_limit is None:  # the line-search methods
        return None
    curvature = max(problem.lam_W, problem.lam_H, problem.lam_b)
    extra = problem.loss_spec.logit_curvature(problem)
    if extra:
        curvature += extra
    return min(spec.default_lr, float(f"{spec.safe_step(curvature):.3g}"))


def curvature_at(problem: Problem, point: Params) -> float | None:
    """lambda_max of the joint Hessian of ``problem``'s L at ``point`` (Lanczos, ARPACK tolerance 1e-3, the
    accuracy a step size needs); None when ARPACK fails on a pathological point."""
    from ufm import curvature

    try:
        return curvature.largest_curvature(point, problem.labels(), problem.weights(), tol=1e-3)
    except (ArithmeticError, ValueError, RuntimeError):
        return None


def fallback_step(problem: Problem, method: str, lr: float, params0: Params) -> tuple[float, float] | None:
    """``(lambda_max(x_0), step)`` for a rerun after the *default* step of a fixed-step method failed
    (diverged, cycled, or ran to max_iters from above the stability limit at x_0): ``min(lr / 2,
    stability_limit / lambda_max(x_0))`` (:meth:`~ufm.methods.Method.safe_step` with fraction 1) rounded down to
    3 digits (Lanczos at the start; the rerun's message prints that step). None when no finite positive
    curvature is found.

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
    it: the curvature is largest at the uniform start and falls on the way (see :func:`suggested_step`).
    A wide start converges more slowly at the step it allows (K = 3, d = 30, init_scale 2, n = 4:
    lambda_max(x_0) = 9.3, lr 0.215, ratio 6e-8 after 100,000 iterations; then max_iters says so).
    Measured for GD only: momentum and Nesterov take their own limits (``STABILITY_LIMIT``) and converged
    at their defaults wherever they were run (the failing GD problems included), so their rerun is
    untested in practice.
    """
    top = curvature_at(problem, params0)
    if top is None or not (np.isfinite(top) and top > 0):
        return None
    step = min(lr / 2, method_spec(method).safe_step(top, fraction=1.0))
    digits = 10.0 ** (np.floor(np.log10(step)) - 2)
    return top, float(f"{np.floor(step / digits) * digits:.3g}")


def suggested_step(problem: Problem, method: str, lr, points) -> tuple[float, float] | None:
    """``(lambda_max, suggested lr)`` after a fixed step ``lr`` diverged or cycled; ``points``: (x_0, the
    last finite iterate). None for the line-search methods or when no finite positive curvature is found.

    ``min(default_lr, stability_limit / lambda_max(x_0))`` when that is at most ``lr / 2``: the default (measured to
    converge) unless it exceeds the stability limit at the start (a wider init, larger lambdas). The full limit
    there, not a fraction: the softmax losses' curvature is largest at the uniform start and falls on the way (half
    the limit cost 4x the default's iterations at K = 5). Else the problem is outside what the default covers (a
    step below it failed), and the suggestion is ``min(safe_step(lambda_max), lr / 2)`` over both points
    (:meth:`~ufm.methods.Method.safe_step`: ``safe_fraction * stability_limit / lambda_max``). Not 1 / lambda_max at
    the last iterate alone: after a blow-up that point's curvature is far above anything on a converging path (GD lr
    1e4, K = 10, n = 50: it suggested 0.444, which needs 91,556 iterations against 2,023 at the default 20). Rounded
    to 3 significant digits (what the message prints, so the step advised is the step named).
    """
    if lr is None:
        return None
    default = default_lr(problem, method)  # not None: STABILITY_LIMIT holds the fixed-step methods only
    if default is None:
        return None
    spec = method_spec(method)
    top = curvature_at(problem, points[0])
    if top is None or not (np.isfinite(top) and top > 0):
        return None
    step = min(default, spec.safe_step(top, fraction=1.0))
    if step > lr / 2:
        at_last = curvature_at(problem, points[1])
        if at_last is None or not np.isfinite(top := max(top, at_last)):
            return None
        step = min(spec.safe_step(top), lr / 2)
    return top, float(f"{step:.3g}")


def solve_bytes(problem: Problem, method: str | Method, history_rows: int = 1) -> float:
    """Estimated peak bytes of :func:`ufm.solve` (:func:`ufm._memory.solve_bytes`)."""
    return _memory.solve_bytes(problem.K, problem.N, problem.d, np.dtype(problem.dtype).itemsize, method, history_rows)


def memory_advice(problem: Problem, method: str, history_rows: int = 1) -> list[Alternative]:
    """What else could be run when ``method`` does not fit: :class:`~ufm.results.Alternative` runs (the
    :class:`~ufm.results.Advice` records that make each, its estimated bytes), each a real alternative (never the
    method already chosen; a class-mean method is not offered in float32, where it stalls), for
    :func:`ufm._memory.require` to offer only those that fit; the last one is the largest ``n`` that fits with
    the chosen method."""
    fewest = min((s for s in METHOD_SPECS.values() if not s.class_means), key=lambda s: s.memory_copies).name
    single = lambda m: _memory.solve_bytes(problem.K, problem.N, problem.d, 4, m, history_rows)
    float32 = lambda m: (Advice("dtype", "float32"), Advice("method", m))
    options = []
    if method != fewest:
        options.append(
            Alternative((Advice("method", fewest),), solve_bytes(problem, fewest, history_rows), "(fewest copies)")
        )
    if problem.dtype == "float64":
        float32_method = DEFAULT_METHOD_FLOAT32 if method_spec(method).class_means else method
        options.append(Alternative(float32(float32_method), single(float32_method)))
        if float32_method != fewest:
            options.append(Alternative(float32(fewest), single(fewest)))
    if history_rows > 2:
        options.append(Alternative((Advice("history", False),), solve_bytes(problem, method, 1)))
    needed = lambda n: _memory.solve_bytes(
        problem.K, n * problem.K, problem.d, np.dtype(problem.dtype).itemsize, method, history_rows
    )
    n_max = _memory.largest_fitting(1, problem.n - 1, needed) if problem.n > 1 else None
    if n_max is not None:
        options.append(Alternative((Advice("n", n_max),), needed(n_max), f"with {method}", at_most=True))
    return options
