"""Command line: ``python -m ufm.solve --K 10 --n 500 --delta 0.1`` (also ``ufm-solve``).

argv -> Problem -> solve -> compare -> report (text, optional JSON) -> exit code:

- 0: every applicable prediction agrees within ``--rtol``;
- 1: one does not, or the solver did not converge;
- 2: bad arguments (one ``error:`` line naming the flag), including flags that do not apply to
  the chosen loss or method, or an output that cannot be written (checked before solving);
- 3: not verified: the run converged but no prediction applies (label noise, focal loss with d < K, ...),
  so nothing was checked; the report says why (for d < K with ce/ls/mse the prediction is the numerical
  UFM optimum, the best of ``--restarts`` seeded restarts: no closed form exists there, and the verdict
  says that this is what was compared);
- 4: solved, but the ``--json`` file or the report on standard output could not be written (disk
  full, read-only, ``/dev/full``): one ``error:`` line naming the path, the reason and where the
  result was kept (``ufm._io``);
- 130 / 143: interrupted by SIGINT (Ctrl-C) / SIGTERM; one line, no file written; 141: the reader
  of standard output went away.

The module is also callable: ``ufm.solve(problem, ...)`` is :func:`ufm.solver.solve`.
"""

from __future__ import annotations

import argparse
import math
import sys
import types
from importlib import metadata

import jax
import numpy as np

from theory import validation
from ufm import _cache, _cli, _io, _prog
from ufm._interrupt import exit_on_interrupt
from ufm.compare import LEGEND, format_input, format_number
from ufm.generalized import DEFAULT_RESTARTS, MAX_RESTARTS
from ufm.methods import METHODS, method_spec
from ufm.policy import check_method_fits, default_method
from ufm.problem import Problem
from ufm.results import Advice, Alternative, describe
from ufm.solver import solve as _solve

PROG = "python -m ufm.solve"  #: the name as a module; ``ufm-solve`` when started by that script (ufm._prog)
#: exit code of a run where no prediction applies (d < K, label noise, ...): nothing was verified
EXIT_NOT_VERIFIED = 3


# argparse types: the library's own checks and messages (theory.validation: one rule, one message)
_number, _integer = validation.number_type, validation.integer_type


def _sizes(text: str) -> tuple[int, ...]:
    parts = text.split(",")
    try:
        sizes = tuple(int(part) for part in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--class-sizes must be comma-separated integers >= 1, got {text!r}") from None
    if min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"--class-sizes must be comma-separated integers >= 1, got {text!r}")
    return sizes


def _class_sizes_of(args) -> tuple[tuple[int, ...] | None, int | None]:
    """``(class_sizes, n)`` for :class:`Problem` from ``--n``, ``--class-sizes`` or ``--imbalance R
    --minority-classes K_B`` (K - K_B classes of n, K_B of ``floor(n/R + 1/2)``); ValueError naming the flag."""
    if args.imbalance is None and args.minority_classes is not None:
        raise ValueError("--minority-classes needs --imbalance R")
    if args.imbalance is None:
        if args.class_sizes is not None and len(args.class_sizes) != args.K:
            raise ValueError(f"--class-sizes must give K = {args.K} sizes, got {len(args.class_sizes)}")
        return args.class_sizes, (500 if args.n is None and args.class_sizes is None else args.n)
    if args.class_sizes is not None:
        raise ValueError("--class-sizes and --imbalance exclude each other")
    if args.minority_classes is None:
        raise ValueError("--imbalance needs --minority-classes K_B (the number of minority classes)")
    if not 1 <= args.minority_classes <= args.K - 1:
        raise ValueError(f"--minority-classes must be in [1, K - 1] = [1, {args.K - 1}], got {args.minority_classes}")
    n = 500 if args.n is None else args.n
    small = math.floor(n / args.imbalance + 0.5)
    if small < 1:
        raise ValueError(
            f"--imbalance {args.imbalance:g} leaves round(n / R) = round({n} / {args.imbalance:g}) = 0 "
            f"samples per minority class; use R <= {2 * n:g} or a larger --n"
        )
    return (n,) * (args.K - args.minority_classes) + (small,) * args.minority_classes, n


