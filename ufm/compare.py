"""Where the two paths meet: theory's predictions next to the solver's measurements.

``compare(result)`` builds one :class:`Comparison`: rows of
(quantity, theory, measured, error, tolerance, applies). It is the single place
where a predicted number and a measured number are put side by side; the CLI,
the experiments and the tests all read it.

Each row has a stable ``key`` besides its display name (``comparison["kappa_W"].measured``;
``comparison.keys()``; ``comparison.to_records()`` for a data frame): :data:`ROW_KEYS` lists them.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import theory
from theory import validation
from theory.softmax import softmax
from ufm import generalized, hessian, metrics
from ufm._compile import stored_jit
from ufm._format import format_input as format_input  # re-exported: the CLI's import
from ufm._format import format_number
from ufm.methods import method_spec
from ufm.objective import Params, Weights
from ufm.results import Result

DEFAULT_RTOL = 1e-6
#: largest W block (rows, dK) whose eigenvalues :func:`compare` computes without merging nearly equal ones
#: (``cluster_rtol=0``: exact, an ``rK x rK`` eigendecomposition, r = rank H); larger W blocks merge within
#: ``rtol / 10`` (the shift stays below the comparison's tolerance, see :func:`ufm.hessian.block_spectrum`).
#: H blocks are never merged (their structured path is K x K per distinct column)
COMPARE_UNMERGED_SIZE = 500


@dataclass(frozen=True)
class Row:
    """One compared quantity.

    ``quantity`` is the name shown in the table, ``key`` the name to look it up by
    (:meth:`Comparison.__getitem__`, :data:`ROW_KEYS`). ``error`` is relative
    (``|measured - theory| / |theory|``) when ``relative`` else absolute; the row passes
    when it does not apply or ``error <= tolerance``. ``error`` is None when the two sides
    cannot be compared (e.g. different numbers of distinct eigenvalues); an applicable row
    then fails. ``theory`` or ``measured`` is None where the value does not exist (NC1-NC3
    and kappa at the zero minimizer past the phase boundary, a kappa that is not derived);
    ``undefined`` then says why, and the table shows it in their place.
    """

    quantity: str
    theory: float | None
    measured: float | None
    error: float | None
    relative: bool
    tolerance: float
    applies: bool
    note: str = ""
    key: str = ""
    undefined: str = ""

    @property
    def ok(self) -> bool:
        return (not self.applies) or (self.error is not None and self.error <= self.tolerance)


@dataclass(frozen=True)
class Comparison:
    """All rows, the spectra side by side, and why a prediction does not apply (if so); ``numerical``: for
    d < K, the numerical optimum (:class:`ufm.generalized.GeneralizedPrediction`) the rows were compared with."""

    rows: tuple[Row, ...]
    converged: bool
    not_applicable: tuple[str, ...] = ()
    spectra: dict = field(default_factory=dict)
    numerical: generalized.GeneralizedPrediction | None = None
    #: why a run whose stopping rule was met did not locate the minimizer to ``rtol`` ("" when it did or when the
    #: check does not apply): ``converged`` is then False (:func:`stationarity`)
    unlocated: str = ""

    @property
    def failures(self) -> tuple[Row, ...]:
        return tuple(row for row in self.rows if not row.ok)

    @property
    def ok(self) -> bool:
        return self.converged and not self.failures

    @property
    def verified(self) -> bool:
        """Whether any row was judged: False when no prediction applies (see ``not_applicable``);
        ``ok`` is then vacuous and verifies nothing."""
        return any(row.applies for row in self.rows)

    def __getitem__(self, key: str) -> Row:
        """The row with this ``key`` (:data:`ROW_KEYS`): ``comparison["kappa_W"].measured``."""
        for row in self.rows:
            if row.key == key:
                return row
        raise KeyError(f"no row {key!r} in this comparison; its rows: {', '.join(self.keys())}")

    def __contains__(self, key: object) -> bool:
        return any(row.key == key for row in self.rows)

    def keys(self) -> tuple[str, ...]:
        """The keys of the rows, in table order (``dict(comparison)`` maps them to the rows)."""
        return tuple(row.key for row in self.rows)

    def to_records(self) -> list[dict]:
        """One plain dict per row, in table order, for ``pandas.DataFrame(comparison.to_records())`` or JSON:
        ``quantity``, ``theory``, ``measured``, ``error``, ``relative``, ``tolerance``, ``applies``, ``ok``,
        ``note``, ``key``, ``undefined`` (values as in :class:`Row`; None where a value does not exist)."""
        fields = ("quantity", "theory", "measured", "error", "relative", "tolerance", "applies", "ok", "note")
        return [
            {**{name: getattr(row, name) for name in fields}, "key": row.key, "undefined": row.undefined}
            for row in self.rows
        ]

    def table_rows(self) -> list[tuple[str, str, str, str, str]]:
        """``(quantity, theory, measured, error, check)`` as text, one tuple per row (see :data:`LEGEND`)."""
        out = []
        for row in self.rows:
            error = "-" if row.error is None else f"{row.error:.2e} {'rel' if row.relative else 'abs'}"
            check = ("ok" if row.ok else "MISMATCH") if row.applies else "n/a"
            theory, measured = (
                row.undefined if value is None and row.undefined else format_number(value)
                for value in (row.theory, row.measured)
            )
            out.append((row.quantity, theory, measured, error, check))
        return out

    def table(self) -> str:
        """The rows as a fixed-width table under a header (quantity left, the rest right-aligned), no legend."""
        body = self.table_rows()
        widths = [max(len(r[j]) for r in (TABLE_HEADER, *body)) for j in range(5)]
        line = lambda r: "  ".join(
            c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        return "\n".join([line(TABLE_HEADER), *(line(r) for r in body)])

    def __str__(self) -> str:
        """The comparison as a fixed-width table with its legend and the reasons a prediction does not apply."""
        lines = [self.table(), LEGEND]
        lines += [f"does not apply: {reason}" for reason in self.not_applicable]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        """The same table for notebooks."""
        cells = lambda r, tag: "".join(f"<{tag}>{html.escape(c)}</{tag}>" for c in r)
        head = cells(TABLE_HEADER, "th")
        body = "".join(f"<tr>{cells(r, 'td')}</tr>" for r in self.table_rows())
        notes = "".join(f"<br>does not apply: {html.escape(reason)}" for reason in self.not_applicable)
        return (
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
            f"<small>{html.escape(LEGEND)}{notes}</small>"
        )


#: the column titles of :meth:`Comparison.table` (the solver's value is the measured one)
TABLE_HEADER = ("quantity", "theory", "solver", "error", "check")

#: what the error column means (printed under every comparison table)
LEGEND = (
    "error: rel = |solver - theory| / |theory|, abs = |solver - theory|; "
    "check: ok = error <= tolerance, n/a = prediction does not apply; numbers to 10 significant digits"
)


def stationarity(result: Result) -> float:
    """``|grad L(x)| / (min(lam_W, lam_H) |(W, H)|)`` at the solver's point x: an estimate of its distance from
    the minimizer x* relative to |x|.

    At x* the loss gradient balances the regularization (grad loss = -lam x, eq. 10), and along the directions
    the loss does not see (how the logits factor into W and H) the curvature of L is the lam of that block; so
    ``|x - x*| ~ |grad L| / lam`` there. The solver's stopping rule ``|grad L| <= tol |grad L(x0)|`` does not
    involve lam: for a small lam (about 1e-7 and below with the default tol; any lam at 1e-300) it is met far
    from x*, with a gradient that float64 cannot reduce further. The norms are formed scaled (no underflow of
    ``lam^2 |x|^2`` at lam = 1e-300). inf when x = 0.
    """
    p = result.problem
    blocks = [np.abs(np.asarray(block, dtype=np.float64)) for block in (result.W, result.H)]
    largest = max(float(block.max(initial=0.0)) for block in blocks)
    if largest == 0.0:
        return float("inf")
    size = largest * float(np.sqrt(sum(np.sum((block / largest) ** 2) for block in blocks)))
    return float(result.grad_norm / min(p.lam_W, p.lam_H) / size)


def _relative(quantity, predicted, measured, rtol, applies, note="", key=""):
    predicted, measured = float(predicted), float(measured)
    error = abs(measured - predicted) / abs(predicted) if predicted != 0 else abs(measured - predicted)
    return Row(quantity, predicted, measured, error, predicted != 0, rtol, applies, note, key)


def _absolute(quantity, predicted, measured, tol, applies, note="", key=""):
    return Row(
        quantity,
        float(predicted),
        float(measured),
        abs(float(measured) - float(predicted)),
        False,
        tol,
        applies,
        note,
        key,
    )


#: class means as one compiled program, kept in the program store (one compilation or store read, instead of
#: several small eager ones; metrics.collapse is compiled itself); K is static
_class_means = stored_jit(metrics.class_means, static_argnames="K")


def measured_probabilities(result: Result) -> tuple[float, float]:
    """``(p_t, p_n)`` measured at the solver's point: the softmax of each sample's logits, on its own class and
    on each other class (mean over the K - 1), averaged over the samples. Also the p_t column of ``ufm.sweep``.
    The logits are formed for at most 2^22 / K samples at a time (no K x N matrix for many classes)."""
    problem = result.problem
    labels = np.asarray(problem.labels())
    step = max(1, (1 << 22) // problem.K)
    target = np.empty(problem.N)
    for start in range(0, problem.N, step):
        Z = result.W.T @ result.H[:, start : start + step] + result.b[:, None]
        p = softmax(Z, axis=0)  # over the classes, in numpy (nothing to compile)
        target[start : start + step] = p[labels[start : start + step], np.arange(Z.shape[1])]
    p_n = (1.0 - target) / (problem.K - 1)  # mean over the K - 1 non-target classes
    return float(np.mean(target)), float(np.mean(p_n))


def predicted_p_t_kappa(problem) -> tuple[float, float]:
    """Theory's ``(p_t, kappa)`` for a ce/ls :class:`~ufm.problem.Problem` with d >= K (Guo et al. eq. 14,
    Thm 4.2: kappa = K p_t, 1 for K = 2), from scalars only (any K); ``(nan, nan)`` where no closed form applies
    (d < K, another loss, H >= 0, label noise, unequal classes) and kappa nan past the phase boundary. The
    theory columns of ``ufm.sweep``."""
    nan = float("nan")
    if _reasons(problem) or problem.loss_spec.closed_form != "guo" or problem.nonnegative:
        return nan, nan
    K, n, delta, lam_W, lam_H = problem.K, problem.n, problem.delta, problem.lam_W, problem.lam_H
    p_t = float(theory.probabilities(K, n, delta=delta, lam_W=lam_W, lam_H=lam_H)[0])
    kappa = float(theory.condition_number(K, delta, lam_W, n=n, lam_H=lam_H, beyond_boundary="nan"))
    return p_t, kappa


def predict(problem) -> theory.Prediction:
    """Theory's :class:`theory.Prediction` for a :class:`~ufm.problem.Problem` (d >= K)."""
    return theory.predict(
        problem.K,
        problem.n,
        max(problem.d, problem.K),
        lam_W=problem.lam_W,
        lam_H=problem.lam_H,
        lam_b=problem.lam_b,
        loss=problem.loss,
        delta=problem.delta,
        gamma=problem.gamma,
        mse_kappa=problem.mse_kappa,
        mse_beta=problem.mse_beta,
        nonnegative=problem.nonnegative and problem.loss_spec.softmax,
    )


