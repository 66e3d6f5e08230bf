"""Neural collapse and calibration of feature sets beyond one machine: shards analysed on Dask.

::

    from ufm.sharded import analyze_shards
    result = analyze_shards(("features-*.npy", "labels-*.npy"), num_classes=10, weight=W, bias=b)
    result.metrics["nc1"], result.metrics["ncc_agreement"], result.metrics["ece"]

Command line: ``python -m ufm.sharded 'features-*.npy' 'labels-*.npy' --classes 10 --weight W.npy
[--bias b.npy] [--address tcp://scheduler:8786] [--workers 2] [--json out.json]``.

**Why it splits.** Every statistic of the analysis is a sum over samples: the class counts, the class
sums, the Gram matrix and the per-class squared norms of :class:`ufm.tracker.CollapseTracker` (kept about
per-class shifts, exact near collapse), the confusion counts of the nearest-class-mean pass
(:class:`ufm.tracker.NCCPass`) and the calibration bins (:class:`ufm.calibration.BinStatistics`). A shard's
sums are its partial statistics (:class:`ShardStatistics`); merged, they are those of all the samples, to
float64 rounding (the summation order changes, nothing else).

**How it runs.** The first pass maps one task over the shards: the task opens its shard (two ``.npy``
files, memory-mapped, or one block of a dask array pair), reads it ``rows`` at a time and returns its
:class:`ShardStatistics`; the partials are merged by a pairwise tree of tasks. The nearest-class-mean
metrics (NC4) need the *final* class means, so a second map over the shards counts the NCC decisions
with them, merged by the same tree. Both passes are ``dask.delayed`` graphs computed by a
``distributed.Client``: ``client=`` one you hold, ``address=`` a scheduler to connect to
(``tcp://host:8786``; ``docs/sharded.md`` says how to start one), or neither: a ``LocalCluster`` of
``workers`` processes (one thread each) made for the call and closed after it. The scheduling, the
transfers and the retries are Dask's; this module only says what each task computes.

**Failures.** A task is a pure function of its shard (a merge copies its first argument, never
changes its inputs), so Dask may run it again anywhere: a worker process that dies is replaced by its
nanny and its tasks are rerun (the scheduler gives up after ``distributed.scheduler.allowed-failures``
deaths of the same task, 3 by default: ``KilledWorker``); the result is the same
(``tests/test_sharded.py`` kills a worker mid-run).

**Checks, before any task runs.** Every ``.npy`` header is read (only its first bytes): numbers only
(object arrays are refused, never unpickled), features ``(N_i, d)`` with one d for all shards, labels
``(N_i,)``, the declared data present in the file (a truncated or forged header is refused); the memory of
one task (the tracker's ``d x d`` Gram and its temporaries, one chunk of rows and its logits) and of the
merge is estimated from the declared shapes and compared with the free memory here and with the
workers' memory limits. Each task reads its header again (the file may have changed) and checks
every chunk (finite features, labels in ``[0, K)``). Every refusal is a ``ValueError`` whose message
names the argument (``shards``, ``num_classes``, ``weight``, ...) and, from a task, the shard.

**Interrupts.** A ``KeyboardInterrupt`` (or any error) while waiting cancels the futures of the call
before it is raised; the command line prints one line and exits 130 (:mod:`ufm._interrupt`), and the
scheduler drops the tasks of a client that went away.

Dask is an optional extra (``pip install 'ufm-collapse[dask]'``), imported only when a call needs it.
"""

from __future__ import annotations

import argparse
import copy
import glob
import math
import os
import sys
from dataclasses import dataclass
from importlib import metadata

import numpy as np

from theory import validation
from ufm import _cli, _io, _prog
from ufm._format import format_number
from ufm._interrupt import exit_on_interrupt
from ufm._npy import Declared, file_header
from ufm.calibration import DEFAULT_BINS, BinStatistics, bin_statistics, default_chunk_size
from ufm.tracker import CollapseResult, CollapseTracker, NCCPass, buffer_rows, checked_batch

