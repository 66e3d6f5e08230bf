"""Closed-form pieces of Nguyen et al.'s memorization-dilation (MD) model (Definition 4.1, Theorem 4.3).

Source: Nguyen et al. (ICLR 2023), Section 4.2 and Appendix C. numpy, float64.

The MD problem (Definition 4.1): with ``(W, H)`` the non-negative NC configuration of
Assumption 4.2.1 and ``lam := lam_H``, minimise over ``U = [u_1, u_2] >= 0`` and ``r >= 0``

    R(U, r) = F(r) + eta G(U, r),
    F(r)    = sum_k  E_{v ~ mu_r^k} [ l_alpha(W, h_k + v, y_k) + lam ||h_k + v||^2 ],
    G(U, r) = sum_k  l_alpha(W, u_k, y_k) + lam ||u_k||^2,
    subject to  eta ||h_2 - u_1|| <= C_MD r / ||h_1 - h_2||  and  eta ||h_1 - u_2|| <= C_MD r / ||h_1 - h_2||
    (constraints (5) and (4)).

Mapping onto the package's conventions (``docs/theory.md``):

- Their ``N = 2`` classes are our ``K = 2``; their feature dimension ``M`` is our ``d``; the
  configuration has one feature per class (our ``n = 1``). Arrays here: ``W: (d, 2)`` (columns
  ``w_1, w_2``), ``H: (d, 2)`` (columns ``h_1, h_2``).
- Their label smoothing ``y_n = (1 - alpha) e_n + (alpha/N) 1`` (printed ``alpha/n``; the ``alpha/2``
  of their problem (P_u1) fixes it as ``alpha/N``) is our ``y^delta`` with ``delta = alpha``. For two
  classes, with ``t = <w_2 - w_1, z>``, ``l_alpha(W, z, y_1) = phi(t) = log(1 + e^t) - alpha t / 2``.
- Assumption 4.2.1 fixes ``(W, H)`` as the minimizer of ``l(h_1) + l(h_2) + lam_W ||W||^2 + lam_H ||H||^2``
  over ``H >= 0`` (loss *summed*, no 1/2). That is twice our objective
  ``(1/2) sum_k l(h_k) + (lam_W/2) ||W||^2 + (lam_H/2) ||H||^2`` with ``n = 1``: the same minimizer
  with the *same* ``lam_W, lam_H`` (no rescaling, no bias). Their Section 3 problem (P_alpha)
  scales differently (``lam_W' ||W||^2 + (lam_H'/K) ||H||^2``, mean loss; :mod:`theory.prediction`
  maps that one); the MD model uses Assumption 4.2.1's, so ``nc_configuration`` calls
  :func:`theory.predict` with ``K = 2, n = 1, d = M, delta = alpha, nonnegative=True``.
- ``lam ||.||^2`` in F and G is literally ``lam_H`` times the squared norm (no 1/2).

Derived facts used below (checked in ``tests/test_memorization_dilation.py``):

- The H >= 0 optimum for K = 2, n = 1 has logit margin ``a = log(q / (1 - q))`` with
  ``q = 1 - alpha/2 - sqrt(2 lam_W lam_H)``; ``||h_k||^2 = a sqrt(lam_W / (2 lam_H))``, and
  ``<w_2 - w_1, h_1> = -a``. Hence ``gamma = ||H^CE|| / ||H^LS|| = sqrt(a^CE / a^LS) > 1`` for *every*
  ``alpha_0 > 0`` with ``a^LS > 0``; the paper's ``alpha_0 > 4 sqrt(lam_W lam_H)`` is sufficient, not needed.
- Any mean-zero ``mu_r`` satisfies both "centered" conditions of Assumption 4.2.2 (they are linear in v).
- ``R`` is jointly convex in ``(U, r)`` (convex loss, convex norms, second-order-cone constraints), so
  ``r -> min_U R(U, r)`` is convex and, with ``lam r^2`` in F, strictly convex: one global minimizer.
- F is strictly increasing in r (Jensen for the symmetric laws below, plus ``lam r^2``) and G is
  constant for ``r >= r_max = eta ||h_1 - h_2||^2 / C_MD`` (Remark 1): ``r* in [0, r_max]``.

Distributions ``mu_r`` (both of norm exactly ``r``: Assumption 4.2.2 with ``A = 1``); ``u = (w_1 - w_2)/||w_1 - w_2||``:

- ``"two-point"`` (default): ``v = +-r u`` with probability 1/2 each, the direction the loss sees.
  ``F_k = (phi(t_k + r s) + phi(t_k - r s))/2 + lam (||h_k||^2 + r^2)``, ``s = ||w_1 - w_2||``: exact.
- ``"circle"``: ``v = r (cos(theta) u + sin(theta) e)``, theta uniform, ``e`` a unit vector orthogonal to
  ``h_1, h_2`` (d >= 3) or to ``u`` in the plane (d = 2). ``F_k = mean_theta phi(t_k + r s cos theta) +
  lam (||h_k||^2 + r^2)``. The mean is the N-point trapezoid rule, exact to rounding: the integrand is
  periodic and analytic in the strip ``|Im theta| < sigma = asinh(pi / (2 c))``, ``c = r s`` (there
  ``|Im(c cos theta)| <= pi/2``, so ``1 + e^z`` stays off the branch cut of log and ``|phi| <= B = |t| +
  c cosh(sigma) + 3``), and the trapezoid error is at most ``2 B / (e^{sigma N} - 1)`` (Trefethen &
  Weideman 2014, Thm 3.2). :func:`circle_nodes` picks N to make that ``<= 1e-17``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from theory import validation
from theory.prediction import predict

DISTRIBUTIONS = ("two-point", "circle")
_QUADRATURE_ERROR = 1e-17
_MAX_NODES = 1 << 16


# ----------------------------------------------------------------------------- validation
def check_alpha(alpha) -> float:
    """LS parameter ``alpha`` (their alpha, our delta): a single finite number in ``[0, 1)``."""
    arr = validation.real_array("alpha", alpha, "0 <= alpha < 1")
    if arr.ndim != 0 or not 0.0 <= float(arr) < 1.0:
        raise ValueError(f"alpha must be a single number with 0 <= alpha < 1, got {alpha!r}")
    return float(arr)


def check_eta(eta) -> float:
    """Noise level ``eta > 0`` (Definition 4.1)."""
    return validation.positive_scalar("eta", eta)


def check_c_md(c_md) -> float:
    """Memorization-dilation slope ``C_MD > 0`` (Definition 4.1)."""
    return validation.positive_scalar("c_md", c_md)


def check_dimension(M) -> int:
    """Feature dimension ``M >= N = 2`` (Theorem 4.3)."""
    return validation.integer("M", M, 2, float64=True)


def check_distribution(name) -> str:
    if name not in DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {name!r}")
    return name


# ----------------------------------------------------------------------------- loss of the logit gap
def phi(t, alpha):
    """``l_alpha`` of a class-1 sample as a function of ``t = <w_2 - w_1, z>``: ``log(1 + e^t) - alpha t / 2``."""
    t = np.asarray(t, dtype=np.float64)
    return np.logaddexp(0.0, t) - 0.5 * alpha * t


def phi_prime(t, alpha):
    """``phi'(t) = sigmoid(t) - alpha / 2``."""
    t = np.asarray(t, dtype=np.float64)
    return 0.5 * (1.0 + np.tanh(0.5 * t)) - 0.5 * alpha


