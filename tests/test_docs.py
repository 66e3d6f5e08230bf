"""Every code block of README.md and docs/*.md runs as written, and the API reference builds.

- ```python blocks: each in a fresh interpreter on its own (so a block that needs an import or
  the x64 switch must say so itself: a reader pastes one block, not the page).
- ```console blocks: each ``$ command`` line in a shell, in the page's working folder (so a command may
  use a file written by a block above it on the same page), except the installation and test-suite
  commands (``pip ...``, ``python -m pytest``), which are what CI itself runs.
Blocks of one page run in order in one temporary folder; every command must exit 0.
"""

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


@pytest.mark.parametrize("page", PAGES, ids=[page.name for page in PAGES])
def test_every_block_runs(page, tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    for number, (language, code) in enumerate(blocks(page)):
        runs = (
            [[sys.executable, "-c", code]]
            if language == "python"
            else [
                [sys.executable, *shlex.split(command)[1:]] if command.startswith("python ") else shlex.split(command)
                for command in _commands(code)
            ]
        )
        for argv in runs:
            done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
            assert done.returncode == 0, (
                f"{page.name} block {number} ({language}) exited {done.returncode}:\n"
                f"{code}\n--- stderr ---\n{done.stderr[-2000:]}"
            )


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
