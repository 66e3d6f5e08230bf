"""Experiment 3: the Hessian condition number against delta (Guo et al., Theorem 4.2).

kappa = K p_t from theory next to kappa measured from the W and H blocks of the
loss term at the solver's solution, over delta and K; and for one setting the
predicted spectrum (eigenvalues with multiplicities) against the measured one.
"""

from __future__ import annotations

import numpy as np

import theory
import ufm
from experiments._common import figure, label_log_axes, run

NAME = "condition_number"
LAM = 1e-3


def body(args, outputs):
    n = 5 if args.quick else 50
    Ks = (3, 10) if args.quick else (3, 5, 10, 20)
    deltas = np.linspace(0.0, 0.8, 5 if args.quick else 17)
    rows = []
    fig, axes = figure(1, 2, panel=(4.6, 3.4))
    for K in Ks:
        for delta in deltas:
            problem = ufm.Problem(K=K, n=n, delta=float(delta), lam_W=LAM, lam_H=LAM, lam_b=LAM, seed=0)
            result = ufm.solve(problem, tol=1e-11, max_iters=5000, history=False)
            kappa = theory.condition_number(K, float(delta), LAM, n=n, beyond_boundary="nan")
            kappas = {
                block: ufm.nonzero_condition_number(
                    ufm.block_eigenvalues(result.params, problem.labels(), problem.weights(), block).values
                )
                for block in ("W", "H")
            }
            rows.append(
                dict(
                    K=K,
                    n=n,
                    delta=float(delta),
                    lam=LAM,
                    status=result.status,
                    kappa_theory=kappa,
                    kappa_W=kappas["W"],
                    kappa_H=kappas["H"],
                    error_W=abs(kappas["W"] / kappa - 1),
                    error_H=abs(kappas["H"] / kappa - 1),
                )
            )
        grid = np.linspace(0, 0.95, 200)
        (line,) = axes[0].plot(grid, theory.condition_number(K, grid, LAM, n=n, beyond_boundary="nan"), lw=1.2)
        sub = [r for r in rows if r["K"] == K]
        # W: large open circles, H: small filled dots inside them (equal values stay visible)
        axes[0].plot(
            [r["delta"] for r in sub],
            [r["kappa_W"] for r in sub],
            "o",
            ms=9,
            mfc="none",
            mew=1.3,
            color=line.get_color(),
        )
        axes[0].plot([r["delta"] for r in sub], [r["kappa_H"] for r in sub], "o", ms=3.5, color=line.get_color())
        at = 0.5  # the curve's name above it
        kappa_at = theory.condition_number(K, at, LAM, n=n)
        axes[0].annotate(f"$K={K}$", (at, kappa_at), xytext=(4, 6), textcoords="offset points", color=line.get_color())
    axes[0].plot([], [], "k-", lw=1.2, label=r"$K\,p_t$ (Theorem 4.2)")
    axes[0].plot([], [], "ko", ms=9, mfc="none", mew=1.3, label=r"$\kappa$ of the $W$ block, measured")
    axes[0].plot([], [], "ko", ms=3.5, label=r"$\kappa$ of the $H$ block, measured")
    axes[0].set(
        xlabel=r"label smoothing $\delta$",
        ylabel="condition number (non-zero eigenvalues)",
        title=rf"Theorem 4.2: $\kappa = K\,p_t$ ($n={n}$, $\lambda={LAM:g}$)",
    )
    axes[0].legend(loc="upper right")

    K, delta = 5, 0.1
    problem = ufm.Problem(K=K, n=n, d=K + 2, delta=delta, lam_W=LAM, lam_H=LAM, lam_b=LAM, seed=1)
    result = ufm.solve(problem, tol=1e-11, max_iters=5000, history=False)
    predicted = theory.hessian_spectrum(K, n, K + 2, delta=delta, lam_W=LAM, lam_H=LAM).W
    measured = ufm.block_eigenvalues(result.params, problem.labels(), problem.weights(), "W").values
    nonzero = measured[measured > 1e-8 * measured.max()]
    axes[1].hist(
        nonzero,
        bins=np.geomspace(nonzero.min() / 1.2, nonzero.max() * 1.2, 60),
        color="lightgray",
        edgecolor="gray",
        label="measured (histogram)",
    )
    for value, count in zip(predicted.values, predicted.multiplicities, strict=True):
        if value > 0:  # the prediction as a marker on top of its bar: the bar stays visible
            axes[1].plot(value, count, "v", color="C3", ms=7)
            axes[1].annotate(f"×{count}", (value, count), xytext=(6, 2), textcoords="offset points", fontsize=9)
    axes[1].plot([], [], "v", color="C3", ms=7, label="predicted (value, multiplicity)")
    axes[1].set(
        xscale="log",
        ylim=(0, 1.15 * max(c for v, c in zip(predicted.values, predicted.multiplicities, strict=True) if v > 0)),
        xlabel="eigenvalue",
        ylabel="count",
        title=rf"$W$-block spectrum of $\phi$, $K={K}$, $d={K + 2}$, $\delta={delta}$",
    )
    label_log_axes(axes[1])
    axes[1].legend()
    outputs.csv("condition_number.csv", rows)
    outputs.csv("spectrum_W.csv", [dict(eigenvalue=float(v)) for v in measured])
    outputs.figure("condition_number.png", fig)
    worst = max(max(r["error_W"], r["error_H"]) for r in rows)
    print(f"worst relative error of measured kappa vs K p_t: {worst:.2e}")


def main(argv=None) -> int:
    return run(body, NAME, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    raise SystemExit(main())