# ----------------------------------------------------------------------------- the NC configuration
@dataclass(frozen=True)
class NCConfiguration:
    """Assumption 4.2.1's ``(W, H)`` for one loss (module docstring for the scaling).

    Attributes:
        W: ``(d, 2)`` classifier columns ``w_1, w_2``. H: ``(d, 2)`` class features ``h_1, h_2`` (>= 0, orthogonal).
        alpha, lam_W, lam_H: the problem. a: logit margin ``<w_1 - w_2, h_1>``.
        h_norm: ``||h_k||``. distance: ``||h_1 - h_2||``. w_gap: ``s = ||w_1 - w_2||``.
        H_norm: ``||H||_F`` (the paper's ``||H||``, gamma's numerator/denominator).
    """

    W: np.ndarray
    H: np.ndarray
    alpha: float
    lam_W: float
    lam_H: float
    a: float
    h_norm: float
    distance: float
    w_gap: float
    H_norm: float

    @property
    def d(self) -> int:
        return self.W.shape[0]

    def direction(self) -> np.ndarray:
        """``u = (w_1 - w_2) / ||w_1 - w_2||`` (the two-point law's direction), shape ``(d,)``."""
        return (self.W[:, 0] - self.W[:, 1]) / self.w_gap

    def margins(self) -> np.ndarray:
        """``t_k``: ``<w_2 - w_1, h_1>`` and ``<w_1 - w_2, h_2>`` (both ``-a``), shape ``(2,)``."""
        diff = self.W[:, 1] - self.W[:, 0]
        return np.array([diff @ self.H[:, 0], -diff @ self.H[:, 1]])


