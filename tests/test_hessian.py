"""ufm.hessian: structured and Lanczos paths against the dense jax.hessian path."""

import jax.numpy as jnp
import numpy as np
import pytest

import ufm
from ufm import hessian
from ufm.losses import LOSS_IDS
from ufm.objective import Params, Weights, class_major_labels


def _random_point(K, n, d, seed, scale=1.0):
    rng = np.random.default_rng(seed)
    params = Params(
        jnp.asarray(scale * rng.standard_normal((d, K))),
        jnp.asarray(scale * rng.standard_normal((d, n * K))),
        jnp.asarray(0.1 * rng.standard_normal(K)),
    )
    weights = Weights(*(jnp.float64(x) for x in (0.15, 2e-3, 3e-3, 1e-2)))
    return params, class_major_labels(K, n), weights


# (K, n, d): d < K, d = K, d > K, so both branches of the structured H block and a rank-deficient H
@pytest.mark.parametrize("K,n,d", [(4, 3, 2), (3, 5, 3), (3, 2, 7), (5, 1, 8)])
@pytest.mark.parametrize("block", ["W", "H", "b"])
@pytest.mark.parametrize("regularized", [False, True])
def test_structured_equals_dense_at_a_random_point(K, n, d, block, regularized):
    params, labels, weights = _random_point(K, n, d, seed=K * 100 + d)
    dense = hessian.block_eigenvalues(params, labels, weights, block, regularized=regularized, method="dense")
    structured = hessian.block_eigenvalues(params, labels, weights, block, regularized=regularized, method="structured")
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


@pytest.mark.parametrize("loss_id", sorted(set(LOSS_IDS.values())))  # each loss function: ls (ce), focal, mse
@pytest.mark.parametrize("block", ["W", "H", "b"])
def test_the_products_compiled_options_change_no_product(loss_id, block):
    """The Hessian-vector product compiled without XLA's YNNPACK fusion (the option that made it 21x slower) is
    the dense Hessian times vectors, as the default compilation's is: float64, 1e-12 of the block's scale."""
    params, labels, _ = _random_point(4, 3, 6, seed=11)
    weights = Weights(*(jnp.float64(x) for x in (0.15, 2e-3, 3e-3, 1e-2)), loss_id=loss_id)._replace(
        gamma=jnp.float64(2.0), mse_kappa=jnp.float64(3.0), mse_beta=jnp.float64(2.0)
    )
    dense = np.asarray(hessian._dense_hessian(params, labels, weights, block, False, int(weights.loss_id)))
    size = int(np.sqrt(dense.size))
    dense = dense.reshape(size, size)
    vectors = np.random.default_rng(3).standard_normal((3, size))
    statics = dict(block=block, regularized=False, loss_id=int(weights.loss_id))
    for v in vectors:
        tuned = np.asarray(hessian._block_hvp_tuned(params, labels, weights, jnp.asarray(v), **statics))
        plain = np.asarray(hessian._block_hvp_plain(params, labels, weights, jnp.asarray(v), **statics))
        scale = np.abs(dense).max() * np.abs(v).max() * size
        np.testing.assert_allclose(tuned, dense @ v, rtol=0, atol=1e-12 * scale)
        np.testing.assert_allclose(plain, tuned, rtol=0, atol=1e-12 * scale)


def test_a_jaxlib_without_the_products_option_compiles_it_plainly(monkeypatch):
    """An option this jaxlib does not know is refused when the program compiles; the product then falls back to
    plain ``jit`` (and stays there), with the same values."""
    import jax

    params, labels, weights = _random_point(4, 3, 6, seed=2)
    statics = dict(block="H", regularized=False, loss_id=0)
    v = jnp.ones(6 * 12)
    expected = np.asarray(hessian._block_hvp(params, labels, weights, v, **statics))
    unknown = jax.jit(hessian._block_hvp_of, static_argnames=tuple(statics), compiler_options={"xla_no_such": ""})
    monkeypatch.setattr(hessian, "_block_hvp_tuned", unknown)
    monkeypatch.setattr(hessian, "_HVP_OPTIONS_KNOWN", [True])
    got = np.asarray(hessian._block_hvp(params, labels, weights, v, **statics))
    assert hessian._HVP_OPTIONS_KNOWN == [False]
    np.testing.assert_allclose(got, expected, rtol=1e-13, atol=1e-15)


