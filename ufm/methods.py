"""The solver's methods as small typed specifications: one registry of what each method is and needs.

A :class:`Method` carries its step policy (default step, stability limit on a quadratic, or a line search),
the memory it holds (copies of the parameters, calibrated in :mod:`ufm._memory`), its default iteration cap
and how its step is made (an ``optax`` transformation, or the class-mean L-BFGS of :mod:`ufm._lbfgs`).
:data:`METHOD_SPECS` is the one registry; strings name a method only at the boundary (``ufm.solve(problem,
"gd")``, ``--method``), and :func:`method_spec` turns a name into its specification. Adding a method is one
entry here (plus its step in the solver's loop when it is not an ``optax`` transformation).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: Momentum of the heavy-ball and Nesterov methods.
MOMENTUM = 0.9
#: The fraction of its stability limit a fixed-step method takes as its safe step (:meth:`Method.safe_step`):
#: for GD ``0.5 * 2 / lambda_max = 1 / lambda_max``, the textbook choice.
SAFE_FRACTION = 0.5


@dataclass(frozen=True)
class Method:
    """One optimisation method of :func:`ufm.solve`.

    Attributes:
        name: the name at the boundary (``method=``, ``--method``).
        default_lr: the step when none is given (None: a line search sets it). Measured on the CLI default
            problem (K=10, n=500, delta=0.1, lam=5e-4, float64): GD is stable up to lr ~ 30 and cycles at 100;
            the defaults keep a margin (GD: 2169 iterations to tol 1e-10, momentum/Nesterov: ~1240).
        stability_limit: the largest ``lr * lambda`` for which the fixed step is stable on a quadratic of
            curvature lambda: GD 2; heavy ball with momentum beta: 2 (1 + beta); Nesterov: 2 (1 + beta) /
            (1 + 2 beta). None for the line-search methods.
        memory_copies: float-sized arrays of the parameter size P = d (K + N) + K held (:mod:`ufm._memory`).
        max_iters: the iteration cap of the command lines when ``--max-iters`` is not given.
        optimizer: ``lr -> optax.GradientTransformation`` for the methods run through optax; None for
            ``"reduced"`` (the L-BFGS of :mod:`ufm._lbfgs` on the class-mean reduction).
        class_means: solves the class-mean reduction (exact only for a loss convex in the logits, free
            features, clean labels; :mod:`ufm.solver`).
        safe_fraction: the fraction of ``stability_limit`` that :meth:`safe_step` takes (:data:`SAFE_FRACTION`).
    """

    name: str
    default_lr: float | None
    stability_limit: float | None
    memory_copies: int
    max_iters: int
    optimizer: Callable[[Any], Any] | None
    class_means: bool = False
    safe_fraction: float = SAFE_FRACTION

    @property
    def line_search(self) -> bool:
        """The step comes from a line search (L-BFGS): no ``lr``, no projection, no no-progress rule."""
        return self.default_lr is None

    def safe_step(self, lambda_max: float, fraction: float | None = None) -> float:
        """The package's one step-size rule: ``fraction * stability_limit / lambda_max`` for a curvature
        ``lambda_max`` (the largest Hessian eigenvalue of L; on the quadratic ``lambda/2 |x|^2`` it is
        ``lambda``), ``fraction`` :attr:`safe_fraction` unless given (1: the stability limit itself). GD:
        ``0.5 * 2 / lambda_max = 1 / lambda_max`` (to the last bit: ``0.5 * 2`` is exactly 1). Used by
        :func:`ufm.curvature.safe_step` and :mod:`ufm.policy`.

        Raises:
            ValueError: a line-search method (no stability limit), or ``lambda_max`` not finite and > 0.
        """
        if self.stability_limit is None:
            raise ValueError(f"method {self.name!r} takes its step from a line search: it has no safe step")
        real = isinstance(lambda_max, numbers.Real) and not isinstance(lambda_max, bool)
        value = float(lambda_max) if real else math.nan
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"lambda_max must be finite and > 0 for a safe step, got {lambda_max!r}")
        return (self.safe_fraction if fraction is None else fraction) * self.stability_limit / value


def _lbfgs(lr):
    import optax  # here, not at import: the command lines' start-up (--help) does not load optax

    return optax.lbfgs(linesearch=optax.scale_by_zoom_linesearch(max_linesearch_steps=40))


def _sgd(lr, momentum: float | None = None, nesterov: bool = False):
    import optax

    return optax.sgd(lr, momentum=momentum, nesterov=nesterov)


#: Iteration cap of the fixed-step methods at the command lines.
MAX_ITERS_FIXED_STEP = 100_000

#: The one registry of methods, by name, in the order the command lines list them. Memory copies calibrated
#: on CPU, K = 10, n = 1e5, d = 10, float64: peak RSS grew by 1.00 GB (gd; estimate 1.19 GiB), 3.0 GB (lbfgs;
#: estimate 2.98 GiB) and 0.97 GB (reduced; estimate 1.04 GiB); "reduced" holds only x_0, its full gradient
#: and the lifted result at full size, L-BFGS 10 pairs.
METHOD_SPECS: dict[str, Method] = {
    spec.name: spec
    for spec in (
        Method("reduced", None, None, memory_copies=6, max_iters=20_000, optimizer=None, class_means=True),
        Method(
            "lbfgs",
            None,
            None,
            memory_copies=32,
            max_iters=2_000,
            optimizer=_lbfgs,
        ),
        Method("gd", 20.0, 2.0, memory_copies=8, max_iters=MAX_ITERS_FIXED_STEP, optimizer=_sgd),
        Method(
            "momentum",
            3.0,
            2.0 * (1 + MOMENTUM),
            memory_copies=10,
            max_iters=MAX_ITERS_FIXED_STEP,
            optimizer=lambda lr: _sgd(lr, momentum=MOMENTUM),
        ),
        Method(
            "nesterov",
            3.0,
            2.0 * (1 + MOMENTUM) / (1 + 2 * MOMENTUM),
            memory_copies=10,
            max_iters=MAX_ITERS_FIXED_STEP,
            optimizer=lambda lr: _sgd(lr, momentum=MOMENTUM, nesterov=True),
        ),
    )
}
#: The method names accepted at the boundary.
METHODS = tuple(METHOD_SPECS)


def method_spec(method: str | Method) -> Method:
    """The :class:`Method` of a name of :data:`METHODS` (or the spec itself); ``ValueError`` naming ``method``."""
    if isinstance(method, Method):
        return method
    if not isinstance(method, str) or method not in METHOD_SPECS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    return METHOD_SPECS[method]