def nc_configuration(M, *, lam_W, lam_H, alpha) -> NCConfiguration:
    """The non-negative NC configuration of Assumption 4.2.1 for ``alpha`` (CE: 0), ``d = M``.

    ``h_1 = rho e_1``, ``h_2 = rho e_2`` and ``W = (a / rho) [e_1, e_2] (I - 1 1^T / 2)`` (the
    :meth:`theory.Prediction.minimizer` of ``predict(2, 1, M, delta=alpha, lam_W=lam_W, lam_H=lam_H, nonnegative=True)``
    with the identity's first two columns). Raises ``ValueError`` when that problem's minimizer is
    ``W = H = 0`` (``alpha/2 + sqrt(2 lam_W lam_H) >= 1/2``): the MD model needs ``h_1 != h_2``.
    """
    M = check_dimension(M)
    alpha = check_alpha(alpha)
    lam_W = validation.positive_scalar("lam_W", lam_W)
    lam_H = validation.positive_scalar("lam_H", lam_H)
    pred = predict(2, 1, M, lam_W=lam_W, lam_H=lam_H, loss="ls", delta=alpha, nonnegative=True)
    if pred.collapsed:
        raise ValueError(
            f"alpha = {alpha!r}, lam_W = {lam_W!r}, lam_H = {lam_H!r} give W = H = 0 under H >= 0 "
            "(needs alpha/2 + sqrt(2 lam_W lam_H) < 1/2); the MD model needs h_1 != h_2"
        )
    rho = pred.class_mean_norm
    Q = np.eye(M)[:, :2]
    H = rho * Q
    W = (pred.a / rho) * Q @ (np.eye(2) - 0.5)
    gap = float(np.linalg.norm(W[:, 0] - W[:, 1]))
    return NCConfiguration(
        W=W,
        H=H,
        alpha=alpha,
        lam_W=lam_W,
        lam_H=lam_H,
        a=pred.a,
        h_norm=float(rho),
        distance=float(np.sqrt(2.0) * rho),
        w_gap=gap,
        H_norm=float(np.sqrt(2.0) * rho),
    )


def gamma_ratio(*, lam_W, lam_H, alpha0) -> float:
    """``gamma = ||H^CE|| / ||H^LS||`` (eq. 6) with ``alpha = 0`` and ``alpha = alpha0``: ``sqrt(a^CE / a^LS)``."""
    ce = nc_configuration(2, lam_W=lam_W, lam_H=lam_H, alpha=0.0)
    ls = nc_configuration(2, lam_W=lam_W, lam_H=lam_H, alpha=alpha0)
    return ce.H_norm / ls.H_norm


# ----------------------------------------------------------------------------- distributions mu_r
@dataclass(frozen=True)
class Distribution:
    """A law ``mu_r`` of the offsets ``v`` as weighted nodes at radius 1 (scale by r).

    ``xi: (m,)`` the component ``<u, v> / r``, ``eta_perp: (m,)`` the component along the second
    direction ``e``, ``weights: (m,)`` summing to 1. Every node has ``||v|| = r`` (``A = 1``).
    """

    name: str
    xi: np.ndarray
    eta_perp: np.ndarray
    weights: np.ndarray

    def offsets(self, u: np.ndarray, e: np.ndarray) -> np.ndarray:
        """Unit-radius offsets ``V: (m, d)``, ``V_j = xi_j u + eta_perp_j e``."""
        return np.outer(self.xi, u) + np.outer(self.eta_perp, e)


