"""ufm.sweep: the vmapped grid gives ufm.solve's results, configuration by configuration; CLI."""

import csv
import json

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import ufm
from ufm import curvature, solver
from ufm import sweep as sweep_module
from ufm.sweep import grid, sweep

BASE = ufm.Problem(K=4, n=5)
# delta = 0 (CE) and 0.1, a lam beyond nothing and a larger one, four seeds: 16 configurations of one small
# shape, one compile for the tests of this file that use it
GRID = dict(delta=[0.0, 0.1], lam=[5e-4, 1e-2], seed=[0, 1, 2, 3])
# both sides stop at |grad| <= TOL |grad_0|: the end points are within ~TOL |grad_0| / lam of the minimizer
# set, so a tight TOL makes "the same result to 1e-10" a statement about the methods, not the tolerance
TOL = 1e-12


@pytest.fixture(scope="module")
def swept():
    return sweep(grid(BASE, **GRID), tol=TOL)


def test_grid_order_and_values():
    problems = grid(BASE, **GRID)
    assert len(problems) == 16
    assert [(p.delta, p.lam_W, p.seed) for p in problems[3:6]] == [(0.0, 5e-4, 3), (0.0, 1e-2, 0), (0.0, 1e-2, 1)]
    assert all(p.lam_H == p.lam_W == p.lam_b for p in problems)


def test_sweep_equals_a_loop_over_solve(swept):
    assert swept.converged.all()
    for j, problem in enumerate(swept.problems):
        single = ufm.solve(problem, tol=TOL)
        # same stopping rule; rounding differences of the batched linear algebra can move the step at
        # which |grad| first drops below tol by a few iterations
        assert abs(int(swept.iterations[j]) - single.iterations) <= 0.25 * single.iterations
        # W and H are defined only up to a rotation of the feature space (W -> QW, H -> QH), so rounding
        # differences of the batched linear algebra may move the end point along that orbit: compare the
        # invariants (objective, norms, logits).
        assert swept.objective[j] == pytest.approx(single.objective, rel=1e-10)
        collapse = ufm.collapse(single.W, single.H, problem.labels(), problem.K)
        assert swept.w_norm[j] == pytest.approx(float(collapse.w_norm), rel=1e-10)
        assert swept.h_norm[j] == pytest.approx(float(collapse.h_norm), rel=1e-10)
        Z_sweep = swept.W[j].T @ swept.H[j] + swept.b[j][:, None]
        Z_single = single.W.T @ single.H + single.b[:, None]
        np.testing.assert_allclose(Z_sweep, Z_single, rtol=0, atol=1e-10 * np.abs(Z_single).max())


def test_frozen_configurations_stop_at_their_own_iteration(swept):
    # the grid mixes fast and slow configurations; each keeps its own count
    assert len(set(swept.iterations.tolist())) > 1
    assert swept.iterations.max() < 20_000


#: (delta, lam, seed) of the lanes test: the shape (K = 3, n = 2) and M = 5 of the random test below, so
#: its 2-lane and 5-lane programs are that test's; the first configuration is repeated last
LANE_CONFIGS = [(0.0, 5e-4, 0), (0.1, 1e-2, 1), (0.3, 5e-3, 2), (0.0, 1e-2, 3), (0.0, 5e-4, 0)]