__all__ = ["ShardStatistics", "ShardedAnalysis", "analyze_shards", "npy_header"]

PROG = "python -m ufm.sharded"
#: the calibration metrics added to the tracker's with a weight, and their sources
CALIBRATION_SOURCES = {
    "ece": "expected calibration error, equal-width confidence bins (Guo, Pleiss, Sun & Weinberger 2017, eq. 3)",
    "classwise_ece": "classwise ECE / static calibration error (Kull et al. 2019; Nixon et al. 2019)",
    "nll": "mean negative log-likelihood of the labels under softmax(weight h + bias)",
    "brier": "multiclass Brier score, sum over classes (Brier 1950)",
}


def _dask():
    """``(dask, distributed)``, or an ImportError naming the extra that installs them."""
    try:
        import dask
        import distributed
    except ImportError as error:
        raise ImportError(
            f"ufm.sharded runs on Dask, which is not installed ({error}); "
            "install the 'dask' extra: pip install 'ufm-collapse[dask]'"
        ) from error
    return dask, distributed


# ----------------------------------------------------------------------------- .npy headers


def npy_header(path, what: str) -> Declared:
    """The header of the ``.npy`` file ``path``, read from its first bytes only and checked
    (:func:`ufm._npy.file_header`: a real dtype, never Python objects, the declared data present in the
    file). Raises ``ValueError`` starting with ``what`` (the argument that named the file)."""
    return file_header(os.fspath(path), what)


@dataclass(frozen=True)
class _Files:
    """One shard as two ``.npy`` files, with the headers declared when the call was checked."""

    features: Declared
    labels: Declared

    def __str__(self) -> str:
        return f"{self.features.where} / {self.labels.where}"

    def open(self) -> tuple[np.ndarray, np.ndarray]:
        """Both arrays memory-mapped, after their headers were read again and found unchanged."""
        arrays = []
        for declared in (self.features, self.labels):
            now = npy_header(declared.where, "shards")
            if (now.shape, now.dtype) != (declared.shape, declared.dtype):
                raise ValueError(
                    f"shards: {declared.where} changed during the analysis (shape {declared.shape} of "
                    f"{declared.dtype} declared before, now {now.shape} of {now.dtype})"
                )
            if not now.nbytes:  # numpy cannot map an empty file region
                arrays.append(np.empty(now.shape, now.dtype))
            else:
                arrays.append(np.load(now.where, mmap_mode="r", allow_pickle=False))
        return arrays[0], arrays[1]


# ----------------------------------------------------------------------------- partial statistics


@dataclass(frozen=True, eq=False)
class ShardStatistics:
    """The first-pass statistics of some shards, exactly mergeable: ``tracker`` (a
    :class:`~ufm.tracker.CollapseTracker` holding the counts, shifted sums, Gram and squares),
    ``calibration`` (the :class:`~ufm.calibration.BinStatistics` of the logits; None without a weight or a
    sample) and
    ``shards`` (how many were merged). ``a.merge(b)`` (also ``a + b``) is a new object; neither input
    changes, so a task that computes it can be run again. Pickled between processes bit for bit."""

    tracker: CollapseTracker
    calibration: BinStatistics | None = None
    shards: int = 1

    def merge(self, other: ShardStatistics) -> ShardStatistics:
        """The statistics of both sets of shards (the same K, d, bins and temperature)."""
        if not isinstance(other, ShardStatistics):
            raise ValueError(f"other must be a ShardStatistics, got {type(other).__name__}")
        tracker = copy.deepcopy(self.tracker).merge(other.tracker)
        mine, theirs = self.calibration, other.calibration  # None: no weight, or no sample yet
        calibration = theirs if mine is None else (mine if theirs is None else mine.merge(theirs))
        return ShardStatistics(tracker, calibration, self.shards + other.shards)

    def __add__(self, other: ShardStatistics) -> ShardStatistics:
        return self.merge(other)


def _ncc_merge(first: NCCPass, second: NCCPass) -> NCCPass:
    return copy.deepcopy(first).merge(second)