#: under --help (RawDescriptionHelpFormatter keeps the lines as written); the full story is docs/cli.md
_GLOSSARY = """\
glossary: N = nK samples; lam_Z = sqrt(lam_W lam_H); c = sqrt(KN) lam_Z + delta (the minimizer is
  non-zero iff c < 1); delta* = the delta where c = 1 (phase boundary); a = scale of the optimal
  simplex-ETF logits; p_t, p_n = predicted probability of the true class, of each other class;
  kappa = condition number of a loss block over its non-zero eigenvalues (K·p_t for ce/ls, K >= 3);
  loss block = Hessian of the loss term alone (no weight decay) in W or in H; hbar_k = mean feature of
  class k, h_G = mean of all features; L = the objective; NC1-NC3 = within-class variability, distance
  from a simplex ETF, classifier vs class-mean mismatch (0 at collapse; undefined at W = H = 0).
methods: reduced = L-BFGS on the exact K-class-mean reduction; lbfgs = L-BFGS on all of (W, H, b);
  gd, momentum, nesterov = the papers' gradient descent and its accelerated forms. See docs/cli.md.
"""
EXIT_CODES = _cli.exit_codes(
    (0, "every applicable prediction agrees within --rtol (VERDICT: agrees)"),
    (1, "a prediction disagrees (VERDICT: MISMATCH) or the solver did not converge"),
    (
        EXIT_NOT_VERIFIED,
        "the run converged but no prediction applies, so nothing was checked (label noise, focal "
        "loss with d < K, ...; VERDICT: not verified, the report says why)",
    ),
    bad_input="bad input: one error: line naming the flag (also a flag that does not apply, a --json path that "
    "cannot be written, a problem that does not fit in memory); no file written",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_prog.name("ufm.solve", "ufm-solve"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Solve the unconstrained feature model numerically and compare it, number by number, with\n"
        "theory: Guo et al. Theorems 4.1 and 4.2 (CE/LS), the 1-D reduction of Zhou et al. Theorem 1\n"
        "(focal), the derived rescaled-MSE optimum, and Nguyen et al. Theorem 3.2 (H >= 0).",
        epilog=_GLOSSARY + EXIT_CODES,
    )
    problem = parser.add_argument_group("problem")
    _cli.add_problem_flags(problem, "K")
    problem.add_argument(
        "--n",
        type=_integer("--n", 1),
        default=None,
        help="samples per class (>= 1; default 500); with --class-sizes the largest class "
        "(omit it or give max of the sizes)",
    )
    problem.add_argument(
        "--class-sizes",
        type=_sizes,
        default=None,
        metavar="N1,N2,...",
        help="unequal classes: K comma-separated sizes, class-major (theory then n/a; "
        "compared with the numerical optimum; default: every class of --n)",
    )
    problem.add_argument(
        "--imbalance",
        type=_number("--imbalance", 1.0, low_open=False),
        default=None,
        metavar="R",
        help="shorthand: K - K_B majority classes of n and K_B minority classes "
        "of n/R (rounded half up; refused if that is 0); needs --minority-classes "
        "(default: none, balanced)",
    )
    problem.add_argument(
        "--minority-classes",
        type=_integer("--minority-classes", 1),
        default=None,
        metavar="K_B",
        help="number of minority classes for --imbalance, in [1, K - 1] (no default: required with --imbalance)",
    )
    _cli.add_problem_flags(problem, "d", "loss")
    problem.add_argument(
        "--nonnegative",
        action="store_true",
        help="constrain H >= 0 (projected gradient; needs d >= K; default method momentum)",
    )
    problem.add_argument(
        "--label-noise",
        type=_number("--label-noise", 0.0, 1.0, low_open=False),
        default=0.0,
        help="fraction of labels moved to another class, in [0, 1) (default 0; theory then n/a)",
    )
    problem.add_argument(
        "--noise-seed",
        type=_integer("--noise-seed", 0),
        default=None,
        help="seed of the label corruption (default 0; with --label-noise only)",
    )
    _cli.add_problem_flags(problem, "lam")
    problem.add_argument("--lam-W", type=_number("--lam-W", 0.0), default=None, help="lam_W (> 0; default --lam)")
    problem.add_argument("--lam-H", type=_number("--lam-H", 0.0), default=None, help="lam_H (> 0; default --lam)")
    problem.add_argument(
        "--lam-b", type=_number("--lam-b", 0.0, low_open=False), default=None, help="lam_b (>= 0; default --lam)"
    )
    problem.add_argument("--seed", type=_integer("--seed", 0), default=0, help="initialisation seed (default 0)")
    _cli.add_problem_flags(problem, "float32")
    solver = parser.add_argument_group("solver")
    solver.add_argument(
        "--method",
        choices=METHODS,
        default=None,
        help="optimizer (default: reduced in float64 for ce/ls/mse, lbfgs in float32, for focal "
        "loss and with label noise, momentum with --nonnegative; "
        "gd is the papers' plain gradient descent)",
    )
    _cli.add_solver_flags(solver, "lr", "tol", "max_iters")
    report = parser.add_argument_group("report")
    report.add_argument(
        "--rtol",
        type=_number("--rtol", 0.0, 1.0),
        default=None,
        help="agreement tolerance of the verdict (default 1e-6 in float64, 1e-3 in float32)",
    )
    report.add_argument("--no-hessian", action="store_true", help="skip the Hessian spectra")
    report.add_argument(
        "--restarts",
        type=_integer("--restarts", 1, MAX_RESTARTS),
        default=None,
        metavar="R",
        help="d < K only: seeded restarts of the class-mean solve whose best is the numerical prediction "
        f"(1 to {MAX_RESTARTS}; default {DEFAULT_RESTARTS})",
    )
    report.add_argument(
        "--no-certificate",
        action="store_true",
        help="d < K only: skip the certificate gap (the convex lower bound of ufm.convex; one K x K SVD "
        "per iteration, minutes at K = 1000)",
    )
    _cli.add_output_flags(report, "json", "force", "quiet")
    solver.add_argument(
        "--shard",
        action="store_true",
        help="split H and the samples over all JAX devices (multi-GPU; see docs/sweeps.md)",
    )
    _cache.add_argument(parser)
    return parser


def _kappa_line(problem, prediction) -> str:
    """Theory's condition number of the loss blocks, named for what it is: K·p_t only for CE/LS (Thm 4.2)."""
    kappa_W, kappa_H = prediction["kappa_W"], prediction["kappa_H"]
    if prediction["collapsed"]:
        return "kappa: undefined (W = H = 0 at the minimizer)"
    if problem.nonnegative or math.isnan(kappa_W):
        return "kappa: no prediction (the loss-block spectra are not derived for this setting)"
    guo = problem.loss_spec.closed_form == "guo"
    if guo and problem.K == 2:
        return (
            f"kappa = {format_number(kappa_W)}: for K = 2 each loss block has one non-zero eigenvalue "
            "(K·p_t needs K >= 3)"
        )
    if guo:
        return (
            f"kappa = K·p_t = {format_number(kappa_W)}: condition number of the W and of the H loss block, "
            "largest / smallest non-zero eigenvalue (Thm 4.2)"
        )
    return (
        f"kappa_W = {format_number(kappa_W)}, kappa_H = {format_number(kappa_H)}: largest / smallest non-zero "
        f"eigenvalue of each derived loss block (not K·p_t for {problem.loss})"
    )


def _report_text(problem, prediction, result, comparison, rtol, compiled: str) -> str:
    """The report; ``compiled``: what the time before the compiled run went to
    (:meth:`ufm._cli.CompileWatch.phrase`)."""
    num, given = format_number, format_input  # computed numbers (10 significant digits); parameters as given
    p = problem
    loss = {
        "ls": f"ls (delta = {given(p.delta)})",
        "focal": f"focal (gamma = {given(p.gamma)})",
        "mse": f"mse (kappa = {given(p.mse_kappa)}, beta = {given(p.mse_beta)})",
        "ce": "ce",
    }[p.loss]
    extras = (
        (f", class sizes {','.join(map(str, p.class_sizes))}" if p.class_sizes else "")
        + (", H >= 0" if p.nonnegative else "")
        + (f", label noise {given(p.label_noise)} (seed {p.noise_seed})" if p.label_noise else "")
    )
    source = "Nguyen et al. Thm 3.2 + 1-D reduction" if p.nonnegative else p.loss_spec.source
    lines = [
        f"UFM problem: K = {p.K} classes, n = {p.n} samples per class (N = {p.N}), d = {p.d}, loss {loss}{extras}, "
        f"lam_W = {given(p.lam_W)}, lam_H = {given(p.lam_H)}, lam_b = {given(p.lam_b)}, {p.dtype}, seed = {p.seed}",
        "",
        f"Theory ({source}):",
    ]
    if prediction["c"] is not None:
        lines.append(
            f"  c = sqrt(KN) lam_Z + delta = {num(prediction['c'])}, lam_Z = sqrt(lam_W lam_H)   "
            f"({'collapsed phase: W = H = 0' if prediction['collapsed'] else 'c < 1: non-zero minimizer'}; "
            f"boundary delta* = {num(prediction['delta_star'])})"
        )
    elif prediction["collapsed"]:
        lines.append("  a = 0: collapsed phase, W = H = 0")
    lines += [
        f"  a = {num(prediction['a'])} (logit scale)   "
        f"p_t = {num(prediction['p_t'])} (probability of the true class)   "
        f"p_n = {num(prediction['p_n'])} (of each other class)"
        + (f"   b = {num(prediction['bias'])} * 1" if p.loss_spec.closed_form == "mse" else ""),
        f"  {_kappa_line(p, prediction)}",
        f"  mean ||w_k|| = {num(prediction['w_norm'])}   mean ||hbar_k - h_G|| = {num(prediction['h_norm'])}",
    ]
    for reason in comparison.not_applicable:
        lines.append(f"  does not apply: {reason}")
    if comparison.numerical is not None:
        lines += ["", *_numerical_lines(comparison.numerical)]
    lines += [
        "",
        f"Solver: {result.method}"
        + (f" (lr = {num(result.lr)})" if result.lr is not None else " (line search)")
        + f", {result.iterations} iterations, {result.seconds:.2f} s (+ {compiled}), "
        f"on {jax.devices()[0].platform}",
        f"  {describe(result, _cli.flag)}"
        if not comparison.unlocated  # the stopping rule met far from the minimizer (lam tiny): not "converged"
        else f"  not converged: {describe(result, _cli.flag).removeprefix('converged: ')}; {comparison.unlocated}",
        f"  L = {num(result.objective)}",
        "",
        comparison.table(),
        LEGEND,
        f"tolerance = {given(rtol)} (--rtol)"
        + ("; [numerical] rows: rtol + the restart spread of the quantity" if comparison.numerical else ""),
    ]
    for block, info in comparison.spectra.items():
        lines.append("")
        lines.append(f"{block}-block spectrum of the loss term ({info['method']}); distinct eigenvalue x multiplicity:")
        pairs = zip(info["measured_values"], info["measured_multiplicities"], strict=True)
        measured = ", ".join(f"{num(v)} x{m}" for v, m in pairs)
        lines.append(f"  measured:  {measured}")
        if "predicted_values" in info:
            pairs = zip(info["predicted_values"], info["predicted_multiplicities"], strict=True)
            predicted = ", ".join(f"{num(v)} x{m}" for v, m in pairs)
            lines.append(f"  predicted: {predicted}")
    lines.append("")
    numerical = comparison.numerical
    if numerical is not None and comparison.verified and comparison.converged:
        judged = sum(row.applies for row in comparison.rows)
        what = (
            f"compared with the numerical UFM optimum for d = {p.d} < K = {p.K}, the best of {numerical.restarts} "
            "seeded restarts (no closed form exists for d < K): norms, logit scale, p_t, p_n, biases, L and the "
            "GNC margin, energies and alignment"
        )
        if comparison.ok:
            lines.append(f"VERDICT: agrees — {what}; all {judged} applicable checks within rtol + restart spread")
        else:
            names = ", ".join(row.quantity for row in comparison.failures)
            lines.append(f"VERDICT: MISMATCH — {what}; beyond rtol + restart spread in: {names}")
    elif comparison.ok and comparison.verified:
        judged = sum(row.applies for row in comparison.rows)
        lines.append(f"VERDICT: agrees — all {judged} applicable checks within {given(rtol)}")
    elif comparison.ok:
        lines.append(
            "VERDICT: not verified — no prediction applies because "
            + "; ".join(comparison.not_applicable or ["no row could be judged"])
        )
    elif not comparison.converged:
        why = "stopped away from the minimizer: see the Solver lines" if comparison.unlocated else result.status
        lines.append(f"VERDICT: not verified — the solver did not converge ({why})")
    else:
        names = ", ".join(row.quantity for row in comparison.failures)
        lines.append(f"VERDICT: MISMATCH beyond {given(rtol)} in: {names}")
    return "\n".join(lines)


def _numerical_lines(numerical) -> list[str]:
    """The report's section on the d < K prediction (:class:`ufm.generalized.GeneralizedPrediction`)."""
    num = format_number
    m = numerical.metrics
    usable = sum(status in ("converged", "stalled") for status in numerical.statuses)
    proof = numerical.certificate
    if proof is None:
        certificate = f"  certificate: {numerical.certificate_note}"
    else:
        attained = (
            f"relaxation rank {proof.rank} <= d: the bound is attained, a gap ~0 proves global optimality"
            if proof.rank <= proof.d
            else f"relaxation rank {proof.rank} > d = {proof.d}: the bound need not be attained, so the gap bounds "
            "the distance to the global minimum without proving it"
        )
        certificate = (
            f"  certificate gap = L - convex lower bound = {num(proof.gap)} (lower bound {num(proof.lower)}, "
            f"ufm.convex; {attained})"
        )
    geometry = (
        f"  GNC: min one-vs-rest margin = {num(m['margin'])}   min logit margin = {num(m['logit_margin'])}   "
        f"Riesz energy H = {num(m['gnc2_H'])}, W = {num(m['gnc2_W'])}   "
        f"mean cos(w_k, hbar_k - h_G) = {num(m['alignment'])}   null classes = {int(m['null_classes'])}"
    )
    return [
        f"Prediction (numerical; no closed form for d < K): the UFM optimum by the exact class-mean reduction, "
        f"best of {numerical.restarts} seeded restarts (ufm.generalized, seeds {numerical.seeds[0]}.."
        f"{numerical.seeds[-1]}, {numerical.seconds:.2f} s with the certificate):",
        f"  L = {num(numerical.objective)} (seed {numerical.seeds[numerical.best]})   restarts: {usable} of "
        f"{numerical.restarts} converged, {len(numerical.agreeing)} within rtol of the best; L over all restarts "
        f"{num(float(np.min(numerical.objectives)))} .. {num(float(np.max(numerical.objectives)))} "
        f"(spread {numerical.objective_spread:.2e})",
        certificate,
        geometry,
        f"  mean ||w_k|| = {num(m['w_norm'])}   mean ||hbar_k - h_G|| = {num(m['h_norm'])}   "
        f"p_t = {num(m['p_t'])}   p_n = {num(m['p_n'])}",
    ]


def _numerical_record(numerical) -> dict | None:
    """The d < K prediction for the JSON record (plain numbers and lists)."""
    if numerical is None:
        return None
    proof = numerical.certificate
    plain = lambda value: np.asarray(value).tolist()
    return {
        "kind": "numerical UFM optimum (best of seeded restarts of the class-mean solve); no closed form for d < K",
        "restarts": numerical.restarts,
        "seeds": list(numerical.seeds),
        "objectives": plain(numerical.objectives),
        "statuses": list(numerical.statuses),
        "iterations": list(numerical.iterations),
        "best": numerical.best,
        "agreeing": list(numerical.agreeing),
        "objective": numerical.objective,
        "metrics": {name: plain(value) for name, value in numerical.metrics.items()},
        "spread": {name: float(value) for name, value in numerical.spread.items()},
        "certificate": None
        if proof is None
        else {"upper": proof.upper, "lower": proof.lower, "gap": proof.gap, "rank": proof.rank, "d": proof.d},
        "certificate_note": numerical.certificate_note,
        "seconds": numerical.seconds,
    }


def _prediction(problem):
    import theory
    from ufm.compare import predict

    pred = predict(problem)
    classic = problem.loss_spec.closed_form == "guo" and not problem.nonnegative
    where = (
        theory.phase(problem.K, problem.n, delta=problem.delta, lam_W=problem.lam_W, lam_H=problem.lam_H)
        if classic
        else None
    )
    kappa = None if pred.collapsed or math.isnan(pred.kappa_W) else pred.kappa_W
    return {
        "c": where.c if where is not None else None,
        "delta_star": where.delta_star if where is not None else None,
        "collapsed": pred.collapsed,
        "a_delta": pred.a,
        "a": pred.a,
        "p_t": pred.p_t,
        "p_n": pred.p_n,
        "kappa": kappa,
        "kappa_W": pred.kappa_W,
        "kappa_H": pred.kappa_H,
        "mu1": pred.mu1,
        "mu2": pred.mu2,
        "w_norm": pred.w_norm,
        "h_norm": pred.h_norm,
        "class_mean_norm": pred.class_mean_norm,
        "bias": pred.bias,
        "feature_shift": pred.feature_shift,
    }


def _verdict(comparison) -> str:
    if comparison.ok:
        return "agrees" if comparison.verified else "no prediction applies"
    return "not converged" if not comparison.converged else "mismatch"


def _exit_code(comparison) -> int:
    if comparison.ok:
        return 0 if comparison.verified else EXIT_NOT_VERIFIED
    return 1


def _record(problem, prediction, result, comparison, rtol) -> dict:
    try:
        version = metadata.version("ufm-collapse")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return {
        "package_version": version,
        "jax_version": jax.__version__,
        "device": str(jax.devices()[0]),
        "problem": {
            "K": problem.K,
            "n": problem.n,
            "N": problem.N,
            "d": problem.d,
            "delta": problem.delta,
            "lam_W": problem.lam_W,
            "lam_H": problem.lam_H,
            "lam_b": problem.lam_b,
            "loss": problem.loss,
            "seed": problem.seed,
            "dtype": problem.dtype,
            "init_scale": problem.init_scale,
            "gamma": problem.gamma,
            "mse_kappa": problem.mse_kappa,
            "mse_beta": problem.mse_beta,
            "nonnegative": problem.nonnegative,
            "label_noise": problem.label_noise,
            "noise_seed": problem.noise_seed,
            "class_sizes": None if problem.class_sizes is None else list(problem.class_sizes),
        },
        "theory": prediction,
        "solver": {
            "method": result.method,
            "lr": result.lr,
            "tol": result.tol,
            "iterations": result.iterations,
            "status": result.status,
            "converged": comparison.converged,  # False where the rule was met away from the minimizer
            "message": describe(result, _cli.flag),
            "objective": result.objective,
            "grad_norm": result.grad_norm,
            "initial_grad_norm": result.initial_grad_norm,
        },
        # the rows as Comparison.to_records gives them, without the keys (the file's format predates them)
        "comparison": [
            {name: value for name, value in record.items() if name not in ("key", "undefined")}
            for record in comparison.to_records()
        ],
        "not_applicable": list(comparison.not_applicable),
        "numerical_prediction": _numerical_record(comparison.numerical),
        "spectra": comparison.spectra,
        "rtol": rtol,
        "verdict": _verdict(comparison),
    }


def main(argv=None) -> int:
    """Run the CLI on ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    with exit_on_interrupt(_prog.name("ufm.solve", "ufm-solve")):  # SIGINT / SIGTERM: one line, exit 130 / 143
        # at once, compilation included
        return _main(argv)


#: loss parameters: flag -> (attribute, default, the loss it belongs to)
def _check_loss_flags(args) -> None:
    """Refuse a loss parameter given for another loss (never ignore it silently); fill the defaults."""
    _cli.resolve_loss_flags(args)
    if args.noise_seed is None:
        args.noise_seed = 0
    elif not args.label_noise:
        raise ValueError("--noise-seed does not apply without --label-noise > 0")


def _check_generalized_flags(args, problem) -> None:
    """Refuse ``--restarts`` / ``--no-certificate`` where no d < K optimum is computed; fill the default."""
    from ufm.compare import generalized_applies

    applies = problem.d < problem.K and generalized_applies(problem)
    for flag, given in (("--restarts", args.restarts is not None), ("--no-certificate", args.no_certificate)):
        if given and not applies:
            raise ValueError(
                f"{flag} applies only for d < K with loss ce/ls/mse, free features and clean labels (there the "
                f"numerical optimum is the prediction); got d = {problem.d}, K = {problem.K}, loss {problem.loss}"
            )
    if args.restarts is None:
        args.restarts = DEFAULT_RESTARTS


def _main(argv) -> int:
    from ufm.compare import compare

    parser = build_parser()
    args = _prog.start(parser, argv)
    if isinstance(args, int):
        return args
    float32 = args.float32
    try:
        _check_loss_flags(args)
        class_sizes, n = _class_sizes_of(args)
        problem = Problem(
            # n None (with class sizes) is derived by Problem; its field is typed as the int it becomes
            K=args.K,
            n=n,  # type: ignore[arg-type]
            d=args.d,
            delta=args.delta,
            lam_W=args.lam if args.lam_W is None else args.lam_W,
            lam_H=args.lam if args.lam_H is None else args.lam_H,
            lam_b=args.lam if args.lam_b is None else args.lam_b,
            seed=args.seed,
            dtype="float32" if float32 else "float64",
            loss=args.loss,
            gamma=args.gamma,
            mse_kappa=args.mse_kappa,
            mse_beta=args.mse_beta,
            nonnegative=args.nonnegative,
            label_noise=args.label_noise,
            noise_seed=args.noise_seed,
            class_sizes=class_sizes,
        )
        method = default_method(problem) if args.method is None else args.method
        check_method_fits(problem, method)
        _cli.check_method_flags(method, lr=args.lr, float32=args.float32, shard=args.shard)
        _check_generalized_flags(args, problem)
        if args.json is not None:
            _io.check_writable(args.json, overwrite=args.force, what="--json")
        if args.shard and problem.N % jax.device_count():
            raise ValueError(f"--shard needs N = n K = {problem.N} divisible by the {jax.device_count()} devices")
        if not args.no_hessian:  # the Hessian check's memory, before solving (it runs after)
            from ufm import _memory
            from ufm.compare import spectra_bytes

            _memory.require(
                spectra_bytes(problem, method),
                "the Hessian check (spectra)",
                f"K = {problem.K}, n = {problem.n}, d = {problem.d}, {method}",
                [
                    Alternative(
                        (Advice("hessian", False),),
                        _memory.solve_bytes(problem.K, problem.N, problem.d, np.dtype(problem.dtype).itemsize, method),
                        "(then only the solve runs)",
                    )
                ],
            )
        if problem.d < problem.K:  # the d < K prediction's memory (restarts, certificate), before solving
            from ufm import _memory, generalized

            _memory.require(
                generalized.prediction_bytes(problem.K, problem.d, args.restarts),
                f"the d < K prediction ({args.restarts} restarts of the class-mean solve, certificate)",
                f"K = {problem.K}, d = {problem.d}",
                "use fewer --restarts",
            )
        prediction = _prediction(problem)  # before solving: a setting the theory cannot represent fails now
    except (ValueError, OverflowError, OSError) as error:
        parser.print_usage(sys.stderr)
        print(f"{parser.prog}: error: {_cli.error_text(error)}", file=sys.stderr)
        return 2
    tol = args.tol if args.tol is not None else (1e-5 if float32 else 1e-10)
    rtol = args.rtol if args.rtol is not None else (1e-3 if float32 else 1e-6)
    line_search = method_spec(method).line_search
    max_iters = _cli.max_iters(method, args.max_iters)
    progress_every = 0 if args.quiet else (100 if line_search else 2_000)
    if not args.quiet:
        print(
            f"solving K = {problem.K}, n = {problem.n}, d = {problem.d} with {method} ...", file=sys.stderr, flush=True
        )
    watch = _cli.CompileWatch()
    try:
        with watch.watching():
            result = _solve(
                problem,
                method,
                lr=args.lr,
                tol=tol,
                max_iters=max_iters,
                record_every=max(1, max_iters // 1000),
                progress_every=progress_every,
                shard=args.shard,
                history=False,
            )
        comparison = compare(
            result,
            rtol=rtol,
            spectra=not args.no_hessian,
            restarts=args.restarts,
            certify=not args.no_certificate,
        )
    except (ValueError, OverflowError) as error:  # e.g. not enough memory: one readable line, exit 2
        print(f"{parser.prog}: error: {_cli.error_text(error)}", file=sys.stderr)
        return 2
    record = _record(problem, prediction, result, comparison, rtol)
    return _io.deliver(  # the report, then the JSON file whatever became of the report; exit 4 if one failed
        parser.prog,
        _report_text(problem, prediction, result, comparison, rtol, watch.phrase(result.compile_seconds)),
        None if args.json is None else lambda: _io.write_json(args.json, record, overwrite=args.force, what="--json"),
        code=_exit_code(comparison),
        announce=None if args.quiet else sys.stderr,
    )


class _CallableModule(types.ModuleType):
    """Lets ``ufm.solve(problem, ...)`` call the solver although ``ufm.solve`` is also this CLI module."""

    def __call__(self, *args, **kwargs):
        return _solve(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

if __name__ == "__main__":
    sys.exit(main())
