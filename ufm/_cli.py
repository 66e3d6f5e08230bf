"""What the command lines share in their text: the exit codes of ``--help``, the Problem flags (one
definition, default and help each: :func:`add_problem_flags`, :func:`resolve_loss_flags`), the output flags
(:func:`add_output_flags`), the iteration cap
per method, advice as flags (:func:`flag`), and the words for the time spent before a compiled program runs.

Internal API (``ufm.solve``, ``ufm.sweep``, ``ufm.md``, ``ufm.analyze``); the one place where the exit codes
are written down for the user. The codes themselves live where they are produced: 2 is argparse's and each
command line's ``error:`` path, :data:`ufm._io.EXIT_NOT_WRITTEN` (4), :mod:`ufm._interrupt` (130, 143, 141).
"""

from __future__ import annotations

import argparse
import contextlib
import numbers
import textwrap

from theory import validation
from ufm._interrupt import BROKEN_PIPE_EXIT_CODE, EXIT_CODES
from ufm._io import EXIT_NOT_WRITTEN
from ufm._memory import MemoryEstimateError
from ufm.losses import LOSS_SPECS, LOSSES
from ufm.methods import MAX_ITERS_FIXED_STEP, METHOD_SPECS, method_spec

#: The loss a command line solves when ``--loss`` is not given: label smoothing, which is cross entropy at
#: its default ``--delta 0`` (so ``--delta 0.1`` alone means LS with delta 0.1 in every command line).
DEFAULT_LOSS = "ls"
#: The loss parameters as flags: ``(help, Problem default, upper bound, 0 allowed)`` (each belongs to the loss of
#: :data:`ufm.losses.LOSS_SPECS` that lists it among its parameters).
_LOSS_PARAMETERS: dict[str, tuple[str, float, float | None, bool]] = {
    "delta": ("label smoothing in [0, 1) (0 = cross entropy; default 0; --loss ls only)", 0.0, 1.0, True),
    "gamma": ("focal-loss parameter in [0, inf) (default 0; --loss focal only)", 0.0, None, True),
    "mse_kappa": ("rescaled MSE: weight of the target logit, > 0 (default 1; --loss mse only)", 1.0, None, False),
    "mse_beta": ("rescaled MSE: target value of the target logit, > 0 (default 1; --loss mse only)", 1.0, None, False),
}


#: ``--lam``: one value for the three penalties, as every command line that solves a Problem spells it.
LAM_HELP = "lam_W = lam_H = lam_b (> 0; default 5e-4)"
LAM_DEFAULT = 5e-4
#: The suffix of a flag's help where it takes comma-separated values (:func:`add_problem_flags`' ``grid``).
GRID_HELP = "; comma-separated values sweep it, one configuration each"


def _flag_name(parameter: str) -> str:
    return "--" + parameter.replace("_", "-")


def values_type(flag: str, single):
    """An argparse type for comma-separated values, each parsed and checked by the one-value type ``single``
    (so a grid's entry is refused in the same words as the flag's one value); an empty entry is refused."""

    def parse(text: str) -> list:
        parts = text.split(",")
        if any(not part.strip() for part in parts):
            raise argparse.ArgumentTypeError(f"{flag} has an empty entry (comma-separated numbers), got {text!r}")
        return [single(part) for part in parts]

    return parse