def _reasons(p) -> list[str]:
    reasons = []
    if p.d < p.K:
        reasons.append(
            f"d = {p.d} < K = {p.K}: the theorems need d >= K (no simplex ETF in R^d, no closed form)"
            + ("; compared with the numerical UFM optimum instead" if generalized_applies(p) else "")
        )
    if p.label_noise > 0:
        reasons.append(f"label_noise = {p.label_noise:g}: the theorems assume clean, balanced labels")
    if p.nonnegative and not p.loss_spec.softmax:
        reasons.append(f"nonnegative features with loss {p.loss!r}: no prediction derived")
    if not p.balanced:
        reasons.append(
            f"imbalanced classes (class_sizes = {p.class_sizes}): the closed forms assume n samples "
            "in every class; compared with the numerical optimum instead where it is exact"
        )
    return reasons


def generalized_applies(p) -> bool:
    """Whether the d < K rows (:func:`_generalized_rows`) can be computed: the class-mean reduction is exact
    (ce/ls/mse, free features, clean labels) and JAX computes in float64 (the restarts need it)."""
    from ufm.solver import check_method_fits

    try:
        check_method_fits(p, "reduced")
    except ValueError:
        return False
    # jax.config's flags are dynamic attributes, absent from its type stubs
    return bool(jax.config.jax_enable_x64)  # type: ignore[attr-defined]