def _chunks(source, X, y, rows: int):
    """``(features, labels)`` of the shard ``rows`` at a time: the files opened, or the dask block given."""
    if X is None:
        X, y = source.open()
    for lo in range(0, y.shape[0], rows):
        yield X[lo : lo + rows], y[lo : lo + rows]


def _first_pass(source, X, y, K: int, d: int, weight, bias, n_bins: int, rows: int) -> ShardStatistics:
    """One shard's :class:`ShardStatistics` (a task)."""
    tracker = CollapseTracker(K, d, buffer=1)  # each chunk is accumulated as it comes: no buffer to ship
    calibration = None
    try:
        for features, labels in _chunks(source, X, y, rows):
            features, labels = checked_batch(features, labels, K, d)
            tracker.update(features, labels)
            if weight is not None:
                with np.errstate(over="ignore", invalid="ignore"):  # bin_statistics refuses what overflowed
                    part = bin_statistics(features @ weight.T + bias, labels, n_bins=n_bins)
                calibration = part if calibration is None else calibration.merge(part)
    except ValueError as error:
        raise ValueError(f"shards: {source}: {error}") from None
    return ShardStatistics(tracker, calibration)


def _second_pass(source, X, y, rows: int, means, global_mean, weight, bias) -> NCCPass:
    """One shard's nearest-class-mean counts with the final means (a task)."""
    ncc = NCCPass(means, global_mean, weight, bias, 1)
    try:
        for features, labels in _chunks(source, X, y, rows):
            ncc.update(features, labels)
    except ValueError as error:
        raise ValueError(f"shards: {source}: {error}") from None
    return ncc


# ----------------------------------------------------------------------------- the inputs


def _shard_files(shards) -> list[tuple[str, str]]:
    """``(features path, labels path)`` of each shard: a pair of glob patterns (each file paired with the one
    at the same place in the other's sorted matches) or a list of pairs of paths."""
    wrong = (
        "shards must be a pair (features, labels) of glob patterns, a list of (features, labels) pairs of "
        f".npy paths, or a pair of dask arrays; got {type(shards).__name__}"
    )
    if shards is None or isinstance(shards, (str, bytes, os.PathLike)):
        raise ValueError(wrong)
    try:
        items = list(shards)
    except TypeError:
        raise ValueError(wrong) from None
    if len(items) == 2 and all(isinstance(item, (str, os.PathLike)) for item in items):
        matches = [sorted(glob.glob(os.fspath(pattern))) for pattern in items]
        for name, pattern, found in zip(("features", "labels"), items, matches, strict=True):
            if not found:
                raise ValueError(f"shards: the {name} pattern {os.fspath(pattern)!r} matches no file")
        if len(matches[0]) != len(matches[1]):
            raise ValueError(
                f"shards: the features pattern matches {len(matches[0])} files and the labels pattern "
                f"{len(matches[1])}; each shard needs both"
            )
        return list(zip(*matches, strict=True))
    pairs = []
    for item in items:
        if isinstance(item, (str, bytes)) or not hasattr(item, "__len__") or len(item) != 2:
            raise ValueError(f"{wrong} (an item is {item!r})")
        if not all(isinstance(path, (str, os.PathLike)) for path in item):
            raise ValueError(f"{wrong} (an item is {item!r})")
        pairs.append((os.fspath(item[0]), os.fspath(item[1])))
    if not pairs:
        raise ValueError("shards must name at least one shard, got an empty list")
    return pairs


def _file_sources(shards) -> tuple[list, int, int, float]:
    """``(sources, d, N, bytes of a shard's block held in memory: 0, they are memory-mapped)``."""
    sources, d, N = [], None, 0
    for features_path, labels_path in _shard_files(shards):
        features, labels = npy_header(features_path, "shards"), npy_header(labels_path, "shards")
        if len(features.shape) != 2 or features.shape[1] < 1:
            raise ValueError(f"shards: {features_path} must hold features of shape (N_i, d >= 1), got {features.shape}")
        if d is not None and features.shape[1] != d:
            raise ValueError(
                f"shards: {features_path} has d = {features.shape[1]} features per row, the first shard "
                f"{sources[0][0].features.where} has d = {d}"
            )
        d = features.shape[1]
        if labels.shape != features.shape[:1]:
            raise ValueError(
                f"shards: {labels_path} must hold one label per row of {features_path}: shape "
                f"({features.shape[0]},), got {labels.shape}"
            )
        N += features.shape[0]
        sources.append((_Files(features, labels), None, None))
    assert d is not None
    return sources, d, N, 0.0


