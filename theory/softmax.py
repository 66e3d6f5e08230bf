"""The one numpy softmax and log-softmax of the package, shifted by the maximum (no overflow).

Internal API, like :mod:`theory.validation`: not exported from :mod:`theory`, imported by
:mod:`theory.prediction` and by the numpy parts of :mod:`ufm` (the Hessian blocks, the comparison's
measured probabilities, calibration, the last-layer analysis, the convex reformulation). It is numerics,
not a prediction: the solver path still computes nothing with :mod:`theory`'s formulas. numpy only.

For logits ``z`` along ``axis`` (classes) with ``m = max z``:

    softmax(z) = exp(z - m) / sum exp(z - m),      log_softmax(z) = (z - m) - log sum exp(z - m).

The largest shifted logit is 0, so no ``exp`` overflows and the sum is at least 1 (its log is finite).
Both are computed in exactly these operations, in this order, so that a result is the same to the bit
as the inline formulas they replace.
"""

from __future__ import annotations

import numpy as np


def softmax(z: np.ndarray, axis: int = -1, *, out: np.ndarray | None = None, sums: bool = False):
    """``exp(z - m) / sum exp(z - m)`` along ``axis`` (any shape; float64 for float64 input).

    Args:
        z: logits; the classes along ``axis``.
        axis: the class axis (``0`` for the ``(K, N)`` layout of :mod:`ufm`, ``1`` for ``(N, K)`` rows).
        out: where to write the probabilities, same shape as ``z``; ``out=z`` works in place (no second
            array of z's size, for the chunks of :mod:`ufm.calibration`).
        sums: also return ``sum exp(z - m)`` along ``axis`` (axis removed): with the shifted target logit
            ``z_y - m`` it gives ``-log p_y = log(sums) - (z_y - m)`` without the underflow of ``log p_y``.

    Returns:
        The probabilities (``out`` when given), or ``(probabilities, sums)`` with ``sums=True``.
    """
    shift = np.max(z, axis=axis, keepdims=True)
    with np.errstate(over="ignore"):  # a difference beyond float64 is -inf: its probability is 0
        shifted = np.subtract(z, shift, out=out)
    np.exp(shifted, out=shifted)
    total = np.sum(shifted, axis=axis, keepdims=True)
    shifted /= total
    return (shifted, np.squeeze(total, axis=axis)) if sums else shifted


def log_softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    """``(z - m) - log sum exp(z - m)`` along ``axis``, a new array of z's shape."""
    shifted = z - np.max(z, axis=axis, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))
