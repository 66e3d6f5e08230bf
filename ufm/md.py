"""Solver of Nguyen et al.'s memorization-dilation (MD) problem (Definition 4.1) and its command line.

Library: :func:`solve_md` takes the fixed configuration ``W: (d, 2)``, ``H: (d, 2)`` (columns
``h_1, h_2 >= 0``), a law ``mu_r`` as unit-radius offsets ``V: (m, d)`` with weights ``(m,)`` (the same
for both classes, scaled by r), and ``lam, alpha, eta, C_MD``; it minimises

    R(U, r) = F(r) + eta G(U, r),  F(r) = sum_k sum_j w_j [l_alpha(W, h_k + r V_j, y_k) + lam ||h_k + r V_j||^2],
    G(U, r) = sum_k l_alpha(W, u_k, y_k) + lam ||u_k||^2,
    U >= 0,  eta ||h_2 - u_1|| <= C_MD r / ||h_1 - h_2||,  eta ||h_1 - u_2|| <= C_MD r / ||h_1 - h_2||,

with ``l_alpha`` the softmax cross entropy against ``y_k = (1 - alpha) e_k + (alpha/2) 1`` (paper's
alpha = our delta; paper's ``lam ||.||^2`` literally, no 1/2; mapping in :mod:`theory.memorization_dilation`).
No ``theory`` import here: the command line builds ``(W, H, V)`` from :mod:`theory` and calls this.

Method.
- Inner (fixed r, convex): the U-problem splits into one problem per class (paper's (P_u1)):
  ``min_u phi(<d, u>) + lam ||u||^2`` over ``u >= 0``, ``||u - c|| <= rho``, ``rho = C_MD r / (eta ||h_1 - h_2||)``
  (class 1: ``d = w_2 - w_1``, ``c = h_2``). Its KKT conditions with ball multiplier mu, written with
  ``tau = lam / (lam + mu) in (0, 1]``, give ``u = max(0, (1 - tau) c - tau phi'(t) d / (2 lam))`` where ``t = <d, u>``
  solves a strictly monotone scalar equation (bisection on ``[-T, T]``, ``T = ||d|| (||c|| + ||d|| / (2 lam))``),
  and ``||u(tau) - c||`` is non-decreasing in tau (the penalty path), so tau is found by bisection on
  ``log tau`` in ``[log(rho / B), 0]``, ``B = ||c|| + ||d|| / (2 lam)`` (where ``||u - c|| <= tau B <= rho``). The
  lower end is kept, so the returned U is always feasible. Both bisections run a fixed number of
  halvings (to rounding) in ``lax.fori_loop``; the whole r-batch is one ``vmap``.
- Outer (over r): ``r -> min_U R`` is convex (R is jointly convex in (U, r): convex loss and norms,
  second-order-cone constraints) and strictly so (``lam r^2``); its derivative is exact by the envelope
  theorem, ``dR/dr = F'(r) - (2 C_MD / ||h_1 - h_2||) sum_k mu_k rho`` (``F'`` by autodiff; at ``r = 0`` the
  limit ``mu_k rho -> ||Pi(grad q_k(c_k))|| / 2``, Pi the projection onto the feasible directions at c).
  Global 1-D search: a dense grid on ``[0, r_max]``, ``r_max = eta ||h_1 - h_2||^2 / C_MD`` (Remark 1: beyond it G is
  constant and F grows), every sign change of dR/dr from - to + (every local minimum; convexity
  says one) refined by re-gridding its bracket (each round shrinks it by ``grid - 1``) down to rounding,
  then the candidate with the least R (endpoints included) is returned.
- Checks at the returned point: KKT residual of each class problem with the gradient of the softmax
  loss by autodiff (independent of the scalar reduction used to solve), ``|dR/dr|`` relative to its
  two terms, convexity defect of R on the grid. Non-finite values are never reported as converged.

Needs float64 (``jax.config.update("jax_enable_x64", True)``; the CLI does it).

Command line: ``python -m ufm.md --alpha 0.1 --eta 1e-3`` solves CE (alpha = 0) and LS (alpha = alpha0)
on Assumption 4.2.1's configurations and reports r*, the normalised dilation ``r* / ||h_1 - h_2||``, the
memorization ``eta ||h_2 - u_1||``, gamma, Assumption 4.2.3 and Theorem 4.3's inequality; ``--json``.
Exit 0: both solves converged; 1: one did not; 2: bad arguments; 4: solved, but the ``--json`` file or
the report could not be written (one ``error:`` line naming the path, the reason and where the result
was kept); 130 / 143: interrupted; 141: the reader of standard output went away (``--help`` lists them:
:data:`EXIT_CODES`).
"""

