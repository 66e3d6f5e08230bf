"""Predicted blockwise Hessian spectra at the global minimizer (Theorem 4.2).

Source: Guo et al., Theorem 4.2 (eq. 15) and its proof in Appendix E
(eqs. 41-59). The paper proves only the ratio ``kappa = K p_t``; the full
spectra below are derived here and checked against dense ``jax.hessian``
eigenvalues in ``tests/test_spectra.py``.

Derivation (phi = (1/N) sum_i CE(W^T h_i, y_i), the loss term only):

* Logit curvature. At the minimizer every sample of class k has
  probabilities ``p^(k) = p_n 1 + (p_t - p_n) e_k`` and logit Hessian
  ``D_k = diag(p^(k)) - p^(k) p^(k)^T`` (eq. 41). ``D_k 1 = 0``; on vectors
  orthogonal to ``1`` and ``e_k`` it acts as ``p_n`` (K - 2 of them); the
  remaining eigenvalue follows from the trace: ``K p_t p_n`` (eq. 45).

* H block (W fixed). Block diagonal over samples, one ``d x d`` block
  ``(1/N) W D_k W^T = (alpha_W^2 / N) P D_k P^T`` per sample (eqs. 46-48,
  using ``M D_k M = D_k``), ``alpha_W^2 = a sqrt(n lam_H / lam_W)``. Per
  sample: ``alpha_W^2/N * {K p_t p_n (x1), p_n (x K-2), 0 (x d-K+1)}``;
  over the N samples every multiplicity is multiplied by N.

* W block (H fixed). The quadratic form is
  ``Q(dW) = (1/N) sum_i (dW^T h_i)^T D_{k(i)} (dW^T h_i)`` with
  ``h_i = alpha_H P M e_k``, ``alpha_H^2 = a sqrt(lam_W / (n lam_H))``.
  Writing ``G = dW^T P`` (the part of dW outside range(P) is in the kernel)
  and using ``M D_k M = D_k``, only the doubly centred part
  ``G in V = {G 1 = 0, 1^T G = 0}`` (dimension (K-1)^2) matters, and for it
  ``Q = (alpha_H^2 / K) [p_n ||G||_F^2 + beta sum_k G_kk^2]`` with
  ``beta = (p_t - p_n)(1 - p_t + p_n)``. The operator
  ``G -> diag-part, projected back onto V`` has eigenvalue ``1 - 1/K`` on
  ``M`` itself, ``1 - 2/K`` on ``M diag(u) M`` with ``u ⟂ 1`` (K - 1 of them)
  and 0 on the rest of V. With ``p_t + (K-1) p_n = 1`` this gives
  ``alpha_H^2/K * {K p_t p_n (x1), p_n((K-1) p_t + p_n) (x K-1),
  p_n (x (K-1)^2 - K)}`` and ``0`` with multiplicity ``dK - (K-1)^2``.
  These are the paper's eq. 58 values (its ``(1 - p_t + p_n)(p_n + (K-1)p_t)/K``
  equals ``p_n((K-1)p_t + p_n)``), now with the scale ``alpha_H^2 / K`` that
  eq. 52 omits. For K = 2, V is one-dimensional and only ``K p_t p_n`` remains.

* b block. ``(1/K) sum_k D_k`` has ``(1 - (p_t - p_n)^2)/K`` on ``1⟂`` (x K-1)
  and 0 on ``1``.

The regularized objective L adds ``lam_W I``, ``lam_H I``, ``lam_b I`` to the
respective blocks (the regularizer is separable and quadratic), so its blocks
have the same eigenvectors with every eigenvalue shifted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from theory import validation
from theory.closed_form import a_delta, balance, phase, probabilities

_MERGE_RTOL = 1e-12


@dataclass(frozen=True)
class BlockSpectrum:
    """Eigenvalues of one symmetric Hessian block, as distinct values with multiplicities.

    Attributes:
        values: distinct eigenvalues, ascending, ``(m,)`` float64.
        multiplicities: how often each occurs, ``(m,)`` int; sums to the block size.
    """

    values: np.ndarray
    multiplicities: np.ndarray

    @property
    def size(self) -> int:
        """Dimension of the block (sum of the multiplicities)."""
        return int(np.sum(self.multiplicities))

    def expanded(self) -> np.ndarray:
        """All eigenvalues with repetition, ascending, shape ``(size,)``."""
        return np.repeat(self.values, self.multiplicities)

    def nonzero(self) -> np.ndarray:
        """Distinct non-zero eigenvalues, ascending."""
        return self.values[self.values != 0.0]

    def condition_number(self) -> float:
        """Largest over smallest non-zero eigenvalue, in absolute value (focal loss may curve negatively).

        Raises:
            ValueError: the block has no non-zero eigenvalue (e.g. beyond the phase boundary).
        """
        nonzero = self.nonzero()
        if nonzero.size == 0:
            raise ValueError("the block has no non-zero eigenvalue; its condition number is undefined")
        magnitudes = np.abs(nonzero)
        return float(magnitudes.max() / magnitudes.min())


class HessianSpectrum(NamedTuple):
    """Spectra of the three diagonal blocks of the Hessian at the global minimizer.

    ``W``: ``(dK) x (dK)`` block (H, b fixed); ``H``: ``(dN) x (dN)`` block
    (W, b fixed); ``b``: ``K x K`` block, or None when the regularized spectrum
    was asked for without ``lam_b``.
    """

    W: BlockSpectrum
    H: BlockSpectrum
    b: BlockSpectrum | None


def _block(pairs, shift: float = 0.0) -> BlockSpectrum:
    """Sort, merge equal values (relative 1e-12) and drop empty multiplicities."""
    pairs = sorted((float(v) + shift, int(m)) for v, m in pairs if m > 0)
    values: list[float] = []
    counts: list[int] = []
    for value, count in pairs:
        if values and abs(value - values[-1]) <= _MERGE_RTOL * max(abs(value), abs(values[-1])):
            counts[-1] += count
        else:
            values.append(value)
            counts.append(count)
    return BlockSpectrum(np.array(values, dtype=np.float64), np.array(counts, dtype=np.int64))


def curvature_spectrum(
    K: int,
    n: int,
    d: int,
    *,
    a: float,
    lam_W: float,
    lam_H: float,
    mu1: float,
    mu2: float,
    centred_loss: bool = True,
    lam_b=None,
    regularized: bool = False,
) -> HessianSpectrum:
    """Block spectra at an ETF point of scale ``a`` from the two logit curvatures ``(mu1, mu2)``.

    For a loss whose per-sample logit Hessian ``S_k`` kills ``1`` (``centred_loss``: CE, LS, FL)
    and equals ``mu2`` on ``u = e_k - 1/K`` and ``mu1`` on the rest of ``1^perp``
    (``theory.scalar_reduction.logit_curvatures``), the derivation of the module docstring
    generalises with ``X = M G M``, ``Q = (alpha_H^2/K)[mu1 ||X||^2 + (mu2 - mu1) K/(K-1) sum X_kk^2]``:

    * W: ``s_W mu2`` (x1), ``s_W (mu1 + (K-2) mu2)/(K-1)`` (x K-1), ``s_W mu1`` (x (K-1)^2 - K),
      0 (x dK - (K-1)^2);
    * H: ``s_H mu2`` (x N), ``s_H mu1`` (x N(K-2)), 0 (x N(d-K+1));
    * b: ``(mu1 (K-2) + mu2)/(K-1)`` (x K-1), 0 (x1).

    For LS (``mu1 = p_n``, ``mu2 = K p_t p_n``) these are the values of :func:`hessian_spectrum`.
    The rescaled MSE (``centred_loss=False``, ``S_k = 2(I + (kappa-1) e_k e_k^T)``, class means
    centred, ``mu1 = 2``, ``mu2 = 2(1 + (kappa-1)(K-1)/K)``): ``X = G M`` is only right-centred
    (dimension K(K-1)) and ``sum_k X_kk^2`` has eigenvalue ``1 - 1/K`` on the K diagonal
    directions, so W: ``s_W mu2`` (x K), ``s_W mu1`` (x K(K-2)), 0 (x dK - K(K-1)); H as above;
    b: ``mu1 + (mu2 - mu1)/(K-1) = 2(1 + (kappa-1)/K)`` (x K).
    ``s_W = a sqrt(lam_W/(n lam_H))/K``, ``s_H = a sqrt(n lam_H/lam_W)/N``.
    """
    N = n * K
    if d * N >= 2**62:
        raise ValueError(
            f"the H block would have d N = {d} * {N} rows, too many for 64-bit multiplicities; reduce d or n"
        )
    ratio = float(balance(n, lam_W=lam_W, lam_H=lam_H))  # (n lam_H / lam_W)^{1/4}, never overflows
    s_W = (a / ratio) / ratio / K
    s_H = (a * ratio) * ratio / N
    if not (np.isfinite(s_W) and np.isfinite(s_H)):
        raise OverflowError(
            f"the Hessian scales overflow float64: n lam_H / lam_W = {n} * {lam_H!r} / {lam_W!r} is too extreme"
        )
    if centred_loss:
        if K == 2:
            w_pairs = [(s_W * mu2, 1), (0.0, d * K - 1)]
        else:
            w_pairs = [
                (s_W * mu2, 1),
                (s_W * (mu1 + (K - 2) * mu2) / (K - 1), K - 1),
                (s_W * mu1, (K - 1) ** 2 - K),
                (0.0, d * K - (K - 1) ** 2),
            ]
        b_pairs = [((mu1 * (K - 2) + mu2) / (K - 1), K - 1), (0.0, 1)]
    else:
        w_pairs = [(s_W * mu2, K), (s_W * mu1, K * (K - 2)), (0.0, d * K - K * (K - 1))]
        b_pairs = [(mu1 + (mu2 - mu1) / (K - 1), K)]
    h_pairs = [(s_H * mu2, N), (s_H * mu1, N * (K - 2)), (0.0, N * (d - K + 1))]
    if not regularized:
        return HessianSpectrum(_block(w_pairs), _block(h_pairs), _block(b_pairs))
    b_block = None if lam_b is None else _block(b_pairs, float(lam_b))
    return HessianSpectrum(_block(w_pairs, float(lam_W)), _block(h_pairs, float(lam_H)), b_block)


def hessian_spectrum(K, n, d, *, delta=0.0, lam_W, lam_H, lam_b=None, regularized=False) -> HessianSpectrum:
    """Full predicted spectra of the W, H and b Hessian blocks at the minimizer (label smoothing / CE).

    Theorem 4.2 (eq. 15) states ``kappa(grad^2_W phi) = kappa(grad^2_H phi) = K p_t``
    over the non-zero eigenvalues; this function gives every distinct eigenvalue
    with its multiplicity (derivation in the module docstring):

    ==========  =====================================  ==================
    block       eigenvalue                             multiplicity
    ==========  =====================================  ==================
    W (dK)      s_W K p_t p_n                          1
                s_W p_n ((K-1) p_t + p_n)              K - 1
                s_W p_n                                (K-1)^2 - K
                0                                      dK - (K-1)^2
    H (dN)      s_H K p_t p_n                          N
                s_H p_n                                N (K - 2)
                0                                      N (d - K + 1)
    b (K)       (1 - (p_t - p_n)^2) / K                K - 1
                0                                      1
    ==========  =====================================  ==================

    with ``s_W = a sqrt(lam_W / (n lam_H)) / K`` and ``s_H = a sqrt(n lam_H / lam_W) / N``
    (for K = 2 the W block keeps only its top eigenvalue and the H block has no
    ``p_n`` eigenvalue). With ``regularized=True`` the blocks are those of the full
    objective L: every eigenvalue is shifted by lam_W, lam_H, lam_b respectively.
    Beyond the phase boundary (c >= 1) a = 0, the W and H blocks of phi vanish.
    Other losses: :func:`theory.prediction.predict` (same formulas via :func:`curvature_spectrum`).

    Args:
        K, n, d: classes (>= 2), samples per class (>= 1), feature dimension (>= K).
        delta, lam_W, lam_H: scalars, 0 <= delta < 1, lambdas > 0.
        lam_b: bias regularization (> 0); needed for the b block when ``regularized``.
        regularized: spectra of L (True) instead of the loss term phi (False).

    Returns:
        :class:`HessianSpectrum` of :class:`BlockSpectrum`.
    """
    K, n = validation.classes_and_samples(K, n)
    d = validation.dimension(d, K)
    a = a_delta(K, n, delta=delta, lam_W=lam_W, lam_H=lam_H)
    if np.ndim(a) != 0:
        raise ValueError("hessian_spectrum takes scalar delta, lam_W, lam_H (got arrays)")
    if lam_b is not None:
        lam_b = validation.positive("lam_b", lam_b)
    p_t, p_n = probabilities(K, n, delta=delta, lam_W=lam_W, lam_H=lam_H)
    return curvature_spectrum(
        K,
        n,
        d,
        a=a,
        lam_W=float(lam_W),
        lam_H=float(lam_H),
        mu1=p_n,
        mu2=K * p_t * p_n,
        lam_b=lam_b,
        regularized=regularized,
    )


def condition_number(K, delta, lam, *, n=1, lam_H=None, beyond_boundary="raise"):
    """Condition number ``kappa = K p_t`` of the W and H Hessian blocks of phi (Theorem 4.2, eq. 15).

    The notebook call ``condition_number(K, delta, lam)`` takes ``lam_W = lam_H = lam``
    and n = 1; pass ``n`` and ``lam_H`` for other settings. n, lam_W and lam_H enter
    only through the product ``n lam_W lam_H`` (via ``c = K sqrt(n lam_W lam_H) + delta``).
    ``delta`` and ``lam`` may be arrays (broadcast).

    Valid for c < 1, where ``1 <= kappa < K``; for K >= 3 kappa decreases strictly
    in delta. For K = 2 each block has a single non-zero eigenvalue (see
    :func:`hessian_spectrum`), so the condition number is exactly 1, not K p_t;
    this function returns 1.0 there (the paper states eq. 15 without excluding K = 2).
    Beyond the boundary (c >= 1) the minimizer is zero, both blocks vanish and
    kappa is undefined: by default a :class:`ValueError` names the boundary;
    with ``beyond_boundary="nan"`` those entries are NaN instead (for sweeps
    and plots).

    Args:
        K: classes, integer >= 2.
        delta: 0 <= delta < 1.
        lam: lam_W (and lam_H unless given), > 0.
        n: samples per class, integer >= 1 (default 1).
        lam_H: optional lam_H > 0.
        beyond_boundary: ``"raise"`` (default) or ``"nan"``.

    Returns:
        float or array of ``K p_t``.
    """
    if beyond_boundary not in ("raise", "nan"):
        raise ValueError(f"beyond_boundary must be 'raise' or 'nan', got {beyond_boundary!r}")
    lam_H = lam if lam_H is None else lam_H
    where = phase(K, n, delta=delta, lam_W=lam, lam_H=lam_H)
    p_t, _ = probabilities(K, n, delta=delta, lam_W=lam, lam_H=lam_H)
    kappa = int(K) * np.asarray(p_t) if int(K) >= 3 else np.ones_like(np.asarray(p_t))
    collapsed = np.asarray(where.collapsed)
    if np.any(collapsed):
        if beyond_boundary == "raise":
            c_bad = np.asarray(where.c)[collapsed].ravel()[0]
            star = np.asarray(where.delta_star)[collapsed].ravel()[0] if np.ndim(where.delta_star) else where.delta_star
            raise ValueError(
                f"condition number undefined beyond the phase boundary: c = K sqrt(n lam_W lam_H) + delta "
                f"= {c_bad:.6g} >= 1 (need delta < delta* = {star:.6g} or smaller lam); "
                "the minimizer is W = H = 0 and both Hessian blocks vanish"
            )
        kappa = np.where(collapsed, np.nan, kappa)
    return float(kappa) if kappa.ndim == 0 else kappa
