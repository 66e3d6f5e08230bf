"""Output files: checked before computing, atomic, never clobbered, not even by concurrent writers."""

import csv
import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from ufm import _io

IO_SOURCE = Path(_io.__file__).resolve()

#: a writer process that loads ufm/_io.py alone (standard library only: no JAX start-up), waits
#: for the start signal, then writes its own payload to the shared path
WRITER = """
import importlib.util, os, sys, time
spec = importlib.util.spec_from_file_location("io_under_test", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
path, go, who, overwrite = sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5] == "1"
while not os.path.exists(go):
    time.sleep(0.001)
written = module.write_json(path, {"writer": int(who), "payload": list(range(2000))}, overwrite=overwrite)
print(written)
"""


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def _writers_in_processes(tmp_path: Path, count: int, overwrite: bool) -> list[str]:
    target, go = tmp_path / "same.json", tmp_path / "go"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    processes = [
        subprocess.Popen(
            [sys.executable, str(script), str(IO_SOURCE), str(target), str(go), str(k), "1" if overwrite else "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(count)
    ]
    time.sleep(0.3)  # let every process reach its wait loop
    go.write_text("")
    outputs = [process.communicate(timeout=60) for process in processes]
    assert all(process.returncode == 0 for process in processes), outputs
    go.unlink()
    script.unlink()
    return [out.strip() for out, _ in outputs]


def test_eight_concurrent_processes_lose_no_result(tmp_path):
    """8 processes write to one path at the same moment: 8 files, each writer's result whole in one."""
    written = _writers_in_processes(tmp_path, 8, overwrite=False)
    assert len(set(written)) == 8, written  # every writer got its own name
    files = sorted(p for p in tmp_path.iterdir())
    assert {str(p) for p in files} == set(written)
    writers = sorted(json.loads(p.read_text())["writer"] for p in files)
    assert writers == list(range(8))  # 0 lost results
    assert all(json.loads(p.read_text())["payload"] == list(range(2000)) for p in files)
    assert (tmp_path / "same.json").exists() and _leftovers(tmp_path) == []
    assert {p.name for p in files} == {"same.json"} | {f"same.{k}.json" for k in range(1, 8)}


def test_eight_concurrent_processes_with_overwrite_leave_one_whole_file(tmp_path):
    _writers_in_processes(tmp_path, 8, overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["same.json"]
    record = json.loads((tmp_path / "same.json").read_text())  # whole: parses, full payload
    assert record["writer"] in range(8) and record["payload"] == list(range(2000))


def test_eight_concurrent_threads_lose_no_result(tmp_path, capsys):
    target = tmp_path / "r.json"
    barrier = threading.Barrier(8)
    written = []

    def write(k):
        barrier.wait()
        written.append(_io.write_json(target, {"writer": k}))

    threads = [threading.Thread(target=write, args=(k,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(json.loads(Path(p).read_text())["writer"] for p in written) == list(range(8))
    assert len(set(written)) == 8 and _leftovers(tmp_path) == []
    assert capsys.readouterr().err.count("warning: ") == 7  # each loser says where its result went


def test_a_file_created_during_the_computation_is_kept(tmp_path, capsys):
    target = _io.check_writable(tmp_path / "r.json", overwrite=False)
    target.write_text("someone else's")  # appears while "computing"
    written = _io.write_json(target, {"mine": 1})
    assert target.read_text() == "someone else's"
    assert written == tmp_path / "r.1.json" and json.loads(written.read_text()) == {"mine": 1}
    err = capsys.readouterr().err
    assert "r.1.json" in err and err.count("\n") == 1


def test_overwrite_replaces(tmp_path):
    target = tmp_path / "r.json"
    target.write_text("old")
    assert _io.write_json(target, {"new": 1}, overwrite=True) == target
    assert json.loads(target.read_text()) == {"new": 1} and len(list(tmp_path.iterdir())) == 1


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o027, 0o002])
def test_files_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        path = _io.write_json(tmp_path / "r.json", {"a": 1})
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_failing_writer_leaves_nothing(tmp_path):
    def write(handle):
        handle.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _io.write_atomic(tmp_path / "r.json", write)
    assert list(tmp_path.iterdir()) == []


def _bad_locations(tmp_path):
    (tmp_path / "file").write_text("x")
    (tmp_path / "exists.json").write_text("x")
    return [
        ("/proc/self/x.json", PermissionError, "output: cannot write in /proc/self"),
        ("", ValueError, "output must be a file name"),
        ("   ", ValueError, "must be a file name"),
        (str(tmp_path), IsADirectoryError, "is a directory"),
        (str(tmp_path / "file" / "r.json"), NotADirectoryError, "is a file, not a folder"),
        (str(tmp_path / "file" / "sub" / "r.json"), PermissionError, "cannot create the folder"),
        (str(tmp_path / "exists.json"), FileExistsError, "already exists; pass --force"),
    ]


def test_bad_locations_are_refused_in_one_line(tmp_path):
    for path, kind, needle in _bad_locations(tmp_path):
        with pytest.raises(kind) as error:
            _io.check_writable(path, overwrite=False)
        assert needle in str(error.value) and "\n" not in str(error.value), path
    assert _io.check_writable(tmp_path / "exists.json", overwrite=True) == tmp_path / "exists.json"
    assert _leftovers(tmp_path) == []  # the probe files are gone


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder_is_refused(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o500)
    try:
        with pytest.raises(PermissionError, match="cannot write in"):
            _io.check_writable(folder / "r.json", overwrite=False)
    finally:
        folder.chmod(0o700)


def test_missing_folders_are_created(tmp_path):
    assert _io.check_writable(tmp_path / "a" / "b" / "r.csv", overwrite=False).parent.is_dir()


@pytest.mark.parametrize(
    "name,k,expected", [("r.json", 1, "r.1.json"), ("r.tar.gz", 2, "r.tar.2.gz"), ("README", 3, "README.3")]
)
def test_sibling_names(name, k, expected):
    assert _io.sibling(Path("/x") / name, k) == Path("/x") / expected


def test_clean_normalises_negative_zero_and_non_finite():
    data = {
        "a": -0.0,
        "b": [np.float64(-0.0), np.float32(0.5), (float("nan"), float("-inf"))],
        "c": 3,
        "d": True,
        "e": "-0.0",
        "f": None,
    }
    assert json.loads(_io.json_bytes(data)) == {
        "a": 0.0,
        "b": [0.0, 0.5, [None, None]],
        "c": 3,
        "d": True,
        "e": "-0.0",
        "f": None,
    }
    assert b"-0" not in _io.json_bytes({k: v for k, v in data.items() if k != "e"})  # 0.0 == -0.0: check bytes
    cleaned = _io.clean(data)
    assert str(cleaned["a"]) == "0.0" and cleaned["c"] == 3 and cleaned["d"] is True
    assert np.isnan(cleaned["b"][2][0])  # kept outside JSON (CSV writes nan)


def test_csv_bytes_round_trip():
    rows = [{"x": -0.0, "y": 1.5, "name": "a,b"}, {"x": 2.0, "y": -3.0, "name": "c"}]
    text = _io.csv_bytes(rows, lineterminator="\n").decode()
    back = list(csv.DictReader(io.StringIO(text)))
    assert back == [{"x": "0.0", "y": "1.5", "name": "a,b"}, {"x": "2.0", "y": "-3.0", "name": "c"}]


def test_fifos_are_written_into_without_force_and_other_special_files_refused(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert _io.check_writable(fifo, overwrite=False) == fifo  # nothing would be replaced
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    with pytest.raises(FileExistsError, match="a symbolic link to the missing"):
        _io.check_writable(tmp_path / "link", overwrite=False)
    assert _io.check_writable(tmp_path / "link", overwrite=True) == tmp_path / "link"
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    assert _io.write_json(fifo, {"a": 1}, overwrite=True) == fifo
    reader.join(timeout=10)
    assert json.loads(received[0]) == {"a": 1} and fifo.is_fifo() and _leftovers(tmp_path) == []


def test_temporary_names_fit_the_name_limit(tmp_path):
    path = tmp_path / ("r" * (os.pathconf(tmp_path, "PC_NAME_MAX") - 5) + ".json")
    assert _io.write_json(_io.check_writable(path, overwrite=False), {"a": 1}) == path
    with pytest.raises(ValueError, match=r"^--json: the name r+\.\.\. is 300 bytes long"):
        _io.check_writable(tmp_path / ("r" * 300), overwrite=False, what="--json")


def test_write_all_is_all_or_nothing_and_keeps_the_results(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "kept"))
    (tmp_path / "kept").mkdir()
    failed = []

    def third(handle):
        if not failed:  # the first time: the disk is full; once more, into the temporary folder: fine
            failed.append(1)
            raise OSError(28, "No space left on device")
        handle.write(b"c")

    out = tmp_path / "out"
    with pytest.raises(_io.NotWrittenError) as error:
        _io.write_all({out / "a.csv": b"a", out / "b.csv": b"b", out / "c.png": third}, what="--out")
    message = str(error.value)
    assert message.startswith(f"--out {out} was not written (c.png: [Errno 28] No space left on device)")
    assert list(out.iterdir()) == [] and "\n" not in message
    assert sorted(p.read_text() for p in error.value.kept.iterdir()) == ["a", "b", "c"]
    assert message.endswith(f"the results are kept in {error.value.kept}")


def test_encodable_gives_ascii_stand_ins():
    ascii_stream = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    assert _io.encodable("a · b — λ_Z ≥ é ∂", ascii_stream) == "a . b - lam_Z >= e ?"
    assert _io.encodable("a · b", io.TextIOWrapper(io.BytesIO(), encoding="utf-8")) == "a · b"
