"""Fuzzing every public function of ``theory`` with hostile inputs (see ``tests/_hostile.py``).

``HYPOTHESIS_PROFILE=fuzz python -m pytest tests/test_fuzz_*.py`` runs 10,000 examples per test.
Free memory is reported as 32 MiB here so that every allocation the fuzzer asks for is either
small or refused by the memory guard (which is itself part of the contract).
"""

import dataclasses
import functools
import math

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import theory
from tests._hostile import check_contract, hostile, maybe
from theory import _host

K_ = maybe(st.integers(2, 12))
n_ = maybe(st.integers(1, 50))
d_ = maybe(st.integers(1, 16))
delta_ = maybe(st.floats(0, 1, exclude_max=True))
lam_ = maybe(st.floats(1e-12, 10))


@pytest.fixture(autouse=True, scope="module")
def _small_memory():
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_host, "free_bytes", lambda: 32 * 2**20)
        yield


@given(K_, n_, delta_, lam_, lam_)
def test_scalar_closed_forms(K, n, delta, lam_W, lam_H):
    names = ("K", "n", "delta", "lam_W", "lam_H")
    for function in (theory.phase, theory.a_delta, theory.probabilities, theory.norms, theory.logit_matrix):
        check_contract(functools.partial(function, K, n, delta=delta, lam_W=lam_W, lam_H=lam_H), names)


@given(K_, n_, d_, delta_, lam_, lam_, maybe(st.integers(0, 2**32)), st.one_of(st.none(), hostile))
def test_global_minimizer(K, n, d, delta, lam_W, lam_H, seed, P):
    check_contract(
        lambda: theory.global_minimizer(K, n, d, delta=delta, lam_W=lam_W, lam_H=lam_H, P=P, seed=seed),
        ("K", "n", "d", "delta", "lam_W", "lam_H", "seed", "P"),
    )


@given(K_, n_, d_, maybe(st.integers(0, 2**32)))
def test_matrices(K, n, d, seed):
    check_contract(lambda: theory.simplex_projector(K), ("K",))
    check_contract(lambda: theory.label_matrix(K, n), ("K", "n"))
    check_contract(lambda: theory.random_semi_orthogonal(d, K, seed), ("d", "K", "seed"))


@given(K_, n_, d_, delta_, lam_, lam_, st.one_of(st.none(), lam_), st.booleans())
def test_hessian_spectrum(K, n, d, delta, lam_W, lam_H, lam_b, regularized):
    check_contract(
        lambda: theory.hessian_spectrum(
            K, n, d, delta=delta, lam_W=lam_W, lam_H=lam_H, lam_b=lam_b, regularized=regularized
        ),
        ("K", "n", "d", "delta", "lam_W", "lam_H", "lam_b", "regularized"),
    )


@given(K_, delta_, lam_, n_, st.one_of(st.none(), lam_), maybe(st.just("raise")))
def test_condition_number(K, delta, lam, n, lam_H, beyond_boundary):
    check_contract(
        lambda: theory.condition_number(K, delta, lam, n=n, lam_H=lam_H, beyond_boundary=beyond_boundary),
        ("K", "delta", "lam", "n", "lam_H", "lam_W", "beyond_boundary"),
    )


LOSS_ = maybe(st.sampled_from(["ce", "ls", "focal", "mse"]))
gamma_ = maybe(st.floats(0, 5))
positive_ = maybe(st.floats(0.05, 5))


