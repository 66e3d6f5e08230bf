"""experiments/imbalance.py: the bisection (on the convex test), the threshold against the closed form and its
independent extrapolation, and the quick run's tables (its quick run is checked here only, with the checks of
every quick run: tests/_quick.py)."""

import csv
from itertools import pairwise

import numpy as np
import pytest

import theory
from experiments import imbalance as experiment
from tests._quick import compare_with_committed, run_quick

#: the experiment whose quick run this file makes and checks (tests/_quick.py, OWN_FILES)
QUICK_RUN = "imbalance"


def test_bisection_brackets_a_known_root():
    low, high, steps = experiment.bisect(lambda x: x >= np.pi, 1.0, 10.0, width=1e-9)
    assert low < np.pi <= high and high - low <= 1e-9 and steps == int(np.ceil(np.log2(9.0 / 1e-9)))
    with pytest.raises(ValueError, match="no sign change"):
        experiment.bisect(lambda x: True, 1.0, 2.0)


def test_threshold_is_located_and_agrees_with_the_pitchfork_extrapolation():
    """lam = 0.1, one setting (K_A = K_B = 2, CE): R* to 1e-6 by bisection; the sqrt(R* - R) extrapolation
    from 1 % and 2 % below R* is an independent estimate whose error is first order in that offset
    (measured 2e-3 / 23 = 8e-5 relative; asserted 1e-3). Below R* the classifiers differ, above they coincide."""
    grid = list(np.geomspace(1.0, 1e3, 10))
    row = experiment.thresholds(2, 2, 0.1, 0.0, grid)
    assert row["status"] == "converged" and row["test"] == "convex"  # d = K: the convex test
    assert row["R_star_width"] <= 1e-6
    assert row["R_star_closed_form"] == theory.minority_collapse_threshold(2, 2, 0.1)
    assert abs(row["R_star_minus_closed_form"]) <= row["R_star_width"] and row["closed_form_within_width"]
    assert abs(row["R_ext"] - row["R_star"]) <= 1e-3 * row["R_star"]
    below = experiment.minority_measures(experiment._solve(2, 2, row["R_star"] * 0.99, 0.1), 2)
    above = experiment.minority_measures(experiment._solve(2, 2, row["R_star"] * 1.01, 0.1), 2)
    assert below["spread"] > 1e-3 and below["angle_w"] > 1.0
    assert above["spread"] <= experiment.EQUAL and above["minority_norm_ratio"] > 0.1
    assert row["R_zero"] > row["R_star"]  # the minority classifiers vanish only later


def test_convex_test_separates_the_sides_of_the_threshold_by_orders_of_magnitude():
    """The convex test (lam = 0.05 CE, lam = 0.2 LS): 1e-8 R* below the closed form the minority rows of Z are
    ~2e-8 apart, above they are equal to rounding (measured <= 1e-15); the gap-based tolerance (1e-13 ... 3e-12
    here) lies over two orders of magnitude from either (measured >= 270x), so the test resolves R to ~1e-11
    relative, far inside the bisection width."""
    for lam, delta in ((0.05, 0.0), (0.2, 0.1)):
        R_star = theory.minority_collapse_threshold(2, 2, lam, delta=delta)
        below, above = (experiment._solve_convex(2, 2, R_star * f, lam, delta) for f in (1 - 1e-8, 1 + 1e-8))
        assert below.status == above.status == "converged" and max(below.gap, above.gap) <= experiment.CONVEX_TOL
        (spread_below, tolerance), (spread_above, _) = (experiment.convex_spread(s, 2, lam) for s in (below, above))
        assert spread_below > 1e-8 and tolerance < 1e-11
        assert 100 * spread_above < tolerance < spread_below / 100


