"""theory.minority_collapse_threshold (the closed form of R*) against the bisection of
experiments/imbalance.py, run on both numerical paths (the convex reformulation and the reduced L-BFGS)."""

import math

import numpy as np
import pytest

import theory
from experiments import imbalance as ex
from theory import minority_collapse as mc
from ufm import convex
from ufm import imbalance as im


def test_the_pattern_of_the_quick_run_is_exact():
    # K_A = K_B = 2: sqrt(R*) + 1/sqrt(R*) = 1/(2 lam): t = 2, 3, 7 at lam = 0.2, 0.15, 0.07
    for lam, R in ((0.2, 4.0), (0.15, 9.0), (0.07, 49.0)):
        assert theory.minority_collapse_threshold(2, 2, lam) == pytest.approx(R, rel=1e-14)  # rounding only
    assert theory.minority_collapse_threshold(2, 2, 0.1) == pytest.approx(((5 + math.sqrt(21)) / 2) ** 2, rel=1e-14)


def test_slope_of_the_minority_loss_is_a_constant_symbolically():
    import sympy as sp

    slope = mc.symbolic_slope()
    K_B, delta = sp.symbols("K_B delta", positive=True)
    assert sp.simplify(slope + (1 - delta) * (K_B - 1) / K_B) == 0  # exact: sympy algebra, no numbers


def test_margin_vanishes_at_the_threshold_and_normalizations_agree():
    for K_A, K_B, lam, delta in ((2, 2, 0.1, 0.0), (3, 2, 0.05, 0.1), (1, 4, 0.02, 0.3)):
        R = theory.minority_collapse_threshold(K_A, K_B, lam, delta=delta)
        assert abs(mc.collapse_margin(K_A, K_B, R=R, lam=lam, delta=delta)) <= 1e-13  # root of the quadratic: rounding
        assert (
            mc.collapse_margin(K_A, K_B, R=0.9 * R, lam=lam, delta=delta)
            < 0
            < mc.collapse_margin(K_A, K_B, R=1.1 * R, lam=lam, delta=delta)
        )
    # n_A samples per majority class with lam_H is the n_A = 1 problem with lam_H n_A (experiments/imbalance.py)
    a = theory.minority_collapse_threshold(2, 3, 0.01, n_A=7.0, lam_W=0.02, lam_H=0.01)
    b = theory.minority_collapse_threshold(2, 3, 0.01, lam_W=0.02, lam_H=0.07)
    assert a == pytest.approx(b, rel=1e-14)
    # no real root / t_+ <= 1: collapsed at every R >= 1
    assert theory.minority_collapse_threshold(2, 4, 0.2) == 1.0
    assert theory.minority_collapse_threshold(2, 2, 0.2, delta=0.3) == 1.0


def _convex_equal(K_A, K_B, lam, lam_b, delta, lam_H):
    """The experiment's predicate (minority classifiers within EQUAL of each other) on the convex path."""

    def equal(R):
        solution = convex.solve_convex(
            im.two_group_sizes(K_A, K_B, R),
            lam_W=lam,
            lam_H=lam_H,
            lam_b=lam_b,
            loss="ce" if delta == 0 else "ls",
            delta=delta,
        )
        return ex.minority_measures(solution, K_A)["spread"] <= ex.EQUAL

    return equal


# (K_A, K_B, lam, lam_b, delta, lam_H): the experiment's lam grid, K_A != K_B, lam_b != lam, LS, lam_H != lam_W
SETTINGS = [(2, 2, lam, lam, 0.0, lam) for lam in (0.03, 0.05, 0.07, 0.1, 0.15, 0.2)] + [
    (3, 2, 0.1, 0.1, 0.0, 0.1),
    (2, 4, 0.1, 0.1, 0.0, 0.1),
    (1, 2, 0.1, 0.1, 0.0, 0.1),
    (4, 3, 0.05, 0.05, 0.0, 0.05),
    (2, 3, 0.1, 0.01, 0.0, 0.1),
    (3, 2, 0.05, 1.0, 0.0, 0.05),
    (2, 2, 0.1, 0.1, 0.1, 0.1),
    (2, 2, 0.05, 0.05, 0.3, 0.05),
    (2, 2, 0.1, 0.1, 0.0, 0.03),
]


