"""Blockwise Hessian spectra at a point (W, H, b), as in Theorem 4.2 of Guo et al.

Blocks: ``"W"`` (``dK x dK``, H and b fixed), ``"H"`` (``dN x dN``, W and b
fixed) and ``"b"`` (``K x K``), of the loss term phi (``regularized=False``)
or of the full objective L (``regularized=True``, which adds lam I).

Three ways to get them:

* ``dense``: ``jax.hessian`` of the block, reshaped, then ``eigh``; only when
  the block has at most ``max_dense_entries`` entries (default 1e8).
* ``structured``: exact, without the dense block (:func:`block_spectrum` returns the
  eigenvalues with multiplicities, so blocks of any size fit in memory). Equal columns of H
  are grouped exactly (G groups of m_g samples; G = K at a collapsed point) and each group's
  logit Hessian ``S_g = diag(p_g) - p_g p_g^T`` is built from the softmax (for CE / label
  smoothing it does not depend on delta or the label):

  - H block = blockdiag_i ``(1/N) W S_i W^T``. With ``W = Q R`` (thin QR,
    ``R: (K, K)``) each block has the eigenvalues of ``(1/N) R S_g R^T`` (each m_g times)
    plus ``d - K`` zeros (for d <= K the d x d blocks are used directly).
  - W block = ``(1/N) sum_g m_g (h_g h_g^T) kron S_g``. In the rank-r range of H (singular
    values below ``1e-8 sigma_max`` dropped) it is ``D - F F^T`` with D block diagonal over
    the classes (K blocks r x r) and F of rank <= G; D's (clustered) eigenspaces deflate
    it to a ``T x T`` matrix, T <= 2K at a collapsed point (see ``_w_block_counts``), plus
    ``(d - r) K`` zeros.
* ``lanczos``: extreme eigenvalues only, from Hessian-vector products
  (forward-over-reverse ``jax.jvp`` of ``jax.grad``) and
  ``scipy.sparse.linalg.eigsh``; memory O(size of the block).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from theory import validation
from theory.softmax import softmax
from ufm import _memory
from ufm._compile import stored_jit
from ufm.losses import branch_spec, loss_spec, per_sample_loss
from ufm.objective import Params, Weights, logits, loss_term, objective

BLOCKS = ("W", "H", "b")
MAX_DENSE_ENTRIES = 100_000_000
#: eigenvalues above this fraction of the largest count as non-zero (structural
#: zeros at a converged float64 point are ~1e-16 of the largest; the smallest
#: non-zero one of Theorem 4.2 is 1/(K p_t) > 1/K of it).
NONZERO_RTOL = 1e-8
_RANK_RTOL = 1e-8
_WHICH = ("LA", "SA", "LM", "SM", "BE")


class BlockEigenvalues(NamedTuple):
    """All eigenvalues of one block, ascending (``values``), and how they were computed."""

    values: np.ndarray
    method: str


def _block_size(params: Params, block: str) -> int:
    return {"W": params.W.size, "H": params.H.size, "b": params.b.size}[block]


def _block_function(params: Params, labels, weights: Weights, block: str, regularized: bool):
    f = objective if regularized else loss_term

    def of_block(x):
        return f(params._replace(**{block: x}), labels, weights)

    return of_block, getattr(params, block)


def _dense_bytes(params, block) -> float:
    """``jax.hessian`` of a block: ``size`` Hessian-vector products at once (vmapped) plus the matrix."""
    size = _block_size(params, block)
    d, K = params.W.shape
    return _memory.dense_hessian_bytes(size, K, params.H.shape[1], d, batch=size)


def _dense(params, labels, weights, block, regularized) -> np.ndarray:
    size = _block_size(params, block)
    _memory.require(
        _dense_bytes(params, block),
        f"the dense {block} block",
        f"{size} variables (K = {params.W.shape[1]}, N = {params.H.shape[1]})",
        "use method='structured'",
    )
    hess = _dense_hessian(params, labels, weights, block, regularized, int(weights.loss_id))
    return np.linalg.eigvalsh(np.asarray(hess).reshape(size, size))


@stored_jit(static_argnames=("block", "regularized", "loss_id"))
def _dense_hessian(params: Params, labels, weights: Weights, block: str, regularized: bool, loss_id: int):
    """``jax.hessian`` of one block. The point is an argument, not a constant of the program, so it is
    compiled once per shape, block and loss (a closure over ``params`` was compiled again at every
    point); the loss is fixed at compile time (a traced ``loss_id`` would differentiate every loss's
    branch twice: about 3.5x the compile time)."""
    f, x = _block_function(params, labels, weights._replace(loss_id=loss_id), block, regularized)
    return jax.hessian(f)(x)


def _block_hvp_of(params: Params, labels, weights: Weights, v, block: str, regularized: bool, loss_id: int):
    f, x = _block_function(params, labels, weights._replace(loss_id=loss_id), block, regularized)
    return jax.jvp(jax.grad(f), (x,), (v.reshape(x.shape),))[1].ravel()


#: XLA:CPU's experimental YNNPACK library fusion, on by default in jaxlib 0.10, ran the H block's product 21x
#: slower at N = 20,000, d = 16, K = 300 (one fused kernel of 1.62 s in a 1.66 s product, against 0.08 s for the
#: whole product without it; docs/performance.md, "Hessian-vector products"); this program is compiled without
#: it. An empty value switches the fusion off; the option is ignored by other backends.
_HVP_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}
_HVP_STATICS = ("block", "regularized", "loss_id")
_block_hvp_tuned = jax.jit(_block_hvp_of, static_argnames=_HVP_STATICS, compiler_options=_HVP_COMPILER_OPTIONS)
_block_hvp_plain = jax.jit(_block_hvp_of, static_argnames=_HVP_STATICS)
_HVP_OPTIONS_KNOWN = [True]  # False once this jaxlib refused the option (a later one may drop it): plain jit then


def _block_hvp(params: Params, labels, weights: Weights, v, block: str, regularized: bool, loss_id: int):
    """One Hessian-vector product of a block, compiled with :data:`_HVP_COMPILER_OPTIONS` where this jaxlib
    knows them (else as plain ``jit``: the same product, XLA's default fusions)."""
    statics = {"block": block, "regularized": regularized, "loss_id": loss_id}
    if _HVP_OPTIONS_KNOWN[0]:
        try:
            return _block_hvp_tuned(params, labels, weights, v, **statics)
        except jax.errors.JaxRuntimeError as error:
            if "No such compile option" not in str(error):
                raise
            _HVP_OPTIONS_KNOWN[0] = False
    return _block_hvp_plain(params, labels, weights, v, **statics)


def logit_hessians(params: Params, labels, weights: Weights) -> jnp.ndarray:
    """Per-sample Hessians ``S_i`` of the loss w.r.t. the logits, shape ``(N, K, K)``.

    For cross entropy / label smoothing ``S_i = diag(p_i) - p_i p_i^T`` whatever delta.
    Materialises ``N K^2`` numbers: for large N use :func:`block_spectrum`, which
    never does.
    """

    def per_sample(z, label):
        return per_sample_loss(z[:, None], label[None], weights)[0]

    return jax.vmap(jax.hessian(per_sample), in_axes=(1, 0))(logits(params), labels)


class EigenvalueCounts(NamedTuple):
    """Eigenvalues of one block with multiplicities: the block has ``counts[j]`` eigenvalues equal
    to ``values[j]`` (ascending; equal values may appear in more than one entry).

    ``error_bound``: a bound on how far each eigenvalue may be from the exact one beyond the
    float64 rounding of the eigen-solvers (non-zero only when nearly equal intermediate
    eigenvalues were merged, see :func:`block_spectrum`).
    """

    values: np.ndarray
    counts: np.ndarray
    method: str
    error_bound: float = 0.0

    @property
    def size(self) -> int:
        return int(np.sum(self.counts))

    def expanded(self) -> np.ndarray:
        """All ``size`` eigenvalues with repetition, ascending."""
        return np.repeat(self.values, self.counts)

    def distinct(self, rtol: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
        """Merge values closer than ``rtol * max|values|`` (like :func:`distinct_eigenvalues`): (means, counts)."""
        return _merge(self.values, self.counts, rtol)


def _merge(values, counts, rtol):
    order = np.argsort(values, kind="stable")
    values, counts = np.asarray(values, np.float64)[order], np.asarray(counts, np.int64)[order]
    keep = counts > 0
    values, counts = values[keep], counts[keep]
    scale = np.max(np.abs(values)) if values.size else 0.0
    values = np.where(np.abs(values) <= NONZERO_RTOL * scale, 0.0, values)
    starts = np.concatenate([[0], np.flatnonzero(np.diff(values) > rtol * scale) + 1])
    totals = np.add.reduceat(counts, starts) if values.size else counts
    unit = scale if scale > 0 else 1.0  # weighted means of values / scale: no overflow near 1e308
    means = unit * (np.add.reduceat(values / unit * counts, starts) / totals) if values.size else values
    return means, totals


def _distinct_columns(H: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exactly equal columns of ``H: (d, N)`` grouped: (representatives ``(d, G)``, counts ``(G,)``).

    Columns are keyed by their entries in up to 8 evenly spread rows (exact values, no
    rounding, so equal columns share a key); every column is then compared entry by entry
    with the first column of its key, and a column that differs (a key collision) becomes a
    group of its own. So the grouping is always exact: unequal columns are never merged.
    O(dN) time in contiguous chunks plus a sort of N short keys, O(dG) extra memory.
    """
    d, N = H.shape
    rows = np.unique(np.linspace(0, d - 1, min(d, 8)).astype(int))
    _, first, inverse = np.unique(np.ascontiguousarray(H[rows].T), axis=0, return_index=True, return_inverse=True)
    inverse = inverse.ravel()
    representatives = H[:, first]
    differs = np.zeros(N, dtype=bool)
    for lo in range(0, N, 65536):
        hi = min(N, lo + 65536)
        differs[lo:hi] = np.any(H[:, lo:hi] != representatives[:, inverse[lo:hi]], axis=0)
    counts = np.bincount(inverse[~differs], minlength=first.size)
    keep = counts > 0
    singles = np.flatnonzero(differs)
    return (
        np.concatenate([representatives[:, keep], H[:, singles]], axis=1),
        np.concatenate([counts[keep], np.ones(singles.size, np.int64)]),
    )


def _h_block_counts(W, P, counts, N, chunk=4096) -> tuple[np.ndarray, np.ndarray, int]:
    """H block: per group g, the eigenvalues of ``(1/N) R S_g R^T`` (``W = QR``) or, for d <= K,
    of ``(1/N) W S_g W^T``, each ``counts[g]`` times; plus the number of extra zeros."""
    d, K = W.shape
    # numpy's stubs type every mode of qr as QRResult; mode="r" returns the array R alone
    R: np.ndarray = np.linalg.qr(W, mode="r") if d > K else W  # type: ignore[assignment]
    m = R.shape[0]
    _memory.require(
        8.0 * (P.shape[1] * m * 2 + 4 * m * m),
        "the structured H block",
        f"G = {P.shape[1]} groups, K = {K}",
        "reduce K or n, or skip the Hessian (compare(..., spectra=False), --no-hessian)",
    )
    chunk = max(1, min(chunk, int(_memory.free_bytes() // (4 * 8.0 * (m * m + 2 * m * K)) // 2)))
    parts = []
    for lo in range(0, P.shape[1], chunk):
        p = P[:, lo : lo + chunk]  # (K, c)
        RP = R[None, :, :] * p.T[:, None, :]  # R diag(p_g): (c, m, K)
        Rp = np.einsum("ak,kc->ca", R, p)  # R p_g: (c, m)
        blocks = np.einsum("cak,bk->cab", RP, R) - Rp[:, :, None] * Rp[:, None, :]
        parts.append(np.linalg.eigvalsh(blocks / N))
    values = np.concatenate(parts)  # (G, m)
    extra_zeros = N * (d - K) if d > K else 0
    return values.ravel(), np.repeat(counts, values.shape[1]), extra_zeros


def _w_block_counts(Hg, P, counts, N, cluster_rtol) -> tuple[np.ndarray, np.ndarray, int, float]:
    """W block ``(1/N) sum_g m_g (h_g h_g^T) kron S_g`` without forming it (``dK x dK``).

    In the rank-r range of H (coordinates ``x_g = U_r^T h_g``) and with
    ``S_g = diag(p_g) - p_g p_g^T`` the reduced ``rK x rK`` block is
    ``A = D - F F^T``: ``D = blockdiag_k D_k``, ``D_k = sum_g c_g p_gk x_g x_g^T`` (r x r,
    ``c_g = m_g / N``), and F has G columns ``sqrt(c_g) (p_g kron x_g)``. With
    ``D = Q Lambda Q^T`` (K eigh of r x r), eigenvalues of D that agree to ``cluster_rtol``
    are merged into one value lambda_j (eigenvector block Q_j, size m_j); any vector of
    span(Q_j) orthogonal to ``F_j = Q_j^T F`` is an eigenvector of A with eigenvalue lambda_j.
    With ``F_j = U_j R_j`` (thin QR, U_j spans a t_j = min(m_j, G)-dimensional space containing
    range(F_j)) the rest is the ``T x T`` matrix ``diag(lambda_j I_{t_j}) - B B^T``, B the
    stacked R_j, ``T = sum_j min(m_j, G)``.
    At a collapsed point (G = K groups) D has two clusters and T <= 2K instead of rK.
    Returns (values, counts, extra zeros (d - r) K, error bound = largest merge shift).
    """
    d, K = Hg.shape[0], P.shape[0]
    c = counts / N
    U, sigma, _ = np.linalg.svd(Hg * np.sqrt(c), full_matrices=False)
    r = int(np.sum(sigma > _RANK_RTOL * sigma[0])) if sigma.size and sigma[0] > 0 else 0
    if r == 0:
        return np.zeros(0), np.zeros(0, np.int64), d * K, 0.0
    G = Hg.shape[1]
    _memory.require(
        8.0 * (2 * K * r * G + 3 * K * r * r + 2 * r * G),
        "the structured W block",
        f"K = {K}, rank r = {r}, G = {G} distinct feature columns",
        "reduce K or n, or skip the Hessian (compare(..., spectra=False), --no-hessian)",
    )
    X = U[:, :r].T @ Hg  # (r, G)
    D = np.einsum("ag,g,kg,bg->kab", X, c, P, X, optimize=True)  # (K, r, r)
    lam, Q = np.linalg.eigh(D)  # (K, r), (K, r, r)
    F = np.einsum("kab,ag,g,kg->kbg", Q, X, np.sqrt(c), P, optimize=True).reshape(K * r, -1)
    lam = lam.ravel()
    order = np.argsort(lam, kind="stable")
    scale = max(np.max(np.abs(lam)), np.finfo(np.float64).tiny)
    cuts = np.flatnonzero(np.diff(lam[order]) > cluster_rtol * scale) + 1
    levels, mults, diag, rows, bound = [], [], [], [], 0.0
    for members in np.split(order, cuts):
        level = lam[members].mean()
        bound = max(bound, float(np.max(np.abs(lam[members] - level))))
        # F_j = U_j R_j, U_j: (m_j, t); the ignore as in _h_block_counts (numpy's stubs of qr)
        Rj: np.ndarray = np.linalg.qr(F[members], mode="r")  # type: ignore[assignment]
        t = Rj.shape[0]
        levels.append(level)
        mults.append(members.size - t)
        diag.append(np.full(t, level))
        rows.append(Rj)  # B_j = U_j^T F_j = R_j
    T = sum(block.shape[0] for block in rows)
    _memory.require(
        8.0 * 4 * T * T,
        "the deflated W block",
        f"T = {T} (K = {K}, r = {r}, G = {G})",
        "merge nearly equal eigenvalues (a larger cluster_rtol), reduce K, or skip the Hessian (--no-hessian)",
    )
    B = np.concatenate(rows)
    small = np.linalg.eigvalsh(np.diag(np.concatenate(diag)) - B @ B.T)
    values = np.concatenate([np.array(levels), small])
    counts_out = np.concatenate([np.array(mults, np.int64), np.ones(small.size, np.int64)])
    return values, counts_out, (d - r) * K, bound


def _softmax_covariance(weights) -> bool:
    """True when every per-sample logit Hessian is ``diag(p) - p p^T`` (CE / label smoothing: the losses whose
    :attr:`~ufm.losses.Loss.hessian` path is ``"softmax"``)."""
    return branch_spec(int(np.asarray(weights.loss_id))).hessian == "softmax"


def _structured_per_sample(params, labels, weights, block, regularized) -> EigenvalueCounts:
    """Any loss: per-sample logit Hessians ``S_i`` by ``jax.hessian`` (O(N K^2) memory).

    H block: eigenvalues of ``(1/N) R S_i R^T`` (``W = QR``; ``W S_i W^T`` for d <= K) plus
    ``N (d - K)`` zeros. W block: in the rank-r range of H (``g_i = U_r^T h_i``), the
    ``rK x rK`` matrix ``(1/N) sum_i (g_i g_i^T) kron S_i`` plus ``(d - r) K`` zeros.
    """
    d, K = params.W.shape
    N = params.H.shape[1]
    r = min(d, N)
    _memory.require(
        8.0 * (4 * N * K * K + (3 * (r * K) ** 2 if block == "W" else 0)),
        f"the structured {block} block for this loss (per-sample logit Hessians)",
        f"N = {N}, K = {K}, d = {d}",
        "reduce n; the grouped path covers ce/ls only",
    )
    S = np.asarray(logit_hessians(params, labels, weights))
    W, H = np.asarray(params.W, np.float64), np.asarray(params.H, np.float64)
    if block == "H":
        R = np.linalg.qr(W, mode="r") if d > K else W
        values = np.linalg.eigvalsh(np.einsum("ak,ikl,bl->iab", R, S, R) / N).ravel()
        zeros, shift = (N * (d - K) if d > K else 0), weights.lam_H
    else:
        U, sigma, _ = np.linalg.svd(H, full_matrices=False)
        r = int(np.sum(sigma > _RANK_RTOL * sigma[0])) if sigma.size and sigma[0] > 0 else 0
        G = U[:, :r].T @ H
        reduced = np.einsum("ai,bi,ikl->akbl", G, G, S).reshape(r * K, r * K) / N
        values, zeros, shift = np.linalg.eigvalsh(reduced), (d - r) * K, weights.lam_W
    values = np.sort(np.append(values, np.zeros(zeros)))
    if regularized:
        values = values + float(shift)
    return EigenvalueCounts(values, np.ones(values.size, np.int64), "structured")


def _structured(params, labels, weights, block, regularized, cluster_rtol=1e-10) -> EigenvalueCounts:
    if block == "b":
        values = _dense(params, labels, weights, block, regularized)
        return EigenvalueCounts(values, np.ones(values.size, np.int64), "structured")
    if not _softmax_covariance(weights):
        return _structured_per_sample(params, labels, weights, block, regularized)
    W, H, b = (np.asarray(x, np.float64) for x in params)
    N = H.shape[1]
    Hg, counts = _distinct_columns(H)
    P = softmax(W.T @ Hg + b[:, None], axis=0)  # (K, G): S_g = diag(p_g) - p_g p_g^T
    if block == "H":
        values, mults, zeros = _h_block_counts(W, P, counts, N)
        bound, shift = 0.0, weights.lam_H
    else:
        values, mults, zeros, bound = _w_block_counts(Hg, P, counts, N, cluster_rtol)
        shift = weights.lam_W
    values = np.append(values, 0.0)
    mults = np.append(mults, zeros)
    keep = mults > 0
    values, mults = values[keep], mults[keep]
    order = np.argsort(values, kind="stable")
    values, mults = values[order], mults[order]
    if regularized:
        values = values + float(shift)
    return EigenvalueCounts(values, mults, "structured", bound)


def block_spectrum(
    params: Params,
    labels,
    weights: Weights,
    block: str,
    *,
    regularized: bool = False,
    method: str = "auto",
    max_dense_entries: int = MAX_DENSE_ENTRIES,
    cluster_rtol: float = 1e-10,
) -> EigenvalueCounts:
    """Every eigenvalue of one Hessian block, as values with multiplicities (for blocks too
    large to list, e.g. the ``dN = 2.56e8``-dimensional H block at CIFAR-100 size).

    Same arguments as :func:`block_eigenvalues`; ``cluster_rtol`` (in [0, 1e-6]) is the
    relative gap below which intermediate eigenvalues of the W-block reduction are merged
    (the resulting shift is reported as ``error_bound``; 0 disables merging, exact but slow
    at collapsed points). Cost of ``"structured"``: O(dN log N) to group equal columns of H
    (G distinct ones), then O(G K^3) for the H block and O(G K r^2 + K r^3 + T^3) for the
    W block (r = rank H <= min(d, G), T as in ``_w_block_counts``).
    """
    _check_block_and_method(block, method)
    validation.interval("cluster_rtol", cluster_rtol, 0.0, 1e-6, low_open=False, high_open=False)
    method = _choose(params, block, method, max_dense_entries)
    if method == "dense":
        values = _dense(params, labels, weights, block, regularized)
        return EigenvalueCounts(values, np.ones(values.size, np.int64), "dense")
    return _structured(params, labels, weights, block, regularized, cluster_rtol)


def _check_block(block):
    if block not in BLOCKS:
        raise ValueError(f"block must be one of {BLOCKS}, got {block!r}")


def _check_block_and_method(block, method):
    _check_block(block)
    if method not in ("auto", "dense", "structured"):
        raise ValueError(f"method must be 'auto', 'dense' or 'structured', got {method!r}")


def dense_fits(params: Params, block: str, max_dense_entries: int = MAX_DENSE_ENTRIES) -> bool:
    """Whether the dense path suits this block: at most ``max_dense_entries`` entries, and ``jax.hessian``'s
    products at once (``size`` of them, :func:`ufm._memory.dense_hessian_bytes`) fit in the free memory now.
    The rule of ``method="auto"``; internal API (:mod:`ufm.last_layer` chooses its paths by it too)."""
    return _block_size(params, block) ** 2 <= max_dense_entries and _memory.fits(_dense_bytes(params, block))


def _choose(params, block, method, max_dense_entries):
    max_dense_entries = validation.integer("max_dense_entries", max_dense_entries, 1)
    entries = _block_size(params, block) ** 2
    if method == "auto":
        method = "dense" if dense_fits(params, block, max_dense_entries) else "structured"
    if method == "dense" and entries > max_dense_entries:
        raise ValueError(
            f"the dense {block} block would have {entries:.3g} entries > max_dense_entries = "
            f"{max_dense_entries:.3g}; use method='structured'"
        )
    return method


def block_eigenvalues(
    params: Params,
    labels,
    weights: Weights,
    block: str,
    *,
    regularized: bool = False,
    method: str = "auto",
    max_dense_entries: int = MAX_DENSE_ENTRIES,
) -> BlockEigenvalues:
    """Every eigenvalue of one Hessian block at ``params``, ascending.

    Args:
        params: the point ``(W: (d, K), H: (d, N), b: (K,))``.
        labels: ``(N,)`` integer classes. weights: delta and the lambdas.
        block: ``"W"``, ``"H"`` or ``"b"``.
        regularized: blocks of L (True) or of the loss term phi (False).
        method: ``"dense"``, ``"structured"`` or ``"auto"`` (dense when the
            block has at most ``max_dense_entries`` entries, else structured).

    Raises:
        ValueError: unknown block/method, or ``"dense"`` asked for a block
            larger than ``max_dense_entries`` (with the size, and the advice to
            use ``"structured"``).
    """
    _check_block_and_method(block, method)
    method = _choose(params, block, method, max_dense_entries)
    if method == "dense":
        return BlockEigenvalues(_dense(params, labels, weights, block, regularized), method)
    spectrum = _structured(params, labels, weights, block, regularized, cluster_rtol=0.0)
    return BlockEigenvalues(spectrum.expanded(), method)


def hessian_vector_product(params: Params, labels, weights: Weights, block: str, *, regularized: bool = False):
    """``v -> (grad^2_block f) v`` on flat vectors, forward-over-reverse, jit-compiled (once per shape
    and block, whatever the point)."""
    _check_block(block)
    loss_id = int(weights.loss_id)

    def hvp(v):
        return _block_hvp(params, labels, weights, v, block=block, regularized=bool(regularized), loss_id=loss_id)

    return hvp


def extreme_eigenvalues(
    params: Params,
    labels,
    weights: Weights,
    block: str,
    *,
    regularized: bool = False,
    k: int = 1,
    which: str = "LA",
    tol: float = 1e-12,
) -> np.ndarray:
    """``k`` extreme eigenvalues of a block by Lanczos (``eigsh``) on Hessian-vector products.

    ``which="LA"``: largest algebraic (e.g. the largest curvature, for a safe GD step
    ``< 2 / lambda_max``). Never forms the block; memory O(block size).
    """
    _check_block(block)
    size = _block_size(params, block)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k < size:
        raise ValueError(f"k must be an integer in [1, {size - 1}] (the {block} block has size {size}), got {k!r}")
    if which not in _WHICH:
        raise ValueError(f"which must be one of {_WHICH}, got {which!r}")
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 0.0 <= tol < 1.0:
        raise ValueError(f"tol must be a number in [0, 1), got {tol!r}")
    hvp = hessian_vector_product(params, labels, weights, block, regularized=regularized)
    dtype = np.dtype(getattr(params, block).dtype)
    import scipy.sparse.linalg  # on first use: scipy adds ~0.1 s to every command line's start-up

    operator = scipy.sparse.linalg.LinearOperator(
        (size, size), matvec=lambda v: np.asarray(hvp(jnp.asarray(v, dtype=dtype))), dtype=dtype
    )
    values = scipy.sparse.linalg.eigsh(
        operator, k=k, which=which, tol=tol, return_eigenvectors=False, v0=np.ones(size, dtype=dtype)
    )
    return np.sort(values)


def eigenvalue_array(values) -> np.ndarray:
    """``values`` as a 1-D float64 array of finite real numbers, or a ``ValueError`` naming ``values``."""
    return validation.finite_array("values", validation.array("values", values, 1))


def nonzero_condition_number(values: np.ndarray, rtol: float = NONZERO_RTOL) -> float:
    """Largest over smallest eigenvalue among those ``> rtol * max`` (NaN when none is positive)."""
    values = eigenvalue_array(values)
    rtol = validation.interval("rtol", rtol, 0.0, 1.0, low_open=False)
    top = values.max() if values.size else 0.0
    if not top > 0:
        return float("nan")
    nonzero = values[values > rtol * top]
    return float(nonzero.max() / nonzero.min())


def distinct_eigenvalues(values: np.ndarray, rtol: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """Group sorted eigenvalues whose gaps are below ``rtol * max|values|``: (means, counts).

    Values below ``NONZERO_RTOL * max`` are reported as exact zeros.
    """
    values = np.sort(eigenvalue_array(values))
    rtol = validation.interval("rtol", rtol, 0.0, 1.0, low_open=False)
    if values.size == 0:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    scale = np.max(np.abs(values)) if values.size else 0.0
    values = np.where(np.abs(values) <= NONZERO_RTOL * scale, 0.0, values)
    breaks = np.flatnonzero(np.diff(values) > rtol * scale) + 1
    groups = np.split(values, breaks)
    unit = scale if scale > 0 else 1.0  # means of values / scale: no overflow near 1e308
    return np.array([unit * np.mean(g / unit) for g in groups]), np.array([g.size for g in groups])


def spectrum_bytes(K: int, N: int, d: int, groups: int, loss: str = "ls") -> float:
    """Estimated peak bytes of :func:`block_spectrum` for the W and H blocks on the structured path (the one
    :func:`ufm.compare.compare` takes; ``groups`` distinct feature columns: K at a ``"reduced"`` solution, N
    otherwise) at a near-collapsed point, with the deflated W block at its worst case ``T = r K`` (at K = 200 a reduced
    solution to tol 1e-10 left T = rK = 40000, not the 2K of an exact collapse).
    Focal and MSE use the per-sample path: ``4 N K^2`` plus ``3 (r K)^2`` for the W block."""
    r, m = min(d, groups), min(d, K)
    if loss_spec(loss).hessian == "per_sample":
        return 8.0 * (4.0 * N * K * K + 3.0 * (r * K) ** 2 + float(d) * N)
    T = r * K  # the deflation may leave up to min(m_j, G) per cluster: measured T = rK at K = 200 (tol 1e-10)
    w_block = 8.0 * (2.0 * K * r * groups + 3.0 * K * r * r + 2.0 * r * groups + 4.0 * T * T)
    h_block = 8.0 * (2.0 * groups * m + 4.0 * m * m)
    return max(w_block, h_block) + 8.0 * (float(d) * N + groups)  # + the float64 copy of H and the grouping
