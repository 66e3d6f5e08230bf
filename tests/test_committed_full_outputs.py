"""The committed full-mode outputs (``experiments/figures/<name>_full/``) and what ``experiments/README.md``
quotes from them.

Every full-mode folder carries a ``provenance.json`` naming the 40-hex commit that made it, and the
write-up names that commit, so a regenerated folder whose write-up was not revisited fails here. Every
number the write-up quotes from a full-mode CSV is listed in :data:`QUOTES` with the phrase it stands in
and how it is read from the CSV: the phrase must still be in the write-up (whitespace-insensitive), and the
CSV value must round to the quoted digits. Tolerance: half a unit in the last quoted digit (``"1.9e-9"``:
5e-11; ``"3600"``: 0.5), the definition of "quoted to the digits shown"; a quote with fewer digits is
looser, never wrong. Reads CSVs only: no computation.
"""

import csv
import json
import re
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
FIGURES = ROOT / "experiments" / "figures"
README = ROOT / "experiments" / "README.md"
FULL = sorted(p for p in FIGURES.glob("*_full") if p.is_dir())


#: what the quote being checked has read, ``(file, column, selection)``, for the failure message
_READ: list[tuple[str, str, str]] = []


@cache
def _table(path: str) -> tuple[dict[str, str], ...]:
    with open(FIGURES / path, newline="") as handle:
        return tuple(csv.DictReader(handle))


def _matches(cell: str, wanted) -> bool:
    if isinstance(wanted, bool):
        return cell == str(wanted)
    if isinstance(wanted, (int, float)):
        return float(cell) == wanted
    return cell == wanted


def rows(path: str, where: Callable[[dict[str, str]], bool] | None = None, **equal) -> list[dict[str, str]]:
    """The rows of ``figures/<path>`` whose columns equal ``equal`` (numbers compared as floats) and, if given,
    satisfy ``where``."""
    found = [
        r for r in _table(path) if all(_matches(r[c], v) for c, v in equal.items()) and (where is None or where(r))
    ]
    assert found, f"{path}: no row with {equal}"
    return found


def column(path: str, name: str, where: Callable[[dict[str, str]], bool] | None = None, **equal) -> np.ndarray:
    """Column ``name`` of the selected rows, as floats (recorded in :data:`_READ`)."""
    _READ.append((path, name, ", ".join(f"{c}={v}" for c, v in equal.items()) + (" and a filter" if where else "")))
    return np.array([float(r[name]) for r in rows(path, where, **equal)])


def one(path: str, name: str, where: Callable[[dict[str, str]], bool] | None = None, **equal) -> float:
    values = column(path, name, where, **equal)
    assert values.size == 1, f"{path}: {values.size} rows with {equal}, expected one"
    return float(values[0])


def count(path: str, name: str, **equal) -> float:
    """How many selected rows have ``name`` True."""
    _READ.append((path, f"{name}, count of True", ", ".join(f"{c}={v}" for c, v in equal.items())))
    return float(sum(r[name] == "True" for r in rows(path, **equal)))


def size(path: str, **equal) -> float:
    """How many rows are selected."""
    _READ.append((path, "(rows)", ", ".join(f"{c}={v}" for c, v in equal.items())))
    return float(len(rows(path, **equal)))


def delta_from(low: float) -> Callable[[dict[str, str]], bool]:
    return lambda r: float(r["delta"]) >= low


class Quote(NamedTuple):
    phrase: str  # text of the write-up that holds the number
    number: str  # the number as quoted (a substring of phrase)
    value: Callable[[], float]  # the number as the committed CSV holds it
    bound: bool = False  # the write-up states an upper bound ("<= 1e-22"): the value must not exceed it


NVD = "norms_vs_delta_full/norms_vs_delta.csv"
PHASE = "phase_diagram_full/phase_diagram.csv"
B6 = "B.6: lam_W=1e-3, lam_H=1e-6, lam_b=1e-2, n=1000"
CONV = "convergence_full/convergence.csv"
FIRST = "convergence_full/first_iterations.csv"
SVK = "speed_vs_kappa_full/speed_vs_kappa.csv"
FITS = "speed_vs_kappa_full/fits.csv"
LAND = "landscape_full/landscape.csv"
NOISE = "label_noise_full/label_noise.csv"
MAP = "md_model_full/map.csv"
MD = "md_model_full/md_model.csv"
IMB = "imbalance_full/imbalance.csv"
SPEC = "imbalance_full/spectra.csv"
SELI = "imbalance_full/seli.csv"


