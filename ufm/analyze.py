"""Command line: ``python -m ufm.analyze last_layer.npz --loss ls --delta 0.1 --lam-W 1e-3 --lam-H 1e-6``
(also ``ufm-analyze``).

Input: one ``.npz`` with keys ``features (N, d)``, ``labels (N,)``, ``weight (K, d)`` and optionally
``bias (K,)`` (the layout of ``torch.nn.Linear``), or separate ``.npy`` files (``--features
--labels --weight [--bias]``; features are memory-mapped and streamed, so they need not fit in
memory twice). Optional training setup (``--loss --delta --gamma --lam-W --lam-H --lam-b``)
adds the UFM prediction and its errors; ``--test test.npz`` (keys ``features``, ``labels``) adds the
held-out collapse of a test set against the training class means and classifier. With d < K the
prediction is the numerical UFM optimum (the best of ``--restarts`` seeded restarts, :mod:`ufm.generalized`;
no closed form exists there) and the generalized-collapse metrics are measured and compared. Prints a
report ending in a ``VERDICT:`` line (at the UFM minimizer within ``--rtol``, not at it, or no prediction
applies, and why); ``--json PATH`` writes top-level ``measured``, ``predicted``, ``error``,
``held_out``, ``verdict`` (and context) atomically. The report and the JSON go through
:func:`ufm._io.deliver`, as every command line's do. Exit codes (``--help``'s epilog, from
:func:`ufm._cli.exit_codes`): 0 on success whatever the verdict (a trained network need not be at the
minimizer: the verdict is a measurement, not a failure), 2 for bad arguments or bad files (one ``error:``
line naming the key or flag), 4 when the result was computed but the report or the ``--json`` file could
not be written (one ``error:`` line naming the path; the JSON kept in the temporary folder), 130 / 143 on
SIGINT / SIGTERM, 141 when the reader of standard output went away.

Files are judged by what they declare before any data are read (:func:`read_header`, :class:`_Npz`): the
.npy header of each file or .npz member (streamed from its first bytes), numbers only (pickled data are
never loaded), the declared bytes against what the file or the member's declared uncompressed size
holds, and the memory of the declared shapes (:func:`ufm.last_layer.memory_bytes` plus the arrays read
into memory) against the free memory, so a forged header or a zip bomb is refused before inflating.

The library is :func:`ufm.last_layer.analyze`. This module is also callable:
``ufm.analyze(...)`` is that function whether or not this CLI module has been imported
(importing it rebinds the package attribute ``ufm.analyze`` to this module, hence
``__call__``; see :mod:`ufm.last_layer` for why the two live apart).
"""

from __future__ import annotations

import argparse
import math
import sys
import types
import zipfile
import zlib
from importlib import metadata

import numpy as np

from theory import validation
from ufm import _cache, _cli, _io, _memory, _prog
from ufm._format import format_number
from ufm._interrupt import exit_on_interrupt
from ufm._npy import NPY_MAGIC, ZIP_MAGIC, Declared, InputError, file_header, read_header, sanitised, too_short
from ufm.generalized import DEFAULT_RESTARTS, MAX_RESTARTS
from ufm.last_layer import (
    DEFAULT_RTOL,
    PREDICTION_NUMERICAL,
    SOURCES,
    Analysis,
    analyze,
    default_chunk_size,
    memory_bytes,
)
from ufm.losses import CONVEX_LOSSES, loss_spec

PROG = "python -m ufm.analyze"  #: the name as a module; ``ufm-analyze`` when started by that script
KEYS = ("features", "labels", "weight", "bias")
_CONVEX = "/".join(CONVEX_LOSSES)  #: "ce/ls/mse": the losses of the d < K numerical prediction
TEST_KEYS = ("features", "labels")

EPILOG = """\
verdict: the UFM prediction is for the minimizer of the UFM objective (Guo et al. Thm 4.1/4.2); a
trained last layer is there only if training reached it. The last line says "at the minimizer
within rtol" (every judged error <= --rtol: relative for non-zero predictions, absolute for NC1-NC3
and the bias), "not at the minimizer: worst error X in Y", or "no prediction applies: reasons".
d < K: no closed form exists; the prediction is the numerical UFM optimum for the observed class sizes
(best of --restarts seeded restarts), each row judged within rtol + its restart spread, including the
generalized-collapse metrics (one-vs-rest margin, Riesz energies, classifier-mean alignment).
kappa: over the eigenvalues the theorem predicts to be non-zero (the rest is reported as the
residue); kappa_H is compared at the class means, kappa_H_point (at the features) is informative.
""" + _cli.exit_codes(
    (0, "the analysis ran, whatever the verdict (a network not at the minimizer is a measurement, not an error)"),
    bad_input="bad arguments or bad files: one error: line naming the key or flag; no file written",
)


