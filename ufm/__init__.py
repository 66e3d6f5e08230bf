"""JAX solver for the unconstrained feature model (UFM) and its checks against :mod:`theory`.

``ufm.solve(problem, method=...)`` runs the compiled solver (see :mod:`ufm.solver`);
``python -m ufm.solve`` is the command line over the same call; ``ufm.sweep(problems)``
(and ``python -m ufm.sweep``) solves a grid of same-shape configurations in one compiled call.

Most exports load on first use (``ufm.Problem`` imports :mod:`ufm.problem` then): a command line imports
only the modules it runs (``python -m ufm.solve`` not the calibration, tracker or last-layer code). To add
an export: its ``from ufm.<module> import <name> as <name>`` line under ``if TYPE_CHECKING:`` (for type
checkers), the name under its module in :data:`_LAZY` (for the interpreter), and in ``__all__``;
``tests/test_lazy_exports.py`` checks that the three agree.
"""

from ufm import _interrupt

_interrupt.guard_startup()  # started as python -m ufm.<x>: a signal during the imports below ends in one line

# compare, collapse_metrics and objective are imported now: each is also the name of its module, and a later import
# of that module (python -m ufm.solve imports ufm.compare) would leave the module where the function belongs
# (solve, analyze and sweep are modules that forward a call: they may load late)
from ufm.collapse_metrics import METRIC_SOURCES as METRIC_SOURCES
from ufm.collapse_metrics import ClassStatistics as ClassStatistics
from ufm.collapse_metrics import collapse_metrics as collapse_metrics
from ufm.compare import Comparison as Comparison
from ufm.compare import Row as Row
from ufm.compare import compare as compare
from ufm.objective import objective as objective

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing before it is needed
if TYPE_CHECKING:  # the exports that load on first use (_LAZY, __getattr__), for type checkers
    from ufm._cache import enable_compilation_cache as enable_compilation_cache
    from ufm._compile import compiled_programs as compiled_programs
    from ufm._memory import MemoryEstimateError as MemoryEstimateError
    from ufm.calibration import BinStatistics as BinStatistics
    from ufm.calibration import ECETemperatureFit as ECETemperatureFit
    from ufm.calibration import Reliability as Reliability
    from ufm.calibration import TemperatureFit as TemperatureFit
    from ufm.calibration import adaptive_ece as adaptive_ece
    from ufm.calibration import bin_statistics as bin_statistics
    from ufm.calibration import brier as brier
    from ufm.calibration import classwise_ece as classwise_ece
    from ufm.calibration import ece as ece
    from ufm.calibration import ece_temperature as ece_temperature
    from ufm.calibration import fit_temperature as fit_temperature
    from ufm.calibration import logits_from_features as logits_from_features
    from ufm.calibration import nll as nll
    from ufm.calibration import reliability_diagram as reliability_diagram
    from ufm.convex import Certificate as Certificate
    from ufm.convex import ConvexSolution as ConvexSolution
    from ufm.convex import certificate as certificate
    from ufm.convex import convex_objective as convex_objective
    from ufm.convex import solve_convex as solve_convex
    from ufm.generalized import GeneralizedPrediction as GeneralizedPrediction
    from ufm.generalized import generalized_prediction as generalized_prediction
    from ufm.generalized import gnc_metrics as gnc_metrics
    from ufm.hessian import BlockEigenvalues as BlockEigenvalues
    from ufm.hessian import EigenvalueCounts as EigenvalueCounts
    from ufm.hessian import block_eigenvalues as block_eigenvalues
    from ufm.hessian import block_spectrum as block_spectrum
    from ufm.hessian import distinct_eigenvalues as distinct_eigenvalues
    from ufm.hessian import extreme_eigenvalues as extreme_eigenvalues
    from ufm.hessian import hessian_vector_product as hessian_vector_product
    from ufm.hessian import logit_hessians as logit_hessians
    from ufm.hessian import nonzero_condition_number as nonzero_condition_number
    from ufm.last_layer import Analysis as Analysis
    from ufm.last_layer import analyze as analyze
    from ufm.loop import Status as Status
    from ufm.losses import LOSS_SPECS as LOSS_SPECS
    from ufm.losses import Loss as Loss
    from ufm.methods import METHOD_SPECS as METHOD_SPECS
    from ufm.methods import METHODS as METHODS
    from ufm.methods import Method as Method
    from ufm.metrics import Collapse as Collapse
    from ufm.metrics import Dilation as Dilation
    from ufm.metrics import class_means as class_means
    from ufm.metrics import collapse as collapse
    from ufm.metrics import dilation as dilation
    from ufm.metrics import nc1 as nc1
    from ufm.metrics import nc1_nguyen as nc1_nguyen
    from ufm.metrics import nc2 as nc2
    from ufm.metrics import nc3 as nc3
    from ufm.objective import Params as Params
    from ufm.objective import Weights as Weights
    from ufm.objective import class_major_labels as class_major_labels
    from ufm.objective import logits as logits
    from ufm.objective import loss_term as loss_term
    from ufm.objective import regularization as regularization
    from ufm.problem import Problem as Problem
    from ufm.results import Advice as Advice
    from ufm.results import BatchResult as BatchResult
    from ufm.results import Result as Result
    from ufm.solver import solve as solve
    from ufm.tracker import CollapseResult as CollapseResult
    from ufm.tracker import CollapseTracker as CollapseTracker
    from ufm.tracker import NCCPass as NCCPass

