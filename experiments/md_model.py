"""Experiment 8: the memorization-dilation model (Nguyen et al. Def. 4.1, Thm 4.3): dilation vs eta, CE vs LS.

For each noise level eta the MD problem is solved globally (``ufm.solve_md``) on Assumption 4.2.1's
non-negative NC configuration of CE (alpha = 0) and of LS (alpha = alpha0), with lam_W = lam_H = lam
(lam also in F and G), slope C_MD and the two-point law ``+-r u``. Reported per eta: the normalised dilation
``r* / ||h_1 - h_2||``, the memorization ``eta ||h_2 - u_1||``, ``r* / r_max``, whether eta lies inside
Assumption 4.2.3 (``eta^{1/2} < C~ (1 - 1/gamma)``; alpha0 > 4 sqrt(lam_W lam_H) holds for every alpha0 of
the first table) and whether Theorem 4.3's inequality ``dilation_CE > dilation_LS`` holds, with the ratio.
A second table maps the inequality over (alpha0, eta, C_MD), inside and outside the assumptions
(smaller alpha0, larger eta, other C_MD), and the circle law is run on one alpha0 for comparison.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

import theory.memorization_dilation as tmd
import ufm
from experiments._common import figure, label_log_axes, run

NAME = "md_model"
LAM = 1e-3


def _solve(alpha, eta, c_md, law="two-point"):
    config = tmd.nc_configuration(2, lam_W=LAM, lam_H=LAM, alpha=alpha)
    V, w = tmd.md_law(config, law, eta=eta, c_md=c_md)
    result = ufm.solve_md(config.W, config.H, V, w, lam=LAM, alpha=alpha, eta=eta, c_md=c_md)
    if not result.converged:
        raise RuntimeError(f"MD solve did not converge (alpha={alpha}, eta={eta}, c_md={c_md}): {result.message}")
    return result


def _pair(alpha0, eta, c_md, law="two-point", cache=None):
    key = (eta, c_md, law)
    if cache is not None and key not in cache:
        cache[key] = _solve(0.0, eta, c_md, law)
    ce = cache[key] if cache is not None else _solve(0.0, eta, c_md, law)
    ls = _solve(alpha0, eta, c_md, law)
    check = tmd.assumption_4_2(lam_W=LAM, lam_H=LAM, alpha0=alpha0, eta=eta, c_md=c_md)
    return ce, ls, check


def _row(alpha0, eta, c_md, law, ce, ls, check):
    bound_ce = tmd.lemma_c6_lower_bound(eta=eta, c_md=c_md, distance=ce.distance)
    bound_ls = tmd.lemma_c6_lower_bound(eta=eta, c_md=c_md, distance=ls.distance)
    return dict(
        alpha0=alpha0,
        eta=eta,
        c_md=c_md,
        law=law,
        lam=LAM,
        gamma=check.gamma,
        eta_bound=check.eta_bound,
        alpha_ok=check.alpha_ok,
        eta_ok=check.eta_ok,
        inside=check.holds,
        dilation_ce=ce.dilation,
        dilation_ls=ls.dilation,
        ratio=ce.dilation / ls.dilation,
        holds=bool(ce.dilation > ls.dilation),
        memorization_ce=ce.memorization,
        memorization_ls=ls.memorization,
        r_star_ce=ce.r_star,
        r_star_ls=ls.r_star,
        r_over_rmax_ce=ce.r_star / ce.r_max,
        r_over_rmax_ls=ls.r_star / ls.r_max,
        lemma_c6_ce=bool(ce.r_star >= bound_ce),
        lemma_c6_ls=bool(ls.r_star >= bound_ls),
        kkt=max(ce.kkt_residual, ls.kkt_residual),
        status="converged",
    )


def body(args, outputs):
    quick = args.quick
    alphas = (0.05, 0.3) if quick else (0.02, 0.05, 0.1, 0.3)
    etas = np.geomspace(1e-4, 0.3, 6 if quick else 22)
    c_md = 1.0
    cache: dict = {}
    rows = []
    for alpha0 in alphas:
        for eta in etas:
            rows.append(_row(alpha0, float(eta), c_md, "two-point", *_pair(alpha0, float(eta), c_md, cache=cache)))
    circle_alpha = 0.1 if not quick else 0.05
    for eta in etas[:: 1 if not quick else 2]:
        rows.append(_row(circle_alpha, float(eta), c_md, "circle", *_pair(circle_alpha, float(eta), c_md)))
    outputs.csv(f"{NAME}.csv", rows)

    # map of Theorem 4.3's inequality over (alpha0, eta, C_MD), inside and outside Assumption 4.2
    map_alphas = (0.002, 0.05, 0.3) if quick else (0.001, 0.003, 0.01, 0.05, 0.1, 0.3)  # 4 sqrt(lam^2) = 0.004
    map_cs = (0.3, 3.0) if quick else (0.1, 0.3, 1.0, 3.0)
    map_etas = np.geomspace(1e-4, 0.9, 4 if quick else 12)
    grid = []
    for c in map_cs:
        cache_c: dict = {}
        for alpha0 in map_alphas:
            for eta in map_etas:
                grid.append(_row(alpha0, float(eta), c, "two-point", *_pair(alpha0, float(eta), c, cache=cache_c)))
    outputs.csv("map.csv", grid)

    inside = [r for r in grid if r["inside"]]
    outside = [r for r in grid if not r["inside"]]
    summary = {
        "inside": (sum(r["holds"] for r in inside), len(inside)),
        "outside": (sum(r["holds"] for r in outside), len(outside)),
        "outside_alpha": (
            sum(r["holds"] for r in outside if not r["alpha_ok"]),
            sum(not r["alpha_ok"] for r in outside),
        ),
        "outside_eta": (
            sum(r["holds"] for r in outside if r["alpha_ok"] and not r["eta_ok"]),
            sum(r["alpha_ok"] and not r["eta_ok"] for r in outside),
        ),
    }

    fig, axes = figure(1, 2, panel=(5.0, 3.6))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    ce_rows = [r for r in rows if r["alpha0"] == alphas[0] and r["law"] == "two-point"]
    axes[0].loglog([r["eta"] for r in ce_rows], [r["dilation_ce"] for r in ce_rows], "k-o", ms=3, label="CE")
    for color, alpha0 in zip(colors, alphas, strict=False):
        sub = [r for r in rows if r["alpha0"] == alpha0 and r["law"] == "two-point"]
        bound = sub[0]["eta_bound"]
        for ax, values in ((axes[0], [r["dilation_ls"] for r in sub]), (axes[1], [r["ratio"] for r in sub])):
            ax.plot(
                [r["eta"] for r in sub],
                values,
                "--s" if ax is axes[0] else "-o",
                color=color,
                ms=3,
                label=rf"LS $\alpha_0={alpha0:g}$",
            )
            ax.axvspan(etas[0], bound, color=color, alpha=0.07)
            ax.axvline(bound, color=color, lw=0.8, ls=":")
    circ = [r for r in rows if r["law"] == "circle"]
    axes[1].plot(
        [r["eta"] for r in circ],
        [r["ratio"] for r in circ],
        "x",
        color="gray",
        label=rf"circle law, $\alpha_0={circle_alpha:g}$",
    )
    axes[0].set(
        xlabel=r"noise level $\eta$",
        ylabel=r"normalised dilation $r^* / \|h_1 - h_2\|$",
        title=rf"MD model (two-point law), $\lambda_W = \lambda_H = {LAM:g}$, $C_{{MD}} = {c_md:g}$",
    )
    axes[1].set_xscale("log")
    axes[1].axhline(1.0, color="k", lw=0.8)
    axes[1].set(
        xlabel=r"noise level $\eta$",
        ylabel=r"dilation$_{\mathrm{CE}}$ / dilation$_{\mathrm{LS}}$ (> 1: Thm 4.3 holds)",
        title=r"shaded: inside Assumption 4.2.3 ($\eta$ below its bound)",
    )
    for ax in axes:
        label_log_axes(ax)
        ax.legend()
    outputs.figure(f"{NAME}.png", fig)
    for key, (held, total) in summary.items():
        print(f"Theorem 4.3 {key} (map.csv): holds on {held}/{total}" + (f" ({held / total:.1%})" if total else ""))
    table, worst = min(
        [("md_model.csv", r) for r in rows if r["inside"]] + [("map.csv", r) for r in inside],
        key=lambda pair: pair[1]["ratio"],
    )
    print(
        f"smallest dilation_CE/dilation_LS inside the assumptions: {worst['ratio']:.4f} ({table}: "
        f"alpha0={worst['alpha0']:g}, eta={worst['eta']:.3g}, C_MD={worst['c_md']:g}, law {worst['law']})"
    )


def main(argv=None) -> int:
    return run(body, NAME, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    raise SystemExit(main())
