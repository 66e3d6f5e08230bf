"""``ufm.analyze`` at CIFAR-100 and ImageNet sizes: wall time and peak resident memory.

``python benchmarks/analyze.py [--skip-imagenet] [--dir TMP]``

* CIFAR-100 size: N = 50,000 balanced, d = 512, K = 100, float32 features in memory;
  ``ufm.analyze(...)`` called from Python (target < 10 s).
* ImageNet size: N = 1,281,167 (class counts drawn in [732, 1300] like ImageNet-1k's), d = 512,
  K = 1,000; float32 features written to a temporary ``.npy`` (2.6 GB) and analysed by the command
  line, ``python -m ufm.analyze --features f.npy ...``, which memory-maps them (target < 2 min,
  peak RSS < 2 GB). The file is deleted afterwards. It was just written, so it is read from the
  page cache (a cold disk adds its read time).

* Large K (``--large-k``): K = 50,257 (GPT-2's vocabulary), d = 768, memory-mapped float32 and float16
  ``.npy`` through the command line (target: N = 10^7 under 4 GB peak RSS). Measured at
  ``--large-k-n`` samples (default 65,536; the file is written, analysed and deleted); the time of the
  streaming passes (``_moments``, linear in N) and of the pairwise class statistics (``_metrics``,
  O(K^2 d), independent of N) are reported apart, and the time at N = 10^7 is **extrapolated** from
  them (labelled so in the table); peak RSS does not grow with N beyond the N one-byte-or-two
  predictions (added to the extrapolation).

The floor (``--skip-floor`` leaves it out): a plain numpy single pass over the same ImageNet-size file in
the same kind of child process, alternating with the project's runs (``--repeats`` project runs, each
between two floor runs: the load of a shared machine changes between runs; every run is printed with its
wall and CPU seconds and the load average, and the fastest of each kind are compared): per-class sums by a
sparse indicator product, the float64 Gram ``X^T X`` of 65,536-row chunks, NC1 from the two (the Gram
minus ``n_k m_k m_k^T``, which loses digits near collapse; the project centres every row). The ratio project /
floor is printed (target <= 1.2), and the machine line.

Sharded on Dask (``--dask-only`` runs only this; left out without the 'dask' extra): CIFAR-100 size split
into :data:`SHARDS` float32 ``.npy`` shards, analysed by ``ufm.sharded.analyze_shards`` on a local cluster of 2
worker processes (one thread each), once with the cluster started by the call (``workers=2``) and once on a
cluster already running (the analysis alone), against the single-process computation in the same child: one
``CollapseTracker`` fed every shard in order, its NC4 pass, and the calibration of all the logits. Every
metric is compared: the largest relative difference is printed, with the verdict at :data:`SHARDED_RTOL`
(the merge tree sums in another order: float64 rounding) and the counts (NCC agreement, accuracies) exact.

NC1 near collapse: N = 200,000, d = 64, K = 10, features at NC1 ~ 1e-6 (class means offset from the origin,
as post-ReLU features are), memory-mapped float32 ``.npy`` through the command line, against an in-memory
float64 two-pass computation (class means, then the centred rows' scatter; the pseudo-inverse with the
cutoff of :func:`ufm.metrics.nc1`): target relative difference <= 1e-9. The floor's single-pass NC1 of the
same data is printed beside it.

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

SIZES = {
    "cifar100": (50_000, 512, 100),
    "imagenet": (1_281_167, 512, 1_000),
    "largek": (65_536, 768, 50_257),
    "floor": (1_281_167, 512, 1_000),
    "collapse": (200_000, 64, 10),
    "sharded": (50_000, 512, 100),
}
#: shards of the Dask case, and the relative agreement asked of its float64 metrics (tests/test_sharded.py's)
SHARDS, SHARDED_RTOL = 8, 1e-11
#: the metrics that are counts (or ratios of counts) of decisions: equal exactly unless a decision sits on a tie
#: within rounding (the means and logits they compare differ in the last bits), which these features do not have
SHARDED_COUNTS = ("ncc_accuracy", "ncc_agreement", "accuracy")
#: rows per chunk of the floor's single pass (the fastest measured on the 2-core machine)
FLOOR_BLOCK = 65_536
#: NC1 of the near-collapse case, and the relative agreement with the in-memory float64 value asked of it
COLLAPSE_NC1, COLLAPSE_RTOL = 1e-6, 1e-9
LARGE_K_TARGET_N = 10_000_000


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


def _write_features(path, labels, centres, rng, block=65_536, descr="<f4"):
    """Write ``(N, d)`` features (``descr``: float32 or float16) block by block (never the whole array in memory)."""
    N, d = labels.size, centres.shape[1]
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, {"descr": descr, "fortran_order": False, "shape": (N, d)})
        for lo in range(0, N, block):
            y = labels[lo : lo + block]
            rows = centres[y] + 0.5 * rng.standard_normal((y.size, d), dtype=np.float32)
            handle.write(np.ascontiguousarray(rows, dtype=descr).tobytes())


def _timed(module, names) -> dict:
    """Wrap ``module``'s functions ``names`` so that their wall time is added to the returned dict."""
    seconds = dict.fromkeys(names, 0.0)
    for name in names:
        function = getattr(module, name)

        def timed(*args, _function=function, _name=name, **kwargs):
            start = time.perf_counter()
            try:
                return _function(*args, **kwargs)
            finally:
                seconds[_name] += time.perf_counter() - start

        setattr(module, name, timed)
    return seconds


