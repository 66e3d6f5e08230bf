"""The convex reformulation of the class-mean UFM: a nuclear-norm-penalised problem in the logit matrix.

Class sizes ``n_k > 0`` (K of them, reals), ``N = sum_k n_k``, ``s_k = sqrt(n_k)``, ``D = diag(s)``, ``mu =
sqrt(lam_W lam_H)``, loss CE or label smoothing (soft label ``y^delta_k = (1 - delta) e_k + delta/K``). The
class-mean objective ``L_red(W, Hbar, b)`` of :mod:`ufm.solver` (``W, Hbar: (d, K)``, ``b: (K,)``) depends
on ``(W, Hbar)`` through ``Z = W^T Hbar`` (``(K, K)``: row l classifier l, column k class k) and the penalty
``lam_W/2 ||W||^2 + lam_H/2 ||Hbar D||^2 >= mu ||Z D||_*``, with equality for the factorization below
(the variational form of the nuclear norm). So ``L_red(W, Hbar, b) >= F(W^T Hbar, b)``,

    F(Z, b) = sum_k (n_k/N) loss(z_k + b, k) + mu ||Z D||_* + lam_b/2 ||b||^2,

and ``min L_red = min F`` when ``d >= K`` (every Z has rank <= K <= d). For ``d < K`` the rank constraint
``rank Z <= d`` is dropped: ``min F`` is a lower bound on ``min L_red``, and :func:`certificate` reports the gap
between a solver's value and it. (F has a minimizer with ``1^T Z = 0``, rank <= K - 1: shifting each column z_k
along 1 leaves the loss unchanged and the left projection onto 1^perp does not increase ``||Z D||_*``; so the
bound is attained, and the gap is 0, already for ``d >= K - 1``, and for smaller d whenever ``rank <= d``.)

Solver (:func:`solve_convex`): accelerated proximal gradient (FISTA with O'Donoghue-Candes gradient restart)
on ``x = (Y, b)``, ``Y = Z D`` (so the penalty is ``mu ||Y||_*``, prox = soft-thresholding of the singular values),
float64 numpy. Smooth part ``f(Y, b) = sum_k w_k loss(y_k / s_k + b, k) + lam_b/2 ||b||^2`` (``w_k = n_k / N``);
gradients ``grad_{y_k} f = (s_k / N) v_k``, ``grad_b f = sum_k w_k v_k + lam_b b``, ``v_k = softmax(u_k) -
y^delta_k``, ``u_k = y_k / s_k + b``. The loss Hessian is ``<= 1/2`` in the logits, and per coordinate row
``sum_k w_k ||y_k/s_k + b||^2 = ||y||^2/N + 2 (s.y) b / N + b^2``, whose matrix ``[[I/N, s/N], [s^T/N, 1]]`` is
``<= 2 diag(I/N, 1)`` (Schur complement: ``1/2 - |s|^2/(2N) = 0``). So the steps are ``N`` for Y and
``1/(1 + lam_b)`` for b (a metric in which f is 1-smooth: no line search; a single step for both would be
N times too short for Y).

Stopping rule: the duality gap. Fenchel dual (multipliers ``w_k v_k`` for ``u_k = y_k/s_k + b``):

    D(V) = sum_k w_k Ent(y^delta_k + v_k) - ||sum_k w_k v_k||^2 / (2 lam_b),   subject to ||G||_2 <= mu,
    G = [(s_k / N) v_k]_k  (K x K),   y^delta_k + v_k in the simplex,

(``Ent(p) = -sum_i p_i log p_i``; ``-w_k Ent`` is the conjugate of the loss, the Y-minimum is 0 iff ``||G||_2
<= mu``, the b-minimum is the quadratic). At the iterate, ``v_k = softmax(u_k) - y^delta_k`` scaled by
``min(1, mu / ||G||_2)`` (the scaled point stays in the simplex: a convex combination with ``y^delta_k``) is
dual feasible, so ``D <= min F <= F(x)`` and ``gap = F(x) - D`` bounds the suboptimality. It stops at
``gap <= tol`` (absolute; default 1e-15, a few units of rounding of F ~ 1) or when the gap has not fallen for
``STALL`` checks (rounding floor).

Recovery: SVD ``Y = U S V^T`` (rank r = number of singular values left non-zero by the prox),
``W = alpha S^(1/2) U^T``, ``Hbar = S^(1/2) V^T D^(-1) / alpha``, ``alpha = (lam_H / lam_W)^(1/4)`` (r x K,
zero-padded to d rows when ``d >= r``): ``W^T Hbar = Z`` and ``lam_W/2 ||W||^2 + lam_H/2 ||Hbar D||^2 =
mu ||Y||_*``, so ``L_red(W, Hbar, b) = F(Z, b)``. Shapes: ``Z (K, K)``, ``b (K,)``, ``W, Hbar (max(d, r), K)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from theory import validation
from theory.softmax import log_softmax
from ufm.losses import LOSS_SPECS, loss_spec

#: Gap checks without a new smallest gap after which the solver stops as ``"stalled"`` (rounding floor).
STALL = 50
#: Iterations between two evaluations of the duality gap.
CHECK_EVERY = 10


@dataclass(frozen=True)
class ConvexSolution:
    """Outcome of :func:`solve_convex` (module docstring): ``Z (K, K) = W^T Hbar``, ``b (K,)``, ``W, Hbar
    (max(d, rank), K)``, ``objective`` = F(Z, b), ``lower_bound`` = the dual value D (``<= min F``), ``gap`` =
    objective - lower_bound, ``rank`` of Z, ``exact`` = ``rank <= d`` (then W, Hbar are a UFM point of dimension
    d with ``L_red = F``, and ``min L_red = min F``), ``iterations``, ``status`` (``"converged"``, ``"stalled"``
    or ``"max_iters"``)."""

    sizes: np.ndarray
    Z: np.ndarray
    b: np.ndarray
    W: np.ndarray
    Hbar: np.ndarray
    objective: float
    lower_bound: float
    gap: float
    rank: int
    exact: bool
    iterations: int
    status: str

    @property
    def logits(self) -> np.ndarray:
        """``Z + b 1^T`` ``(K, K)``: column k the logits of class k."""
        return self.Z + self.b[:, None]


@dataclass(frozen=True)
class Certificate:
    """Outcome of :func:`certificate`: ``upper`` (the value a solver reached, ``L_red`` at its point),
    ``lower`` (the dual value of the convex relaxation, ``<= min L_red`` for every d), ``gap = upper - lower``
    (>= 0 up to rounding; the solver's point is at most ``gap`` above the global minimum of the UFM), ``rank``
    of the convex minimizer and ``d``: when ``rank <= d`` the bound is attained (``min L_red = min F``)."""

    upper: float
    lower: float
    gap: float
    rank: int
    d: int


def _sizes(sizes) -> np.ndarray:
    arr = validation.positive("sizes", sizes)
    arr = np.asarray(arr, dtype=np.float64)
    if arr.ndim != 1 or arr.size < 2:
        raise ValueError(f"sizes must be a 1-D array of K >= 2 class sizes > 0, got {validation.describe(sizes)}")
    return arr


def _targets(K: int, loss: str, delta) -> np.ndarray:
    convex_softmax = [name for name, spec in LOSS_SPECS.items() if spec.convex_in_logits and spec.softmax]
    if not (isinstance(loss, str) and loss in convex_softmax):
        raise ValueError(
            f"loss must be {' or '.join(map(repr, convex_softmax))} (the convex losses with a softmax), got {loss!r}"
        )
    delta = validation.delta(delta)
    if np.ndim(delta) != 0:
        raise ValueError(f"delta must be a single number in [0, 1), got {validation.describe(delta)}")
    if delta != 0.0 and "delta" not in loss_spec(loss).parameters:
        raise ValueError(f"delta must be 0 for loss 'ce' (use loss='ls'), got {delta!r}")
    return (1.0 - delta) * np.eye(K) + delta / K


def _lambdas(lam_W, lam_H, lam_b) -> tuple[float, float, float]:
    return (
        validation.positive_scalar("lam_W", lam_W),
        validation.positive_scalar("lam_H", lam_H),
        validation.positive_scalar("lam_b", lam_b),
    )


def _smooth(Y, b, s, N, T, lam_b):
    """f(Y, b), grad_Y f, grad_b f and V = softmax(U) - T (module docstring)."""
    U = Y / s + b[:, None]
    log_p = log_softmax(U, axis=0)
    w = s * s / N
    value = float(w @ -np.sum(T * log_p, axis=0)) + 0.5 * lam_b * float(b @ b)
    V = np.exp(log_p) - T
    return value, V * (s / N), V @ w + lam_b * b, V


def _entropy(P: np.ndarray) -> np.ndarray:
    safe = np.where(P > 0, P, 1.0)
    return -np.sum(P * np.log(safe), axis=0)


def _dual(V, s, N, T, mu, lam_b) -> float:
    """D at the scaled dual point ``t V``, ``t = min(1, mu / ||G||_2)`` (module docstring)."""
    G_norm = float(np.linalg.norm(V * (s / N), 2))
    t = 1.0 if G_norm <= mu else mu / G_norm
    w = s * s / N
    P = T + t * V
    shift = (t * V) @ w
    return float(w @ _entropy(np.clip(P, 0.0, 1.0))) - float(shift @ shift) / (2.0 * lam_b)


def _prox(Y, threshold):
    U, S, Vt = np.linalg.svd(Y)
    S = np.maximum(S - threshold, 0.0)
    return (U * S) @ Vt, S


def convex_objective(Z, b, sizes, *, lam_W, lam_H, lam_b, loss: str = "ce", delta=0.0) -> float:
    """``F(Z, b)`` of the module docstring for ``Z: (K, K)`` (= ``W^T Hbar``), ``b: (K,)`` and class sizes
    ``sizes: (K,)``; ``F(W^T Hbar, b) <= L_red(W, Hbar, b)`` for every (W, Hbar, b), with equality at the
    balanced factorization."""
    n = _sizes(sizes)
    K = n.size
    Z = validation.real_array("Z", Z, "shape (K, K)")
    b = validation.real_array("b", b, "shape (K,)")
    if Z.shape != (K, K):
        raise ValueError(f"Z must have shape (K, K) = ({K}, {K}) for K = {K} class sizes, got shape {Z.shape}")
    if b.shape != (K,):
        raise ValueError(f"b must have shape (K,) = ({K},), got shape {b.shape}")
    lam_W, lam_H, lam_b = _lambdas(lam_W, lam_H, lam_b)
    T = _targets(K, loss, delta)
    s = np.sqrt(n)
    Y = Z * s
    value = _smooth(Y, b, s, float(n.sum()), T, lam_b)[0]
    return value + np.sqrt(lam_W * lam_H) * float(np.linalg.svd(Y, compute_uv=False).sum())


def solve_convex(
    sizes,
    *,
    d=None,
    lam_W,
    lam_H,
    lam_b,
    loss: str = "ce",
    delta=0.0,
    tol: float = 1e-15,
    max_iters: int = 200_000,
) -> ConvexSolution:
    """Minimise ``F(Z, b)`` (module docstring) for class sizes ``sizes: (K,)`` (positive reals) by restarted
    FISTA from ``Z = 0, b = 0``, to a duality gap ``<= tol`` (absolute); ``d`` (default K) only sets the rows
    of the recovered ``W, Hbar`` and ``exact``. float64 numpy."""
    n = _sizes(sizes)
    K = n.size
    d = K if d is None else validation.integer("d", d, 1)
    lam_W, lam_H, lam_b = _lambdas(lam_W, lam_H, lam_b)
    T = _targets(K, loss, delta)
    tol = validation.positive_scalar("tol", tol)
    max_iters = validation.integer("max_iters", max_iters, 1)
    mu = float(np.sqrt(lam_W * lam_H))
    N = float(n.sum())
    s = np.sqrt(n)
    step_Y, step_b = N, 1.0 / (1.0 + lam_b)

    Y, b = np.zeros((K, K)), np.zeros(K)
    Y_z, b_z, theta = Y, b, 1.0
    S = np.zeros(K)
    best, since_best, gap, lower, value = np.inf, 0, np.inf, -np.inf, np.inf
    status, i = "max_iters", 0
    while i < max_iters:
        i += 1
        _, g_Y, g_b, _ = _smooth(Y_z, b_z, s, N, T, lam_b)
        Y_new, S = _prox(Y_z - step_Y * g_Y, step_Y * mu)
        b_new = b_z - step_b * g_b
        # gradient restart (in the metric of the steps): momentum that points uphill is dropped
        uphill = np.sum((Y_z - Y_new) * (Y_new - Y)) / step_Y + (b_z - b_new) @ (b_new - b) / step_b > 0
        theta_new = 1.0 if uphill else 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * theta * theta))
        beta = 0.0 if uphill else (theta - 1.0) / theta_new
        Y_z, b_z = Y_new + beta * (Y_new - Y), b_new + beta * (b_new - b)
        Y, b, theta = Y_new, b_new, theta_new
        if i % CHECK_EVERY and i != max_iters:
            continue
        f_value, _, _, V = _smooth(Y, b, s, N, T, lam_b)
        value = f_value + mu * float(S.sum())
        lower = _dual(V, s, N, T, mu, lam_b)
        gap = value - lower
        if gap <= tol:
            status = "converged"
            break
        if gap < best:
            best, since_best = gap, 0
        else:
            since_best += 1
            if since_best >= STALL:
                status = "stalled"
                break

    rank = int(np.count_nonzero(S))
    U, S_full, Vt = np.linalg.svd(Y)
    U, root, Vt = U[:, :rank], np.sqrt(S_full[:rank]), Vt[:rank]
    alpha = (lam_H / lam_W) ** 0.25
    rows = max(d, rank)
    W = np.zeros((rows, K))
    Hbar = np.zeros((rows, K))
    W[:rank] = alpha * root[:, None] * U.T
    Hbar[:rank] = root[:, None] * Vt / s / alpha
    return ConvexSolution(n, Y / s, b, W, Hbar, value, lower, gap, rank, rank <= d, i, status)


def certificate(
    upper, sizes, *, d, lam_W, lam_H, lam_b, loss: str = "ce", delta=0.0, tol: float = 1e-15
) -> Certificate:
    """Certify a value ``upper`` that a UFM solver reached (``L_red`` at its point, e.g.
    ``ufm.imbalance.solve_reduced(...).objective``) for dimension ``d`` and class sizes ``sizes: (K,)``:
    ``lower`` = the dual value of the convex relaxation (module docstring), a lower bound on ``min L_red``
    for every d. ``gap = upper - lower``: ~0 certifies global optimality; otherwise the point is at most
    ``gap`` above the optimum (for d < K the bound need not be attained: ``rank > d``)."""
    upper = validation.real_array("upper", upper, "a finite value")
    if upper.ndim != 0:
        raise ValueError(f"upper must be a single number, got {validation.describe(upper)}")
    d = validation.integer("d", d, 1)
    solution = solve_convex(sizes, d=d, lam_W=lam_W, lam_H=lam_H, lam_b=lam_b, loss=loss, delta=delta, tol=tol)
    return Certificate(float(upper), solution.lower_bound, float(upper) - solution.lower_bound, solution.rank, d)
