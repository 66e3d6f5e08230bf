"""ufm.md: the MD solver against brute force (generic constrained solvers), its KKT conditions, the paper's
lemmas and Theorem 4.3 inside Assumption 4.2, and the command line's contracts."""

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import optimize
from scipy.special import log_softmax, softmax

import theory.memorization_dilation as tmd
from ufm.md import main, md_profile, solve_md

ROOT = Path(__file__).resolve().parents[1]


def _setup(M=2, alpha=0.0, law="two-point", lam_W=1e-3, lam_H=1e-3, eta=1e-3, c_md=1.0):
    config = tmd.nc_configuration(M, lam_W=lam_W, lam_H=lam_H, alpha=alpha)
    V, w = tmd.md_law(config, law, eta=eta, c_md=c_md)
    return config, V, w, dict(lam=lam_H, alpha=alpha, eta=eta, c_md=c_md)


def _y(k, alpha):
    y = np.full(2, alpha / 2)
    y[k] += 1 - alpha
    return y


def _q(W, u, k, alpha, lam):
    return -_y(k, alpha) @ log_softmax(W.T @ u) + lam * u @ u


def _q_grad(W, u, k, alpha, lam):
    return W @ (softmax(W.T @ u) - _y(k, alpha)) + 2 * lam * u


def _slsqp_class(config, k, rho, alpha, lam):
    """Generic constrained solver for one class's U-problem: SLSQP, u >= 0, ||u - c|| <= rho."""
    W, c = config.W, config.H[:, 1 - k]
    res = optimize.minimize(
        lambda u: _q(W, u, k, alpha, lam),
        c.copy(),
        jac=lambda u: _q_grad(W, u, k, alpha, lam),
        method="SLSQP",
        bounds=[(0, None)] * c.size,
        constraints=[dict(type="ineq", fun=lambda u: rho**2 - (u - c) @ (u - c), jac=lambda u: -2 * (u - c))],
        options=dict(ftol=1e-16, maxiter=500),
    )
    # SLSQP may end outside the ball by ~1e-10; pull its point back to the radius (convex combination
    # with c >= 0 keeps u >= 0) so that its value is that of a feasible point
    u = res.x
    norm = np.linalg.norm(u - c)
    u = c + (u - c) * (min(1.0, rho / norm) if norm > 0 else 0.0)
    return _q(W, u, k, alpha, lam), u


def _brute_risk(config, V, w, p, r):
    """R(r) = F (direct loss evaluation at the law's feature vectors) + eta * (SLSQP U-problems)."""
    rho = p["c_md"] * r / (p["eta"] * config.distance)
    F = sum(
        w[j] * _q(config.W, config.H[:, k] + r * V[j], k, p["alpha"], p["lam"]) for k in range(2) for j in range(len(w))
    )
    G = sum(_slsqp_class(config, k, rho, p["alpha"], p["lam"])[0] for k in range(2))
    return F + p["eta"] * G


CASES = [
    dict(M=2, alpha=0.0, law="two-point"),
    dict(M=3, alpha=0.2, law="circle"),
    dict(M=3, alpha=0.1, law="two-point", eta=0.05, c_md=0.3),
]  # the last one is outside Assumption 4.2


@pytest.mark.parametrize("case", CASES)
def test_inner_problem_matches_slsqp(case):
    """G(r) and U(r) against SLSQP (its point made feasible) on 9 radii in [0, 1.2 r_max]: never above it
    (up to rounding, 1e-13), below it by at most 1e-10 relative (observed 1e-9 absolute before SLSQP's
    ~1e-10 constraint violation was removed); U to 1e-6 (a point error ~ square root of the value error)."""
    config, V, w, p = _setup(**case)
    rmax = tmd.r_max(eta=p["eta"], c_md=p["c_md"], distance=config.distance)
    r = np.linspace(0, 1.2 * rmax, 9)
    prof = md_profile(r, config.W, config.H, V, w, **p)
    for i, ri in enumerate(r):
        rho = p["c_md"] * ri / (p["eta"] * config.distance)
        brute = [_slsqp_class(config, k, rho, p["alpha"], p["lam"]) for k in range(2)]
        brute_G = brute[0][0] + brute[1][0]
        assert prof["G"][i] <= brute_G * (1 + 1e-13) and prof["G"][i] == pytest.approx(brute_G, rel=1e-10)
        np.testing.assert_allclose(prof["U"][i], np.column_stack([brute[0][1], brute[1][1]]), rtol=0, atol=1e-6)


