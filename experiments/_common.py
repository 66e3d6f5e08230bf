"""Shared plumbing of the experiments: arguments, seeded runs, one figure style, atomic CSV/figure output."""

from __future__ import annotations

import argparse
import datetime
import io
import platform
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import ticker  # noqa: E402

import theory  # noqa: E402
import ufm  # noqa: E402
from ufm import _cache, _io, _prog  # noqa: E402
from ufm._interrupt import exit_on_interrupt  # noqa: E402

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType

#: figure file formats of ``--format`` (the first is the default)
FORMATS = ("png", "pdf", "svg")
#: what matplotlib would stamp into each format that changes from run to run or machine to machine
_NO_METADATA = {
    "png": {"Software": None},
    "pdf": {"Creator": None, "Producer": None, "CreationDate": None},
    "svg": {"Creator": None, "Date": None},
}


#: resolution of the PNG figures (dots per inch; the vector formats ignore it)
DPI = 150
#: one look for every experiment's figures, sized so that a panel (PANEL inches) reads at print size
STYLE: dict[RcKeyType, Any] = {
    "font.size": 10,
    "axes.titlesize": 10,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 8,
    "legend.framealpha": 0.85,
    "figure.titlesize": 11,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "lines.linewidth": 1.5,
    "lines.markersize": 4,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
PANEL = (3.9, 3.0)


def figure(nrows: int = 1, ncols: int = 1, *, panel: tuple[float, float] = PANEL, **kwargs):
    """``(fig, axes)`` in the experiments' one style: :data:`STYLE`, ``nrows x ncols`` panels of ``panel``
    inches, constrained layout (titles, tick labels and colorbars never overlap). ``kwargs`` go to
    ``plt.subplots`` (``squeeze=False`` etc.)."""
    plt.rcParams.update(STYLE)  # experiments only (never imported by the library); before any text is made
    kwargs.setdefault("figsize", (panel[0] * ncols, panel[1] * nrows))
    return plt.subplots(nrows, ncols, layout="constrained", **kwargs)


def label_log_axes(ax) -> None:
    """Plain-number tick labels on the log-scaled axes of ``ax`` (call after plotting): 1-2-5 ticks over
    up to three decades, about four evenly spaced ticks within one decade (where matplotlib's default
    leaves the axis without a single label), matplotlib's powers of ten beyond; no minor labels."""
    ax.autoscale_view()
    for axis, limits in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
        if axis.get_scale() != "log":
            continue
        low, high = sorted(limits)
        decades = np.log10(high / low)
        if decades < 1.0:
            axis.set_major_locator(ticker.MaxNLocator(nbins=4))
        elif decades <= 3.0:
            axis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        if decades <= 3.0:
            axis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
        axis.set_minor_formatter(ticker.NullFormatter())


def listed(values) -> str:
    """``values`` as a set for a figure's text: ``{5}``, ``{0, 0.1, 0.3}`` (never a Python tuple's ``(5,)``)."""
    return "{" + ", ".join(f"{v:g}" if isinstance(v, int | float) else str(v) for v in values) + "}"


def plain(text: str) -> str:
    """``text`` without the docstrings' literal markup (``` `` ```), for ``--help``."""
    return text.replace("`", "")


def add_format_argument(parser: argparse.ArgumentParser) -> None:
    """``--format png|pdf|svg``: the figures' file format (and suffix)."""
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default=FORMATS[0],
        help="figure file format and suffix (default png; pdf and svg are vector graphics); "
        "the same command writes the same bytes",
    )


def folder_name(text: str) -> str:
    """argparse type of ``--out``: a folder name; an empty one (which would mean the current folder) is refused."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"must name a folder, got {text!r}")
    return text


def build_parser(name: str, description: str) -> argparse.ArgumentParser:
    """The arguments of ``python -m experiments.<name>``; ``description``: the module docstring's first line."""
    parser = argparse.ArgumentParser(prog=f"python -m experiments.{name}", description=plain(description))
    parser.add_argument(
        "--out", type=folder_name, default=f"results/{name}", help=f"output folder (default results/{name})"
    )
    parser.add_argument("--quick", action="store_true", help="small settings (seconds on 2 CPU cores)")
    parser.add_argument("--force", action="store_true", help="overwrite existing outputs in --out")
    add_format_argument(parser)
    _cache.add_argument(parser)
    return parser


