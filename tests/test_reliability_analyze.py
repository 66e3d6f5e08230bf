"""``ufm.analyze`` against hostile files and extreme scales.

Every file is made here and stays tiny on disk and in memory: headers that declare huge shapes, zip
members that declare (or inflate to) gigabytes from a few megabytes of deflate stream, sparse files.
Where a refusal depends on the free memory, ``ufm._memory.free_bytes`` is fixed, so the outcome is
the same on any machine. The scale cases are checked against the float64 truth of the unscaled input.
"""

import io
import json
import struct
import time
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

import ufm
from tests.test_analyze import _brute_force, _imbalanced
from ufm import _io, _memory, last_layer
from ufm.analyze import main

PROG = "python -m ufm.analyze"
GIB = 2**30


def _header(shape, descr="<f8", fortran=False) -> bytes:
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, {"descr": descr, "fortran_order": fortran, "shape": shape})
    return out.getvalue()


def _npy(array) -> bytes:
    out = io.BytesIO()
    np.save(out, array)
    return out.getvalue()


def _layer(K=3, d=4, n=4, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(K), n)
    weight = rng.normal(size=(K, d))
    return weight[labels] + 0.1 * rng.normal(size=(K * n, d)), labels, weight


def _refused(argv, capsys, *needles) -> str:
    """Exit 2 with one error line naming every needle, at once, no traceback, no 'pickle' advice."""
    start = time.perf_counter()
    code = main([*argv, "--quiet", "--no-cache"])
    elapsed = time.perf_counter() - start
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert code == 2 and len(lines) == 1 and lines[0].startswith(f"{PROG}: error: "), err
    assert "Traceback" not in err and "pickle" not in err.lower(), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert elapsed < 3.0, elapsed
    return lines[0]


@pytest.fixture()
def small_memory(monkeypatch):
    """1 GiB free, whatever the machine has."""
    monkeypatch.setattr(_memory, "free_bytes", lambda device=None: GIB)


# --------------------------------------------------------------------------- headers (item 5)


def test_forged_headers_are_refused_from_the_declaration(tmp_path, capsys):
    features, labels, weight = _layer()
    forged = tmp_path / "forged.npz"  # 2.8 KB; its features member declares (5e9, 10) float64 = 373 GiB
    with zipfile.ZipFile(forged, "w") as archive:
        archive.writestr("features.npy", _header((5_000_000_000, 10)) + bytes(2000))
        archive.writestr("labels.npy", _npy(labels))
        archive.writestr("weight.npy", _npy(weight))
    assert forged.stat().st_size < 4000
    tracemalloc.start()
    _refused([str(forged)], capsys, "features", "(5000000000, 10)", "373 GiB", "truncated or forged")
    assert tracemalloc.get_traced_memory()[1] < 16 * 2**20
    tracemalloc.stop()
    for key, array in (("features", features), ("weight", weight)):
        np.save(tmp_path / f"{key}.npy", array)
    (tmp_path / "labels.npy").write_bytes(_header((5_000_000_000,), "<i8") + bytes(64))  # declares 37 GiB
    separate = [f"--{k}={tmp_path / k}.npy" for k in ("features", "labels", "weight")]
    _refused(separate, capsys, "labels", "(5000000000,)", "37.3 GiB", "truncated or forged")
    # the test set too, named by its flag
    np.savez(tmp_path / "layer.npz", features=features, labels=labels, weight=weight)
    _refused([str(tmp_path / "layer.npz"), "--test", str(forged)], capsys, "--test: ", "features", "(5000000000, 10)")