@pytest.mark.parametrize("K_A, K_B, lam, lam_b, delta, lam_H", SETTINGS)
def test_formula_matches_the_bisection_on_the_convex_path(K_A, K_B, lam, lam_b, delta, lam_H):
    R_star = theory.minority_collapse_threshold(K_A, K_B, lam, lam_H=lam_H, lam_b=lam_b, delta=delta)
    low, high, _ = ex.bisect(_convex_equal(K_A, K_B, lam, lam_b, delta, lam_H), R_star * 0.999, R_star * 1.001)
    assert high - low <= ex.R_TOL
    # inside the final bisection interval (width <= 1e-6). Slack 1e-9 R*: the predicate's own resolution (just
    # below R* the minority singular value y of Z D is ~1e-4 (R* - R) and the spread ~sqrt(y), so the spread
    # falls under EQUAL = 1e-6 within ~1e-8 of R*: the convex path sits on the threshold to rounding)
    assert low - 1e-9 * R_star <= R_star <= high + 1e-9 * R_star


@pytest.mark.parametrize("lam, lam_b", [(0.1, 0.1), (0.2, 0.2), (0.1, 0.01), (0.1, 1.0)])
def test_formula_matches_the_experiments_bisection_on_the_reduced_path(lam, lam_b):
    """The experiment's own predicate (reduced L-BFGS at tol 1e-12, K_A = K_B = 2). Just above R* its
    convergence to the collapsed minimizer is slow (the curvature along w_k - w_l vanishes like R - R*), so
    its R* lies above the formula by a bias that grows as lam falls (2.7e-3 at lam = 0.03, experiments/README.md);
    at these lam it is below the width. Allowed: one width of slack above the interval."""

    def equal(R):
        s = im.solve_reduced(im.two_group_sizes(2, 2, R), lam_W=lam, lam_H=lam, lam_b=lam_b, tol=1e-12)
        return ex.minority_measures(s, 2)["spread"] <= ex.EQUAL

    R_star = theory.minority_collapse_threshold(2, 2, lam, lam_b=lam_b)
    low, high, _ = ex.bisect(equal, R_star * 0.999, R_star * 1.001)
    assert low - ex.R_TOL <= R_star <= high


def test_reduced_path_is_apart_below_and_equal_above_the_threshold():
    for K_A, K_B, lam in ((2, 2, 0.03), (2, 2, 0.07)):
        R_star = theory.minority_collapse_threshold(K_A, K_B, lam)
        for factor, equal in ((1 - 1e-4, False), (1 + 1e-2, True)):
            s = im.solve_reduced(im.two_group_sizes(K_A, K_B, R_star * factor), lam_W=lam, lam_H=lam, lam_b=lam)
            spread = ex.minority_measures(s, K_A)["spread"]
            assert (spread <= ex.EQUAL) == equal, (lam, factor, spread)


def test_validation_names_the_parameter():
    f = theory.minority_collapse_threshold
    for kwargs, name in (
        (dict(K_A=0, K_B=2, lam=0.1), "K_A"),
        (dict(K_A=2, K_B=1, lam=0.1), "K_B"),
        (dict(K_A=2, K_B=2.5, lam=0.1), "K_B"),
        (dict(K_A=2, K_B=2, lam=0.0), "lam"),
        (dict(K_A=2, K_B=2, lam=0.1, n_A=-1.0), "n_A"),
        (dict(K_A=2, K_B=2, lam=0.1, lam_W=np.inf), "lam_W"),
        (dict(K_A=2, K_B=2, lam=0.1, lam_H="x"), "lam_H"),
        (dict(K_A=2, K_B=2, lam=0.1, lam_b=0.0), "lam_b"),
        (dict(K_A=2, K_B=2, lam=0.1, delta=1.0), "delta"),
        (dict(K_A=2, K_B=2, lam=0.1, delta=[0.1, 0.2]), "delta"),
    ):
        with pytest.raises(ValueError, match=name):
            f(**kwargs)
    with pytest.raises(ValueError, match="R"):
        mc.collapse_margin(2, 2, R=0.0, lam=0.1)