def add_problem_flags(group, *names: str, grid: tuple[str, ...] = ()) -> None:
    """Add the :class:`~ufm.problem.Problem` flags ``names`` to an argparse ``group`` with one type, default and
    help for every command line: ``"K"``, ``"d"``, ``"float32"``, ``"lam"`` (``--lam``: lam_W = lam_H = lam_b),
    and ``"loss"`` (``--loss`` and every loss parameter of :data:`ufm.losses.LOSS_SPECS`: ``--delta``,
    ``--gamma``, ``--mse-kappa``, ``--mse-beta``; after parsing, :func:`resolve_loss_flags` fills their defaults
    and refuses one given for another loss). ``grid``: the flags among them (``"lam"``, ``"delta"``) that take
    comma-separated values (a sweep's axes): a list, each value checked as the one value is, the same help
    with :data:`GRID_HELP` after it (a grid flag's default is the one value's, as a list of one)."""

    def add(flag: str, kind, default, text: str, parameter: str) -> None:
        if parameter in grid:
            kind, text = values_type(flag, kind), text + GRID_HELP
            default = None if default is None else [default]
        group.add_argument(flag, type=kind, default=default, help=text)

    unknown = set(grid) - {"lam", *_LOSS_PARAMETERS}
    if unknown:
        raise ValueError(f"no grid Problem flag named {sorted(unknown)[0]!r}")
    for name in names:
        if name == "K":
            group.add_argument(
                "--K", type=validation.integer_type("--K", 2), default=10, help="classes (>= 2; default 10)"
            )
        elif name == "d":
            group.add_argument(
                "--d", type=validation.integer_type("--d", 1), default=None, help="feature dimension (default K)"
            )
        elif name == "float32":
            group.add_argument(
                "--float32",
                action="store_true",
                help="solve in float32 (faster on accelerators; agreement then ~1e-3, the float32 "
                "--rtol default; see docs/losses.md)",
            )
        elif name == "lam":
            add("--lam", validation.number_type("--lam", 0.0), LAM_DEFAULT, LAM_HELP, "lam")
        elif name == "loss":
            group.add_argument(
                "--loss",
                choices=LOSSES,
                default=None,
                help=f"per-sample loss (default {DEFAULT_LOSS}; ce = ls with delta 0; focal needs --gamma; "
                "mse uses --mse-kappa, --mse-beta)",
            )
            for parameter, (text, _, high, zero) in _LOSS_PARAMETERS.items():
                flag = _flag_name(parameter)
                add(flag, validation.number_type(flag, 0.0, high, low_open=not zero), None, text, parameter)
        else:
            raise ValueError(f"no shared Problem flag named {name!r}")


def resolve_loss_flags(args: argparse.Namespace) -> None:
    """After parsing :func:`add_problem_flags`' ``"loss"``: ``--loss`` defaults to :data:`DEFAULT_LOSS`, each
    loss parameter not given to its Problem default (a grid's too: one value, not a list; the caller knows its
    axes); a parameter given for a loss that does not have it is refused (``ValueError`` naming the flag and the
    loss it belongs to), never ignored."""
    if args.loss is None:
        args.loss = DEFAULT_LOSS
    owners = {p: name for name, spec in LOSS_SPECS.items() for p in spec.parameters}
    for parameter, (_, default, _, _) in _LOSS_PARAMETERS.items():
        if getattr(args, parameter) is None:
            setattr(args, parameter, default)
        elif parameter not in LOSS_SPECS[args.loss].parameters:
            raise ValueError(
                f"{_flag_name(parameter)} does not apply to --loss {args.loss} "
                f"(it is a parameter of --loss {owners[parameter]})"
            )


#: exit code 2, as every command line uses it (argparse's own refusals included)
BAD_INPUT = "bad input: one error: line naming the flag; no file written"
#: exit code 4 (:data:`ufm._io.EXIT_NOT_WRITTEN`)
NOT_WRITTEN = (
    "computed, but the output file or the report could not be written: one error: line naming the path, "
    "the reason and where the result was kept"
)


def add_output_flags(group, *names: str, output: str = "--json") -> None:
    """Add the output flags ``names`` to an argparse ``group``, one help each for every command line:
    ``"json"`` (``--json PATH``: every number as JSON, atomically), ``"force"`` (overwrite an existing
    ``output`` file: ``--json``, or the sweep's ``--out``), ``"quiet"`` (no progress lines on stderr)."""
    for name in names:
        if name == "json":
            group.add_argument("--json", metavar="PATH", default=None, help="also write every number as JSON (atomic)")
        elif name == "force":
            group.add_argument("--force", action="store_true", help=f"overwrite an existing {output} file")
        elif name == "quiet":
            group.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
        else:
            raise ValueError(f"no shared output flag named {name!r}")


