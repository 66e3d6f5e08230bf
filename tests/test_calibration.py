"""ufm.calibration against independent computations: brute-force loops over samples and bins, scipy's
log-softmax and 1-D solvers, hand-computed cases, and the statistics of a perfectly calibrated predictor.

Tolerances: the references are computed in float64 by other summation orders, so sums of N <= 2000 terms
of size <= 2 agree to ~1e-13; 1e-12 leaves a margin of 10. Statistical checks state their standard errors.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import optimize, stats
from scipy.special import log_softmax, softmax

from tests._hostile import SPECIALS, check_contract
from ufm import calibration as cal

EXACT = 1e-12  # float64 sums of <= 2000 terms in another order (see the module docstring)


def calibrated(N: int, K: int, seed: int, scale: float = 2.0):
    """Logits ``scale * normal`` and labels drawn from their softmax: a perfectly calibrated predictor."""
    rng = np.random.default_rng(seed)
    Z = scale * rng.normal(size=(N, K))
    u = rng.random(N)[:, None]
    y = np.minimum((softmax(Z, axis=1).cumsum(axis=1) < u).sum(axis=1), K - 1)
    return Z, y


def random_case(seed: int, N: int = 300, K: int = 6):
    """Logits unrelated to the (uniform) labels, so every bin and class is exercised."""
    rng = np.random.default_rng(seed)
    return 3.0 * rng.normal(size=(N, K)), rng.integers(0, K, size=N)


# ----------------------------------------------------------------------------- brute-force references


def in_bin(x: float, m: int, edges) -> bool:
    """The (l, u] rule, with 0 in the first bin."""
    return edges[m] < x <= edges[m + 1] or (m == 0 and x == 0.0)


def brute_ece(Z, y, M, T=1.0):
    P = softmax(Z / T, axis=1)
    edges = np.linspace(0.0, 1.0, M + 1)
    total = 0.0
    for m in range(M):
        members = [i for i in range(len(y)) if in_bin(P[i].max(), m, edges)]
        if members:
            accuracy = sum(float(np.argmax(P[i]) == y[i]) for i in members) / len(members)
            confidence = sum(P[i].max() for i in members) / len(members)
            total += len(members) / len(y) * abs(accuracy - confidence)
    return total


def brute_classwise(Z, y, M, T=1.0):
    P = softmax(Z / T, axis=1)
    edges = np.linspace(0.0, 1.0, M + 1)
    N, K = P.shape
    total = 0.0
    for k in range(K):
        for m in range(M):
            members = [i for i in range(N) if in_bin(P[i, k], m, edges)]
            if members:
                hits = sum(float(y[i] == k) for i in members) / len(members)
                mass = sum(P[i, k] for i in members) / len(members)
                total += len(members) / N * abs(hits - mass)
    return total / K


def brute_adaptive(Z, y, M, T=1.0):
    P = softmax(Z / T, axis=1)
    ranked = sorted(range(len(y)), key=lambda i: P[i].max())
    N, total = len(y), 0.0
    for m in range(M):
        members = ranked[m * N // M : (m + 1) * N // M]
        if members:
            accuracy = sum(float(np.argmax(P[i]) == y[i]) for i in members) / len(members)
            confidence = sum(P[i].max() for i in members) / len(members)
            total += len(members) / N * abs(accuracy - confidence)
    return total


def ref_nll(Z, y, T=1.0):
    return float(-log_softmax(Z / T, axis=1)[np.arange(len(y)), y].mean())


def ref_brier(Z, y, T=1.0):
    onehot = np.eye(Z.shape[1])[y]
    return float(((softmax(Z / T, axis=1) - onehot) ** 2).sum(axis=1).mean())


@pytest.mark.parametrize("n_bins", [15, 20, 1, 7])
@pytest.mark.parametrize("temperature", [1.0, 0.5, 2.5])
def test_against_brute_force(n_bins, temperature):
    Z, y = random_case(n_bins)
    kw = {"n_bins": n_bins, "temperature": temperature}
    assert cal.ece(Z, y, **kw) == pytest.approx(brute_ece(Z, y, n_bins, temperature), abs=EXACT)
    assert cal.classwise_ece(Z, y, **kw) == pytest.approx(brute_classwise(Z, y, n_bins, temperature), abs=EXACT)
    assert cal.adaptive_ece(Z, y, **kw) == pytest.approx(brute_adaptive(Z, y, n_bins, temperature), abs=EXACT)
    assert cal.nll(Z, y, temperature=temperature) == pytest.approx(ref_nll(Z, y, temperature), abs=EXACT)
    assert cal.brier(Z, y, temperature=temperature) == pytest.approx(ref_brier(Z, y, temperature), abs=EXACT)
    stats_ = cal.bin_statistics(Z, y, **kw)
    assert stats_.accuracy == np.mean(np.argmax(Z, axis=1) == y)  # a ratio of integers: exact
    diagram = cal.reliability_diagram(Z, y, **kw)
    assert diagram.count.sum() == len(y)  # nothing lost, none counted twice: exact


# ----------------------------------------------------------------------------- hand-computed


def test_hand_computed_four_samples():
    """K = 2, n_bins = 5 (bins [0,.2], (.2,.4], (.4,.6], (.6,.8], (.8,1]); p and labels:

    a: p = (.9, .1),  y = 0: confidence .9,  right  -> bin 5
    b: p = (.3, .7),  y = 0: confidence .7,  wrong  -> bin 4
    c: p = (.75,.25), y = 0: confidence .75, right  -> bin 4
    d: p = (.55,.45), y = 1: confidence .55, wrong  -> bin 3
    ECE = 1/4 |1 - .9| + 2/4 |.5 - .725| + 1/4 |0 - .55| = .025 + .1125 + .1375 = .275.
    Brier: a .1^2 * 2 = .02, b .7^2 * 2 = .98, c .25^2 * 2 = .125, d .55^2 * 2 = .605: mean 1.73 / 4 = .4325.
    Classwise: class 0 has p = .9,.3,.75,.55 (hits 1,1,1,0), one sample per bin: (.1 + .7 + .25 + .55)/4 = .4;
    class 1 mirrors it (p = .1,.7,.25,.45, hits 0,0,0,1): .4; mean .4.
    Adaptive, 2 bins: sorted .55 (wrong), .7 (wrong) | .75, .9 (right): 2/4 .625 + 2/4 .175 = .4.
    """
    P = np.array([[0.9, 0.1], [0.3, 0.7], [0.75, 0.25], [0.55, 0.45]])
    Z, y = np.log(P), np.array([0, 0, 0, 1])  # softmax(log p) = p to rounding (1e-16)
    assert cal.ece(Z, y, n_bins=5) == pytest.approx(0.275, abs=EXACT)
    assert cal.brier(Z, y) == pytest.approx(0.4325, abs=EXACT)
    assert cal.classwise_ece(Z, y, n_bins=5) == pytest.approx(0.4, abs=EXACT)
    assert cal.adaptive_ece(Z, y, n_bins=2) == pytest.approx(0.4, abs=EXACT)
    assert cal.nll(Z, y) == pytest.approx(-np.log([0.9, 0.3, 0.75, 0.45]).mean(), abs=EXACT)
    diagram = cal.reliability_diagram(Z, y, n_bins=5)
    np.testing.assert_array_equal(diagram.count, [0, 0, 1, 2, 1])  # counts: exact
    np.testing.assert_allclose(diagram.confidence, [np.nan, np.nan, 0.55, 0.725, 0.9], atol=EXACT)
    np.testing.assert_allclose(diagram.accuracy, [np.nan, np.nan, 0.0, 0.5, 1.0], atol=EXACT)
    np.testing.assert_allclose(diagram.lower, [0, 0.2, 0.4, 0.6, 0.8], atol=1e-15)  # linspace's edges


@pytest.mark.parametrize(
    ("logits", "n_bins", "counts"),
    [
        ([0.0, 0.0], 2, [1, 0]),  # confidence exactly 1/2 = the edge: (l, u] puts it in [0, 1/2]
        ([0.0, 0.0], 4, [0, 1, 0, 0]),  # (1/4, 1/2]
        ([0.0, -1000.0], 4, [0, 0, 0, 1]),  # confidence exactly 1: the last bin (., 1]
        ([0.0, 0.0, 0.0, 0.0], 1, [1]),  # one bin [0, 1] holds everything
    ],
)
def test_bin_edges_follow_the_half_open_rule(logits, n_bins, counts):
    diagram = cal.reliability_diagram(np.array([logits]), [0], n_bins=n_bins)
    np.testing.assert_array_equal(diagram.count, counts)  # integer counts: exact


# ----------------------------------------------------------------------------- a calibrated predictor


def test_ece_of_a_calibrated_predictor_falls_like_one_over_sqrt_n():
    """With labels drawn from the softmax, each bin's |acc - conf| is sampling noise ~ 1/sqrt(|B_m|):
    ECE ~ N^(-1/2). The slope of log(mean ECE over 4 seeds) on log N (5 sizes in 1e3..1e5) has a
    regression standard error of ~0.03 (measured: slopes -0.45, -0.48, -0.56 over three seed sets);
    the band 0.15 is 5 of those."""
    Ns = np.geomspace(1e3, 1e5, 5).astype(int)
    means = [np.mean([cal.ece(*calibrated(N, 10, seed)) for seed in range(4)]) for N in Ns]
    fit = stats.linregress(np.log(Ns), np.log(means))
    assert fit.stderr < 0.06, fit  # the scatter is what the band assumes (twice the measured ~0.03)
    assert abs(fit.slope + 0.5) < 0.15, fit


def test_temperature_one_is_nll_optimal_for_a_calibrated_predictor():
    """T-hat - 1 ~ -(beta-hat - 1) ~ f'(1)/f''(1), f' a mean of N zero-mean terms E_p z - z_y of variance
    Var_p z: its standard error is 1/sqrt(N mean Var_p z) (computed here from the data); 4 of them.
    Scaling the logits by 3 scales the fitted T by 3 exactly (to the solver's 1e-10 tolerance)."""
    Z, y = calibrated(20_000, 10, seed=7)
    P = softmax(Z, axis=1)
    variance = float(((Z - (P * Z).sum(axis=1, keepdims=True)) ** 2 * P).sum(axis=1).mean())
    se = 1.0 / math.sqrt(len(y) * variance)
    fit = cal.fit_temperature(Z, y)
    assert fit.converged and not fit.at_bound
    assert abs(fit.temperature - 1.0) < 4 * se, (fit, se)
    hot = cal.fit_temperature(3.0 * Z, y)  # overconfident: the logits 3 times too large
    assert hot.temperature == pytest.approx(3.0 * fit.temperature, rel=1e-8)  # 100 x the solver's tolerance
    assert abs(hot.temperature - 3.0) < 3 * 4 * se
    assert hot.nll_after == pytest.approx(fit.nll_after, rel=1e-12)  # the same minimum value: rounding only
    assert hot.nll_after < hot.nll_before


# ----------------------------------------------------------------------------- temperature fits


@pytest.mark.parametrize(("seed", "scale"), [(0, 1.0), (1, 0.2), (2, 4.0), (3, 30.0)])
def test_fit_temperature_matches_scipy(seed, scale):
    """Two independent minimizers of the NLL written here: the root of dNLL/dT (brentq, xtol 1e-14) and a
    bounded Brent search over log T (xatol 1e-10): both agree with the fit to 1e-6 in T."""
    rng = np.random.default_rng(seed)
    Z = rng.normal(size=(400, 5))
    y = np.where(rng.random(400) < 0.7, np.argmax(Z, axis=1), rng.integers(0, 5, 400))  # 70% + noise
    Z = scale * Z

    def derivative(T):  # d/dT mean(-log softmax(z/T)_y) = mean(z_y - E_p z) / T^2
        P = softmax(Z / T, axis=1)
        return float((Z[np.arange(400), y] - (P * Z).sum(axis=1)).mean()) / T**2

    fit = cal.fit_temperature(Z, y)
    root = optimize.brentq(derivative, 1e-2, 1e2, xtol=1e-14)
    brent = optimize.minimize_scalar(
        lambda s: ref_nll(Z, y, math.exp(s)),
        bounds=(math.log(1e-2), math.log(1e2)),
        method="bounded",
        options={"xatol": 1e-10},
    )
    assert fit.converged and not fit.at_bound
    assert fit.temperature == pytest.approx(root, abs=1e-6)
    assert fit.temperature == pytest.approx(math.exp(brent.x), abs=1e-6)
    assert fit.nll_after == pytest.approx(ref_nll(Z, y, fit.temperature), abs=EXACT)
    assert fit.nll_before == pytest.approx(ref_nll(Z, y), abs=EXACT)


def test_fit_temperature_reports_bounds_and_flat_cases():
    y = np.arange(20) % 4
    separable = 10.0 * np.eye(4)[y]  # all right with margin 10: the NLL decreases as T -> 0
    fit = cal.fit_temperature(separable, y, bounds=(0.05, 20.0))
    assert (fit.temperature, fit.at_bound, fit.converged) == (0.05, True, False)
    wrong = -separable  # all wrong: the NLL decreases as T -> infinity
    fit = cal.fit_temperature(wrong, y, bounds=(0.05, 20.0))
    assert (fit.temperature, fit.at_bound, fit.converged) == (20.0, True, False)
    flat = cal.fit_temperature(np.zeros((20, 4)), y)  # the NLL is log 4 whatever T
    assert (flat.temperature, flat.converged, flat.nll_after) == (1.0, True, pytest.approx(math.log(4), abs=1e-15))
    Z, y = calibrated(500, 5, seed=3)
    outside = cal.fit_temperature(Z, y, bounds=(2.0, 5.0))  # optimum near 1, below the bounds
    assert (outside.temperature, outside.at_bound) == (2.0, True)
    assert outside.nll_before == pytest.approx(ref_nll(Z, y), abs=EXACT)  # T = 1 even outside the bounds
    capped = cal.fit_temperature(3.0 * Z, y, max_iterations=2)
    assert not capped.converged and capped.iterations == 2 and math.isfinite(capped.temperature)


def test_ece_temperature():
    Z, y = calibrated(2000, 10, seed=11)
    fit = cal.ece_temperature(3.0 * Z, y, n_bins=15)
    assert fit.ece_after <= fit.ece_before  # T = 1 is a candidate: guaranteed by construction
    assert fit.ece_after == cal.ece(3.0 * Z, y, n_bins=15, temperature=fit.temperature)  # same computation
    # the ECE-optimal T of data 3x overconfident: near 3, loosely (ECE is noisy at N = 2000 and not unique)
    assert 1.5 < fit.temperature < 6.0, fit
    assert not fit.at_bound and fit.evaluations > 65


# ----------------------------------------------------------------------------- streaming


def assert_same_statistics(a: cal.BinStatistics, b: cal.BinStatistics) -> None:
    assert a.n == b.n and a.temperature == b.temperature
    for name in ("count", "correct_sum", "class_count", "class_hit_sum"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))  # integer counts: exact
    for name in ("confidence_sum", "class_probability_sum"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=EXACT, atol=EXACT)
    assert a.nll_sum == pytest.approx(b.nll_sum, rel=EXACT)
    assert a.brier_sum == pytest.approx(b.brier_sum, rel=EXACT)
    for measure in ("ece", "classwise_ece", "nll", "brier", "accuracy"):
        assert getattr(a, measure) == pytest.approx(getattr(b, measure), abs=EXACT)


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 10_000, None])
def test_chunks_and_merged_batches_equal_the_whole(chunk_size):
    Z, y = random_case(5, N=257, K=4)
    whole = cal.bin_statistics(Z, y, n_bins=20, temperature=1.5)
    chunked = cal.bin_statistics(Z, y, n_bins=20, temperature=1.5, chunk_size=chunk_size)
    assert_same_statistics(chunked, whole)
    cuts = [0, 3, 100, 101, 257]
    batches = [cal.bin_statistics(Z[a:b], y[a:b], n_bins=20, temperature=1.5) for a, b in itertools.pairwise(cuts)]
    assert_same_statistics(sum(batches), whole)  # type: ignore[arg-type]
    assert_same_statistics(batches[0] + batches[1] + batches[2] + batches[3], whole)


