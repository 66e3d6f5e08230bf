"""Experiment 9: Guo et al.'s simulated-UFM check on a real network (App. B.6, Figs. 1/10, 8, 6b, 9).

A small ReLU MLP (equinox; ``experiments/_network.py``) is trained full batch on a balanced
split of scikit-learn's digits (K = 10, n images per class, N = 10 n) to the terminal phase, in
two settings:

* *simulated UFM* (Guo App. B.2, B.6): no weight decay; ``lam_W/2 ||W||^2 + lam_H/2 ||H||^2 +
  lam_b/2 ||b||^2`` on the classifier and on the N training features, lam_W = 1e-3,
  lam_H = 1e-6, lam_b = 1e-2, the loss averaged over N. This is term for term the UFM
  objective of ``ufm/objective.py``, so Theorem 4.1 (``theory.norms``) predicts mean ||w_k|| and
  mean ||hbar_k - h_G|| for the same K, n, delta and lambdas if the network reaches the UFM's
  global minimizer (here it gets within NC1 ~1e-5 of it: experiments/README.md).
* *weight decay* (Guo Fig. 9): ``5e-4/2 ||theta||^2`` on every parameter, no feature penalty;
  the theorem does not apply directly. Its norms are compared with Theorem 4.1 at lam_W = lam_b
  = 5e-4 and an *effective* lam_H read off the trained network, ``lam_W (||w||/||h||)^2 / n``
  (Theorem 4.1 has ``||w_k|| / ||hbar_k - h_G|| = sqrt(n lam_H / lam_W)``).

Optimizer: full-batch Adam (lr ``ADAM_LR``) for the first steps, then L-BFGS (optax, zoom line
search) for a fixed budget (``settings``). Each
recorded "step" is one full-batch update (an Adam step or an L-BFGS iteration).

Outputs: ``real_network.csv`` (simulated UFM, one row per delta: final state, errors against the
theorem, steps to thresholds, test error), ``weight_decay.csv`` (the same for the weight-decay
setting), ``curves.csv`` (every record), ``real_network.png``
(Fig. 8 errors over steps; training error and NC1-NC3 over steps; Fig. 6b final norms vs delta),
``analysis.json`` (each final last layer through ``ufm.analyze``, with the UFM prediction for the
same setup; the errors above are computed from ``theory`` directly, not from it).
"""

from __future__ import annotations

import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D

import theory
from experiments._common import figure, label_log_axes, run
from ufm.last_layer import analyze

try:  # equinox and scikit-learn: the optional 'network' extra
    from experiments import _network as net

    NETWORK_MISSING: ImportError | None = None
except ImportError as missing:
    net, NETWORK_MISSING = None, missing  # type: ignore[assignment]

NAME = "real_network"
LAM_W, LAM_H, LAM_B = 1e-3, 1e-6, 1e-2
WEIGHT_DECAY = 5e-4
DELTAS = (0.0, 0.05, 0.1, 0.2, 0.3)
ADAM_LR = 1e-3
#: thresholds for "steps to reach" (Figs. 1/10 and Fig. 8)
NC_THRESHOLDS = (1e-1, 1e-2, 1e-3)
NORM_THRESHOLDS = (1e-2, 1e-3)


def settings(quick: bool) -> dict:
    """Sizes and budgets. Every budget runs in full; a lane's status is "converged" when its final
    gradient norm is at most ``gtol`` or its objective changed by at most ``ftol`` (relative) per step
    over the last segment (``experiments._network.train``)."""
    if quick:
        return dict(
            n=10,
            widths=(32, 32),
            d=16,
            adam_steps=500,
            lbfgs_steps=500,
            every=50,
            gtol=1e-3,
            ftol=1e-12,
            weight_decay_deltas=(0.0, 0.1),
            seed=0,
        )
    return dict(
        n=100,
        widths=(64, 64),
        d=16,
        adam_steps=1000,
        lbfgs_steps=3000,
        every=100,
        gtol=2e-4,
        ftol=1e-12,
        weight_decay_deltas=(0.0, 0.1, 0.3),
        seed=0,
    )


def lanes(config: dict):
    """The trained configurations: ``(setting, delta)`` pairs and their :class:`TrainSpec` (stacked)."""
    pairs = [("simulated_ufm", d) for d in DELTAS] + [("weight_decay", d) for d in config["weight_decay_deltas"]]
    simulated = [s == "simulated_ufm" for s, _ in pairs]
    spec = net.TrainSpec(
        jnp.array([d for _, d in pairs]),
        jnp.array([LAM_W if s else 0.0 for s in simulated]),
        jnp.array([LAM_H if s else 0.0 for s in simulated]),
        jnp.array([LAM_B if s else 0.0 for s in simulated]),
        jnp.array([0.0 if s else WEIGHT_DECAY for s in simulated]),
        jnp.zeros(len(pairs), dtype=int),
    )
    return pairs, spec


