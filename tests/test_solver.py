"""ufm.solver against theory: the solution up to rotation, kappa, the zero phase, failures."""

import jax
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import theory
import ufm
from ufm import _cli, hessian, solver
from ufm.problem import Problem
from ufm.results import Advice, describe

# With |grad L| <= 1e-11 |grad L(x0)| and curvature >= min(lam) >= 1e-3 (the regularizer),
# the distance to the minimizer manifold is <= ~1e-8 relative; 1e-6 leaves two decades.
RTOL = 1e-6


def _gram_errors(result, problem):
    W0, H0, _ = theory.global_minimizer(
        problem.K, problem.n, problem.d, delta=problem.delta, lam_W=problem.lam_W, lam_H=problem.lam_H
    )
    W, H, b = result.W, result.H, result.b
    scale = max(np.linalg.norm(W0.T @ H0), 1e-300)
    return {
        "W^T W": np.linalg.norm(W.T @ W - W0.T @ W0) / np.linalg.norm(W0.T @ W0),
        "H^T H": np.linalg.norm(H.T @ H - H0.T @ H0) / np.linalg.norm(H0.T @ H0),
        "W^T H": np.linalg.norm(W.T @ H - W0.T @ H0) / scale,
        "b": np.max(np.abs(b)),
    }


# A few shapes only (each new shape compiles the loop once, ~2 s); the continuous
# parameters (delta, lambdas, seed) are free.
SHAPES = [(2, 3, 2), (3, 4, 5), (4, 2, 4), (5, 3, 6)]


@st.composite
def problems(draw, below_boundary=True):
    K, n, d = draw(st.sampled_from(SHAPES))
    seed = draw(st.integers(0, 1000))
    if below_boundary:
        delta = draw(st.floats(0.0, 0.8))
        lam_W = 10 ** draw(st.floats(-3.0, -1.0))
        lam_H = 10 ** draw(st.floats(-3.0, -1.0))
        assume(K * np.sqrt(n * lam_W * lam_H) + delta < 0.95)
    else:
        # pick c in [1.05, 2] and delta, then lam_W = lam_H = (c - delta) / (K sqrt(n))
        c = draw(st.floats(1.05, 2.0))
        delta = draw(st.floats(0.0, 0.95))
        lam_W = lam_H = (c - delta) / (K * np.sqrt(n))
    return Problem(K=K, n=n, d=d, delta=delta, lam_W=lam_W, lam_H=lam_H, lam_b=1e-2, seed=seed)


@settings(max_examples=12)
@given(problems())
def test_solution_matches_closed_form_up_to_rotation(problem):
    result = ufm.solve(problem, tol=1e-11, max_iters=5000)
    assert result.converged, result.message
    for name, error in _gram_errors(result, problem).items():
        assert error <= RTOL, name
    norms = theory.norms(problem.K, problem.n, delta=problem.delta, lam_W=problem.lam_W, lam_H=problem.lam_H)
    nc = ufm.collapse(result.W, result.H, problem.labels(), problem.K)
    assert float(nc.w_norm) == pytest.approx(norms.w, rel=RTOL)
    assert float(nc.h_norm) == pytest.approx(norms.h, rel=RTOL)
    kappa = theory.condition_number(problem.K, problem.delta, problem.lam_W, n=problem.n, lam_H=problem.lam_H)
    for block in ("W", "H"):
        values = ufm.block_eigenvalues(result.params, problem.labels(), problem.weights(), block).values
        # eigenvalues move by O(||x - x*||) ~ 1e-8 relative
        assert hessian.nonzero_condition_number(values) == pytest.approx(kappa, rel=RTOL)


@settings(max_examples=6)
@given(problems(below_boundary=False))
def test_beyond_boundary_solver_goes_to_zero(problem):
    result = ufm.solve(problem, tol=1e-11, max_iters=5000)
    assert result.converged, result.message
    # zero is the minimizer; |x| <= |grad| / (curvature ~ (c - 1)-ish) is far below 1e-6 here
    assert np.max(np.abs(result.W)) <= 1e-6 and np.max(np.abs(result.H)) <= 1e-6
    assert np.max(np.abs(result.b)) <= 1e-6


@pytest.mark.parametrize(
    "method,lr", [("gd", 2.0), ("momentum", 0.2), ("nesterov", 0.2), ("lbfgs", None), ("reduced", None)]
)
def test_every_method_reaches_the_same_minimizer(method, lr):
    problem = Problem(K=4, n=5, d=5, delta=0.1, lam_W=1e-2, lam_H=1e-2, lam_b=1e-2, seed=3)
    # no history: the same programs as the command line's and the landscape experiment's (one compile fewer)
    result = ufm.solve(problem, method, lr=lr, tol=1e-10, max_iters=100_000, history=False)
    assert result.converged, result.message
    for name, error in _gram_errors(result, problem).items():
        assert error <= RTOL, (method, name)


