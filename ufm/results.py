"""What a solve reports: :class:`Result` (one configuration), :class:`BatchResult` (many of one shape, as a
sweep solves them), the structured :class:`Advice` of a status and its readable sentence.

The library speaks Python: a status comes with :class:`Advice` records (a parameter and a value) and a
sentence that names keywords (``raise max_iters``, ``try lr=0.5``); :func:`describe` writes the same sentence
with another spelling of the parameters, which the command lines use to name their flags (``raise
--max-iters``, ``try --lr 0.5``; :func:`ufm._cli.flag`).

A run that does not fit in memory is refused before it allocates (:class:`ufm.MemoryEstimateError`) with
:class:`Alternative` runs that fit: each the :class:`Advice` records that make it (``method='gd'``,
``dtype='float32'``, ``n=123``) and its estimated bytes, worded by :func:`word_alternative` with the same
spellings.

``Result``, ``BatchResult`` and ``Advice`` are public (``ufm.Result``, ...); :class:`Alternative` is what
``ufm.MemoryEstimateError.advice`` holds; :func:`status_message`, :func:`status_advice`, :func:`describe`,
:func:`word_alternative` and :func:`python_spelling` are internal API of :mod:`ufm.solver`, :mod:`ufm.sweep`,
:mod:`ufm.policy`, :mod:`ufm._memory` and the command lines.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from ufm.loop import DIVERGENCE_FACTOR, HISTORY_FIELDS, NO_PROGRESS_GRADIENT, NO_PROGRESS_OBJECTIVE, NO_PROGRESS_WINDOW
from ufm.methods import method_spec
from ufm.objective import Params
from ufm.problem import Problem


class Advice(NamedTuple):
    """Something to change: ``parameter`` (a keyword of :func:`ufm.solve` or a field of :class:`ufm.Problem`:
    ``"lr"``, ``"max_iters"``, ``"tol"``, ``"method"``, ``"dtype"``, ``"n"``, ``"history"``; or an option of a
    command line only, ``"hessian"`` for ``--no-hessian``) and ``value``, the value to use (a number, a name, a
    flag), or None when only the direction is known (the sentence says which: raise, reduce, small)."""

    parameter: str
    value: float | int | bool | str | None = None


#: How a sentence spells a parameter and its value: ``(parameter, value or None) -> text``.
Spelling = Callable[[str, "float | int | bool | str | None"], str]


def python_spelling(parameter: str, value: float | int | bool | str | None = None) -> str:
    """The library's spelling: ``max_iters``, ``lr=0.5`` (a float to 3 significant digits), ``n=123`` (an
    integer in full), ``history=False``, ``method='lbfgs'``."""
    if value is None:
        return parameter
    if isinstance(value, (str, bool)):
        return f"{parameter}={value!r}"
    return f"{parameter}={value}" if isinstance(value, numbers.Integral) else f"{parameter}={value:.3g}"


class Alternative(NamedTuple):
    """A run that fits in memory where the one asked for does not (:class:`ufm.MemoryEstimateError`).

    Attributes:
        advice: the :class:`Advice` records that make it, each a parameter and its value (``method='gd'``;
            ``dtype='float32'`` with ``method='lbfgs'``).
        nbytes: its estimated peak bytes (:mod:`ufm._memory`).
        note: words after the parameters (``"(fewest copies)"``), the same for every spelling.
        at_most: the values are the largest that fit (``n <= 37``), the other parameters as asked.
    """

    advice: tuple[Advice, ...]
    nbytes: float
    note: str = ""
    at_most: bool = False


def word_alternative(alternative: Alternative, spell: Spelling = python_spelling, sep: str = ", ") -> str:
    """An :class:`Alternative` in words: its parameters spelled by ``spell`` and joined by ``sep`` (the library:
    ``dtype='float32', method='lbfgs'``; the command lines: ``--float32 --method lbfgs``), then its note. A bound
    (``at_most``) is written ``n <= 37`` in every spelling."""
    if alternative.at_most:
        text = sep.join(f"{a.parameter} <= {a.value}" for a in alternative.advice)
    else:
        text = sep.join(spell(a.parameter, a.value) for a in alternative.advice)
    return f"{text} {alternative.note}" if alternative.note else text


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
        curvature: that lambda_max (None where no step was suggested).
        advice: what to change, as :class:`Advice` records (empty when converged).
        note: the sentence that precedes the status's when the default step failed and the run was redone.
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
    curvature: float | None = None
    advice: tuple[Advice, ...] = ()
    note: str = ""

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
            advice=status_advice(self.status[j], self.method, self.lr),
            history={name: np.zeros(0) for name in HISTORY_FIELDS},
            seconds=self.seconds / len(self),
            compile_seconds=0.0,
        )


def status_advice(status: str, method: str, lr, step=None) -> tuple[Advice, ...]:
    """What to change after a run that stopped with ``status`` (``step``: ``(lambda_max, suggested lr)`` after a
    divergence or a cycle, if known): the :class:`Advice` records that :func:`status_message` words."""
    if status == "stalled":
        return (Advice("tol"),)
    if status == "max_iters":
        return (Advice("max_iters"), Advice("tol") if method_spec(method).line_search else Advice("method", "lbfgs"))
    if status in ("diverged", "no_progress"):
        if step is not None and method_spec(method).stability_limit is not None:
            return (Advice("lr", step[1]),)
        return (Advice("lr"),) if lr is not None else (Advice("method", "gd"), Advice("lr"))
    return ()


def status_message(
    status: str,
    iterations: int,
    ratio: float,
    tol: float,
    method: str,
    lr,
    step=None,
    spell: Spelling = python_spelling,
) -> str:
    """The readable sentence of :attr:`Result.message` for ``status``; ``step``: ``(lambda_max, suggested lr)``
    after a divergence or a cycle, if known; ``spell``: how the advice names a parameter (the library's
    keywords by default; the command lines pass their flags)."""
    spec = method_spec(method)
    advice = status_advice(status, method, lr, step)
    say = lambda k: spell(advice[k].parameter, advice[k].value)
    if status == "converged":
        return f"converged: |grad L| / |grad L(x0)| = {ratio:.2e} <= tol = {tol:.1e} after {iterations} iterations"
    if status == "stalled":
        return (
            f"stalled after {iterations} iterations at |grad L| / |grad L(x0)| = {ratio:.2e} > tol = {tol:.1e}: "
            "the line search found no decrease of L even along -grad L, so tol is below what rounding in this "
            f"precision resolves; raise {say(0)}"
        )
    if status == "nonfinite":
        return (
            "nonfinite: the objective or its gradient at the start is nan or inf (overflow), so no step was "
            "taken; reduce the lambdas, init_scale or the loss parameters"
        )
    if status == "max_iters":
        words = (
            f"raise {say(0)}, or {say(1)} if the ratio has stopped falling (rounding)"
            if spec.line_search
            else f"raise {say(0)} or use {say(1)}"
        )
        return (
            f"stopped at max_iters = {iterations} with |grad L| / |grad L(x0)| = {ratio:.2e} > tol = {tol:.1e}; "
            + words
        )
    if step is not None and spec.stability_limit is not None:
        top, suggested = step
        limit = spec.stability_limit
        words = (
            f"the largest Hessian eigenvalue of L (Lanczos, at the start or the last finite iterate) is "
            f"{top:.4g}: {method} is locally stable only for lr < {limit:.4g} / {top:.4g} = {limit / top:.4g}; "
            f"try {say(0)}"
        )
    else:
        words = f"reduce {say(0)} (e.g. by 10x)" if lr is not None else f"try {say(0)} with a small {say(1)}"
    if status == "no_progress":
        return (
            f"no progress: stopped after {iterations} iterations ({method}, lr = {lr}) at |grad L| / |grad L(x0)| "
            f"= {ratio:.2e} > tol = {tol:.1e}: for {NO_PROGRESS_WINDOW} iterations neither L fell "
            f"{NO_PROGRESS_OBJECTIVE:g} (relative) nor |grad L| {100 * NO_PROGRESS_GRADIENT:g}% below its best "
            f"while L rose above its best, "
            f"so the step is too large and the iterates cycle instead of converging (more iterations will not "
            f"help); {words}"
        )
    return (
        f"diverged at iteration {iterations + 1} ({method}, lr = {lr}): the objective became non-finite or "
        f"exceeded {DIVERGENCE_FACTOR:g}x its initial value; {words}"
    )


def describe(result: Result, spell: Spelling = python_spelling) -> str:
    """:attr:`Result.message` with the parameters spelled by ``spell`` (the command lines: their flags). A
    ``"nonfinite"`` status names the problem's own fields (no advice to respell): its message as it is."""
    if result.status == "nonfinite":
        return result.message
    g0 = result.initial_grad_norm
    ratio = result.grad_norm / g0 if g0 > 0 else 0.0
    step = None if result.curvature is None or result.suggested_lr is None else (result.curvature, result.suggested_lr)
    sentence = status_message(
        result.status, result.iterations, ratio, result.tol, result.method, result.lr, step, spell
    )
    return result.note + sentence