# argparse types: the library's own checks and messages (theory.validation: one rule, one message)
_number = validation.number_type
_chunk_size = validation.integer_type("--chunk-size", 1)
_restarts = validation.integer_type("--restarts", 1, MAX_RESTARTS)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_prog.name("ufm.analyze", "ufm-analyze"),
        description="Neural-collapse analysis of a trained network's last layer (NC1-NC3 as Guo et al. "
        "eqs. 4-6, their common variants, norms, logit scale, p_t/p_n, accuracy) and, given the "
        "training setup, the unconstrained-feature-model prediction with relative errors.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    data = parser.add_argument_group("input (one .npz, or .npy files)")
    data.add_argument(
        "npz",
        nargs="?",
        default=None,
        help=".npz with keys features (N, d), labels (N,), weight (K, d) and optionally bias (K,)",
    )
    for key, shape in zip(KEYS, ("(N, d), memory-mapped", "(N,) integers", "(K, d)", "(K,), optional"), strict=True):
        data.add_argument(f"--{key}", metavar="NPY", default=None, help=f".npy file with {key} {shape}")
    data.add_argument(
        "--test",
        metavar="NPZ",
        default=None,
        help="held-out set: .npz with keys features (M, d), labels (M,), measured against the training "
        "class means and classifier (default: none)",
    )
    setup = parser.add_argument_group("training setup (for the prediction)")
    _cli.add_problem_flags(setup, "loss")
    setup.add_argument(
        "--lam-W",
        type=_number("--lam-W", 0.0),
        default=None,
        help="lam_W/2 ||W||^2 during training (> 0; with --lam-H switches the prediction on; "
        "default: none, no prediction)",
    )
    setup.add_argument(
        "--lam-H",
        type=_number("--lam-H", 0.0),
        default=None,
        help="lam_H/2 ||H||^2 on the training features (> 0; default: none, no prediction)",
    )
    setup.add_argument(
        "--lam-b",
        type=_number("--lam-b", 0.0, low_open=False),
        default=None,
        help="lam_b/2 ||b||^2 (>= 0; needed for --loss mse; default: none, taken as 0)",
    )
    run = parser.add_argument_group("computation and output")
    run.add_argument(
        "--chunk-size",
        type=_chunk_size,
        default=None,
        help="rows per chunk of the streaming passes (default: ~64 MB of float64 work)",
    )
    run.add_argument(
        "--spectra",
        choices=("auto", "on", "off"),
        default="auto",
        help="loss-term Hessian blocks: auto = only for small d N (default), on, off",
    )
    run.add_argument(
        "--rtol",
        type=_number("--rtol", 0.0, 1.0),
        default=DEFAULT_RTOL,
        help=f"tolerance of the verdict, in (0, 1) (default {DEFAULT_RTOL:g}, as ufm.solve in float64)",
    )
    run.add_argument(
        "--restarts",
        type=_restarts,
        default=None,
        metavar="R",
        help=f"d < K only (with --lam-W/--lam-H, loss {_CONVEX}): seeded restarts of the class-mean solve whose "
        f"best is the numerical prediction (1 to {MAX_RESTARTS}; default {DEFAULT_RESTARTS}, as ufm.solve)",
    )
    _cli.add_output_flags(run, "json", "force", "quiet")
    _cache.add_argument(parser)
    return parser


# ----------------------------------------------------------------------------- reading files
#
# Every input is judged from what its header declares before any of its data is read: the .npy magic
# and header (numpy.lib.format, read from the first bytes of the file or streamed from the start of a
# .npz member, never by loading it), the dtype (numbers only: object arrays are refused, never
# unpickled), the declared size against what the file (or the zip member's declared uncompressed size)
# holds, and the memory the arrays and the analysis need against what is free. A .npz member is then
# inflated by zipfile, which stops at the member's declared size: a zip bomb is refused from its
# declaration, before inflating.


