"""``ufm.calibration`` at scale: wall time, rows per second and peak resident memory.

``python benchmarks/calibration.py [--quick] [--dir TMP]``

* sizes: N = 100,000 x K = 100 and N = 1,000,000 x K = 1,000 (ImageNet-sized validation logits,
  4 GB of float32); ``--quick``: 20,000 x 100 and 50,000 x 200 (seconds, for a smoke test).
* the logits are written block by block as a float32 ``.npy`` in a temporary folder (never whole in
  memory) and memory-mapped by each measurement (``np.load(..., mmap_mode="r")``); the file was just
  written, so it is read from the page cache. Deleted afterwards.
* operations, each in a child process of its own (so its peak RSS, ``ru_maxrss``, is its own):
  ``bin_statistics`` with the classwise sums (ECE, classwise ECE, NLL, Brier, accuracy in one pass),
  without them (ECE, NLL, Brier), and ``fit_temperature`` (one pass per Newton iteration).
* synthetic data with a known answer: labels drawn from ``softmax(z)`` of Gaussian logits
  ``z = 2 g`` (a calibrated predictor), stored as ``3 z`` (three times overconfident): the fitted
  temperature must come out near 3.

Peak RSS includes the pages of the memory-mapped file that the process has touched (page cache,
reclaimable, but counted by ``ru_maxrss``): up to the file's size. "RSS before" is the resident memory
after the imports, just before the operation.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

from benchmarks._common import machine, print_table  # noqa: E402

SIZES = {"full": [(100_000, 100), (1_000_000, 1_000)], "quick": [(20_000, 100), (50_000, 200)]}
OPERATIONS = ("statistics", "statistics-no-classwise", "fit_temperature")


def _write(folder: str, N: int, K: int, seed: int = 0, block: int = 8192) -> tuple[str, str]:
    """``3 z`` (float32 ``.npy``) with labels drawn from ``softmax(z)``, ``z = 2 g``, block by block."""
    rng = np.random.default_rng(seed)
    logits, labels = os.path.join(folder, f"logits-{N}x{K}.npy"), os.path.join(folder, f"labels-{N}.npy")
    y = np.empty(N, dtype=np.int64)
    with open(logits, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, {"descr": "<f4", "fortran_order": False, "shape": (N, K)})
        for lo in range(0, N, block):
            z = 2.0 * rng.standard_normal((min(block, N - lo), K))
            p = np.exp(z - z.max(axis=1, keepdims=True))
            cdf = np.cumsum(p, axis=1)
            u = rng.random(z.shape[0])[:, None] * cdf[:, -1:]
            y[lo : lo + z.shape[0]] = np.minimum((cdf < u).sum(axis=1), K - 1)
            handle.write(np.ascontiguousarray(3.0 * z, dtype="<f4").tobytes())
    np.save(labels, y)
    return logits, labels


def _rss_gib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30


def child(operation: str, logits_path: str, labels_path: str) -> None:
    """One measurement in this process; prints one JSON line."""
    from ufm import calibration

    logits, labels = np.load(logits_path, mmap_mode="r"), np.load(labels_path)
    before = _rss_gib()
    start = time.perf_counter()
    if operation == "fit_temperature":
        fit = calibration.fit_temperature(logits, labels)
        passes, result = fit.iterations, f"T = {fit.temperature:.4f}, NLL {fit.nll_before:.3f} -> {fit.nll_after:.3f}"
    else:
        stats = calibration.bin_statistics(logits, labels, classwise=operation == "statistics")
        passes = 1
        result = f"ECE {stats.ece:.4f}, NLL {stats.nll:.3f}, Brier {stats.brier:.3f}"
        if operation == "statistics":
            result += f", classwise {stats.classwise_ece:.2e}"
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps({"seconds": seconds, "passes": passes, "before": before, "peak": peak, "result": result}))


def _run_child(operation: str, logits: str, labels: str) -> dict:
    """The JSON line of a child measuring ``operation`` (its stderr goes to ours; a failure raises)."""
    out = subprocess.check_output(
        [sys.executable, os.path.abspath(__file__), "--child", operation, logits, labels],
        text=True,
        cwd=ROOT,
        env={**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")},
    )
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test of a few seconds)")
    parser.add_argument("--dir", default=None, help="folder for the temporary logits (default: system temp)")
    parser.add_argument("--child", nargs=3, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    print(machine())
    rows = []
    folder = tempfile.mkdtemp(prefix="ufm-calibration-bench-", dir=args.dir)
    try:
        for N, K in SIZES["quick" if args.quick else "full"]:
            start = time.perf_counter()
            logits, labels = _write(folder, N, K)
            print(
                f"wrote {os.path.getsize(logits) / 1e9:.2f} GB of float32 logits in {time.perf_counter() - start:.1f} s"
            )
            for operation in OPERATIONS:
                out = _run_child(operation, logits, labels)
                rate = N * out["passes"] / out["seconds"]
                size = f"{N:,} x {K:,}"
                rows.append(
                    [size, operation, out["seconds"], out["passes"], rate, out["before"], out["peak"], out["result"]]
                )
            os.remove(logits)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    header = ["N x K", "operation", "seconds", "passes", "rows/s", "RSS before GiB", "peak RSS GiB", "result"]
    print_table(header, rows)


if __name__ == "__main__":
    main()
