"""Neural-collapse analysis of a trained network's last layer, and the UFM prediction next to it.

``analyze(features, labels, weight, bias=None, *, loss=..., lam_W=..., lam_H=..., ...) -> Analysis``.

Layout: the one frameworks use, **not** the solver's. ``features: (N, d)`` (row i = the
penultimate-layer feature h_i of training sample i), ``labels: (N,)`` integers in ``[0, K)``,
``weight: (K, d)`` (as ``torch.nn.Linear`` stores it: row k = classifier w_k), ``bias: (K,)``
(zeros when None). In the solver's notation (``W: (d, K)``, ``H: (d, N)``, THEORY.md)
``W = weight.T`` and ``H = features.T``; logits ``z_i = weight h_i + bias``.

Why a module of its own: ``python -m ufm.analyze`` is the command line (:mod:`ufm.analyze`) and
``ufm.analyze(...)`` must be this function; ``ufm/__init__.py`` exports it from here, so the
package never imports the CLI module (``python -m`` would otherwise run it twice), and the CLI
module, once imported, replaces the package attribute with itself made callable (as
:mod:`ufm.solve` does), so ``ufm.analyze(...)`` calls this function either way.

Streaming: two passes over chunks of rows (``chunk_size`` rows at a time, float64 copies of
one chunk only; float32/float16/integer input is accumulated in float64). Pass 1: exact
per-class counts and sums, the classifier's predictions, finiteness. Pass 2, with the class
means known: the within-class scatter ``sum_i (h_i - hbar_y)(h_i - hbar_y)^T`` (centred, so
no cancellation near collapse), per-class variances and the nearest-class-mean predictions.
The two K-wide products (logits, nearest-mean scores) run in float32 BLAS and every row whose
top two scores are within a rounding bound is recomputed in float64 (``_Scores``), so the
predictions are float64's. A memory-mapped array (``np.load(..., mmap_mode="r")``) is read chunk by chunk
and each chunk's pages are handed back to the kernel after use, so resident memory stays at one chunk.

Measured quantities (``Analysis.measured``; sources in :data:`SOURCES`):

* ``nc1``, ``nc2``, ``nc3``: Guo et al. eqs. 4-6 (16-17), exactly the functions of
  :mod:`ufm.metrics`: ``NC1 = trace(Sigma_W Sigma_B^+)/K`` with ``Sigma_W`` over all N samples
  (1/N), ``Sigma_B`` over the K centred class means (1/K), centred by the global mean h_G of all
  N features (with imbalanced classes h_G is not the mean of the class means); the
  pseudo-inverse keeps eigenvalues above ``10 d eps`` of the largest, as ``jnp.linalg.pinv``.
* ``nc1_trace``: ``trace(Sigma_W Sigma_B^+)`` (= K nc1), the normalisation of the LS paper's
  public code. ``cdnv``: class-distance normalised variance (Galanti et al. 2022), mean over
  pairs k < l of ``(sigma_k^2 + sigma_l^2) / (2 ||hbar_k - hbar_l||^2)``,
  ``sigma_k^2 = mean ||h_i - hbar_k||^2`` over class k.
* ``ncc_agreement``: fraction of samples whose nearest class mean (Euclidean) is the class the
  classifier predicts (``argmax z_i``); ``ncc_accuracy``: nearest class mean = label; ``accuracy``:
  training accuracy of the classifier. Ties go to the lowest class index.
* ``w_norm``, ``h_norm``: mean ``||w_k||`` and mean ``||hbar_k - h_G||``; ``w_norm_cv``,
  ``h_norm_cv``: their coefficients of variation (population std / mean; Papyan et al. 2020's
  equinorm). ``w_cos_std``, ``h_cos_std``: std of the K(K-1) off-diagonal cosines (equiangularity),
  ``w_cos_shift``, ``h_cos_shift``: mean of ``|cos + 1/(K-1)|`` (maximal angle), Papyan et al. 2020.
* ``a``: fitted logit scale, least squares of the column-centred class-mean logits
  ``Zbar = weight hbar_k + bias`` on ``a M``: ``a = trace(M Zbar)/(K-1)``, ``M = I - 11^T/K``;
  ``a_residual = ||M Zbar - a M||_F / ||M Zbar||_F``. ``p_t``, ``p_n``: softmax of each column of
  ``Zbar``, target and mean non-target probability, averaged over classes.
  ``bias``: mean b_k, ``bias_spread``: max |b_k - mean b|.
* ``kappa_W``, ``kappa_H``, ``K_p_t``: condition numbers of the loss-term Hessian blocks (Guo et al.
  Thm 4.2 predicts both = K p_t at the optimum), when computed. With a prediction, kappa is taken
  over the eigenvalues the theorem predicts to be non-zero: the measured eigenvalues are sorted and
  the largest ``count`` kept, ``count`` = the non-zero multiplicities of the predicted spectrum
  (:mod:`theory.spectra`; (K-1)^2 of the dK for W, N(K-1) of the dN for H with CE/LS), kappa = max/min
  of those. The rest, predicted to be zero, is the *residue*: ``spectra[block]["residue"]`` (the largest
  of them) and ``"residue_ratio"`` (residue / smallest kept eigenvalue). On a real network those
  eigenvalues are small but not zero (directions not quite collapsed) and would make the ratio of
  all positive eigenvalues meaningless (e.g. 5e5 against a predicted 9.06). Without a predicted count
  (no ``lam_W``/``lam_H``, imbalanced classes, d < K, past the phase boundary) the rule is the old one,
  labelled in ``spectra[block]["rule"]``: every eigenvalue above ``NONZERO_RTOL`` x the largest.
  ``kappa_H`` is the H block **at the class means** (every h_i replaced by its class mean, so all
  samples of a class have the same probabilities, as at the minimizer): the value compared with
  Thm 4.2. ``kappa_H_point``: the H block at the network's own features; it includes the spread of
  the per-sample probabilities (a correct measurement, shown for information, not compared).

Held-out collapse (``test_features``, ``test_labels``; ``Analysis.held_out``): a test set measured
against the **training** class means and the classifier, streamed in chunks like the training pass:
``accuracy`` (argmax of the logits), ``nc1`` = ``trace(Sigma_W^test Sigma_B^+)/K`` with
``Sigma_W^test = (1/M) sum_i (h_i - hbar_{y_i})(h_i - hbar_{y_i})^T`` around the *training* class means
hbar_k and ``Sigma_B`` of the training means (so a shift of the test class means counts as spread),
``ncc_accuracy`` (nearest training class mean = label), and for the correctly and the incorrectly
classified test samples (Guo et al. Fig. 4): ``count``, ``nc1`` (the same formula over the subgroup,
normalised by its size), ``nc1_predicted`` (the same, but each sample measured around the training mean
of the class the classifier *predicts*, as Guo et al. measure misclassified samples, their footnote 3;
equal to ``nc1`` for the correct ones), ``loss`` (mean per-sample training loss: CE, LS with delta, focal, MSE, as
:mod:`ufm.losses`) and ``entropy`` (mean entropy of the softmax, nats). A value that is undefined
(an empty subgroup) or not finite (overflow) is ``None``, with the reason in ``held_out["notes"]``.

Prediction (when ``lam_W`` and ``lam_H`` are given): :func:`ufm.compare.predict` of the UFM
``Problem`` with the same K, ``n = N/K``, d, loss and lambdas (objective
``(1/N) sum loss + lam_W/2 ||W||^2 + lam_H/2 ||H||^2 + lam_b/2 ||b||^2``, Guo et al. eq. 10,
i.e. the network trained with those penalties on its last layer, "simulated UFM", App. B.2).
Errors: relative where the prediction is non-zero, absolute for the zeros (NC1-NC3) and the bias
(``max_k |b_k - b_pred|``). Reasons the theory does not apply are listed: imbalanced class
counts, ``d < K``, or past the phase boundary (zero minimizer: NC metrics and kappa not predicted).

Imbalanced classes (``Analysis.prediction_kind`` says which prediction is shown): the closed forms
assume equal class sizes, so when the counts differ, ``d >= K`` and the loss is ``"ce"``, ``"ls"`` or
``"mse"``, the prediction is the **numerical** optimum of the UFM with the observed class sizes
(:func:`ufm.imbalance.solve_reduced`: the exact class-mean reduction, derived in :mod:`ufm.solver`,
L-BFGS to a gradient ratio of 1e-12 in float64, d = the features' d, lam_b = 0 when not given),
not a closed form: ``nc1`` (0: every minimizer has collapsed classes), ``nc2``, ``nc3``, ``w_norm``,
``h_norm``, ``a``, ``p_t``/``p_n`` (softmax losses) and ``bias`` are the same formulas as the
measurement evaluated at that optimum (class means centred at ``h_G = sum_k n_k hbar_k / N``), and
the bias error is ``max_k |b_k - b*_k|`` against the optimum's ``b*``. Skipped with a reason (the
closed form for ``n = round(N/K)`` is shown, not judged) when ``K d > NUMERICAL_MAX_KD``, ``d < K``
(where one start need not reach the global minimum), for focal loss (no exact class-mean
reduction), without ``jax_enable_x64`` (the CLI enables it), or when the solve does not converge.
"""