def _cpu_seconds() -> float:
    """CPU seconds of this process so far, every thread (BLAS's included), user and system."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _cli(argv, out: str) -> tuple[float, dict]:
    """``python -m ufm.analyze argv --json out`` in this process: (seconds, the measured values)."""
    from ufm.analyze import main

    start = time.perf_counter()
    code = main([*argv, "--json", out, "--force", "--quiet", "--no-cache"])
    seconds = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"ufm.analyze exited with {code}")
    with open(out) as handle:
        return seconds, json.load(handle)["measured"]


def floor_pass(path: str, labels: np.ndarray, K: int, block: int = FLOOR_BLOCK) -> float:
    """NC1 of the memory-mapped ``(N, d)`` features at ``path`` by a plain numpy single pass: per-class sums by
    a sparse indicator product and the float64 Gram of ``block``-row chunks, then ``Sigma_W = (X^T X -
    sum_k n_k m_k m_k^T) / N`` and ``Sigma_B`` of the centred class means; pinv as :func:`ufm.metrics.nc1`."""
    import scipy.sparse

    features = np.load(path, mmap_mode="r")
    N, d = features.shape
    sums, gram = np.zeros((K, d)), np.zeros((d, d))
    for lo in range(0, N, block):
        X = np.asarray(features[lo : lo + block], np.float64)
        y = labels[lo : lo + block]
        indicator = scipy.sparse.csr_matrix((np.ones(y.size), (y, np.arange(y.size))), shape=(K, y.size))
        sums += indicator @ X
        gram += X.T @ X
    counts = np.bincount(labels, minlength=K)
    means = sums / counts[:, None]
    sigma_w = (gram - (means.T * counts) @ means) / N
    return _nc1(sigma_w, means - sums.sum(axis=0) / N)


def _nc1(sigma_w: np.ndarray, centred: np.ndarray) -> float:
    """``trace(Sigma_W Sigma_B^+) / K``, ``Sigma_B = centred^T centred / K``, eigenvalues above ``10 d eps`` of the
    largest kept (the cutoff of :func:`ufm.metrics.nc1`)."""
    K, d = centred.shape
    lam, U = np.linalg.eigh(centred.T @ centred / K)
    keep = lam > 10 * d * np.finfo(np.float64).eps * lam.max()
    return float(np.sum(np.sum(U[:, keep] * (sigma_w @ U[:, keep]), axis=0) / lam[keep]) / K)


def _collapse_features(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The near-collapse case: float32 features at NC1 ~ :data:`COLLAPSE_NC1`, class means offset from 0; the
    labels; the centred class means (the classifier: self-dual, as at collapse)."""
    N, d, K = SIZES["collapse"]
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(N) % K)
    centres = 4.0 + rng.normal(size=(K, d))
    noise = rng.normal(size=(N, d))
    # NC1 ~ sigma^2 tr(Sigma_B^+) / K for isotropic noise sigma: sigma chosen for COLLAPSE_NC1
    centred = centres - centres.mean(axis=0)
    lam = np.linalg.eigvalsh(centred.T @ centred / K)
    sigma = np.sqrt(COLLAPSE_NC1 * K / np.sum(1.0 / lam[lam > 1e-9 * lam.max()]))
    return (centres[labels] + sigma * noise).astype(np.float32), labels, centred