def test_float32_and_memory_mapped_inputs(tmp_path):
    Z, y = random_case(9, N=500, K=8)
    Z32 = Z.astype(np.float32)
    reference = cal.bin_statistics(Z32.astype(np.float64), y)
    assert_same_statistics(cal.bin_statistics(Z32, y, chunk_size=33), reference)  # float32 read as float64
    np.save(tmp_path / "z.npy", Z32)
    mapped = np.load(tmp_path / "z.npy", mmap_mode="r")
    assert_same_statistics(cal.bin_statistics(mapped, y, chunk_size=33), reference)
    assert cal.fit_temperature(mapped, y, chunk_size=50).temperature == pytest.approx(
        cal.fit_temperature(Z32.astype(np.float64), y).temperature, rel=1e-9
    )  # 10 x the solver's tolerance: different chunk sums, then a Newton step below tol


def test_merge_refuses_what_does_not_add():
    Z, y = random_case(1, N=50, K=3)
    base = cal.bin_statistics(Z, y)
    for other in (
        cal.bin_statistics(Z, y, n_bins=7),
        cal.bin_statistics(Z, y, temperature=2.0),
        cal.bin_statistics(Z, y, classwise=False),
        cal.bin_statistics(np.hstack([Z, Z]), y),
        "statistics",
    ):
        with pytest.raises(ValueError, match=r"^other "):
            base.merge(other)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="classwise"):
        _ = cal.bin_statistics(Z, y, classwise=False).classwise_ece


