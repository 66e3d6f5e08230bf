"""Streaming neural-collapse tracker for training loops: exact float64 statistics, batch by batch.

::

    tracker = CollapseTracker(K, d)
    for features, labels in batches:          # (B, d) penultimate features, (B,) integer labels
        tracker.update(features, labels)      # numpy, JAX, anything with __array__ or __dlpack__
    result = tracker.result(weight, bias)     # one pass: NC1, NC2, NC3, CDNV, ... (ufm.collapse_metrics)
    ncc = tracker.ncc_pass(weight, bias)      # optional second pass over the same samples (NC4)
    for features, labels in batches:
        ncc.update(features, labels)
    result = tracker.result(weight, bias, ncc=ncc)   # now with ncc_agreement, ncc_accuracy, accuracy

**One pass** (:meth:`CollapseTracker.update`): per-class counts, per-class shifted sums and a shifted
``d x d`` Gram matrix, from which :meth:`CollapseTracker.statistics` gives the class means, the global
mean, the within-class scatter and the per-class variances (:class:`ufm.collapse_metrics.ClassStatistics`)
and :meth:`CollapseTracker.result` every metric of :func:`ufm.collapse_metrics.collapse_metrics`.
**Second pass** (:meth:`CollapseTracker.ncc_pass`): the nearest-class-mean metrics (NC4) compare each
sample with the *final* class means, so they need the samples again once the means are known.

Shifts (exactness near collapse). Class k keeps a fixed reference point ``s_k``, the first sample of
class k this tracker saw, and accumulates, over its samples, ``n_k``, ``c_k = sum (h - s_k)``,
``q_k = sum ||h - s_k||^2`` and, over all samples, ``G = sum (h - s_y)(h - s_y)^T``. With
``e_k = c_k / n_k = mu_k - s_k``::

    mu_k = s_k + e_k,   scatter = G - sum_k n_k e_k e_k^T,   n_k var_k = q_k - n_k ||e_k||^2.

Near collapse ``h - s_k`` is of the size of the within-class spread, so ``G`` and the correction are too,
and the subtraction loses only a few roundings of the spread. A plain Gram,
``sum_i h_i h_i^T - sum_k n_k mu_k mu_k^T``, subtracts numbers of the size of ``||mu||^2`` to get a scatter
``(spread / ||mu||)^2`` times smaller: with means of norm 10 and a spread of 1e-6 it keeps about two digits
(``tests/test_tracker.py`` measures it).

Merging (:meth:`CollapseTracker.merge`), e.g. trackers of data-parallel workers. The other tracker's
sums about its shifts ``s'_k`` are re-expressed about this one's: with ``delta_k = s'_k - s_k`` and
``h - s_k = (h - s'_k) + delta_k``, summing the outer product over the other's samples of class k gives::

    G   += G' + sum_k [ c'_k delta_k^T + delta_k c'_k^T + n'_k delta_k delta_k^T ]
    c_k += c'_k + n'_k delta_k
    q_k += q'_k + 2 c'_k . delta_k + n'_k ||delta_k||^2

(two GEMMs, O(K d^2)). A class this tracker has not seen takes over the other's shift (``delta_k = 0``);
``delta_k`` is a difference of two samples of class k, of the size of the spread, so the terms stay small.

Cost: :meth:`update` checks a batch and copies it into a buffer of ``buffer`` rows (default
:data:`BUFFER_BYTES` of float64: 2048 rows at d = 512); a full buffer, of ``R`` rows, is accumulated
at once (:class:`RowBuffer` says why): a BLAS ``syrk`` for ``G`` (R d^2 flops), the per-class
sums by a sparse one-hot product over the classes present (O(R d)), and a ``bincount`` for ``q``;
nothing else is O(d^2). Memory: ``d^2 + 3 K d + R d`` floats held, ``4 d^2 + 4 K d + 2 R d`` at the peak
(:meth:`CollapseTracker.merge` / :meth:`CollapseTracker.statistics`), estimated with
:func:`ufm._memory.require` when the tracker is made.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from theory import validation
from ufm import _memory
from ufm.collapse_metrics import METRIC_SOURCES, ClassStatistics, collapse_metrics

#: bytes of float64 rows collected before one BLAS call (:class:`RowBuffer`): 2048 rows of d = 512
BUFFER_BYTES = 8 * 2**20


# ----------------------------------------------------------------------------- inputs (internal API)


def as_numpy(name: str, value) -> np.ndarray:
    """``value`` as a numpy array without copying where possible: numpy, ``__array__`` (JAX, lists, ...),
    then DLPack (``np.from_dlpack``); ``ValueError`` naming ``name`` otherwise."""
    if isinstance(value, np.ndarray):
        return value
    if value is None or isinstance(value, (str, bytes)):
        raise ValueError(f"{name} must be an array of real numbers, got {value!r}")
    errors = []
    if hasattr(value, "__array__") or not hasattr(value, "__dlpack__"):
        try:
            return np.asarray(value)
        except (TypeError, ValueError, RuntimeError) as error:
            errors.append(str(error))
    if hasattr(value, "__dlpack__"):
        try:
            return np.from_dlpack(value)
        except (TypeError, ValueError, RuntimeError, BufferError) as error:
            errors.append(str(error))
    raise ValueError(f"{name} must be an array of real numbers on the host ({'; '.join(errors)})")


def checked_batch(features, labels, K: int, d: int | None) -> tuple[np.ndarray, np.ndarray]:
    """``(features as float64 (B, d), labels as int64 (B,))`` after the checks of :meth:`CollapseTracker.update`."""
    shape = f"(B, d = {d if d is not None else 'any'})"
    X = validation.array("features", as_numpy("features", features), 2, shape=shape)
    if d is not None and X.shape[1] != d:
        raise ValueError(f"features must have shape {shape}, got {X.shape}")
    y = validation.array("labels", as_numpy("labels", labels), 1, shape="(B,)")
    if y.shape != (X.shape[0],):
        raise ValueError(f"labels must have shape (B,) = ({X.shape[0]},) (one per row of features), got {y.shape}")
    y = validation.class_labels("labels", y, K)
    X = validation.finite_array("features", np.ascontiguousarray(X, dtype=np.float64))
    return X, y


def add_by_class(out: np.ndarray, X: np.ndarray, y: np.ndarray, present: np.ndarray | None = None) -> None:
    """``out[k] += sum of the rows of X with label k``: a sparse one-hot product over the classes ``present``
    in ``y`` (sorted, ``np.unique(y)``), O(rows d) whatever K; cheaper than a dense ``(K x rows)`` one-hot
    product (timings: docs/performance.md, the collapse tracker)."""
    import scipy.sparse  # on first use: scipy adds ~0.1 s to every command line's start-up

    present = np.unique(y) if present is None else present
    rows = np.searchsorted(present, y)
    onehot = scipy.sparse.csr_matrix((np.ones(y.size), (rows, np.arange(y.size))), shape=(present.size, y.size))
    out[present] += onehot @ X


def buffer_rows(d: int) -> int:
    """Rows held by a :class:`RowBuffer` of ``d`` features by default (``BUFFER_BYTES`` of float64)."""
    return max(1, BUFFER_BYTES // (8 * d))


class RowBuffer:
    """Checked float64 rows collected until ``rows`` are held, then handed to ``sink(X, y)`` in one block.

    Why: a training loop's batches (128 rows) make small BLAS calls whose fixed cost (threads woken and
    joined) dominates, badly so on a busy machine (timings: docs/performance.md, the collapse tracker).
    The sums are the same, only grouped differently. A batch at least ``rows`` long that finds the buffer
    empty goes to ``sink`` directly (no copy).
    """

    def __init__(self, K: int, d: int, rows: int):
        self.K, self.d, self.rows, self.fill = K, d, rows, 0
        self.X = np.empty((rows, d))
        self.y = np.empty(rows, np.int64)

    def add(self, features, labels, sink) -> None:
        X, y = checked_batch(features, labels, self.K, self.d)
        if self.fill == 0 and y.size >= self.rows:
            sink(X, y)
            return
        start = 0
        while start < y.size:
            take = min(self.rows - self.fill, y.size - start)
            self.X[self.fill : self.fill + take] = X[start : start + take]
            self.y[self.fill : self.fill + take] = y[start : start + take]
            self.fill += take
            start += take
            if self.fill == self.rows:
                self.drain(sink)

    def drain(self, sink) -> None:
        """Hand the rows held to ``sink`` (if any) and empty the buffer."""
        if self.fill:
            fill, self.fill = self.fill, 0
            sink(self.X[:fill], self.y[:fill])


def _weight_bias(weight, bias, K: int, d: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    if weight is not None:
        weight = validation.real_array("weight", as_numpy("weight", weight), "finite entries")
        if weight.shape != (K, d):
            raise ValueError(f"weight must have shape (K, d) = ({K}, {d}), got {weight.shape}")
    if bias is not None:
        bias = validation.real_array("bias", as_numpy("bias", bias), "finite entries")
        if bias.shape != (K,):
            raise ValueError(f"bias must have shape (K,) = ({K},), got {bias.shape}")
        if weight is None:
            raise ValueError("bias needs a weight (the classifier's rows), got weight=None")
    return weight, bias


# ----------------------------------------------------------------------------- result


@dataclass(frozen=True)
class CollapseResult:
    """Metrics of a tracker: ``metrics`` (name -> float), ``num_samples``, ``num_classes``, ``dim``, and
    whether the second-pass NC4 metrics are in (``ncc``)."""

    metrics: dict
    num_samples: int
    num_classes: int
    dim: int
    ncc: bool

    def to_json(self) -> dict:
        """A JSON-ready dict (non-finite numbers as null) with each metric's source."""
        return {
            "num_samples": self.num_samples,
            "num_classes": self.num_classes,
            "dim": self.dim,
            "metrics": {k: (v if np.isfinite(v) else None) for k, v in self.metrics.items()},
            "sources": {k: METRIC_SOURCES[k] for k in self.metrics if k in METRIC_SOURCES},
        }

    def __str__(self) -> str:
        return json.dumps(self.to_json()["metrics"], indent=1)