def reference_nc1(features: np.ndarray, labels: np.ndarray, K: int) -> float:
    """NC1 in memory, float64, two passes: the class means, then the scatter of the centred rows."""
    X = np.asarray(features, np.float64)
    counts = np.bincount(labels, minlength=K)
    means = np.zeros((K, X.shape[1]))
    np.add.at(means, labels, X)
    means /= counts[:, None]
    D = X - means[labels]
    return _nc1(D.T @ D / X.shape[0], means - X.mean(axis=0))


def child(case: str, folder: str, N: int | None = None) -> None:
    """One measurement in this process; prints one JSON line."""
    N0, d, K = SIZES[case]
    N = N or N0
    if case == "floor":  # the file and labels written by the parent
        labels = np.load(os.path.join(folder, "labels.npy"))
        start, cpu = time.perf_counter(), _cpu_seconds()
        nc1 = floor_pass(os.path.join(folder, "features.npy"), labels, K)
        seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        print(json.dumps({"seconds": seconds, "cpu": cpu, "rss_gib": rss, "nc1": nc1, "load": os.getloadavg()[0]}))
        return
    if case == "collapse":
        features, labels, weight = _collapse_features()
        paths = {key: os.path.join(folder, f"{key}.npy") for key in ("features", "labels")}
        np.save(paths["features"], features)
        np.save(paths["labels"], labels)
        np.save(os.path.join(folder, "weight.npy"), weight)
        reference = reference_nc1(features, labels, K)
        single = floor_pass(paths["features"], labels, K)
        del features
        import jax

        jax.config.update("jax_enable_x64", True)
        argv = [f"--{key}={path}" for key, path in paths.items()] + [f"--weight={os.path.join(folder, 'weight.npy')}"]
        _, measured = _cli(argv, os.path.join(folder, "collapse.json"))
        record = {"reference": reference, "nc1": measured["nc1"], "floor_nc1": single}
        print(json.dumps(record))
        return
    if case == "sharded":
        print(json.dumps(_sharded(folder)))
        return
    if case == "largek":  # labels, weight, bias were written by the parent
        from ufm import last_layer

        parts = _timed(last_layer, ("_moments", "_metrics"))
        paths = {key: os.path.join(folder, f"{key}.npy") for key in ("features", "labels", "weight", "bias")}
        out = os.path.join(folder, "largek.json")
        seconds, measured = _cli([f"--{key}={path}" for key, path in paths.items()], out)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        estimate = last_layer.memory_bytes(N, d, K, last_layer.default_chunk_size(d, K), itemsize=2) / 2**30
        record = {"seconds": seconds, "rss_gib": rss, "nc1": measured["nc1"], "accuracy": measured["accuracy"]}
        record.update(streaming=parts["_moments"], pairwise=parts["_metrics"], estimate_gib=estimate)
        print(json.dumps(record))
        return
    import jax

    jax.config.update("jax_enable_x64", True)
    import ufm

    if case == "cifar100":
        rng, labels, centres, weight, bias = _synthetic(N, d, K)
        features = centres[labels] + 0.5 * rng.standard_normal((N, d), dtype=np.float32)
        ufm.analyze(features[:1000], labels[:1000] % 2, weight[:2], bias[:2], spectra=False)  # warm-up
        start = time.perf_counter()
        result = ufm.analyze(features, labels, weight, bias, loss="ce", lam_W=5e-4, lam_H=5e-4, lam_b=5e-4)
        seconds = time.perf_counter() - start
        nc1, accuracy = result.measured["nc1"], result.measured["accuracy"]
    else:
        paths = {key: os.path.join(folder, f"{key}.npy") for key in ("labels", "weight", "bias")}  # the parent's
        out = os.path.join(folder, "imagenet.json")
        argv = ["--features", os.path.join(folder, "features.npy")] + [f"--{k}={path}" for k, path in paths.items()]
        cpu = _cpu_seconds()
        seconds, measured = _cli(argv, out)
        cpu = _cpu_seconds() - cpu
        nc1, accuracy = measured["nc1"], measured["accuracy"]
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    record = {"seconds": seconds, "rss_gib": rss, "nc1": nc1, "accuracy": accuracy, "load": os.getloadavg()[0]}
    if case == "imagenet":
        record["cpu"] = cpu
    print(json.dumps(record))


