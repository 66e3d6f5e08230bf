"""A small real network for the papers' network claims: digits data, an equinox MLP, full-batch training.

Data. scikit-learn's bundled handwritten digits (``sklearn.datasets.load_digits``: 1,797
8x8 images, 10 classes, pixel values 0..16, scaled here to [0, 1]). :func:`load_digits_split`
draws, per class and with a seeded generator, ``n`` training images (a balanced, class-major
training set, as ``ufm.class_major_labels`` orders it) and keeps every other image of that class
as the held-out test split (imbalanced: 174-183 images per class in the data set).

Network. :class:`MLP` is an equinox module: ReLU hidden layers, a *feature layer* of width ``d``
whose output is the last-layer feature ``h_i`` (linear by default, so ``H`` is free in sign as in
Guo et al.'s UFM; ``nonnegative=True`` puts a ReLU on it, as in Nguyen et al.'s penultimate
activations), and a linear classifier ``z = W^T h + b``. :func:`last_layer` returns
``(W: (d, K), H: (d, N), b: (K,))`` in the package's convention (docs/theory.md, Notation and layouts),
i.e. the classifier's ``(K, d)`` weight transposed and the features of the N training images as columns.

Objective (:func:`penalized_loss`), with everything averaged or summed exactly as in Guo et al.'s
simulated-UFM setting (App. B.2, B.6):

    L(theta) = (1/N) sum_i loss(W^T h_i + b, y_i)
               + lam_W/2 ||W||_F^2 + lam_H/2 ||H||_F^2 + lam_b/2 ||b||^2
               + weight_decay/2 ||theta||^2,

``H = [h_1, ..., h_N]`` the features of *all* N training images. Guo et al. write this
objective as their eq. (9)/(10) and (22): the loss term carries 1/N, the feature penalty is
``lam_H/2 ||H||_F^2`` summed over samples (not averaged), and Theorem 4.1's closed forms
(``theory.a_delta``, ``theory.norms``) are stated for that objective. It is term for term the
package's UFM objective ``ufm.objective(Params(W, H, b), labels, Weights(delta, lam_W, lam_H,
lam_b))`` (eq. 10, ``ufm/objective.py``), so the UFM minimizer with the same ``lam_H`` is the
target and no rescaling of lam_H is needed (tested: ``tests/test_experiment_networks.py``).
Guo et al. train with minibatches of 128, where a per-batch penalty ``lam_H/2 ||H_batch||^2``
added to the batch-mean loss equals, in expectation over an epoch, ``(B/N) lam_H/2 ||H||^2`` per
step in the mean-loss scale; full-batch training here removes that ambiguity: ``B = N``.
``weight_decay`` is the default setting of their Fig. 9 (``5e-4`` on every parameter, no feature
penalty); there the theorem does not apply directly (``H`` is penalized only through theta).

Losses (``TrainSpec.loss_id``): 0 = cross entropy against ``(1 - delta) e_k + delta/K 1``
(label smoothing; ``delta = 0`` is CE; Guo eq. 3), 1 = squared error ``||z - e_k||^2`` (Nguyen
et al.'s MSE; the package's rescaled MSE with kappa = beta = 1).

Training (:func:`train`): full batch, Adam (optionally with a step decay) for at most
``adam_steps`` steps and then L-BFGS (optax, zoom line search) for at most ``lbfgs_steps``
iterations, until every lane passes a stopping test (gradient norm or objective decrease);
each segment of ``every`` steps is one
compiled ``lax.scan``; all lanes (a leading axis on the models, labels and specs: several deltas,
noise levels or seeds) run together under ``jax.vmap``. Seeded: the same arguments give
identical arrays.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from typing import NamedTuple, cast

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import ufm
from ufm import _memory

# scikit-learn is part of the optional 'network' extra: missing, it fails this import as equinox does (the
# experiments report the extra); present, sklearn.datasets (0.7 s to import) is imported on first use
if importlib.util.find_spec("sklearn") is None:
    raise ModuleNotFoundError("No module named 'sklearn'", name="sklearn")

#: pixel values of load_digits are integers 0..16
_PIXEL_MAX = 16.0
LOSS_IDS = {"ce": 0, "ls": 0, "mse": 1}
#: hidden-layer activations (``nonnegative`` needs one with values >= 0: relu or softplus)
ACTIVATIONS = {"relu": jax.nn.relu, "softplus": jax.nn.softplus, "gelu": jax.nn.gelu, "tanh": jnp.tanh}


@dataclass(frozen=True)
class DigitsSplit:
    """Balanced training split and held-out test split of the digits.

    Attributes:
        x_train: ``(N, 64)`` float64 in [0, 1], class-major (``n`` images of class 0 first, ...).
        y_train: ``(N,)`` int labels 0..K-1 (``classes[k]`` is the digit of label k).
        x_test, y_test: every remaining image of the chosen classes, ``(N_test, 64)`` and ``(N_test,)``.
        classes: the digits used, in label order. n: images per class in the training split.
        train_index, test_index: rows of ``load_digits().data`` in the two splits.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple
    n: int
    train_index: np.ndarray
    test_index: np.ndarray

    @property
    def K(self) -> int:
        return len(self.classes)