def exit_codes(*own: tuple[int, str], bad_input: str = BAD_INPUT, written: bool = True) -> str:
    """The ``exit codes:`` block of a command line's ``--help`` epilog, one code a line: its ``own`` codes
    ``(code, meaning)`` (0, 1, 3), and the shared ones: 2 (``bad_input``), 4 where the command line writes
    through :func:`ufm._io.deliver` (``written``), 130 / 143 (SIGINT / SIGTERM), 141 (reader gone). For
    ``argparse.RawDescriptionHelpFormatter``, which keeps the lines as written."""
    codes = [(str(code), meaning) for code, meaning in own] + [("2", bad_input)]
    if written:
        codes.append((str(EXIT_NOT_WRITTEN), NOT_WRITTEN))
    codes += [
        (
            " / ".join(map(str, EXIT_CODES.values())),
            "interrupted by SIGINT (Ctrl-C) / SIGTERM: one line, no file written",
        ),
        (str(BROKEN_PIPE_EXIT_CODE), "the reader of standard output went away (| head): quietly"),
    ]
    codes.sort(key=lambda entry: int(entry[0].split()[0]))
    lines = ["exit codes:"]
    for code, meaning in codes:
        lines += textwrap.wrap(
            meaning, width=100, initial_indent=f"  {code:<9s} ", subsequent_indent=" " * 12, break_on_hyphens=False
        )
    return "\n".join(lines)


MAX_ITERS_HELP = (
    "iteration cap (default "
    + ", ".join(
        f"{s.max_iters} for {s.name}"
        for s in sorted(METHOD_SPECS.values(), key=lambda s: s.max_iters)
        if s.max_iters != MAX_ITERS_FIXED_STEP
    )
    + f", {MAX_ITERS_FIXED_STEP} otherwise)"
)


def add_solver_flags(group, *names: str) -> None:
    """Add the solver flags ``names`` to an argparse ``group`` with one type and help for every command line
    that solves: ``"lr"`` (``--lr``, > 0), ``"tol"`` (``--tol``, in (0, 1)), ``"max_iters"`` (``--max-iters``, in
    [1, 2**31 - 1]: the loops' int32 counters); each refused value is named by its flag. Defaults are None: the
    method's own (``ufm.solve``'s)."""
    from ufm.loop import MAX_ITERS_LIMIT  # the loops' module (JAX): only when a parser is built

    for name in names:
        if name == "lr":
            group.add_argument(
                "--lr",
                type=validation.number_type("--lr", 0.0),
                default=None,
                help="step size for gd/momentum/nesterov (default: "
                + ", ".join(f"{m} {spec.default_lr:g}" for m, spec in METHOD_SPECS.items() if spec.default_lr)
                + "; smaller for mse, from its curvature: ufm.solver.default_lr); refused with lbfgs "
                "and reduced (line search)",
            )
        elif name == "tol":
            group.add_argument(
                "--tol",
                type=validation.number_type("--tol", 0.0, 1.0),
                default=None,
                help="stop when |grad L| <= tol |grad L(x0)| (default 1e-10 in float64, 1e-5 in float32)",
            )
        elif name == "max_iters":
            group.add_argument(
                "--max-iters",
                type=validation.integer_type("--max-iters", 1, MAX_ITERS_LIMIT),
                default=None,
                help=MAX_ITERS_HELP,
            )
        else:
            raise ValueError(f"no solver flag named {name!r}")