from __future__ import annotations

import argparse
import math
import sys
import textwrap
from dataclasses import dataclass
from importlib import metadata

import jax
import jax.numpy as jnp
import numpy as np

from theory import validation
from ufm import _cache, _cli, _io, _memory, _prog
from ufm._format import format_input, format_number
from ufm._interrupt import exit_on_interrupt

PROG = "python -m ufm.md"
_OUTER_HALVINGS = 64  # log-tau bracket <= ~750 wide: 750 / 2^64 ~ 4e-17
_INNER_HALVINGS = 80  # t bracket of width 2T: 2T / 2^80 below rounding for any T < 1e8
_TOL = 1e-9  # converged when every relative residual is below this (rounding gives ~1e-13)


# ----------------------------------------------------------------------------- validation
def _alpha(value) -> float:
    return validation.interval("alpha", value, 0.0, 1.0, low_open=False)


def _arrays(W, H, offsets, weights):
    W, H = np.asarray(W, dtype=np.float64), np.asarray(H, dtype=np.float64)
    if W.ndim != 2 or W.shape[1] != 2 or W.shape[0] < 2:
        raise ValueError(f"W must have shape (M, 2) with M >= 2 (two classes, feature dimension M), got {W.shape}")
    if H.shape != W.shape:
        raise ValueError(f"H must have the shape of W, {W.shape}, got {H.shape}")
    if not (np.all(np.isfinite(W)) and np.all(np.isfinite(H))):
        raise ValueError("W and H must be finite")
    if np.any(H < 0):
        raise ValueError("H must be entrywise >= 0 (the MD model's NC configuration has non-negative features)")
    if np.linalg.norm(H[:, 0] - H[:, 1]) == 0.0 or np.linalg.norm(W[:, 0] - W[:, 1]) == 0.0:
        raise ValueError("h_1 = h_2 or w_1 = w_2: the MD model needs distinct class means and classifiers")
    V, w = np.asarray(offsets, dtype=np.float64), np.asarray(weights, dtype=np.float64)
    if V.ndim != 2 or V.shape[1] != W.shape[0] or w.shape != (V.shape[0],) or V.shape[0] == 0:
        raise ValueError(f"offsets must have shape (m, {W.shape[0]}) and weights shape (m,), got {V.shape}, {w.shape}")
    if not (np.all(np.isfinite(V)) and np.all(np.isfinite(w))) or np.any(w < 0) or abs(w.sum() - 1.0) > 1e-12:
        raise ValueError("weights must be finite, >= 0 and sum to 1; offsets must be finite")
    mean = w @ V
    if np.linalg.norm(mean) > 1e-12 * max(1.0, np.abs(V).max()):
        raise ValueError(
            f"offsets must have mean zero under weights (Assumption 4.2.2), got mean norm {np.linalg.norm(mean):.3g}"
        )
    return W, H, V, w


# ----------------------------------------------------------------------------- compiled pieces
def _class_loss(W, z, k, alpha):
    """Softmax cross entropy of logits ``W^T z`` against ``y_k = (1 - alpha) e_k + alpha/2``."""
    y = (1.0 - alpha) * jax.nn.one_hot(k, 2, dtype=z.dtype) + 0.5 * alpha
    return -jnp.dot(y, jax.nn.log_softmax(W.T @ z))


