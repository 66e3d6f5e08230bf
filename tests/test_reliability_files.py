"""Outputs and the file system. Special files (character devices, FIFOs, block
devices, sockets, dangling links), names at the file system's length limit, a full disk, a file system
remounted read-only and a folder replaced by a file while computing, a failing or ASCII-only standard
output, empty output names, and run_all's interrupt line.

Every case ends in a correct write (into the FIFO or character device: never replaced), or in exactly
one ``error:`` line naming the path and the reason, with the result kept in the temporary folder and
exit 4 (``ufm._io.EXIT_NOT_WRITTEN``); never a traceback. Device nodes, FIFOs and file systems are the
test's own (``os.mknod`` / ``mount -t tmpfs`` in ``tmp_path``, as root; skipped otherwise), never the
machine's. In-process ``main([...])`` calls of ``ufm.md`` (a 5-point grid: quick) where possible; the
"mid-run" changes happen in a patched compute step.
"""

import errno
import io
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest

from experiments import _common, run_all
from ufm import _io
from ufm import md as md_cli

ROOT = Path(__file__).resolve().parents[1]
MD = "python -m ufm.md"
MD_ARGV = ["--grid", "5", "--quiet"]
ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="creating device nodes and mounting a tmpfs need root")


@pytest.fixture
def kept(tmp_path, monkeypatch) -> Path:
    """The system's temporary folder for this test: where results that could not be written are kept."""
    folder = tmp_path / "kept"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def _device(folder: Path, name: str, minor: int) -> Path:
    """A character device node of the test's own: (1, 3) behaves as /dev/null, (1, 7) as /dev/full."""
    path = folder / name
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, minor))
    except PermissionError:
        pytest.skip("os.mknod of a character device needs root (CAP_MKNOD)")
    return path


@contextmanager
def _tmpfs(folder: Path, size: str = "16k"):
    """A small tmpfs mounted at ``folder`` (unmounted at the end); skips where mounting is not allowed."""
    folder.mkdir(exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def _fill(folder: Path) -> None:
    """Fill the file system of ``folder`` to the last byte."""
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError as error:
                assert error.errno == errno.ENOSPC
    finally:
        os.close(fd)


def _one_error(captured, *needles) -> str:
    """Exactly one ``error:`` line, no traceback; it holds every needle."""
    errors = [line for line in captured.err.splitlines() if "error:" in line]
    assert len(errors) == 1, captured.err
    assert "Traceback" not in captured.err and "Exception ignored" not in captured.err, captured.err
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


def _kept_result(line: str) -> Path:
    """The path named by 'kept in PATH' at the end of an error line; it exists."""
    path = Path(line.rsplit("kept in ", 1)[1])
    assert path.exists(), line
    return path


def _md(argv, capsys):
    code = md_cli.main([*MD_ARGV, *argv])
    return code, capsys.readouterr()


def _after_compute(monkeypatch, action):
    """Run ``action()`` after the MD solves, before anything is written (the file system changes mid-run)."""
    solve_md = md_cli.solve_md
    calls = []

    def solve_then_act(*args, **kwargs):
        result = solve_md(*args, **kwargs)
        calls.append(1)
        if len(calls) == 2:  # CE, then LS: computing is over
            action()
        return result

    monkeypatch.setattr(md_cli, "solve_md", solve_then_act)


# 1. special files: written into (character devices, FIFOs) or refused, never replaced


@ROOT_ONLY
def test_a_character_device_is_written_into_and_never_replaced(tmp_path, capsys, kept):
    null = _device(tmp_path, "null", 3)
    for force in ([], ["--force"]):  # nothing is replaced, so --force is not needed
        code, captured = _md(["--json", str(null), *force], capsys)
        assert code == 0, captured.err
        assert stat.S_ISCHR(null.stat().st_mode) and null.stat().st_rdev == os.makedev(1, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept", "null"] and not list(kept.iterdir())


@ROOT_ONLY
def test_a_full_device_ends_in_one_error_line_and_the_result_is_kept(tmp_path, capsys, kept):
    full = _device(tmp_path, "full", 7)
    code, captured = _md(["--json", str(full), "--force"], capsys)
    assert code == _io.EXIT_NOT_WRITTEN == 4
    line = _one_error(captured, f"{MD}: error: --json {full}", "No space left on device", "kept in")
    assert json.loads(_kept_result(line).read_text())["converged"] is True
    assert stat.S_ISCHR(full.stat().st_mode)  # still the device
    assert "Theorem 4.3" in captured.out  # the report was printed


def test_a_fifo_is_written_into_and_never_replaced(tmp_path, capsys, kept):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    code, captured = _md(["--json", str(fifo), "--force"], capsys)
    reader.join(timeout=30)
    assert code == 0, captured.err
    assert json.loads(received[0])["converged"] is True
    assert stat.S_ISFIFO(fifo.stat().st_mode) and not list(kept.iterdir())


def test_block_devices_sockets_and_dangling_links_are_refused_before_computing(tmp_path, capsys):
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "sock"))
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    cases = [
        (tmp_path / "sock", "is a socket, not a regular file"),
        (tmp_path / "link", "already exists (a symbolic link to the missing"),
    ]
    if os.geteuid() == 0:
        os.mknod(tmp_path / "disk", 0o600 | stat.S_IFBLK, os.makedev(7, 250))
        cases.append((tmp_path / "disk", "is a block device, not a regular file"))
    try:
        for path, needle in cases:
            force = ["--force"] if path.name != "link" else []
            code, captured = _md(["--json", str(path), *force], capsys)
            assert code == 2, captured.err
            _one_error(captured, f"--json {path}", needle)
            assert "Theorem" not in captured.out  # refused before computing
        assert stat.S_ISSOCK((tmp_path / "sock").stat().st_mode)
    finally:
        sock.close()


