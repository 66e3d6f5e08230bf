"""Experiment 2: cross entropy vs label smoothing, convergence of plain gradient descent (Guo et al., §3.1, Fig. 1).

One seeded initialisation is trained by full-batch gradient descent with delta = 0
(CE) and several delta > 0 (LS), with one common step ``1 / L`` (L the largest
joint-Hessian eigenvalue of L over all deltas, at the initialisation and at the
minimizer: safe for every run). Every ``EVERY`` iterations NC1, NC2, NC3, the
training error and the distance to the closed-form optimum in logit space,
``||W^T Hbar - a^delta M||_F / ||a^delta M||_F`` (Theorem 4.1), are recorded.
The table gives, per delta, the first recorded iteration at which each quantity
is below a fixed tolerance (resolution ``EVERY`` iterations).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

import theory
import ufm
from experiments._common import figure, gd_checkpoints, label_log_axes, logit_error, run
from ufm import curvature

NAME = "convergence"
EVERY = 25
LAM = 5e-4
LOGIT_TOLERANCES = (1e-2, 1e-4, 1e-6)
NC_TOLERANCE = 1e-6
CURVES = ("logit_error", "nc1", "nc2", "nc3", "train_error")


def settings(quick: bool):
    if quick:
        return 10, 10, (0.0, 0.05, 0.1, 0.2, 0.3), 20_000
    return 10, 100, (0.0, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4), 100_000


def problems(K, n, deltas):
    return [ufm.Problem(K=K, n=n, delta=delta, lam_W=LAM, lam_H=LAM, lam_b=LAM, seed=0) for delta in deltas]


def common_step(problems_) -> float:
    """``1 / L`` with L the largest joint curvature at the start and at the optimum, over all problems."""
    curvatures = []
    for p in problems_:
        optimum = ufm.Params(*(jnp.asarray(x) for x in theory.global_minimizer(p.K, p.n, p.d, p.delta, LAM, LAM)))
        for point in (p.init(), optimum):
            curvatures.append(curvature.largest_curvature(point, p.labels(), p.weights()))
    return 1.0 / max(curvatures)


def trajectory(problem, lr: float, max_iters: int) -> list[dict]:
    K, n, labels = problem.K, problem.n, problem.labels()
    rows = []
    for iteration, params in gd_checkpoints(problem, lr, EVERY, max_iters):
        nc = ufm.collapse(params.W, params.H, labels, K)
        predicted = np.argmax(np.asarray(ufm.logits(params)), axis=0)
        error = logit_error(params, K, n, problem.delta, LAM, LAM)
        rows.append(
            dict(
                delta=problem.delta,
                iteration=iteration,
                logit_error=error,
                nc1=float(nc.nc1),
                nc2=float(nc.nc2),
                nc3=float(nc.nc3),
                train_error=float(np.mean(predicted != np.asarray(labels))),
            )
        )
        if error <= 0.1 * min(LOGIT_TOLERANCES):
            break
    return rows


def first_below(rows, key: str, tolerance: float):
    hits = [r["iteration"] for r in rows if abs(r[key]) <= tolerance]
    return hits[0] if hits else None


def body(args, outputs):
    K, n, deltas, max_iters = settings(args.quick)
    runs = problems(K, n, deltas)
    lr = common_step(runs)
    curves, table = [], []
    fig, axes = figure(2, 3)
    for problem in runs:
        rows = trajectory(problem, lr, max_iters)
        curves += rows
        reached = first_below(rows, "logit_error", min(LOGIT_TOLERANCES)) is not None
        entry = dict(
            delta=problem.delta,
            K=K,
            n=n,
            lam=LAM,
            lr=lr,
            a_delta=theory.a_delta(K, n, problem.delta, LAM, LAM),
            K_p_t=theory.condition_number(K, problem.delta, LAM, n=n),
            status="converged" if reached else "max_iters",
        )
        for tol in LOGIT_TOLERANCES:
            entry[f"iterations_logit_{tol:g}"] = first_below(rows, "logit_error", tol)
        for key in ("nc1", "nc2", "nc3"):
            entry[f"iterations_{key}_{NC_TOLERANCE:g}"] = first_below(rows, key, NC_TOLERANCE)
        entry["iterations_train_error_0"] = first_below(rows, "train_error", 0.0)
        table.append(entry)
        iterations = [r["iteration"] for r in rows]
        for ax, key in zip(axes.ravel(), CURVES, strict=False):
            values = np.maximum([abs(r[key]) for r in rows], 1e-18)
            ax.plot(iterations, values, label=f"delta={problem.delta:g}" + (" (CE)" if problem.delta == 0 else ""))
    labels = {
        "logit_error": "||W^T Hbar - a M|| / ||a M||",
        "nc1": "NC1",
        "nc2": "NC2",
        "nc3": "NC3",
        "train_error": "training error",
    }
    # training error reaches 0 within the first recorded steps: that panel shows the start only
    start = max(e["iterations_train_error_0"] or 0 for e in table)
    for ax, key in zip(axes.ravel(), CURVES, strict=False):
        if key == "train_error":
            ax.set(xlim=(0, 4 * max(start, EVERY)), title="training error (first iterations)")
        else:
            ax.set(yscale="log")
            label_log_axes(ax)
        ax.set(xlabel="gradient-descent iteration", ylabel=labels[key])
    axes[0, 0].legend()
    ax = axes[1, 2]
    tol = min(LOGIT_TOLERANCES)
    ax.bar(
        [f"{e['delta']:g}" for e in table],
        [e[f"iterations_logit_{tol:g}"] or max_iters for e in table],
        color=["C3" if e["delta"] == 0 else "C0" for e in table],
    )
    ax.set(xlabel="delta", ylabel=f"iterations to logit error <= {tol:g}", title="iterations to tolerance")
    fig.suptitle(f"Plain GD from one initialisation: K={K}, n={n}, lam={LAM:g}, step {lr:.3g} for every delta")
    outputs.csv(f"{NAME}.csv", table)
    outputs.csv("curves.csv", curves)
    outputs.figure(f"{NAME}.png", fig)
    for e in table:
        counts = ", ".join(f"{tol:g}: {e[f'iterations_logit_{tol:g}']}" for tol in LOGIT_TOLERANCES)
        print(f"delta={e['delta']:<6g} K p_t={e['K_p_t']:.3f}  iterations to logit error {counts}")


def main(argv=None) -> int:
    return run(body, NAME, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    raise SystemExit(main())