def test_not_npy_and_object_arrays_never_advise_an_unsafe_load(tmp_path, capsys):
    features, labels, weight = _layer()
    rng = np.random.default_rng(1)
    (tmp_path / "random.npy").write_bytes(rng.bytes(3000))
    np.save(tmp_path / "objects.npy", np.array([1, "a"], dtype=object), allow_pickle=True)
    np.save(tmp_path / "weight.npy", weight)
    np.save(tmp_path / "features.npy", features)
    (tmp_path / "huge_header.npy").write_bytes(b"\x93NUMPY\x02\x00" + struct.pack("<I", 20000) + b" " * 20000)
    for bad, key in (("random", "features"), ("objects", "labels"), ("huge_header", "labels")):
        argv = [f"--features={tmp_path / ('random' if key == 'features' else 'features')}.npy"]
        argv += [
            f"--labels={tmp_path / (bad if key == 'labels' else 'features')}.npy",
            f"--weight={tmp_path}/weight.npy",
        ]
        _refused(argv, capsys, f"{key}: ", bad)
    _refused([str(tmp_path / "random.npy")], capsys, "not a zip archive")
    with zipfile.ZipFile(tmp_path / "objects.npz", "w") as archive:
        archive.writestr("features.npy", (tmp_path / "objects.npy").read_bytes())
        archive.writestr("labels.npy", _npy(labels))
        archive.writestr("weight.npy", _npy(weight))
    _refused([str(tmp_path / "objects.npz")], capsys, "features: ", "dtype object", "only numeric arrays")


def _deflate_bomb(path, header: bytes, inflated: int, declared: int, crc: int = 0) -> None:
    """A zip with one member ``features.npy``: ``header`` then zeros, ``inflated`` bytes in all, from ~1 KB of
    deflate stream per MiB (repeated fully-flushed blocks); the central directory declares ``declared``
    uncompressed bytes. Written without inflating anything."""
    mib = 2**20
    first = zlib.compressobj(9, zlib.DEFLATED, -15)
    stream = [first.compress(header + bytes(mib - len(header))) + first.flush(zlib.Z_FULL_FLUSH)]
    block = zlib.compressobj(9, zlib.DEFLATED, -15)
    repeated = block.compress(bytes(mib)) + block.flush(zlib.Z_FULL_FLUSH)
    whole, rest = divmod(inflated - mib, mib)
    stream += [repeated] * whole
    last = zlib.compressobj(9, zlib.DEFLATED, -15)
    stream.append(last.compress(bytes(rest)) + last.flush())
    data = b"".join(stream)
    name = b"features.npy"
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0x21, crc, len(data), declared, len(name), 0)
    central = struct.pack(
        "<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0x21, crc, len(data), declared, len(name), 0, 0, 0, 0, 0, 0
    )
    offset = len(local) + len(name) + len(data)
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central) + len(name), offset, 0)
    with open(path, "wb") as handle:
        handle.write(local + name + data + central + name + end)
    features, labels, weight = _layer(d=2)
    with zipfile.ZipFile(path, "a") as archive:  # the other keys, small and honest
        archive.writestr("labels.npy", _npy(labels))
        archive.writestr("weight.npy", _npy(weight))


@pytest.mark.parametrize("honest", [True, False])
def test_zip_bomb_is_refused_before_inflating(tmp_path, capsys, small_memory, honest):
    """2 MB of deflate inflating to 2 GiB of features: declared honestly (refused by the memory estimate of
    the declared shape against the 1 GiB free) or declaring 4 KB (refused: the header's shape does not fit
    in the declared size, which is all zipfile ever inflates)."""
    inflated = 2**31
    header = _header((2**27, 2))  # 2 GiB of float64
    bomb = tmp_path / "bomb.npz"
    declared = inflated + len(header) if honest else 4096
    crc = 0 if honest else zlib.crc32(header + bytes(declared - len(header)))  # what zipfile checks at 4 KB
    _deflate_bomb(bomb, header, inflated + len(header), declared, crc)
    assert bomb.stat().st_size < 4 * 2**20
    tracemalloc.start()
    if honest:
        _refused([str(bomb)], capsys, "not enough memory", "2 GiB", "features", "bomb.npz")
    else:
        _refused([str(bomb)], capsys, "features", "(134217728, 2)", "truncated or forged")
    assert tracemalloc.get_traced_memory()[1] < 16 * 2**20  # nothing inflated
    tracemalloc.stop()


def _sparse_npy(path, shape, descr) -> None:
    """A .npy file of ``shape`` whose data are a hole (no disk blocks): memory-mappable, all zeros."""
    header = _header(shape, descr)
    with open(path, "wb") as handle:
        handle.write(header)
        handle.truncate(len(header) + int(np.prod(shape)) * np.dtype(descr).itemsize)