def circle_nodes(c_max, margin=0.0) -> int:
    """Trapezoid nodes for the circle law, error ``<= 1e-17`` for ``c = r ||w_1 - w_2|| <= c_max`` and
    ``|t_k| <= margin`` (module docstring: ``2 B / (e^{sigma N} - 1) <= 1e-17``); at least 8, at most 65536.

    The same N serves dF/dr: its integrand ``s cos(theta) phi'`` is bounded by ``s cosh(sigma) (1 + alpha/2)``
    in the same strip (``|sigmoid| <= 1`` there), which ``B`` times ``s`` covers.
    """
    c_max = float(c_max)
    margin = float(margin)
    if not np.isfinite(c_max) or c_max < 0:
        raise ValueError(f"c_max must be a finite number >= 0, got {c_max!r}")
    if not np.isfinite(margin) or margin < 0:
        raise ValueError(f"margin must be a finite number >= 0, got {margin!r}")
    if c_max == 0.0:
        return 8
    sigma = np.arcsinh(np.pi / (2.0 * c_max))
    bound = 2.0 * (margin + c_max * np.cosh(sigma) + 3.0)
    nodes = int(np.ceil(np.log(bound / _QUADRATURE_ERROR) / sigma))
    if nodes > _MAX_NODES:
        raise ValueError(
            f"the circle law needs {nodes} quadrature nodes for r ||w_1 - w_2|| up to {c_max:g} "
            f"(more than {_MAX_NODES}); use distribution='two-point' or a larger c_md"
        )
    return max(8, nodes)


def distribution(name, c_max=0.0, margin=0.0) -> Distribution:
    """``"two-point"`` or ``"circle"`` (module docstring); circle only: ``c_max`` the largest ``r ||w_1 - w_2||``,
    ``margin`` the largest ``|t_k|`` (:func:`circle_nodes`)."""
    name = check_distribution(name)
    if name == "two-point":
        return Distribution(name, np.array([1.0, -1.0]), np.zeros(2), np.array([0.5, 0.5]))
    N = circle_nodes(c_max, margin)
    theta = 2.0 * np.pi * np.arange(N) / N
    return Distribution(name, np.cos(theta), np.sin(theta), np.full(N, 1.0 / N))


def second_direction(config: NCConfiguration) -> np.ndarray:
    """The circle's ``e``: orthogonal to ``h_1, h_2`` (and so to u) if ``d >= 3``, else orthogonal to u in the plane."""
    u = config.direction()
    if config.d == 2:
        return np.array([-u[1], u[0]])
    basis = np.linalg.qr(np.column_stack([config.H, np.eye(config.d)]))[0]
    return basis[:, 2]


# ----------------------------------------------------------------------------- F, r_max, assumptions
def dilation_risk(r, config: NCConfiguration, lam, dist: Distribution):
    """``F_{lam, alpha}(W, H, r)`` of Definition 4.1 (both classes), closed form in the reduced variable.

    ``r``: scalar or array (>= 0). ``F = sum_k [sum_j w_j phi(t_k - r s xi_j) + lam (||h_k||^2 + r^2)]``;
    the cross term ``2 lam <h_k, v>`` integrates to 0 (mean-zero law).
    """
    r = np.asarray(r, dtype=np.float64)
    s, t = config.w_gap, config.margins()
    total = 0.0
    for k in range(2):
        z = t[k] - np.multiply.outer(r, s * dist.xi)
        total = total + phi(z, config.alpha) @ dist.weights + lam * (config.h_norm**2 + r**2)
    return total


def dilation_risk_derivative(r, config: NCConfiguration, lam, dist: Distribution):
    """``dF/dr``: ``sum_k [-s sum_j w_j xi_j phi'(t_k - r s xi_j) + 2 lam r]``."""
    r = np.asarray(r, dtype=np.float64)
    s, t = config.w_gap, config.margins()
    total = 0.0
    for k in range(2):
        z = t[k] - np.multiply.outer(r, s * dist.xi)
        total = total - s * (phi_prime(z, config.alpha) @ (dist.weights * dist.xi)) + 2.0 * lam * r
    return total