def test_history_is_recorded_and_ends_at_the_result():
    problem = Problem(K=3, n=4, delta=0.2, lam_W=1e-2, lam_H=1e-2)
    result = ufm.solve(problem, "gd", lr=2.0, tol=1e-8, max_iters=50_000, record_every=50)
    it = result.history["iteration"]
    assert it[0] == 0 and it[-1] == result.iterations and np.all(np.diff(it) > 0)
    assert result.history["grad_norm"][-1] == pytest.approx(result.grad_norm, rel=1e-12)
    assert result.history["objective"][-1] == pytest.approx(result.objective, rel=1e-12)
    # GD with a stable step decreases the objective monotonically
    assert np.all(np.diff(result.history["objective"]) <= 1e-15)
    assert result.history["nc1"][-1] < 1e-10 < result.history["nc1"][0]


def test_divergence_is_reported_not_raised():
    problem = Problem(K=4, n=10, delta=0.0, lam_W=1e-3, lam_H=1e-3, init_scale=1.0)
    result = ufm.solve(problem, "gd", lr=1e5, max_iters=1000, history=False)  # one program for both runs
    assert result.status == "diverged" and not result.converged
    assert "diverged at iteration" in result.message and "locally stable only for lr <" in result.message
    assert np.all(np.isfinite(result.W)) and np.all(np.isfinite(result.H))
    # the suggested step 1 / lambda_max (joint Hessian at the start and the last finite point) is reported ...
    assert f"try lr={result.suggested_lr:.3g}" in result.message and result.advice == (
        Advice("lr", result.suggested_lr),
    )
    # ... the command lines name their flag instead of the keyword, the rest of the sentence unchanged
    assert describe(result, _cli.flag) == result.message.replace("try lr=", "try --lr ")
    # ... and works: the same run with it converges
    retry = ufm.solve(problem, "gd", lr=result.suggested_lr, max_iters=200_000, tol=1e-8, history=False)
    assert retry.converged, retry.message


def test_max_iters_is_reported():
    result = ufm.solve(Problem(K=3, n=2), "gd", lr=1.0, max_iters=3)
    assert result.status == "max_iters" and result.iterations == 3
    assert "stopped at max_iters = 3" in result.message and "raise max_iters or use method='lbfgs'" in result.message
    assert result.advice == (Advice("max_iters"), Advice("method", "lbfgs"))
    assert "raise --max-iters or use --method lbfgs" in describe(result, _cli.flag)


def test_a_tolerance_below_rounding_stalls_with_advice():
    # lam = 1e-8: the b direction has curvature ~1e-8, and |grad| stops falling near 1e-13 |grad_0|
    # (observed: the line search of "reduced" fails twice at iteration 226 and stops)
    problem = Problem(K=10, n=50, lam_W=1e-8, lam_H=1e-8, lam_b=1e-8)
    result = ufm.solve(problem, "reduced", tol=1e-14, max_iters=5000)
    assert result.status == "stalled", result.message  # the premise: this tolerance is below rounding
    assert result.grad_norm > 1e-14 * result.initial_grad_norm
    assert "raise tol" in result.message and result.iterations < 5000 and result.advice == (Advice("tol"),)
    assert np.all(np.isfinite(result.W)) and np.isfinite(result.objective)


def test_a_tolerance_at_rounding_level_points_to_tol():
    # tol 1e-16: |grad| stops falling near 5e-15 |grad_0|; either way the advice names tol
    result = ufm.solve(Problem(K=4, n=5, delta=0.1), "reduced", tol=1e-16, max_iters=400)
    assert result.status in ("max_iters", "stalled"), result.message
    assert Advice("tol") in result.advice and "--tol" in describe(result, _cli.flag)


def test_float32_path_reaches_its_documented_accuracy():
    problem = Problem(K=10, n=500, delta=0.1, dtype="float32")
    result = ufm.solve(problem, tol=1e-5, max_iters=2000, history=False)  # the command line's program
    assert result.W.dtype == np.float32
    norms = theory.norms(10, 500, delta=0.1, lam_W=5e-4, lam_H=5e-4)
    nc = ufm.collapse(result.W.astype(np.float64), result.H.astype(np.float64), problem.labels(), 10)
    # float32 carries ~6e-8 relative; the documented accuracy of this path is 1e-5 on norms
    assert float(nc.w_norm) == pytest.approx(norms.w, rel=1e-5)
    assert float(nc.h_norm) == pytest.approx(norms.h, rel=1e-5)


