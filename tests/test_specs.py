"""The loss and method registries (ufm.losses.LOSS_SPECS, ufm.methods.METHOD_SPECS): every property a spec
declares is checked against the function or the optimizer it names, so a new entry that claims the wrong
property fails here. float64 (tests/conftest.py)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import theory
import ufm
from ufm import _cli, policy
from ufm.losses import BRANCHES, LOSS_IDS, LOSS_SPECS, loss_spec
from ufm.methods import METHOD_SPECS, method_spec
from ufm.objective import Weights

#: parameters of each loss away from their defaults (the values every check below uses)
PARAMETERS = {"delta": 0.2, "gamma": 2.0, "mse_kappa": 3.0, "mse_beta": 1.5}
K = 4


def _weights(spec):
    """Weights with this loss's parameters at PARAMETERS (the others at their defaults)."""
    values = {name: PARAMETERS[name] for name in spec.parameters}
    return Weights(0.0, 0.0, 0.0, 0.0)._replace(loss_id=spec.branch, **values)


def _logit_hessians(spec, Z, labels):
    """The Hessians ``(M, K, K)`` of the per-sample loss in the logits at the columns of ``Z (K, M)`` with
    ``labels (M,)`` (jax.hessian, vmapped, float64)."""
    one = lambda z, label: spec(z[:, None], label[None], _weights(spec))[0]
    return np.asarray(jax.jit(jax.vmap(jax.hessian(one), in_axes=(1, 0)))(jnp.asarray(Z), jnp.asarray(labels)))


@pytest.mark.parametrize("name", list(LOSS_SPECS))
def test_a_loss_spec_names_real_parameters_and_its_branch(name):
    spec = LOSS_SPECS[name]
    fields = {f.name for f in dataclasses.fields(ufm.Problem)}
    assert set(spec.parameters) <= fields & set(Weights._fields)
    assert BRANCHES[spec.branch] is spec.function and LOSS_IDS[name] == spec.branch
    assert int(ufm.Problem(K=3, n=2, loss=name).weights().loss_id) == spec.branch
    assert loss_spec(name) is spec and ufm.Problem(K=3, n=2, loss=spec).loss == name  # a spec stands for its name


@pytest.mark.parametrize("name", list(LOSS_SPECS))
def test_convex_in_logits_is_what_the_logit_hessian_says(name):
    """convex_in_logits: the per-sample Hessian in the logits is positive semi-definite at 200 random logit
    vectors (scale 4) for every label; a non-convex loss has a point with a negative eigenvalue among them.
    Eigenvalues of a 4 x 4 float64 matrix err ~1e-15 relative to the largest: -1e-12 of it is rounding."""
    spec = LOSS_SPECS[name]
    rng = np.random.default_rng(0)
    eigenvalues = np.linalg.eigvalsh(_logit_hessians(spec, 4.0 * rng.normal(size=(K, 200)), np.arange(200) % K))
    lowest = np.min(eigenvalues[:, 0] / np.maximum(np.abs(eigenvalues).max(axis=1), 1e-300))
    if spec.convex_in_logits:
        assert lowest >= -1e-12
    else:
        assert lowest < -1e-3  # clearly negative somewhere: the reduction would not be exact


@pytest.mark.parametrize("name", list(LOSS_SPECS))
def test_softmax_losses_ignore_a_common_shift_and_have_the_softmax_hessian(name):
    """softmax: a function of softmax(z), so adding c 1 to the logits changes nothing (to 1e-12 relative);
    hessian "softmax": the logit Hessian is diag(p) - p p^T (label smoothing for any delta), to 1e-12."""
    spec = LOSS_SPECS[name]
    rng = np.random.default_rng(1)
    z, labels = jnp.asarray(rng.normal(size=(K, 6))), jnp.asarray(rng.integers(0, K, 6))
    moved = spec(z + 3.0, labels, _weights(spec))
    same = np.allclose(moved, spec(z, labels, _weights(spec)), rtol=1e-12, atol=0)
    assert same == spec.softmax
    p = np.asarray(jax.nn.softmax(z[:, 0]))
    structured = np.allclose(_logit_hessians(spec, z[:, :1], labels[:1])[0], np.diag(p) - np.outer(p, p), atol=1e-12)
    assert structured == (spec.hessian == "softmax")