def _load_npy(declared: Declared, key: str, mmap: bool):
    try:
        return np.load(declared.where, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise InputError(f"{key}: cannot read {declared.where} as .npy ({sanitised(error)})") from None


class _Npz:
    """An .npz archive opened for its headers: ``members`` (key -> ZipInfo, the ``.npy`` suffix dropped, as
    ``np.load``'s keys), ``declared`` (key -> :class:`Declared`) for the keys asked for."""

    def __init__(self, path: str, prefix: str, keys, required, needs: str):
        self.path, self.prefix = path, prefix
        try:
            with open(path, "rb") as handle:
                head = handle.read(len(NPY_MAGIC))
        except OSError as error:
            raise InputError(f"{prefix}cannot read {path} as .npz ({error.strerror or error})") from None
        if head == NPY_MAGIC:
            raise InputError(f"{prefix}{path} is a single array, not an .npz with keys {', '.join(keys)}")
        if head[:4] not in ZIP_MAGIC:
            raise InputError(f"{prefix}cannot read {path} as .npz: it is not a zip archive (no zip signature)")
        try:
            self.zip = zipfile.ZipFile(path)
        except (OSError, zipfile.BadZipFile, ValueError, EOFError) as error:
            raise InputError(f"{prefix}cannot read {path} as .npz ({sanitised(error)})") from None
        self.members = {info.filename.removesuffix(".npy"): info for info in self.zip.infolist()}
        for key in required:
            if key not in self.members:
                raise InputError(
                    f"{prefix}{key}: missing key {key!r} in {path} (has {sorted(self.members)}; needs {needs})"
                )
        self.declared = {key: self._header(key) for key in keys if key in self.members}

    def _header(self, key: str) -> Declared:
        info = self.members[key]
        where = f"member {info.filename} of {self.path}"
        if info.flag_bits & 0x1:
            raise InputError(f"{self.prefix}{key}: {where} is encrypted")
        try:
            with self.zip.open(info) as member:
                declared = read_header(member, where, f"{self.prefix}{key}")
        except (OSError, zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError, EOFError) as error:
            raise InputError(f"{self.prefix}{key}: cannot read {where} ({sanitised(error)})") from None
        # zipfile inflates at most the declared uncompressed size: the data must fit in it
        too_short(declared, info.file_size, f"{self.prefix}{key}", "its declared uncompressed size holds")
        return declared

    def load(self, key: str) -> np.ndarray:
        """The array of ``key``, inflated (at most its declared size: checked against memory before)."""
        try:
            with self.zip.open(self.members[key]) as member:
                return np.lib.format.read_array(member, allow_pickle=False)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, RuntimeError) as error:
            raise InputError(f"{self.prefix}cannot read the arrays of {self.path} ({sanitised(error)})") from None


def _declared_inputs(args) -> tuple[dict, dict]:
    """``(declared, sources)``: every input's header (key -> :class:`Declared`; test arrays as
    ``test_features``/``test_labels``), and how each is read (key -> an :class:`_Npz` or ``"mmap"`` / ``"load"``)."""
    separate = [key for key in KEYS if getattr(args, key)]
    if args.npz and separate:
        raise InputError(f"give either an .npz or --{'/--'.join(separate)} .npy files, not both")
    declared: dict = {}
    sources: dict = {}
    if args.npz:
        archive = _Npz(args.npz, "", KEYS, KEYS[:3], "features, labels, weight, optionally bias")
        declared.update(archive.declared)
        sources.update(dict.fromkeys(archive.declared, archive))
    else:
        missing = [key for key in KEYS[:3] if not getattr(args, key)]
        if missing:
            raise InputError(f"{missing[0]}: no input: give an .npz or --features, --labels and --weight .npy files")
        for key in separate:
            declared[key] = file_header(getattr(args, key), key)
            sources[key] = "mmap" if key in ("features", "labels") else "load"
    if args.test:
        test = _Npz(args.test, "--test: ", TEST_KEYS, TEST_KEYS, "features, labels")
        for key in TEST_KEYS:
            declared[f"test_{key}"] = test.declared[key]
            sources[f"test_{key}"] = (test, key)
    return declared, sources