def _norm_error(setting: str) -> float:
    return max(column(NVD, c, setting=setting, collapsed=False).max() for c in ("w_error", "h_error"))


def _fit(target: str, quantity: str, name: str) -> float:
    return one(FITS, name, target=target, quantity=quantity)


def _rate_errors() -> np.ndarray:
    return np.abs(column(SVK, "rate_measured") / column(SVK, "rate_predicted") - 1)


def _mu_is_lam() -> np.ndarray:
    mu = 1 / (column(SVK, "lr") * column(SVK, "kappa_step"))
    return np.isclose(mu, column(SVK, "lam"), rtol=1e-6)


def _ce_minus_ls() -> np.ndarray:
    """Dilation under CE minus under LS, for every eta > 0 and every delta > 0."""
    gaps = []
    for eta in sorted(set(column(NOISE, "eta")) - {0.0}):
        ce = one(NOISE, "dilation", eta=eta, delta=0.0)
        gaps.extend(ce - column(NOISE, "dilation", delta_from(1e-12), eta=eta))
    return np.array(gaps)


def _noisy_dilations() -> np.ndarray:
    return column(NOISE, "dilation", lambda r: float(r["eta"]) > 0)


def _cases() -> list[str]:
    return sorted({r["case"] for r in _table(LAND)})


def _kappa_times_distance(loss: str, lam: float) -> float:
    """kappa_W (1 - R/R*) at R = R*(1 - 1e-3), the constant of the 1/(R* - R) law."""
    r = rows(SPEC, loss=loss, lam=lam, probe="R* (1 - 0.001)")[0]
    return float(r["kappa_W"]) * (1 - float(r["R"]) / float(r["R_star"]))


def _seli(name: str, sizes: tuple[str, ...], low: float = 1e-6, high: float = 1e-6) -> np.ndarray:
    """Column ``name`` of the free-bias (lam_b = lam) rows of ``sizes`` with ``low <= lam <= high``."""
    return column(SELI, name, lambda r: r["sizes"] in sizes and low <= float(r["lam"]) <= high, lam_b="lam")


IMBALANCED = ("20-20-4-4", "20-20-1-1")
BALANCED = ("20-20-20-20",)
SELI_COLUMNS = ("seli_logits", "seli_WW", "seli_HH")


def _bisected(r: dict[str, str]) -> bool:
    """A row whose R* was bisected (width > 0; R* = 1 rows have width 0)."""
    return float(r["R_star_width"]) > 0


def _md_ratio(alpha0: float, eta: float) -> float:
    """The ratio of md_model.csv's two-point row at ``alpha0`` whose eta is ``eta`` to 2 digits."""
    return one(MD, "ratio", lambda r: abs(float(r["eta"]) - eta) < 5e-4, alpha0=alpha0, law="two-point")


def _r_star(K_A: int, K_B: int, delta: float, lam: float) -> float:
    return one(IMB, "R_star", K_A=K_A, K_B=K_B, delta=delta, lam=lam)


