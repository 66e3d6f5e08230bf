"""Experiment 6: benign landscape: many random initialisations per loss reach the predicted optimum.

Zhou et al. (2022) prove a benign (strict-saddle) landscape for CE/LS (Thm 2, Cor. 1) and only a
local one for FL (Cor. 2); MSE is convex in the logits, so Thm 2 covers it. Nguyen et al. (2023) say
nothing about the landscape with H >= 0. For each loss, feature dimension d > K and initial scale,
several seeds are solved (L-BFGS; projected momentum for H >= 0) and judged by ``ufm.compare`` at
relative tolerance 1e-6 (norms, logits, p_t, p_n, NC1-NC3, bias; orthogonal frame for H >= 0).
The stopping rule is relative to the initial gradient, which is huge at init scale 10; each run
is therefore polished by a second solve from its end point down to an absolute gradient norm of
1e-11 (``first_error`` keeps the error before polishing).
"""

from __future__ import annotations

import numpy as np

import ufm
from experiments._common import figure, label_log_axes, listed, run
from ufm.compare import compare

NAME = "landscape"
RTOL = 1e-6
CASES: dict[str, dict] = {
    "ce": dict(loss="ce"),
    "ls (delta=0.1)": dict(loss="ls", delta=0.1),
    "focal (gamma=2)": dict(loss="focal", gamma=2.0),
    "focal (gamma=5)": dict(loss="focal", gamma=5.0),
    "mse (kappa=1, beta=1)": dict(loss="mse"),
    "ce, H >= 0": dict(loss="ce", nonnegative=True),
}


def _worst_error(comparison) -> float:
    return max((row.error for row in comparison.rows if row.applies and row.error is not None), default=np.nan)


def body(args, outputs):
    K, n, lam = (4, 5, 5e-3) if args.quick else (10, 20, 5e-4)
    dims = (K + 1,) if args.quick else (K + 1, 3 * K)  # quick: the narrower d, where H >= 0 can fail
    scales = (0.01, 10.0) if args.quick else (0.01, 0.1, 1.0, 10.0)
    seeds = range(2 if args.quick else 10)
    rows: list[dict] = []
    for label, params in CASES.items():
        for d in dims:
            for scale in scales:
                for seed in seeds:
                    problem = ufm.Problem(
                        K=K, n=n, d=d, lam_W=lam, lam_H=lam, lam_b=lam, seed=seed, init_scale=scale, **params
                    )
                    method, opts = (
                        ("momentum", dict(lr=1.0, max_iters=100_000))
                        if problem.nonnegative
                        else ("lbfgs", dict(max_iters=20_000))
                    )
                    opts["history"] = False  # only the end point is judged
                    first = ufm.solve(problem, method, tol=1e-11, **opts)
                    result = first
                    if first.converged and first.grad_norm > 1e-11:
                        result = ufm.solve(
                            problem, method, tol=max(1e-11 / first.grad_norm, 1e-6), init=first.params, **opts
                        )
                    comparison = compare(result, rtol=RTOL, spectra=False)
                    rows.append(
                        dict(
                            case=label,
                            K=K,
                            n=n,
                            d=d,
                            init_scale=scale,
                            seed=seed,
                            status=result.status,
                            iterations=first.iterations + (result.iterations if result is not first else 0),
                            objective=result.objective,
                            first_error=_worst_error(compare(first, rtol=RTOL, spectra=False)),
                            worst_error=_worst_error(comparison),
                            reached=comparison.ok,
                        )
                    )
    outputs.csv(f"{NAME}.csv", rows)

    fig, axes = figure(1, 2, panel=(4.6, 3.4))
    for i, label in enumerate(CASES):
        sub = [r for r in rows if r["case"] == label]
        x = np.array([np.log10(r["init_scale"]) for r in sub]) + 0.05 * (i - len(CASES) / 2)
        axes[0].scatter(x, [max(r["worst_error"], 1e-16) for r in sub], s=12, label=label)
        axes[1].bar(i, np.mean([r["reached"] for r in sub]), color=f"C{i}")
    axes[0].axhline(RTOL, color="k", ls="--", lw=1, label="tolerance 1e-6")
    axes[0].set(
        yscale="log",
        xlabel=r"$\log_{10}$ initialisation scale",
        ylabel="worst relative |solver - theory|",
        title=rf"$K={K}$, $n={n}$, $d \in$ {listed(dims)}, $\lambda={lam:g}$, {len(seeds)} seeds",
    )
    label_log_axes(axes[0])
    axes[0].legend(fontsize=7)
    axes[1].set(
        xticks=range(len(CASES)), ylim=(0, 1.05), ylabel="fraction reaching the prediction", title="benign landscape?"
    )
    axes[1].set_xticklabels(list(CASES), rotation=30, ha="right")
    outputs.figure(f"{NAME}.png", fig)
    for label in CASES:
        sub = [r for r in rows if r["case"] == label]
        print(
            f"{label:24s} reached {sum(r['reached'] for r in sub)}/{len(sub)}, "
            f"worst error {max(r['worst_error'] for r in sub):.2e}"
        )


def main(argv=None) -> int:
    return run(body, NAME, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    raise SystemExit(main())
