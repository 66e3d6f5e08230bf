"""The neural-collapse metric set of a labelled feature set, from its sufficient statistics (numpy, float64).

``collapse_metrics(stats, weight, bias=None, *, cdnv_power=2) -> dict[str, float]``; every name and its
source or convention is in :data:`METRIC_SOURCES`. :class:`ClassStatistics` holds what the metrics need:
the class counts, the class means, the global mean, the within-class scatter (a ``d x d`` matrix) and
the per-class variances; :class:`ufm.tracker.CollapseTracker` accumulates them in one streamed pass
(:meth:`ClassStatistics.from_features` computes them in memory, two passes). The nearest-class-mean
metrics (NC4) need a second pass over the samples with the final means; they live in
:mod:`ufm.tracker` (``CollapseTracker.ncc_pass``).

Layout: the one frameworks use, as :mod:`ufm.last_layer`: features ``(N, d)``, ``weight: (K, d)`` (row k =
classifier ``w_k``), ``bias: (K,)``; in the solver's notation ``W = weight.T: (d, K)``. Notation below:
``mu_k`` the class means, ``mu_G`` the mean of all N samples (with imbalanced classes not the mean of
the class means), ``Mbar = [mu_k - mu_G]: (d, K)`` the centred means, ``Sigma_W = scatter / N`` (the
within-class covariance averaged over all N samples), ``Sigma_B = Mbar Mbar^T / K`` (unweighted over
classes), ``M = I - 11^T/K``. ``weight=None`` leaves out the metrics of the classifier.

Conventions that differ between papers and public code are separate names (``nc1`` / ``nc1_trace`` /
``nc1_svd``; ``nc3`` / ``nc3_squared``; ``cdnv`` with ``cdnv_power``), so a number can be compared with
the paper or the code it comes from. Degenerate inputs give ``inf`` or ``nan`` where the formula does
(two coinciding class means: ``cdnv`` and ``gnc2_H`` are ``inf``; a zero classifier row: its cosines are
taken as 0), never an exception. Pairwise distances (``cdnv``, ``gnc2_*``) come from K x K Gram matrices
(``||x_k - x_l||^2 = g_kk + g_ll - 2 g_kl``, one GEMM instead of K^2 d differences), so each squared distance
carries an absolute rounding error of a few eps times the squared norms: two unit vectors closer than
~1e-8 (or two coinciding ones) give a large finite energy rather than ``inf``.

Cost: O(d K min(d, K)) for the thin SVD of ``Mbar``, O(d^2 min(d, K)) for ``Sigma_W`` on its singular
vectors, O(K^2 d) for the K x K Gram matrices. Memory: the K x K matrices (about 8 of them at once:
Grams of ``Mbar``, of the classifier, ``W^T Mbar``, the pairwise distances and their temporaries) and
``d x min(d, K)`` singular vectors, estimated with :func:`ufm._memory.require` before they are made.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from theory import validation
from ufm import _memory

#: the public neural-collapse library: github.com/rhubarbwu/neural-collapse (neural_collapse/measure.py,
#: kernels.py); "Papyan" = Papyan, Han & Donoho 2020 (PNAS); "Guo" = the LS paper (Guo et al.)
METRIC_SOURCES: dict[str, str] = {
    "nc1": "tr(Sigma_W Sigma_B^+)/K; Papyan 2020, Guo eq. 4 (pinv cutoff 10 d eps of the largest eigenvalue)",
    "nc1_trace": "tr(Sigma_W Sigma_B^+) = K nc1; the LS paper's public code (and Papyan's notebook)",
    "nc1_svd": "tr(Sigma_W Sigma_B^{+,K-1})/K: Sigma_B inverted on its top K-1 singular directions only "
    "(Han, Papyan & Donoho 2022, public code: scipy svds(Sigma_B, k=K-1)); the code reports K nc1_svd. "
    "Centred at mu_G, Sigma_B has rank <= K-1, so it differs from nc1 only where the cutoff drops one of "
    "the top K-1 directions (nearly dependent means: nc1_svd inverts the tiny eigenvalue, larger)",
    "nc1_tr_ratio": "tr(Sigma_W) / tr(Sigma_B) (Tirer, Huang & Niles-Weed 2023)",
    "cdnv": "mean over k<l of (var_k + var_l) / (2 ||mu_k - mu_l||^p), var_k = mean ||h - mu_k||^2 over "
    "class k (Galanti et al. 2022: p = 2; the public library's class_dist_norm_vars(dist_exp=e): p = 2e)",
    "nc2": "|| W^T Mbar/||W^T Mbar||_F - M/sqrt(K-1) ||_F; Guo eqs. 5, 16 (as ufm.metrics.nc2)",
    "nc2_etf_H": "|| G/||G||_F - M/||M||_F ||_F, G = Mbar^T Mbar; the public library's simplex_etf_error",
    "nc2_etf_W": "the same for G = weight weight^T (uncentred classifier rows)",
    "equinorm_H": "std/mean of ||mu_k - mu_G|| (population std; Papyan 2020)",
    "equinorm_W": "std/mean of ||w_k|| (population std; Papyan 2020)",
    "equiangular_H": "std of the K(K-1) off-diagonal cos(mu_k - mu_G, mu_l - mu_G) (Papyan 2020)",
    "equiangular_W": "std of the K(K-1) off-diagonal cos(w_k, w_l) (Papyan 2020)",
    "maxangle_H": "mean over k != l of |cos(mu_k - mu_G, mu_l - mu_G) + 1/(K-1)| (Papyan 2020)",
    "maxangle_W": "mean over k != l of |cos(w_k, w_l) + 1/(K-1)| (Papyan 2020)",
    "gnc2_H": "Riesz 1-energy: mean over k != l of 1/||u_k - u_l||, u_k = (mu_k - mu_G)/||.|| "
    "(hyperspherical uniformity, Liu et al. 2023; any K, also K > d); simplex ETF: sqrt((K-1)/(2K))",
    "gnc2_W": "Riesz 1-energy of u_k = w_k/||w_k|| (as gnc2_H)",
    "gnc2_log_H": "logarithmic energy: mean over k != l of log(1/||u_k - u_l||) (the public library's "
    "log_kernel); simplex ETF: -log(2K/(K-1))/2",
    "gnc2_log_W": "logarithmic energy of u_k = w_k/||w_k||",
    "nc3": "|| W/||W||_F - Mbar/||Mbar||_F ||_F; Guo eqs. 6, 17 (as ufm.metrics.nc3)",
    "nc3_squared": "nc3^2, the squared Frobenius norm of the LS paper's public code",
    "uniform_duality": "std over classes of cos(w_k, mu_k - mu_G) (the public library's uniform duality)",
    "duality_cos_mean": "mean over classes of cos(w_k, mu_k - mu_G) (1 at self-duality)",
    "w_norm": "mean ||w_k||",
    "h_norm": "mean ||mu_k - mu_G||",
    "ncc_agreement": "fraction of samples whose nearest class mean is argmax(weight h + bias) (NC4; 2nd pass)",
    "ncc_agreement_nobias": "the same for argmax(weight h), the classifier without bias (NC4; 2nd pass)",
    "ncc_accuracy": "fraction of samples whose nearest class mean is their label (2nd pass)",
    "accuracy": "fraction of samples with argmax(weight h + bias) = label (2nd pass)",
}


@dataclass(frozen=True)
class ClassStatistics:
    """Sufficient statistics of a labelled feature set ``(N, d)`` with K classes (all float64).

    Attributes:
        counts: ``(K,)`` int64, samples per class.
        means: ``(K, d)`` class means ``mu_k``.
        global_mean: ``(d,)`` mean ``mu_G`` of all N samples.
        scatter: ``(d, d)`` within-class scatter ``sum_i (h_i - mu_{y_i})(h_i - mu_{y_i})^T`` (not divided by N).
        variances: ``(K,)`` ``mean ||h_i - mu_k||^2`` over the samples of class k.
    """

    counts: np.ndarray
    means: np.ndarray
    global_mean: np.ndarray
    scatter: np.ndarray
    variances: np.ndarray

    @property
    def num_classes(self) -> int:
        return int(self.means.shape[0])

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    @property
    def num_samples(self) -> int:
        return int(np.sum(self.counts))

    @classmethod
    def from_features(cls, features, labels, num_classes: int) -> ClassStatistics:
        """The statistics of ``features: (N, d)`` and integer ``labels: (N,)`` in memory: means first, then
        the centred scatter (two passes, no cancellation). Every class needs a sample."""
        from ufm import tracker  # the one place that validates and converts inputs (it imports this module)

        K = validation.integer("num_classes", num_classes, 2)
        features = tracker.as_numpy("features", features)
        N, d = features.shape if features.ndim == 2 else (0, 0)  # else: checked_batch says what is wrong
        _memory.require(
            8.0 * (3.0 * N * d + d * d + K * d),
            "the in-memory class statistics (float64 copy of the features, deviations, scatter)",
            f"N = {N}, d = {d}, K = {K}",
            "stream the features in batches through ufm.tracker.CollapseTracker",
        )
        X, y = tracker.checked_batch(features, labels, K, None)
        counts = np.bincount(y, minlength=K).astype(np.int64)
        _require_classes(counts)
        means = np.zeros((K, X.shape[1]))
        tracker.add_by_class(means, X, y)
        means /= counts[:, None]
        D = X - means[y]
        variances = np.bincount(y, weights=np.einsum("ij,ij->i", D, D), minlength=K) / counts
        return cls(counts, means, X.mean(axis=0), D.T @ D, variances)


def _require_classes(counts: np.ndarray) -> None:
    if np.any(counts == 0):
        raise ValueError(
            f"labels: class {int(np.flatnonzero(counts == 0)[0])} has no samples (every one of the "
            f"K = {counts.size} classes needs at least one)"
        )


def _checked_stats(stats) -> ClassStatistics:
    if not isinstance(stats, ClassStatistics):
        raise ValueError(f"stats must be a ClassStatistics, got {type(stats).__name__}")
    K, d = stats.means.shape
    shapes = {"counts": (K,), "global_mean": (d,), "scatter": (d, d), "variances": (K,)}
    for name, shape in shapes.items():
        if np.shape(getattr(stats, name)) != shape:
            raise ValueError(
                f"stats.{name} must have shape {shape} (K = {K}, d = {d}), got {np.shape(getattr(stats, name))}"
            )
    if K < 2:
        raise ValueError(f"stats: K must be at least 2 classes, got {K}")
    _require_classes(np.asarray(stats.counts))
    for name in ("means", "global_mean", "scatter", "variances"):
        validation.real_array(f"stats.{name}", getattr(stats, name), "finite entries")
    return stats


def shaped_array(name: str, value, shape: tuple[int, ...]) -> np.ndarray:
    """``value`` as a finite float64 array of exactly ``shape``; ValueError naming ``name`` otherwise (internal
    API, also used by :mod:`ufm.generalized`)."""
    array = validation.real_array(name, value, "finite entries")
    if array.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {array.shape}")
    return array


def _unit(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x)
    return x / norm if norm > 0 else x


def _nc1_family(sigma_W: np.ndarray, Mbar: np.ndarray) -> dict[str, float]:
    """nc1 (pinv cutoff), nc1_svd (rank K-1) and nc1_tr_ratio. The eigenpairs of ``Sigma_B = Mbar Mbar^T/K``
    come from the thin SVD of ``Mbar: (d, K)`` (``lambda_j = s_j^2/K``, descending), so
    ``tr(Sigma_W P) = sum_j u_j^T Sigma_W u_j / lambda_j`` costs O(d^2 min(d, K)), no d x d eigensolve."""
    d, K = Mbar.shape
    U, s, _ = np.linalg.svd(Mbar, full_matrices=False)
    lam = s**2 / K
    quad = np.einsum("ij,ij->j", U, sigma_W @ U)  # u_j^T Sigma_W u_j
    cutoff = 10.0 * d * np.finfo(np.float64).eps * lam[0]  # jnp.linalg.pinv's default rtol = 10 max(shape) eps
    keep = lam > cutoff if lam[0] > 0 else np.zeros(lam.size, bool)
    top = min(K - 1, lam.size)  # Han et al.: the top K-1 directions, whatever their size
    with np.errstate(divide="ignore", invalid="ignore"):
        trace = float(np.sum(quad[keep] / lam[keep]))
        truncated = float(np.sum(quad[:top] / lam[:top]))
        ratio = float(np.trace(sigma_W) / np.sum(lam))
    return {"nc1": trace / K, "nc1_trace": trace, "nc1_svd": truncated / K, "nc1_tr_ratio": ratio}


def _pair_distances(gram: np.ndarray) -> np.ndarray:
    """``||x_k - x_l||`` from the Gram matrix of the x_k (K x K; the diagonal is 0)."""
    sq = np.diag(gram)
    return np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2.0 * gram, 0.0))


def _shape(columns: np.ndarray, suffix: str) -> dict[str, float]:
    """The NC2-type metrics of the K columns of ``columns: (m, K)``: simplex-ETF error of the Gram,
    equinorm, equiangularity, maximal angle, Riesz and log energies of the normalised columns."""
    K = columns.shape[1]
    gram = columns.T @ columns
    norms = np.sqrt(np.maximum(np.diag(gram), 0.0))
    off = ~np.eye(K, dtype=bool)
    safe = np.where(norms > 0, norms, 1.0)
    cos = gram / safe[:, None] / safe[None, :]
    cos[np.diag_indices(K)] = np.where(norms > 0, 1.0, 0.0)  # exact 1 on the unit sphere's Gram
    offdiag = cos[off]
    distances = _pair_distances(cos)[off]
    etf = (np.eye(K) - 1.0 / K) / math.sqrt(K - 1.0)  # M / ||M||_F
    mean_norm = float(np.mean(norms))
    with np.errstate(divide="ignore"):
        riesz = float(np.mean(1.0 / distances))
        log_energy = float(np.mean(-np.log(distances)))
    return {
        f"nc2_etf_{suffix}": float(np.linalg.norm(_unit(gram) - etf)),
        f"equinorm_{suffix}": float(np.std(norms) / mean_norm) if mean_norm > 0 else math.nan,
        f"equiangular_{suffix}": float(np.std(offdiag)),
        f"maxangle_{suffix}": float(np.mean(np.abs(offdiag + 1.0 / (K - 1)))),
        f"gnc2_{suffix}": riesz,
        f"gnc2_log_{suffix}": log_energy,
    }


def _cdnv(variances: np.ndarray, Mbar: np.ndarray, power: float) -> float:
    K = Mbar.shape[1]
    upper = np.triu_indices(K, 1)
    distance = _pair_distances(Mbar.T @ Mbar)[upper]  # from centred means: less cancellation
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.mean((variances[:, None] + variances[None, :])[upper] / (2.0 * distance**power)))


def collapse_metrics(stats: ClassStatistics, weight=None, bias=None, *, cdnv_power: float = 2) -> dict[str, float]:
    """Every one-pass neural-collapse metric of ``stats`` (names and sources: :data:`METRIC_SOURCES`).

    Args:
        stats: the sufficient statistics (every class with at least one sample, K >= 2).
        weight: ``(K, d)`` classifier rows, or None: then only the metrics of the features are returned
            (``nc1*``, ``cdnv``, the ``_H`` metrics, ``h_norm``).
        bias: ``(K,)`` or None; validated only: no metric of the statistics depends on it (it enters the
            NC4 agreement of the second pass, :meth:`ufm.tracker.CollapseTracker.ncc_pass`).
        cdnv_power: the exponent p of the distance in ``cdnv`` (> 0; Galanti et al.: 2).

    Returns:
        ``{name: float}``; NC4 names are not included (they need a second pass over the samples).
    """
    stats = _checked_stats(stats)
    K, d = stats.means.shape
    power = validation.positive_scalar("cdnv_power", cdnv_power)
    if weight is not None:
        weight = shaped_array("weight", weight, (K, d))
    if bias is not None:
        shaped_array("bias", bias, (K,))
    _memory.require(
        8.0 * (8.0 * K * K + 3.0 * d * min(d, K) + d * K),
        "the collapse metrics (K x K Gram matrices, singular vectors)",
        f"K = {K}, d = {d}",
        "compute them on a subset of the classes",
    )
    N = stats.num_samples
    Mbar = np.asarray(stats.means - stats.global_mean, np.float64).T  # (d, K)
    out = _nc1_family(np.asarray(stats.scatter, np.float64) / N, Mbar)
    out["cdnv"] = _cdnv(np.asarray(stats.variances, np.float64), Mbar, power)
    out.update(_shape(Mbar, "H"))
    out["h_norm"] = float(np.mean(np.linalg.norm(Mbar, axis=0)))
    if weight is None:
        return out
    W = weight.T  # (d, K), the solver's layout
    out.update(_shape(W, "W"))
    M = np.eye(K) - 1.0 / K
    out["nc2"] = float(np.linalg.norm(_unit(W.T @ Mbar) - M / math.sqrt(K - 1.0)))
    nc3 = float(np.linalg.norm(_unit(W) - _unit(Mbar)))
    out["nc3"], out["nc3_squared"] = nc3, nc3**2
    w_norms, h_norms = np.linalg.norm(W, axis=0), np.linalg.norm(Mbar, axis=0)
    product = w_norms * h_norms
    duality = np.einsum("ij,ij->j", W, Mbar) / np.where(product > 0, product, 1.0)
    out["uniform_duality"] = float(np.std(duality))
    out["duality_cos_mean"] = float(np.mean(duality))
    out["w_norm"] = float(np.mean(w_norms))
    return out
