"""Starting a command line whose signal handling a test checks.

A suite started as a shell's background job (``pytest ... &`` in a script) runs with SIGINT ignored, and a
child inherits an ignored signal across ``exec``: ``ufm``'s command lines then rightly keep ignoring it
(``ufm._interrupt``), and a test that sends SIGINT would see the run go on. `with_sigint` starts the
command through a small interpreter that sets SIGINT to its default and replaces itself by the command (the
same process id; ``exec`` resets a caught signal to its default and keeps only an ignored one ignored). Not
``Popen``'s ``preexec_fn``, which forks this multithreaded process.
"""

from __future__ import annotations

import sys


def with_sigint(argv: list[str], ignored: bool = False) -> list[str]:
    """``argv`` (its first item the executable's path) started with SIGINT at its default, or ignored."""
    disposition = "SIG_IGN" if ignored else "SIG_DFL"
    start = (
        f"import os, signal, sys; signal.signal(signal.SIGINT, signal.{disposition}); "
        "os.execv(sys.argv[1], sys.argv[1:])"
    )
    return [sys.executable, "-c", start, *argv]


def sigint_default(argv: list[str]) -> list[str]:
    """``argv`` started with SIGINT at its default (:func:`with_sigint`)."""
    return with_sigint(argv)