def test_a_radius_gets_the_same_bits_in_any_batch():
    """md_profile pads its radii to a power of two (at least 16) so that few programs are compiled; each
    radius is computed on its own, so alone, among 9 others or in a grid of 128 it gets the same bits."""
    config, V, w, p = _setup(**CASES[0])
    r = np.linspace(0.0, 1.2 * tmd.r_max(eta=p["eta"], c_md=p["c_md"], distance=config.distance), 128)
    grid = md_profile(r, config.W, config.H, V, w, **p)
    for picked in ([37], [0, 5, 17, 33, 64, 80, 99, 101, 127]):
        few = md_profile(r[picked], config.W, config.H, V, w, **p)
        for key, values in few.items():
            np.testing.assert_array_equal(values, grid[key][picked], err_msg=key)  # no tolerance: same bits


@pytest.mark.parametrize("case", CASES)
def test_r_star_matches_brute_force_on_a_fine_grid(case):
    """r* vs brute force: R by SLSQP on 201 radii in [0, r_max], then golden/Brent refinement of the same
    brute-force R on the best grid cell (xatol 1e-10 r_max). Agreement 1e-6 r_max: the flat minimum of
    a function evaluated to ~1e-15 locates r only to ~sqrt(1e-15 / R'') (observed below 3e-8 r_max)."""
    config, V, w, p = _setup(**case)
    result = solve_md(config.W, config.H, V, w, **p)
    assert result.converged, result.message
    rmax = result.r_max
    r = np.linspace(0, rmax, 201)
    values = [_brute_risk(config, V, w, p, ri) for ri in r]
    i = int(np.argmin(values))
    lo, hi = r[max(i - 1, 0)], r[min(i + 1, 200)]
    refined = optimize.minimize_scalar(
        lambda x: _brute_risk(config, V, w, p, x), bounds=(lo, hi), method="bounded", options=dict(xatol=1e-10 * rmax)
    )
    assert abs(refined.x - result.r_star) <= 1e-6 * rmax
    assert result.risk <= min(values) + 1e-14 and result.risk == pytest.approx(refined.fun, rel=1e-12)
    assert result.dilation == pytest.approx(result.r_star / config.distance, rel=1e-15)


@pytest.mark.parametrize("case", CASES)
def test_joint_slsqp_finds_the_same_optimum(case):
    """The whole MD problem (u_1, u_2, r / r_max) by SLSQP from U = H: the solver's R is never above
    SLSQP's (to rounding) and r* agrees to 5e-6 r_max. Not 1e-6: R is flat in r at the optimum (its value
    changes by ~1e-16 over 1e-6 r_max) so SLSQP stops up to 1.3e-6 r_max away (measured), at a higher R."""
    config, V, w, p = _setup(**case)
    result = solve_md(config.W, config.H, V, w, **p)
    M, rmax, D = config.d, result.r_max, config.distance

    def risk(x):
        u1, u2, r = x[:M], x[M : 2 * M], x[-1] * rmax
        F = sum(
            w[j] * _q(config.W, config.H[:, k] + r * V[j], k, p["alpha"], p["lam"])
            for k in range(2)
            for j in range(len(w))
        )
        return F + p["eta"] * (_q(config.W, u1, 0, p["alpha"], p["lam"]) + _q(config.W, u2, 1, p["alpha"], p["lam"]))

    def ball(x, k):
        u, c = x[k * M : (k + 1) * M], config.H[:, 1 - k]
        return (p["c_md"] * x[-1] * rmax / (p["eta"] * D)) ** 2 - (u - c) @ (u - c)

    x0 = np.concatenate([config.H[:, 1], config.H[:, 0], [0.5]])
    res = optimize.minimize(
        risk,
        x0,
        method="SLSQP",
        bounds=[(0, None)] * (2 * M) + [(0, 1)],
        constraints=[dict(type="ineq", fun=ball, args=(k,)) for k in range(2)],
        options=dict(ftol=1e-16, maxiter=1000),
    )
    assert abs(res.x[-1] * rmax - result.r_star) <= 5e-6 * rmax
    assert result.risk <= res.fun * (1 + 1e-14) and result.risk == pytest.approx(res.fun, rel=1e-12)


