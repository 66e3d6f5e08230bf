"""L-BFGS for the class-mean reduction (method ``"reduced"``), built to stay cheap under ``jax.vmap``.

One iteration: the L-BFGS direction over the last ``memory`` pairs, then a backtracking line
search from the unit step that halves the step until it accepts, one evaluation per call of
:func:`evaluate`. Acceptance is Armijo, ``f(x + t d) <= f(x) + c1 t g.d``, or the
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
step in ~93% of iterations (measured over 9 (delta, lambda) at K = 10, n = 50), so an
iteration costs about 1.1 evaluations of f and its gradient.

Under ``vmap`` (:mod:`ufm.sweep`) the cost of an iteration is set by the number of XLA
operations and the passes over the pair buffer, not by the arithmetic, so the direction uses
the compact representation (two products with the buffer) rather than the two-loop
recursion (4 m dependent vector operations), the buffer is circular (one row written per
iteration) and the m x m products are updated from one product of the buffer with the new gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

#: Pairs kept. Over 1,000 configurations of benchmarks/sweep.py memory 3 / 5 / 10 needed 160,863 /
#: 157,572 / 156,939 iterations in all, while the cost of an iteration under vmap grows with it.
MEMORY = 5
ARMIJO_C1 = 1e-4
#: Relative increase of f tolerated by the approximate Wolfe condition (rounding of f in float64).
APPROXIMATE_EPS = 1e-12
#: Halvings of the step before the line search gives up (2**-30 ~ 1e-9).
MAX_HALVINGS = 30


class State(NamedTuple):
    """L-BFGS state of one problem (flat vectors of length P, ``m = memory``).

    ``x, grad (P,)``, ``value ()``; ``pairs (2, m, P)``: the steps s (``pairs[0]``) and gradient
    differences y (``pairs[1]``) in a circular buffer; ``sy (m, m)`` with ``sy[i, j] = s_i . y_j``
    and ``yy (m, m)`` with ``yy[i, j] = y_i . y_j``; ``sg, yg (m,)``: ``s_i . grad`` and ``y_i . grad``;
    ``age (m,)``: 0 for the newest pair, increasing with age; ``valid (m,)``: the pairs in use.
    Entries of rows that are not valid are stale and never read unmasked. The line search in
    progress: ``direction (P,)``, ``y_direction = Y^T direction (m,)``, ``slope = grad . direction``,
    the last trial step ``t``, ``halvings`` so far and ``searching`` (a line search is under way).
    """

    x: jnp.ndarray
    value: jnp.ndarray
    grad: jnp.ndarray
    pairs: jnp.ndarray
    sy: jnp.ndarray
    yy: jnp.ndarray
    sg: jnp.ndarray
    yg: jnp.ndarray
    age: jnp.ndarray
    valid: jnp.ndarray
    direction: jnp.ndarray
    y_direction: jnp.ndarray
    slope: jnp.ndarray
    t: jnp.ndarray
    halvings: jnp.ndarray
    searching: jnp.ndarray


def init(x, value, grad, memory: int = MEMORY) -> State:
    """The state at ``x`` with ``value = f(x)``, ``grad = grad f(x)`` and an empty memory."""
    P, dt = x.shape[0], x.dtype
    zeros = lambda *shape: jnp.zeros(shape, dt)
    return State(
        x,
        value,
        grad,
        zeros(2, memory, P),
        zeros(memory, memory),
        zeros(memory, memory),
        zeros(memory),
        zeros(memory),
        jnp.arange(memory, dtype=jnp.int32),
        jnp.zeros((memory,), bool),
        zeros(P),
        zeros(memory),
        zeros(),
        zeros(),
        jnp.zeros((), jnp.int32),
        jnp.zeros((), bool),
    )


def _mm(A, B):
    """``A @ B`` for small m x m matrices as a fused multiply-and-sum (a ``dot`` is a separate XLA
    kernel with a fixed cost that dominates at this size)."""
    return jnp.sum(A[..., :, :, None] * B[..., None, :, :], axis=-2)


def _mv(A, v):
    """``A @ v`` for a small matrix, fused like :func:`_mm`."""
    return jnp.sum(A * v[..., None, :], axis=-1)


def _nilpotent_inverse(N):
    """``(I + N)^-1`` for ``N (m, m)`` with ``N^m = 0``: ``(I - N)(I + N^2)(I + N^4)...`` (exact)."""
    m = N.shape[0]
    eye = jnp.eye(m, dtype=N.dtype)
    inverse, power, k = eye - N, _mm(N, N), 2
    while k < m:
        inverse = _mm(inverse, eye + power)
        power, k = _mm(power, power), 2 * k
    return inverse


def _direction(state: State):
    """``(d, Y d)``: the direction of :func:`direction` and its products with the stored y (from
    the m x m quantities, without reading the buffer)."""
    valid = state.valid
    dt = state.x.dtype
    both = valid[:, None] & valid[None, :]
    sy = jnp.where(both, state.sy, 0.0)
    yy = jnp.where(both, state.yy, 0.0)
    diagonal = jnp.where(valid, jnp.diagonal(sy), 1.0)
    older_or_same = state.age[:, None] >= state.age[None, :]  # i no younger than j: R's upper part
    N = jnp.where(older_or_same & ~jnp.eye(len(valid), dtype=bool), sy, 0.0) / diagonal[:, None]
    inverse = _nilpotent_inverse(N)  # R^-1 = inverse @ diag(1 / diagonal)
    newest = jnp.argmin(state.age)
    have_pair = valid[newest]
    gamma = jnp.where(
        have_pair,
        sy[newest, newest] / jnp.where(have_pair, yy[newest, newest], 1.0),
        1.0 / jnp.maximum(jnp.linalg.norm(state.grad), 1.0),
    ).astype(dt)
    u, v = jnp.where(valid, state.sg, 0.0), jnp.where(valid, state.yg, 0.0)  # S^T g, Y^T g
    t = _mv(inverse, u / diagonal)  # R^-1 S^T g
    yy_t = _mv(yy, t)
    p = _mv(inverse.T, diagonal * t + gamma * yy_t - gamma * v) / diagonal
    Hg = gamma * state.grad + jnp.einsum("km,kmp->p", jnp.stack([p, -gamma * t]), state.pairs)
    YHg = gamma * v + _mv(sy.T, p) - gamma * yy_t  # Y^T H g (valid rows)
    return -Hg, -YHg


def direction(state: State) -> jnp.ndarray:
    """``-H g``: H the L-BFGS inverse-Hessian model in the compact form of Byrd, Nocedal & Schnabel
    (1994, eq. 3.13), ``H = gamma I + [S  gamma Y] [[R^-T (D + gamma Y^T Y) R^-1, -R^-T], [-R^-1, 0]]
    [S  gamma Y]^T`` with ``R`` the upper triangle (in the pairs' chronological order) of ``S^T Y``,
    ``D`` its diagonal and ``gamma = s.y / y.y`` of the newest pair (``1 / max(|g|, 1)`` with no pair).
    The same H as the two-loop recursion (Nocedal & Wright, Algorithm 7.4; tested), but one pass
    over the buffer and a few m x m operations instead of 4 m dependent vector operations.
    R^-1 is exact: ``R = D (I + N)`` with N nilpotent (strictly upper triangular in age order).
    """
    return _direction(state)[0]


def evaluate(state: State, value_and_grad: Callable, active=True):
    """One evaluation of f and its gradient: the unit step along a new direction, or, while a line
    search is under way, half the previous trial step. Returns ``(new_state, completed, failed)``.

    ``completed``: an iteration ended: a step was accepted (x, the memory and the products move
    on), or ``MAX_HALVINGS`` halvings were refused (``failed``: x stays and the memory is
    forgotten, so the next iteration is a steepest-descent step; a failure with an empty memory
    means f cannot be decreased at this precision). ``active=False`` leaves the state unchanged.

    One evaluation per call, with no inner loop: under ``vmap`` each lane makes progress at every
    call, whether it is starting an iteration or backtracking (a ``while_loop`` line search would
    make every lane wait for the one that backtracks longest).

    The buffer is read twice per accepted step (the direction, and ``S^T g, Y^T g`` at the new
    gradient) and written once (the new pair); the new row and column of ``S^T Y`` and ``Y^T Y``
    follow from those products: ``S^T y = S^T g_new - S^T g``, ``Y^T y = Y^T g_new - Y^T g`` and
    ``Y^T s = t Y^T d`` with ``Y^T d`` from :func:`_direction`.
    """
    fresh, fresh_y = _direction(state)
    fresh_slope = jnp.dot(state.grad, fresh)
    uphill = ~(fresh_slope < 0)  # not a descent direction (or nan): steepest descent
    fresh = jnp.where(uphill, -state.grad, fresh)
    fresh_y = jnp.where(uphill, -state.yg, fresh_y)
    fresh_slope = jnp.where(uphill, -jnp.dot(state.grad, state.grad), fresh_slope)
    searching = state.searching
    d = jnp.where(searching, state.direction, fresh)
    Yd = jnp.where(searching, state.y_direction, fresh_y)
    slope = jnp.where(searching, state.slope, fresh_slope)
    t = jnp.where(searching, 0.5 * state.t, jnp.ones((), state.value.dtype))
    halvings = jnp.where(searching, state.halvings + 1, 0)
    value, grad = value_and_grad(state.x + t * d)
    armijo = value <= state.value + ARMIJO_C1 * t * slope
    approximate = (jnp.dot(grad, d) <= (2 * ARMIJO_C1 - 1) * slope) & (
        value <= state.value + APPROXIMATE_EPS * jnp.abs(state.value)
    )
    ok = active & (armijo | approximate)  # False for a nan value or gradient
    failed = active & ~ok & (halvings >= MAX_HALVINGS)
    completed = ok | failed

    grad = jnp.where(ok, grad, state.grad)
    s = t * d
    y = grad - state.grad
    sy_new = jnp.dot(s, y)
    store = ok & (sy_new > 1e-10 * jnp.dot(y, y))
    sg, yg = state.pairs @ grad  # old buffer, new gradient
    Sy, Yy, Ys = sg - state.sg, yg - state.yg, t * Yd
    slot = jnp.argmax(state.age)  # the oldest pair makes room
    at = (jnp.arange(state.age.shape[0]) == slot) & store
    row, column = at[:, None], at[None, :]
    sy = jnp.where(row, Ys[None, :], jnp.where(column, Sy[:, None], state.sy))
    yy = jnp.where(row, Yy[None, :], jnp.where(column, Yy[:, None], state.yy))
    keep = lambda new, old: jnp.where(active, new, old)
    new = State(
        x=jnp.where(ok, state.x + s, state.x),
        value=jnp.where(ok, value, state.value),
        grad=grad,
        pairs=state.pairs.at[:, slot].set(jnp.where(store, jnp.stack([s, y]), state.pairs[:, slot])),
        sy=jnp.where(row & column, sy_new, sy),
        yy=jnp.where(row & column, jnp.dot(y, y), yy),
        sg=jnp.where(at, jnp.dot(s, grad), jnp.where(ok, sg, state.sg)),
        yg=jnp.where(at, jnp.dot(y, grad), jnp.where(ok, yg, state.yg)),
        age=jnp.where(store, jnp.where(at, 0, state.age + 1), state.age),
        valid=jnp.where(failed, False, state.valid | at),  # a failure forgets every pair
        direction=keep(d, state.direction),
        y_direction=keep(Yd, state.y_direction),
        slope=keep(slope, state.slope),
        t=keep(t, state.t),
        halvings=keep(halvings, state.halvings),
        searching=active & ~completed,
    )
    return new, completed, failed


def step(state: State, value_and_grad: Callable) -> tuple[State, jnp.ndarray]:
    """One whole iteration: :func:`evaluate` until it completes. Returns ``(new_state, failed)``."""

    def running(carry):
        return ~carry[1]

    def body(carry):
        new, _, _ = carry
        return evaluate(new, value_and_grad)

    new, _, failed = jax.lax.while_loop(running, body, evaluate(state, value_and_grad))
    return new, failed
