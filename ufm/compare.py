"""Where the two paths meet: theory's predictions next to the solver's measurements.

``compare(result)`` builds one :class:`Comparison`: rows of
(quantity, theory, measured, error, tolerance, applies). It is the single place
where a predicted number and a measured number are put side by side; the CLI,
the experiments and the tests all read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

import theory
from ufm import hessian, metrics
from ufm.objective import Params, Weights
from ufm.solver import Result

DEFAULT_RTOL = 1e-6


@dataclass(frozen=True)
class Row:
    """One compared quantity.

    ``error`` is relative (``|measured - theory| / |theory|``) when ``relative``
    else absolute; the row passes when it does not apply or ``error <= tolerance``.
    ``error`` is None when the two sides cannot be compared (e.g. different numbers
    of distinct eigenvalues); an applicable row then fails.
    """

    quantity: str
    theory: float | None
    measured: float
    error: float | None
    relative: bool
    tolerance: float
    applies: bool
    note: str = ""

    @property
    def ok(self) -> bool:
        return (not self.applies) or (self.error is not None and self.error <= self.tolerance)


@dataclass(frozen=True)
class Comparison:
    """All rows, the spectra side by side, and why a prediction does not apply (if so)."""

    rows: tuple[Row, ...]
    converged: bool
    not_applicable: tuple[str, ...] = ()
    spectra: dict = field(default_factory=dict)

    @property
    def failures(self) -> tuple[Row, ...]:
        return tuple(row for row in self.rows if not row.ok)

    @property
    def ok(self) -> bool:
        return self.converged and not self.failures


def _relative(quantity, predicted, measured, rtol, applies, note=""):
    predicted, measured = float(predicted), float(measured)
    error = abs(measured - predicted) / abs(predicted) if predicted != 0 else abs(measured - predicted)
    return Row(quantity, predicted, measured, error, predicted != 0, rtol, applies, note)


def _absolute(quantity, predicted, measured, tol, applies, note=""):
    return Row(quantity, float(predicted), float(measured), abs(float(measured) - float(predicted)), False, tol,
               applies, note)


def _measured_probabilities(result: Result):
    problem = result.problem
    Z = result.W.T @ result.H + result.b[:, None]
    p = np.asarray(jax.nn.softmax(Z, axis=0))
    labels = np.asarray(problem.labels())
    target = p[labels, np.arange(problem.N)]
    p_n = (1.0 - target) / (problem.K - 1)  # mean over the K - 1 non-target classes
    return float(np.mean(target)), float(np.mean(p_n))


def compare(result: Result, *, rtol: float = DEFAULT_RTOL, spectra: bool = True) -> Comparison:
    """Compare a solver :class:`~ufm.solver.Result` with Theorems 4.1 and 4.2.

    Relative tolerance ``rtol`` for norms, logits, p_t, p_n and kappa; absolute
    ``rtol`` for NC1-NC3 and b (predicted 0). Beyond the phase boundary (c >= 1)
    the prediction is the zero solution: norms and logits are compared
    absolutely, NC metrics and kappa do not apply. For d < K Theorem 4.1 does not
    apply at all: the rows are shown but not judged.
    """
    if isinstance(rtol, bool) or not isinstance(rtol, (int, float)) or not 0.0 < rtol < 1.0:
        raise ValueError(f"rtol must be a number in (0, 1), got {rtol!r}")
    p = result.problem
    K, n, d = p.K, p.n, p.d
    labels = p.labels()
    reasons = []
    if d < K:
        reasons.append(f"d = {d} < K = {K}: Theorems 4.1 and 4.2 need d >= K")
    if p.loss != "ls":
        reasons.append(f"loss {p.loss!r}: the closed form is for cross entropy / label smoothing")
    general = not reasons
    where = theory.phase(K, n, p.delta, p.lam_W, p.lam_H)
    inside = general and not where.collapsed
    if general and where.collapsed:
        reasons.append(f"c = {where.c:.6g} >= 1: the minimizer is zero; NC1-NC3 and kappa are undefined there")

    nc = metrics.collapse(result.W, result.H, labels, K)
    predicted_norms = theory.norms(K, n, p.delta, p.lam_W, p.lam_H)
    Zbar_pred = theory.logit_matrix(K, n, p.delta, p.lam_W, p.lam_H)
    means = np.asarray(metrics.class_means(result.H, labels, K))
    Zbar = result.W.T @ means + result.b[:, None]
    p_t, p_n = theory.probabilities(K, n, p.delta, p.lam_W, p.lam_H)
    p_t_meas, p_n_meas = _measured_probabilities(result)
    logit_scale = np.linalg.norm(Zbar_pred)

    if inside:
        norm_rows = [
            _relative("mean ||w_k||", predicted_norms.w, nc.w_norm, rtol, True),
            _relative("mean ||hbar_k - h_G||", predicted_norms.h, nc.h_norm, rtol, True),
        ]
        logit_error = np.linalg.norm(Zbar - Zbar_pred) / logit_scale
        logit_row = Row("logits W^T Hbar + b (Frobenius)", float(logit_scale), float(np.linalg.norm(Zbar)),
                        float(logit_error), True, rtol, True, "error = ||Z - a M||_F / ||a M||_F")
    else:
        norm_rows = [
            _absolute("mean ||w_k||", predicted_norms.w, nc.w_norm, rtol, general),
            _absolute("mean ||hbar_k - h_G||", predicted_norms.h, nc.h_norm, rtol, general),
        ]
        logit_row = _absolute("logits W^T Hbar + b (max abs)", 0.0, np.max(np.abs(Zbar - Zbar_pred)), rtol,
                              general)
    rows = [
        *norm_rows,
        logit_row,
        _relative("p_t", p_t, p_t_meas, rtol, general),
        _relative("p_n", p_n, p_n_meas, rtol, general),
        _absolute("NC1", 0.0, nc.nc1, rtol, inside),
        _absolute("NC2", 0.0, nc.nc2, rtol, inside),
        _absolute("NC3", 0.0, nc.nc3, rtol, inside),
        _absolute("max |b_k|", 0.0, np.max(np.abs(result.b)), rtol, general),
    ]

    spectra_info = {}
    if spectra:
        kappa = float(theory.condition_number(K, p.delta, p.lam_W, n=n, lam_H=p.lam_H, beyond_boundary="nan"))
        predicted = theory.hessian_spectrum(K, n, d, p.delta, p.lam_W, p.lam_H) if general else None
        # Spectra in float64 whenever JAX allows it, also at a float32 solution: the
        # zero threshold (1e-8 of the largest) needs float64 rounding in the Hessian.
        if jax.config.jax_enable_x64:
            point = Params(*(jnp.asarray(x, jnp.float64) for x in (result.W, result.H, result.b)))
            weights = Weights(*(jnp.asarray(x, jnp.float64) for x in p.weights()))
        else:
            point, weights = result.params, p.weights()
        for block in ("W", "H"):
            measured = hessian.block_eigenvalues(point, labels, weights, block)
            kappa_meas = hessian.nonzero_condition_number(measured.values)
            # clusters: eigenvalues closer than rtol x the largest count as one distinct value
            values, counts = hessian.distinct_eigenvalues(measured.values, rtol=rtol)
            rows.append(_relative(f"kappa_{block} (loss block)", kappa, kappa_meas, rtol, inside,
                                  "non-zero eigenvalues above 1e-8 of the largest"))
            info = {"method": measured.method, "measured_values": values.tolist(),
                    "measured_multiplicities": counts.tolist(), "condition_number": kappa_meas}
            if predicted is not None:
                block_pred = getattr(predicted, block)
                info["predicted_values"] = block_pred.values.tolist()
                info["predicted_multiplicities"] = block_pred.multiplicities.tolist()
                if inside and len(values) == len(block_pred.values):
                    scale = block_pred.values.max()
                    error = float(np.max(np.abs(values - block_pred.values)) / scale)
                    match = counts.tolist() == block_pred.multiplicities.tolist()
                    rows.append(Row(f"{block}-block eigenvalues", float(scale), float(values.max()),
                                    error if match else None, True, rtol, True,
                                    "max |measured - predicted| / largest; multiplicities "
                                    + ("match" if match else f"differ: {counts.tolist()}")))
                elif inside:
                    rows.append(Row(f"{block}-block eigenvalues", float(len(block_pred.values)), float(len(values)),
                                    None, True, rtol, True,
                                    "number of distinct eigenvalues differs (theory vs measured)"))
            spectra_info[block] = info
    return Comparison(tuple(rows), result.converged, tuple(reasons), spectra_info)
