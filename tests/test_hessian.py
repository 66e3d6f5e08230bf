"""ufm.hessian: structured and Lanczos paths against the dense jax.hessian path."""

import jax.numpy as jnp
import numpy as np
import pytest

import ufm
from ufm import hessian
from ufm.objective import Params, Weights, class_major_labels


def _random_point(K, n, d, seed, scale=1.0):
    rng = np.random.default_rng(seed)
    params = Params(jnp.asarray(scale * rng.standard_normal((d, K))),
                    jnp.asarray(scale * rng.standard_normal((d, n * K))),
                    jnp.asarray(0.1 * rng.standard_normal(K)))
    weights = Weights(*(jnp.float64(x) for x in (0.15, 2e-3, 3e-3, 1e-2)))
    return params, class_major_labels(K, n), weights


# (K, n, d): d < K, d = K, d > K, so both branches of the structured H block and a rank-deficient H
@pytest.mark.parametrize("K,n,d", [(4, 3, 2), (3, 5, 3), (3, 2, 7), (5, 1, 8)])
@pytest.mark.parametrize("block", ["W", "H", "b"])
@pytest.mark.parametrize("regularized", [False, True])
def test_structured_equals_dense_at_a_random_point(K, n, d, block, regularized):
    params, labels, weights = _random_point(K, n, d, seed=K * 100 + d)
    dense = hessian.block_eigenvalues(params, labels, weights, block, regularized=regularized, method="dense")
    structured = hessian.block_eigenvalues(params, labels, weights, block, regularized=regularized,
                                           method="structured")
    assert dense.method == "dense" and structured.method == "structured"
    scale = np.max(np.abs(dense.values))
    # two float64 eigen-solvers on matrices of norm `scale`: agreement to ~1e-15 scale
    np.testing.assert_allclose(structured.values, dense.values, rtol=0, atol=1e-12 * scale)


@pytest.mark.parametrize("block", ["W", "H", "b"])
def test_lanczos_largest_eigenvalue_matches_dense(block):
    params, labels, weights = _random_point(4, 3, 6, seed=5)
    dense = hessian.block_eigenvalues(params, labels, weights, block, regularized=True, method="dense").values
    top = hessian.extreme_eigenvalues(params, labels, weights, block, regularized=True, k=1)
    assert top[0] == pytest.approx(dense[-1], rel=1e-10)  # eigsh tol 1e-12


def test_dense_refuses_oversized_blocks():
    params, labels, weights = _random_point(3, 4, 3, seed=0)
    with pytest.raises(ValueError, match="max_dense_entries"):
        hessian.block_eigenvalues(params, labels, weights, "H", method="dense", max_dense_entries=100)
    auto = hessian.block_eigenvalues(params, labels, weights, "H", max_dense_entries=100)
    assert auto.method == "structured"


@pytest.mark.parametrize("bad,message", [(dict(block="Z"), "block must be one of"),
                                         (dict(method="qr"), "method must be")])
def test_bad_arguments(bad, message):
    params, labels, weights = _random_point(3, 2, 3, seed=0)
    args = dict(block="W", method="auto")
    args.update(bad)
    with pytest.raises(ValueError, match=message):
        hessian.block_eigenvalues(params, labels, weights, args["block"], method=args["method"])


def test_logit_hessians_are_softmax_covariances():
    params, labels, weights = _random_point(4, 2, 4, seed=1)
    S = np.asarray(hessian.logit_hessians(params, labels, weights))
    Z = np.asarray(ufm.logits(params))
    P = np.exp(Z - Z.max(axis=0)) / np.exp(Z - Z.max(axis=0)).sum(axis=0)
    expected = np.stack([np.diag(p) - np.outer(p, p) for p in P.T])
    np.testing.assert_allclose(S, expected, rtol=0, atol=1e-15)


def test_condition_number_and_grouping_helpers():
    values = np.array([1e-18, -1e-18, 0.5, 0.5 + 1e-9, 2.0, 2.0])
    assert hessian.nonzero_condition_number(values) == pytest.approx(4.0, rel=1e-8)
    means, counts = hessian.distinct_eigenvalues(values)
    assert means.tolist() == pytest.approx([0.0, 0.5, 2.0], abs=1e-8) and counts.tolist() == [2, 2, 2]
    assert np.isnan(hessian.nonzero_condition_number(np.zeros(4)))
