"""One argument order across ``theory``: ``K, n, d`` positional, ``delta`` and the lambdas keyword-only.

A positional call in any other order (the prediction's old ``K, n, d, lam_W, lam_H, lam_b`` with
``delta`` later, or the closed forms' ``K, n, delta, lam_W, lam_H``) must raise ``TypeError``, never
mean something else; the keyword calls give the numbers of independent formulas (sympy's a^delta from
``f'(a) = 0``, ``p_t = 1 - (K-1) c / K``); the design card's ``condition_number(K, delta, lam)`` keeps
working.
"""

import functools
import inspect
import math

import numpy as np
import pytest

import theory
import theory.memorization_dilation as tmd
import theory.minority_collapse as mc
import theory.scalar_reduction as sr
from theory import symbolic

#: positional calls that once meant a setting (or would in the order a reader may assume); each must
#: now raise TypeError. The first is the misuse that gave delta = 0 and lam_W = 0.05 without a word.
MISUSES = [
    ("predict, delta 4th", lambda: theory.predict(100, 50, 100, 0.05, 5e-4, 5e-4)),
    ("predict, old order", lambda: theory.predict(10, 50, 10, 5e-4, 5e-4, 5e-4, delta=0.1)),
    ("a_delta", lambda: theory.a_delta(10, 50, 0.1, 5e-4, 5e-4)),
    ("a_delta, lambdas first", lambda: theory.a_delta(10, 50, 5e-4, 5e-4, 0.1)),
    ("phase", lambda: theory.phase(10, 50, 0.1, 5e-4, 5e-4)),
    ("probabilities", lambda: theory.probabilities(10, 50, 0.1, 5e-4, 5e-4)),
    ("norms", lambda: theory.norms(10, 50, 0.1, 5e-4, 5e-4)),
    ("logit_matrix", lambda: theory.logit_matrix(10, 50, 0.1, 5e-4, 5e-4)),
    ("global_minimizer", lambda: theory.global_minimizer(10, 50, 10, 0.1, 5e-4, 5e-4)),
    ("hessian_spectrum", lambda: theory.hessian_spectrum(10, 50, 10, 0.1, 5e-4, 5e-4)),
    ("curvature_spectrum", lambda: theory.curvature_spectrum(10, 50, 10, 1.0, 5e-4, 5e-4, 0.1, 0.2)),
    ("nonnegative_boundary", lambda: theory.nonnegative_boundary(10, 50, 5e-4, 5e-4)),
    ("optimal_scale", lambda: theory.optimal_scale("ls", 10, 50, 5e-4, 5e-4)),
    ("mse_optimum", lambda: theory.mse_optimum(10, 50, 5e-4, 5e-4, 5e-4)),
    ("regularization_slope", lambda: sr.regularization_slope(10, 50, 5e-4, 5e-4)),
    ("loss_parameters", lambda: sr.loss_parameters("ls", 0.1, 0.0)),
    ("condition_number, n positional", lambda: theory.condition_number(10, 0.1, 5e-4, 500)),
    ("nc_configuration", lambda: theory.nc_configuration(2, 1e-3, 1e-3, 0.1)),
    ("assumption_4_2", lambda: theory.assumption_4_2(1e-3, 1e-3, 0.1, 1e-3, 1.0)),
    ("r_max", lambda: tmd.r_max(0.01, 1.0, 1.0)),
    ("collapse_margin", lambda: mc.collapse_margin(2, 2, 4.0, 0.1)),
]


@pytest.mark.parametrize("call", [call for _, call in MISUSES], ids=[name for name, _ in MISUSES])
def test_positional_misuse_raises_type_error(call):
    with pytest.raises(TypeError):
        call()


#: the parameters a public ``theory`` function may take positionally, in this order; the exceptions
#: below are the design card's shorthand calls and functions of other objects (a point, a shape)
ORDER = ("loss", "K", "n", "d")
EXCEPTIONS = {
    "condition_number": ("K", "delta", "lam"),  # the design card: condition_number(K, delta, lam)
    "minority_collapse_threshold": ("K_A", "K_B", "lam"),  # two class groups, one lam
    "loss_derivatives": ("loss", "K", "a"),  # derivatives at the point a
    "logit_curvatures": ("loss", "K", "a"),
    "random_semi_orthogonal": ("d", "K", "seed"),  # the shape (d, K) of P, as numpy orders it
    "nc_configuration": ("M",),  # Nguyen et al.'s feature dimension
    "md_law": ("config", "name"),
}


