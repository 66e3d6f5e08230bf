"""The minority-collapse threshold R* of the imbalanced UFM, two groups of classes, in closed form.

Setting (as in ``experiments/imbalance.py``): ``K_A`` majority classes of ``n_A`` samples and ``K_B >= 2``
minority classes of ``n_B = n_A / R`` samples (``R >= 1``, any real), cross entropy or label smoothing
``delta``, ``d >= K = K_A + K_B``, the class-mean objective of ``ufm/solver.py`` (``N = K_A n_A + K_B n_B``)

    L_red(W, Hbar, b) = sum_k (n_k/N) loss(W^T hbar_k + b, k) + lam_W/2 ||W||^2
                        + sum_k n_k lam_H/2 ||hbar_k||^2 + lam_b/2 ||b||^2,

``W: (d, K)``, ``Hbar: (d, K)`` (column k: the mean of class k), ``b: (K,)``. Minority collapse: the
minority classifiers ``w_k`` (k in B) all equal. The experiment's normalization is ``n_A = 1``,
``lam_W = lam_H = lam_b = lam``.

Derivation (ours; Hong & Ling, JMLR 2024, state that a sharp threshold exists).

1. Convex reformulation. Write ``D = diag(sqrt(n_k))`` and ``Z = W^T Hbar`` (K x K, row l = classifier l,
   column k = class k). With ``Htilde = Hbar D``, ``W^T Htilde = Z D`` and the feature penalty is
   ``lam_H/2 ||Htilde||^2``. For any matrix M and a, c > 0,
   ``min {(a ||W||^2 + c ||Htilde||^2)/2 : W^T Htilde = M} = sqrt(a c) ||M||_*`` (the variational form
   of the nuclear norm; attained by ``W = alpha S^(1/2) U^T``, ``Htilde = S^(1/2) V^T / alpha``,
   ``alpha^4 = c/a``, from the SVD ``M = U S V^T``, whenever ``d >= rank M``). So for ``d >= K``
   ``min L_red = min over (Z, b) of F``,

       F(Z, b) = sum_k (n_k/N) loss(z_k + b, k) + mu ||Z D||_* + lam_b/2 ||b||^2,   mu = sqrt(lam_W lam_H),

   a convex problem (``ufm/convex.py`` solves it). At every minimizer the factorization is the one
   above, so ``W^T W = alpha^2 U S U^T`` with ``Z D = U S V^T``: ``w_k = w_l`` iff rows k and l of
   ``Z D`` (equivalently of Z) are equal.
2. Symmetry. F is invariant under permuting the classes within A and within B (rows, columns of Z and
   entries of b together); F is convex, so averaging any minimizer over these permutations gives a
   minimizer, and a symmetric point is a global minimizer iff it minimizes F over the symmetric
   points. A symmetric Z has ``Z_AA = a_2 11^T + x I``, ``Z_BB = beta_2 11^T + y I``, ``Z_AB = c 11^T``,
   ``Z_BA = e 11^T``, ``b = (b_A 1, b_B 1)``. The minority rows of Z are equal iff ``y = 0``.
3. Spectrum. Z maps the A-centred vectors (support A, sum 0) to ``x`` times themselves, the B-centred
   ones to ``y`` times themselves, and span{1_A, 1_B} to itself; so do Z^T and D (D is constant on each
   group). The singular values of ``Z D`` are ``|x| sqrt(n_A)`` (K_A - 1 times), ``|y| sqrt(n_B)``
   (K_B - 1 times) and those of a 2 x 2 matrix on span{1_A, 1_B} that involves ``m_B = beta_1 + (K_B-1)
   beta_2`` (the B-row sums, beta_1 = beta_2 + y) but not y. So F = (terms free of y)
   + ``mu (K_B - 1) sqrt(n_B) |y|`` + ``(K_B n_B / N) loss_B(y)``, with the other variables held fixed.
4. The loss of a minority class at fixed ``m_B``: own logit ``beta_1 = (m_B + (K_B-1) y)/K_B``, the other
   K_B - 1 minority logits ``beta_2 = (m_B - y)/K_B``, the majority logits ``c``. Its gradient in the logits is
   ``p - y^delta`` (softmax minus the smoothed label ``(1 - delta) e_k + delta/K``), so
   ``d loss_B / dy = (K_B-1)/K_B [(p_own - p_other) - (1 - delta)]``. At ``y = 0`` the K_B minority
   logits are equal, ``p_own = p_other``, and ``d loss_B / dy = -(1 - delta)(K_B - 1)/K_B``: a constant,
   free of every other variable (:func:`symbolic_slope` checks it with sympy).
5. Optimality of ``y = 0``. F is convex in y with a kink only at 0, so ``y = 0`` at the minimizer iff
   ``0`` is in the subdifferential there: ``(K_B n_B/N)(1 - delta)(K_B - 1)/K_B <= mu (K_B - 1) sqrt(n_B)``,

       (1 - delta) sqrt(n_B) <= mu N = mu (K_A n_A + K_B n_B).

   With ``n_B = n_A / R`` and ``t = sqrt(R)``: collapse iff ``K_A t + K_B / t >= kappa``, where
   ``kappa = (1 - delta) / (mu sqrt(n_A))``. Neither ``lam_b`` nor ``d`` (>= K) enters.
6. Threshold. ``K_A t^2 - kappa t + K_B = 0`` has the roots ``t_pm = (kappa pm sqrt(kappa^2 - 4 K_A K_B))
   / (2 K_A)``; for ``t`` between them the minority classifiers are apart, outside they are equal.
   So ``R* = t_+^2`` (experiment: ``n_A = 1``, ``mu = lam``, ``delta = 0``)

       sqrt(R*) = (1/lam + sqrt(1/lam^2 - 4 K_A K_B)) / (2 K_A),

   e.g. ``K_A = K_B = 2``: ``sqrt(R*) + 1/sqrt(R*) = 1/(2 lam)``, R* = 4, 9, 49 at lam = 0.2, 0.15, 0.07
   (t = 2, 3, 7) and R* = ((5 + sqrt 21)/2)^2 = 22.956 at lam = 0.1.

Edge cases (R >= 1): if ``kappa^2 < 4 K_A K_B`` or ``t_+ <= 1`` the minority classifiers are equal at
every R >= 1 and R* = 1 is returned. If ``t_- > 1`` (possible only for K_B > K_A) they are also equal on
``1 <= R <= t_-^2``; there ``mu sqrt(n_A) (K_A + K_B) >= 1 - delta``, the balanced problem at R = 1 is past
its phase boundary (W = H = 0), and "equal" includes W = 0. The result is the threshold above which the
minority classifiers are equal; below it (and above ``t_-^2``) they are apart. For d < K the
reformulation is a relaxation (it drops rank Z <= d) and the formula is not claimed.
"""

