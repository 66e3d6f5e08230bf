"""The frozen problem specification shared by the solver, the CLI and the experiments."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from ufm.objective import Params, Weights, class_major_labels

LOSSES = ("ls",)
DTYPES = ("float64", "float32")


def _integer(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
            or not float(value).is_integer() or int(value) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _real(name: str, value, low: float, high: float | None, *, low_open: bool, high_open: bool = True) -> float:
    interval = ("(" if low_open else "[") + f"{low:g}, " + ("inf)" if high is None else f"{high:g}" + (")" if high_open else "]"))
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number in {interval}, got {value!r}")
    value = float(value)
    too_low = value <= low if low_open else value < low
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        raise ValueError(f"{name} must be in {interval}, got {value!r}")
    return value


@dataclass(frozen=True)
class Problem:
    """One UFM instance: ``min L(W, H, b)`` (Guo et al., eq. 10).

    Attributes:
        K: classes (>= 2). n: samples per class (>= 1). d: feature dimension
            (>= 1; defaults to K; Theorem 4.1 needs d >= K, the solver does not).
        delta: label smoothing, 0 <= delta < 1 (0 is cross entropy).
        lam_W, lam_H: regularization of W and H (> 0). lam_b: of b (>= 0).
        loss: per-sample loss; ``"ls"`` (cross entropy with smoothed labels).
        seed: seed of the random initialisation (>= 0).
        dtype: ``"float64"`` (verification; needs ``jax_enable_x64``) or ``"float32"``.
        init_scale: standard deviation of the Gaussian initial W and H (> 0); b starts at 0.

    Shapes: ``W: (d, K)``, ``H: (d, N)`` with ``N = n K`` in class-major order, ``b: (K,)``.
    """

    K: int
    n: int
    d: int | None = None
    delta: float = 0.0
    lam_W: float = 5e-4
    lam_H: float = 5e-4
    lam_b: float = 5e-4
    loss: str = "ls"
    seed: int = 0
    dtype: str = "float64"
    init_scale: float = 0.1

    def __post_init__(self):
        set_ = lambda name, value: object.__setattr__(self, name, value)
        set_("K", _integer("K", self.K, 2))
        set_("n", _integer("n", self.n, 1))
        set_("d", self.K if self.d is None else _integer("d", self.d, 1))
        set_("delta", _real("delta", self.delta, 0.0, 1.0, low_open=False))
        set_("lam_W", _real("lam_W", self.lam_W, 0.0, None, low_open=True))
        set_("lam_H", _real("lam_H", self.lam_H, 0.0, None, low_open=True))
        set_("lam_b", _real("lam_b", self.lam_b, 0.0, None, low_open=False))
        set_("init_scale", _real("init_scale", self.init_scale, 0.0, None, low_open=True))
        set_("seed", _integer("seed", self.seed, 0))
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")

    @property
    def N(self) -> int:
        """Total number of samples ``n K``."""
        return self.n * self.K

    @property
    def jnp_dtype(self):
        return jnp.float64 if self.dtype == "float64" else jnp.float32

    def labels(self) -> jnp.ndarray:
        """Class-major labels ``(N,)``."""
        return class_major_labels(self.K, self.n)

    def weights(self) -> Weights:
        """The traced scalars (delta, lam_W, lam_H, lam_b) in the problem's dtype."""
        dt = self.jnp_dtype
        return Weights(*(jnp.asarray(x, dtype=dt) for x in (self.delta, self.lam_W, self.lam_H, self.lam_b)))

    def init(self) -> Params:
        """Seeded Gaussian initialisation: ``W, H ~ N(0, init_scale^2)``, ``b = 0``."""
        require_dtype_enabled(self.dtype)
        return initial_params(self.seed, self.init_scale, self.d, self.K, self.N, self.jnp_dtype)


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


def require_dtype_enabled(dtype: str) -> None:
    """Fail loudly instead of silently computing in float32 when x64 is off."""
    if dtype == "float64" and not jax.config.jax_enable_x64:
        raise ValueError(
            "dtype='float64' needs 64-bit JAX: call jax.config.update('jax_enable_x64', True) "
            "before solving (the CLI does), or use dtype='float32'"
        )