def load_digits_split(n: int, *, classes=None, seed: int = 0) -> DigitsSplit:
    """Seeded split of the digits: ``n`` training images per class (class-major), the rest for testing.

    ``classes``: the digits to keep (default all ten). Raises ``ValueError`` naming ``n``,
    ``classes`` or ``seed`` when they are not usable (``n`` must leave at least one test image
    per class).
    """
    from sklearn.datasets import load_digits

    data = load_digits()
    classes = tuple(range(10)) if classes is None else tuple(classes)
    if (
        len(classes) < 2
        or len(set(classes)) != len(classes)
        or any(not isinstance(c, (int, np.integer)) or isinstance(c, bool) or not 0 <= c <= 9 for c in classes)
    ):
        raise ValueError(f"classes must be at least two distinct digits 0..9, got {classes!r}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    smallest = min(int(np.sum(data.target == c)) for c in classes)
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or not 1 <= n < smallest:
        raise ValueError(
            f"n must be an integer in [1, {smallest - 1}] (the smallest chosen class has "
            f"{smallest} images and one is kept for testing), got {n!r}"
        )
    rng = np.random.default_rng(seed)
    train_parts, test_parts, y_test = [], [], []
    for label, digit in enumerate(classes):
        order = rng.permutation(np.flatnonzero(data.target == digit))
        train_parts.append(order[:n])
        test_parts.append(order[n:])
        y_test.append(np.full(len(order) - n, label))
    x = np.asarray(data.data, dtype=np.float64) / _PIXEL_MAX
    train, test = np.concatenate(train_parts), np.concatenate(test_parts)
    return DigitsSplit(
        x[train], np.repeat(np.arange(len(classes)), n), x[test], np.concatenate(y_test), classes, int(n), train, test
    )


class MLP(eqx.Module):
    """ReLU MLP ``64 -> widths -> d`` (feature layer) ``-> K`` (classifier); see the module docstring."""

    hidden: tuple
    feature: eqx.nn.Linear
    classifier: eqx.nn.Linear
    nonnegative: bool = eqx.field(static=True)
    activation: str = eqx.field(static=True, default="relu")

    def features(self, x):
        """Last-layer features of a batch ``x: (B, 64)``, shape ``(B, d)``."""
        act = ACTIVATIONS[self.activation]
        for layer in self.hidden:
            x = act(x @ layer.weight.T + layer.bias)
        h = x @ self.feature.weight.T + self.feature.bias
        return act(h) if self.nonnegative else h

    def logits_of(self, h):
        """Logits ``(B, K)`` of features ``h: (B, d)``."""
        return h @ self.classifier.weight.T + self.classifier.bias


def make_mlp(
    seed: int, widths, d: int, K: int, *, inputs: int = 64, nonnegative: bool = False, activation: str = "relu"
) -> MLP:
    """Seeded :class:`MLP` (equinox's default uniform initialisation, float64 when x64 is on)."""
    widths = tuple(int(w) for w in widths)
    if any(w < 1 for w in widths) or d < 1 or K < 2:
        raise ValueError(f"widths and d must be positive and K >= 2, got widths={widths}, d={d}, K={K}")
    if activation not in ACTIVATIONS or (nonnegative and activation not in ("relu", "softplus")):
        raise ValueError(
            f"activation must be one of {sorted(ACTIVATIONS)} (relu or softplus with "
            f"nonnegative=True), got {activation!r}"
        )
    key = jax.random.PRNGKey(int(seed))  # eagerly: any seed JAX takes, with or without x64
    return _build_mlp(key, widths, int(d), int(K), int(inputs), bool(nonnegative), str(activation))


@eqx.filter_jit
def _build_mlp(key, widths: tuple, d: int, K: int, inputs: int, nonnegative: bool, activation: str) -> MLP:
    """:func:`make_mlp` after validation, compiled: one program per architecture for every seed (the key
    is traced). Built eagerly, equinox's initialisers would compile two small programs per layer shape;
    the arrays are the same to the last bit (tested)."""
    keys = jax.random.split(key, len(widths) + 2)
    sizes = (inputs,) + widths
    hidden = tuple(eqx.nn.Linear(a, b, key=k) for a, b, k in zip(sizes[:-1], sizes[1:], keys[:-2], strict=True))
    return MLP(
        hidden, eqx.nn.Linear(sizes[-1], d, key=keys[-2]), eqx.nn.Linear(d, K, key=keys[-1]), nonnegative, activation
    )


def stack(models):
    """Stack models of one architecture along a new leading lane axis (for :func:`train`)."""
    arrays = [eqx.filter(m, eqx.is_array) for m in models]
    stacked = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *arrays)
    return eqx.combine(stacked, eqx.filter(models[0], eqx.is_array, inverse=True))


