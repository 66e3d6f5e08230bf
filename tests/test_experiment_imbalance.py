"""experiments/imbalance.py: the bisection, the threshold against its independent extrapolation, and the
quick run's tables (its quick run is checked here only, with the checks of every quick run: tests/_quick.py)."""

import csv
from itertools import pairwise

import numpy as np
import pytest

from experiments import imbalance as experiment
from tests._quick import run_quick


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
    assert row["status"] == "converged"
    assert row["R_star_width"] <= 1e-6
    assert abs(row["R_ext"] - row["R_star"]) <= 1e-3 * row["R_star"]
    below = experiment.minority_measures(experiment._solve(2, 2, row["R_star"] * 0.99, 0.1), 2)
    above = experiment.minority_measures(experiment._solve(2, 2, row["R_star"] * 1.01, 0.1), 2)
    assert below["spread"] > 1e-3 and below["angle_w"] > 1.0
    assert above["spread"] <= experiment.EQUAL and above["minority_norm_ratio"] > 0.1
    assert row["R_zero"] > row["R_star"]  # the minority classifiers vanish only later


def test_quick_run_tables(tmp_path):
    table = run_quick(experiment, "imbalance", tmp_path)  # and the checks of every quick run
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