#: the rows of the d < K comparison: quantity of :func:`ufm.generalized.gnc_metrics` -> its name in the table
GENERALIZED_ROWS = {
    "objective": "objective L",
    "w_norm": "mean ||w_k||",
    "h_norm": "mean ||hbar_k - h_G||",
    "logit_norm": "logits ||W^T Hbar + b||_F",
    "p_t": "p_t",
    "p_n": "p_n",
    "b_sorted": "max |sorted b - sorted b_opt|",
    "null_classes": "null classes (bias only)",
    "margin": "min one-vs-rest margin (GNC)",
    "logit_margin": "min logit margin",
    "gnc2_H": "Riesz energy, class means (GNC2)",
    "gnc2_W": "Riesz energy, classifiers (GNC2)",
    "alignment": "mean cos(w_k, hbar_k - h_G) (GNC3)",
}


#: the key of each row :func:`compare` can give (``comparison[key]``), with the quantity it names
ROW_KEYS = {
    "w_norm": "mean ||w_k||",
    "h_norm": "mean ||hbar_k - h_G||",
    "logits": "logits W^T Hbar + b (Frobenius; max abs past the phase boundary)",
    "p_t": "p_t, mean predicted probability of the true class",
    "p_n": "p_n, mean predicted probability of each other class",
    "nc1": "NC1",
    "nc2": "NC2",
    "nc3": "NC3",
    "bias": "max |b_k - b_pred|",
    "class_mean_norm": "mean ||hbar_k|| (uncentred; H >= 0)",
    "frame_defect": "orthogonal-frame defect (H >= 0)",
    "mean_ratio": "||h_G|| / mean ||hbar_k|| (H >= 0)",
    "min_H": "min H (>= 0)",
    "kappa_W": "kappa_W (loss block): largest / smallest non-zero eigenvalue of the W block of the loss term",
    "W_eigenvalues": "W-block eigenvalues (all, with multiplicities; largest shown)",
    "kappa_H": "kappa_H (loss block), the same for the H block",
    "H_eigenvalues": "H-block eigenvalues (all, with multiplicities; largest shown)",
    "nc1_any_sizes": "NC1 (any class sizes; imbalanced classes)",
    # d < K: against the numerical optimum; imbalanced classes: w_norm, h_norm, logits, objective likewise
    **{f"numerical_{name}": f"{label} [numerical] or (numerical)" for name, label in GENERALIZED_ROWS.items()},
    "numerical_logits": "logits W^T hbar_k + b (numerical; imbalanced classes)",
}