def flag(parameter: str, value: float | int | bool | str | None = None) -> str:
    """A library parameter as the command lines spell it, with its value: ``max_iters`` -> ``--max-iters``,
    ``("lr", 0.5)`` -> ``--lr 0.5``, ``("n", 123)`` -> ``--n 123``, ``("method", "lbfgs")`` -> ``--method
    lbfgs``, ``("dtype", "float32")`` -> ``--float32``, ``("hessian", False)`` -> ``--no-hessian`` (the spelling
    :func:`ufm.results.describe` and :func:`error_text` take to turn :class:`~ufm.results.Advice` into flags)."""
    if parameter == "dtype" and value == "float32":
        return "--float32"
    name = _flag_name(parameter)
    if value is None or value is True:
        return name
    if value is False:
        return "--no-" + name[2:]
    if isinstance(value, (str, numbers.Integral)):
        return f"{name} {value}"
    return f"{name} {value:.3g}"


def error_text(error: BaseException) -> str:
    """An error as a command line's ``error:`` line says it: a :class:`ufm._memory.MemoryEstimateError` with its
    advice as flags (``--float32 --method lbfgs``, the same advice the library's message words as keywords),
    any other error as it is."""
    return error.describe(flag, " ") if isinstance(error, MemoryEstimateError) else str(error)


def max_iters(method: str, given: int | None = None) -> int:
    """``given``, or the default cap of ``method`` (:attr:`ufm.methods.Method.max_iters`)."""
    return given if given is not None else method_spec(method).max_iters


def check_method_flags(method: str, *, lr=None, float32: bool = False, shard: bool = False) -> None:
    """Refuse flags that do not apply to ``method`` (a ``ValueError`` naming the flag, exit 2), with what to use
    instead: ``--lr`` with a line search, ``--shard`` or ``--float32`` with the class-mean method."""
    spec = method_spec(method)
    if lr is not None and spec.line_search:
        fixed = [name for name, s in METHOD_SPECS.items() if not s.line_search]
        raise ValueError(
            f"--lr does not apply to --method {method} (it takes its step from a line search); "
            f"drop --lr or use --method {', '.join(fixed[:-1])} or {fixed[-1]}"
        )
    if shard and spec.class_means:
        raise ValueError(
            f"--shard does not apply to --method {method} (it solves the K class means, nothing to "
            "split over devices); use --method lbfgs with --shard"
        )
    if float32 and spec.class_means:
        raise ValueError(
            f"--method {method} does not converge with --float32 (its gradient stalls near 2e-5 "
            "relative error); use --method lbfgs (the float32 default) or drop --float32"
        )


_CACHE_REQUESTS = "/jax/compilation_cache/compile_requests_use_cache"
_CACHE_HITS = "/jax/compilation_cache/cache_hits"


class CompileWatch:
    """Counts, while open, the programs JAX looked up in the persistent compilation cache and the ones it
    found there (JAX's monitoring events), so that the time before a run can be named for what it was:
    :meth:`phrase`. Without the cache (``--no-cache``) nothing is looked up and every program is compiled."""

    def __init__(self) -> None:
        self.requests = 0
        self.hits = 0

    def _count(self, event: str, **_) -> None:
        self.requests += event == _CACHE_REQUESTS
        self.hits += event == _CACHE_HITS

    @contextlib.contextmanager
    def watching(self):
        import jax

        listener = self._count
        jax.monitoring.register_event_listener(listener)
        try:
            yield self
        finally:
            with contextlib.suppress(AssertionError, ValueError):  # gone already (the listeners were cleared)
                jax.monitoring.unregister_event_listener(listener)

    def phrase(self, seconds: float) -> str:
        """``"3.67 s compile"``, ``"0.35 s loading compiled programs from the cache"`` or ``"… s compile and
        cache load"``: what the ``seconds`` before the compiled run were spent on."""
        if self.hits == 0:
            what = "compile"
        elif self.hits >= self.requests:
            what = "loading compiled programs from the cache"
        else:
            what = f"compile and cache load: {self.hits} of {self.requests} programs from the cache"
        return f"{seconds:.2f} s {what}"
