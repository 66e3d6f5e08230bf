"""ufm.collapse_metrics: every metric against a direct numpy formula on the samples, on exact simplex ETFs,
and NC1 against the solver's ufm.metrics.nc1."""

import itertools
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ufm import metrics
from ufm.collapse_metrics import METRIC_SOURCES, ClassStatistics, collapse_metrics


def _data(K, d, N, seed, imbalanced=False):
    rng = np.random.default_rng(seed)
    counts = rng.integers(2, 2 * N // K, size=K) if imbalanced else np.full(K, N // K)
    labels = rng.permutation(np.repeat(np.arange(K), counts))
    centres = 2.0 * rng.standard_normal((K, d))
    features = centres[labels] + rng.standard_normal((labels.size, d)) + 3.0  # + 3: mu_G away from 0
    return features, labels, rng.standard_normal((K, d)), rng.standard_normal(K)


def _cos(a, b):
    return a @ b / (np.linalg.norm(a) * np.linalg.norm(b))


def _direct(features, labels, K, weight, cdnv_power=2):
    """Every metric straight from the samples (N, d): loops over classes and pairs, np.cov, np.linalg.pinv."""
    N, d = features.shape
    mu_G = features.mean(axis=0)
    classes = [features[labels == k] for k in range(K)]
    means = np.array([Xk.mean(axis=0) for Xk in classes])
    sigma_W = sum(len(Xk) * np.cov(Xk.T, bias=True).reshape(d, d) for Xk in classes) / N
    sigma_B = sum(np.outer(m - mu_G, m - mu_G) for m in means) / K
    pinv = np.linalg.pinv(sigma_B, rcond=10 * d * np.finfo(float).eps, hermitian=True)
    lam, V = np.linalg.eigh(sigma_B)
    top = np.argsort(lam)[::-1][: min(K - 1, d)]
    truncated = V[:, top] @ np.diag(1 / lam[top]) @ V[:, top].T  # Han et al.'s svds(Sigma_B, k=K-1)
    variances = np.array([np.mean(np.sum((Xk - Xk.mean(axis=0)) ** 2, axis=1)) for Xk in classes])
    pairs = list(itertools.combinations(range(K), 2))
    out = {
        "nc1": np.trace(sigma_W @ pinv) / K,
        "nc1_trace": np.trace(sigma_W @ pinv),
        "nc1_svd": np.trace(sigma_W @ truncated) / K,
        "nc1_tr_ratio": np.trace(sigma_W) / np.trace(sigma_B),
        "cdnv": np.mean(
            [(variances[k] + variances[j]) / (2 * np.linalg.norm(means[k] - means[j]) ** cdnv_power) for k, j in pairs]
        ),
    }
    Mbar = (means - mu_G).T
    M = np.eye(K) - 1 / K
    for suffix, cols in (("H", Mbar), ("W", weight.T)):
        G = cols.T @ cols
        out[f"nc2_etf_{suffix}"] = np.linalg.norm(G / np.linalg.norm(G) - M / np.linalg.norm(M))
        norms = np.linalg.norm(cols, axis=0)
        out[f"equinorm_{suffix}"] = np.std(norms) / np.mean(norms)
        cos = [_cos(cols[:, k], cols[:, j]) for k in range(K) for j in range(K) if k != j]
        out[f"equiangular_{suffix}"] = np.std(cos)
        out[f"maxangle_{suffix}"] = np.mean(np.abs(np.array(cos) + 1 / (K - 1)))
        unit = cols / norms
        dist = [np.linalg.norm(unit[:, k] - unit[:, j]) for k in range(K) for j in range(K) if k != j]
        out[f"gnc2_{suffix}"] = np.mean(1 / np.array(dist))
        out[f"gnc2_log_{suffix}"] = np.mean(np.log(1 / np.array(dist)))
    out["h_norm"] = np.mean(np.linalg.norm(Mbar, axis=0))
    out["w_norm"] = np.mean(np.linalg.norm(weight, axis=1))
    WtH = weight @ Mbar
    out["nc2"] = np.linalg.norm(WtH / np.linalg.norm(WtH) - M / np.sqrt(K - 1))
    out["nc3"] = np.linalg.norm(weight.T / np.linalg.norm(weight) - Mbar / np.linalg.norm(Mbar))
    out["nc3_squared"] = out["nc3"] ** 2
    duality = [_cos(weight[k], Mbar[:, k]) for k in range(K)]
    out["uniform_duality"], out["duality_cos_mean"] = np.std(duality), np.mean(duality)
    return out


CASES = [  # (K, d, N, imbalanced)
    (2, 3, 40, False),
    (4, 6, 80, True),
    (10, 16, 300, False),
    (7, 3, 140, True),  # K > d: Sigma_B full rank d, gnc2 on 7 points of the 2-sphere
]


@pytest.mark.parametrize("K,d,N,imbalanced", CASES)
@pytest.mark.parametrize("cdnv_power", [2, 4])
def test_every_metric_matches_direct_formula(K, d, N, imbalanced, cdnv_power):
    features, labels, weight, bias = _data(K, d, N, seed=K + d, imbalanced=imbalanced)
    got = collapse_metrics(ClassStatistics.from_features(features, labels, K), weight, bias, cdnv_power=cdnv_power)
    want = _direct(features, labels, K, weight, cdnv_power)
    assert set(got) == set(want) and set(got) <= set(METRIC_SOURCES)
    for name, value in want.items():
        # other summation orders and a thin SVD of Mbar instead of a d x d pinv: O(1) numbers, condition
        # of Sigma_B below 1e3 here, so a few hundred roundings at most
        assert got[name] == pytest.approx(value, rel=1e-10, abs=1e-13), name


def test_without_weight_only_feature_metrics():
    features, labels, _, _ = _data(4, 5, 40, seed=1)
    got = collapse_metrics(ClassStatistics.from_features(features, labels, 4))
    assert not any(name.endswith("_W") or name in ("nc2", "nc3", "w_norm", "uniform_duality") for name in got)
    assert {"nc1", "cdnv", "gnc2_H", "nc2_etf_H"} <= set(got)


def _etf(K, d, spread, seed=0, scale=3.0):
    """Balanced features at a scaled simplex ETF (plus a global offset) with Gaussian spread; weight = 2 x means."""
    rng = np.random.default_rng(seed)
    P, _ = np.linalg.qr(rng.standard_normal((d, K)))
    means = scale * math.sqrt(K / (K - 1)) * (P @ (np.eye(K) - 1 / K)).T  # (K, d), norms = scale
    labels = np.repeat(np.arange(K), 5)
    features = means[labels] + 7.0 + spread * rng.standard_normal((labels.size, d))
    return features, labels, 2.0 * means


@pytest.mark.parametrize("K,d", [(2, 2), (3, 5), (10, 10), (16, 20)])
@pytest.mark.parametrize("spread", [0.0, 1e-9])
def test_simplex_etf(K, d, spread):
    features, labels, weight = _etf(K, d, spread)
    got = collapse_metrics(ClassStatistics.from_features(features, labels, K), weight)
    # exact arithmetic gives 0; float64 rounding of O(1)-O(10) entries (and a 1e-9 spread moving the
    # means by ~1e-9) leaves at most ~1e-8
    tol = 1e-13 + 10 * spread
    zeros = ["nc2", "nc3", "nc3_squared", "uniform_duality"]
    zeros += [f"{m}_{s}" for m in ("nc2_etf", "equinorm", "equiangular", "maxangle") for s in "HW"]
    for name in zeros:
        assert abs(got[name]) <= tol, name
    assert got["duality_cos_mean"] == pytest.approx(1.0, abs=tol)
    # the Riesz 1-energy and log energy at pairwise distance sqrt(2K/(K-1)), closed form
    for s in "HW":
        assert got[f"gnc2_{s}"] == pytest.approx(math.sqrt((K - 1) / (2 * K)), rel=1e-13 + tol)
        assert got[f"gnc2_log_{s}"] == pytest.approx(-0.5 * math.log(2 * K / (K - 1)), abs=1e-13 + tol)
    assert got["h_norm"] == pytest.approx(3.0, rel=1e-13 + tol) and got["w_norm"] == pytest.approx(6.0, rel=1e-13)
    # no spread: only the rounding of the shifted features and their means (~1e-15) is left, squared ~1e-30;
    # spread s: NC1 ~ s^2 d / (scale^2 / (K-1)), cdnv ~ s^2 d / scale^2
    bound = 1e-28 if spread == 0 else 100 * spread**2 * d * K
    for name in ("nc1", "nc1_trace", "nc1_svd", "nc1_tr_ratio", "cdnv"):
        assert 0.0 <= got[name] <= bound, name


@pytest.mark.parametrize("K,d,N,imbalanced", CASES)
def test_nc1_agrees_with_solver_metric(K, d, N, imbalanced):
    features, labels, _, _ = _data(K, d, N, seed=3, imbalanced=imbalanced)
    ours = collapse_metrics(ClassStatistics.from_features(features, labels, K))["nc1"]
    solver = float(metrics.nc1(features.T, labels, K))
    assert ours == pytest.approx(solver, rel=1e-12)  # same cutoff; eigenpairs from a thin SVD vs a d x d SVD


def test_nc1_svd_inverts_a_direction_the_cutoff_drops():
    # three classes whose centred means are nearly collinear: Sigma_B's second eigenvalue (~1e-30 of the
    # first) is below the pinv cutoff, so nc1 ignores it and nc1_svd (rank K-1 = 2) inverts it
    means = np.array([[1.0, 0, 0], [-1.0, 1e-15, 0], [0.0, 0, 0]])
    stats = ClassStatistics(np.full(3, 10), means, means.mean(axis=0), 0.3 * np.eye(3), np.full(3, 0.03))
    got = collapse_metrics(stats)
    assert got["nc1"] == pytest.approx(0.01 / (2 / 3) / 3, rel=1e-12)  # Sigma_W = 0.01 I on e_1 only
    assert got["nc1_svd"] > 1e20 * got["nc1"]


@given(
    K=st.integers(2, 6),
    d=st.integers(2, 7),  # d = 1: unit vectors coincide exactly, which the Gram's distances see as ~1e-8
    per=st.integers(2, 6),
    seed=st.integers(0, 2**32 - 1),
    power=st.sampled_from([1.0, 2.0, 4.0]),
)
def test_matches_direct_formula_on_random_shapes(K, d, per, seed, power):
    features, labels, weight, bias = _data(K, d, K * per, seed)
    got = collapse_metrics(ClassStatistics.from_features(features, labels, K), weight, bias, cdnv_power=power)
    want = _direct(features, labels, K, weight, power)
    for name in ("nc1_tr_ratio", "cdnv", "nc2_etf_H", "nc2", "nc3", "gnc2_H", "gnc2_W", "maxangle_H", "equinorm_W"):
        # well-conditioned O(1) quantities (no pseudo-inverse): a few hundred roundings
        assert got[name] == pytest.approx(want[name], rel=1e-9, abs=1e-12), name


def _stats(K=3, d=4, seed=0):
    features, labels, _, _ = _data(K, d, 10 * K, seed)
    return ClassStatistics.from_features(features, labels, K)


def _replaced(stats, **changes):
    fields = {f: getattr(stats, f) for f in ("counts", "means", "global_mean", "scatter", "variances")}
    return ClassStatistics(**(fields | changes))


BAD = [  # (call, parameter named in the message)
    (lambda s: collapse_metrics("stats"), "stats"),
    (lambda s: collapse_metrics(_replaced(s, scatter=np.eye(3))), "stats.scatter"),
    (lambda s: collapse_metrics(_replaced(s, counts=np.array([3, 0, 4]))), "labels"),
    (lambda s: collapse_metrics(_replaced(s, means=s.means * np.nan)), "stats.means"),
    (lambda s: collapse_metrics(s, np.ones((3, 5))), "weight"),
    (lambda s: collapse_metrics(s, np.full((3, 4), np.inf)), "weight"),
    (lambda s: collapse_metrics(s, np.ones((3, 4)), np.ones(2)), "bias"),
    (lambda s: collapse_metrics(s, cdnv_power=0), "cdnv_power"),
    (lambda s: collapse_metrics(s, cdnv_power="2"), "cdnv_power"),
    (lambda s: ClassStatistics.from_features(np.ones((4, 2)), [0, 1, 2, 2], 1), "num_classes"),
    (lambda s: ClassStatistics.from_features(np.ones((4, 2)), [0, 1, 0, 1], 3), "labels"),
]


@pytest.mark.parametrize("call,name", BAD)
def test_bad_input_names_the_parameter(call, name):
    with pytest.raises(ValueError, match=name):
        call(_stats())


def test_single_class_refused():
    stats = ClassStatistics(np.array([3]), np.zeros((1, 2)), np.zeros(2), np.eye(2), np.ones(1))
    with pytest.raises(ValueError, match="stats: K must be at least 2"):
        collapse_metrics(stats)


def test_from_features_refuses_what_does_not_fit():
    huge = np.lib.stride_tricks.as_strided(np.zeros(1), shape=(10**7, 10**6), strides=(0, 0))  # no memory behind
    with pytest.raises(ValueError, match="not enough memory"):
        ClassStatistics.from_features(huge, np.zeros(10**7, int), 2)
    with pytest.raises(ValueError, match="features"):
        ClassStatistics.from_features(None, [0, 1], 2)