QUOTES: list[Quote] = [
    # 1. norms vs delta
    Quote("worst 1.9e-9 below the boundary for B.6", "1.9e-9", lambda: _norm_error(B6)),
    Quote("and 3.2e-10 for the default", "3.2e-10", lambda: _norm_error("lam=5e-4, n=500")),
    Quote(
        "norms ≤ 5.1e-9 past it",
        "5.1e-9",
        lambda: max(column(NVD, c, collapsed=True).max() for c in ("w_solver", "h_solver")),
    ),
    # 2. convergence
    Quote("≤ 1e-6 after CE 3600, LS 2575 (δ = 0.025)", "3600", lambda: one(CONV, "iterations_logit_1e-06", delta=0)),
    Quote("LS 2575 (δ = 0.025), 2100 (0.05)", "2575", lambda: one(CONV, "iterations_logit_1e-06", delta=0.025)),
    Quote("2100 (0.05), 2025–2075 (0.1–0.4)", "2100", lambda: one(CONV, "iterations_logit_1e-06", delta=0.05)),
    Quote("2025–2075 (0.1–0.4)", "2025", lambda: column(CONV, "iterations_logit_1e-06", delta_from(0.1)).min()),
    Quote("2025–2075 (0.1–0.4)", "2075", lambda: column(CONV, "iterations_logit_1e-06", delta_from(0.1)).max()),
    Quote("≤ 1e-2 after CE 1825, LS 1300 → 425", "1825", lambda: one(CONV, "iterations_logit_0.01", delta=0)),
    Quote("LS 1300 → 425 as δ grows from 0.025", "1300", lambda: one(CONV, "iterations_logit_0.01", delta=0.025)),
    Quote("LS 1300 → 425 as δ grows from 0.025", "425", lambda: one(CONV, "iterations_logit_0.01", delta=0.4)),
    Quote("NC1 ≤ 1e-6 after CE 1025, LS 925 → 525", "1025", lambda: one(CONV, "iterations_nc1_1e-06", delta=0)),
    Quote("NC1 ≤ 1e-6 after CE 1025, LS 925 → 525", "925", lambda: one(CONV, "iterations_nc1_1e-06", delta=0.025)),
    Quote("NC1 ≤ 1e-6 after CE 1025, LS 925 → 525", "525", lambda: one(CONV, "iterations_nc1_1e-06", delta=0.4)),
    Quote(
        "NC2 after CE 3600, LS 2575 → 2000–2025",
        "2000",
        lambda: column(CONV, "iterations_nc2_1e-06", delta_from(0.1)).min(),
    ),
    Quote(
        "NC2 after CE 3600, LS 2575 → 2000–2025",
        "2025",
        lambda: column(CONV, "iterations_nc2_1e-06", delta_from(0.1)).max(),
    ),
    Quote("NC3 after CE 1975, LS 1975 (δ = 0.025, 0.05)", "1975", lambda: one(CONV, "iterations_nc3_1e-06", delta=0)),
    Quote(
        "NC3 after CE 1975, LS 1975",
        "1975",
        lambda: column(CONV, "iterations_nc3_1e-06", lambda r: 0 < float(r["delta"]) < 0.1).max(),
    ),
    Quote("and 2000–2050 (δ ≥ 0.1)", "2050", lambda: column(CONV, "iterations_nc3_1e-06", delta_from(0.1)).max()),
    Quote("0.368 for CE", "0.368", lambda: one(FIRST, "train_error", delta=0, iteration=25)),
    Quote("to 0.723 at δ = 0.4", "0.723", lambda: one(FIRST, "train_error", delta=0.4, iteration=25)),
    # 3. condition number
    Quote(
        "17 δ: 4.5e-11",
        "4.5e-11",
        lambda: max(column("condition_number_full/condition_number.csv", c).max() for c in ("error_W", "error_H")),
    ),
    # 4. speed vs kappa (the full-run table: FIT_ROWS below) and the text
    Quote("μ = λ in 50 of the 65 runs", "50", lambda: float(_mu_is_lam().sum())),
    Quote("μ = λ in 50 of the 65 runs", "65", lambda: size(SVK)),
    Quote("κ_step = 203 = 1/(9.85·5e-4)", "203", lambda: column(SVK, "kappa_step", lam=5e-4).min()),
    Quote("κ_step = 203 = 1/(9.85·5e-4)", "203", lambda: column(SVK, "kappa_step", lam=5e-4).max()),
    Quote("within 1 % in 48 of 65 runs", "48", lambda: float((_rate_errors() <= 0.01).sum())),
    Quote("worst 51 %", "51", lambda: 100 * _rate_errors().max()),
    Quote("λ = 1e-2: 335 iterations at δ = 0.25", "335", lambda: one(SVK, "iterations_grad", lam=1e-2, delta=0.25)),
    Quote("708 at δ = 0.6", "708", lambda: one(SVK, "iterations_grad", lam=1e-2, delta=0.6)),
    # 5. phase diagram
    Quote(
        "(`figures/phase_diagram_full/`, 100 points): worst 1.1e-8",
        "1.1e-8",
        lambda: column("phase_diagram_full/phase_diagram.csv", "error").max(),
    ),
    Quote(
        "its four points 1.2e-9 … 1.1e-8; elsewhere ≤ 2.1e-12",
        "1.2e-9",
        lambda: column(PHASE, "error", lambda r: abs(float(r["c"]) - 1) < 1e-9).min(),
    ),
    Quote(
        "its four points 1.2e-9 … 1.1e-8; elsewhere ≤ 2.1e-12",
        "2.1e-12",
        lambda: column(PHASE, "error", lambda r: abs(float(r["c"]) - 1) >= 1e-9).max(),
    ),
    # 6. landscape
    Quote("worst relative error 1.2e-9 (CE)", "1.2e-9", lambda: column(LAND, "worst_error", case="ce").max()),
    Quote("1.8e-9 (LS)", "1.8e-9", lambda: column(LAND, "worst_error", case="ls (delta=0.1)").max()),
    Quote(
        "1.6e-9 / 3.0e-9 (FL γ = 2 / 5)", "1.6e-9", lambda: column(LAND, "worst_error", case="focal (gamma=2)").max()
    ),
    Quote(
        "1.6e-9 / 3.0e-9 (FL γ = 2 / 5)", "3.0e-9", lambda: column(LAND, "worst_error", case="focal (gamma=5)").max()
    ),
    Quote("1.6e-9 (MSE)", "1.6e-9", lambda: column(LAND, "worst_error", case="mse (kappa=1, beta=1)").max()),
    Quote("6.6e-9 for CE with H ≥ 0, 80/80", "6.6e-9", lambda: column(LAND, "worst_error", case="ce, H >= 0").max()),
    Quote("6.6e-9 for CE with H ≥ 0, 80/80", "80", lambda: count(LAND, "reached", case="ce, H >= 0")),
    Quote("reaches the prediction (80/80)", "80", lambda: min(count(LAND, "reached", case=c) for c in _cases())),
    Quote("reaches the prediction (80/80)", "80", lambda: max(size(LAND, case=c) for c in _cases())),
    Quote(
        "up to 4.2e-5 in the full run",
        "4.2e-5",
        lambda: column(LAND, "first_error", case="mse (kappa=1, beta=1)").max(),
    ),
    *(
        Quote(
            "the full run's 20 starts per γ at scale 0.01", "20", lambda c=case, f=f: f(LAND, case=c, init_scale=0.01)
        )
        for case in ("focal (gamma=2)", "focal (gamma=5)")
        for f in (size, lambda path, **equal: count(path, "reached", **equal))
    ),
    # 7. label noise
    Quote("gives dilations 0.9974–0.9997", "0.9974", lambda: _noisy_dilations().min()),
    Quote("gives dilations 0.9974–0.9997", "0.9997", lambda: _noisy_dilations().max()),
    Quote("observed-label NC1 ≤ 1e-22", "1e-22", lambda: column(NOISE, "nc1_observed").max(), bound=True),
    Quote("only by 5.0e-6 to 9.2e-5", "5.0e-6", lambda: _ce_minus_ls().min()),
    Quote("only by 5.0e-6 to 9.2e-5", "9.2e-5", lambda: _ce_minus_ls().max()),
    Quote("or 9.2e-5 (full)", "9.2e-5", lambda: _ce_minus_ls().max()),
    # 8. memorization-dilation model
    Quote("58/58 inside map points", "58", lambda: count(MAP, "holds", inside=True)),
    Quote("58/58 inside map points", "58", lambda: size(MAP, inside=True)),
    Quote("ratio 1.14 at alpha0 = 0.01 to 1.95", "1.14", lambda: column(MAP, "ratio", inside=True).min()),
    Quote("ratio 1.14 at alpha0 = 0.01 to 1.95", "1.95", lambda: column(MAP, "ratio", inside=True).max()),
    Quote("ratio 1.21 at alpha0 = 0.02 to 1.95", "1.95", lambda: column(MD, "ratio", inside=True).max()),
    Quote("53/53 inside points", "53", lambda: count(MD, "holds", inside=True)),
    Quote("ratio 1.21 at alpha0 = 0.02", "1.21", lambda: column(MD, "ratio", inside=True).min()),
    Quote("on 224/230 outside points", "224", lambda: count(MAP, "holds", inside=False)),
    Quote("on 224/230 outside points", "230", lambda: size(MAP, inside=False)),
    Quote("94/96 below the alpha0 bound", "94", lambda: count(MAP, "holds", inside=False, alpha_ok=False)),
    Quote("94/96 below the alpha0 bound", "96", lambda: size(MAP, inside=False, alpha_ok=False)),
    Quote("130/134 above the eta bound", "130", lambda: count(MAP, "holds", inside=False, alpha_ok=True)),
    Quote("(all six alpha0; ratio 0.89–0.99)", "0.89", lambda: column(MAP, "ratio", eta=0.9, c_md=1.0).min()),
    Quote("(all six alpha0; ratio 0.89–0.99)", "0.99", lambda: column(MAP, "ratio", eta=0.9, c_md=1.0).max()),
    Quote("0.21–0.41 for LS", "0.21", lambda: column(MAP, "r_over_rmax_ls", eta=0.9, c_md=1.0).min()),
    Quote("0.21–0.41 for LS", "0.41", lambda: column(MAP, "r_over_rmax_ls", eta=0.9, c_md=1.0).max()),
    Quote("1.200 → 1.205 at alpha0 = 0.02", "1.200", lambda: _md_ratio(0.02, 0.014)),
    Quote("1.200 → 1.205 at alpha0 = 0.02", "1.205", lambda: _md_ratio(0.02, 0.021)),
    Quote("1.327 → 1.331 at 0.05", "1.327", lambda: _md_ratio(0.05, 0.014)),
    Quote("1.327 → 1.331 at 0.05", "1.331", lambda: _md_ratio(0.05, 0.021)),
    Quote("all 57 of its points outside the eta bound hold", "57", lambda: count(MD, "holds", inside=False)),
    Quote("all 57 of its points outside the eta bound hold", "57", lambda: size(MD, inside=False)),
    # 11. imbalance
    Quote(
        "at most 0.48 of the width",
        "0.48",
        lambda: max(
            np.abs(column(IMB, "R_star_minus_closed_form", _bisected)) / column(IMB, "R_star_width", _bisected)
        ),
    ),
    Quote("|difference| ≤ 4.7e-7", "4.7e-7", lambda: np.abs(column(IMB, "R_star_minus_closed_form")).max()),
    Quote(
        "within 1.3e-4 in the full run",
        "1.3e-4",
        lambda: np.nanmax(np.abs(column(IMB, "R_ext") / column(IMB, "R_star") - 1)),
    ),
    Quote("CE 16.9 / 7.05 / 3.64", "16.9", lambda: _kappa_times_distance("ce", 0.03)),
    Quote("CE 16.9 / 7.05 / 3.64", "7.05", lambda: _kappa_times_distance("ce", 0.07)),
    Quote("CE 16.9 / 7.05 / 3.64", "3.64", lambda: _kappa_times_distance("ce", 0.15)),
    Quote("LS 20.3 / 7.39 / 3.43", "20.3", lambda: _kappa_times_distance("ls", 0.03)),
    Quote("LS 20.3 / 7.39 / 3.43", "7.39", lambda: _kappa_times_distance("ls", 0.07)),
    Quote("LS 20.3 / 7.39 / 3.43", "3.43", lambda: _kappa_times_distance("ls", 0.15)),
    Quote(
        "agree with the structured path to 4.5e-12", "4.5e-12", lambda: np.nanmax(column(SPEC, "dense_vs_structured"))
    ),
    Quote("λ = 1e-6: 0.11–0.31 and 0.28–0.56", "0.11", lambda: _seli("seli_WW", IMBALANCED).min()),
    Quote("λ = 1e-6: 0.11–0.31 and 0.28–0.56", "0.31", lambda: _seli("seli_WW", IMBALANCED).max()),
    Quote("λ = 1e-6: 0.11–0.31 and 0.28–0.56", "0.28", lambda: _seli("seli_HH", IMBALANCED).min()),
    Quote("λ = 1e-6: 0.11–0.31 and 0.28–0.56", "0.56", lambda: _seli("seli_HH", IMBALANCED).max()),
    Quote(
        "up to 1.2e-9 at λ = 3e-6 and 7.9e-9 at 1e-6",
        "1.2e-9",
        lambda: max(_seli(c, BALANCED, 3e-6, 3.2e-6).max() for c in SELI_COLUMNS),
    ),
    Quote(
        "up to 1.2e-9 at λ = 3e-6 and 7.9e-9 at 1e-6",
        "7.9e-9",
        lambda: max(_seli(c, BALANCED).max() for c in SELI_COLUMNS),
    ),
]