@pytest.mark.parametrize("case", CASES)
def test_kkt_conditions_at_the_returned_point(case):
    """Checked here with numpy's softmax gradient (not the solver's): for each class, u >= 0, the ball
    constraint active (r* < r_max) with a multiplier mu > 0 fitted by least squares, stationarity on the
    free coordinates and the right sign on the active ones to 1e-9 of the gradient scale; outer: dR/dr at
    r* by Richardson extrapolation of central differences of the solver's R (steps 1e-3 r* and 5e-4 r*,
    error O(h^4)) vanishes to 1e-6 of |F'(r*)| (the two terms of dR/dr cancel there)."""
    config, V, w, p = _setup(**case)
    result = solve_md(config.W, config.H, V, w, **p)
    assert 0 < result.r_star < result.r_max and result.local_minima == 1
    rho = p["c_md"] * result.r_star / (p["eta"] * config.distance)
    for k in range(2):
        u, c = result.U[:, k], config.H[:, 1 - k]
        assert u.min() >= 0 and abs(np.linalg.norm(u - c) - rho) <= 1e-12 * rho
        g = _q_grad(config.W, u, k, p["alpha"], p["lam"])
        free = u > 0
        mu = -(g[free] @ (u - c)[free]) / (2 * (u - c)[free] @ (u - c)[free])
        assert mu > 0 and mu == pytest.approx(result.multipliers[k], rel=1e-8)
        station = g + 2 * mu * (u - c)
        scale = np.linalg.norm(g) + 2 * mu * rho
        assert np.linalg.norm(station[free]) <= 1e-9 * scale and np.all(station[~free] >= -1e-9 * scale)
    h = 1e-3 * result.r_star
    r = result.r_star + np.array([-h, -h / 2, 0.0, h / 2, h])
    R = md_profile(r, config.W, config.H, V, w, **p)["R"]
    slope = (4 * (R[3] - R[1]) / h - (R[4] - R[0]) / (2 * h)) / 3
    dF = tmd.dilation_risk_derivative(result.r_star, config, p["lam"], tmd.Distribution("x", *_law_parts(V, w, config)))
    assert abs(slope) <= 1e-6 * abs(dF)
    assert R[2] <= R.min() + 1e-15 * abs(R[2])


def _law_parts(V, w, config):
    """(xi, eta_perp, weights) of the offsets V in the (u, e) frame, for theory's closed-form F'."""
    u, e = config.direction(), tmd.second_direction(config)
    return V @ u, V @ e, w


def test_lemma_c1_and_dimension_invariance():
    """Lemma C.1: U(r) lies in span(h_1, h_2) on the circle ||u_1 - h_2|| = rho; so r* is the same for M = 2 and
    M = 5 (to 1e-12 relative: only rounding differs)."""
    results = {}
    for M in (2, 5):
        config, V, w, p = _setup(M=M, alpha=0.1, law="two-point")
        results[M] = solve_md(config.W, config.H, V, w, **p)
    assert results[5].r_star == pytest.approx(results[2].r_star, rel=1e-12)
    assert np.abs(results[5].U[2:]).max() == 0.0
    np.testing.assert_allclose(results[5].U[:2], results[2].U, rtol=1e-12, atol=0)


def test_remark_1_beyond_r_max():
    """r >= r_max: u_1 = h_1, u_2 = h_2 (the unconstrained minimizer) and G is constant; F keeps growing."""
    config, V, w, p = _setup(M=3, alpha=0.1)
    rmax = tmd.r_max(eta=p["eta"], c_md=p["c_md"], distance=config.distance)
    prof = md_profile(rmax * np.array([1.0, 1.5, 3.0]), config.W, config.H, V, w, **p)
    for U in prof["U"]:
        np.testing.assert_allclose(U, config.H, rtol=0, atol=1e-12)
    assert np.ptp(prof["G"]) <= 1e-14 * abs(prof["G"][0]) and np.all(np.diff(prof["F"]) > 0)


