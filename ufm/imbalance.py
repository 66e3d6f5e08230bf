"""Unequal class sizes: the class-mean UFM for any sizes, and the measurements of minority collapse and SELI.

:func:`solve_reduced` minimises ``L_red`` of :mod:`ufm.solver` (module docstring: class k weighted by
``n_k / N``, feature penalty ``sum_k n_k lam_H/2 ||hbar_k||^2``) for class sizes ``n_k`` that may be
any positive reals: L_red depends on them only through ``n_k / N`` and ``n_k lam_H``, so a ratio
``R = n_A / n_B`` can be varied continuously (a bisection in R needs that; integer sizes would
move in steps of ``1/n_B``). For integer sizes its minimiser is that of ``ufm.solve(Problem(...,
class_sizes=sizes))`` (tests/test_imbalance.py). Same L-BFGS as ``"reduced"`` (:mod:`ufm._lbfgs`).

Measurements (numpy, shapes ``W: (d, K)``, ``Hbar: (d, K)`` class means, ``b: (K,)``):

* :func:`angles` — pairwise angles between columns, computed as ``2 atan2(|u - v|, |u + v|)`` of the unit
  vectors (accurate down to 1e-16 rad, where ``arccos`` of the cosine loses half the digits).
  Minority collapse (Fang et al., PNAS 2021, Sec. "Minority collapse"; Hong & Ling, JMLR 2024) is the
  angle between minority classifiers ``w_k`` reaching 0; class means are centred at the global mean
  ``h_G = sum_k n_k hbar_k / N`` of all N samples.
* :func:`seli` / :func:`seli_distances` — the SELI geometry of Thrampoulidis et al. (NeurIPS 2022): with ``Y``
  the K x N one-hot label matrix (class-major) and ``Zhat = Y - (1/K) 1_K 1_N^T`` (the simplex-encoded labels:
  column i is ``e_{y_i} - 1/K``), SVD ``Zhat = U Lam V^T`` (rank K - 1), the limit of the CE UFM as the
  regularisation vanishes has logits ``Z ~ Zhat``, ``W^T W ~ U Lam U^T`` and ``H^T H ~ V Lam V^T``
  (each up to a positive scale). The distance of a matrix A from a target T is
  ``|| A/||A||_F - T/||T||_F ||_F`` (0 to 2). ``H^T H`` and ``Z`` are the N-sample matrices
  (``H = Hbar Y``), formed explicitly, so keep N moderate (a few thousand).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from ufm.loop import status_word
from ufm.losses import LOSS_SPECS, loss_spec
from ufm.objective import Weights
from ufm.reduction import reduced_objective, reduced_solve

#: Standard deviation of the seeded random start of :func:`solve_reduced` (as ``Problem.init_scale``).
INIT_SCALE = 0.1


@dataclass(frozen=True)
class ReducedSolution:
    """Outcome of :func:`solve_reduced`: ``W (d, K)``, class means ``Hbar (d, K)``, ``b (K,)``,
    ``objective`` = L_red, ``grad_ratio`` = ``||grad L_red|| / ||grad L_red(x_0)||`` in the variables
    ``(W, sqrt(n_k) hbar_k, b)`` (= that of the full L for integer sizes), ``iterations`` and ``status``, a word
    of :class:`ufm.loop.Status` (``"converged"``, ``"stalled"``: no decrease at this precision, ``"max_iters"``,
    ``"diverged"``, or ``"nonfinite"`` at a start that overflows): the stopping rule of :func:`ufm.solve`."""

    sizes: np.ndarray
    W: np.ndarray
    Hbar: np.ndarray
    b: np.ndarray
    objective: float
    grad_ratio: float
    iterations: int
    status: str


def _check_sizes(sizes) -> np.ndarray:
    sizes = np.asarray(sizes, dtype=np.float64)
    if sizes.ndim != 1 or sizes.size < 2 or not np.all(np.isfinite(sizes)) or np.any(sizes <= 0):
        raise ValueError(f"sizes must be K >= 2 finite positive numbers, got {sizes!r}")
    return sizes


def _loop(sizes, weights, seed, tol, *, d, K, max_iters, loss_id):
    weights = weights._replace(loss_id=loss_id)  # static: only this loss is differentiated and compiled
    key_W, key_H = jax.random.split(jax.random.key(seed))
    W0 = INIT_SCALE * jax.random.normal(key_W, (d, K), dtype=sizes.dtype)
    Hbar0 = INIT_SCALE * jax.random.normal(key_H, (d, K), dtype=sizes.dtype)
    x0 = jnp.concatenate([W0.ravel(), (Hbar0 * jnp.sqrt(sizes)).ravel(), jnp.zeros((K,), sizes.dtype)])
    value_and_grad = jax.value_and_grad(lambda x: reduced_objective(x, weights, d, K, sizes))
    g0 = jnp.linalg.norm(value_and_grad(x0)[1])
    run = reduced_solve(x0, value_and_grad, g0, tol, max_iters)  # the stopping rule of ufm.solve
    return run.state.x, run.state.value, jnp.linalg.norm(run.state.grad) / g0, run.iteration, run.status


_compiled_loop = jax.jit(_loop, static_argnames=("d", "K", "max_iters", "loss_id"))


def solve_reduced(
    sizes,
    *,
    d: int | None = None,
    lam_W: float = 5e-4,
    lam_H: float = 5e-4,
    lam_b: float = 5e-4,
    loss: str = "ce",
    delta: float = 0.0,
    seed: int = 0,
    tol: float = 1e-12,
    max_iters: int = 20_000,
    mse_kappa: float = 1.0,
    mse_beta: float = 1.0,
) -> ReducedSolution:
    """Minimise L_red for class sizes ``sizes`` (K positive reals) from a seeded random start (float64;
    needs ``jax_enable_x64``). ``loss``: ``"ce"``, ``"ls"`` (with ``delta``) or ``"mse"`` (rescaled MSE with
    ``mse_kappa``, ``mse_beta``; default 1, 1: the plain MSE)."""
    sizes = _check_sizes(sizes)
    if not (isinstance(loss, str) and loss in LOSS_SPECS and loss_spec(loss).convex_in_logits):
        exact = [name for name, spec in LOSS_SPECS.items() if spec.convex_in_logits]
        raise ValueError(
            f"loss must be {', '.join(map(repr, exact[:-1]))} or {exact[-1]!r} (where the class-mean reduction "
            f"is exact), got {loss!r}"
        )
    branch = loss_spec(loss).branch
    # jax.config's flags are dynamic attributes, absent from its type stubs
    if not jax.config.jax_enable_x64:  # type: ignore[attr-defined]
        raise ValueError("solve_reduced runs in float64: call jax.config.update('jax_enable_x64', True) first")
    K = sizes.size
    d = K if d is None else int(d)
    weights = Weights(
        *(jnp.asarray(v, jnp.float64) for v in (delta, lam_W, lam_H, lam_b, branch, 0.0, mse_kappa, mse_beta))
    )
    x, value, ratio, iterations, status = _compiled_loop(
        jnp.asarray(sizes), weights, seed, jnp.asarray(tol), d=d, K=K, max_iters=int(max_iters), loss_id=branch
    )
    x = np.asarray(x)
    W = x[: d * K].reshape(d, K)
    Hbar = x[d * K : 2 * d * K].reshape(d, K) / np.sqrt(sizes)
    ratio = float(ratio)
    status = status_word(status)
    return ReducedSolution(sizes, W, Hbar, x[2 * d * K :], float(value), ratio, int(iterations), status)


def two_group_sizes(K_A: int, K_B: int, ratio: float, n_A: float = 1.0) -> np.ndarray:
    """``K_A`` majority classes of ``n_A`` then ``K_B`` minority classes of ``n_A / ratio`` (reals)."""
    return np.concatenate([np.full(K_A, float(n_A)), np.full(K_B, float(n_A) / ratio)])


def angles(V, columns=None) -> np.ndarray:
    """Pairwise angles (radians) between the columns of ``V: (d, K)`` (or the listed ``columns``),
    as the upper triangle ``(m (m-1) / 2,)``; a zero column gives nan."""
    V = np.asarray(V, dtype=np.float64)
    V = V if columns is None else V[:, list(columns)]
    norms = np.linalg.norm(V, axis=0)
    U = V / np.where(norms > 0, norms, np.nan)
    i, j = np.triu_indices(U.shape[1], k=1)
    return 2.0 * np.arctan2(np.linalg.norm(U[:, i] - U[:, j], axis=0), np.linalg.norm(U[:, i] + U[:, j], axis=0))


def centred_means(Hbar, sizes) -> np.ndarray:
    """``hbar_k - h_G`` with ``h_G = sum_k n_k hbar_k / N`` the mean of all N samples; ``(d, K)``."""
    sizes = np.asarray(sizes, dtype=np.float64)
    return Hbar - (Hbar @ sizes / sizes.sum())[:, None]


def labels_of(sizes) -> np.ndarray:
    """Class-major labels ``(N,)`` of integer ``sizes``."""
    sizes = np.asarray(sizes)
    if not np.all(sizes == np.round(sizes)):
        raise ValueError(f"sizes must be integers to form the N-sample matrices, got {sizes!r}")
    return np.repeat(np.arange(sizes.size), sizes.astype(np.int64))


def seli(sizes) -> dict:
    """The SELI targets for integer class sizes: ``{"Z": Zhat (K, N), "WW": U Lam U^T (K, K),
    "HH": V Lam V^T (N, N)}`` from the SVD of ``Zhat = Y - (1/K) 1 1^T`` (module docstring; rank K - 1,
    the zero singular value dropped)."""
    labels = labels_of(sizes)
    K = len(sizes)
    Y = np.eye(K)[:, labels]
    Zhat = Y - 1.0 / K
    U, lam, Vt = np.linalg.svd(Zhat, full_matrices=False)
    keep = lam > 1e-10 * lam.max()
    U, lam, Vt = U[:, keep], lam[keep], Vt[keep]
    return {"Z": Zhat, "WW": (U * lam) @ U.T, "HH": (Vt.T * lam) @ Vt}


def _distance(A, T) -> float:
    return float(np.linalg.norm(A / np.linalg.norm(A) - T / np.linalg.norm(T)))


def seli_distances(W, Hbar, b, sizes, *, with_bias: bool = True) -> dict:
    """Distances (module docstring) of the logits ``Z = W^T H + b 1^T`` (``with_bias=False``: without
    ``b``), ``W^T W`` and ``H^T H`` (``H = Hbar Y``) from the SELI targets of integer ``sizes``."""
    target = seli(sizes)
    H = np.asarray(Hbar)[:, labels_of(sizes)]
    Z = np.asarray(W).T @ H + (np.asarray(b)[:, None] if with_bias else 0.0)
    return {
        "logits": _distance(Z, target["Z"]),
        "WW": _distance(W.T @ W, target["WW"]),
        "HH": _distance(H.T @ H, target["HH"]),
    }
