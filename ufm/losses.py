"""Per-sample losses of the logits.

Every loss takes ``logits: (K, N)`` (column i = logits of sample i),
``labels: (N,)`` integer classes and returns the per-sample losses ``(N,)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def label_smoothing(logits, labels, delta):
    """Cross entropy against soft labels ``y^delta = (1 - delta) e_k + delta/K 1`` (Guo et al., eq. 3).

    ``delta = 0`` is plain cross entropy. Computed with ``log_softmax`` over the
    class axis, so it is stable for logits of any size.
    """
    K = logits.shape[0]
    log_p = jax.nn.log_softmax(logits, axis=0)
    target = jnp.take_along_axis(log_p, labels[None, :], axis=0)[0]
    return -((1.0 - delta) * target + (delta / K) * jnp.sum(log_p, axis=0))
