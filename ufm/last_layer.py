"""Neural-collapse analysis of a trained network's last layer, and the UFM prediction next to it.

``analyze(features, labels, weight, bias=None, *, loss=..., lam_W=..., lam_H=..., ...) -> Analysis``.

Layout: the one frameworks use, **not** the solver's. ``features: (N, d)`` (row i = the
penultimate-layer feature h_i of training sample i), ``labels: (N,)`` integers in ``[0, K)``,
``weight: (K, d)`` (as ``torch.nn.Linear`` stores it: row k = classifier w_k), ``bias: (K,)``
(zeros when None). In the solver's notation (``W: (d, K)``, ``H: (d, N)``; docs/theory.md, Notation and
layouts)
``W = weight.T`` and ``H = features.T``; logits ``z_i = weight h_i + bias``.

Why a module of its own: ``python -m ufm.analyze`` is the command line (:mod:`ufm.analyze`) and
``ufm.analyze(...)`` must be this function; ``ufm/__init__.py`` exports it from here, so the
package never imports the CLI module (``python -m`` would otherwise run it twice), and the CLI
module, once imported, replaces the package attribute with itself made callable (as
:mod:`ufm.solve` does), so ``ufm.analyze(...)`` calls this function either way.

Streaming: one pass over chunks of rows (``chunk_size`` rows at a time, float64 copies of one chunk only;
float32/float16/integer input is accumulated in float64), about a reference point per class (the class
means of a first look at ``PILOT_ROWS_PER_CLASS`` K rows, :func:`_pilot`; a class first seen later: its mean
in that chunk): exact per-class counts, the sums of ``x - c_y``, of their squares and their outer products
(the within-class scatter about the references, BLAS syrk), finiteness. The scatter about the class means is
then that minus ``n_k (hbar_k - c_k)(hbar_k - c_k)^T`` per class: with a reference drawn from the class
itself the two parts cancel by about one bit, so the result stays exact near collapse; a class whose
distances cancel by more than :data:`CANCELLATION` has the scatter recomputed about the final means in a
second pass (the old way). The classifier's decisions (``argmax_k z_ik``) and the nearest-mean decisions
are certified without the K-wide products for the rows inside a ball around their class's reference that
lies in the class's decision region (:class:`_Certified`, :func:`_nearest_thresholds`: the distance to the
nearest tie hyperplane, rounding bounded, a relative slack of :data:`CERTIFY_SLACK`); the other rows take
the exact products: the classifier's in the pass, the nearest mean's in a second look at those rows only
(a memory map's pages around them read again). The K-wide products (logits, nearest-mean scores) run in
float32 BLAS and every row whose top two scores are within a rounding bound is recomputed in float64
(``_Scores``), so the predictions are float64's. Certificates are used when the classes have
:data:`CERTIFY_ROWS_PER_CLASS` rows on average; otherwise every decision is a product and the nearest-mean
ones take a second pass over all rows. The scatter's products release the GIL (numpy, not scipy's wrapper),
so SIGINT / SIGTERM act within a chunk (:mod:`ufm._interrupt`). A memory-mapped array (``np.load(...,
mmap_mode="r")``, C- or Fortran-ordered) is read chunk by chunk and each chunk's pages are handed back to
the kernel after use, so resident memory stays at one chunk. Labels are checked in chunks and never widened
(a memory-mapped int8 file stays one). The memory all this needs (:func:`memory_bytes`: a chunk, the K x d
arrays, the tiles, the N predictions and per-row distances) is estimated from the shapes before anything is
converted, and refused when it does not fit.

Scale: every sum is taken in a scaled form, exactly: the features are divided by their largest
magnitude's power of two (kept as a running exponent over the chunks), the classifier and each row of a
score by theirs (:class:`_Scores`), and the result multiplied back analytically, so finite inputs of
any magnitude (1e-300 to 1e308) neither overflow nor underflow, and ordinary inputs give the same bits
as unscaled arithmetic (a power of two is exact). A measurement that does not exist for the input (a
zero norm's cosines, two classes with one mean for the CDNV, a 0/0, a value beyond float64) is None in
``measured`` with the reason in ``Analysis.undefined``: NaN or inf is never a measurement.

Many classes: no K x K (or K x N) matrix is formed. The pairwise statistics (NC2's ``W^T Hbar``, the
class-mean logits for a, p_t, p_n, the Gram matrices behind the cosines and the CDNV) are computed in tiles
of :data:`TILE_BYTES` with float64 sums (two passes where a norm is needed first), NC1's pseudo-inverse
from a tiled QR when ``K > d``; the K-wide argmax of a chunk is sized by K (:func:`default_chunk_size`).
The Hessian blocks (``spectra="auto"``) are skipped up front beyond :data:`AUTO_SPECTRA_LOGITS` logits,
``spectra=True`` that does not fit is refused before streaming, and the UFM prediction is skipped with
its reason for K above :data:`PREDICTION_MAX_K` (``theory.predict`` builds K x K matrices).

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
closed form for ``n = round(N/K)`` is shown, not judged) when ``K d > NUMERICAL_MAX_KD``, for focal
loss (no exact class-mean reduction), without ``jax_enable_x64`` (the CLI enables it), or when the
solve does not converge.

More classes than dimensions (``d < K``, balanced or not; ``prediction_kind`` :data:`PREDICTION_GENERALIZED`):
no simplex ETF fits in R^d and no closed form of the minimizer exists, and one start of the (non-convex)
class-mean problem need not reach its global minimum. The prediction is :func:`ufm.generalized.generalized_prediction`
for the observed class sizes and d: the best of ``restarts`` seeded restarts (default
:data:`ufm.generalized.DEFAULT_RESTARTS`, as ``ufm.solve``; restarts within :data:`DEFAULT_RTOL` of the best
objective count as agreeing), labelled numerical, with its restart spread and certificate gap
(``Analysis.generalized``). Judged, as :mod:`ufm.compare` judges a ``d < K`` solve: ``w_norm``, ``h_norm``,
``a``, ``p_t``/``p_n`` (softmax losses), ``nc1`` (0) and ``bias`` (its error ``max |sorted b - sorted b*|``: two
optimal points may permute the classes), each from the same formulas as the measurement at the best restart,
and the generalized-collapse (GNC) measurements of :func:`ufm.generalized.gnc_metrics` (``margin``,
``logit_margin``, ``gnc2_H``, ``gnc2_W``, ``alignment``, ``logit_norm``, ``null_classes``). Tolerance of each:
``rtol`` plus the restart spread of that quantity (``Analysis.spread``; ``a`` takes that of ``logit_norm``,
``bias`` that of ``b_sorted``, ``nc1`` none); errors relative where the prediction is non-zero, absolute
otherwise (and for ``null_classes``, ``bias``). At the zero minimizer (past the phase boundary) the directional
ones and ``nc1`` are not predicted, and ``w_norm``, ``h_norm``, ``a`` are 0, compared absolutely without a spread.
Skipped with a reason (the closed form for d = K is then shown, not judged, as before) for focal loss, when
``K d > NUMERICAL_MAX_KD``, when the restarts' memory (:func:`ufm.generalized.prediction_bytes`, estimated
before streaming) does not fit, without ``jax_enable_x64``, or when no restart converges. Whatever the setup,
the GNC measurements of the network's own last layer (:data:`GNC_MEASURED`: :func:`ufm.generalized.gnc_metrics`
of ``weight.T``, the class means, ``bias`` and the class counts) are in ``measured`` for ``d < K``; they build
K x K matrices, so they are skipped with a reason (``Analysis.generalized["gnc_skipped"]``) above
:data:`GNC_MAX_K` or when they do not fit in memory (estimated first, :func:`gnc_bytes`).
"""

from __future__ import annotations

import math
import mmap
from dataclasses import dataclass, field

import numpy as np

from theory import validation
from theory.softmax import log_softmax
from ufm import _memory, generalized
from ufm.losses import LOSSES, Loss, loss_spec