def test_logits_from_features():
    rng = np.random.default_rng(4)
    H, W, b = rng.normal(size=(30, 5)), rng.normal(size=(3, 5)), rng.normal(size=3)
    expected = np.array([[sum(W[k, j] * H[i, j] for j in range(5)) + b[k] for k in range(3)] for i in range(30)])
    np.testing.assert_allclose(cal.logits_from_features(H, W, b), expected, atol=EXACT)
    np.testing.assert_allclose(cal.logits_from_features(H, W), expected - b, atol=EXACT)


# ----------------------------------------------------------------------------- hostile inputs

Z0, Y0 = random_case(0, N=12, K=3)
FUNCTIONS = {
    "ece": cal.ece,
    "adaptive_ece": cal.adaptive_ece,
    "classwise_ece": cal.classwise_ece,
    "reliability_diagram": lambda *a, **k: cal.reliability_diagram(*a, **k).count,  # NaN for empty bins
    "bin_statistics": lambda *a, **k: cal.bin_statistics(*a, **k).ece,
}
NO_BINS = {"nll": cal.nll, "brier": cal.brier}
FITS = {"fit_temperature": cal.fit_temperature, "ece_temperature": cal.ece_temperature}
ALL = {**FUNCTIONS, **NO_BINS, **FITS}

