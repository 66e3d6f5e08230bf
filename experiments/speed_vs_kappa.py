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
effect of delta alone, the paper's claim) (marker size grows with lam, colour is
delta), and the measured asymptotic rate of ``log ||grad L||`` is
compared with the linearised prediction ``-log(1 - lr mu)``.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

import theory
import ufm
from experiments._common import figure, gd_checkpoints, label_log_axes, logit_error, run
from ufm import curvature

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
    optimum = ufm.Params(*(jnp.asarray(x) for x in theory.global_minimizer(K, n, K, delta, lam, lam, seed=1)))
    joint_all = curvature.joint_eigenvalues(optimum, labels, weights)
    top, mu, zeros = curvature.nonzero_range(joint_all)
    top_wh, mu_wh, _ = curvature.nonzero_range(curvature.joint_eigenvalues(optimum, labels, weights, ("W", "H")))
    lipschitz = max(top, curvature.largest_curvature(problem.init(), labels, weights))
    lr = 1.0 / lipschitz
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


def body(args, outputs):
    K, n, deltas, lams = grid(args.quick)
    rows = [measure(K, n, float(delta), float(lam)) for lam in lams for delta in deltas]
    fits = []
    for target in TARGETS:
        for q in CANDIDATES:
            x, y, lam = [r[q] for r in rows], [r[target] for r in rows], [r["lam"] for r in rows]
            slope, r2 = fit(x, y)
            slope_within, r2_within = fit(x, y, groups=lam)
            fits.append(
                dict(
                    target=target,
                    quantity=q,
                    slope=slope,
                    r2=r2,
                    slope_within_lam=slope_within,
                    r2_within_lam=r2_within,
                )
            )
    fig, axes = figure(2, 3, panel=(4.4, 3.6))
    for ax, q in zip(axes.ravel(), CANDIDATES, strict=False):
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
                    s=12 + 10 * j,
                    label=f"{target}, lam={lam:g}" if q == CANDIDATES[0] else None,
                )
        r2 = {f["target"]: (f["r2"], f["r2_within_lam"]) for f in fits if f["quantity"] == q}
        ax.set(
            xscale="log",
            yscale="log",
            xlabel=q,
            ylabel="GD iterations (o: gradient, x: logits)",
            title="R^2 over the grid: gradient {:.2f}, logits {:.2f}\nR^2 at fixed lam: gradient {:.2f}, "
            "logits {:.2f}".format(
                r2["iterations_grad"][0], r2["iterations_logit"][0], r2["iterations_grad"][1], r2["iterations_logit"][1]
            ),
        )
        ax.title.set_fontsize(9)
        label_log_axes(ax)
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside lower center", ncols=3)
    fig.colorbar(points, ax=axes[0, :], label="delta", fraction=0.02)
    ax = axes[1, 2]
    measured = np.array([r["rate_measured"] for r in rows])
    predicted = np.array([r["rate_predicted"] for r in rows])
    ax.loglog(predicted, measured, "o")
    span = np.array([np.nanmin(predicted), np.nanmax(predicted)])
    ax.loglog(span, span, "k:", label="measured = predicted")
    ax.set(
        xlabel="-log(1 - lr mu): linearised GD rate",
        ylabel="measured rate of log |grad L|",
        title="asymptotic rate vs joint Hessian",
    )
    label_log_axes(ax)
    ax.legend()
    fig.suptitle(f"Plain GD (step 1/L) on the UFM, K={K}, n={n}: which condition number predicts the iterations?")
    outputs.csv(f"{NAME}.csv", rows)
    outputs.csv("fits.csv", fits)
    outputs.figure(f"{NAME}.png", fig)
    for f in fits:
        print(
            f"log({f['target']}) vs log({f['quantity']}): slope {f['slope']:+.3f}, R^2 {f['r2']:.3f}; "
            f"at fixed lam: slope {f['slope_within_lam']:+.3f}, R^2 {f['r2_within_lam']:.3f}"
        )
    error = np.nanmax(np.abs(measured / predicted - 1))
    print(f"asymptotic rate vs linearised prediction: worst relative difference {error:.2e}")


def main(argv=None) -> int:
    return run(body, NAME, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    raise SystemExit(main())