def _dask_sources(features, labels) -> tuple[list, int, int, float]:
    """Each row block of a dask array pair as a shard (the feature columns in one block)."""
    for name, array, ndim, shape in (("features", features, 2, "(N, d)"), ("labels", labels, 1, "(N,)")):
        if getattr(array, "ndim", None) != ndim or np.dtype(array.dtype).kind not in "fiu":
            raise ValueError(f"shards: the {name} dask array must be real, of shape {shape}; got {array!r}")
    if any(math.isnan(n) for n in (*features.shape, *labels.shape)):
        raise ValueError("shards: the dask arrays need known chunk sizes (call .compute_chunk_sizes() first)")
    N, d = features.shape
    if labels.shape != (N,) or N < 1 or d < 1:
        raise ValueError(
            f"shards: features (N, d) and labels (N,) with N, d >= 1, got {features.shape}, {labels.shape}"
        )
    features = features.rechunk({1: -1})
    labels = labels.rechunk((features.chunks[0],))
    blocks = zip(features.to_delayed()[:, 0], labels.to_delayed(), strict=True)
    sources = [(f"block {i} of the dask arrays", X, y) for i, (X, y) in enumerate(blocks)]
    rows = max(features.chunks[0])
    return sources, int(d), int(N), float(rows) * (d * features.dtype.itemsize + labels.dtype.itemsize)


def _task_floats(K: int, d: int, rows: int) -> float:
    """Float64 numbers held by one task at its peak: a first pass (the tracker, a chunk's float64 copy and
    shifted copy, its logits with bin_statistics' work) or a merge (two inputs, the copy, the Gram's
    temporaries)."""
    tracker = d * d + 3.0 * K * d + 3.0 * K + 2.0 * d
    first = tracker + 3.0 * d * d + 3.0 * rows * d + 5.0 * rows * K
    merge = 3.0 * tracker + 4.0 * d * d
    return max(first, merge)


# ----------------------------------------------------------------------------- the analysis


@dataclass(frozen=True, eq=False)
class ShardedAnalysis:
    """The analysis of all the shards: ``collapse`` (:class:`~ufm.tracker.CollapseResult`, with the NC4
    metrics of the second pass), ``calibration`` (:class:`~ufm.calibration.BinStatistics` of the logits, None
    without a weight), the merged first pass ``statistics`` (:class:`ShardStatistics`) and second pass
    ``ncc`` (:class:`~ufm.tracker.NCCPass`). ``metrics``: every number by name."""

    collapse: CollapseResult
    calibration: BinStatistics | None
    statistics: ShardStatistics
    ncc: NCCPass

    @property
    def num_shards(self) -> int:
        return self.statistics.shards

    @property
    def metrics(self) -> dict[str, float]:
        """The tracker's metrics (``ufm.collapse_metrics`` and NC4) and, with a weight, ``ece``,
        ``classwise_ece``, ``nll``, ``brier``."""
        out = dict(self.collapse.metrics)
        bins = self.calibration
        if bins is not None:
            out |= {"ece": bins.ece, "classwise_ece": bins.classwise_ece, "nll": bins.nll, "brier": bins.brier}
        return out

    def to_json(self) -> dict:
        """A JSON-ready dict (non-finite numbers as null): the tracker's record, the calibration metrics and
        their sources, ``num_shards`` and ``n_bins``."""
        record = self.collapse.to_json()
        record["num_shards"] = self.num_shards
        if self.calibration is not None:
            record["n_bins"] = self.calibration.n_bins
            record["metrics"] = _io.clean(self.metrics, for_json=True)
            record["sources"] |= CALIBRATION_SOURCES
        return record


