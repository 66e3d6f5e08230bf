"""The 1-D reduction of the UFM for every loss, solved to machine precision.

Sources: ``docs/theory.md`` (the scalar reduction), Zhou et al. 2022 (Definition 1,
Theorem 1, eqs. 3-6: CE, FL, LS, rescaled MSE) and Nguyen et al. 2023
(Theorem 3.2, non-negative features). numpy float64 only (no JAX).

Conventions (``docs/theory.md``): ``W: (d, K)``, ``H: (d, N)`` class-major, ``b: (K,)``,
logits ``Z = W^T H + b 1^T``, objective
``(1/N) sum_i loss + lam_W/2 ||W||^2 + lam_H/2 ||H||^2 + lam_b/2 ||b||^2``,
``lam_Z = sqrt(lam_W lam_H)``, ``R := lam_Z sqrt(n)``.

Contrastive losses (``"ce"``, ``"ls"``, ``"focal"``). At a collapsed simplex-ETF
point with class-k logits ``a (e_k - 1/K)`` the objective is

    f(a) = l(a) + r a,   r = R (K - 1)            (free features, Lemma C.3 of Guo et al.)
                         r = R sqrt(K (K - 1))    (H >= 0, derived below)

with ``l(a)`` the per-sample loss there. In terms of ``p = p_t = 1/(1 + (K-1) e^{-a})``
and ``q = 1 - p`` (``dp/da = p q``):

* LS (CE is delta = 0): ``l = (1 - y_t) a + log1p((K-1) e^{-a})``, ``y_t = 1 - delta (K-1)/K``;
  ``l' = p - y_t = (1 - y_t) - q`` (evaluated in this form: accurate also when p -> 1); ``l'' = p q``.
* FL (Zhou et al. eq. 4): ``l = -q^g log p``; ``l' = g p q^g log p - q^{g+1}``;
  ``l'' = p q^g [q (g log p + 2g + 1) - g^2 p log p]`` (no negative powers of q).

``f`` is convex for LS (``l'' > 0``); for FL ``l''`` is negative where
``p < e^{-2 - 1/g}`` (small ``a``, many classes), so the minimizer is found
globally: every sign change of ``f'`` on a fine grid over ``[0, A]`` (beyond
``A`` ``f' > 0`` is guaranteed by ``|l'| <= (1+g)(K-1) e^{-a}``) is refined by a
safeguarded Newton iteration and the smallest ``f`` (including ``a = 0``) wins.

Logit curvature at the ETF point. The per-sample Hessian ``S_k`` of the loss in
the logits is symmetric, kills ``1`` (the loss depends on z through the
softmax only) and commutes with permutations fixing k, so it is
``mu2`` on ``u = e_k - 1/K`` and ``mu1`` on the (K-2)-dimensional rest of ``1^perp``:

* ``mu2 = u^T S u / ||u||^2 = K l''(a) / (K - 1)`` (``l(a)`` is the loss along ``a u``);
* ``mu1`` from ``v = e_i - e_j`` (i, j != k): LS ``mu1 = p_n``; FL ``mu1 = -l'(a)/(K-1)``
  (``grad p_k . v = 0`` and ``v^T grad^2 p_k v = -2 p_k p_n``).

Signs for FL: away from the optimum ``l''`` (so ``mu2``) can be negative, but at a minimizer
``a* > 0`` of ``f``, ``f'(a*) = 0`` gives ``mu1 = -l'(a*)/(K-1) = lam_Z sqrt(n) > 0`` and the
second-order condition ``f''(a*) = l''(a*) >= 0`` gives ``mu2 >= 0``: the predicted blocks are
positive semidefinite for every loss (the condition number still uses absolute values).

Non-negative features. With ``H >= 0`` the class means form an orthogonal
frame ``hbar_k = rho q_k`` (``Q^T Q = I``, ``Q >= 0``) and ``w_k = C (hbar_k - h_G)``
(Nguyen et al. Thm 3.2 / Def. 3.1). Then ``W^T hbar_k = C rho^2 (e_k - 1/K)``, so
``a = C rho^2``; ``||W||^2 = C^2 rho^2 (K-1)``, ``||H||^2 = n K rho^2``, and minimising
``lam_W/2 ||W||^2 + lam_H/2 ||H||^2`` over ``rho`` at fixed ``a`` gives
``rho^2 = a sqrt(lam_W (K-1) / (lam_H n K))`` and the cost ``a R sqrt(K (K-1))``,
``sqrt(K/(K-1))`` times the free-feature cost ``a R (K-1)``.

MSE (Zhou et al. eq. 6, not contrastive): see :func:`mse_optimum`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from theory import validation

LOSSES = ("ce", "ls", "focal", "mse")
CONTRASTIVE = ("ce", "ls", "focal")
_GRID = 4096


def _check_loss(loss: str) -> str:
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    return loss


#: Largest focal parameter: the second derivative of the focal loss holds ``gamma**2``.
MAX_GAMMA = 1e150


def loss_parameters(loss: str, *, delta=0.0, gamma=0.0):
    """Validate ``(loss, delta, gamma)``: delta only for ``"ls"``, gamma >= 0 only for ``"focal"``."""
    loss = _check_loss(loss)
    delta = validation.delta(delta)
    if np.ndim(delta) != 0:
        raise ValueError(f"delta must be a single number in [0, 1), got {validation.describe(delta)}")
    gamma = validation.nonnegative_scalar("gamma", gamma)
    if gamma > MAX_GAMMA:
        raise ValueError(
            f"gamma must be at most {MAX_GAMMA:g} (the focal derivatives hold gamma^2 in float64), got {gamma!r}"
        )
    if loss != "ls" and delta != 0.0:
        raise ValueError(f"delta must be 0 for loss={loss!r} (label smoothing is loss='ls'), got {delta!r}")
    if loss != "focal" and gamma != 0.0:
        raise ValueError(f"gamma must be 0 for loss={loss!r} (gamma is the focal-loss parameter), got {gamma!r}")
    return loss, float(delta), gamma


def _pq(K: int, a):
    """``p_t, q = 1 - p_t, p_n, log p_t`` at scale ``a >= 0`` (no overflow, no cancellation)."""
    a = np.asarray(a, dtype=np.float64)
    s = (K - 1) * np.exp(-a)
    p = 1.0 / (1.0 + s)
    q = s / (1.0 + s)
    return p, q, np.exp(-a) / (1.0 + s), -np.log1p(s)


def loss_derivatives(loss: str, K, a, *, delta=0.0, gamma=0.0):
    """``(l(a), l'(a), l''(a))``: per-sample loss at logits ``a (e_k - 1/K)`` and its derivatives.

    Closed forms in the module docstring (LS: Guo et al. eq. 3; FL: Zhou et al. eq. 4).
    ``a >= 0`` scalar or array. Contrastive losses only.
    """
    loss, delta, gamma = loss_parameters(loss, delta=delta, gamma=gamma)
    if loss == "mse":
        raise ValueError(
            "loss must be a contrastive loss ('ce', 'ls', 'focal') for loss_derivatives, got 'mse'; see mse_optimum"
        )
    K = validation.integer("K", K, 2, float64=True)
    a = validation.real_array("a", a, "a >= 0")
    if np.any(a < 0):
        raise ValueError(f"a must be >= 0, got {a.ravel()[np.argmax(a.ravel() < 0)]!r}")
    p, q, _, log_p = _pq(K, a)
    if loss in ("ce", "ls"):
        smooth = delta * (K - 1) / K  # 1 - y_t, exact: l' = p - y_t = smooth - q keeps q's relative accuracy
        return smooth * a - log_p, smooth - q, p * q
    qg = q**gamma
    value = -qg * log_p
    first = gamma * p * qg * log_p - qg * q
    second = p * qg * (q * (gamma * log_p + 2.0 * gamma + 1.0) - gamma**2 * p * log_p)
    return value, first, second


def logit_curvatures(loss: str, K, a, *, delta=0.0, gamma=0.0, mse_kappa=1.0):
    """``(mu1, mu2)``: eigenvalues of the per-sample logit Hessian at the optimum's logits.

    Contrastive losses: ``mu2`` on ``e_k - 1/K``, ``mu1`` (K - 2 times) on the rest of
    ``1^perp`` (module docstring). MSE: ``S = 2 (I + (kappa - 1) e_k e_k^T)`` is not
    centred; ``M S M`` has ``mu2 = 2 (1 + (kappa-1)(K-1)/K)`` on ``e_k - 1/K`` and
    ``mu1 = 2`` on the rest of ``1^perp``.
    """
    loss = _check_loss(loss)
    K = validation.integer("K", K, 2, float64=True)
    if loss == "mse":
        kappa = validation.positive_scalar("mse_kappa", mse_kappa)
        return 2.0, 2.0 * (1.0 + (kappa - 1.0) * (1.0 - 1.0 / K))  # (K-1)/K without overflowing K - 1
    _, first, second = loss_derivatives(loss, K, a, delta=delta, gamma=gamma)
    mu2 = K * second / (K - 1)
    if loss == "focal":
        mu1 = -first / (K - 1)
    else:
        mu1 = _pq(K, a)[2]
    return float(mu1), float(mu2)


def regularization_slope(K, n, *, lam_W, lam_H, nonnegative=False) -> float:
    """``r``: the regularizer at the optimum is ``r a`` (``R (K-1)``, or ``R sqrt(K(K-1))`` for H >= 0)."""
    K, n = validation.classes_and_samples(K, n)
    lam_W = validation.positive("lam_W", lam_W)
    lam_H = validation.positive("lam_H", lam_H)
    if np.ndim(lam_W) or np.ndim(lam_H):
        raise ValueError("lam_W and lam_H must be scalars here (got an array)")
    R = np.sqrt(float(n)) * np.sqrt(float(lam_W)) * np.sqrt(float(lam_H))  # no overflow of n lam_W lam_H
    if not (np.isfinite(R) and R > 0.0):
        raise OverflowError(
            f"sqrt(n lam_W lam_H) = {R!r} is not a positive finite float64; use lam_W * lam_H between 1e-600 and 1e300"
        )
    with np.errstate(over="ignore"):  # an overflow is the OverflowError below, not a warning first
        slope = float(R * (np.sqrt(K * (K - 1.0)) if nonnegative else (K - 1.0)))
    if not np.isfinite(slope):
        raise OverflowError(f"the regularization slope overflows float64 for K = {K}, n = {n}; reduce K or n")
    return slope


def _newton_root(fprime, fsecond, lo: float, hi: float) -> float:
    """Root of ``fprime`` in ``[lo, hi]`` with ``fprime(lo) < 0 < fprime(hi)``: Newton, bisection fallback."""
    x = 0.5 * (lo + hi)
    for _ in range(200):
        g = fprime(x)
        if g == 0.0:
            return x
        if g < 0:
            lo = x
        else:
            hi = x
        h = fsecond(x)
        step = x - g / h if h > 0 else np.nan
        x_new = step if lo < step < hi else 0.5 * (lo + hi)
        if abs(x_new - x) <= 4 * np.finfo(float).eps * max(abs(x), 1.0) or hi - lo <= 4 * np.finfo(float).eps * hi:
            return x_new
        x = x_new
    return x


class ScalarOptimum(NamedTuple):
    """Minimizer of ``f(a) = l(a) + r a`` over ``a >= 0``.

    Attributes: ``a`` (0 means the collapsed solution W = H = 0), ``r`` (slope),
    ``f`` (value), ``stationary_points`` (every local minimizer found, ascending).
    """

    a: float
    r: float
    f: float
    stationary_points: tuple


def optimal_scale(loss: str, K, n, *, delta=0.0, lam_W, lam_H, gamma=0.0, nonnegative=False) -> ScalarOptimum:
    """Global minimizer of the 1-D problem ``f(a) = l(a) + r a`` on ``a >= 0`` (docs/theory.md, the scalar reduction).

    For LS it reproduces Theorem 4.1's ``a^delta`` (to ~1e-15 relative); for FL it is the
    scale of Zhou et al. Theorem 1's ETF (no closed form). Safeguarded Newton on
    ``f'`` inside each bracket; brackets from a 4096-point grid on ``[0, A]``.

    Args:
        loss: ``"ce"``, ``"ls"`` or ``"focal"``.
        K, n: classes (>= 2), samples per class (>= 1).
        lam_W, lam_H: > 0. delta: LS smoothing in [0, 1). gamma: focal parameter >= 0.
        nonnegative: the slope of the H >= 0 problem (Nguyen et al. Thm 3.2, module docstring).
    """
    loss, delta, gamma = loss_parameters(loss, delta=delta, gamma=gamma)
    if loss == "mse":
        raise ValueError("optimal_scale is for the contrastive losses; use mse_optimum for loss='mse'")
    K, n = validation.classes_and_samples(K, n)
    r = regularization_slope(K, n, lam_W=lam_W, lam_H=lam_H, nonnegative=nonnegative)
    derivs = lambda x: loss_derivatives(loss, K, x, delta=delta, gamma=gamma)
    f = lambda x: float(derivs(x)[0] + r * x)
    fprime = lambda x: float(derivs(x)[1] + r)
    fsecond = lambda x: float(derivs(x)[2])
    # beyond A, f' > 0: FL |l'| <= (1 + gamma) q and LS l' + r >= r - q, with q <= (K - 1) e^{-a}
    if not r > 0.0:
        raise ValueError(
            f"lam_W * lam_H is too small: the slope r of the 1-D problem underflows to {r!r} "
            f"(lam_W = {lam_W!r}, lam_H = {lam_H!r}), so f(a) has no finite minimizer in float64; "
            "use lam_W * lam_H > 1e-600 (e.g. both > 1e-300)"
        )
    A = max(np.log1p(gamma) + np.log(float(K - 1)) - np.log(r), 0.0) + 2.0  # in logs; float(): K may exceed int64
    while fprime(A) <= 0.0:
        A *= 2.0
        if A > 1e300:
            raise ValueError(
                f"no minimizer of the 1-D problem below a = 1e300 for loss {loss!r} (gamma = {gamma!r}, "
                f"lam_W = {lam_W!r}, lam_H = {lam_H!r}): the parameters are beyond float64's range"
            )
    grid = np.linspace(0.0, A, _GRID)
    slopes = derivs(grid)[1] + r
    candidates = [0.0] if slopes[0] >= 0.0 else []
    for i in np.flatnonzero((slopes[:-1] < 0.0) & (slopes[1:] >= 0.0)):
        candidates.append(_newton_root(fprime, fsecond, float(grid[i]), float(grid[i + 1])))
    if not candidates:  # cannot happen: f'(A) > 0
        raise RuntimeError("no minimizer of the scalar problem was bracketed")
    values = [f(x) for x in candidates]
    best = int(np.argmin(values))
    return ScalarOptimum(float(candidates[best]), r, float(values[best]), tuple(candidates))


class MSEOptimum(NamedTuple):
    """Optimum of the rescaled-MSE UFM (:func:`mse_optimum`).

    Class-k mean logits ``z = a (e_k - 1/K) + t 1``, ``t = s_feature + s_bias``:
    ``b = s_bias 1`` and ``W^T hbar_k = a (e_k - 1/K) + s_feature 1``.
    """

    a: float
    s_feature: float
    s_bias: float
    z_target: float
    z_other: float


def mse_optimum(K, n, *, lam_W, lam_H, lam_b, mse_kappa=1.0, mse_beta=1.0) -> MSEOptimum:
    """Global minimizer of the UFM with the rescaled MSE ``kappa (z_k - beta)^2 + sum_{l!=k} z_l^2``.

    Derivation (ours; Zhou et al. eq. 6 for the loss). Minimising over (W, H) at fixed
    ``Z = W^T H`` gives ``lam_Z ||Z||_*`` (d >= K), so the problem is convex in (Z, b)
    and strictly convex in the logits; it is invariant under relabelling classes and
    permuting samples within a class, hence its unique logits are symmetric:
    ``Zbar = a M + s' 1 1^T`` and ``b = s_b 1``, with
    ``||Z||_* = sqrt(n) ((K-1) |a| + K |s'|)``. With ``u = a(K-1)/K + t`` (target logit),
    ``v = t - a/K`` (others), ``t = s' + s_b`` and ``R = lam_Z sqrt(n)``:

        F = kappa (u - beta)^2 + (K-1) v^2 + R (K-1) a + g(t),
        g(t) = min_{s'+s_b=t} R K |s'| + lam_b K s_b^2 / 2,  g'(t) = K clip(lam_b t, -R, R).

    For ``a > 0``, ``dF/da = 0`` and ``dF/dt = 0`` give ``e := kappa(u - beta) = -((K-1) R + G)/2``
    with ``G = g'(t)/K``, ``t = t0 - c1 G``, ``t0 = (beta + (K-1) R (1 - 1/kappa)/2) / K``,
    ``c1 = (1/kappa + K - 1)/(2K)``, and ``G = clip(lam_b t)`` is a monotone scalar
    equation solved exactly (unclipped, else saturated). Then ``a = beta - R K/2 + e (1/kappa - 1)``.
    If that is <= 0 the optimum is ``a = 0`` with ``(kappa + K - 1) t = kappa beta - K G/2``.
    ``lam_b = 0`` (free bias) means ``G = 0``. ``beta > 0`` keeps ``a >= 0``.

    Returns:
        :class:`MSEOptimum`.
    """
    K, n = validation.classes_and_samples(K, n)
    R = regularization_slope(K, n, lam_W=lam_W, lam_H=lam_H) / (K - 1)
    kappa = validation.positive_scalar("mse_kappa", mse_kappa)
    beta = validation.positive_scalar("mse_beta", mse_beta)
    lam_b = validation.nonnegative_scalar("lam_b", lam_b)

    def solve_G(t0, c1):
        if lam_b == 0.0:
            return 0.0
        G = lam_b * t0 / (1.0 + lam_b * c1)
        return G if abs(G) <= R else float(np.sign(t0)) * R

    t0 = (beta + (K - 1) * R * (1.0 - 1.0 / kappa) / 2.0) / K
    c1 = (1.0 / kappa + K - 1.0) / (2.0 * K)
    G = solve_G(t0, c1)
    t = t0 - c1 * G
    e = -((K - 1) * R + G) / 2.0
    a = beta - R * K / 2.0 + e * (1.0 / kappa - 1.0)
    if a <= 0.0:
        a = 0.0
        denom = kappa + K - 1.0
        G = solve_G(kappa * beta / denom, K / (2.0 * denom))
        t = (kappa * beta - K * G / 2.0) / denom
    s_bias = t if lam_b == 0.0 else float(np.clip(t, -R / lam_b, R / lam_b))
    optimum = MSEOptimum(float(a), float(t - s_bias), float(s_bias), float(a * (K - 1) / K + t), float(t - a / K))
    if not all(np.isfinite(optimum)):
        raise OverflowError(
            f"the MSE optimum overflows float64 for mse_kappa = {kappa!r}, mse_beta = {beta!r}, "
            f"lam_b = {lam_b!r}; use moderate values"
        )
    return optimum


def mse_objective(K, n, a, s_feature, s_bias, *, lam_W, lam_H, lam_b, mse_kappa=1.0, mse_beta=1.0) -> float:
    """The reduced MSE objective ``F(a, s', s_b)`` of :func:`mse_optimum` (for checks)."""
    R = np.sqrt(n * lam_W * lam_H)
    t = s_feature + s_bias
    u, v = a * (K - 1) / K + t, t - a / K
    return float(
        mse_kappa * (u - mse_beta) ** 2
        + (K - 1) * v**2
        + R * (K - 1) * abs(a)
        + R * K * abs(s_feature)
        + lam_b * K * s_bias**2 / 2.0
    )