def lane(models, j: int):
    """Model ``j`` of a stacked model."""
    arrays, static = eqx.partition(models, eqx.is_array)
    return eqx.combine(jax.tree_util.tree_map(lambda x: x[j], arrays), static)


class TrainSpec(NamedTuple):
    """Traced scalars of :func:`penalized_loss` (one per lane under vmap); see the module docstring."""

    delta: jnp.ndarray | float = 0.0
    lam_W: jnp.ndarray | float = 0.0
    lam_H: jnp.ndarray | float = 0.0
    lam_b: jnp.ndarray | float = 0.0
    weight_decay: jnp.ndarray | float = 0.0
    loss_id: jnp.ndarray | int = 0


@eqx.filter_jit
def last_layer(model: MLP, x):
    """``(W: (d, K), H: (d, N), b: (K,))`` of the network on ``x: (N, 64)`` in the UFM convention.
    Compiled (like :func:`penalized_loss`): called eagerly, each operation would compile on its own."""
    return model.classifier.weight.T, model.features(x).T, model.classifier.bias


def _per_sample(z, labels, spec: TrainSpec):
    """Per-sample loss of logits ``z: (N, K)`` (own implementation; compared with ``ufm.losses`` in tests)."""
    K = z.shape[1]
    onehot = jax.nn.one_hot(labels, K, dtype=z.dtype)
    smoothed = (1.0 - spec.delta) * onehot + spec.delta / K
    cross_entropy = -jnp.sum(smoothed * jax.nn.log_softmax(z, axis=1), axis=1)
    squared = jnp.sum((z - onehot) ** 2, axis=1)
    return jnp.where(spec.loss_id == 1, squared, cross_entropy)


def _sum_squares(tree) -> jnp.ndarray:
    total = jnp.zeros(())
    for leaf in jax.tree_util.tree_leaves(eqx.filter(tree, eqx.is_array)):
        total = total + jnp.sum(leaf**2)
    return total


@eqx.filter_jit
def penalized_loss(model: MLP, x, labels, spec: TrainSpec):
    """The training objective L(theta) of the module docstring (a scalar)."""
    h = model.features(x)
    z = model.logits_of(h)
    W, b = model.classifier.weight, cast(jnp.ndarray, model.classifier.bias)
    return (
        jnp.mean(_per_sample(z, labels, spec))
        + 0.5 * spec.lam_W * jnp.sum(W**2)
        + 0.5 * spec.lam_H * jnp.sum(h**2)
        + 0.5 * spec.lam_b * jnp.sum(b**2)
        + 0.5 * spec.weight_decay * _sum_squares(model)
    )


class Record(NamedTuple):
    """What :func:`train` records per lane at each checkpoint (arrays ``(checkpoints, lanes)``)."""

    step: np.ndarray
    objective: np.ndarray
    grad_norm: np.ndarray
    train_error: np.ndarray
    nc1: np.ndarray
    nc2: np.ndarray
    nc3: np.ndarray
    w_norm: np.ndarray
    h_norm: np.ndarray


@dataclass(frozen=True)
class Trained:
    """Result of :func:`train`: the stacked final models, the history, and per-lane status.

    ``status[j]`` is ``"converged"`` when lane j met a stopping test at the end (``reason[j]``:
    ``"gradient"``, its gradient norm is at most ``gtol``; ``"objective"``, its objective fell by
    at most ``ftol * max(|L|, 1)`` per step over the last segment, the test of L-BFGS-B's
    ``factr``), ``"max_steps"`` when the budget ran out first, ``"non-finite"`` when the objective
    or gradient is not finite (the iterate is then the last finite one).
    """

    models: MLP
    history: Record
    status: tuple
    reason: tuple
    steps: int