def parse_args(name: str, description: str, argv=None) -> argparse.Namespace:
    args = _prog.parse(build_parser(name, description), argv)  # --help to a reader that has gone: exit 141
    if isinstance(args, int):
        raise SystemExit(args)
    jax.config.update("jax_enable_x64", True)  # experiments verify: float64
    _cache.configure(args, f"python -m experiments.{name}")
    args.out = Path(args.out)
    return args


class Outputs:
    """An experiment's outputs: held in memory while it computes, written together by :meth:`commit`.

    Nothing reaches the folder before the experiment has finished, so a failed or interrupted
    run leaves the folder as it was. :func:`preflight` has already checked, before computing,
    that the folder can hold files and (without ``force``) holds none yet; so a refusal never
    leaves old and new files mixed. The files are written all or nothing as far as the file
    system allows (``ufm._io.write_all``: every file to a temporary first, then all renamed; a
    full disk leaves the folder as it was and the results in the temporary folder) and
    exclusively: without ``force``, a file that another process created meanwhile is kept and
    this result goes to a free sibling name, announced on stderr.
    """

    def __init__(self, folder: Path, force: bool, fmt: str = FORMATS[0]):
        if fmt not in FORMATS:
            raise ValueError(f"fmt must be one of {', '.join(FORMATS)}, got {fmt!r}")
        self.folder, self.force, self.format = Path(folder), force, fmt
        self.pending: dict[str, bytes] = {}
        self.written: list[Path] = []

    def _add(self, name: str, data: bytes) -> Path:
        if name in self.pending:
            raise ValueError(f"the output {name} is produced twice by this experiment")
        self.pending[name] = data
        return self.folder / name

    def csv(self, name: str, rows: list[dict]) -> Path:
        return self._add(name, _io.csv_bytes(rows))

    def figure(self, name: str, fig) -> Path:
        """``fig`` as ``name`` with the suffix of the run's ``--format``; reproducible bytes: no software
        version, date or random ids in the file (:data:`_NO_METADATA`, a fixed SVG hash salt)."""
        name = str(Path(name).with_suffix("." + self.format))
        buffer = io.BytesIO()
        with plt.rc_context({"svg.hashsalt": "ufm-collapse"}):
            fig.savefig(buffer, format=self.format, dpi=DPI, bbox_inches="tight", metadata=_NO_METADATA[self.format])
        plt.close(fig)
        return self._add(name, buffer.getvalue())

    def json(self, name: str, data) -> Path:
        return self._add(name, _io.json_bytes(data))

    def commit(self) -> list[Path]:
        """Write every pending output, all or nothing as far as possible (``ufm._io.write_all``; raises its
        ``NotWrittenError``: what was written, why not the rest, where all were kept); an interrupt waits
        until all are written (``WRITE_LOCK``)."""
        files = {self.folder / name: data for name, data in self.pending.items()}
        self.pending.clear()
        if files:
            self.written += _io.write_all(files, overwrite=self.force, what="--out")
        return self.written


def preflight(folders, force: bool) -> None:
    """Before computing: every folder of ``folders`` can hold files and, unless ``force``, holds none
    yet (hidden files aside). All are checked for old files before any is created, so a refusal
    changes nothing. Raises ``OSError`` with one line naming the folder."""
    folders = [Path(folder) for folder in folders]
    for folder in folders:
        existing = (
            []
            if force or not folder.is_dir()
            else sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
        )
        if existing:
            shown = ", ".join(existing[:3]) + (", ..." if len(existing) > 3 else "")
            raise FileExistsError(
                f"--out {folder} already holds {shown}; pass --force to replace them or choose an empty folder"
            )
    for folder in folders:
        _io.check_folder(folder, what="--out")


