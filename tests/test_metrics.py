"""ufm.metrics on hand-built configurations."""

import numpy as np
import pytest

import theory
from ufm import metrics

LABELS_2x2 = np.array([0, 0, 1, 1])


@pytest.mark.parametrize("K,d", [(3, 3), (5, 8), (10, 10)])
def test_exact_etf_has_zero_metrics(K, d):
    n = 4
    W, H, _ = theory.global_minimizer(K, n, d, delta=0.1, lam_W=1e-3, lam_H=1e-3, seed=2)
    labels = np.repeat(np.arange(K), n)
    nc = metrics.collapse(W, H, labels, K)
    # exact arithmetic gives 0; float64 rounding of O(1) entries leaves ~1e-15
    assert abs(float(nc.nc1)) <= 1e-20 and float(nc.nc2) <= 1e-13 and float(nc.nc3) <= 1e-13
    norms = theory.norms(K, n, delta=0.1, lam_W=1e-3, lam_H=1e-3)
    assert float(nc.w_norm) == pytest.approx(norms.w, rel=1e-13)
    assert float(nc.h_norm) == pytest.approx(norms.h, rel=1e-13)


def test_nc1_hand_computed():
    # class 0 at (2,0),(0,0): mean (1,0); class 1 at (-2,0),(0,0): mean (-1,0); h_G = 0.
    # Sigma_W = diag(1, 0), Sigma_B = diag(1, 0)  =>  NC1 = trace(diag(1,0)) / 2 = 1/2
    H = np.array([[2.0, 0.0, -2.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    assert float(metrics.nc1(H, LABELS_2x2, 2)) == pytest.approx(0.5, rel=1e-14)


def test_nc1_ignores_variation_outside_between_class_span():
    # within-class spread only along e_2, which Sigma_B^+ annihilates
    H = np.array([[1.0, 1.0, -1.0, -1.0], [1.0, -1.0, 1.0, -1.0]])
    assert float(metrics.nc1(H, LABELS_2x2, 2)) == pytest.approx(0.0, abs=1e-15)


def test_nc2_and_nc3_hand_computed():
    # W = I (w_1 = e_1, w_2 = e_2); centred class means (1,0) and (-1,0).
    # W^T Hbar / ||.||_F = [[1,-1],[0,0]]/sqrt2 ; M/sqrt(K-1) = [[1,-1],[-1,1]]/2
    # NC2^2 = 2 (1/sqrt2 - 1/2)^2 + 2 (1/2)^2 = 2 - sqrt2 ; NC3 = ||I/sqrt2 - [[1,-1],[0,0]]/sqrt2||_F = 1
    W = np.eye(2)
    H = np.array([[1.0, 1.0, -1.0, -1.0], [0.0, 0.0, 0.0, 0.0]])
    assert float(metrics.nc2(W, H, LABELS_2x2, 2)) == pytest.approx(np.sqrt(2 - np.sqrt(2)), rel=1e-14)
    assert float(metrics.nc3(W, H, LABELS_2x2, 2)) == pytest.approx(1.0, rel=1e-14)


def test_metrics_are_invariant_to_rotation_and_global_shift():
    K, n, d = 4, 3, 6
    rng = np.random.default_rng(0)
    W, H = rng.standard_normal((d, K)), rng.standard_normal((d, n * K))
    labels = np.repeat(np.arange(K), n)
    Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    base = metrics.collapse(W, H, labels, K)
    moved = metrics.collapse(Q @ W, Q @ H + 3.0, labels, K)  # the shift is absorbed by h_G
    # NC1 and NC3 depend on H only through centred quantities; NC2 uses centred means too
    assert np.allclose([float(v) for v in moved[:3]], [float(v) for v in base[:3]], rtol=1e-10)
    assert float(base.nc1) > 0.1 and float(base.nc2) > 0.1 and float(base.nc3) > 0.1