def _ball_problem(d, c, lam, alpha, rho):
    """``min phi(<d,u>) + lam ||u||^2`` s.t. ``u >= 0``, ``||u - c|| <= rho`` (module docstring).

    Returns ``(u, m)``: the minimizer and ``m = mu rho`` (ball multiplier times radius; ``-dg/drho / 2``).
    """
    big_b = jnp.linalg.norm(c) + jnp.linalg.norm(d) / (2.0 * lam)
    T = jnp.linalg.norm(d) * big_b

    def slope(t):
        return jax.nn.sigmoid(t) - 0.5 * alpha

    def deviation(tau, t):
        return jnp.maximum(-c, -tau * (c + slope(t) * d / (2.0 * lam)))

    def solve_t(tau):
        def halve(_, bracket):
            lo, hi = bracket
            mid = 0.5 * (lo + hi)
            above = mid - jnp.dot(d, c + deviation(tau, mid)) > 0.0
            return jnp.where(above, lo, mid), jnp.where(above, mid, hi)

        lo, hi = jax.lax.fori_loop(0, _INNER_HALVINGS, halve, (-T, T))
        return 0.5 * (lo + hi)

    def distance(log_tau):
        tau = jnp.exp(log_tau)
        return jnp.linalg.norm(deviation(tau, solve_t(tau)))

    def halve_tau(_, bracket):
        lo, hi = bracket
        mid = 0.5 * (lo + hi)
        outside = distance(mid) > rho
        return jnp.where(outside, lo, mid), jnp.where(outside, mid, hi)

    inactive = distance(0.0) <= rho
    lo0 = jnp.log(jnp.maximum(rho / big_b, jnp.finfo(d.dtype).tiny))
    lo, _ = jax.lax.fori_loop(0, _OUTER_HALVINGS, halve_tau, (jnp.minimum(lo0, 0.0), 0.0))
    log_tau = jnp.where(inactive, 0.0, lo)
    tau = jnp.exp(log_tau)
    u = jnp.where(rho > 0.0, c + deviation(tau, solve_t(tau)), c)
    m = jnp.where(inactive, 0.0, lam * (1.0 - tau) / tau * rho)
    # r = 0: the limit of mu rho is half the norm of the steepest feasible descent of q at c
    grad_c = slope(jnp.dot(d, c)) * d + 2.0 * lam * c
    feasible = jnp.where(c > 0.0, grad_c, jnp.minimum(grad_c, 0.0))
    m = jnp.where(rho > 0.0, m, 0.5 * jnp.linalg.norm(feasible))
    return u, m


def _profile_one(r, W, H, V, w, lam, alpha, eta, c_md):
    """Everything at one r: R, dR/dr, F, G, U, multipliers-times-radius, KKT residual."""
    gap = jnp.linalg.norm(H[:, 0] - H[:, 1])
    rho = c_md * r / (eta * gap)
    diff = W[:, 1] - W[:, 0]

    def F_of(r_):
        def one_class(k, h):
            Z = h[None, :] + r_ * V
            losses = jax.vmap(lambda z: _class_loss(W, z, k, alpha))(Z)
            return jnp.dot(w, losses + lam * jnp.sum(Z**2, axis=1))

        return jnp.sum(jax.vmap(one_class)(jnp.arange(2), H.T))

    F, dF = jax.value_and_grad(F_of)(r)
    ds, cs = jnp.stack([diff, -diff]), jnp.stack([H[:, 1], H[:, 0]])

    def one_class(k, d, c):
        u, m = _ball_problem(d, c, lam, alpha, rho)

        def q(x):
            return _class_loss(W, x, k, alpha) + lam * jnp.dot(x, x)

        value, grad = jax.value_and_grad(q)(u)
        dev = jnp.linalg.norm(u - c)
        positive = rho > 0.0
        safe_rho = jnp.where(positive, rho, 1.0)
        mu = jnp.where(positive, m / safe_rho, 0.0)
        station = grad + 2.0 * mu * (u - c)
        station = jnp.where(u > 0.0, station, jnp.minimum(station, 0.0))
        scale = jnp.linalg.norm(d) + 2.0 * lam * jnp.linalg.norm(c) + 2.0 * mu * jnp.maximum(dev, rho)
        infeasible = jnp.where(positive, jnp.maximum(dev - rho, 0.0) / safe_rho, dev / (jnp.linalg.norm(c) + 1.0))
        residual = jnp.maximum(
            jnp.maximum(jnp.linalg.norm(station) / scale, infeasible), mu * jnp.abs(dev - rho) / scale
        )  # stationarity, feasibility, complementarity
        return u, m, value, residual

    U, ms, values, residuals = jax.vmap(one_class)(jnp.arange(2), ds, cs)
    G, kkt = jnp.sum(values), jnp.max(residuals)
    envelope = 2.0 * c_md / gap * jnp.sum(ms)
    dR = dF - envelope
    outer_scale = jnp.maximum(jnp.abs(dF) + envelope, jnp.finfo(W.dtype).tiny)
    return dict(R=F + eta * G, dR=dR, dR_rel=dR / outer_scale, F=F, G=G, U=U.T, m=ms, kkt=kkt)


@jax.jit
def _profile(r, W, H, V, w, lam, alpha, eta, c_md):
    return jax.vmap(_profile_one, in_axes=(0,) + (None,) * 8)(r, W, H, V, w, lam, alpha, eta, c_md)


