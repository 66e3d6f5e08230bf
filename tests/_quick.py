"""The checks every experiment's quick run must pass (a figure, a table of converged rows, no overwrite).

``tests/test_experiments.py`` applies them to every experiment; an experiment whose quick run its own test
file reads further (:data:`OWN_FILES`) is run there once instead, through :func:`run_quick`, so that the
suite does not run it twice.
"""

import csv
from pathlib import Path

#: experiments whose quick run is made and checked by their own test file (``tests/<file>``)
OWN_FILES = {
    "imbalance": "test_experiment_imbalance.py",
    "md_model": "test_experiment_md_model.py",
    "ls_empirical": "test_experiment_ls_empirical.py",
}


def run_quick(module, name: str, out: Path, *, figures=None, statuses=("converged",)) -> list[dict[str, str]]:
    """Run ``module`` (``experiments.<name>``) in quick mode into ``out``, check the generic outputs and
    return the rows of ``<name>.csv``. ``figures``: the figure files it must write (default
    ``<name>.png``); ``statuses``: the status words its rows may carry (a network trained for a fixed
    budget is not "converged": it says whether it reached the terminal phase)."""
    assert module.main(["--quick", "--out", str(out)]) == 0
    for figure in figures or [f"{name}.png"]:
        assert (out / figure).stat().st_size > 10_000, figure
    with open(out / f"{name}.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows and all(row["status"] in statuses for row in rows)
    assert module.main(["--quick", "--out", str(out)]) == 2  # outputs are never silently overwritten
    return rows