def _shown(value) -> float:
    """A measured quantity as one number of the table: ``b_sorted`` by its largest magnitude."""
    return float(np.max(np.abs(value))) if np.ndim(value) else float(value)


def _generalized_rows(result: Result, prediction: generalized.GeneralizedPrediction, rtol: float) -> list[Row]:
    """d < K: the result against the numerical optimum (best of the restarts), quantity by quantity
    (``GENERALIZED_ROWS``; all invariant under rotations and relabelling of the classes). Tolerance of a row:
    ``rtol`` plus the spread of the quantity over the restarts that reached the best L within ``rtol`` (equally
    good minimizers lie that far apart in it). Judged when the best restart converged; the directional rows
    (``ufm.generalized.GEOMETRY``) not at the zero minimizer."""
    p = result.problem
    sizes = np.asarray(p.class_sizes if p.class_sizes is not None else (p.n,) * p.K, np.float64)
    means = np.asarray(_class_means(result.H, p.labels(), p.K))
    measured = generalized.gnc_metrics(result.W, means, result.b, sizes)
    best = prediction.metrics
    restarts = (
        f"numerical UFM optimum, best of {prediction.restarts} restarts ({len(prediction.agreeing)} within rtol "
        "of the best L); no closed form for d < K"
    )
    spread = prediction.spread
    measured["objective"], best = result.objective, {**best, "objective": prediction.objective}
    rows = []
    for name, label in GENERALIZED_ROWS.items():
        error, relative = generalized.deviation(name, measured[name], best[name])
        undefined = name in generalized.GEOMETRY and (prediction.zero or not np.isfinite(best[name]))
        rows.append(
            Row(
                f"{label} [numerical]",
                _shown(best[name]),
                _shown(measured[name]),
                error if np.isfinite(error) else None,
                relative,
                rtol + spread[name],
                prediction.converged and not undefined,
                f"{restarts}; tolerance = rtol + restart spread {spread[name]:.2e}",
                f"numerical_{name}",
            )
        )
    return rows


#: Largest d N for which an imbalanced ``"reduced"`` result is checked against full-problem L-BFGS
_FULL_REFERENCE_SIZE = 200_000


