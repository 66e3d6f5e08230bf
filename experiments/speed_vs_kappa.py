"""Experiment 4: does the condition number explain how fast gradient descent converges?

Guo et al. (§4.2) explain the faster convergence under label smoothing by the
smaller condition number K p_t of the loss-term Hessian blocks (Theorem 4.2).
Here plain gradient descent runs over a grid of (delta, lam) with the step
``1 / L``, L the largest eigenvalue of the joint Hessian of the full objective
(the larger of its values at the initialisation and at the minimizer, so the
step is safe along the whole run). Its iteration count to a fixed relative
gradient tolerance is set against four candidate explanations, each evaluated
at the Theorem 4.1 minimizer:

* ``K p_t``: Theorem 4.2's condition number of the loss-term blocks;
* ``kappa_W_reg``, ``kappa_H_reg``: condition numbers of the regularized blocks of L;
* ``kappa_joint``: the joint Hessian of L over (W, H), non-zero eigenvalues
  (the zeros are the O(d) symmetry directions);
* ``kappa_step``: ``1 / (lr mu)``, mu the smallest non-zero eigenvalue of the
  joint Hessian over (W, H, b): the linear-convergence constant of GD itself.

Two iteration counts are fitted: to the gradient tolerance (every direction,
including those only the regularizer sees) and to a logit-space tolerance
(the collapse geometry, which the NC metrics see). For each pair a
least-squares fit ``log(iterations) = slope log(quantity) + c`` with its R^2
is reported, over the whole grid and at fixed lam (per-lam intercepts: the
effect of delta alone, the paper's claim; not made for a quantity that varies by less than
``MIN_RANGE`` within every lam, such as kappa_step = 1/(lr lam) where mu = lam) (marker size grows
with lam, colour is delta), and the measured asymptotic rate of ``log ||grad L||`` is
compared with the linearised prediction ``-log(1 - lr mu)``.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np
from matplotlib.lines import Line2D

import theory
import ufm
from experiments._common import figure, gd_checkpoints, label_log_axes, logit_error, run
from ufm import curvature
from ufm.methods import METHOD_SPECS

NAME = "speed_vs_kappa"
TOL = 1e-8  # relative gradient-norm tolerance of the timed GD runs
LOGIT_TOL = 1e-6  # relative logit-space distance to Theorem 4.1's optimum
EVERY = 10  # resolution of the logit-distance iteration count
TARGETS = {
    "iterations_grad": f"|grad L| / |grad L(x0)| <= {TOL:g}",
    "iterations_logit": f"||W^T Hbar - a M|| / ||a M|| <= {LOGIT_TOL:g}",
}
CANDIDATES = ("K_p_t", "kappa_W_reg", "kappa_H_reg", "kappa_joint", "kappa_step")


def grid(quick: bool):
    if quick:
        return 4, 5, (0.0, 0.1, 0.2, 0.3, 0.5), (1e-3, 3e-3, 1e-2)
    return 10, 10, tuple(np.round(np.linspace(0.0, 0.6, 13), 3)), (5e-4, 1e-3, 2e-3, 5e-3, 1e-2)


def fit(x, y, groups=None) -> tuple[float, float]:
    """Slope and R^2 of the least-squares line ``log y = slope log x + c``.

    With ``groups`` (e.g. the lam of each point) each group gets its own
    intercept: slope and R^2 then measure only the variation within groups,
    here the effect of delta at fixed lam, which is the paper's claim.
    """
    lx, ly = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    if groups is not None:
        groups = np.asarray(groups)
        for g in np.unique(groups):
            lx[groups == g] -= lx[groups == g].mean()
            ly[groups == g] -= ly[groups == g].mean()
    slope, intercept = np.polyfit(lx, ly, 1)
    residual = ly - (slope * lx + intercept)
    total = np.sum((ly - ly.mean()) ** 2)
    return float(slope), float(1 - np.sum(residual**2) / total) if total > 0 else float("nan")


def asymptotic_rate(history, tol: float) -> float:
    """Decay rate of log ||grad L|| per iteration over the tail of the run.

    Uses the recorded points whose gradient ratio lies within 1e-3 .. tol of the
    start: the linear (asymptotic) phase. NaN when fewer than 3 such points exist.
    """
    ratio = history["grad_norm"] / history["grad_norm"][0]
    tail = (ratio <= 1e-3) & (ratio >= tol)
    if tail.sum() < 3:
        return float("nan")
    slope = np.polyfit(history["iteration"][tail], np.log(history["grad_norm"][tail]), 1)[0]
    return float(-slope)


def measure(K: int, n: int, delta: float, lam: float) -> dict:
    problem = ufm.Problem(K=K, n=n, delta=delta, lam_W=lam, lam_H=lam, lam_b=lam, seed=0)
    labels, weights = problem.labels(), problem.weights()
    optimum = ufm.Params(
        *(jnp.asarray(x) for x in theory.global_minimizer(K, n, K, delta=delta, lam_W=lam, lam_H=lam, seed=1))
    )
    joint_all = curvature.joint_eigenvalues(optimum, labels, weights)
    top, mu, zeros = curvature.nonzero_range(joint_all)
    top_wh, mu_wh, _ = curvature.nonzero_range(curvature.joint_eigenvalues(optimum, labels, weights, ("W", "H")))
    lipschitz = max(top, curvature.largest_curvature(problem.init(), labels, weights))
    lr = METHOD_SPECS["gd"].safe_step(lipschitz)  # 1 / L (gd's safe fraction 0.5 of its limit 2 / L)
    block = lambda name: ufm.nonzero_condition_number(
        ufm.block_eigenvalues(optimum, labels, weights, name, regularized=True).values
    )
    result = ufm.solve(problem, "gd", lr=lr, tol=TOL, max_iters=400_000, record_every=10)
    iterations_logit = None
    for iteration, params in gd_checkpoints(problem, lr, EVERY, result.iterations + EVERY):
        if logit_error(params, K, n, delta, lam, lam) <= LOGIT_TOL:
            iterations_logit = iteration
            break
    status = result.status if iterations_logit is not None else "max_iters"
    return dict(
        K=K,
        n=n,
        delta=delta,
        lam=lam,
        status=status,
        iterations_grad=result.iterations,
        iterations_logit=iterations_logit,
        lr=lr,
        K_p_t=theory.condition_number(K, delta, lam, n=n),
        kappa_W_reg=block("W"),
        kappa_H_reg=block("H"),
        kappa_joint=top_wh / mu_wh,
        kappa_step=1.0 / (lr * mu),
        symmetry_zeros=zeros,
        rate_measured=asymptotic_rate(result.history, TOL),
        rate_predicted=float(-np.log1p(-lr * mu)),
    )


#: the candidates' names in the figure
SYMBOLS = {
    "K_p_t": r"$K\,p_t$ (Theorem 4.2)",
    "kappa_W_reg": r"$\kappa_W$ of the regularized $W$ block",
    "kappa_H_reg": r"$\kappa_H$ of the regularized $H$ block",
    "kappa_joint": r"$\kappa$ of the joint $(W, H)$ Hessian",
    "kappa_step": r"$\kappa_{\mathrm{step}} = 1/(\mathrm{lr}\,\mu)$",
}
#: the names in the console summary
NAMES = {
    "K_p_t": "K p_t",
    "kappa_W_reg": "kappa_W (regularized W block)",
    "kappa_H_reg": "kappa_H (regularized H block)",
    "kappa_joint": "kappa of the joint (W, H) Hessian",
    "kappa_step": "kappa_step = 1/(lr mu)",
}
#: a quantity that varies by less than this (max / min - 1) within every lam cannot explain anything at
#: fixed lam: its fixed-lam fit is not made (a slope over a nearly constant regressor is noise / its range)
MIN_RANGE = 0.01
#: a fixed-lam fit whose R^2 is below this explains (almost) none of the variation: its slope's sign is not
#: read as a direction ("wrong sign"), the summary says there is no relation instead
MIN_R2 = 0.05


def sign_note(f: dict) -> str:
    """How the fixed-lam slope of fit ``f`` reads: "none" (R^2 below :data:`MIN_R2`), "wrong" (negative: a
    smaller quantity goes with more iterations) or "right"."""
    if f["r2_within_lam"] < MIN_R2:
        return "none"
    return "wrong" if f["slope_within_lam"] < 0 else "right"


def within_range(values, groups) -> float:
    """The largest relative range ``max / min - 1`` of ``values`` within one group."""
    values, groups = np.asarray(values, float), np.asarray(groups)
    return float(max(values[groups == g].max() / values[groups == g].min() - 1 for g in np.unique(groups)))


def fits_of(rows) -> list[dict]:
    """Per target and candidate: the fit over the grid and at fixed lam, with the ranges within one lam of the
    candidate and of the iterations (the fixed-lam fit is NaN where the candidate barely varies)."""
    fits = []
    lam = [r["lam"] for r in rows]
    for target in TARGETS:
        y = [r[target] for r in rows]
        for q in CANDIDATES:
            x = [r[q] for r in rows]
            slope, r2 = fit(x, y)
            spread = within_range(x, lam)
            slope_within, r2_within = fit(x, y, groups=lam) if spread >= MIN_RANGE else (float("nan"),) * 2
            fits.append(
                dict(
                    target=target,
                    quantity=q,
                    slope=slope,
                    r2=r2,
                    slope_within_lam=slope_within,
                    r2_within_lam=r2_within,
                    range_within_lam=spread,
                    target_range_within_lam=within_range(y, lam),
                )
            )
    return fits


def describe(f: dict) -> str:
    """One line of the console summary: what the fits say, in words where a number alone would mislead."""
    name = NAMES[f["quantity"]]
    line = f"  {name}: over the grid slope {f['slope']:+.3f}, R^2 {f['r2']:.3f}; at fixed lam "
    if np.isnan(f["slope_within_lam"]):
        return line + (
            f"not fitted: {name} varies by only {100 * f['range_within_lam']:.2g} % within each lam "
            f"(a fit needs {100 * MIN_RANGE:g} %)"
        )
    line += f"slope {f['slope_within_lam']:+.3f}, R^2 {f['r2_within_lam']:.3f}"
    if sign_note(f) == "none":
        line += f" (no relation at fixed lam: R^2 below {MIN_R2:g})"
    elif sign_note(f) == "wrong":
        line += (
            f" (negative: at fixed lam a smaller {name} goes with more iterations, the opposite of "
            f"'smaller kappa, faster'; over a {100 * f['range_within_lam']:.0f} % range of {name} the iterations "
            f"change by {100 * f['target_range_within_lam']:.2g} %)"
        )
    return line


def body(args, outputs):
    K, n, deltas, lams = grid(args.quick)
    rows = [measure(K, n, float(delta), float(lam)) for lam in lams for delta in deltas]
    fits = fits_of(rows)
    outputs.csv(f"{NAME}.csv", rows)
    outputs.csv("fits.csv", fits)
    outputs.figure(f"{NAME}.png", plot(rows, fits, K, n, deltas, lams))
    for target, words in TARGETS.items():
        print(f"log(iterations to {words}) against log(quantity):")
        for f in fits:
            if f["target"] == target:
                print(describe(f))
    measured = np.array([r["rate_measured"] for r in rows])
    predicted = np.array([r["rate_predicted"] for r in rows])
    error = np.nanmax(np.abs(measured / predicted - 1))
    print(f"asymptotic rate vs linearised prediction: worst relative difference {error:.2e}")


def plot(rows, fits, K: int, n: int, deltas, lams):
    """One panel per candidate (the W and H blocks share one where their kappas are equal), iterations against
    the candidate (colour: delta, size: lam, o / x: gradient / logit tolerance); the asymptotic rate."""
    same_blocks = all(abs(r["kappa_H_reg"] / r["kappa_W_reg"] - 1) <= 1e-9 for r in rows)
    shown = [q for q in CANDIDATES if not (same_blocks and q == "kappa_H_reg")]
    fig, axes = figure(2, 3, panel=(4.0, 3.3))
    panels = list(axes.ravel())
    for ax, q in zip(panels, shown, strict=False):
        for target, marker in zip(TARGETS, "ox", strict=True):
            for j, lam in enumerate(lams):
                sub = [r for r in rows if r["lam"] == lam]
                points = ax.scatter(
                    [r[q] for r in sub],
                    [r[target] for r in sub],
                    c=[r["delta"] for r in sub],
                    cmap="viridis",
                    vmin=0,
                    vmax=max(deltas),
                    marker=marker,
                    s=12 + 14 * j,
                )
        by = {f["target"]: f for f in fits if f["quantity"] == q}
        grad, logit = by["iterations_grad"], by["iterations_logit"]
        if np.isnan(grad["slope_within_lam"]):
            within = f"at fixed $\\lambda$: no fit (varies < {100 * MIN_RANGE:g} %)"
        else:
            within = (
                f"at fixed $\\lambda$: {grad['r2_within_lam']:.2f} / {logit['r2_within_lam']:.2f}, "
                f"slope {grad['slope_within_lam']:+.2f}"
                + {"none": " (no relation)", "wrong": " (wrong sign)", "right": ""}[sign_note(grad)]
            )
        label = SYMBOLS[q] + (r" $= \kappa_H$" if q == "kappa_W_reg" and same_blocks else "")
        ax.set(
            xscale="log",
            yscale="log",
            xlabel=label,
            ylabel="GD iterations",
            title=f"$R^2$ gradient / logits: grid {grad['r2']:.2f} / {logit['r2']:.2f}\n{within}",
        )
        ax.title.set_fontsize(9)
        label_log_axes(ax)
    ax = panels[len(shown)]
    measured = np.array([r["rate_measured"] for r in rows])
    predicted = np.array([r["rate_predicted"] for r in rows])
    ax.loglog(predicted, measured, "o", color="C0", label="one run")
    span = np.array([np.nanmin(predicted), np.nanmax(predicted)])
    ax.loglog(span, span, "k:", label="measured = predicted")
    ax.set(
        xlabel=r"linearised GD rate $-\log(1 - \mathrm{lr}\,\mu)$",
        ylabel=r"measured decay rate of $\log\|\nabla L\|$",
        title="asymptotic rate vs the joint Hessian",
    )
    label_log_axes(ax)
    ax.legend(loc="upper left")
    grey: dict[str, Any] = dict(color="grey", ls="none")
    handles = [
        Line2D(
            [], [], marker="o", label="to " + r"$\|\nabla L\| \leq$" + f" {TOL:g} " + r"$\|\nabla L(x_0)\|$", **grey
        ),
        Line2D(
            [], [], marker="x", label="to " + r"$\|W^\top\bar H - aM\| \leq$" + f" {LOGIT_TOL:g} " + r"$\|aM\|$", **grey
        ),
    ] + [
        Line2D([], [], marker="o", ms=np.sqrt(12 + 14 * j), label=rf"$\lambda = {lam:g}$ (marker size)", **grey)
        for j, lam in enumerate(lams)
    ]
    spare = panels[len(shown) + 1 :]
    if spare:  # the legend in the first free panel
        spare[0].axis("off")
        spare[0].legend(handles=handles, loc="center", title="iterations counted", fontsize=9, frameon=False)
        for ax in spare[1:]:
            ax.remove()
    else:
        fig.legend(handles=handles, loc="outside lower center", ncols=2)
    fig.colorbar(points, ax=axes[0, :], label=r"label smoothing $\delta$", fraction=0.02)
    fig.suptitle(f"Plain GD (step 1/L) on the UFM, $K={K}$, $n={n}$: which condition number predicts the iterations?")
    return fig


def main(argv=None) -> int:
    return run(body, NAME, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    raise SystemExit(main())