from __future__ import annotations

import math
import mmap
import numbers
from dataclasses import dataclass, field

import numpy as np

from ufm import _memory

LOSSES = ("ce", "ls", "focal", "mse")
SPECTRA = ("auto", True, False)
#: bytes of float64 work per chunk targeted by the automatic chunk size
CHUNK_BYTES = 64 * 2**20
#: ``spectra="auto"`` computes Hessian blocks only when ``d N`` is at most this (they need H in memory)
AUTO_SPECTRA_ENTRIES = 1_000_000
#: dense Hessian blocks up to this many entries; the structured path up to ``STRUCTURED_BYTES``; else Lanczos
DENSE_ENTRIES = 4_000_000
STRUCTURED_BYTES = 2**28
#: imbalanced classes: the numerical UFM prediction (2 K d + K variables, O(K^2 d) per evaluation,
#: thousands of L-BFGS iterations) is computed only when ``K d`` is at most this
NUMERICAL_MAX_KD = 2**17
#: the verdict's default tolerance, as ``ufm.solve``'s in float64
DEFAULT_RTOL = 1e-6
#: where each Hessian block of ``Analysis.spectra`` is evaluated (W and H_class_means are compared with Thm 4.2)
AT = {
    "W": "the network's features",
    "H": "the network's features (includes the spread of the per-sample probabilities; not compared)",
    "H_class_means": "the class means (every h_i replaced by its class mean; compared with Thm 4.2)",
}
PREDICTION_CLOSED_FORM = "closed form (Guo et al. Thm 4.1, 4.2; balanced classes)"
PREDICTION_NUMERICAL = "numerical UFM optimum with the observed class sizes"

SOURCES = {
    "nc1": "Guo et al. eq. 4",
    "nc1_trace": "trace(Sigma_W Sigma_B^+) = K nc1 (LS paper's public code)",
    "nc2": "Guo et al. eqs. 5, 16",
    "nc3": "Guo et al. eqs. 6, 17",
    "cdnv": "Galanti et al. 2022, mean over class pairs",
    "ncc_agreement": "nearest class mean = classifier prediction",
    "ncc_accuracy": "nearest class mean = label",
    "accuracy": "training accuracy of argmax z",
    "w_norm": "mean ||w_k||",
    "h_norm": "mean ||hbar_k - h_G||",
    "w_norm_cv": "std/mean ||w_k|| (Papyan et al. 2020)",
    "h_norm_cv": "std/mean ||hbar_k - h_G|| (Papyan et al. 2020)",
    "w_cos_std": "std of cos(w_k, w_l) (Papyan et al. 2020)",
    "h_cos_std": "std of cos of centred means (Papyan et al. 2020)",
    "w_cos_shift": "mean |cos(w_k, w_l) + 1/(K-1)| (Papyan et al. 2020)",
    "h_cos_shift": "mean |cos + 1/(K-1)|, centred means (Papyan et al. 2020)",
    "a": "logit scale: trace(M Zbar)/(K-1)",
    "a_residual": "||M Zbar - a M|| / ||M Zbar||",
    "p_t": "softmax of class-mean logits, target",
    "p_n": "softmax of class-mean logits, non-target",
    "bias": "mean b_k (error: max_k |b_k - b_pred|)",
    "bias_spread": "max |b_k - mean b|",
    "kappa_W": "loss-term W block, Guo et al. Thm 4.2",
    "kappa_H": "loss-term H block at the class means, Guo et al. Thm 4.2",
    "kappa_H_point": "H block at the features (prob. spread; not compared)",
    "K_p_t": "K p_t (Thm 4.2's kappa from measured p_t)",
}