def _merged(client, items: list, merge):
    """Merge the delayed ``items`` by a pairwise tree of tasks and compute it; the futures are cancelled if
    anything (an error, ``KeyboardInterrupt``) stops the wait."""
    import dask

    merge = dask.delayed(merge)
    while len(items) > 1:
        items = [merge(*items[i : i + 2]) if i + 1 < len(items) else items[i] for i in range(0, len(items), 2)]
    future = client.compute(items[0])
    try:
        return future.result()
    except BaseException:
        client.cancel([future])
        raise


def _connect(distributed, client, address, workers):
    """``(client, what to close at the end)``: the caller's client, one connected to ``address``, or a new
    local cluster of ``workers`` processes."""
    if client is not None:
        if not isinstance(client, distributed.Client):
            raise ValueError(f"client must be a distributed.Client, got {type(client).__name__}")
        return client, []
    if address is not None:
        try:
            connected = distributed.Client(address, set_as_default=False)
        except (OSError, ValueError, TypeError) as error:
            text = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise ValueError(f"address: cannot connect to a Dask scheduler at {address!r} ({text})") from None
        return connected, [connected]
    # the tasks are numpy work: JAX (imported with ufm, asked for the free memory) stays on the CPU, and never takes
    # an accelerator's memory in each worker process
    cluster = distributed.LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0", env={"JAX_PLATFORMS": "cpu"}
    )
    local = distributed.Client(cluster, set_as_default=False)
    return local, [local, cluster]


def _check_workers(client, per_task: float, sizes: str) -> None:
    """Refuse a task larger than the smallest worker's memory limit (where the workers declare one)."""
    limits = [w.get("memory_limit") or 0 for w in client.scheduler_info().get("workers", {}).values()]
    limits = [limit for limit in limits if limit > 0]
    if limits and per_task > min(limits):
        raise ValueError(
            f"shards: one task ({sizes}) needs about {per_task / 2**30:.3g} GiB, more than the smallest Dask "
            f"worker's memory limit of {min(limits) / 2**30:.3g} GiB; use workers with more memory or a smaller d"
        )


