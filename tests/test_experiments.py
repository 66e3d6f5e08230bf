"""Smoke tests: every experiment runs in quick mode and writes its figure and table, the same numbers as the
committed quick outputs (tests/_quick.py); full-mode outputs say which commit made them."""

import csv
import importlib.util
import json
import math
import subprocess
from pathlib import Path

import pytest

from experiments import run_all
from tests import _quick
from tests._quick import OWN_FILES, compare_with_committed, run_quick

TESTS = Path(__file__).resolve().parent


@pytest.mark.parametrize("name", sorted(set(run_all.EXPERIMENTS) - set(OWN_FILES)))
def test_quick_run_writes_outputs(name, tmp_path):
    rows = run_quick(run_all.EXPERIMENTS[name], name, tmp_path, compare=False)
    if name == "norms_vs_delta":
        _check_norms_agree_below_the_boundary(rows)
    if name == "condition_number":
        assert max(max(float(r["error_W"]), float(r["error_H"])) for r in rows) <= 1e-6
    if name == "convergence":
        _check_convergence_table(
            rows,
            list(csv.DictReader(open(tmp_path / "curves.csv"))),
            list(csv.DictReader(open(tmp_path / "first_iterations.csv"))),
        )
    if name == "speed_vs_kappa":
        _check_rates_and_fits(rows, list(csv.DictReader(open(tmp_path / "fits.csv"))))
    if name == "landscape":
        _check_landscape(rows)
    if name == "label_noise":
        _check_label_noise(rows)
    compare_with_committed(name, tmp_path)  # last: stale committed outputs never hide the checks above


@pytest.mark.parametrize("name", sorted(OWN_FILES))
def test_the_other_quick_runs_are_checked_by_their_own_files(name):
    """Each experiment left out above is an experiment, and its own test file makes its quick run with the
    same checks (that file's QUICK_RUN is the name it passes to run_quick)."""
    assert name in run_all.EXPERIMENTS
    spec = importlib.util.spec_from_file_location(f"_own_{name}", TESTS / OWN_FILES[name])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.QUICK_RUN == name and module.run_quick is run_quick


def _check_convergence_table(rows, curves, first):
    """Every delta reaches the closed-form logits; the counts to looser tolerances come first; the training
    error, recorded at every one of the first iterations, reaches 0 there and stays 0."""
    for row in rows:
        start = [float(r["train_error"]) for r in first if r["delta"] == row["delta"]]
        zero = int(row["iterations_train_error_0"])
        assert start[zero] == 0.0 < start[zero - 1] and not any(start[zero:])
        counts = [int(row[f"iterations_logit_{tol}"]) for tol in ("0.01", "0.0001", "1e-06")]
        assert counts == sorted(counts)
        last = [c for c in curves if c["delta"] == row["delta"]][-1]
        assert float(last["logit_error"]) <= 1e-6
        assert float(last["nc1"]) <= 1e-12 and float(last["train_error"]) == 0.0


def _check_rates_and_fits(rows, fits):
    """GD's measured asymptotic rate is the linearised rate -log(1 - lr mu) of the joint Hessian.

    5%: the rate is a slope fitted to recorded points of a finite run (observed <= 2.1e-2).
    """
    for row in rows:
        assert abs(float(row["rate_measured"]) / float(row["rate_predicted"]) - 1) <= 0.05
        assert int(row["symmetry_zeros"]) == int(row["K"]) * (int(row["K"]) - 1) // 2  # dim O(K), d = K
    assert {f["quantity"] for f in fits} == {"K_p_t", "kappa_W_reg", "kappa_H_reg", "kappa_joint", "kappa_step"}
    assert all(0.0 <= float(f["r2"]) <= 1.0 for f in fits)
    for f in fits:  # the fit at fixed lam is made exactly where the quantity varies by >= 1 % within a lam
        if float(f["range_within_lam"]) >= 0.01:
            assert 0.0 <= float(f["r2_within_lam"]) <= 1.0, f
        else:
            assert math.isnan(float(f["slope_within_lam"])) and math.isnan(float(f["r2_within_lam"])), f
    # quick grid: mu = lam for every delta, so kappa_step = 1/(lr mu) is constant at fixed lam: no fit there
    assert all(math.isnan(float(f["r2_within_lam"])) for f in fits if f["quantity"] == "kappa_step")


def _check_landscape(rows):
    """Every unconstrained run reaches the prediction within 1e-6; H >= 0 may stop at spurious KKT points."""
    free = [r for r in rows if "H >= 0" not in r["case"]]
    assert {r["case"].split()[0] for r in free} == {"ce", "ls", "focal", "mse"}
    assert all(r["reached"] == "True" and float(r["worst_error"]) <= 1e-6 for r in free)
    assert any(r["reached"] == "True" for r in rows if "H >= 0" in r["case"])


def _check_label_noise(rows):
    """The UFM memorizes every corrupted label: observed-label NC1 ~ 0, corrupted samples ~ one
    class-mean distance from their true class, whatever the loss."""
    noisy = [r for r in rows if int(r["corrupted"]) > 0]
    assert noisy and all(float(r["nc1_observed"]) <= 1e-12 for r in rows)
    assert all(abs(float(r["dilation"]) - 1.0) <= 0.02 for r in noisy)


def _check_norms_agree_below_the_boundary(rows):
    """Issue acceptance: solver norms within 1e-6 of Theorem 4.1 for every delta below the boundary."""
    inside = [r for r in rows if r["collapsed"] == "False"]
    beyond = [r for r in rows if r["collapsed"] == "True"]
    assert inside and beyond
    assert max(max(float(r["w_error"]), float(r["h_error"])) for r in inside) <= 1e-6
    assert max(float(r["w_solver"]) for r in beyond) <= 1e-6  # collapsed to zero