@pytest.mark.parametrize("lanes", [1, 2, 40])
def test_the_number_of_lanes_does_not_change_the_result(lanes):
    # the reduced work queue with one lane (every configuration a refill), fewer lanes than configurations
    # in a number that does not divide M = 5, and more lanes than configurations (clipped to M: the
    # program that runs every configuration at once, the reference, and no 40-lane program compiled).
    # Each lane count is a program of its own (2.5 s to compile).
    problems = [
        ufm.Problem(K=3, n=2, delta=delta, lam_W=lam, lam_H=lam, lam_b=lam, seed=seed)
        for delta, lam, seed in LANE_CONFIGS
    ]
    together = sweep(problems, batch_size=len(problems), tol=TOL)
    queued = sweep(problems, batch_size=lanes, tol=TOL)
    assert len(queued) == 5 and queued.method == "reduced" and together.converged.all()
    if lanes >= len(problems):
        lane_counts = {p.statics["lanes"] for p in ufm.compiled_programs(sweep_module._reduced_queue)}
        assert lanes not in lane_counts and len(problems) in lane_counts
        for name in ("iterations", "objective", "W", "H", "b"):
            np.testing.assert_array_equal(getattr(queued, name), getattr(together, name))
        return
    # each lane runs the same arithmetic on one configuration: only the batched rounding differs,
    # which at TOL = 1e-12 (near float64's floor for this gradient) moves the stopping iteration by
    # up to 11% (observed at K = 4, n = 5: 156 vs 140 with one lane); the end points agree to ~1e-16
    assert np.all(np.abs(queued.iterations - together.iterations) <= 0.25 * together.iterations)
    np.testing.assert_allclose(queued.objective, together.objective, rtol=1e-12)


def test_sweeps_that_differ_only_in_n_share_the_queue_program():
    """The seeded starts (per N) are a program of their own; the queue's depends on (d, K, M, lanes) only."""
    queues = lambda: [
        p for p in ufm.compiled_programs(sweep_module._reduced_queue) if p.statics["K"] == 3 and p.statics["lanes"] == 5
    ]
    for n in (2, 5):
        problems = [ufm.Problem(K=3, n=n, delta=delta, seed=7) for delta in (0.0, 0.2, 0.1, 0.3, 0.4)]
        swept = sweep(problems, tol=1e-10)
        assert swept.converged.all() and swept.H.shape == (5, 3, 3 * n)
        single = ufm.solve(problems[1], tol=1e-10)
        assert swept.objective[1] == pytest.approx(single.objective, rel=1e-12)  # as in the test below
    assert len(queues()) == 1  # one queue program for both n


@example(configurations=[(0.0, 0.0625, 0)] * 4 + [(0.5983960778511229, 0.0947823057969069, 15)], lanes=2)  # c = 1.0002
@given(
    st.lists(st.tuples(st.floats(0.0, 0.6), st.floats(1e-4, 1e-1), st.integers(0, 2**31 - 1)), min_size=5, max_size=5),
    st.sampled_from([2, 16]),  # refills and idle lanes; one lane is the test above
)
def test_queue_matches_solve_on_random_configurations(configurations, lanes):
    # five random (delta, lam, seed) of one small shape (one compile per lane count): every lane's
    # configuration ends where ufm.solve ends it. Both stop at |grad| <= 1e-10 |grad_0|; near the minimizer
    # set each end point lies within |grad| / mu of it, mu the smallest non-zero eigenvalue of the joint
    # Hessian (the zero ones are the rotation orbit, along which the norms do not change). So the mean
    # column norms differ by at most (|grad_q| + |grad_s|) / mu; doubled for the quadratic model's error.
    # Observed: at most 0.06 of the bound over 60 random configurations (4 of them within 1% of the phase
    # boundary c = 1, where mu falls to ~1e-3 lam), 0.16 in the example (c = 1.0002), where a fixed 1e-9
    # failed. The objective differs by the square of that distance: rounding level, 1e-12 relative.
    problems = [
        ufm.Problem(K=3, n=2, delta=delta, lam_W=lam, lam_H=lam, lam_b=lam, seed=seed)
        for delta, lam, seed in configurations
    ]
    queued = sweep(problems, batch_size=lanes, tol=1e-10)
    assert queued.converged.all()
    for j, problem in enumerate(problems):
        single = ufm.solve(problem, tol=1e-10)
        assert single.converged
        assert queued.objective[j] == pytest.approx(single.objective, rel=1e-12, abs=1e-15)
        at_end = ufm.Params(single.W, single.H, single.b)
        spectrum = curvature.joint_eigenvalues(at_end, problem.labels(), problem.weights())
        mu = curvature.nonzero_range(spectrum)[1]
        bound = (queued.grad_norm[j] + single.grad_norm) / mu
        w_norm = float(ufm.collapse(single.W, single.H, problem.labels(), 3).w_norm)
        assert abs(queued.w_norm[j] - w_norm) <= 2 * bound


