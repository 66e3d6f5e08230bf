"""The real-network experiments: digits split, MLP objective vs the UFM objective, training, NC1 of Nguyen et al.

The quick command-line runs of ``real_network`` and ``label_noise_network`` are exercised by
``tests/test_experiments.py`` (every entry of ``run_all.EXPERIMENTS``); here the pieces are checked
against independent computations, and each experiment's ``compute`` runs on a tiny setting.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import theory
import ufm
from experiments import _network as net
from ufm.losses import LOSS_IDS
from ufm.metrics import nc1_nguyen

jax.config.update("jax_enable_x64", True)


@pytest.mark.parametrize("classes", [None, (0, 1), (3, 8, 5)])
@pytest.mark.parametrize("n", [1, 20, 170])
def test_split_is_balanced_disjoint_and_complete(n, classes):
    from sklearn.datasets import load_digits  # on use: 0.7 s to import, paid by every worker at collection

    data = net.load_digits_split(n, classes=classes, seed=3)
    digits = load_digits()
    chosen = tuple(range(10)) if classes is None else classes
    np.testing.assert_array_equal(data.y_train, np.asarray(ufm.class_major_labels(len(chosen), n)))
    np.testing.assert_array_equal(np.bincount(data.y_train), np.full(len(chosen), n))
    # train and test together are every image of the chosen digits, each once
    together = np.concatenate([data.train_index, data.test_index])
    assert len(set(together.tolist())) == len(together)
    assert set(together.tolist()) == set(np.flatnonzero(np.isin(digits.target, chosen)).tolist())
    # the labels name the right digit and the pixels are the data set's, scaled by 1/16
    np.testing.assert_array_equal(np.asarray(chosen)[data.y_train], digits.target[data.train_index])
    np.testing.assert_array_equal(np.asarray(chosen)[data.y_test], digits.target[data.test_index])
    np.testing.assert_array_equal(data.x_test * 16.0, digits.data[data.test_index])
    assert data.x_train.min() >= 0.0 and data.x_train.max() <= 1.0


def test_split_and_init_are_reproducible():
    a, b, c = (net.load_digits_split(30, seed=s) for s in (7, 7, 8))
    for field in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.x_train, c.x_train)
    m1, m2, m3 = (net.make_mlp(s, (8,), 4, 10) for s in (1, 1, 2))
    np.testing.assert_array_equal(m1.hidden[0].weight, m2.hidden[0].weight)
    assert not np.array_equal(m1.hidden[0].weight, m3.hidden[0].weight)


def test_compiled_construction_is_equinox_eager_initialisation():
    """make_mlp builds the model in one compiled program; equinox's own eager layers give the same bits
    (a seed above 2^31, and layers of few distinct shapes: each eager shape compiles its own programs)."""
    import equinox as eqx

    seed = 2**31 + 5
    keys = jax.random.split(jax.random.PRNGKey(seed), 3)
    layers = [eqx.nn.Linear(64, 4, key=keys[0]), eqx.nn.Linear(4, 4, key=keys[1]), eqx.nn.Linear(4, 4, key=keys[2])]
    model = net.make_mlp(seed, (4,), 4, 4)
    for ours, eager in zip((*model.hidden, model.feature, model.classifier), layers, strict=True):
        for name in ("weight", "bias"):
            mine, theirs = getattr(ours, name), getattr(eager, name)
            assert mine.dtype == theirs.dtype
            np.testing.assert_array_equal(mine, theirs)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(n=0), "n"),
        (dict(n=174), "n"),
        (dict(n=2.5), "n"),
        (dict(n=5, classes=(1,)), "classes"),
        (dict(n=5, classes=(1, 1)), "classes"),
        (dict(n=5, classes=(0, 10)), "classes"),
        (dict(n=5, seed=-1), "seed"),
    ],
)
def test_split_rejects_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        net.load_digits_split(**kwargs)


def _ufm_weights(spec: net.TrainSpec):
    if spec.loss_id == 1:
        return ufm.Weights(0.0, spec.lam_W, spec.lam_H, spec.lam_b, LOSS_IDS["mse"], 0.0, 1.0, 1.0)
    return ufm.Weights(spec.delta, spec.lam_W, spec.lam_H, spec.lam_b)


@pytest.mark.parametrize(
    "spec",
    [
        net.TrainSpec(0.0, 1e-3, 1e-6, 1e-2),
        net.TrainSpec(0.2, 3e-2, 5e-2, 0.1),
        net.TrainSpec(0.0, 1e-3, 2e-3, 1e-2, loss_id=1),
    ],
)
@pytest.mark.parametrize("nonnegative", [False, True])
def test_network_objective_is_the_ufm_objective_on_the_last_layer(spec, nonnegative):
    """With no weight decay the network's objective at theta equals ufm.objective at its (W, H, b)."""
    data = net.load_digits_split(6, seed=0)
    model = net.make_mlp(4, (12, 9), 11, 10, nonnegative=nonnegative)
    x = jnp.asarray(data.x_train)
    W, H, b = net.last_layer(model, x)
    assert W.shape == (11, 10) and H.shape == (11, 60) and b.shape == (10,)
    if nonnegative:
        assert float(jnp.min(H)) >= 0.0
    expected = ufm.objective(ufm.Params(W, H, b), jnp.asarray(data.y_train), _ufm_weights(spec))
    got = net.penalized_loss(model, x, jnp.asarray(data.y_train), spec)
    # two float64 evaluations of the same sums in a different order: rounding level
    assert abs(float(got) - float(expected)) <= 1e-13 * abs(float(expected))