def test_narrow_labels_of_a_48_gb_map_are_estimated_not_widened(tmp_path, capsys, small_memory):
    """3e9 x 4 float32 features (48 GB) and int8 labels, both sparse files: the estimate (the 3e9 one-byte
    predictions, a chunk) is made from the shapes before the labels are read, let alone widened."""
    N = 3_000_000_000
    _sparse_npy(tmp_path / "features.npy", (N, 4), "<f4")
    _sparse_npy(tmp_path / "labels.npy", (N,), "|i1")
    np.save(tmp_path / "weight.npy", np.eye(2, 4))
    tracemalloc.start()
    argv = [f"--{k}={tmp_path / k}.npy" for k in ("features", "labels", "weight")]
    _refused(argv, capsys, "not enough memory", "the analysis", "features (3000000000, 4)")
    features = np.load(tmp_path / "features.npy", mmap_mode="r")
    labels = np.load(tmp_path / "labels.npy", mmap_mode="r")
    with pytest.raises(ValueError, match="not enough memory.*N = 3000000000"):
        ufm.analyze(features, labels, np.eye(2, 4))
    assert tracemalloc.get_traced_memory()[1] < 16 * 2**20
    tracemalloc.stop()
    # without the memory limit the labels are checked in chunks, never as int64: a 16 MiB int8 map
    small = np.zeros(2**24, np.int8)
    small[1::2] = 1
    assert last_layer._labels(small, small.size, 2) is small


def _mapped_rss(path) -> int:
    """Resident bytes of the mappings of ``path`` in this process (/proc/self/smaps)."""
    total, inside = 0, False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            fields = line.split()
            if fields and "-" in fields[0] and len(fields) >= 5 and ":" in fields[3]:
                inside = fields[-1] == str(path)
            elif inside and fields[0] == "Rss:":
                total += int(fields[1]) * 1024
    return total


@pytest.mark.parametrize("fortran", [False, True])
def test_memory_mapped_pages_are_released_in_either_order(tmp_path, fortran):
    """A Fortran-ordered map read row-chunk by row-chunk touches a page of every column per chunk: its pages
    are handed back column by column (they were not: 5.1 GB RSS for a 4 GB map), as a C-ordered map's."""
    rng = np.random.default_rng(2)
    K, d, N = 4, 8, 2**19  # 32 MiB of float64
    labels = np.arange(N) % K
    weight = rng.normal(size=(K, d))
    features = np.asarray(weight[labels] + rng.normal(size=(N, d)), order="F" if fortran else "C")
    np.save(tmp_path / "f.npy", features)
    mapped = np.load(tmp_path / "f.npy", mmap_mode="r")
    assert mapped.flags.f_contiguous == fortran and last_layer._Pages(mapped).mm is not None
    out = ufm.analyze(mapped, labels, weight, chunk_size=2**15, spectra=False)
    assert _mapped_rss(tmp_path / "f.npy") < 4 * 2**20  # was the whole 32 MiB (Fortran order), or 14 MiB
    reference = ufm.analyze(features, labels, weight, chunk_size=2**15, spectra=False)
    assert out.measured == reference.measured


# --------------------------------------------------------------------------- the estimate (item 5, 7)


@pytest.mark.parametrize(
    "N,d,K,chunk",
    [(200_000, 10, 2, 200_000), (60_000, 64, 100, 20_000), (3_000, 4, 3_000, None), (3_000, 96, 600, 3_000)],
)
def test_estimate_bounds_the_allocations(N, d, K, chunk):
    """tracemalloc's peak (numpy's allocations; a map's resident pages are the estimate's ``itemsize d`` per
    row) never exceeds :func:`ufm.last_layer.memory_bytes` (``--chunk-size 2e7`` on 1e8 x 10 was estimated
    at 5.3 GiB and peaked at 9.1 GiB)."""
    rng = np.random.default_rng(N)
    labels = np.arange(N) % K
    weight = rng.normal(size=(K, d))
    features = weight[labels] + 0.3 * rng.normal(size=(N, d))
    M = N // 4
    test_labels = labels[:M]
    test = weight[test_labels] + 0.3 * rng.normal(size=(M, d))
    used = min(last_layer.default_chunk_size(d, K) if chunk is None else chunk, N)
    ufm.analyze(features[:K], labels[:K], weight, spectra=False)  # imports done: only the analysis is traced
    tracemalloc.start()
    ufm.analyze(features, labels, weight, chunk_size=chunk, spectra=False, test_features=test, test_labels=test_labels)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak <= last_layer.memory_bytes(N, d, K, used, M, itemsize=0), (peak, N, d, K)


