"""ufm.convex: the nuclear-norm reformulation of the class-mean UFM against the reduced L-BFGS solver
(two independent paths to the same optimum for d >= K) and the certificate gap for d < K."""

import numpy as np
import pytest

from ufm import convex
from ufm import imbalance as im

#: Both solvers stop far below this: reduced at a gradient ratio of 1e-12, convex at a duality gap of 1e-15;
#: measured differences are ~1e-12 in the logits and ~1e-16 in the objective (the required agreement is 1e-8).
AGREE = 1e-8


def _l_red(W, Hbar, b, sizes, lam_W, lam_H, lam_b, delta=0.0):
    """L_red of ufm/solver.py in numpy (LS/CE), an independent evaluation of both solvers' points."""
    sizes = np.asarray(sizes, float)
    K = sizes.size
    U = W.T @ Hbar + b[:, None]
    log_p = U - U.max(axis=0) - np.log(np.sum(np.exp(U - U.max(axis=0)), axis=0))
    T = (1 - delta) * np.eye(K) + delta / K
    loss = -np.sum(T * log_p, axis=0)
    penalty = lam_W * np.sum(W**2) + lam_H * np.sum(sizes * np.sum(Hbar**2, axis=0)) + lam_b * b @ b
    return float(sizes @ loss / sizes.sum() + 0.5 * penalty)


# (sizes, lam_W, lam_H, lam_b, loss, delta): imbalanced, K = 4 (one compiled reduced program for d = 4)
CASES = [
    ((1.0, 1.0, 0.2, 0.2), 0.1, 0.1, 0.1, "ce", 0.0),  # R = 5: minority classifiers apart
    ((1.0, 1.0, 1 / 40, 1 / 40), 0.1, 0.1, 0.1, "ce", 0.0),  # R = 40 > R* = 22.96: collapsed
    ((20.0, 20.0, 4.0, 4.0), 0.01, 0.003, 0.5, "ce", 0.0),  # integer sizes, lam_W != lam_H != lam_b
    ((5.0, 3.0, 2.0, 0.5), 0.03, 0.05, 0.01, "ls", 0.1),  # four sizes, label smoothing
]


@pytest.mark.parametrize("sizes, lam_W, lam_H, lam_b, loss, delta", CASES)
def test_convex_reformulation_agrees_with_the_reduced_solver(sizes, lam_W, lam_H, lam_b, loss, delta):
    lams = dict(lam_W=lam_W, lam_H=lam_H, lam_b=lam_b, loss=loss, delta=delta)
    c = convex.solve_convex(sizes, **lams)
    r = im.solve_reduced(sizes, tol=1e-12, **lams)
    assert c.status == "converged" and r.status == "converged"
    assert c.gap <= 1e-14  # the certified suboptimality of the convex point (absolute, F ~ 1)
    assert abs(c.objective - r.objective) <= AGREE
    assert np.max(np.abs(c.logits - (r.W.T @ r.Hbar + r.b[:, None]))) <= AGREE
    # the recovered factors (rotation-invariant parts): W^T W and the class-mean norms
    assert np.max(np.abs(c.W.T @ c.W - r.W.T @ r.W)) <= AGREE
    assert np.max(np.abs(np.linalg.norm(c.Hbar, axis=0) - np.linalg.norm(r.Hbar, axis=0))) <= AGREE
    # the recovered point is a UFM point of dimension d = K with L_red = F (a third, numpy evaluation)
    assert c.exact and c.W.shape == (4, 4)
    assert np.max(np.abs(c.W.T @ c.Hbar - c.Z)) <= 1e-12  # an SVD product: rounding only
    assert abs(_l_red(c.W, c.Hbar, c.b, sizes, lam_W, lam_H, lam_b, delta) - c.objective) <= 1e-12


