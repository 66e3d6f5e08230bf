"""ufm.analyze's fast streaming paths (ufm/last_layer.py) against their slow references.

The one pass about per-class reference points (``_Pass``), the certified decisions (``_Certified``,
``_nearest_thresholds``) and the second pass they leave to a few rows are tested against the path without
certificates (every decision by the exact product, the scatter about the final means in a second pass), against
brute-force float64 decisions, against an in-memory two-pass NC1 near collapse, and a SIGINT during the streaming
pass of the command line must end it within a bound set by the time of one chunk.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
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


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.int32])
@pytest.mark.parametrize("exponent", [-1074 + 60, -3, 0, 7, 1023])
def test_rows_widened_and_scaled_in_one_pass_equal_the_float64_copy(dtype, exponent):
    """The streaming pass reads each chunk in its stored dtype and widens and scales it in one pass: bit for bit
    the scaled float64 copy (a power of two: exact), including exponents beyond one multiplication's range."""
    rng = np.random.default_rng(11)
    raw = (rng.normal(size=(50, 7)) * 100).astype(dtype)
    if np.issubdtype(dtype, np.floating) and np.dtype(dtype).itemsize == 8:
        raw = raw * 2.0 ** min(900, exponent)  # float64 rows near the top of the range as well
    out = np.empty(raw.shape)
    got = last_layer._scaled_into(out, raw, exponent)
    expected = np.ldexp(np.asarray(raw, np.float64), -exponent)
    assert got is out
    np.testing.assert_array_equal(got, expected)  # exact: equal bits


@pytest.mark.parametrize("sizes", [[40, 40, 40], [40, 13, 40, 1], [1]])
def test_per_class_sums_reusing_the_indicator_equal_brute_force(sizes):
    """The one-hot product kept from chunk to chunk (only its row indices rewritten) sums each chunk's rows
    into their classes as a loop over the rows does (1e-15 relative: another order of the additions)."""
    rng = np.random.default_rng(2)
    K, d = 9, 5
    by_class, out, expected = last_layer._ByClass(K), np.zeros((K, d)), np.zeros((K, d))
    for rows in sizes:
        X, y = rng.normal(size=(rows, d)), rng.integers(0, K, size=rows)
        by_class.add(out, X, y)
        for row, label in zip(X, y, strict=True):
            expected[label] += row
    np.testing.assert_allclose(out, expected, rtol=1e-15, atol=1e-15)


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
    to 1e-9 relative (the one-pass Gram ``X^T X - sum n m m^T`` loses ~6 digits here)."""
    features, labels, weight, _ = _layer(10, 16, 2000, 1e-3, seed=11, offset=4.0)
    features = features.astype(np.float32)
    np.save(tmp_path / "f.npy", features)
    mapped = np.load(tmp_path / "f.npy", mmap_mode="r")
    out = ufm.analyze(mapped, labels, weight, spectra=False, chunk_size=1000)
    reference = _two_pass_nc1(features, labels, 10)
    assert 1e-7 < reference < 1e-5
    assert out.measured["nc1"] == pytest.approx(reference, rel=1e-9)


# --------------------------------------------------------------------------- interrupts

#: the interrupt cases: d large and K small, so a chunk's time is its d x d product (rows d^2 multiply-adds)
#: while the file stays small (float16: 8 MiB a chunk, 16 chunks)
STOP_K, STOP_D, STOP_CHUNK, STOP_CHUNKS = 4, 1024, 4096, 16


@pytest.fixture(scope="module")
def stop_layer(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stop")
    rng = np.random.default_rng(13)
    N = STOP_CHUNK * STOP_CHUNKS
    labels = np.arange(N) % STOP_K
    weight = rng.normal(size=(STOP_K, STOP_D))
    features = np.lib.format.open_memmap(folder / "f.npy", mode="w+", dtype=np.float16, shape=(N, STOP_D))
    for lo in range(0, N, STOP_CHUNK):
        y = labels[lo : lo + STOP_CHUNK]
        features[lo : lo + STOP_CHUNK] = weight[y] + 0.1 * rng.normal(size=(y.size, STOP_D))
    features.flush()
    del features
    np.save(folder / "labels.npy", labels.astype(np.int8))
    np.save(folder / "weight.npy", weight)
    return folder


def _product_seconds(path) -> float:
    """The time of one chunk's d x d product on this machine now (the best of two): the work a chunk takes."""
    X = np.asarray(np.load(path, mmap_mode="r")[:STOP_CHUNK], np.float64)
    best = np.inf
    for _ in range(2):
        start = time.perf_counter()
        X.T @ X
        best = min(best, time.perf_counter() - start)
    return best