@pytest.mark.parametrize("name", list(LOSS_SPECS))
def test_numpy_rows_are_the_jax_loss_in_the_framework_layout(name):
    """Loss.rows (numpy, Z (rows, K)) against the spec's JAX function on Z^T, float64 both, with the log-softmax
    computed in numpy and given, and at moderate and large logits (scale 5 and 40: p_y -> 1 for the focal
    weight's expm1): the same operations but the log-softmax's, so 1e-12 relative (atol 1e-14 for the zeros)."""
    spec = LOSS_SPECS[name]
    rng = np.random.default_rng(3)
    labels = rng.integers(0, K, 30)
    for scale in (5.0, 40.0):
        Z = scale * rng.normal(size=(30, K))
        reference = np.asarray(spec(jnp.asarray(Z.T), jnp.asarray(labels), _weights(spec)))
        ours = spec.rows(Z, labels, **{p: PARAMETERS[p] for p in spec.parameters})
        np.testing.assert_allclose(ours, reference, rtol=1e-12, atol=1e-14)
    # parameters of other losses are not read (ce is label smoothing at delta 0 whatever delta says)
    np.testing.assert_array_equal(spec.rows(Z, labels, **PARAMETERS), ours)


@pytest.mark.parametrize("name", list(LOSS_SPECS))
def test_bias_in_optimum_is_whether_lam_b_moves_the_prediction(name):
    """bias_in_optimum: theory's W norm at lam_b 1e-3 and 1e-1 differs (by more than 1e-9 relative) exactly
    for the losses that claim it (the softmax losses' optimal bias is 0 whatever lam_b)."""
    spec = LOSS_SPECS[name]
    values = {p: PARAMETERS[p] for p in spec.parameters}
    norms = [theory.predict(K, 5, K, lam_W=1e-3, lam_H=1e-3, lam_b=b, loss=name, **values).w_norm for b in (1e-3, 1e-1)]
    assert (abs(norms[0] - norms[1]) > 1e-9 * abs(norms[0])) == spec.bias_in_optimum


def test_ce_is_label_smoothing_at_delta_zero():
    z, labels = jnp.asarray(np.random.default_rng(2).normal(size=(K, 5))), jnp.arange(5) % K
    ce, ls = LOSS_SPECS["ce"], LOSS_SPECS["ls"]
    zero = Weights(0.0, 0.0, 0.0, 0.0)
    np.testing.assert_array_equal(ce(z, labels, zero), ls(z, labels, zero))
    assert ce.branch == ls.branch and ce.parameters == () and ls.parameters == ("delta",)


@pytest.mark.parametrize("name", [n for n, s in METHOD_SPECS.items() if not s.line_search])
def test_the_stability_limit_is_the_edge_on_a_quadratic(name):
    """stability_limit: the method's optax step on f(x) = lam/2 x^2 converges for lr lam just below the limit
    (0.99) and grows just above it (1.01), measured over 20,000 steps (the spectral radius is ~1 -+ 1e-3
    there, so 20,000 steps move |x| by a factor e^(+-10) at least)."""
    spec = METHOD_SPECS[name]
    lam = 0.5

    def run(lr):
        opt = spec.optimizer(lr)
        x, state = jnp.asarray([1.0]), opt.init(jnp.asarray([1.0]))
        for _ in range(4):  # 4 x 5,000 steps in a scan

            def step(carry, _):
                x, state = carry
                updates, state = opt.update(lam * x, state, x)
                return (x + updates, state), None

            (x, state), _ = jax.lax.scan(step, (x, state), None, length=5_000)
        return abs(float(x[0]))

    assert run(0.99 * spec.stability_limit / lam) < 1e-3
    assert not run(1.01 * spec.stability_limit / lam) < 1e3  # grew (or overflowed to inf, nan)


@pytest.mark.parametrize("name", list(METHOD_SPECS))
def test_a_method_spec_is_consistent(name):
    spec = METHOD_SPECS[name]
    assert method_spec(name) is spec and spec.line_search == (spec.default_lr is None)
    assert (spec.stability_limit is None) == spec.line_search and (spec.optimizer is None) == spec.class_means
    assert _cli.max_iters(name) == spec.max_iters and _cli.max_iters(name, 7) == 7
    problem = ufm.Problem(K=3, n=2)
    assert (policy.default_lr(problem, name) is None) == spec.line_search
    with pytest.raises(ValueError, match="method must be one of"):
        method_spec(name.upper())
