"""Experiment 8a (experiments/md_model.py) in quick mode: outputs, and what its tables must show (its quick run
is checked here only, with the checks of every quick run: tests/_quick.py)."""

import csv

import pytest

from experiments import md_model as experiment
from tests._quick import compare_with_committed, run_quick

#: the experiment whose quick run this file makes and checks (tests/_quick.py, OWN_FILES)
QUICK_RUN = "md_model"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("md_model")
    # the checks of every quick run (tests/_quick.py); the committed outputs are compared in their own test
    return out, run_quick(experiment, QUICK_RUN, out, compare=False)


@pytest.fixture(scope="module")
def tables(quick_run):
    out, rows = quick_run
    with open(out / "map.csv", newline="") as handle:
        return rows, list(csv.DictReader(handle))


def test_quick_outputs_are_the_committed_ones(quick_run):
    compare_with_committed("md_model", quick_run[0])


def test_every_solve_converged_and_r_star_below_r_max(tables):
    rows, grid = tables
    for row in rows + grid:
        assert row["status"] == "converged" and float(row["kkt"]) <= 1e-9
        assert 0 < float(row["r_over_rmax_ce"]) < 1 and 0 < float(row["r_over_rmax_ls"]) < 1


def test_theorem_4_3_holds_inside_assumption_4_2(tables):
    rows, grid = tables
    inside = [r for r in rows + grid if r["inside"] == "True"]
    assert inside and all(r["holds"] == "True" and float(r["ratio"]) > 1 for r in inside)
    assert any(r["inside"] == "False" for r in grid)  # the map also covers the outside


def test_low_noise_ratio_tends_to_gamma(tables):
    """As eta -> 0, r* -> r_max for both losses (Lemma C.6), so dilation_CE / dilation_LS -> gamma:
    within 1% at eta = 1e-4 (r*/r_max >= 0.99 there)."""
    rows, _ = tables
    lowest = [row for row in rows if float(row["eta"]) == 1e-4]
    assert lowest  # the premise: the quick table has rows at eta = 1e-4
    for row in lowest:
        assert float(row["ratio"]) == pytest.approx(float(row["gamma"]), rel=1e-2)
