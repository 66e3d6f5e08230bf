"""Closed forms of neural collapse under the unconstrained feature model.

Guo et al., "Cross Entropy versus Label Smoothing: A Neural Collapse
Perspective": the global minimizer (Theorem 4.1), the predicted probabilities
(eq. 14), norms (Appendix B.6) and the Hessian spectra and condition number
at the minimizer (Theorem 4.2); for every loss (CE, LS, focal, rescaled MSE) and for
non-negative features, the 1-D reduction and the prediction built on it
(:mod:`theory.scalar_reduction`, :mod:`theory.prediction`); the minority-collapse threshold of the
imbalanced UFM (:mod:`theory.minority_collapse`). numpy, float64. Conventions: ``docs/theory.md``
(``W: (d, K)``, ``H: (d, N)`` class-major, ``b: (K,)``, loss averaged over N).

One argument order: the sizes ``K, n, d`` (those a function takes) are positional, in this order, after
the loss name where there is one; ``delta``, ``lam_W``, ``lam_H``, ``lam_b`` and every other real number
are keyword-only, so a call in another order raises ``TypeError`` instead of meaning another setting
(``predict(10, 50, 10, delta=0.1, lam_W=5e-4, lam_H=5e-4)``). The one shorthand is the design card's
``condition_number(K, delta, lam)`` (``lam_W = lam_H = lam``; ``n`` keyword-only, default 1).
"""

from typing import TYPE_CHECKING

from theory.closed_form import Norms as Norms
from theory.closed_form import Phase as Phase
from theory.closed_form import a_delta as a_delta
from theory.closed_form import global_minimizer as global_minimizer
from theory.closed_form import label_matrix as label_matrix
from theory.closed_form import logit_matrix as logit_matrix
from theory.closed_form import norms as norms
from theory.closed_form import phase as phase
from theory.closed_form import probabilities as probabilities
from theory.closed_form import random_semi_orthogonal as random_semi_orthogonal
from theory.closed_form import simplex_projector as simplex_projector
from theory.prediction import Prediction as Prediction
from theory.prediction import nonnegative_boundary as nonnegative_boundary
from theory.prediction import predict as predict
from theory.scalar_reduction import LOSSES as LOSSES
from theory.scalar_reduction import logit_curvatures as logit_curvatures
from theory.scalar_reduction import loss_derivatives as loss_derivatives
from theory.scalar_reduction import mse_optimum as mse_optimum
from theory.scalar_reduction import optimal_scale as optimal_scale
from theory.spectra import BlockSpectrum as BlockSpectrum
from theory.spectra import HessianSpectrum as HessianSpectrum
from theory.spectra import condition_number as condition_number
from theory.spectra import curvature_spectrum as curvature_spectrum
from theory.spectra import hessian_spectrum as hessian_spectrum

if TYPE_CHECKING:  # the exports that load on first use (_LAZY, __getattr__), for type checkers
    from theory.memorization_dilation import AssumptionCheck as AssumptionCheck
    from theory.memorization_dilation import NCConfiguration as NCConfiguration
    from theory.memorization_dilation import assumption_4_2 as assumption_4_2
    from theory.memorization_dilation import md_law as md_law
    from theory.memorization_dilation import nc_configuration as nc_configuration
    from theory.minority_collapse import minority_collapse_threshold as minority_collapse_threshold

#: exports whose module loads on first use: the memorization-dilation and minority-collapse models are not
#: needed to compare a solve with Theorems 4.1-4.2, and importing them is part of every command line's start-up
_LAZY = {
    "theory.memorization_dilation": (
        "AssumptionCheck",
        "NCConfiguration",
        "assumption_4_2",
        "md_law",
        "nc_configuration",
    ),
    "theory.minority_collapse": ("minority_collapse_threshold",),
}
_MODULE_OF = {name: module for module, names in _LAZY.items() for name in names}


def __getattr__(name):
    """An export of :data:`_LAZY` on first use (then bound here: later uses are plain attribute reads)."""
    if name in _MODULE_OF:
        import importlib

        value = getattr(importlib.import_module(_MODULE_OF[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'theory' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_MODULE_OF))


__all__ = [
    "AssumptionCheck",
    "NCConfiguration",
    "assumption_4_2",
    "md_law",
    "minority_collapse_threshold",
    "nc_configuration",
    "LOSSES",
    "Prediction",
    "curvature_spectrum",
    "logit_curvatures",
    "loss_derivatives",
    "mse_optimum",
    "nonnegative_boundary",
    "optimal_scale",
    "predict",
    "BlockSpectrum",
    "HessianSpectrum",
    "Norms",
    "Phase",
    "a_delta",
    "condition_number",
    "global_minimizer",
    "hessian_spectrum",
    "label_matrix",
    "logit_matrix",
    "norms",
    "phase",
    "probabilities",
    "random_semi_orthogonal",
    "simplex_projector",
]
