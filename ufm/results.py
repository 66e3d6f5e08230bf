"""What a solve reports: :class:`Result` (one configuration), :class:`BatchResult` (many of one shape, as a
sweep solves them) and the readable sentence of a status (:func:`status_message`).

``Result`` and ``BatchResult`` are public (``ufm.Result``, ``ufm.BatchResult``); :func:`status_message` is an
internal API of :mod:`ufm.solver` and :mod:`ufm.sweep`.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np

from ufm.loop import DIVERGENCE_FACTOR, HISTORY_FIELDS, NO_PROGRESS_GRADIENT, NO_PROGRESS_OBJECTIVE, NO_PROGRESS_WINDOW
from ufm.methods import method_spec
from ufm.objective import Params
from ufm.problem import Problem


@dataclass(frozen=True)
class Result:
    """Outcome of :func:`ufm.solve` (numpy arrays; like scipy's ``OptimizeResult``).

    Attributes:
        problem, method, lr, tol: what was run (lr None for L-BFGS: line search).
        W ``(d, K)``, H ``(d, N)``, b ``(K,)``: the final iterate (the last finite one if diverged).
        objective: L at the final iterate. grad_norm / initial_grad_norm: ||grad L|| there and at x_0.
        iterations: steps taken. status: ``"converged"``, ``"max_iters"``, ``"diverged"``, ``"stalled"``
            (``"reduced"`` only: its line search can no longer decrease L, as when tol is below rounding),
            ``"no_progress"`` (gd/momentum/nesterov: the iterates cycle, :mod:`ufm.solver`) or ``"nonfinite"``
            (the words of :class:`ufm.loop.Status`).
        converged: ``status == "converged"``. message: one readable sentence.
        history: dict of arrays over recorded iterations, keys ``HISTORY_FIELDS``.
        seconds: wall time of the compiled run; compile_seconds: tracing + compilation of the solver's
            programs (not of ``ufm.collapse`` at x_0, which fills the start row's NC metrics when the
            programs do not record them: about 0.2 s once per shape, shared with the comparison).
        suggested_lr: after a divergence or no progress of a fixed step only: the default step unless the
            start's curvature asks for less, always at most lr / 2 (:func:`ufm.policy.suggested_step`; lambda_max
            of the joint Hessian of L, :mod:`ufm.curvature`); GD is locally stable only for ``lr < 2 / lambda_max``.
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


@dataclass(frozen=True)
class BatchResult:
    """Outcome of M configurations of one shape solved together (:func:`ufm.sweep`), arrays over M (numpy).

    Attributes:
        problems: the M configurations, in order. method, lr, tol, max_iters: what was run.
        W ``(M, d, K)``, H ``(M, d, N)``, b ``(M, K)``: final iterates.
        objective, grad_norm, initial_grad_norm: ``(M,)`` each. iterations: ``(M,)`` int.
        status: tuple of the words of :class:`ufm.loop.Status`, one per configuration.
        seconds: wall time of the compiled calls; compile_seconds: tracing + compilation.
    """

    problems: tuple[Problem, ...]
    method: str
    lr: float | None
    tol: float
    max_iters: int
    W: np.ndarray
    H: np.ndarray
    b: np.ndarray
    objective: np.ndarray
    grad_norm: np.ndarray
    initial_grad_norm: np.ndarray
    iterations: np.ndarray
    status: tuple[str, ...]
    seconds: float
    compile_seconds: float

    def __len__(self) -> int:
        return len(self.problems)

    @property
    def converged(self) -> np.ndarray:
        """``(M,)`` bool: which configurations met the gradient tolerance."""
        return np.array([s == "converged" for s in self.status])

    def result(self, j: int) -> Result:
        """Configuration ``j`` as a :class:`Result` (for :func:`ufm.compare`): no history, and ``seconds`` an
        equal share of the batch's compiled time."""
        if isinstance(j, bool) or not isinstance(j, (int, np.integer)) or not -len(self) <= j < len(self):
            raise ValueError(f"j must be an integer index in [-{len(self)}, {len(self)}), got {j!r}")
        j = int(j) % len(self)
        ratio = float(self.grad_norm[j]) / float(self.initial_grad_norm[j]) if self.initial_grad_norm[j] > 0 else 0.0
        return Result(
            problem=self.problems[j],
            method=self.method,
            lr=self.lr,
            tol=self.tol,
            W=self.W[j],
            H=self.H[j],
            b=self.b[j],
            objective=float(self.objective[j]),
            grad_norm=float(self.grad_norm[j]),
            initial_grad_norm=float(self.initial_grad_norm[j]),
            iterations=int(self.iterations[j]),
            status=self.status[j],
            message=status_message(self.status[j], int(self.iterations[j]), ratio, self.tol, self.method, self.lr),
            history={name: np.zeros(0) for name in HISTORY_FIELDS},
            seconds=self.seconds / len(self),
            compile_seconds=0.0,
        )


def status_message(status: str, iterations: int, ratio: float, tol: float, method: str, lr, step=None) -> str:
    """The readable sentence of :attr:`Result.message` for ``status``; ``step``: ``(lambda_max, suggested lr)``
    after a divergence or a cycle, if known."""
    spec = method_spec(method)
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
            if spec.line_search
            else "raise --max-iters or use --method lbfgs"
        )
        return (
            f"stopped at max_iters = {iterations} with |grad L| / |grad L(x0)| = {ratio:.2e} > tol = {tol:.1e}; "
            + advice
        )
    if step is not None and spec.stability_limit is not None:
        top, suggested = step
        limit = spec.stability_limit
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