# ----------------------------------------------------------------------------- outer driver
@dataclass(frozen=True)
class MDResult:
    """Solution of one MD problem (one loss).

    Attributes:
        alpha, lam, eta, c_md: the problem. r_max: ``eta ||h_1 - h_2||^2 / C_MD``. distance: ``||h_1 - h_2||``.
        r_star: the optimal dilation r. dilation: ``r_star / ||h_1 - h_2||`` (normalised dilation).
        memorization: ``eta ||h_2 - u_1||`` (class 1, as in the paper); memorization_2: ``eta ||h_1 - u_2||``.
        U: ``(d, 2)`` columns ``u_1, u_2``. risk, F, G: R, F, G at the optimum.
        multipliers: ball multipliers ``(mu_1, mu_2)`` (0 when inactive; NaN at r = 0).
        kkt_residual: worst relative KKT residual of the two U-problems at ``r_star``.
        derivative_residual: ``|dR/dr(r_star)|`` relative to ``|F'| + |eta G'|`` (0 at an interior optimum).
        local_minima: brackets found on the grid (convexity: 1). convexity_defect: most negative second
            difference of R on the grid relative to the largest ``|R - R(0)|`` (>= -rounding when convex).
        grid: points per round. status: ``"converged"`` or ``"not converged"``; converged; message.
    """

    alpha: float
    lam: float
    eta: float
    c_md: float
    r_max: float
    distance: float
    r_star: float
    dilation: float
    memorization: float
    memorization_2: float
    U: np.ndarray
    risk: float
    F: float
    G: float
    multipliers: tuple
    kkt_residual: float
    derivative_residual: float
    local_minima: int
    convexity_defect: float
    grid: int
    status: str
    converged: bool
    message: str


def md_profile(r, W, H, offsets, weights, *, lam, alpha, eta, c_md) -> dict:
    """R, dR/dr, F, G, U(r), KKT residual at each ``r`` (1-D array) as numpy arrays (inputs as :func:`solve_md`)."""
    _require_x64()
    W, H, V, w = _arrays(W, H, offsets, weights)
    lam, eta, c_md, alpha = (
        validation.positive_scalar("lam", lam),
        validation.positive_scalar("eta", eta),
        validation.positive_scalar("c_md", c_md),
        _alpha(alpha),
    )
    r = np.atleast_1d(np.asarray(r, dtype=np.float64))
    if r.ndim != 1 or not np.all(np.isfinite(r)) or np.any(r < 0):
        raise ValueError("r must be a 1-D array of finite numbers >= 0")
    _require_profile(r.size, V.shape[0], W.shape[0])
    bucket = _padded(V.shape[0], 1)  # node counts padded to a power of two (zero weight):
    V = np.vstack([V, np.zeros((bucket - V.shape[0], V.shape[1]))])  # one compiled program per bucket, not per m
    w = np.concatenate([w, np.zeros(bucket - w.size)])
    # radii padded likewise (repeating the last one), to at least 16: solve_md's last call (its 1-3
    # candidates) then shares the program of up-to-16-radius profiles; each radius is computed on its
    # own, so the padding changes no bit of the values kept (tests/test_md.py)
    size = _padded(r.size, 4)
    padded = np.concatenate([r, np.full(size - r.size, r[-1])])
    out = _profile(
        jnp.asarray(padded), jnp.asarray(W), jnp.asarray(H), jnp.asarray(V), jnp.asarray(w), lam, alpha, eta, c_md
    )
    return {key: np.asarray(value)[: r.size] for key, value in out.items()}


def _padded(count: int, least: int) -> int:
    """``count`` rounded up to a power of two, at least ``2**least`` (md_profile's padding)."""
    return 1 << max(least, (count - 1).bit_length())


def profile_bytes(radii: int, nodes: int, M: int) -> float:
    """Estimated peak bytes of :func:`md_profile` on ``radii`` radii, a law of ``nodes`` nodes, dimension M
    (radii and nodes padded to powers of two as it does; the radii themselves included)."""
    padded_radii, padded_nodes = float(_padded(radii, 4)), float(_padded(nodes, 1))
    return 8.0 * (radii + padded_radii * (12.0 * padded_nodes * M + 40.0 * M))


def _require_profile(radii: int, nodes: int, M: int) -> None:
    _memory.require(
        profile_bytes(radii, nodes, M),
        "the MD profile",
        f"{radii} radii (--grid) x {nodes} nodes x M = {M}",
        "use fewer radii (--grid) or a smaller M",
    )


def setup_floats(M: int, distribution: str) -> float:
    """Numbers the command line's setup holds at once for dimension M: the M x M identity of
    :func:`theory.memorization_dilation.nc_configuration`, and for the circle the QR of an M x (M + 2)
    matrix in ``second_direction`` (the matrix, its Q and LAPACK's workspace)."""
    m = float(M)
    return m * m + (3.0 * m * (m + 2.0) if distribution == "circle" else 0.0)


