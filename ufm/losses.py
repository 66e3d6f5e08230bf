"""Per-sample losses of the logits (Guo et al. eq. 3; Zhou et al. eqs. 3-6).

Every loss takes ``logits: (K, N)`` (column i = logits of sample i),
``labels: (N,)`` integer classes and returns the per-sample losses ``(N,)``.
:func:`per_sample_loss` dispatches on the traced ``weights.loss_id``
(``LOSS_IDS``) with ``jax.lax.switch``, so one compiled solver serves every loss (tracing all
three branches costs ~20% more compile time); a concrete ``loss_id`` picks its branch directly.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

#: problem.loss -> index of the branch in :func:`per_sample_loss` ("ce" is label smoothing with delta = 0)
LOSS_IDS = {"ce": 0, "ls": 0, "focal": 1, "mse": 2}


def _target(values, labels):
    return jnp.take_along_axis(values, labels[None, :], axis=0)[0]


def label_smoothing(logits, labels, delta):
    """Cross entropy against soft labels ``y^delta = (1 - delta) e_k + delta/K 1`` (Guo et al., eq. 3).

    ``delta = 0`` is plain cross entropy. Computed with ``log_softmax`` over the
    class axis, so it is stable for logits of any size.
    """
    K = logits.shape[0]
    log_p = jax.nn.log_softmax(logits, axis=0)
    return -((1.0 - delta) * _target(log_p, labels) + (delta / K) * jnp.sum(log_p, axis=0))


def focal(logits, labels, gamma):
    """Focal loss ``-(1 - p_k)^gamma log p_k`` (Zhou et al., eq. 4), ``gamma >= 0``.

    ``1 - p_k`` is computed as ``-expm1(log p_k)`` (no cancellation when p_k -> 1) and the
    power as ``exp(gamma log(1 - p_k))`` with the ``gamma = 0`` case exact (``0^0 = 1``).
    """
    log_p = _target(jax.nn.log_softmax(logits, axis=0), labels)
    q = -jnp.expm1(log_p)
    safe_q = jnp.where(q > 0, q, 1.0)
    weight = jnp.where(gamma == 0, 1.0, jnp.where(q > 0, jnp.exp(gamma * jnp.log(safe_q)), 0.0))
    return -weight * log_p


def rescaled_mse(logits, labels, kappa, beta):
    """Rescaled MSE ``kappa (z_k - beta)^2 + sum_{l != k} z_l^2`` (Zhou et al., eq. 6), kappa, beta > 0."""
    z_k = _target(logits, labels)
    return kappa * (z_k - beta) ** 2 + jnp.sum(logits**2, axis=0) - z_k**2


def per_sample_loss(logits, labels, weights):
    """The loss selected by ``weights.loss_id`` with its parameters from ``weights``, shape ``(N,)``."""
    branches = (
        lambda z: label_smoothing(z, labels, weights.delta),
        lambda z: focal(z, labels, weights.gamma),
        lambda z: rescaled_mse(z, labels, weights.mse_kappa, weights.mse_beta),
    )
    if not isinstance(weights.loss_id, jax.core.Tracer):  # known now (e.g. closed over): no switch to trace
        return branches[min(max(int(weights.loss_id), 0), len(branches) - 1)](logits)
    index = jnp.clip(jnp.asarray(weights.loss_id).astype(jnp.int32), 0, len(branches) - 1)
    return jax.lax.switch(index, branches, logits)
