"""The solver for every loss, with H >= 0 and with label noise, against theory.predict."""

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import theory
import ufm
from ufm.compare import compare, orthogonal_frame_metrics
from ufm.objective import objective
from ufm.problem import Problem
from ufm.solver import _project, default_method

# |grad L| <= 1e-11 |grad L(x0)| with curvature >= min(lam) = 1e-2: distance to the
# minimizer <= ~1e-9 relative; the 1e-6 leaves margin.
RTOL = 1e-6
#: the shape of the landscape experiment's quick run (K = 4, n = 5, d = 5): with history=False the same programs
SMALL = dict(K=4, n=5, d=5, lam_W=1e-2, lam_H=1e-2, lam_b=1e-2)


@pytest.mark.parametrize(
    "loss,params",
    [
        ("ce", {}),
        ("ls", dict(delta=0.2)),
        ("focal", dict(gamma=2.0)),
        ("focal", dict(gamma=0.5)),
        ("mse", dict(mse_kappa=3.0, mse_beta=2.0)),
        ("mse", dict(mse_kappa=1.0, mse_beta=1.0, lam_b=0.0)),
    ],
)
def test_solver_reaches_the_prediction_for_every_loss(loss, params):
    problem = Problem(**{**SMALL, **params, "loss": loss, "seed": 3})
    result = ufm.solve(problem, tol=1e-11, max_iters=5000, history=False)
    comparison = compare(result, rtol=RTOL)
    assert result.converged and not comparison.not_applicable
    assert comparison.ok, [(r.quantity, r.error) for r in comparison.failures]
    rows = {row.quantity: row for row in comparison.rows}
    for name in (
        "mean ||w_k||",
        "mean ||hbar_k - h_G||",
        "kappa_W (loss block)",
        "W-block eigenvalues (all, with multiplicities; largest shown)",
    ):
        assert rows[name].applies and rows[name].error <= RTOL, name


@pytest.mark.parametrize(
    "loss,params",
    [("ls", dict(delta=0.2, K=10, n=50, d=10)), ("focal", dict(gamma=2.0))],  # grouped path; per-sample path
)
def test_comparison_spectra_are_the_dense_hessians(loss, params, monkeypatch):
    """compare takes the structured path for both blocks; its spectra (and kappas) must be jax.hessian's
    eigenvalues at the solver's point, not merged: an independent computation of the same matrices."""
    import importlib

    from ufm import hessian

    compare_module = importlib.import_module("ufm.compare")  # ufm.compare is also the function's name

    problem = Problem(**{**SMALL, **params, "loss": loss, "seed": 3})
    result = ufm.solve(problem, tol=1e-11, max_iters=5000, history=False)
    asked = []
    structured = hessian.block_spectrum

    def spy(*args, **kwargs):
        asked.append((args[3], kwargs["method"], kwargs["cluster_rtol"]))
        return structured(*args, **kwargs)

    monkeypatch.setattr(hessian, "block_spectrum", spy)
    comparison = compare(result, rtol=RTOL)
    assert asked == [("W", "structured", 0.0), ("H", "structured", 0.0)]  # a W block <= 500 rows: unmerged
    for block in ("W", "H"):
        info = comparison.spectra[block]
        dense = hessian.block_eigenvalues(result.params, problem.labels(), problem.weights(), block, method="dense")
        assert info["method"] == "structured" and dense.method == "dense"
        scale = np.max(np.abs(dense.values))
        values, counts = hessian.distinct_eigenvalues(dense.values, RTOL)
        # distinct values merged at RTOL as compare merges them; float64 eigen-solvers on matrices of norm `scale`
        assert info["measured_multiplicities"] == counts.tolist(), block
        np.testing.assert_allclose(info["measured_values"], values, rtol=0, atol=1e-12 * scale)
        # eigh's errors ~1e-15 of the largest eigenvalue, the smallest non-zero one >= 1 / kappa of it (kappa < 10
        # here): kappa to ~1e-14. Merging (rtol / 10) would move the LS W block's kappa by 6e-11 here (measured)
        kappa = hessian.nonzero_condition_number(dense.values)
        assert info["condition_number"] == pytest.approx(kappa, rel=1e-12), block
    # a W block above the limit is merged within rtol / 10 (its cost: an rK x rK eigendecomposition unmerged)
    monkeypatch.setattr(compare_module, "COMPARE_UNMERGED_SIZE", result.W.size - 1)
    asked.clear()
    compare(result, rtol=RTOL)
    assert asked == [("W", "structured", RTOL / 10), ("H", "structured", 0.0)]  # H blocks: never merged