def target(setting: str, delta: float, K: int, n: int, w_norm: float, h_norm: float) -> dict:
    """Theorem 4.1's norms for one lane (weight decay: at the effective lam_H of the module docstring)."""
    if setting == "simulated_ufm":
        lam_W, lam_H = LAM_W, LAM_H
    else:
        lam_W = WEIGHT_DECAY
        lam_H = lam_W * (w_norm / h_norm) ** 2 / n
    norms = theory.norms(K, n, delta=delta, lam_W=lam_W, lam_H=lam_H)
    return dict(
        lam_W=lam_W,
        lam_H=lam_H,
        w_norm_theory=norms.w,
        h_norm_theory=norms.h,
        c=float(theory.phase(K, n, delta=delta, lam_W=lam_W, lam_H=lam_H).c),
    )


def first_step(steps, values, threshold):
    hits = np.flatnonzero(np.asarray(values) <= threshold)
    return int(steps[hits[0]]) if len(hits) else ""


def compute(config: dict):
    """Train every lane; return ``(rows, curves, analyses)`` (see the module docstring)."""
    data = net.load_digits_split(config["n"], seed=config["seed"])
    K, n = data.K, data.n
    pairs, specs = lanes(config)
    L = len(pairs)
    model = net.make_mlp(config["seed"], config["widths"], config["d"], K)
    x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    trained = net.train(
        net.stack([model] * L),
        x,
        jnp.tile(y, (L, 1)),
        specs,
        adam_steps=config["adam_steps"],
        lbfgs_steps=config["lbfgs_steps"],
        every=config["every"],
        adam_lr=ADAM_LR,
        gtol=config["gtol"],
        ftol=config["ftol"],
        stop_early=False,
    )
    h = trained.history
    rows, curves, analyses = [], [], {}
    for j, (setting, delta) in enumerate(pairs):
        model_j = net.lane(trained.models, j)
        W, H, b = net.last_layer(model_j, x)
        theory_j = target(setting, delta, K, n, float(h.w_norm[-1, j]), float(h.h_norm[-1, j]))
        w_err = np.abs(h.w_norm[:, j] - theory_j["w_norm_theory"]) / theory_j["w_norm_theory"]
        h_err = np.abs(h.h_norm[:, j] - theory_j["h_norm_theory"]) / theory_j["h_norm_theory"]
        for i, step in enumerate(h.step):
            curves.append(
                dict(
                    setting=setting,
                    delta=delta,
                    step=int(step),
                    phase="adam" if step <= config["adam_steps"] else "lbfgs",
                    objective=float(h.objective[i, j]),
                    grad_norm=float(h.grad_norm[i, j]),
                    train_error=float(h.train_error[i, j]),
                    nc1=float(h.nc1[i, j]),
                    nc2=float(h.nc2[i, j]),
                    nc3=float(h.nc3[i, j]),
                    w_norm=float(h.w_norm[i, j]),
                    h_norm=float(h.h_norm[i, j]),
                    w_rel_error=float(w_err[i]),
                    h_rel_error=float(h_err[i]),
                )
            )
        test_logits = model_j.logits_of(model_j.features(jnp.asarray(data.x_test)))
        test_error = float(np.mean(np.argmax(np.asarray(test_logits), axis=1) != data.y_test))
        row = dict(
            setting=setting,
            loss="ce" if delta == 0 else "ls",
            delta=delta,
            K=K,
            n=n,
            N=K * n,
            d=config["d"],
            widths="x".join(map(str, config["widths"])),
            steps=trained.steps,
            status=trained.status[j],
            stopped_by=trained.reason[j],
            objective=float(h.objective[-1, j]),
            grad_norm=float(h.grad_norm[-1, j]),
            objective_change=net.last_change(h, j),
            train_error=float(h.train_error[-1, j]),
            test_error=test_error,
            nc1=float(h.nc1[-1, j]),
            nc2=float(h.nc2[-1, j]),
            nc3=float(h.nc3[-1, j]),
            w_norm=float(h.w_norm[-1, j]),
            h_norm=float(h.h_norm[-1, j]),
            **theory_j,
            w_rel_error=float(w_err[-1]),
            h_rel_error=float(h_err[-1]),
            steps_train_error_0=first_step(h.step, h.train_error[:, j], 0.0),
        )
        for threshold in NC_THRESHOLDS:
            for key in ("nc1", "nc2", "nc3"):
                row[f"steps_{key}_{threshold:g}"] = first_step(h.step, getattr(h, key)[:, j], threshold)
        for threshold in NORM_THRESHOLDS:
            row[f"steps_norms_{threshold:g}"] = first_step(h.step, np.maximum(w_err, h_err), threshold)
        rows.append(row)
        analyses[f"{setting}_delta_{delta:g}"] = analyse(W, H, b, y, setting, delta, theory_j)
    return rows, curves, analyses


