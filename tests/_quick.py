"""The checks every experiment's quick run must pass (a figure, a table of converged rows, no overwrite) and the
comparison of what it wrote with the committed quick outputs (``experiments/figures/<name>/``).

``tests/test_experiments.py`` applies them to every experiment; an experiment whose quick run its own test
file reads further (:data:`OWN_FILES`) is run there once instead, through :func:`run_quick`, so that the
suite does not run it twice.

The committed quick outputs are what ``experiments/README.md`` shows and quotes, so they must be those the
code makes now: :func:`compare_with_committed` reads every CSV the quick run wrote beside the committed one
of the same name and fails with the file, row, column and both values of each number that moved, or with
the command that makes the committed outputs where they are missing. Tolerance: numbers agree when
``|new - committed| <= RTOL |committed| + ATOL`` (:data:`RTOL`, :data:`ATOL`); text (statuses, labels,
booleans, empty cells) must be equal. Columns that measure time (:data:`TIMING`) are not compared.
"""

import csv
import math
import re
from pathlib import Path

#: experiments whose quick run is made and checked by their own test file (``tests/<file>``)
OWN_FILES = {
    "imbalance": "test_experiment_imbalance.py",
    "md_model": "test_experiment_md_model.py",
    "ls_empirical": "test_experiment_ls_empirical.py",
}

#: where the committed quick outputs live (full-mode ones: ``<name>_full/``, with their ``provenance.json``)
COMMITTED = Path(__file__).resolve().parent.parent / "experiments" / "figures"
#: the command that remakes every committed quick output
REGENERATE = "python -m experiments.run_all --quick --out experiments/figures --force"
#: relative tolerance of a number against its committed value. The quick runs are seeded, float64 and
#: deterministic on one machine (two runs write identical bytes); what may differ on another machine or
#: library version is rounding, which the solvers' stopping tests (gradients 1e-9 ... 1e-12, relative)
#: turn into differences far below 1e-6 in every converged quantity. A change of the code that moves a
#: number quoted in the write-up (two to four significant digits) moves it by far more.
RTOL = 1e-6
#: absolute tolerance: numbers at the rounding level of float64 (an NC1 of 1e-28, a difference of two
#: equal eigenvalues) have no relative precision at all; 1e-12 is below every quoted error (>= 1e-11)
ATOL = 1e-12
#: columns that measure time (seconds, wall clock, elapsed ...): they change from run to run and are not
#: compared (none of the experiments writes one today)
TIMING = re.compile(r"(^|_)(seconds|secs|elapsed|wall|time|runtime|duration)(_|$)|_s$|_ms$", re.IGNORECASE)
#: at most this many differences are listed per failure
SHOWN = 20