def analyze_shards(
    shards,
    *,
    num_classes: int,
    weight=None,
    bias=None,
    client=None,
    address: str | None = None,
    workers: int | None = None,
    n_bins: int = DEFAULT_BINS,
) -> ShardedAnalysis:
    """The collapse metrics (one pass, then the NC4 pass) and the calibration of sharded features, on Dask.

    Args:
        shards: a pair ``(features_glob, labels_glob)`` of patterns (the sorted matches paired in order), a
            list of ``(features.npy, labels.npy)`` path pairs, or a pair of dask arrays ``(features (N, d),
            labels (N,))`` (e.g. ``dask.array.from_zarr``; each row block is a shard). Features ``(N_i, d)``
            of any real dtype (accumulated in float64), labels ``(N_i,)`` integers in ``[0, K)``.
        num_classes: K >= 2; every class needs a sample somewhere.
        weight, bias: the classifier ``(K, d)`` / ``(K,)``; with it the classifier metrics, NCC agreement,
            accuracy and the calibration (ECE, classwise ECE, NLL, Brier) of ``softmax(weight h + bias)``.
        client: a ``distributed.Client`` to run on (kept open); or
        address: a scheduler's address (``"tcp://host:8786"``) to connect to for this call; neither: a
            ``LocalCluster`` of ``workers`` processes (default: one per core), one thread each.
        n_bins: equal-width confidence bins of the ECE (default 15, as Guo et al. 2017).

    Returns:
        :class:`ShardedAnalysis`; equal to one :class:`~ufm.tracker.CollapseTracker` fed every sample, to
        float64 rounding (the merge tree sums in another order).

    Raises:
        ValueError: naming the argument (and the shard) for every refusal, before any task where the headers
            show it (module docstring).
        ImportError: naming the 'dask' extra, without Dask.
    """
    K = validation.integer("num_classes", num_classes, 2)
    M = validation.integer("n_bins", n_bins, 1)
    if workers is not None:
        workers = validation.integer("workers", workers, 1)
    if client is not None and (address is not None or workers is not None):
        raise ValueError("client excludes address and workers (it runs on the cluster it is connected to)")
    if address is not None and (not isinstance(address, str) or workers is not None):
        raise ValueError(
            f"address must be a scheduler address such as 'tcp://host:8786', without workers, got {address!r}"
        )
    pair = list(shards) if isinstance(shards, (tuple, list)) and len(shards) == 2 else []
    if pair and all(hasattr(array, "__dask_graph__") for array in pair):
        sources, d, N, block = _dask_sources(*pair)
    else:
        sources, d, N, block = _file_sources(shards)
    rows = max(1, min(buffer_rows(d), default_chunk_size(K)))
    per_task = 8.0 * _task_floats(K, d, rows) + block
    sizes = f"{len(sources)} shards of N = {N} rows in all, d = {d}, num_classes = {K}"
    concurrent = (workers or os.cpu_count() or 1) if client is None and address is None else 0
    validation.allocation(
        "the tasks of the local cluster and the final merge", (concurrent * per_task) / 8.0 + 5.0 * d * d, sizes
    )
    checked = CollapseTracker(K, d, weight=weight, bias=bias, buffer=1)  # weight and bias checked, memory too
    weight, bias = checked.weight, checked.bias
    dask, distributed = _dask()
    client, opened = _connect(distributed, client, address, workers)
    try:
        _check_workers(client, per_task, sizes)
        shared = [None if value is None else dask.delayed(value) for value in (weight, bias)]
        logits = [None, None] if weight is None else [shared[0], dask.delayed(np.zeros(K) if bias is None else bias)]
        first = dask.delayed(_first_pass)
        total = _merged(client, [first(s, X, y, K, d, *logits, M, rows) for s, X, y in sources], ShardStatistics.merge)
        try:
            stats = total.tracker.statistics()
        except ValueError as error:  # a class without samples
            raise ValueError(f"shards: {error}") from None
        frozen = [dask.delayed(value) for value in (stats.means, stats.global_mean)]
        second = dask.delayed(_second_pass)
        ncc = _merged(client, [second(s, X, y, rows, *frozen, *shared) for s, X, y in sources], _ncc_merge)
    finally:
        for thing in opened:
            thing.close()
    collapse = total.tracker.result(weight, bias, ncc=ncc)
    return ShardedAnalysis(collapse, total.calibration, total, ncc)


# ----------------------------------------------------------------------------- command line