def analyse(W, H, b, labels, setting: str, delta: float, theory_j: dict) -> dict:
    """The final last layer through ``ufm.analyze`` in the frameworks' layout (features (N, d), weight (K, d))."""
    lam_b = LAM_B if setting == "simulated_ufm" else WEIGHT_DECAY
    result = analyze(
        np.asarray(H).T,
        np.asarray(labels),
        np.asarray(W).T,
        np.asarray(b),
        loss="ce" if delta == 0 else "ls",
        delta=delta,
        lam_W=theory_j["lam_W"],
        lam_H=theory_j["lam_H"],
        lam_b=lam_b,
        spectra=False,
    )
    return result.to_json()


def delta_label(delta: float) -> str:
    return "CE" if delta == 0 else rf"LS $\delta={delta:g}$"


def plot(rows, curves, config):
    """Six panels, one legend below them. Over the steps (colour: delta; solid: simulated UFM, dotted: weight
    decay; grey line: Adam -> L-BFGS): the norms' distance to Theorem 4.1 (Fig. 8), NC1, NC2, NC3 (Figs.
    1/10/9); at the end, the norms against delta (Fig. 6b): Theorem 4.1's curve for the simulated UFM, and for
    weight decay the theorem at the lam_H fitted to each run on its own (separate points, not a curve)."""
    fig, axes = figure(2, 3, panel=(4.0, 3.2))
    colors = dict(zip(DELTAS, plt.cm.viridis(np.linspace(0, 0.9, len(DELTAS))), strict=True))
    styles = {"simulated_ufm": "-", "weight_decay": ":"}
    errors, ncs = axes[0, 0], (axes[0, 1], axes[1, 0], axes[1, 1])
    for setting, style in styles.items():
        for delta in DELTAS:
            sub = [c for c in curves if c["setting"] == setting and c["delta"] == delta]
            if not sub:
                continue
            steps = [c["step"] for c in sub]
            kw = dict(color=colors[delta], ls=style)
            if setting == "simulated_ufm":
                errors.semilogy(steps, [max(c["w_rel_error"], c["h_rel_error"], 1e-16) for c in sub], **kw)
            for ax, key in zip(ncs, ("nc1", "nc2", "nc3"), strict=True):
                ax.semilogy(steps, [max(c[key], 1e-16) for c in sub], **kw)
    for ax in (errors, *ncs):
        ax.axvline(config["adam_steps"], color="grey", lw=0.8)
        ax.set(xlabel="full-batch step (Adam, then L-BFGS)")
    errors.set(
        ylabel="relative error vs Theorem 4.1",
        title=r"Fig. 8: worse of mean $\|w_k\|$, $\|\bar h_k - h_G\|$" + "\n(simulated UFM)",
    )
    for ax, key in zip(ncs, ("NC1", "NC2", "NC3"), strict=True):
        ax.set(ylabel=key, title=f"Figs. 1/10/9: {key}")
    ax = axes[0, 2]
    dense = np.linspace(0.0, max(DELTAS), 100)
    simulated = [r for r in rows if r["setting"] == "simulated_ufm"]
    n = simulated[0]["n"]
    curve = theory.norms(10, n, delta=dense, lam_W=LAM_W, lam_H=LAM_H)
    for key, color, name in (("w", "C0", r"$\|w_k\|$"), ("h", "C1", r"$\|\bar h_k - h_G\|$")):
        ax.plot(dense, getattr(curve, key), "-", color=color, lw=1.2)
        ax.plot([r["delta"] for r in simulated], [r[f"{key}_norm"] for r in simulated], "o", color=color)
        decay = [r for r in rows if r["setting"] == "weight_decay"]
        ax.plot([r["delta"] for r in decay], [r[f"{key}_norm"] for r in decay], "s", color=color, mfc="none", ms=7)
        ax.plot([r["delta"] for r in decay], [r[f"{key}_norm_theory"] for r in decay], "x", color=color, ms=7)
        ax.annotate(
            f"mean {name}",
            (dense[-1], getattr(curve, key)[-1]),
            xytext=(-4, 6),
            textcoords="offset points",
            ha="right",
            color=color,
        )
    ax.set(
        yscale="log",
        xlabel=r"label smoothing $\delta$",
        ylabel="mean norm at the end",
        title="Fig. 6b: final norms vs $\\delta$",
    )
    for ax in (errors, *ncs, axes[0, 2]):
        label_log_axes(ax)
    axes[1, 2].axis("off")
    handles = [Line2D([], [], color=colors[d], lw=2, label=delta_label(d)) for d in DELTAS]
    handles += [
        Line2D([], [], color="k", ls="-", label=r"simulated UFM ($\lambda_H\|H\|^2$ on the features)"),
        Line2D([], [], color="k", ls=":", label=f"weight decay {WEIGHT_DECAY:g} (no feature penalty)"),
        Line2D([], [], color="grey", lw=0.8, label="Adam → L-BFGS"),
        Line2D([], [], color="k", marker="o", ls="-", lw=1.2, label="Fig. 6b: network (●), Theorem 4.1 (line)"),
        Line2D([], [], color="k", marker="s", mfc="none", ls="none", label="Fig. 6b: network, weight decay"),
        Line2D(
            [],
            [],
            color="k",
            marker="x",
            ls="none",
            label="Fig. 6b: Theorem 4.1 at the $\\lambda_H$ fitted\nto each weight-decay run on its own",
        ),
    ]
    axes[1, 2].legend(handles=handles, loc="center", frameon=False, fontsize=8)
    zero = [r["steps_train_error_0"] for r in rows]
    if not all(isinstance(z, int) for z in zero):
        trained = "training error not 0 in every run"
    elif min(zero) == max(zero):
        trained = f"training error 0 from step {min(zero)} on in every run"
    else:
        trained = f"training error 0 from step {min(zero)} to {max(zero)} on"
    fig.suptitle(
        f"MLP {'-'.join(map(str, config['widths']))}, $d={config['d']}$, on digits, $K=10$, $n={config['n']}$; "
        + r"simulated UFM: $\lambda_W$ = "
        + f"{LAM_W:g}, "
        + r"$\lambda_H$ = "
        + f"{LAM_H:g}, "
        + r"$\lambda_b$ = "
        + f"{LAM_B:g}; {trained}"
    )
    return fig