@pytest.mark.parametrize("loss,params", [("ce", {}), ("focal", dict(gamma=2.0)), ("ls", dict(delta=0.3))])
def test_nonnegative_solver_reaches_the_orthogonal_frame(loss, params):
    # d = 3K: with d close to K projected gradient sometimes stops at a dead-class KKT point
    # (test below; experiments/landscape.py measures how often)
    problem = Problem(**{**SMALL, **params, "loss": loss, "nonnegative": True, "d": 12})
    result = ufm.solve(problem, "momentum", lr=1.0, tol=1e-10, max_iters=20_000)
    comparison = compare(result, rtol=RTOL, spectra=False)
    assert result.converged and comparison.ok, [(r.quantity, r.error) for r in comparison.failures]
    assert result.H.min() >= 0.0
    # the metrics that tell the frame from an ETF: unconstrained solutions are far from an orthogonal frame
    free = ufm.solve(Problem(**{**SMALL, **params, "loss": loss, "d": 12}), tol=1e-11, max_iters=5000)
    K = problem.K
    frame = orthogonal_frame_metrics(result.H, problem.labels(), K)
    etf = orthogonal_frame_metrics(free.H, problem.labels(), K)
    assert frame["frame_defect"] <= 1e-8 and frame["mean_ratio"] == pytest.approx(1 / np.sqrt(K), rel=1e-8)
    assert etf["frame_defect"] == pytest.approx(np.sqrt(2 - 2 * np.sqrt((K - 1) / K)), rel=1e-6)
    assert etf["mean_ratio"] <= 1e-8 and etf["min_H"] < 0


def test_nonnegative_with_d_equal_K_can_stop_at_a_dead_class():
    """A spurious KKT point of the H >= 0 problem: one class's features all 0, the others an orthogonal frame."""
    problem = Problem(K=4, n=3, d=4, lam_W=1e-2, lam_H=1e-2, lam_b=1e-2, nonnegative=True, seed=0)
    result = ufm.solve(problem, "momentum", lr=1.0, tol=1e-10, max_iters=20_000)
    assert result.converged and not compare(result, spectra=False).ok
    W, H, b = theory.predict(4, 3, 4, lam_W=1e-2, lam_H=1e-2, lam_b=1e-2, nonnegative=True).minimizer()
    best = float(objective(ufm.Params(*(jnp.asarray(x) for x in (W, H, b))), problem.labels(), problem.weights()))
    assert result.objective > best + 1e-3  # a local, not a global, minimizer
    norms = np.linalg.norm(np.asarray(ufm.class_means(result.H, problem.labels(), 4)), axis=0)
    assert np.sum(norms <= 1e-8) == 1 and np.all(norms[norms > 1e-8] > 1.0)


def test_nonnegative_past_its_boundary_collapses_although_nguyen_condition_holds():
    # ours: sqrt(K(K-1)n) lam = 1.16 >= (K-1)/K, so a = 0; Nguyen et al.: sqrt((K-1) n) lam = 0.58 < 1
    problem = Problem(K=4, n=5, d=12, lam_W=0.15, lam_H=0.15, lam_b=0.15, nonnegative=True)
    assert theory.predict(4, 5, 12, lam_W=0.15, lam_H=0.15, lam_b=0.15, nonnegative=True).a == 0.0
    result = ufm.solve(problem, "momentum", lr=1.0, tol=1e-10, max_iters=20_000)
    assert result.converged and np.max(np.abs(result.H)) <= 1e-8 and np.max(np.abs(result.W)) <= 1e-8
    assert compare(result, spectra=False).ok


@given(
    H=st.lists(st.floats(-5, 5, allow_subnormal=False), min_size=6, max_size=6),
    g=st.lists(st.floats(-5, 5, allow_subnormal=False), min_size=6, max_size=6),
)  # XLA flushes subnormals
def test_projection_keeps_H_nonnegative_and_blocks_only_outward_gradients(H, g):
    params = ufm.Params(jnp.ones((2, 2)), jnp.asarray(H).reshape(2, 3), jnp.zeros(2))
    grad = ufm.Params(jnp.ones((2, 2)), jnp.asarray(g).reshape(2, 3), jnp.ones(2))
    projected, pgrad = _project(params, grad, True)
    assert float(jnp.min(projected.H)) >= 0.0
    assert np.array_equal(np.asarray(projected.H), np.maximum(np.asarray(H).reshape(2, 3), 0.0))
    blocked = (np.asarray(projected.H) == 0) & (np.asarray(g).reshape(2, 3) > 0)
    assert np.all(np.asarray(pgrad.H)[blocked] == 0) and np.all(
        np.asarray(pgrad.H)[~blocked] == np.asarray(g).reshape(2, 3)[~blocked]
    )
    assert _project(params, grad, False) == (params, grad)


@pytest.mark.parametrize("method", ["lbfgs", "reduced"])
def test_line_search_methods_are_rejected_with_nonnegative(method):
    with pytest.raises(ValueError, match=f"method '{method}' does not support nonnegative"):
        ufm.solve(Problem(K=3, n=2, nonnegative=True), method)


