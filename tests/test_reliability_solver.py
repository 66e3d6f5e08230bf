"""Issue 12 (reliability): a non-finite start is never "converged", foreseeable overflow is refused
at the boundary naming the parameter, and every error names its parameter (numpy scalars accepted)."""

import contextlib
import importlib
import io

import jax.numpy as jnp
import numpy as np
import pytest

import theory
import ufm
from ufm import solver

solve_cli = importlib.import_module("ufm.solve")


def _cli(argv):
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        code = solve_cli.main(argv)
    return code, err.getvalue(), out.getvalue()


@pytest.mark.parametrize("value0, gnorm0, g0, expected", [
    (np.inf, 1.0, 1.0, "nonfinite"),
    (1.0, np.inf, np.inf, "nonfinite"),      # inf <= tol * inf would read as converged
    (1.0, np.nan, np.nan, "nonfinite"),
    (1.0, 1e-12, 1.0, "converged"),
    (1.0, 1.0, 1.0, None),                   # running
])
def test_start_status_never_calls_nonfinite_converged(value0, gnorm0, g0, expected):
    status = int(solver.start_status(jnp.asarray(value0), jnp.asarray(gnorm0), jnp.asarray(g0), 1e-10, 5))
    assert solver.STATUS_NAMES.get(status) == expected


@pytest.mark.parametrize("method", ["reduced", "gd"])
def test_an_overflowing_start_is_nonfinite_not_converged(method):
    problem = ufm.Problem(K=3, n=2)
    W, H, b = problem.init()
    result = ufm.solve(problem, method, init=(W * 1e160, H, b), max_iters=5)
    assert result.status == "nonfinite" and not result.converged and result.iterations == 0
    assert "init" in result.message and "no step" in result.message


@pytest.mark.parametrize("changes, name", [
    (dict(lam_W=1e300), "lam_W"), (dict(lam_H=1e300), "lam_H"), (dict(loss="mse", mse_kappa=1e308), "mse_kappa"),
    (dict(init_scale=1e200), "init_scale"), (dict(lam_H=1e30, dtype="float32"), "lam_H"),
])
def test_foreseeable_overflow_is_refused_and_the_advised_limit_runs(changes, name):
    with pytest.raises(ValueError, match=rf"^{name} = .* too large") as error:
        ufm.Problem(K=3, n=4, **changes)
    limit = float(str(error.value).split(f"use {name} <= ")[1].split(" ")[0])
    # the advised largest value is accepted and its start is finite for the solver (an independent check
    # of the estimate: the compiled objective and gradient at the real seeded start)
    problem = ufm.Problem(K=3, n=4, **{**changes, name: limit})
    result = ufm.solve(problem, "gd", max_iters=1, lr=1e-300)
    assert result.status != "nonfinite" and np.isfinite(result.initial_grad_norm)


def test_cli_refuses_overflow_naming_the_parameter():
    for argv, name in ((["--lam", "1e300"], "lam_W"), (["--loss", "mse", "--mse-kappa", "1e308"], "mse_kappa"),
                       (["--seed", "9223372036854775808"], "seed"), (["--loss", "focal", "--gamma", "1e308"], "gamma")):
        code, err, out = _cli(["--K", "5", "--n", "20", "--quiet", *argv])
        lines = [line for line in err.splitlines() if "error:" in line]
        assert code == 2 and len(lines) == 1 and name in lines[0] and "Traceback" not in err, (argv, err)


@pytest.mark.parametrize("call, name", [
    (lambda: ufm.Problem(K=3, n=2, seed=2**63), "seed"),
    (lambda: ufm.Problem(K=10**400, n=2), "K, n, d"),
    (lambda: ufm.Problem(K=3, n=10**40), "K, n, d"),
    (lambda: ufm.solve(ufm.Problem(K=3, n=2), max_iters=2**63), "max_iters"),
    (lambda: ufm.solve(ufm.Problem(K=3, n=2), tol=np.float32(2.0)), "tol"),
    (lambda: ufm.compare(5), "result"),
    (lambda: theory.a_delta(K=5, n=10**400, delta=0.1, lam_W=1e-3, lam_H=1e-3), "n"),
    (lambda: theory.predict(5, 20, 5, 5e-4, 5e-4, 5e-4, loss="focal", gamma=1e308), "gamma"),
])
def test_errors_name_their_parameter(call, name):
    with pytest.raises(ValueError, match=rf"^{name} "):
        call()


def test_numpy_scalars_and_the_largest_seed_are_accepted():
    problem = ufm.Problem(K=np.int64(3), n=np.int32(2), seed=np.uint64(2**63 - 1), lam_W=np.float32(1e-2))
    assert problem.seed == 2**63 - 1 and problem.init().W.shape == (3, 3)
    result = ufm.solve(problem, tol=np.float32(1e-8), max_iters=np.int64(500))
    assert result.converged
    # a tiny lambda (denormal) has a finite prediction instead of "a must be finite"
    prediction = theory.predict(5, 20, 5, 5e-324, 5e-324, 5e-324)
    assert np.isfinite(prediction.a) and prediction.a > 0
