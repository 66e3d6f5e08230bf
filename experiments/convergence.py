"""Experiment 2: cross entropy vs label smoothing, convergence of plain gradient descent (Guo et al., §3.1, Fig. 1).

One seeded initialisation is trained by full-batch gradient descent with delta = 0
(CE) and several delta > 0 (LS), with one common step ``1 / L`` (L the largest
joint-Hessian eigenvalue of L over all deltas, at the initialisation and at the
minimizer: safe for every run). Every ``EVERY`` iterations NC1, NC2, NC3, the
training error and the distance to the closed-form optimum in logit space,
``||W^T Hbar - a^delta M||_F / ||a^delta M||_F`` (Theorem 4.1), are recorded.
The table gives, per delta, the first recorded iteration at which each quantity
is below a fixed tolerance (resolution ``EVERY`` iterations); the training error is also recorded at
every one of the first ``EVERY`` iterations (``first_iterations.csv``), where it falls to 0.
"""

from __future__ import annotations

import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import theory
import ufm
from experiments._common import figure, gd_checkpoints, label_log_axes, logit_error, run
from ufm import curvature
from ufm.methods import METHOD_SPECS

NAME = "convergence"
EVERY = 25
LAM = 5e-4
LOGIT_TOLERANCES = (1e-2, 1e-4, 1e-6)
NC_TOLERANCE = 1e-6


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
        optimum = ufm.Params(
            *(jnp.asarray(x) for x in theory.global_minimizer(p.K, p.n, p.d, delta=p.delta, lam_W=LAM, lam_H=LAM))
        )
        for point in (p.init(), optimum):
            curvatures.append(curvature.largest_curvature(point, p.labels(), p.weights()))
    return METHOD_SPECS["gd"].safe_step(max(curvatures))  # 1 / L: gd's safe fraction 0.5 of its limit 2 / L


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


def first_iterations(problem, lr: float) -> list[dict]:
    """The training error at every one of the first ``EVERY`` iterations (the curves record every ``EVERY``:
    at that resolution the training error jumps from its start to 0 in one record)."""
    labels = np.asarray(problem.labels())
    return [
        dict(
            delta=problem.delta,
            iteration=iteration,
            train_error=float(np.mean(np.argmax(np.asarray(ufm.logits(params)), axis=0) != labels)),
        )
        for iteration, params in gd_checkpoints(problem, lr, 1, EVERY)
    ]


def body(args, outputs):
    K, n, deltas, max_iters = settings(args.quick)
    runs = problems(K, n, deltas)
    lr = common_step(runs)
    curves, table, start = [], [], []
    for problem in runs:
        rows = trajectory(problem, lr, max_iters)
        curves += rows
        first = first_iterations(problem, lr)
        start += first
        reached = first_below(rows, "logit_error", min(LOGIT_TOLERANCES)) is not None
        entry = dict(
            delta=problem.delta,
            K=K,
            n=n,
            lam=LAM,
            lr=lr,
            a_delta=theory.a_delta(K, n, delta=problem.delta, lam_W=LAM, lam_H=LAM),
            K_p_t=theory.condition_number(K, problem.delta, LAM, n=n),
            status="converged" if reached else "max_iters",
        )
        for tol in LOGIT_TOLERANCES:
            entry[f"iterations_logit_{tol:g}"] = first_below(rows, "logit_error", tol)
        for key in ("nc1", "nc2", "nc3"):
            entry[f"iterations_{key}_{NC_TOLERANCE:g}"] = first_below(rows, key, NC_TOLERANCE)
        entry["iterations_train_error_0"] = first_below(first, "train_error", 0.0)
        table.append(entry)
    outputs.csv(f"{NAME}.csv", table)
    outputs.csv("curves.csv", curves)
    outputs.csv("first_iterations.csv", start)
    outputs.figure(f"{NAME}.png", plot(table, curves, start, K, n, lr, max_iters))
    for e in table:
        counts = ", ".join(f"{tol:g}: {e[f'iterations_logit_{tol:g}']}" for tol in LOGIT_TOLERANCES)
        print(
            f"delta={e['delta']:<6g} K p_t={e['K_p_t']:.3f}  iterations to logit error {counts}; "
            + (
                f"training error 0 from iteration {e['iterations_train_error_0']}"
                if e["iterations_train_error_0"] is not None
                else f"training error not 0 within the first {EVERY} iterations, 0 at the recorded iteration "
                f"{first_below([c for c in curves if c['delta'] == e['delta']], 'train_error', 0.0)}"
            )
        )