def _numerical_rows(result: Result, rtol: float) -> list[Row]:
    """Imbalanced classes: the result against an independent numerical optimum of the same problem
    (``"reduced"`` for a full-problem result; full ``"lbfgs"`` for a ``"reduced"`` one while d N is at most
    ``_FULL_REFERENCE_SIZE``), plus NC1 = 0, which holds at every minimizer for any class sizes (solver
    module docstring). Only for ce/ls/mse with free features and clean labels, where the minimizer's
    norms, logits and L are unique; otherwise no rows."""
    from ufm.solver import check_method_fits, solve

    p = result.problem
    try:
        check_method_fits(p, "reduced")
    except ValueError:
        return []
    labels = p.labels()
    nc = metrics.collapse(result.W, result.H, labels, p.K)
    rows = [
        _absolute(
            "NC1 (any class sizes)", 0.0, nc.nc1, rtol, True, "every minimizer is class-collapsed", "nc1_any_sizes"
        )
    ]
    if not method_spec(result.method).class_means:
        reference = solve(p, "reduced", tol=1e-12, history=False)
    elif p.d * p.N <= _FULL_REFERENCE_SIZE:
        reference = solve(p, "lbfgs", tol=1e-12, max_iters=20_000, history=False)
    else:
        return rows
    note = f"numerical optimum ({reference.method}, {reference.status}), not a closed form"
    ref = metrics.collapse(reference.W, reference.H, labels, p.K)
    logits = lambda r: r.W.T @ np.asarray(_class_means(r.H, labels, p.K)) + r.b[:, None]
    Z, Z_ref = logits(result), logits(reference)
    scale = float(np.linalg.norm(Z_ref)) or 1.0  # W = H = 0 past the phase boundary: absolute
    rows += [
        _relative(
            "mean ||w_k|| (numerical)", ref.w_norm, nc.w_norm, rtol, reference.converged, note, "numerical_w_norm"
        ),
        _relative(
            "mean ||hbar_k - h_G|| (numerical)",
            ref.h_norm,
            nc.h_norm,
            rtol,
            reference.converged,
            note,
            "numerical_h_norm",
        ),
        Row(
            "logits W^T hbar_k + b (numerical)",
            float(np.linalg.norm(Z_ref)),
            float(np.linalg.norm(Z)),
            float(np.linalg.norm(Z - Z_ref) / scale),
            True,
            rtol,
            reference.converged,
            "error = ||Z - Zref||_F / ||Zref||_F; " + note,
            "numerical_logits",
        ),
        _relative(
            "objective L (numerical)",
            reference.objective,
            result.objective,
            rtol,
            reference.converged,
            note,
            "numerical_objective",
        ),
    ]
    return rows


#: what the table shows for NC1-NC3 and kappa past the phase boundary (:func:`_at_zero`)
AT_ZERO = "undefined (at W = H = 0)"


def _at_zero(quantity: str, key: str, measured, solver_zero: bool, rtol: float, note: str = "") -> Row:
    """A row of NC1-NC3 or kappa past the phase boundary: undefined at the zero minimizer, and the measured
    value too where the solver reached that zero (``solver_zero``: its directions are rounding noise)."""
    shown = None if solver_zero or measured is None else float(measured)
    why = "W = H = 0 at the minimizer past the phase boundary: no directions, no non-zero eigenvalues"
    return Row(quantity, None, shown, None, False, rtol, False, f"{why}; {note}" if note else why, key, AT_ZERO)


def orthogonal_frame_metrics(H, labels, K: int) -> dict:
    """What separates an orthogonal frame (H >= 0, Nguyen et al. Def. 3.1) from a simplex ETF.

    ``frame_defect = || G/||G||_F - I/sqrt(K) ||_F`` with ``G`` the Gram matrix of the
    *uncentred* class means (0 for an equal-norm orthogonal frame; ``sqrt(2 - 2 sqrt((K-1)/K))``
    for a simplex ETF, ``G ~ M``), ``mean_ratio = ||h_G|| / mean ||hbar_k||``
    (``1/sqrt(K)`` for an orthogonal frame, 0 for an ETF) and ``min_H``.
    """
    means = np.asarray(metrics.class_means(H, labels, K))
    gram = means.T @ means
    scale = np.linalg.norm(gram)
    defect = np.linalg.norm(gram / scale - np.eye(K) / np.sqrt(K)) if scale > 0 else float("nan")
    ratio = np.linalg.norm(np.asarray(H).mean(axis=1)) / np.mean(np.linalg.norm(means, axis=0))
    return {"frame_defect": float(defect), "mean_ratio": float(ratio), "min_H": float(np.min(H))}


