"""theory.memorization_dilation: the MD model's closed-form pieces against independent computations."""

import numpy as np
import pytest
from scipy import integrate, optimize
from scipy.special import log_softmax

import theory.memorization_dilation as tmd


def _ls_loss(W, z, k, alpha):
    """Softmax cross entropy against (1 - alpha) e_k + alpha/2 (the paper's eq. 1, N = 2), directly."""
    y = np.full(2, alpha / 2)
    y[k] += 1 - alpha
    return -y @ log_softmax(W.T @ z)


@pytest.mark.parametrize("alpha,lam_W,lam_H", [(0.0, 1e-3, 1e-3), (0.1, 1e-3, 1e-3), (0.3, 1e-2, 5e-3)])
def test_configuration_minimizes_assumption_4_2_1(alpha, lam_W, lam_H):
    """Brute force: L-BFGS-B on l(h1) + l(h2) + lam_W||W||^2 + lam_H||H||^2, H >= 0, M = 3, several starts.

    The best value matches the configuration's to 1e-9 relative (L-BFGS-B stops at ~1e-12 of the
    gradient); the configuration is a Definition 3.1 NC configuration."""
    M = 3
    config = tmd.nc_configuration(M, lam_W=lam_W, lam_H=lam_H, alpha=alpha)

    def objective(x):
        W, H = x[: 2 * M].reshape(M, 2), x[2 * M :].reshape(M, 2)
        return (
            _ls_loss(W, H[:, 0], 0, alpha)
            + _ls_loss(W, H[:, 1], 1, alpha)
            + lam_W * np.sum(W**2)
            + lam_H * np.sum(H**2)
        )

    x0 = np.concatenate([config.W.ravel(), config.H.ravel()])
    bounds = [(None, None)] * (2 * M) + [(0, None)] * (2 * M)
    rng = np.random.default_rng(0)
    best = min(
        optimize.minimize(
            objective,
            rng.uniform(0, 2, 4 * M),
            method="L-BFGS-B",
            bounds=bounds,
            options=dict(ftol=1e-15, gtol=1e-12, maxiter=5000),
        ).fun
        for _ in range(4)
    )
    assert objective(x0) == pytest.approx(best, rel=1e-9)
    assert objective(x0) <= best + 1e-12
    h1, h2 = config.H.T
    assert abs(h1 @ h2) <= 1e-15 and np.linalg.norm(h1) == pytest.approx(np.linalg.norm(h2), rel=1e-15)
    hbar = (h1 + h2) / 2
    proj = np.eye(M) - np.outer(hbar, hbar) / (hbar @ hbar)
    C = np.linalg.norm(config.W[:, 0]) / np.linalg.norm(proj @ h1)
    np.testing.assert_allclose(config.W, C * proj @ config.H, rtol=0, atol=1e-14)


@pytest.mark.parametrize("alpha", [0.0, 0.02, 0.3])
def test_margin_and_gamma_closed_forms(alpha):
    """Docstring: a = logit(1 - alpha/2 - sqrt(2 lam_W lam_H)), t_k = -a; gamma = sqrt(a_CE/a_LS) > 1 even when
    alpha0 <= 4 sqrt(lam_W lam_H) (paper's sufficient condition)."""
    lam_W, lam_H = 4e-3, 1e-3  # 4 sqrt(lam_W lam_H) = 0.008
    q = 1 - alpha / 2 - np.sqrt(2 * lam_W * lam_H)
    config = tmd.nc_configuration(2, lam_W=lam_W, lam_H=lam_H, alpha=alpha)
    assert config.a == pytest.approx(np.log(q / (1 - q)), rel=1e-12)
    np.testing.assert_allclose(config.margins(), [-config.a, -config.a], rtol=1e-14)
    if alpha > 0:
        a_ce = tmd.nc_configuration(2, lam_W=lam_W, lam_H=lam_H, alpha=0.0).a
        gamma = tmd.gamma_ratio(lam_W=lam_W, lam_H=lam_H, alpha0=alpha)
        assert gamma == pytest.approx(np.sqrt(a_ce / config.a), rel=1e-12) and gamma > 1


@pytest.mark.parametrize("alpha", [0.0, 0.2])
@pytest.mark.parametrize("r", [0.0, 0.05, 0.7, 3.0])
def test_two_point_risk_matches_direct_evaluation(alpha, r):
    """F by the closed form in t vs the mean over the two feature vectors h_k +- r u of the softmax loss;
    dF/dr vs a central difference (step 1e-6: error ~1e-10 relative; F is even in r for a symmetric law)."""
    config = tmd.nc_configuration(3, lam_W=1e-3, lam_H=2e-3, alpha=alpha)
    lam, law, u = 2e-3, tmd.distribution("two-point"), config.direction()
    direct = sum(
        0.5
        * (_ls_loss(config.W, config.H[:, k] + s * r * u, k, alpha) + lam * np.sum((config.H[:, k] + s * r * u) ** 2))
        for k in range(2)
        for s in (1, -1)
    )
    assert tmd.dilation_risk(r, config, lam, law) == pytest.approx(direct, rel=1e-14)
    h = 1e-6
    fd = (tmd.dilation_risk(r + h, config, lam, law) - tmd.dilation_risk(r - h, config, lam, law)) / (2 * h)
    assert tmd.dilation_risk_derivative(r, config, lam, law) == pytest.approx(fd, rel=1e-8, abs=1e-10)