@dataclass(frozen=True)
class Analysis:
    """Result of :func:`analyze`.

    Attributes:
        K, N, d: classes (rows of ``weight``), samples, feature dimension.
        counts: samples per class, length K.
        measured: name -> value (module docstring; keys of :data:`SOURCES`, kappa only when computed).
        predicted: name -> UFM prediction (empty without ``lam_W``/``lam_H``).
        error: name -> error of the measured value against the prediction; ``relative[name]`` says
            whether it is relative (``|m - p| / |p|``) or absolute.
        relative: name -> bool, as above.
        applies: the theorem's hypotheses hold (balanced classes, d >= K); False when not given.
        not_applicable: reasons a prediction does not apply (empty when everything applies).
        setup: the training setup used for the prediction (loss, delta, gamma, lambdas), or {}.
        spectra: per Hessian block ``"W"``, ``"H"`` (at the features) and ``"H_class_means"``: ``method``,
            ``lambda_max``, ``kappa`` with its ``rule`` (over the ``kept`` predicted non-zero eigenvalues,
            then ``residue`` and ``residue_ratio``; else the labelled fallback), ``at`` (:data:`AT`),
            ``compared`` (the block Thm 4.2's kappa is compared with), distinct eigenvalues with
            multiplicities (exact methods); ``{"skipped": reason}`` when not computed.
        prediction_kind: :data:`PREDICTION_CLOSED_FORM`, :data:`PREDICTION_NUMERICAL` (imbalanced
            classes, module docstring) or ``""`` (no prediction).
        held_out: the test set against the training class means and classifier (module docstring),
            ``{}`` without ``test_features``.
    """

    K: int
    N: int
    d: int
    counts: tuple[int, ...]
    measured: dict
    predicted: dict = field(default_factory=dict)
    error: dict = field(default_factory=dict)
    relative: dict = field(default_factory=dict)
    applies: bool = False
    not_applicable: tuple[str, ...] = ()
    setup: dict = field(default_factory=dict)
    spectra: dict = field(default_factory=dict)
    prediction_kind: str = ""
    held_out: dict = field(default_factory=dict)

    @property
    def balanced(self) -> bool:
        return min(self.counts) == max(self.counts)

    def verdict(self, rtol: float = DEFAULT_RTOL) -> dict:
        """Whether this last layer is at the UFM minimizer the prediction describes.

        The prediction is for the minimizer of the UFM objective (Guo et al. Thm 4.1/4.2, or the
        numerical optimum with the observed class sizes); a trained network is there only if training
        reached it. Judged: every quantity with an error (``error``), against ``rtol`` (relative errors
        for the non-zero predictions, absolute for NC1-NC3 and the bias, as ``ufm.solve``'s checks).

        Returns:
            ``status``: ``"at_minimizer"`` (every judged error within ``rtol``), ``"not_at_minimizer"`` or
            ``"no_prediction"``; ``text``: one line saying so; ``rtol``; ``judged``: the names;
            ``worst``/``worst_error``: the largest error and its name (None without judged ones);
            ``beyond_rtol``: the names whose error exceeds rtol; ``not_judged``: what is not judged, and why.
        """
        _number("rtol", rtol, 0.0, low_open=True)
        not_judged = list(self.not_applicable)
        if not self.setup:
            not_judged.append("no training setup given (lam_W and lam_H switch the UFM prediction on)")
        unmeasured = [k for k in self.predicted if k not in self.error and k != "bias"]
        if unmeasured:
            why = self.spectra.get("skipped") or "the blocks were too large for the exact paths"
            not_judged.append(f"{', '.join(unmeasured)} predicted, not measured (Hessian blocks: {why})")
        judged_kind = self.prediction_kind == PREDICTION_NUMERICAL or (bool(self.setup) and self.applies)
        judged = sorted(self.error) if judged_kind else []
        out = {"rtol": float(rtol), "judged": judged, "worst": None, "worst_error": None, "beyond_rtol": []}
        if not judged:
            reasons = "; ".join(not_judged) or "nothing could be judged"
            return {
                **out,
                "status": "no_prediction",
                "text": f"no prediction applies: {reasons}",
                "not_judged": not_judged,
            }
        worst = max(judged, key=lambda k: self.error[k])
        beyond = [k for k in judged if not self.error[k] <= rtol]
        kind = "relative" if self.relative.get(worst) else "absolute"
        worst_text = f"worst error {self.error[worst]:.2e} ({kind}) in {worst}"
        if beyond:
            status = "not_at_minimizer"
            text = (
                f"not at the minimizer: {worst_text}; beyond rtol {rtol:g}: {', '.join(beyond)} ({len(judged)} judged)"
            )
        else:
            status = "at_minimizer"
            text = f"at the minimizer within rtol {rtol:g}: {worst_text} ({len(judged)} judged)"
        if self.prediction_kind == PREDICTION_NUMERICAL:
            text += f" [against the {PREDICTION_NUMERICAL}]"
        return {
            **out,
            "status": status,
            "text": text,
            "worst": worst,
            "worst_error": float(self.error[worst]),
            "beyond_rtol": beyond,
            "not_judged": not_judged,
        }

    def to_json(self, rtol: float = DEFAULT_RTOL) -> dict:
        """Plain dict (JSON-ready): top-level ``measured``, ``predicted``, ``error``, ``held_out`` and
        ``verdict`` (:meth:`verdict` at ``rtol``) plus context."""
        return {
            "data": {"K": self.K, "N": self.N, "d": self.d, "counts": list(self.counts), "balanced": self.balanced},
            "measured": dict(self.measured),
            "predicted": dict(self.predicted),
            "error": dict(self.error),
            "error_kind": {k: ("relative" if v else "absolute") for k, v in self.relative.items()},
            "applies": self.applies,
            "not_applicable": list(self.not_applicable),
            "prediction_kind": self.prediction_kind,
            "setup": dict(self.setup),
            "spectra": self.spectra,
            "sources": {k: SOURCES[k] for k in self.measured if k in SOURCES},
            "held_out": self.held_out,
            "verdict": self.verdict(rtol),
        }


# ----------------------------------------------------------------------------- validation


def _real_array(name: str, value, ndim: int) -> np.ndarray:
    if value is None or isinstance(value, (str, bytes)):
        raise ValueError(f"{name} must be a {ndim}-D array of real numbers, got {value!r}")
    try:
        array = value if isinstance(value, np.ndarray) else np.asarray(value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be a {ndim}-D array of real numbers ({error})") from None
    if array.dtype.kind not in "fiu":
        raise ValueError(f"{name} must hold real numbers, got dtype {array.dtype}")
    if array.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {array.shape}")
    return array


def _finite(name: str, array: np.ndarray) -> np.ndarray:
    array = np.asarray(array, dtype=np.float64)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or inf (first at index {np.argwhere(~np.isfinite(array))[0].tolist()})")
    return array


def _labels(labels, N: int, K: int, name: str = "labels", rows: str = "features") -> np.ndarray:
    array = _real_array(name, labels, 1)
    if array.shape[0] != N:
        raise ValueError(f"{name} must have one entry per row of {rows} (N = {N}), got {array.shape[0]}")
    if array.dtype.kind == "f":
        values = np.asarray(array, np.float64)
        if not np.all(np.isfinite(values)) or np.any(values != np.round(values)):
            raise ValueError(f"{name} must be integers, got non-integer values of dtype {array.dtype}")
    out = np.asarray(array).astype(np.int64)
    if N and (out.min() < 0 or out.max() >= K):
        raise ValueError(
            f"{name} must be in [0, K) = [0, {K}) (K = rows of weight), got values in [{out.min()}, {out.max()}]"
        )
    return out


def _number(name: str, value, low: float, *, low_open: bool) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or (value <= low if low_open else value < low)
    ):
        raise ValueError(f"{name} must be a finite number {'>' if low_open else '>='} {low:g}, got {value!r}")
    return float(value)


