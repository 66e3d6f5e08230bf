"""The CLI end to end: in-process through main(argv) and once in a subprocess."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ufm.solve import main

ROOT = Path(__file__).resolve().parents[1]


def test_default_problem_agrees_to_1e_6(tmp_path, capsys):
    """The issue's acceptance run: K = 10, n = 500, delta = 0.1, everything within 1e-6."""
    out = tmp_path / "report.json"
    assert main(["--K", "10", "--n", "500", "--delta", "0.1", "--json", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "VERDICT: agrees" in text
    record = json.loads(out.read_text())
    assert record["verdict"] == "agrees" and record["solver"]["converged"]
    rows = {row["quantity"]: row for row in record["comparison"]}
    for name in (
        "mean ||w_k||",
        "mean ||hbar_k - h_G||",
        "logits W^T Hbar + b (Frobenius)",
        "kappa_W (loss block)",
        "kappa_H (loss block)",
        "p_t",
        "p_n",
    ):
        assert rows[name]["applies"] and rows[name]["error"] <= 1e-6, name
    assert record["problem"] == {
        "K": 10,
        "n": 500,
        "N": 5000,
        "d": 10,
        "delta": 0.1,
        "lam_W": 5e-4,
        "lam_H": 5e-4,
        "lam_b": 5e-4,
        "loss": "ls",
        "seed": 0,
        "dtype": "float64",
        "init_scale": 0.1,
        "gamma": 0.0,
        "mse_kappa": 1.0,
        "mse_beta": 1.0,
        "nonnegative": False,
        "label_noise": 0.0,
        "noise_seed": 0,
        "class_sizes": None,
    }
    for key in ("package_version", "jax_version", "device"):
        assert record[key]
    assert record["theory"]["kappa"] == pytest.approx(10 * record["theory"]["p_t"], rel=1e-15)


def _significant_digits(text: str) -> int:
    """The significant digits of a number as printed (``8.093769410`` -> 10, ``3.0e-29`` -> 2)."""
    mantissa = text.lstrip("-").split("e")[0].replace(".", "")
    return len(mantissa.lstrip("0"))


def test_report_explains_itself(tmp_path, capsys):
    """The report's table shows the JSON's numbers in the one format of ``format_number`` (10 significant
    digits, trailing zeros kept), with the legend and the tolerance under it; the eigenvalue rows show the
    largest of the distinct eigenvalues listed in the spectra; kappa is written as K·p_t and equals K times
    the p_t shown. Every symbol is defined where it appears: lam_Z beside c, kappa over the
    non-zero eigenvalues beside spectra that start with 0 x19; no row claims the eigenvalues are distinct."""
    from ufm.compare import LEGEND, format_number

    out = tmp_path / "r.json"
    assert main(["--K", "4", "--n", "5", "--delta", "0.1", "--json", str(out), "--quiet"]) == 0
    lines = capsys.readouterr().out.splitlines()
    record = json.loads(out.read_text())
    header = lines.index(next(line for line in lines if line.startswith("quantity ")))
    assert header + len(record["comparison"]) + 1 == lines.index(LEGEND)
    assert lines[lines.index(LEGEND) + 1] == "tolerance = 1e-06 (--rtol)"
    for row, line in zip(record["comparison"], lines[header + 1 :], strict=False):
        assert line.startswith(row["quantity"] + "  ")
        theory, solver, error, kind, check = line.split()[-5:]
        assert (theory, solver) == (format_number(row["theory"]), format_number(row["measured"]))
        # 10 significant digits: the text reads back within half a unit of the 10th digit
        assert float(solver) == pytest.approx(row["measured"], rel=5e-10, abs=1e-300)
        for number in (theory, solver):  # all ten of them, trailing zeros included; an exact zero is 0
            assert number == "0" or _significant_digits(number) == 10, number
        assert kind == ("rel" if row["relative"] else "abs") and check == "ok"
    rows = {row["quantity"]: row for row in record["comparison"]}
    for block in "WH":
        row = rows[f"{block}-block eigenvalues (all, with multiplicities; largest shown)"]
        assert row["theory"] == max(record["spectra"][block]["predicted_values"])
        assert row["measured"] == max(record["spectra"][block]["measured_values"])
    kappa_line = next(line for line in lines if "kappa = K·p_t = " in line)
    kappa = float(kappa_line.split("kappa = K·p_t = ")[1].split(":")[0])
    p_t = float(next(line for line in lines if "p_t = " in line).split("p_t = ")[1].split()[0])
    assert kappa == pytest.approx(4 * p_t, rel=1e-9)  # both printed to 10 digits
    text = "\n".join(lines)
    c_line = next(line for line in lines if line.startswith("  c = "))
    assert c_line.startswith("  c = sqrt(KN) lam_Z + delta = ") and "lam_Z = sqrt(lam_W lam_H)" in c_line
    assert "largest / smallest non-zero eigenvalue" in kappa_line and " x" in text  # spectra list "0 x.."
    assert "all distinct" not in text and "numbers to 10 significant digits" in text


@pytest.mark.parametrize(
    "argv,flag,allowed",
    [
        (["--delta", "1.5"], "--delta", "[0, 1)"),
        (["--K", "1"], "--K", ">= 2"),
        (["--K", "ten"], "--K", "integer"),
        (["--lam", "-0.001"], "--lam", "(0, inf)"),
        (["--lam-W", "nan"], "--lam-W", "(0, inf)"),
        (["--tol", "2"], "--tol", "(0, 1)"),
        (["--max-iters", "3000000000"], "argument --max-iters", "[1, 2147483647]"),  # the loops' int32 counters
        (["--method", "adam"], "--method", "choose from"),
    ],
)
def test_bad_flags_exit_2_naming_the_flag(argv, flag, allowed, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert flag in err and allowed in err and "Traceback" not in err


def test_existing_json_is_not_overwritten_without_force(tmp_path, capsys):
    out = tmp_path / "r.json"
    out.write_text("keep me")
    assert main(["--K", "3", "--n", "2", "--json", str(out), "--quiet"]) == 2
    assert "already exists" in capsys.readouterr().err and out.read_text() == "keep me"
    assert main(["--K", "3", "--n", "2", "--json", str(out), "--quiet", "--force"]) == 0
    assert json.loads(out.read_text())["problem"]["K"] == 3


def test_unconverged_run_exits_1(capsys):
    assert main(["--K", "3", "--n", "4", "--max-iters", "2", "--quiet"]) == 1
    assert "not verified" in capsys.readouterr().out


def test_divergence_exits_1_with_advice(capsys):
    assert main(["--K", "4", "--n", "10", "--method", "gd", "--lr", "1e6", "--quiet", "--no-hessian"]) == 1
    out = capsys.readouterr().out
    assert "diverged at iteration" in out and "locally stable only for lr <" in out and "try --lr" in out


def test_main_restores_the_signal_handling(capsys):
    before = (signal.getsignal(signal.SIGINT), signal.set_wakeup_fd(-1))
    signal.set_wakeup_fd(before[1])
    assert main(["--K", "3", "--n", "2", "--quiet", "--no-hessian"]) == 0
    after = (signal.getsignal(signal.SIGINT), signal.set_wakeup_fd(-1))
    signal.set_wakeup_fd(after[1])
    assert after == before


def test_beyond_boundary_says_what_does_not_apply(tmp_path, capsys):
    """Past the boundary NC1-NC3 and kappa do not exist (W = H = 0): theory and solver columns say so, never
    nan or a theory 0, and no kappa is measured from eigenvalues that are rounding noise."""
    out_json = tmp_path / "r.json"
    argv = ["--K", "4", "--n", "10", "--delta", "0.95", "--lam", "1e-2", "--quiet", "--json", str(out_json)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "collapsed phase" in out and "does not apply: c =" in out and "VERDICT: agrees" in out
    assert "nan" not in out
    table = {line.split("  ")[0]: line for line in out.splitlines()}
    for name in ("NC1", "NC2", "NC3", "kappa_W (loss block)", "kappa_H (loss block)"):
        assert table[name].count("undefined (at W = H = 0)") == 2 and table[name].endswith("n/a"), table[name]
    rows = {row["quantity"]: row for row in json.loads(out_json.read_text())["comparison"]}
    assert rows["NC1"]["theory"] is None and rows["kappa_W (loss block)"]["measured"] is None


def test_d_below_K_is_judged_against_the_numerical_optimum(capsys):
    """d < K: no closed form, so the prediction is the numerical UFM optimum (best of the seeded
    restarts, ufm.generalized); the verdict says so. Focal loss has no exact class-mean reduction:
    no prediction applies, its own verdict and exit 3, never "agrees" (0 checks verify nothing)."""
    assert main(["--K", "4", "--n", "3", "--d", "2", "--lam", "1e-2", "--quiet", "--no-hessian"]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.startswith("VERDICT: agrees") and "numerical UFM optimum for d = 2 < K = 4" in last
    argv = ["--K", "4", "--n", "3", "--d", "2", "--lam", "1e-2", "--loss", "focal", "--gamma", "2", "--quiet"]
    assert main(argv + ["--no-hessian"]) == 3
    out = capsys.readouterr().out
    assert "agrees" not in out and out.splitlines()[-1].startswith("VERDICT: not verified — no prediction applies")


def test_same_seed_gives_identical_json(tmp_path):
    """Two separate processes, same command and seed: byte-identical JSON (no timings, no paths in it). The
    second loads the first's programs from the compilation cache, and its report says so (not "compile")."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    paths = [tmp_path / "a.json", tmp_path / "b.json"]
    reports = []
    for path in paths:
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "ufm.solve",
                "--K",
                "3",
                "--n",
                "4",
                "--delta",
                "0.2",
                "--seed",
                "5",
                "--json",
                str(path),
                "--quiet",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert run.returncode == 0, run.stderr
        reports.append(run.stdout)
    assert paths[0].read_text() == paths[1].read_text()
    solver_line = next(line for line in reports[1].splitlines() if line.startswith("Solver:"))
    assert "s loading compiled programs from the cache)" in solver_line, solver_line
    record = json.loads(paths[0].read_text())
    assert record["problem"]["seed"] == 5 and record["problem"]["dtype"] == "float64"
    assert record["jax_version"] and record["device"] and record["package_version"]


def test_module_entry_point_in_subprocess():
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "ufm.solve",
            "--K",
            "3",
            "--n",
            "2",
            "--delta",
            "0.1",
            "--method",
            "lbfgs",
        ],  # the default (reduced) stops before a progress line
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert "VERDICT: agrees" in run.stdout and "iter" in run.stderr  # progress goes to stderr
    assert "RuntimeWarning" not in run.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "ufm.solve", "--delta", "-0.5"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2 and "--delta" in bad.stderr and "Traceback" not in bad.stderr


def test_compile_time_is_named_for_what_it_was(capsys):
    """The time before the compiled run: compile, a load from the persistent cache, or both (JAX's cache
    events, ufm._cli.CompileWatch); with --no-cache nothing is looked up, so it is compile."""
    from ufm._cli import CompileWatch

    watch = CompileWatch()
    assert watch.phrase(3.671) == "3.67 s compile"
    watch.requests, watch.hits = 2, 2
    assert watch.phrase(0.35) == "0.35 s loading compiled programs from the cache"
    watch.requests, watch.hits = 3, 1
    assert watch.phrase(1.0) == "1.00 s compile and cache load: 1 of 3 programs from the cache"
    assert main(["--K", "3", "--n", "2", "--quiet", "--no-hessian", "--no-cache"]) == 0
    assert "s compile), on " in capsys.readouterr().out


def test_comparison_rows_by_key():
    """From Python the rows are read by key, not by their display names: comparison["kappa_W"],
    keys(), dict(comparison), to_records() for a data frame; every key is documented in ROW_KEYS."""
    import ufm
    from ufm.compare import ROW_KEYS

    comparison = ufm.compare(ufm.solve(ufm.Problem(K=4, n=5, delta=0.1)))
    assert comparison["kappa_W"].measured == pytest.approx(comparison["kappa_W"].theory, rel=1e-6)
    assert comparison["kappa_W"] is next(row for row in comparison.rows if row.quantity == "kappa_W (loss block)")
    keys = comparison.keys()
    assert len(set(keys)) == len(keys) == len(comparison.rows) and set(keys) <= set(ROW_KEYS)
    assert "W_eigenvalues" in comparison and dict(comparison)["p_t"] is comparison["p_t"]
    records = comparison.to_records()
    assert [record["key"] for record in records] == list(keys)
    assert records[0]["measured"] == comparison.rows[0].measured and records[0]["ok"] is True
    with pytest.raises(KeyError, match="no row 'kappa'"):
        comparison["kappa"]


def test_float32_run_agrees_at_its_tolerance(capsys):
    # float32 solve, float64 Hessian at that point; judged at the documented 1e-3
    assert main(["--K", "10", "--n", "500", "--delta", "0.1", "--float32", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "float32" in out and "VERDICT: agrees" in out and "within 0.001" in out


@pytest.mark.parametrize(
    "flags",
    [
        ["--loss", "ce"],
        ["--loss", "focal", "--gamma", "2"],
        ["--loss", "mse", "--mse-kappa", "3", "--mse-beta", "2"],
        ["--loss", "ls", "--delta", "0.2", "--nonnegative", "--K", "4", "--n", "3", "--d", "12"],
    ],
)
def test_every_loss_reports_and_writes_json(flags, tmp_path, capsys):
    out = tmp_path / "r.json"
    # (K = 3, d = 9, seed 0 with H >= 0 stops at a spurious KKT point: experiments/landscape.py)
    assert main(["--K", "3", "--n", "2", "--lam", "1e-2", *flags, "--json", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "VERDICT: agrees" in text and f"loss {flags[1]}" in text
    record = json.loads(out.read_text())
    assert record["verdict"] == "agrees" and record["problem"]["loss"] == flags[1]
    rows = {row["quantity"]: row for row in record["comparison"]}
    assert rows["mean ||w_k||"]["applies"] and rows["mean ||w_k||"]["error"] <= 1e-6
    assert record["theory"]["a"] > 0
    if "--nonnegative" in flags:
        assert record["solver"]["method"] == "momentum" and rows["orthogonal-frame defect"]["ok"]
    else:
        assert record["theory"]["kappa"] == pytest.approx(rows["kappa_W (loss block)"]["measured"], rel=1e-6)
    # kappa is written as K·p_t only where Theorem 4.2 makes it that (CE/LS, H free, K >= 3)
    assert ("kappa = K·p_t =" in text) == (flags[1] in ("ce", "ls") and "--nonnegative" not in flags)


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["--loss", "focal", "--gamma", "-1"], "--gamma must be in [0, inf)"),
        (["--loss", "hinge"], "invalid choice"),
        (["--loss", "focal", "--delta", "0.1"], "--delta does not apply to --loss focal"),
        (["--gamma", "1"], "--gamma does not apply to --loss ls"),
        (["--loss", "mse", "--mse-kappa", "0"], "--mse-kappa must be in (0, inf)"),
        (["--label-noise", "1"], "--label-noise must be in [0, 1)"),
        (["--nonnegative", "--K", "5", "--d", "3"], "nonnegative=True needs d >= K = 5"),
        (["--nonnegative", "--method", "lbfgs"], "method 'lbfgs' does not support nonnegative=True"),
    ],
)
def test_bad_loss_flags_exit_2(argv, needle, capsys):
    assert main(argv + ["--quiet"]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


def test_label_noise_run_is_reported_but_not_judged(capsys):
    assert main(["--K", "3", "--n", "4", "--label-noise", "0.25", "--noise-seed", "2", "--quiet", "--no-hessian"]) == 3
    out = capsys.readouterr().out
    assert "label noise 0.25 (seed 2)" in out and "does not apply: label_noise = 0.25" in out
    assert "VERDICT: not verified — no prediction applies because label_noise = 0.25" in out


@pytest.mark.parametrize(
    "flags,reason",
    [
        (["--label-noise", "0.25", "--noise-seed", "2"], "label_noise = 0.25"),
        (["--loss", "mse"], "nonnegative features with loss 'mse'"),
    ],
)
def test_h_nonnegative_without_a_prediction_is_not_verified(flags, reason, capsys):
    """Only the feasibility row min H >= 0 was judged there, and the run said "agrees — all 1 applicable
    checks" with exit 0; a feasibility check verifies no theory."""
    assert main(["--K", "3", "--n", "4", "--nonnegative", *flags, "--quiet", "--no-hessian"]) == 3
    out = capsys.readouterr().out
    assert "min H (>= 0)" in out and "agrees" not in out
    assert f"VERDICT: not verified — no prediction applies because {reason}" in out


@pytest.mark.parametrize(
    "flags",
    [
        ["--loss", "ce"],
        ["--loss", "focal", "--gamma", "2"],
        ["--loss", "mse"],
        ["--loss", "mse", "--mse-kappa", "3", "--mse-beta", "2"],
    ],
)
def test_default_problem_every_loss_agrees_to_1e_6(flags, tmp_path):
    """Every loss agrees with its prediction on K = 10, n = 500, d = 10, lam = 5e-4 (the solver compiles once
    for every loss: the loss is a traced switch), norms within 1e-6."""
    out = tmp_path / "r.json"
    assert main([*flags, "--json", str(out), "--quiet", "--no-hessian"]) == 0
    rows = {row["quantity"]: row for row in json.loads(out.read_text())["comparison"]}
    for name in ("mean ||w_k||", "mean ||hbar_k - h_G||", "logits W^T Hbar + b (Frobenius)", "max |b_k - b_pred|"):
        assert rows[name]["applies"] and rows[name]["error"] <= 1e-6, name


def test_ufm_solve_is_both_the_cli_module_and_the_solver():
    """ARCHITECTURE.md "Design decisions": importing the CLI module rebinds ``ufm.solve`` to it,
    and the module forwards a call to :func:`ufm.solver.solve` (same result, bit for bit)."""
    import importlib

    import ufm
    from ufm import solver

    module = importlib.import_module("ufm.solve")
    assert ufm.solve is module and callable(module.main)
    problem = ufm.Problem(K=2, n=2, seed=3)
    via_module, direct = ufm.solve(problem, "gd", max_iters=3), solver.solve(problem, "gd", max_iters=3)
    assert via_module.iterations == direct.iterations == 3
    assert via_module.W.tobytes() == direct.W.tobytes()