def _require_memory(declared: dict, sources: dict, chunk_size) -> None:
    """Refuse, before anything is read, inputs whose declared arrays (those read into memory) and the analysis
    (:func:`ufm.last_layer.memory_bytes` of the declared shapes) do not fit in the free memory."""
    loaded = {key: d.nbytes for key, d in declared.items() if sources[key] != "mmap"}
    features, weight = declared["features"], declared["weight"]
    work = 0.0
    if len(features.shape) == 2 and len(weight.shape) == 2 and features.shape[0] >= 1 and weight.shape[0] >= 2:
        (N, d), K = features.shape, weight.shape[0]
        test = declared.get("test_features")
        M = test.shape[0] if test is not None and len(test.shape) == 2 else 0
        chunk = min(default_chunk_size(d, K) if chunk_size is None else chunk_size, N)
        floats = any(declared[k].dtype.kind == "f" for k in ("labels", "test_labels") if k in declared)
        # without the d < K measurements: the library skips them, with the reason, where they do not fit
        work = memory_bytes(N, d, K, chunk, M, itemsize=features.dtype.itemsize, float_labels=floats, gnc=False)
    largest = max(loaded, key=lambda key: loaded[key], default=None)
    read = (
        f"; reading {_memory.gib(sum(loaded.values()))} into memory (largest: {largest}, {declared[largest].where} "
        f"declares shape {declared[largest].shape} of {declared[largest].dtype})"
        if largest
        else ""
    )
    _memory.require(
        sum(loaded.values()) + work,
        f"the analysis ({_memory.gib(work)}, estimated from the declared shapes before reading any data){read}",
        ", ".join(f"{key} {d.shape}" for key, d in declared.items()),
        "pass the features as a .npy file (--features, memory-mapped) or a smaller --chunk-size",
    )


def load_inputs(args) -> dict:
    """The arrays named by the arguments, from the .npz (keys checked) or the .npy files (features and labels
    memory-mapped), after every header was checked and the memory they and the analysis need was
    estimated from the declared shapes (:func:`_require_memory`)."""
    declared, sources = _declared_inputs(args)
    _require_memory(declared, sources, args.chunk_size)
    arrays = {}
    for key, source in sources.items():
        if isinstance(source, tuple):
            arrays[key] = source[0].load(source[1])
        elif isinstance(source, _Npz):
            arrays[key] = source.load(key)
        else:
            arrays[key] = _load_npy(declared[key], key, source == "mmap")
    return arrays


def _fmt(value) -> str:
    """A computed number of the report in the one format (:func:`ufm._format.format_number`); a value that
    does not exist as ``undefined`` (never NaN or inf as a number)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "undefined"
    return format_number(value)


def _block_line(name: str, info: dict) -> str:
    """One Hessian block of the report: where, method, lambda_max, kappa with its rule, residue."""
    where = {"W": "W", "H": "H (at the features)", "H_class_means": "H (at the class means)"}[name]
    if "skipped" in info:
        return f"  {where}: skipped ({info['skipped']})"
    text = f"  {where}: {info['method']}, lambda_max = {_fmt(info['lambda_max'])}, kappa = {_fmt(info['kappa'])}"
    if "rule" in info:
        text += f" over {info['rule']}"
    if info.get("residue") is not None:
        text += f"; residue (largest eigenvalue predicted zero) {_fmt(info['residue'])}"
        if info.get("residue_ratio") is not None:
            text += f" = {info['residue_ratio']:.2e} x the smallest kept"
    if "values" in info and len(info["values"]) <= 8:
        pairs = zip(info["values"], info["multiplicities"], strict=True)
        text += "; " + ", ".join(f"{_fmt(v)} x{m}" for v, m in pairs)
    text += (
        "; Thm 4.2's block" if info.get("compared") else "; informative (includes the per-sample probabilities' spread)"
    )
    return text


def _held_out_lines(held: dict) -> list[str]:
    if not held:
        return []
    lines = [
        "",
        f"Held-out set (M = {held['N']}), against the training class means and classifier:",
        f"  accuracy {_fmt(held['accuracy'])}, NCC accuracy {_fmt(held['ncc_accuracy'])}, "
        f"NC1 {_fmt(held['nc1'])}, mean loss {_fmt(held['loss'])}, mean entropy {_fmt(held['entropy'])}",
    ]
    for group in ("correct", "incorrect"):
        g = held[group]
        lines.append(
            f"  {group:9s}: {g['count']} samples, NC1 {_fmt(g['nc1'])}"
            + (f" (around the predicted class: {_fmt(g['nc1_predicted'])})" if group == "incorrect" else "")
            + f", mean loss {_fmt(g['loss'])}, mean entropy {_fmt(g['entropy'])}"
        )
    lines.append(f"  ({held['convention']})")
    lines += [f"  note: {note}" for note in held["notes"]]
    return lines


def _generalized_lines(result: Analysis) -> list[str]:
    """d < K: the restarts behind the numerical prediction, its certificate, or why it was skipped; the GNC
    measurements' skip reason."""
    info = result.generalized
    lines = []
    if "restarts" in info:
        seeds, values = info["seeds"], info["objectives"]
        usable = sum(status in ("converged", "stalled") for status in info["statuses"])
        lines.append(
            f"d < K prediction (ufm.generalized): best of {info['restarts']} seeded restarts (seeds {seeds[0]}.."
            f"{seeds[-1]}): L = {_fmt(info['objective'])} (seed {info['best_seed']}); {usable} converged, "
            f"{info['agreeing']} within rtol {info['rtol']:g} of the best; L over all restarts {_fmt(min(values))} "
            f"to {_fmt(max(values))}"
        )
        proof = info["certificate"]
        if proof is None:
            lines.append(f"  certificate: {info['certificate_note']}")
        else:
            lines.append(
                f"  certificate gap {proof['gap']:.3g} (L minus the lower bound {_fmt(proof['lower'])} of the convex "
                "relaxation: the best restart is at most this above the global minimum"
                + (
                    f"; the relaxation's minimizer has rank {proof['rank']} > d = {proof['d']}: it bounds, it does not "
                    "certify)"
                    if proof["rank"] > proof["d"]
                    else ")"
                )
            )
        if result.spread:
            lines.append("  each judged row: tolerance rtol + the restart spread of its quantity ([tol ...] below)")
    if "skipped" in info:
        lines.append(f"d < K prediction: skipped ({info['skipped']})")
    if "gnc_skipped" in info:
        lines.append(f"GNC metrics (d < K): not measured ({info['gnc_skipped']})")
    return lines


