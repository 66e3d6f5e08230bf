"""Symbolic (sympy) derivation of the closed form from the scalar reduction.

At a collapsed simplex-ETF point with logit scale a >= 0 (class-k logits
``a (e_k - 1/K)``) and balanced W, H (Lemma C.3 of Guo et al.: the regularizer
then equals ``lam_Z ||Z||_* = lam_Z sqrt(n) (K-1) a``), the objective reduces to

    f(a) = l(a) + lam_Z sqrt(n) (K - 1) a,

``l(a)`` being the label-smoothing cross entropy at those logits. Setting
``f'(a) = 0`` gives ``a^delta`` of Theorem 4.1. Nothing here is typed in
by hand from the paper's result: the per-sample loss is built from the softmax
definition and sympy does the algebra.
"""

from __future__ import annotations

import sympy as sp

K, n, delta, lam_W, lam_H, a = sp.symbols("K n delta lambda_W lambda_H a", positive=True)
lam_Z = sp.sqrt(lam_W * lam_H)


def label_smoothing_loss_at_etf():
    """Per-sample LS loss ``l(a)`` at logits ``a (e_k - 1/K)``, built from the softmax.

    Target logit ``a (1 - 1/K)`` (soft label ``1 - delta + delta/K``) and K - 1
    non-target logits ``-a/K`` (soft label ``delta/K`` each):
    ``l = -sum_j y_j z_j + log sum_j exp(z_j)``.
    """
    z_target = a * (1 - 1 / K)
    z_other = -a / K
    y_target = 1 - delta + delta / K
    y_other = delta / K
    log_partition = sp.log(sp.exp(z_target) + (K - 1) * sp.exp(z_other))
    return -(y_target * z_target + (K - 1) * y_other * z_other) + log_partition


def scalar_objective():
    """``f(a) = l(a) + lam_Z sqrt(n) (K - 1) a`` (docs/theory.md, the scalar reduction)."""
    return label_smoothing_loss_at_etf() + lam_Z * sp.sqrt(n) * (K - 1) * a


def a_delta_expression():
    """Solve ``f'(a) = 0`` for a; returns the sympy expression of ``a^delta`` (c < 1 branch).

    The result is an expression in the symbols ``K, n, delta, lambda_W, lambda_H``
    (module attributes ``K, n, delta, lam_W, lam_H``); it equals
    ``log(K / c - K + 1)`` with ``c = sqrt(K N) lam_Z + delta``.
    """
    stationarity = sp.Eq(sp.diff(scalar_objective(), a), 0)
    solutions = sp.solve(stationarity, a)
    if len(solutions) != 1:
        raise RuntimeError(f"expected one stationary point of f, sympy found {solutions}")
    return sp.simplify(solutions[0])


def target_probability_identity_holds() -> bool:
    """Check symbolically that ``p_t = 1 - (K-1) c / K`` at the stationary point.

    ``p_t = e^a / (K - 1 + e^a)`` is evaluated at ``a = a_delta_expression()``
    and the difference with ``1 - (K-1) c / K`` simplified to zero.
    """
    a_star = a_delta_expression()
    p_t = sp.exp(a_star) / (K - 1 + sp.exp(a_star))
    c = sp.sqrt(K * n * K) * lam_Z + delta
    return sp.simplify(p_t - (1 - (K - 1) * c / K)) == 0


def a_delta_function():
    """``a_delta_expression()`` as a numpy function ``(K, n, delta, lam_W, lam_H) -> a``."""
    return sp.lambdify((K, n, delta, lam_W, lam_H), a_delta_expression(), modules="numpy")
