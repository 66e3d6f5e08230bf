"""How a command line starts: the name it calls itself (:func:`name`) and its arguments and process set-up
(:func:`start`).

The name is the one in its usage, error and interrupt lines: the way it was started.

``python -m ufm.solve`` runs the module with ``sys.argv[0]`` set to the file (``.../ufm/solve.py``),
the console script ``ufm-solve`` with ``sys.argv[0]`` ending in ``ufm-solve`` (``ufm-solve.exe`` on
Windows, either separator). argparse's own default (the basename of ``sys.argv[0]``) would print ``solve.py`` for the
first, and inside another program (pytest, a notebook) that program's name.

:func:`started_as` tells, from the interpreter's own command line, whether the process was started as one of
this project's command lines at all (the start-up guard of :mod:`ufm._interrupt` acts only then).
"""

from __future__ import annotations

import ntpath
import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy and ruff know the name)
if TYPE_CHECKING:  # argparse is not imported before the start-up guard (ufm._interrupt) is in place
    import argparse


def _program_file(argv: list[str]) -> str:
    """The base name of ``argv[0]`` without its suffix (``ufm-solve`` for ``/venv/bin/ufm-solve`` and for
    ``C:\\venv\\Scripts\\ufm-solve.exe``; ntpath splits at '/' and '\\' both), ``""`` when there is none."""
    return ntpath.splitext(ntpath.basename(argv[0]))[0] if argv and argv[0] else ""


def name(module: str, script: str | None = None) -> str:
    """``script`` when the process was started by that console script, else ``"python -m <module>"``.

    ``module``: the dotted module (``"ufm.solve"``); ``script``: its console-script name, if it has one.
    """
    if script is not None and _program_file(sys.argv) == script:
        return script
    return f"python -m {module}"


#: console scripts of this project (``[project.scripts]`` in pyproject.toml)
SCRIPTS = ("ufm-solve", "ufm-analyze")
#: packages whose modules are run as command lines (``python -m ufm.solve``, ``python -m experiments.<name>``)
PACKAGES = ("ufm", "experiments")
_OPTIONS_WITH_VALUE = ("-W", "-X", "--check-hash-based-pycs")  # the interpreter's options that take the next word


def started_as(orig_argv: list[str] | None = None, argv: list[str] | None = None) -> str | None:
    """The name of this project's command line that started the process, or ``None`` for any other program.

    ``orig_argv``: the interpreter's command line (default ``sys.orig_argv``): ``python [options] -m ufm.solve ...``
    gives ``"python -m ufm.solve"``; a script, ``-c`` or another module gives ``None``, unless ``argv[0]``
    (default ``sys.argv``) is one of :data:`SCRIPTS` (a console script runs as a script): then that name.
    """
    orig_argv = getattr(sys, "orig_argv", []) if orig_argv is None else orig_argv
    words = iter(orig_argv[1:])
    for word in words:
        if word.startswith("-m"):  # "-m ufm.solve" or "-mufm.solve"
            module = word[2:] or next(words, "")
            return f"python -m {module}" if module.split(".")[0] in PACKAGES else None
        if word in _OPTIONS_WITH_VALUE:
            next(words, None)
        elif word == "-c" or word == "-" or not word.startswith("-"):
            break  # a command, standard input or a script: not a module run
    script = _program_file(sys.argv if argv is None else argv)
    return script if script in SCRIPTS else None


def parse(parser: argparse.ArgumentParser, argv) -> argparse.Namespace | int:
    """``parser.parse_args(argv)``, or the exit code where argparse stopped (0 after ``--help``, 2 for a bad flag,
    its message already printed).

    The ``--help`` text is written like any other output: where the reader of standard output has gone before it
    was written, BrokenPipeError (exit 141 inside :func:`ufm._interrupt.exit_on_interrupt`), not the silent exit
    0 of argparse, which ignores the failed write. A reader that leaves after the text is in the pipe
    (``--help | (exec true)``, a race) changes nothing: exit 0.
    """
    import contextlib
    import io

    text = io.StringIO()  # argparse swallows a failed write of --help (OSError): the text is written here instead
    try:
        with contextlib.redirect_stdout(text):
            return parser.parse_args(argv)
    except SystemExit as exit_:
        sys.stdout.write(text.getvalue())
        sys.stdout.flush()  # a reader that has gone raises here: exit 141 (ufm._interrupt.exit_on_interrupt)
        return int(exit_.code or 0)


def start(parser: argparse.ArgumentParser, argv, *, prog: str | None = None, x64: bool = True):
    """Parse ``argv`` for a command line and set up its process: 64-bit JAX (``x64``; the command line owns
    its process, library code never does this) and the compilation cache (:func:`ufm._cache.configure`,
    warnings naming ``prog``, default ``parser.prog``).

    Returns the parsed arguments, or the exit code where argparse stopped (:func:`parse`).
    """
    import jax

    from ufm import _cache

    args = parse(parser, argv)
    if isinstance(args, int):
        return args
    if x64:
        jax.config.update("jax_enable_x64", True)
    _cache.configure(args, parser.prog if prog is None else prog)
    return args
