"""The class-mean reduction of the UFM (method ``"reduced"``, derived in :mod:`ufm.solver`'s docstring) and
the one L-BFGS driver that solves it.

``x = (vec W, vec Htilde, b)`` with ``Htilde_k = sqrt(n_k) hbar_k`` is the flat point, shape
``(2 d K + K,)``: :func:`reduced_point` packs a full point, :func:`reduced_params` unpacks, and
:func:`reduced_objective` is ``L_red`` (equal to ``L(W, Hbar Y, b)``). ``n`` is one number (balanced; a
Python int or a traced scalar) or the ``(K,)`` class sizes (real numbers allowed: ``L_red`` depends on them
only through ``n_k / N`` and ``n_k lam_H``; :mod:`ufm.imbalance` uses that).

The driver (:class:`ReducedRun`, :func:`reduced_run`, :func:`reduced_step`) is a pure state function: one
evaluation of the L-BFGS of :mod:`ufm._lbfgs` per step and the stopping rule of :func:`ufm.loop.judge`, so
every caller stops for the same reasons with the same :class:`~ufm.loop.Status`: the sweep's work queue
(:mod:`ufm.sweep`, lanes under ``vmap``), :mod:`ufm.imbalance`, and :func:`ufm.solve` through
:func:`ufm.loop.iterate` (which adds the history) with :func:`ufm.loop.lbfgs_evaluation`, the same step.

Internal API (not exported from :mod:`ufm`): every public name here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from ufm import _lbfgs, metrics
from ufm.loop import RUNNING, divergence_level, judge, lbfgs_evaluation, start_status
from ufm.losses import per_sample_loss
from ufm.objective import Params, objective, regularization


def reduced_point(params: Params, labels, sizes=None) -> jnp.ndarray:
    """The flat start ``x = (vec W, vec Htilde, b)``, ``Htilde = sqrt(n) Hbar``, from a full point ``params``
    (W: (d, K), H: (d, N), b: (K,)); shape ``(2 d K + K,)``. ``sizes``: the ``(K,)`` class sizes of unequal
    classes (``Htilde_k = sqrt(n_k) hbar_k``); None: balanced."""
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
    """``L_red`` at the flat point ``x``: ``L(W, Hbar Y, b)`` for the full ``weights``. ``n``: an int
    (balanced), or the ``(K,)`` class sizes ``n_k`` (class k weighted by ``n_k / N``, feature penalty
    ``lam_H/2 ||Htilde||^2 = sum_k n_k lam_H/2 ||hbar_k||^2``)."""
    if jnp.ndim(n) > 0:
        W, Hbar, b = reduced_params(x, d, K, n)
        losses = per_sample_loss(W.T @ Hbar + b[:, None], jnp.arange(K), weights)
        Htilde = x[d * K : 2 * d * K]
        return jnp.sum(n * losses) / jnp.sum(n) + regularization(Params(W, Htilde, b), weights)
    return objective(reduced_params(x, d, K, n), jnp.arange(K), weights._replace(lam_H=n * weights.lam_H))


class ReducedRun(NamedTuple):
    """One run of the driver: the L-BFGS ``state``, ``g0 = ||grad L(x_0)||`` (the tolerance's reference),
    the ``blowup`` level of divergence, the ``iteration`` count and the ``status`` code (:class:`ufm.loop.Status`)."""

    state: _lbfgs.State
    g0: jnp.ndarray
    blowup: jnp.ndarray
    iteration: Any
    status: Any


def reduced_run(x0, value_and_grad: Callable, g0, tol, max_iters) -> ReducedRun:
    """The run at ``x0`` (value and gradient from ``value_and_grad``), judged by :func:`ufm.loop.start_status`
    (a non-finite start is ``nonfinite``; one that meets ``tol`` already is converged)."""
    value, grad = value_and_grad(x0)
    status = start_status(value, jnp.linalg.norm(grad), g0, tol, max_iters)
    return ReducedRun(_lbfgs.init(x0, value, grad), g0, divergence_level(value), 0, status)


def reduced_step(run: ReducedRun, value_and_grad: Callable, tol, max_iters) -> ReducedRun:
    """One evaluation of a running run and the stopping rule (:func:`ufm.loop.judge`); a stopped run is left
    as it is. Works lane by lane under ``jax.vmap``."""
    running = run.status == RUNNING
    evaluation = lbfgs_evaluation(run.state, value_and_grad, active=running)
    old = (run.state, run.state.value, jnp.linalg.norm(run.state.grad))
    judged = judge(
        run.iteration, old, evaluation, run.g0, tol, run.blowup, max_iters, kept_fields=("x", "value", "grad")
    )
    return run._replace(
        state=judged.state, iteration=judged.iteration, status=jnp.where(running, judged.status, run.status)
    )


def reduced_solve(x0, value_and_grad: Callable, g0, tol, max_iters) -> ReducedRun:
    """:func:`reduced_step` from :func:`reduced_run` until the run stops (a ``lax.while_loop``)."""
    return jax.lax.while_loop(
        lambda run: run.status == RUNNING,
        lambda run: reduced_step(run, value_and_grad, tol, max_iters),
        reduced_run(x0, value_and_grad, g0, tol, max_iters),
    )
