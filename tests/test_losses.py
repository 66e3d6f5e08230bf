"""theory.scalar_reduction and theory.prediction: the 1-D reduction for every loss.

Checked against the LS closed form, sympy derivatives, a direct numerical
minimisation of the reduced MSE problem, dense ``jax.hessian`` spectra and the
gradient of ``ufm.objective`` at the predicted minimizer (which must vanish).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
from hypothesis import assume, given
from hypothesis import strategies as st

import theory
from theory import scalar_reduction as sr
from ufm.losses import LOSS_IDS
from ufm.objective import Params, Weights, class_major_labels, loss_term, objective

# the 1-D Newton root is exact to a few ulp of a; 1e-12 relative leaves three decades
SCALAR_RTOL = 1e-12
EIGEN_RTOL = 1e-9  # float64 eigh on <= 100 x 100 blocks errs ~1e-14 relative to the largest eigenvalue


@given(K=st.integers(2, 50), n=st.integers(1, 1000), delta=st.floats(0.0, 0.9), log_lam=st.floats(-6.0, -1.0))
def test_ls_scalar_solver_reproduces_closed_form(K, n, delta, log_lam):
    lam = 10.0**log_lam
    c = K * np.sqrt(n) * lam + delta
    assume(c < 0.999 or c > 1.001)  # right at the boundary a ~ 0 and a relative error is meaningless
    a = sr.optimal_scale("ls", K, n, lam_W=lam, lam_H=lam, delta=delta).a
    expected = theory.a_delta(K, n, delta=delta, lam_W=lam, lam_H=lam)
    assert a == pytest.approx(expected, rel=SCALAR_RTOL, abs=1e-15)
    if delta == 0.0:
        assert sr.optimal_scale("ce", K, n, lam_W=lam, lam_H=lam).a == a


def _sympy_derivatives(loss, K, a_value, delta=0.0, gamma=0.0):
    """l(a), l'(a), l''(a) built from the softmax definition by sympy (independent of the closed forms)."""
    import sympy as sp  # on use: 0.2 s to import, paid by every worker at collection

    a = sp.symbols("a", positive=True)
    logits = [a * (1 - sp.Rational(1, K))] + [-a / K] * (K - 1)
    lse = sp.log(sum(sp.exp(z) for z in logits))
    log_p = [z - lse for z in logits]
    if loss == "ls":
        y = [1 - delta + delta / K] + [delta / K] * (K - 1)
        ell = -sum(yi * lp for yi, lp in zip(y, log_p, strict=True))
    else:
        ell = -((1 - sp.exp(log_p[0])) ** gamma) * log_p[0]
    return [float(sp.N(sp.diff(ell, a, k).subs(a, a_value), 30)) for k in range(3)]


@pytest.mark.parametrize(
    "loss,K,a,delta,gamma",
    [
        ("ls", 3, 0.7, 0.2, 0.0),
        ("ls", 10, 4.0, 0.0, 0.0),
        ("focal", 4, 0.3, 0.0, 2.0),
        ("focal", 10, 3.0, 0.0, 0.5),
        ("focal", 5, 6.0, 0.0, 3.0),
        ("focal", 7, 1.5, 0.0, 1.0),
    ],
)
def test_derivatives_match_sympy(loss, K, a, delta, gamma):
    got = sr.loss_derivatives(loss, K, a, delta=delta, gamma=gamma)
    want = _sympy_derivatives(loss, K, a, delta, gamma)
    for g, w in zip(got, want, strict=True):  # the closed forms avoid cancellation: agreement to a few ulp
        assert float(g) == pytest.approx(w, rel=1e-12, abs=1e-15)


def test_focal_gamma_zero_is_cross_entropy():
    for a in (0.0, 0.5, 3.0, 30.0):
        assert np.allclose(sr.loss_derivatives("focal", 6, a), sr.loss_derivatives("ce", 6, a), rtol=1e-14, atol=0)


@pytest.mark.parametrize("K,gamma,lam", [(10, 2.0, 5e-4), (100, 5.0, 5e-4), (3, 1.0, 3e-2), (50, 0.5, 1e-3)])
def test_focal_scale_is_the_global_minimizer(K, gamma, lam):
    n = 500
    opt = sr.optimal_scale("focal", K, n, lam_W=lam, lam_H=lam, gamma=gamma)
    f = lambda a: sr.loss_derivatives("focal", K, a, gamma=gamma)[0] + opt.r * a
    grid = np.linspace(0.0, 4 * max(opt.a, 1.0), 20001)
    assert f(opt.a) <= np.min(f(grid)) + 1e-15  # no grid point does better
    if opt.a > 0:
        slope = sr.loss_derivatives("focal", K, opt.a, gamma=gamma)[1] + opt.r
        assert abs(slope) <= 1e-14 * opt.r  # stationary to rounding