def _require_x64():
    if not jax.config.jax_enable_x64:  # type: ignore[attr-defined]
        raise ValueError("ufm.md needs float64: call jax.config.update('jax_enable_x64', True) before solving")


def solve_md(W, H, offsets, weights, *, lam, alpha, eta, c_md, grid=128) -> MDResult:
    """Solve the MD problem (Definition 4.1) globally over ``r in [0, r_max]``, U exactly for each r.

    Args:
        W: ``(M, 2)`` classifier columns; H: ``(M, 2)`` class features ``>= 0`` (Assumption 4.2.1's
            configuration; any fixed ``(W, H)`` is accepted), ``M >= 2``.
        offsets: ``(m, M)`` unit-radius offsets of ``mu_r`` (mean zero under ``weights``), weights ``(m,)``.
        lam: regularization ``lam`` of F and G (``lam_H``); alpha: LS parameter in ``[0, 1)`` (0 = CE);
        eta: noise level > 0; c_md: memorization-dilation slope > 0.
        grid: points of the global grid and of each refinement round (>= 5; a power of two avoids padding:
            radii and law nodes are padded to powers of two so that few programs are compiled).

    Returns:
        :class:`MDResult`. Raises ``ValueError`` naming the parameter for bad input.
    """
    _require_x64()
    W, H, V, w = _arrays(W, H, offsets, weights)
    lam, eta, c_md, alpha = (
        validation.positive_scalar("lam", lam),
        validation.positive_scalar("eta", eta),
        validation.positive_scalar("c_md", c_md),
        _alpha(alpha),
    )
    if isinstance(grid, bool) or not isinstance(grid, (int, np.integer)) or grid < 5:
        raise ValueError(f"grid must be an integer >= 5, got {grid!r}")
    grid = int(grid)
    gap = float(np.linalg.norm(H[:, 0] - H[:, 1]))
    rmax = eta * gap**2 / c_md
    if not (math.isfinite(rmax) and rmax > 0.0):
        raise ValueError(f"r_max = eta ||h_1 - h_2||^2 / c_md = {rmax!r} is not a positive finite number")

    def profile(r):
        return md_profile(r, W, H, V, w, lam=lam, alpha=alpha, eta=eta, c_md=c_md)

    _require_profile(grid, V.shape[0], W.shape[0])  # before the grid itself is allocated
    r0 = np.linspace(0.0, rmax, grid)
    first = profile(r0)
    R0, dR0 = first["R"], first["dR"]
    if not (np.all(np.isfinite(R0)) and np.all(np.isfinite(dR0))):
        return _failed(alpha, lam, eta, c_md, rmax, gap, W, grid, "non-finite risk on the r grid")
    second = R0[:-2] - 2.0 * R0[1:-1] + R0[2:]
    spread = max(float(np.max(np.abs(R0 - R0[0]))), np.finfo(float).tiny)
    convexity_defect = float(min(0.0, second.min()) / spread)
    candidates = []
    if dR0[0] >= 0.0:
        candidates.append(0.0)
    if dR0[-1] <= 0.0:
        candidates.append(rmax)
    brackets = [i for i in range(grid - 1) if dR0[i] < 0.0 <= dR0[i + 1]]
    for i in brackets:
        candidates.append(_refine(profile, r0[i], r0[i + 1], dR0[i], dR0[i + 1], grid, rmax))
    if not candidates:
        return _failed(alpha, lam, eta, c_md, rmax, gap, W, grid, "no minimum bracketed on the r grid")
    final = profile(np.clip(np.array(candidates), 0.0, rmax))
    best = int(np.argmin(final["R"]))
    r_star = float(np.clip(candidates[best], 0.0, rmax))
    pick = {key: value[best] for key, value in final.items()}
    U = pick["U"]
    rho = c_md * r_star / (eta * gap)
    mus = tuple(float(m / rho) if rho > 0 else float("nan") for m in pick["m"])
    interior = 0.0 < r_star < rmax
    derivative_residual = abs(float(pick["dR_rel"])) if interior else 0.0
    kkt = float(pick["kkt"])
    values = (r_star, float(pick["R"]), kkt, derivative_residual)
    finite = all(math.isfinite(v) for v in values) and bool(np.all(np.isfinite(U)))
    ok = finite and kkt <= _TOL and derivative_residual <= _TOL
    if not finite:
        message = "non-finite values at the optimum"
    elif ok:
        message = (
            f"converged: KKT residual {kkt:.1e}, |dR/dr| residual {derivative_residual:.1e} "
            f"({len(brackets)} bracket(s) on {grid} grid points)"
        )
    else:
        message = f"not converged: KKT residual {kkt:.1e}, |dR/dr| residual {derivative_residual:.1e} > {_TOL:g}"
    return MDResult(
        alpha=alpha,
        lam=lam,
        eta=eta,
        c_md=c_md,
        r_max=rmax,
        distance=gap,
        r_star=r_star,
        dilation=r_star / gap,
        memorization=eta * float(np.linalg.norm(H[:, 1] - U[:, 0])),
        memorization_2=eta * float(np.linalg.norm(H[:, 0] - U[:, 1])),
        U=U,
        risk=float(pick["R"]),
        F=float(pick["F"]),
        G=float(pick["G"]),
        multipliers=mus,
        kkt_residual=kkt,
        derivative_residual=derivative_residual,
        local_minima=len(brackets),
        convexity_defect=convexity_defect,
        grid=grid,
        status="converged" if ok else "not converged",
        converged=ok,
        message=message,
    )


