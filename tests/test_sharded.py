"""ufm.sharded: sharded features on a Dask cluster of 2 worker processes give the single-process tracker's
result; a worker killed mid-run changes nothing; bad shards are refused by name before any task; the
command line writes its JSON atomically and never clobbers.

One LocalCluster (2 processes, 1 thread each) serves the whole module: starting one costs seconds.
Tolerance: the merge tree adds the shards' sums in another order than one tracker fed every sample, so
the float64 metrics agree to rounding: 1e-11 relative (observed: at most 4e-13 over 6 seeds), the NC4 and calibration
counts exactly.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests._hostile import check_contract, hostile
from tests._signals import sigint_default
from ufm.calibration import bin_statistics, logits_from_features
from ufm.sharded import ShardStatistics, analyze_shards, main
from ufm.tracker import CollapseTracker

dask = pytest.importorskip("dask", reason="ufm.sharded needs the 'dask' extra (dask[distributed])")
distributed = pytest.importorskip("distributed", reason="ufm.sharded needs the 'dask' extra (dask[distributed])")
da = pytest.importorskip("dask.array", reason="dask.array needs numpy (installed with the 'dask' extra)")

K, D = 4, 6
SIZES = (70, 55, 90, 1, 64, 80)  # six shards, one of a single row
RTOL = 1e-11
PROG = "python -m ufm.sharded"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def client():
    # a task whose worker dies twice is given up (KilledWorker); one death is retried
    with dask.config.set({"distributed.scheduler.allowed-failures": 2}):
        cluster = distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", silence_logs=40
        )
    client = distributed.Client(cluster, set_as_default=False)
    yield client
    client.close()
    cluster.close()


def _data(seed=0):
    rng = np.random.default_rng(seed)
    centres = 3.0 * rng.standard_normal((K, D)) + 5.0
    labels = [rng.integers(0, K, n) for n in SIZES]
    labels[0][:K] = np.arange(K)
    features = [centres[y] + rng.standard_normal((y.size, D)) for y in labels]
    features[2] = features[2].astype(np.float32)  # any real dtype, accumulated in float64
    return features, labels, rng.standard_normal((K, D)), rng.standard_normal(K)


def _write(folder: Path, features, labels) -> tuple[str, str]:
    for i, (X, y) in enumerate(zip(features, labels, strict=True)):
        np.save(folder / f"features-{i}.npy", X)
        np.save(folder / f"labels-{i}.npy", y)
    return str(folder / "features-*.npy"), str(folder / "labels-*.npy")


def _reference(features, labels, weight, bias) -> dict:
    """One tracker fed every sample in this process (and the calibration of all the logits)."""
    tracker = CollapseTracker(K, D)
    for X, y in zip(features, labels, strict=True):
        tracker.update(X, y)
    ncc = tracker.ncc_pass(weight, bias)
    for X, y in zip(features, labels, strict=True):
        ncc.update(X, y)
    metrics = tracker.result(weight, bias, ncc=ncc).metrics
    logits = logits_from_features(np.concatenate([X.astype(np.float64) for X in features]), weight, bias)
    bins = bin_statistics(logits, np.concatenate(labels))
    return metrics | {"ece": bins.ece, "classwise_ece": bins.classwise_ece, "nll": bins.nll, "brier": bins.brier}


def _assert_same(result, reference) -> float:
    """Every metric equal to rounding (RTOL); returns the largest relative difference."""
    metrics = result.metrics
    assert metrics.keys() == reference.keys()
    worst = 0.0
    for name, value in reference.items():
        np.testing.assert_allclose(metrics[name], value, rtol=RTOL, atol=1e-14, err_msg=name)
        if value:
            worst = max(worst, abs(metrics[name] - value) / abs(value))
    return worst


def test_two_worker_processes_give_the_single_process_result(client, tmp_path):
    features, labels, weight, bias = _data()
    reference = _reference(features, labels, weight, bias)
    result = analyze_shards(_write(tmp_path, features, labels), num_classes=K, weight=weight, bias=bias, client=client)
    assert result.num_shards == len(SIZES) and result.collapse.num_samples == sum(SIZES)
    assert _assert_same(result, reference) < RTOL
    for name in ("ncc_accuracy", "ncc_agreement", "accuracy"):  # counts: exact
        assert result.metrics[name] == reference[name]
    assert result.calibration.n == sum(SIZES)
    # the same shards as a list of pairs, and as dask arrays (each row block a shard): the same numbers
    pairs = [(tmp_path / f"features-{i}.npy", tmp_path / f"labels-{i}.npy") for i in range(len(SIZES))]
    _assert_same(analyze_shards(pairs, num_classes=K, weight=weight, bias=bias, client=client), reference)
    X = da.from_array(np.concatenate(features).astype(np.float64), chunks=(50, 3))
    y = da.from_array(np.concatenate(labels), chunks=100)
    arrays = analyze_shards((X, y), num_classes=K, weight=weight, bias=bias, client=client)
    assert arrays.num_shards == 8  # 360 rows in blocks of 50
    _assert_same(arrays, reference)


def test_partial_statistics_merge_exactly_and_pickle_bit_for_bit():
    import pickle

    features, labels, _, _ = _data(1)
    parts = [ShardStatistics(CollapseTracker(K, D).update(X, y)) for X, y in zip(features, labels, strict=True)]
    copy = pickle.loads(pickle.dumps(parts[0]))
    assert np.array_equal(copy.tracker.gram, parts[0].tracker.gram)
    gram = parts[0].tracker.gram.copy()
    total = parts[0]
    for part in parts[1:]:
        total = total + part
    assert np.array_equal(parts[0].tracker.gram, gram)  # inputs unchanged: a merge task can run again
    assert total.shards == len(SIZES) and total.tracker.num_samples == sum(SIZES)
    with pytest.raises(ValueError, match="other must be a ShardStatistics"):
        total.merge(parts[0].tracker)


def _block_or_die(block, marker):
    """The first task to get here (of any process) kills its own worker process; the retry returns the block."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return block
    os._exit(1)


