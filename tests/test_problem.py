"""ufm.problem: the seeded start (Problem.init) and the batch sizes of its random draws."""

import jax
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import ufm
from ufm import problem as problem_module
from ufm.problem import (
    _initial_params_compiled,
    _leading,
    _leading_compiled,
    _sample_count,
    _scaled_normals,
    initial_params,
)


@pytest.mark.parametrize(
    "kwargs",
    [dict(K=3, n=4, seed=7), dict(K=4, n=2, d=6, seed=0, nonnegative=True), dict(K=3, n=2, seed=1, dtype="float32")],
)
def test_compiled_initialisation_matches_the_eager_one(kwargs):
    """Problem.init runs compiled programs; they give the op-by-op arrays to within 2 units in the last
    place (XLA fuses the scaling into the sampler, which may round differently), and are deterministic."""
    problem = ufm.Problem(**kwargs)
    eager = initial_params(problem.seed, problem.init_scale, problem.d, problem.K, problem.N, problem.jnp_dtype)
    compiled = problem.init()
    H = np.abs(np.asarray(eager.H)) if problem.nonnegative else np.asarray(eager.H)
    for got, want in zip(compiled, (eager.W, H, eager.b), strict=True):
        assert np.asarray(got).dtype == np.asarray(want).dtype
        np.testing.assert_array_max_ulp(np.asarray(got), np.asarray(want), maxulp=2)  # fused rounding only
    for again, first in zip(problem.init(), compiled, strict=True):
        np.testing.assert_array_equal(np.asarray(again), np.asarray(first))  # deterministic: same bits


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(K=3, n=4, seed=7),  # both draws in the smallest batch (256)
        dict(K=16, n=256, seed=3, init_scale=0.37),  # d N = 2**16: the last power-of-two batch, exactly full
        dict(K=4, n=2500, d=7, seed=2**40),  # d N = 70,000: a batch of 73,728 (eighths of 2**17)
        dict(K=5, n=3, d=9, seed=11, dtype="float32"),
    ],
)
def test_init_is_the_exact_shape_program_bit_for_bit(kwargs):
    """Drawing a longer flat batch and keeping its first d K (d N) numbers changes no bit: the start
    every seeded result depends on is the one of the program compiled for exactly (d, K, N)."""
    problem = ufm.Problem(**kwargs)
    shapes = (problem.d, problem.K, problem.N, problem.jnp_dtype)
    exact = _initial_params_compiled(problem.seed, problem.init_scale, *shapes)
    for got, want in zip(problem.init(), exact, strict=True):
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))  # same bits, no tolerance


def test_without_partitionable_threefry_the_exact_program_runs():
    """With JAX's older threefry the numbers depend on the shape drawn, so a prefix of a longer draw
    differs (checked here, so the test can fail) and Problem.init falls back to the exact-shape program."""
    problem = ufm.Problem(K=3, n=4, seed=5)
    d, K, N, dtype = problem.d, problem.K, problem.N, problem.jnp_dtype
    with jax.threefry_partitionable(False):
        exact = _initial_params_compiled(problem.seed, problem.init_scale, d, K, N, dtype)
        prefix = _leading(_scaled_normals(problem.seed, 1, problem.init_scale, _sample_count(d * N), dtype), (d, N))
        assert not np.array_equal(np.asarray(prefix), np.asarray(exact.H))
        for got, want in zip(problem.init(), exact, strict=True):
            np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_the_accelerator_slice_is_the_host_one():
    """_leading takes the host path on a CPU; the compiled path an accelerator takes gives the same array."""
    flat = _scaled_normals(3, 1, 0.5, 256, jax.numpy.float64)
    host, compiled = _leading(flat, (7, 30)), _leading_compiled(flat, (7, 30))
    assert isinstance(host, jax.Array) and host.dtype == compiled.dtype and host.shape == compiled.shape
    np.testing.assert_array_equal(np.asarray(host), np.asarray(compiled))


@given(st.integers(1, 2**40))
def test_sample_count_covers_the_entries_with_little_waste(entries):
    count = _sample_count(entries)
    assert count >= max(entries, problem_module._FEWEST_DRAWN)
    if entries <= problem_module._POWER_OF_TWO_UP_TO:
        assert count & (count - 1) == 0 and (count < 2 * entries or count == problem_module._FEWEST_DRAWN)
    else:
        assert count < 1.25 * entries
    assert _sample_count(count) == count  # a batch size is its own batch
    assert _sample_count(entries + 1) >= count  # monotone


@given(st.integers(1, 4096), st.integers(1, 4096), st.integers(1, 2**14))
def test_small_starts_draw_w_and_h_in_one_batch_size(d, K, n):
    """One sampler program for both draws while the larger batch is a power of two (<= 2**16 numbers);
    otherwise each draw has its own batch. Either way each draw covers its array."""
    N = K * n
    count_W, count_H = problem_module._draw_counts(d, K, N)
    assert count_W >= d * K and count_H >= d * N
    larger = max(_sample_count(d * K), _sample_count(d * N))
    if larger <= problem_module._POWER_OF_TWO_UP_TO:
        assert count_W == count_H == larger
    else:
        assert (count_W, count_H) == (_sample_count(d * K), _sample_count(d * N))


def test_few_batch_sizes_serve_many_shapes():
    """Up to 2**20 entries: 9 powers of two (256 ... 2**16), then 4 sizes per doubling."""
    sizes = {_sample_count(entries) for entries in range(1, 2**20 + 1, 7)} | {_sample_count(2**20)}
    assert len(sizes) == 9 + 4 * 4


@pytest.mark.parametrize("K,n", [(2, 1), (3, 4), (10, 500)])
def test_labels_are_class_major_in_jax_default_integers(K, n):
    """ufm.objective.class_major_labels (built in numpy) is the array jnp.repeat(jnp.arange(K), n) builds."""
    labels = ufm.Problem(K=K, n=n).labels()
    expected = jax.numpy.repeat(jax.numpy.arange(K), n)
    assert labels.dtype == expected.dtype and labels.shape == (K * n,)
    np.testing.assert_array_equal(np.asarray(labels), np.asarray(expected))


@pytest.mark.parametrize("n", [50_000_000, 25_000_000])
def test_init_refuses_sizes_that_do_not_fit_naming_them(monkeypatch, n):
    # once: (10, 5e7, 10) aborted the process, (10, 2.5e7, 10) raised RESOURCE_EXHAUSTED
    monkeypatch.setattr(problem_module._memory, "free_bytes", lambda device=None: 8 * 2**30)
    with pytest.raises(ValueError, match=rf"not enough memory.*K = 10, n = {n}, d = 10"):
        ufm.Problem(K=10, n=n, d=10).init()
    assert ufm.Problem(K=10, n=5, d=10).init().H.shape == (10, 50)  # a small one still runs