def _sharded(folder: str) -> dict:
    """The Dask case (module docstring), in this process: writes the shards into ``folder``; the seconds of each
    way and every metric's relative difference from the single-process computation."""
    import distributed

    from ufm.calibration import bin_statistics, logits_from_features
    from ufm.sharded import analyze_shards
    from ufm.tracker import CollapseTracker

    N, d, K = SIZES["sharded"]
    rng, labels, centres, weight, bias = _synthetic(N, d, K)
    features = centres[labels] + 0.5 * rng.standard_normal((N, d), dtype=np.float32)
    bounds = np.linspace(0, N, SHARDS + 1).astype(int)
    parts = [(features[lo:hi], labels[lo:hi]) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
    for i, (X, y) in enumerate(parts):
        np.save(os.path.join(folder, f"features-{i}.npy"), X)
        np.save(os.path.join(folder, f"labels-{i}.npy"), y)
    patterns = (os.path.join(folder, "features-*.npy"), os.path.join(folder, "labels-*.npy"))

    start = time.perf_counter()
    tracker = CollapseTracker(K, d)
    for X, y in parts:
        tracker.update(X, y)
    ncc = tracker.ncc_pass(weight, bias)
    for X, y in parts:
        ncc.update(X, y)
    reference = dict(tracker.result(weight, bias, ncc=ncc).metrics)
    bins = bin_statistics(logits_from_features(np.asarray(features, np.float64), weight, bias), labels)
    reference |= {"ece": bins.ece, "classwise_ece": bins.classwise_ece, "nll": bins.nll, "brier": bins.brier}
    single = time.perf_counter() - start

    start = time.perf_counter()
    started = analyze_shards(patterns, num_classes=K, weight=weight, bias=bias, workers=2)
    with_start = time.perf_counter() - start
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", silence_logs=40
    )
    try:
        with distributed.Client(cluster, set_as_default=False) as client:
            start = time.perf_counter()
            running = analyze_shards(patterns, num_classes=K, weight=weight, bias=bias, client=client)
            alone = time.perf_counter() - start
    finally:
        cluster.close()
    record = {"single": single, "with_start": with_start, "alone": alone, "load": os.getloadavg()[0]}
    for name, result in (("started", started), ("running", running)):
        metrics = result.metrics
        if metrics.keys() != reference.keys():
            raise SystemExit(f"the Dask run's metrics {sorted(metrics)} differ from {sorted(reference)}")
        relative = [key for key, value in reference.items() if value and np.isfinite(value)]
        record[f"{name}_worst"] = max(abs(metrics[key] - reference[key]) / abs(reference[key]) for key in relative)
        record[f"{name}_relative"] = len(relative)
        exact = [key for key in reference if key not in relative]  # zeros, infinities, NaN: the same value
        record[f"{name}_counts_equal"] = all(metrics[key] == reference[key] for key in SHARDED_COUNTS) and all(
            metrics[key] == reference[key] or (np.isnan(metrics[key]) and np.isnan(reference[key])) for key in exact
        )
        record[f"{name}_shards"] = result.num_shards
    record["metrics"] = len(reference)
    record["nc1"] = reference["nc1"]
    return record