def _frame_rows(result: Result, prediction, means, rtol: float, inside: bool, general: bool) -> list[Row]:
    """The rows of H >= 0 (Nguyen et al. Thm 3.2): the uncentred class-mean norm, the orthogonal-frame defect,
    ``||h_G|| / mean ||hbar_k||`` and the feasibility ``min H >= 0``."""
    K = result.problem.K
    frame = orthogonal_frame_metrics(result.H, result.problem.labels(), K)
    return [
        _relative(
            "mean ||hbar_k|| (uncentred)",
            prediction.class_mean_norm,
            float(np.mean(np.linalg.norm(means, axis=0))),
            rtol,
            inside,
            key="class_mean_norm",
        ),
        _absolute(
            "orthogonal-frame defect",
            0.0,
            frame["frame_defect"],
            rtol,
            inside,
            "|| G/||G|| - I/sqrt(K) ||_F, G = Gram of uncentred class means",
            "frame_defect",
        ),
        _relative(
            "||h_G|| / mean ||hbar_k||",
            1.0 / np.sqrt(K),
            frame["mean_ratio"],
            rtol,
            inside,
            "1/sqrt(K) for an orthogonal frame, 0 for an ETF",
            "mean_ratio",
        ),
        # judged where a prediction applies: a feasibility check alone verifies no theory
        _absolute("min H (>= 0)", 0.0, max(0.0, -frame["min_H"]), 0.0, general, "error = max(0, -min H)", "min_H"),
    ]


class _Judged(NamedTuple):
    """What :func:`compare` decided before the spectra: theory applies (``general``), the minimizer is inside
    the phase boundary (``inside``), it is zero (``zero``) and the solver reached that zero (``solver_zero``)."""

    general: bool
    inside: bool
    zero: bool
    solver_zero: bool
    rtol: float


def _spectrum_rows(result: Result, prediction, block: str, judged: _Judged) -> tuple[list[Row], dict]:
    """The rows (kappa, eigenvalues) and the spectrum record of one loss block (``"W"`` or ``"H"``) of ``result``
    against ``prediction``."""
    p, labels, rtol = result.problem, result.problem.labels(), judged.rtol
    general, inside, zero, solver_zero = judged.general, judged.inside, judged.zero, judged.solver_zero
    predicted = prediction.spectra if general else None
    kappas = {"W": prediction.kappa_W, "H": prediction.kappa_H}
    # Spectra in float64 whenever JAX allows it, also at a float32 solution: the
    # zero threshold (1e-8 of the largest) needs float64 rounding in the Hessian.
    # jax.config's flags are dynamic attributes, absent from its type stubs
    if jax.config.jax_enable_x64:  # type: ignore[attr-defined]
        point = Params(*(jnp.asarray(x, jnp.float64) for x in (result.W, result.H, result.b)))
        weights = Weights(*(jnp.asarray(x, jnp.float64) for x in p.weights()))
    else:
        point, weights = result.params, p.weights()
    rows: list[Row] = []
    # values with multiplicities (never the dN eigenvalues listed one by one); intermediate eigenvalues
    # within rtol / 10 merged (shift <= error_bound, below rtol): a solution converged to tol = 1e-10
    # spreads the clusters of Theorem 4.2 by ~1e-8, and unmerged they make the deflated W block rK x rK
    # (48 GiB at K = 200) instead of <= 2K x 2K; memory checked by block_spectrum
    # the structured path for both blocks, at any size: exact at any point (tests/test_hessian.py holds it
    # against jax.hessian); for CE and LS cheaper even for small blocks (the README's W block, 100 rows: a few
    # ms where jax.hessian's 100 products over N = 5000 take 45-65 ms, a fifth of the warm command line above
    # JAX; an H block of dN = 5000 about 0.1 s against 2 s); focal and MSE (per-sample path) about as before
    merged = block == "W" and point.W.size > COMPARE_UNMERGED_SIZE
    measured = hessian.block_spectrum(
        point,
        labels,
        weights,
        block,
        method="structured",
        cluster_rtol=min(rtol / 10, 1e-6) if merged else 0.0,
    )
    kappa_meas: float | None = hessian.nonzero_condition_number(measured.values[measured.counts > 0])
    if solver_zero:  # a ratio of eigenvalues of a block that is 0 up to the solver's tolerance
        kappa_meas = None
    # clusters: eigenvalues closer than rtol x the largest count as one distinct value
    values, counts = measured.distinct(rtol)
    name, key, note = (
        f"kappa_{block} (loss block)",
        f"kappa_{block}",
        "non-zero eigenvalues above 1e-8 of the largest",
    )
    if zero:
        rows.append(_at_zero(name, key, kappa_meas, solver_zero, rtol, note))
    elif not np.isfinite(kappas[block]):  # no spectrum derived for this setting (e.g. H >= 0)
        rows.append(Row(name, None, kappa_meas, None, True, rtol, False, note, key, "not derived"))
    else:
        rows.append(_relative(name, kappas[block], kappa_meas, rtol, inside and predicted is not None, note, key))
    info = {
        "method": measured.method,
        "measured_values": values.tolist(),
        "measured_multiplicities": counts.tolist(),
        "condition_number": kappa_meas,
    }
    if predicted is not None:
        block_pred = getattr(predicted, block)
        info["predicted_values"] = block_pred.values.tolist()
        info["predicted_multiplicities"] = block_pred.multiplicities.tolist()
        if inside and len(values) == len(block_pred.values):
            scale = np.abs(block_pred.values).max()
            error = float(np.max(np.abs(values - block_pred.values)) / scale)
            match = counts.tolist() == block_pred.multiplicities.tolist()
            rows.append(
                Row(
                    f"{block}-block eigenvalues (all, with multiplicities; largest shown)",
                    float(scale),
                    float(np.abs(values).max()),
                    error if match else None,
                    True,
                    rtol,
                    True,
                    "max |measured - predicted| / largest; multiplicities "
                    + ("match" if match else f"differ: {counts.tolist()}"),
                    f"{block}_eigenvalues",
                )
            )
        elif inside:
            rows.append(
                Row(
                    f"{block}-block eigenvalues (number of distinct values)",
                    float(len(block_pred.values)),
                    float(len(values)),
                    None,
                    True,
                    rtol,
                    True,
                    "number of distinct eigenvalues differs (theory vs measured)",
                    f"{block}_eigenvalues",
                )
            )
    return rows, info