def test_large_k_has_no_k_by_k_matrix_and_equals_the_small_tile_reference(monkeypatch):
    """K = N = 5,000, d = 4 (K = 10,000 took 9 GB, K = 30,000 crashed): tiles of K x K matrices only, peak
    far below one K x K float64 matrix; spectra and prediction skipped up front with a reason."""
    K = 5_000
    rng = np.random.default_rng(3)
    weight = rng.normal(size=(K, 4))
    labels = np.arange(K)
    features = weight + 0.1 * rng.normal(size=(K, 4))
    tracemalloc.start()
    out = ufm.analyze(features, labels, weight, lam_W=1e-3, lam_H=1e-3)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 0.5 * 8 * K * K, peak / 2**20
    assert "K N" in out.spectra["skipped"] and out.predicted == {} and "PREDICTION_MAX_K" in out.not_applicable[0]
    assert out.verdict()["status"] == "no_prediction"
    assert all(v is not None for k, v in out.measured.items() if k != "cdnv") and out.measured["cdnv"] == 0.0
    # the tiled paths (7 rows a tile, QR instead of the thin SVD) against one tile on a small K
    features, labels, weight, bias = _imbalanced(K=40, d=6, counts=tuple(range(3, 43)), scale=1.0)
    whole = ufm.analyze(features, labels, weight, bias, spectra=False)
    monkeypatch.setattr(last_layer, "TILE_BYTES", 8 * 40 * 7)
    monkeypatch.setattr(last_layer, "SVD_ENTRIES", 10)
    tiled = ufm.analyze(features, labels, weight, bias, spectra=False, chunk_size=13)
    for name, value in whole.measured.items():
        assert tiled.measured[name] == pytest.approx(value, rel=1e-12, abs=1e-15), name


def test_spectra_and_prediction_that_do_not_fit_are_refused_up_front(monkeypatch, small_memory):
    features, labels, weight, _ = _imbalanced()

    def no_streaming(*args):
        raise AssertionError("streamed before refusing")

    monkeypatch.setattr(last_layer, "_moments", no_streaming)
    monkeypatch.setattr(_memory, "hvp_bytes", lambda K, N, d, itemsize=8: 2.0 * GIB)
    with pytest.raises(ValueError, match="not enough memory: the Hessian blocks .*spectra=False"):
        ufm.analyze(features, labels, weight, spectra=True)


# --------------------------------------------------------------------------- scales (item 6)


def _scaled_layer():
    features, labels, weight, bias = _imbalanced(K=4, d=6, counts=(30, 70, 10, 50), scale=0.5)
    return features, labels, weight, 0.0 * bias


SCALE_FREE = ("nc1", "nc1_trace", "nc2", "nc3", "cdnv", "ncc_agreement", "ncc_accuracy", "accuracy")
SCALE_FREE += ("w_norm_cv", "h_norm_cv", "w_cos_std", "h_cos_std", "w_cos_shift", "h_cos_shift", "a_residual")


def _truth(features, labels, weight, bias) -> dict:
    """The float64 truth of the unscaled input: the brute force (loops over the definitions), and a_residual
    (not in it) from the analysis of the unscaled input, which test_analyze checks against the brute force."""
    out = _brute_force(features, labels, weight, bias)
    out["a_residual"] = ufm.analyze(features, labels, weight, bias, spectra=False).measured["a_residual"]
    return out