@pytest.mark.parametrize("r", [0.01, 1.0, 8.0])
def test_circle_risk_matches_quadrature_and_monte_carlo(r):
    """Trapezoid F vs adaptive quadrature (scipy quad, epsabs 1e-14) and vs 2e5 Monte Carlo points in feature
    space (5 standard errors); quad's own accuracy is ~1e-14 here; doubling the nodes changes nothing beyond
    rounding (exponential convergence)."""
    config = tmd.nc_configuration(4, lam_W=1e-3, lam_H=1e-3, alpha=0.1)
    lam, s, t = 1e-3, config.w_gap, config.margins()[0]
    law = tmd.distribution("circle", c_max=r * s, margin=config.a)
    value = tmd.dilation_risk(r, config, lam, law)
    loss = integrate.quad(
        lambda th: tmd.phi(t - r * s * np.cos(th), 0.1), 0, 2 * np.pi, epsabs=1e-13, epsrel=1e-13, limit=400
    )[0] / (2 * np.pi)
    exact = 2 * (loss + lam * (config.h_norm**2 + r**2))
    assert value == pytest.approx(exact, rel=1e-13)
    finer = tmd.Distribution(
        "circle",
        *(
            np.cos(th := np.linspace(0, 2 * np.pi, 2 * law.xi.size, endpoint=False)),
            np.sin(th),
            np.full(th.size, 1 / th.size),
        ),
    )
    assert tmd.dilation_risk(r, config, lam, finer) == pytest.approx(value, rel=1e-15, abs=1e-15)
    rng = np.random.default_rng(1)
    theta = rng.uniform(0, 2 * np.pi, 200_000)
    V = law.offsets(config.direction(), tmd.second_direction(config))
    u, e = config.direction(), tmd.second_direction(config)
    samples = np.zeros(theta.size)
    for k in range(2):
        Z = config.H[:, k] + r * (np.outer(np.cos(theta), u) + np.outer(np.sin(theta), e))
        y = np.full(2, 0.05)
        y[k] += 0.9
        samples += -(log_softmax(Z @ config.W, axis=1) @ y) + lam * np.sum(Z**2, axis=1)
    assert abs(samples.mean() - value) <= 5 * samples.std() / np.sqrt(theta.size)
    assert np.allclose(np.linalg.norm(V, axis=1), 1.0, rtol=0, atol=1e-15)


@pytest.mark.parametrize("c_max", [0.1, 5.0, 60.0])
def test_circle_node_count_meets_its_error_bound(c_max):
    """With circle_nodes(c_max) points the trapezoid mean of phi(t + c cos) agrees with a 4x finer rule to 1e-15."""
    t = -5.0
    N = tmd.circle_nodes(c_max, margin=5.0)

    def mean(n):
        return np.mean(tmd.phi(t + c_max * np.cos(2 * np.pi * np.arange(n) / n), 0.0))

    assert mean(N) == pytest.approx(mean(4 * N), rel=2e-15)
    assert tmd.circle_nodes(2 * c_max, margin=5.0) > N  # a wider range of c needs more nodes


@pytest.mark.parametrize("name", tmd.DISTRIBUTIONS)
@pytest.mark.parametrize("M", [2, 3, 5])
def test_laws_satisfy_assumption_4_2_2(name, M):
    """Mean zero (both 'centered' conditions), ||v|| = r (A = 1), in span(u, e) with e orthogonal to
    h_1, h_2 (M >= 3)."""
    config = tmd.nc_configuration(M, lam_W=1e-3, lam_H=1e-3, alpha=0.1)
    V, w = tmd.md_law(config, name, eta=1e-2, c_md=0.5)
    assert abs(w.sum() - 1) <= 1e-15 and np.linalg.norm(w @ V) <= 1e-15
    W, H = config.W, config.H
    assert abs(w @ (V @ (W[:, 1] - W[:, 0]))) <= 1e-14 and abs(w @ (V @ H[:, 0])) <= 1e-14
    np.testing.assert_allclose(np.linalg.norm(V, axis=1), 1.0, rtol=0, atol=1e-15)
    if name == "circle" and M >= 3:
        e = tmd.second_direction(config)
        assert np.abs(H.T @ e).max() <= 1e-15 and abs(np.linalg.norm(e) - 1) <= 1e-15