def test_a_dangling_link_is_replaced_with_force_and_no_other_writer_is_invented(tmp_path, capsys):
    link = tmp_path / "d.json"
    link.symlink_to(tmp_path / "nowhere")
    code, captured = _md(["--json", str(link), "--force"], capsys)
    assert code == 0 and "another writer" not in captured.err, captured.err
    assert not link.is_symlink() and json.loads(link.read_text())["converged"] is True
    assert not (tmp_path / "d.1.json").exists() and not (tmp_path / "nowhere").exists()


# 2. names at the file system's limit


def test_a_name_of_255_bytes_is_written_and_one_too_long_is_refused_naming_the_flag(tmp_path, capsys, kept):
    limit = os.pathconf(tmp_path, "PC_NAME_MAX")
    for length in (238, limit):
        path = tmp_path / ("r" * (length - 5) + ".json")
        code, captured = _md(["--json", str(path)], capsys)
        assert code == 0 and json.loads(path.read_text())["converged"] is True, captured.err
    code, captured = _md(["--json", str(tmp_path / ("r" * 295 + ".json"))], capsys)
    assert code == 2
    _one_error(captured, f"{MD}: error: --json: the name rrrr", "is 300 bytes long", f"at most {limit}")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")] and not list(kept.iterdir())


# 3. the file system fails after computing


@ROOT_ONLY
def test_a_full_disk_ends_in_one_error_line_and_leaves_no_temporary_file(tmp_path, capsys, kept):
    with _tmpfs(tmp_path / "small") as small:
        _fill(small)
        code, captured = _md(["--json", str(small / "r.json")], capsys)
        assert code == 4
        line = _one_error(captured, f"--json {small / 'r.json'} was not written", "[Errno 28]")
        assert json.loads(_kept_result(line).read_text())["converged"] is True
        assert sorted(p.name for p in small.iterdir()) == ["filler"]


@ROOT_ONLY
def test_a_file_system_remounted_read_only_mid_run(tmp_path, capsys, kept, monkeypatch):
    with _tmpfs(tmp_path / "disk", "1m") as disk:
        _after_compute(monkeypatch, lambda: subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True))
        code, captured = _md(["--json", str(disk / "r.json")], capsys)
        assert code == 4
        line = _one_error(captured, f"--json {disk / 'r.json'}", "[Errno 30] Read-only file system")
        assert json.loads(_kept_result(line).read_text())["converged"] is True
        assert list(disk.iterdir()) == []


def test_the_output_folder_replaced_by_a_file_mid_run(tmp_path, capsys, kept, monkeypatch):
    out = tmp_path / "out"

    def replace_folder():
        shutil.rmtree(out)
        out.write_text("a file now")

    _after_compute(monkeypatch, replace_folder)
    code, captured = _md(["--json", str(out / "r.json")], capsys)
    assert code == 4
    line = _one_error(captured, f"--json {out / 'r.json'} was not written", f"{out} is not a folder")
    assert json.loads(_kept_result(line).read_text())["converged"] is True
    assert out.read_text() == "a file now"


class _FailingStream(io.RawIOBase):
    """Standard output that fails as ``/dev/full`` (ENOSPC) or a closed pipe (EPIPE) does."""

    def __init__(self, error: OSError):
        self.error = error

    def writable(self):
        return True

    def write(self, data):
        raise self.error


def test_a_failing_standard_output_after_the_json_is_written(tmp_path, capsys, monkeypatch):
    target = tmp_path / "r.json"
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(_FailingStream(OSError(errno.ENOSPC, "No space left"))))
    code, captured = _md(["--json", str(target)], capsys)
    assert code == 4
    _one_error(captured, f"{MD}: error: standard output: [Errno 28]")
    assert json.loads(target.read_text())["converged"] is True  # written anyway
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(_FailingStream(BrokenPipeError(errno.EPIPE, "Broken pipe"))))
    with pytest.raises(SystemExit) as exit_:  # the reader went away: 141, as before
        md_cli.main([*MD_ARGV, "--json", str(tmp_path / "r2.json")])
    assert exit_.value.code == 141 and (tmp_path / "r2.json").exists()