@pytest.mark.parametrize(
    "f_scale,w_scale", [(1e39, 1.0), (1.0, 1e39), (1.0, 1e300), (1e160, 1.0), (1e-200, 1.0), (1e-300, 1e300)]
)
def test_extreme_scales_give_the_float64_truth(f_scale, w_scale):
    """Features or weight multiplied by up to 1e300 or down to 1e-300: the scale-free measurements equal the
    unscaled input's (its float64 truth, checked against the brute force), the norms and a are multiplied,
    p_t/p_n are those of the scaled logits; no NaN, inf or RuntimeWarning."""
    features, labels, weight, bias = _scaled_layer()
    truth = _truth(features, labels, weight, bias)
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # numpy's warnings, as errors
        out = ufm.analyze(features * f_scale, labels, weight * w_scale, bias, spectra=False)
    assert out.undefined == {}
    for name in SCALE_FREE:
        assert out.measured[name] == pytest.approx(truth[name], rel=1e-9, abs=1e-14), name
    assert out.measured["accuracy"] == 1.0  # was 0 at 1e39
    assert out.measured["h_norm"] == pytest.approx(truth["h_norm"] * f_scale, rel=1e-12)  # was 0 at 1e-200
    assert out.measured["w_norm"] == pytest.approx(truth["w_norm"] * w_scale, rel=1e-12)  # was inf at 1e300
    assert out.measured["a"] == pytest.approx(truth["a"] * f_scale * w_scale, rel=1e-9)
    logits = f_scale * w_scale * (weight @ np.array([features[labels == k].mean(0) for k in range(4)]).T)
    with np.errstate(under="ignore", over="ignore"):
        p = np.exp(logits - logits.max(axis=0)) if np.all(np.isfinite(logits)) else (logits == logits.max(0)) * 1.0
    p = p / p.sum(axis=0)
    assert out.measured["p_t"] == pytest.approx(np.mean(np.diag(p)), rel=1e-9, abs=1e-300)


def test_features_near_the_float64_limit(capsys, tmp_path):
    """Entries of 1e308: every sum is scaled, no SVD failure; a value beyond float64 (a) is named undefined."""
    features, labels, weight, bias = _scaled_layer()
    top = features / np.abs(features).max() * 1e308
    truth = _truth(features, labels, weight, bias)
    out = ufm.analyze(top, labels, weight, bias, spectra=False)
    for name in SCALE_FREE:
        assert out.measured[name] == pytest.approx(truth[name], rel=1e-9, abs=1e-14), name
    assert out.measured["a"] is None and "float64 range" in out.undefined["a"]
    np.savez(tmp_path / "top.npz", features=top, labels=labels, weight=weight)
    assert main([str(tmp_path / "top.npz"), "--quiet", "--no-cache", "--spectra", "off"]) == 0
    text = capsys.readouterr().out
    assert "undefined: a: exceeds the float64 range" in text and "nan" not in text and "inf" not in text


@pytest.mark.parametrize("case", ["zero features", "zero weight", "identical means"])
def test_degenerate_inputs_name_what_is_undefined(case, capsys, tmp_path):
    features, labels, weight, bias = _scaled_layer()
    if case == "zero features":
        features = np.zeros_like(features)
    elif case == "zero weight":
        weight = np.zeros_like(weight)
    else:  # class 1 = the samples of class 0 again: exactly the same mean
        keep = labels != 1
        features = np.concatenate([features[keep], features[labels == 0]])
        labels = np.concatenate([labels[keep], np.ones(int(np.sum(labels == 0)), int)])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        out = ufm.analyze(features, labels, weight, bias, spectra=False)
    expected = {
        "zero features": {"nc1", "nc1_trace", "nc2", "nc3", "cdnv", "h_norm_cv", "h_cos_std", "h_cos_shift"},
        "zero weight": {"nc2", "nc3", "w_norm_cv", "w_cos_std", "w_cos_shift", "a_residual"},
        "identical means": {"cdnv"},
    }[case]
    assert expected <= set(out.undefined) and all(out.measured[k] is None for k in out.undefined)
    assert all(v is None or np.isfinite(v) for v in out.measured.values())
    if case == "zero features":
        assert out.measured["h_norm"] == 0.0 and "Sigma_B = 0" in out.undefined["nc1"]
    if case == "identical means":
        assert out.undefined["cdnv"] == "classes 0 and 1 have the same mean (distance 0)"
    np.savez(tmp_path / "layer.npz", features=features, labels=labels, weight=weight, bias=bias)
    assert main([str(tmp_path / "layer.npz"), "--quiet", "--no-cache", "--spectra", "off"]) == 0
    text = capsys.readouterr().out
    assert "nan" not in text.lower() and " inf" not in text and "undefined: cdnv" in text or case == "zero weight"


