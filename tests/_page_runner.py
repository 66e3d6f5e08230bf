"""Run one documentation page's code in one Python process: ``python tests/_page_runner.py STEPS.json``.

``STEPS.json`` is a list of ``[block number, kind, payload]`` in page order, as ``tests/test_docs.py``
writes it:

- ``"python"``: the block's source, executed with fresh globals (``__name__ == "__main__"``), so a
  block that uses a name it does not import or define itself fails as it would in its own interpreter;
- ``"command"``: the argument list of one ``$`` command. ``python -m MODULE ...`` runs the module as
  ``__main__`` in this process (:func:`runpy.run_module`, ``sys.argv`` set as the shell would), any other
  command in a subprocess.

Before every step JAX's float64 switch is put back to its value at start-up (off, unless the
environment sets it): a block or a command line that turns it on does not lend it to the next one,
which a reader runs in a fresh interpreter. Sharing the process saves the interpreter start, the
imports and the compiled programs of every step after the first (measured: the README's five steps
take 13.4 s this way against 21.4 s in five processes, on 2 cores under the suite's load).

The first step that fails (an exception, or a command that exits non-zero) ends the run with exit
status 1 and names its block on stderr.
"""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
import traceback
import warnings

import jax


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
        code = exit_.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    finally:
        sys.argv = saved
    return 0


def _run_command(argv: list[str]) -> int:
    if argv[:2] == ["python", "-m"] and len(argv) >= 3:
        return _run_module(argv)
    return subprocess.run([sys.executable, *argv[1:]] if argv[0] == "python" else argv).returncode


def main(path: str) -> int:
    with open(path) as handle:
        steps = json.load(handle)
    x64 = bool(jax.config.jax_enable_x64)  # type: ignore[attr-defined]
    for number, kind, payload in steps:
        jax.config.update("jax_enable_x64", x64)
        try:
            if kind == "python":
                exec(compile(payload, f"<block {number}>", "exec"), {"__name__": "__main__"})
                continue
            code = _run_command(payload)
        except Exception:
            traceback.print_exc()
            print(f"block {number} ({kind}) raised", file=sys.stderr)
            return 1
        if code != 0:
            print(f"block {number}: `{' '.join(payload)}` exited {code}", file=sys.stderr)
            return 1
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