def test_weight_decay_adds_half_lambda_times_every_squared_parameter():
    data = net.load_digits_split(3, seed=0)
    model = net.make_mlp(0, (5,), 4, 10)
    x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    plain = net.penalized_loss(model, x, y, net.TrainSpec(0.1))
    decayed = net.penalized_loss(model, x, y, net.TrainSpec(0.1, weight_decay=0.3))
    leaves = [
        model.hidden[0].weight,
        model.hidden[0].bias,
        model.feature.weight,
        model.feature.bias,
        model.classifier.weight,
        model.classifier.bias,
    ]
    by_hand = 0.15 * sum(float(np.sum(np.asarray(v) ** 2)) for v in leaves)
    assert abs(float(decayed - plain) - by_hand) <= 1e-13 * by_hand


def _tiny_training():
    """Two segments (Adam, then L-BFGS) of real_network's quick lanes: the quick run's data, network,
    lanes and step, so the compiled segments are those of the quick run in tests/test_experiments.py
    (each process compiles them once between the two, through the suite's compilation cache)."""
    from experiments import real_network as rn

    config = rn.settings(True)
    data = net.load_digits_split(config["n"], seed=config["seed"])
    _, specs = rn.lanes(config)
    lanes = len(specs.delta)
    models = net.stack([net.make_mlp(config["seed"], config["widths"], config["d"], 10)] * lanes)
    labels = jnp.tile(jnp.asarray(data.y_train), (lanes, 1))
    every = config["every"]
    trained = net.train(
        models,
        jnp.asarray(data.x_train),
        labels,
        specs,
        adam_steps=every,
        lbfgs_steps=every,
        every=every,
        adam_lr=rn.ADAM_LR,
        gtol=1e-300,
    )
    return data, specs, trained


@pytest.fixture(scope="module")
def tiny():
    return _tiny_training()