BAD_DATA = [
    ("logits", np.full((3, 2), np.nan), [0, 1, 0]),
    ("logits", np.array([[0.0, np.inf], [0, 0], [0, 0]]), [0, 1, 0]),
    ("logits", np.zeros(3), [0, 1, 0]),
    ("logits", np.zeros((0, 3)), []),
    ("logits", [["a", "b"]], [0]),
    ("logits", None, [0]),
    ("logits", np.zeros((2, 2), dtype=complex), [0, 1]),
    ("logits", np.array([[1e308, -1e308]]), [1]),  # the NLL overflows
    ("labels", np.zeros((3, 2)), [0, 1]),
    ("labels", np.zeros((3, 2)), [0, 1, 2]),
    ("labels", np.zeros((3, 2)), [0, -1, 1]),
    ("labels", np.zeros((3, 2)), [0.5, 1, 1]),
    ("labels", np.zeros((3, 2)), [np.nan, 1, 1]),
    ("labels", np.zeros((3, 2)), np.array([True, False, True])),
    ("labels", np.zeros((3, 2)), [[0, 1, 1]]),
]


@pytest.mark.parametrize("function", ALL)
@pytest.mark.parametrize(("name", "logits", "labels"), BAD_DATA)
def test_bad_data_named(function, name, logits, labels):
    with pytest.raises(ValueError, match=rf"^{name}\b"):
        ALL[function](logits, labels)


