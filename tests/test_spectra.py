"""theory.spectra against dense Hessians built by ``jax.hessian`` (float64).

The dense blocks come from differentiating ``ufm.objective`` twice at the
closed-form point; nothing of theory.spectra is used to build them.
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import theory
from ufm.objective import Params, Weights, class_major_labels, loss_term, objective

EIGEN_RTOL = 1e-9  # the bound; float64 eigh on O(100) matrices errs ~1e-14 relative to ||A||


@partial(jax.jit, static_argnames="regularized")
def _hessians(W, H, b, labels, weights, regularized):
    """The three blocks by ``jax.hessian``, one compiled program per shape (delta and the lambdas are traced,
    so the cases of one (K, d) share it)."""
    f = objective if regularized else loss_term
    # a concrete loss id (CE / label smoothing): traced, it would differentiate every loss's branch twice
    weights = weights._replace(loss_id=0)
    return (
        jax.hessian(lambda W_: f(Params(W_, H, b), labels, weights))(W),
        jax.hessian(lambda H_: f(Params(W, H_, b), labels, weights))(H),
        jax.hessian(lambda b_: f(Params(W, H, b_), labels, weights))(b),
    )


def _dense_blocks(K, n, d, delta, lam_W, lam_H, lam_b, regularized):
    W, H, b = (jnp.asarray(x) for x in theory.global_minimizer(K, n, d, delta=delta, lam_W=lam_W, lam_H=lam_H, seed=7))
    weights = Weights(*(jnp.float64(x) for x in (delta, lam_W, lam_H, lam_b)))
    hW, hH, hb = _hessians(W, H, b, class_major_labels(K, n), weights, regularized)
    size_W, size_H = d * K, d * n * K
    return np.asarray(hW).reshape(size_W, size_W), np.asarray(hH).reshape(size_H, size_H), np.asarray(hb)


def _assert_same_spectrum(dense, predicted):
    measured = np.linalg.eigvalsh(dense)
    expected = predicted.expanded()
    assert measured.shape == expected.shape
    scale = np.max(np.abs(expected))
    np.testing.assert_allclose(measured, expected, rtol=EIGEN_RTOL, atol=EIGEN_RTOL * scale)
    return measured


def _nonzero_ratio(eigenvalues):
    # threshold 1e-8 of the largest: separates structural zeros (~1e-17) from the smallest non-zero
    nonzero = eigenvalues[eigenvalues > 1e-8 * eigenvalues.max()]
    return nonzero.max() / nonzero.min()


CASES = [(K, d, delta) for K in (3, 4, 5, 10) for d in (K, K + 3) for delta in (0.0, 0.05, 0.3)]


@pytest.mark.parametrize("K,d,delta", CASES)
def test_loss_hessian_blocks_match_prediction(K, d, delta):
    n, lam_W, lam_H, lam_b = 2, 5e-3, 2e-2, 1e-2
    dense_W, dense_H, dense_b = _dense_blocks(K, n, d, delta, lam_W, lam_H, lam_b, regularized=False)
    predicted = theory.hessian_spectrum(K, n, d, delta=delta, lam_W=lam_W, lam_H=lam_H)
    eig_W = _assert_same_spectrum(dense_W, predicted.W)
    eig_H = _assert_same_spectrum(dense_H, predicted.H)
    _assert_same_spectrum(dense_b, predicted.b)
    kappa = theory.condition_number(K, delta, lam_W, n=n, lam_H=lam_H)
    assert _nonzero_ratio(eig_W) == pytest.approx(kappa, rel=EIGEN_RTOL)
    assert _nonzero_ratio(eig_H) == pytest.approx(kappa, rel=EIGEN_RTOL)
    assert predicted.W.condition_number() == pytest.approx(kappa, rel=1e-12)
    assert predicted.H.condition_number() == pytest.approx(kappa, rel=1e-12)
    # K >= 3: W has three distinct non-zero eigenvalues, H two (docs/theory.md, Theorem 4.2)
    assert len(predicted.W.nonzero()) == 3 and len(predicted.H.nonzero()) == 2


@pytest.mark.parametrize("K,d,delta", [(3, 3, 0.0), (4, 7, 0.2), (5, 5, 0.1)])
def test_regularized_hessian_blocks_match_prediction(K, d, delta):
    n, lam_W, lam_H, lam_b = 3, 1e-2, 4e-3, 2e-2
    dense_W, dense_H, dense_b = _dense_blocks(K, n, d, delta, lam_W, lam_H, lam_b, regularized=True)
    predicted = theory.hessian_spectrum(K, n, d, delta=delta, lam_W=lam_W, lam_H=lam_H, lam_b=lam_b, regularized=True)
    for dense, block in zip((dense_W, dense_H, dense_b), predicted, strict=True):
        _assert_same_spectrum(dense, block)
    # with the regularizer there is no zero eigenvalue and kappa is no longer K p_t
    assert predicted.W.values.min() == pytest.approx(lam_W, rel=1e-12)
    assert predicted.H.condition_number() != pytest.approx(theory.condition_number(K, delta, lam_W, n=n, lam_H=lam_H))


@pytest.mark.parametrize("d", [2, 4])
def test_two_classes_have_one_nonzero_eigenvalue_per_block(d):
    n, delta, lam = 3, 0.1, 1e-2
    dense_W, dense_H, _ = _dense_blocks(2, n, d, delta, lam, lam, lam, regularized=False)
    predicted = theory.hessian_spectrum(2, n, d, delta=delta, lam_W=lam, lam_H=lam)
    _assert_same_spectrum(dense_W, predicted.W)
    _assert_same_spectrum(dense_H, predicted.H)
    assert len(predicted.W.nonzero()) == 1 and len(predicted.H.nonzero()) == 1


def test_beyond_boundary_blocks_vanish():
    spectrum = theory.hessian_spectrum(4, 10, 5, delta=0.95, lam_W=1e-2, lam_H=1e-2)
    assert spectrum.W.values.tolist() == [0.0] and spectrum.H.values.tolist() == [0.0]
    with pytest.raises(ValueError, match="no non-zero eigenvalue"):
        spectrum.W.condition_number()
    # the bias block still curves at zero logits: S = (I - 11^T/K)/K averaged
    assert spectrum.b.values.tolist() == pytest.approx([0.0, 1 / 4])


def test_multiplicities_add_up_at_scale():
    K, n, d = 100, 5000, 512
    spectrum = theory.hessian_spectrum(K, n, d, delta=0.1, lam_W=5e-4, lam_H=5e-4)
    assert spectrum.W.size == d * K and spectrum.H.size == d * n * K and spectrum.b.size == K