#: the module of each export that loads on first use (the imports above, for the interpreter)
_LAZY = {
    "ufm._cache": ("enable_compilation_cache",),
    "ufm._compile": ("compiled_programs",),
    "ufm._memory": ("MemoryEstimateError",),
    "ufm.calibration": (
        "BinStatistics",
        "ECETemperatureFit",
        "Reliability",
        "TemperatureFit",
        "adaptive_ece",
        "bin_statistics",
        "brier",
        "classwise_ece",
        "ece",
        "ece_temperature",
        "fit_temperature",
        "logits_from_features",
        "nll",
        "reliability_diagram",
    ),
    "ufm.convex": ("Certificate", "ConvexSolution", "certificate", "convex_objective", "solve_convex"),
    "ufm.generalized": ("GeneralizedPrediction", "generalized_prediction", "gnc_metrics"),
    "ufm.hessian": (
        "BlockEigenvalues",
        "EigenvalueCounts",
        "block_eigenvalues",
        "block_spectrum",
        "distinct_eigenvalues",
        "extreme_eigenvalues",
        "hessian_vector_product",
        "logit_hessians",
        "nonzero_condition_number",
    ),
    "ufm.last_layer": ("Analysis", "analyze"),
    "ufm.loop": ("Status",),
    "ufm.losses": ("LOSS_SPECS", "Loss"),
    "ufm.methods": ("METHOD_SPECS", "METHODS", "Method"),
    "ufm.metrics": ("Collapse", "Dilation", "class_means", "collapse", "dilation", "nc1", "nc1_nguyen", "nc2", "nc3"),
    "ufm.objective": ("Params", "Weights", "class_major_labels", "logits", "loss_term", "regularization"),
    "ufm.problem": ("Problem",),
    "ufm.results": ("Advice", "BatchResult", "Result"),
    "ufm.solver": ("solve",),
    "ufm.tracker": ("CollapseResult", "CollapseTracker", "NCCPass"),
}
_MODULE_OF = {name: module for module, names in _LAZY.items() for name in names}

__all__ = [
    "Certificate",
    "ConvexSolution",
    "certificate",
    "convex_objective",
    "solve_convex",
    "GeneralizedPrediction",
    "generalized_prediction",
    "gnc_metrics",
    "BinStatistics",
    "ECETemperatureFit",
    "Reliability",
    "TemperatureFit",
    "adaptive_ece",
    "bin_statistics",
    "brier",
    "classwise_ece",
    "ece",
    "ece_temperature",
    "fit_temperature",
    "logits_from_features",
    "nll",
    "reliability_diagram",
    "ClassStatistics",
    "METRIC_SOURCES",
    "collapse_metrics",
    "CollapseResult",
    "CollapseTracker",
    "NCCPass",
    "Analysis",
    "analyze",
    "METHODS",
    "METHOD_SPECS",
    "Method",
    "LOSS_SPECS",
    "Loss",
    "Status",
    "BatchResult",
    "Advice",
    "compiled_programs",
    "MemoryEstimateError",
    "BlockEigenvalues",
    "Collapse",
    "Comparison",
    "Dilation",
    "EigenvalueCounts",
    "Params",
    "Problem",
    "Result",
    "Row",
    "SweepResult",
    "Weights",
    "block_eigenvalues",
    "block_spectrum",
    "class_major_labels",
    "class_means",
    "collapse",
    "compare",
    "dilation",
    "distinct_eigenvalues",
    "enable_compilation_cache",
    "extreme_eigenvalues",
    "grid",
    "hessian_vector_product",
    "logit_hessians",
    "logits",
    "loss_term",
    "nc1",
    "nc1_nguyen",
    "nc2",
    "nc3",
    "nonzero_condition_number",
    "objective",
    "regularization",
    "solve",
    "sweep",
    "MDResult",
    "md_profile",
    "solve_md",
    "ShardStatistics",
    "ShardedAnalysis",
    "analyze_shards",
]


def __getattr__(name):
    """An export of :data:`_LAZY` on first use (then bound here: later uses are plain attribute reads).

    ``ufm.sweep`` (the module, callable as ``ufm.sweep(problems, ...)``), ``ufm.grid`` and ``ufm.SweepResult``
    load on first use too, so ``python -m ufm.sweep`` does not import itself twice; ``ufm.md`` and
    ``ufm.sharded``'s exports likewise."""
    if name in _MODULE_OF:
        import importlib

        value = getattr(importlib.import_module(_MODULE_OF[name]), name)
        globals()[name] = value
        return value
    if name in ("sweep", "grid", "SweepResult"):
        import importlib

        module = importlib.import_module("ufm.sweep")
        return module if name == "sweep" else getattr(module, name)
    if name in ("solve_md", "md_profile", "MDResult"):  # lazy too: python -m ufm.md must not import itself twice
        import importlib

        return getattr(importlib.import_module("ufm.md"), name)
    if name in ("analyze_shards", "ShardedAnalysis", "ShardStatistics"):  # lazy: python -m ufm.sharded, as ufm.md
        import importlib

        return getattr(importlib.import_module("ufm.sharded"), name)
    raise AttributeError(f"module 'ufm' has no attribute {name!r}")