def test_convex_objective_is_below_l_red_everywhere_and_equal_at_the_optimum():
    sizes, lams = (1.0, 2.0, 0.5, 0.25), dict(lam_W=0.05, lam_H=0.02, lam_b=0.1)
    rng = np.random.default_rng(0)
    for _ in range(20):
        W, Hbar, b = rng.normal(size=(4, 4)), rng.normal(size=(4, 4)), rng.normal(size=4)
        F = convex.convex_objective(W.T @ Hbar, b, sizes, **lams)
        assert F <= _l_red(W, Hbar, b, sizes, **lams) + 1e-12  # the variational inequality; rounding slack
    c = convex.solve_convex(sizes, **lams)
    assert abs(convex.convex_objective(c.Z, c.b, sizes, **lams) - c.objective) <= 1e-14  # same formula


def test_certificate_gap_for_d_below_K():
    lams = dict(lam_W=0.1, lam_H=0.1, lam_b=0.1)
    # R = 40 > R*: the convex minimizer has rank K_A = 2, so d = 2 < K = 4 attains the bound: gap ~ 0
    collapsed = im.two_group_sizes(2, 2, 40.0)
    r = im.solve_reduced(collapsed, d=2, tol=1e-12, **lams)
    cert = convex.certificate(r.objective, collapsed, d=2, **lams)
    assert cert.rank == 2 and abs(cert.gap) <= 1e-12  # both solvers converged far below; rounding of F ~ 1
    # R = 5 < R*: rank 3 > d = 2, the relaxation is not attained: a strictly positive gap
    apart = im.two_group_sizes(2, 2, 5.0)
    r = im.solve_reduced(apart, d=2, tol=1e-12, **lams)
    cert = convex.certificate(r.objective, apart, d=2, **lams)
    assert cert.rank == 3 and cert.gap > 1e-4  # measured 2.6e-2: the rank-2 optimum is that far above the bound
    # d = K: the bound is the optimum
    r = im.solve_reduced(apart, tol=1e-12, **lams)
    assert abs(convex.certificate(r.objective, apart, d=4, **lams).gap) <= 1e-12


def test_validation_names_the_parameter():
    lams = dict(lam_W=0.1, lam_H=0.1, lam_b=0.1)
    with pytest.raises(ValueError, match="sizes"):
        convex.solve_convex([1.0], **lams)
    with pytest.raises(ValueError, match="sizes"):
        convex.solve_convex([1.0, -1.0], **lams)
    with pytest.raises(ValueError, match="lam_H"):
        convex.solve_convex([1.0, 1.0], lam_W=0.1, lam_H=0.0, lam_b=0.1)
    with pytest.raises(ValueError, match="lam_b"):
        convex.solve_convex([1.0, 1.0], lam_W=0.1, lam_H=0.1, lam_b=float("nan"))
    with pytest.raises(ValueError, match="loss"):
        convex.solve_convex([1.0, 1.0], loss="focal", **lams)
    with pytest.raises(ValueError, match="delta"):
        convex.solve_convex([1.0, 1.0], loss="ce", delta=0.1, **lams)
    with pytest.raises(ValueError, match="delta"):
        convex.solve_convex([1.0, 1.0], loss="ls", delta=1.0, **lams)
    with pytest.raises(ValueError, match="d must"):
        convex.solve_convex([1.0, 1.0], d=0, **lams)
    with pytest.raises(ValueError, match="tol"):
        convex.solve_convex([1.0, 1.0], tol=0.0, **lams)
    with pytest.raises(ValueError, match="max_iters"):
        convex.solve_convex([1.0, 1.0], max_iters=0, **lams)
    with pytest.raises(ValueError, match="Z must"):
        convex.convex_objective(np.zeros((2, 3)), np.zeros(2), [1.0, 1.0], **lams)
    with pytest.raises(ValueError, match="b must"):
        convex.convex_objective(np.zeros((2, 2)), np.zeros(3), [1.0, 1.0], **lams)
    with pytest.raises(ValueError, match="upper"):
        convex.certificate(float("inf"), [1.0, 1.0], d=1, **lams)
    with pytest.raises(ValueError, match="d must"):
        convex.certificate(1.0, [1.0, 1.0], d=0.5, **lams)