def test_other_methods_run_as_vmapped_chunks():
    # lbfgs (optax) on the full problem, chunks of 2 with the last one padded; d = 5 > K (a non-square W), and
    # the single solves without history, as the sweep runs them
    problems = grid(ufm.Problem(K=4, n=5, d=5), delta=[0.0, 0.1], lam=[5e-3], seed=[0, 1])[:3]
    chunked = sweep(problems, "lbfgs", batch_size=2, tol=1e-10)
    assert chunked.method == "lbfgs" and chunked.converged.all()
    for j, problem in enumerate(problems):
        single = ufm.solve(problem, "lbfgs", tol=1e-10, history=False)
        assert chunked.objective[j] == pytest.approx(single.objective, rel=1e-12)


def test_a_configuration_as_a_result_feeds_compare(swept):
    problem = swept.problems[3]
    from_sweep = ufm.compare(swept.result(3), spectra=False)
    from_solve = ufm.compare(ufm.solve(problem, tol=TOL), spectra=False)
    assert from_sweep.ok and from_solve.ok
    for a, b in zip(from_sweep.rows, from_solve.rows, strict=True):
        assert a.quantity == b.quantity
        if a.error is not None and b.error is not None:
            assert abs(a.measured - b.measured) <= 1e-9 * max(abs(b.measured), 1.0)
    assert swept.result(-1).problem is swept.problems[-1]
    for bad in (16, -17, 1.0, True, "0"):
        with pytest.raises(ValueError, match="j must be"):
            swept.result(bad)


@pytest.mark.parametrize(
    "bad,message",
    [
        (dict(problems=[]), "non-empty"),
        (dict(problems=[BASE, ufm.Problem(K=4, n=6)]), "same n"),
        (dict(method="newton"), "method must be"),
        (dict(tol=2.0), "tol must be"),
        (dict(batch_size=0), "batch_size must be"),
        (dict(method="gd", lr=-1.0), "lr must be"),
    ],
)
def test_bad_arguments(bad, message):
    args = dict(problems=[BASE])
    args.update(bad)
    problems = args.pop("problems")
    with pytest.raises(ValueError, match=message):
        sweep(problems, **args)