def body(args, outputs):
    config = settings(args.quick)
    rows, curves, analyses = compute(config)
    outputs.csv(f"{NAME}.csv", [r for r in rows if r["setting"] == "simulated_ufm"])
    outputs.csv("weight_decay.csv", [r for r in rows if r["setting"] == "weight_decay"])
    outputs.csv("curves.csv", curves)
    outputs.json("analysis.json", analyses)
    outputs.figure(f"{NAME}.png", plot(rows, curves, config))
    print(
        f"every run takes the whole budget of {config['adam_steps']} Adam + {config['lbfgs_steps']} L-BFGS steps; "
        f"at its end it is 'converged' if its gradient norm is <= {config['gtol']:g} or its objective changed by "
        f"<= {config['ftol']:g} (relative) per step, else 'max_steps' (not converged)"
    )
    for r in rows:
        print(
            f"{r['setting']:>13} delta={r['delta']:<4g} {status_words(r, config):<44} "
            f"rel.err ||w|| {r['w_rel_error']:.2e} ||h|| {r['h_rel_error']:.2e} NC1 {r['nc1']:.1e} "
            f"test error {r['test_error']:.3f}"
        )


def status_words(row: dict, config: dict) -> str:
    """Why a run that took the whole budget is called converged or not (its status and the test that decided)."""
    if row["status"] == "converged" and row["stopped_by"] == "gradient":
        return f"converged: gradient {row['grad_norm']:.1e} <= {config['gtol']:g}"
    if row["status"] == "converged":
        return f"converged: objective change {row['objective_change']:.1e} <= {config['ftol']:g}"
    if row["status"] == "max_steps":
        return f"not converged: gradient {row['grad_norm']:.1e} > {config['gtol']:g}"
    return row["status"]


def main(argv=None) -> int:
    return run(body, NAME, __doc__.splitlines()[0], argv, missing_extra=NETWORK_MISSING)


if __name__ == "__main__":
    raise SystemExit(main())
