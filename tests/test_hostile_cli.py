"""The hostile commands (outputs, verdicts, flags, reproducibility): each either succeeds
or exits with its documented code and exactly one ``error:`` line, never a traceback.

In-process through ``main(argv)``; subprocesses only where concurrency needs them. The refusals
are checked to happen before computing: they return at once and leave no file.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from experiments import condition_number, run_all
from ufm.analyze import main as analyze_main
from ufm.solve import main as solve_main
from ufm.sweep import main as sweep_main

ROOT = Path(__file__).resolve().parents[1]
SOLVE, SWEEP, ANALYZE = "python -m ufm.solve", "python -m ufm.sweep", "python -m ufm.analyze"


def _refused(main, argv, capsys, prog, *needles):
    """``main(argv)`` exits 2 with one ``error:`` line naming every needle, at once (nothing computed)."""
    start = time.perf_counter()
    code = main(argv)
    elapsed = time.perf_counter() - start
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if "error:" in line]
    assert code == 2, (argv, captured.err)
    assert len(errors) == 1 and errors[0].startswith(f"{prog}: error: "), captured.err
    assert "Traceback" not in captured.err and "VERDICT" not in captured.out
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    assert elapsed < 2.0, elapsed  # refused before solving / compiling anything heavy
    return errors[0]


#: a loss parameter given for another loss: refused in the same words by every command line with --loss
#: (ufm._cli.resolve_loss_flags), before any input is read or anything compiled
LOSS_REFUSALS = [
    (["--loss", "ls", "--mse-kappa", "3"], ["--mse-kappa", "--loss ls", "--loss mse"]),
    (["--loss", "ls", "--mse-beta", "2"], ["--mse-beta", "--loss ls"]),
    (["--loss", "ls", "--gamma", "1"], ["--gamma", "--loss focal"]),
    (["--loss", "ce", "--delta", "0.1"], ["--delta", "--loss ce"]),
    (["--loss", "mse", "--delta", "0"], ["--delta", "--loss mse"]),
    (["--loss", "focal", "--gamma", "1", "--mse-kappa", "2"], ["--mse-kappa", "--loss focal"]),
    (["--loss", "focal", "--gamma", "-1"], ["--gamma", "[0, inf)"]),
    (["--loss", "mse", "--mse-beta", "0"], ["--mse-beta", "(0, inf)"]),
    (["--loss", "huber"], ["--loss", "invalid choice"]),
]
#: (main, program, the argv every row is added to)
LOSS_CLIS = [
    (solve_main, SOLVE, ["--K", "3", "--n", "2", "--quiet"]),
    (sweep_main, SWEEP, ["--K", "3", "--n", "2"]),
    (analyze_main, ANALYZE, ["--quiet"]),
]


@pytest.mark.parametrize("main,prog,base", LOSS_CLIS, ids=[c[1].split()[-1] for c in LOSS_CLIS])
@pytest.mark.parametrize("argv,needles", LOSS_REFUSALS)
def test_loss_flags_that_do_not_apply_are_refused_by_every_command_line(main, prog, base, argv, needles, capsys):
    _refused(main, base + argv, capsys, prog, *needles)


@pytest.mark.parametrize(
    "argv,needles",
    [
        (["--loss", "ce", "--delta", "0,0.1"], ["--delta", "--loss ce", "--loss ls"]),  # a delta grid, not LS
        (["--loss", "focal", "--gamma", "1", "--delta", "0.1"], ["--delta", "--loss focal"]),
        (["--delta", "0,1.5"], ["--delta", "[0, 1)"]),
        (["--delta", "0,nan"], ["--delta", "[0, 1)"]),
        (["--lam", "1e-3,0"], ["--lam", "(0, inf)"]),
        (["--lam", "1e-3,,1"], ["--lam", "empty entry"]),
        (["--lam", "inf"], ["--lam"]),
        (["--seeds", "3:1"], ["--seeds", "LO:HI"]),
        (["--seeds", "-1"], ["--seeds", ">= 0"]),
        (["--seeds", "0:x"], ["--seeds", "LO:HI"]),
        (["--n", "0"], ["--n", ">= 1"]),
        (["--n", "2.5"], ["--n"]),
        (["--loss", "focal", "--gamma", "1", "--method", "reduced"], ["method 'reduced'", "lbfgs"]),
        # the solver's flags: the solve command line's checks, named by the flag, before any solve
        (["--method", "gd", "--lr", "nan"], ["argument --lr", "(0, inf)"]),
        (["--method", "gd", "--lr", "-1"], ["argument --lr", "(0, inf)"]),
        (["--tol", "2"], ["argument --tol", "(0, 1)"]),
        (["--tol", "nan"], ["argument --tol", "(0, 1)"]),
        (["--max-iters", "0"], ["argument --max-iters", "[1, 2147483647]"]),
        (["--max-iters", "3000000000"], ["argument --max-iters", "[1, 2147483647]"]),
        (["--batch-size", "0"], ["argument --batch-size", "[1, 2147483647]"]),
        (["--batch-size", "1.5"], ["argument --batch-size"]),
    ],
)
def test_sweep_grid_flags_that_make_no_sense_are_refused(argv, needles, tmp_path, capsys):
    out = tmp_path / "s.csv"
    _refused(sweep_main, ["--K", "3", "--n", "2", *argv, "--out", str(out)], capsys, SWEEP, *needles)
    assert not out.exists()


@pytest.mark.parametrize(
    "argv,needles",
    [
        (["--noise-seed", "3"], ["--noise-seed", "--label-noise"]),
        (["--shard", "--method", "reduced"], ["--shard", "--method reduced", "--method lbfgs"]),
        (["--method", "reduced", "--float32"], ["--method reduced", "--float32", "--method lbfgs"]),
        (["--lr", "1"], ["--lr", "--method reduced"]),
        (["--method", "lbfgs", "--lr", "1"], ["--lr", "--method lbfgs"]),
    ],
)
def test_flags_that_do_not_apply_are_refused(argv, needles, capsys):
    _refused(solve_main, ["--K", "3", "--n", "2", "--quiet"] + argv, capsys, SOLVE, *needles)


def test_flags_that_apply_are_accepted(capsys):
    """The same flags where they apply are not refused (exit 1 here only for the 5-iteration cap)."""
    assert (
        solve_main(
            ["--K", "3", "--n", "2", "--quiet", "--no-hessian", "--loss", "mse", "--mse-kappa", "3", "--mse-beta", "2"]
        )
        == 0
    )
    assert (
        solve_main(
            ["--K", "3", "--n", "2", "--quiet", "--no-hessian", "--method", "gd", "--lr", "1", "--max-iters", "5"]
        )
        == 1
    )
    assert "error:" not in capsys.readouterr().err


def _bad_paths(tmp_path):
    (tmp_path / "file").write_text("keep")
    (tmp_path / "taken.json").write_text("keep")
    return [
        ("", "must be a file name"),
        ("/proc/self/x.json", "cannot write in /proc/self"),
        (str(tmp_path), "is a directory"),
        (str(tmp_path / "file" / "x.json"), "is a file, not a folder"),
        (str(tmp_path / "taken.json"), "already exists; pass --force"),
    ]


def test_solve_outputs_are_checked_before_computing(tmp_path, capsys):
    for path, needle in _bad_paths(tmp_path):
        _refused(solve_main, ["--K", "3", "--n", "2", "--quiet", "--json", path], capsys, SOLVE, "--json", needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "taken.json"]
    assert (tmp_path / "taken.json").read_text() == "keep"


def test_sweep_outputs_and_flags_are_checked_before_computing(tmp_path, capsys):
    for path, needle in _bad_paths(tmp_path):
        if path.endswith(".json"):
            _refused(sweep_main, ["--K", "3", "--n", "2", "--out", path], capsys, SWEEP, "--out", needle)
    _refused(sweep_main, ["--K", "3", "--n", "2", "--out", ""], capsys, SWEEP, "--out")
    _refused(sweep_main, ["--K", "3", "--n", "2", "--lr", "1"], capsys, SWEEP, "--lr", "--method reduced")
    _refused(
        sweep_main,
        ["--K", "3", "--n", "2", "--method", "reduced", "--float32"],
        capsys,
        SWEEP,
        "--method reduced",
        "--float32",
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "taken.json"]


def test_no_applicable_prediction_is_its_own_verdict(tmp_path, capsys):
    """Not "agrees — all 0 applicable checks" and exit 0, but exit 3: focal loss with d < K (no closed
    form and no exact class-mean reduction for a numerical optimum)."""
    out = tmp_path / "r.json"
    argv = ["--K", "4", "--n", "3", "--d", "2", "--loss", "focal", "--gamma", "2", "--quiet", "--no-hessian"]
    assert solve_main(argv + ["--json", str(out)]) == 3
    text = capsys.readouterr().out
    assert "agrees" not in text and "0 applicable" not in text
    assert text.splitlines()[-1].startswith("VERDICT: not verified — no prediction applies because d = 2 < K = 4")
    record = json.loads(out.read_text())
    assert record["verdict"] == "no prediction applies" and not any(row["applies"] for row in record["comparison"])


def test_negative_zero_is_written_as_zero(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert (
        solve_main(
            ["--K", "3", "--n", "4", "--delta", "-0", "--lam-b", "-0", "--quiet", "--no-hessian", "--json", str(out)]
        )
        == 0
    )
    report = capsys.readouterr().out
    assert "delta = 0)" in report and "lam_b = 0," in report and "-0" not in report.split("\n\n")[0]
    text = out.read_text()
    assert json.loads(text)["problem"]["delta"] == 0.0 and '"delta": -0' not in text and '"lam_b": -0' not in text


def test_run_all_refuses_before_computing(tmp_path, capsys):
    prog = "python -m experiments.run_all"
    target = tmp_path / "a_file"
    target.write_text("keep")
    _refused(run_all.main, ["--quick", "--out", str(target)], capsys, prog, "--out", "a_file")
    root = tmp_path / "results"
    (root / "landscape").mkdir(parents=True)
    (root / "landscape" / "landscape.csv").write_text("old")
    _refused(run_all.main, ["--quick", "--out", str(root)], capsys, prog, "landscape.csv", "--force")
    assert [p.relative_to(root).as_posix() for p in sorted(root.rglob("*"))] == ["landscape", "landscape/landscape.csv"]
    assert target.read_text() == "keep"


def test_an_experiment_refuses_a_used_folder_before_computing(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("old")
    _refused(
        condition_number.main,
        ["--quick", "--out", str(tmp_path)],
        capsys,
        "python -m experiments.condition_number",
        "notes.txt",
        "--force",
    )
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_two_concurrent_sweeps_to_one_path_keep_both_results_byte_identical(tmp_path):
    """Both runs pass the up-front check, then race to the name: both results are kept, one under
    ``same.1.json`` with a warning; identical runs write identical bytes (no timings in the file);
    ``--delta -0`` is written as 0.0."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    argv = [
        sys.executable,
        "-m",
        "ufm.sweep",
        "--K",
        "3",
        "--n",
        "4",
        "--delta=-0,0.1",
        "--seeds",
        "0:2",
        "--no-cache",
        "--out",
        "same.json",
    ]
    processes = [
        subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [process.communicate(timeout=300) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    assert sorted(p.name for p in tmp_path.iterdir()) == ["same.1.json", "same.json"]
    warnings = [line for _, err in outputs for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "same.1.json" in warnings[0], outputs
    assert (tmp_path / "same.json").read_bytes() == (tmp_path / "same.1.json").read_bytes()
    record = json.loads((tmp_path / "same.json").read_text())
    assert len(record["rows"]) == 4 and "seconds" not in record
    assert record["rows"][0]["delta"] == 0.0 and b'"delta": -0' not in (tmp_path / "same.json").read_bytes()


def test_analyze_bad_test_files_name_the_flag(tmp_path, capsys):
    """``python -m ufm.analyze --test FILE``: a missing or unreadable file, a missing key, wrong shapes,
    labels out of range, NaN features: exit 2, one error line naming --test, no --json file."""
    import numpy as np

    from ufm.analyze import main as analyze_main

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 4)
    weight = rng.normal(size=(3, 4))
    features = weight[labels] + 0.1 * rng.normal(size=(12, 4))
    layer = tmp_path / "layer.npz"
    np.savez(layer, features=features, labels=labels, weight=weight)
    np.save(tmp_path / "single.npy", features)
    bad = {
        "labels_missing": dict(features=features),
        "features_1d": dict(features=features[0], labels=labels[:1]),
        "features_d": dict(features=features[:, :3], labels=labels),
        "labels_range": dict(features=features, labels=labels + 1),
        "labels_length": dict(features=features, labels=labels[:-1]),
        "labels_float": dict(features=features, labels=labels * 0.5),
        "features_nan": dict(features=np.where(features > 1, np.nan, features), labels=labels),
    }
    for name, arrays in bad.items():
        np.savez(tmp_path / f"{name}.npz", **arrays)
    cases = [
        ("nope.npz", ["cannot read"]),
        ("single.npy", ["single array"]),
        ("labels_missing.npz", ["labels", "missing key"]),
        ("features_1d.npz", ["test_features"]),
        ("features_d.npz", ["test_features", "d = 4"]),
        ("labels_range.npz", ["test_labels", "[0, 3)"]),
        ("labels_length.npz", ["test_labels"]),
        ("labels_float.npz", ["test_labels", "integers"]),
        ("features_nan.npz", ["test_features", "NaN"]),
    ]
    out = tmp_path / "out.json"
    for path, needles in cases:
        argv = [str(layer), "--quiet", "--no-cache", "--test", str(tmp_path / path), "--json", str(out)]
        _refused(analyze_main, argv, capsys, "python -m ufm.analyze", "--test", *needles)
        assert not out.exists()


@pytest.mark.parametrize("value", ["0", "-1", "x", "1.5", "1001", ""])
def test_bad_restarts_are_refused(value, capsys):
    """``--restarts`` (d < K): a bad count exits 2 naming the flag, before solving."""
    _refused(solve_main, ["--K", "10", "--d", "5", "--quiet", "--restarts", value], capsys, SOLVE, "--restarts")


def test_d_below_K_flags_refused_where_no_numerical_optimum_is_computed(capsys):
    for flags in (["--restarts", "2"], ["--no-certificate"]):
        _refused(solve_main, ["--K", "3", "--n", "2", "--quiet", *flags], capsys, SOLVE, flags[0], "d < K")
        _refused(
            solve_main,
            ["--K", "5", "--d", "2", "--loss", "focal", "--gamma", "1", "--quiet", *flags],
            capsys,
            SOLVE,
            flags[0],
        )


@pytest.mark.parametrize(
    "flags,needles",
    [
        (["--restarts", "0"], ["--restarts"]),
        (["--restarts", "1.5"], ["--restarts"]),
        (["--restarts", "1001"], ["--restarts"]),
        (["--restarts", "2"], ["--restarts", "d < K", "d = 4, K = 3", "no --lam-W"]),  # d >= K: no d < K optimum
        (["--restarts", "2", "--lam-W", "1e-3", "--lam-H", "1e-3"], ["--restarts", "d = 4, K = 3"]),
    ],
)
def test_analyze_bad_or_inapplicable_restarts_are_refused(flags, needles, tmp_path, capsys):
    """``python -m ufm.analyze --restarts`` (d < K): a bad count, or one where no d < K optimum is
    computed, exits 2 naming the flag, before analysing; no --json file."""
    import numpy as np

    from ufm.analyze import main as analyze_main

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 4)
    weight = rng.normal(size=(3, 4))
    np.savez(tmp_path / "layer.npz", features=weight[labels], labels=labels, weight=weight)
    out = tmp_path / "out.json"
    argv = [str(tmp_path / "layer.npz"), "--quiet", "--no-cache", "--json", str(out), *flags]
    _refused(analyze_main, argv, capsys, "python -m ufm.analyze", *needles)
    assert not out.exists()