@ROOT_ONLY
def test_standard_output_on_a_full_device_in_a_real_process(tmp_path):
    """The interpreter's own last flush must not fail again (it would print 'Exception ignored', exit 120)."""
    full = _device(tmp_path, "full", 7)
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    with open(full, "w") as stdout:
        process = subprocess.run(
            [sys.executable, "-m", "ufm.md", *MD_ARGV, "--json", "r.json"],
            cwd=tmp_path,
            env=env,
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    assert process.returncode == 4, process.stderr
    errors = [line for line in process.stderr.splitlines() if "error:" in line]
    assert errors == [f"{MD}: error: standard output: [Errno 28] No space left on device; the report was not printed"]
    assert "Exception ignored" not in process.stderr and json.loads((tmp_path / "r.json").read_text())


def test_an_ascii_only_standard_output_gets_ascii_stand_ins(tmp_path, capsys, monkeypatch):
    from ufm.solve import main as solve_main

    buffer = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(buffer, encoding="ascii"))
    target = tmp_path / "r.json"
    code = solve_main(["--K", "4", "--n", "5", "--quiet", "--no-hessian", "--json", str(target)])
    sys.stdout.flush()
    report = buffer.getvalue().decode("ascii")
    assert code == 0 and "VERDICT: agrees - all" in report and "lam_Z" in report, report
    assert "Traceback" not in capsys.readouterr().err and json.loads(target.read_text())["verdict"].startswith("agrees")


# experiments: all or nothing, empty --out, run_all's interrupt line


def _three_outputs(args, outputs):
    """An experiment's outputs as md_model writes them: two CSVs and a figure (run with --quick: a full-mode
    run adds its provenance.json)."""
    outputs.csv("md_model.csv", [{"r": float(k), "value": 0.5 * k} for k in range(50)])
    outputs.csv("md_profile.csv", [{"r": float(k)} for k in range(50)])
    fig, ax = _common.figure()
    ax.plot(range(100), [k * k for k in range(100)])
    outputs.figure("md_model", fig)


@ROOT_ONLY
def test_an_experiment_on_a_full_disk_writes_nothing_and_can_be_rerun(tmp_path, capsys, kept):
    with _tmpfs(tmp_path / "small", "64k") as small:
        out = small / "md_model"
        out.mkdir()
        (small / "filler").write_bytes(b"\0" * (64 * 1024 - 4 * 4096))  # room for the CSVs, not the figure
        code = _common.run(_three_outputs, "md_model", "MD model.", ["--quick", "--out", str(out)])
        assert code == 4
        line = _one_error(capsys.readouterr(), f"--out {out} was not written", "[Errno 28]", "the results are kept in")
        assert sorted(p.name for p in _kept_result(line).iterdir()) == [
            "md_model.csv",
            "md_model.png",
            "md_profile.csv",
        ]
        assert list(out.iterdir()) == []  # no CSVs without the figure, no temporaries
        (small / "filler").unlink()
        assert _common.run(_three_outputs, "md_model", "MD model.", ["--quick", "--out", str(out)]) == 0  # not refused
        assert len(list(out.iterdir())) == 3


def test_an_experiment_whose_folder_is_replaced_mid_run(tmp_path, capsys, kept):
    out = tmp_path / "md_model"

    def body(args, outputs):
        _three_outputs(args, outputs)
        out.rmdir()
        out.write_text("a file now")

    assert _common.run(body, "md_model", "MD model.", ["--quick", "--out", str(out)]) == 4
    line = _one_error(capsys.readouterr(), f"--out {out} was not written", "is not a folder")
    assert len(list(_kept_result(line).iterdir())) == 3 and out.read_text() == "a file now"


def test_an_empty_out_is_refused_naming_the_flag(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert _common.run(_three_outputs, "md_model", "MD model.", ["--out", ""]) == 2
    _one_error(capsys.readouterr(), "argument --out: must name a folder, got ''")
    assert run_all.main(["--out", ""]) == 2
    _one_error(capsys.readouterr(), "python -m experiments.run_all: error: argument --out")
    assert list(tmp_path.iterdir()) == []


def test_run_all_interrupt_line_names_the_complete_experiments(tmp_path, capsys, monkeypatch):
    """The interrupt line ends "no partial output written"; under run_all its program name says which
    experiments' outputs are complete (signals cannot be sent in-process: the names are recorded)."""
    names = []

    @contextmanager
    def record(prog):
        names.append(prog)
        yield

    monkeypatch.setattr(_common, "exit_on_interrupt", record)

    class Experiment:
        main = staticmethod(lambda argv: _common.run(lambda args, out: out.csv("a.csv", [{"x": 1}]), "x", "X.", argv))

    monkeypatch.setattr(run_all, "EXPERIMENTS", {"first": Experiment, "second": Experiment, "third": Experiment})
    assert run_all.main(["--out", str(tmp_path)]) == 0
    assert names == [
        "python -m experiments.x",
        "python -m experiments.x (run_all: the outputs of first are complete)",
        "python -m experiments.x (run_all: the outputs of first, second are complete)",
    ]
    assert _common.run_all_note == ""  # reset: a later experiment alone says nothing of run_all
    capsys.readouterr()