def test_a_worker_killed_mid_run_is_retried_and_the_result_is_unchanged(client, tmp_path):
    features, labels, weight, bias = _data(2)
    reference = _reference(features, labels, weight, bias)
    marker = str(tmp_path / "died")
    X = da.from_array(np.concatenate(features).astype(np.float64), chunks=(60, D))
    X = X.map_blocks(_block_or_die, marker, dtype=X.dtype, meta=np.empty((0, 0)))  # meta: not called here
    y = da.from_array(np.concatenate(labels), chunks=60)
    result = analyze_shards((X, y), num_classes=K, weight=weight, bias=bias, client=client)
    assert os.path.exists(marker)  # a worker process did die
    _assert_same(result, reference)


def _refused(shards, *needles, **kwargs):
    start = time.perf_counter()
    with pytest.raises(ValueError) as error:
        analyze_shards(shards, **({"num_classes": K} | kwargs))
    message = str(error.value)
    assert "\n" not in message and time.perf_counter() - start < 2.0, message
    for needle in needles:
        assert needle in message, (needle, message)
    return message


def test_bad_shards_are_refused_by_name_before_any_task(client, tmp_path):
    features, labels, weight, _ = _data(3)
    pattern = _write(tmp_path, features, labels)
    _refused((str(tmp_path / "none-*.npy"), pattern[1]), "shards", "matches no file", client=client)
    _refused([], "shards", "at least one", client=client)
    _refused("features.npy", "shards must be a pair", client=client)
    _refused((pattern[0], str(tmp_path / "labels-[0-2].npy")), "shards", "6 files", "3", client=client)
    np.save(tmp_path / "features-9.npy", np.zeros((3, D + 1)))
    np.save(tmp_path / "labels-9.npy", np.zeros(3, np.int64))
    _refused(pattern, "shards", "features-9.npy", f"d = {D + 1}", f"d = {D}", client=client)
    np.save(tmp_path / "features-9.npy", np.zeros((3, D)))
    np.save(tmp_path / "labels-9.npy", np.array([0, 1, 2], dtype=object), allow_pickle=True)
    _refused(pattern, "shards", "labels-9.npy", "Python objects", client=client)
    header = np.lib.format.header_data_from_array_1_0(np.zeros((1, D)))
    with open(tmp_path / "labels-9.npy", "wb") as handle:  # a forged header: 10^12 rows in a few bytes
        np.lib.format.write_array_header_1_0(handle, header | {"shape": (10**12,), "descr": "<i8"})
        handle.write(b"\0" * 24)
    _refused(pattern, "shards", "labels-9.npy", "truncated or forged", client=client)
    np.save(tmp_path / "labels-9.npy", np.array([0, 1, K]))  # out of range: seen by the task
    with pytest.raises(ValueError, match=r"shards: .*features-9.npy .*labels must be in \[0, K\)"):
        analyze_shards(pattern, num_classes=K, client=client)
    huge = tmp_path / "huge"
    huge.mkdir()
    np.save(huge / "f.npy", np.zeros((1, 300_000), np.float32))  # a d x d Gram of 720 GB
    np.save(huge / "l.npy", np.zeros(1, np.int64))
    _refused([(huge / "f.npy", huge / "l.npy")], "shards", "d = 300000", "GiB", client=client)
    _refused(pattern, "num_classes", num_classes=1, client=client)
    _refused(pattern, "weight", weight=weight[:, :2], client=client)
    _refused(pattern, "client", client=object())
    _refused(pattern, "client", client=client, address="tcp://127.0.0.1:8786")


@pytest.fixture(scope="module")
def two_shards(tmp_path_factory):
    features, labels, _, _ = _data(4)
    return _write(tmp_path_factory.mktemp("two-shards"), features[:2], labels[:2])


