"""Closed forms of neural collapse under the unconstrained feature model.

Guo et al., "Cross Entropy versus Label Smoothing: A Neural Collapse
Perspective": the global minimizer (Theorem 4.1), the predicted probabilities
(eq. 14), norms (Appendix B.6) and the Hessian spectra and condition number
at the minimizer (Theorem 4.2). numpy, float64. Conventions: ``THEORY.md``
(``W: (d, K)``, ``H: (d, N)`` class-major, ``b: (K,)``, loss averaged over N).
"""

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
from theory.spectra import BlockSpectrum as BlockSpectrum
from theory.spectra import HessianSpectrum as HessianSpectrum
from theory.spectra import condition_number as condition_number
from theory.spectra import hessian_spectrum as hessian_spectrum

__all__ = [
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
