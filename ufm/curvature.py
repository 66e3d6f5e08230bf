"""Curvature of the full objective L over all variables jointly, and the step size it allows.

The blockwise spectra of :mod:`ufm.hessian` are the paper's objects (Theorem 4.2);
how fast, and whether, plain gradient descent converges is set by the joint
Hessian of L over ``x = (vec W, vec H, b)`` (all ``dK + dN + K`` variables).
Gradient descent with step ``lr`` is stable near a point only if
``lr < 2 / lambda_max``; ``1 / lambda_max`` is the textbook safe choice (:func:`safe_step`, through the
package's one step-size rule :meth:`ufm.methods.Method.safe_step`).

Shapes: ``W: (d, K)``, ``H: (d, N)``, ``b: (K,)``; vectors are flattened in
that order (``jax.flatten_util.ravel_pytree``).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from theory import validation
from ufm import _memory
from ufm.hessian import eigenvalue_array
from ufm.methods import Method, method_spec
from ufm.objective import Params, objective

VARIABLES = ("W", "H", "b")
#: joint eigenvalues with |value| <= this fraction of the largest are treated as zero:
#: at a minimizer these are the directions of the O(d) symmetry (W, H) -> (Q W, Q H).
SYMMETRY_RTOL = 1e-8
MAX_DENSE_ENTRIES = 100_000_000


def _flat_objective(params: Params, labels, weights, variables):
    chosen = {name: getattr(params, name) for name in variables}
    flat, unravel = ravel_pytree(chosen)
    return (lambda x: objective(params._replace(**unravel(x)), labels, weights)), flat


def _check_variables(variables) -> tuple:
    try:
        variables = tuple(variables) if not isinstance(variables, (str, bytes)) else (variables,)
    except TypeError:
        raise ValueError(f"variables must be distinct names from {VARIABLES}, got {variables!r}") from None
    if (
        not variables
        or any(not isinstance(v, str) or v not in VARIABLES for v in variables)
        or len(set(variables)) != len(variables)
    ):
        raise ValueError(f"variables must be distinct names from {VARIABLES}, got {variables!r}")
    return variables


# the loss is fixed at compile time (static loss_id): a traced one would differentiate every loss's branch
@partial(jax.jit, static_argnames=("variables", "loss_id"))
def _joint_hessian(params, labels, weights, variables, loss_id):
    f, flat = _flat_objective(params, labels, weights._replace(loss_id=loss_id), variables)
    return jax.hessian(f)(flat)


@partial(jax.jit, static_argnames="loss_id")
def _joint_hvp(params, labels, weights, v, loss_id):
    f, flat = _flat_objective(params, labels, weights._replace(loss_id=loss_id), VARIABLES)
    return jax.jvp(jax.grad(f), (flat,), (v,))[1]


def joint_eigenvalues(
    params: Params, labels, weights, variables=VARIABLES, *, max_dense_entries: int = MAX_DENSE_ENTRIES
) -> np.ndarray:
    """Every eigenvalue (ascending) of the dense Hessian of L over ``variables`` jointly.

    Raises:
        ValueError: unknown variables, or a Hessian with more than ``max_dense_entries``
            entries (the message gives its size; use :func:`largest_curvature` instead).
    """
    variables = _check_variables(variables)
    max_dense_entries = validation.integer("max_dense_entries", max_dense_entries, 1)
    size = sum(int(np.size(getattr(params, v))) for v in variables)
    if size**2 > max_dense_entries:
        raise ValueError(
            f"the joint Hessian over {variables} has {size}^2 = {size**2:.3g} entries > "
            f"max_dense_entries = {max_dense_entries:.3g}; use largest_curvature (Lanczos) instead"
        )
    _memory.require(
        3 * 8.0 * size**2, "the dense joint Hessian", f"{size} variables", "use largest_curvature (Lanczos) instead"
    )
    params = Params(*(jnp.asarray(x) for x in params))
    return np.linalg.eigvalsh(np.asarray(_joint_hessian(params, labels, weights, variables, int(weights.loss_id))))


def largest_curvature(params: Params, labels, weights, *, tol: float = 1e-8) -> float:
    """Largest eigenvalue of the joint Hessian of L (Lanczos on Hessian-vector products).

    Never forms the Hessian: memory O(dK + dN + K). ``tol`` is ARPACK's relative accuracy.
    """
    params = Params(*(jnp.asarray(x) for x in params))
    size = sum(int(x.size) for x in params)
    dtype = np.dtype(params.W.dtype)
    loss_id = int(weights.loss_id)
    if size == 1:
        return float(np.asarray(_joint_hvp(params, labels, weights, jnp.ones(1, dtype), loss_id))[0])
    import scipy.sparse.linalg  # on first use: scipy adds ~0.1 s to every command line's start-up

    operator = scipy.sparse.linalg.LinearOperator(
        (size, size),
        dtype=dtype,
        matvec=lambda v: np.asarray(_joint_hvp(params, labels, weights, jnp.asarray(np.ravel(v), dtype), loss_id)),
    )
    value = scipy.sparse.linalg.eigsh(
        operator, k=1, which="LA", tol=tol, return_eigenvectors=False, v0=np.ones(size, dtype)
    )[0]
    return float(value)


def safe_step(params: Params, labels, weights, method: str | Method = "gd") -> float:
    """The safe step of the fixed-step ``method`` at ``params``: :meth:`ufm.methods.Method.safe_step` of
    lambda_max, the largest eigenvalue of the joint Hessian of L there (:func:`largest_curvature`): for GD
    ``1 / lambda_max``, a stable step near that point; momentum and Nesterov take half their own limits.

    Raises:
        ValueError: ``method`` unknown or a line-search method, or no finite positive curvature at ``params``.
    """
    spec = method_spec(method)
    if spec.stability_limit is None:
        raise ValueError(f"method must be a fixed-step method (it takes its step from a line search), got {method!r}")
    top = largest_curvature(params, labels, weights)
    if not (np.isfinite(top) and top > 0):
        raise ValueError(f"the largest curvature at this point is {top!r}; no safe step follows from it")
    return spec.safe_step(top)


def nonzero_range(values: np.ndarray) -> tuple[float, float, int]:
    """(largest, smallest non-zero, number of zeros) of a joint spectrum at a minimizer.

    Raises:
        ValueError: a clearly negative eigenvalue (the point is not a minimizer).
    """
    values = eigenvalue_array(values)
    if values.size == 0:
        raise ValueError("values must hold at least one eigenvalue, got an empty array")
    top = float(values.max())
    if values.min() < -SYMMETRY_RTOL * top:
        raise ValueError(f"joint Hessian has a negative eigenvalue {values.min():.3e}: not a minimizer")
    nonzero = values[np.abs(values) > SYMMETRY_RTOL * top]
    if nonzero.size == 0:
        raise ValueError("values has no non-zero eigenvalue: the point is a zero of the Hessian")
    return top, float(nonzero.min()), int(values.size - nonzero.size)