def _parameters(setup: dict) -> str:
    """`` (delta = 0.1)``: the loss's parameters (:attr:`ufm.losses.Loss.parameters`) for the Setup line."""
    shown = ", ".join(f"{p} = {setup[p]:g}" for p in loss_spec(setup["loss"]).parameters)
    return f" ({shown})" if shown else ""


def report_text(result: Analysis, rtol: float = DEFAULT_RTOL) -> str:
    """The text report: data, table of measured / predicted / error, reasons, Hessian blocks, held-out
    set, verdict (:meth:`~ufm.last_layer.Analysis.verdict` at ``rtol``)."""
    counts = result.counts
    lines = [
        f"Last layer: N = {result.N}, d = {result.d}, K = {result.K}; samples per class "
        + (f"{counts[0]} (balanced)" if result.balanced else f"{min(counts)} to {max(counts)} (imbalanced)")
    ]
    if result.setup:
        s = result.setup
        lines.append(
            "Setup: loss "
            + s["loss"]
            + _parameters(s)
            + f", lam_W = {s['lam_W']:g}, lam_H = {s['lam_H']:g}"
            + ("" if s["lam_b"] is None else f", lam_b = {s['lam_b']:g}")
        )
    else:
        lines.append("Setup: not given (pass --lam-W and --lam-H, and the loss, for the UFM prediction)")
    if result.prediction_kind:
        lines.append(
            f"UFM prediction: {result.prediction_kind}"
            + (" (computed by the solver, not closed-form)" if result.prediction_kind == PREDICTION_NUMERICAL else "")
            + "; it describes the minimizer of the UFM objective, which this last layer reaches only if "
            "training did (see the verdict)"
        )
    lines += _generalized_lines(result)
    lines += ["", f"{'quantity':14s} {'measured':>16s} {'UFM':>16s} {'error':>14s}  source"]
    for name, value in result.measured.items():
        predicted = result.predicted.get(name)
        error = result.error.get(name)
        kind = "" if error is None else (" rel" if result.relative.get(name) else " abs")
        shown = "undefined" if value is None else _fmt(value)
        tolerance = f" [tol rtol + spread {result.spread[name]:.1e}]" if name in result.spread else ""
        lines.append(
            f"{name:14s} {shown:>16s} {_fmt(predicted):>16s} "
            f"{('-' if error is None else f'{error:.2e}{kind}'):>14s}  {SOURCES.get(name, '')}{tolerance}"
        )
    for name, reason in result.undefined.items():
        lines.append(f"undefined: {name}: {reason}")
    for reason in result.not_applicable:
        lines.append(f"does not apply: {reason}")
    spectra = result.spectra
    if "skipped" in spectra:
        lines.append(f"\nHessian blocks: skipped ({spectra['skipped']})")
    else:
        lines.append(f"\nLoss-term Hessian blocks ({spectra.get('dtype')}); K p_t = {_fmt(spectra.get('K_p_t'))}:")
        lines += [
            _block_line(name, spectra.get(name, {"skipped": "not computed"})) for name in ("W", "H", "H_class_means")
        ]
    lines += _held_out_lines(result.held_out)
    lines += ["", f"VERDICT: {result.verdict(rtol)['text']}"]
    return "\n".join(lines)