#: the full-mode R* table of experiment 11: its rows as written, and the (K_A, K_B, delta) each stands for
R_STAR_LAMS = (0.03, 0.05, 0.07, 0.1, 0.15, 0.2)
R_STAR_ROWS = {
    "| (2, 2) CE | 275.77 | 97.990 | 49.000 | 22.956 | 9.0000 | 4.0000 |": (2, 2, 0.0),
    "| (2, 2) LS δ = 0.1 | 223.00 | 78.987 | 39.301 | 18.195 | 6.8541 | 2.6909 |": (2, 2, 0.1),
    "| (2, 2) LS δ = 0.3 | 134.10 | 46.979 | 22.956 | 10.151 | 3.1244 | 1 |": (2, 2, 0.3),
    "| (3, 2) CE | 122.12 | 43.101 | 21.322 | 9.7321 | 3.4771 | 1 |": (3, 2, 0.0),
    "| (2, 4) CE | 273.76 | 95.958 | 46.935 | 20.808 | 6.4953 | 1 |": (2, 4, 0.0),
}
for _row, (_K_A, _K_B, _delta) in R_STAR_ROWS.items():
    for _lam, _number in zip(R_STAR_LAMS, _row.split("|")[2:-1], strict=True):
        QUOTES.append(
            Quote(_row, _number.strip(), lambda K_A=_K_A, K_B=_K_B, d=_delta, lam=_lam: _r_star(K_A, K_B, d, lam))
        )