@pytest.mark.parametrize("case", CASES)
def test_profile_is_convex_with_one_minimum(case):
    """R(r) = min_U R(U, r) is convex (joint convexity): non-negative second differences on the grid, dR/dr
    increasing, one bracket; dR/dr matches a central difference of R (envelope theorem) to 1e-6."""
    config, V, w, p = _setup(**case)
    result = solve_md(config.W, config.H, V, w, **p)
    assert result.local_minima == 1 and result.convexity_defect >= -1e-12
    r = np.linspace(0.05, 0.95, 5) * result.r_max
    h = 1e-5 * result.r_max
    prof = md_profile(np.concatenate([r - h, r, r + h]), config.W, config.H, V, w, **p)
    R = prof["R"].reshape(3, -1)
    fd = (R[2] - R[0]) / (2 * h)
    np.testing.assert_allclose(prof["dR"][5:10], fd, rtol=1e-6, atol=1e-6 * np.abs(fd).max())
    assert np.all(np.diff(prof["dR"][5:10]) > 0)


@pytest.mark.parametrize(
    "kwargs,name",
    [
        (dict(eta=0.0), "eta"),
        (dict(eta=-1e-3), "eta"),
        (dict(eta=float("nan")), "eta"),
        (dict(c_md=0.0), "c_md"),
        (dict(c_md=-1.0), "c_md"),
        (dict(alpha=1.0), "alpha"),
        (dict(alpha=-0.1), "alpha"),
        (dict(lam=0.0), "lam"),
        (dict(grid=3), "grid"),
    ],
)
def test_bad_input_names_the_parameter(kwargs, name):
    config, V, w, p = _setup()
    p.update(kwargs)
    grid = p.pop("grid", 128)
    with pytest.raises(ValueError, match=name):
        solve_md(config.W, config.H, V, w, grid=grid, **p)


def test_bad_arrays_are_refused():
    """M < 2, negative H, and offsets that are not centred (Assumption 4.2.2) are ValueErrors naming the array."""
    config, V, w, p = _setup(M=2)
    with pytest.raises(ValueError, match="M >= 2"):
        solve_md(config.W[:1], config.H[:1], V[:, :1], w, **p)
    with pytest.raises(ValueError, match="H must be entrywise"):
        solve_md(config.W, -config.H, V, w, **p)
    with pytest.raises(ValueError, match="mean zero"):
        solve_md(config.W, config.H, V + 0.1, w, **p)


def test_theorem_4_3_on_a_grid_inside_assumption_4_2():
    """Theorem 4.3 (r*_CE/||h1-h2||_CE > r*_LS/||h1-h2||_LS) on 24 settings, all inside Assumption 4.2.3:
    lam in {1e-3, 1e-2}, alpha0 in {0.05, 0.2}, C_MD in {0.5, 2}, eta in {0.1, 0.5, 0.9} x the eta bound."""
    checked = 0
    for lam in (1e-3, 1e-2):
        for alpha0 in (0.05, 0.2):
            for c_md in (0.5, 2.0):
                bound = tmd.assumption_4_2(lam_W=lam, lam_H=lam, alpha0=alpha0, eta=1e-9, c_md=c_md).eta_bound
                for frac in (0.1, 0.5, 0.9):
                    eta = frac * bound
                    assert tmd.assumption_4_2(lam_W=lam, lam_H=lam, alpha0=alpha0, eta=eta, c_md=c_md).holds
                    dil = {}
                    for alpha in (0.0, alpha0):
                        config, V, w, p = _setup(alpha=alpha, lam_W=lam, lam_H=lam, eta=eta, c_md=c_md)
                        res = solve_md(config.W, config.H, V, w, **p)
                        assert res.converged, res.message
                        dil[alpha] = res.dilation
                    assert dil[0.0] > dil[alpha0], (lam, alpha0, c_md, eta)
                    checked += 1
    assert checked == 24