def _public_functions():
    return sorted(name for name in theory.__all__ if inspect.isfunction(getattr(theory, name)))


@pytest.mark.parametrize("name", _public_functions())
def test_positional_parameters_follow_the_one_order(name):
    parameters = inspect.signature(getattr(theory, name)).parameters.values()
    positional = tuple(p.name for p in parameters if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if name in EXCEPTIONS:
        assert positional == EXCEPTIONS[name]
    else:
        assert positional == tuple(p for p in ORDER if p in positional), positional
    assert not any(p.kind is inspect.Parameter.POSITIONAL_ONLY for p in parameters)


@functools.cache
def _sympy_a():
    """a^delta from sympy's solution of f'(a) = 0 (theory/symbolic.py), a numpy function of
    ``(K, n, delta, lam_W, lam_H)``; built once (a few seconds)."""
    return symbolic.a_delta_function()


#: settings well inside the phase boundary (c <= 0.6), where the sympy form log(num/den) and the
#: library's log1p agree to ~1e-15 relative; lam_W != lam_H so that a swap of the two would show
SETTINGS = [
    (10, 500, 0.1, 5e-4, 2e-4),
    (4, 3, 0.0, 1e-2, 3e-3),
    (7, 20, 0.3, 1e-4, 4e-4),
]


@pytest.mark.parametrize("K,n,delta,lam_W,lam_H", SETTINGS)
def test_keyword_calls_give_the_independent_values(K, n, delta, lam_W, lam_H):
    expected_a = float(_sympy_a()(K, n, delta, lam_W, lam_H))
    c = K * math.sqrt(n * lam_W * lam_H) + delta  # Theorem 4.1's c, by hand
    expected_p_t = 1.0 - (K - 1) * c / K  # Lemma: p_t at the stationary point (checked by sympy too)
    d = K + 1
    # rel 1e-12: the two a's are the same number through different roundings (log of a quotient vs
    # log1p), a few ulp apart; p_t is one subtraction away from c, exact to a few ulp as well
    assert theory.a_delta(K, n, delta=delta, lam_W=lam_W, lam_H=lam_H) == pytest.approx(expected_a, rel=1e-12)
    prediction = theory.predict(K, n, d, delta=delta, lam_W=lam_W, lam_H=lam_H, lam_b=1e-3)
    assert prediction.a == pytest.approx(expected_a, rel=1e-12)
    assert prediction.p_t == pytest.approx(expected_p_t, rel=1e-12)
    p_t, _ = theory.probabilities(K, n, delta=delta, lam_W=lam_W, lam_H=lam_H)
    assert p_t == pytest.approx(expected_p_t, rel=1e-12)
    assert theory.phase(K, n, delta=delta, lam_W=lam_W, lam_H=lam_H).c == pytest.approx(c, rel=1e-14)
    W, H, _ = theory.global_minimizer(K, n, d, delta=delta, lam_W=lam_W, lam_H=lam_H, seed=1)
    logits = W.T @ H[:, ::n]  # one sample per class: the class-mean logits a M
    assert np.allclose(logits, expected_a * (np.eye(K) - 1.0 / K), rtol=0, atol=1e-12 * expected_a)
    assert theory.condition_number(K, delta, lam_W, n=n, lam_H=lam_H) == pytest.approx(K * expected_p_t, rel=1e-12)


def test_design_card_condition_number_call_keeps_working():
    # condition_number(K, delta, lam): lam_W = lam_H = lam and n = 1 (the design card's notebook call)
    K, delta, lam = 10, 0.1, 5e-4
    expected_a = float(_sympy_a()(K, 1, delta, lam, lam))
    expected = K * math.exp(expected_a) / (K - 1 + math.exp(expected_a))  # K p_t, eq. 14 with sympy's a
    assert theory.condition_number(K, delta, lam) == pytest.approx(expected, rel=1e-12)  # a few ulp of a