def delta_label(delta: float) -> str:
    return r"$\delta=0$ (CE)" if delta == 0 else rf"$\delta={delta:g}$"


def plot(table, curves, start, K: int, n: int, lr: float, max_iters: int):
    """Logit distance, NC1-NC3 over the iterations (log scale, every ``EVERY``), the training error over the
    first ``EVERY`` iterations (every iteration), iterations to the tightest logit tolerance per delta."""
    fig, axes = figure(2, 3)
    labels = {
        "logit_error": r"$\|W^\top\bar H - aM\|_F\,/\,\|aM\|_F$",
        "nc1": "NC1",
        "nc2": "NC2",
        "nc3": "NC3",
    }
    titles = {
        "logit_error": r"distance to Theorem 4.1's logits $aM$",
        "nc1": "NC1 (each curve ends where float64\nrounding makes it $\\leq 0$)",
        "nc2": "NC2",
        "nc3": "NC3",
    }
    for j, delta in enumerate(e["delta"] for e in table):
        rows = [r for r in curves if r["delta"] == delta]
        color = "C3" if delta == 0 else plt.cm.viridis(0.15 + 0.7 * (j - 1) / max(len(table) - 2, 1))
        for ax, key in zip(axes.ravel(), labels, strict=False):
            values = np.array([r[key] for r in rows])
            stop = int(np.argmax(values <= 0)) if np.any(values <= 0) else len(values)  # rounding from here on
            ax.plot([r["iteration"] for r in rows][:stop], values[:stop], color=color, label=delta_label(delta))
        first = [r for r in start if r["delta"] == delta]
        axes[1, 1].plot(
            [r["iteration"] for r in first],
            [r["train_error"] for r in first],
            "o-",
            ms=3,
            color=color,
            lw=1.0,
            alpha=0.8,
        )
    for ax, key in zip(axes.ravel(), labels, strict=False):
        ax.set(yscale="log", xlabel="gradient-descent iteration", ylabel=labels[key], title=titles[key])
        label_log_axes(ax)
    zeros = [e["iterations_train_error_0"] for e in table]
    reached = (
        f"0 after {min(zeros)} to {max(zeros)} iterations (by $\\delta$)"
        if None not in zeros
        else f"not 0 within {EVERY} iterations for every $\\delta$"
    )
    axes[1, 1].set(xlabel="gradient-descent iteration", ylabel="training error", title=f"training error:\n{reached}")
    ax = axes[1, 2]
    tol = min(LOGIT_TOLERANCES)
    ax.bar(
        [f"{e['delta']:g}" for e in table],
        [e[f"iterations_logit_{tol:g}"] or max_iters for e in table],
        color=["C3" if e["delta"] == 0 else "C0" for e in table],
    )
    ax.set(
        xlabel=r"$\delta$ (0: CE)",
        ylabel="GD iterations",
        title=f"iterations to logit distance $\\leq$ {tol:g}\n(resolution {EVERY})",
    )
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside lower center", ncols=len(table))
    fig.suptitle(
        f"Plain gradient descent from one initialisation: $K={K}$, $n={n}$, "
        rf"$\lambda_W=\lambda_H=\lambda_b={LAM:g}$, step {lr:.3g} for every $\delta$"
    )
    return fig


def main(argv=None) -> int:
    return run(body, NAME, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    raise SystemExit(main())