def _sharded_rows(directory) -> list:
    """The Dask rows (module docstring); none, with a line saying why, without the 'dask' extra."""
    try:
        import dask  # noqa: F401
        import distributed  # noqa: F401
    except ImportError:
        print("sharded on Dask: skipped, the 'dask' extra is not installed (pip install 'ufm-collapse[dask]')")
        return []
    folder = tempfile.mkdtemp(prefix="ufm-analyze-sharded-", dir=directory)
    try:
        result = _run_child("sharded", folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    N, d, K = SIZES["sharded"]
    size = f"{N:,} x {d}, K = {K}, {SHARDS} shards"
    rows = [["sharded: single process (one tracker)", size, result["single"], "-", "-", "-", result["nc1"]]]
    for name, label, seconds in (
        ("started", "sharded: Dask, 2 local workers, cluster started by the call", result["with_start"]),
        ("running", "sharded: Dask, 2 local workers, cluster already running", result["alone"]),
    ):
        worst, counts = result[f"{name}_worst"], result[f"{name}_counts_equal"]
        equal = worst <= SHARDED_RTOL and counts and result[f"{name}_shards"] == SHARDS
        rows.append([label, size, seconds, "-", "-", "-", result["nc1"]])
        print(
            f"{label}: {result[f'{name}_shards']} shards, {result['metrics']} metrics, largest relative difference "
            f"from the single process {worst:.1e} (over the {result[f'{name}_relative']} non-zero finite ones; the "
            f"others and the counts {'equal' if counts else 'DIFFERENT'}): "
            f"{'equal to rounding' if equal else 'NOT EQUAL'} (rtol {SHARDED_RTOL:g}); load {result['load']:.1f}"
        )
    return rows


def _run_child(case: str, folder: str, N: int = 0) -> dict:
    done = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child", case, "--dir", folder, "--large-k-n", str(N)]
        + ["--large-k-shape", *map(str, SIZES["largek"][1:])],
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
    parser.add_argument("--large-k", action="store_true", help="also K = 50,257, d = 768 (float32 and float16 maps)")
    parser.add_argument("--large-k-only", action="store_true", help="only the large-K cases")
    parser.add_argument("--large-k-n", type=int, default=0, help="samples of the large-K cases (default 65,536)")
    parser.add_argument(
        "--large-k-dtypes",
        nargs="+",
        choices=("float32", "float16"),
        default=["float32", "float16"],
        help="the large-K maps to measure (default both; at N = 10^7 float32 is a 31 GB file, float16 15 GB)",
    )
    parser.add_argument("--dask-only", action="store_true", help="only the sharded case on 2 local Dask workers")
    parser.add_argument("--repeats", type=int, default=2, help="project runs, each between two floor runs")
    parser.add_argument("--keep", default=None, help="folder of the ImageNet-size files: reused if there, kept")
    parser.add_argument("--child", choices=tuple(SIZES), default=None, help=argparse.SUPPRESS)
    parser.add_argument("--large-k-shape", type=int, nargs=2, default=None, help=argparse.SUPPRESS)  # d K: smoke test
    args = parser.parse_args()
    if args.large_k_shape:
        SIZES["largek"] = (SIZES["largek"][0], *args.large_k_shape)
    if args.child:
        child(args.child, args.dir, args.large_k_n or None)
        return
    print(machine())
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} (1, 5, 15 min)")
    rows = []
    if args.large_k or args.large_k_only:
        rows += _large_k(args.dir, args.large_k_n or SIZES["largek"][0], args.large_k_dtypes)
    if args.large_k_only or args.dask_only:
        rows += _sharded_rows(args.dir) if args.dask_only else []
        print_table(["case", "size", "seconds", "target s", "peak RSS GiB", "target GiB", "nc1"], rows)
        return
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
    collapse_folder = tempfile.mkdtemp(prefix="ufm-analyze-collapse-", dir=args.dir)
    try:
        collapse = _run_child("collapse", collapse_folder)
    finally:
        shutil.rmtree(collapse_folder, ignore_errors=True)
    rows += _sharded_rows(args.dir)
    if not args.skip_imagenet:
        rows += _imagenet(args)
    print_table(["case", "size", "seconds", "target s", "peak RSS GiB", "target GiB", "nc1"], rows)
    agreement = abs(collapse["nc1"] - collapse["reference"]) / collapse["reference"]
    floor_error = abs(collapse["floor_nc1"] - collapse["reference"]) / collapse["reference"]
    N, d, K = SIZES["collapse"]
    print(
        f"NC1 near collapse (N = {N:,}, d = {d}, K = {K}, float32 map, CLI): {collapse['nc1']!r} against the in-memory "
        f"float64 two-pass {collapse['reference']!r}: relative difference {agreement:.2e} "
        f"({'within' if agreement <= COLLAPSE_RTOL else 'BEYOND'} {COLLAPSE_RTOL:g}); the floor's single pass "
        f"{collapse['floor_nc1']!r} ({floor_error:.2e})"
    )