# ----------------------------------------------------------------------------- tracker


class CollapseTracker:
    """Exact streaming statistics of ``(B, d)`` feature batches with labels in ``[0, K)`` (module docstring).

    Args:
        num_classes: K >= 2.
        dim: d >= 1, the feature dimension.
        weight, bias: the classifier ``(K, d)`` / ``(K,)`` used by :meth:`result` and :meth:`ncc_pass` when
            they are not given there (a training loop usually passes the final ones to :meth:`result`).
        buffer: rows collected before they are accumulated in one block (default: ``buffer_rows(dim)``);
            :meth:`statistics`, :meth:`merge` and :meth:`ncc_pass` accumulate what is left (:meth:`flush`).

    One pass: :meth:`update`, :meth:`merge`, :meth:`statistics`, :meth:`result` (without NC4). The NC4
    metrics need the second pass of :meth:`ncc_pass`. The state (``counts``, ``shifts``, ``sums``,
    ``squares``, ``gram``: the module docstring's n_k, s_k, c_k, q_k, G) holds the buffered rows only after
    :meth:`flush`; :meth:`merge` flushes both trackers (the other's statistics do not change).
    """

    def __init__(self, num_classes: int, dim: int, *, weight=None, bias=None, buffer: int | None = None):
        K = validation.integer("num_classes", num_classes, 2)
        d = validation.integer("dim", dim, 1)
        rows = buffer_rows(d) if buffer is None else validation.integer("buffer", buffer, 1)
        _memory.require(
            8.0 * (4.0 * d * d + 4.0 * K * d + 3.0 * K + 2.0 * rows * d),
            "the collapse tracker (d x d Gram and 3 temporaries, K x d sums and shifts, buffered rows)",
            f"num_classes = {K}, dim = {d}",
            "track a projection of the features to a smaller dim",
        )
        self.num_classes, self.dim = K, d
        self.weight, self.bias = _weight_bias(weight, bias, K, d)
        self.counts = np.zeros(K, np.int64)
        self.shifts = np.zeros((K, d))  # s_k: the first sample of class k (0 while class k is unseen)
        self.sums = np.zeros((K, d))  # c_k = sum (h - s_k)
        self.squares = np.zeros(K)  # q_k = sum ||h - s_k||^2
        self.gram = np.zeros((d, d), order="F")  # G = sum (h - s_y)(h - s_y)^T, upper triangle kept current
        self._buffer = RowBuffer(K, d, rows)

    @property
    def num_samples(self) -> int:
        return int(self.counts.sum()) + self._buffer.fill

    def update(self, features, labels) -> CollapseTracker:
        """Add a batch: ``features (B, d)`` (float16/32/64 or integer; accumulated in float64), ``labels (B,)``
        integers in ``[0, K)`` (integer-valued floats accepted). Checked now; the rows are collected and
        accumulated ``buffer`` rows at a time (:class:`RowBuffer`). Returns the tracker."""
        self._buffer.add(features, labels, self._accumulate)
        return self

    def flush(self) -> CollapseTracker:
        """Accumulate the rows still buffered (the counts, sums and Gram then hold every sample); called by
        :meth:`merge`, :meth:`statistics` and :meth:`ncc_pass`. Returns the tracker."""
        self._buffer.drain(self._accumulate)
        return self

    def _accumulate(self, X: np.ndarray, y: np.ndarray) -> None:
        present, first = np.unique(y, return_index=True)
        new = self.counts[present] == 0
        if np.any(new):
            self.shifts[present[new]] = X[first[new]]
        D = X - self.shifts[y]
        from scipy.linalg.blas import dsyrk  # on first use: scipy adds ~0.1 s to every command line's start-up

        # upper triangle of G += D^T D (BLAS syrk: half the flops of a product)
        self.gram = dsyrk(1.0, D.T, beta=1.0, c=self.gram, trans=0, lower=0, overwrite_c=1)
        add_by_class(self.sums, D, y, present)
        self.squares += np.bincount(y, weights=np.einsum("ij,ij->i", D, D), minlength=self.num_classes)
        self.counts += np.bincount(y, minlength=self.num_classes)

    def merge(self, other: CollapseTracker) -> CollapseTracker:
        """Add the samples another tracker of the same K and d has seen (exact; module docstring). Returns self."""
        if not isinstance(other, CollapseTracker):
            raise ValueError(f"other must be a CollapseTracker, got {type(other).__name__}")
        if (other.num_classes, other.dim) != (self.num_classes, self.dim):
            raise ValueError(
                f"other must track the same num_classes and dim: ({self.num_classes}, {self.dim}) here, "
                f"({other.num_classes}, {other.dim}) in other"
            )
        self.flush()
        other.flush()
        n, c, q, G = other.counts.copy(), other.sums.copy(), other.squares.copy(), _symmetric(other.gram)
        adopt = (self.counts == 0) & (n > 0)
        self.shifts[adopt] = other.shifts[adopt]
        delta = np.where((n > 0)[:, None], other.shifts - self.shifts, 0.0)  # s'_k - s_k
        cross = c.T @ delta  # sum_k c'_k delta_k^T
        gram = _symmetric(self.gram) + G + cross + cross.T + (delta * n[:, None]).T @ delta
        self.gram = np.asfortranarray(gram)
        self.squares += q + 2.0 * np.einsum("kj,kj->k", c, delta) + n * np.einsum("kj,kj->k", delta, delta)
        self.sums += c + n[:, None] * delta
        self.counts += n
        return self

    def statistics(self) -> ClassStatistics:
        """The :class:`~ufm.collapse_metrics.ClassStatistics` of every sample seen (every class needs one)."""
        self.flush()
        if np.any(self.counts == 0):
            raise ValueError(
                f"labels: class {int(np.flatnonzero(self.counts == 0)[0])} has no samples yet "
                f"({self.num_samples} samples seen; every one of the K = {self.num_classes} classes needs one)"
            )
        n = self.counts.astype(np.float64)
        e = self.sums / n[:, None]  # mu_k - s_k
        means = self.shifts + e
        correction = (e * n[:, None]).T @ e  # sum_k n_k e_k e_k^T
        scatter = _symmetric(self.gram) - 0.5 * (correction + correction.T)
        variances = np.maximum(self.squares / n - np.einsum("kj,kj->k", e, e), 0.0)
        global_mean = n @ means / n.sum()
        return ClassStatistics(self.counts.copy(), means, global_mean, scatter, variances)

    def result(self, weight=None, bias=None, *, ncc: NCCPass | None = None, cdnv_power: float = 2) -> CollapseResult:
        """:func:`~ufm.collapse_metrics.collapse_metrics` of :meth:`statistics` with ``weight``/``bias`` (default:
        the tracker's), plus the NC4 metrics of a finished second pass ``ncc`` (from :meth:`ncc_pass`)."""
        if weight is None:
            weight, bias = self.weight, (self.bias if bias is None else bias)
        weight, bias = _weight_bias(weight, bias, self.num_classes, self.dim)
        stats = self.statistics()
        metrics = collapse_metrics(stats, weight, bias, cdnv_power=cdnv_power)
        if ncc is not None:
            if not isinstance(ncc, NCCPass):
                raise ValueError(f"ncc must be an NCCPass (from tracker.ncc_pass()), got {type(ncc).__name__}")
            if not np.array_equal(ncc.means, stats.means):
                raise ValueError("ncc was made from other class means (this tracker has seen samples since)")
            metrics.update(ncc.metrics())
        return CollapseResult(metrics, stats.num_samples, self.num_classes, self.dim, ncc is not None)

    def ncc_pass(self, weight=None, bias=None) -> NCCPass:
        """Start the second pass (NC4) with this tracker's current class means, frozen, and the classifier
        ``weight``/``bias`` (default: the tracker's; without a weight only ``ncc_accuracy`` is measured)."""
        if weight is None:
            weight, bias = self.weight, (self.bias if bias is None else bias)
        stats = self.statistics()
        classifier = _weight_bias(weight, bias, self.num_classes, self.dim)
        return NCCPass(stats.means, stats.global_mean, *classifier, self._buffer.rows)