def _refine(profile, lo, hi, dlo, dhi, grid, rmax) -> float:
    """Shrink a bracket ``dR(lo) < 0 <= dR(hi)`` by re-gridding it until rounding, then interpolate dR linearly."""
    for _ in range(12):
        if hi - lo <= 4.0 * np.finfo(float).eps * rmax:
            break
        rs = np.linspace(lo, hi, grid)
        d = profile(rs)["dR"]
        if not np.all(np.isfinite(d)):
            break
        j = max(int(np.argmax(d >= 0.0)) if np.any(d >= 0.0) else grid - 1, 1)
        lo, hi, dlo, dhi = rs[j - 1], rs[j], d[j - 1], d[j]
    return float(lo - dlo * (hi - lo) / (dhi - dlo)) if dhi > dlo else 0.5 * (lo + hi)


def _failed(alpha, lam, eta, c_md, rmax, gap, W, grid, message) -> MDResult:
    nan = float("nan")
    return MDResult(
        alpha=alpha,
        lam=lam,
        eta=eta,
        c_md=c_md,
        r_max=rmax,
        distance=gap,
        r_star=nan,
        dilation=nan,
        memorization=nan,
        memorization_2=nan,
        U=np.full((W.shape[0], 2), nan),
        risk=nan,
        F=nan,
        G=nan,
        multipliers=(nan, nan),
        kkt_residual=nan,
        derivative_residual=nan,
        local_minima=0,
        convexity_defect=nan,
        grid=grid,
        status="not converged",
        converged=False,
        message=message,
    )


