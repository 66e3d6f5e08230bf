"""Every code block of README.md and docs/*.md runs as written, and the API reference builds.

- ```python blocks: each as if pasted into a fresh interpreter (so a block that needs an import or
  the x64 switch must say so itself: a reader pastes one block, not the page).
- ```console blocks: each ``$ command`` line, in the page's working folder (so a command may use a file
  written by a block above it on the same page), except the installation and test-suite commands
  (``pip ...``, ``python -m pytest``), which are what CI itself runs.
Blocks of one page run in order in one temporary folder and one Python process
(``tests/_page_runner.py``: fresh globals for each block, JAX's float64 switch put back before each,
``python -m`` commands run as ``__main__``); every step must succeed.
"""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^( *)```(\w+)[^\n]*\n(.*?)^\1```", re.S | re.M)
NOT_RUN = ("pip ", "python -m pytest")


def blocks(page: Path) -> list[tuple[str, str]]:
    """``(language, code)`` of the page's fenced blocks, indentation removed."""
    found = []
    for match in FENCE.finditer(page.read_text()):
        indent, language, body = match.groups()
        code = "\n".join(line[len(indent) :] for line in body.splitlines())
        found.append((language, code))
    return found


def _commands(code: str) -> list[str]:
    commands = []
    for line in code.splitlines():
        if line.startswith("$ "):
            parts = [part.strip() for part in line[2:].split("&&")]
            commands += [part for part in parts if not part.startswith(NOT_RUN)]
    return commands


def test_the_pages_have_runnable_blocks():
    languages = {language for page in PAGES for language, _ in blocks(page)}
    assert languages <= {"python", "console"}, f"unknown block language: {languages}"
    assert sum(len(blocks(page)) for page in PAGES) >= 8


def test_readme_shows_the_ci_test_command():
    """.ci/run runs exactly the command printed in README's set-up step 2."""
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = 'pip install -e ".[test]" && python -m pytest'
    assert f"$ {command}" in readme and ci.rstrip().endswith(command)


def _steps(page: Path) -> list[tuple[int, str, str | list[str]]]:
    """The page's steps for ``tests/_page_runner.py``: ``(block number, "python", source)`` or
    ``(block number, "command", argv)``."""
    steps: list[tuple[int, str, str | list[str]]] = []
    for number, (language, code) in enumerate(blocks(page)):
        if language == "python":
            steps.append((number, "python", code))
        else:
            steps += [(number, "command", shlex.split(command)) for command in _commands(code)]
    return steps


def _run_page(steps, folder: Path) -> subprocess.CompletedProcess:
    (folder / "steps.json").write_text(json.dumps(steps))
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    runner = [sys.executable, str(ROOT / "tests" / "_page_runner.py"), "steps.json"]
    return subprocess.run(runner, cwd=folder, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("page", PAGES, ids=[page.name for page in PAGES])
def test_every_block_runs(page, tmp_path):
    steps = _steps(page)
    if not steps:
        return
    done = _run_page(steps, tmp_path)
    assert done.returncode == 0, f"{page.name}:\n--- stderr ---\n{done.stderr[-3000:]}"


@pytest.mark.parametrize(
    "steps, message",
    [
        # each block imports what it uses: a name from an earlier block is not there
        ([(0, "python", "import numpy as np"), (1, "python", "np.zeros(1)")], "NameError: name 'np'"),
        # float64 switched on by one block (or a command line) is off again for the next
        (
            [
                (0, "python", "import jax\njax.config.update('jax_enable_x64', True)"),
                (1, "python", "import jax.numpy as jnp\nassert jnp.zeros(1).dtype == jnp.float64, 'x64 leaked'"),
            ],
            "AssertionError: x64 leaked",
        ),
        ([(0, "command", ["python", "-m", "ufm.solve", "--K", "1"])], "block 0: `python -m ufm.solve --K 1` exited 2"),
        (
            [(3, "command", ["python", "-c", "import sys; sys.exit(3)"])],
            "block 3: `python -c import sys; sys.exit(3)` exited 3",
        ),
        # sys.exit in a block: zero ends that block only (the next one still runs), non-zero fails
        ([(0, "python", "import sys\nsys.exit(0)"), (1, "python", "raise RuntimeError('ran')")], "RuntimeError: ran"),
        ([(2, "python", "import sys\nsys.exit(4)")], "block 2: python block exited 4"),
        # the page's folder is first on sys.path, as for python -c: not tests/, where this runner lives
        ([(0, "python", "import _quick")], "ModuleNotFoundError: No module named '_quick'"),
    ],
)
def test_the_page_runner_fails_where_a_fresh_interpreter_would(steps, message, tmp_path):
    done = _run_page(steps, tmp_path)
    assert done.returncode == 1 and message in done.stderr, done.stderr[-2000:]


def test_api_reference_builds_in_strict_mode(tmp_path):
    pytest.importorskip("mkdocs", reason="the test extra installs mkdocs")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "site" / "api" / "index.html").exists()
