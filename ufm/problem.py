"""The frozen problem specification shared by the solver, the CLI and the experiments."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from theory import validation
from ufm import _memory
from ufm._compile import stored_jit
from ufm.losses import Loss, loss_spec
from ufm.objective import Params, Weights, class_major_labels

DTYPES = ("float64", "float32")


#: Largest seed: ``jax.random.key`` holds a signed 64-bit integer (without 64-bit JAX, only seeds
#: below 2**32 give distinct keys; :func:`check_seed` refuses the others there).
MAX_SEED = 2**63 - 1
#: Most numbers W and H together may hold: arrays are indexed with signed 64-bit integers
#: (a problem anywhere near this is refused by the memory estimate of the solver first).
MAX_ENTRIES = 2**62


@dataclass(frozen=True)
class Problem:
    """One UFM instance: ``min L(W, H, b)`` (Guo et al., eq. 10).

    Attributes:
        K: classes (>= 2). n: samples per class (>= 1). d: feature dimension
            (>= 1; defaults to K; Theorem 4.1 needs d >= K, the solver does not).
        class_sizes: ``None`` (balanced: n samples in every class, today's problem bit for bit) or
            K integers ``(n_1, ..., n_K)``, each >= 1: class k has ``n_k`` samples, still in class-major
            order, ``N = sum_k n_k``. Then ``n`` is the *largest* class size (the majority size of
            the usual "K_A classes of n, K_B classes of n/R" setting): omit it, or give exactly
            ``max(class_sizes)``. Equal sizes give the same labels as ``class_sizes=None``.
            Only the full N-sample problem changes: the closed forms of :mod:`theory` assume balance.
        delta: label smoothing, 0 <= delta < 1 (0 is cross entropy); only with ``loss="ls"``.
        lam_W, lam_H: regularization of W and H (> 0). lam_b: of b (>= 0).
        loss: per-sample loss (:mod:`ufm.losses`): ``"ls"`` (cross entropy with smoothed labels),
            ``"ce"`` (the same with delta = 0; a non-zero delta is rejected), ``"focal"``
            (Zhou et al. eq. 4) or ``"mse"`` (rescaled MSE, eq. 6).
        gamma: focal parameter (>= 0; only with ``loss="focal"``).
        mse_kappa, mse_beta: rescaled-MSE parameters (> 0; used by ``loss="mse"`` only).
        nonnegative: constrain ``H >= 0`` (projected gradient in the solver; needs d >= K).
        label_noise: fraction eta in [0, 1) of labels replaced by a different class
            (``round(eta N)`` samples, uniformly among the other K - 1 classes; seeded by ``noise_seed``).
        noise_seed: seed of the corruption (>= 0).
        seed: seed of the random initialisation (>= 0).
        dtype: ``"float64"`` (verification; needs ``jax_enable_x64``) or ``"float32"``.
        init_scale: standard deviation of the Gaussian initial W and H (> 0); b starts at 0.

    Shapes: ``W: (d, K)``, ``H: (d, N)`` with ``N = n K`` in class-major order, ``b: (K,)``.
    """

    K: int
    # n and d may be given as None (derived from class_sizes / K); __post_init__ always replaces that by an
    # int, so every reader sees an int: a dataclass cannot type its constructor argument and its attribute
    # differently, hence the ignores
    n: int = None  # type: ignore[assignment]
    d: int = None  # type: ignore[assignment]
    delta: float = 0.0
    lam_W: float = 5e-4
    lam_H: float = 5e-4
    lam_b: float = 5e-4
    loss: str = "ls"
    seed: int = 0
    dtype: str = "float64"
    init_scale: float = 0.1
    gamma: float = 0.0
    mse_kappa: float = 1.0
    mse_beta: float = 1.0
    nonnegative: bool = False
    label_noise: float = 0.0
    noise_seed: int = 0
    class_sizes: tuple[int, ...] | None = None

    def __post_init__(self):
        set_ = lambda name, value: object.__setattr__(self, name, value)
        set_("K", validation.integer("K", self.K, 2))
        set_("class_sizes", _class_sizes(self.class_sizes, self.K))
        set_("n", _samples_per_class(self.n, self.class_sizes))
        set_("d", self.K if self.d is None else validation.integer("d", self.d, 1))
        set_("delta", validation.interval("delta", self.delta, 0.0, 1.0, low_open=False))
        set_("lam_W", validation.interval("lam_W", self.lam_W, 0.0, None, low_open=True))
        set_("lam_H", validation.interval("lam_H", self.lam_H, 0.0, None, low_open=True))
        set_("lam_b", validation.interval("lam_b", self.lam_b, 0.0, None, low_open=False))
        set_("init_scale", validation.interval("init_scale", self.init_scale, 0.0, None, low_open=True))
        set_("seed", validation.integer("seed", self.seed, 0, MAX_SEED))
        spec = loss_spec(self.loss)  # ValueError naming loss and the choices; a Loss stands for its name
        set_("loss", spec.name)
        set_("gamma", validation.interval("gamma", self.gamma, 0.0, None, low_open=False))
        set_("mse_kappa", validation.interval("mse_kappa", self.mse_kappa, 0.0, None, low_open=True))
        set_("mse_beta", validation.interval("mse_beta", self.mse_beta, 0.0, None, low_open=True))
        set_("label_noise", validation.interval("label_noise", self.label_noise, 0.0, 1.0, low_open=False))
        set_("noise_seed", validation.integer("noise_seed", self.noise_seed, 0))
        if self.delta != 0.0 and "delta" not in spec.parameters:
            raise ValueError(
                f"delta must be 0 for loss={self.loss!r} (label smoothing is loss='ls'), got {self.delta!r}"
            )
        if self.gamma != 0.0 and "gamma" not in spec.parameters:
            raise ValueError(
                f"gamma must be 0 for loss={self.loss!r} (it is the focal-loss parameter), got {self.gamma!r}"
            )
        if not isinstance(self.nonnegative, (bool, np.bool_)):
            raise ValueError(f"nonnegative must be True or False, got {self.nonnegative!r}")
        set_("nonnegative", bool(self.nonnegative))
        if self.nonnegative and self.d < self.K:
            raise ValueError(
                f"nonnegative=True needs d >= K = {self.K} (K orthogonal non-negative class means), got d = {self.d}"
            )
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        tiny = float(np.finfo(self.dtype).tiny)  # a smaller lam rounds to 0 or a subnormal in the solver's dtype
        for name in ("lam_W", "lam_H", "lam_b"):
            if 0.0 < getattr(self, name) < tiny:
                raise ValueError(
                    f"{name} = {getattr(self, name)!r} is below the smallest normal {self.dtype} number {tiny:.4g}: "
                    f"the solver would use 0 or a subnormal for it, another objective than the one asked for (for "
                    f"lam_W or lam_H one without a minimizer); use {name} >= {tiny:.4g}"
                    + (" or 0" if name == "lam_b" else "")
                    + (" or float64" if self.dtype == "float32" else "")
                )
        _check_start_scale(self)

    @property
    def loss_spec(self) -> Loss:
        """The :class:`~ufm.losses.Loss` specification of ``loss`` (its properties: convexity, closed form, ...)."""
        return loss_spec(self.loss)

    @property
    def N(self) -> int:
        """Total number of samples: ``n K``, or ``sum(class_sizes)``."""
        return self.n * self.K if self.class_sizes is None else sum(self.class_sizes)

    @property
    def sizes(self) -> tuple[int, ...]:
        """The K class sizes ``(n_1, ..., n_K)`` (``(n,) * K`` when balanced)."""
        return (self.n,) * self.K if self.class_sizes is None else self.class_sizes

    @property
    def balanced(self) -> bool:
        """Every class has the same number of samples."""
        return len(set(self.sizes)) == 1

    @property
    def jnp_dtype(self):
        return jnp.float64 if self.dtype == "float64" else jnp.float32

    def true_labels(self) -> jnp.ndarray:
        """Class-major labels ``(N,)`` before any corruption: ``n_k`` copies of class k, k = 0..K-1."""
        if self.balanced:
            return class_major_labels(self.K, self.n)
        return jnp.repeat(jnp.arange(self.K), np.asarray(self.sizes), total_repeat_length=self.N)

    def corrupted(self) -> np.ndarray:
        """Boolean mask ``(N,)`` of the ``round(label_noise N)`` corrupted samples (seeded by ``noise_seed``)."""
        count = int(round(self.label_noise * self.N))
        mask = np.zeros(self.N, dtype=bool)
        mask[np.random.default_rng([self.noise_seed, 0]).choice(self.N, size=count, replace=False)] = True
        return mask

    def labels(self) -> jnp.ndarray:
        """The observed labels ``(N,)`` the objective sees: class-major, with the corrupted
        samples moved to a uniformly drawn *different* class (:meth:`corrupted`)."""
        clean = self.true_labels()
        if self.label_noise == 0.0:
            return clean
        mask = self.corrupted()
        # an independent stream for the new classes: 1..K-1 added modulo K, never the true class
        offsets = np.random.default_rng([self.noise_seed, 1]).integers(1, self.K, size=self.N)
        noisy = np.where(mask, (np.asarray(clean) + offsets) % self.K, np.asarray(clean))
        return jax.device_put(noisy.astype(clean.dtype))

    def weights(self) -> Weights:
        """The traced scalars (delta, lambdas, loss id and loss parameters) in the problem's dtype."""
        dt = self.jnp_dtype
        values = (
            self.delta,
            self.lam_W,
            self.lam_H,
            self.lam_b,
            self.loss_spec.branch,
            self.gamma,
            self.mse_kappa,
            self.mse_beta,
        )
        return Weights(*(jax.device_put(np.asarray(x, dtype=dt)) for x in values))  # no program per scalar

    def init(self) -> Params:
        """Seeded Gaussian initialisation: ``W, H ~ N(0, init_scale^2)``, ``b = 0``
        (``|H|`` when ``nonnegative``, so the start is feasible)."""
        require_dtype_enabled(self.dtype)
        check_seed(self.seed)
        _memory.require(
            _memory.init_bytes(self.K, self.N, self.d, np.dtype(self.dtype).itemsize),
            "the initial parameters (W, H, b)",
            f"K = {self.K}, n = {self.n}, d = {self.d} (N = n K = {self.N}), {self.dtype}",
            lambda: (
                "reduce n, K or d"
                + (
                    f", or use dtype='float32' (about {_memory.gib(half)})"
                    if self.dtype != "float32" and _memory.fits(half := _memory.init_bytes(self.K, self.N, self.d, 4))
                    else ""
                )
            ),
        )
        params = _initial_params_bucketed(self.seed, self.init_scale, self.d, self.K, self.N, self.jnp_dtype)
        return params._replace(H=jnp.abs(params.H)) if self.nonnegative else params


def _class_sizes(value, K: int) -> tuple[int, ...] | None:
    """``class_sizes`` validated: None, or K integers >= 1 (numpy integers and integral floats accepted)."""
    if value is None:
        return None
    what = f"class_sizes must be None or a sequence of K = {K} integers >= 1"
    if isinstance(value, (str, bytes, numbers.Number, np.bool_)) or not hasattr(value, "__len__"):
        raise ValueError(f"{what}, got {value!r}")
    entries = list(np.asarray(value, dtype=object).ravel()) if isinstance(value, np.ndarray) else list(value)
    if isinstance(value, np.ndarray) and value.ndim != 1:
        raise ValueError(f"{what}, got an array of shape {value.shape}")
    if len(entries) != K:
        raise ValueError(f"class_sizes must have K = {K} entries (one size per class), got {len(entries)}")
    return tuple(validation.integer(f"class_sizes[{k}]", size, 1) for k, size in enumerate(entries))


def _samples_per_class(n, class_sizes) -> int:
    """``n``: required (>= 1) when balanced; with ``class_sizes`` omitted or ``max(class_sizes)``."""
    if class_sizes is None:
        return validation.integer("n", n, 1)
    largest = max(class_sizes)
    if n is not None and validation.integer("n", n, 1) != largest:
        raise ValueError(
            f"n must be omitted or equal the largest class size max(class_sizes) = {largest} when "
            f"class_sizes is given, got {n!r}"
        )
    return largest


def initial_params(seed, scale, d: int, K: int, N: int, dtype) -> Params:
    """``W: (d, K)``, ``H: (d, N)`` ~ ``N(0, scale^2)`` from ``jax.random.key(seed)``, ``b = 0``.

    ``seed`` and ``scale`` may be traced, so ``jax.vmap`` over them gives the same
    arrays as :meth:`Problem.init` of each configuration (used by :mod:`ufm.sweep`).
    """
    key_W, key_H = jax.random.split(jax.random.key(seed))
    return Params(
        scale * jax.random.normal(key_W, (d, K), dtype=dtype),
        scale * jax.random.normal(key_H, (d, N), dtype=dtype),
        jnp.zeros((K,), dtype=dtype),
    )


#: :func:`initial_params` as one compiled program for exactly these shapes (the ~10 small programs of
#: the eager random calls as one); what :meth:`Problem.init` runs when threefry is not partitionable
_initial_params_compiled = jax.jit(initial_params, static_argnums=(2, 3, 4, 5))

#: below this many entries an array's random numbers are drawn in a power-of-two batch (at most twice
#: the entries); above it in a multiple of an eighth of the next power of two (at most 1.25 times)
_POWER_OF_TWO_UP_TO = 2**16
_FEWEST_DRAWN = 256


def _sample_count(entries: int) -> int:
    """How many normal numbers :meth:`Problem.init` draws for an array of ``entries`` numbers.

    The compiled sampler depends on this count only, so the few counts below (256, 512, ...,
    2**16, then four per doubling) serve every shape: the suite's ~50 problem shapes need ~10
    sampler programs (0.5 s of compilation each on 2 CPU cores) instead of ~50.
    """
    if entries <= _POWER_OF_TWO_UP_TO:
        return max(_FEWEST_DRAWN, 1 << (entries - 1).bit_length())
    step = 1 << ((entries - 1).bit_length() - 3)
    return -(-entries // step) * step


def _draw_counts(d: int, K: int, N: int) -> tuple[int, int]:
    """How many numbers the seeded start draws for W and for H (:func:`_sample_count` of ``d K`` and ``d N``).

    When the larger of the two counts is a power-of-two batch (at most ``2**16`` numbers, about 2 ms to draw
    on a CPU core), both draws take it: the two draws are then one sampler program (``which`` is an argument),
    one program fewer to compile on a cold start and to read from the store on a warm one (15 to 30 ms,
    docs/performance.md, "Start-up"), for the same numbers (a prefix of a longer draw, bit for bit)."""
    count_W, count_H = _sample_count(d * K), _sample_count(d * N)
    shared = max(count_W, count_H)
    if shared <= _POWER_OF_TWO_UP_TO:
        return shared, shared
    return count_W, count_H


@stored_jit(static_argnames=("count", "dtype"))
def _scaled_normals(seed, which, scale, count: int, dtype):
    """``scale * normal(split(key(seed))[which], (count,))``: :func:`initial_params`' draw for W
    (``which = 0``) or H (``which = 1``) as a flat batch of ``count`` numbers."""
    key = jax.random.split(jax.random.key(seed))[which]
    return scale * jax.random.normal(key, (count,), dtype=dtype)


@partial(jax.jit, static_argnums=1)
def _leading_compiled(flat, shape: tuple[int, ...]):
    return flat[: math.prod(shape)].reshape(shape)


def _leading(flat, shape: tuple[int, ...]):
    """The first ``prod(shape)`` entries of ``flat`` in row-major ``shape``: through host memory on a CPU
    (a view and one copy, no program compiled per shape), as a small compiled program on an accelerator
    (no round trip to the host)."""
    if all(device.platform == "cpu" for device in flat.devices()):
        return jax.device_put(np.asarray(flat)[: math.prod(shape)].reshape(shape))  # no program: a copy
    return _leading_compiled(flat, shape)


def _initial_params_bucketed(seed, scale, d: int, K: int, N: int, dtype) -> Params:
    """:func:`initial_params`, bit for bit, from samplers compiled per batch size (:func:`_draw_counts`), not per shape.

    With JAX's partitionable threefry (its default since 0.5) the i-th number of
    ``normal(key, shape)`` depends on ``key`` and the row-major index ``i`` alone, so it is the i-th
    number of a longer flat draw (checked bit for bit in tests/test_problem.py). Without it the numbers
    depend on the shape, and the exact-shape program runs instead.
    """
    if not jax.config.jax_threefry_partitionable:  # type: ignore[attr-defined]
        return _initial_params_compiled(seed, scale, d, K, N, dtype)
    count_W, count_H = _draw_counts(d, K, N)
    W = _leading(_scaled_normals(seed, 0, scale, count_W, dtype), (d, K))
    H = _leading(_scaled_normals(seed, 1, scale, count_H, dtype), (d, N))
    return Params(W, H, jax.device_put(np.zeros(K, dtype=dtype)))  # from numpy: no program per K for the zeros


def require_dtype_enabled(dtype: str) -> None:
    """Fail loudly instead of silently computing in float32 when x64 is off."""
    # jax.config's flags are dynamic attributes, absent from its type stubs
    if dtype == "float64" and not jax.config.jax_enable_x64:  # type: ignore[attr-defined]
        raise ValueError(
            "dtype='float64' needs 64-bit JAX: call jax.config.update('jax_enable_x64', True) "
            "before solving (the CLI does), or use dtype='float32'"
        )


def check_seed(seed: int) -> None:
    """Without 64-bit JAX a key holds 32 bits: seeds from 2**32 on would repeat smaller ones."""
    # jax.config's flags are dynamic attributes, absent from its type stubs
    if seed >= 2**32 and not jax.config.jax_enable_x64:  # type: ignore[attr-defined]
        raise ValueError(
            f"seed must be < 2**32 = {2**32} without 64-bit JAX (a larger one repeats the key of "
            f"seed mod 2**32), got {seed}; call jax.config.update('jax_enable_x64', True) for seeds "
            f"up to {MAX_SEED}"
        )


def _round_down(x: float) -> str:
    """``x`` to 3 significant digits, never rounded up (an advised largest value must itself pass)."""
    text = f"{x:.2e}"
    return text if float(text) <= x else f"{float(text) - 10.0 ** (math.floor(math.log10(x)) - 2):.2e}"


def _log10(x: float) -> float:
    return math.log10(x) if x > 0 else -math.inf


def _check_start_scale(p: Problem) -> None:
    """Refuse a problem whose objective or gradient overflows at the seeded start (so that no solve
    begins from inf or nan), naming the parameter and the largest value that fits.

    Typical sizes at the start, from the initialisation (``W, H ~ N(0, s^2)``, ``b = 0``):
    ``||W0||^2 ~ s^2 d K``, ``||H0||^2 ~ s^2 d N``, logits ``|z| ~ s^2 sqrt(d)`` (a few times that at most),
    so ``L(x0) ~ lam_W/2 ||W0||^2 + lam_H/2 ||H0||^2 + loss`` and ``||grad L(x0)||^2 ~ lam_W^2 ||W0||^2 +
    lam_H^2 ||H0||^2 + ||grad loss||^2``; MSE adds ``kappa (beta + |z|)^2`` to the loss and
    ``(2 kappa (beta + |z|))^2 / K`` (the bias) to the squared gradient. Each term must stay 10x below
    the largest number of the dtype (the factor covers the spread of the random start); a problem
    closer than that is still caught by the solver, which reports status ``"nonfinite"``.
    """
    if p.d * p.K * (p.n + 1) > MAX_ENTRIES:
        entries = validation.show(p.d * p.K * (p.n + 1))
        raise ValueError(
            f"K, n, d too large: W and H would hold d K (n + 1) = {entries} "
            f"numbers, more than {MAX_ENTRIES:.3g} (the 64-bit index range); reduce K, n or d"
        )
    limit = math.log10(float(np.finfo(p.dtype).max)) - 1.0
    log_s = _log10(p.init_scale)
    log_W = log_s + 0.5 * math.log10(p.d * p.K)  # log10 ||W0||
    log_H = log_s + 0.5 * math.log10(p.d) + 0.5 * math.log10(p.K) + 0.5 * math.log10(p.n)
    log_z = 2 * log_s + 0.5 * math.log10(p.d) + math.log10(4.0)  # a large logit at the start
    terms = [  # (log10 of the term, what it is, parameter, log10 of that parameter's largest fitting value)
        (2 * log_W, "||W0||^2", "init_scale", log_s + (limit - 2 * log_W) / 2),
        (2 * log_H, "||H0||^2", "init_scale", log_s + (limit - 2 * log_H) / 2),
        (2 * (_log10(p.lam_W) + log_W), "lam_W^2 ||W0||^2 (in |grad L(x0)|^2)", "lam_W", limit / 2 - log_W),
        (2 * (_log10(p.lam_H) + log_H), "lam_H^2 ||H0||^2 (in |grad L(x0)|^2)", "lam_H", limit / 2 - log_H),
        (
            2 * log_z + math.log10(p.K),
            "the squared logits",
            "init_scale",
            log_s + (limit - math.log10(p.K) - 2 * log_z) / 4,
        ),
    ]
    if "mse_kappa" in p.loss_spec.parameters:
        log_target = math.log10(p.mse_beta + 10.0 ** min(log_z, 300.0))
        log_grad = math.log10(2.0) + _log10(p.mse_kappa) + log_target - 0.5 * math.log10(p.K)
        terms += [
            (
                _log10(p.mse_kappa) + 2 * log_target,
                "mse_kappa (mse_beta + |z|)^2 (in L(x0))",
                "mse_kappa",
                limit - 2 * log_target,
            ),
            (
                2 * log_grad,
                "(2 mse_kappa (mse_beta + |z|))^2 / K (in |grad L(x0)|^2)",
                "mse_kappa",
                _log10(p.mse_kappa) + (limit - 2 * log_grad) / 2,
            ),
        ]
    for size, what, name, _ in terms:
        if size > limit:
            largest = min(bound for _, _, other, bound in terms if other == name)  # every term must fit
            raise ValueError(
                f"{name} = {getattr(p, name):g} is too large for {p.dtype}: {what} at the seeded start "
                f"is about 1e{size:.0f}, which overflows (inf/nan before the first step); use "
                f"{name} <= {_round_down(10.0**largest)} for K = {p.K}, n = {p.n}, d = {p.d}"
            )
