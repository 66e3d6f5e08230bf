"""``ufm.analyze`` at CIFAR-100 and ImageNet sizes: wall time and peak resident memory.

``python benchmarks/analyze.py [--skip-imagenet] [--dir TMP]``

* CIFAR-100 size: N = 50,000 balanced, d = 512, K = 100, float32 features in memory;
  ``ufm.analyze(...)`` called from Python (target < 10 s).
* ImageNet size: N = 1,281,167 (class counts drawn in [732, 1300] like ImageNet-1k's), d = 512,
  K = 1,000; float32 features written to a temporary ``.npy`` (2.6 GB) and analysed by the command
  line, ``python -m ufm.analyze --features f.npy ...``, which memory-maps them (target < 2 min,
  peak RSS < 2 GB). The file is deleted afterwards. It was just written, so it is read from the
  page cache (a cold disk adds its read time).

Each case runs in a child process of its own, so its peak RSS (``ru_maxrss``, JAX and numpy
included) is its own. Features are synthetic: class means plus Gaussian noise.
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

os.environ.setdefault("JAX_PLATFORMS", "cpu")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

from benchmarks._common import machine, print_table  # noqa: E402

SIZES = {"cifar100": (50_000, 512, 100), "imagenet": (1_281_167, 512, 1_000)}


def _counts(N: int, K: int, rng) -> np.ndarray:
    if N % K == 0:
        return np.full(K, N // K)
    counts = rng.integers(732, 1301, size=K)
    while counts.sum() != N:  # nudge random classes by one inside [732, 1300] until the total is N
        k = rng.integers(K)
        step = 1 if counts.sum() < N else -1
        if 732 <= counts[k] + step <= 1300:
            counts[k] += step
    return counts


def _synthetic(N, d, K, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(K), _counts(N, K, rng)))
    centres = rng.normal(size=(K, d)).astype(np.float32)
    weight = centres + 0.1 * rng.normal(size=(K, d))
    bias = 0.01 * rng.normal(size=K)
    return rng, labels, centres, weight, bias


def _write_features(path, labels, centres, rng, block=65_536):
    """Write ``(N, d)`` float32 features block by block (never the whole array in memory)."""
    N, d = labels.size, centres.shape[1]
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, {"descr": "<f4", "fortran_order": False, "shape": (N, d)})
        for lo in range(0, N, block):
            y = labels[lo : lo + block]
            rows = centres[y] + 0.5 * rng.standard_normal((y.size, d), dtype=np.float32)
            handle.write(np.ascontiguousarray(rows, dtype="<f4").tobytes())


def child(case: str, folder: str) -> None:
    """One measurement in this process; prints one JSON line."""
    N, d, K = SIZES[case]
    rng, labels, centres, weight, bias = _synthetic(N, d, K)
    import jax

    jax.config.update("jax_enable_x64", True)
    import ufm

    if case == "cifar100":
        features = centres[labels] + 0.5 * rng.standard_normal((N, d), dtype=np.float32)
        ufm.analyze(features[:1000], labels[:1000] % 2, weight[:2], bias[:2], spectra=False)  # warm-up
        start = time.perf_counter()
        result = ufm.analyze(features, labels, weight, bias, loss="ce", lam_W=5e-4, lam_H=5e-4, lam_b=5e-4)
        seconds = time.perf_counter() - start
        nc1, accuracy = result.measured["nc1"], result.measured["accuracy"]
    else:
        from ufm.analyze import main

        paths = {key: os.path.join(folder, f"{key}.npy") for key in ("labels", "weight", "bias")}
        for key, array in zip(paths, (labels, weight, bias), strict=True):
            np.save(paths[key], array)
        out = os.path.join(folder, "imagenet.json")
        argv = (
            ["--features", os.path.join(folder, "features.npy")]
            + [f"--{key}={path}" for key, path in paths.items()]
            + ["--json", out, "--force", "--quiet", "--no-cache"]
        )
        del labels, weight, bias
        start = time.perf_counter()
        code = main(argv)
        seconds = time.perf_counter() - start
        if code != 0:
            raise SystemExit(f"ufm.analyze exited with {code}")
        with open(out) as handle:
            measured = json.load(handle)["measured"]
        nc1, accuracy = measured["nc1"], measured["accuracy"]
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps({"seconds": seconds, "rss_gib": rss, "nc1": nc1, "accuracy": accuracy}))


def _run_child(case: str, folder: str) -> dict:
    done = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child", case, "--dir", folder],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if done.returncode != 0:
        raise SystemExit(f"{case} child failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-imagenet", action="store_true", help="only the CIFAR-100-sized case")
    parser.add_argument("--dir", default=None, help="folder for the temporary 2.6 GB file (default: system temp)")
    parser.add_argument("--child", choices=tuple(SIZES), default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.dir)
        return
    print(machine())
    rows = []
    result = _run_child("cifar100", "")
    rows.append(
        [
            "CIFAR-100 (in memory, library)",
            "50,000 x 512, K = 100",
            result["seconds"],
            "< 10",
            result["rss_gib"],
            "-",
            result["nc1"],
        ]
    )
    if not args.skip_imagenet:
        folder = tempfile.mkdtemp(prefix="ufm-analyze-bench-", dir=args.dir)
        try:
            N, d, K = SIZES["imagenet"]
            rng, labels, centres, _, _ = _synthetic(N, d, K)
            start = time.perf_counter()
            _write_features(os.path.join(folder, "features.npy"), labels, centres, rng)
            written = time.perf_counter() - start
            size = os.path.getsize(os.path.join(folder, "features.npy")) / 1e9
            print(f"wrote {size:.2f} GB of float32 features in {written:.1f} s")
            del labels, centres
            result = _run_child("imagenet", folder)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        rows.append(
            [
                "ImageNet (memory-mapped .npy, CLI)",
                "1,281,167 x 512, K = 1,000",
                result["seconds"],
                "< 120",
                result["rss_gib"],
                "< 2",
                result["nc1"],
            ]
        )
    print_table(["case", "size", "seconds", "target s", "peak RSS GiB", "target GiB", "nc1"], rows)


if __name__ == "__main__":
    main()
