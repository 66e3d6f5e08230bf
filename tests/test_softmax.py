"""``theory.softmax``: the package's one softmax and log-softmax, against scipy's, and in place."""

import numpy as np
import pytest
import scipy.special

from theory.softmax import log_softmax, softmax

#: logits of several scales: ordinary, large (exp would overflow unshifted), spread (exp of the smallest
#: underflows to 0), and a row of equal values
CASES = [
    ("ordinary", np.random.default_rng(0).normal(size=(5, 7))),
    ("large", 800.0 + np.random.default_rng(1).normal(size=(4, 3))),
    ("spread", np.array([[0.0, -800.0, 3.0], [1e3, -1e3, 0.0]])),
    ("equal", np.full((2, 4), 3.5)),
]


@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("z", [z for _, z in CASES], ids=[name for name, _ in CASES])
def test_softmax_matches_scipy(z, axis):
    # rtol 1e-15 (a few ulp): the same exp and sum, possibly summed in another order
    assert np.allclose(softmax(z, axis=axis), scipy.special.softmax(z, axis=axis), rtol=1e-15, atol=0)
    expected = z - scipy.special.logsumexp(z, axis=axis, keepdims=True)
    # atol 1e-13 where a log-probability is 0 or near it; 1e-15 relative elsewhere
    assert np.allclose(log_softmax(z, axis=axis), expected, rtol=1e-15, atol=1e-13)


@pytest.mark.parametrize("z", [z for _, z in CASES], ids=[name for name, _ in CASES])
def test_in_place_gives_the_same_bits_and_the_sums(z):
    expected = softmax(z, axis=1)
    work = z.copy()
    probabilities, sums = softmax(work, axis=1, out=work, sums=True)
    assert probabilities is work  # no second array of z's size
    assert np.array_equal(work, expected)
    shifted = z - z.max(axis=1, keepdims=True)
    assert np.array_equal(sums, np.exp(shifted).sum(axis=1))
    # -log p_y from the sums stays finite where p_y itself underflows to 0 (the "spread" case)
    nll = np.log(sums) - shifted[:, 1]
    assert np.all(np.isfinite(nll))
    assert np.allclose(nll, -log_softmax(z, axis=1)[:, 1], rtol=1e-15, atol=1e-13)


def test_same_bits_as_the_inline_formula_it_replaced():
    # the quick-run outputs stay byte-identical only if every caller gets the very same numbers
    z = np.random.default_rng(2).normal(scale=30.0, size=(6, 9))
    e = np.exp(z - z.max(axis=0))
    assert np.array_equal(softmax(z, axis=0), e / e.sum(axis=0))
    shifted = z - z.max(axis=1, keepdims=True)
    assert np.array_equal(log_softmax(z, axis=1), shifted - np.log(np.sum(np.exp(shifted), axis=1, keepdims=True)))
