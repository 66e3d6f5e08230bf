"""ufm.tracker: streamed, merged and in-memory statistics agree; exactness near collapse; NC4 second pass;
input types and named ValueErrors."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests._hostile import check_contract, hostile
from ufm.collapse_metrics import ClassStatistics, collapse_metrics
from ufm.tracker import CollapseResult, CollapseTracker, NCCPass

FIELDS = ("counts", "means", "global_mean", "scatter", "variances")


def _data(K, d, N, seed, offset=3.0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, K, N)
    labels[:K] = np.arange(K)  # every class present
    features = 2.0 * rng.standard_normal((K, d))[labels] + rng.standard_normal((N, d)) + offset
    return rng, features, labels, rng.standard_normal((K, d)), rng.standard_normal(K)


def _batches(rng, N):
    """Random batch boundaries (sizes 0 to 40)."""
    cuts = np.cumsum(rng.integers(0, 41, size=N))
    return [0] + [int(c) for c in cuts[cuts < N]] + [N]


def _stream(K, d, features, labels, bounds, buffer=None):
    tracker = CollapseTracker(K, d, buffer=buffer)
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        tracker.update(features[lo:hi], labels[lo:hi])
    return tracker


def _assert_same(a: ClassStatistics, b: ClassStatistics, rtol):
    np.testing.assert_array_equal(a.counts, b.counts)
    for name in FIELDS[1:]:
        x, y = getattr(a, name), getattr(b, name)
        np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol * np.max(np.abs(y)), err_msg=name)


@pytest.mark.parametrize("K,d,N", [(2, 1, 50), (3, 5, 200), (12, 8, 400), (40, 6, 500)])
def test_streamed_merged_and_in_memory_agree(K, d, N):
    rng, features, labels, weight, bias = _data(K, d, N, seed=K * d)
    whole = ClassStatistics.from_features(features, labels, K)
    streamed = _stream(K, d, features, labels, _batches(rng, N), buffer=17)  # buffer smaller and larger than batches
    # shuffled partitions; the first sees no sample of class 0, so merging must adopt the other's shift
    order = rng.permutation(N)
    order = np.concatenate([order[labels[order] != 0], order[labels[order] == 0]])
    parts = np.array_split(order, 4)
    assert not np.any(labels[parts[0]] == 0)
    merged = CollapseTracker(K, d)
    for part in parts:
        merged.merge(_stream(K, d, features[part], labels[part], _batches(rng, part.size), buffer=1))
    # O(1) features: different summation orders (and a shifted Gram) differ by a few hundred roundings
    _assert_same(streamed.statistics(), whole, rtol=1e-12)
    _assert_same(merged.statistics(), whole, rtol=1e-12)
    got, want = merged.result(weight, bias).metrics, collapse_metrics(whole, weight, bias)
    for name, value in want.items():
        assert got[name] == pytest.approx(value, rel=1e-9, abs=1e-12), name  # pinv amplifies by cond(Sigma_B)


def test_exact_near_collapse():
    # features = means of size ~10 + 1e-6 noise: the scatter is ~1e-12 per entry and sample
    K, d, N = 5, 16, 3000
    rng = np.random.default_rng(7)
    means = 10.0 * rng.standard_normal((K, d)) / np.sqrt(d) * 3
    labels = rng.permutation(np.arange(N) % K)
    features = means[labels] + 1e-6 * rng.standard_normal((N, d))
    # the two-pass centred reference: class means first, then the scatter of features - means
    mu = np.array([features[labels == k].mean(axis=0) for k in range(K)])
    within = features - mu[labels]
    centred = mu - features.mean(axis=0)
    sigma_B = centred.T @ centred / K
    reference = np.trace(within.T @ within / N @ np.linalg.pinv(sigma_B, rcond=10 * d * 2.2e-16)) / K

    streamed = _stream(K, d, features, labels, _batches(rng, N))
    parts = np.array_split(rng.permutation(N), 3)
    merged = CollapseTracker(K, d)
    for part in parts:
        merged.merge(_stream(K, d, features[part], labels[part], [0, part.size]))
    for tracker in (streamed, merged):
        assert tracker.result().metrics["nc1"] == pytest.approx(reference, rel=1e-9)

    # why the shifts: a plain Gram sum h h^T - sum_k n_k mu_k mu_k^T subtracts numbers ~100 N to get
    # ~1e-12 N; the rounding of the first (~1e-14 N) is ~1 % of the result, far beyond 1e-9
    plain = features.T @ features - (mu.T * np.bincount(labels)) @ mu
    unshifted = np.trace(plain / N @ np.linalg.pinv(sigma_B, rcond=10 * d * 2.2e-16)) / K
    assert abs(unshifted / reference - 1) > 1e-6


@given(
    seed=st.integers(0, 2**32 - 1),
    K=st.integers(2, 5),
    d=st.integers(1, 4),
    parts=st.integers(1, 4),
    buffer=st.sampled_from([1, 3, 16, None]),
)
def test_any_batches_buffers_and_partitions_agree(seed, K, d, parts, buffer):
    rng, features, labels, _, _ = _data(K, d, 30, seed)
    whole = ClassStatistics.from_features(features, labels, K)
    merged = CollapseTracker(K, d, buffer=buffer)
    for part in np.array_split(rng.permutation(30), parts):
        merged.merge(_stream(K, d, features[part], labels[part], _batches(rng, part.size), buffer))
    assert merged.num_samples == 30
    _assert_same(merged.statistics(), whole, rtol=1e-12)  # as above: O(1) numbers, O(100) roundings


def test_merge_into_itself_doubles():
    _, features, labels, _, _ = _data(3, 4, 60, seed=1)
    tracker = _stream(3, 4, features, labels, [0, 25, 60])
    twice = _stream(3, 4, np.vstack([features, features]), np.concatenate([labels, labels]), [0, 120])
    _assert_same(tracker.merge(tracker).statistics(), twice.statistics(), rtol=1e-12)


class _ArrayOnly:
    def __init__(self, array):
        self._array = array

    def __array__(self, dtype=None, copy=None):
        return self._array if dtype is None else self._array.astype(dtype)


class _DLPackOnly:
    def __init__(self, array):
        self._array = array

    def __dlpack__(self, **kwargs):
        return self._array.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._array.__dlpack_device__()


@pytest.mark.parametrize(
    "convert",
    [
        jnp.asarray,
        _ArrayOnly,
        _DLPackOnly,
        lambda x: x.tolist(),
        lambda x: x.astype(np.float32) if x.dtype.kind == "f" else x.astype(np.int32),
        lambda x: x.astype(np.float16) if x.dtype.kind == "f" else x.astype(np.float64),  # integral float labels
    ],
    ids=["jax", "__array__", "dlpack", "list", "float32", "float16"],
)
def test_input_types(convert):
    _, features, labels, weight, bias = _data(3, 4, 40, seed=2)
    features = np.round(features * 8) / 8  # exact in float16
    want = _stream(3, 4, features, labels, [0, 40]).statistics()
    tracker = CollapseTracker(3, 4, weight=convert(weight), bias=convert(bias)).update(
        convert(features), convert(labels)
    )
    _assert_same(tracker.statistics(), want, rtol=1e-15)  # the same float64 numbers in the same order
    ncc = tracker.ncc_pass().update(convert(features), convert(labels))
    assert tracker.result(ncc=ncc).metrics["ncc_accuracy"] >= 0.0


def test_integer_features():
    features = np.array([[1, 2], [3, 4], [-1, 0], [-3, 2]], dtype=np.int16)
    stats = CollapseTracker(2, 2).update(features, [0, 0, 1, 1]).statistics()
    np.testing.assert_array_equal(stats.means, [[2, 3], [-2, 1]])  # exact: small integers
    np.testing.assert_array_equal(stats.scatter, [[4, 0], [0, 4]])


def _direct_ncc(features, labels, means, weight, bias):
    nearest = np.argmin(((features[:, None, :] - means[None]) ** 2).sum(axis=2), axis=1)
    logits = features @ weight.T
    return {
        "ncc_accuracy": np.mean(nearest == labels),
        "ncc_agreement": np.mean(nearest == np.argmax(logits + bias, axis=1)),
        "ncc_agreement_nobias": np.mean(nearest == np.argmax(logits, axis=1)),
        "accuracy": np.mean(labels == np.argmax(logits + bias, axis=1)),
    }


def test_ncc_second_pass():
    rng, features, labels, weight, bias = _data(6, 5, 300, seed=4)
    bias = 5 * bias  # so that the bias changes some predictions
    tracker = _stream(6, 5, features, labels, _batches(rng, 300), buffer=7)  # passes buffer 7 rows too
    want = _direct_ncc(features, labels, tracker.statistics().means, weight, bias)
    whole = tracker.ncc_pass(weight, bias)
    split = [tracker.ncc_pass(weight, bias) for _ in range(3)]
    bounds = _batches(rng, 300)
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        whole.update(features[lo:hi], labels[lo:hi])
    for p, part in zip(split, np.array_split(np.arange(300), 3), strict=True):
        p.update(features[part], labels[part])
    merged = split[0].merge(split[1]).merge(split[2])
    # fractions of integer counts: the same decisions give the same numbers exactly (no near-ties here)
    assert merged.metrics() == pytest.approx(want, abs=1e-15)
    result = tracker.result(weight, bias, ncc=merged)
    assert isinstance(result, CollapseResult) and result.ncc and result.num_samples == 300
    assert {k: result.metrics[k] for k in want} == pytest.approx(want, abs=1e-15)
    assert want["ncc_agreement"] != want["ncc_agreement_nobias"]
    text = json.dumps(result.to_json())
    assert '"ncc_agreement"' in text and "Galanti" in text
    assert tracker.ncc_pass().metrics() == {"ncc_accuracy": pytest.approx(float("nan"), nan_ok=True)}


def _tracker():
    return CollapseTracker(3, 2).update(np.arange(8.0).reshape(4, 2), [0, 1, 2, 1])


def _call(method, *args, **kwargs):
    return lambda: getattr(_tracker(), method)(*args, **kwargs)


BAD = [  # (call, parameter named in the message)
    (lambda: CollapseTracker(1, 2), "num_classes"),
    (lambda: CollapseTracker(2.5, 2), "num_classes"),
    (lambda: CollapseTracker(3, 0), "dim"),
    (lambda: CollapseTracker(3, 2, buffer=0), "buffer"),
    (lambda: CollapseTracker(3, 10**7), "not enough memory"),
    (lambda: CollapseTracker(3, 2, weight=np.ones((2, 2))), "weight"),
    (lambda: CollapseTracker(3, 2, weight=np.ones((3, 2)), bias=np.ones(2)), "bias"),
    (lambda: CollapseTracker(3, 2, bias=np.ones(3)), "bias"),
    (_call("update", np.ones(2), [0, 1]), "features"),
    (_call("update", np.ones((2, 3)), [0, 1]), "features"),
    (_call("update", np.array([[1.0, np.nan]]), [0]), "features"),
    (_call("update", np.array([[1.0, np.inf]]), [0]), "features"),
    (_call("update", np.array([["a", "b"]]), [0]), "features"),
    (_call("update", None, [0]), "features"),
    (_call("update", np.ones((2, 2)), [0]), "labels"),
    (_call("update", np.ones((2, 2)), [[0, 1]]), "labels"),
    (_call("update", np.ones((2, 2)), [0, 3]), "labels"),
    (_call("update", np.ones((2, 2)), [-1, 0]), "labels"),
    (_call("update", np.ones((2, 2)), [0.5, 1.0]), "labels"),
    (_call("update", np.ones((2, 2)), [np.nan, 1.0]), "labels"),
    (_call("update", np.ones((2, 2)), ["a", "b"]), "labels"),
    (_call("merge", CollapseTracker(4, 2)), "other"),
    (_call("merge", CollapseTracker(3, 3)), "other"),
    (_call("merge", "tracker"), "other"),
    (_call("result", np.ones((3, 3))), "weight"),
    (_call("result", np.ones((3, 2)), np.ones(4)), "bias"),
    (_call("result", ncc="pass"), "ncc"),
    (lambda: CollapseTracker(3, 2).update(np.ones((1, 2)), [0]).statistics(), "labels: class 1"),
    (lambda: CollapseTracker(3, 2).ncc_pass(), "labels: class 0"),
]


@pytest.mark.parametrize("call,name", BAD)
def test_bad_input_names_the_parameter(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_stale_or_foreign_ncc_pass_refused():
    tracker = _tracker()
    ncc = tracker.ncc_pass(np.ones((3, 2)))
    other = _tracker().update(np.ones((1, 2)), [0]).ncc_pass(np.ones((3, 2)))
    with pytest.raises(ValueError, match="other"):
        ncc.merge(other)
    with pytest.raises(ValueError, match="other"):
        ncc.merge(tracker.ncc_pass())  # same means, no classifier
    tracker.update(np.ones((1, 2)), [2])
    with pytest.raises(ValueError, match="ncc"):
        tracker.result(ncc=ncc)
    assert isinstance(ncc, NCCPass)


# --------------------------------------------------------------------------- hostile inputs (tests/_hostile.py)


#: hostile values that are never huge valid sizes (num_classes = 10**7 is valid and would allocate)
_small_hostile = st.one_of(hostile.filter(lambda v: not (isinstance(v, int) and abs(v) > 64)), st.integers(-3, 6))


@given(num_classes=_small_hostile, dim=_small_hostile, features=_small_hostile, labels=_small_hostile)
def test_hostile_tracker_keeps_the_contract(num_classes, dim, features, labels):
    """Construction, an update, the statistics and the result: finite numbers or a ValueError naming a
    parameter (tests/_hostile.py). ``result`` of a tracker missing a class refuses naming ``labels``."""

    def call():
        tracker = CollapseTracker(num_classes, dim)
        tracker.update(features, labels)
        return tracker.result().metrics

    check_contract(call, ["num_classes", "dim", "features", "labels"])


@given(weight=_small_hostile, bias=_small_hostile, cdnv_power=_small_hostile)
def test_hostile_classifier_and_options_keep_the_contract(weight, bias, cdnv_power):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 4)
    features = rng.normal(size=(12, 4)) + 3.0 * np.eye(4)[labels]
    tracker = CollapseTracker(3, 4).update(features, labels)
    names = ["weight", "bias", "cdnv_power"]
    check_contract(lambda: tracker.result(weight, bias, cdnv_power=cdnv_power).metrics, names)
