"""SIGINT / SIGTERM: every command line stops at once with one line, exit 130 / 143, no file left.

Each case runs the real command in a subprocess and sends the signal at a known moment, found
in JAX's own compile log (``JAX_LOG_COMPILES=1``): inside XLA compilation (where a
KeyboardInterrupt used to end in a segmentation fault) or inside the compiled loop.
"""

import os
import signal
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

import pytest

from tests._signals import with_sigint
from ufm import _prog
from ufm._interrupt import BROKEN_PIPE_EXIT_CODE, EXIT_CODES, _message, exit_on_interrupt

ROOT = Path(__file__).resolve().parents[1]
COMPILED = "Finished XLA compilation of jit({})"
COMPILING = "Finished jaxpr to MLIR module conversion jit({})"  # XLA compilation starts next


def _signal_at(argv, pattern: str, signum, cwd: Path, delay: float = 0.5, sigint_ignored: float | None = None):
    """Run ``python argv`` in ``cwd``, send ``signum`` ``delay`` s after a stderr line containing
    ``pattern``; returns (exit code, stderr without JAX's compile log, seconds from signal to exit).

    The child starts with SIGINT at its default, whatever this process inherited (a suite started as a
    shell's background job ignores SIGINT, and its children would too), or ignored (``sigint_ignored``: then
    SIGINT is sent first, and the child must still run that many seconds later)."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_LOG_COMPILES="1", PYTHONPATH=str(ROOT))
    process = subprocess.Popen(
        with_sigint([sys.executable, *argv], ignored=sigint_ignored is not None),  # tests/_signals.py
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines, seen = [], threading.Event()

    def read():
        for line in process.stderr:
            lines.append(line)
            if pattern in line:
                seen.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert seen.wait(120), "".join(lines)[-3000:]
        time.sleep(delay)
        assert process.poll() is None, "".join(lines)[-3000:]
        if sigint_ignored is not None:
            process.send_signal(signal.SIGINT)
            time.sleep(sigint_ignored)
            assert process.poll() is None, "SIGINT stopped a process that ignores it:\n" + "".join(lines)[-3000:]
        process.send_signal(signum)
        sent = time.perf_counter()
        process.stdout.read()
        process.wait(timeout=30)
        elapsed = time.perf_counter() - sent
        reader.join(timeout=5)
    finally:
        process.kill()
        process.wait()
    log = ("Compiling ", "Finished ", "  ", "import time:")  # JAX's compile log, -X importtime: not the program's
    own = [line for line in lines if not line.startswith(log)]
    return process.returncode, "".join(own), elapsed


def _check(code, stderr, elapsed, signum, prog):
    name = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}[signum]
    assert code == EXIT_CODES[signum], stderr
    assert stderr.strip().splitlines()[-1].startswith(f"{prog}: interrupted by {name}"), stderr
    assert "Traceback" not in stderr and "Segmentation" not in stderr
    assert elapsed < 5.0  # "at once": compilation alone takes several seconds more


@pytest.mark.parametrize(
    "method,compiled,signum", [("reduced", "_reduced_queue", signal.SIGINT), ("gd", "_batched_run", signal.SIGTERM)]
)
def test_sweep_stops_during_compilation(tmp_path, method, compiled, signum):
    """Signalled while XLA compiles the sweep (~8 s on 2 cores): a KeyboardInterrupt there used to
    end in a traceback and a segmentation fault (exit 139), a gd sweep ignored Ctrl-C to its end."""
    argv = [
        "-m",
        "ufm.sweep",
        "--K",
        "3",
        "--n",
        "10",
        "--seeds",
        "0:4",
        "--method",
        method,
        "--no-cache",
        "--out",
        "s.json",
    ]
    code, stderr, elapsed = _signal_at(argv, COMPILING.format(compiled), signum, tmp_path)
    _check(code, stderr, elapsed, signum, "python -m ufm.sweep")
    assert list(tmp_path.iterdir()) == []


def test_solve_stops_inside_the_compiled_loop(tmp_path):
    argv = [
        "-m",
        "ufm.solve",
        "--K",
        "3",
        "--n",
        "10",
        "--method",
        "gd",
        "--lr",
        "1",
        "--tol",
        "1e-300",
        "--max-iters",
        "100000000",
        "--no-cache",
        "--quiet",
        "--json",
        "r.json",
    ]
    code, stderr, elapsed = _signal_at(argv, COMPILED.format("run_loop"), signal.SIGINT, tmp_path, delay=0.5)
    _check(code, stderr, elapsed, signal.SIGINT, "python -m ufm.solve")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "pattern, pause", [(" jax._src", 0.0), (COMPILED.format("run_loop"), 0.5)], ids=["imports", "loop"]
)
def test_an_ignored_sigint_stays_ignored_and_sigterm_still_stops(tmp_path, pattern, pause):
    """A shell's background job (``cmd &``) starts with SIGINT ignored: Ctrl-C at the terminal is not for
    it. The command line keeps it ignored, during its imports and in the compiled loop, and still ends
    in one line on SIGTERM (the start-up guard used to give up on both when SIGINT was not Python's
    default, so SIGTERM killed the process silently, exit -15). In the loop, SIGTERM comes 0.5 s after
    SIGINT; during the imports at once (JAX's import takes longer than that)."""
    argv = ["-X", "importtime", "-m", "ufm.solve", "--K", "3", "--n", "10", "--method", "gd", "--lr", "1"]
    argv += ["--tol", "1e-300", "--max-iters", "100000000", "--no-cache", "--quiet", "--json", "r.json"]
    code, stderr, elapsed = _signal_at(argv, pattern, signal.SIGTERM, tmp_path, delay=0.0, sigint_ignored=pause)
    _check(code, stderr, elapsed, signal.SIGTERM, "python -m ufm.solve")
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert list(tmp_path.iterdir()) == []


def test_md_stops_during_compilation(tmp_path):
    """Signalled while XLA compiles the MD profile: exit 130, one line, no JSON file."""
    argv = ["-m", "ufm.md", "--distribution", "circle", "--grid", "4096", "--no-cache", "--quiet", "--json", "md.json"]
    code, stderr, elapsed = _signal_at(argv, COMPILING.format("_profile"), signal.SIGINT, tmp_path, delay=0.1)
    _check(code, stderr, elapsed, signal.SIGINT, "python -m ufm.md")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "argv",
    [
        ["-m", "ufm.solve", "--K", "3", "--n", "2", "--no-hessian", "--json", "r.json"],
        ["-m", "ufm.md", "--alpha", "0.1", "--eta", "1e-3"],
    ],
    ids=["solve", "md"],
)
def test_a_closed_standard_output_ends_quietly(tmp_path, argv):
    """``... | head`` that stops reading: exit 141 (128 + SIGPIPE), no traceback, no partial file."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader has gone before the first line: every write to stdout fails
    try:
        env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
        done = subprocess.run(
            [sys.executable, *argv], cwd=tmp_path, env=env, stdout=write_end, stderr=subprocess.PIPE, text=True
        )
    finally:
        os.close(write_end)
    assert done.returncode == BROKEN_PIPE_EXIT_CODE, done.stderr
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr
    assert [p.name for p in tmp_path.iterdir()] in ([], ["r.json"])  # whole or absent, never a temporary


def test_run_all_stops_and_leaves_no_file(tmp_path):
    argv = ["-m", "experiments.run_all", "--quick", "--out", "out"]
    code, stderr, elapsed = _signal_at(argv, "Compiling jit(", signal.SIGTERM, tmp_path, delay=0.5)
    _check(code, stderr, elapsed, signal.SIGTERM, "python -m experiments.norms_vs_delta")
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []  # the checked folders hold nothing


WRITER = """
import sys, time
from ufm import _io
from ufm._interrupt import exit_on_interrupt

