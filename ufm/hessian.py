"""Blockwise Hessian spectra at a point (W, H, b), as in Theorem 4.2 of Guo et al.

Blocks: ``"W"`` (``dK x dK``, H and b fixed), ``"H"`` (``dN x dN``, W and b
fixed) and ``"b"`` (``K x K``), of the loss term phi (``regularized=False``)
or of the full objective L (``regularized=True``, which adds lam I).

Three ways to get them:

* ``dense``: ``jax.hessian`` of the block, reshaped, then ``eigh``; only when
  the block has at most ``max_dense_entries`` entries (default 1e8).
* ``structured``: exact, without the dense block. With ``S_i`` the logit
  Hessian of sample i (``vmap`` of ``jax.hessian`` of the per-sample loss):

  - H block = blockdiag_i ``(1/N) W S_i W^T``. With ``W = Q R`` (thin QR,
    ``R: (K, K)``) each block has the eigenvalues of ``(1/N) R S_i R^T`` plus
    ``d - K`` zeros (for d <= K the d x d blocks are used directly).
  - W block = ``(1/N) sum_i (h_i h_i^T) kron S_i``. With ``H = U Sigma V^T``
    truncated at rank r (singular values below ``1e-8 sigma_max`` dropped;
    they would contribute eigenvalues below ``1e-16`` of the largest), it has the
    eigenvalues of the ``rK x rK`` matrix ``(1/N) sum_i (g_i g_i^T) kron S_i``
    with ``g_i = U_r^T h_i``, plus ``(d - r) K`` zeros.
* ``lanczos``: extreme eigenvalues only, from Hessian-vector products
  (forward-over-reverse ``jax.jvp`` of ``jax.grad``) and
  ``scipy.sparse.linalg.eigsh``; memory O(size of the block).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse.linalg

from ufm.losses import per_sample_loss
from ufm.objective import Params, Weights, logits, loss_term, objective

BLOCKS = ("W", "H", "b")
MAX_DENSE_ENTRIES = 100_000_000
#: eigenvalues above this fraction of the largest count as non-zero (structural
#: zeros at a converged float64 point are ~1e-16 of the largest; the smallest
#: non-zero one of Theorem 4.2 is 1/(K p_t) > 1/K of it).
NONZERO_RTOL = 1e-8
_RANK_RTOL = 1e-8
_WHICH = ("LA", "SA", "LM", "SM", "BE")


class BlockEigenvalues(NamedTuple):
    """All eigenvalues of one block, ascending (``values``), and how they were computed."""

    values: np.ndarray
    method: str


def _block_size(params: Params, block: str) -> int:
    return {"W": params.W.size, "H": params.H.size, "b": params.b.size}[block]


def _block_function(params: Params, labels, weights: Weights, block: str, regularized: bool):
    f = objective if regularized else loss_term

    def of_block(x):
        return f(params._replace(**{block: x}), labels, weights)

    return of_block, getattr(params, block)


def _dense(params, labels, weights, block, regularized) -> np.ndarray:
    f, x = _block_function(params, labels, weights, block, regularized)
    hess = jax.jit(jax.hessian(f))(x)
    return np.linalg.eigvalsh(np.asarray(hess).reshape(x.size, x.size))


def logit_hessians(params: Params, labels, weights: Weights) -> jnp.ndarray:
    """Per-sample Hessians ``S_i`` of the loss w.r.t. the logits, shape ``(N, K, K)``.

    For cross entropy / label smoothing ``S_i = diag(p_i) - p_i p_i^T`` whatever delta.
    """
    def per_sample(z, label):
        return per_sample_loss(z[:, None], label[None], weights)[0]

    return jax.vmap(jax.hessian(per_sample), in_axes=(1, 0))(logits(params), labels)


def _structured(params, labels, weights, block, regularized) -> np.ndarray:
    d, K = params.W.shape
    N = params.H.shape[1]
    if block == "b":
        return _dense(params, labels, weights, block, regularized)
    S = logit_hessians(params, labels, weights)
    if block == "H":
        if d <= K:
            blocks = jnp.einsum("ak,ikl,bl->iab", params.W, S, params.W) / N
            per_sample, zeros = jnp.linalg.eigvalsh(blocks), 0
        else:
            _, R = jnp.linalg.qr(params.W)
            blocks = jnp.einsum("ak,ikl,bl->iab", R, S, R) / N
            per_sample, zeros = jnp.linalg.eigvalsh(blocks), N * (d - K)
        values = np.concatenate([np.asarray(per_sample).ravel(), np.zeros(zeros)])
        shift = weights.lam_H
    else:
        U, sigma, _ = jnp.linalg.svd(params.H, full_matrices=False)
        r = int(jnp.sum(sigma > _RANK_RTOL * sigma[0])) if float(sigma[0]) > 0 else 0
        G = U[:, :r].T @ params.H
        reduced = jnp.einsum("ai,bi,ikl->akbl", G, G, S).reshape(r * K, r * K) / N
        values = np.concatenate([np.asarray(jnp.linalg.eigvalsh(reduced)), np.zeros((d - r) * K)])
        shift = weights.lam_W
    values = np.sort(values)
    return values + float(shift) if regularized else values


def block_eigenvalues(params: Params, labels, weights: Weights, block: str, *, regularized: bool = False,
                      method: str = "auto", max_dense_entries: int = MAX_DENSE_ENTRIES) -> BlockEigenvalues:
    """Every eigenvalue of one Hessian block at ``params``, ascending.

    Args:
        params: the point ``(W: (d, K), H: (d, N), b: (K,))``.
        labels: ``(N,)`` integer classes. weights: delta and the lambdas.
        block: ``"W"``, ``"H"`` or ``"b"``.
        regularized: blocks of L (True) or of the loss term phi (False).
        method: ``"dense"``, ``"structured"`` or ``"auto"`` (dense when the
            block has at most ``max_dense_entries`` entries, else structured).

    Raises:
        ValueError: unknown block/method, or ``"dense"`` asked for a block
            larger than ``max_dense_entries`` (with the size, and the advice to
            use ``"structured"``).
    """
    if block not in BLOCKS:
        raise ValueError(f"block must be one of {BLOCKS}, got {block!r}")
    if method not in ("auto", "dense", "structured"):
        raise ValueError(f"method must be 'auto', 'dense' or 'structured', got {method!r}")
    max_dense_entries = positive_integer("max_dense_entries", max_dense_entries)
    entries = _block_size(params, block) ** 2
    if method == "auto":
        method = "dense" if entries <= max_dense_entries else "structured"
    if method == "dense" and entries > max_dense_entries:
        raise ValueError(f"the dense {block} block would have {entries:.3g} entries > max_dense_entries = "
                         f"{max_dense_entries:.3g}; use method='structured'")
    compute = _dense if method == "dense" else _structured
    return BlockEigenvalues(compute(params, labels, weights, block, regularized), method)


def hessian_vector_product(params: Params, labels, weights: Weights, block: str, *, regularized: bool = False):
    """``v -> (grad^2_block f) v`` on flat vectors, forward-over-reverse, jit-compiled."""
    f, x = _block_function(params, labels, weights, block, regularized)
    grad = jax.grad(f)

    @jax.jit
    def hvp(v):
        return jax.jvp(grad, (x,), (v.reshape(x.shape),))[1].ravel()

    return hvp


def extreme_eigenvalues(params: Params, labels, weights: Weights, block: str, *, regularized: bool = False,
                        k: int = 1, which: str = "LA", tol: float = 1e-12) -> np.ndarray:
    """``k`` extreme eigenvalues of a block by Lanczos (``eigsh``) on Hessian-vector products.

    ``which="LA"``: largest algebraic (e.g. the largest curvature, for a safe GD step
    ``< 2 / lambda_max``). Never forms the block; memory O(block size).
    """
    if block not in BLOCKS:
        raise ValueError(f"block must be one of {BLOCKS}, got {block!r}")
    size = _block_size(params, block)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k < size:
        raise ValueError(f"k must be an integer in [1, {size - 1}] (the {block} block has size {size}), got {k!r}")
    if which not in _WHICH:
        raise ValueError(f"which must be one of {_WHICH}, got {which!r}")
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 0.0 <= tol < 1.0:
        raise ValueError(f"tol must be a number in [0, 1), got {tol!r}")
    hvp = hessian_vector_product(params, labels, weights, block, regularized=regularized)
    dtype = np.dtype(getattr(params, block).dtype)
    operator = scipy.sparse.linalg.LinearOperator(
        (size, size), matvec=lambda v: np.asarray(hvp(jnp.asarray(v, dtype=dtype))), dtype=dtype)
    values = scipy.sparse.linalg.eigsh(operator, k=k, which=which, tol=tol, return_eigenvectors=False,
                                       v0=np.ones(size, dtype=dtype))
    return np.sort(values)


def eigenvalue_array(values) -> np.ndarray:
    """``values`` as a 1-D float64 array of finite real numbers, or a ``ValueError`` naming ``values``."""
    if isinstance(values, (str, bytes)) or values is None:
        raise ValueError(f"values must be a 1-D array of finite real numbers, got {values!r}")
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"values must be a 1-D array of finite real numbers, got {type(values).__name__}") from None
    if array.ndim != 1 or not np.all(np.isfinite(array)):
        raise ValueError(f"values must be a 1-D array of finite real numbers, got shape {array.shape}"
                         + ("" if np.all(np.isfinite(array)) else " with nan/inf"))
    return array


def positive_integer(name: str, value) -> int:
    """``value`` as an int >= 1, or a ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def _fraction(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
    return float(value)


def nonzero_condition_number(values: np.ndarray, rtol: float = NONZERO_RTOL) -> float:
    """Largest over smallest eigenvalue among those ``> rtol * max`` (NaN when none is positive)."""
    values = eigenvalue_array(values)
    rtol = _fraction("rtol", rtol)
    top = values.max() if values.size else 0.0
    if not top > 0:
        return float("nan")
    nonzero = values[values > rtol * top]
    return float(nonzero.max() / nonzero.min())


def distinct_eigenvalues(values: np.ndarray, rtol: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """Group sorted eigenvalues whose gaps are below ``rtol * max|values|``: (means, counts).

    Values below ``NONZERO_RTOL * max`` are reported as exact zeros.
    """
    values = np.sort(eigenvalue_array(values))
    rtol = _fraction("rtol", rtol)
    if values.size == 0:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    scale = np.max(np.abs(values)) if values.size else 0.0
    values = np.where(np.abs(values) <= NONZERO_RTOL * scale, 0.0, values)
    breaks = np.flatnonzero(np.diff(values) > rtol * scale) + 1
    groups = np.split(values, breaks)
    return np.array([g.mean() for g in groups]), np.array([g.size for g in groups])
