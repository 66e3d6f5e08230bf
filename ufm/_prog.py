"""The name a command line calls itself in its usage, error and interrupt lines: the way it was started.

``python -m ufm.solve`` runs the module with ``sys.argv[0]`` set to the file (``.../ufm/solve.py``),
the console script ``ufm-solve`` with ``sys.argv[0]`` ending in ``ufm-solve`` (``ufm-solve.exe`` on
Windows, either separator). argparse's own default (the basename of ``sys.argv[0]``) would print ``solve.py`` for the
first, and inside another program (pytest, a notebook) that program's name.
"""

from __future__ import annotations

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