@pytest.mark.parametrize(
    "kappa,beta,lam_b,lam",
    [
        (1.0, 1.0, 5e-4, 5e-4),
        (3.0, 2.0, 5e-4, 5e-4),
        (0.5, 15.0, 0.0, 1e-3),
        (2.0, 1.0, 50.0, 1e-3),
        (1.0, 0.05, 1e-2, 5e-2),  # a = 0: regularization beats the target
    ],
)
def test_mse_optimum_minimises_the_reduced_problem(kappa, beta, lam_b, lam):
    K, n = 5, 20
    opt = sr.mse_optimum(K, n, lam_W=lam, lam_H=lam, lam_b=lam_b, mse_kappa=kappa, mse_beta=beta)
    F = lambda x: sr.mse_objective(K, n, *x, lam_W=lam, lam_H=lam, lam_b=lam_b, mse_kappa=kappa, mse_beta=beta)
    best = min(
        (
            scipy.optimize.minimize(F, x0, method="Nelder-Mead", options=dict(xatol=1e-12, fatol=1e-16, maxiter=40000))
            for x0 in ([1.0, 0.0, 0.0], [0.1, 0.5, -0.5], [3.0, -1.0, 1.0])
        ),
        key=lambda r: r.fun,
    )
    ours = F([opt.a, opt.s_feature, opt.s_bias])
    assert ours <= best.fun + 1e-12  # derived optimum is at least as good as a direct search
    assert opt.a + opt.s_feature + opt.s_bias == pytest.approx(best.x.sum(), abs=1e-5)
    if lam_b > 10:  # expensive bias: part of the shift moves into the features
        assert opt.s_feature != 0.0


# small shapes: dense Hessians of size <= 48
LOSS_CASES = [
    ("ce", {}),
    ("ls", dict(delta=0.3)),
    ("focal", dict(gamma=2.0)),
    ("focal", dict(gamma=0.5)),
    ("mse", dict(mse_kappa=3.0, mse_beta=2.0)),
    ("mse", dict(mse_kappa=0.5, mse_beta=1.0)),
]


def _weights(loss, lam_W, lam_H, lam_b, delta=0.0, gamma=0.0, mse_kappa=1.0, mse_beta=1.0):
    return Weights(*(jnp.float64(x) for x in (delta, lam_W, lam_H, lam_b, LOSS_IDS[loss], gamma, mse_kappa, mse_beta)))


@jax.jit
def _gradient_and_dense_blocks(W, H, b, labels, weights):
    """grad L and the dense W, H, b blocks of the loss term; weights are traced, so every loss shares
    one compilation per shape."""
    f = lambda W_, H_, b_: loss_term(Params(W_, H_, b_), labels, weights)
    grad = jax.grad(objective)(Params(W, H, b), labels, weights)
    return grad, tuple(jax.hessian(f, argnums=i)(W, H, b) for i in range(3))


@pytest.mark.parametrize("loss,params", LOSS_CASES)
@pytest.mark.parametrize("K,d", [(4, 6), (2, 3)])
def test_predicted_point_is_stationary_and_spectra_match_dense_hessian(loss, params, K, d):
    n, lam_W, lam_H, lam_b = 2, 5e-3, 2e-2, 1e-2
    pred = theory.predict(K, n, d, lam_W=lam_W, lam_H=lam_H, lam_b=lam_b, loss=loss, **params)
    assert pred.a > 0
    point = tuple(jnp.asarray(x) for x in pred.minimizer(seed=3))
    grad, dense = _gradient_and_dense_blocks(
        *point, class_major_labels(K, n), _weights(loss, lam_W, lam_H, lam_b, **params)
    )
    # stationarity of L: every gradient entry is rounding-level relative to the O(1) loss gradient
    assert max(float(jnp.max(jnp.abs(g))) for g in grad) <= 1e-12
    for name, x, block in zip("WHb", point, dense, strict=True):
        measured = np.linalg.eigvalsh(np.asarray(block).reshape(x.size, x.size))
        expected = getattr(pred.spectra, name).expanded()
        scale = np.max(np.abs(expected))
        np.testing.assert_allclose(measured, expected, rtol=EIGEN_RTOL, atol=EIGEN_RTOL * scale)


def test_ls_prediction_equals_closed_form():
    K, n, d, delta, lam = 10, 500, 12, 0.1, 5e-4
    pred = theory.predict(K, n, d, lam_W=lam, lam_H=lam, lam_b=lam, loss="ls", delta=delta)
    norms = theory.norms(K, n, delta=delta, lam_W=lam, lam_H=lam)
    p_t, p_n = theory.probabilities(K, n, delta=delta, lam_W=lam, lam_H=lam)
    assert pred.w_norm == pytest.approx(norms.w, rel=1e-13) and pred.h_norm == pytest.approx(norms.h, rel=1e-13)
    assert pred.p_t == pytest.approx(p_t, rel=1e-13) and pred.p_n == pytest.approx(p_n, rel=1e-12)
    assert pred.kappa_W == pytest.approx(K * p_t, rel=1e-12) and pred.kappa_H == pytest.approx(K * p_t, rel=1e-12)
    old = theory.hessian_spectrum(K, n, d, delta=delta, lam_W=lam, lam_H=lam)
    for block in ("W", "H", "b"):
        np.testing.assert_allclose(getattr(pred.spectra, block).values, getattr(old, block).values, rtol=1e-12)
    assert pred.mu2 == pytest.approx(K * p_t * p_n, rel=1e-12) and pred.mu1 == pytest.approx(p_n, rel=1e-12)