def r_max(*, eta, c_md, distance) -> float:
    """``r_max = eta ||h_1 - h_2||^2 / C_MD`` (Remark 1): from there on ``u_1 = h_1`` is feasible."""
    return check_eta(eta) * validation.positive_scalar("distance", distance) ** 2 / check_c_md(c_md)


def lemma_c6_lower_bound(*, eta, c_md, distance, A=1.0) -> float:
    """Lemma C.6's ``r_max (1 - C' eta^{1/2})``, ``C' = A sqrt(2) ||h_1 - h_2|| / C_MD`` (asymptotic: the
    proof drops ``O(r^3)`` terms, so this is a claim to test, not a guarantee)."""
    c_prime = A * np.sqrt(2.0) * distance / check_c_md(c_md)
    return r_max(eta=eta, c_md=c_md, distance=distance) * (1.0 - c_prime * np.sqrt(eta))


@dataclass(frozen=True)
class AssumptionCheck:
    """Assumption 4.2.3 for ``(lam_W, lam_H, alpha0, eta, C_MD)``.

    alpha_bound: ``4 sqrt(lam_W lam_H)``; alpha_ok: ``alpha0 > alpha_bound``. gamma: eq. (6).
    c_tilde: ``C_MD / (sqrt(2) ||h_1^CE - h_2^CE||)``. eta_bound: ``(c_tilde (1 - 1/gamma))^2``;
    eta_ok: ``eta < eta_bound`` (i.e. ``eta^{1/2} < c_tilde (1 - 1/gamma)``). holds: both.
    (4.2.1 holds by construction, 4.2.2 for both laws here with A = 1.)
    """

    alpha_bound: float
    alpha_ok: bool
    gamma: float
    c_tilde: float
    eta_bound: float
    eta_ok: bool

    @property
    def holds(self) -> bool:
        return self.alpha_ok and self.eta_ok


def assumption_4_2(*, lam_W, lam_H, alpha0, eta, c_md) -> AssumptionCheck:
    """Evaluate Assumption 4.2.3 (``alpha0 > 0`` is LS; CE is ``alpha = 0``)."""
    alpha0 = check_alpha(alpha0)
    if alpha0 == 0.0:
        raise ValueError("alpha0 must be > 0: Theorem 4.3 compares CE (alpha = 0) with LS (alpha = alpha0 > 0)")
    eta, c_md = check_eta(eta), check_c_md(c_md)
    ce = nc_configuration(2, lam_W=lam_W, lam_H=lam_H, alpha=0.0)
    ls = nc_configuration(2, lam_W=lam_W, lam_H=lam_H, alpha=alpha0)
    gamma = ce.H_norm / ls.H_norm
    with np.errstate(over="ignore"):  # an overflow is the OverflowError below, not a warning first
        c_tilde = c_md / (np.sqrt(2.0) * ce.distance)
        eta_bound = float((c_tilde * (1.0 - 1.0 / gamma)) ** 2)
    if not np.isfinite(eta_bound):
        raise OverflowError(
            f"the bound on eta of Assumption 4.2 overflows float64 (c_md = {c_md!r} too large for "
            f"lam_W = {lam_W!r}, lam_H = {lam_H!r})"
        )
    alpha_bound = float(4.0 * np.sqrt(ce.lam_W * ce.lam_H))
    return AssumptionCheck(
        alpha_bound=alpha_bound,
        alpha_ok=alpha0 > alpha_bound,
        gamma=float(gamma),
        c_tilde=float(c_tilde),
        eta_bound=eta_bound,
        eta_ok=eta < eta_bound,
    )


def md_law(config: NCConfiguration, name, *, eta, c_md) -> tuple[np.ndarray, np.ndarray]:
    """The law ``name`` for this configuration on ``r in [0, r_max]``:
    ``(V: (m, d) unit-radius offsets, weights: (m,))``.

    Both classes use the same law (mean zero, so Assumption 4.2.2 holds for each).
    """
    rmax = r_max(eta=eta, c_md=c_md, distance=config.distance)
    law = distribution(name, c_max=rmax * config.w_gap, margin=abs(config.a))
    return law.offsets(config.direction(), second_direction(config)), law.weights
