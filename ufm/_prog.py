"""How a command line starts: the name it calls itself (:func:`name`) and its arguments and process set-up
(:func:`start`).

The name is the one in its usage, error and interrupt lines: the way it was started.

``python -m ufm.solve`` runs the module with ``sys.argv[0]`` set to the file (``.../ufm/solve.py``),
the console script ``ufm-solve`` with ``sys.argv[0]`` ending in ``ufm-solve`` (``ufm-solve.exe`` on
Windows, either separator). argparse's own default (the basename of ``sys.argv[0]``) would print ``solve.py`` for the
first, and inside another program (pytest, a notebook) that program's name.
"""

from __future__ import annotations

import argparse
import ntpath
import sys


def name(module: str, script: str | None = None) -> str:
    """``script`` when the process was started by that console script, else ``"python -m <module>"``.

    ``module``: the dotted module (``"ufm.solve"``); ``script``: its console-script name, if it has one.
    """
    if script is not None and sys.argv and sys.argv[0]:
        if ntpath.splitext(ntpath.basename(sys.argv[0]))[0] == script:  # ntpath: '/' and '\\' both split
            return script
    return f"python -m {module}"


def start(parser: argparse.ArgumentParser, argv, *, prog: str | None = None, x64: bool = True):
    """Parse ``argv`` for a command line and set up its process: 64-bit JAX (``x64``; the command line owns
    its process, library code never does this) and the compilation cache (:func:`ufm._cache.configure`,
    warnings naming ``prog``, default ``parser.prog``).

    Returns the parsed arguments, or the exit code where argparse stopped (0 after ``--help``, 2 for a bad
    flag, its message already printed).
    """
    import jax

    from ufm import _cache

    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    if x64:
        jax.config.update("jax_enable_x64", True)
    _cache.configure(args, parser.prog if prog is None else prog)
    return args
