"""Closed-form global minimizer of the UFM with cross entropy / label smoothing.

Source: Guo et al., "Cross Entropy versus Label Smoothing: A Neural Collapse
Perspective", Theorem 4.1 (eqs. 11-12), eq. 14 and Appendix B.6.

Conventions (``docs/theory.md``): K classes, n samples per class, N = nK,
feature dimension d >= K; ``W: (d, K)``, ``H: (d, N)`` in class-major order
(columns ``k*n .. (k+1)*n - 1`` are class k), ``b: (K,)``; the objective is

    L(W, H, b) = (1/N) sum_i CE(W^T h_i + b, y^delta_{k(i)})
                 + lam_W/2 ||W||_F^2 + lam_H/2 ||H||_F^2 + lam_b/2 ||b||^2,

with soft labels ``y^delta_k = (1 - delta) e_k + delta/K 1``. The closed form
depends on n, lam_W, lam_H only through the product n * lam_W * lam_H, via

    c = sqrt(K N) lam_Z + delta = K sqrt(n lam_W lam_H) + delta.

Every function here is numpy float64; ``delta`` and the lambdas may be arrays
(broadcast against each other) where the result is a scalar per setting.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from theory import validation


class Phase(NamedTuple):
    """Where a setting sits relative to the phase boundary of Theorem 4.1.

    Attributes:
        c: ``sqrt(K N) lam_Z + delta``; the minimizer is non-zero iff ``c < 1``.
        delta_star: the boundary value of delta, ``1 - sqrt(K N) lam_Z``;
            negative when the regularization alone already collapses everything.
        collapsed: ``c >= 1`` (the global minimizer is W = H = 0, b = 0).
    """

    c: float | np.ndarray
    delta_star: float | np.ndarray
    collapsed: bool | np.ndarray


class Norms(NamedTuple):
    """Predicted norms at the global minimizer (Appendix B.6).

    Attributes:
        w: mean classifier norm ``(1/K) sum_k ||w_k||``.
        h: mean centred class-mean norm ``(1/K) sum_k ||hbar_k - h_G||``.
    """

    w: float | np.ndarray
    h: float | np.ndarray


def _regularization_scale(K: int, n: int, lam_W, lam_H):
    """``sqrt(K N) lam_Z = K sqrt(n lam_W lam_H)``, checked for underflow."""
    # sqrt of each factor: n lam_W lam_H itself can overflow (or underflow) where the scale does not
    with np.errstate(over="ignore"):  # an overflow is the OverflowError below, not a warning first
        scale = (
            K
            * np.sqrt(float(n))
            * np.sqrt(np.asarray(lam_W, dtype=np.float64))
            * np.sqrt(np.asarray(lam_H, dtype=np.float64))
        )
    if not np.all(np.isfinite(scale)):
        raise OverflowError(
            "K sqrt(n lam_W lam_H) overflows float64 (n, lam_W, lam_H too large); such a "
            "setting is far beyond the phase boundary c = 1, where the minimizer is 0"
        )
    with np.errstate(divide="ignore", over="ignore"):
        too_small = ~np.isfinite(K / scale)  # then K/c - K + 1, hence e^a, overflows
    if np.any(too_small):
        raise OverflowError(
            "lam_W * lam_H is so small that K / sqrt(K N lam_W lam_H) overflows float64 "
            "and so does e^a = K/c - K + 1; use lam_W * lam_H > 1e-600 (e.g. both > 1e-300)"
        )
    return scale


def balance(n: int, *, lam_W, lam_H):
    """``(n lam_H / lam_W)^{1/4}``, the factor between ||w_k|| and ||hbar_k - h_G|| (eqs. 11-12).

    Taken as a product of fourth roots, so it is finite and non-zero for every
    positive finite lam_W, lam_H (the ratio itself may overflow).
    """
    return (
        (float(n) ** 0.25) * np.asarray(lam_H, dtype=np.float64) ** 0.25 / np.asarray(lam_W, dtype=np.float64) ** 0.25
    )


def phase(K, n, *, delta=0.0, lam_W, lam_H) -> Phase:
    """Position of a setting relative to the phase boundary ``c = 1``.

    Args:
        K: number of classes, integer >= 2.
        n: samples per class, integer >= 1.
        delta: smoothing parameter, 0 <= delta < 1 (scalar or array).
        lam_W, lam_H: regularization of W and H, > 0 (scalar or array).

    Returns:
        :class:`Phase` with ``c = K sqrt(n lam_W lam_H) + delta``,
        ``delta_star = 1 - K sqrt(n lam_W lam_H)`` and ``collapsed = c >= 1``.
    """
    K, n = validation.classes_and_samples(K, n)
    delta = validation.delta(delta)
    lam_W = validation.positive("lam_W", lam_W)
    lam_H = validation.positive("lam_H", lam_H)
    scale = _regularization_scale(K, n, lam_W, lam_H)
    c = scale + np.asarray(delta)
    delta_star = 1.0 - scale
    collapsed = c >= 1.0
    if c.ndim == 0:
        return Phase(float(c), float(delta_star), bool(collapsed))
    return Phase(c, np.broadcast_to(delta_star, c.shape).copy(), collapsed)


def _exp_a(K: int, c):
    """``e^{a^delta} = K/c - K + 1`` for c < 1 and 1 for c >= 1 (no exp overflow)."""
    c = np.asarray(c, dtype=np.float64)
    return 1.0 + K * np.maximum(1.0 - c, 0.0) / c


def a_delta(K, n, *, delta=0.0, lam_W, lam_H):
    """Scale ``a^delta`` of the optimal logit ETF (Theorem 4.1, definition above eq. 11).

    ``a^delta = log(K/c - K + 1)`` if ``c = sqrt(K N) lam_Z + delta < 1``, else 0.
    Computed as ``log1p(K (1 - c) / c)``, accurate to a few ulp also close to
    the boundary c -> 1.

    Args:
        K: number of classes, integer >= 2.
        n: samples per class, integer >= 1.
        delta: smoothing parameter, 0 <= delta < 1 (scalar or array).
        lam_W, lam_H: regularization strengths > 0 (scalar or array).

    Returns:
        float (or array broadcast over delta, lam_W, lam_H), ``>= 0``.

    Raises:
        ValueError: a parameter outside its range (the message names it).
        OverflowError: lam_W * lam_H so small that a^delta is not representable.
    """
    c = phase(K, n, delta=delta, lam_W=lam_W, lam_H=lam_H).c
    K = int(K)
    c_arr = np.asarray(c, dtype=np.float64)
    a = np.log1p(K * np.maximum(1.0 - c_arr, 0.0) / c_arr)  # exactly 0 for c >= 1
    return float(a) if a.ndim == 0 else a


def probabilities(K, n, *, delta=0.0, lam_W, lam_H):
    """Predicted softmax probabilities at the global minimizer (eq. 14).

    ``p_t = e^a / (K - 1 + e^a)`` (target class) and ``p_n = 1 / (K - 1 + e^a)``
    (each non-target class), with ``a = a^delta``. For c >= 1 both are 1/K.

    Returns:
        ``(p_t, p_n)``, floats or arrays; ``p_t + (K - 1) p_n = 1``.
    """
    c = phase(K, n, delta=delta, lam_W=lam_W, lam_H=lam_H).c
    K = int(K)
    e_a = _exp_a(K, c)
    p_t = e_a / (K - 1.0 + e_a)
    p_n = 1.0 / (K - 1.0 + e_a)
    if p_t.ndim == 0:
        return float(p_t), float(p_n)
    return p_t, p_n


def norms(K, n, *, delta=0.0, lam_W, lam_H) -> Norms:
    """Predicted mean norms of ``w_k`` and of ``hbar_k - h_G`` (Appendix B.6).

    ``mean ||w_k|| = sqrt((K-1) a / K) (n lam_H / lam_W)^{1/4}`` and
    ``mean ||hbar_k - h_G|| = sqrt((K-1) a / K) (n lam_H / lam_W)^{-1/4}``.
    At the minimizer every ``w_k`` (and every centred class mean) has this norm.
    """
    a = np.asarray(a_delta(K, n, delta=delta, lam_W=lam_W, lam_H=lam_H))
    K, n = int(K), int(n)
    ratio = balance(n, lam_W=lam_W, lam_H=lam_H)
    base = np.sqrt((K - 1) * a / K)
    w, h = base * ratio, base / ratio
    if w.ndim == 0:
        return Norms(float(w), float(h))
    return Norms(w, h)


def simplex_projector(K) -> np.ndarray:
    """``M = I_K - 1 1^T / K``, shape ``(K, K)``: the centring projector of Theorem 4.1."""
    K = validation.integer("K", K, 2, float64=True)
    validation.allocation("the K x K simplex projector", 2.0 * K * K, f"K = {K}")
    return np.eye(K) - np.full((K, K), 1.0 / K)


def label_matrix(K, n) -> np.ndarray:
    """Hard labels ``Y = [e_1 1_n^T, ..., e_K 1_n^T]``, shape ``(K, N)``, class-major."""
    K, n = validation.classes_and_samples(K, n)
    validation.allocation("the K x nK label matrix", float(K) * K * (n + 1), f"K = {K}, n = {n}")
    return np.repeat(np.eye(K), n, axis=1)


def logit_matrix(K, n, *, delta=0.0, lam_W, lam_H) -> np.ndarray:
    """Predicted class-mean logits ``Zbar = W^T Hbar = a^delta M``, shape ``(K, K)``.

    Column k holds the logits of every sample of class k (b = 0 at the optimum).
    Scalar inputs only.
    """
    a = a_delta(K, n, delta=delta, lam_W=lam_W, lam_H=lam_H)
    if np.ndim(a) != 0:
        raise ValueError("logit_matrix takes scalar delta, lam_W, lam_H (got arrays)")
    return a * simplex_projector(K)


def random_semi_orthogonal(d, K, seed=0) -> np.ndarray:
    """A random ``P: (d, K)`` with ``P^T P = I_K`` (QR of a Gaussian, signs fixed)."""
    K = validation.integer("K", K, 2, float64=True)
    d = validation.dimension(d, K)
    seed = validation.integer("seed", seed, 0, float64=True)
    validation.allocation("a random d x K semi-orthogonal matrix", 4.0 * d * K, f"d = {d}, K = {K}")
    gaussian = np.random.default_rng(seed).standard_normal((d, K))
    q, r = np.linalg.qr(gaussian)
    return q * np.where(np.diag(r) < 0, -1.0, 1.0)


def global_minimizer(K, n, d, *, delta=0.0, lam_W, lam_H, P=None, seed=0):
    """A global minimizer ``(W, H, b)`` of the UFM objective (Theorem 4.1, eqs. 11-12).

    ``W = (n lam_H / lam_W)^{1/4} sqrt(a) P M``,
    ``H = (lam_W / (n lam_H))^{1/4} sqrt(a) P M Y``, ``b = 0``,
    with ``M = I_K - 1 1^T / K`` and ``Y`` the class-major label matrix.
    Every global minimizer has this form for some semi-orthogonal ``P``
    (valid for d >= K, balanced classes, and any lam_b > 0, which plays no role).

    Args:
        K: classes (>= 2); n: samples per class (>= 1); d: feature dimension (>= K).
        delta: 0 <= delta < 1; lam_W, lam_H: > 0 (scalars).
        P: optional ``(d, K)`` matrix with ``P^T P = I_K``; random (from ``seed``) if None.
        seed: non-negative integer seed used only when P is None.

    Returns:
        ``W: (d, K)``, ``H: (d, N)`` with ``N = n K``, ``b: (K,)``, float64.
        For c >= 1 all three are zero.
    """
    K, n = validation.classes_and_samples(K, n)
    d = validation.dimension(d, K)
    a = a_delta(K, n, delta=delta, lam_W=lam_W, lam_H=lam_H)
    if np.ndim(a) != 0:
        raise ValueError("global_minimizer takes scalar delta, lam_W, lam_H (got arrays)")
    validation.allocation(
        "the global minimizer (W, H)", float(d) * K * (n + 4) + float(K) * K * (n + 1), f"K = {K}, n = {n}, d = {d}"
    )
    P = random_semi_orthogonal(d, K, seed) if P is None else validation.semi_orthogonal(P, d, K)
    ratio = float(balance(n, lam_W=lam_W, lam_H=lam_H))
    ETF = np.sqrt(a) * (P @ simplex_projector(K))
    W = ratio * ETF
    H = (ETF / ratio) @ label_matrix(K, n)
    return W, H, np.zeros(K)
