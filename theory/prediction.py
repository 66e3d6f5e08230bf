"""One prediction per problem, for every loss: scale, minimizer, norms, probabilities, spectra.

Built on :mod:`theory.scalar_reduction` (scale ``a`` of the optimal ETF, or the
MSE optimum) and :func:`theory.spectra.curvature_spectrum` (Hessian blocks).
Sources: Guo et al. Thm 4.1/4.2 (LS/CE), Zhou et al. Thm 1 (FL; MSE loss eq. 6),
Nguyen et al. Thm 3.2 / Def. 3.1 (H >= 0). numpy float64.

Conventions (``docs/theory.md``): ``W: (d, K)``, ``H: (d, N)`` class-major, ``b: (K,)``,
``lam_W/2 ||W||^2 + lam_H/2 ||H||^2 + lam_b/2 ||b||^2``.

Nguyen et al.'s scaling. They write N classes, K samples per class, feature
dimension M, the loss averaged over NK samples and the regularizer
``lam_W' ||W||^2 + (lam_H'/K) ||H||^2`` (no 1/2). In ours: their N = our K, their
K = our n, their M = our d, ``lam_W = 2 lam_W'`` and ``lam_H = 2 lam_H' / n``, so
``n lam_W lam_H = 4 lam_W' lam_H'`` and their condition
``(N-1)/N alpha + 2 sqrt((N-1) lam_W' lam_H') < 1`` reads
``(K-1)/K delta + sqrt((K-1) n lam_W lam_H) < 1``. The 1-D problem derived in
:mod:`theory.scalar_reduction` puts the boundary (a > 0) of LS with H >= 0 at
``(K-1)/K delta + sqrt(K (K-1) n lam_W lam_H) < (K-1)/K`` instead: stricter. Their
condition is what their proof needs; the zero solution is (degenerately) also an
orthogonal-frame configuration, so the two statements do not contradict, but
their condition is not the phase boundary (see :func:`nonnegative_boundary`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from theory import scalar_reduction as sr
from theory import validation
from theory.closed_form import label_matrix, random_semi_orthogonal, simplex_projector
from theory.softmax import softmax
from theory.spectra import HessianSpectrum, curvature_spectrum


@dataclass(frozen=True)
class Prediction:
    """What theory predicts at the global minimizer.

    Attributes:
        loss, K, n, d, lam_W, lam_H, lam_b, delta, gamma, mse_kappa, mse_beta, nonnegative: the problem.
        a: scale of the class-mean logit ETF ``a M`` (0: everything collapsed to zero).
        collapsed: ``a == 0``.
        zbar: ``(K, K)`` predicted class-mean logits ``W^T hbar_k + b`` (column k).
        bias: ``b = bias * 1``. feature_shift: ``s'`` with ``W^T Hbar = a M + s' 1 1^T`` (MSE only).
        p_t, p_n: softmax of a column of ``zbar`` (target, each non-target).
        w_norm, h_norm: every ``||w_k||`` and every ``||hbar_k - h_G||``.
        class_mean_norm: every ``||hbar_k||`` (uncentred).
        mu1, mu2: logit curvatures (:func:`theory.scalar_reduction.logit_curvatures`).
        spectra: W/H/b blocks of the loss term phi, or None where not derived (H >= 0, MSE with s' != 0).
        kappa_W, kappa_H: condition numbers (|non-zero eigenvalues|) of those blocks; NaN when undefined.
    """

    loss: str
    K: int
    n: int
    d: int
    lam_W: float
    lam_H: float
    lam_b: float | None
    delta: float
    gamma: float
    mse_kappa: float
    mse_beta: float
    nonnegative: bool
    a: float
    collapsed: bool
    zbar: np.ndarray
    bias: float
    feature_shift: float
    p_t: float
    p_n: float
    w_norm: float
    h_norm: float
    class_mean_norm: float
    mu1: float
    mu2: float
    spectra: HessianSpectrum | None
    kappa_W: float
    kappa_H: float

    def minimizer(self, P=None, seed=0):
        """A global minimizer ``(W: (d, K), H: (d, N), b: (K,))``.

        Free features: ``W = rho P (sqrt(a) M + sqrt(|s'| K) J/K)``,
        ``Hbar = rho^{-1} P (sqrt(a) M + sign(s') sqrt(|s'| K) J/K)``, ``rho = (n lam_H/lam_W)^{1/4}``,
        ``J = 1 1^T``, any semi-orthogonal ``P`` (random from ``seed`` if None).
        ``H >= 0``: ``Hbar = r Q``, ``W = (a/r) Q M`` with ``r^2 = a sqrt(lam_W (K-1)/(lam_H n K))`` and
        ``Q`` a column selection of the identity (non-negative, orthonormal; permuted by ``seed``).
        """
        K, n, d, a = self.K, self.n, self.d, self.a
        M = simplex_projector(K)
        Y = label_matrix(K, n)
        b = np.full(K, self.bias)
        if self.nonnegative:
            rows = np.random.default_rng(validation.integer("seed", seed, 0, float64=True)).permutation(d)[:K]
            Q = np.zeros((d, K))
            Q[rows, np.arange(K)] = 1.0
            if a == 0.0:
                return np.zeros((d, K)), np.zeros((d, n * K)), b
            r = np.sqrt(a * np.sqrt(self.lam_W * (K - 1) / (self.lam_H * n * K)))
            return (a / r) * Q @ M, (r * Q) @ Y, b
        P = random_semi_orthogonal(d, K, seed) if P is None else validation.semi_orthogonal(P, d, K)
        rho = (n * self.lam_H / self.lam_W) ** 0.25
        s = self.feature_shift
        shift = np.sqrt(abs(s) * K) * np.full((K, K), 1.0 / K)
        W = rho * P @ (np.sqrt(a) * M + shift)
        Hbar = P @ (np.sqrt(a) * M + np.sign(s) * shift) / rho
        return W, Hbar @ Y, b


def predict(
    K,
    n,
    d,
    *,
    delta=0.0,
    lam_W,
    lam_H,
    lam_b=None,
    loss="ls",
    gamma=0.0,
    mse_kappa=1.0,
    mse_beta=1.0,
    nonnegative=False,
) -> Prediction:
    """Theory's prediction for one UFM problem and loss.

    Args:
        K, n, d: classes (>= 2), samples per class (>= 1), feature dimension (>= K).
        lam_W, lam_H: > 0. lam_b: >= 0 (needed for MSE, whose optimum depends on the bias;
            plays no role for the contrastive losses, whose optimal bias is 0 when lam_b > 0).
        loss: ``"ce"``, ``"ls"``, ``"focal"`` or ``"mse"``; delta (LS), gamma (FL),
            mse_kappa, mse_beta (MSE, both > 0).
        nonnegative: features constrained to ``H >= 0`` (contrastive losses only).

    Returns:
        :class:`Prediction`.
    """
    loss, delta, gamma = sr.loss_parameters(loss, delta=delta, gamma=gamma)
    K, n = validation.classes_and_samples(K, n)
    d = validation.dimension(d, K)
    lam_W = validation.positive_scalar("lam_W", lam_W)
    lam_H = validation.positive_scalar("lam_H", lam_H)
    mse_kappa = validation.positive_scalar("mse_kappa", mse_kappa)
    mse_beta = validation.positive_scalar("mse_beta", mse_beta)
    if lam_b is not None:
        lam_b = validation.nonnegative_scalar("lam_b", lam_b)
    M = simplex_projector(K)
    rho = (n * lam_H / lam_W) ** 0.25
    if loss == "mse":
        if nonnegative:
            raise ValueError("nonnegative=True is derived only for the contrastive losses ('ce', 'ls', 'focal')")
        if lam_b is None:
            raise ValueError("lam_b (>= 0) is needed for loss='mse': its optimum depends on the bias")
        opt = sr.mse_optimum(K, n, lam_W=lam_W, lam_H=lam_H, lam_b=lam_b, mse_kappa=mse_kappa, mse_beta=mse_beta)
        a, bias, shift = opt.a, opt.s_bias, opt.s_feature
        centred = False
        w_norm = rho * np.sqrt(a * (K - 1) / K + abs(shift))
        class_mean_norm = np.sqrt(a * (K - 1) / K + abs(shift)) / rho
    else:
        a = sr.optimal_scale(loss, K, n, lam_W=lam_W, lam_H=lam_H, delta=delta, gamma=gamma, nonnegative=nonnegative).a
        bias, shift, centred = 0.0, 0.0, True
        if nonnegative:
            with np.errstate(over="ignore", invalid="ignore"):  # handled just below
                r2 = a * np.sqrt(lam_W * (K - 1) / (lam_H * n * K))
            # ||hbar_k||; when lam_W / lam_H overflows float64 (lam_H = 5e-324), the same in fourth roots
            fourth_roots = (lam_W**0.25 / lam_H**0.25) * ((K - 1) / (n * K)) ** 0.25
            r = np.sqrt(r2) if np.isfinite(r2) else np.sqrt(a) * fourth_roots
            w_norm = a / r * np.sqrt((K - 1) / K) if a > 0 else 0.0
            class_mean_norm = r
        else:
            w_norm = rho * np.sqrt(a * (K - 1) / K)
            class_mean_norm = np.sqrt(a * (K - 1) / K) / rho
    with np.errstate(over="ignore"):  # a square beyond float64: the product form below
        h_norm = np.sqrt(class_mean_norm**2 * (K - 1) / K) if nonnegative else np.sqrt(a * (K - 1) / K) / rho
    if nonnegative and not np.isfinite(h_norm):
        h_norm = class_mean_norm * np.sqrt((K - 1) / K)
    zbar = a * M + (shift + bias) * np.ones((K, K))
    probs = softmax(zbar[:, 0])
    mu1, mu2 = sr.logit_curvatures(loss, K, a, delta=delta, gamma=gamma, mse_kappa=mse_kappa)
    spectra = None
    kappa_W = kappa_H = float("nan")
    if not nonnegative and shift == 0.0:
        spectra = curvature_spectrum(K, n, d, a=a, lam_W=lam_W, lam_H=lam_H, mu1=mu1, mu2=mu2, centred_loss=centred)
        if a > 0:
            kappa_W, kappa_H = spectra.W.condition_number(), spectra.H.condition_number()
    return Prediction(
        loss,
        K,
        n,
        d,
        lam_W,
        lam_H,
        lam_b,
        delta,
        gamma,
        mse_kappa,
        mse_beta,
        bool(nonnegative),
        float(a),
        a == 0.0,
        zbar,
        float(bias),
        float(shift),
        float(probs[0]),
        float(probs[1]),
        float(w_norm),
        float(h_norm),
        float(class_mean_norm),
        mu1,
        mu2,
        spectra,
        kappa_W,
        kappa_H,
    )


def nonnegative_boundary(K, n, *, lam_W, lam_H) -> dict:
    """Largest delta with a non-zero LS minimizer under H >= 0 (ours) and Nguyen et al.'s Thm 3.2 condition.

    Ours: ``p_t(0) = 1/K < y_t - r`` with ``r = sqrt(K (K-1) n lam_W lam_H)``, i.e.
    ``delta < 1 - K r / (K-1)``. Theirs (mapped, module docstring):
    ``delta < K (1 - sqrt((K-1) n lam_W lam_H)) / (K-1)``.
    """
    r = sr.regularization_slope(K, n, lam_W=lam_W, lam_H=lam_H, nonnegative=True)  # validates K, n, lam_W, lam_H
    K = int(K)
    ratio = K / (K - 1)  # formed first: K * r alone overflows for huge K (K = 1e150, r ~ 1e158)
    theirs = (1.0 - r / np.sqrt(float(K))) * ratio  # sqrt((K-1) n lam_W lam_H) = r / sqrt(K)
    return {"delta_star_ours": float(1.0 - r * ratio), "delta_star_nguyen": float(theirs)}