SPECTRA = ("auto", True, False)
#: bytes of float64 work per chunk targeted by the automatic chunk size
CHUNK_BYTES = 64 * 2**20
#: ``spectra="auto"`` computes Hessian blocks only when ``d N`` is at most this (they need H in memory)
AUTO_SPECTRA_ENTRIES = 1_000_000
#: ... and when ``K N`` is at most this (every Hessian-vector product holds the K x N logits)
AUTO_SPECTRA_LOGITS = 2**24
#: bytes of one tile of a K x K matrix (W^T Hbar, Zbar, the Gram matrices): never formed whole
TILE_BYTES = 16 * 2**20
#: float64 tiles held at once by the pairwise statistics (the Gram tile, squared distances, their
#: thresholds, masks; the logits, their softmax)
TILE_COPIES = 4
#: the thin SVD of the (d, K) centred class means up to this many entries; beyond (K > d), a tiled QR
SVD_ENTRIES = 2**22
#: the largest page-cache folio the kernel may map around one faulting page of a memory map (a PMD)
FOLIO_BYTES = 2 * 2**20
#: labels are checked this many at a time (never widened as a whole)
LABEL_CHUNK = 2**20
#: bytes of rows ``x - c_y`` gathered for one product of the scatter (a product of 2,773 rows took about twice
#: the CPU time per row of one of 65,536 rows at d = 512)
GRAM_BYTES = 64 * 2**20
#: bytes per row of a chunk, as ``(per feature, per class, fixed)``: the float64 copy, its scaled and
#: centred copies, the float32 copy of the scores' input, 2 float32 K-wide score arrays, labels, masks
#: (calibrated with tracemalloc, ``tests/test_reliability_analyze.py``; the resident pages of a
#: memory-mapped chunk are added by :func:`memory_bytes`)
ROW_BYTES = (48, 10, 160)
#: float64 K x d arrays held at once: the classifier (float64 and its float32 scores copy), class sums /
#: means, centred means, the nearest-mean scores' float32 copy, the scaled classifier of the metrics; the
#: reference points, the sums about them, their offsets, the certificate's scaled classifier (:class:`_Pass`)
CLASS_COPIES = 10
#: K-wide float64 arrays per row of the held-out pass (logits, log-softmax, probabilities, products)
HELD_OUT_K_COPIES = 6
#: the UFM prediction (``theory.predict``) builds K x K matrices: computed only for K up to this
PREDICTION_MAX_K = 4096
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
PREDICTION_GENERALIZED = (
    "numerical UFM optimum for d < K with the observed class sizes (best of seeded restarts; no closed form)"
)
#: d < K: the GNC measurements (:func:`ufm.generalized.gnc_metrics` builds K x K Grams and logits) up to this K
GNC_MAX_K = 2048
#: d < K: the measurements of :func:`ufm.generalized.gnc_metrics` added to ``Analysis.measured`` (its ``w_norm``,
#: ``h_norm`` are the measured ones already; its ``p_t``/``p_n`` weight the classes by size, analyze's do not)
GNC_MEASURED = (
    "margin",
    "logit_margin",
    "gnc2_H",
    "gnc2_W",
    "gnc2_log_H",
    "gnc2_log_W",
    "alignment",
    "gnc3",
    "logit_norm",
    "null_classes",
)
#: d < K: the GNC measurements compared with the numerical optimum (those with a restart spread)
GNC_JUDGED = ("margin", "logit_margin", "gnc2_H", "gnc2_W", "alignment", "logit_norm", "null_classes")
#: d < K: the restart spread (``GeneralizedPrediction.spread``) that widens each judged row's tolerance
SPREAD_OF = {
    "w_norm": "w_norm",
    "h_norm": "h_norm",
    "a": "logit_norm",  # a = trace(M Zbar)/(K-1) is linear in the logits; its own spread is not recorded
    "p_t": "p_t",
    "p_n": "p_n",
    "bias": "b_sorted",
    **{name: name for name in GNC_JUDGED},
}

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
    "margin": "GNC: min one-vs-rest margin <u_k - u_l, v_k> (Jiang et al. 2024)",
    "logit_margin": "GNC: min_k (z_kk - max_l z_lk), class-mean logits",
    "gnc2_H": "GNC2: Riesz 1-energy of the centred means",
    "gnc2_W": "GNC2: Riesz 1-energy of the classifiers",
    "gnc2_log_H": "GNC2: logarithmic energy of the centred means",
    "gnc2_log_W": "GNC2: logarithmic energy of the classifiers",
    "alignment": "GNC3: mean cos(w_k, hbar_k - h_G)",
    "gnc3": "GNC3: 1 - alignment",
    "logit_norm": "||W^T Hbar + b 1^T||_F, class-mean logits",
    "null_classes": "classes with w_k = 0 and hbar_k = h_G (bias only)",
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
        undefined: name -> why that measurement does not exist for this input (a zero norm, two classes
            with the same mean, a 0/0, a value beyond the float64 range); its ``measured`` value is None.
            NaN or inf is never a measurement.
        spread: d < K: name -> the restart spread added to ``rtol`` in that row's tolerance (module docstring;
            empty otherwise).
        generalized: d < K (empty otherwise): the numerical prediction's ``restarts``, ``seeds``, ``best_seed``,
            ``objective`` (best L), ``objectives``, ``statuses``, ``agreeing`` (restarts within ``rtol`` of the
            best L), ``rtol``, ``converged``, ``zero``, ``spread`` (every quantity's), ``certificate`` (``upper``,
            ``lower``, ``gap``, ``rank``, ``d``; None with ``certificate_note``), or ``skipped`` (why not
            computed); ``gnc_skipped`` when the GNC measurements were not taken.
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
    undefined: dict = field(default_factory=dict)
    spread: dict = field(default_factory=dict)
    generalized: dict = field(default_factory=dict)

    @property
    def balanced(self) -> bool:
        return min(self.counts) == max(self.counts)

    def verdict(self, rtol: float = DEFAULT_RTOL) -> dict:
        """Whether this last layer is at the UFM minimizer the prediction describes.

        The prediction is for the minimizer of the UFM objective (Guo et al. Thm 4.1/4.2, or the
        numerical optimum with the observed class sizes, or for d < K the best of seeded restarts); a trained
        network is there only if training reached it. Judged: every quantity with an error (``error``),
        against ``rtol`` (relative errors for the non-zero predictions, absolute for NC1-NC3 and the bias, as
        ``ufm.solve``'s checks), for d < K against ``rtol`` plus the quantity's restart spread (``spread``,
        as :mod:`ufm.compare`).

        Returns:
            ``status``: ``"at_minimizer"`` (every judged error within ``rtol``), ``"not_at_minimizer"`` or
            ``"no_prediction"``; ``text``: one line saying so; ``rtol``; ``judged``: the names;
            ``worst``/``worst_error``: the largest error and its name (None without judged ones);
            ``beyond_rtol``: the names whose error exceeds rtol; ``not_judged``: what is not judged, and why.
        """
        validation.interval("rtol", rtol, 0.0, low_open=True)
        not_judged = list(self.not_applicable)
        if not self.setup:
            not_judged.append("no training setup given (lam_W and lam_H switch the UFM prediction on)")
        undefined = [k for k in self.predicted if k in self.undefined]
        if undefined:
            not_judged.append("; ".join(f"{k} undefined ({self.undefined[k]})" for k in undefined))
        unmeasured = [k for k in self.predicted if k not in self.error and k != "bias" and k not in self.undefined]
        if unmeasured:
            why = self.spectra.get("skipped") or "the blocks were too large for the exact paths"
            not_judged.append(f"{', '.join(unmeasured)} predicted, not measured (Hessian blocks: {why})")
        numerical = self.prediction_kind in (PREDICTION_NUMERICAL, PREDICTION_GENERALIZED)
        judged_kind = numerical or (bool(self.setup) and self.applies)
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
        beyond = [k for k in judged if not self.error[k] <= rtol + self.spread.get(k, 0.0)]
        kind = "relative" if self.relative.get(worst) else "absolute"
        worst_text = f"worst error {self.error[worst]:.2e} ({kind}) in {worst}"
        tolerance = f"rtol {rtol:g}" + (" + restart spread" if self.spread else "")
        if beyond:
            status = "not_at_minimizer"
            text = f"not at the minimizer: {worst_text}; beyond {tolerance}: {', '.join(beyond)} ({len(judged)} judged)"
        else:
            status = "at_minimizer"
            text = f"at the minimizer within {tolerance}: {worst_text} ({len(judged)} judged)"
        if self.prediction_kind == PREDICTION_NUMERICAL:
            text += f" [against the {PREDICTION_NUMERICAL}]"
        elif self.prediction_kind == PREDICTION_GENERALIZED:
            gnc = [k for k in judged if k in GNC_JUDGED]
            rows = [k for k in judged if k not in GNC_JUDGED]
            text += (
                f" [against the numerical UFM optimum for d = {self.d} < K = {self.K}, best of "
                f"{self.generalized.get('restarts')} seeded restarts: {', '.join(rows)}"
                + (f" and the GNC metrics {', '.join(gnc)}" if gnc else "")
                + "; no closed form exists for d < K]"
            )
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
            "undefined": dict(self.undefined),
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
            "spread": dict(self.spread),
            "generalized": self.generalized,
            "verdict": self.verdict(rtol),
        }


# ----------------------------------------------------------------------------- validation


def class_dtype(K: int) -> np.dtype:
    """The smallest unsigned integer type holding the class indices ``0 .. K-1`` (labels converted from
    floats, the classifier's predictions: N of them are kept, so their width counts)."""
    return np.min_scalar_type(max(K - 1, 0))


def _labels(labels, N: int, K: int, name: str = "labels", rows: str = "features") -> np.ndarray:
    """Checked ``(N,)`` class indices, read :data:`LABEL_CHUNK` at a time and never widened: integer labels
    are returned as given (a memory map stays one), float labels converted to :func:`class_dtype`."""
    array = validation.array(name, labels, 1)
    if array.shape[0] != N:
        raise ValueError(f"{name} must have one entry per row of {rows} (N = {N}), got {array.shape[0]}")
    floating = array.dtype.kind == "f"
    low: float = math.inf
    high: float = -math.inf
    pages = _Pages(array)
    for lo in range(0, N, LABEL_CHUNK):
        hi = min(N, lo + LABEL_CHUNK)
        part = np.asarray(array[lo:hi])
        if floating:
            values = part.astype(np.float64)
            if not np.all(np.isfinite(values)) or np.any(values != np.round(values)):
                raise ValueError(f"{name} must be integers, got non-integer values of dtype {array.dtype}")
        low, high = min(low, part.min()), max(high, part.max())
        pages.release(lo, hi)
    if N and (low < 0 or high >= K):
        raise ValueError(
            f"{name} must be in [0, K) = [0, {K}) (K = rows of weight), got values in [{int(low)}, {int(high)}]"
        )
    if not floating:
        return array
    out = np.empty(N, class_dtype(K))
    for lo in range(0, N, LABEL_CHUNK):
        out[lo : lo + LABEL_CHUNK] = array[lo : lo + LABEL_CHUNK]
    return out