BAD_OPTIONS = [
    ("n_bins", 0),
    ("n_bins", 2.5),
    ("n_bins", "15"),
    ("n_bins", True),
    ("n_bins", None),
    ("temperature", 0.0),
    ("temperature", -1.0),
    ("temperature", math.nan),
    ("temperature", math.inf),
    ("temperature", "1"),
    ("temperature", 1e-320),  # finite logits / T overflow: refused, naming temperature
    ("chunk_size", 0),
    ("chunk_size", 1.5),
]


@pytest.mark.parametrize(
    ("function", "name", "value"),
    [(f, name, v) for f in [*FUNCTIONS, *NO_BINS] for name, v in BAD_OPTIONS if f in FUNCTIONS or name != "n_bins"],
)
def test_bad_options_named(function, name, value):
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        ALL[function](Z0, Y0, **{name: value})


@pytest.mark.parametrize(
    ("function", "name", "value"),
    [
        (function, name, value)
        for function in FITS
        for name, value in [
            ("bounds", (0.0, 1.0)),
            ("bounds", (2.0, 1.0)),
            ("bounds", (1.0, 1.0)),
            ("bounds", (1.0,)),
            ("bounds", None),
            ("bounds", (math.nan, 1.0)),
            ("bounds", (1.0, math.inf)),
            ("chunk_size", -3),
        ]
    ]
    + [("fit_temperature", "tol", v) for v in (0.0, 1.0, math.nan, "x")]
    + [("fit_temperature", "max_iterations", v) for v in (0, 1.5)]
    + [("ece_temperature", "grid", v) for v in (1, 10**6, 2.5)]
    + [("ece_temperature", "n_bins", v) for v in (0, None)],
)
def test_bad_fit_options_named(function, name, value):
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        FITS[function](Z0, Y0, **{name: value})


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("features", (np.full((4, 2), np.nan), np.ones((3, 2)))),
        ("features", (np.ones(4), np.ones((3, 2)))),
        ("weight", (np.ones((4, 2)), np.ones((3, 5)))),
        ("weight", (np.ones((4, 2)), "w")),
        ("bias", (np.ones((4, 2)), np.ones((3, 2)), np.ones(2))),
        ("bias", (np.ones((4, 2)), np.ones((3, 2)), [np.nan] * 3)),
        ("features", (np.full((1, 2), 1e300), np.full((3, 2), 1e300))),  # the logits overflow
    ],
)
def test_logits_from_features_refuses_named(name, args):
    with pytest.raises(ValueError, match=rf"^{name}\b"):
        cal.logits_from_features(*args)


