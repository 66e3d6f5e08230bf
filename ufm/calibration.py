"""Calibration of a classifier's outputs: ECE (equal-width and equal-mass bins), classwise ECE, NLL,
Brier score, reliability diagrams, and temperature scaling. Pure numpy, framework-agnostic.

Inputs (the frameworks' layout, as :func:`ufm.analyze`): ``logits: (N, K)`` of any real dtype (row i
= the logits z_i of sample i; computed on in float64, one chunk of rows at a time) and integer
``labels: (N,)`` in ``[0, K)`` (integral floats are accepted). Features and a classifier give the
logits through :func:`logits_from_features` (``features: (N, d)``, ``weight: (K, d)``,
``bias: (K,)``). Every function takes ``temperature`` T > 0: the logits are divided by T before the
softmax ``p_i = softmax(z_i / T)``. The prediction is ``argmax_k z_ik`` (ties: the lowest index),
its confidence ``max_k p_ik``.

Definitions and sources:

* ECE, Guo, Pleiss, Sun & Weinberger 2017, "On Calibration of Modern Neural Networks", eq. 3:
  M equal-width bins ``B_m = ((m-1)/M, m/M]`` over the confidence (edges ``np.linspace(0, 1, M+1)``;
  the first bin is closed, ``[0, 1/M]``, so that no sample is lost, although a confidence of 0
  cannot occur: it is at least 1/K), ``ECE = sum_m |B_m|/N |acc(B_m) - conf(B_m)|``.
  Guo et al. use M = 15 (the default here); Guo, Ross, Zhao, Andriopoulos, Ling, Xu & Dong 2024,
  "Cross entropy versus label smoothing: a neural collapse perspective", §3.3, also use M = 20.
* Adaptive ECE: the same sum over M equal-mass bins (the N confidences sorted, cut into M groups
  whose sizes differ by at most one), Nixon, Dusenberry, Zhang, Jerfel & Tran 2019, "Measuring
  Calibration in Deep Learning", adaptive binning (their ACE also averages over classes; this does not).
* Classwise ECE (static calibration error): Kull et al. 2019, "Beyond temperature scaling", and
  Nixon et al. 2019 (SCE): for each class k, equal-width bins over ``p_ik`` of all N samples,
  ``sum_m |B_km|/N |mean 1[y_i = k] - mean p_ik|``, averaged over the K classes.
* NLL: ``mean_i -log p_{i, y_i}``, by a stable log-softmax.
* Brier score: Brier 1950, the multiclass form ``mean_i sum_k (p_ik - 1[y_i = k])^2`` (in [0, 2]);
  some authors divide by K, this module does not.
* Temperature scaling (Guo et al. 2017, §4.2): the T minimising the NLL on a validation split.

Streaming: every statistic except the adaptive ECE is a sum over samples, gathered in chunks of
``chunk_size`` rows (default :func:`default_chunk_size`, ~64 MB of float64 work); only one chunk is
ever copied to float64, so a memory-mapped ``np.load(..., mmap_mode="r")`` array of any length can be
read (its pages stay in the page cache, counted in the resident memory of the process while mapped).
:class:`BinStatistics` holds the sums; they are additive (``merge`` / ``+`` / ``sum``), so statistics
of batches merged equal those of the whole data to rounding. The memory of each computation is
estimated before allocating (:func:`theory.validation.allocation`, host memory: this is numpy work).

Every argument is checked; a bad one raises a ``ValueError`` that names it.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from theory import validation
from theory.softmax import softmax

__all__ = [
    "BinStatistics",
    "ECETemperatureFit",
    "Reliability",
    "TemperatureFit",
    "adaptive_ece",
    "bin_statistics",
    "brier",
    "classwise_ece",
    "ece",
    "ece_temperature",
    "fit_temperature",
    "logits_from_features",
    "nll",
    "reliability_diagram",
]

#: bytes of float64 work per chunk targeted by the automatic chunk size
CHUNK_BYTES = 64 * 2**20
#: (rows, K) arrays of 8 bytes held while one chunk is processed: its float64 logits (then its
#: probabilities), the bin of every probability (int64), one temporary
WORK_COPIES = 3
DEFAULT_BINS = 15
DEFAULT_BOUNDS = (1e-2, 1e2)


def default_chunk_size(K: int) -> int:
    """Rows per chunk so that one chunk's float64 work (``WORK_COPIES`` arrays of ``(rows, K)``) is ~CHUNK_BYTES."""
    return max(1, CHUNK_BYTES // (8 * WORK_COPIES * K))


# ----------------------------------------------------------------------------- validation


def _labels(labels, N: int, K: int) -> np.ndarray:
    array = validation.array("labels", labels, 1, shape="(N,)", nonempty=True)
    if array.shape != (N,):
        raise ValueError(f"labels must have shape (N,) = ({N},) (N = rows of logits), got {array.shape}")
    return validation.class_labels("labels", array, K, K_is="columns of logits")


def _inputs(logits, labels, temperature, chunk_size) -> tuple[np.ndarray, np.ndarray, float, int]:
    """The checked ``(logits, labels, temperature, rows per chunk)``; the chunk's work is checked against memory."""
    z = validation.array("logits", logits, 2, shape="(N, K)", nonempty=True)
    N, K = z.shape
    y = _labels(labels, N, K)
    T = validation.interval("temperature", temperature, 0.0, low_open=True)
    chunk = default_chunk_size(K) if chunk_size is None else validation.integer("chunk_size", chunk_size, 1)
    chunk = min(chunk, N)
    validation.allocation("the work on one chunk of logits", WORK_COPIES * chunk * K, f"chunk_size = {chunk}, K = {K}")
    return z, y, T, chunk


def _edges(n_bins, K: int, classwise: bool) -> np.ndarray:
    M = validation.integer("n_bins", n_bins, 1)
    sums = 8.0 * M + (6.0 * K * M if classwise else 0.0)  # the sums and one chunk's bincounts
    validation.allocation("the bin statistics", sums, f"n_bins = {M}, K = {K}")
    return np.linspace(0.0, 1.0, M + 1)


def _bounds(bounds) -> tuple[float, float]:
    try:
        low, high = bounds
    except (TypeError, ValueError):
        raise ValueError(f"bounds must be two temperatures (low, high) with 0 < low < high, got {bounds!r}") from None
    low = validation.interval("bounds", low, 0.0, low_open=True)
    high = validation.interval("bounds", high, low, low_open=True, shown=f"{high!r} (not above low = {low!r})")
    return low, high


# ----------------------------------------------------------------------------- streaming


def _chunks(z: np.ndarray, y: np.ndarray, T: float, chunk: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(float64 copy of z[lo:hi] / T, y[lo:hi])`` for consecutive chunks; refuses NaN/inf and overflow."""
    for lo in range(0, z.shape[0], chunk):
        u = np.array(z[lo : lo + chunk], dtype=np.float64)
        if not np.all(np.isfinite(u)):
            row = lo + int(np.argwhere(~np.isfinite(u))[0][0])
            raise ValueError(f"logits must be finite, got NaN or inf in row {row}")
        if T != 1.0:
            with np.errstate(over="ignore"):  # overflow is refused just below
                u /= T
            if not np.all(np.isfinite(u)):
                raise ValueError(
                    f"logits / temperature overflows float64 (temperature = {T!r}); the logits are too large"
                )
        yield u, y[lo : lo + chunk]


def _softmax_inplace(u: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Turn ``u`` (rows, K) into its row softmax in place; return ``(-log p_y, argmax, rows)``."""
    rows = np.arange(u.shape[0])
    pred = np.argmax(u, axis=1)
    with np.errstate(over="ignore"):  # a difference beyond float64: an infinite NLL, refused below
        shift_y = u[rows, y] - u[rows, pred]  # u_y - max u <= 0
    _, s = softmax(u, axis=1, out=u, sums=True)
    nll = np.log(s) - shift_y
    if not np.all(np.isfinite(nll)):
        raise ValueError("logits: a logit difference overflows float64 (the negative log-likelihood is infinite)")
    return nll, pred, rows


def _bin(edges: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Index m of the bin ``(edges[m], edges[m+1]]`` of each entry of ``x`` (the first bin also holds 0)."""
    index = np.searchsorted(edges, x, side="left")
    index -= 1
    return np.clip(index, 0, edges.size - 2, out=index)


def _readonly(*arrays):
    for array in arrays:
        if array is not None:
            array.setflags(write=False)


@dataclass(frozen=True, eq=False)
class Reliability:
    """A reliability diagram's data: per confidence bin ``(lower, upper]`` (the first ``[0, upper]``),
    the mean confidence, the accuracy and the number of samples. All arrays ``(n_bins,)``; empty bins
    have ``count`` 0 and NaN ``confidence`` and ``accuracy``."""

    lower: np.ndarray
    upper: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    count: np.ndarray


@dataclass(frozen=True, eq=False)
class BinStatistics:
    """Additive sums from which every streamable calibration measure follows.

    Fields (float64 sums, int64 counts, read-only arrays; M = n_bins, K = classes):

    * ``edges: (M+1,)`` the bin edges ``np.linspace(0, 1, M+1)``; ``temperature`` the T they were taken at.
    * ``count, confidence_sum, correct_sum: (M,)``: per confidence bin, the samples, the sum of
      their confidences ``max_k p_ik``, and how many were predicted right.
    * ``n``: samples; ``nll_sum``: ``sum_i -log p_{i,y_i}``; ``brier_sum``: ``sum_i sum_k (p_ik - 1[y_i=k])^2``.
    * ``class_count, class_probability_sum, class_hit_sum: (K, M)`` (None when not gathered): per class
      k and bin of ``p_ik``, the samples, the sum of ``p_ik``, and how many had label k.

    ``a.merge(b)`` (also ``a + b`` and ``sum([...])``) adds the sums of two disjoint sets of samples
    taken with the same edges, temperature and classes.
    """

    edges: np.ndarray
    temperature: float
    count: np.ndarray
    confidence_sum: np.ndarray
    correct_sum: np.ndarray
    n: int
    nll_sum: float
    brier_sum: float
    class_count: np.ndarray | None = None
    class_probability_sum: np.ndarray | None = None
    class_hit_sum: np.ndarray | None = None

    def __post_init__(self):
        _readonly(self.edges, self.count, self.confidence_sum, self.correct_sum)
        _readonly(self.class_count, self.class_probability_sum, self.class_hit_sum)

    @property
    def n_bins(self) -> int:
        return self.count.size

    def merge(self, other: BinStatistics) -> BinStatistics:
        """The statistics of both sets of samples; ``other`` must have the same edges, temperature and classes."""
        if not isinstance(other, BinStatistics):
            raise ValueError(f"other must be a BinStatistics, got {type(other).__name__}")
        if self.edges.shape != other.edges.shape or not np.array_equal(self.edges, other.edges):
            raise ValueError(f"other has other bins ({other.n_bins}) than these ({self.n_bins})")
        if self.temperature != other.temperature:
            raise ValueError(f"other was taken at temperature {other.temperature!r}, these at {self.temperature!r}")
        mine, theirs = self.class_count, other.class_count
        shape = lambda c: "no classwise sums" if c is None else f"classwise sums of shape {c.shape}"
        if shape(mine) != shape(theirs):
            raise ValueError(f"other has {shape(theirs)}, these have {shape(mine)}")
        add = lambda a, b: None if a is None else a + b
        return BinStatistics(
            self.edges,
            self.temperature,
            self.count + other.count,
            self.confidence_sum + other.confidence_sum,
            self.correct_sum + other.correct_sum,
            self.n + other.n,
            self.nll_sum + other.nll_sum,
            self.brier_sum + other.brier_sum,
            add(self.class_count, other.class_count),
            add(self.class_probability_sum, other.class_probability_sum),
            add(self.class_hit_sum, other.class_hit_sum),
        )

    def __add__(self, other: BinStatistics) -> BinStatistics:
        return self.merge(other)

    def __radd__(self, other) -> BinStatistics:
        """``0 + stats`` is ``stats``, so that ``sum(list_of_statistics)`` works."""
        return self if isinstance(other, numbers.Integral) and other == 0 else self.merge(other)

    @property
    def ece(self) -> float:
        """``sum_m |B_m|/N |acc(B_m) - conf(B_m)| = sum_m |correct_m - confidence_sum_m| / N`` (Guo et al. eq. 3)."""
        return float(np.abs(self.correct_sum - self.confidence_sum).sum() / self.n)

    @property
    def classwise_ece(self) -> float:
        """``(1/K) sum_k sum_m |hits_km - probability_sum_km| / N`` (Kull et al. 2019; Nixon et al. 2019 SCE)."""
        if self.class_probability_sum is None or self.class_hit_sum is None:
            raise ValueError(
                "classwise_ece needs the classwise sums: gather them with bin_statistics(..., classwise=True)"
            )
        K = self.class_hit_sum.shape[0]
        return float(np.abs(self.class_hit_sum - self.class_probability_sum).sum() / (K * self.n))

    @property
    def nll(self) -> float:
        return self.nll_sum / self.n

    @property
    def brier(self) -> float:
        return self.brier_sum / self.n

    @property
    def accuracy(self) -> float:
        return float(self.correct_sum.sum() / self.n)

    def reliability(self) -> Reliability:
        """Per bin ``(lower, upper]``: mean confidence, accuracy (NaN where empty) and count."""
        with np.errstate(invalid="ignore", divide="ignore"):
            confidence = np.where(self.count > 0, self.confidence_sum / self.count, np.nan)
            accuracy = np.where(self.count > 0, self.correct_sum / self.count, np.nan)
        return Reliability(self.edges[:-1].copy(), self.edges[1:].copy(), confidence, accuracy, self.count.copy())


def _chunk_statistics(u: np.ndarray, y: np.ndarray, edges: np.ndarray, T: float, classwise: bool) -> BinStatistics:
    """The statistics of one chunk; ``u`` (its float64 logits / T) is overwritten."""
    M, K = edges.size - 1, u.shape[1]
    nll, pred, rows = _softmax_inplace(u, y)
    p = u
    confidence = p[rows, pred]
    p_y = p[rows, y]
    brier = np.einsum("ij,ij->i", p, p) - 2.0 * p_y + 1.0
    index = _bin(edges, confidence)
    correct = pred == y
    class_sums: tuple = (None, None, None)
    if classwise:
        keys = _bin(edges, p)
        keys += np.arange(K) * M
        flat = keys.ravel()
        class_sums = (
            np.bincount(flat, minlength=K * M).reshape(K, M),
            np.bincount(flat, weights=p.ravel(), minlength=K * M).reshape(K, M),
            np.bincount(keys[rows, y], minlength=K * M).reshape(K, M),
        )
    return BinStatistics(
        edges,
        T,
        np.bincount(index, minlength=M),
        np.bincount(index, weights=confidence, minlength=M),
        np.bincount(index[correct], minlength=M),
        int(y.size),
        float(nll.sum()),
        float(brier.sum()),
        *class_sums,
    )


def bin_statistics(
    logits, labels, *, n_bins=DEFAULT_BINS, temperature=1.0, chunk_size=None, classwise: bool = True
) -> BinStatistics:
    """The additive calibration sums of ``logits: (N, K)`` against ``labels: (N,)``, streamed in chunks.

    Args:
        logits: ``(N, K)``, any real dtype (a memory-mapped array is read ``chunk_size`` rows at a time).
        labels: ``(N,)`` integers in ``[0, K)``.
        n_bins: M >= 1 equal-width bins over [0, 1] (the first closed, ``[0, 1/M]``).
        temperature: T > 0; the softmax is taken of ``logits / T``.
        chunk_size: rows per chunk (default :func:`default_chunk_size`: ~64 MB of float64 work).
        classwise: also gather the ``(K, M)`` per-class sums of the classwise ECE (one more pass of
            binning over all N K probabilities: about half the time; off for ECE, NLL and Brier only).

    Returns:
        :class:`BinStatistics`; ``.ece``, ``.classwise_ece``, ``.nll``, ``.brier``, ``.accuracy``,
        ``.reliability()`` follow from it, and statistics of disjoint batches merge exactly (to rounding).
    """
    z, y, T, chunk = _inputs(logits, labels, temperature, chunk_size)
    edges = _edges(n_bins, z.shape[1], classwise)
    _readonly(edges)
    parts = (_chunk_statistics(u, yc, edges, T, bool(classwise)) for u, yc in _chunks(z, y, T, chunk))
    total = next(parts)
    for part in parts:
        total = total.merge(part)
    return total


def ece(logits, labels, *, n_bins=DEFAULT_BINS, temperature=1.0, chunk_size=None) -> float:
    """Expected calibration error with M equal-width confidence bins (Guo et al. 2017, eq. 3; module docstring).

    ``logits: (N, K)``, ``labels: (N,)``; the confidence of sample i is ``max_k softmax(z_i / T)_k``.
    """
    return bin_statistics(
        logits, labels, n_bins=n_bins, temperature=temperature, chunk_size=chunk_size, classwise=False
    ).ece


def classwise_ece(logits, labels, *, n_bins=DEFAULT_BINS, temperature=1.0, chunk_size=None) -> float:
    """Classwise ECE / static calibration error (Kull et al. 2019; Nixon et al. 2019): for each class k,
    M equal-width bins over ``p_ik`` of all N samples, ``sum_m |B_km|/N |mean 1[y=k] - mean p_ik|``,
    averaged over the K classes. ``logits: (N, K)``, ``labels: (N,)``."""
    return bin_statistics(logits, labels, n_bins=n_bins, temperature=temperature, chunk_size=chunk_size).classwise_ece


def nll(logits, labels, *, temperature=1.0, chunk_size=None) -> float:
    """Mean negative log-likelihood ``mean_i -log softmax(z_i / T)_{y_i}`` (stable log-softmax)."""
    return bin_statistics(logits, labels, n_bins=1, temperature=temperature, chunk_size=chunk_size, classwise=False).nll


def brier(logits, labels, *, temperature=1.0, chunk_size=None) -> float:
    """Multiclass Brier score (Brier 1950) ``mean_i sum_k (p_ik - 1[y_i = k])^2``, in [0, 2]; not divided by K."""
    return bin_statistics(
        logits, labels, n_bins=1, temperature=temperature, chunk_size=chunk_size, classwise=False
    ).brier


def reliability_diagram(logits, labels, *, n_bins=DEFAULT_BINS, temperature=1.0, chunk_size=None) -> Reliability:
    """The data of a reliability diagram (Guo et al. 2017, Fig. 1): per equal-width confidence bin, its
    bounds, mean confidence, accuracy and count (:class:`Reliability`; empty bins: NaN, count 0). No plotting."""
    return bin_statistics(
        logits, labels, n_bins=n_bins, temperature=temperature, chunk_size=chunk_size, classwise=False
    ).reliability()


def adaptive_ece(logits, labels, *, n_bins=DEFAULT_BINS, temperature=1.0, chunk_size=None) -> float:
    """ECE with M equal-mass bins (Nixon et al. 2019, adaptive binning): the N confidences sorted (stable
    sort: ties keep the sample order) and cut into M consecutive groups of ``floor(N/M)`` or ``ceil(N/M)``
    samples (groups ``[floor(m N / M), floor((m+1) N / M))``; when M > N some are empty and add nothing);
    ``sum_m |B_m|/N |acc(B_m) - conf(B_m)|``.

    Not streamable exactly (the bins depend on all N confidences): the logits are still read in chunks,
    but all N confidences, hits and the sort order are held (17 N bytes, checked against free memory).
    """
    z, y, T, chunk = _inputs(logits, labels, temperature, chunk_size)
    N = z.shape[0]
    M = validation.integer("n_bins", n_bins, 1)
    validation.allocation("the adaptive ECE's confidences and sort order", 2.2 * N + M, f"N = {N}, n_bins = {M}")
    confidence, correct = np.empty(N), np.empty(N, dtype=bool)
    lo = 0
    for u, yc in _chunks(z, y, T, chunk):
        _, pred, rows = _softmax_inplace(u, yc)
        confidence[lo : lo + yc.size] = u[rows, pred]
        correct[lo : lo + yc.size] = pred == yc
        lo += yc.size
    order = np.argsort(confidence, kind="stable")
    cuts = np.arange(M + 1) * N // M
    confidence_cum = np.concatenate(([0.0], np.cumsum(confidence[order])))
    correct_cum = np.concatenate(([0], np.cumsum(correct[order], dtype=np.int64)))
    return float(np.abs(np.diff(correct_cum[cuts]) - np.diff(confidence_cum[cuts])).sum() / N)


def logits_from_features(features, weight, bias=None) -> np.ndarray:
    """Logits ``z_i = weight h_i + bias`` in float64: ``features: (N, d)``, ``weight: (K, d)`` (as
    ``torch.nn.Linear`` stores it), ``bias: (K,)`` or None (zeros). Returns ``(N, K)``, the whole
    array (for data larger than memory, compute the logits batch by batch and merge :class:`BinStatistics`)."""
    H = validation.array("features", features, 2, shape="(N, d)", nonempty=True)
    W = validation.array("weight", weight, 2, shape="(K, d)", nonempty=True)
    N, d = H.shape
    if W.shape[1] != d:
        raise ValueError(f"weight must have shape (K, d) with d = {d} (columns of features), got {W.shape}")
    K = W.shape[0]
    b = np.zeros(K) if bias is None else validation.array("bias", bias, 1, shape="(K,)", nonempty=True)
    if b.shape != (K,):
        raise ValueError(f"bias must have shape (K,) = ({K},) (K = rows of weight), got {b.shape}")
    validation.allocation("the logits", float(N) * (K + d), f"N = {N}, d = {d}, K = {K} (features, weight)")
    H, W, b = (validation.finite_array(name, x) for name, x in (("features", H), ("weight", W), ("bias", b)))
    with np.errstate(over="ignore", invalid="ignore"):  # refused just below
        z = H @ W.T + b
    if not np.all(np.isfinite(z)):
        raise ValueError("features and weight give logits that overflow float64")
    return z


# ----------------------------------------------------------------------------- temperature scaling


@dataclass(frozen=True)
class TemperatureFit:
    """The NLL-optimal temperature (:func:`fit_temperature`).

    ``temperature``: T (always finite, inside the bounds); ``nll_before``: NLL at T = 1;
    ``nll_after``: NLL at T; ``iterations``: passes over the data (each one evaluation of the NLL and its
    first two derivatives); ``converged``: an interior minimizer was found to the tolerance;
    ``at_bound``: the NLL still decreases towards the bound T sits on (the minimizer lies outside the
    bounds; ``converged`` is then False).
    """

    temperature: float
    nll_before: float
    nll_after: float
    iterations: int
    converged: bool
    at_bound: bool


@dataclass(frozen=True)
class ECETemperatureFit:
    """The ECE-minimising temperature found by :func:`ece_temperature`: ``temperature``, ``ece_before``
    (T = 1), ``ece_after`` (at T), ``evaluations`` (passes over the data), ``at_bound`` (T is a bound)."""

    temperature: float
    ece_before: float
    ece_after: float
    evaluations: int
    at_bound: bool


def _nll_derivatives(z: np.ndarray, y: np.ndarray, T: float, chunk: int) -> tuple[float, float, float, float]:
    """At ``beta = 1/T`` (p_i = softmax(beta z_i)): the NLL ``f``, ``f' = dNLL/dbeta = mean_i E_p[z_i - z_iy]``,
    ``f'' = mean_i Var_p(z_i)``, and the rounding scale of ``f'``, ``mean_i E_p|z_i - z_iy|``. The
    differences ``z_ik - z_iy`` are taken first, so ``f'`` keeps its relative precision where it is tiny
    (well-separated data at small T)."""
    f = g = h = scale = 0.0
    for u, yc in _chunks(z, y, T, chunk):
        rows = np.arange(yc.size)
        with np.errstate(over="ignore", invalid="ignore"):  # a difference beyond float64: refused below
            u -= u[rows, yc][:, None]  # u_ik - u_iy
            top = u.max(axis=1)
            p = np.subtract(u, top[:, None])
        np.exp(p, out=p)
        s = p.sum(axis=1)
        p /= s[:, None]
        nll = np.log(s) + top
        if not np.all(np.isfinite(nll)):
            raise ValueError("logits: a logit difference overflows float64 (the negative log-likelihood is infinite)")
        mean = np.einsum("ij,ij->i", p, u)
        scale += float(np.einsum("ij,ij->", p, np.abs(u)))
        u -= mean[:, None]
        u *= u
        f += float(nll.sum())
        g += float(mean.sum())
        h += float(np.einsum("ij,ij->", p, u))
    N = z.shape[0]
    return f / N, g * T / N, h * T * T / N, scale * T / N


@dataclass
class _Point:
    """One evaluation of the NLL at ``beta = 1/T``: value, first and second derivative in beta, rounding scale."""

    beta: float
    f: float
    g: float
    h: float
    scale: float

    @property
    def flat(self) -> bool:
        """``f'`` is zero to rounding (its terms summed with relative error ~eps)."""
        return bool(abs(self.g) <= 64 * np.finfo(float).eps * self.scale)


def fit_temperature(
    logits, labels, *, bounds=DEFAULT_BOUNDS, tol=1e-10, max_iterations=100, chunk_size=None
) -> TemperatureFit:
    """Temperature scaling (Guo et al. 2017, §4.2): the T in ``bounds`` minimising the NLL of ``logits / T``.

    ``logits: (N, K)`` and ``labels: (N,)`` of a validation split. With ``beta = 1/T`` the NLL
    ``f(beta) = mean_i [logsumexp(beta z_i) - beta z_iy]`` is convex (log-sum-exp of a linear function
    minus a linear one), with ``f'(beta) = mean_i (E_p[z_i] - z_iy)`` and ``f''(beta) = mean_i Var_p(z_i)
    >= 0``, strictly positive unless every row's logits are all equal: the minimizer is unique, and it
    is found by Newton's method on ``beta`` with the exact derivatives inside a bracket on which
    ``f'`` changes sign (Press et al., Numerical Recipes, ``rtsafe``: a geometric bisection step
    where Newton would leave the bracket or not halve the step before last), one streamed pass over
    the data per iteration: T = 1 first (``nll_before``), then the bound towards which the NLL
    decreases (it closes the bracket, or shows that the minimizer lies beyond it). Stops when the
    step or the bracket is below ``tol`` relative to beta (T is then known to ~``tol`` relative),
    or when ``f'`` is zero to rounding.

    If ``f'`` keeps its sign up to a bound, the minimizer over the bounds is that bound: it is returned
    with ``at_bound=True`` (``converged=False``): e.g. data that are all classified right with margins
    want T -> 0. If the NLL does not depend on T (every row constant), T = 1 (clipped to the bounds).

    Args:
        bounds: ``(low, high)``, 0 < low < high: the temperatures searched.
        tol: relative tolerance in T, in (0, 1).
        max_iterations: passes over the data at most (``converged=False`` when reached).
        chunk_size: rows per chunk (default :func:`default_chunk_size`).
    """
    z, y, _, chunk = _inputs(logits, labels, 1.0, chunk_size)
    t_low, t_high = _bounds(bounds)
    tol = validation.interval("tol", tol, 0.0, 1.0, low_open=True)
    max_iterations = validation.integer("max_iterations", max_iterations, 1)
    passes = 0

    def at(beta: float) -> _Point:
        nonlocal passes
        passes += 1
        return _Point(beta, *_nll_derivatives(z, y, 1.0 / beta, chunk))

    first = at(1.0)
    b_low, b_high = 1.0 / t_high, 1.0 / t_low
    point = first if b_low <= 1.0 <= b_high else at(min(max(1.0, b_low), b_high))
    converged = at_bound = False
    if point.flat:
        converged = True
    else:
        far = b_high if point.g < 0 else b_low  # the bound the NLL decreases towards
        other = point if point.beta == far or passes >= max_iterations else at(far)
        if other is point:  # at the bound already, or no pass left
            at_bound = point.beta == far
        elif other.flat or (other.g < 0) == (point.g < 0):
            point, at_bound = other, True  # f' keeps its sign (or vanishes to rounding) up to the bound
        else:
            lo, hi = sorted((point.beta, other.beta))
            point = min(point, other, key=lambda q: abs(q.g) / q.h if q.h > 0 else math.inf)
            step = step_old = hi - lo
            while not converged and passes < max_iterations:
                newton = -point.g / point.h if point.h > 0 and math.isfinite(point.h) else math.nan
                step_old, step = step, newton
                if not lo < point.beta + newton < hi or abs(newton) > 0.5 * abs(step_old):
                    step = math.sqrt(lo * hi) - point.beta  # geometric bisection
                point = at(point.beta + step)
                if point.g < 0:
                    lo = point.beta
                else:
                    hi = point.beta
                converged = point.flat or abs(step) <= tol * point.beta or hi - lo <= tol * point.beta
    return TemperatureFit(1.0 / point.beta, first.f, point.f, passes, converged, at_bound)


def ece_temperature(
    logits, labels, *, n_bins=DEFAULT_BINS, bounds=DEFAULT_BOUNDS, grid=65, chunk_size=None
) -> ECETemperatureFit:
    """The temperature minimising the ECE (equal-width bins), for comparison with :func:`fit_temperature`.

    The ECE is piecewise smooth and discontinuous in T (a confidence crossing a bin edge moves a sample
    between bins), so its minimizer is in general not unique and a local method alone may stop anywhere.
    What this computes: the ECE at ``grid`` log-spaced temperatures spanning ``bounds`` (and at T = 1
    when it lies inside them); then a bounded Brent search (``scipy.optimize.minimize_scalar``,
    ``method="bounded"``, over log T, ``xatol=1e-6``) between the grid neighbours of the best grid point;
    the better of the two. Hence ``ece_after <= ece_before`` when T = 1 is inside the bounds. One pass
    over the data per evaluation (``grid`` + the refinement's, ~20).
    """
    z, y, _, chunk = _inputs(logits, labels, 1.0, chunk_size)
    n_bins = validation.integer("n_bins", n_bins, 1)
    t_low, t_high = _bounds(bounds)
    grid = validation.integer("grid", grid, 2, 10_000)
    evaluations = 0

    def value(T: float) -> float:
        nonlocal evaluations
        evaluations += 1
        return ece(z, y, n_bins=n_bins, temperature=T, chunk_size=chunk)

    ece_before = value(1.0)
    temperatures = np.geomspace(t_low, t_high, grid)
    temperatures[[0, -1]] = t_low, t_high
    if t_low <= 1.0 <= t_high:
        temperatures = np.unique(np.append(temperatures, 1.0))
    values = [ece_before if T == 1.0 else value(float(T)) for T in temperatures]
    best = int(np.argmin(values))
    T, best_value = float(temperatures[best]), values[best]
    from scipy.optimize import minimize_scalar  # on first use: scipy is slow to import

    left, right = temperatures[max(best - 1, 0)], temperatures[min(best + 1, temperatures.size - 1)]
    refined = minimize_scalar(
        lambda s: value(math.exp(s)),
        bounds=(math.log(left), math.log(right)),
        method="bounded",
        options={"xatol": 1e-6},
    )
    if refined.fun < best_value:
        T = min(max(math.exp(refined.x), t_low), t_high)
        best_value = value(T)
    return ECETemperatureFit(T, ece_before, best_value, evaluations, T in (t_low, t_high))
