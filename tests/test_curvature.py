"""Joint Hessian of L: Lanczos vs dense, symmetry zeros at the minimizer, safe step."""

import numpy as np
import pytest

import theory
import ufm
from ufm import curvature
from ufm.objective import Params


def _setting(K, n, d, delta, lam, seed=0):
    problem = ufm.Problem(K=K, n=n, d=d, delta=delta, lam_W=lam, lam_H=lam, lam_b=lam, seed=seed)
    optimum = Params(
        *(np.asarray(x) for x in theory.global_minimizer(K, n, d, delta=delta, lam_W=lam, lam_H=lam, seed=seed))
    )
    return problem, optimum


@pytest.mark.parametrize("K,n,d,delta", [(3, 2, 3, 0.0), (4, 3, 4, 0.2), (4, 2, 6, 0.1)])
def test_lanczos_largest_equals_dense_largest(K, n, d, delta):
    problem, optimum = _setting(K, n, d, delta, 1e-2)
    for point in (problem.init(), optimum):
        dense = curvature.joint_eigenvalues(point, problem.labels(), problem.weights())
        lanczos = curvature.largest_curvature(point, problem.labels(), problem.weights())
        assert lanczos == pytest.approx(dense.max(), rel=1e-8)  # ARPACK tol 1e-8


@pytest.mark.parametrize("K,n,d", [(3, 2, 3), (4, 2, 4), (4, 2, 6), (5, 1, 7)])
def test_zero_eigenvalues_are_the_rotation_orbit(K, n, d):
    """At a minimizer the joint Hessian is PSD and vanishes exactly on the tangent of the O(d) orbit.

    W, H span a (K-1)-dimensional subspace, so the stabiliser is O(d-K+1) and the orbit
    has dimension d(d-1)/2 - (d-K+1)(d-K)/2 (counted independently of the code).
    """
    problem, optimum = _setting(K, n, d, 0.1, 1e-2)
    top, smallest, zeros = curvature.nonzero_range(
        curvature.joint_eigenvalues(optimum, problem.labels(), problem.weights())
    )
    assert zeros == d * (d - 1) // 2 - (d - K + 1) * (d - K) // 2
    assert smallest > 1e-6 * top


def test_b_alone_is_the_regularized_b_block():
    problem, optimum = _setting(4, 3, 4, 0.2, 1e-2)
    joint = curvature.joint_eigenvalues(optimum, problem.labels(), problem.weights(), ("b",))
    block = ufm.block_eigenvalues(optimum, problem.labels(), problem.weights(), "b", regularized=True).values
    np.testing.assert_allclose(joint, block, rtol=1e-12, atol=1e-15)


def test_safe_step_is_locally_contracting():
    """GD with 1/lambda_max from a perturbed minimizer gets closer; with 2.2/lambda_max it is pushed away."""
    problem, optimum = _setting(4, 3, 4, 0.1, 1e-2)
    step = curvature.safe_step(optimum, problem.labels(), problem.weights())
    rng = np.random.default_rng(0)
    start = Params(*(x + 1e-6 * rng.standard_normal(x.shape) for x in optimum))
    distance = lambda p: np.sqrt(sum(np.sum((np.asarray(a) - b) ** 2) for a, b in zip(p, optimum, strict=True)))
    good = ufm.solve(problem, "gd", lr=step, tol=1e-300, max_iters=200, init=start)
    bad = ufm.solve(problem, "gd", lr=2.2 * step, tol=1e-300, max_iters=200, init=start)
    assert distance(good.params) < distance(start) < distance(bad.params)


def test_bad_arguments():
    problem, optimum = _setting(3, 2, 3, 0.0, 1e-2)
    with pytest.raises(ValueError, match="variables"):
        curvature.joint_eigenvalues(optimum, problem.labels(), problem.weights(), ("W", "X"))
    with pytest.raises(ValueError, match="max_dense_entries"):
        curvature.joint_eigenvalues(optimum, problem.labels(), problem.weights(), max_dense_entries=10)
    with pytest.raises(ValueError, match="negative eigenvalue"):
        curvature.nonzero_range(np.array([-1.0, 0.0, 2.0]))