def test_streaming_pass_lets_another_thread_run_within_a_chunk(stop_layer):
    """Python's signal watcher (ufm._interrupt) is a thread: it acts only when the streaming pass lets go of the
    GIL. The longest stretch a ticking thread is kept waiting during the pass must be well below one chunk's
    product (half of it; scipy's dsyrk, which held the GIL through the product, kept it waiting a whole
    product and more: 1.8 s against 0.4 s measured on the loaded 2-core machine, against 0.02 s now)."""
    mapped = np.load(stop_layer / "f.npy", mmap_mode="r")[: 3 * STOP_CHUNK]
    labels = np.load(stop_layer / "labels.npy")[: 3 * STOP_CHUNK]
    weight = np.load(stop_layer / "weight.npy")
    product = _product_seconds(stop_layer / "f.npy")
    gaps, done = [], threading.Event()

    def tick():
        last = time.perf_counter()
        while not done.is_set():
            time.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    try:
        ufm.analyze(mapped, labels, weight, spectra=False, chunk_size=STOP_CHUNK)
    finally:
        done.set()
        ticker.join()
    assert max(gaps) < 0.5 * product, (max(gaps), product)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_during_the_streaming_pass_stops_within_a_chunk(stop_layer, tmp_path, signum):
    """``python -m ufm.analyze`` on a memory-mapped file, signalled while it streams: one line, exit 130 / 143,
    no JSON file, and the exit comes within one chunk's product time (measured here first; the watcher needs
    the GIL only for a moment, and a 40 GB map took 7-8 s to stop)."""
    product = _product_seconds(stop_layer / "f.npy")
    out = tmp_path / "out.json"
    argv = [f"--{key}={stop_layer / (key + '.npy')}" for key in ("labels", "weight")]
    argv += [f"--features={stop_layer / 'f.npy'}", f"--chunk-size={STOP_CHUNK}", "--spectra=off", f"--json={out}"]
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    start = "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])"
    process = subprocess.Popen(
        [sys.executable, "-c", start, sys.executable, "-m", "ufm.analyze", *argv],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stderr.readline()
        while line and not line.startswith("analysing"):
            line = process.stderr.readline()
        assert line.startswith("analysing"), process.stderr.read()
        time.sleep(0.3)  # into the streaming pass (the labels' check and the pilot take a few ms)
        assert process.poll() is None, "finished before the signal: make the file larger"
        process.send_signal(signum)
        sent = time.perf_counter()
        stderr = process.stderr.read()
        process.wait(timeout=60)
        elapsed = time.perf_counter() - sent
    finally:
        process.kill()
        process.wait()
    name = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}[signum]
    assert process.returncode == 128 + signum, stderr
    assert stderr.strip().splitlines()[-1].startswith(f"python -m ufm.analyze: interrupted by {name}"), stderr
    assert not out.exists() and not any(tmp_path.iterdir())
    assert elapsed < max(product, 0.25), (elapsed, product)  # 0.25 s: a process's exit on a loaded machine


def test_interrupt_fixture_is_a_valid_layer(stop_layer, tmp_path):
    """The interrupt cases' input is analysed to the end when nobody signals (so an exit 130 is the signal's)."""
    mapped = np.load(stop_layer / "f.npy", mmap_mode="r")[: 2 * STOP_CHUNK]
    labels = np.load(stop_layer / "labels.npy")[: 2 * STOP_CHUNK]
    out = ufm.analyze(mapped, labels, np.load(stop_layer / "weight.npy"), spectra=False, chunk_size=STOP_CHUNK)
    assert out.measured["accuracy"] == 1.0 and json.dumps(out.to_json())
