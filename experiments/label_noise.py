"""Experiment 7: label noise: dilation of corrupted samples under CE vs LS (Nguyen et al. 2023, Thm 4.3).

A seeded fraction eta of the labels is moved to another class (``Problem.label_noise``); the
solver fits the observed labels. Measured with the *true* labels (``ufm.metrics.dilation``): the
distance of each corrupted feature from the mean of the clean samples of its true class, relative
to the mean distance between class means, and NC1 per true class. Nguyen et al.'s Theorem 4.3
predicts less dilation under LS than CE at low noise in their memorization-dilation (MD) model,
which *adds* limited expressivity to the UFM; the plain UFM solved here has free features.

A nan in ``label_noise.csv``'s ``dilation`` column means the quantity does not exist: at eta = 0 no sample
is corrupted (``corrupted`` = 0), so there is no corrupted feature to measure.
"""

from __future__ import annotations

import numpy as np

import ufm
from experiments._common import figure, run
from ufm.metrics import dilation

NAME = "label_noise"


def body(args, outputs):
    K, n, d, lam = (4, 10, 6, 5e-3) if args.quick else (10, 50, 12, 5e-4)
    etas = (0.0, 0.05, 0.1, 0.2, 0.3) if args.quick else tuple(np.round(np.linspace(0, 0.4, 9), 3))
    deltas = (0.0, 0.1, 0.3) if args.quick else (0.0, 0.05, 0.1, 0.2, 0.3, 0.5)
    rows = []
    for delta in deltas:
        for eta in etas:
            problem = ufm.Problem(
                K=K,
                n=n,
                d=d,
                loss="ls",
                delta=float(delta),
                lam_W=lam,
                lam_H=lam,
                lam_b=lam,
                label_noise=float(eta),
                noise_seed=1,
                seed=0,
            )
            result = ufm.solve(problem, tol=1e-11, max_iters=20_000, history=False)
            measured = dilation(result.H, problem.true_labels(), problem.corrupted(), K)
            observed_nc1 = float(ufm.nc1(result.H, problem.labels(), K))
            rows.append(
                dict(
                    delta=float(delta),
                    loss="ce" if delta == 0 else "ls",
                    eta=float(eta),
                    K=K,
                    n=n,
                    d=d,
                    lam=lam,
                    status=result.status,
                    corrupted=int(problem.corrupted().sum()),
                    dilation=measured.dilation,
                    nc1_true_mean=float(np.mean(measured.nc1_true)),
                    nc1_true_max=float(np.max(measured.nc1_true)),
                    nc1_observed=observed_nc1,
                )
            )
    outputs.csv(f"{NAME}.csv", rows)
    fig, axes = figure(1, 2, panel=(4.8, 3.4))
    for delta in deltas:
        sub = [r for r in rows if r["delta"] == delta]
        name = "CE" if delta == 0 else rf"LS $\delta={delta:g}$"
        axes[0].plot(
            [r["eta"] for r in sub if r["corrupted"]], [r["dilation"] for r in sub if r["corrupted"]], "o-", label=name
        )
        axes[1].plot([r["eta"] for r in sub], [r["nc1_true_mean"] for r in sub], "o-", label=name)
    axes[0].set(
        xlabel=r"noise fraction $\eta$",
        ylabel=r"$\|h_i - \mu_{\mathrm{true}}\|$ / mean class-mean distance",
        title=rf"dilation of corrupted samples ($K={K}$, $n={n}$, $d={d}$, $\lambda={lam:g}$)",
    )
    axes[1].set(
        xlabel=r"noise fraction $\eta$",
        ylabel="mean per-class NC1 (true labels)",
        title="NC1 with the true labels (observed-label NC1 ≈ 0)",
    )
    for ax in axes:
        ax.legend()
    outputs.figure(f"{NAME}.png", fig)
    for eta in etas[1:]:
        line = ", ".join(f"delta={r['delta']:g}: {r['dilation']:.6f}" for r in rows if r["eta"] == eta)
        print(f"eta={eta:g}: dilation {line}")


def main(argv=None) -> int:
    return run(body, NAME, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    raise SystemExit(main())