@pytest.mark.parametrize("name", tmd.DISTRIBUTIONS)
def test_clean_risk_increases_with_r(name):
    """F is strictly increasing on r >= 0 (Jensen + lam r^2): why r* <= r_max."""
    config = tmd.nc_configuration(2, lam_W=1e-3, lam_H=1e-3, alpha=0.0)
    r = np.linspace(0, 2, 201)
    F = tmd.dilation_risk(r, config, 1e-3, tmd.distribution(name, c_max=2 * config.w_gap, margin=config.a))
    assert np.all(np.diff(F) > 0)


def test_assumption_4_2_3_boundary():
    """eta_bound = (C~ (1 - 1/gamma))^2 with C~ = C_MD / (sqrt 2 ||h1^CE - h2^CE||); eta_ok flips across it."""
    lam_W, lam_H, alpha0, c_md = 1e-3, 2e-3, 0.1, 0.7
    ce = tmd.nc_configuration(2, lam_W=lam_W, lam_H=lam_H, alpha=0.0)
    check = tmd.assumption_4_2(lam_W=lam_W, lam_H=lam_H, alpha0=alpha0, eta=1e-4, c_md=c_md)
    gamma = ce.H_norm / tmd.nc_configuration(2, lam_W=lam_W, lam_H=lam_H, alpha=alpha0).H_norm
    assert check.gamma == pytest.approx(gamma, rel=1e-15)
    assert check.c_tilde == pytest.approx(c_md / (np.sqrt(2) * ce.distance), rel=1e-15)
    assert check.alpha_bound == pytest.approx(4 * np.sqrt(lam_W * lam_H), rel=1e-15) and check.alpha_ok
    bound = check.eta_bound
    assert tmd.assumption_4_2(lam_W=lam_W, lam_H=lam_H, alpha0=alpha0, eta=bound * 0.999, c_md=c_md).holds
    assert not tmd.assumption_4_2(lam_W=lam_W, lam_H=lam_H, alpha0=alpha0, eta=bound * 1.001, c_md=c_md).eta_ok
    assert not tmd.assumption_4_2(lam_W=1e-2, lam_H=1e-2, alpha0=0.03, eta=1e-6, c_md=c_md).alpha_ok  # 0.03 < 4 * 0.01
    assert tmd.r_max(eta=0.01, c_md=c_md, distance=ce.distance) == pytest.approx(
        0.01 * ce.distance**2 / c_md, rel=1e-15
    )


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_an_eta_bound_beyond_float64_is_an_error_not_inf():
    """C_MD = 1e300: (C~ (1 - 1/gamma))^2 overflows; it was returned as inf (every eta "ok") after a warning."""
    with pytest.raises(OverflowError, match="c_md"):
        tmd.assumption_4_2(lam_W=1e-3, lam_H=1e-3, alpha0=0.1, eta=1e-3, c_md=1e300)


@pytest.mark.parametrize(
    "call,name",
    [
        (lambda: tmd.nc_configuration(1, lam_W=1e-3, lam_H=1e-3, alpha=0.1), "M"),
        (lambda: tmd.nc_configuration(2, lam_W=1e-3, lam_H=1e-3, alpha=1.0), "alpha"),
        (lambda: tmd.nc_configuration(2, lam_W=1e-3, lam_H=1e-3, alpha=-0.1), "alpha"),
        (lambda: tmd.nc_configuration(2, lam_W=0.0, lam_H=1e-3, alpha=0.1), "lam_W"),
        (lambda: tmd.r_max(eta=0.0, c_md=1.0, distance=1.0), "eta"),
        (lambda: tmd.r_max(eta=-1.0, c_md=1.0, distance=1.0), "eta"),
        (lambda: tmd.r_max(eta=0.1, c_md=0.0, distance=1.0), "c_md"),
        (lambda: tmd.assumption_4_2(lam_W=1e-3, lam_H=1e-3, alpha0=0.1, eta=float("nan"), c_md=1.0), "eta"),
        (lambda: tmd.assumption_4_2(lam_W=1e-3, lam_H=1e-3, alpha0=0.1, eta=1e-3, c_md=-2.0), "c_md"),
        (lambda: tmd.assumption_4_2(lam_W=1e-3, lam_H=1e-3, alpha0=0.0, eta=1e-3, c_md=1.0), "alpha0"),
        (lambda: tmd.distribution("gaussian"), "distribution"),
        (lambda: tmd.nc_configuration(2, lam_W=0.5, lam_H=0.5, alpha=0.1), "alpha"),  # collapsed: W = H = 0
    ],
)
def test_bad_input_names_the_parameter(call, name):
    with pytest.raises(ValueError, match=name):
        call()