# hostile values without the huge integers of tests._hostile.hostile: n_bins = 10**7 is valid and would
# allocate gigabytes of bins (refused only beyond free memory), not something to fuzz on a shared machine
small_hostile = st.one_of(
    st.sampled_from(SPECIALS), st.floats(allow_nan=True, allow_infinity=True), st.integers(-10, 50), st.text(max_size=4)
)


@pytest.mark.parametrize("function", [*FUNCTIONS, *NO_BINS])
@given(n_bins=small_hostile, temperature=small_hostile, chunk_size=small_hostile)
def test_hostile_options_keep_the_contract(function, n_bins, temperature, chunk_size):
    kw = {"temperature": temperature, "chunk_size": chunk_size}
    if function in FUNCTIONS:
        kw["n_bins"] = n_bins
    check_contract(lambda: ALL[function](Z0, Y0, **kw), list(kw))


@given(bounds=st.one_of(small_hostile, st.tuples(small_hostile, small_hostile)), tol=small_hostile)
def test_hostile_fit_options_keep_the_contract(bounds, tol):
    check_contract(lambda: cal.fit_temperature(Z0, Y0, bounds=bounds, tol=tol), ["bounds", "tol"])


def test_public_names():
    assert set(cal.__all__) <= set(dir(cal))
    assert len(cal.__all__) == len(set(cal.__all__)) == 14