# --------------------------------------------------------------------------- flags


def test_empty_json_path_is_refused_naming_the_flag(tmp_path, capsys):
    features, labels, weight = _layer()
    np.savez(tmp_path / "layer.npz", features=features, labels=labels, weight=weight)
    _refused([str(tmp_path / "layer.npz"), "--json", ""], capsys, "--json", "file name")


# --------------------------------------------------------------------------- outputs (ufm._io.deliver)


def _one_error(err: str, *needles) -> str:
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and lines[0].startswith(f"{PROG}: error: "), err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.mark.parametrize("case", ["full device", "folder replaced"])
def test_a_json_that_cannot_be_written_exits_4_with_one_line_and_keeps_the_result(case, tmp_path, capsys, monkeypatch):
    """As ufm.solve (tests/test_reliability_files.py): computed, then the --json cannot be written (a device that
    behaves as /dev/full, or its folder replaced by a file while computing): exit 4, one error: line naming
    --json and the path, the JSON kept in the temporary folder, the report printed."""
    import os
    import stat
    import tempfile

    import ufm.analyze as cli

    kept = tmp_path / "kept"
    kept.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(kept))
    features, labels, weight = _layer()
    np.savez(tmp_path / "layer.npz", features=features, labels=labels, weight=weight)
    if case == "full device":
        target = tmp_path / "full"
        try:
            os.mknod(target, 0o666 | stat.S_IFCHR, os.makedev(1, 7))  # the test's own /dev/full
        except PermissionError:
            pytest.skip("os.mknod of a character device needs root (CAP_MKNOD)")
        needles = [f"--json {target}", "No space left on device", "kept in"]
    else:
        folder = tmp_path / "out"
        folder.mkdir()
        target = folder / "r.json"
        analyze = cli.analyze

        def analyze_then_replace(*args, **kwargs):
            result = analyze(*args, **kwargs)
            folder.rmdir()
            folder.write_text("a file now")
            return result

        monkeypatch.setattr(cli, "analyze", analyze_then_replace)
        needles = [f"--json {target} was not written", f"{folder} is not a folder", "kept in"]
    code = main([str(tmp_path / "layer.npz"), "--quiet", "--no-cache", "--spectra", "off", "--json", str(target)])
    captured = capsys.readouterr()
    assert code == _io.EXIT_NOT_WRITTEN == 4
    line = _one_error(captured.err, *needles)
    record = json.loads(Path(line.rsplit("kept in ", 1)[1]).read_text())
    assert record["data"]["K"] == 3 and record["verdict"]["status"] == "no_prediction"
    assert captured.out.splitlines()[-1].startswith("VERDICT: ")  # the report was printed


def test_a_failing_standard_output_exits_4_after_the_json_is_written(tmp_path, capsys, monkeypatch):
    import errno
    import sys

    class Failing(io.RawIOBase):
        def writable(self):
            return True

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    features, labels, weight = _layer()
    np.savez(tmp_path / "layer.npz", features=features, labels=labels, weight=weight)
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(Failing()))
    target = tmp_path / "r.json"
    code = main([str(tmp_path / "layer.npz"), "--quiet", "--no-cache", "--spectra", "off", "--json", str(target)])
    assert code == 4
    _one_error(capsys.readouterr().err, f"{PROG}: error: standard output: [Errno 28]")
    assert json.loads(target.read_text())["data"]["N"] == 12  # written anyway
