"""Smoke tests: every experiment runs in quick mode and writes its figure and table."""

import csv

import pytest

from experiments import run_all


@pytest.mark.parametrize("name", sorted(run_all.EXPERIMENTS))
def test_quick_run_writes_outputs(name, tmp_path):
    module = run_all.EXPERIMENTS[name]
    assert module.main(["--quick", "--out", str(tmp_path)]) == 0
    assert (tmp_path / f"{name}.png").stat().st_size > 10_000
    rows = list(csv.DictReader(open(tmp_path / f"{name}.csv")))
    assert rows and all(row["status"] == "converged" for row in rows)
    # outputs are never silently overwritten
    assert module.main(["--quick", "--out", str(tmp_path)]) == 2
    if name == "norms_vs_delta":
        _check_norms_agree_below_the_boundary(rows)
    if name == "condition_number":
        assert max(max(float(r["error_W"]), float(r["error_H"])) for r in rows) <= 1e-6


def _check_norms_agree_below_the_boundary(rows):
    """Issue acceptance: solver norms within 1e-6 of Theorem 4.1 for every delta below the boundary."""
    inside = [r for r in rows if r["collapsed"] == "False"]
    beyond = [r for r in rows if r["collapsed"] == "True"]
    assert inside and beyond
    assert max(max(float(r["w_error"]), float(r["h_error"])) for r in inside) <= 1e-6
    assert max(float(r["w_solver"]) for r in beyond) <= 1e-6  # collapsed to zero