def _measure(model, x, labels, spec, K):
    value, grads = eqx.filter_value_and_grad(penalized_loss)(model, x, labels, spec)
    W, H, b = last_layer(model, x)
    nc = ufm.collapse(W, H, labels, K)
    error = jnp.mean(jnp.argmax(H.T @ W + b, axis=1) != labels)
    return value, optax.tree.norm(grads), error, nc


def _guarded(new, old, ok):
    """Per-lane: keep ``old`` where the new iterate is not finite."""
    return jax.tree_util.tree_map(lambda a, b: jnp.where(ok, a, b), new, old)


def _reasons(records, every: int, gtol: float, ftol: float) -> np.ndarray:
    """Per lane: "gradient", "objective" or "" (no stopping test met) at the last record."""
    grad = records[-1][2]
    if len(records) < 2:
        return np.where(grad <= gtol, "gradient", "")
    before, after = records[-2][1], records[-1][1]
    flat = np.abs(before - after) <= ftol * every * np.maximum(np.maximum(np.abs(before), np.abs(after)), 1.0)
    flat &= ftol > 0
    return np.where(grad <= gtol, "gradient", np.where(flat, "objective", ""))


def train(
    models: MLP,
    x,
    labels,
    specs: TrainSpec,
    *,
    adam_steps: int,
    lbfgs_steps: int,
    every: int,
    adam_lr: float = 1e-3,
    decay_every: int | None = None,
    gtol: float = 1e-10,
    ftol: float = 0.0,
    stop_early: bool = True,
    memory: int = 20,
    stop=None,
) -> Trained:
    """Full-batch training of L lanes at once (see the module docstring).

    Args:
        models: stacked :class:`MLP` (every array leaf has a leading axis L; :func:`stack`).
        x: ``(N, 64)`` training inputs (shared by all lanes); labels: ``(L, N)`` int.
        specs: :class:`TrainSpec` of ``(L,)`` arrays.
        adam_steps, lbfgs_steps: step budgets (multiples of ``every``), Adam first.
        every: steps per compiled segment and between two records.
        adam_lr: Adam's step, multiplied by 0.1 every ``decay_every`` steps (None: constant).
        gtol, ftol: stopping tests (see :class:`Trained`; ``ftol = 0`` switches the objective test
            off); training ends once every lane meets one, checked after each segment of the last
            phase that has steps (L-BFGS, or Adam when ``lbfgs_steps = 0``); with ``stop_early=False``
            the whole budget runs and the tests only set the final status.
        stop: optional callable ``(step, Record-so-far) -> bool`` to end early (checked per segment).
    """
    labels = jnp.asarray(labels)
    L, N = labels.shape
    K = models.classifier.weight.shape[1]
    if every < 1 or adam_steps % every or lbfgs_steps % every or adam_steps < 0 or lbfgs_steps < 0:
        raise ValueError(
            f"adam_steps ({adam_steps}) and lbfgs_steps ({lbfgs_steps}) must be non-negative "
            f"multiples of every ({every})"
        )
    arrays, static = eqx.partition(models, eqx.is_array)
    n_params = sum(leaf.size for leaf in jax.tree_util.tree_leaves(arrays)) // L
    widest = max([layer.weight.shape[1] for layer in models.hidden] + [K])
    itemsize = jnp.asarray(x).dtype.itemsize
    _memory.require(
        itemsize * L * ((2 * memory + 12) * n_params + 6 * N * widest),
        "network training",
        f"{L} lanes x {n_params} parameters, N = {N}",
        "use fewer lanes or a narrower network",
    )

    def loss_of(params, lab, spec):
        return penalized_loss(eqx.combine(params, static), x, lab, spec)

    def measure(params, lab, spec):
        return _measure(eqx.combine(params, static), x, lab, spec, K)

    schedule = adam_lr if decay_every is None else optax.exponential_decay(adam_lr, decay_every, 0.1, staircase=True)
    adam = optax.adam(schedule)
    lbfgs = optax.lbfgs(memory_size=memory)

    def adam_segment(params, state, lab, spec):
        def step(carry, _):
            p, s = carry
            value, grads = jax.value_and_grad(loss_of)(p, lab, spec)
            updates, s2 = adam.update(grads, s, p)
            p2 = optax.apply_updates(p, updates)
            ok = jnp.isfinite(value) & jnp.isfinite(optax.tree.norm(grads))
            return (_guarded(p2, p, ok), _guarded(s2, s, ok)), None

        (params, state), _ = jax.lax.scan(step, (params, state), None, length=every)
        return params, state, measure(params, lab, spec)

    def lbfgs_segment(params, state, lab, spec):
        def f(p):
            return loss_of(p, lab, spec)

        value_and_grad = optax.value_and_grad_from_state(f)

        def step(carry, _):
            p, s = carry
            value, grads = value_and_grad(p, state=s)
            updates, s2 = lbfgs.update(grads, s, p, value=value, grad=grads, value_fn=f)
            p2 = optax.apply_updates(p, updates)
            ok = jnp.isfinite(optax.tree.norm(updates)) & (optax.tree.norm(grads) > 0)
            return (_guarded(p2, p, ok), _guarded(s2, s, ok)), None

        (params, state), _ = jax.lax.scan(step, (params, state), None, length=every)
        return params, state, measure(params, lab, spec)

    params = arrays
    records, step = [], 0

    def add(step_, measured, last_phase=False):
        value, grad_norm, error, nc = measured
        records.append(
            (step_, np.asarray(value), np.asarray(grad_norm), np.asarray(error)) + tuple(np.asarray(v) for v in nc)
        )
        done = stop_early and last_phase and np.all(_reasons(records, every, gtol, ftol) != "")
        return done or (stop is not None and stop(step_, _history(records)))

    add(0, jax.jit(jax.vmap(measure))(params, labels, specs))
    done = False
    phases = ((adam_segment, adam.init, adam_steps, lbfgs_steps == 0), (lbfgs_segment, lbfgs.init, lbfgs_steps, True))
    for segment, init, steps, last_phase in phases:
        if done or steps == 0:
            continue
        # the optimiser's state in one program (eagerly, each zero-filled leaf would compile on its own)
        run_segment, state = jax.jit(jax.vmap(segment)), jax.jit(functools.partial(_initial_state, init))(params)
        for _ in range(steps // every):
            params, state, measured = run_segment(params, state, labels, specs)
            step += every
            if add(step, measured, last_phase):
                done = True
                break
    history = _history(records)
    reason = _reasons(records, every, gtol, ftol)
    finite = np.isfinite(history.objective[-1]) & np.isfinite(history.grad_norm[-1])
    status = tuple(
        "non-finite" if not ok else "converged" if r else "max_steps" for ok, r in zip(finite, reason, strict=True)
    )
    return Trained(
        eqx.combine(params, static),
        history,
        status,
        tuple(r if ok else "" for ok, r in zip(finite, reason, strict=True)),
        step,
    )


def _initial_state(init, params):
    """The optimiser state ``init`` gives every lane of ``params``, strongly typed (:func:`_strongly_typed`)."""
    return _strongly_typed(jax.vmap(init)(params))


def _strongly_typed(tree):
    """The same arrays without JAX's weak types (also under ``jit``: the outputs are then strongly typed).
    optax's L-BFGS starts some fields of its state weakly typed and returns them strongly typed, so the
    second segment would otherwise compile again."""
    return jax.tree_util.tree_map(lambda a: jnp.array(a, dtype=a.dtype), tree)


def _history(records) -> Record:
    return Record(
        np.array([r[0] for r in records]), *(np.stack([r[i] for r in records]) for i in range(1, len(Record._fields)))
    )


def digits_per_class_counts(labels, K: int) -> np.ndarray:
    """Images per label (used to state the test split's imbalance)."""
    return np.bincount(np.asarray(labels), minlength=K)


def last_change(history: Record, j: int) -> float:
    """Lane j's objective change per step over the last segment, relative to ``max(|L|, 1)`` (the ftol test)."""
    if len(history.step) < 2:
        return float("nan")
    before, after = history.objective[-2, j], history.objective[-1, j]
    per_step = abs(before - after) / (history.step[-1] - history.step[-2])
    return float(per_step / max(abs(before), abs(after), 1.0))


def rel_error(measured, predicted) -> float:
    """``|measured - predicted| / |predicted|`` (absolute when the prediction is 0)."""
    return float(abs(measured - predicted) / abs(predicted)) if predicted != 0 else float(abs(measured))


__all__ = [
    "DigitsSplit",
    "LOSS_IDS",
    "MLP",
    "Record",
    "TrainSpec",
    "Trained",
    "digits_per_class_counts",
    "last_change",
    "last_layer",
    "lane",
    "load_digits_split",
    "make_mlp",
    "penalized_loss",
    "rel_error",
    "stack",
    "train",
]