def run_quick(
    module,
    name: str,
    out: Path,
    *,
    figures=None,
    statuses=("converged",),
    compare: bool = True,
    rtol: float = RTOL,
    atol: float = ATOL,
) -> list[dict[str, str]]:
    """Run ``module`` (``experiments.<name>``) in quick mode into ``out``, check the generic outputs and
    return the rows of ``<name>.csv``. ``figures``: the figure files it must write (default
    ``<name>.png``); ``statuses``: the status words its rows may carry (a network trained for a fixed
    budget is not "converged": it says whether it reached the terminal phase). ``compare``: compare the
    CSVs with the committed quick outputs here (:func:`compare_with_committed`); a test that checks more
    first passes False and calls it at its end, so that stale committed outputs never hide its own checks.
    ``rtol``, ``atol``: the comparison's tolerances (an experiment that trains in float32 passes its own)."""
    assert module.main(["--quick", "--out", str(out)]) == 0
    for figure in figures or [f"{name}.png"]:
        assert (out / figure).stat().st_size > 10_000, figure
    with open(out / f"{name}.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows and all(row["status"] in statuses for row in rows)
    assert module.main(["--quick", "--out", str(out)]) == 2  # outputs are never silently overwritten
    if compare:
        compare_with_committed(name, out, rtol=rtol, atol=atol)
    return rows


def compare_with_committed(
    name: str, out: Path, committed: Path | None = None, *, rtol: float = RTOL, atol: float = ATOL
) -> None:
    """Every CSV of the quick run in ``out`` against ``experiments/figures/<name>/`` (or ``committed``): the
    same files, columns and rows, every number within :data:`RTOL` / :data:`ATOL`, every text equal.
    Raises AssertionError listing each difference as ``file, row i (key columns), column: committed X, now Y``."""
    committed = COMMITTED / name if committed is None else committed
    written = sorted(p.name for p in out.glob("*.csv"))
    kept = sorted(p.name for p in committed.glob("*.csv")) if committed.is_dir() else []
    if not kept:
        raise AssertionError(
            f"no committed quick outputs of {name} in {committed} to compare the quick run with: make them with "
            f"`{REGENERATE}` (or `python -m experiments.{name} --quick --out {_shown(committed)} --force`) "
            "and commit them"
        )
    problems = [
        f"{_shown(committed / f)}: not written by the quick run any more" for f in sorted(set(kept) - set(written))
    ]
    problems += [f"{f}: written by the quick run, not committed" for f in sorted(set(written) - set(kept))]
    for file in sorted(set(written) & set(kept)):
        problems += csv_differences(committed / file, out / file, rtol=rtol, atol=atol)
    if problems:
        listed = "\n  ".join(problems[:SHOWN]) + (
            f"\n  ... and {len(problems) - SHOWN} more" if len(problems) > SHOWN else ""
        )
        raise AssertionError(
            f"the committed quick outputs of {name} ({_shown(committed)}) are stale: {len(problems)} "
            f"difference(s) (numbers at rtol {rtol:g}, atol {atol:g}):\n  {listed}\n"
            f"remake them with `{REGENERATE}`, check the README's quoted numbers against them, commit both"
        )


def csv_differences(committed: Path, new: Path, *, rtol: float = RTOL, atol: float = ATOL) -> list[str]:
    """The differences of the CSV ``new`` from ``committed`` (one line each; see :func:`compare_with_committed`)."""
    old_rows, old_columns = _read(committed)
    new_rows, new_columns = _read(new)
    where = _shown(committed)
    problems = []
    if old_columns != new_columns:
        gone, added = [c for c in old_columns if c not in new_columns], [c for c in new_columns if c not in old_columns]
        problems.append(
            f"{where}: columns differ (committed only: {gone or 'none'}; new only: {added or 'none'}"
            + ("; same columns in another order" if not gone and not added else "")
            + ")"
        )
    if len(old_rows) != len(new_rows):
        problems.append(f"{where}: {len(old_rows)} rows committed, {len(new_rows)} now")
    columns = [c for c in old_columns if c in new_columns and not TIMING.search(c)]
    keys = _naming_columns(old_rows, old_columns)
    for i, (old, now) in enumerate(zip(old_rows, new_rows, strict=False), start=1):
        for column in columns:
            if not _same(old[column], now[column], rtol, atol):
                label = ", ".join(f"{k}={old[k]}" for k in keys)
                problems.append(
                    f"{where}, row {i}{f' ({label})' if label else ''}, column {column}: "
                    f"committed {old[column]!r}, now {now[column]!r}"
                )
    return problems


def _naming_columns(rows, columns) -> list[str]:
    """The fewest leading columns (at most 4) whose values tell the rows apart: the experiments write their
    parameters first, so these name a row in a message (``delta=0.1, iteration=25``); else the first two."""
    for k in range(1, min(4, len(columns)) + 1):
        if len({tuple(r[c] for c in columns[:k]) for r in rows}) == len(rows):
            return columns[:k]
    return columns[:2]


def _read(path: Path) -> tuple[list[dict[str, str]], list[str]]:
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader), list(reader.fieldnames or [])


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _same(old: str, new: str, rtol: float = RTOL, atol: float = ATOL) -> bool:
    if old == new:
        return True
    a, b = _number(old), _number(new)
    if a is None or b is None:
        return False  # text, or a number against text or an empty cell
    if math.isnan(a) or math.isnan(b) or math.isinf(a) or math.isinf(b):
        return (math.isnan(a) and math.isnan(b)) or a == b
    return abs(b - a) <= rtol * abs(a) + atol


def _shown(path: Path) -> str:
    """``path`` relative to the repository where it lies inside it."""
    try:
        return str(path.relative_to(COMMITTED.parent.parent))
    except ValueError:
        return str(path)