def compare(
    result: Result,
    *,
    rtol: float = DEFAULT_RTOL,
    spectra: bool = True,
    restarts: int = generalized.DEFAULT_RESTARTS,
    certify: bool = True,
) -> Comparison:
    """Compare a solver :class:`~ufm.solver.Result` with theory's prediction for its loss.

    CE/LS: Guo et al. Theorems 4.1, 4.2; FL: Zhou et al. Theorem 1 with the scale of the
    1-D reduction; MSE: :func:`theory.scalar_reduction.mse_optimum`; H >= 0: Nguyen et al.
    Theorem 3.2 (:mod:`theory.prediction`). Relative tolerance ``rtol`` for norms, logits,
    p_t, p_n and kappa; absolute ``rtol`` for NC1-NC3, the bias and (H >= 0) the
    orthogonal-frame defect. When the minimizer is zero the norms and logits are compared
    absolutely and NC metrics and kappa do not apply. For d < K, label noise, or H >= 0
    with MSE, theory's rows are shown but not judged. For d < K with ce/ls/mse, free features and clean
    labels (float64 JAX) the result is judged against the numerical UFM optimum instead: the best of
    ``restarts`` seeded restarts of the class-mean solve (:func:`ufm.generalized.generalized_prediction`,
    with its certificate gap unless ``certify=False``), in the rows of ``GENERALIZED_ROWS``
    (``Comparison.numerical`` holds that prediction).
    """
    if not isinstance(result, Result):
        raise ValueError(
            f"result must be a ufm.Result (from ufm.solve, or SweepResult.result(j)), got {type(result).__name__}"
        )
    rtol = validation.interval("rtol", rtol, 0.0, 1.0, low_open=True)
    if not np.isfinite(result.objective) or not np.isfinite(result.grad_norm):
        raise ValueError(
            f"result has a non-finite objective or gradient (status {result.status!r}): there is nothing to compare"
        )
    p = result.problem
    K, n = p.K, p.n
    labels = p.labels()
    reasons = _reasons(p)
    general = not reasons
    prediction = predict(p)
    inside = general and not prediction.collapsed
    if general and prediction.collapsed:
        if p.loss_spec.closed_form == "guo" and not p.nonnegative:
            c = theory.phase(K, n, delta=p.delta, lam_W=p.lam_W, lam_H=p.lam_H).c
            reasons.append(f"c = {format_number(c)} >= 1: the minimizer is zero; NC1-NC3 and kappa are undefined there")
        else:
            reasons.append(
                "a = 0 (past the phase boundary): W = H = 0 at the minimizer; NC1-NC3 and kappa are undefined there"
            )

    nc = metrics.collapse(result.W, result.H, labels, K)
    means = np.asarray(_class_means(result.H, labels, K))
    Zbar = result.W.T @ means + result.b[:, None]
    Zbar_pred = prediction.zbar
    p_t_meas, p_n_meas = measured_probabilities(result)
    logit_scale = np.linalg.norm(Zbar_pred)

    if inside:
        norm_rows = [
            _relative("mean ||w_k||", prediction.w_norm, nc.w_norm, rtol, True, key="w_norm"),
            _relative("mean ||hbar_k - h_G||", prediction.h_norm, nc.h_norm, rtol, True, key="h_norm"),
        ]
        logit_error = np.linalg.norm(Zbar - Zbar_pred) / logit_scale
        logit_row = Row(
            "logits W^T Hbar + b (Frobenius)",
            float(logit_scale),
            float(np.linalg.norm(Zbar)),
            float(logit_error),
            True,
            rtol,
            True,
            "error = ||Z - Zpred||_F / ||Zpred||_F",
            "logits",
        )
    else:
        norm_rows = [
            _absolute("mean ||w_k||", prediction.w_norm, nc.w_norm, rtol, general, key="w_norm"),
            _absolute("mean ||hbar_k - h_G||", prediction.h_norm, nc.h_norm, rtol, general, key="h_norm"),
        ]
        logit_row = _absolute(
            "logits W^T Hbar + b (max abs)", 0.0, np.max(np.abs(Zbar - Zbar_pred)), rtol, general, key="logits"
        )
    # past the phase boundary the minimizer is W = H = 0: NC1-NC3 and kappa do not exist there, and where the
    # solver reached that zero (within rtol) its own NC metrics and kappa are those of rounding noise
    zero = general and prediction.collapsed
    solver_zero = zero and all(row.ok for row in (*norm_rows, logit_row))
    rows = [
        *norm_rows,
        logit_row,
        _relative("p_t", prediction.p_t, p_t_meas, rtol, general, key="p_t"),
        _relative("p_n", prediction.p_n, p_n_meas, rtol, general, key="p_n"),
        *(
            _at_zero(name, key, value, solver_zero, rtol)
            if zero
            else _absolute(name, 0.0, value, rtol, inside, key=key)
            for name, key, value in (("NC1", "nc1", nc.nc1), ("NC2", "nc2", nc.nc2), ("NC3", "nc3", nc.nc3))
        ),
        Row(
            "max |b_k - b_pred|",
            prediction.bias,
            float(np.max(np.abs(result.b))),
            float(np.max(np.abs(result.b - prediction.bias))),
            False,
            rtol,
            general,
            "predicted b = bias * 1",
            "bias",
        ),
    ]
    if p.nonnegative:
        rows += _frame_rows(result, prediction, means, rtol, inside, general)
    numerical = None
    if p.d < p.K and generalized_applies(p):
        sizes = p.class_sizes if p.class_sizes is not None else (p.n,) * p.K
        numerical = generalized.generalized_prediction(
            np.asarray(sizes, np.float64),
            d=p.d,
            lam_W=p.lam_W,
            lam_H=p.lam_H,
            lam_b=p.lam_b,
            loss=p.loss,
            delta=p.delta,
            mse_kappa=p.mse_kappa,
            mse_beta=p.mse_beta,
            restarts=restarts,
            tol=min(result.tol, 1e-10),
            rtol=rtol,
            certify=certify,
        )
        rows += _generalized_rows(result, numerical, rtol)
        if not numerical.converged:
            statuses = ", ".join(numerical.statuses)
            reasons.append(f"no restart of the d < K optimum converged ({statuses}): nothing to compare with")
    elif not p.balanced:
        rows += _numerical_rows(result, rtol)

    spectra_info: dict = {}
    if spectra:
        judged = _Judged(general, inside, zero, solver_zero, rtol)
        for name in ("W", "H"):
            block_rows, spectra_info[name] = _spectrum_rows(result, prediction, name, judged)
            rows += block_rows
    unlocated = ""
    if result.converged and not p.nonnegative and not zero:  # H >= 0: a constrained minimum, grad L need not vanish
        estimate = stationarity(result)
        if not estimate <= rtol:
            unlocated = (  # a tol too loose for rtol, or a lam so small that the gradient is rounding noise first
                f"the stopping rule was met, but |grad L| / (min(lam_W, lam_H) |(W, H)|) = {estimate:.2e} > rtol = "
                f"{rtol:g}: the point is not the minimizer to rtol (a smaller tol where rounding allows, else a "
                "larger lam; ufm.compare.stationarity)"
            )
    converged = result.converged and not unlocated
    return Comparison(tuple(rows), converged, tuple(reasons), spectra_info, numerical, unlocated)


def spectra_bytes(problem, method: str) -> float:
    """Estimated peak bytes of the spectra of :func:`compare` for a solution of ``problem`` by ``method``
    (``"reduced"`` gives K distinct feature columns, the other methods N), for a check before solving."""
    groups = problem.K if method_spec(method).class_means else problem.N
    return hessian.spectrum_bytes(problem.K, problem.N, problem.d, groups, problem.loss)