def slow(handle):
    print("writing", file=sys.stderr, flush=True)
    handle.write(b'{"part": 1, ')
    time.sleep(1.0)
    handle.write(b'"whole": true}')

with exit_on_interrupt("writer"):
    _io.write_atomic("r.json", slow)
    print("wrote", file=sys.stderr, flush=True)
    time.sleep(30)
"""


def test_a_write_in_progress_finishes_before_the_exit(tmp_path):
    code, stderr, elapsed = _signal_at(["-c", WRITER], "writing", signal.SIGTERM, tmp_path, delay=0.1)
    assert code == 143 and "writer: interrupted by SIGTERM" in stderr, stderr
    assert 0.5 < elapsed < 5.0  # it waited for the write, not for the sleep
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]
    assert (tmp_path / "r.json").read_text() == '{"part": 1, "whole": true}'


def test_blocks_nest_and_restore_the_handling():
    def state():
        fd = signal.set_wakeup_fd(-1)
        signal.set_wakeup_fd(fd)
        return signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM), fd

    before = state()
    with exit_on_interrupt("outer"):
        outer = state()
        assert outer != before
        with exit_on_interrupt("inner"):
            assert state() not in (before, outer)
        assert state() == outer
    assert state() == before


def test_outside_the_main_thread_it_does_nothing():
    seen = []

    def run():
        with exit_on_interrupt("thread"):
            seen.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert seen == [signal.getsignal(signal.SIGTERM)]


#: (interpreter command line, sys.argv, the program the start-up guard names or None where it stays out)
STARTS = [
    (["python", "-m", "ufm.solve", "--K", "3"], ["/x/ufm/solve.py", "--K", "3"], "python -m ufm.solve"),
    (["python", "-X", "importtime", "-m", "ufm.md"], ["/x/ufm/md.py"], "python -m ufm.md"),
    (["python", "-W", "error", "-mexperiments.run_all"], ["/x/run_all.py"], "python -m experiments.run_all"),
    (["python", "-B", "-m", "ufm"], ["/x/ufm/__main__.py"], "python -m ufm"),
    (["python", "-m", "pytest", "tests"], ["/x/pytest/__main__.py"], None),
    (["python", "-m", "ufmx.solve"], ["/x/ufmx/solve.py"], None),
    (["python", "-c", "import ufm"], ["-c"], None),
    (["python", "script.py", "-m", "ufm.solve"], ["script.py", "-m", "ufm.solve"], None),
    (["python", "-"], ["-"], None),
    (["/venv/bin/python", "/venv/bin/ufm-solve", "--K", "3"], ["/venv/bin/ufm-solve", "--K", "3"], "ufm-solve"),
    (["C:\\py.exe", "C:\\v\\ufm-analyze.exe"], ["C:\\v\\Scripts\\ufm-analyze.exe"], "ufm-analyze"),
    (["ipython"], ["/venv/bin/ipython"], None),
    ([], [], None),
]


@pytest.mark.parametrize("orig_argv,argv,prog", STARTS)
def test_the_start_up_guard_acts_only_for_this_projects_command_lines(orig_argv, argv, prog):
    assert _prog.started_as(orig_argv, argv) == prog


def test_the_console_scripts_known_to_the_guard_are_the_projects():
    with open(ROOT / "pyproject.toml", "rb") as handle:
        scripts = tomllib.load(handle)["project"]["scripts"]
    assert sorted(_prog.SCRIPTS) == sorted(scripts)
    assert {target.split(".")[0] for target in scripts.values()} <= set(_prog.PACKAGES)


@pytest.mark.parametrize(
    "module,signum",
    [("ufm.solve", signal.SIGINT), ("ufm.solve", signal.SIGTERM), ("experiments.norms_vs_delta", signal.SIGTERM)],
)
def test_a_signal_while_jax_is_imported_ends_in_one_line(tmp_path, module, signum):
    """Sent as soon as the first module of JAX has been imported (``-X importtime`` reports each import as
    it ends; JAX's whole import takes several times longer): without the start-up guard SIGINT ended in a
    KeyboardInterrupt traceback and SIGTERM killed the process silently (exit -15)."""
    argv = ["-X", "importtime", "-m", module, "--no-cache", "--help"]
    code, stderr, elapsed = _signal_at(argv, " jax._src", signum, tmp_path, delay=0.0)
    _check(code, stderr, elapsed, signum, f"python -m {module}")
    assert len(stderr.strip().splitlines()) == 1, stderr


# A signal in the first milliseconds. Whether the start-up guard is in place is read from the
# kernel (SigCgt of /proc/<pid>/status: SIGTERM caught), not guessed from a delay: before it, the interpreter is
# still starting (its own SIGINT handling, SIGTERM's default) and none of our code can act; from it on, every
# signal must end in one line and exit 130 / 143
_SIGTERM_BIT = 1 << (signal.SIGTERM - 1)
#: delays after exec: the interpreter's start-up takes 30-60 ms on an idle machine and 150-450 ms under load
_EXEC_DELAYS = [0.0, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15]
#: delays after the guard is in place (the imports of NumPy and JAX follow for several hundred ms)
_GUARD_DELAYS = [0.0, 0.002, 0.01, 0.05]


def _guarded(pid: int) -> bool:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) & _SIGTERM_BIT)
    return False


def _start_command(entry: str) -> tuple[list[str], str]:
    """The command line of ``entry`` with ``--help`` (it imports JAX, then prints and exits), and its name."""
    if entry == "ufm-solve":
        script = Path(sys.executable).with_name("ufm-solve")
        if not script.exists():
            pytest.skip(f"no console script {script} (the package is not installed in this environment)")
        return [str(script), "--help"], "ufm-solve"
    return [sys.executable, "-m", "ufm.solve", "--help"], "python -m ufm.solve"


def _send_early(command, signum, delay: float, after_guard: bool):
    """Start ``command``, send ``signum`` ``delay`` s after exec (or after the guard is in place); returns
    (exit code, stderr, whether the guard was in place when the signal was sent)."""
    if signum == signal.SIGINT and signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        pytest.skip("SIGINT is ignored in this process (a background job): its children would ignore it too")
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        start = time.perf_counter()
        while after_guard and not _guarded(process.pid):
            assert process.poll() is None and time.perf_counter() - start < 60, "the guard was never installed"
            time.sleep(0.0005)
        time.sleep(delay)
        guarded = _guarded(process.pid)
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
        process.wait()
    return process.returncode, stderr, guarded


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the signal masks from /proc")
@pytest.mark.parametrize("entry", ["python -m ufm.solve", "ufm-solve"])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_in_the_first_milliseconds_ends_in_one_line_once_our_code_runs(entry, signum):
    command, prog = _start_command(entry)
    outcomes = []
    for after_guard, delays in ((False, _EXEC_DELAYS), (True, _GUARD_DELAYS)):
        for delay in delays:
            code, stderr, guarded = _send_early(command, signum, delay, after_guard)
            outcomes.append((after_guard, delay, guarded, code))
            clean = code == EXIT_CODES[signum] and stderr.strip().splitlines() == [_message(prog, signum)]
            if guarded:
                assert clean, (delay, after_guard, code, stderr[-2000:])
            else:  # the interpreter was still starting: its outcome (killed by the signal; a KeyboardInterrupt
                # traceback, then killed by SIGINT; "Fatal Python error: init_import_site"), stopped all the same.
                # One outcome exits 0: CPython's main catches a KeyboardInterrupt while it decides whether argv[0]
                # goes on sys.path, prints "Failed checking if argv[0] is an import path entry" and its traceback,
                # and ends without running the module (seen once in a clean-clone run, 35 ms after exec)
                interpreter_ended = "Failed checking if argv[0] is an import path entry" in stderr
                assert code != 0 or (interpreter_ended and "KeyboardInterrupt" in stderr), (delay, stderr[-2000:])
                ours = {line.split('"')[1] for line in stderr.splitlines() if line.strip().startswith('File "')}
                # frames of this project's packages (not the interpreter's site machinery, such as an editable
                # install's finder in a virtual environment that may lie inside the checkout, as on CI)
                packages = tuple(str(ROOT / package) + "/" for package in ("ufm", "theory", "experiments"))
                ours = {name for name in ours if name.startswith(packages)}
                guard = {str(ROOT / "ufm" / name) for name in ("__init__.py", "_interrupt.py", "_prog.py")}
                assert ours <= guard, stderr[-2000:]  # at most the guard's own import, before it can act
    assert sum(guarded for *_, guarded, _ in outcomes) >= len(_GUARD_DELAYS), outcomes
