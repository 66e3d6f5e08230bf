"""Experiment 11: class imbalance: minority collapse, its threshold vs lambda, CE vs LS, and the SELI geometry.

Setting (Fang et al., PNAS 2021; Hong & Ling, JMLR 2024): K_A majority classes of n_A samples and
K_B minority classes of n_A / R. Every solve is the exact class-mean reduction with class sizes
(``ufm.imbalance.solve_reduced``, L-BFGS to a gradient ratio of 1e-12, float64), which lets R vary
continuously; the threshold test of (a) and (c) solves its convex reformulation instead (``ufm.convex``).
Normalisation: n_A = 1 and lam_W = lam_H = lam_b = lam; the reduction depends on the sizes only through
n_k / N and n_k lam_H, so a problem with n_A samples per majority class is the one here with
lam_H = lam / n_A (lam_W, lam_b unchanged).

(a) Minority collapse. Against R: the angle between the two minority classifiers w_k, between the
    centred minority class means, and ||w_B|| / ||w_A||. The threshold R* where the minority
    classifiers become equal is found by bisection to an interval of width 1e-6 in R. Each step's test
    "equal?" is decided on the convex reformulation (``ufm.convex.solve_convex``, exact for d >= K, which
    the experiment has: d = K): the minority classifiers are equal iff the minority rows of the logit
    matrix Z = W^T Hbar are equal (``theory/minority_collapse.py``, step 1), tested to a tolerance set by
    the solve's duality gap (:func:`convex_spread`); for d < K it falls back to the reduced solve,
    ``max ||w_i - w_j|| <= 1e-6 ||w_A||`` over minority pairs (which reads R* high: near R* L-BFGS meets
    its gradient tolerance before the distance falls below 1e-6). Compared with the closed form
    ``theory.minority_collapse_threshold`` (verdict: within the bisection width). Checked by an independent
    estimate on the reduced solves: near R* the distance behaves like sqrt(R* - R) (a pitchfork), so a line
    through the squared distances at R* (1 - 1e-2) and R* (1 - 2e-2) extrapolates to zero at R_ext. Also
    located: R_0, where the minority classifiers vanish (``||w_B|| <= 1e-6 ||w_A||``, reduced solves).
(b) SELI (Thrampoulidis et al., NeurIPS 2022): distance of the normalised logits, W^T W and H^T H from
    the SVD factors of Zhat = Y - (1/K) 1 1^T (``ufm.imbalance``), as lam -> 0, for integer sizes with
    several ratios, CE and LS, bias penalised like W and H (lam_b = lam) or pinned (lam_b = 10).
(c) CE vs LS: R* for delta = 0, 0.1, 0.3 at the same lambdas.
(d) Spectra: the loss-term Hessian blocks W (dK x dK) and H (dN x dN) at the optimum, and their
    condition numbers kappa (largest over smallest eigenvalue above 1e-8 of the largest,
    ``ufm.hessian.NONZERO_RTOL``) against R, CE and LS, several lam. A ratio R = p / q is realised
    with integer class sizes (p for the majority, q for the minority classes): that problem with
    lam_H = lam / p has the same class-mean reduction as (1, 1/R) with lam_H = lam (the loss term,
    hence the blocks, does not involve lam_H), so the optimum of (a) is expanded to its N = K_A p + K_B q
    columns and fed to the structured path of ``ufm.hessian.block_spectrum`` (it groups equal columns
    with their counts, so unequal class sizes are exact); the dense ``jax.hessian`` checks it at small
    N. At R = 1 both kappas must equal K p_t (Guo et al., Thm 4.2). Near the threshold, R = R* (1 -+ eps)
    for eps = 1e-1 ... 1e-3 (q = ceil(10^4 / R*), so N ~ 2e4).

A nan in ``spectra.csv``'s ``dense_vs_structured`` column means no dense check ran for that row (the
dense ``jax.hessian`` is formed only at small N); the structured spectrum of the row stands on its own.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from matplotlib.lines import Line2D

import theory
from experiments._common import figure, label_log_axes, run
from ufm import convex, hessian
from ufm import imbalance as im
from ufm.objective import Params, Weights

NAME = "imbalance"
#: Relative distance below which the minority classifiers count as equal (resp. as zero).
EQUAL = 1e-6
#: Width of the final bisection interval in R.
R_TOL = 1e-6
#: Duality gap to which the convex solves of the threshold test run (absolute; F ~ 1, so a few tens of units of
#: rounding: ``solve_convex``'s default 1e-15 is the rounding floor itself, where a solve can stall).
CONVEX_TOL = 1e-14


def _solve(K_A, K_B, ratio, lam, delta=0.0, d=None):
    loss = "ce" if delta == 0 else "ls"
    return im.solve_reduced(
        im.two_group_sizes(K_A, K_B, ratio), d=d, lam_W=lam, lam_H=lam, lam_b=lam, loss=loss, delta=delta, tol=1e-12
    )


def _solve_convex(K_A, K_B, ratio, lam, delta=0.0):
    loss = "ce" if delta == 0 else "ls"
    sizes = im.two_group_sizes(K_A, K_B, ratio)
    return convex.solve_convex(sizes, lam_W=lam, lam_H=lam, lam_b=lam, loss=loss, delta=delta, tol=CONVEX_TOL)


def convex_spread(solution, K_A: int, mu: float) -> tuple[float, float]:
    """``(spread, tolerance)`` of a ``solve_convex`` solution: spread = ``max ||z_k - z_l||`` over the minority
    rows k, l of the logit matrix ``Z = W^T Hbar`` (zero iff the minority classifiers are equal,
    ``theory/minority_collapse.py`` step 1). At the symmetric minimizer ``Z_BB = beta_2 11^T + y I`` the spread
    is ``sqrt(2) |y|``, and y enters ``F`` as the singular value ``|y| sqrt(n_B)`` of ``Z D`` (K_B - 1 times),
    priced ``mu (K_B - 1) sqrt(n_B / 2) spread`` in the nuclear norm; tolerance = the spread whose price is the
    duality gap, ``max(gap, tol) / (mu (K_B - 1) sqrt(n_B / 2))`` (``mu = sqrt(lam_W lam_H)``): a smaller spread
    is below what the gap resolves. Collapsed minimizers give spreads at rounding (the singular-value prox
    zeroes y), apart ones ~(1 ... 2) (1 - R / R*) for K_A = K_B = 2 (lam = 0.03 ... 0.2)."""
    minority = solution.Z[K_A:]
    K_B = minority.shape[0]
    i, j = np.triu_indices(K_B, k=1)
    spread = float(np.max(np.linalg.norm(minority[i] - minority[j], axis=1)))
    price = mu * (K_B - 1) * np.sqrt(solution.sizes[K_A] / 2.0)
    return spread, float(max(solution.gap, CONVEX_TOL) / price)


def minority_measures(solution, K_A: int) -> dict:
    """Angles (degrees) and distances of the minority classifiers / class means of a solution."""
    W, sizes = solution.W, solution.sizes
    minority = list(range(K_A, len(sizes)))
    majority_norm = float(np.mean(np.linalg.norm(W[:, :K_A], axis=0)))
    i, j = np.triu_indices(len(minority), k=1)
    Wb = W[:, minority]
    spread = float(np.max(np.linalg.norm(Wb[:, i] - Wb[:, j], axis=0))) / majority_norm
    return dict(
        angle_w=float(np.degrees(np.min(im.angles(W, minority)))),
        angle_h=float(np.degrees(np.min(im.angles(im.centred_means(solution.Hbar, sizes), minority)))),
        minority_norm_ratio=float(np.mean(np.linalg.norm(Wb, axis=0))) / majority_norm,
        spread=spread,
    )


def bisect(predicate, low: float, high: float, width: float = R_TOL) -> tuple[float, float, int]:
    """Shrink ``[low, high]`` with ``predicate(low)`` False and ``predicate(high)`` True to ``width``."""
    if predicate(low) or not predicate(high):
        raise ValueError(f"no sign change of the predicate on [{low:g}, {high:g}]")
    steps = 0
    while high - low > width:
        middle = 0.5 * (low + high)
        low, high = (low, middle) if predicate(middle) else (middle, high)
        steps += 1
    return low, high, steps


def thresholds(K_A, K_B, lam, delta, grid, d=None) -> dict:
    """R* (minority classifiers equal) by bisection, next to the closed form; its pitchfork extrapolation R_ext
    and R_0 (they vanish), both on reduced solves. The test "equal?" of the bracket and of every bisection step
    runs on the convex solve (:func:`convex_spread`) where it is exact, ``d >= K`` (``d = None``: K, the
    experiment's), and on the reduced solve of dimension d otherwise. Equal already at ``grid[0] = 1``: R* = 1
    (the closed form's value when the minority classifiers are equal at every R >= 1), width 0."""
    statuses = []
    exact = d is None or d >= K_A + K_B

    def measure(R):
        solution = _solve(K_A, K_B, R, lam, delta, d)
        statuses.append(solution.status)
        return minority_measures(solution, K_A)

    decided: dict[float, bool] = {}  # the bracket's ends are grid points: bisect's own checks of them are free

    def equal(R):
        if R not in decided:
            if exact:
                solution = _solve_convex(K_A, K_B, R, lam, delta)
                statuses.append(solution.status)
                spread, tolerance = convex_spread(solution, K_A, lam)
                decided[R] = spread <= tolerance
            else:
                decided[R] = measure(R)["spread"] <= EQUAL
        return decided[R]

    vanished = lambda R: measure(R)["minority_norm_ratio"] <= EQUAL
    closed = theory.minority_collapse_threshold(K_A, K_B, lam, delta=delta)
    out = dict(
        K_A=K_A, K_B=K_B, lam=lam, delta=delta, loss="ce" if delta == 0 else "ls", test="convex" if exact else "reduced"
    )
    first = next((k for k, R in enumerate(grid) if equal(R)), None)  # the grid up to the first equal point
    R_star = width = R_ext = R_zero = np.nan
    steps = 0
    if first is not None:
        if first == 0 and grid[0] != 1.0:
            raise ValueError(f"minority classifiers already equal at the smallest R = {grid[0]:g}")
        if first == 0:
            R_star, width = 1.0, 0.0
        else:
            low, high, steps = bisect(equal, grid[first - 1], grid[first])
            R_star, width = 0.5 * (low + high), high - low
            r1, r2 = R_star * (1 - 1e-2), R_star * (1 - 2e-2)
            s1, s2 = measure(r1)["spread"] ** 2, measure(r2)["spread"] ** 2
            R_ext = r1 + s1 * (r1 - r2) / (s2 - s1)
        gone = [vanished(R) for R in grid]
        if any(gone) and gone.index(True) > 0:
            k = gone.index(True)
            lo0, hi0, _ = bisect(vanished, grid[k - 1], grid[k], width=1e-3 * grid[k])
            R_zero = 0.5 * (lo0 + hi0)
    out.update(
        R_star=R_star,
        R_star_closed_form=closed,
        R_star_minus_closed_form=R_star - closed,
        R_star_width=width,
        closed_form_within_width=bool(abs(R_star - closed) <= width),
        R_ext=R_ext,
        R_zero=R_zero,
        bisection_steps=steps,
    )
    out["status"] = (
        "converged"
        if all(s == "converged" for s in statuses)
        else ",".join(sorted(set(s for s in statuses if s != "converged")))
    )
    return out


def block_spectra(solution, K_A: int, p: int, q: int, delta: float, dense: bool = False) -> dict:
    """kappa of the loss-term W and H blocks at ``solution`` (sizes ``(1, 1/R)``, R = p/q), expanded to
    integer sizes ``(p,) * K_A + (q,) * K_B`` (module docstring, (d)); with ``dense``, the largest
    difference between the structured and the dense spectrum relative to the largest eigenvalue."""
    sizes = np.array([p] * K_A + [q] * (len(solution.sizes) - K_A))
    labels = np.repeat(np.arange(sizes.size), sizes)
    params = Params(jnp.asarray(solution.W), jnp.asarray(solution.Hbar[:, labels]), jnp.asarray(solution.b))
    weights = Weights(*(jnp.asarray(v, jnp.float64) for v in (delta, 0.0, 0.0, 0.0)))  # loss term: no lambdas
    logits = solution.W.T @ solution.Hbar + solution.b[:, None]
    P = np.exp(logits - logits.max(axis=0))
    P /= P.sum(axis=0)
    out = dict(N=int(sizes.sum()), K_p_t=float(sizes.size * np.mean(np.diag(P))))
    worst = 0.0
    for block in ("W", "H"):
        spectrum = hessian.block_spectrum(params, jnp.asarray(labels), weights, block, method="structured")
        values, counts = spectrum.values, spectrum.counts
        top = float(values.max())
        nonzero = values > hessian.NONZERO_RTOL * top
        out[f"kappa_{block}"] = float(values[nonzero].max() / values[nonzero].min())
        out[f"min_nonzero_{block}"] = float(values[nonzero].min() / top)
        out[f"rank_{block}"] = int(counts[nonzero].sum())
        if dense:
            reference = hessian.block_spectrum(params, jnp.asarray(labels), weights, block, method="dense").values
            worst = max(worst, float(np.max(np.abs(np.sort(reference) - spectrum.expanded())) / top))
    out["dense_vs_structured"] = worst if dense else np.nan
    return out


def spectra_table(K_A, K_B, lams, deltas, ratios, table) -> list[dict]:
    """kappa_W, kappa_H against integer R (q = 1) and at R* (1 -+ eps) (q = ceil(1e4 / R*)), module docstring (d)."""
    rows = []
    for delta in deltas:
        for lam in lams:
            stars = [r["R_star"] for r in table if (r["K_A"], r["K_B"], r["lam"], r["delta"]) == (K_A, K_B, lam, delta)]
            probes = [(R, 1, "grid") for R in ratios]
            star = stars[0] if stars else np.nan
            if np.isfinite(star):  # R = p / q resolved to 1e-4 / R* (N ~ 2e4); eps_actual = R / R* - 1 recorded
                q = int(np.ceil(1e4 / star))
                probes += [
                    (round(star * (1 + sign * eps) * q), q, f"R* (1 {'+' if sign > 0 else '-'} {eps:g})")
                    for eps in (1e-1, 1e-2, 1e-3)
                    for sign in (-1, 1)
                ]
            for p, q, kind in probes:
                solution = _solve(K_A, K_B, p / q, lam, delta)
                dense = kind == "grid" and p in (2, 3) and lam == lams[0]  # dense reference at small N
                rows.append(
                    dict(
                        K_A=K_A,
                        K_B=K_B,
                        loss="ce" if delta == 0 else "ls",
                        delta=delta,
                        lam=lam,
                        R=p / q,
                        R_star=star,
                        eps=p / q / star - 1,
                        probe=kind,
                        status=solution.status,
                        **block_spectra(solution, K_A, p, q, delta, dense=dense),
                    )
                )
    return rows


def body(args, outputs):
    quick = args.quick
    groups = [(2, 2)] if quick else [(2, 2), (3, 2), (2, 4)]
    lams = (0.05, 0.1, 0.2) if quick else (0.03, 0.05, 0.07, 0.1, 0.15, 0.2)
    deltas = (0.0, 0.1) if quick else (0.0, 0.1, 0.3)
    grid = list(np.geomspace(1.0, 1e4, 13 if quick else 41))

    curves = []
    for K_A, K_B in groups:
        for lam in lams:
            for R in grid:
                solution = _solve(K_A, K_B, R, lam)
                curves.append(
                    dict(K_A=K_A, K_B=K_B, lam=lam, R=R, status=solution.status, **minority_measures(solution, K_A))
                )
    table = [
        thresholds(K_A, K_B, lam, delta, grid)
        for K_A, K_B in groups
        for lam in lams
        for delta in deltas
        if delta == 0 or (K_A, K_B) == groups[0]
    ]

    seli_rows = []
    # lam = 0.1 is past the phase boundary for these sizes (W = H = 0 when balanced: c = sqrt(K N) lam > 1)
    seli_lams = (1e-2, 1e-3, 1e-4, 1e-5) if quick else tuple(10.0 ** -np.arange(2, 6.5, 0.5))
    for sizes in [(20, 20, 20, 20), (20, 20, 4, 4), (20, 20, 1, 1)]:
        for delta in (0.0, 0.1):
            for lam_b in ("lam", 10.0):
                for lam in seli_lams:
                    s = im.solve_reduced(
                        sizes,
                        lam_W=lam,
                        lam_H=lam,
                        lam_b=lam if isinstance(lam_b, str) else lam_b,
                        loss="ce" if delta == 0 else "ls",
                        delta=delta,
                        tol=1e-12,
                    )
                    distances = im.seli_distances(s.W, s.Hbar, s.b, sizes)
                    seli_rows.append(
                        dict(
                            sizes="-".join(map(str, sizes)),
                            R=sizes[0] / sizes[-1],
                            loss="ce" if delta == 0 else "ls",
                            delta=delta,
                            lam_b="lam" if lam_b == "lam" else lam_b,
                            lam=lam,
                            status=s.status,
                            **{f"seli_{k}": v for k, v in distances.items()},
                        )
                    )

    ratios = (
        (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128)
        if quick
        else tuple(range(1, 16)) + (16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 256, 320, 384, 512)
    )
    spectra_rows = spectra_table(*groups[0], lams, (0.0, 0.1), ratios, table)

    outputs.csv(f"{NAME}.csv", table)
    outputs.csv("curves.csv", curves)
    outputs.csv("seli.csv", seli_rows)
    outputs.csv("spectra.csv", spectra_rows)
    _figure(outputs, curves, table, seli_rows, groups[0])
    _spectra_figure(outputs, spectra_rows, table, groups[0])
    for row in table:
        print(
            f"K_A={row['K_A']} K_B={row['K_B']} lam={row['lam']:g} {row['loss']} delta={row['delta']:g}: "
            f"R* = {row['R_star']:.7f} (closed form {row['R_star_closed_form']:.7f}, difference "
            f"{row['R_star_minus_closed_form']:+.1e}, width {row['R_star_width']:.1e}; "
            + (f"extrapolated {row['R_ext']:.5f}" if np.isfinite(row["R_ext"]) else "no extrapolation")
            + "), minority w = 0 "
            + (f"from R_0 = {row['R_zero']:.4g}" if np.isfinite(row["R_zero"]) else "at no R of the grid")
            + ("" if row["status"] == "converged" else f"; status {row['status']}")
        )
    for row in seli_rows:
        if row["lam"] == min(seli_lams):
            print(
                f"SELI {row['sizes']} {row['loss']} lam_b={row['lam_b']} lam={row['lam']:g}: logits "
                f"{row['seli_logits']:.4f}, W^TW {row['seli_WW']:.4f}, H^TH {row['seli_HH']:.4f}"
            )


def _figure(outputs, curves, table, seli_rows, group):
    fig, axes = figure(1, 3, panel=(4.4, 3.6))
    for lam in sorted({c["lam"] for c in curves}):
        sub = [c for c in curves if c["lam"] == lam and (c["K_A"], c["K_B"]) == group]
        R = [c["R"] for c in sub]
        (line,) = axes[0].semilogx(
            R,
            [c["angle_w"] if c["minority_norm_ratio"] > EQUAL else np.nan for c in sub],
            "o-",
            ms=3,
            label=rf"$\lambda={lam:g}$",
        )
        axes[0].semilogx(
            R,
            [c["angle_h"] if c["minority_norm_ratio"] > EQUAL else np.nan for c in sub],
            "--",
            color=line.get_color(),
        )  # both cut at R_0 (w_B = 0)
    axes[0].plot([], [], "k-o", ms=3, label=r"classifiers $w$")
    axes[0].plot([], [], "k--", label=r"centred means $\bar h$")
    axes[0].set(
        xlabel=r"imbalance ratio $R = n_A / n_B$",
        ylabel="angle between minority classes (deg)",
        title=f"minority collapse, $K_A={group[0]}$, $K_B={group[1]}$, CE",
    )
    axes[0].legend(loc="upper right")
    lams = np.geomspace(min(r["lam"] for r in table), max(r["lam"] for r in table), 200)
    settings = [
        (*group, delta, "o", "CE" if delta == 0 else rf"LS $\delta={delta:g}$")
        for delta in sorted({r["delta"] for r in table})
    ]
    settings += [
        (K_A, K_B, 0.0, "s", f"CE $K_A={K_A}$, $K_B={K_B}$")
        for K_A, K_B in sorted({(r["K_A"], r["K_B"]) for r in table} - {group})
    ]
    for K_A, K_B, delta, marker, label in settings:
        sub = [r for r in table if (r["K_A"], r["K_B"], r["delta"]) == (K_A, K_B, delta)]
        (line,) = axes[1].loglog([r["lam"] for r in sub], [r["R_star"] for r in sub], marker, label=label)
        closed = [theory.minority_collapse_threshold(K_A, K_B, lam, delta=delta) for lam in lams]
        axes[1].loglog(lams, closed, "-", color=line.get_color(), lw=1.0)
    axes[1].plot([], [], "ko", label="bisection")
    axes[1].plot([], [], "k-", lw=1.0, label="closed form")
    axes[1].set(
        xlabel=r"$\lambda = \lambda_W = \lambda_H = \lambda_b$ ($n_A = 1$)",
        ylabel=r"threshold $R^*$",
        title="minority-collapse threshold $R^*$:\nbisection (convex test) vs closed form",
    )
    axes[1].legend(loc="upper right")
    for key in sorted({(r["sizes"], r["loss"]) for r in seli_rows}):
        sub = [r for r in seli_rows if (r["sizes"], r["loss"]) == key and r["lam_b"] != "lam"]
        axes[2].loglog(
            [r["lam"] for r in sub],
            [max(r["seli_HH"], 1e-16) for r in sub],
            "o-" if key[1] == "ce" else "s--",
            ms=3,
            label=f"{key[1].upper()}, sizes {key[0]}",
        )
    axes[2].set(
        xlabel=r"$\lambda$ ($\lambda_b = 10$: bias pinned)",
        ylabel=r"distance of $H^\top H$ from SELI",
        title="SELI geometry as $\\lambda \\to 0$\n(balanced: 0 at every $\\lambda$)",
    )
    axes[2].legend(loc="center right")
    for ax in axes:
        label_log_axes(ax)
    outputs.figure(f"{NAME}.png", fig)


def _spectra_figure(outputs, rows, table, group):
    """kappa_W and kappa_H against R (colour: lam, solid o: CE, dashed s: LS; dotted verticals: R*) and their
    divergence below R* (the same, filled: W, open: H); one legend below the panels, clear of the spikes."""
    lams = sorted({r["lam"] for r in rows})
    colors = {lam: f"C{j}" for j, lam in enumerate(lams)}
    losses = (("CE", 0.0, "o", "-"), (r"LS $\delta=0.1$", 0.1, "s", "--"))
    fig, axes = figure(1, 3, panel=(4.4, 3.6))
    for ax, block in zip(axes, ("W", "H"), strict=False):
        for _, delta, marker, style in losses:
            for lam in lams:
                sub = sorted((r for r in rows if r["delta"] == delta and r["lam"] == lam), key=lambda r: r["R"])
                ax.loglog(
                    [r["R"] for r in sub],
                    [r[f"kappa_{block}"] for r in sub],
                    marker + style,
                    ms=3,
                    lw=1.0,
                    color=colors[lam],
                )
                for r in table:
                    if (r["K_A"], r["K_B"], r["lam"], r["delta"]) == (*group, lam, delta) and np.isfinite(r["R_star"]):
                        ax.axvline(r["R_star"], color=colors[lam], lw=0.8, ls=":")
        ax.set(
            xlabel=r"imbalance ratio $R = n_A / n_B$",
            ylabel=rf"$\kappa_{block}$ of the loss-term ${block}$ block",
            title=f"${block}$ block at the optimum, $K_A={group[0]}$, $K_B={group[1]}$",
        )
    below = [r for r in rows if r["probe"].startswith("R* (1 -")]
    for block in ("W", "H"):
        for _, delta, marker, style in losses:
            for lam in sorted({r["lam"] for r in below}):
                sub = sorted((r for r in below if r["delta"] == delta and r["lam"] == lam), key=lambda r: -r["eps"])
                axes[2].loglog(
                    [-r["eps"] for r in sub],
                    [r[f"kappa_{block}"] for r in sub],
                    marker + style,
                    ms=4,
                    lw=1.0,
                    color=colors[lam],
                    mfc="none" if block == "H" else colors[lam],
                )
    axes[2].set(
        xlabel=r"$1 - R / R^*$ (approaching the threshold from below)",
        ylabel=r"$\kappa$",
        title=r"divergence below $R^*$: $\kappa \propto (1 - R/R^*)^{-1}$",
    )
    for ax in axes:
        label_log_axes(ax)
    handles = [Line2D([], [], color=colors[lam], lw=2, label=rf"$\lambda={lam:g}$") for lam in lams]
    handles += [Line2D([], [], color="k", marker=m, ls=st, ms=4, lw=1.0, label=name) for name, _, m, st in losses]
    handles += [
        Line2D([], [], color="k", ls=":", lw=0.8, label=r"$R^*$ (left, middle)"),
        Line2D([], [], color="k", ls="none", marker="o", ms=4, label=r"right: $\kappa_W$ filled"),
        Line2D([], [], color="k", ls="none", marker="o", mfc="none", ms=4, label=r"$\kappa_H$ open"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles))
    outputs.figure("spectra.png", fig)


def main(argv=None) -> int:
    return run(body, NAME, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    raise SystemExit(main())
