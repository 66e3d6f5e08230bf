"""The UFM objective (Guo et al., eq. 10) and its loss term phi (Appendix E, eq. 40).

``L(W, H, b) = phi(W, H, b) + lam_W/2 ||W||_F^2 + lam_H/2 ||H||_F^2 + lam_b/2 ||b||^2``
with ``phi = (1/N) sum_i loss(W^T h_i + b, k(i))``. Shapes: ``W: (d, K)``,
``H: (d, N)``, ``b: (K,)``; labels ``(N,)`` class-major.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ufm.losses import per_sample_loss


class Params(NamedTuple):
    """Free variables of the UFM: ``W: (d, K)``, ``H: (d, N)``, ``b: (K,)``."""

    W: jnp.ndarray
    H: jnp.ndarray
    b: jnp.ndarray


#: a field of :class:`Weights`: a 0-d (possibly traced) array, or a plain number (the defaults)
Scalar = jnp.ndarray | float


class Weights(NamedTuple):
    """The scalars of the objective that may vary between runs of one shape (traced, vmappable).

    ``loss_id`` selects the loss (:data:`ufm.losses.LOSS_IDS`; default 0, label smoothing),
    ``gamma`` is the focal parameter, ``mse_kappa`` and ``mse_beta`` those of the rescaled MSE.
    The last four have defaults so that ``Weights(delta, lam_W, lam_H, lam_b)`` is label smoothing.
    """

    delta: Scalar
    lam_W: Scalar
    lam_H: Scalar
    lam_b: Scalar
    loss_id: Scalar = 0
    gamma: Scalar = 0.0
    mse_kappa: Scalar = 1.0
    mse_beta: Scalar = 1.0


def class_major_labels(K: int, n: int) -> jnp.ndarray:
    """Labels ``(N,)``: ``[0]*n + [1]*n + ... + [K-1]*n`` (class-major, docs/theory.md), JAX's default integer dtype.

    Built in numpy and copied over: the same array as ``jnp.repeat(jnp.arange(K), n)`` without compiling
    three small programs for every (K, n) (140 compilations in the test suite)."""
    return jax.device_put(np.repeat(np.arange(K), n))


def logits(params: Params) -> jnp.ndarray:
    """``Z = W^T H + b 1_N^T``, shape ``(K, N)``."""
    return params.W.T @ params.H + params.b[:, None]


def loss_term(params: Params, labels, weights: Weights) -> jnp.ndarray:
    """phi: the mean per-sample loss (selected by ``weights.loss_id``), without regularization (eq. 40)."""
    return jnp.mean(per_sample_loss(logits(params), labels, weights))


def regularization(params: Params, weights: Weights) -> jnp.ndarray:
    """``lam_W/2 ||W||^2 + lam_H/2 ||H||^2 + lam_b/2 ||b||^2``."""
    return 0.5 * (
        weights.lam_W * jnp.sum(params.W**2)
        + weights.lam_H * jnp.sum(params.H**2)
        + weights.lam_b * jnp.sum(params.b**2)
    )


def objective(params: Params, labels, weights: Weights) -> jnp.ndarray:
    """The full regularized objective L (eq. 10)."""
    return loss_term(params, labels, weights) + regularization(params, weights)
