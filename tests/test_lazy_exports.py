"""``ufm``'s exports load on first use (start-up): every name of ``ufm.__all__`` is importable
and is the object of its module, the three listings of ``ufm/__init__.py`` agree, and the solve command line
imports none of the modules it does not run.

Fresh interpreters (subprocesses): in this one the suite has long imported everything.
"""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import ufm

ROOT = Path(__file__).resolve().parents[1]
#: loaded through ufm.__getattr__'s own branches (modules run as command lines: they must not import themselves)
SPECIAL = {"sweep", "grid", "SweepResult", "solve_md", "md_profile", "MDResult"} | {
    "analyze_shards",
    "ShardedAnalysis",
    "ShardStatistics",
}


def _fresh(code: str) -> dict:
    """Run ``code`` in a new interpreter; it prints one JSON value, returned."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


def _type_checking_names(package: str = "ufm") -> set[str]:
    tree = ast.parse((ROOT / package / "__init__.py").read_text(encoding="utf-8"))
    block = next(node for node in tree.body if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING")
    return {alias.asname for node in block.body for alias in node.names}


def test_the_three_listings_agree():
    eager = {name for name in ufm.__all__ if name not in ufm._MODULE_OF and name not in SPECIAL}
    assert eager == {
        "METRIC_SOURCES",
        "ClassStatistics",
        "collapse_metrics",
        "Comparison",
        "Row",
        "compare",
        "objective",
    }
    assert _type_checking_names() == set(ufm._MODULE_OF)
    assert len(ufm.__all__) == len(set(ufm.__all__))


EVERY_NAME = """
import importlib, json, ufm
wrong = [n for n in ufm.__all__ if getattr(ufm, n, None) is None]
wrong += [n for n, m in ufm._MODULE_OF.items() if getattr(ufm, n) is not getattr(importlib.import_module(m), n)]
names = {}
exec("from ufm import " + ", ".join(ufm.__all__), names)
print(json.dumps(wrong + [n for n in ufm.__all__ if n not in names]))
"""


@pytest.mark.parametrize("package", ["ufm", "theory"])
def test_every_public_name_imports_in_a_fresh_interpreter_and_is_its_modules_object(package):
    assert _fresh(EVERY_NAME.replace("ufm", package)) == []


def test_theorys_lazy_listings_agree():
    import theory

    assert _type_checking_names("theory") == set(theory._MODULE_OF) <= set(theory.__all__)
    assert set(theory.__all__) <= set(dir(theory))
    assert len(theory.__all__) == len(set(theory.__all__))


#: modules the solve and md command lines do not run (imported before, by ufm/__init__.py or at module level)
NOT_RUN = ("ufm.calibration", "ufm.tracker", "ufm.last_layer", "sympy", "matplotlib", "scipy")
NOT_RUN += ("theory.memorization_dilation", "theory.minority_collapse")
ONLY_WHAT_RUNS = """
import importlib, json, sys
importlib.import_module(ENTRY)
import ufm
loaded = sorted(m for m in sys.modules if m in NOT_RUN)
modules = [n for n in ("compare", "objective", "collapse_metrics", "solve", "analyze") if not callable(getattr(ufm, n))]
print(json.dumps([loaded, modules]))
"""


@pytest.mark.parametrize("entry", ["ufm.solve", "ufm.md"])
def test_a_command_line_imports_only_what_it_runs_and_the_functions_stay_functions(entry):
    code = ONLY_WHAT_RUNS.replace("ENTRY", repr(entry)).replace("NOT_RUN", repr(NOT_RUN))
    assert _fresh(code) == [[], []]