def test_float64_without_x64_fails_loudly():
    jax.config.update("jax_enable_x64", False)
    try:
        with pytest.raises(ValueError, match="jax_enable_x64"):
            ufm.solve(Problem(K=3, n=2))
    finally:
        jax.config.update("jax_enable_x64", True)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(method="adam"), "method must be one of"),
        (dict(tol=0.0), "tol must be in"),
        (dict(max_iters=0), r"max_iters must be an integer in \[1, "),
        (dict(method="gd", lr=-1.0), "lr must be a finite number > 0"),
        (dict(record_every=0), r"record_every must be an integer in \[1, "),
    ],
)
def test_bad_solver_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ufm.solve(Problem(K=3, n=2), **kwargs)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(K=1), "K must be an integer >= 2"),
        (dict(n=0), "n must be an integer >= 1"),
        (dict(d=0), "d must be an integer >= 1"),
        (dict(delta=1.0), r"delta must be in \[0, 1\)"),
        (dict(lam_W=0.0), r"lam_W must be in \(0, inf\)"),
        (dict(lam_H=float("nan")), "lam_H must be a finite number"),
        (dict(lam_b=-1.0), r"lam_b must be in \[0, inf\)"),
        (dict(dtype="float16"), "dtype must be one of"),
        (dict(loss="hinge"), "loss must be one of"),
        (dict(seed=-1), r"seed must be an integer in \[0, "),
    ],
)
def test_bad_problems(kwargs, message):
    args = dict(K=3, n=2)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        Problem(**args)


def test_reduced_method_reports_the_full_gradient_and_starts_from_x0():
    import jax
    import jax.numpy as jnp

    problem = Problem(K=4, n=6, d=5, delta=0.1, lam_W=1e-2, lam_H=1e-2, lam_b=1e-2, seed=2)
    result = ufm.solve(problem, "reduced", tol=1e-10, record_every=1)
    assert result.converged and np.allclose(result.H, np.repeat(result.H[:, :: problem.n], problem.n, axis=1))
    labels, weights = problem.labels(), problem.weights()
    # the full L's gradient norm by jax.grad of its definition (one compiled program, both points)
    full_norm = jax.jit(lambda p: jnp.sqrt(sum(jnp.sum(g**2) for g in jax.grad(ufm.objective)(p, labels, weights))))
    # the reduced loop's gradient norm is the full L's (module docstring); at ~1e-10 of grad_0 it is computed by
    # two different summation orders, so only ~1e-6 of it is significant
    assert result.grad_norm == pytest.approx(float(full_norm(result.params)), rel=1e-6, abs=1e-15)
    # it starts from x_0 = problem.init(): the full L's gradient there (observed equal to the last bit; 1e-14 as before)
    assert result.initial_grad_norm == pytest.approx(float(full_norm(problem.init())), rel=1e-14)
    history = result.history
    assert history["nc1"][0] > 1e-3 and np.all(history["nc1"][1:] < 1e-12)
    # Jensen: the class-mean projection does not increase L, and the line search keeps it decreasing
    assert np.all(np.diff(history["objective"]) <= 1e-15)


