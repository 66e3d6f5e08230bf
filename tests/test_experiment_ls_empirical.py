"""experiments/ls_empirical.py and its network (experiments/_cnn.py): the convolution against XLA's, the
split, the schedule, the verdict rules on curves whose answer is known, and the quick run's files."""

import csv
import math

import numpy as np
import pytest

pytest.importorskip("equinox", reason="the test extra installs equinox")
pytest.importorskip("mlxtend", reason="the test extra installs mlxtend")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from experiments import _cnn as cnn  # noqa: E402
from experiments import ls_empirical as experiment  # noqa: E402
from tests._quick import run_quick  # noqa: E402

#: the experiment whose quick run this file makes and checks (tests/_quick.py, OWN_FILES)
QUICK_RUN = "ls_empirical"


@pytest.mark.parametrize("side,channels_in,channels_out", [(28, 1, 8), (14, 8, 16), (8, 1, 8), (4, 8, 16), (7, 3, 2)])
def test_patch_convolution_equals_xla_convolution(side, channels_in, channels_out):
    """The patches-times-matrix convolution is XLA's 3x3, stride 2, SAME convolution (float64 here, so
    1e-12 is rounding of sums of 9 c products of O(1) numbers)."""
    rng = np.random.default_rng(side)
    x = jnp.asarray(rng.normal(size=(3, side, side, channels_in)))
    kernel = jnp.asarray(rng.normal(size=(3, 3, channels_in, channels_out)))
    bias = jnp.asarray(rng.normal(size=channels_out))
    ours = cnn._conv(x, kernel, bias)
    xla = jax.lax.conv_general_dilated(x, kernel, (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")) + bias
    assert ours.shape == xla.shape == (3, -(-side // 2), -(-side // 2), channels_out)
    np.testing.assert_allclose(np.asarray(ours), np.asarray(xla), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name,per_class,side", [("mnist", (30, 10, 5), 28), ("digits", (100, 30, 44), 8)])
def test_split_is_stratified_disjoint_and_seeded(name, per_class, side):
    split = cnn.load_images(name, per_class, seed=3)
    assert split.side == side and split.K == 10 and split.x_train.dtype == np.float32
    for part, size in zip(("train", "val", "test"), per_class, strict=True):
        labels = getattr(split, f"y_{part}")
        assert np.array_equal(np.bincount(labels), np.full(10, size))
        assert 0.0 <= getattr(split, f"x_{part}").min() and getattr(split, f"x_{part}").max() <= 1.0
    rows = {
        part: {getattr(split, f"x_{part}")[i].tobytes() for i in range(len(getattr(split, f"y_{part}")))}
        for part in ("train", "val", "test")
    }
    assert not (rows["train"] & rows["test"]) and not (rows["train"] & rows["val"]) and not (rows["val"] & rows["test"])
    again = cnn.load_images(name, per_class, seed=3)
    assert np.array_equal(again.x_train, split.x_train) and np.array_equal(again.y_test, split.y_test)
    assert not np.array_equal(cnn.load_images(name, per_class, seed=4).x_train, split.x_train)


@pytest.mark.parametrize(
    "name,per_class,match",
    [
        ("cifar", (1, 1, 1), "name"),
        ("mnist", (1, 1), "per_class"),
        ("mnist", (0, 1, 1), "per_class"),
        ("mnist", (400, 100, 1), "per_class"),
        ("digits", (100, 50, 50), "per_class"),
    ],
)
def test_split_refuses_bad_arguments(name, per_class, match):
    with pytest.raises(ValueError, match=match):
        cnn.load_images(name, per_class)


def test_schedule_divides_by_ten_at_the_papers_fractions():
    """Guo et al.: 0.05, /10 at epochs 150 and 350 of 800; at 160 epochs of 10 steps that is 30 and 70."""
    lr = cnn.schedule(160, 10)
    assert float(lr(0)) == pytest.approx(0.05)
    assert float(lr(299)) == pytest.approx(0.05) and float(lr(300)) == pytest.approx(0.005)
    assert float(lr(699)) == pytest.approx(0.005) and float(lr(700)) == pytest.approx(0.0005)


def test_training_lowers_the_loss_and_reports_every_record():
    """CE and LS on 400 MNIST images: the epoch's mean minibatch loss falls, a record per requested
    epoch, and the stop callback ends training early."""
    split = cnn.load_images("mnist", (40, 1, 1))
    models = cnn.stack([cnn.make_cnn(s, 28, 10) for s in (0, 1)])
    specs = cnn.LossSpec(np.array([0, 0]), np.array([0.0, 0.1]), np.array([0.0, 0.0]))
    seen = []
    cnn.train(
        models,
        split,
        specs,
        [0, 1],
        epochs=80,
        record_epochs=[1, 14, 20],
        record=seen.append,
        stop=lambda: len(seen) == 3,
    )
    assert [s.epoch for s in seen] == [0, 1, 14]  # stopped once three records were made
    assert np.all(seen[-1].batch_loss < 0.8 * seen[1].batch_loss)
    assert cnn.features(seen[-1].models, split.x_test).shape == (2, 10, 32)


@pytest.mark.parametrize(
    "agree,verdict",
    [
        ([True, True, True], "reproduced"),
        ([False, False], "not reproduced"),
        ([True, False, True], "partly (2 of 3 seeds)"),
        ([None, None], "undetermined"),
        ([True, None], "reproduced (1 seeds undetermined)"),
    ],
)
def test_verdict_words(agree, verdict):
    assert experiment._verdict(agree) == verdict


@pytest.mark.parametrize(
    "a,b,expected",
    [
        (1.0, 2.0, True),
        (2.0, 1.0, False),
        (3.0, math.inf, True),
        (math.inf, 3.0, False),
        (math.inf, math.inf, None),
        (math.nan, 1.0, None),
    ],
)
def test_ordered(a, b, expected):
    assert experiment._ordered(a, b) is expected


def test_crossing_interpolates_the_first_sign_change():
    assert experiment._crossing([0.0, 0.1, 0.2], [1.5, 1.1, 0.7], 1.0) == "0.125"  # 1.1 - 0.4 t = 1 at t = 1/4
    assert experiment._crossing([0.0, 0.1], [1.5, 1.2], 1.0) == "none in [0, 0.1]"


def _synthetic_curves(ls_better: bool, seeds=(0, 1)):
    """Curves in which LS (0.05) beats CE on every claim of §3.1-3.2 when ``ls_better`` (and loses
    otherwise): errors, NC1 and NC2 fall exponentially, LS at twice CE's rate."""
    rows = []
    for seed in seeds:
        for run_, loss, delta, gamma in experiment.RUNS:
            rate = 0.2 if (run_ == experiment.LS) == ls_better else 0.1
            for epoch in range(0, 41):
                decay = math.exp(-rate * epoch)
                rows.append(
                    dict(
                        dataset="x",
                        run=run_,
                        loss=loss,
                        delta=delta,
                        gamma=gamma,
                        seed=seed,
                        epoch=epoch,
                        status="ok",
                        batch_loss=decay + 0.1,
                        train_error=0.5 * decay if decay > 1e-3 else 0.0,
                        test_error=0.1,
                        nc1=decay,
                        nc2=0.5 * decay ** (0.5 if run_ == experiment.LS and ls_better else 0.25),
                        nc3=0.1,
                        w_norm=1.0 - delta,
                        h_norm=1.0 - delta,
                        confidence=0.9,
                        ece15=0.05,
                        ece20=0.05,
                        ece15_post=0.02,
                        ece20_post=0.02,
                        ece15_post_test_fit=0.02,
                        temperature=1.0 - delta,
                        temperature_test=1.0,
                        incorrect_nc1_predicted=1.0 - 0.01 * epoch,
                        incorrect_entropy=1.0 - 0.01 * epoch,
                    )
                )
    return rows


@pytest.mark.parametrize("ls_better", [True, False])
def test_claims_follow_the_curves(ls_better):
    """The §3.1-3.2 claims are reproduced on curves built to show them and not reproduced on curves
    built to show the opposite: the verdicts can fail."""
    verdicts = {r["claim"]: r["verdict"] for r in experiment.claims(_synthetic_curves(ls_better), "x", (0, 1), 40)}
    expected = "reproduced" if ls_better else "not reproduced"
    for claim, verdict in verdicts.items():
        if claim.startswith(("LS (0.05) reaches zero", "LS reaches NC1", "LS ends at a lower NC1", "at the same NC1")):
            assert verdict == expected, (claim, verdict)
    norms = [v for c, v in verdicts.items() if "norm falls" in c]
    assert norms == ["reproduced", "reproduced"]  # 1 - delta falls with delta
    assert verdicts["the optimal temperature falls as delta grows"] == "reproduced"


def test_quick_run_writes_every_file(tmp_path):
    figures = [
        f"{s}_{f}.png"
        for s in ("mnist", "digits")
        for f in ("training", "nc1_nc2", "calibration", "subgroups", "delta", "reliability", "losses")
    ]
    # the networks train in float32 (36 SGD steps in quick mode): on one machine two runs write identical
    # bytes; another CPU's float32 kernels may round differently, so numbers are compared at rtol 1e-4
    # (a guess, not a measurement across machines), against 1e-6 for the float64 experiments
    rows = run_quick(
        experiment,
        QUICK_RUN,
        tmp_path,
        figures=figures,
        statuses=("terminal phase", "training error above threshold"),
        rtol=1e-4,
        atol=1e-9,
    )
    assert {(r["dataset"], r["run"]) for r in rows} == {
        (s, run[0]) for s in ("mnist", "digits") for run in experiment.RUNS
    }
    claims = list(csv.DictReader(open(tmp_path / "claims.csv")))
    assert {r["dataset"] for r in claims} == {"mnist", "digits"} and len(claims) == 2 * len(claims) // 2
    assert all(
        r["verdict"].split(" (")[0] in ("reproduced", "not reproduced", "partly", "undetermined") for r in claims
    )
    reliability = list(csv.DictReader(open(tmp_path / "reliability.csv")))
    for dataset in ("mnist", "digits"):
        for scaling in ("before", "after"):  # pooled 20-bin counts cover every test image once per run
            counts = [
                int(r["count"])
                for r in reliability
                if r["dataset"] == dataset and r["scaling"] == scaling and r["run"] == "CE"
            ]
            assert len(counts) == 20 and sum(counts) == 10 * 10
    calibration = list(csv.DictReader(open(tmp_path / "calibration.csv")))
    assert len(calibration) == 2 * len(experiment.DELTAS)
    assert all(0.01 <= float(r["temperature"]) <= 100.0 for r in calibration)


@pytest.mark.parametrize(
    "argv,named",
    [
        (["--quick", "--out", ""], "--out"),
        (["--quick", "--epochs", "3"], "--epochs"),
        (["--quick", "--format", "gif"], "--format"),
    ],
)
def test_bad_arguments_are_refused_before_computing(argv, named, capsys):
    """The experiment's command line keeps the contract of every entry point: exit 2 and one error line
    naming the flag, nothing trained (tests/_hostile.py's rule, here for argparse)."""
    assert experiment.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert named in err[-1] and "error" in err[-1]


def test_a_used_folder_is_refused_before_computing(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("keep")
    assert experiment.main(["--quick", "--out", str(tmp_path)]) == 2
    assert "notes.txt" in capsys.readouterr().err and [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