EPILOG = """\
The patterns are expanded here (quote them, so that the shell does not); the features and labels files
are paired in sorted order. Every file must be readable by the workers under the same path: on a real
cluster, a shared file system.
exit codes: 0 the analysis ran; 1 the cluster failed (a task killed its workers too often, the scheduler
went away); 2 bad arguments or bad files (one error: line naming the flag or the file, before any task);
4 the result could not be written (ufm._io); 130 / 143 interrupted (SIGINT / SIGTERM: the futures are
dropped with the client).
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_prog.name("ufm.sharded"),
        description="Neural-collapse metrics (NC1-NC4 and their variants) and calibration of feature shards\n"
        "(.npy files), computed on a Dask cluster: a local one, or any scheduler's address.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("features", metavar="FEATURES", help="glob of the feature shards: .npy files of (N_i, d)")
    parser.add_argument("labels", metavar="LABELS", help="glob of the label shards: .npy files of (N_i,) integers")
    parser.add_argument(
        "--classes",
        metavar="K",
        type=validation.integer_type("--classes", 2),
        required=True,
        help="number of classes K >= 2 (required: no default)",
    )
    parser.add_argument(
        "--weight",
        metavar="NPY",
        default=None,
        help="classifier (K, d) as .npy (adds accuracy, NCC agreement and calibration)",
    )
    parser.add_argument("--bias", metavar="NPY", default=None, help="classifier bias (K,) as .npy (needs --weight)")
    parser.add_argument(
        "--bins",
        metavar="M",
        type=validation.integer_type("--bins", 1),
        default=DEFAULT_BINS,
        help=f"equal-width confidence bins of the ECE (default {DEFAULT_BINS})",
    )
    parser.add_argument(
        "--address",
        metavar="ADDRESS",
        default=None,
        help="a Dask scheduler to run on, e.g. tcp://host:8786 (default: a local cluster of --workers processes)",
    )
    parser.add_argument(
        "--workers",
        metavar="N",
        type=validation.integer_type("--workers", 1),
        default=None,
        help="worker processes of the local cluster (default: one per core; not with --address)",
    )
    _cli.add_output_flags(parser, "json", "force", "quiet")
    return parser


_QUIET_TRACKER = "ignore::UserWarning:multiprocessing.resource_tracker"


def _classifier(path, flag: str) -> np.ndarray | None:
    """The array of a small ``.npy`` file (header checked, its memory estimated first), or None."""
    if path is None:
        return None
    header = npy_header(path, flag)
    validation.allocation(f"{flag} {path}", header.nbytes / 8.0, f"{flag} of shape {header.shape}")
    return np.load(header.where, allow_pickle=False)


def report_text(result: ShardedAnalysis, where: str) -> str:
    """The text report: what was analysed and where, then one line per metric."""
    c = result.collapse
    lines = [f"{result.num_shards} shards, N = {c.num_samples}, d = {c.dim}, K = {c.num_classes}; on {where}", ""]
    for name, value in result.metrics.items():
        lines.append(f"{name:22s} {format_number(value)}" if math.isfinite(value) else f"{name:22s} undefined")
    return "\n".join(lines)


def main(argv=None) -> int:
    """Run the CLI on ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    with exit_on_interrupt(_prog.name("ufm.sharded")):  # SIGINT / SIGTERM: one line, exit 130 / 143 at once
        return _main(argv)


def _main(argv) -> int:
    parser = build_parser()
    args = _prog.start(parser, argv)
    if isinstance(args, int):
        return args
    try:
        if args.json is not None:
            _io.check_writable(args.json, overwrite=args.force, what="--json")
        if args.bias is not None and args.weight is None:
            raise ValueError("--bias needs --weight")
        if args.address is not None and args.workers is not None:
            raise ValueError("--workers does not apply with --address (the scheduler's workers run the tasks)")
        weight, bias = _classifier(args.weight, "--weight"), _classifier(args.bias, "--bias")
        where = args.address or f"a local cluster of {args.workers or os.cpu_count()} worker processes"
        # the local cluster's semaphores are cleaned by multiprocessing's resource tracker, a process that outlives
        # an interrupt's immediate exit (ufm._interrupt) and would add a warning after its one line; it is started
        # with this process's warning options
        if args.address is None and _QUIET_TRACKER not in sys.warnoptions:
            sys.warnoptions.append(_QUIET_TRACKER)
        if not args.quiet:
            print(f"analysing {args.features} on {where} ...", file=sys.stderr, flush=True)
        result = analyze_shards(
            (args.features, args.labels),
            num_classes=args.classes,
            weight=weight,
            bias=bias,
            address=args.address,
            workers=args.workers,
            n_bins=args.bins,
        )
    except (ValueError, OSError, ImportError) as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # the cluster's own failures (KilledWorker, a lost scheduler): one line
        text = (str(error).strip().splitlines() or [""])[0]
        print(f"{parser.prog}: error: the cluster failed: {type(error).__name__}: {text}", file=sys.stderr)
        return 1
    record = result.to_json()
    try:
        record["package_version"] = metadata.version("ufm-collapse")
    except metadata.PackageNotFoundError:
        record["package_version"] = "unknown"
    record["inputs"] = {key: getattr(args, key) for key in ("features", "labels", "weight", "bias", "address")}
    return _io.deliver(
        parser.prog,
        report_text(result, where),
        None if args.json is None else lambda: _io.write_json(args.json, record, overwrite=args.force, what="--json"),
        announce=None if args.quiet else sys.stderr,
    )


if __name__ == "__main__":
    sys.exit(main())
