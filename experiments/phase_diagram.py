"""Experiment 5: the phase diagram of Theorem 4.1 in the (delta, sqrt(KN) lam_Z) plane.

Theory: p_t as an image with the boundary c = delta + sqrt(KN) lam_Z = 1 (above
it everything collapses to zero and p_t = 1/K). Solver points on top, coloured
by the p_t they reach.
"""

from __future__ import annotations

import numpy as np

import theory
import ufm
from experiments._common import figure, run

NAME = "phase_diagram"


def body(args, outputs):
    K, n = 4, 5
    deltas = np.linspace(0.0, 0.99, 300)
    scales = np.linspace(0.01, 1.5, 300)  # sqrt(K N) lam_Z = K sqrt(n) lam for lam_W = lam_H = lam
    lam = scales[:, None] / (K * np.sqrt(n))
    p_t, _ = theory.probabilities(K, n, delta=deltas[None, :], lam_W=lam, lam_H=lam)
    fig, ax = figure(panel=(4.8, 3.6))
    image = ax.pcolormesh(deltas, scales, p_t, shading="auto", cmap="viridis", vmin=1 / K, vmax=1)
    ax.plot(deltas, 1 - deltas, "w--", lw=1.5, label=r"boundary $c = \delta + \sqrt{KN}\,\lambda_Z = 1$")
    rows = []
    point_deltas = np.linspace(0.05, 0.95, 4 if args.quick else 10)
    point_scales = np.linspace(0.05, 1.4, 4 if args.quick else 10)
    problems = [
        ufm.Problem(
            K=K,
            n=n,
            delta=float(delta),
            lam_W=float(scale / (K * np.sqrt(n))),
            lam_H=float(scale / (K * np.sqrt(n))),
            lam_b=1e-2,
        )
        for delta in point_deltas
        for scale in point_scales
    ]
    swept = ufm.sweep(problems, tol=1e-11)  # one compiled call for every point (c = 1 needs ~5,000 iterations)
    for j, problem in enumerate(problems):
        comparison = ufm.compare(swept.result(j), spectra=False)
        row = {r.quantity: r for r in comparison.rows}["p_t"]
        scale = problem.lam_W * K * np.sqrt(n)
        rows.append(
            dict(
                delta=problem.delta,
                scale=float(scale),
                c=float(problem.delta + scale),
                status=swept.status[j],
                p_t_theory=row.theory,
                p_t_solver=row.measured,
                error=row.error,
            )
        )
    ax.scatter(
        [r["delta"] for r in rows],
        [r["scale"] for r in rows],
        c=[r["p_t_solver"] for r in rows],
        cmap="viridis",
        vmin=1 / K,
        vmax=1,
        edgecolors="red",
        s=50,
        label=r"solver (fill: the $p_t$ it reaches)",
    )
    fig.colorbar(image, ax=ax, label=r"$p_t$ of Theorem 4.1 (1/K above the boundary)")
    ax.set(
        xlabel=r"label smoothing $\delta$",
        ylabel=r"$\sqrt{KN}\,\lambda_Z$,  $\lambda_Z = \sqrt{\lambda_W \lambda_H}$",
        title=f"Phase diagram ($K={K}$, $n={n}$): $p_t$",
    )
    # below the axes: every solver point stays visible
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.17), ncols=2, frameon=False)
    outputs.csv("phase_diagram.csv", rows)
    outputs.figure("phase_diagram.png", fig)
    print(f"worst relative p_t error over {len(rows)} solver points: {max(r['error'] for r in rows):.2e}")


def main(argv=None) -> int:
    return run(body, NAME, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    raise SystemExit(main())