def test_dense_refuses_oversized_blocks():
    params, labels, weights = _random_point(3, 4, 3, seed=0)
    with pytest.raises(ValueError, match="max_dense_entries"):
        hessian.block_eigenvalues(params, labels, weights, "H", method="dense", max_dense_entries=100)
    auto = hessian.block_eigenvalues(params, labels, weights, "H", max_dense_entries=100)
    assert auto.method == "structured"


@pytest.mark.parametrize(
    "bad,message", [(dict(block="Z"), "block must be one of"), (dict(method="qr"), "method must be")]
)
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


# --- block_spectrum: values with multiplicities, grouping of equal columns, W-block deflation ---


def _duplicated_point(K, n, d, G, seed):
    """A random (non-collapsed) point whose N = nK feature columns take only G distinct values."""
    params, labels, weights = _random_point(K, n, d, seed)
    rng = np.random.default_rng(seed + 1)
    H = params.H[:, :G][:, rng.integers(0, G, size=n * K)]
    return params._replace(H=H), labels, weights


def _collapsed_point(K, n, d, delta=0.1, lam=5e-3):
    import theory

    W, H, b = theory.global_minimizer(K, n, d, delta=delta, lam_W=lam, lam_H=lam)
    weights = Weights(*(jnp.float64(x) for x in (delta, lam, lam, lam)))
    return Params(jnp.asarray(W), jnp.asarray(H), jnp.asarray(b)), class_major_labels(K, n), weights


@pytest.mark.parametrize("where", ["random", "duplicated", "collapsed"])
@pytest.mark.parametrize("block", ["W", "H"])
def test_block_spectrum_equals_dense(where, block):
    K, n, d = 4, 3, 6
    params, labels, weights = {
        "random": lambda: _random_point(K, n, d, seed=7),
        "duplicated": lambda: _duplicated_point(K, n, d, G=5, seed=8),
        "collapsed": lambda: _collapsed_point(K, n, d),
    }[where]()
    dense = hessian.block_eigenvalues(params, labels, weights, block, method="dense").values
    spectrum = ufm.block_spectrum(params, labels, weights, block, method="structured")
    assert spectrum.size == dense.size
    scale = np.max(np.abs(dense))
    # float64 eigen-solvers on matrices of norm `scale`, plus the reported merge shift (Weyl)
    np.testing.assert_allclose(spectrum.expanded(), dense, rtol=0, atol=1e-12 * scale + spectrum.error_bound)
    assert spectrum.error_bound <= 1e-10 * scale


def test_block_spectrum_matches_theory_at_the_minimizer():
    import theory

    K, n, d = 6, 40, 9
    params, labels, weights = _collapsed_point(K, n, d)
    predicted = theory.hessian_spectrum(K, n, d, delta=0.1, lam_W=5e-3, lam_H=5e-3)
    for block in ("W", "H"):
        spectrum = ufm.block_spectrum(params, labels, weights, block, method="structured")
        values, counts = spectrum.distinct()
        expected = getattr(predicted, block)
        assert counts.tolist() == expected.multiplicities.tolist()
        # closed form vs float64 eigen-solvers: rounding ~1e-15 of the largest eigenvalue
        np.testing.assert_allclose(values, expected.values, rtol=0, atol=1e-12 * expected.values.max())


def test_block_spectrum_groups_collapsed_columns():
    params, _, _ = _collapsed_point(5, 7, 6)
    representatives, counts = hessian._distinct_columns(np.asarray(params.H))
    assert representatives.shape == (6, 5) and counts.tolist() == [7] * 5


def test_block_spectrum_regularized_and_bad_cluster_rtol():
    params, labels, weights = _random_point(3, 2, 4, seed=3)
    plain = ufm.block_spectrum(params, labels, weights, "W", method="structured")
    shifted = ufm.block_spectrum(params, labels, weights, "W", method="structured", regularized=True)
    np.testing.assert_allclose(shifted.values, plain.values + float(weights.lam_W), rtol=0, atol=1e-15)
    with pytest.raises(ValueError, match="cluster_rtol must be in"):
        ufm.block_spectrum(params, labels, weights, "W", cluster_rtol=0.1)