def _tiny_experiment(args, outputs):
    """A stand-in experiment: one figure through the experiments' style and writer, no solving."""
    from experiments._common import figure, label_log_axes

    fig, ax = figure()
    ax.loglog([1.0, 2.0, 4.0], [3.0, 2.0, 2.5], "o-", label="data")
    ax.set(xlabel="x", ylabel="y", title="tiny")
    label_log_axes(ax)
    ax.legend()
    outputs.figure("tiny.png", fig)


@pytest.mark.parametrize("fmt", ["png", "pdf", "svg"])
def test_figures_are_reproducible_in_every_format(fmt, tmp_path, capsys):
    """--format writes that suffix, and two runs write identical bytes: no date, software version or
    random SVG ids in the file (an unset SVG hash salt or a timestamp would differ between the runs)."""
    from experiments._common import run

    files = []
    for out in ("a", "b"):
        assert run(_tiny_experiment, "tiny", "test", ["--out", str(tmp_path / out), "--format", fmt]) == 0
        files.append((tmp_path / out / f"tiny.{fmt}").read_bytes())
    assert files[0] == files[1]
    assert not list(tmp_path.glob("*/tiny.png")) or fmt == "png"
    for stamp in (b"CreationDate", b"<dc:date>", b"Matplotlib v", b"matplotlib version"):
        assert stamp not in files[0], stamp


def test_log_axes_get_labels_within_one_decade():
    """A log axis spanning less than a decade (the K p_t axis of speed_vs_kappa) gets labelled ticks."""
    from experiments._common import figure, label_log_axes

    fig, ax = figure()
    ax.loglog([2.9, 3.9], [300.0, 2500.0], "o")
    label_log_axes(ax)
    fig.canvas.draw()
    for axis in (ax.xaxis, ax.yaxis):
        low, high = sorted(axis.get_view_interval())
        shown = [t.get_text() for t in axis.get_ticklabels() if low <= t.get_position()[axis is ax.yaxis] <= high]
        assert len([text for text in shown if text]) >= 2, shown


# ----------------------------------------------------------------------------- committed outputs, provenance


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_comparison_with_committed_outputs_names_file_row_column_and_values(tmp_path):
    committed, new = tmp_path / "committed", tmp_path / "new"
    _write(committed / "t.csv", "delta,status,error,seconds\n0.1,converged,1.0,3.0\n0.2,converged,2.0,4.0\n")
    # within the tolerance, and a timing column that changed: the same outputs
    _write(
        new / "t.csv",
        f"delta,status,error,seconds\n0.1,converged,{1 + 0.5 * _quick.RTOL!r},9.0\n0.2,converged,2.0,1.0\n",
    )
    compare_with_committed("x", new, committed)
    _write(new / "t.csv", "delta,status,error,seconds\n0.1,converged,1.0,3.0\n0.2,max_iters,2.5,4.0\n")
    with pytest.raises(AssertionError) as failure:
        compare_with_committed("x", new, committed)
    message = str(failure.value)
    assert "t.csv, row 2 (delta=0.2), column error: committed '2.0', now '2.5'" in message
    assert "column status: committed 'converged', now 'max_iters'" in message
    assert "seconds" not in message and _quick.REGENERATE in message
    _write(new / "t.csv", "delta,status\n0.1,converged\n")
    _write(new / "u.csv", "a\n1\n")
    with pytest.raises(AssertionError) as failure:
        compare_with_committed("x", new, committed)
    message = str(failure.value)
    assert "columns differ (committed only: ['error', 'seconds']; new only: none)" in message
    assert "2 rows committed, 1 now" in message and "u.csv: written by the quick run, not committed" in message


def test_missing_committed_outputs_say_how_to_make_them(tmp_path):
    _write(tmp_path / "new" / "t.csv", "a\n1\n")
    with pytest.raises(AssertionError, match="no committed quick outputs of x") as failure:
        compare_with_committed("x", tmp_path / "new", tmp_path / "nothing")
    assert _quick.REGENERATE in str(failure.value)


def test_timing_columns_are_recognised_by_name():
    timing = ("seconds", "train_seconds", "elapsed", "wall_s", "time", "step_time", "runtime_ms", "duration")
    kept = ("iterations", "timestep_count", "status", "lr", "steps", "times_reached", "delta_s_theory")
    assert all(_quick.TIMING.search(c) for c in timing)
    assert not any(_quick.TIMING.search(c) for c in kept)


def test_full_mode_outputs_carry_their_provenance_quick_ones_do_not(tmp_path):
    from experiments._common import PROVENANCE, run

    assert run(_tiny_experiment, "tiny", "test", ["--out", str(tmp_path / "full")]) == 0
    stamp = json.loads((tmp_path / "full" / PROVENANCE).read_text())
    assert stamp["command"] == f"python -m experiments.tiny --out {tmp_path / 'full'}"
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=TESTS, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        assert stamp["commit"] is None
    else:
        assert stamp["commit"] == head.stdout.strip() and isinstance(stamp["uncommitted_changes"], bool)
    assert stamp["date"] and stamp["jax"] and stamp["numpy"]
    assert run(_tiny_experiment, "tiny", "test", ["--out", str(tmp_path / "quick"), "--quick"]) == 0
    assert sorted(p.name for p in (tmp_path / "quick").iterdir()) == ["tiny.png"]