def test_focal_curvatures_at_the_optimum():
    """mu1 = -l'(a)/(K-1) = lam_Z sqrt(n) at the FL optimum (f'(a) = 0); mu2 = K l''/(K-1)."""
    K, n, lam, gamma = 10, 500, 5e-4, 2.0
    pred = theory.predict(K, n, K, lam_W=lam, lam_H=lam, lam_b=lam, loss="focal", gamma=gamma)
    assert pred.mu1 == pytest.approx(lam * np.sqrt(n), rel=1e-12)
    assert pred.kappa_W == pytest.approx(max(pred.mu1, pred.mu2) / min(pred.mu1, pred.mu2), rel=1e-12)


@pytest.mark.parametrize("loss", ["ce", "focal"])
def test_nonnegative_prediction_is_a_stationary_orthogonal_frame(loss):
    K, n, d, lam = 4, 3, 6, 1e-2
    gamma = 2.0 if loss == "focal" else 0.0
    pred = theory.predict(K, n, d, lam_W=lam, lam_H=lam, lam_b=lam, loss=loss, gamma=gamma, nonnegative=True)
    W, H, b = pred.minimizer(seed=1)
    assert H.min() >= 0
    means = H[:, ::n]
    gram = means.T @ means
    assert np.allclose(gram, pred.class_mean_norm**2 * np.eye(K), rtol=1e-13, atol=1e-15)
    centred = means - means.mean(axis=1, keepdims=True)
    assert np.allclose(W / np.linalg.norm(W), centred / np.linalg.norm(centred), atol=1e-14)  # w_k ∝ P_h⊥ hbar_k
    weights = _weights(loss, lam, lam, lam, gamma=gamma)
    grad = jax.grad(objective)(Params(*(jnp.asarray(x) for x in (W, H, b))), class_major_labels(K, n), weights)
    # KKT for H >= 0: zero gradient where H > 0, non-negative gradient where H = 0
    assert float(jnp.max(jnp.abs(grad.W))) <= 1e-12 and float(jnp.max(jnp.abs(grad.b))) <= 1e-12
    gH = np.asarray(grad.H)
    assert np.max(np.abs(gH[H > 0])) <= 1e-12 and gH[H == 0].min() >= -1e-12
    # free features reach a lower objective: the constraint costs sqrt(K/(K-1)) in the slope
    free = theory.predict(K, n, d, lam_W=lam, lam_H=lam, lam_b=lam, loss=loss, gamma=gamma)
    assert free.a > pred.a


def test_nonnegative_boundary_is_stricter_than_nguyen_condition():
    K, n = 4, 5
    lam = 0.15  # sqrt(K(K-1)n) lam = 1.16 >= (K-1)/K: a = 0 ; Nguyen's sqrt((K-1)n) lam = 0.58 < 1
    bounds = theory.nonnegative_boundary(K, n, lam_W=lam, lam_H=lam)
    assert bounds["delta_star_ours"] < 0 < bounds["delta_star_nguyen"]
    assert theory.predict(K, n, K, lam_W=lam, lam_H=lam, lam_b=lam, nonnegative=True).a == 0.0
    delta_star = theory.nonnegative_boundary(K, n, lam_W=1e-3, lam_H=1e-3)["delta_star_ours"]
    for delta, collapsed in ((delta_star - 1e-6, False), (delta_star + 1e-6, True)):
        assert (
            theory.predict(K, n, K, lam_W=1e-3, lam_H=1e-3, nonnegative=True, loss="ls", delta=delta).collapsed
            == collapsed
        )


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(loss="focal", gamma=-0.5), "gamma must be a real number >= 0"),
        (dict(loss="focal", gamma=float("nan")), "gamma must be finite"),
        (dict(loss="focal", delta=0.1), "delta must be 0 for loss='focal'"),
        (dict(loss="ce", delta=0.1), "delta must be 0 for loss='ce'"),
        (dict(loss="ls", gamma=1.0), "gamma must be 0 for loss='ls'"),
        (dict(loss="hinge"), "loss must be one of"),
        (dict(loss="mse", mse_kappa=0.0), "mse_kappa must be > 0"),
        (dict(loss="mse", mse_beta=-1.0), "mse_beta must be > 0"),
        (dict(loss="mse", lam_b=None), "lam_b .* is needed for loss='mse'"),
        (dict(loss="mse", nonnegative=True), "nonnegative=True is derived only"),
        (dict(loss="ls", delta=1.0), r"delta must be in \[0, 1\)"),
    ],
)
def test_bad_inputs_name_the_parameter(kwargs, match):
    kwargs = {"lam_b": 1e-3, **kwargs}
    with pytest.raises(ValueError, match=match):
        theory.predict(4, 3, 5, lam_W=1e-3, lam_H=1e-3, **kwargs)


def test_dimension_below_K_is_rejected():
    with pytest.raises(ValueError, match="d must be an integer >= K"):
        theory.predict(4, 3, 3, lam_W=1e-3, lam_H=1e-3, lam_b=1e-3, loss="focal", gamma=1.0)
