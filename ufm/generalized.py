"""More classes than feature dimensions (d < K): the UFM's numerical optimum as the prediction, and the
generalized neural-collapse (GNC) measurements.

For d < K no simplex ETF fits in R^d, Theorem 4.1 of Guo et al. does not apply and no closed form of the
minimizer is known. The class-mean reduction of :mod:`ufm.solver` stays exact for losses convex in the logits
(CE, LS, MSE) whatever d is (Jensen per class; strictly convex per-sample feature problems), so every minimizer
is ``(W, Hbar Y, b)`` with ``(W, Hbar, b)`` minimizing ``L_red``; but ``L_red`` is not convex, and for d < K one
start need not reach its global minimum. :func:`generalized_prediction` therefore runs ``restarts`` seeded
starts of :func:`ufm.imbalance.solve_reduced` (seeds ``seed, seed + 1, ...``; the class-mean L-BFGS, so
K = 1,000, d = 512 is practical) and takes the best as the prediction, labelled numerical, with

* the restart spread: the values of ``L_red`` of every restart, the restarts that reached the best value
  within ``rtol`` (relative) and, for every measured quantity, its largest deviation from the best restart over
  those (:attr:`GeneralizedPrediction.spread`: how far apart equally good minimizers lie in that quantity);
* the certificate gap of :func:`ufm.convex.certificate` (CE/LS with ``lam_b > 0``): ``L_best`` minus the dual
  value of the convex nuclear-norm relaxation, a lower bound on the global minimum for every d. The best restart
  is at most ``gap`` above the global minimum; the gap is ~0 for ``d >= K - 1`` (the bound is attained) and
  positive when the relaxation's minimizer has rank > d (then it bounds, it does not certify).

Measurements (:func:`gnc_metrics`), after Jiang et al. (ICML 2024, "Generalized neural collapse for a large
number of classes"): W ``(d, K)`` (column k = classifier ``w_k``), class means Hbar ``(d, K)``, bias b ``(K,)``,
class sizes ``n_k`` (``N = sum n_k``), ``h_G = sum_k n_k hbar_k / N``, ``u_k = w_k / ||w_k||``,
``v_k = (hbar_k - h_G) / ||hbar_k - h_G||``:

* ``margin`` — the minimum one-vs-rest margin of the class means under the classifiers,
  ``min_k min_{l != k} <u_k - u_l, v_k>`` (in [-2, 2]). Jiang et al. state GNC for the UFM with unit-norm
  classifiers and features (their spherical constraint) and no bias; there the margin of class k is
  ``<w_k - w_l, h_k>`` minimised over l != k, and the optimum maximises its minimum over k (the *softmax code*,
  whose one-vs-rest distance ``dist(w_k, conv{w_l : l != k})`` is the largest margin a unit feature can reach for
  class k). Here W and H are free, so both are normalised, and the means are centred at ``h_G`` (the bias
  absorbs a common shift of the features: ``W^T c`` is a logit offset). A simplex ETF with ``W ~ Mbar`` gives
  ``K / (K - 1)``; the regular K-gon (d = 2) ``1 - cos(2 pi / K)``.
* ``logit_margin`` — the margin the loss sees, unnormalised and with the bias: ``min_k (z_kk - max_{l != k} z_lk)``,
  ``z_lk = w_l^T hbar_k + b_l``.
* ``gnc2_H``, ``gnc2_W`` (Riesz 1-energy) and ``gnc2_log_H``, ``gnc2_log_W`` (logarithmic energy) of the
  normalised centred means and classifiers — hyperspherical uniformity (GNC2), as
  :func:`ufm.collapse_metrics.collapse_metrics` computes them (:data:`ufm.collapse_metrics.METRIC_SOURCES`).
* ``alignment`` — classifier-mean alignment, the mean over classes of ``cos(w_k, hbar_k - h_G)``
  (``duality_cos_mean`` of the metric set); ``gnc3 = 1 - alignment`` (GNC3: 0 when every classifier points
  along its class mean).
* ``w_norm``, ``h_norm`` (mean ``||w_k||``, mean ``||hbar_k - h_G||``), ``logit_norm`` (``||Z||_F`` of the
  ``K x K`` class-mean logits ``Z = W^T Hbar + b 1^T``), ``p_t`` / ``p_n`` (softmax probability of the target
  class / mean of the others, averaged over the N samples), ``b_sorted`` (the bias sorted: the classes of two
  optimal points may be permuted).

* ``null_classes`` — the classes with ``w_k = 0`` and ``hbar_k = h_G`` (up to ``NULL_LEVEL``), which win through
  their bias alone. With a bias such classes appear at the optimum for d < K - 1 (measured for d = 2: K = 5 is an
  irregular pentagon with unequal biases, K >= 6 a regular (K - 1)-gon plus one null class; with the bias
  penalised out, ``lam_b`` >> 1, the regular K-gon of the spherical model). They have no direction, so the
  directional quantities (margin, energies, alignment) are taken over the other classes.

All of these are invariant under a rotation of the feature space and a relabelling of the classes, so two
restarts that reach equivalent minimizers agree in them. Cost O(K^2 d) per point (one ``K x K`` Gram); memory
is estimated before anything is allocated (:func:`prediction_bytes`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from theory import validation
from ufm import _memory
from ufm.collapse_metrics import ClassStatistics, collapse_metrics, shaped_array
from ufm.convex import Certificate, certificate
from ufm.losses import LOSS_SPECS, loss_spec

#: Seeded restarts of :func:`generalized_prediction` unless told otherwise.
DEFAULT_RESTARTS = 4
#: Largest number of restarts accepted.
MAX_RESTARTS = 1000
#: Below this ``||W||_F ||Hbar - h_G||_F`` the best restart counts as the zero minimizer (past the phase boundary):
#: directions, margins, energies and alignment are undefined there.
ZERO_LEVEL = 1e-8
#: A class whose classifier or centred mean is at most this fraction of the largest one has no direction: at the
#: UFM optimum with a bias, some classes sit at ``w_k = 0, hbar_k = h_G`` (they win through ``b_k`` alone; measured
#: for d = 2, K >= 6: a regular (K - 1)-gon plus one such class); a converged solve leaves them ~1e-11 of the others.
NULL_LEVEL = 1e-6
#: The quantities of :func:`gnc_metrics` compared between points (``b_sorted`` is an array: its largest entry-wise
#: difference is used).
QUANTITIES = (
    "w_norm",
    "h_norm",
    "logit_norm",
    "p_t",
    "p_n",
    "b_sorted",
    "null_classes",
    "margin",
    "logit_margin",
    "gnc2_H",
    "gnc2_W",
    "alignment",
)
#: The quantities that describe directions only (undefined at the zero minimizer).
GEOMETRY = ("margin", "gnc2_H", "gnc2_W", "gnc2_log_H", "gnc2_log_W", "alignment", "gnc3")


@dataclass(frozen=True)
class GeneralizedPrediction:
    """Outcome of :func:`generalized_prediction` (module docstring).

    Attributes:
        sizes ``(K,)``, d, loss, rtol: what was solved and the tolerance that groups restarts.
        seeds: the seeds of the restarts (``seed, seed + 1, ...``).
        objectives ``(R,)``, statuses, iterations: ``L_red``, status and iterations of every restart.
        best: index of the best restart (lowest ``L_red`` among the converged or stalled ones).
        agreeing: indices of the converged restarts within ``rtol`` (relative) of the best value.
        W, Hbar ``(d, K)``, b ``(K,)``, objective: the best restart's point and value.
        metrics: :func:`gnc_metrics` of the best point.
        spread: per quantity of ``QUANTITIES`` and ``"objective"``, the largest deviation from the best restart
            over ``agreeing`` (relative to the best value, absolute where that is 0 and for ``b_sorted``,
            ``null_classes``).
        zero: the best point is the zero minimizer (``ZERO_LEVEL``).
        certificate: :class:`ufm.convex.Certificate` of ``objective`` (None when not computed;
            ``certificate_note`` says why).
        seconds: wall time of the restarts and the certificate.
    """

    sizes: np.ndarray
    d: int
    loss: str
    rtol: float
    seeds: tuple[int, ...]
    objectives: np.ndarray
    statuses: tuple[str, ...]
    iterations: tuple[int, ...]
    best: int
    agreeing: tuple[int, ...]
    W: np.ndarray
    Hbar: np.ndarray
    b: np.ndarray
    objective: float
    metrics: dict
    spread: dict
    zero: bool
    certificate: Certificate | None
    certificate_note: str
    seconds: float

    @property
    def restarts(self) -> int:
        return len(self.seeds)

    @property
    def converged(self) -> bool:
        """The best restart converged (or stalled at the rounding floor)."""
        return self.statuses[self.best] in ("converged", "stalled")

    @property
    def objective_spread(self) -> float:
        """``max - min`` of ``L_red`` over all restarts (local minima included)."""
        return float(np.max(self.objectives) - np.min(self.objectives))


def _sizes(sizes) -> np.ndarray:
    arr = np.asarray(validation.positive("sizes", sizes), dtype=np.float64)
    if arr.ndim != 1 or arr.size < 2:
        raise ValueError(f"sizes must be a 1-D array of K >= 2 class sizes > 0, got {validation.describe(sizes)}")
    return arr


def gnc_metrics(W, Hbar, b=None, sizes=None) -> dict:
    """The measurements of the module docstring at ``W: (d, K)``, class means ``Hbar: (d, K)``, ``b: (K,)``
    (default 0) and class sizes ``sizes: (K,)`` (default equal). Floats, except ``b_sorted (K,)``. The
    directional quantities (``GEOMETRY``) are taken over the classes that have a direction (``NULL_LEVEL``;
    ``null_classes`` counts the others); nan when fewer than two have one (the zero minimizer)."""
    W = validation.real_array("W", W, "finite entries")
    if W.ndim != 2 or W.shape[1] < 2:
        raise ValueError(f"W must have shape (d, K) with K >= 2, got {validation.describe(W)}")
    d, K = W.shape
    Hbar = shaped_array("Hbar", Hbar, (d, K))
    b = np.zeros(K) if b is None else shaped_array("b", b, (K,))
    n = np.ones(K) if sizes is None else _sizes(sizes)
    if n.size != K:
        raise ValueError(f"sizes must give K = {K} class sizes, got {n.size}")
    _memory.require(
        8.0 * (12.0 * K * K + 6.0 * d * K),
        "the d < K measurements (K x K logits and Grams)",
        f"K = {K}, d = {d}",
        "measure a subset of the classes",
    )
    weights = n / n.sum()
    h_G = Hbar @ weights
    centred = Hbar - h_G[:, None]
    w_norms, h_norms = np.linalg.norm(W, axis=0), np.linalg.norm(centred, axis=0)
    active = (w_norms > NULL_LEVEL * w_norms.max()) & (h_norms > NULL_LEVEL * h_norms.max())
    Z = W.T @ Hbar + b[:, None]  # column k: the logits of class k
    shifted = np.exp(Z - Z.max(axis=0))
    p_t = float(weights @ np.diag(shifted / shifted.sum(axis=0)))
    out = {
        "w_norm": float(np.mean(w_norms)),
        "h_norm": float(np.mean(h_norms)),
        "logit_norm": float(np.linalg.norm(Z)),
        "p_t": p_t,
        "p_n": (1.0 - p_t) / (K - 1),
        "b_sorted": np.sort(b),
        "null_classes": float(K - np.count_nonzero(active)),
        "logit_margin": _one_vs_rest(Z),
    }
    m = int(np.count_nonzero(active))
    if m < 2:
        return out | dict.fromkeys(GEOMETRY, np.nan)
    # the active class means as statistics without within-class spread: only the means enter the metrics used
    stats = ClassStatistics(np.ones(m, np.int64), Hbar[:, active].T, h_G, np.zeros((d, d)), np.zeros(m))
    base = collapse_metrics(stats, W[:, active].T)
    U = W[:, active] / w_norms[active]
    V = centred[:, active] / h_norms[active]
    out["margin"] = _one_vs_rest(U.T @ V)  # [l, k] = <u_l, v_k>
    out.update({name: base[name] for name in ("gnc2_H", "gnc2_W", "gnc2_log_H", "gnc2_log_W")})
    out["alignment"] = base["duality_cos_mean"]
    out["gnc3"] = 1.0 - base["duality_cos_mean"]
    return out


def _one_vs_rest(G: np.ndarray) -> float:
    """``min_k (G[k, k] - max_{l != k} G[l, k])`` of a K x K score matrix (column k: the scores of class k)."""
    others = np.where(np.eye(G.shape[0], dtype=bool), -np.inf, G)
    return float(np.min(np.diag(G) - others.max(axis=0)))


def deviation(name: str, value, reference) -> tuple[float, bool]:
    """``(error, relative)`` of a measured quantity against a reference value: relative ``|x - r| / |r|`` for the
    numbers (absolute where ``r = 0``), the largest entry-wise ``|x - r|`` for ``b_sorted``."""
    if name in ("b_sorted", "null_classes"):
        return float(np.max(np.abs(np.asarray(value) - np.asarray(reference)))), False
    value, reference = float(value), float(reference)
    if reference == 0:
        return abs(value - reference), False
    return abs(value - reference) / abs(reference), True


def prediction_bytes(K: int, d: int, restarts: int = 1) -> float:
    """Estimated peak bytes of :func:`generalized_prediction`: the reduced L-BFGS (its point ``2 d K + K``, the
    gradient and ``2 x 5`` curvature pairs, ~20 copies, plus ~8 ``K x K`` logit temporaries), the points kept of
    every restart (``2 d K + K``), the certificate's FISTA (~16 ``K x K`` matrices and an SVD) and the
    measurements (~12 ``K x K``)."""
    point = 2.0 * d * K + K
    return 8.0 * (20.0 * point + restarts * point + 16.0 * K * K)


def generalized_prediction(
    sizes,
    *,
    d,
    lam_W,
    lam_H,
    lam_b,
    loss: str = "ce",
    delta=0.0,
    mse_kappa=1.0,
    mse_beta=1.0,
    restarts=DEFAULT_RESTARTS,
    seed=0,
    tol=1e-12,
    max_iters=20_000,
    rtol=1e-6,
    certify: bool = True,
) -> GeneralizedPrediction:
    """The numerical UFM optimum for class sizes ``sizes: (K,)`` (positive reals) and dimension ``d`` as the
    best of ``restarts`` seeded starts of :func:`ufm.imbalance.solve_reduced` (module docstring), with its
    restart spread, its :func:`gnc_metrics` and (``certify``, CE/LS with ``lam_b > 0``) its certificate gap.
    Any d works (for ``d >= K`` the best restart is the simplex-ETF minimizer); float64, needs
    ``jax_enable_x64``. ``rtol`` groups the restarts that reached the best value."""
    from ufm.imbalance import solve_reduced

    n = _sizes(sizes)
    K = n.size
    d = validation.integer("d", d, 1)
    exact = [name for name, spec in LOSS_SPECS.items() if spec.convex_in_logits]
    if not (isinstance(loss, str) and loss in exact):
        raise ValueError(
            f"loss must be {', '.join(map(repr, exact[:-1]))} or {exact[-1]!r} (where the class-mean reduction is "
            f"exact), got {loss!r}"
        )
    lam_W = validation.positive_scalar("lam_W", lam_W)
    lam_H = validation.positive_scalar("lam_H", lam_H)
    lam_b_array = validation.real_array("lam_b", lam_b, "lam_b >= 0")
    if lam_b_array.ndim != 0 or lam_b_array < 0:
        raise ValueError(f"lam_b must be a single number >= 0, got {validation.describe(lam_b)}")
    lam_b = float(lam_b_array)
    delta = float(validation.delta(delta))
    restarts = validation.integer("restarts", restarts, 1, MAX_RESTARTS)
    seed = validation.integer("seed", seed, 0, 2**31 - restarts)
    tol = validation.positive_scalar("tol", tol)
    max_iters = validation.integer("max_iters", max_iters, 1, 2**31 - 1)
    rtol = validation.positive_scalar("rtol", rtol)
    _memory.require(
        prediction_bytes(K, d, restarts),
        f"the d < K prediction ({restarts} restarts of the class-mean solve, certificate, measurements)",
        f"K = {K}, d = {d}",
        "use fewer restarts (--restarts) or a smaller K",
    )
    start = time.perf_counter()
    options = dict(d=d, lam_W=lam_W, lam_H=lam_H, lam_b=lam_b, loss=loss, delta=delta, tol=tol, max_iters=max_iters)
    if "mse_kappa" in loss_spec(loss).parameters:
        options.update(mse_kappa=float(mse_kappa), mse_beta=float(mse_beta))
    runs = [solve_reduced(n, seed=seed + r, **options) for r in range(restarts)]
    objectives = np.array([run.objective for run in runs])
    usable = [r for r, run in enumerate(runs) if run.status in ("converged", "stalled") and np.isfinite(run.objective)]
    candidates = usable or [r for r in range(restarts) if np.isfinite(objectives[r])] or list(range(restarts))
    best = min(candidates, key=lambda r: objectives[r])
    level = objectives[best] + rtol * abs(objectives[best])
    agreeing = tuple(r for r in usable if objectives[r] <= level)
    measured = {r: gnc_metrics(runs[r].W, runs[r].Hbar, runs[r].b, n) for r in set(agreeing) | {best}}
    spread = {
        name: max((deviation(name, measured[r][name], measured[best][name])[0] for r in agreeing), default=0.0)
        for name in QUANTITIES
    }
    spread["objective"] = max(
        (deviation("objective", objectives[r], objectives[best])[0] for r in agreeing), default=0.0
    )
    top = runs[best]
    zero = bool(np.linalg.norm(top.W) * np.linalg.norm(top.Hbar - (top.Hbar @ n / n.sum())[:, None]) <= ZERO_LEVEL)
    proof, note = None, ""
    if not certify:
        note = "not computed (certify=False)"
    elif not loss_spec(loss).softmax:
        note = f"not available for loss {loss!r} (ufm.convex covers the softmax losses ce/ls)"
    elif lam_b == 0:
        note = "not available for lam_b = 0 (the convex dual of ufm.convex needs lam_b > 0)"
    else:
        lams = dict(lam_W=lam_W, lam_H=lam_H, lam_b=lam_b)
        proof = certificate(float(objectives[best]), n, d=d, loss=loss, delta=delta, **lams)
    return GeneralizedPrediction(
        sizes=n,
        d=d,
        loss=loss,
        rtol=rtol,
        seeds=tuple(range(seed, seed + restarts)),
        objectives=objectives,
        statuses=tuple(run.status for run in runs),
        iterations=tuple(run.iterations for run in runs),
        best=best,
        agreeing=agreeing,
        W=top.W,
        Hbar=top.Hbar,
        b=top.b,
        objective=float(objectives[best]),
        metrics=measured[best],
        spread=spread,
        zero=zero,
        certificate=proof,
        certificate_note=note,
        seconds=time.perf_counter() - start,
    )
