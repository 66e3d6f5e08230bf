"""Neural-collapse metrics NC1-NC3 and norms (Guo et al., eqs. 4-6 / Appendix B.1, eqs. 16-17).

Pure jax.numpy functions of ``W: (d, K)``, ``H: (d, N)`` and integer
``labels: (N,)``; they run inside the compiled solver loop and on numpy input.

Unequal class sizes (``Problem.class_sizes``): class means are one-hot averages, Sigma_W averages
over all N samples (class k weighted by n_k / N) and Sigma_B is the unweighted average over the K
centred means, centred at the global mean h_G of all samples, i.e. Papyan et al.'s NC1 as written,
which is how the imbalanced-UFM papers (Thrampoulidis et al. 2022; Hong & Ling 2024) use NC1 (not
checked against their text here). NC2/NC3 measure the distance to a simplex ETF, which is *not* the
imbalanced minimizer; :mod:`ufm.imbalance` measures the SELI geometry and minority collapse instead.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ufm._compile import stored_jit


class Collapse(NamedTuple):
    """NC1-NC3 and the mean norms of ``w_k`` and of ``hbar_k - h_G``."""

    nc1: jnp.ndarray
    nc2: jnp.ndarray
    nc3: jnp.ndarray
    w_norm: jnp.ndarray
    h_norm: jnp.ndarray


def class_means(H, labels, K: int):
    """``(hbar_1, ..., hbar_K)`` as columns, shape ``(d, K)``."""
    onehot = jax.nn.one_hot(labels, K, dtype=H.dtype)
    return (H @ onehot) / jnp.sum(onehot, axis=0)


def centred_class_means(H, labels, K: int):
    """``Hbar = [hbar_k - h_G]``, shape ``(d, K)``; h_G is the global mean of all N features."""
    return class_means(H, labels, K) - jnp.mean(H, axis=1, keepdims=True)


def nc1(H, labels, K: int):
    """``NC1 = trace(Sigma_W Sigma_B^+) / K`` with Sigma_W over all N samples (1/N) and Sigma_B over classes (1/K)."""
    means = class_means(H, labels, K)
    within = H - means[:, labels]
    sigma_W = within @ within.T / H.shape[1]
    centred = means - jnp.mean(H, axis=1, keepdims=True)
    sigma_B = centred @ centred.T / K
    return jnp.trace(sigma_W @ jnp.linalg.pinv(sigma_B, hermitian=True)) / K


def _unit(x):
    norm = jnp.linalg.norm(x)
    return x / jnp.where(norm > 0, norm, 1.0)


def nc2(W, H, labels, K: int):
    """``NC2 = || W^T Hbar / ||W^T Hbar||_F - M / sqrt(K-1) ||_F`` (eq. 16), ``M = I - 11^T/K``."""
    M = jnp.eye(K, dtype=W.dtype) - 1.0 / K
    return jnp.linalg.norm(_unit(W.T @ centred_class_means(H, labels, K)) - M / jnp.sqrt(K - 1.0))


def nc3(W, H, labels, K: int):
    """``NC3 = || W/||W||_F - Hbar/||Hbar||_F ||_F`` (eq. 17)."""
    return jnp.linalg.norm(_unit(W) - _unit(centred_class_means(H, labels, K)))


@stored_jit(static_argnames="K")
def collapse(W, H, labels, K: int) -> Collapse:
    """All metrics at once (the solver records this every ``record_every`` iterations). Compiled: one
    program per shape and K, kept in the program store when called on arrays (:func:`ufm._compile.stored_jit`)."""
    centred = centred_class_means(H, labels, K)
    return Collapse(
        nc1(H, labels, K),
        nc2(W, H, labels, K),
        nc3(W, H, labels, K),
        jnp.mean(jnp.linalg.norm(W, axis=0)),
        jnp.mean(jnp.linalg.norm(centred, axis=0)),
    )


class Dilation(NamedTuple):
    """Memorization-dilation measurements under label noise (Nguyen et al. 2023, Sec. 4.1).

    Attributes:
        dilation: mean over corrupted samples of ``||h_i - mu_{k(i)}|| / D``, with ``mu_k`` the mean of
            the *clean* samples of true class k and ``D`` the mean pairwise distance between the ``mu_k``
            (NaN without corrupted samples). 1 means a corrupted sample sits as far from its true
            class as two class means are from each other.
        nc1_true: ``(K,)`` per-class NC1 with the true labels: ``trace(Sigma_W^k Sigma_B^+) / K``,
            ``Sigma_W^k`` the covariance of every sample of true class k around ``mu_k`` (weighted by
            ``1/N``), ``Sigma_B`` that of the ``mu_k``; they sum to the usual NC1 when nothing is corrupted.
    """

    dilation: float
    nc1_true: jnp.ndarray


def dilation(H, true_labels, corrupted, K: int) -> Dilation:
    """:class:`Dilation` of features ``H: (d, N)`` given true labels ``(N,)`` and the corrupted mask ``(N,)``."""
    H = jnp.asarray(H)
    true_labels = jnp.asarray(true_labels)
    clean = ~jnp.asarray(corrupted)
    onehot = jax.nn.one_hot(true_labels, K, dtype=H.dtype) * clean[:, None]
    mu = (H @ onehot) / jnp.sum(onehot, axis=0)
    pair = jnp.linalg.norm(mu[:, :, None] - mu[:, None, :], axis=0)
    scale = jnp.sum(pair) / (K * (K - 1))
    distances = jnp.linalg.norm(H - mu[:, true_labels], axis=0) / scale
    n_bad = jnp.sum(~clean)
    mean_dilation = jnp.where(n_bad > 0, jnp.sum(jnp.where(clean, 0.0, distances)) / jnp.maximum(n_bad, 1), jnp.nan)
    centred = mu - jnp.mean(mu, axis=1, keepdims=True)
    pinv_B = jnp.linalg.pinv(centred @ centred.T / K, hermitian=True)
    within = H - mu[:, true_labels]
    per_sample = jnp.einsum("ai,ab,bi->i", within, pinv_B, within) / (H.shape[1] * K)
    nc1_true = jax.ops.segment_sum(per_sample, true_labels, num_segments=K)
    return Dilation(float(mean_dilation), nc1_true)


@partial(jax.jit, static_argnames="K")
def nc1_nguyen(H, labels, K: int):
    """NC1 as Nguyen et al. (2023) define it, their eq. (2): ``trace(Sigma_W Sigma_B^+) / K``.

    ``H: (d, N)`` features, ``labels: (N,)`` in 0..K-1 (every class present; their N classes are our
    K). ``Sigma_W`` is the within-class scatter averaged over all N samples (their ``1/(NK)`` sum)
    and ``Sigma_B = (1/K) sum_k (hbar_k - h)(hbar_k - h)^T`` is centred at ``h``, the *mean of the
    class means* (their ``(1/N) sum_n h_n``). On a balanced set this is exactly :func:`nc1` (Guo et
    al., eq. 4, centred at the global mean h_G of all samples); on an imbalanced one (a test split)
    the two differ through that centre. Nguyen et al. call NC1 on test features the *dilation*.
    """
    means = class_means(H, labels, K)
    spread = means - jnp.mean(means, axis=1, keepdims=True)
    pinv_B = jnp.linalg.pinv(spread @ spread.T / K, hermitian=True)
    deviations = H - means[:, labels]
    # trace(Sigma_W Sigma_B^+) = (1/N) sum_i (h_i - hbar_k(i))^T Sigma_B^+ (h_i - hbar_k(i))
    return jnp.einsum("ai,ab,bi->", deviations, pinv_B, deviations) / (H.shape[1] * K)