#: the full-run fit table of experiment 4: its rows as written, the quantity each stands for, and per fits.csv
#: column the quoted (gradient test, logit test) pair, in the order the row gives them
FIT_ROWS = {
    "| K p_t (Theorem 4.2) | 0.17 / 0.17 | 0.00 / 0.00 |": (
        "K_p_t",
        {"r2": ("0.17", "0.17"), "r2_within_lam": ("0.00", "0.00")},
    ),
    "| κ of the regularized W block (= H block) | 0.75 / 0.69 | 0.33 / 0.43 (slope −0.26 / −0.37) |": (
        "kappa_W_reg",
        {"r2": ("0.75", "0.69"), "r2_within_lam": ("0.33", "0.43"), "slope_within_lam": ("−0.26", "−0.37")},
    ),
    "| κ of the joint (W, H) Hessian | 0.80 / 0.75 | 0.09 / 0.18 |": (
        "kappa_joint",
        {"r2": ("0.80", "0.75"), "r2_within_lam": ("0.09", "0.18")},
    ),
    "| κ_step = 1/(lr μ) | **0.97 / 0.95** (slope 0.85 / 0.81) | 0.53 / 0.41 |": (
        "kappa_step",
        {"r2": ("0.97", "0.95"), "slope": ("0.85", "0.81"), "r2_within_lam": ("0.53", "0.41")},
    ),
}
for _row, (_quantity, _cells) in FIT_ROWS.items():
    for _name, _pair in _cells.items():
        for _target, _number in zip(("iterations_grad", "iterations_logit"), _pair, strict=True):
            QUOTES.append(Quote(_row, _number, lambda t=_target, q=_quantity, c=_name: _fit(t, q, c)))