def _symmetric(upper: np.ndarray) -> np.ndarray:
    """The symmetric matrix whose upper triangle is ``upper``'s (syrk writes only that)."""
    return np.triu(upper) + np.triu(upper, 1).T


class NCCPass:
    """Second pass over the samples: nearest class mean (Euclidean, frozen means) vs the classifier.

    Counts, over the samples given to :meth:`update`: ``ncc_accuracy`` (nearest mean = label) and, with a
    weight, ``ncc_agreement`` (nearest mean = ``argmax(weight h + bias)``), ``ncc_agreement_nobias``
    (= ``argmax(weight h)``) and ``accuracy`` (``argmax(weight h + bias)`` = label). Ties go to the lowest
    class index. Scores in float64, on coordinates centred at the global mean (smaller numbers).
    """

    def __init__(self, means: np.ndarray, global_mean: np.ndarray, weight, bias, buffer: int):
        self.means, self.global_mean = means, global_mean
        self.num_classes, self.dim = means.shape
        self._buffer = RowBuffer(self.num_classes, self.dim, buffer)
        self.weight = weight
        self.bias = np.zeros(self.num_classes) if bias is None and weight is not None else bias
        self._centred = means - global_mean
        self._offset = -0.5 * np.einsum("kj,kj->k", self._centred, self._centred)  # argmax = nearest mean
        self.counts = {"samples": 0, "ncc_correct": 0, "agree": 0, "agree_nobias": 0, "correct": 0}

    def update(self, features, labels) -> NCCPass:
        """Add a batch (same rules and buffering as :meth:`CollapseTracker.update`). Returns the pass."""
        self._buffer.add(features, labels, self._count)
        return self

    def _count(self, X: np.ndarray, y: np.ndarray) -> None:
        nearest = np.argmax((X - self.global_mean) @ self._centred.T + self._offset, axis=1)
        self.counts["samples"] += y.size
        self.counts["ncc_correct"] += int(np.sum(nearest == y))
        if self.weight is not None:
            scores = X @ self.weight.T
            predicted = np.argmax(scores + self.bias, axis=1)
            self.counts["agree"] += int(np.sum(nearest == predicted))
            self.counts["agree_nobias"] += int(np.sum(nearest == np.argmax(scores, axis=1)))
            self.counts["correct"] += int(np.sum(predicted == y))

    def merge(self, other: NCCPass) -> NCCPass:
        """Add the counts of another pass made from the same means and classifier. Returns self."""
        if not isinstance(other, NCCPass):
            raise ValueError(f"other must be an NCCPass, got {type(other).__name__}")
        same_classifier = (self.weight is None) == (other.weight is None) and (
            self.weight is None or (np.array_equal(self.weight, other.weight) and np.array_equal(self.bias, other.bias))
        )
        if not (np.array_equal(self.means, other.means) and same_classifier):
            raise ValueError("other must be a pass made from the same class means, weight and bias")
        self._buffer.drain(self._count)
        other._buffer.drain(other._count)
        for key, value in other.counts.items():
            self.counts[key] += value
        return self

    def metrics(self) -> dict[str, float]:
        """The NC4 fractions (``nan`` before any sample)."""
        self._buffer.drain(self._count)
        total = self.counts["samples"]
        fraction = (lambda key: self.counts[key] / total) if total else (lambda key: float("nan"))
        out = {"ncc_accuracy": fraction("ncc_correct")}
        if self.weight is not None:
            out |= {
                "ncc_agreement": fraction("agree"),
                "ncc_agreement_nobias": fraction("agree_nobias"),
                "accuracy": fraction("correct"),
            }
        return out
