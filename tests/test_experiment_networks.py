"""The real-network experiments: digits split, MLP objective vs the UFM objective, training, NC1 of Nguyen et al.

The quick command-line runs of ``real_network`` and ``label_noise_network`` are exercised by
``tests/test_experiments.py`` (every entry of ``run_all.EXPERIMENTS``); here the pieces are checked
against independent computations, and each experiment's ``compute`` runs on a tiny setting.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.datasets import load_digits

import theory
import ufm
from experiments import _network as net
from ufm.losses import LOSS_IDS
from ufm.metrics import nc1_nguyen

jax.config.update("jax_enable_x64", True)


@pytest.mark.parametrize("classes", [None, (0, 1), (3, 8, 5)])
@pytest.mark.parametrize("n", [1, 20, 170])
def test_split_is_balanced_disjoint_and_complete(n, classes):
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


@pytest.mark.parametrize("kwargs, name", [(dict(n=0), "n"), (dict(n=174), "n"), (dict(n=2.5), "n"),
                                          (dict(n=5, classes=(1,)), "classes"), (dict(n=5, classes=(1, 1)), "classes"),
                                          (dict(n=5, classes=(0, 10)), "classes"), (dict(n=5, seed=-1), "seed")])
def test_split_rejects_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        net.load_digits_split(**kwargs)


def _ufm_weights(spec: net.TrainSpec):
    if spec.loss_id == 1:
        return ufm.Weights(0.0, spec.lam_W, spec.lam_H, spec.lam_b, LOSS_IDS["mse"], 0.0, 1.0, 1.0)
    return ufm.Weights(spec.delta, spec.lam_W, spec.lam_H, spec.lam_b)


@pytest.mark.parametrize("spec", [net.TrainSpec(0.0, 1e-3, 1e-6, 1e-2), net.TrainSpec(0.2, 3e-2, 5e-2, 0.1),
                                  net.TrainSpec(0.0, 1e-3, 2e-3, 1e-2, loss_id=1)])
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
    leaves = [model.hidden[0].weight, model.hidden[0].bias, model.feature.weight, model.feature.bias,
              model.classifier.weight, model.classifier.bias]
    by_hand = 0.15 * sum(float(np.sum(np.asarray(v) ** 2)) for v in leaves)
    assert abs(float(decayed - plain) - by_hand) <= 1e-13 * by_hand


def _tiny_training(seed=0, adam_steps=40, lbfgs_steps=40):
    data = net.load_digits_split(4, seed=seed)
    deltas = jnp.array([0.0, 0.2])
    models = net.stack([net.make_mlp(seed, (16,), 10, 10)] * 2)
    specs = net.TrainSpec(deltas, jnp.full(2, 1e-3), jnp.full(2, 1e-3), jnp.full(2, 1e-2), jnp.zeros(2),
                          jnp.zeros(2, int))
    labels = jnp.tile(jnp.asarray(data.y_train), (2, 1))
    return data, net.train(models, jnp.asarray(data.x_train), labels, specs, adam_steps=adam_steps,
                           lbfgs_steps=lbfgs_steps, every=20, adam_lr=1e-2, tol=1e-300)


def test_training_is_reproducible_and_lowers_the_objective():
    _, first = _tiny_training()
    _, again = _tiny_training()
    for a, b in zip(first.history, again.history):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(first.models.feature.weight, again.models.feature.weight)
    assert first.history.step.tolist() == [0, 20, 40, 60, 80]
    assert np.all(first.history.objective[-1] < 0.5 * first.history.objective[0])
    assert first.status == ("max_steps", "max_steps")


def test_recorded_metrics_are_those_of_the_returned_models():
    data, trained = _tiny_training(adam_steps=20, lbfgs_steps=20)
    x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    for j in range(2):
        W, H, b = net.last_layer(net.lane(trained.models, j), x)
        nc = ufm.collapse(W, H, y, 10)
        assert float(nc.w_norm) == pytest.approx(trained.history.w_norm[-1, j], rel=1e-12)
        assert float(nc.nc1) == pytest.approx(trained.history.nc1[-1, j], rel=1e-10)


def test_train_rejects_steps_that_are_not_multiples_of_every():
    data = net.load_digits_split(2, seed=0)
    models = net.stack([net.make_mlp(0, (4,), 10, 10)])
    with pytest.raises(ValueError, match="every"):
        net.train(models, jnp.asarray(data.x_train), jnp.asarray(data.y_train)[None], net.TrainSpec(
            jnp.zeros(1), jnp.zeros(1), jnp.zeros(1), jnp.zeros(1), jnp.zeros(1), jnp.zeros(1, int)),
            adam_steps=15, lbfgs_steps=0, every=10)


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
        assert theory.phase(10, n, 0.3, 1e-3, 1e-6).c < 1
        norms = theory.norms(10, n, 0.0, 1e-3, 1e-6)
        assert np.isfinite(norms.w) and norms.w > 0