@settings(max_examples=12)
@given(
    num_classes=st.one_of(st.just(K), hostile),
    n_bins=st.one_of(st.just(15), hostile),
    weight=st.one_of(st.just(np.eye(K, D)), hostile),
)
def test_hostile_arguments_keep_the_contract(client, two_shards, num_classes, n_bins, weight):
    def call():
        return analyze_shards(two_shards, num_classes=num_classes, n_bins=n_bins, weight=weight, client=client).metrics

    check_contract(call, ["num_classes", "n_bins", "weight", "shards"])


def _sleepy(block):
    time.sleep(2.0)
    return block


def test_keyboard_interrupt_cancels_the_futures(client):
    features, labels, _, _ = _data(5)
    X = da.from_array(np.concatenate(features), chunks=(200, D)).map_blocks(_sleepy, meta=np.empty((0, 0)))
    y = da.from_array(np.concatenate(labels), chunks=200)
    scheduler = client.cluster.scheduler
    pending = []

    def interrupt():
        pending.append(len(scheduler.tasks))
        os.kill(os.getpid(), signal.SIGINT)

    # Python's own SIGINT handler, even where this suite runs with SIGINT ignored (a shell's background job)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(0.5, interrupt)
    try:
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            analyze_shards((X, y), num_classes=K, client=client)
        timer.join()
    finally:
        signal.signal(signal.SIGINT, previous)
    assert pending[0] > 0  # interrupted while the tasks ran
    deadline = time.monotonic() + 10.0
    while scheduler.tasks and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not scheduler.tasks, list(scheduler.tasks)[:3]


def test_cli_writes_json_atomically_and_never_clobbers(client, tmp_path, capsys):
    features, labels, weight, bias = _data(6)
    shards = tmp_path / "shards"
    shards.mkdir()
    features_glob, labels_glob = _write(shards, features, labels)
    np.save(tmp_path / "W.npy", weight)
    np.save(tmp_path / "b.npy", bias)
    out = tmp_path / "out" / "result.json"
    argv = [features_glob, labels_glob, "--classes", str(K), "--weight", str(tmp_path / "W.npy")]
    argv += ["--bias", str(tmp_path / "b.npy"), "--address", client.cluster.scheduler_address, "--json", str(out)]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert f"wrote {out}" in captured.err and "nc1 " in captured.out and "ece " in captured.out
    record = json.loads(out.read_text())
    reference = _reference(features, labels, weight, bias)
    assert record["num_shards"] == len(SIZES) and record["num_samples"] == sum(SIZES)
    for name, value in reference.items():
        np.testing.assert_allclose(record["metrics"][name], value, rtol=RTOL, atol=1e-14, err_msg=name)
    assert "ece" in record["sources"] and record["inputs"]["features"] == features_glob
    assert sorted(p.name for p in out.parent.iterdir()) == ["result.json"]  # no temporary file left
    before = out.read_bytes()
    start = time.perf_counter()
    assert main(argv) == 2  # refused before connecting or computing
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith(f"{PROG}: error: --json") and "--force" in errors[0]
    assert time.perf_counter() - start < 2.0 and out.read_bytes() == before
    assert main([*argv, "--force"]) == 0
    assert json.loads(out.read_text())["metrics"] == record["metrics"]
    capsys.readouterr()
    for bad, needle in (
        ([features_glob, str(shards / "x-*.npy"), "--classes", str(K)], "matches no file"),
        ([features_glob, labels_glob, "--classes", "1"], "--classes"),
        ([features_glob, labels_glob, "--classes", str(K), "--bias", str(tmp_path / "b.npy")], "--bias needs"),
        ([features_glob, labels_glob, "--classes", str(K), "--weight", str(tmp_path / "missing.npy")], "--weight"),
    ):
        assert main(bad) == 2
        errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
        assert len(errors) == 1 and needle in errors[0], errors


def test_without_dask_the_error_names_the_extra(two_shards, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed now raises ImportError
    with pytest.raises(ImportError, match=r"'dask' extra: pip install 'ufm-collapse\[dask\]'"):
        analyze_shards(two_shards, num_classes=K)
    assert main([*two_shards, "--classes", str(K)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "'dask' extra" in errors[0], errors


def test_cli_interrupt_ends_in_one_line_and_writes_nothing(two_shards, tmp_path):
    """SIGINT while the local cluster starts: exit 130, one line (no warning of its processes), no file."""
    out = tmp_path / "result.json"
    command = [sys.executable, "-m", "ufm.sharded", *two_shards, "--classes", str(K), "--workers", "1"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = sigint_default([*command, "--json", str(out)])  # SIGINT at its default even in a background job
    process = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, env=env)
    first = process.stderr.readline()  # printed just before the cluster starts
    assert first.startswith("analysing "), first
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert err.splitlines() == [f"{PROG}: interrupted by SIGINT (Ctrl-C); stopped, no partial output written"], err
    assert not out.exists() and not list(tmp_path.iterdir())