@pytest.mark.parametrize(
    "kwargs,default",
    [
        (dict(loss="ls", delta=0.1), "reduced"),
        (dict(loss="mse"), "reduced"),
        (dict(loss="focal", gamma=2.0), "lbfgs"),
        (dict(label_noise=0.2), "lbfgs"),
        (dict(nonnegative=True), "momentum"),
        (dict(dtype="float32"), "lbfgs"),
    ],
)
def test_default_method_follows_what_the_reduction_covers(kwargs, default):
    """The class-mean reduction is exact only for convex losses with clean, balanced labels."""
    problem = Problem(K=3, n=2, **kwargs)
    assert default_method(problem) == default
    if problem.loss == "focal" or problem.label_noise:  # allowed, not default, in float32
        with pytest.raises(ValueError, match="method 'reduced' is exact only"):
            ufm.solve(problem, "reduced")


@given(K=st.integers(2, 6), n=st.integers(1, 30), eta=st.floats(0.0, 0.99), seed=st.integers(0, 10**6))
def test_label_noise_is_seeded_and_exact(K, n, eta, seed):
    problem = Problem(K=K, n=n, label_noise=eta, noise_seed=seed)
    clean, noisy = np.asarray(problem.true_labels()), np.asarray(problem.labels())
    changed = clean != noisy
    assert changed.sum() == round(eta * problem.N)  # exactly the requested count, every one a different class
    assert np.array_equal(changed, problem.corrupted())
    assert np.array_equal(noisy, np.asarray(Problem(K=K, n=n, label_noise=eta, noise_seed=seed).labels()))
    assert noisy.min() >= 0 and noisy.max() < K


def test_noise_seeds_differ_and_zero_noise_is_clean():
    a, b = (np.asarray(Problem(K=5, n=40, label_noise=0.3, noise_seed=s).labels()) for s in (0, 1))
    assert not np.array_equal(a, b)
    assert np.array_equal(np.asarray(Problem(K=5, n=4).labels()), np.repeat(np.arange(5), 4))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(loss="focal", gamma=-1.0), r"gamma must be in \[0, inf\)"),
        (dict(loss="ls", gamma=1.0), "gamma must be 0 for loss='ls'"),
        (dict(loss="ce", delta=0.1), "delta must be 0 for loss='ce'"),
        (dict(loss="mse", delta=0.1), "delta must be 0 for loss='mse'"),
        (dict(loss="mse", mse_kappa=0.0), r"mse_kappa must be in \(0, inf\)"),
        (dict(loss="mse", mse_beta=float("inf")), r"mse_beta must be a finite number in \(0, inf\)"),
        (dict(loss="hinge"), "loss must be one of"),
        (dict(label_noise=1.0), r"label_noise must be in \[0, 1\)"),
        (dict(label_noise=-0.1), r"label_noise must be in \[0, 1\)"),
        (dict(noise_seed=-1), "noise_seed must be an integer >= 0"),
        (dict(nonnegative=True, d=3), "nonnegative=True needs d >= K = 4"),
        (dict(nonnegative="yes"), "nonnegative must be True or False"),
    ],
)
def test_bad_problem_inputs_name_the_parameter(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Problem(**{"K": 4, "n": 2, **kwargs})


def test_label_noise_makes_the_comparison_not_applicable():
    result = ufm.solve(Problem(**SMALL, label_noise=0.25, seed=1), tol=1e-10, max_iters=3000, history=False)
    comparison = compare(result, spectra=False)
    assert any("label_noise" in reason for reason in comparison.not_applicable)
    assert not any(row.applies for row in comparison.rows) and not comparison.verified


def test_dilation_of_a_memorized_sample_is_one_and_nc1_splits_by_class():
    K, n = 3, 4
    means = 2.0 * np.eye(K)
    true = np.repeat(np.arange(K), n)
    H = means[:, true].copy()
    corrupted = np.zeros(K * n, dtype=bool)
    corrupted[0] = True
    H[:, 0] = means[:, 1]  # a class-0 sample memorized at class 1's mean
    measured = ufm.metrics.dilation(H, true, corrupted, K)
    assert measured.dilation == pytest.approx(1.0, rel=1e-14)  # all class means are equidistant
    assert float(measured.nc1_true[0]) > 0 and np.allclose(np.asarray(measured.nc1_true[1:]), 0.0)
    clean = ufm.metrics.dilation(np.random.default_rng(0).normal(size=(5, K * n)), true, np.zeros(K * n, bool), K)
    assert np.isnan(clean.dilation)
    H5 = np.random.default_rng(1).normal(size=(5, K * n))
    total = ufm.metrics.dilation(H5, true, np.zeros(K * n, bool), K).nc1_true.sum()
    assert float(total) == pytest.approx(float(ufm.nc1(jnp.asarray(H5), jnp.asarray(true), K)), rel=1e-10)