@given(
    K_,
    n_,
    d_,
    lam_,
    lam_,
    st.one_of(st.none(), maybe(st.floats(0, 1))),
    LOSS_,
    delta_,
    gamma_,
    positive_,
    positive_,
    st.one_of(st.booleans(), hostile),
)
def test_predict_every_loss(K, n, d, lam_W, lam_H, lam_b, loss, delta, gamma, mse_kappa, mse_beta, nonnegative):
    def call():
        prediction = theory.predict(
            K,
            n,
            d,
            lam_W=lam_W,
            lam_H=lam_H,
            lam_b=lam_b,
            loss=loss,
            delta=delta,
            gamma=gamma,
            mse_kappa=mse_kappa,
            mse_beta=mse_beta,
            nonnegative=nonnegative,
        )
        if prediction.collapsed:  # documented: kappa is NaN (undefined) exactly in the collapsed phase
            assert math.isnan(prediction.kappa_W) and math.isnan(prediction.kappa_H)
            return dataclasses.replace(prediction, kappa_W=0.0, kappa_H=0.0)
        return prediction

    check_contract(
        call,
        ("K", "n", "d", "lam_W", "lam_H", "lam_b", "loss", "delta", "gamma", "mse_kappa", "mse_beta", "nonnegative"),
    )


@given(LOSS_, K_, n_, lam_, lam_, delta_, gamma_, st.one_of(st.booleans(), hostile), maybe(st.floats(0, 50)), positive_)
# found by the 10,000-example profile: np.log of a K beyond uint64 (2**64 + 4096) raised a TypeError
@example(
    loss="ce",
    K=1.8446744073709556e19,
    n=1,
    lam_W=1.0,
    lam_H=1.0,
    delta=0.0,
    gamma=0.0,
    nonnegative=False,
    a=0.0,
    mse_kappa=1.0,
)
def test_scalar_reduction(loss, K, n, lam_W, lam_H, delta, gamma, nonnegative, a, mse_kappa):
    names = ("loss", "K", "n", "lam_W", "lam_H", "delta", "gamma", "nonnegative", "a", "mse_kappa")
    check_contract(
        lambda: theory.optimal_scale(
            loss, K, n, lam_W=lam_W, lam_H=lam_H, delta=delta, gamma=gamma, nonnegative=nonnegative
        ),
        names,
    )
    check_contract(lambda: theory.loss_derivatives(loss, K, a, delta=delta, gamma=gamma), names)
    check_contract(lambda: theory.logit_curvatures(loss, K, a, delta=delta, gamma=gamma, mse_kappa=mse_kappa), names)


@given(K_, n_, lam_, lam_, maybe(st.floats(0, 1)), positive_, positive_)
# found by the 10,000-example profile: K r overflowed in nonnegative_boundary (-inf returned as a result)
@example(K=1e150, n=1, lam_W=8.0, lam_H=4039625758913876.0, lam_b=0.0, mse_kappa=1.0, mse_beta=1.0)
def test_mse_optimum(K, n, lam_W, lam_H, lam_b, mse_kappa, mse_beta):
    check_contract(
        lambda: theory.mse_optimum(K, n, lam_W=lam_W, lam_H=lam_H, lam_b=lam_b, mse_kappa=mse_kappa, mse_beta=mse_beta),
        ("K", "n", "lam_W", "lam_H", "lam_b", "mse_kappa", "mse_beta"),
    )
    check_contract(lambda: theory.nonnegative_boundary(K, n, lam_W=lam_W, lam_H=lam_H), ("K", "n", "lam_W", "lam_H"))


@pytest.mark.parametrize("lam_W,lam_H", [(1e-3, 5e-324), (5e-324, 1e-3), (1.7e308, 5e-324), (1e300, 1e-300)])
def test_nonnegative_prediction_is_finite_where_lam_W_over_lam_H_overflows(lam_W, lam_H):
    # lam_W / lam_H beyond float64 once gave ||hbar_k|| = inf and ||w_k|| = 0 (nan with a = 0) as a prediction
    pred = theory.predict(2, 1, 2, delta=0.1, lam_W=lam_W, lam_H=lam_H, nonnegative=True)
    norms = (pred.a, pred.w_norm, pred.h_norm, pred.class_mean_norm)
    assert all(math.isfinite(x) for x in norms), norms
    # ||w_k|| ||hbar_k|| = a sqrt((K - 1) / K) at the minimizer (K = 2); rel 1e-12: a few roundings of each
    assert pred.w_norm * pred.class_mean_norm == pytest.approx(pred.a * math.sqrt(0.5), rel=1e-12)
