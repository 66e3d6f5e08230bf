"""Fuzzing the public entry points of ``ufm`` with hostile inputs (contract: ``tests/_hostile.py``).

Free memory is reported as 64 MiB so that a valid but large request is refused by the memory
guard instead of being run; every run the fuzzer can start is small and stopped after a few steps.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import ufm
from tests._hostile import check_contract, hostile, maybe
from ufm import _memory, curvature

PROBLEM_NAMES = (
    "K",
    "n",
    "d",
    "delta",
    "lam_W",
    "lam_H",
    "lam_b",
    "loss",
    "seed",
    "dtype",
    "init_scale",
    "gamma",
    "mse_kappa",
    "mse_beta",
    "nonnegative",
    "label_noise",
    "noise_seed",
)


@pytest.fixture(autouse=True, scope="module")
def _small_memory():
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_memory, "free_bytes", lambda device=None: 64 * 2**20)
        yield


@pytest.fixture(scope="module")
def small():
    problem = ufm.Problem(K=3, n=2, delta=0.1, lam_W=1e-2, lam_H=1e-2, lam_b=1e-2)
    return problem, ufm.solve(problem, tol=1e-8)


problems = st.builds(
    dict,
    # few valid shapes and static settings: each new one costs a compilation
    K=maybe(st.integers(2, 3)),
    n=maybe(st.integers(1, 2)),
    d=st.one_of(st.none(), maybe(st.just(4))),
    delta=maybe(st.floats(0, 1, exclude_max=True)),
    lam_W=maybe(st.floats(1e-8, 1)),
    lam_H=maybe(st.floats(1e-8, 1)),
    lam_b=maybe(st.floats(0, 1)),
    loss=maybe(st.sampled_from(["ls", "ce", "focal", "mse"])),
    seed=maybe(st.integers(0, 2**31)),
    dtype=maybe(st.sampled_from(["float64"])),
    init_scale=maybe(st.floats(1e-6, 10)),
    gamma=st.one_of(st.just(0.0), maybe(st.floats(0, 5))),
    mse_kappa=maybe(st.floats(0.1, 5)),
    mse_beta=maybe(st.floats(0.1, 5)),
    nonnegative=st.one_of(st.booleans(), hostile),
    label_noise=st.one_of(st.just(0.0), maybe(st.floats(0, 0.9))),
    noise_seed=maybe(st.integers(0, 2**31)),
)


@given(
    problems,
    maybe(st.sampled_from(ufm.METHODS)),
    st.one_of(st.none(), maybe(st.floats(1e-3, 10))),
    maybe(st.floats(1e-12, 0.5)),
    maybe(st.just(4)),
    maybe(st.just(2)),
)
def test_problem_and_solve(kwargs, method, lr, tol, max_iters, record_every):
    problem = check_contract(lambda: ufm.Problem(**kwargs), PROBLEM_NAMES)
    if isinstance(problem, Exception):
        return
    outcome = check_contract(
        lambda: ufm.solve(problem, method, lr=lr, tol=tol, max_iters=max_iters, record_every=record_every),
        ("method", "lr", "tol", "max_iters", "record_every", "not enough memory", "init_scale", "nonnegative"),
    )
    if isinstance(outcome, ufm.Result):
        assert outcome.status in ufm.solver.STATUS_NAMES.values() and outcome.message


@given(st.one_of(st.none(), hostile, st.builds(lambda s: (s, s, s), hostile)))
def test_solve_with_a_hostile_start(small, init):
    problem, _ = small
    outcome = check_contract(lambda: ufm.solve(problem, max_iters=3, init=init), ("init",))
    if isinstance(outcome, ufm.Result) and init is not None:
        assert outcome.status == "diverged" or np.isfinite(outcome.objective)


@given(maybe(st.floats(1e-12, 0.5)), st.booleans())
def test_compare(small, rtol, spectra):
    _, result = small
    outcome = check_contract(lambda: ufm.compare(result, rtol=rtol, spectra=spectra), ("rtol",))
    if isinstance(outcome, ufm.Comparison):  # converged, or the point is not the minimizer to rtol (and says so)
        assert outcome.converged != bool(outcome.unlocated)


@given(
    maybe(st.sampled_from(["W", "H", "b"])),
    st.booleans(),
    maybe(st.sampled_from(["auto", "dense", "structured"])),
    maybe(st.integers(1, 10**9)),
)
def test_block_eigenvalues(small, block, regularized, method, max_dense_entries):
    problem, result = small
    check_contract(
        lambda: ufm.block_eigenvalues(
            result.params,
            problem.labels(),
            problem.weights(),
            block,
            regularized=regularized,
            method=method,
            max_dense_entries=max_dense_entries,
        ),
        ("block", "method", "max_dense_entries"),
    )


@given(
    maybe(st.sampled_from(["W", "H", "b"])),
    maybe(st.integers(1, 3)),
    maybe(st.sampled_from(["LA", "SA", "LM"])),
    maybe(st.floats(0, 1e-3)),
)
def test_extreme_eigenvalues(small, block, k, which, tol):
    problem, result = small
    check_contract(
        lambda: ufm.extreme_eigenvalues(
            result.params, problem.labels(), problem.weights(), block, k=k, which=which, tol=tol
        ),
        ("block", "k", "which", "tol"),
    )


eigenvalue_arrays = st.one_of(
    hostile,
    st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=6),
    st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=6),
)


@given(eigenvalue_arrays, maybe(st.floats(0, 1e-3)))
def test_eigenvalue_helpers(values, rtol):
    try:  # documented: NaN (undefined) exactly when no eigenvalue is positive
        positive = np.any(np.asarray(values, dtype=np.float64) > 0)
    except (TypeError, ValueError):
        positive = True
    if positive:
        check_contract(lambda: ufm.nonzero_condition_number(values), ("values",))
    else:
        outcome = check_contract(lambda: [ufm.nonzero_condition_number(values), 0.0][1:], ("values",))
        if not isinstance(outcome, Exception):
            assert np.isnan(ufm.nonzero_condition_number(values))
    check_contract(lambda: ufm.distinct_eigenvalues(values, rtol=rtol), ("values", "rtol"))
    check_contract(lambda: curvature.nonzero_range(values), ("values", "negative eigenvalue"))


@given(
    st.one_of(st.just(("W", "H", "b")), st.just(("b",)), hostile, st.lists(st.sampled_from("WHbX"), max_size=4)),
    maybe(st.integers(1, 10**8)),
)
def test_curvature(small, variables, max_dense_entries):
    problem, result = small
    check_contract(
        lambda: curvature.joint_eigenvalues(
            result.params, problem.labels(), problem.weights(), variables, max_dense_entries=max_dense_entries
        ),
        ("variables", "max_dense_entries", "not enough memory"),
    )


@given(
    maybe(st.sampled_from(["W", "H", "b"])),
    st.booleans(),
    maybe(st.sampled_from(["auto", "dense", "structured"])),
    maybe(st.integers(1, 10**9)),
    maybe(st.floats(0, 1e-6)),
)
def test_block_spectrum(small, block, regularized, method, max_dense_entries, cluster_rtol):
    problem, result = small
    check_contract(
        lambda: ufm.block_spectrum(
            result.params,
            problem.labels(),
            problem.weights(),
            block,
            regularized=regularized,
            method=method,
            max_dense_entries=max_dense_entries,
            cluster_rtol=cluster_rtol,
        ),
        ("block", "method", "max_dense_entries", "cluster_rtol"),
    )


@given(
    st.one_of(hostile, st.lists(maybe(st.floats(0, 0.5)), min_size=1, max_size=2)),
    st.one_of(st.none(), hostile, st.lists(maybe(st.floats(1e-4, 1e-2)), min_size=1, max_size=2)),
    st.one_of(st.none(), hostile, st.lists(maybe(st.integers(0, 3)), min_size=1, max_size=2)),
    maybe(st.sampled_from(ufm.METHODS)),
    maybe(st.floats(1e-10, 0.5)),
    maybe(st.just(3)),
    st.one_of(st.none(), maybe(st.just(2))),
)
def test_grid_and_sweep(small, delta, lam, seed, method, tol, max_iters, batch_size):
    problem, _ = small
    problems = check_contract(
        lambda: ufm.grid(problem, delta=delta, lam=lam, seed=seed), ("delta", "lam", "seed", "lam_W", "lam_H", "lam_b")
    )
    if isinstance(problems, Exception):
        return
    outcome = check_contract(
        lambda: ufm.sweep(problems, method, tol=tol, max_iters=max_iters, batch_size=batch_size),
        ("problems", "method", "tol", "max_iters", "batch_size", "lr"),
    )
    if not isinstance(outcome, Exception):
        assert len(outcome.rows()) == len(problems)