def _float(number: str) -> float:
    return float(number.replace("−", "-"))


def half_unit(number: str) -> float:
    """Half a unit in the last digit of ``number`` as written (``"1.9e-9"`` -> 5e-11, ``"3600"`` -> 0.5)."""
    mantissa, _, exponent = number.replace("−", "-").lower().partition("e")
    decimals = len(mantissa.partition(".")[2])
    return 0.5 * 10.0 ** (int(exponent or 0) - decimals)


def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)


@pytest.mark.parametrize(
    "number, expected",
    [("1.9e-9", 5e-11), ("3600", 0.5), ("0.9974", 5e-5), ("4.0000", 5e-5), ("1", 0.5), ("−0.26", 5e-3)],
)
def test_half_unit_of_a_quoted_number(number, expected):
    assert half_unit(number) == pytest.approx(expected, rel=1e-12)


def test_every_full_mode_folder_names_the_commit_that_made_it_and_the_write_up_names_it_too():
    assert len(FULL) >= 12, [p.name for p in FULL]
    readme = README.read_text()
    for folder in FULL:
        name = folder.name.removesuffix("_full")
        assert (ROOT / "experiments" / f"{name}.py").is_file(), f"{folder.name}: no experiments/{name}.py"
        stamp_path = folder / "provenance.json"
        assert stamp_path.is_file(), f"{folder.name}: no provenance.json"
        stamp = json.loads(stamp_path.read_text())
        commit = stamp.get("commit")
        assert isinstance(commit, str) and re.fullmatch(r"[0-9a-f]{40}", commit), (
            f"{folder.name}/provenance.json: commit {commit!r} is not a 40-hex commit"
        )
        command = stamp.get("command", "")
        assert command.startswith(f"python -m experiments.{name} ") and "--quick" not in command, (
            f"{folder.name}/provenance.json: command {command!r} is not a full run of experiments.{name}"
        )
        assert any(folder.glob("*.csv")), f"{folder.name}: no CSV"
        assert commit[:7] in readme, (
            f"{folder.name} was made at commit {commit[:7]}, which experiments/README.md does not name: "
            "re-check the numbers it quotes from this folder"
        )