def _record(result: Analysis, args) -> dict:
    try:
        version = metadata.version("ufm-collapse")
    except metadata.PackageNotFoundError:
        version = "unknown"
    record = result.to_json(args.rtol)
    record["package_version"] = version
    record["inputs"] = {key: getattr(args, key) for key in ("npz", *KEYS, "test") if getattr(args, key)}
    return record


def main(argv=None) -> int:
    """Run the CLI on ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    with exit_on_interrupt(_prog.name("ufm.analyze", "ufm-analyze")):  # SIGINT / SIGTERM: one line, exit at once
        return _main(argv)


def _main(argv) -> int:
    parser = build_parser()
    args = _prog.start(parser, argv)
    if isinstance(args, int):
        return args
    try:
        _cli.resolve_loss_flags(args)  # --loss ls by default; a loss parameter of another loss is refused
        if args.json is not None:
            _io.check_writable(args.json, overwrite=args.force, what="--json")
        arrays = load_inputs(args)
        _check_restarts(args, arrays)
        if not args.quiet:
            features = arrays["features"]
            print(f"analysing {getattr(features, 'shape', '?')} features ...", file=sys.stderr, flush=True)
        result = analyze(
            arrays["features"],
            arrays["labels"],
            arrays["weight"],
            arrays.get("bias"),
            loss=args.loss,
            delta=args.delta,
            gamma=args.gamma,
            mse_kappa=args.mse_kappa,
            mse_beta=args.mse_beta,
            lam_W=args.lam_W,
            lam_H=args.lam_H,
            lam_b=args.lam_b,
            chunk_size=args.chunk_size,
            spectra={"auto": "auto", "on": True, "off": False}[args.spectra],
            test_features=arrays.get("test_features"),
            test_labels=arrays.get("test_labels"),
            restarts=args.restarts,
        )
    except (ValueError, OSError) as error:
        flag = "--test: " if str(error).startswith("test_") else ""  # the library names test_features/labels
        print(f"{parser.prog}: error: {flag}{error}", file=sys.stderr)
        return 2
    record = _record(result, args)
    return _io.deliver(  # the report, then the JSON whatever became of the report; exit 4 if one failed
        parser.prog,
        report_text(result, args.rtol),
        None if args.json is None else lambda: _io.write_json(args.json, record, overwrite=args.force, what="--json"),
        code=0,
        announce=None if args.quiet else sys.stderr,
    )


def _check_restarts(args, arrays: dict) -> None:
    """Refuse ``--restarts`` where no d < K prediction is computed (as ``ufm.solve`` does); fill the default."""
    features: tuple = getattr(arrays["features"], "shape", ())
    weight: tuple = getattr(arrays["weight"], "shape", ())
    if args.restarts is not None and len(features) == 2 and len(weight) == 2:
        d, K = features[1], weight[0]
        if not (d < K and args.lam_W is not None and loss_spec(args.loss).convex_in_logits):
            raise InputError(
                f"--restarts applies only for d < K with --lam-W/--lam-H and loss {_CONVEX} (there the numerical "
                f"optimum is the prediction); got d = {d}, K = {K}, loss {args.loss}"
                + ("" if args.lam_W is not None else ", no --lam-W")
            )
    if args.restarts is None:
        args.restarts = DEFAULT_RESTARTS


class _CallableModule(types.ModuleType):
    """Lets ``ufm.analyze(features, labels, weight, ...)`` call the library although ``ufm.analyze``
    is also this CLI module."""

    def __call__(self, *args, **kwargs):
        return analyze(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

if __name__ == "__main__":
    sys.exit(main())
