"""ufm.analyze's fast streaming paths (ufm/last_layer.py) against their slow references.

The one pass about per-class reference points (``_Pass``), the certified decisions (``_Certified``,
``_nearest_thresholds``) and the second pass they leave to a few rows are tested against the path without
certificates (every decision by the exact product, the scatter about the final means in a second pass), against
brute-force float64 decisions, against an in-memory two-pass NC1 near collapse, and a SIGINT during the streaming
pass of the command line must end it within a bound set by the time of one chunk.
"""

from pathlib import Path

import numpy as np
import pytest

import ufm
from ufm import last_layer

ROOT = Path(__file__).resolve().parents[1]


def _layer(K, d, n, spread, seed=0, offset=0.0, bias_scale=0.1):
    """Balanced classes of ``n`` rows, ``spread`` x Gaussian noise around class centres (offset from 0 as
    post-ReLU features are), shuffled; the classifier near the centred centres."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(K * n) % K)
    centres = offset + rng.normal(size=(K, d))
    features = centres[labels] + spread * rng.normal(size=(K * n, d))
    weight = centres - centres.mean(axis=0) + 0.2 * rng.normal(size=(K, d))
    return features, labels, weight, bias_scale * rng.normal(size=K)


def _brute_force(features, labels, weight, bias):
    """accuracy, ncc_agreement, ncc_accuracy by float64 products of every row with every class."""
    K = weight.shape[0]
    predicted = np.argmax(features @ weight.T + bias, axis=1)
    means = np.stack([features[labels == k].mean(axis=0) for k in range(K)])
    distances = np.sum((features[:, None, :] - means[None, :, :]) ** 2, axis=2)
    nearest = np.argmin(distances, axis=1)
    return np.mean(predicted == labels), np.mean(nearest == predicted), np.mean(nearest == labels)


def _no_certificates(monkeypatch):
    """The slow reference path: no class has enough rows for certificates."""
    monkeypatch.setattr(last_layer, "CERTIFY_ROWS_PER_CLASS", 2**62)


@pytest.mark.parametrize(
    "K,d,n,spread,scale",
    [
        (5, 8, 200, 0.05, 1.0),  # collapsed: every decision certified
        (5, 8, 200, 0.6, 1.0),  # classes overlap: many rows near a boundary, left to the exact products
        (12, 3, 60, 0.4, 1.0),  # d < K
        (4, 6, 100, 0.3, 2.0**-1000),  # subnormal-adjacent and huge magnitudes: the scaled form
        (4, 6, 100, 0.3, 2.0**900),
    ],
)
def test_certified_path_equals_the_exact_path(monkeypatch, K, d, n, spread, scale):
    features, labels, weight, bias = _layer(K, d, n, spread, offset=1.0)
    features = features * scale
    fast = ufm.analyze(features, labels, weight, bias, spectra=False, chunk_size=97)
    _no_certificates(monkeypatch)
    slow = ufm.analyze(features, labels, weight, bias, spectra=False, chunk_size=97)
    assert fast.undefined == slow.undefined
    for name, value in slow.measured.items():
        if name in ("accuracy", "ncc_agreement", "ncc_accuracy"):  # decisions: equal, not close
            assert fast.measured[name] == value, name
        elif value is not None:
            # sums about other reference points and in another order: rounding (a class's distances to its
            # reference cancel by at most ~1 bit at a reference drawn from the class), 1e-12 relative
            assert fast.measured[name] == pytest.approx(value, rel=1e-12, abs=1e-300), name


@pytest.mark.parametrize("spread", [0.05, 0.5, 1.5])
def test_decisions_equal_brute_force_float64(spread):
    features, labels, weight, bias = _layer(6, 5, 150, spread, seed=3)
    out = ufm.analyze(features, labels, weight, bias, spectra=False, chunk_size=128)
    expected = _brute_force(features, labels, weight, bias)
    got = tuple(out.measured[k] for k in ("accuracy", "ncc_agreement", "ncc_accuracy"))
    assert got == pytest.approx(expected, abs=0.0)  # counts of decisions: exact


def test_certificate_is_sound_and_tight_at_the_nearest_tie():
    """Points on the segment from a class's reference point c to its nearest tie hyperplane: the certificate
    accepts only points the exact argmax gives to the class, and accepts up to within its slack of the
    hyperplane (a relative 2^-30 of the distance, far above float64 rounding)."""
    rng = np.random.default_rng(5)
    K, d = 7, 9
    weight, bias = rng.normal(size=(K, d)), 0.3 * rng.normal(size=K)
    refs = 0.5 * rng.normal(size=(K, d)) + 2.0 * weight  # well inside each class's region
    certificate = last_layer._Certified(weight, bias)
    certificate.add(np.arange(K), refs, 0)
    for y in range(K):
        normals = weight[y] - weight  # (w_y - w_k) . x + b_y - b_k = 0 at the tie with k
        gaps = normals @ refs[y] + bias[y] - bias
        distance = np.delete(gaps / np.maximum(np.linalg.norm(normals, axis=1), 1e-300), y)
        k = np.delete(np.arange(K), y)[np.argmin(distance)]
        exact = distance.min()
        assert 0 < certificate.rho[y] <= exact and certificate.rho[y] > exact * (1 - 2.0**-25)
        direction = -normals[k] / np.linalg.norm(normals[k])
        for t in exact * np.array([0.5, 1 - 2.0**-20, 1 - 2.0**-33, 1.0, 1 + 2.0**-20, 1.5]):
            x = refs[y] + t * direction
            accepted = certificate.certified(np.array([np.linalg.norm(x - refs[y])]), np.array([y]))[0]
            if accepted:
                assert np.argmax(weight @ x + bias) == y
            assert accepted == (t <= exact * (1 - 2.0**-20)), t / exact


def test_cancelling_class_is_recomputed_about_its_mean(monkeypatch):
    """A class whose only row among the first (pilot) rows is far from the rest: its squared distances to that
    reference cancel by more than ``CANCELLATION``, so the scatter is recomputed about the final means; NC1
    equals the in-memory two-pass value."""
    rng = np.random.default_rng(7)
    K, d, N = 2, 4, 4000
    labels = np.ones(N, np.int64)
    labels[0] = 0
    labels[64:] = rng.permutation(np.arange(N - 64) % K)
    centres = np.array([[0.0] * d, [1.0] * d])
    features = centres[labels] + 1e-4 * rng.normal(size=(N, d))
    features[0] += 50.0  # class 0's pilot row: far from its class
    weight = centres - 0.5
    calls = []
    second_pass = last_layer._second_pass
    monkeypatch.setattr(last_layer, "_second_pass", lambda *a: calls.append(a[-1]) or second_pass(*a))
    out = ufm.analyze(features, labels, weight, spectra=False, chunk_size=500)
    assert calls == [True]  # the scatter's second pass
    means = np.stack([features[labels == k].mean(axis=0) for k in range(K)])
    reference = _two_pass_nc1(features, labels, K)
    assert out.measured["nc1"] == pytest.approx(reference, rel=1e-12)
    assert out.counts == tuple(np.bincount(labels)) and np.all(np.isfinite(means))


def _two_pass_nc1(features, labels, K):
    """NC1 in memory, float64: class means first, then the scatter of the centred rows (pinv cutoff as ufm.metrics)."""
    X = np.asarray(features, np.float64)
    means = np.stack([X[labels == k].mean(axis=0) for k in range(K)])
    D = X - means[labels]
    sigma_w = D.T @ D / X.shape[0]
    centred = means - X.mean(axis=0)
    lam, U = np.linalg.eigh(centred.T @ centred / K)
    keep = lam > 10 * X.shape[1] * np.finfo(np.float64).eps * lam.max()
    return float(np.sum(np.sum(U[:, keep] * (sigma_w @ U[:, keep]), axis=0) / lam[keep]) / K)


def test_nc1_near_collapse_equals_the_in_memory_two_pass_value(tmp_path):
    """NC1 ~ 1e-6, float32 features offset from 0, memory-mapped: equal to the in-memory float64 two-pass value
    to 1e-9 relative (issue 30; the one-pass Gram ``X^T X - sum n m m^T`` loses ~6 digits here)."""
    features, labels, weight, _ = _layer(10, 16, 2000, 1e-3, seed=11, offset=4.0)
    features = features.astype(np.float32)
    np.save(tmp_path / "f.npy", features)
    mapped = np.load(tmp_path / "f.npy", mmap_mode="r")
    out = ufm.analyze(mapped, labels, weight, spectra=False, chunk_size=1000)
    reference = _two_pass_nc1(features, labels, 10)
    assert 1e-7 < reference < 1e-5
    assert out.measured["nc1"] == pytest.approx(reference, rel=1e-9)