def _imagenet(args) -> list:
    """The ImageNet-size rows: the floor, the project's command line, the floor again, on one file."""
    N, d, K = SIZES["imagenet"]
    folder = args.keep or tempfile.mkdtemp(prefix="ufm-analyze-bench-", dir=args.dir)
    try:
        if not os.path.exists(os.path.join(folder, "features.npy")):
            rng, labels, centres, weight, bias = _synthetic(N, d, K)
            for key, array in (("labels", labels), ("weight", weight), ("bias", bias)):
                np.save(os.path.join(folder, f"{key}.npy"), array)
            start = time.perf_counter()
            _write_features(os.path.join(folder, "features.npy"), labels, centres, rng)
            written = time.perf_counter() - start
            size = os.path.getsize(os.path.join(folder, "features.npy")) / 1e9
            print(f"wrote {size:.2f} GB of float32 features in {written:.1f} s")
            del labels, centres
        cases = ["floor", "imagenet"] * args.repeats + ["floor"]
        runs = [(case, _run_child(case, folder)) for case in cases]
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    for case, run in runs:
        print(
            f"  {'project' if case == 'imagenet' else 'floor':7s} {run['seconds']:7.1f} s wall, "
            f"{run['cpu']:7.1f} s CPU, "
            f"load {run['load']:.1f}, peak RSS {run['rss_gib']:.2f} GiB, nc1 {run['nc1']!r}"
        )
    best = {
        case: min((run for c, run in runs if c == case), key=lambda run: run["seconds"])
        for case in ("floor", "imagenet")
    }
    floor, project = best["floor"], best["imagenet"]
    cpu = min(run["cpu"] for c, run in runs if c == "imagenet") / min(run["cpu"] for c, run in runs if c == "floor")
    print(
        f"ImageNet size, the fastest of each: project / floor = {project['seconds'] / floor['seconds']:.2f} wall "
        f"(target <= 1.2), {cpu:.2f} in CPU seconds (steadier under a shared machine's load)"
    )
    size = f"{N:,} x {d}, K = {K:,}"
    return [
        ["ImageNet (memory-mapped .npy, CLI)", size, project["seconds"], "< 1.2 floor", project["rss_gib"], "< 2"]
        + [project["nc1"]],
        ["  numpy floor (single pass)", size, floor["seconds"], "-", floor["rss_gib"], "-", floor["nc1"]],
        ["  ratio project / floor", "", project["seconds"] / floor["seconds"], "<= 1.2", "-", "-", "-"],
    ]


def _large_k(directory, N: int, dtypes=("float32", "float16")) -> list:
    """The large-K rows: measured at N samples, float32 and/or float16 maps; below N = 10^7, the extrapolation to
    it as well."""
    _, d, K = SIZES["largek"]
    rows = []
    for descr, name in (("<f4", "float32"), ("<f2", "float16")):
        if name not in dtypes:
            continue
        folder = tempfile.mkdtemp(prefix="ufm-analyze-largek-", dir=directory)
        try:
            rng = np.random.default_rng(0)
            centres = rng.normal(size=(K, d)).astype(np.float32)
            weight = centres + 0.1 * rng.normal(size=(K, d))
            bias = 0.01 * rng.normal(size=K)
            labels = rng.permutation(np.arange(N) % K).astype(np.uint16)  # every class present
            np.save(os.path.join(folder, "labels.npy"), labels)
            np.save(os.path.join(folder, "weight.npy"), weight.astype(np.float32))
            np.save(os.path.join(folder, "bias.npy"), bias)
            _write_features(os.path.join(folder, "features.npy"), labels, centres, rng, descr=descr)
            del labels, centres, weight
            result = _run_child("largek", folder, N)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        size = f"{N:,} x {d}, K = {K:,}, {name} map"
        rows.append(["large K (CLI), measured", size, result["seconds"], "-", result["rss_gib"], "< 4", result["nc1"]])
        print(
            f"{name}: streaming passes {result['streaming']:.1f} s, pairwise class statistics "
            f"{result['pairwise']:.1f} s, other {result['seconds'] - result['streaming'] - result['pairwise']:.1f} s; "
            f"estimate {result['estimate_gib']:.2f} GiB, load {os.getloadavg()[0]:.1f}"
        )
        if N >= LARGE_K_TARGET_N:
            continue
        per_sample = result["streaming"] / N
        fixed = result["seconds"] - result["streaming"]
        extrapolated = fixed + per_sample * LARGE_K_TARGET_N
        rss = result["rss_gib"] + 2 * (LARGE_K_TARGET_N - N) / 2**30  # the N two-byte predictions
        print(f"{name}: {per_sample * 1e3:.3f} ms/sample in the streaming passes (for the extrapolation)")
        rows.append(
            [
                "large K, EXTRAPOLATED to N = 10^7",
                f"{LARGE_K_TARGET_N:,} x {d}, K = {K:,}, {name}",
                extrapolated,
                "-",
                rss,
                "< 4",
                "-",
            ]
        )
    return rows


if __name__ == "__main__":
    main()