def test_training_is_reproducible_and_lowers_the_objective(tiny):
    _, specs, first = tiny
    _, _, again = _tiny_training()
    for a, b in zip(first.history, again.history, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(first.models.feature.weight, again.models.feature.weight)
    every = first.history.step[1]
    assert first.history.step.tolist() == [0, every, 2 * every]
    assert np.all(np.diff(first.history.objective, axis=0) < 0)  # each segment lowers every lane's objective
    assert first.history.objective[-1, 0] < 0.5 * first.history.objective[0, 0]  # CE: 2.32 -> 0.018
    assert first.status == ("max_steps",) * len(specs.delta)


def test_recorded_metrics_are_those_of_the_returned_models(tiny):
    data, specs, trained = tiny
    x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    for j in range(len(specs.delta)):
        W, H, b = net.last_layer(net.lane(trained.models, j), x)
        nc = ufm.collapse(W, H, y, 10)
        assert float(nc.w_norm) == pytest.approx(trained.history.w_norm[-1, j], rel=1e-12)
        assert float(nc.nc1) == pytest.approx(trained.history.nc1[-1, j], rel=1e-10)
        spec = jax.tree_util.tree_map(lambda field, j=j: field[j], specs)
        value = net.penalized_loss(net.lane(trained.models, j), x, y, spec)
        assert float(value) == pytest.approx(trained.history.objective[-1, j], rel=1e-12)


def test_train_rejects_steps_that_are_not_multiples_of_every():
    data = net.load_digits_split(2, seed=0)
    models = net.stack([net.make_mlp(0, (4,), 10, 10)])
    with pytest.raises(ValueError, match="every"):
        net.train(
            models,
            jnp.asarray(data.x_train),
            jnp.asarray(data.y_train)[None],
            net.TrainSpec(jnp.zeros(1), jnp.zeros(1), jnp.zeros(1), jnp.zeros(1), jnp.zeros(1), jnp.zeros(1, int)),
            adam_steps=15,
            lbfgs_steps=0,
            every=10,
        )


def _nc1_nguyen_brute(H, labels, K):
    """Eq. (2) of Nguyen et al. by explicit loops over classes and samples (numpy)."""
    H, labels = np.asarray(H), np.asarray(labels)
    d, N = H.shape
    means = [H[:, labels == k].mean(axis=1) for k in range(K)]
    centre = sum(means) / K
    sigma_W = np.zeros((d, d))
    for i in range(N):
        v = H[:, i] - means[labels[i]]
        sigma_W += np.outer(v, v) / N
    sigma_B = sum(np.outer(m - centre, m - centre) for m in means) / K
    return np.trace(sigma_W @ np.linalg.pinv(sigma_B)) / K


@pytest.mark.parametrize("counts", [(5, 5), (3, 9), (4, 4, 4), (2, 7, 3, 11)])
@pytest.mark.parametrize("d", [2, 6])
def test_nc1_nguyen_matches_brute_force_and_equals_nc1_when_balanced(counts, d):
    rng = np.random.default_rng(sum(counts) * d)
    K = len(counts)
    labels = np.repeat(np.arange(K), counts)
    H = rng.normal(size=(d, len(labels))) + 3.0 * rng.normal(size=(d, K))[:, labels]
    got = float(nc1_nguyen(jnp.asarray(H), jnp.asarray(labels), K))
    # same sums, different order: rounding level relative to an O(1) value
    assert got == pytest.approx(_nc1_nguyen_brute(H, labels, K), rel=1e-10)
    guo = float(ufm.nc1(jnp.asarray(H), jnp.asarray(labels), K))
    if len(set(counts)) == 1:
        assert got == pytest.approx(guo, rel=1e-10)
    else:  # imbalanced: Sigma_B is centred at the mean of class means, not the global mean
        assert abs(got - guo) > 1e-6 * guo


def test_theorem_targets_of_the_simulated_ufm_setting_are_finite():
    """The setting of Guo App. B.6 on the digits is below the phase boundary (the theorem's a > 0)."""
    for n in (20, 100):
        assert theory.phase(10, n, delta=0.3, lam_W=1e-3, lam_H=1e-6).c < 1
        norms = theory.norms(10, n, delta=0.0, lam_W=1e-3, lam_H=1e-6)
        assert np.isfinite(norms.w) and norms.w > 0


# ----------------------------------------------------------------------------- real_network


def test_real_network_rows_agree_with_theory_and_with_ufm_analyze():
    from experiments import real_network as rn

    # the quick run's settings with two segments: its compiled programs (tests/test_experiments.py)
    config = {**rn.settings(True), "adam_steps": 50, "lbfgs_steps": 50}
    assert config["every"] == 50
    rows, curves, analyses = rn.compute(config)
    assert [(r["setting"], r["delta"]) for r in rows] == (
        [("simulated_ufm", d) for d in rn.DELTAS] + [("weight_decay", d) for d in config["weight_decay_deltas"]]
    )
    assert len(curves) == len(rows) * 3  # records at steps 0, 50, 100
    for row in rows:
        analysis = analyses[f"{row['setting']}_delta_{row['delta']:g}"]
        # ufm.analyze (streamed float64 moments of features (N, d)) vs ufm.collapse on H (d, N): same point
        for key in ("w_norm", "h_norm", "nc1", "nc2", "nc3"):
            assert analysis["measured"][key] == pytest.approx(row[key], rel=1e-9, abs=1e-12)
        norms = theory.norms(10, config["n"], delta=row["delta"], lam_W=row["lam_W"], lam_H=row["lam_H"])
        assert row["w_norm_theory"] == pytest.approx(norms.w, rel=1e-14)
        assert row["w_rel_error"] == pytest.approx(abs(row["w_norm"] - norms.w) / norms.w, rel=1e-12)
        assert analysis["predicted"]["w_norm"] == pytest.approx(norms.w, rel=1e-10)
        if row["setting"] == "simulated_ufm":
            assert (row["lam_W"], row["lam_H"]) == (rn.LAM_W, rn.LAM_H)
        else:  # the effective lam_H reproduces the measured ratio ||w|| / ||h|| through Theorem 4.1
            assert norms.w / norms.h == pytest.approx(row["w_norm"] / row["h_norm"], rel=1e-12)
        assert row["status"] in ("converged", "max_steps")


# ----------------------------------------------------------------------------- label_noise_network


def test_noisy_labels_follow_the_papers_corruption_model():
    from experiments import label_noise_network as lnn

    y = np.repeat([0, 1], 50_000)
    eta = 0.2
    observed, corrupted = lnn.noisy_labels(y, eta, seed=3)
    again, corrupted_again = lnn.noisy_labels(y, eta, seed=3)
    np.testing.assert_array_equal(observed, again)
    np.testing.assert_array_equal(corrupted, corrupted_again)
    N = len(y)
    # binomial counts: 5 standard deviations
    assert abs(corrupted.sum() - eta * N) <= 5 * np.sqrt(N * eta * (1 - eta))
    flips = observed != y
    assert not np.any(flips & ~corrupted)  # only redrawn labels change
    half = corrupted.sum() / 2  # a redrawn label is uniform over the two classes
    assert abs(flips.sum() - half) <= 5 * np.sqrt(half / 2)
    assert not lnn.noisy_labels(y, 0.0, seed=3)[1].any()


def test_memorization_is_eq3_by_brute_force():
    from experiments import label_noise_network as lnn

    rng = np.random.default_rng(0)
    H = rng.normal(size=(40, 2))
    y = np.repeat([0, 1], 20)
    corrupted = rng.random(40) < 0.3
    means = rng.normal(size=(2, 2))
    expected = sum(np.sqrt(sum((H[i, c] - means[y[i], c]) ** 2 for c in range(2))) for i in range(40) if corrupted[i])
    assert lnn.memorization(H, y, corrupted, means) == pytest.approx(expected, rel=1e-13)


def test_slope_fits_recover_a_known_line_and_skip_degenerate_runs():
    from experiments import label_noise_network as lnn

    slopes = {"ce": 0.02, "ls": 0.02, "mse": 0.05}
    rows = []
    for loss, slope in slopes.items():
        for seed in (0, 1, 2):
            for mem in (0.0, 1.0, 2.5, 4.0):
                rows.append(
                    dict(
                        loss=loss,
                        seed=seed,
                        memorization=mem * (seed + 1),
                        memorization_normalized=mem,
                        sqrt_nc1_test=0.1 + slope * mem * (seed + 1),
                        degenerate=False,
                    )
                )
    rows.append(
        dict(loss="ce", seed=0, memorization=1.0, memorization_normalized=1.0, sqrt_nc1_test=99.0, degenerate=True)
    )
    fits = {(f["x"], f["loss"]): f for f in lnn.fit_slopes(rows)}
    for loss, slope in slopes.items():
        fit = fits[("memorization", loss)]
        assert fit["slope_mean"] == pytest.approx(slope, rel=1e-10)
        assert fit["slope_pooled"] == pytest.approx(slope, rel=1e-10)
        assert fit["intercept_pooled"] == pytest.approx(0.1, rel=1e-10)
        assert fit["slope_std"] == pytest.approx(0.0, abs=1e-12)
    assert fits[("memorization", "ce")]["excluded"] == 1
    # the normalized axis sees slope * (seed + 1): a spread over seeds
    assert fits[("memorization_normalized", "ls")]["slope_std"] == pytest.approx(0.02, rel=1e-10)
    comparison = {(c["x"], c["pair"]): c for c in lnn.compare_slopes(list(fits.values()))}
    assert comparison[("memorization", "ce-ls")]["difference"] == pytest.approx(0.0, abs=1e-12)
    assert comparison[("memorization", "ce-mse")]["ratio"] == pytest.approx(0.4, rel=1e-10)


def test_label_noise_rows_on_a_tiny_setting():
    from experiments import label_noise_network as lnn

    # the quick run's settings with two segments: its compiled programs (tests/test_experiments.py)
    config = {**lnn.settings(True), "adam_steps": 100}
    rows = lnn.compute(config)
    lanes = [(loss, eta, seed) for loss in lnn.LOSSES for eta in config["etas"] for seed in config["seeds"]]
    assert [(r["loss"], r["eta"], r["seed"]) for r in rows] == lanes
    y = np.repeat([0, 1], config["n"])
    for row in rows:
        observed, corrupted = lnn.noisy_labels(y, row["eta"], row["seed"])
        assert row["corrupted"] == corrupted.sum() and row["flipped"] == (observed != y).sum()
        if row["eta"] == 0.0:
            assert row["memorization"] == 0.0
        if row["test_mean_distance"] > 0:
            assert row["memorization_normalized"] == pytest.approx(row["memorization"] / row["test_mean_distance"])
        assert row["sqrt_nc1_test"] == pytest.approx(np.sqrt(row["nc1_test"]))
        assert 0.0 <= row["test_accuracy"] <= 1.0


@pytest.mark.parametrize("name", ["real_network", "label_noise_network"])
def test_without_the_network_extra_the_experiment_says_so_in_one_line(name, monkeypatch, capsys, tmp_path):
    import importlib

    module = importlib.import_module(f"experiments.{name}")
    monkeypatch.setattr(module, "NETWORK_MISSING", ImportError("No module named 'equinox'"))
    assert module.main(["--quick", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"python -m experiments.{name}: error: needs the optional 'network'")
    assert not (tmp_path / "out").exists()