def default_chunk_size(d: int, K: int) -> int:
    """Rows per chunk so that one chunk's float64 work (features, centred copy, 2K scores) is ~CHUNK_BYTES."""
    return max(1, CHUNK_BYTES // (8 * (2 * d + 2 * K)))


# ----------------------------------------------------------------------------- streaming


class _Pages:
    """Hands the pages of a memory-mapped array back to the kernel after each chunk.

    Reading a 2.6 GB ``np.load(mmap_mode="r")`` array through its mapping would otherwise leave
    every page resident (counted in RSS) until the array is dropped; ``MADV_DONTNEED`` on a
    read-only file mapping only unmaps (the data stay in the page cache, nothing is lost).
    """

    def __init__(self, array: np.ndarray):
        self.mm: mmap.mmap | None = None
        base: object = array  # the chain of .base owners, ending at the mmap (if any)
        while base is not None and not isinstance(base, mmap.mmap):
            base = getattr(base, "base", None)
        if (
            not isinstance(base, mmap.mmap)
            or not array.flags.c_contiguous
            or not hasattr(base, "madvise")
            or array.size == 0
        ):
            return
        try:
            view = np.frombuffer(base, np.uint8)
            self.offset = array.ctypes.data - view.ctypes.data
            del view
        except (TypeError, ValueError, BufferError):
            return
        self.mm, self.row = base, array.strides[0]

    def release(self, lo: int, hi: int) -> None:
        if self.mm is None:
            return
        start = self.offset + lo * self.row
        end = min(len(self.mm), self.offset + hi * self.row)
        start -= start % mmap.PAGESIZE
        if end > start:
            try:
                self.mm.madvise(mmap.MADV_DONTNEED, start, end - start)
            except (OSError, ValueError):
                self.mm = None


def _chunk(features, lo: int, hi: int) -> np.ndarray:
    return np.asarray(features[lo:hi], dtype=np.float64)


def _rows(features, chunk: int, name: str | None = None):
    """``(lo, hi, float64 copy of rows lo:hi)`` chunk by chunk; with ``name``, a chunk holding NaN or inf
    is refused naming it and the row. Each chunk's pages are handed back after use (:class:`_Pages`)."""
    pages = _Pages(features)
    N = features.shape[0]
    for lo in range(0, N, chunk):
        hi = min(N, lo + chunk)
        X = _chunk(features, lo, hi)
        if name is not None and not np.all(np.isfinite(X)):
            row = lo + int(np.flatnonzero(~np.all(np.isfinite(X), axis=1))[0])
            raise ValueError(f"{name} contains NaN or inf (first in row {row})")
        yield lo, hi, X
        pages.release(lo, hi)


def _add_by_class(out: np.ndarray, X: np.ndarray, y: np.ndarray) -> None:
    """``out[k] += sum of the rows of X with label k``: a sparse (K x rows) one-hot product, O(rows d)."""
    import scipy.sparse  # on first use: scipy adds ~0.1 s to every command line's start-up

    onehot = scipy.sparse.csr_matrix((np.ones(y.size), (y, np.arange(y.size))), shape=(out.shape[0], y.size))
    out += onehot @ X


class _Scores:
    """``argmax_k (x . a_k + c_k)`` for rows x of a chunk, as float64 arithmetic decides it, at float32 speed.

    The products run in float32 (2-3x faster BLAS); a row is recomputed in float64 when the gap
    between its two largest float32 scores is within twice a bound on their rounding error:
    ``|fl32(s_k) - s_k| <= (d + 2) u ||x|| max_k ||a_k|| + u (max|c| + max_k |s_k|)`` (u = 2^-24;
    the dot product's worst case, plus rounding x, a_k and the sum), so the decision is always the
    float64 one (ties: lowest index, as ``np.argmax``).
    """

    def __init__(self, A: np.ndarray, c: np.ndarray):
        self.A, self.c = A, c
        self.A32, self.c32 = A.astype(np.float32), c.astype(np.float32)
        u = float(np.finfo(np.float32).eps) / 2
        self.u, self.scale = u, (A.shape[1] + 2) * u * float(np.max(np.linalg.norm(A, axis=1)))
        self.c_max = float(np.max(np.abs(c)))

    def argmax(self, X: np.ndarray) -> np.ndarray:
        S = X.astype(np.float32) @ self.A32.T
        S += self.c32
        best = np.argmax(S, axis=1)
        if S.shape[1] < 2:
            return best
        top2 = np.partition(S, S.shape[1] - 2, axis=1)[:, -2:].astype(np.float64)
        bound = self.scale * np.linalg.norm(X, axis=1) + self.u * (self.c_max + np.abs(top2).max(axis=1))
        redo = np.flatnonzero(top2[:, 1] - top2[:, 0] <= 2.0 * bound)
        if redo.size:
            best[redo] = np.argmax(X[redo] @ self.A.T + self.c, axis=1)
        return best


@dataclass(frozen=True)
class _Moments:
    counts: np.ndarray  # (K,)
    means: np.ndarray  # (K, d) class means
    global_mean: np.ndarray  # (d,)
    scatter: np.ndarray  # (d, d) sum of centred within-class outer products
    variances: np.ndarray  # (K,) mean squared distance to the class mean
    accuracy: float
    ncc_agreement: float
    ncc_accuracy: float


def _moments(features, labels, weight, bias, chunk: int) -> _Moments:
    N, d = features.shape
    K = weight.shape[0]
    counts = np.zeros(K, np.int64)
    sums = np.zeros((K, d))
    predicted = np.empty(N, np.int32)
    classifier = _Scores(weight, bias)
    for lo, hi, X in _rows(features, chunk, "features"):
        y = labels[lo:hi]
        counts += np.bincount(y, minlength=K)
        _add_by_class(sums, X, y)
        predicted[lo:hi] = classifier.argmax(X)
    if np.any(counts == 0):
        raise ValueError(
            f"labels: class {int(np.flatnonzero(counts == 0)[0])} has no samples "
            f"(every one of the K = {K} rows of weight needs at least one)"
        )
    means = sums / counts[:, None]
    global_mean = sums.sum(axis=0) / N
    centred = means - global_mean  # nearest-mean scores on centred coordinates (smaller numbers)
    nearest_mean = _Scores(centred, -0.5 * np.sum(centred**2, axis=1))  # argmax = nearest class mean
    from scipy.linalg.blas import dsyrk as _syrk  # on first use: scipy adds ~0.1 s to every command line's start-up

    scatter = np.zeros((d, d), order="F")
    squared = np.zeros(K)
    agree = correct = ncc_correct = 0
    for lo, hi, X in _rows(features, chunk):
        y = labels[lo:hi]
        D = X - means[y]
        # upper triangle of scatter += D^T D (BLAS syrk: half the flops of a product)
        scatter = _syrk(1.0, D.T, beta=1.0, c=scatter, trans=0, lower=0, overwrite_c=1)
        squared += np.bincount(y, weights=np.einsum("ij,ij->i", D, D), minlength=K)
        nearest = nearest_mean.argmax(X - global_mean)
        agree += int(np.sum(nearest == predicted[lo:hi]))
        ncc_correct += int(np.sum(nearest == y))
        correct += int(np.sum(predicted[lo:hi] == y))
    scatter = np.triu(scatter) + np.triu(scatter, 1).T
    return _Moments(counts, means, global_mean, scatter, squared / counts, correct / N, agree / N, ncc_correct / N)


# ----------------------------------------------------------------------------- held-out set


def _log_softmax(Z: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax of logits ``Z: (rows, K)`` (shifted by the row maximum: no overflow)."""
    shifted = Z - Z.max(axis=1, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=1, keepdims=True))


def _per_sample_loss(Z, y, loss, delta=0.0, gamma=0.0, mse_kappa=1.0, mse_beta=1.0, log_p=None) -> np.ndarray:
    """Per-sample training loss of logits ``Z: (rows, K)`` (framework layout), numpy float64: the formulas
    of :mod:`ufm.losses` (label smoothing with ``delta``, CE = delta 0, focal with ``gamma``, rescaled MSE),
    tested against them. ``log_p``: the row-wise log-softmax of Z when already computed."""
    rows = np.arange(y.size)
    if loss == "mse":
        z_y = Z[rows, y]
        return mse_kappa * (z_y - mse_beta) ** 2 + np.sum(Z**2, axis=1) - z_y**2
    log_p = _log_softmax(Z) if log_p is None else log_p
    target = log_p[rows, y]
    if loss == "focal":
        return -np.power(-np.expm1(target), gamma) * target  # (1 - p_y)^gamma with 0^0 = 1, as ufm.losses.focal
    smoothing = delta if loss == "ls" else 0.0
    return -((1.0 - smoothing) * target + (smoothing / Z.shape[1]) * np.sum(log_p, axis=1))


def _held_out(features, labels, weight, bias, mo: _Moments, chunk: int, loss: dict) -> dict:
    """The test set against the training class means and classifier (module docstring), in chunks."""
    from scipy.linalg.blas import dsyrk as _syrk  # on first use: scipy adds ~0.1 s to every command line's start-up

    M, d = features.shape
    K = weight.shape[0]
    Hbar = (mo.means - mo.global_mean).T  # (d, K) centred training class means
    nearest_mean = _Scores(Hbar.T, -0.5 * np.sum(Hbar**2, axis=0))
    groups = ("correct", "incorrect")
    scatter = {g: np.zeros((d, d), order="F") for g in groups}
    sums = {g: np.zeros(3) for g in groups}  # count, loss, entropy
    to_predicted = np.zeros((d, d), order="F")
    ncc_correct = 0
    for lo, hi, X in _rows(features, chunk, "test_features"):
        y = labels[lo:hi]
        Z = X @ weight.T + bias
        log_p = _log_softmax(Z)
        losses = _per_sample_loss(Z, y, log_p=log_p, **loss)
        entropy = -np.sum(np.exp(log_p) * log_p, axis=1)
        predicted = np.argmax(Z, axis=1)
        right = predicted == y
        D = X - mo.means[y]
        for group, rows in zip(groups, (right, ~right), strict=True):
            if rows.any():
                scatter[group] = _syrk(1.0, D[rows].T, beta=1.0, c=scatter[group], trans=0, lower=0, overwrite_c=1)
                sums[group] += (rows.sum(), losses[rows].sum(), entropy[rows].sum())
        if (~right).any():  # misclassified samples around the mean of the class they were assigned to
            E = X[~right] - mo.means[predicted[~right]]
            to_predicted = _syrk(1.0, E.T, beta=1.0, c=to_predicted, trans=0, lower=0, overwrite_c=1)
        ncc_correct += int(np.sum(nearest_mean.argmax(X - mo.global_mean) == y))
    notes: list[str] = []
    out: dict = {
        "N": M,
        "convention": "NC1 = trace(Sigma_W Sigma_B^+)/K, Sigma_W = mean (h_i - hbar_y)(h_i - hbar_y)^T around "
        "the TRAINING class means hbar_k, Sigma_B of the training means; per subgroup normalised by its size",
    }

    def nc1(upper: np.ndarray, count: float) -> float:
        full = np.triu(upper) + np.triu(upper, 1).T
        return _pinv_trace(full / count, Hbar) / K

    count = {g: float(sums[g][0]) for g in groups}
    out["accuracy"] = count["correct"] / M
    out["nc1"] = nc1(scatter["correct"] + scatter["incorrect"], M)
    out["ncc_accuracy"] = ncc_correct / M
    out["loss"] = float(sums["correct"][1] + sums["incorrect"][1]) / M
    out["entropy"] = float(sums["correct"][2] + sums["incorrect"][2]) / M
    for group in groups:
        n = count[group]
        if n == 0:
            notes.append(f"no {group}ly classified test samples: their nc1, loss and entropy are undefined")
            out[group] = {"count": 0, "nc1": None, "nc1_predicted": None, "loss": None, "entropy": None}
            continue
        out[group] = {
            "count": int(n),
            "nc1": nc1(scatter[group], n),
            # Guo et al. Fig. 4, footnote 3: a misclassified sample's spread around its *predicted* class
            "nc1_predicted": nc1(scatter[group] if group == "correct" else to_predicted, n),
            "loss": float(sums[group][1] / n),
            "entropy": float(sums[group][2] / n),
        }
    for prefix, where in (("", out), ("correct.", out["correct"]), ("incorrect.", out["incorrect"])):
        for key, value in where.items():
            if isinstance(value, float) and not math.isfinite(value):
                where[key] = None
                notes.append(f"{prefix}{key} is not finite (float64 overflow: the features or logits are too large)")
    out["notes"] = notes
    return out


# ----------------------------------------------------------------------------- metrics


def _unit(x):
    norm = np.linalg.norm(x)
    return x / norm if norm > 0 else x


def _pinv_trace(sigma_W: np.ndarray, Hbar: np.ndarray) -> float:
    """``trace(Sigma_W Sigma_B^+)`` for ``Sigma_B = Hbar Hbar^T / K`` (``Hbar: (d, K)``), with the cutoff of
    ``jnp.linalg.pinv(Sigma_B, hermitian=True)`` (as :func:`ufm.metrics.nc1`): eigenvalues at most
    ``10 d eps`` of the largest are dropped. The eigenpairs come from the thin SVD of Hbar
    (``lambda_j = s_j^2 / K``): O(d K min(d, K)) instead of a d x d eigendecomposition."""
    d, K = Hbar.shape
    U, s, _ = np.linalg.svd(Hbar, full_matrices=False)
    lam = s**2 / K
    keep = lam > 10.0 * d * np.finfo(np.float64).eps * lam.max() if lam.size and lam.max() > 0 else lam > 0
    U, lam = U[:, keep], lam[keep]
    return float(np.sum(np.sum(U * (sigma_W @ U), axis=0) / lam))


def _cosines(columns: np.ndarray) -> tuple[float, float]:
    """(std of the off-diagonal cosines, mean |cos + 1/(K-1)|) between the columns of ``(m, K)``."""
    K = columns.shape[1]
    norms = np.linalg.norm(columns, axis=0)
    unit = columns / np.where(norms > 0, norms, 1.0)
    cos = (unit.T @ unit)[~np.eye(K, dtype=bool)]
    return float(np.std(cos)), float(np.mean(np.abs(cos + 1.0 / (K - 1))))


def _geometry(weight: np.ndarray, means: np.ndarray, global_mean: np.ndarray, bias: np.ndarray) -> dict:
    """The measurements that need only the class means ``(K, d)``, ``h_G`` and the classifier: NC2, NC3,
    norms, cosines, logit scale, p_t/p_n, bias (also evaluated at the numerical UFM optimum)."""
    K = weight.shape[0]
    W = weight.T  # (d, K), the solver's layout
    Hbar = (means - global_mean).T  # (d, K) centred class means
    M = np.eye(K) - 1.0 / K
    nc2 = np.linalg.norm(_unit(W.T @ Hbar) - M / np.sqrt(K - 1.0))
    nc3 = np.linalg.norm(_unit(W) - _unit(Hbar))
    w_norms = np.linalg.norm(weight, axis=1)
    h_norms = np.linalg.norm(Hbar, axis=0)
    Zbar = weight @ means.T + bias[:, None]  # (K, K): column k = class-mean logits of class k
    a = float(np.trace(M @ Zbar) / (K - 1))
    centred_logits = M @ Zbar
    residual = np.linalg.norm(centred_logits - a * M)
    scale = np.linalg.norm(centred_logits)
    E = np.exp(Zbar - Zbar.max(axis=0))
    P = E / E.sum(axis=0)
    w_cos = _cosines(W)
    h_cos = _cosines(Hbar)
    return {
        "nc2": float(nc2),
        "nc3": float(nc3),
        "w_norm": float(np.mean(w_norms)),
        "h_norm": float(np.mean(h_norms)),
        "w_norm_cv": float(np.std(w_norms) / np.mean(w_norms)) if np.mean(w_norms) > 0 else math.nan,
        "h_norm_cv": float(np.std(h_norms) / np.mean(h_norms)) if np.mean(h_norms) > 0 else math.nan,
        "w_cos_std": w_cos[0],
        "h_cos_std": h_cos[0],
        "w_cos_shift": w_cos[1],
        "h_cos_shift": h_cos[1],
        "a": a,
        "a_residual": float(residual / scale) if scale > 0 else math.nan,
        "p_t": float(np.mean(np.diag(P))),
        "p_n": float(np.mean(P[~np.eye(K, dtype=bool)])),
        "bias": float(np.mean(bias)),
        "bias_spread": float(np.max(np.abs(bias - np.mean(bias)))),
    }


def _metrics(mo: _Moments, weight: np.ndarray, bias: np.ndarray, N: int) -> dict:
    K = weight.shape[0]
    Hbar = (mo.means - mo.global_mean).T  # (d, K) centred class means
    trace = _pinv_trace(mo.scatter / N, Hbar)
    # pairwise squared distances of the means, from centred coordinates (less cancellation)
    cgram = Hbar.T @ Hbar
    csq = np.diag(cgram)
    distance2 = np.maximum(csq[:, None] + csq[None, :] - 2.0 * cgram, 0.0)
    upper = np.triu_indices(K, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        cdnv = (mo.variances[:, None] + mo.variances[None, :])[upper] / (2.0 * distance2[upper])
    geometry = _geometry(weight, mo.means, mo.global_mean, bias)
    out = {
        "nc1": trace / K,
        "nc1_trace": trace,
        "nc2": geometry.pop("nc2"),
        "nc3": geometry.pop("nc3"),
        "cdnv": float(np.mean(cdnv)),
        "ncc_agreement": mo.ncc_agreement,
        "ncc_accuracy": mo.ncc_accuracy,
        "accuracy": mo.accuracy,
        **geometry,
    }
    return {k: float(v) for k, v in out.items()}


# ----------------------------------------------------------------------------- theory


def _problem(K, counts, d, loss, delta, gamma, mse_kappa, mse_beta, lam_W, lam_H, lam_b):
    import jax

    from ufm.problem import Problem

    n = max(1, int(round(sum(counts) / K)))
    dtype = "float64" if jax.config.jax_enable_x64 else "float32"  # the spectra's dtype; metrics stay float64
    return Problem(
        K=K,
        n=n,
        d=d,
        delta=delta,
        lam_W=lam_W,
        lam_H=lam_H,
        lam_b=0.0 if lam_b is None else lam_b,
        loss=loss,
        gamma=gamma,
        mse_kappa=mse_kappa,
        mse_beta=mse_beta,
        dtype=dtype,
    )


def _numerical_optimum(problem, counts):
    """Imbalanced classes: ``(predicted, b*)`` at the numerical UFM optimum with the class sizes ``counts``
    (module docstring), or ``(None, reason)`` when it is not computed."""
    import jax

    from ufm import _lbfgs, imbalance

    K, d = problem.K, problem.d
    if problem.loss not in ("ce", "ls", "mse"):
        return None, f"loss {problem.loss!r} has no exact class-mean reduction"
    if d < K:
        return None, f"d = {d} < K = {K}, where one start need not reach the global minimum"
    if K * d > NUMERICAL_MAX_KD:
        return None, f"K d = {K * d} > NUMERICAL_MAX_KD = {NUMERICAL_MAX_KD}"
    if not jax.config.jax_enable_x64:
        return None, "it runs in float64: enable jax_enable_x64 (the CLI does)"
    size = 2 * K * d + K
    _memory.require(
        8.0 * size * (2 * _lbfgs.MEMORY + 8),
        "the numerical UFM prediction (reduced L-BFGS)",
        f"K = {K}, d = {d}",
        "omit lam_W/lam_H (--lam-W/--lam-H)",
    )
    s = imbalance.solve_reduced(
        counts,
        d=d,
        lam_W=problem.lam_W,
        lam_H=problem.lam_H,
        lam_b=problem.lam_b,
        loss=problem.loss,
        delta=problem.delta,
        mse_kappa=problem.mse_kappa,
        mse_beta=problem.mse_beta,
    )
    finite = all(np.all(np.isfinite(x)) for x in (s.W, s.Hbar, s.b))
    if s.status != "converged" or not finite:
        return None, f"the solve did not converge ({s.status}, gradient ratio {s.grad_ratio:.2g})"
    sizes = np.asarray(counts, np.float64)
    geometry = _geometry(s.W.T, s.Hbar.T, s.Hbar @ sizes / sizes.sum(), s.b)
    names = ("nc2", "nc3", "w_norm", "h_norm", "a", "bias") + (("p_t", "p_n") if problem.loss != "mse" else ())
    predicted = {name: geometry[name] for name in names}
    predicted["nc1"] = 0.0  # every minimizer has H = Hbar Y (ufm.solver docstring): no within-class spread
    return predicted, s.b


def _nonzero_counts(pred, d: int, K: int) -> dict:
    """Block -> how many eigenvalues Thm 4.2's spectrum (``pred.spectra``) has non-zero, or
    ``{"reason": why there is no such count}``."""
    if pred.collapsed:
        return {"reason": "the predicted minimizer is W = H = 0 (beyond the phase boundary)"}
    if d < K:
        return {"reason": f"d = {d} < K = {K}, where the theorem does not apply"}
    if pred.spectra is None:
        return {"reason": f"no predicted spectrum for loss {pred.loss!r} with this setup"}
    return {
        block: int(np.sum(s.multiplicities[s.values != 0.0]))
        for block, s in (("W", pred.spectra.W), ("H", pred.spectra.H))
    }


def _prediction(problem, counts, measured, lam_b):
    """(predicted, error, relative, applies, reasons, bias prediction (scalar or (K,)), prediction kind,
    non-zero eigenvalue counts of the predicted Hessian blocks (:func:`_nonzero_counts`))."""
    import theory
    from ufm.compare import predict

    K, n, d = problem.K, problem.n, problem.d
    reasons = []
    numerical = None
    if min(counts) != max(counts):
        numerical, extra = _numerical_optimum(problem, counts)
        if numerical is None:
            reasons.append(
                f"class counts differ ({min(counts)} to {max(counts)} per class): the theorems assume "
                f"balanced classes; prediction shown for n = round(N/K) = {n}, not judged "
                f"(numerical prediction skipped: {extra})"
            )
        else:
            reasons.append(
                f"class counts differ ({min(counts)} to {max(counts)} per class): the closed forms "
                f"assume balanced classes; predicted instead: the {PREDICTION_NUMERICAL} "
                f"(numerical, not closed-form; d = {d}, lam_b = {problem.lam_b:g})"
            )
    if d < K:
        reasons.append(f"d = {d} < K = {K}: the theorems need d >= K (prediction computed for d = K)")
    nonzero = {"reason": "the numerical prediction has no Hessian spectrum"}
    if numerical is not None:
        predicted, bias_prediction, kind = numerical, extra, PREDICTION_NUMERICAL
        if predicted["w_norm"] <= 1e-8:
            reasons.append("the numerical optimum is W = H = 0 (beyond the phase boundary): NC1-NC3 not predicted")
            for name in ("nc1", "nc2", "nc3"):
                del predicted[name]
    else:
        pred = predict(problem)
        predicted = {
            "w_norm": pred.w_norm,
            "h_norm": pred.h_norm,
            "a": pred.a,
            "p_t": pred.p_t,
            "p_n": pred.p_n,
            "bias": pred.bias,
        }
        bias_prediction, kind = pred.bias, PREDICTION_CLOSED_FORM
        nonzero = _nonzero_counts(pred, d, K)
        if min(counts) != max(counts):
            nonzero = {"reason": "class counts differ: Thm 4.2's spectrum is for balanced classes"}
        if pred.collapsed:
            if problem.loss in ("ce", "ls"):
                c = theory.phase(K, n, problem.delta, problem.lam_W, problem.lam_H).c
                reasons.append(
                    f"c = K sqrt(n lam_W lam_H) + delta = {c:.6g} >= 1 (beyond the phase boundary): "
                    "the minimizer is W = H = 0; NC1-NC3 and kappa are not predicted"
                )
            else:
                reasons.append(
                    "a = 0 (beyond the phase boundary): the minimizer is W = H = 0; NC1-NC3 and kappa are not predicted"
                )
        else:
            predicted.update(nc1=0.0, nc2=0.0, nc3=0.0)
            for block in ("W", "H"):
                kappa = getattr(pred, f"kappa_{block}")
                if math.isfinite(kappa):
                    predicted[f"kappa_{block}"] = float(kappa)
    error, relative = {}, {}
    for name, p in predicted.items():
        if name == "bias" or name not in measured:
            continue
        m = measured[name]
        relative[name] = p != 0.0 and not name.startswith("nc")
        error[name] = abs(m - p) / abs(p) if relative[name] else abs(m - p)
    applies = not any(r.startswith(("class counts", "d = ")) for r in reasons)
    predicted = {k: float(v) for k, v in predicted.items()}
    return predicted, error, relative, applies, reasons, bias_prediction, kind, nonzero


# ----------------------------------------------------------------------------- Hessians


def _kept(values: np.ndarray, counts: np.ndarray, count: int) -> tuple[float, float, float | None]:
    """The ``count`` largest of the eigenvalues ``values`` (each ``counts[j]`` times): (largest, smallest
    kept, largest not kept or None when every eigenvalue is kept)."""
    keep = counts > 0
    order = np.argsort(values[keep], kind="stable")[::-1]
    v, c = values[keep][order], counts[keep][order]
    cumulative = np.cumsum(c)
    j = int(np.searchsorted(cumulative, count))  # the first entry that completes `count`
    residue = float(v[j]) if cumulative[j] > count else (float(v[j + 1]) if j + 1 < v.size else None)
    return float(v[0]), float(v[j]), residue


def _block_info(spectrum, count, reason: str) -> dict:
    """One block's entry of ``Analysis.spectra``: kappa over the ``count`` largest eigenvalues (the
    predicted non-zero ones) with the residue, or, without a count, over every eigenvalue above
    ``NONZERO_RTOL`` x the largest (the rule labelled with ``reason``)."""
    from ufm import hessian

    values, counts = spectrum.distinct(rtol=1e-6)
    top = float(np.max(values)) if values.size else 0.0
    info: dict = {"method": spectrum.method, "lambda_max": top, "size": spectrum.size}
    if count is not None and 1 <= count <= spectrum.size:
        largest, smallest, residue = _kept(np.asarray(spectrum.values), np.asarray(spectrum.counts), count)
        info.update(
            kappa=largest / smallest if smallest > 0 else None,
            rule=f"the {count} largest of {spectrum.size} eigenvalues (the non-zero ones of Thm 4.2's spectrum)",
            kept=count,
            residue=residue,
            residue_ratio=None if residue is None or smallest <= 0 else residue / smallest,
        )
    else:
        positive = values > hessian.NONZERO_RTOL * top
        kappa = float(values[positive].max() / values[positive].min()) if top > 0 else None
        info.update(
            kappa=kappa,
            rule=f"every eigenvalue above {hessian.NONZERO_RTOL:g} lambda_max (no predicted count: {reason})",
        )
    info.update(values=values.tolist(), multiplicities=counts.tolist())
    return info


def _spectra(features, labels, weight, bias, weights, mode, p_t, means, nonzero):
    """Loss-term Hessian blocks W, H (at the features) and H at the class means (``ufm.hessian``): exact
    when small, else Lanczos lambda_max. ``nonzero``: block -> predicted non-zero count, or ``{"reason": ...}``."""
    import jax
    import jax.numpy as jnp

    from ufm import hessian
    from ufm.objective import Params

    N, d = features.shape
    K = weight.shape[0]
    if mode == "auto" and d * N > AUTO_SPECTRA_ENTRIES:
        return {
            "skipped": f"d N = {d * N} > {AUTO_SPECTRA_ENTRIES} (pass spectra=True / --spectra on "
            "to compute them; they need H in memory as float64)"
        }
    _memory.require(
        8.0 * 6 * d * N,
        "the features and their class means as float64 JAX arrays (Hessian blocks)",
        f"N = {N}, d = {d}",
        "pass spectra=False (--spectra off)",
    )
    x64 = bool(jax.config.jax_enable_x64)
    dtype = jnp.float64 if x64 else jnp.float32
    W, b = jnp.asarray(weight.T, dtype), jnp.asarray(bias, dtype)
    at_point = Params(W, jnp.asarray(np.asarray(features, np.float64).T, dtype), b)
    at_means = Params(W, jnp.asarray(means[labels].T, dtype), b)
    y = jnp.asarray(labels)
    out = {"K_p_t": K * p_t, "dtype": "float64" if x64 else "float32 (enable jax_enable_x64 for float64)"}
    softmax_loss = int(np.asarray(weights.loss_id)) == 0
    reason = nonzero.get("reason", "")
    for name, block, params in (("W", "W", at_point), ("H", "H", at_point), ("H_class_means", "H", at_means)):
        size = d * K if block == "W" else d * N
        if block == "W":
            structured = 8.0 * 3 * K * min(d, N) * N + 8.0 * 3 * (K * min(d, N)) ** 2
        else:
            structured = 8.0 * 4 * N * K * K if softmax_loss else 8.0 * 4 * N * K * K + 8.0 * d * N
        try:
            if size**2 <= DENSE_ENTRIES or structured <= STRUCTURED_BYTES:
                spectrum = hessian.block_spectrum(
                    params, y, weights, block, method="dense" if size**2 <= DENSE_ENTRIES else "structured"
                )
                out[name] = _block_info(spectrum, nonzero.get(block), reason)
            else:
                top = hessian.extreme_eigenvalues(params, y, weights, block, k=1, which="LA", tol=1e-8)
                out[name] = {
                    "method": "lanczos",
                    "lambda_max": float(top[-1]),
                    "kappa": None,
                    "note": "block too large for the exact paths: largest eigenvalue only",
                }
        except ValueError as error:  # e.g. not enough memory for this block
            out[name] = {"skipped": str(error)}
        out[name]["at"] = AT[name]
        out[name]["compared"] = name != "H"  # the block Thm 4.2's kappa is compared with
    return out


# ----------------------------------------------------------------------------- entry point


def analyze(
    features,
    labels,
    weight,
    bias=None,
    *,
    loss: str = "ce",
    delta: float = 0.0,
    gamma: float = 0.0,
    mse_kappa: float = 1.0,
    mse_beta: float = 1.0,
    lam_W: float | None = None,
    lam_H: float | None = None,
    lam_b: float | None = None,
    chunk_size: int | None = None,
    spectra="auto",
    test_features=None,
    test_labels=None,
) -> Analysis:
    """Neural-collapse metrics of a last layer and, given the training setup, the UFM prediction.

    Args:
        features: ``(N, d)`` penultimate-layer features (numpy, memory-mapped numpy or JAX; any real
            dtype, accumulated in float64). Never copied whole: read ``chunk_size`` rows at a time.
        labels: ``(N,)`` integer classes in ``[0, K)``; every class needs at least one sample.
        weight: ``(K, d)`` classifier (row k = w_k, ``torch.nn.Linear.weight``). bias: ``(K,)`` or None (0).
        loss, delta, gamma, mse_kappa, mse_beta: the training loss (``"ce"``, ``"ls"`` with smoothing
            delta, ``"focal"`` with gamma, ``"mse"``), for the prediction and the Hessian blocks.
        lam_W, lam_H, lam_b: the penalties ``lam/2 ||.||^2`` on the last layer's W, features and bias
            during training; ``lam_W`` and ``lam_H`` (both or neither) switch the prediction on.
        chunk_size: rows per chunk (default :func:`default_chunk_size`, ~64 MB of float64 work).
        spectra: ``"auto"`` (loss-term Hessian blocks when ``d N <= AUTO_SPECTRA_ENTRIES``), True, False.
        test_features, test_labels: a held-out set ``(M, d)``, ``(M,)`` (both or neither; same layout and
            checks as the training arrays, any class may be absent), measured against the training class
            means and classifier into ``Analysis.held_out`` (module docstring), streamed in chunks.

    Returns:
        :class:`Analysis`. Raises ``ValueError`` naming the argument for bad input (shapes, labels out
        of range or non-integer, NaN/inf features, a class without samples, bad setup numbers).
    """
    features = _real_array("features", features, 2)
    N, d = features.shape
    weight = _finite("weight", _real_array("weight", weight, 2))
    K = weight.shape[0]
    if N < 1 or d < 1:
        raise ValueError(f"features must have at least one row and one column, got shape {features.shape}")
    if K < 2:
        raise ValueError(f"weight must have K >= 2 rows (classes), got shape {weight.shape}")
    if weight.shape[1] != d:
        raise ValueError(f"weight must have shape (K, d) with d = {d} (columns of features), got {weight.shape}")
    if bias is None:
        bias = np.zeros(K)
    else:
        bias = _finite("bias", _real_array("bias", bias, 1))
        if bias.shape != (K,):
            raise ValueError(f"bias must have shape (K,) = ({K},) (K = rows of weight), got {bias.shape}")
    labels = _labels(labels, N, K)
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    if spectra not in SPECTRA or isinstance(spectra, (int, float)) and not isinstance(spectra, bool):
        raise ValueError(f"spectra must be 'auto', True or False, got {spectra!r}")
    if (lam_W is None) != (lam_H is None):
        raise ValueError(
            "lam_W and lam_H must be given together (both switch the UFM prediction on), got "
            f"lam_W = {lam_W!r}, lam_H = {lam_H!r}"
        )
    chunk = default_chunk_size(d, K) if chunk_size is None else chunk_size
    if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 1:
        raise ValueError(f"chunk_size must be an integer >= 1, got {chunk_size!r}")
    chunk = int(min(chunk, N))
    if (test_features is None) != (test_labels is None):
        raise ValueError(
            "test_features and test_labels must be given together, got "
            f"{'test_features' if test_labels is None else 'test_labels'} only"
        )
    M = 0
    if test_features is not None:
        test_features = _real_array("test_features", test_features, 2)
        M = test_features.shape[0]
        if M < 1 or test_features.shape[1] != d:
            raise ValueError(
                f"test_features must have shape (M, d) with M >= 1 and d = {d} (columns of features), "
                f"got {test_features.shape}"
            )
        test_labels = _labels(test_labels, M, K, "test_labels", "test_features")
    # the checks of the setup (delta only with ls, ranges) are Problem's: before streaming
    setup, problem = {}, None
    if lam_W is not None and loss == "mse" and lam_b is None:
        raise ValueError("lam_b (>= 0) is needed for loss='mse': its optimum depends on the bias")
    if lam_W is not None:
        problem = _problem(K, [N / K], d, loss, delta, gamma, mse_kappa, mse_beta, lam_W, lam_H, lam_b)
        setup = {
            "loss": loss,
            "delta": problem.delta,
            "gamma": problem.gamma,
            "lam_W": problem.lam_W,
            "lam_H": problem.lam_H,
            "lam_b": lam_b if lam_b is None else _number("lam_b", lam_b, 0.0, low_open=False),
        }
        if loss == "mse":
            setup.update(mse_kappa=problem.mse_kappa, mse_beta=problem.mse_beta)
    else:
        problem = _problem(K, [N / K], d, loss, delta, gamma, mse_kappa, mse_beta, 1.0, 1.0, lam_b)
    work = 8.0 * chunk * (2 * d + 2 * K + 4) + 8.0 * (2 * d * d + 3 * K * d) + 12.0 * N
    if M:  # the held-out pass: a chunk, its centred copy and a subgroup's, 5 K-wide arrays; 3 d x d scatters
        test_chunk = min(chunk, M)
        work = max(work, 8.0 * test_chunk * (3 * d + 5 * K + 8) + 8.0 * (3 * d * d + 3 * K * d) + 12.0 * (N + M))
    _memory.require(
        work,
        "streaming the features",
        f"N = {N}, d = {d}, K = {K}, chunk_size = {chunk}" + (f", M = {M} test samples" if M else ""),
        "pass a smaller chunk_size (--chunk-size)",
    )

    mo = _moments(features, labels, weight, bias, chunk)
    counts = tuple(int(c) for c in mo.counts)
    measured = _metrics(mo, weight, bias, N)

    predicted, error, relative, applies, reasons, kind = {}, {}, {}, False, [], ""
    nonzero: dict = {"reason": "no prediction (lam_W and lam_H not given)"}
    if lam_W is not None:
        problem = _problem(K, counts, d, loss, delta, gamma, mse_kappa, mse_beta, lam_W, lam_H, lam_b)
        predicted, error, relative, applies, reasons, bias_prediction, kind, nonzero = _prediction(
            problem, counts, measured, lam_b
        )
        error["bias"] = float(np.max(np.abs(bias - bias_prediction)))
        relative["bias"] = False

    held_out = {}
    if M:  # before the Hessian blocks: a bad test file is refused before the slow part
        settings = dict(loss=loss, delta=delta, gamma=gamma, mse_kappa=mse_kappa, mse_beta=mse_beta)
        held_out = _held_out(test_features, test_labels, weight, bias, mo, int(min(chunk, M)), settings)

    spectra_info = {}
    if spectra is False:
        spectra_info = {"skipped": "spectra=False"}
    else:
        spectra_info = _spectra(
            features, labels, weight, bias, problem.weights(), spectra, measured["p_t"], mo.means, nonzero
        )
        measured["K_p_t"] = K * measured["p_t"]
        for name, block in (("kappa_W", "W"), ("kappa_H", "H_class_means"), ("kappa_H_point", "H")):
            kappa = spectra_info.get(block, {}).get("kappa")
            if kappa is not None:
                measured[name] = kappa
                if name in predicted:
                    error[name] = abs(kappa - predicted[name]) / abs(predicted[name])
                    relative[name] = True
    return Analysis(
        K,
        N,
        d,
        counts,
        measured,
        predicted,
        error,
        relative,
        applies,
        tuple(reasons),
        setup,
        spectra_info,
        kind,
        held_out,
    )
