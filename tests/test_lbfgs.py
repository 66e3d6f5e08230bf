"""ufm._lbfgs: the compact L-BFGS direction equals the two-loop recursion; the line search and memory."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ufm import _lbfgs


def _two_loop(g, S, Y, gamma):
    """Nocedal & Wright, Algorithm 7.4, in numpy: -H g from the pairs (oldest first)."""
    q, alphas = g.copy(), []
    for s, y in reversed(list(zip(S, Y, strict=True))):
        alphas.append((s @ q) / (s @ y))
        q = q - alphas[-1] * y
    r = gamma * q
    for (s, y), alpha in zip(zip(S, Y, strict=True), reversed(alphas), strict=True):
        r = r + (alpha - (y @ r) / (s @ y)) * s
    return -r


def _quadratic(P, seed):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((P, P))
    A = A @ A.T / P + np.diag(np.geomspace(1e-2, 10.0, P))  # condition number ~1e3
    b = rng.standard_normal(P)
    return A, b, jax.jit(jax.value_and_grad(lambda x: 0.5 * x @ (jnp.asarray(A) @ x) - jnp.asarray(b) @ x))


@pytest.mark.parametrize("memory", [1, 2, 5, 10, 16])
def test_compact_direction_equals_the_two_loop_recursion(memory):
    P = 40
    _, _, value_and_grad = _quadratic(P, memory)
    x = jnp.asarray(np.random.default_rng(1).standard_normal(P))
    state = _lbfgs.init(x, *value_and_grad(x), memory=memory)
    direction = jax.jit(_lbfgs.direction)
    step = jax.jit(lambda s: _lbfgs.step(s, value_and_grad))
    S, Y = [], []
    for _ in range(3 * memory + 2):  # wraps the circular buffer more than twice
        gamma = (S[-1] @ Y[-1]) / (Y[-1] @ Y[-1]) if S else 1.0 / max(np.linalg.norm(state.grad), 1.0)
        expected = _two_loop(np.asarray(state.grad), S[-memory:], Y[-memory:], gamma)
        # two exact formulas for one matrix, so rounding only: observed <= 1e-15 of the largest entry
        # for memory <= 10, 1.4e-12 for 16 (the m x m products of the compact form grow with m)
        np.testing.assert_allclose(np.asarray(direction(state)), expected, rtol=0, atol=1e-10 * np.abs(expected).max())
        previous = state
        state, failed = step(state)
        assert not failed
        S.append(np.asarray(state.x - previous.x))
        Y.append(np.asarray(state.grad - previous.grad))


@pytest.mark.parametrize("m", [1, 2, 3, 7, 8, 9, 16])
def test_nilpotent_inverse_is_exact(m):
    rng = np.random.default_rng(m)
    order = rng.permutation(m)  # strictly upper triangular in a permuted order
    N = np.triu(rng.standard_normal((m, m)), 1)[np.ix_(order, order)]
    np.testing.assert_allclose(
        np.asarray(_lbfgs._nilpotent_inverse(jnp.asarray(N))), np.linalg.inv(np.eye(m) + N), rtol=0, atol=1e-12
    )


def test_converges_on_an_ill_conditioned_quadratic():
    P = 60
    A, b, value_and_grad = _quadratic(P, 7)
    x = jnp.zeros(P)
    state = _lbfgs.init(x, *value_and_grad(x))
    step = jax.jit(lambda s: _lbfgs.step(s, value_and_grad))
    g0 = float(jnp.linalg.norm(state.grad))
    steps = 0
    for _ in range(300):
        state, failed = step(state)
        steps += 1
        assert not failed
        if float(jnp.linalg.norm(state.grad)) <= 1e-10 * g0:
            break
    assert float(jnp.linalg.norm(state.grad)) <= 1e-10 * g0
    # the solution of A x = b (condition ~1e3): |x - x*| <= |A^-1| |grad| ~ 1e2 * 1e-10 |b|
    np.testing.assert_allclose(np.asarray(state.x), np.linalg.solve(A, b), atol=1e-7)
    assert steps <= 150  # observed ~60 for P = 60; gradient descent needs thousands


def test_a_failed_line_search_keeps_x_and_forgets_the_memory():
    good = jax.value_and_grad(lambda x: jnp.sum(x**2))
    x = jnp.asarray([1.0, -2.0, 0.5])
    # compiled: run eagerly, the line search's loops compile op by op (7 s instead of 1 s)
    state, _ = jax.jit(lambda s: _lbfgs.step(s, good))(_lbfgs.init(x, *good(x)))  # one stored pair
    assert bool(jnp.any(state.valid))
    wrong = lambda x: (jnp.sum(x**2), -2.0 * x)  # gradient of the wrong sign: every step goes uphill
    after, failed = jax.jit(lambda s: _lbfgs.step(s, wrong))(state._replace(grad=wrong(state.x)[1]))
    assert bool(failed)
    np.testing.assert_array_equal(np.asarray(after.x), np.asarray(state.x))
    assert not bool(jnp.any(after.valid))


def test_an_inactive_lane_is_left_unchanged():
    value_and_grad = jax.value_and_grad(lambda x: jnp.sum((x - 1.0) ** 2))
    x = jnp.asarray([3.0, -1.0])
    state = _lbfgs.init(x, *value_and_grad(x))
    after, completed, failed = jax.jit(lambda s: _lbfgs.evaluate(s, value_and_grad, active=False))(state)
    assert not bool(completed) and not bool(failed)
    for before, now in zip(state, after, strict=True):
        np.testing.assert_array_equal(np.asarray(now), np.asarray(before))