def test_cli_writes_csv_and_json_and_refuses_to_overwrite(tmp_path, capsys):
    argv = ["--K", "4", "--n", "5", "--delta", "0,0.1", "--lam", "5e-4,1e-2", "--seeds", "0:4"]  # GRID: one program
    out = tmp_path / "sweep.csv"
    assert sweep_module.main(argv + ["--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 16 and rows[0]["status"] == "converged" and float(rows[-1]["delta"]) == 0.1
    # p_t measured, and theory's p_t and kappa = K p_t: kappa against delta is plotted from the file alone
    for row in rows:
        assert float(row["p_t"]) == pytest.approx(float(row["p_t_theory"]), rel=1e-8)
        assert float(row["kappa_theory"]) == pytest.approx(4 * float(row["p_t_theory"]), rel=1e-12)
    assert list(rows[0])[-3:] == list(sweep_module.CLI_COLUMNS)
    assert sweep_module.main(argv + ["--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    out_json = tmp_path / "sweep.json"
    assert sweep_module.main(argv + ["--out", str(out_json)]) == 0
    assert len(json.loads(out_json.read_text())["rows"]) == 16
    assert sweep_module.main(["--K", "1"]) == 2


def test_cli_iteration_cap_follows_the_method():
    """--max-iters unset is the cap of ufm.solve for the method (2000 lbfgs, 20000 reduced, 100000 the others)."""
    from ufm import _cli

    assert sweep_module.build_parser().parse_args([]).max_iters is None
    assert [_cli.max_iters(m) for m in ("lbfgs", "reduced", "gd", "momentum")] == [2_000, 20_000, 100_000, 100_000]
    assert _cli.max_iters("gd", 7) == 7
    seeds = next(a for a in sweep_module.build_parser()._actions if "--seeds" in a.option_strings)
    assert "HI exclusive" in seeds.help and list(seeds.type("0:3")) == [0, 1, 2]


def test_grid_advice_is_a_count_the_sweep_accepts(monkeypatch):
    # once the advice counted only the configurations' Python objects ("at most 3
    # configurations (about 1.14e-05 GiB)") and the sweep of 3 was then refused as needing 358 GiB
    import re

    from ufm import _memory

    free = 200_000
    monkeypatch.setattr(_memory, "free_bytes", lambda device=None: free)
    base = ufm.Problem(K=3, n=2)
    with pytest.raises(ValueError, match="at most") as refused:
        grid(base, delta=[0.0, 0.1], seed=range(1000))
    m = int(re.search(r"at most (\d+) configurations", str(refused.value)).group(1))
    problems = grid(base, seed=range(m))  # the grid of m is accepted, and so is its sweep (same estimate)
    method = solver.default_method(base)
    lanes = min(m, sweep_module.REDUCED_LANES) if method == "reduced" else m
    assert len(problems) == m and _memory.sweep_bytes(m, lanes, 3, 6, 3, 8, method) <= free
    monkeypatch.setattr(_memory, "free_bytes", lambda device=None: 1000)  # not even one fits: says so
    with pytest.raises(ValueError, match="even one configuration of this shape needs about"):
        grid(base, seed=range(1000))


@pytest.mark.parametrize("text", ["0,,0.1", "0,0.1,", ",0"])
def test_cli_refuses_an_empty_delta_entry(capsys, text):
    assert sweep_module.main(["--K", "4", "--n", "5", "--delta", text]) == 2
    err = capsys.readouterr().err
    assert "--delta has an empty entry" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "flags,columns",
    [
        (["--loss", "ce"], ["loss", "lam_W"]),
        (["--loss", "mse", "--mse-kappa", "3"], ["loss", "mse_kappa", "mse_beta", "lam_W"]),
        (["--loss", "focal", "--gamma", "2", "--method", "gd", "--max-iters", "3"], ["loss", "gamma", "lam_W"]),
    ],
)
def test_cli_sweeps_every_loss(flags, columns, tmp_path):
    """--loss through the shared flags: each row names the loss and its parameters (no delta column outside
    label smoothing), p_t is nan for MSE (no softmax) and theory's columns nan outside CE/LS. Focal runs 3 gd
    steps (exit 1, not converged): only the plumbing is checked here, its numbers in test_solver_losses.py."""
    out = tmp_path / "s.csv"
    code = sweep_module.main(["--K", "3", "--n", "2", "--lam", "5e-4,1e-2", *flags, "--out", str(out)])
    assert code == (1 if "gd" in flags else 0)
    rows = list(csv.DictReader(out.open()))
    name = flags[1]
    assert len(rows) == 2 and list(rows[0])[: len(columns)] == columns and "delta" not in rows[0]
    assert {row["loss"] for row in rows} == {name} and [float(row["lam_W"]) for row in rows] == [5e-4, 1e-2]
    for flag, value in zip(flags[2::2], flags[3::2], strict=False):
        if flag in ("--gamma", "--mse-kappa"):
            assert float(rows[0][flag[2:].replace("-", "_")]) == float(value)
    assert (rows[0]["p_t"] == "nan") == (name == "mse")
    if name == "ce":  # CE is LS at delta 0: theory's columns apply (converged to 1e-10: p_t agrees to 1e-8)
        assert float(rows[0]["p_t"]) == pytest.approx(float(rows[0]["p_t_theory"]), rel=1e-8)
    else:
        assert rows[0]["p_t_theory"] == rows[0]["kappa_theory"] == "nan"
