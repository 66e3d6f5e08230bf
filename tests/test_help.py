"""Every command line's --help: exits 0 in-process, names the program as it was started, shows no
docstring markup, and states the default of every option that takes a value."""

import argparse
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from experiments import _common, run_all

#: (module, program name in the usage line, console script or None)
CLIS = [
    ("ufm.solve", "python -m ufm.solve", "ufm-solve"),
    ("ufm.analyze", "python -m ufm.analyze", "ufm-analyze"),
    ("ufm.sweep", "python -m ufm.sweep", None),
    ("ufm.md", "python -m ufm.md", None),
    ("ufm.sharded", "python -m ufm.sharded", None),
    ("experiments.run_all", "python -m experiments.run_all", None),
    *[(f"experiments.{name}", f"python -m experiments.{name}", None) for name in sorted(run_all.EXPERIMENTS)],
]

#: options naming a file to read or write: without them nothing is read or written, which needs no "default"
FILE_METAVARS = {"PATH", "NPY"}


def _help(module_name, capsys) -> str:
    module = importlib.import_module(module_name)
    try:
        code = module.main(["--help"])
    except SystemExit as exit_:  # argparse's own exit, where main does not catch it
        code = exit_.code
    assert code in (0, None)
    return capsys.readouterr().out


def _parser(module_name) -> argparse.ArgumentParser:
    module = importlib.import_module(module_name)
    if hasattr(module, "build_parser"):
        return module.build_parser()
    # the experiments share one parser (experiments/_common.py), described by the docstring's first line
    return _common.build_parser(module.NAME, module.__doc__.splitlines()[0])


@pytest.mark.parametrize("module_name,prog,script", CLIS, ids=[c[0] for c in CLIS])
def test_help_names_the_program_and_has_no_markup(module_name, prog, script, capsys):
    text = _help(module_name, capsys)
    assert text.startswith(f"usage: {prog} "), text.splitlines()[0]
    assert "`" not in text
    assert _parser(module_name).prog == prog


@pytest.mark.parametrize("module_name,prog,script", [c for c in CLIS if c[2]], ids=[c[2] for c in CLIS if c[2]])
def test_console_script_names_itself(module_name, prog, script, monkeypatch, capsys):
    """Started as the console script (sys.argv[0] ends in its name), usage and errors say that name."""
    monkeypatch.setattr("sys.argv", [f"/venv/bin/{script}", "--help"])
    assert _help(module_name, capsys).startswith(f"usage: {script} ")
    monkeypatch.setattr("sys.argv", [f"C:\\venv\\Scripts\\{script}.exe"])  # Windows launcher
    assert _parser(module_name).prog == script


@pytest.mark.parametrize("module_name", [c[0] for c in CLIS])
def test_every_option_states_its_default(module_name):
    """An option taking a value says its default (argparse's value, or what an unset flag means) in its
    help; switches (store_true) and file options (nothing read or written without them) are exempt."""
    missing = []
    for action in _parser(module_name)._actions:
        takes_value = action.option_strings and action.nargs != 0
        if not takes_value or action.metavar in FILE_METAVARS:
            continue
        if "default" not in (action.help or "").lower():
            missing.append(f"{action.option_strings[-1]} (default {action.default!r})")
    assert not missing, missing


def test_solve_help_has_the_glossary(capsys):
    text = _help("ufm.solve", capsys)
    glossary = text[text.index("glossary:") :]
    for term in (
        "NC1-NC3",
        "loss block",
        "reduced",
        "lbfgs",
        "gd",
        "lam_Z =",
        "c =",
        "p_t, p_n =",
        "kappa =",
        "delta*",
    ):
        assert term in glossary, term
    assert "non-zero eigenvalues" in glossary


#: command lines whose --help takes its exit codes from ufm._cli, and the codes each one's source can return
#: besides 0, argparse's 2 and the interrupts
EXIT_CODES = {"ufm.solve": (1, 3, 4), "ufm.sweep": (1, 4), "ufm.md": (1, 4), "ufm.analyze": (4,)}


@pytest.mark.parametrize("module_name", sorted(EXIT_CODES))
def test_help_says_the_exit_codes(module_name, capsys):
    assert "exit codes:" in _help(module_name, capsys)


@pytest.mark.parametrize("module_name", sorted(EXIT_CODES))
def test_help_lists_the_exit_codes(module_name, capsys):
    """The command lines list their exit codes under --help, one a line, from ufm._cli's one text."""
    from ufm import _io
    from ufm._interrupt import BROKEN_PIPE_EXIT_CODE

    text = _help(module_name, capsys)
    codes = text[text.index("exit codes:") :].splitlines()[1:]
    listed = [line.split()[0] for line in codes if line.startswith("  ") and line[2] != " "]
    for code in (0, 2, *EXIT_CODES[module_name], 130, BROKEN_PIPE_EXIT_CODE):
        assert str(code) in listed, (code, listed)
    assert (str(_io.EXIT_NOT_WRITTEN) in listed) == (_io.EXIT_NOT_WRITTEN in EXIT_CODES[module_name])
    assert any(line.startswith("  130 / 143 ") for line in codes)


@pytest.mark.parametrize(
    "module_name", ["ufm.solve", "ufm.analyze", "ufm.md", "experiments.run_all", "experiments.norms_vs_delta"]
)
def test_help_to_a_reader_that_has_gone_exits_141_quietly(module_name, tmp_path):
    """--help is output like any other: a standard output whose reader has gone before it is written ends in
    exit 141 (128 + SIGPIPE) and no traceback, as ``... | head`` does for a report (argparse itself ignores the
    failed write and exited 0, the text lost unsaid). A reader that leaves after the text is in the pipe
    (``--help | (exec true)``, a race) changes nothing: the text was delivered, exit 0."""
    from ufm._interrupt import BROKEN_PIPE_EXIT_CODE

    root = Path(__file__).resolve().parents[1]
    read_end, write_end = os.pipe()
    os.close(read_end)  # gone before the first byte
    try:
        env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(root))
        done = subprocess.run(
            [sys.executable, "-m", module_name, "--help"],
            cwd=tmp_path,
            env=env,
            stdout=write_end,
            stderr=subprocess.PIPE,
        )
    finally:
        os.close(write_end)
    assert done.returncode == BROKEN_PIPE_EXIT_CODE and done.stderr == b"", done.stderr
    done = subprocess.run([sys.executable, "-m", module_name, "--help"], env=env, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("usage: ") and "--no-cache" in done.stdout  # read: all