def check(quote: Quote, readme: str) -> None:
    """Fail, naming the phrase, the files and columns read and both numbers, unless the write-up still holds
    ``quote.phrase`` and the CSV value rounds to ``quote.number`` (or stays below it, for a bound)."""
    assert quote.number in quote.phrase, quote
    assert _flat(quote.phrase) in _flat(readme), (
        f"experiments/README.md no longer says {quote.phrase!r}: update QUOTES with the write-up"
    )
    _READ.clear()
    value = float(quote.value())
    source = "; ".join(f"{path}, column {name}" + (f" ({sel})" if sel else "") for path, name, sel in _READ)
    quoted = _float(quote.number)
    # half a unit in the last quoted digit, plus float64 rounding of the decimal strings themselves
    tolerance = half_unit(quote.number) * (1 + 1e-9)
    good = value <= quoted * (1 + 1e-9) if quote.bound else abs(value - quoted) <= tolerance
    assert good, (
        f"experiments/README.md quotes {quote.number} in {quote.phrase!r}; the committed CSV holds {value!r} "
        f"({source}): " + ("above the stated bound" if quote.bound else f"more than {tolerance:.3g} away")
    )


@pytest.mark.parametrize("quote", QUOTES, ids=[f"{i}:{q.number}" for i, q in enumerate(QUOTES)])
def test_a_number_quoted_from_a_full_mode_csv_is_what_the_csv_holds(quote):
    check(quote, README.read_text())


@pytest.mark.parametrize(
    "quote, message",
    [
        (Quote("CE 16.9", "16.9", lambda: one(CONV, "a_delta", delta=0)), r"quotes 16\.9 in 'CE 16\.9'.*"),
        (Quote("CE 3600", "3600", lambda: one(CONV, "iterations_logit_1e-06", delta=0) + 1), r"more than 0\.5"),
        (Quote("NC1 ≤ 1e-22", "1e-22", lambda: 2e-22, bound=True), r"above the stated bound"),
    ],
)
def test_a_drifted_number_fails_with_its_phrase_file_and_column(quote, message):
    readme = "a write-up that says " + quote.phrase + " somewhere"
    with pytest.raises(AssertionError, match=message) as failure:
        check(quote, readme)
    if "CE 16.9" in quote.phrase:
        assert "convergence_full/convergence.csv, column a_delta (delta=0)" in str(failure.value)
    with pytest.raises(AssertionError, match="no longer says"):
        check(quote, "a write-up without it")