def run(main_body, name: str, description: str, argv=None, *, missing_extra: Exception | None = None) -> int:
    """Parse arguments, check the output folder, run ``main_body(args, outputs)``, write and report.

    ``missing_extra``: why the optional ``network`` extra could not be imported (None when it was); the
    experiment then exits 2 with one line. SIGINT / SIGTERM at any point: one line, exit 130 / 143,
    nothing written. Outputs computed but not written: one line, exit ``ufm._io.EXIT_NOT_WRITTEN``.
    """
    prog = f"python -m experiments.{name}"
    if missing_extra is not None:
        print(
            f"{prog}: error: needs the optional 'network' extra (pip install '.[network]'): {missing_extra}",
            file=sys.stderr,
        )
        return 2
    with exit_on_interrupt(prog + run_all_note):
        try:
            args = parse_args(name, description, argv)
        except SystemExit as exit_:
            return int(exit_.code or 0)
        outputs = Outputs(args.out, args.force, args.format)
        try:
            preflight([args.out], args.force)
            main_body(args, outputs)
            if not args.quick:  # full mode: which code made these files (quick outputs stay byte-identical)
                outputs.json(PROVENANCE, provenance(name, sys.argv[1:] if argv is None else argv))
        except OSError as error:
            print(f"{prog}: error: {error}", file=sys.stderr)
            return 2
        return _io.deliver(prog, None, outputs.commit, announce=sys.stdout)


#: the file beside every full-mode output that says which code made it (:func:`provenance`)
PROVENANCE = "provenance.json"


def provenance(name: str, argv) -> dict:
    """What made a full-mode run's outputs: the command, the commit (``git rev-parse HEAD``; None outside a
    git checkout) and whether the working tree had uncommitted changes, the UTC date, the versions that set
    the numbers. Quick outputs carry none of it: they are compared byte for byte and number for number
    with the committed ones (``tests/_quick.py``)."""
    root = Path(__file__).resolve().parent.parent

    def git(*command: str) -> str | None:
        try:
            done = subprocess.run(["git", *command], cwd=root, capture_output=True, text=True, timeout=30, check=True)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip()

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return dict(
        command=" ".join([f"python -m experiments.{name}", *map(str, argv)]),
        commit=commit,
        uncommitted_changes=None if status is None else bool(status),
        date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        python=platform.python_version(),
        numpy=np.__version__,
        jax=jax.__version__,
        machine=platform.machine(),
    )


#: set by ``run_all`` while it runs the experiments one after another: added to the program name of the
#: interrupt line (which ends "no partial output written"), so that line says which experiments' outputs
#: are complete
run_all_note = ""


def gd_checkpoints(problem, lr: float, every: int, max_iters: int):
    """Plain gradient descent from ``problem.init()``, yielding ``(iteration, params)`` every ``every`` steps.

    Each segment is one compiled ``ufm.solve(..., "gd", max_iters=every)`` call
    restarted from the last iterate; GD has no state, so the trajectory is the
    same as one uninterrupted run. Raises ``RuntimeError`` if a segment diverges.
    """
    params, iteration = problem.init(), 0
    yield iteration, params
    while iteration < max_iters:
        # tol 1e-300: run exactly `every` steps (never met unless the gradient is exactly 0)
        result = ufm.solve(problem, "gd", lr=lr, tol=1e-300, max_iters=every, record_every=every, init=params)
        if result.status == "diverged":
            raise RuntimeError(f"gradient descent diverged near iteration {iteration}: {result.message}")
        iteration, params = iteration + result.iterations, result.params
        yield iteration, params


def logit_error(params, K: int, n: int, delta: float, lam_W: float, lam_H: float) -> float:
    """Distance to the closed-form optimum in logit space: ``||W^T Hbar - a M||_F / ||a M||_F``.

    ``Hbar: (d, K)`` are the class means of ``H``; ``a M`` is Theorem 4.1's
    ``Zbar``. Beyond the phase boundary (a = 0) the absolute distance is returned.
    """
    H_bar = np.asarray(ufm.class_means(params.H, ufm.class_major_labels(K, n), K))
    target = theory.a_delta(K, n, delta=delta, lam_W=lam_W, lam_H=lam_H) * theory.simplex_projector(K)
    scale = np.linalg.norm(target)
    distance = np.linalg.norm(np.asarray(params.W).T @ H_bar - target)
    return float(distance / scale if scale > 0 else distance)
