"""L-BFGS for the class-mean reduction (method ``"reduced"``), built to stay cheap under ``jax.vmap``.

One iteration: the two-loop recursion (Nocedal & Wright, Algorithm 7.4) over the last
``memory`` pairs, then a backtracking line search from the unit step that halves the step
until it accepts. Acceptance is Armijo, ``f(x + t d) <= f(x) + c1 t g.d``, or the
approximate Wolfe condition of Hager & Zhang (2005, eq. 23),
``g(x + t d).d <= (2 c1 - 1) g.d`` with ``f(x + t d) <= f(x) + eps |f(x)|``, which is
Armijo evaluated from slopes and stays decidable once the decrease of f is below its
rounding error (near a minimizer at a 1e-10 gradient tolerance, plain Armijo fails there).
A pair (s, y) is stored only when ``s.y > 1e-10 y.y`` (positive curvature), which keeps the
inverse-Hessian model positive definite without a Wolfe curvature condition.

Why not ``optax.lbfgs``: its zoom line search needs about 20 objective evaluations per
iteration once it runs under ``vmap`` (the batched ``while_loop`` runs until the slowest
member accepts, and zoom brackets and interpolates), and its backtracking variant does not
reach a 1e-10 gradient tolerance here (plain Armijo). This line search accepts the unit
step in almost every iteration, so one iteration costs one evaluation of f and its gradient.

Under ``vmap`` (:mod:`ufm.sweep`) the cost of an iteration is set by the number of XLA
operations and the passes over the pair buffer, not by the arithmetic, so the direction uses
the compact representation (two products with the buffer) rather than the two-loop
recursion (4 m dependent vector operations), and the buffer is circular (no copies).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

MEMORY = 10
ARMIJO_C1 = 1e-4
#: Relative increase of f tolerated by the approximate Wolfe condition (rounding of f in float64).
APPROXIMATE_EPS = 1e-12
#: Halvings of the step before the line search gives up (2**-30 ~ 1e-9).
MAX_HALVINGS = 30


class State(NamedTuple):
    """L-BFGS state of one problem (flat vectors of length P, ``m = memory``).

    ``x, grad (P,)``, ``value ()``; ``pairs (2, m, P)``: the steps s (``pairs[0]``) and gradient
    differences y (``pairs[1]``) in a circular buffer; ``sy (m, m)`` with ``sy[i, j] = s_i . y_j``
    and ``yy (m, m)`` with ``yy[i, j] = y_i . y_j`` (updated one row and column per stored pair);
    ``age (m,)``: 0 for the newest pair, increasing with age; ``valid (m,)``: the pairs in use.
    """

    x: jnp.ndarray
    value: jnp.ndarray
    grad: jnp.ndarray
    pairs: jnp.ndarray
    sy: jnp.ndarray
    yy: jnp.ndarray
    age: jnp.ndarray
    valid: jnp.ndarray


def init(x, value, grad, memory: int = MEMORY) -> State:
    """The state at ``x`` with ``value = f(x)``, ``grad = grad f(x)`` and an empty memory."""
    P, dt = x.shape[0], x.dtype
    return State(x, value, grad, jnp.zeros((2, memory, P), dt), jnp.zeros((memory, memory), dt),
                 jnp.zeros((memory, memory), dt), jnp.arange(memory, dtype=jnp.int32),
                 jnp.zeros((memory,), bool))


def _nilpotent_inverse(N):
    """``(I + N)^-1`` for ``N (m, m)`` with ``N^m = 0``: ``(I - N)(I + N^2)(I + N^4)...`` (exact)."""
    m = N.shape[0]
    eye = jnp.eye(m, dtype=N.dtype)
    inverse, power, k = eye - N, N @ N, 2
    while k < m:
        inverse = inverse @ (eye + power)
        power, k = power @ power, 2 * k
    return inverse


def direction(state: State) -> jnp.ndarray:
    """``-H g``: H the L-BFGS inverse-Hessian model in the compact form of Byrd, Nocedal & Schnabel
    (1994, eq. 3.13), ``H = gamma I + [S  gamma Y] [[R^-T (D + gamma Y^T Y) R^-1, -R^-T], [-R^-1, 0]]
    [S  gamma Y]^T`` with ``R`` the upper triangle (in the pairs' chronological order) of ``S^T Y``,
    ``D`` its diagonal and ``gamma = s.y / y.y`` of the newest pair (``1 / max(|g|, 1)`` with no pair).
    The same H as the two-loop recursion (Nocedal & Wright, Algorithm 7.4; tested), but two products
    with the buffer and a few m x m operations instead of 4 m vector operations.
    R^-1 is exact: ``R = D (I + N)`` with N nilpotent (strictly upper triangular in age order).
    """
    valid = state.valid
    dt = state.x.dtype
    both = valid[:, None] & valid[None, :]
    sy = jnp.where(both, state.sy, 0.0)
    yy = jnp.where(both, state.yy, 0.0)
    diagonal = jnp.where(valid, jnp.diagonal(sy), 1.0)
    older_or_same = state.age[:, None] >= state.age[None, :]      # i no younger than j: R's upper part
    N = jnp.where(older_or_same & ~jnp.eye(len(valid), dtype=bool), sy, 0.0) / diagonal[:, None]
    inverse = _nilpotent_inverse(N)                               # R^-1 = inverse @ diag(1 / diagonal)
    newest = jnp.argmin(state.age)
    have_pair = valid[newest]
    gamma = jnp.where(have_pair, sy[newest, newest] / jnp.where(have_pair, yy[newest, newest], 1.0),
                      1.0 / jnp.maximum(jnp.linalg.norm(state.grad), 1.0)).astype(dt)
    u, v = jnp.where(valid, state.pairs @ state.grad, 0.0)        # S^T g, Y^T g
    t = inverse @ (u / diagonal)                                  # R^-1 S^T g
    p = (inverse.T @ (diagonal * t + gamma * (yy @ t) - gamma * v)) / diagonal
    Hg = gamma * state.grad + jnp.einsum("km,kmp->p", jnp.stack([p, -gamma * t]), state.pairs)
    return -Hg


def step(state: State, value_and_grad: Callable, active=True) -> tuple[State, jnp.ndarray]:
    """One L-BFGS iteration. Returns ``(new_state, failed)``.

    ``failed`` is True when no step of ``MAX_HALVINGS`` halvings was accepted; the state then
    keeps x and forgets its memory (the next iteration is a steepest-descent step). A failure
    with an empty memory means f cannot be decreased at this precision. ``active=False``
    leaves the state unchanged (one evaluation of f; no line search): the lanes of a batched
    sweep that have no problem to solve.
    """
    d = direction(state)
    slope = jnp.dot(state.grad, d)
    uphill = ~(slope < 0)                      # not a descent direction (or nan): steepest descent
    d = jnp.where(uphill, -state.grad, d)
    slope = jnp.where(uphill, -jnp.dot(state.grad, state.grad), slope)
    one = jnp.ones((), state.value.dtype)

    def accepted(t, value, grad):
        armijo = value <= state.value + ARMIJO_C1 * t * slope
        approximate = (jnp.dot(grad, d) <= (2 * ARMIJO_C1 - 1) * slope) & (
            value <= state.value + APPROXIMATE_EPS * jnp.abs(state.value))
        return armijo | approximate        # False for a nan value or gradient

    def searching(carry):
        t, value, grad, halvings = carry
        return active & ~accepted(t, value, grad) & (halvings < MAX_HALVINGS)

    def halve(carry):
        t, _, _, halvings = carry
        t = 0.5 * t
        value, grad = value_and_grad(state.x + t * d)
        return t, value, grad, halvings + 1

    value1, grad1 = value_and_grad(state.x + d)
    t, value, grad, _ = jax.lax.while_loop(searching, halve, (one, value1, grad1, 0))
    ok = active & accepted(t, value, grad)
    failed = active & ~ok
    s = t * d
    y = grad - state.grad
    sy = jnp.dot(s, y)
    store = ok & (sy > 1e-10 * jnp.dot(y, y))
    oldest = jnp.argmax(state.age)
    slot = (jnp.arange(state.age.shape[0]) == oldest) & store
    pairs = jnp.where(slot[None, :, None], jnp.stack([s, y])[:, None, :], state.pairs)
    products = pairs @ jnp.stack([s, y], axis=1)                  # (2, m, 2): S.s, S.y, Y.s, Y.y
    s_y, y_s, y_y = products[0, :, 1], products[1, :, 0], products[1, :, 1]
    row, column = slot[:, None], slot[None, :]
    new = State(
        x=jnp.where(ok, state.x + s, state.x),
        value=jnp.where(ok, value, state.value),
        grad=jnp.where(ok, grad, state.grad),
        pairs=pairs,
        sy=jnp.where(row, y_s[None, :], jnp.where(column, s_y[:, None], state.sy)),
        yy=jnp.where(row, y_y[None, :], jnp.where(column, y_y[:, None], state.yy)),
        age=jnp.where(store, jnp.where(slot, 0, state.age + 1), state.age),
        valid=jnp.where(failed, False, state.valid | slot),         # a failure forgets every pair
    )
    return new, failed