@pytest.mark.parametrize(
    "max_iters, record_every, history, rows",
    [
        (20_000, 10, True, 2048),  # the default caps: 2002 records
        (50, 10, True, 2048),  # small caps share the default's buffer
        (30_000, 10, True, 4096),  # 3002 records, next power of two
        (65_534, 1, True, 65_536),  # the largest rounded buffer
        (65_535, 1, True, 65_537),  # beyond it: exactly what is needed
        (20_000, 10, False, 1),  # no history: the start row only
    ],
)
def test_history_rows_round_up_and_never_hold_too_few(max_iters, record_every, history, rows):
    assert solver.history_rows(max_iters, record_every, history) == rows
    assert rows >= (max_iters // record_every + 2 if history else 1)


def _programs(function, **statics):
    """The compiled programs of ``function`` whose static arguments include ``statics`` (ufm.compiled_programs)."""
    return [p for p in ufm.compiled_programs(function) if all(p.statics.get(k) == v for k, v in statics.items())]


def test_solves_that_differ_only_in_their_caps_share_one_program():
    problem = ufm.Problem(K=3, n=4, d=7, delta=0.1)  # d = 7: no other test compiles this shape with gd
    shape = lambda: [p for p in _programs(solver.run_loop, method="gd") if p.shapes[0][0] == (7, 3)]
    existed = len(shape()) > 0
    first = ufm.solve(problem, "gd", lr=1.0, max_iters=20_000, record_every=10, tol=1e-6)
    assert len(shape()) == 1
    # compiled here (a positive time) unless this process had compiled it already (then 0.0, a cache hit)
    assert (first.compile_seconds == 0.0) if existed else (first.compile_seconds > 0.0)
    again = ufm.solve(problem, "gd", lr=1.0, max_iters=300, record_every=7, tol=1e-6)
    assert again.compile_seconds == 0.0 and len(shape()) == 1  # the same program: nothing compiled
    assert again.history["iteration"][-1] == again.iterations <= 300


@pytest.mark.parametrize("history", [True, False])
def test_the_reduced_loop_is_one_program_for_every_n(history):
    """solve compiles "reduced" with equal classes as reduced_start (per N) and reduced_loop (per d, K)."""
    results = [ufm.solve(ufm.Problem(K=3, n=n, d=5, delta=0.1), tol=1e-10, history=history) for n in (2, 3, 7)]
    rows = solver.history_rows(20_000, 10, history)  # solve's default caps
    loops = _programs(solver.reduced_loop, d=5, K=3, loss_id=0, with_history=history, rows=rows, progress_every=0)
    assert len(loops) == 1  # one loop program for the three n
    starts = {p.shapes[1][0] for p in _programs(solver.reduced_start, loss_id=0)}  # H's shape (d, N) of each start
    assert {(5, 6), (5, 9), (5, 21)} <= starts  # ... and a start program per N
    for result in results:
        assert result.converged and result.H.shape == (5, 3 * result.problem.n)
        # the class-major H is Hbar Y: every sample equals its class mean
        np.testing.assert_array_equal(result.H, np.repeat(result.H[:, :: result.problem.n], result.problem.n, axis=1))


@pytest.mark.parametrize("history", [True, False])
def test_two_programs_agree_with_the_single_compiled_loop(history):
    """The two programs of solve and run_loop in one program (which shard=True compiles) reach the same
    minimizer: the objective to rounding, the logits to ~1e-10 (both stop at |grad| <= 1e-10 |grad_0|, and
    the order of the floating-point operations differs, so the iterates may differ in the last bits)."""
    problem = ufm.Problem(K=3, n=4, d=5, delta=0.2, seed=3)
    two = ufm.solve(problem, tol=1e-10, max_iters=5000, history=history)
    args = (problem.init(), problem.labels(), problem.weights(), 0.0, 1e-10, 5000, 10)
    one = jax.jit(solver.run_loop, static_argnames=("method", "progress_every", "with_history", "loss_id", "rows"))(
        *args,
        method="reduced",
        progress_every=0,
        with_history=history,
        loss_id=0,
        rows=solver.history_rows(5000, 10, history),
    )
    params, value, g0, iterations, status, recorded = (
        one.params,
        one.value,
        one.g0,
        one.iterations,
        one.status,
        one.history,
    )
    assert ufm.Status(int(status)).word == two.status == "converged"
    assert float(g0) == pytest.approx(two.initial_grad_norm, rel=1e-14)
    assert float(value) == pytest.approx(two.objective, rel=1e-13)
    logits = lambda W, H, b: np.asarray(W).T @ np.asarray(H) + np.asarray(b)[:, None]
    np.testing.assert_allclose(logits(two.W, two.H, two.b), logits(*params), rtol=0, atol=1e-9)
    # the first history row is the start x_0 in both; the program leaves its NC metrics NaN (reduced_start),
    # solve fills them in (test_history_off_keeps_the_start_row_and_the_same_result)
    first = np.asarray(recorded)[0]
    np.testing.assert_allclose(first[:3], [two.history[f][0] for f in solver.HISTORY_FIELDS[:3]], rtol=1e-13)
    assert np.all(np.isnan(first[3:])) and np.all(np.isfinite([two.history[f][0] for f in solver.HISTORY_FIELDS]))
    assert abs(int(iterations) - two.iterations) <= 0.25 * two.iterations


@pytest.mark.parametrize("method", ["reduced", "gd"])
def test_history_off_keeps_the_start_row_and_the_same_result(method):
    """history=False (the CLI's choice) compiles a loop without NC metrics; the iterates are the same, and
    the row at x_0 is the same too: its NC metrics, computed outside the programs (on the reduced path
    also with history), are ufm.collapse at x_0."""
    problem = ufm.Problem(K=3, n=4, delta=0.1)
    with_history = ufm.solve(problem, method, tol=1e-9)
    without = ufm.solve(problem, method, tol=1e-9, history=False)
    assert without.iterations == with_history.iterations
    np.testing.assert_array_equal(without.W, with_history.W)
    assert len(without.history["iteration"]) == 1 and len(with_history.history["iteration"]) > 1
    x0 = problem.init()
    start = ufm.collapse(x0.W, x0.H, problem.labels(), problem.K)
    for result in (without, with_history):
        row = {name: values[0] for name, values in result.history.items()}
        assert row["iteration"] == 0 and row["grad_norm"] == result.initial_grad_norm
        # inside the loop's program (gd with history) XLA may order the sums otherwise: 1e-12 relative
        for name, value in start._asdict().items():
            assert row[name] == pytest.approx(float(value), rel=1e-12), name
