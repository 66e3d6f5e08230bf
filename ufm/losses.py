"""Per-sample losses of the logits (Guo et al. eq. 3; Zhou et al. eqs. 3-6) and their one registry.

Every loss takes ``logits: (K, N)`` (column i = logits of sample i), ``labels: (N,)`` integer classes and
returns the per-sample losses ``(N,)``. Each also has a numpy twin in the framework layout, ``Z: (rows, K)``
(row i = logits of sample i), for the float64 measurements of a trained network (:mod:`ufm.last_layer`'s
held-out set): :meth:`Loss.rows`, the same formulas, tested against these.

A loss is a :class:`Loss`: a small frozen specification that carries what the rest of the package asks of
it (its parameters, whether it is convex in the logits and so whether the class-mean reduction is exact,
which closed form theory has for it, which Hessian path fits it, its curvature in the logits). :data:`LOSS_SPECS`
is the one registry; names are strings only at the boundary (``Problem.loss``, the command lines), and
:func:`loss_spec` turns one (or a :class:`Loss`, or an alias) into its specification. Adding a loss is one
entry here plus its per-sample function.

Compiled programs fix the loss at trace time (:func:`per_sample_loss` with a concrete ``weights.loss_id``, or
:meth:`Loss.__call__`), so only that loss is traced; a traced ``loss_id`` (lanes that mix losses, as in
``experiments/_cnn.py``) selects the branch with ``jax.lax.switch``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from theory.softmax import log_softmax


def _target(values, labels):
    return jnp.take_along_axis(values, labels[None, :], axis=0)[0]


def label_smoothing(logits, labels, delta):
    """Cross entropy against soft labels ``y^delta = (1 - delta) e_k + delta/K 1`` (Guo et al., eq. 3).

    ``delta = 0`` is plain cross entropy. Computed with ``log_softmax`` over the
    class axis, so it is stable for logits of any size.
    """
    K = logits.shape[0]
    log_p = jax.nn.log_softmax(logits, axis=0)
    return -((1.0 - delta) * _target(log_p, labels) + (delta / K) * jnp.sum(log_p, axis=0))


def focal(logits, labels, gamma):
    """Focal loss ``-(1 - p_k)^gamma log p_k`` (Zhou et al., eq. 4), ``gamma >= 0``.

    ``1 - p_k`` is computed as ``-expm1(log p_k)`` (no cancellation when p_k -> 1) and the
    power as ``exp(gamma log(1 - p_k))`` with the ``gamma = 0`` case exact (``0^0 = 1``).
    """
    log_p = _target(jax.nn.log_softmax(logits, axis=0), labels)
    q = -jnp.expm1(log_p)
    safe_q = jnp.where(q > 0, q, 1.0)
    weight = jnp.where(gamma == 0, 1.0, jnp.where(q > 0, jnp.exp(gamma * jnp.log(safe_q)), 0.0))
    return -weight * log_p


def rescaled_mse(logits, labels, kappa, beta):
    """Rescaled MSE ``kappa (z_k - beta)^2 + sum_{l != k} z_l^2`` (Zhou et al., eq. 6), kappa, beta > 0."""
    z_k = _target(logits, labels)
    return kappa * (z_k - beta) ** 2 + jnp.sum(logits**2, axis=0) - z_k**2


def _target_rows(values, labels):
    return values[np.arange(labels.size), labels]


def label_smoothing_rows(Z, labels, log_p, delta=0.0):
    """numpy twin of :func:`label_smoothing` for ``Z: (rows, K)``; ``log_p`` its row-wise log-softmax."""
    return -((1.0 - delta) * _target_rows(log_p, labels) + (delta / Z.shape[1]) * np.sum(log_p, axis=1))


def focal_rows(Z, labels, log_p, gamma=0.0):
    """numpy twin of :func:`focal` for ``Z: (rows, K)``: ``(1 - p_y)^gamma`` with ``0^0 = 1`` (numpy's power)."""
    target = _target_rows(log_p, labels)
    return -np.power(-np.expm1(target), gamma) * target


def rescaled_mse_rows(Z, labels, log_p, mse_kappa=1.0, mse_beta=1.0):
    """numpy twin of :func:`rescaled_mse` for ``Z: (rows, K)`` (``log_p`` unused: not a softmax loss)."""
    z_y = _target_rows(Z, labels)
    return mse_kappa * (z_y - mse_beta) ** 2 + np.sum(Z**2, axis=1) - z_y**2


def _smoothed(logits, labels, weights):
    return label_smoothing(logits, labels, weights.delta)


def _focal(logits, labels, weights):
    return focal(logits, labels, weights.gamma)


def _mse(logits, labels, weights):
    return rescaled_mse(logits, labels, weights.mse_kappa, weights.mse_beta)


@dataclass(frozen=True)
class Loss:
    """A per-sample loss of the logits and the properties the package asks of it.

    Attributes:
        name: the name at the boundary (``Problem.loss``, ``--loss``).
        function: ``(logits (K, N), labels (N,), weights) -> (N,)``, reading its parameters from a
            :class:`ufm.objective.Weights`; aliases share one (``"ce"`` is ``"ls"``'s at delta 0).
        parameters: the :class:`~ufm.problem.Problem` fields it reads (others must keep their defaults).
        convex_in_logits: convex in the logits, so the class-mean reduction of ``"reduced"`` is exact for free
            features and clean balanced labels (Jensen; :mod:`ufm.solver`), and the convex and d < K paths
            (:mod:`ufm.convex`, :mod:`ufm.generalized`) apply.
        softmax: a function of the softmax probabilities (p_t, p_n exist; Guo et al.'s Hessian structure
            ``diag(p) - p p^T`` in the logits).
        closed_form: which closed form theory has for it: ``"guo"`` (Thm 4.1 / 4.2 in closed form), ``"scalar"``
            (Zhou et al.'s 1-D reduction), ``"mse"`` (the derived rescaled-MSE optimum, with a bias).
        hessian: the structured Hessian path of :mod:`ufm.hessian`: ``"softmax"`` (analytic S) or
            ``"per_sample"`` (per-sample logit Hessians).
        source: where theory's prediction for it comes from (the report's "Theory" line).
        numpy_rows: the numpy twin of ``function`` in the framework layout, ``(Z (rows, K), labels (rows,),
            log_p, **parameters) -> (rows,)`` with ``log_p`` the row-wise log-softmax of Z (read by the softmax
            losses only) and ``parameters`` keywords named as :attr:`parameters` (see :meth:`rows`).
        bias_in_optimum: theory's optimum depends on the bias penalty ``lam_b``, so a prediction needs it given
            (the rescaled MSE's optimum has a bias; the softmax losses' optimal bias is 0 whatever lam_b).
        logit_curvature: a bound on the loss's curvature in the logits that a fixed step must respect all
            along a run, as a function of the problem (MSE: ``2 max(kappa, 1)``, constant; the softmax losses
            are largest at the uniform start and already covered by the default steps: 0).
    """

    name: str
    function: Callable
    parameters: tuple[str, ...]
    convex_in_logits: bool
    softmax: bool
    closed_form: str
    hessian: str
    numpy_rows: Callable
    source: str = ""
    bias_in_optimum: bool = False
    logit_curvature: Callable[[object], float] = lambda problem: 0.0

    @property
    def branch(self) -> int:
        """Index of :attr:`function` in :data:`BRANCHES` (``Weights.loss_id``; a compiled program's static loss)."""
        return BRANCHES.index(self.function)

    def __call__(self, logits, labels, weights):
        """The per-sample losses ``(N,)`` of ``logits (K, N)`` with this loss's parameters from ``weights``."""
        return self.function(logits, labels, weights)

    def rows(self, Z, labels, *, log_p=None, **parameters) -> np.ndarray:
        """The per-sample losses ``(rows,)`` of numpy logits ``Z: (rows, K)`` (framework layout), float64 for
        float64 Z: the formulas of :attr:`function`. ``parameters``: Problem fields (``delta``, ``gamma``, ...);
        only this loss's :attr:`parameters` are read (``"ce"`` is label smoothing at delta 0 whatever
        ``delta`` says), the missing ones take their Problem defaults. ``log_p``: Z's row-wise log-softmax
        when already computed (else computed here for a softmax loss)."""
        if log_p is None and self.softmax:
            log_p = log_softmax(Z, axis=1)
        return self.numpy_rows(Z, labels, log_p, **{p: parameters[p] for p in self.parameters if p in parameters})


_GUO = "Guo et al. Thm 4.1, eq. 14, Thm 4.2"
#: The one registry of losses, by name (adding a loss: its per-sample function and one entry here).
LOSS_SPECS: dict[str, Loss] = {
    spec.name: spec
    for spec in (
        Loss("ce", _smoothed, (), True, True, "guo", "softmax", label_smoothing_rows, _GUO),  # LS at delta = 0
        Loss("ls", _smoothed, ("delta",), True, True, "guo", "softmax", label_smoothing_rows, _GUO),
        Loss(
            "focal",
            _focal,
            ("gamma",),
            convex_in_logits=False,
            softmax=True,
            closed_form="scalar",
            hessian="per_sample",
            numpy_rows=focal_rows,
            source="Zhou et al. Thm 1 + 1-D reduction, derived spectra",
        ),
        Loss(
            "mse",
            _mse,
            ("mse_kappa", "mse_beta"),
            convex_in_logits=True,
            softmax=False,
            closed_form="mse",
            hessian="per_sample",
            numpy_rows=rescaled_mse_rows,
            source="rescaled MSE, derived optimum with bias and spectra",
            bias_in_optimum=True,
            # MSE's Hessian in the logits is the constant 2 diag(kappa at the target, 1 elsewhere)
            logit_curvature=lambda problem: 2.0 * max(problem.mse_kappa, 1.0),  # type: ignore[attr-defined]
        ),
    )
}
#: The distinct per-sample functions of the registry, in its order: ``Weights.loss_id`` indexes them.
BRANCHES: tuple[Callable, ...] = tuple(dict.fromkeys(spec.function for spec in LOSS_SPECS.values()))
#: The loss names accepted at the boundary (``Problem.loss``, ``--loss``), in the order the command lines list them.
LOSSES = tuple(LOSS_SPECS)
#: The losses convex in the logits (:attr:`Loss.convex_in_logits`: the class-mean reduction is exact and the
#: d < K numerical optimum applies), in registry order.
CONVEX_LOSSES = tuple(name for name, spec in LOSS_SPECS.items() if spec.convex_in_logits)
#: Each name's branch index (``Problem.weights().loss_id``), for code that carries the loss as a traced number.
LOSS_IDS = {name: spec.branch for name, spec in LOSS_SPECS.items()}


def loss_spec(loss: str | Loss) -> Loss:
    """The :class:`Loss` of a name of :data:`LOSSES` (or the spec itself); ``ValueError`` naming ``loss``."""
    if isinstance(loss, Loss):
        return loss
    if not isinstance(loss, str) or loss not in LOSS_SPECS:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    return LOSS_SPECS[loss]


def branch_spec(branch: int) -> Loss:
    """The first :class:`Loss` of :data:`LOSS_SPECS` whose per-sample function is ``BRANCHES[branch]`` (the
    properties of a loss carried as a number, ``Weights.loss_id``: those of its function, shared by aliases)."""
    return next(spec for spec in LOSS_SPECS.values() if spec.branch == int(branch))


def per_sample_loss(logits, labels, weights):
    """The loss selected by ``weights.loss_id`` with its parameters from ``weights``, shape ``(N,)``."""
    if not isinstance(weights.loss_id, jax.core.Tracer):  # known now (e.g. closed over): no switch to trace
        return BRANCHES[min(max(int(weights.loss_id), 0), len(BRANCHES) - 1)](logits, labels, weights)
    index = jnp.clip(jnp.asarray(weights.loss_id).astype(jnp.int32), 0, len(BRANCHES) - 1)
    return jax.lax.switch(index, [lambda z, b=b: b(z, labels, weights) for b in BRANCHES], logits)