# ----------------------------------------------------------------------------- command line
EXIT_CODES = _cli.exit_codes((0, "both solves (CE and LS) converged"), (1, "one of them did not"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.fill(
            "Solve Nguyen et al.'s memorization-dilation problem (Definition 4.1) for CE (alpha = 0) and "
            "LS (alpha = alpha0) on Assumption 4.2.1's non-negative NC configurations (two classes); report r*, "
            "the normalised dilation, the memorization, gamma, Assumption 4.2.3 and Theorem 4.3's inequality. "
            "Defaults: a setting inside Assumption 4.2.",
            width=100,
        ),
        epilog=EXIT_CODES,
    )
    problem = parser.add_argument_group("problem")
    problem.add_argument(
        "--M", type=validation.integer_type("--M", 2), default=2, help="feature dimension M >= 2 (default 2)"
    )
    problem.add_argument(
        "--alpha",
        type=validation.number_type("--alpha", 0.0, 1.0),
        default=0.1,
        help="LS parameter alpha0 of the LS run, in (0, 1) (default 0.1; CE is alpha = 0)",
    )
    problem.add_argument(
        "--eta",
        type=validation.number_type("--eta", 0.0),
        default=1e-3,
        help="noise level eta > 0 (default 1e-3)",
    )
    problem.add_argument(
        "--c-md",
        type=validation.number_type("--c-md", 0.0),
        default=1.0,
        help="memorization-dilation slope C_MD > 0 (default 1)",
    )
    problem.add_argument(
        "--lam-W",
        type=validation.number_type("--lam-W", 0.0),
        default=1e-3,
        help="lam_W > 0 (default 1e-3)",
    )
    problem.add_argument(
        "--lam-H",
        type=validation.number_type("--lam-H", 0.0),
        default=1e-3,
        help="lam_H > 0, also the lam of F and G (default 1e-3)",
    )
    problem.add_argument(
        "--distribution",
        choices=("two-point", "circle"),
        default="two-point",
        help="law mu_r of the clean features: +-r u (default) or uniform on a circle of radius r",
    )
    solver = parser.add_argument_group("solver")
    solver.add_argument(
        "--grid",
        type=validation.integer_type("--grid", 5),
        default=128,
        help="r-grid points per round (>= 5; default 128)",
    )
    report = parser.add_argument_group("report")
    _cli.add_output_flags(report, "json", "force", "quiet")
    _cache.add_argument(parser)
    return parser


def _entry(result: MDResult, config, gamma: float) -> dict:
    return {
        "alpha": result.alpha,
        "r_star": result.r_star,
        "r_max": result.r_max,
        "dilation": result.dilation,
        "memorization": result.memorization,
        "memorization_2": result.memorization_2,
        "gamma": gamma,
        "distance_h1_h2": result.distance,
        "H_norm": config.H_norm,
        "margin_a": config.a,
        "U": np.asarray(result.U).tolist(),
        "risk": result.risk,
        "F": result.F,
        "G": result.G,
        "multipliers": list(result.multipliers),
        "kkt_residual": result.kkt_residual,
        "derivative_residual": result.derivative_residual,
        "local_minima": result.local_minima,
        "convexity_defect": result.convexity_defect,
        "status": result.status,
        "converged": result.converged,
        "message": result.message,
    }


def _report_text(args, check, results, gamma) -> str:
    lines = [
        f"MD problem (Nguyen et al. Def. 4.1): 2 classes, feature dimension M = {args.M}, "
        f"lam_W = {format_input(args.lam_W)}, lam_H = lam = {format_input(args.lam_H)}, "
        f"noise level eta = {format_input(args.eta)}, C_MD = {format_input(args.c_md)}, "
        f"law of the clean features mu_r: {args.distribution}",
        "",
        "Assumption 4.2.3:",
        f"  alpha0 = {format_input(args.alpha)} > 4 sqrt(lam_W lam_H) = {format_number(check.alpha_bound)}: "
        f"{check.alpha_ok}",
        f"  gamma = ||H^CE|| / ||H^LS|| = {format_number(gamma)}, C~ = C_MD / (sqrt(2) ||h1 - h2||_CE) = "
        f"{format_number(check.c_tilde)}",
        f"  eta = {format_input(args.eta)} < (C~ (1 - 1/gamma))^2 = {format_number(check.eta_bound)}: {check.eta_ok}",
        f"  inside the assumptions: {check.holds}",
        "",
        f"{'':4s} {'alpha':>6s} {'r_max':>16s} {'r*':>16s} {'r*/||h1-h2||':>16s} {'memorization':>16s} "
        f"{'KKT res.':>9s} {'dR res.':>9s}  status",
    ]
    for name, res in results.items():
        numbers = (res.r_star, res.dilation, res.memorization, res.kkt_residual, res.derivative_residual)
        if not all(math.isfinite(x) for x in numbers):
            shown = f"{name:4s} {format_input(res.alpha):>6s} {format_number(res.r_max):>16s}"
            lines.append(f"{shown}  undefined: {res.message}")
            continue
        lines.append(
            f"{name:4s} {format_input(res.alpha):>6s} "
            + " ".join(f"{format_number(x):>16s}" for x in (res.r_max, res.r_star, res.dilation, res.memorization))
            + f" {res.kkt_residual:9.1e} {res.derivative_residual:9.1e}  {res.status}"
        )
    same = all(math.isclose(res.memorization, args.c_md * res.dilation, rel_tol=1e-9) for res in results.values())
    binds = ": it binds here, and with C_MD = 1 the two columns are equal" if args.c_md == 1 else ": it binds here"
    lines += [
        "  alpha: label smoothing; r_max = eta ||h1 - h2||^2 / C_MD: end of the r search (the risk only grows beyond",
        "    it, Remark 1); r*: the optimal dilation; r*/||h1-h2||: normalised (h1, h2: the two clean features)",
        "  memorization = eta ||h2 - u1|| (u1: the feature of class 1's noisy samples), at most C_MD r*/||h1-h2||",
        f"    (the MD constraint){binds if same else ''}",
        "  KKT res.: worst relative KKT residual of the two U-problems at r*; dR res.: |dR/dr| at r* relative to",
        f"    its two terms (0 at an end of [0, r_max]); converged when both are <= {_TOL:g}",
    ]
    ce, ls = results["CE"], results["LS"]
    undefined = _theorem_undefined(results)
    if undefined is not None:
        lines += ["", f"Theorem 4.3: undefined: {undefined}"]
        return "\n".join(lines)
    holds = ce.dilation > ls.dilation
    lines += [
        "",
        f"Theorem 4.3: r*_CE/||h1-h2||_CE = {format_number(ce.dilation)} {'>' if holds else '<='} "
        f"r*_LS/||h1-h2||_LS = {format_number(ls.dilation)}: {'holds' if holds else 'FAILS'}"
        + ("" if check.holds else " (outside Assumption 4.2)"),
    ]
    return "\n".join(lines)


def _theorem_undefined(results) -> str | None:
    """Why Theorem 4.3's comparison cannot be made (a solve that did not converge), or None."""
    failed = [
        f"the {name} solve did not converge ({res.message})" for name, res in results.items() if not res.converged
    ]
    return "; ".join(failed) if failed else None


def main(argv=None) -> int:
    """Run the CLI on ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    with exit_on_interrupt(PROG):  # SIGINT / SIGTERM: one line, exit 130 / 143 at once
        return _main(argv)


def _main(argv) -> int:
    import theory.memorization_dilation as tmd

    parser = build_parser()
    args = _prog.start(parser, argv, prog=PROG)
    if isinstance(args, int):
        return args
    try:
        if args.json is not None:
            _io.check_writable(args.json, overwrite=args.force, what="--json")
        validation.allocation(
            "the MD configurations (an M x M identity"
            + (", the circle's QR)" if args.distribution == "circle" else ")"),
            setup_floats(args.M, args.distribution),
            f"--M {validation.show(args.M)}",
        )
        configs = {
            "CE": tmd.nc_configuration(args.M, lam_W=args.lam_W, lam_H=args.lam_H, alpha=0.0),
            "LS": tmd.nc_configuration(args.M, lam_W=args.lam_W, lam_H=args.lam_H, alpha=args.alpha),
        }
        check = tmd.assumption_4_2(lam_W=args.lam_W, lam_H=args.lam_H, alpha0=args.alpha, eta=args.eta, c_md=args.c_md)
        laws = {
            name: tmd.md_law(config, args.distribution, eta=args.eta, c_md=args.c_md)
            for name, config in configs.items()
        }
    except (ValueError, OverflowError, OSError) as error:
        parser.print_usage(sys.stderr)
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    gamma = configs["CE"].H_norm / configs["LS"].H_norm
    if not args.quiet:
        print(
            f"solving the MD problem for CE and LS (alpha0 = {format_input(args.alpha)}) ...",
            file=sys.stderr,
            flush=True,
        )
    try:
        results = {
            name: solve_md(
                config.W,
                config.H,
                *laws[name],
                lam=args.lam_H,
                alpha=config.alpha,
                eta=args.eta,
                c_md=args.c_md,
                grid=args.grid,
            )
            for name, config in configs.items()
        }
    except (ValueError, OverflowError) as error:  # e.g. not enough memory: one readable line, exit 2
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    converged = all(res.converged for res in results.values())
    if args.json is not None:
        try:
            version = metadata.version("ufm-collapse")
        except metadata.PackageNotFoundError:
            version = "unknown"
        record = {
            "package_version": version,
            "jax_version": jax.__version__,
            "problem": {
                "M": args.M,
                "alpha0": args.alpha,
                "eta": args.eta,
                "c_md": args.c_md,
                "lam_W": args.lam_W,
                "lam_H": args.lam_H,
                "lam": args.lam_H,
                "distribution": args.distribution,
                "grid": args.grid,
            },
            "assumption_4_2": {
                "alpha_bound": check.alpha_bound,
                "alpha_ok": check.alpha_ok,
                "gamma": check.gamma,
                "c_tilde": check.c_tilde,
                "eta_bound": check.eta_bound,
                "eta_ok": check.eta_ok,
                "holds": check.holds,
            },
            "ce": _entry(results["CE"], configs["CE"], gamma),
            "ls": _entry(results["LS"], configs["LS"], gamma),
            "theorem_4_3": {
                "dilation_ce": results["CE"].dilation,
                "dilation_ls": results["LS"].dilation,
                "holds": None
                if _theorem_undefined(results) is not None
                else bool(results["CE"].dilation > results["LS"].dilation),
                "undefined": _theorem_undefined(results),
            },
            "converged": converged,
        }
    return _io.deliver(
        PROG,
        _report_text(args, check, results, gamma),
        None if args.json is None else lambda: _io.write_json(args.json, record, overwrite=args.force, what="--json"),
        code=0 if converged else 1,
        announce=None if args.quiet else sys.stderr,
    )


if __name__ == "__main__":
    raise SystemExit(main())
