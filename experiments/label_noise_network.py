"""Experiment 10: Nguyen et al.'s memorization-dilation measurement on a real network (their Sec. 4.1, Fig. 1).

Two classes of scikit-learn's digits (``CLASSES``, the first two as in the paper), a balanced
training split of n images per class and the remaining images as the test split
(``experiments/_network.py``). Training labels are corrupted as the paper defines it: each label
independently with probability eta is *redrawn uniformly* from the two classes (so about half of
the corrupted labels keep their true value); the corrupted set is every redrawn sample.

A ReLU MLP (equinox) with feature dimension M = 2 (ReLU on the feature layer: non-negative
penultimate activations, as in the paper) and a linear classifier is trained full batch, with
weight decay ``WEIGHT_DECAY`` on every parameter as in the paper (their SGD weight decay 1e-3,
i.e. ``1e-3/2 ||theta||^2``), to convergence (full-batch Adam with a step decay, until the
objective stops changing, ``settings``), for CE, LS (alpha = 0.1: targets ``(1 - alpha) e_k + alpha/2``) and MSE
(``||z - e_k||^2``), for every eta and several seeds (the seed sets the initialisation and the
noise draw; the data split is fixed). Differences from the paper: full-batch Adam instead of SGD
with momentum, no batch normalization, 2 hidden layers instead of 9 of width 2048 (an 8x8-pixel
data set).

Measured on each trained network (paper's definitions):

* memorization, eq. (3): ``mem = sum_{i corrupted} ||h_i - h*_{y_i}||``, ``h_i`` the training
  feature of corrupted sample i, ``h*_k`` the mean of the *test* features of true class k;
* dilation, eq. (2) on the test features: ``NC1_test = nc1_nguyen(H_test, y_test, 2)``;
* test accuracy, and training accuracy on the observed (noisy) labels.

Per loss, the slope of ``sqrt(NC1_test)`` against ``mem`` is fitted by least squares over the
noise levels, once per seed (spread: standard deviation over seeds) and once pooled; and again
against ``mem / ||h*_1 - h*_2||``, which does not change when a loss merely scales the features
(eq. (3) does; eq. (2) does not). The paper
claims CE and LS share one slope while MSE's differs. Runs whose features degenerate (a test
class mean at the origin: the paper's Fig. 4a case, which it filtered out) are flagged and left
out of the fits.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from experiments._common import figure, listed, run
from ufm.metrics import nc1_nguyen

try:  # equinox and scikit-learn: the optional 'network' extra
    from experiments import _network as net

    NETWORK_MISSING: ImportError | None = None
except ImportError as missing:
    net, NETWORK_MISSING = None, missing  # type: ignore[assignment]

NAME = "label_noise_network"
CLASSES = (0, 1)
ETAS = (0.0, 0.025, 0.05, 0.1, 0.2, 0.3, 0.4)
LOSSES = {"ce": (0.0, 0), "ls": (0.1, 0), "mse": (0.0, 1)}  # name -> (delta, loss_id)
WEIGHT_DECAY = 1e-3
ADAM_LR = 3e-3
#: a test class mean shorter than this fraction of the longer one counts as "at the origin"
DEGENERATE = 1e-3


def settings(quick: bool) -> dict:
    """Sizes and budgets: Adam with the step multiplied by 0.1 every ``decay_every`` steps (the paper's
    step schedule), stopped when the objective changes by less than ``ftol`` per step (relative)."""
    if quick:
        return dict(
            n=60,
            widths=(32, 32),
            etas=(0.0, 0.1, 0.3),
            seeds=(0, 1),
            adam_steps=1500,
            decay_every=600,
            every=50,
            ftol=1e-6,
        )
    return dict(
        n=120,
        widths=(64, 64),
        etas=ETAS,
        seeds=(0, 1, 2, 3, 4),
        adam_steps=4000,
        decay_every=1000,
        every=100,
        ftol=1e-7,
    )


def noisy_labels(y, eta: float, seed: int):
    """``(observed, corrupted)``: each label redrawn uniformly from {0, 1} with probability eta (seeded)."""
    rng = np.random.default_rng([int(seed), int(round(eta * 1_000_000))])
    corrupted = rng.random(len(y)) < eta
    redrawn = rng.integers(0, len(CLASSES), len(y))
    return np.where(corrupted, redrawn, y), corrupted


def memorization(H_train, true_labels, corrupted, test_means) -> float:
    """Eq. (3): ``sum over corrupted i of ||h_i - h*_{true label}||``; ``H_train: (N, M)``, ``test_means: (K, M)``."""
    gaps = np.linalg.norm(H_train - test_means[true_labels], axis=1)
    return float(np.sum(gaps[corrupted]))


def compute(config: dict):
    """Train every (loss, eta, seed) lane at once; one row per lane."""
    data = net.load_digits_split(config["n"], classes=CLASSES, seed=0)
    K, y = data.K, data.y_train
    lanes = [(loss, eta, seed) for loss in LOSSES for eta in config["etas"] for seed in config["seeds"]]
    observed, corrupted = zip(*(noisy_labels(y, eta, seed) for _, eta, seed in lanes), strict=True)
    specs = net.TrainSpec(
        jnp.array([LOSSES[loss][0] for loss, _, _ in lanes]),
        jnp.zeros(len(lanes)),
        jnp.zeros(len(lanes)),
        jnp.zeros(len(lanes)),
        jnp.full(len(lanes), WEIGHT_DECAY),
        jnp.array([LOSSES[loss][1] for loss, _, _ in lanes]),
    )
    models = net.stack([net.make_mlp(seed, config["widths"], 2, K, nonnegative=True) for _, _, seed in lanes])
    x = jnp.asarray(data.x_train)
    trained = net.train(
        models,
        x,
        jnp.asarray(np.stack(observed)),
        specs,
        adam_steps=config["adam_steps"],
        lbfgs_steps=0,
        every=config["every"],
        adam_lr=ADAM_LR,
        decay_every=config["decay_every"],
        ftol=config["ftol"],
    )
    rows = []
    for j, (loss, eta, seed) in enumerate(lanes):
        model = net.lane(trained.models, j)
        H_train = np.asarray(model.features(x))
        H_test = np.asarray(model.features(jnp.asarray(data.x_test)))
        test_means = np.stack([H_test[data.y_test == k].mean(axis=0) for k in range(K)])
        lengths = np.linalg.norm(test_means, axis=1)
        mem = memorization(H_train, y, corrupted[j], test_means)
        spread = float(np.linalg.norm(test_means[0] - test_means[1]))
        nc1_test = float(nc1_nguyen(jnp.asarray(H_test.T), jnp.asarray(data.y_test), K))
        test_accuracy = float(
            np.mean(np.argmax(np.asarray(model.logits_of(jnp.asarray(H_test))), axis=1) == data.y_test)
        )
        train_fit = float(np.mean(np.argmax(np.asarray(model.logits_of(jnp.asarray(H_train))), axis=1) == observed[j]))
        rows.append(
            dict(
                loss=loss,
                eta=eta,
                seed=seed,
                n=data.n,
                N=K * data.n,
                N_test=len(data.y_test),
                widths="x".join(map(str, config["widths"])),
                status=trained.status[j],
                stopped_by=trained.reason[j],
                steps=trained.steps,
                objective=float(trained.history.objective[-1, j]),
                grad_norm=float(trained.history.grad_norm[-1, j]),
                objective_change=net.last_change(trained.history, j),
                corrupted=int(np.sum(corrupted[j])),
                flipped=int(np.sum(observed[j] != y)),
                memorization=mem,
                test_mean_distance=spread,
                memorization_normalized=mem / spread if spread > 0 else float("nan"),
                nc1_test=nc1_test,
                sqrt_nc1_test=float(np.sqrt(max(nc1_test, 0.0))),
                nc1_train_observed=float(nc1_nguyen(jnp.asarray(H_train.T), jnp.asarray(observed[j]), K)),
                test_accuracy=test_accuracy,
                train_accuracy_observed=train_fit,
                degenerate=bool(lengths.min() <= DEGENERATE * lengths.max()),
            )
        )
    return rows


def _slope(mem, dil) -> float:
    mem, dil = np.asarray(mem, float), np.asarray(dil, float)
    if len(mem) < 2 or np.ptp(mem) == 0:
        return float("nan")
    return float(np.polyfit(mem, dil, 1)[0])


#: x-axes of the fits: the paper's eq. (3), and the same divided by the distance of the two test class means
MEMORIZATION = ("memorization", "memorization_normalized")


def fit_slopes(rows) -> list[dict]:
    """Per x-axis and loss: slope of sqrt(NC1_test) on it, per seed (mean, std over seeds) and pooled."""
    fits = []
    for x_key in MEMORIZATION:
        for loss in LOSSES:
            usable = [r for r in rows if r["loss"] == loss and not r["degenerate"]]
            seeds = sorted({r["seed"] for r in usable})
            per_seed = [
                _slope(
                    [r[x_key] for r in usable if r["seed"] == s], [r["sqrt_nc1_test"] for r in usable if r["seed"] == s]
                )
                for s in seeds
            ]
            per_seed = [s for s in per_seed if np.isfinite(s)]
            xs, ys = [r[x_key] for r in usable], [r["sqrt_nc1_test"] for r in usable]
            line = np.polyfit(xs, ys, 1) if len(usable) > 1 and np.ptp(xs) > 0 else (np.nan, np.nan)
            fits.append(
                dict(
                    x=x_key,
                    loss=loss,
                    runs=len(usable),
                    excluded=sum(r["loss"] == loss for r in rows) - len(usable),
                    seeds=len(per_seed),
                    slope_mean=float(np.mean(per_seed)) if per_seed else float("nan"),
                    slope_std=float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else float("nan"),
                    slope_pooled=float(line[0]),
                    intercept_pooled=float(line[1]),
                    per_seed=" ".join(f"{s:.4g}" for s in per_seed),
                )
            )
    return fits


def compare_slopes(fits) -> list[dict]:
    """Pairwise differences of the per-seed mean slopes, in units of their combined standard error."""
    out = []
    for x_key in MEMORIZATION:
        by = {f["loss"]: f for f in fits if f["x"] == x_key}
        for a, b in (("ce", "ls"), ("ce", "mse"), ("ls", "mse")):
            fa, fb = by[a], by[b]
            se = float(np.sqrt(fa["slope_std"] ** 2 / max(fa["seeds"], 1) + fb["slope_std"] ** 2 / max(fb["seeds"], 1)))
            diff = fa["slope_mean"] - fb["slope_mean"]
            out.append(
                dict(
                    x=x_key,
                    pair=f"{a}-{b}",
                    difference=float(diff),
                    standard_error=se,
                    z=float(diff / se) if se > 0 else float("nan"),
                    ratio=float(fa["slope_mean"] / fb["slope_mean"]) if fb["slope_mean"] else float("nan"),
                )
            )
    return out


def _accuracies(rows, loss: str, eta: float) -> list[float]:
    return [r["test_accuracy"] for r in rows if r["loss"] == loss and r["eta"] == eta and not r["degenerate"]]


def plot(rows, fits, config):
    fig, axes = figure(1, 3, panel=(5.2, 4.0))
    colors = {"ce": "C0", "ls": "C1", "mse": "C2"}
    for ax, x_key in zip(axes[:2], MEMORIZATION, strict=True):
        for fit in (f for f in fits if f["x"] == x_key):
            loss = fit["loss"]
            sub = [r for r in rows if r["loss"] == loss and not r["degenerate"]]
            ax.scatter(
                [r[x_key] for r in sub],
                [r["sqrt_nc1_test"] for r in sub],
                s=14,
                color=colors[loss],
                alpha=0.7,
                label=f"{loss.upper()}: slope {fit['slope_mean']:.3g} ± {fit['slope_std']:.2g}",
            )
            if sub and np.isfinite(fit["slope_pooled"]):
                grid = np.linspace(0, max(r[x_key] for r in sub), 20)
                ax.plot(grid, fit["intercept_pooled"] + fit["slope_pooled"] * grid, color=colors[loss], lw=1)
        ax.set(
            ylabel=r"$\sqrt{\mathrm{NC1}_{\mathrm{test}}}$ (eq. 2)",
            title=f"digits {listed(CLASSES)}, $M = 2$, {len(config['seeds'])} seeds, "
            + rf"$\eta \in$ {listed(config['etas'])}",
        )
        ax.legend(fontsize=8)
    axes[0].set_xlabel(r"memorization (eq. 3): $\sum_{i\ \mathrm{corrupted}} \|h_i - h^*_{\mathrm{true}}\|$")
    axes[1].set_xlabel(r"memorization / $\|h^*_1 - h^*_2\|$ (scale-free)")
    for loss in LOSSES:
        acc = [_accuracies(rows, loss, eta) for eta in config["etas"]]
        axes[2].errorbar(
            config["etas"],
            [np.mean(a) for a in acc],
            yerr=[np.std(a) for a in acc],
            marker="o",
            color=colors[loss],
            capsize=3,
            label=loss.upper(),
        )
    axes[2].set(
        xlabel=r"label noise $\eta$",
        ylabel="test accuracy (mean ± std over seeds)",
        title="test accuracy (degenerate runs left out)",
    )
    axes[2].legend(fontsize=8)
    return fig


def body(args, outputs):
    config = settings(args.quick)
    rows = compute(config)
    fits = fit_slopes(rows)
    comparisons = compare_slopes(fits)
    for name, table in ((f"{NAME}.csv", rows), ("slopes.csv", fits), ("slope_comparison.csv", comparisons)):
        outputs.csv(name, table)
    outputs.figure(f"{NAME}.png", plot(rows, fits, config))
    for fit in fits:
        print(
            f"{fit['x']} {fit['loss']:>3}: slope {fit['slope_mean']:.4g} +- {fit['slope_std']:.2g} over "
            f"{fit['seeds']} seeds (pooled {fit['slope_pooled']:.4g}; {fit['excluded']} degenerate runs left out)"
        )
    for c in comparisons:
        print(
            f"{c['x']} {c['pair']}: difference {c['difference']:.3g} ({c['z']:.2f} standard errors), "
            f"ratio {c['ratio']:.3g}"
        )
    for eta in config["etas"]:
        accs = ", ".join(f"{loss} {np.mean(_accuracies(rows, loss, eta)):.3f}" for loss in LOSSES)
        print(f"eta={eta:g}: test accuracy {accs}")


def main(argv=None) -> int:
    return run(body, NAME, __doc__.splitlines()[0], argv, missing_extra=NETWORK_MISSING)


if __name__ == "__main__":
    raise SystemExit(main())
