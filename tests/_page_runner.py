"""Run one documentation page's code in one Python process: ``python tests/_page_runner.py STEPS.json``.

``STEPS.json`` is a list of ``[block number, kind, payload]`` in page order, as ``tests/test_docs.py``
writes it:

- ``"python"``: the block's source, executed as ``python -c`` would: fresh globals (``__name__ ==
  "__main__"``), ``sys.argv == ["-c"]``, the working folder first on ``sys.path``; a block that uses a
  name it does not import or define itself fails as it would in its own interpreter, and
  ``sys.exit(code)`` ends the block (a non-zero code fails the page, zero goes on to the next block);
- ``"command"``: the argument list of one ``$`` command. ``python -m MODULE ...`` runs the module as
  ``__main__`` in this process (:func:`runpy.run_module`, ``sys.argv`` set as the shell would), any other
  command in a subprocess.

Before every step JAX's float64 switch is put back to its value at start-up (off, unless the
environment sets it): a block or a command line that turns it on does not lend it to the next one,
which a reader runs in a fresh interpreter. Other process state is shared, unlike in fresh
interpreters: modules imported by earlier steps (``import ufm`` then finds ``ufm.curvature`` loaded if
an earlier block imported it), NumPy's global random state, environment variables, warning filters, and
JAX settings other than float64 (a command line leaves the persistent compilation cache on). No page
relies on these (each block imports what it uses; checked by review), and the runner cannot tell.
Sharing the process saves the interpreter start, the imports and the compiled programs of every step
after the first (measured: the README's five steps take 13.4 s this way against 21.4 s in five
processes, on 2 cores under the suite's load).

The first step that fails (an exception, a non-zero ``sys.exit`` in a block, or a command that exits
non-zero) ends the run with exit status 1 and names its block on stderr.
"""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
import traceback
import warnings

import jax


def _exit_status(exit_: SystemExit) -> int:
    """The status a process ending with ``exit_`` would have: its int code, 0 for None, 1 for anything else
    (a message)."""
    code = exit_.code
    return code if isinstance(code, int) else (0 if code is None else 1)


def _run_module(argv: list[str]) -> int:
    module, arguments = argv[2], argv[3:]
    saved = sys.argv
    sys.argv = [module, *arguments]
    try:
        with warnings.catch_warnings():
            # the CLI modules are already imported by their package (ufm.solve is both); running one
            # again as __main__ is what ``python -m`` does in a fresh process
            warnings.filterwarnings("ignore", message=".*found in sys.modules", category=RuntimeWarning)
            runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exit_:
        return _exit_status(exit_)
    finally:
        sys.argv = saved
    return 0


def _run_command(argv: list[str]) -> int:
    if argv[:2] == ["python", "-m"] and len(argv) >= 3:
        return _run_module(argv)
    return subprocess.run([sys.executable, *argv[1:]] if argv[0] == "python" else argv).returncode


def _run_python(source: str, number: int) -> int:
    sys.argv = ["-c"]
    try:
        exec(compile(source, f"<block {number}>", "exec"), {"__name__": "__main__"})
    except SystemExit as exit_:
        return _exit_status(exit_)
    return 0


def main(path: str) -> int:
    with open(path) as handle:
        steps = json.load(handle)
    sys.path[0] = ""  # the working folder, as for python -c and python -m; not this file's folder (tests/)
    x64 = bool(jax.config.jax_enable_x64)  # type: ignore[attr-defined]
    for number, kind, payload in steps:
        jax.config.update("jax_enable_x64", x64)
        try:
            code = _run_python(payload, number) if kind == "python" else _run_command(payload)
        except Exception:
            traceback.print_exc()
            print(f"block {number} ({kind}) raised", file=sys.stderr)
            return 1
        if code != 0:
            what = "python block" if kind == "python" else f"`{' '.join(payload)}`"
            print(f"block {number}: {what} exited {code}", file=sys.stderr)
            return 1
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