from __future__ import annotations

import math

from theory import validation


def _groups_and_kappa(K_A, K_B, lam, n_A, lam_W, lam_H, delta) -> tuple[int, int, float]:
    """Checked ``K_A >= 1``, ``K_B >= 2`` and ``kappa = (1 - delta) / (sqrt(lam_W lam_H) sqrt(n_A))``
    (``lam_W``, ``lam_H`` default to ``lam``)."""
    K_A = validation.integer("K_A", K_A, 1, float64=True)
    K_B = validation.integer("K_B", K_B, 2, float64=True)
    lam = validation.positive_scalar("lam", lam)
    n_A = validation.positive_scalar("n_A", n_A)
    lam_W = lam if lam_W is None else validation.positive_scalar("lam_W", lam_W)
    lam_H = lam if lam_H is None else validation.positive_scalar("lam_H", lam_H)
    delta = validation.delta(delta)
    if not isinstance(delta, float):
        raise ValueError(f"delta must be a single number in [0, 1), got {validation.describe(delta)}")
    return K_A, K_B, (1.0 - delta) / (math.sqrt(lam_W * lam_H) * math.sqrt(n_A))


def minority_collapse_threshold(
    K_A,
    K_B,
    lam,
    *,
    n_A=1.0,
    lam_W=None,
    lam_H=None,
    lam_b=None,
    delta=0.0,
) -> float:
    """R* of minority collapse (module docstring, step 6): the minority classifiers are equal for R >= R*.

    ``K_A >= 1`` majority classes of ``n_A`` samples, ``K_B >= 2`` minority classes of ``n_A / R``;
    ``lam_W = lam_H = lam_b = lam`` unless given (``lam_b`` is validated but does not enter). With
    ``mu = sqrt(lam_W lam_H)`` and ``kappa = (1 - delta) / (mu sqrt(n_A))``:
    ``sqrt(R*) = (kappa + sqrt(kappa^2 - 4 K_A K_B)) / (2 K_A)``, or 1.0 when that is not above 1 or not
    real (equal at every R >= 1). Returns a float >= 1. Valid for d >= K_A + K_B, CE (``delta = 0``) and
    label smoothing ``0 <= delta < 1``.
    """
    K_A, K_B, kappa = _groups_and_kappa(K_A, K_B, lam, n_A, lam_W, lam_H, delta)
    if lam_b is not None:
        validation.positive_scalar("lam_b", lam_b)
    discriminant = kappa * kappa - 4.0 * K_A * K_B
    if discriminant < 0.0:
        return 1.0
    # the larger root without cancellation: t_+ = (kappa + sqrt(disc)) / (2 K_A)
    t_plus = (kappa + math.sqrt(discriminant)) / (2.0 * K_A)
    return max(t_plus * t_plus, 1.0)


def collapse_margin(K_A, K_B, *, R, lam, n_A=1.0, lam_W=None, lam_H=None, delta=0.0) -> float:
    """``(K_A sqrt(R) + K_B / sqrt(R)) / kappa - 1`` (module docstring, step 5): >= 0 iff the
    minority classifiers are equal at ratio ``R > 0`` (d >= K). Same parameters as
    :func:`minority_collapse_threshold`."""
    K_A, K_B, kappa = _groups_and_kappa(K_A, K_B, lam, n_A, lam_W, lam_H, delta)
    t = math.sqrt(validation.positive_scalar("R", R))
    return (K_A * t + K_B / t) / kappa - 1.0


def symbolic_slope():
    """sympy: ``d loss_B / dy`` at ``y = 0`` (module docstring, step 4), built from the softmax with the
    minority logits ``(m_B + (K_B - 1) y)/K_B`` (own), ``(m_B - y)/K_B`` (the K_B - 1 others) and the
    majority logits ``c`` (K_A of them), bias ``(b_A, b_B)``; simplified it is
    ``-(1 - delta)(K_B - 1)/K_B``, free of ``m_B, c, b_A, b_B``. Returns the sympy expression."""
    import sympy as sp  # imported here: ``import theory`` stays free of sympy

    K_A, K_B, delta, m, y, c, b_A, b_B = sp.symbols("K_A K_B delta m_B y c b_A b_B", positive=True)
    K = K_A + K_B
    own = (m + (K_B - 1) * y) / K_B + b_B
    other = (m - y) / K_B + b_B
    major = c + b_A
    log_partition = sp.log(sp.exp(own) + (K_B - 1) * sp.exp(other) + K_A * sp.exp(major))
    target = (1 - delta + delta / K) * own + (delta / K) * ((K_B - 1) * other + K_A * major)
    slope = sp.diff(log_partition - target, y).subs(y, 0)
    return sp.simplify(slope)