def test_threshold_at_one_when_equal_from_the_balanced_problem_on():
    """K_A = K_B = 2, lam = 0.2, LS delta = 0.3: kappa^2 = 12.25 < 4 K_A K_B, no root, so the closed form is
    R* = 1 (equal at every R >= 1, W = 0 included: past the phase boundary at R = 1); the convex test is True at
    the grid's R = 1, and the experiment reports R* = 1, width 0 (a grid starting above 1 cannot say: refused)."""
    row = experiment.thresholds(2, 2, 0.2, 0.3, list(np.geomspace(1.0, 1e3, 10)))
    assert (row["R_star"], row["R_star_width"], row["bisection_steps"]) == (1.0, 0.0, 0)
    assert row["R_star_closed_form"] == 1.0 and row["closed_form_within_width"] and np.isnan(row["R_ext"])
    with pytest.raises(ValueError, match="already equal"):
        experiment.thresholds(2, 2, 0.2, 0.3, list(np.geomspace(1.5, 1e3, 5)))


def test_quick_run_tables(tmp_path):
    table = run_quick(experiment, QUICK_RUN, tmp_path, compare=False)  # and the checks of every quick run
    assert len(table) == 6 and all(r["test"] == "convex" for r in table)  # d = K: bisection on the convex test
    for r in table:  # the closed form lies within the bisection width of the bisected R*, in every row
        assert r["closed_form_within_width"] == "True", r
        assert abs(float(r["R_star"]) - float(r["R_star_closed_form"])) <= float(r["R_star_width"]) <= experiment.R_TOL
        assert float(r["R_star_closed_form"]) == theory.minority_collapse_threshold(
            2, 2, float(r["lam"]), delta=float(r["delta"])
        )
    ce = sorted((float(r["lam"]), float(r["R_star"])) for r in table if r["loss"] == "ce")
    assert all(a[1] > b[1] for a, b in pairwise(ce))  # more regularisation: earlier collapse
    seli = list(csv.DictReader(open(tmp_path / "seli.csv")))
    balanced = [r for r in seli if r["sizes"] == "20-20-20-20"]
    assert max(float(r[k]) for r in balanced for k in ("seli_logits", "seli_WW", "seli_HH")) < 1e-8
    spectra = list(csv.DictReader(open(tmp_path / "spectra.csv")))
    assert spectra and all(r["status"] == "converged" for r in spectra)
    for r in spectra:
        if float(r["R"]) == 1.0:  # balanced: Thm 4.2, kappa_W = kappa_H = K p_t (solver tolerance 1e-12)
            assert float(r["kappa_W"]) == pytest.approx(float(r["K_p_t"]), rel=1e-8)
            assert float(r["kappa_H"]) == pytest.approx(float(r["K_p_t"]), rel=1e-8)
    checked = [float(r["dense_vs_structured"]) for r in spectra if r["dense_vs_structured"] not in ("", "nan")]
    assert checked and max(checked) < 1e-11  # structured path = dense jax.hessian (eigh rounding)
    for loss in ("ce", "ls"):  # below R* kappa grows like 1 / (1 - R / R*)
        near = {r["probe"]: float(r["kappa_W"]) for r in spectra if r["loss"] == loss and r["lam"] == "0.1"}
        assert 5.0 < near["R* (1 - 0.001)"] / near["R* (1 - 0.01)"] < 20.0
        assert near["R* (1 + 0.001)"] < 10.0 < near["R* (1 - 0.01)"]
    compare_with_committed("imbalance", tmp_path)  # last: stale committed outputs never hide the checks above


def test_block_spectra_depend_on_the_ratio_only():
    """The experiment realises R = p / q by class sizes (p, p, q, q): sizes (2, 1) and (6, 3) must give the
    same kappas (the W block depends on n_k / N only, the H block scales by 1 / N), to rounding; the dense
    jax.hessian agrees with the structured path."""
    solution = experiment._solve(2, 2, 2.0, 0.1)
    a = experiment.block_spectra(solution, 2, 2, 1, 0.0, dense=True)
    b = experiment.block_spectra(solution, 2, 6, 3, 0.0)
    assert a["dense_vs_structured"] < 1e-11 and np.isnan(b["dense_vs_structured"])
    for name in ("kappa_W", "kappa_H", "K_p_t"):
        assert b[name] == pytest.approx(a[name], rel=1e-10), name
    assert a["rank_W"] == b["rank_W"] == 9 and (a["N"], b["N"]) == (6, 18)