# ----------------------------------------------------------------------------- command line
def test_cli_default_run_writes_json(tmp_path, capsys):
    """Default setting (inside Assumption 4.2): exit 0, the issue's keys per loss, theorem verdict;
    byte-identical rerun."""
    out = tmp_path / "md.json"
    assert main(["--json", str(out), "--quiet", "--no-cache"]) == 0
    text = capsys.readouterr().out
    assert "inside the assumptions: True" in text and "holds" in text
    # every symbol of the report is defined in it: N is the number of samples elsewhere, not of classes
    assert "N = 2 classes" not in text and "2 classes, feature dimension M = 2" in text
    for defined in (
        "C~ = C_MD / (sqrt(2) ||h1 - h2||_CE)",
        "r_max = eta ||h1 - h2||^2 / C_MD",
        "KKT res.:",
        "dR res.:",
    ):
        assert defined in text, defined
    # the dilation and memorization columns are equal at C_MD = 1, and the report says why
    assert "with C_MD = 1 the two columns are equal" in text
    record = json.loads(out.read_text())
    for loss in ("ce", "ls"):
        for key in ("r_star", "dilation", "memorization", "gamma"):
            assert np.isfinite(record[loss][key])
        assert record[loss]["converged"] and 0 < record[loss]["r_star"] < record[loss]["r_max"]
    assert record["ce"]["gamma"] == record["ls"]["gamma"] > 1
    assert record["theorem_4_3"]["holds"] and record["assumption_4_2"]["holds"]
    again = tmp_path / "again.json"
    assert main(["--json", str(again), "--quiet", "--no-cache"]) == 0
    assert again.read_bytes() == out.read_bytes()


@pytest.mark.parametrize(
    "argv,flag",
    [
        (["--eta", "0"], "--eta"),
        (["--eta", "-1"], "--eta"),
        (["--c-md", "0"], "--c-md"),
        (["--c-md", "nan"], "--c-md"),
        (["--alpha", "1"], "--alpha"),
        (["--alpha", "-0.2"], "--alpha"),
        (["--alpha", "0"], "--alpha"),
        (["--M", "1"], "--M"),
        (["--M", "two"], "--M"),
        (["--lam-W", "0"], "--lam-W"),
        (["--grid", "2"], "--grid"),
        (["--distribution", "gauss"], "--distribution"),
        (["--alpha", "0.9", "--lam-W", "1", "--lam-H", "1"], "alpha"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(argv, flag, capsys):
    assert main(argv + ["--quiet", "--no-cache"]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith("python -m ufm.md: error:") and flag in errors[0]
    assert "Traceback" not in err


def test_cli_refuses_to_overwrite_json(tmp_path, capsys):
    out = tmp_path / "md.json"
    out.write_text("keep me")
    assert main(["--json", str(out), "--quiet", "--no-cache"]) == 2
    assert "already exists" in capsys.readouterr().err and out.read_text() == "keep me"


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["--M", "100000000"], "--M 100000000 needs"),
        (["--M", "60000"], "--M 60000 needs"),
        (["--M", "40000"], "--M 40000 needs"),
        (["--M", "1" + "0" * 21], "--M 1000000000000000000000 needs"),
        (["--M", "3000", "--distribution", "circle"], "circle's QR"),
        (["--grid", "1000000000000"], "radii (--grid)"),
    ],
)
def test_cli_refuses_sizes_that_do_not_fit_before_allocating(monkeypatch, capsys, argv, needle):
    # once: MemoryError tracebacks (71 PiB, 27 GiB, 7.3 TiB), 12 GB grown at M = 40000,
    # "Maximum allowed dimension exceeded" without the parameter
    from theory import _host
    from ufm import _memory

    monkeypatch.setattr(_host, "free_bytes", lambda: 2**27)  # 128 MiB: nothing large is allocated
    monkeypatch.setattr(_memory, "free_bytes", lambda device=None: 2**27)
    assert main([*argv, "--quiet", "--no-cache"]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err and err.count("error:") == 1


@pytest.mark.parametrize("argv", [["--eta", "1e300"], ["--c-md", "1e-300"], ["--eta", "1e-300"]])
def test_cli_underflow_and_overflow_say_undefined_never_nan(tmp_path, capsys, argv):
    # once: rows of nan and "Theorem 4.3 ... = nan: FAILS"; "not converged" with "holds"
    out = tmp_path / "md.json"
    assert main([*argv, "--json", str(out), "--quiet", "--no-cache"]) == 1
    text = capsys.readouterr().out
    assert "nan" not in text and "Theorem 4.3: undefined: the CE solve did not converge" in text
    assert "holds" not in text and "FAILS" not in text
    record = json.loads(out.read_text())
    assert record["theorem_4_3"]["holds"] is None and record["theorem_4_3"]["undefined"]


def test_cli_prints_parameters_as_given(capsys):
    assert main(["--alpha", "0.123456789012", "--quiet", "--no-cache"]) == 0
    assert "alpha0 = 0.123456789012 >" in capsys.readouterr().out
