"""theory.closed_form against independent computations.

Gradients come from ``jax.grad`` of ``ufm.objective`` (float64), i.e. from the
definition of the objective, not from the closed form.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import theory
from theory import symbolic
from ufm.objective import Params, Weights, class_major_labels, objective


@jax.jit
def _objective_and_gradient(params, labels, weights):
    """``ufm.objective`` and its ``jax.grad`` as one compiled program per shape (eagerly each operation
    compiles on its own); the loss id is fixed to 0 (CE / label smoothing), so only that branch is traced."""
    return jax.value_and_grad(objective)(params, labels, weights._replace(loss_id=0))


def _class_means(H, K, n):
    return H.reshape(H.shape[0], K, n).mean(axis=2)


@st.composite
def settings_below_boundary(draw):
    K = draw(st.integers(2, 12))
    n = draw(st.integers(1, 60))
    d = K + draw(st.integers(0, 4))
    delta = draw(st.floats(0.0, 0.95))
    lam_W = 10 ** draw(st.floats(-6.0, -1.0))
    lam_H = 10 ** draw(st.floats(-6.0, -1.0))
    c = K * np.sqrt(n * lam_W * lam_H) + delta
    assume(c < 0.999)
    return K, n, d, delta, lam_W, lam_H


GRADIENT_CASES = [
    (K, d, delta, lam_W, lam_H)
    for K in (3, 4, 5, 10)
    for d in (K, K + 3)
    for delta, lam_W, lam_H in ((0.0, 1e-2, 1e-2), (0.1, 5e-3, 2e-2), (0.4, 1e-3, 1e-2))
]


@pytest.mark.parametrize("K,d,delta,lam_W,lam_H", GRADIENT_CASES)
def test_gradient_vanishes_at_global_minimizer(K, d, delta, lam_W, lam_H):
    n, lam_b = 3, 1e-2
    W, H, b = theory.global_minimizer(K, n, d, delta=delta, lam_W=lam_W, lam_H=lam_H, seed=K + d)
    weights = Weights(*(jnp.float64(x) for x in (delta, lam_W, lam_H, lam_b)))
    _, grads = _objective_and_gradient(
        Params(jnp.asarray(W), jnp.asarray(H), jnp.asarray(b)), class_major_labels(K, n), weights
    )
    max_abs = max(float(jnp.max(jnp.abs(g))) for g in grads)
    # float64 rounding of an O(1) objective: the gradient is ~1e-16; 1e-10 is the bound.
    assert max_abs <= 1e-10


@pytest.mark.parametrize("K,d,delta", [(4, 6, 0.1), (10, 10, 0.0)])
def test_minimizer_beats_perturbations(K, d, delta):
    """A second-order check: random perturbations never decrease the objective."""
    n, lam_W, lam_H, lam_b = 2, 1e-2, 1e-2, 1e-2
    W, H, b = theory.global_minimizer(K, n, d, delta=delta, lam_W=lam_W, lam_H=lam_H, seed=1)
    weights = Weights(*(jnp.float64(x) for x in (delta, lam_W, lam_H, lam_b)))
    labels = class_major_labels(K, n)
    best = float(_objective_and_gradient(Params(jnp.asarray(W), jnp.asarray(H), jnp.asarray(b)), labels, weights)[0])
    rng = np.random.default_rng(0)
    for _ in range(20):
        dW, dH, db = (1e-3 * rng.standard_normal(x.shape) for x in (W, H, b))
        perturbed = Params(jnp.asarray(W + dW), jnp.asarray(H + dH), jnp.asarray(b + db))
        value = float(_objective_and_gradient(perturbed, labels, weights)[0])
        assert value > best


@given(settings_below_boundary())
def test_probabilities_sum_to_one(setting):
    K, n, _, delta, lam_W, lam_H = setting
    p_t, p_n = theory.probabilities(K, n, delta=delta, lam_W=lam_W, lam_H=lam_H)
    assert p_t + (K - 1) * p_n == pytest.approx(1.0, rel=1e-13)  # a few ulp of rounding


@given(settings_below_boundary())
def test_target_probability_is_linear_in_c(setting):
    K, n, _, delta, lam_W, lam_H = setting
    p_t, _ = theory.probabilities(K, n, delta=delta, lam_W=lam_W, lam_H=lam_H)
    c = theory.phase(K, n, delta=delta, lam_W=lam_W, lam_H=lam_H).c
    # eq. 14 evaluated through e^a vs the stationarity identity; both O(1), 1e-12 covers rounding.
    assert p_t == pytest.approx(1.0 - (K - 1) * c / K, rel=1e-12, abs=1e-14)


@given(settings_below_boundary(), st.floats(1e-4, 0.5))
def test_condition_number_decreases_strictly_in_delta(setting, gap):
    K, n, _, delta, lam_W, lam_H = setting
    assume(K >= 3)  # for K = 2 kappa is identically 1 (one non-zero eigenvalue per block)
    delta_star = theory.phase(K, n, delta=delta, lam_W=lam_W, lam_H=lam_H).delta_star
    assume(delta + gap < delta_star)
    low = theory.condition_number(K, delta, lam_W, n=n, lam_H=lam_H)
    high = theory.condition_number(K, delta + gap, lam_W, n=n, lam_H=lam_H)
    assert 1.0 <= high < low < K


@given(settings_below_boundary(), st.integers(0, 2**31 - 1))
def test_minimizer_logits_are_scaled_simplex(setting, seed):
    K, n, d, delta, lam_W, lam_H = setting
    W, H, b = theory.global_minimizer(K, n, d, delta=delta, lam_W=lam_W, lam_H=lam_H, seed=seed)
    a = theory.a_delta(K, n, delta=delta, lam_W=lam_W, lam_H=lam_H)
    Zbar = W.T @ _class_means(H, K, n)
    M = np.eye(K) - 1.0 / K
    assert np.max(np.abs(Zbar - a * M)) <= 1e-12 * max(a, 1.0)  # products of O(sqrt(a)) numbers
    assert np.array_equal(b, np.zeros(K))
    # within-class variability is exactly zero: every column equals its class mean
    assert np.max(np.abs(H - np.repeat(_class_means(H, K, n), n, axis=1))) <= 1e-14 * max(a, 1.0)


@given(settings_below_boundary())
def test_norms_match_matrices(setting):
    K, n, d, delta, lam_W, lam_H = setting
    W, H, _ = theory.global_minimizer(K, n, d, delta=delta, lam_W=lam_W, lam_H=lam_H, seed=3)
    means = _class_means(H, K, n)
    centred = means - means.mean(axis=1, keepdims=True)
    predicted = theory.norms(K, n, delta=delta, lam_W=lam_W, lam_H=lam_H)
    w_norms = np.linalg.norm(W, axis=0)
    h_norms = np.linalg.norm(centred, axis=0)
    assert np.allclose(w_norms, predicted.w, rtol=1e-12, atol=0)  # every w_k has the same norm
    assert np.allclose(h_norms, predicted.h, rtol=1e-12, atol=1e-300)


@given(settings_below_boundary())
def test_symbolic_expression_evaluates_to_a_delta(setting):
    K, n, _, delta, lam_W, lam_H = setting
    expected = theory.a_delta(K, n, delta=delta, lam_W=lam_W, lam_H=lam_H)
    got = float(_symbolic_a()(K, n, delta, lam_W, lam_H))
    # The sympy form log(num/den) loses up to ~1e-13 relative near the boundary where a -> 0.
    assert got == pytest.approx(expected, rel=1e-10, abs=1e-12)


@functools.cache
def _symbolic_a():
    """sympy's a(delta) as a numeric function, built on first use (4 s: not at import, where every pytest
    worker would pay it while collecting)."""
    return symbolic.a_delta_function()


def test_symbolic_identity_for_target_probability():
    assert symbolic.target_probability_identity_holds()


def test_symbolic_stationary_point_is_minimum():
    import sympy as sp

    f = symbolic.scalar_objective()
    second = sp.diff(f, symbolic.a, 2)
    # f'' = e^a (K-1) / (e^a + K - 1)^2 > 0 for K > 1: the stationary point is the minimum.
    assert sp.simplify(second - sp.exp(symbolic.a) * (symbolic.K - 1) / (sp.exp(symbolic.a) + symbolic.K - 1) ** 2) == 0


@pytest.mark.parametrize("K,n,delta,lam", [(10, 500, 0.1, 5e-4), (3, 1, 0.5, 1e-2), (2, 100, 0.0, 1e-3)])
def test_a_delta_matches_definition(K, n, delta, lam):
    c = np.sqrt(K * n * K) * lam + delta
    assert theory.a_delta(K, n, delta=delta, lam_W=lam, lam_H=lam) == pytest.approx(np.log(K / c - K + 1), rel=1e-13)


def test_vectorised_over_delta_and_lambda():
    deltas = np.linspace(0.0, 0.9, 7)
    lams = np.array([1e-4, 1e-3])[:, None]
    grid = theory.a_delta(5, 10, delta=deltas, lam_W=lams, lam_H=lams)
    assert grid.shape == (2, 7)
    for i, lam in enumerate(lams[:, 0]):
        for j, delta in enumerate(deltas):
            assert grid[i, j] == theory.a_delta(5, 10, delta=delta, lam_W=lam, lam_H=lam)
    kappa = theory.condition_number(5, deltas, 1e-2, n=10, beyond_boundary="nan")
    assert np.all(np.isfinite(kappa[deltas < theory.phase(5, 10, delta=0.0, lam_W=1e-2, lam_H=1e-2).delta_star]))


# --- the phase boundary -------------------------------------------------------------


@pytest.mark.parametrize("K,n,delta,lam", [(10, 500, 0.9, 5e-4), (4, 100, 0.0, 0.06), (3, 1, 0.99, 1e-2)])
def test_beyond_boundary_everything_collapses(K, n, delta, lam):
    where = theory.phase(K, n, delta=delta, lam_W=lam, lam_H=lam)
    assert where.collapsed and where.c >= 1.0
    assert theory.a_delta(K, n, delta=delta, lam_W=lam, lam_H=lam) == 0.0
    W, H, b = theory.global_minimizer(K, n, K + 1, delta=delta, lam_W=lam, lam_H=lam)
    assert not W.any() and not H.any() and not b.any()
    assert theory.probabilities(K, n, delta=delta, lam_W=lam, lam_H=lam) == (1.0 / K, 1.0 / K)
    with pytest.raises(ValueError, match="phase boundary"):
        theory.condition_number(K, delta, lam, n=n)
    assert np.isnan(theory.condition_number(K, delta, lam, n=n, beyond_boundary="nan"))


def test_boundary_is_continuous():
    """a^delta -> 0 as c -> 1 from below, with no cancellation (log1p form)."""
    K, n, lam = 10, 500, 5e-4
    delta_star = theory.phase(K, n, delta=0.0, lam_W=lam, lam_H=lam).delta_star
    a = theory.a_delta(K, n, delta=delta_star - 1e-12, lam_W=lam, lam_H=lam)
    # a ~ K (1 - c) / c = 1e-11 to first order
    assert a == pytest.approx(K * 1e-12 / (1 - 1e-12), rel=1e-3)


# --- bad inputs ---------------------------------------------------------------------

BAD_INPUTS = [
    (dict(K=1), "K must be an integer >= 2"),
    (dict(K=2.5), "K must be an integer >= 2"),
    (dict(K="10"), "K must be an integer >= 2"),
    (dict(K=True), "K must be an integer >= 2"),
    (dict(n=0), "n must be an integer >= 1"),
    (dict(d=3), "d must be an integer >= K"),
    (dict(delta=1.0), r"delta must be in \[0, 1\)"),
    (dict(delta=-0.1), r"delta must be in \[0, 1\)"),
    (dict(delta=float("nan")), "delta must be finite"),
    (dict(lam_W=0.0), "lam_W must be > 0"),
    (dict(lam_H=-1e-3), "lam_H must be > 0"),
    (dict(lam_H=float("inf")), "lam_H must be finite"),
    (dict(lam_W="small"), "lam_W must be a real number"),
    (dict(P=np.ones((5, 4))), "P must be semi-orthogonal"),
    (dict(P=np.eye(4)), r"P must have shape \(d, K\) = \(5, 4\)"),
]


@pytest.mark.parametrize("override,message", BAD_INPUTS)
def test_bad_inputs_raise_named_errors(override, message):
    args = dict(K=4, n=3, d=5, delta=0.1, lam_W=1e-3, lam_H=1e-3)
    args.update(override)
    with pytest.raises(ValueError, match=message):
        theory.global_minimizer(**args)


@pytest.mark.parametrize(
    "call",
    [
        lambda: theory.a_delta(10, 5, delta=0.0, lam_W=5e-324, lam_H=5e-324),
        lambda: theory.norms(3, 1, delta=0.0, lam_W=5e-324, lam_H=1e-300),
    ],
)
def test_underflowing_regularization_is_an_overflow_error(call):
    """K / c overflows float64 (c ~ 1e-322): e^a is not representable."""
    with pytest.raises(OverflowError, match="lam_W \\* lam_H"):
        call()


@pytest.mark.parametrize(
    "K,n,delta,lam_W,lam_H", [(10, 5, 0.0, 1e-200, 1e-200), (3, 7, 0.0, 1e-300, 1e-3), (10, 5, 0.1, 1e-200, 1e-200)]
)
def test_tiny_products_of_lambdas_are_exact(K, n, delta, lam_W, lam_H):
    """n lam_W lam_H underflows float64 here, but c and a^delta do not: compare with 50-digit mpmath."""
    import mpmath

    mpmath.mp.dps = 50
    c = K * mpmath.sqrt(n * mpmath.mpf(lam_W) * mpmath.mpf(lam_H)) + mpmath.mpf(delta)
    expected = float(mpmath.log(K / c - K + 1))
    assert theory.a_delta(K, n, delta=delta, lam_W=lam_W, lam_H=lam_H) == pytest.approx(
        expected, rel=1e-14
    )  # a few ulp


def test_two_classes_condition_number_is_one():
    assert theory.condition_number(2, np.array([0.0, 0.3]), 1e-3).tolist() == [1.0, 1.0]
    assert theory.hessian_spectrum(2, 1, 2, delta=0.3, lam_W=1e-3, lam_H=1e-3).W.condition_number() == 1.0


def test_condition_number_notebook_call():
    # kappa = K p_t with p_t = 1 - (K-1) c / K, c = K lam + delta for n = 1, lam_W = lam_H = lam
    K, delta, lam = 10, 0.1, 5e-4
    assert theory.condition_number(K, delta, lam) == pytest.approx(K - (K - 1) * (K * lam + delta), rel=1e-13)
    with pytest.raises(ValueError, match="beyond_boundary"):
        theory.condition_number(K, delta, lam, beyond_boundary="ignore")