def default_chunk_size(d: int, K: int) -> int:
    """Rows per chunk so that one chunk's float64 work (features, centred copy, 2K scores) is ~CHUNK_BYTES."""
    return max(1, CHUNK_BYTES // (8 * (2 * d + 2 * K)))


# ----------------------------------------------------------------------------- memory


def gnc_bytes(d: int, K: int) -> float:
    """Peak bytes of the d < K measurements (:func:`ufm.generalized.gnc_metrics`: K x K logits and Grams, its own
    estimate ``12 K^2 + 6 d K`` floats; ~10 K^2 measured with tracemalloc) and the class means handed to it."""
    return 8.0 * (12.0 * K * K + 8.0 * d * K)


def _measures_gnc(d: int, K: int) -> bool:
    """Whether :func:`analyze` takes the d < K measurements for these sizes (memory permitting)."""
    return d < K <= GNC_MAX_K


def memory_bytes(
    N: int,
    d: int,
    K: int,
    chunk: int,
    M: int = 0,
    *,
    itemsize: int = 8,
    float_labels: bool = False,
    gnc: bool | None = None,
) -> float:
    """Estimated peak bytes :func:`analyze` allocates (beyond the arrays it is given) for ``N`` samples of
    ``d`` features (``itemsize`` bytes each: the resident pages of a memory-mapped chunk), ``K`` classes,
    ``chunk`` rows per chunk and ``M`` held-out samples: a chunk's work (:data:`ROW_BYTES`), the
    ``K x d`` float64 arrays (class means, centred means, scaled copies; :data:`CLASS_COPIES`), the pairwise
    tiles (:data:`TILE_BYTES` each, never a ``K x K`` matrix), the ``d x d`` scatters and the N
    predictions (plus the labels when they are floats, converted to :func:`class_dtype`), and for d < K the GNC
    measurements (:func:`gnc_bytes`, after the streaming passes; ``gnc``: include them, default where
    :func:`analyze` takes them, ``d < K <= GNC_MAX_K``; ``gnc=False`` gives what the analysis needs without).
    Calibrated against tracemalloc peaks (``tests/test_reliability_analyze.py``)."""
    rows_bytes = lambda rows: float(rows) * (ROW_BYTES[0] * d + ROW_BYTES[1] * K + ROW_BYTES[2] + itemsize * d)
    classes = 8.0 * K * (CLASS_COPIES * d + 16)
    tiles = TILE_COPIES * min(float(TILE_BYTES), 8.0 * K * K + 8.0 * K * d)
    square = 8.0 * 6 * d * d
    per_sample = float(N) * class_dtype(K).itemsize * (2 if float_labels else 1)
    if N >= CERTIFY_ROWS_PER_CLASS * K:  # each row's float32 distance to its reference, its undecided flag
        per_sample += 5.0 * N
    work = max(rows_bytes(chunk) + 8.0 * (d + 1) * min(N, gram_rows(chunk, d)), tiles)  # the scatter's row buffer
    if M:  # the held-out pass: K-wide logits, log-softmax, probabilities; 3 d x d scatters
        test_rows = float(min(chunk, M)) * (ROW_BYTES[0] * d + HELD_OUT_K_COPIES * 8 * K + ROW_BYTES[2])
        work = max(work, test_rows + 8.0 * 3 * d * d)
    if _measures_gnc(d, K) if gnc is None else gnc:
        work = max(work, gnc_bytes(d, K))
    return work + classes + square + per_sample


# ----------------------------------------------------------------------------- streaming


class _Pages:
    """Hands the pages of a memory-mapped array back to the kernel after each chunk.

    Reading a 2.6 GB ``np.load(mmap_mode="r")`` array through its mapping would otherwise leave
    every page resident (counted in RSS) until the array is dropped; ``MADV_DONTNEED`` on a
    read-only file mapping only unmaps (the data stay in the page cache, nothing is lost). Rows
    ``lo:hi`` of a C-ordered array are one byte range; of a Fortran-ordered (N, d) array, d ranges
    (one per column), each released. Only whole pages before a range's end are released: the page
    holding it is read again by the next chunk. The kernel may map a whole page-cache folio around a
    faulting page (up to :data:`FOLIO_BYTES`, also behind the range, or, at a column's end, at the next
    column's start): each release reaches that far back, and the last chunk's releases the whole mapping.
    """

    def __init__(self, array: np.ndarray):
        self.mm: mmap.mmap | None = None
        base: object = array  # the chain of .base owners, ending at the mmap (if any)
        while base is not None and not isinstance(base, mmap.mmap):
            base = getattr(base, "base", None)
        if not isinstance(base, mmap.mmap) or not hasattr(base, "madvise") or array.size == 0:
            return
        if array.flags.c_contiguous:
            self.columns, self.column_stride = 1, 0
        elif array.ndim == 2 and array.flags.f_contiguous:
            self.columns, self.column_stride = array.shape[1], array.strides[1]
        else:
            return
        try:
            view = np.frombuffer(base, np.uint8)
            self.offset = array.ctypes.data - view.ctypes.data
            del view
        except (TypeError, ValueError, BufferError):
            return
        self.mm, self.row, self.count = base, array.strides[0], array.shape[0]

    def release(self, lo: int, hi: int) -> None:
        if self.mm is None:
            return
        if hi >= self.count:  # the last chunk: the whole mapping (pages mapped beyond a range, see above)
            self._advise(0, len(self.mm))
            return
        for column in range(self.columns):
            first = self.offset + column * self.column_stride
            start = max(0, first + lo * self.row - FOLIO_BYTES)
            end = min(len(self.mm), first + hi * self.row)
            self._advise(start - start % mmap.PAGESIZE, end - end % mmap.PAGESIZE)

    def _advise(self, start: int, end: int) -> None:
        if end > start and self.mm is not None:
            try:
                self.mm.madvise(mmap.MADV_DONTNEED, start, end - start)
            except (OSError, ValueError):
                self.mm = None


def _chunk(features, lo: int, hi: int) -> np.ndarray:
    return np.asarray(features[lo:hi], dtype=np.float64)


def _rows(features, chunk: int, name: str | None = None, labels=None, select: np.ndarray | None = None, convert=True):
    """``(lo, hi, float64 copy of rows lo:hi, their labels as intp or None)`` chunk by chunk (without
    ``convert``, the rows as stored: a view in their own dtype); with ``name``, a chunk holding NaN or inf is
    refused naming it and the row; with ``select`` (a boolean (N,) mask), the chunks holding no selected row
    are skipped unread. Each chunk's pages (features and labels) are handed back after use (:class:`_Pages`)."""
    pages = [_Pages(features)] + ([] if labels is None else [_Pages(labels)])
    N = features.shape[0]
    for lo in range(0, N, chunk):
        hi = min(N, lo + chunk)
        if select is not None and not select[lo:hi].any():
            continue
        X = _chunk(features, lo, hi) if convert else features[lo:hi]
        if name is not None:
            _finite_exponent(X, name, lo)
        yield lo, hi, X, None if labels is None else np.asarray(labels[lo:hi], np.intp)
        for page in pages:
            page.release(lo, hi)


def _finite_exponent(X: np.ndarray, name: str, lo: int) -> int:
    """:func:`_exponent` of the rows ``X`` (rows ``lo ..`` of ``name``), refusing NaN or inf naming the first row
    that holds one; NaN and inf propagate to the extremes, so one look at those serves both."""
    if X.size == 0:
        return 0
    high, low = float(np.max(X)), float(np.min(X))
    if not (math.isfinite(high) and math.isfinite(low)):
        row = lo + int(np.flatnonzero(~np.all(np.isfinite(X), axis=1))[0])
        raise ValueError(f"{name} contains NaN or inf (first in row {row})")
    top = max(high, -low)
    return int(np.frexp(top)[1]) if top > 0 else 0


def _exponent(x) -> int:
    """The smallest integer e with ``max |x| < 2^e`` (0 for an empty or all-zero x): ``x / 2^e`` lies in (-1, 1),
    exactly (a power of two), so the scaled form of every computation below rounds as the unscaled one."""
    if np.size(x) == 0:
        return 0
    top = max(float(np.max(x)), -float(np.min(x)))
    return int(np.frexp(top)[1]) if top > 0 else 0


def _scaled(x: np.ndarray, exponent: int) -> np.ndarray:
    """``x / 2^exponent`` (exact; no copy when the exponent is 0)."""
    return x if exponent == 0 else _times_power(np.array(x, np.float64), -exponent)


def _scaled_into(out: np.ndarray, x: np.ndarray, exponent: int) -> np.ndarray:
    """``out = x / 2^exponent`` in float64 (``x`` of any real dtype, converted as it is read: one pass), exact
    as :func:`_scaled` of the float64 copy."""
    if -1022 <= -exponent <= 1023:
        return np.multiply(x, 2.0**-exponent, out=out, dtype=np.float64)  # float64 loop: x widened, then exact
    np.copyto(out, x, casting="unsafe")
    return np.ldexp(out, -exponent, out=out)


def _times_power(x: np.ndarray, exponent: int) -> np.ndarray:
    """``x *= 2^exponent`` in place, correctly rounded (a product by a power of two, as ``np.ldexp``, faster)."""
    if -1022 <= exponent <= 1023:
        x *= 2.0**exponent
    else:
        np.ldexp(x, exponent, out=x)
    return x


def _unscale(value: float, exponent: int) -> float | None:
    """``value 2^exponent``, or None where that exceeds the float64 range."""
    try:
        return math.ldexp(float(value), int(exponent))
    except OverflowError:
        return None


def _tiles(count: int, width: int):
    """``(lo, hi)`` blocks of ``count`` rows of ``width`` float64 numbers, at most :data:`TILE_BYTES` each."""
    step = max(1, TILE_BYTES // (8 * max(width, 1)))
    for lo in range(0, count, step):
        yield lo, min(count, lo + step)


def _add_by_class(out: np.ndarray, X: np.ndarray, y: np.ndarray) -> None:
    """``out[k] += sum of the rows of X with label k``: a sparse (K x rows) one-hot product, O(rows d)
    (:class:`_ByClass`, for one call)."""
    _ByClass(out.shape[0]).add(out, X, y)


class _ByClass:
    """Per-class sums of rows, ``out[k] += sum of the rows of X with label k``, as the product of a sparse
    (K x rows) one-hot matrix in compressed-column form (column i holds a 1 in row y_i: no sorting or conversion
    of coordinates). The matrix is kept for the next chunk of the same size, only its row indices rewritten:
    building it anew (scipy's checks of the format) costs as much as the product at a few thousand rows."""

    def __init__(self, K: int):
        self.K = K
        self.onehot = None

    def add(self, out: np.ndarray, X: np.ndarray, y: np.ndarray) -> None:
        import scipy.sparse  # on first use: scipy adds ~0.1 s to every command line's start-up

        onehot = self.onehot
        if onehot is None or onehot.shape[1] != y.size:
            columns = np.arange(y.size + 1)
            onehot = scipy.sparse.csc_matrix((np.ones(y.size), y, columns), shape=(self.K, y.size))
            self.onehot = onehot
        else:  # one entry per column: still sorted, canonical
            onehot.indices[:] = y
        out += onehot @ X


#: :class:`_Scores` takes the float64 products directly (no float32 first look) for at most this many rows
FEW_ROWS = 16


def gram_rows(chunk: int, d: int) -> int:
    """Rows of ``x - c_y`` the one pass buffers for one product of the scatter: :data:`GRAM_BYTES` of them, at
    least a chunk."""
    return max(chunk, GRAM_BYTES // (8 * max(d, 1)))


def _add_gram(out: np.ndarray, D: np.ndarray) -> None:
    """``out += D^T D`` (``D: (rows, d)``). numpy's product of an array with its own transpose is BLAS syrk (half
    the flops of a product) and releases the GIL, so a signal's watcher thread (:mod:`ufm._interrupt`) acts
    while it runs; scipy's ``dsyrk`` wrapper holds the GIL for the whole call (a large chunk's product delayed
    a Ctrl-C by seconds)."""
    out += D.T @ D


class _Scores:
    """``argmax_k (x . a_k + c_k)`` for rows x of a chunk, as float64 arithmetic decides it, at float32
    speed, for finite numbers of any magnitude.

    Scaled form: ``A' = A / 2^ea``, ``c' = c / 2^e(c)`` and each row x divided by ``2^g``, ``g`` its own
    exponent plus ea (or c's, if larger), so every score is divided by the row's ``2^g``: the argmax is
    unchanged and nothing overflows (every number is at most 1 in magnitude; a power of two is exact,
    so in float64 the scaled scores are the unscaled ones' bits, where those are finite). The products
    run in float32 (2-3x faster BLAS; the bias is one more column); a row is recomputed in float64 when
    the gap between its two largest float32 scores is within twice a bound on their rounding error:
    ``(d + 4) u ||x'|| max_k ||a'_k|| + u max|s| + (d + 2) 2^-148`` (u = 2^-24: the dot product and the
    rounding of its inputs; the last term float32's underflow), so the decision is always the float64
    one (ties: lowest index, as ``np.argmax``).
    """

    def __init__(self, A: np.ndarray, c: np.ndarray):
        K, d = A.shape
        self.A, self.d = A, d
        self.ea = _exponent(A)
        ec = _exponent(c)
        self.c = np.ldexp(np.asarray(c, np.float64), -ec)
        self.ec = ec if np.any(c != 0) else None
        self.aug = np.empty((K, d + 1), np.float32)  # [A', c']
        for lo, hi in _tiles(K, d):
            self.aug[lo:hi, :d] = np.ldexp(A[lo:hi], -self.ea)
        self.aug[:, d] = self.c
        self.a_max = math.sqrt(float(np.max(np.einsum("ij,ij->i", self.aug, self.aug, dtype=np.float64))))
        self.u = float(np.finfo(np.float32).eps) / 2

    def argmax(self, X: np.ndarray) -> np.ndarray:
        rows, d = X.shape
        g = np.frexp(np.maximum(X.max(axis=1), -X.min(axis=1)))[1].astype(np.int64) + self.ea
        if self.ec is not None:
            g = np.maximum(g, self.ec)
        Xs = np.ldexp(X, (self.ea - g)[:, None])  # x / 2^(g - ea), |.| < 1
        t = np.zeros(rows) if self.ec is None else np.ldexp(1.0, self.ec - g)
        if rows <= FEW_ROWS:  # a few rows (those a certificate left): float64 directly, without BLAS
            return np.argmax(self._exact(Xs, t, few=True), axis=1)
        aug = np.empty((rows, d + 1), np.float32)
        aug[:, :d], aug[:, d] = Xs, t
        S = aug @ self.aug.T
        best = np.argmax(S, axis=1)
        if S.shape[1] < 2:
            return best
        every = np.arange(rows)
        first = S[every, best].astype(np.float64)
        S[every, best] = -np.inf
        second = S.max(axis=1).astype(np.float64)  # the runner-up (two passes: faster than a partition)
        del S
        x_norm = np.sqrt(np.einsum("ij,ij->i", aug, aug, dtype=np.float64))
        top = np.maximum(np.abs(first), np.abs(second))
        bound = (d + 4) * self.u * self.a_max * x_norm + self.u * top + (d + 2) * 2.0**-148
        redo = np.flatnonzero(first - second <= 2.0 * bound)
        if redo.size:
            best[redo] = np.argmax(self._exact(Xs[redo], t[redo], few=redo.size <= FEW_ROWS), axis=1)
        return best

    def _exact(self, Xs: np.ndarray, t: np.ndarray, few: bool) -> np.ndarray:
        """The float64 scores of scaled rows ``Xs`` (x / 2^(g - ea)) divided by 2^g: ``x / 2^g . a_k`` plus the
        scaled bias; for ``few`` rows by ``einsum`` (a BLAS call's threads cost more than its work there)."""
        X = np.ldexp(Xs, -self.ea)
        exact = np.einsum("ij,kj->ik", X, self.A) if few else X @ self.A.T
        if self.ec is not None:
            exact += t[:, None] * self.c
        return exact


#: the certified decisions (:class:`_Certified`) are taken when the classes have at least this many samples on
#: average (their K x K set-up costs about as much as K rows of the K-wide products they spare)
CERTIFY_ROWS_PER_CLASS = 16
#: ... with reference points from the class means of the first this many rows per class (:func:`_pilot`)
PILOT_ROWS_PER_CLASS = 32
#: relative slack of a certified decision's test, far above the float64 rounding of the quantities compared
#: (``(d + 8) eps`` for d up to 2^20): a row this close to a decision boundary takes the exact product instead
CERTIFY_SLACK = 2.0**-30
#: absolute slack of the same tests, in the scaled units (|x'| < 1): above any underflow of a sum of d squares
CERTIFY_TINY = 2.0**-900
#: the one-pass within-class scatter (about a reference point per class) is recomputed about the final class
#: means in a second pass when a class's squared distances to its reference cancel by more than this fraction
#: (10 bits lost; at a reference drawn from the class itself, about 1 bit is lost)
CANCELLATION = 1.0 - 2.0**-10


def _lower_ratio(G: np.ndarray, G_error: np.ndarray, L2: np.ndarray, L2_error: np.ndarray) -> np.ndarray:
    """Elementwise lower bounds of ``G / sqrt(L2)`` from computed values and bounds of their rounding errors
    (numerator lowered, denominator raised; NaN where not finite, for the caller to treat as no bound)."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return (G - G_error) / np.sqrt(L2 + L2_error)


class _Certified:
    """The classifier's decision ``argmax_k (w_k . x + b_k)`` certified without the K-wide product, for rows
    close to a reference point of their own class (exact in float64's rounding, else left to :class:`_Scores`).

    For class y with reference point c (in the features' scaled units), every x with
    ``||x - c|| < rho_y = min_{k != y} ((w_y - w_k) . c + b_y - b_k) / ||w_y - w_k||`` (the distance from c to
    the nearest of the hyperplanes where class y ties with another) is classified y: the ball lies inside
    y's decision region. Each ``rho_y`` is a lower bound of that distance with the rounding of its terms
    bounded (``(d + 8) eps`` of the magnitudes involved), and a row is certified only when its computed
    distance, raised by :data:`CERTIFY_SLACK` and :data:`CERTIFY_TINY`, is below ``rho_y``, so the
    decision is the one exact arithmetic and float64 arithmetic (gap far above its rounding) take; no tie
    is ever certified. Set-up: one K-wide product per class (in tiles, when a class is first seen); a
    threshold that is not finite (a bias beyond the scaled range) certifies nothing.

    Units: the thresholds are in the features' scale ``2^e`` at the time; :meth:`rescale` follows the
    running exponent (a power of two: exact).
    """

    def __init__(self, weight: np.ndarray, bias: np.ndarray):
        K, d = weight.shape
        self.ea = _exponent(weight)
        self.W = _scaled(weight, self.ea)  # |.| < 1
        self.bias = np.asarray(bias, np.float64)
        squares = np.einsum("ij,ij->i", self.W, self.W)
        self.squares, self.norms = squares, np.sqrt(squares)
        self.gamma = 2.0 * (d + 8) * float(np.finfo(np.float64).eps)
        self.rho = np.full(K, -np.inf)  # -inf: not (yet) certifiable

    def add(self, classes: np.ndarray, refs: np.ndarray, exponent: int) -> None:
        """Thresholds of ``classes`` from their reference points ``refs`` (rows, features / 2^exponent)."""
        K = self.W.shape[0]
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):
            b = np.ldexp(self.bias, -(exponent + self.ea))  # logits / 2^(exponent + ea): b / 2^(exponent + ea)
        b_abs = np.abs(b)
        for lo, hi in _tiles(classes.size, 2 * K):  # half tiles: 8 arrays at once
            y, R = classes[lo:hi], refs[lo:hi]
            rows = np.arange(y.size)
            with np.errstate(over="ignore", invalid="ignore"):
                S = R @ self.W.T + b  # scores of the references
                r_norm = _norms(R)[:, None]
                S_error = self.gamma * (r_norm * self.norms[None, :] + b_abs[None, :])
                G = S[rows, y][:, None] - S
                G_error = S_error[rows, y][:, None] + S_error + self.gamma * np.abs(G) + CERTIFY_TINY
                del S, S_error
                L2 = self.W[y] @ self.W.T
                L2 *= -2.0
                L2 += self.squares[y][:, None]
                L2 += self.squares[None, :]
                L2_error = self.gamma * 2.0 * (self.squares[y][:, None] + self.squares[None, :]) + CERTIFY_TINY
                ratio = _lower_ratio(G, G_error, L2, L2_error)
            del G, G_error, L2, L2_error
            ratio[rows, y] = np.inf
            rho = np.min(ratio, axis=1)
            self.rho[y] = np.where(np.isfinite(rho), rho * (1.0 - CERTIFY_SLACK), -np.inf)

    def rescale(self, change: int) -> None:
        """The running exponent grew by ``change``: thresholds into the new units."""
        finite = np.isfinite(self.rho)
        self.rho[finite] = np.ldexp(self.rho[finite], -change)

    def certified(self, radius: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Which rows (distances ``radius`` to their class's reference, labels ``y``) are certified class y."""
        return radius * (1.0 + CERTIFY_SLACK) + CERTIFY_TINY < self.rho[y]


def _nearest_thresholds(means: np.ndarray, refs: np.ndarray) -> np.ndarray:
    """Per class y, a lower bound of the distance from its reference point c_y to the nearest of the hyperplanes
    where m_y ties with another class mean, ``min_{k != y} (||m_k - c_y||^2 - ||m_y - c_y||^2) / (2 ||m_k - m_y||)``
    (scaled units; negative when c_y is nearer to another mean): a point within that distance of c_y is nearer
    to m_y than to any other class mean. Tiles of K x K products (no K x K matrix); the rounding of each term
    bounded as in :class:`_Certified`."""
    K, d = means.shape
    gamma = 2.0 * (d + 8) * float(np.finfo(np.float64).eps)
    centre = means.mean(axis=0)
    M, C = means - centre, refs - centre  # smaller numbers: less rounding
    squares, m_norms, c_norms = np.einsum("ij,ij->i", M, M), _norms(M), _norms(C)
    out = np.empty(K)
    for lo, hi in _tiles(K, 2 * K):  # half tiles: 8 arrays at once
        rows = np.arange(hi - lo)
        with np.errstate(over="ignore", invalid="ignore"):
            P = C[lo:hi] @ M.T  # c_y . m_k
            # ||m_k - c_y||^2 - ||m_y - c_y||^2 = |m_k|^2 - |m_y|^2 - 2 c_y . (m_k - m_y)
            A = squares[None, :] - squares[lo:hi, None] - 2.0 * (P - P[rows, rows + lo][:, None])
            reach = c_norms[lo:hi, None] * (m_norms[None, :] + m_norms[lo:hi, None])
            A_error = gamma * (squares[None, :] + squares[lo:hi, None] + 2.0 * reach)
            A_error += gamma * np.abs(A) + CERTIFY_TINY
            del P
            L2 = M[lo:hi] @ M.T
            L2 *= -2.0
            L2 += squares[lo:hi, None]
            L2 += squares[None, :]
            L2_error = gamma * 2.0 * (squares[lo:hi, None] + squares[None, :]) + CERTIFY_TINY
            ratio = 0.5 * _lower_ratio(A, A_error, L2, L2_error)
        ratio[rows, rows + lo] = np.inf
        low = np.min(ratio, axis=1)
        out[lo:hi] = np.where(np.isfinite(low), low * (1.0 - CERTIFY_SLACK), -np.inf)
    return out


def _pilot(features, labels, chunk: int, rows: int, K: int) -> tuple[int, np.ndarray, np.ndarray]:
    """Reference points for :class:`_Pass`: the class means of the first ``rows`` rows (a first look at the
    data, read in chunks), scaled by their largest magnitude's power of two. Returns ``(exponent, refs (K, d),
    present (K,) bool)``; a class absent there gets its reference where it first appears."""
    d = features.shape[1]
    sums, counts = np.zeros((K, d)), np.zeros(K, np.int64)
    exponent: int | None = None
    for _lo, _hi, X, y in _rows(features[:rows], chunk, "features", labels[:rows]):
        counts += np.bincount(y, minlength=K)
        e = _exponent(X)
        if exponent is not None and e > exponent:
            np.ldexp(sums, exponent - e, out=sums)
        exponent = e if exponent is None else max(exponent, e)
        _add_by_class(sums, _scaled(X, exponent), y)
    present = counts > 0
    sums[present] /= counts[present, None]
    return exponent or 0, sums, present


@dataclass(frozen=True)
class _Moments:
    """The streamed sums, all in the scaled form: the features divided by ``2^exponent`` (their largest
    magnitude's power of two), so no sum of squares overflows or underflows; undone where a value has units."""

    counts: np.ndarray  # (K,)
    means: np.ndarray  # (K, d) class means / 2^exponent
    global_mean: np.ndarray  # (d,) / 2^exponent
    centred: np.ndarray  # (K, d) means - global_mean, / 2^exponent
    scatter: np.ndarray  # (d, d) sum of centred within-class outer products / 4^exponent
    variances: np.ndarray  # (K,) mean squared distance to the class mean / 4^exponent
    exponent: int
    accuracy: float
    ncc_agreement: float
    ncc_accuracy: float


class _Pass:
    """The one streaming pass of :func:`_moments`: per class a reference point (the mean of the class's rows in
    the chunk where it first appears), and about it the counts, the sums of ``x - c_y``, of their squares and
    their outer products (the scatter, BLAS syrk), the classifier's decisions (certified, :class:`_Certified`,
    else :class:`_Scores`) and each row's distance to its reference (float32 rounded up, for the nearest-mean
    decisions after the pass). All in the scaled form (``x / 2^exponent``, the exponent running)."""

    def __init__(self, N: int, d: int, weight: np.ndarray, bias: np.ndarray, certify: bool, pilot=None):
        K = weight.shape[0]
        self.counts = np.zeros(K, np.int64)
        self.refs = np.zeros((K, d))
        self.seen = np.zeros(K, bool)
        self.exponent: int | None = None
        self.sums = np.zeros((K, d))  # sum of x - c_y
        self.squares = np.zeros(K)  # sum of ||x - c_y||^2
        self.scatter = np.zeros((d, d))  # sum (x - c_y)(x - c_y)^T
        self.buffer = np.empty((0, d))  # rows x - c_y awaiting their product (:data:`GRAM_BYTES`), reused
        self.buffered_labels = np.empty(0, np.intp)  # their labels, for their per-class sums
        self.filled = 0
        self.by_class = _ByClass(K)
        self.predicted = np.empty(N, class_dtype(K))
        self.classifier = _Scores(weight, bias)
        self.certificate = _Certified(weight, bias) if certify else None
        self.radius = np.empty(N if certify else 0, np.float32)
        self.chunk_exponents: list[tuple[int, int, int]] = []  # (lo, hi, exponent of the radii of rows lo:hi)
        if pilot is not None:  # (exponent, refs, present) of :func:`_pilot`
            self.exponent, self.refs, self.seen = pilot
            if self.certificate is not None and self.seen.any():
                present = np.flatnonzero(self.seen)
                self.certificate.add(present, self.refs[present], self.exponent)

    def flush(self) -> None:
        """The per-class sums and the scatter's product of the buffered rows (one large product each: small ones
        run BLAS at half speed, and each sparse product pays for a K x d result)."""
        if self.filled:
            rows = self.buffer[: self.filled]
            self.by_class.add(self.sums, rows, self.buffered_labels[: self.filled])
            _add_gram(self.scatter, rows)
            self.filled = 0

    def _grow(self, e: int) -> None:
        if self.exponent is not None and e > self.exponent:  # a larger magnitude: everything so far, exactly
            self.flush()
            change = self.exponent - e
            for array, power in ((self.refs, 1), (self.sums, 1), (self.squares, 2), (self.scatter, 2)):
                np.ldexp(array, power * change, out=array)
            if self.certificate is not None:
                self.certificate.rescale(-change)
        if self.exponent is None or e > self.exponent:
            self.exponent = e

    def add(self, lo: int, hi: int, X: np.ndarray, y: np.ndarray) -> None:
        """Rows ``lo:hi`` of the features (``X`` as stored, any real dtype; labels ``y``); NaN or inf refused
        naming the row. The rows are widened to float64 and scaled in one pass, into the scatter's buffer; the
        classifier's exact decisions widen theirs again (the rows as given: the bias makes them depend on the
        scale)."""
        K = self.counts.size
        self._grow(_finite_exponent(X, "features", lo))
        chunk_counts = np.bincount(y, minlength=K)
        self.counts += chunk_counts
        exponent = self.exponent or 0
        d = X.shape[1]
        if self.filled + y.size > self.buffer.shape[0]:
            self.flush()
        if self.buffer.shape[0] < y.size:
            self.buffer = np.empty((min(self.predicted.size, gram_rows(y.size, d)), d))  # at most N rows
            self.buffered_labels = np.empty(self.buffer.shape[0], np.intp)
        D = _scaled_into(self.buffer[self.filled : self.filled + y.size], X, exponent)  # x / 2^exponent
        new = np.flatnonzero((chunk_counts > 0) & ~self.seen)
        if new.size:  # reference points: the class's mean in this chunk (sums over the new classes only, not K x d)
            rows = np.flatnonzero(~self.seen[y])
            part = np.zeros((new.size, d))
            _add_by_class(part, D[rows], np.searchsorted(new, y[rows]))
            self.refs[new] = part / chunk_counts[new, None]
            self.seen[new] = True
            del part
            if self.certificate is not None:
                self.certificate.add(new, self.refs[new], exponent)
        D -= np.take(self.refs, y, axis=0, mode="clip")  # x - c_y (labels checked: no clipping)
        self.buffered_labels[self.filled : self.filled + y.size] = y
        self.filled += y.size
        row_squares = np.einsum("ij,ij->i", D, D)
        del D
        self.squares += np.bincount(y, weights=row_squares, minlength=K)
        if self.certificate is None:  # the scores' bias makes the decisions depend on the scale: the rows as given
            self.predicted[lo:hi] = self.classifier.argmax(np.asarray(X, np.float64))
            return
        radius = np.sqrt(row_squares)
        sure = self.certificate.certified(radius, y)
        decided = self.predicted[lo:hi]
        decided[sure] = y[sure]
        if not sure.all():
            unsure = np.flatnonzero(~sure)
            decided[unsure] = self.classifier.argmax(np.asarray(X[unsure], np.float64))
        upper = radius.astype(np.float32)
        low = upper < radius
        upper[low] = np.nextafter(upper[low], np.float32(np.inf))
        self.radius[lo:hi] = upper
        self.chunk_exponents.append((lo, hi, exponent))


def _second_pass(features, labels, chunk, means, global_mean, exponent, predicted, rows, nearest_mean, scatter: bool):
    """The pass over the rows again with the final class means: the nearest-mean decisions of the rows selected
    by ``rows`` (a boolean (N,) mask, or None for all; without ``scatter``, only the selected rows are read)
    and, with ``scatter``, the within-class scatter and the squared distances about the
    final means (exact near collapse). Returns ``(scatter, squares, agree, ncc_correct)`` (the first two zero
    without ``scatter``; the counts over the selected rows)."""
    N, d = features.shape
    K = means.shape[0]
    out, squared = np.zeros((d, d)), np.zeros(K)  # with scatter
    agree = ncc_correct = 0
    if rows is not None and not scatter:  # only the selected rows are read (a map's pages around them)
        index = np.flatnonzero(rows)
        pages = [_Pages(features), _Pages(labels)]
        for lo in range(0, index.size, chunk):
            pick = index[lo : lo + chunk]
            Xs = _scaled(np.asarray(features[pick], np.float64), exponent)
            nearest = nearest_mean.argmax(Xs - global_mean)
            agree += int(np.sum(nearest == predicted[pick]))
            ncc_correct += int(np.sum(nearest == np.asarray(labels[pick], np.intp)))
            for page in pages:
                page.release(int(pick[0]), N if lo + chunk >= index.size else int(pick[-1]) + 1)
        return out, squared, agree, ncc_correct
    for lo, hi, X, y in _rows(features, chunk, None, labels):
        Xs = _scaled(X, exponent)
        if scatter:
            D = means[y]
            np.subtract(Xs, D, out=D)
            _add_gram(out, D)
            squared += np.bincount(y, weights=np.einsum("ij,ij->i", D, D), minlength=K)
            del D
        pick = np.arange(hi - lo) if rows is None else np.flatnonzero(rows[lo:hi])
        if pick.size:
            nearest = nearest_mean.argmax(Xs[pick] - global_mean)
            agree += int(np.sum(nearest == predicted[lo:hi][pick]))
            ncc_correct += int(np.sum(nearest == y[pick]))
    return out, squared, agree, ncc_correct


def _moments(features, labels, weight, bias, chunk: int) -> _Moments:
    N, d = features.shape
    K = weight.shape[0]
    certify = N >= CERTIFY_ROWS_PER_CLASS * K
    # the pilot reads rows only (no K-wide scores): chunks whose two float64 copies (the rows, scaled) fit in the
    # bytes of the scatter's buffer, which it precedes; at the scores' chunk (82 rows at K = 50,257) each chunk's
    # per-class sums paid for a K x d result (about 10 min for the pilot's 1.6 M rows)
    pilot_chunk = max(chunk, gram_rows(chunk, d) // 2)
    pilot = _pilot(features, labels, pilot_chunk, PILOT_ROWS_PER_CLASS * K, K) if certify else None
    state = _Pass(N, d, weight, bias, certify, pilot)
    for lo, hi, X, y in _rows(features, chunk, None, labels, convert=False):  # NaN / inf refused by add
        state.add(lo, hi, X, y)
    state.flush()
    counts, exponent = state.counts, state.exponent or 0
    if np.any(counts == 0):
        raise ValueError(
            f"labels: class {int(np.flatnonzero(counts == 0)[0])} has no samples "
            f"(every one of the K = {K} rows of weight needs at least one)"
        )
    predicted = state.predicted
    offsets = state.sums / counts[:, None]  # m_k - c_k
    means = state.refs + offsets
    global_mean = (counts @ state.refs + state.sums.sum(axis=0)) / N
    offset_squares = counts * np.einsum("ij,ij->i", offsets, offsets)
    redo = bool(np.any(offset_squares > CANCELLATION * state.squares))
    # the nearest-mean decisions: certified near each class's reference point, the rest with the final means
    unsure: np.ndarray | None = None
    agree = ncc_correct = 0
    if state.certificate is not None and not redo:
        thresholds = _nearest_thresholds(means, state.refs)
        unsure = np.zeros(N, bool)
        for lo, hi, e in state.chunk_exponents:
            y = np.asarray(labels[lo:hi], np.intp)
            sure = np.ldexp(state.radius[lo:hi].astype(np.float64), e - exponent) < thresholds[y]
            unsure[lo:hi] = ~sure
            agree += int(np.sum(predicted[lo:hi][sure] == y[sure]))
            ncc_correct += int(np.count_nonzero(sure))
        del state.radius
    centred = means - global_mean  # nearest-mean scores on centred coordinates (smaller numbers)
    nearest_mean = _Scores(centred, -0.5 * np.einsum("ij,ij->i", centred, centred))  # argmax = nearest mean
    scatter, squares = state.scatter, state.squares  # about the references; about the means if redone
    if unsure is None or unsure.any():
        scatter, squares, more_agree, more_correct = _second_pass(
            features, labels, chunk, means, global_mean, exponent, predicted, unsure, nearest_mean, redo
        )
        agree, ncc_correct = agree + more_agree, ncc_correct + more_correct
    if redo:
        variances = squares / counts
    else:
        scatter = state.scatter
        variances = (state.squares - offset_squares) / counts
    scatter = np.triu(scatter) + np.triu(scatter, 1).T
    if not redo:  # about the references: minus n_k (m_k - c_k)(m_k - c_k)^T per class
        scatter -= (offsets.T * counts) @ offsets
    correct = 0
    for lo in range(0, N, LABEL_CHUNK):
        correct += int(np.count_nonzero(predicted[lo : lo + LABEL_CHUNK] == labels[lo : lo + LABEL_CHUNK]))
    return _Moments(
        counts, means, global_mean, centred, scatter, variances, exponent, correct / N, agree / N, ncc_correct / N
    )


# ----------------------------------------------------------------------------- held-out set


def _held_out(features, labels, weight, bias, mo: _Moments, chunk: int, loss: Loss, parameters: dict) -> dict:
    """The test set against the training class means and classifier (module docstring), in chunks; the
    per-sample loss is ``loss``'s numpy twin (:meth:`ufm.losses.Loss.rows`) with ``parameters``."""
    M, d = features.shape
    K = weight.shape[0]
    basis = _pinv_basis(mo.centred)  # the training class means (scaled, as every number below)
    nearest_mean = _Scores(mo.centred, -0.5 * np.einsum("ij,ij->i", mo.centred, mo.centred))
    classifier = None  # the scaled argmax, for logits beyond float64
    groups = ("correct", "incorrect")
    scatter = {g: np.zeros((d, d), order="F") for g in groups}
    sums = {g: np.zeros(3) for g in groups}  # count, loss, entropy
    to_predicted = np.zeros((d, d), order="F")
    ncc_correct = 0.0
    for _lo, _hi, X, y in _rows(features, chunk, "test_features", labels):
        with np.errstate(over="ignore", invalid="ignore"):
            Z = X @ weight.T + bias
            log_p = log_softmax(Z, axis=1)
            losses = loss.rows(Z, y, log_p=log_p, **parameters)
            entropy = -np.sum(np.exp(log_p) * log_p, axis=1)
        if np.all(np.isfinite(Z)):
            predicted = np.argmax(Z, axis=1)
        else:
            classifier = _Scores(weight, bias) if classifier is None else classifier
            predicted = classifier.argmax(X)
        right = predicted == y
        Xs = _scaled(X, mo.exponent)
        with np.errstate(over="ignore", invalid="ignore"):
            D = Xs - mo.means[y]
        for group, rows in zip(groups, (right, ~right), strict=True):
            if rows.any():
                _add_gram(scatter[group], D[rows])
                sums[group] += (rows.sum(), losses[rows].sum(), entropy[rows].sum())
        if (~right).any():  # misclassified samples around the mean of the class they were assigned to
            with np.errstate(over="ignore", invalid="ignore"):
                E = Xs[~right] - mo.means[predicted[~right]]
            _add_gram(to_predicted, E)
        with np.errstate(over="ignore", invalid="ignore"):
            centred_rows = Xs - mo.global_mean
        if np.all(np.isfinite(centred_rows)):
            ncc_correct += int(np.sum(nearest_mean.argmax(centred_rows) == y))
        else:  # 2^1023 times the training features' magnitude: no nearest mean in float64
            ncc_correct = math.nan
    notes: list[str] = []
    out: dict = {
        "N": M,
        "convention": "NC1 = trace(Sigma_W Sigma_B^+)/K, Sigma_W = mean (h_i - hbar_y)(h_i - hbar_y)^T around "
        "the TRAINING class means hbar_k, Sigma_B of the training means; per subgroup normalised by its size",
    }

    def nc1(upper: np.ndarray, count: float) -> float:
        full = np.triu(upper) + np.triu(upper, 1).T
        with np.errstate(over="ignore", invalid="ignore"):
            return _pinv_trace(full / count, basis) / K

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


def _pinv_basis(centred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(U, lambda)``: the eigenpairs of ``Sigma_B = Hbar Hbar^T / K`` (``Hbar = centred.T``,
    ``centred: (K, d)``) that ``jnp.linalg.pinv(Sigma_B, hermitian=True)`` keeps (as :func:`ufm.metrics.nc1`):
    eigenvalues at most ``10 d eps`` of the largest are dropped. They come from the thin SVD of Hbar
    (``lambda_j = s_j^2 / K``): O(d K min(d, K)) instead of a d x d eigendecomposition. Many classes
    (``K > d``, ``K d > SVD_ENTRIES``): from the SVD of the ``d x d`` triangle R of a QR of ``centred``
    built tile by tile (``Hbar = R^T Q^T``: the same singular values, Hbar's left singular vectors are R's
    right ones), so no ``d x K`` factor is held. Between (``d < K``, ``K d <= SVD_ENTRIES``): the eigenpairs of
    the d x d matrix ``Hbar Hbar^T`` itself, as the pinv does (a tenth of the SVD's time at d = 512, K = 1,000,
    whose many small BLAS calls took seconds on a loaded 2-core machine; eigenvalues to ``eps`` of the largest,
    so NC1 to about ``eps`` times Sigma_B's condition number)."""
    K, d = centred.shape
    if K > d and K * d > SVD_ENTRIES:
        R: np.ndarray = np.zeros((0, d))
        for lo, hi in _tiles(K, d):
            R = np.asarray(np.linalg.qr(np.vstack([R, centred[lo:hi]]), mode="r"))
        _, s, Vt = np.linalg.svd(R)
        U, squares = Vt.T, s**2
    elif K > d:
        squares, U = np.linalg.eigh(centred.T @ centred)
    else:
        U, s, _ = np.linalg.svd(centred.T, full_matrices=False)
        squares = s**2
    lam = squares / K
    keep = lam > 10.0 * d * np.finfo(np.float64).eps * lam.max() if lam.size and lam.max() > 0 else lam > 0
    return U[:, keep], lam[keep]


def _pinv_trace(sigma_W: np.ndarray, basis: tuple[np.ndarray, np.ndarray]) -> float:
    """``trace(Sigma_W Sigma_B^+)`` with Sigma_B's kept eigenpairs ``basis`` (:func:`_pinv_basis`)."""
    U, lam = basis
    return float(np.sum(np.sum(U * (sigma_W @ U), axis=0) / lam))


def _norms(rows: np.ndarray) -> np.ndarray:
    """Euclidean norm of each row (no squared copy of the array)."""
    return np.sqrt(np.einsum("ij,ij->i", rows, rows))


class _Spread:
    """Standard deviation and mean ``|x + shift|`` of numbers given block by block: each block's mean and
    centred sum of squares (two passes over the block, as ``np.std``), merged by Chan et al.'s update, so
    the K(K-1) cosines are never held at once."""

    def __init__(self, shift: float):
        self.shift, self.n, self.mean, self.m2, self.absolute = shift, 0, 0.0, 0.0, 0.0

    def add_off_diagonal(self, C: np.ndarray, k0: int) -> None:
        """The entries of ``C`` (rows ``k0 + i`` of a K x K matrix) except the diagonal ones; C is overwritten."""
        T = C.shape[0]
        n = C.size - T
        if n == 0:
            return
        diagonal = _diagonal(k0, k0 + T)
        mean = (float(np.sum(C)) - float(np.sum(C[diagonal]))) / n
        C[diagonal] = mean  # contributes nothing below
        C -= mean
        m2 = float(np.vdot(C, C))
        C += mean + self.shift
        absolute = float(np.sum(np.abs(C, out=C))) - T * abs(mean + self.shift)
        total = self.n + n
        delta = mean - self.mean
        self.m2 += m2 + delta * delta * self.n * n / total
        self.mean += delta * n / total
        self.absolute += absolute
        self.n = total

    def std(self) -> float:
        return math.sqrt(self.m2 / self.n)

    def mean_abs(self) -> float:
        return self.absolute / self.n


def _diagonal(k0: int, k1: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the diagonal entries ``(k, k)`` of rows ``k0:k1`` of a K x K matrix held as a (k1 - k0, K) tile."""
    return np.arange(k1 - k0), np.arange(k0, k1)


def _cdnv_block(rows, squares, variances, G, k0: int, c0: int, triangle: bool):
    """Sum over the pairs (k, j), k in ``k0:k0 + len(G)``, j in ``c0:c0 + G.shape[1]`` (only j < k when
    ``triangle``), of ``(sigma_j^2 + sigma_k^2) / ||hbar_j - hbar_k||^2``, from the Gram block ``G``; or the
    first pair ``(j, k)`` whose means coincide. Squared distances that cancel (below 64 eps of the squared
    norms) are recomputed from the rows."""
    k1, c1 = k0 + G.shape[0], c0 + G.shape[1]
    mask = np.tril(np.ones(G.shape, bool), -1) if triangle else None
    pairs = squares[k0:k1, None] + squares[None, c0:c1]
    distance2 = G * -2.0
    distance2 += pairs
    pairs *= 64.0 * float(np.finfo(np.float64).eps)
    close = distance2 <= pairs
    if mask is not None:
        close &= mask
    if close.any():
        ks, js = np.nonzero(close)
        step = max(1, TILE_BYTES // (8 * rows.shape[1]))
        for lo in range(0, ks.size, step):
            k, j = ks[lo : lo + step], js[lo : lo + step]
            difference = rows[k0 + k] - rows[c0 + j]
            distance2[k, j] = np.einsum("ij,ij->i", difference, difference)
            if np.any(distance2[k, j] <= 0):
                break
    zero = distance2 <= 0
    if mask is not None:
        zero &= mask
    if zero.any():
        k, j = np.argwhere(zero)[0]
        return c0 + int(j), k0 + int(k)
    ratio = np.add(variances[k0:k1, None], variances[None, c0:c1], out=pairs)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio /= distance2
    return 0.5 * float(np.sum(ratio, where=mask) if mask is not None else np.sum(ratio))


def _cosine_stats(rows: np.ndarray, norms: np.ndarray, name: str, undefined: dict, variances=None):
    """Cosine statistics of the rows (``*_cos_std``, ``*_cos_shift``; Papyan et al. 2020) and, given the
    per-class ``variances`` (same scaled units as rows^2), the CDNV (Galanti et al. 2022), from tiles of
    rows of the Gram matrix ``rows rows^T`` (at most :data:`TILE_BYTES`, float64 sums): no K x K matrix is
    held. Undefined values get their reason in ``undefined``."""
    K = rows.shape[0]
    out: dict = {}
    cos = _Spread(1.0 / (K - 1))
    zero = np.flatnonzero(norms == 0)
    if zero.size:
        what = f"w_{zero[0]} = 0" if name == "w" else f"class {zero[0]}'s mean equals the global mean"
        for key in ("cos_std", "cos_shift"):
            undefined[f"{name}_{key}"] = f"{what}: its cosines are undefined"
    cdnv_sum, cdnv_pair = 0.0, None
    squares = norms * norms
    for k0, k1 in _tiles(K, K):
        G = rows[k0:k1] @ rows.T  # (T, K): G[i, j] = row_(k0+i) . row_j
        if variances is not None and cdnv_pair is None:
            for c0, c1, triangle in ((0, k0, False), (k0, k1, True)):  # the pairs j < k = k0 + i
                if c1 > c0:
                    part = _cdnv_block(rows, squares, variances, G[:, c0:c1], k0, c0, triangle)
                    if isinstance(part, tuple):
                        cdnv_pair = part
                        break
                    cdnv_sum += part
        if not zero.size:
            G /= norms[k0:k1, None]
            G /= norms[None, :]
            cos.add_off_diagonal(G, k0)
    if not zero.size:
        out[f"{name}_cos_std"], out[f"{name}_cos_shift"] = cos.std(), cos.mean_abs()
    if variances is not None:
        if cdnv_pair is None:
            out["cdnv"] = cdnv_sum / (K * (K - 1) / 2)
        else:
            undefined["cdnv"] = "classes {} and {} have the same mean (distance 0)".format(*cdnv_pair)
    return out


def _geometry(
    weight: np.ndarray,
    centred: np.ndarray,
    global_mean: np.ndarray,
    bias: np.ndarray,
    exponent: int = 0,
    variances=None,
) -> tuple[dict, dict]:
    """The measurements that need only the class means, ``h_G`` and the classifier: NC2, NC3, norms, cosines,
    logit scale, p_t/p_n, bias (also evaluated at the numerical UFM optimum), and with the class
    ``variances`` the CDNV. ``centred`` ``(K, d)``: class means minus h_G, ``global_mean``: h_G, both divided
    by ``2^exponent`` (``variances`` by ``4^exponent``). Returns ``(values, undefined)``: a value that
    does not exist (a zero norm, a 0/0, beyond the float64 range) is left out, with its reason in ``undefined``.

    Scaled form: the classifier is divided by its largest magnitude's power of two and the class-mean
    logits ``Zbar = weight means^T + b`` by theirs; the ratios (NC2, NC3, cosines, CDNV, a_residual) are
    scale-free, the norms and a are multiplied back (None beyond float64), the softmax is taken of the
    logits' differences multiplied back (overflowing to -inf, i.e. probability 0). The K x K matrices
    (``W^T Hbar``, ``Zbar``, the Gram matrices) are formed tile by tile (:data:`TILE_BYTES`) with float64
    sums, two passes where a norm is needed first (NC2's ``||W^T Hbar||``, a before its residual)."""
    K, d = weight.shape
    out: dict = {}
    undefined: dict = {}
    ew = _exponent(weight)
    Ws = _scaled(weight, ew)
    w_norms, h_norms = _norms(Ws), _norms(centred)
    for name, norms, e in (("w", w_norms, ew), ("h", h_norms, exponent)):
        mean = float(np.mean(norms))
        value = _unscale(mean, e)
        if value is None:
            undefined[f"{name}_norm"] = f"the mean norm exceeds the float64 range ({mean:.6g} x 2^{e})"
        else:
            out[f"{name}_norm"] = value
        if mean > 0:
            out[f"{name}_norm_cv"] = float(np.std(norms) / mean)
        else:
            undefined[f"{name}_norm_cv"] = "every norm is 0 (0/0)"
    w_total, h_total = math.sqrt(float(np.sum(w_norms**2))), math.sqrt(float(np.sum(h_norms**2)))
    if w_total > 0 and h_total > 0:
        nc3 = 0.0
        for lo, hi in _tiles(K, d):
            difference = Ws[lo:hi] / w_total - centred[lo:hi] / h_total
            nc3 += float(np.vdot(difference, difference))
        out["nc3"] = math.sqrt(nc3)
    else:
        undefined["nc3"] = f"{'the classifier W' if w_total == 0 else 'every centred class mean'} is zero"
    out.update(_cosine_stats(Ws, w_norms, "w", undefined))
    out.update(_cosine_stats(centred, h_norms, "h", undefined, variances))
    # W^T Hbar (nc2) and Zbar = 2^(ew + exponent) (W'^T Hbar' + u 1^T) + b 1^T, u = W' h_G', in tiles of
    # their transposes' rows (a class's logits contiguous)
    u = Ws @ global_mean
    eb = _exponent(bias)
    g = ew + exponent + (3 * d).bit_length()  # |W'^T Hbar' + u| <= 3 d
    if np.any(bias != 0):
        g = max(g, eb)
    bs = np.ldexp(np.asarray(bias, np.float64), -g)
    target = np.zeros(2)  # sum of p_kk, sum of the other p_jk
    gram2 = trace = centred2 = 0.0

    def logits(k0, k1):
        """Rows k0:k1 of ``(W'^T Hbar')^T`` and of ``Zbar^T / 2^g`` (row i: the class-mean logits of class
        k0 + i, contiguous)."""
        G = centred[k0:k1] @ Ws.T
        Z = _times_power(G + u[None, :], ew + exponent - g)
        Z += bs[None, :]
        return G, Z

    tiles = list(_tiles(K, K))
    for k0, k1 in tiles:
        G, Z = logits(k0, k1)
        gram2 += float(np.vdot(G, G))
        del G
        P = Z - Z.max(axis=1, keepdims=True)
        with np.errstate(over="ignore"):
            np.exp(_times_power(P, g), out=P)  # softmax of each class's logits, at the true scale
        P /= P.sum(axis=1, keepdims=True)
        diagonal = float(np.sum(P[_diagonal(k0, k1)]))
        target += (diagonal, float(np.sum(P)) - diagonal)
        del P
        Z -= Z.mean(axis=1, keepdims=True)
        trace += float(np.sum(Z[_diagonal(k0, k1)]))
        centred2 += float(np.vdot(Z, Z))
    out["p_t"], out["p_n"] = float(target[0] / K), float(target[1] / (K * (K - 1)))
    a_scaled = trace / (K - 1)
    a = _unscale(a_scaled, g)
    if a is None:
        undefined["a"] = f"exceeds the float64 range ({a_scaled:.6g} x 2^{g})"
    else:
        out["a"] = a
    gram = math.sqrt(gram2)
    nc2 = residual = 0.0
    etf = 1.0 / math.sqrt(K - 1.0)
    for k0, k1 in tiles:
        G, Z = logits(k0, k1)
        index = _diagonal(k0, k1)
        if gram > 0:
            G /= gram
            G += etf / K  # G / ||G|| - M / sqrt(K - 1), M = I - 11^T / K (symmetric)
            G[index] -= etf
            nc2 += float(np.vdot(G, G))
        del G
        Z -= Z.mean(axis=1, keepdims=True)
        Z += a_scaled / K  # M Zbar - a M
        Z[index] -= a_scaled
        residual += float(np.vdot(Z, Z))
    if gram > 0:
        out["nc2"] = math.sqrt(nc2)
    else:
        undefined["nc2"] = "W^T Hbar = 0 (the classifier or the centred class means are zero, or orthogonal)"
    if centred2 > 0:
        out["a_residual"] = math.sqrt(residual / centred2)
    else:
        undefined["a_residual"] = "the centred class-mean logits M Zbar are all zero (0/0)"
    mean_bias = float(np.mean(np.ldexp(bias, -eb)))
    for name, value in (("bias", mean_bias), ("bias_spread", float(np.max(np.abs(np.ldexp(bias, -eb) - mean_bias))))):
        unscaled = _unscale(value, eb)
        if unscaled is None:
            undefined[name] = f"exceeds the float64 range ({value:.6g} x 2^{eb})"
        else:
            out[name] = unscaled
    return out, undefined


def _metrics(mo: _Moments, weight: np.ndarray, bias: np.ndarray, N: int) -> tuple[dict, dict]:
    """``(measured, undefined)``: every measurement (module docstring) from the scaled moments; the ones that
    do not exist are left out of ``measured`` and named in ``undefined`` with the reason."""
    K = weight.shape[0]
    geometry, undefined = _geometry(weight, mo.centred, mo.global_mean, bias, mo.exponent, mo.variances)
    out: dict = {}
    try:
        basis = _pinv_basis(mo.centred)
    except np.linalg.LinAlgError as error:
        undefined["nc1"] = undefined["nc1_trace"] = f"the SVD of the class means failed ({error})"
    else:
        if basis[1].size:
            trace = _pinv_trace(mo.scatter / N, basis)
            out.update(nc1=trace / K, nc1_trace=trace)
        else:
            undefined["nc1"] = undefined["nc1_trace"] = "every class mean equals the global mean (Sigma_B = 0)"
    for name in ("nc2", "nc3", "cdnv"):
        if name in geometry:
            out[name] = geometry.pop(name)
    out.update(ncc_agreement=mo.ncc_agreement, ncc_accuracy=mo.ncc_accuracy, accuracy=mo.accuracy, **geometry)
    order = [name for name in SOURCES if name in out or name in undefined]
    return {name: (float(out[name]) if name in out else None) for name in order}, undefined


# ----------------------------------------------------------------------------- theory


def _problem(K, counts, d, loss, delta, gamma, mse_kappa, mse_beta, lam_W, lam_H, lam_b):
    import jax

    from ufm.problem import Problem

    n = max(1, int(round(sum(counts) / K)))
    dtype = "float64" if jax.config.jax_enable_x64 else "float32"  # type: ignore[attr-defined]  # the spectra's dtype; metrics stay float64
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


def _settings(problem) -> dict:
    """The loss and penalties of ``problem`` as the class-mean solvers take them (``ufm.imbalance.solve_reduced``,
    ``ufm.generalized.generalized_prediction``)."""
    names = ("lam_W", "lam_H", "lam_b", "loss", "delta", "mse_kappa", "mse_beta")
    return {name: getattr(problem, name) for name in names}


def _numerical_optimum(problem, counts):
    """Imbalanced classes: ``(predicted, b*)`` at the numerical UFM optimum with the class sizes ``counts``
    (module docstring), or ``(None, reason)`` when it is not computed."""
    import jax

    from ufm import _lbfgs, imbalance

    K, d = problem.K, problem.d
    if not problem.loss_spec.convex_in_logits:
        return None, f"loss {problem.loss!r} has no exact class-mean reduction"
    if d < K:
        return None, f"d = {d} < K = {K}: see the d < K reason"
    if K * d > NUMERICAL_MAX_KD:
        return None, f"K d = {K * d} > NUMERICAL_MAX_KD = {NUMERICAL_MAX_KD}"
    if not jax.config.jax_enable_x64:  # type: ignore[attr-defined]
        return None, "it runs in float64: enable jax_enable_x64 (the CLI does)"
    size = 2 * K * d + K
    _memory.require(
        8.0 * size * (2 * _lbfgs.MEMORY + 8),
        "the numerical UFM prediction (reduced L-BFGS)",
        f"K = {K}, d = {d}",
        "omit lam_W/lam_H (--lam-W/--lam-H)",
    )
    s = imbalance.solve_reduced(counts, d=d, **_settings(problem))
    finite = all(np.all(np.isfinite(x)) for x in (s.W, s.Hbar, s.b))
    if s.status != "converged" or not finite:
        return None, f"the solve did not converge ({s.status}, gradient ratio {s.grad_ratio:.2g})"
    sizes = np.asarray(counts, np.float64)
    global_mean = s.Hbar @ sizes / sizes.sum()
    geometry, _ = _geometry(s.W.T, s.Hbar.T - global_mean, global_mean, s.b)
    names = ("nc2", "nc3", "w_norm", "h_norm", "a", "bias") + (("p_t", "p_n") if problem.loss_spec.softmax else ())
    predicted = {name: geometry[name] for name in names if name in geometry}
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


def _gnc_plan(N: int, d: int, K: int, chunk: int, M: int, shapes: dict) -> str | None:
    """Before streaming: None when the d < K measurements are to be taken (d < K, :data:`GNC_MAX_K`, memory),
    else why not (None as well for d >= K, where there are none)."""
    if d >= K:
        return None
    if K > GNC_MAX_K:
        return f"K = {K} > GNC_MAX_K = {GNC_MAX_K} (ufm.generalized.gnc_metrics builds K x K matrices)"
    needed = memory_bytes(N, d, K, chunk, M, **shapes, gnc=True)
    if not _memory.fits(needed):
        return f"they need about {_memory.gib(gnc_bytes(d, K))} (K x K matrices), more than the free memory"
    return None


def _gnc_measured(mo: _Moments, weight: np.ndarray, bias: np.ndarray, counts, measured: dict, undefined: dict) -> None:
    """d < K: :func:`ufm.generalized.gnc_metrics` of the network's classifier, class means, bias and class counts
    into ``measured`` (:data:`GNC_MEASURED`); a value that does not exist is None with its reason in ``undefined``."""
    with np.errstate(over="ignore", invalid="ignore"):
        means = np.ldexp(mo.means, mo.exponent)
    if not np.all(np.isfinite(means)):
        for name in GNC_MEASURED:
            measured[name], undefined[name] = None, "the class means exceed the float64 range"
        return
    with np.errstate(all="ignore"):
        values = generalized.gnc_metrics(weight.T, means.T, bias, np.asarray(counts, np.float64))
    for name in GNC_MEASURED:
        value = float(values[name])
        if math.isfinite(value):
            measured[name] = value
        elif name in generalized.GEOMETRY:
            measured[name] = None
            undefined[name] = "fewer than two classes have a direction (w_k and hbar_k - h_G both non-zero)"
        else:
            measured[name], undefined[name] = None, "not finite in float64 (overflow)"


def _generalized_plan(K: int, d: int, loss: str, restarts: int) -> str | None:
    """Before streaming (d < K, a setup given): None when the numerical d < K prediction is to be computed, else
    why not (the loss, :data:`NUMERICAL_MAX_KD`, float64, its memory estimated by
    :func:`ufm.generalized.prediction_bytes`)."""
    import jax

    if not loss_spec(loss).convex_in_logits:
        return f"loss {loss!r} has no exact class-mean reduction"
    if K * d > NUMERICAL_MAX_KD:
        return f"K d = {K * d} > NUMERICAL_MAX_KD = {NUMERICAL_MAX_KD}"
    if not jax.config.jax_enable_x64:  # type: ignore[attr-defined]
        return "it runs in float64: enable jax_enable_x64 (the CLI does)"
    needed = generalized.prediction_bytes(K, d, restarts)
    if not _memory.fits(needed):
        return f"{restarts} restarts need about {_memory.gib(needed)}, more than the free memory (use fewer restarts)"
    return None


def _generalized_info(pred) -> dict:
    """The JSON-ready summary of a :class:`ufm.generalized.GeneralizedPrediction` (``Analysis.generalized``)."""
    proof = pred.certificate
    return {
        "restarts": pred.restarts,
        "seeds": list(pred.seeds),
        "best_seed": pred.seeds[pred.best],
        "objective": pred.objective,
        "objectives": [float(v) for v in pred.objectives],
        "statuses": list(pred.statuses),
        "iterations": list(pred.iterations),
        "agreeing": len(pred.agreeing),
        "rtol": pred.rtol,
        "converged": pred.converged,
        "zero": pred.zero,
        "spread": {name: float(value) for name, value in pred.spread.items()},
        "certificate": None
        if proof is None
        else {"upper": proof.upper, "lower": proof.lower, "gap": proof.gap, "rank": int(proof.rank), "d": int(proof.d)},
        "certificate_note": pred.certificate_note,
    }


def _generalized(problem, counts, measured, bias, restarts):
    """d < K: ``((predicted, error, relative, spread), info)`` against the numerical optimum (module docstring),
    or ``(None, info)`` with ``info["skipped"]`` when no restart converged."""
    sizes = np.asarray(counts, np.float64)
    pred = generalized.generalized_prediction(
        sizes, d=problem.d, restarts=restarts, rtol=DEFAULT_RTOL, **_settings(problem)
    )
    info = _generalized_info(pred)
    if not pred.converged:
        return None, {**info, "skipped": f"no restart of the d < K optimum converged ({', '.join(pred.statuses)})"}
    global_mean = pred.Hbar @ sizes / sizes.sum()
    geometry, _ = _geometry(pred.W.T, pred.Hbar.T - global_mean, global_mean, pred.b)
    names = ("w_norm", "h_norm", "a") + (("p_t", "p_n") if problem.loss_spec.softmax else ())
    predicted = {name: float(geometry[name]) for name in names if name in geometry}
    vanishing = ("w_norm", "h_norm", "a")  # 0 at the zero minimizer: compared absolutely there, without a spread
    if pred.zero:
        predicted.update({name: 0.0 for name in vanishing if name in predicted})
    else:
        predicted["nc1"] = 0.0  # every minimizer has H = Hbar Y, whatever d (ufm.solver docstring)
    for name in GNC_JUDGED:
        value = float(pred.metrics[name])
        directional = name in generalized.GEOMETRY
        if name in measured and math.isfinite(value) and not (pred.zero and directional):
            predicted[name] = value
    error, relative = {}, {}
    for name, p in predicted.items():
        m = measured.get(name)
        if m is None:
            continue
        if name in GNC_JUDGED:
            error[name], relative[name] = generalized.deviation(name, m, p)
        else:
            relative[name] = p != 0.0 and not name.startswith("nc")
            error[name] = abs(m - p) / abs(p) if relative[name] else abs(m - p)
    predicted["bias"] = float(np.mean(pred.b))
    error["bias"], relative["bias"] = generalized.deviation("b_sorted", np.sort(bias), np.sort(pred.b))
    spread = {name: float(pred.spread[SPREAD_OF[name]]) for name in error if name in SPREAD_OF}
    if pred.zero:
        spread.update({name: 0.0 for name in vanishing if name in spread})
    return (predicted, error, relative, spread), info


def _prediction(problem, counts, measured, bias, generalized_plan=None, restarts=generalized.DEFAULT_RESTARTS):
    """(predicted, error, relative, applies, reasons, prediction kind, non-zero eigenvalue counts of the predicted
    Hessian blocks (:func:`_nonzero_counts`), restart spread per row (d < K), ``Analysis.generalized``).
    ``generalized_plan``: why the d < K prediction is not computed (:func:`_generalized_plan`), or None."""
    import theory
    from ufm.compare import predict

    K, n, d = problem.K, problem.n, problem.d
    reasons = []
    numerical = None
    imbalanced = min(counts) != max(counts)
    info = {}
    if d < K:
        rows, info = (
            (None, {"skipped": generalized_plan})
            if generalized_plan
            else _generalized(problem, counts, measured, bias, restarts)
        )
        if rows is not None:
            predicted, error, relative, spread = rows
            if imbalanced:
                reasons.append(
                    f"class counts differ ({min(counts)} to {max(counts)} per class): the closed forms assume "
                    "balanced classes; the d < K prediction below is for the observed class sizes"
                )
            certificate = info["certificate"]
            reasons.append(
                f"d = {d} < K = {K}: no simplex ETF fits in R^d and no closed form exists (the theorems need "
                f"d >= K); predicted instead: the numerical UFM optimum, best of {info['restarts']} seeded restarts "
                f"({info['agreeing']} within rtol {info['rtol']:g} of the best L; "
                + (
                    f"certificate gap {certificate['gap']:.3g}"
                    if certificate
                    else f"certificate {info['certificate_note']}"
                )
                + "), judged within rtol + restart spread"
            )
            if info["zero"]:
                reasons.append(
                    "the numerical optimum is W = H = 0 (beyond the phase boundary): NC1 and the directional GNC "
                    "metrics not predicted"
                )
            nonzero = {"reason": f"d = {d} < K = {K}: the numerical optimum has no predicted spectrum"}
            kind = PREDICTION_GENERALIZED
            predicted = {k: float(v) for k, v in predicted.items()}
            return predicted, error, relative, False, reasons, kind, nonzero, spread, info
    if imbalanced:
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
        reasons.append(
            f"d = {d} < K = {K}: the theorems need d >= K (prediction computed for d = K, not judged; the "
            f"numerical d < K prediction was skipped: {info['skipped']})"
        )
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
        if imbalanced:
            nonzero = {"reason": "class counts differ: Thm 4.2's spectrum is for balanced classes"}
        if pred.collapsed:
            if problem.loss_spec.closed_form == "guo":  # Thm 4.1's phase: c >= 1
                c = theory.phase(K, n, delta=problem.delta, lam_W=problem.lam_W, lam_H=problem.lam_H).c
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
        if name == "bias" or measured.get(name) is None:
            continue
        m = measured[name]
        relative[name] = p != 0.0 and not name.startswith("nc")
        error[name] = abs(m - p) / abs(p) if relative[name] else abs(m - p)
    error["bias"] = float(np.max(np.abs(bias - bias_prediction)))
    relative["bias"] = False
    applies = not any(r.startswith(("class counts", "d = ")) for r in reasons)
    predicted = {k: float(v) for k, v in predicted.items()}
    return predicted, error, relative, applies, reasons, kind, nonzero, {}, info


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


def spectra_bytes(N: int, d: int, K: int) -> float:
    """Bytes the Hessian blocks need at least: the features and their class means as float64 JAX arrays and
    one Hessian-vector product (its K x N logits and their tangents, :func:`ufm._memory.hvp_bytes`)."""
    return 8.0 * 6 * d * N + _memory.hvp_bytes(K, N, d)


def _spectra_plan(N: int, d: int, K: int, mode) -> dict | None:
    """Before streaming: None when the Hessian blocks are to be computed, else ``{"skipped": reason}``
    (``spectra=False``; ``"auto"`` beyond :data:`AUTO_SPECTRA_ENTRIES` or :data:`AUTO_SPECTRA_LOGITS`, or
    not fitting); ``spectra=True`` that does not fit is refused here (``ValueError``), not attempted."""
    if mode is False:
        return {"skipped": "spectra=False"}
    if mode == "auto" and d * N > AUTO_SPECTRA_ENTRIES:
        return {
            "skipped": f"d N = {d * N} > {AUTO_SPECTRA_ENTRIES} (pass spectra=True / --spectra on "
            "to compute them; they need H in memory as float64)"
        }
    if mode == "auto" and K * N > AUTO_SPECTRA_LOGITS:
        return {
            "skipped": f"K N = {K * N} > {AUTO_SPECTRA_LOGITS} logits (every Hessian-vector product holds "
            "K x N logits; pass spectra=True / --spectra on to compute them)"
        }
    needed = spectra_bytes(N, d, K)
    if mode == "auto" and not _memory.fits(needed):
        return {"skipped": f"they need about {_memory.gib(needed)}, more than the free memory"}
    _memory.require(
        needed,
        "the Hessian blocks (spectra=True / --spectra on: the features as float64 JAX arrays, K x N logits)",
        f"N = {N}, d = {d}, K = {K}",
        "pass spectra=False (--spectra off)",
    )
    return None


def _spectra(features, labels, weight, bias, weights, mode, p_t, means, nonzero):
    """Loss-term Hessian blocks W, H (at the features) and H at the class means (``ufm.hessian``): exact
    when small, else Lanczos lambda_max. ``nonzero``: block -> predicted non-zero count, or ``{"reason": ...}``."""
    import jax
    import jax.numpy as jnp

    from ufm import hessian
    from ufm.objective import Params

    N, d = features.shape
    K = weight.shape[0]
    x64 = bool(jax.config.jax_enable_x64)  # type: ignore[attr-defined]
    dtype = jnp.float64 if x64 else jnp.float32
    W, b = jnp.asarray(weight.T, dtype), jnp.asarray(bias, dtype)
    at_point = Params(W, jnp.asarray(np.asarray(features, np.float64).T, dtype), b)
    at_means = Params(W, jnp.asarray(means[labels].T, dtype), b)
    y = jnp.asarray(labels)
    out = {"K_p_t": K * p_t, "dtype": "float64" if x64 else "float32 (enable jax_enable_x64 for float64)"}
    softmax_loss = int(np.asarray(weights.loss_id)) == 0
    reason = nonzero.get("reason", "")
    for name, block, params in (("W", "W", at_point), ("H", "H", at_point), ("H_class_means", "H", at_means)):
        if block == "W":
            structured = 8.0 * 3 * K * min(d, N) * N + 8.0 * 3 * (K * min(d, N)) ** 2
        else:
            structured = 8.0 * 4 * N * K * K if softmax_loss else 8.0 * 4 * N * K * K + 8.0 * d * N
        # dense only where jax.hessian's `size` products at once fit (at N = 5,000, K = 100, d = 16 the 1,600-row W
        # block needs 149 GiB that way and was skipped, though the structured path takes 0.25 GB)
        dense = hessian.dense_fits(params, block, DENSE_ENTRIES)
        try:
            if dense or structured <= STRUCTURED_BYTES:
                spectrum = hessian.block_spectrum(params, y, weights, block, method="dense" if dense else "structured")
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
    restarts: int = generalized.DEFAULT_RESTARTS,
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
        restarts: d < K only: seeded restarts of the class-mean solve whose best is the numerical prediction
            (1 to :data:`ufm.generalized.MAX_RESTARTS`; default as ``ufm.solve``).

    Returns:
        :class:`Analysis`. Raises ``ValueError`` naming the argument for bad input (shapes, labels out
        of range or non-integer, NaN/inf features, a class without samples, bad setup numbers).
    """
    features = validation.array("features", features, 2)
    N, d = features.shape
    weight = validation.array("weight", weight, 2)
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
        bias = validation.finite_array("bias", validation.array("bias", bias, 1))
        if bias.shape != (K,):
            raise ValueError(f"bias must have shape (K,) = ({K},) (K = rows of weight), got {bias.shape}")
    labels = validation.array("labels", labels, 1)
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    if spectra not in SPECTRA or isinstance(spectra, (int, float)) and not isinstance(spectra, bool):
        raise ValueError(f"spectra must be 'auto', True or False, got {spectra!r}")
    restarts = validation.integer("restarts", restarts, 1, generalized.MAX_RESTARTS)
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
        test_features = validation.array("test_features", test_features, 2)
        M = test_features.shape[0]
        if M < 1 or test_features.shape[1] != d:
            raise ValueError(
                f"test_features must have shape (M, d) with M >= 1 and d = {d} (columns of features), "
                f"got {test_features.shape}"
            )
        test_labels = validation.array("test_labels", test_labels, 1)
    # the checks of the setup (delta only with ls, ranges) are Problem's: before streaming
    setup, problem = {}, None
    spec = loss_spec(loss)
    if lam_W is not None and spec.bias_in_optimum and lam_b is None:
        raise ValueError(f"lam_b (>= 0) is needed for loss={loss!r}: its optimum depends on the bias")
    if lam_W is not None:
        problem = _problem(K, [N / K], d, loss, delta, gamma, mse_kappa, mse_beta, lam_W, lam_H, lam_b)
        setup = {
            "loss": loss,
            "delta": problem.delta,
            "gamma": problem.gamma,
            "lam_W": problem.lam_W,
            "lam_H": problem.lam_H,
            "lam_b": lam_b if lam_b is None else validation.interval("lam_b", lam_b, 0.0, low_open=False),
        }
        setup.update({p: getattr(problem, p) for p in problem.loss_spec.parameters if p not in setup})
    else:
        problem = _problem(K, [N / K], d, loss, delta, gamma, mse_kappa, mse_beta, 1.0, 1.0, lam_b)
    # memory, estimated from the shapes before anything is converted, and the slow parts planned up front
    float_labels = labels.dtype.kind == "f" or (M and test_labels.dtype.kind == "f")
    shapes = dict(itemsize=features.dtype.itemsize, float_labels=bool(float_labels))
    gnc_skipped = _gnc_plan(N, d, K, chunk, M, shapes)
    work = memory_bytes(N, d, K, chunk, M, **shapes, gnc=d < K and gnc_skipped is None)
    _memory.require(
        work,
        "streaming the features",
        f"N = {N}, d = {d}, K = {K}, chunk_size = {chunk}" + (f", M = {M} test samples" if M else ""),
        f"pass a smaller chunk_size (--chunk-size; at least {max(1, chunk // 16)} rows would do)"
        if chunk > 1
        else "reduce the sizes",
    )
    spectra_info = _spectra_plan(N, d, K, spectra)
    generalized_plan = _generalized_plan(K, d, loss, restarts) if lam_W is not None and d < K else None
    weight = validation.finite_array("weight", weight)
    labels = _labels(labels, N, K)
    if M:
        test_labels = _labels(test_labels, M, K, "test_labels", "test_features")

    mo = _moments(features, labels, weight, bias, chunk)
    counts = tuple(int(c) for c in mo.counts)
    measured, undefined = _metrics(mo, weight, bias, N)
    info: dict = {}
    if d < K and gnc_skipped is None:
        _gnc_measured(mo, weight, bias, counts, measured, undefined)
    elif d < K:
        info["gnc_skipped"] = gnc_skipped

    predicted, error, relative, applies, reasons, kind, spread = {}, {}, {}, False, [], "", {}
    nonzero: dict = {"reason": "no prediction (lam_W and lam_H not given)"}
    if lam_W is not None and K > PREDICTION_MAX_K:
        reasons = [
            f"K = {K} > PREDICTION_MAX_K = {PREDICTION_MAX_K}: the UFM prediction (theory.predict) builds "
            "K x K matrices; not computed"
        ]
        nonzero = {"reason": reasons[0]}
    elif lam_W is not None:
        problem = _problem(K, counts, d, loss, delta, gamma, mse_kappa, mse_beta, lam_W, lam_H, lam_b)
        predicted, error, relative, applies, reasons, kind, nonzero, spread, found = _prediction(
            problem, counts, measured, bias, generalized_plan, restarts
        )
        info.update(found)

    held_out = {}
    if M:  # before the Hessian blocks: a bad test file is refused before the slow part
        settings = dict(delta=delta, gamma=gamma, mse_kappa=mse_kappa, mse_beta=mse_beta)
        held_out = _held_out(test_features, test_labels, weight, bias, mo, int(min(chunk, M)), spec, settings)

    if spectra_info is None:
        with np.errstate(over="ignore"):
            means = np.ldexp(mo.means, mo.exponent)
        spectra_info = _spectra(
            features, labels, weight, bias, problem.weights(), spectra, measured["p_t"], means, nonzero
        )
        measured["K_p_t"] = K * measured["p_t"]
        for name, block in (("kappa_W", "W"), ("kappa_H", "H_class_means"), ("kappa_H_point", "H")):
            kappa = spectra_info.get(block, {}).get("kappa")
            if kappa is None:
                continue
            if not math.isfinite(kappa):
                measured[name], undefined[name] = None, "not finite in float64 (the Hessian block overflowed)"
                continue
            measured[name] = kappa
            if name in predicted:
                error[name] = abs(kappa - predicted[name]) / abs(predicted[name])
                relative[name] = True
    for name, value in measured.items():  # never NaN or inf as a measurement
        if value is not None and not math.isfinite(value):
            measured[name] = None
            undefined.setdefault(name, "not finite in float64 (overflow or 0/0)")
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
        undefined,
        spread,
        info,
    )
