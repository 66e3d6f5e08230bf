"""Run every experiment; each writes its figures and tables to ROOT/<name>/ (default results/<name>/).

``python -m experiments.run_all [--quick] [--out ROOT] [--force] [--format png|pdf|svg]``; the
exit code is the worst of the experiments' (4: an experiment's outputs could not be written). Each
experiment's outputs are written all at once at its end, so an interrupted run leaves the outputs of
the experiments that finished, complete, and none of the others: the interrupt line names the
finished ones.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from experiments import (
    _common,
    condition_number,
    convergence,
    imbalance,
    label_noise,
    label_noise_network,
    landscape,
    ls_empirical,
    md_model,
    norms_vs_delta,
    phase_diagram,
    real_network,
    speed_vs_kappa,
)
from experiments._common import add_format_argument, folder_name, plain, preflight
from ufm import _cache, _prog
from ufm._interrupt import exit_on_interrupt

#: every experiment, in the order of experiments/README.md: the UFM claims, the MD model, imbalance, real
#: networks and the empirical label-smoothing study
EXPERIMENTS = {
    "norms_vs_delta": norms_vs_delta,
    "convergence": convergence,
    "condition_number": condition_number,
    "speed_vs_kappa": speed_vs_kappa,
    "phase_diagram": phase_diagram,
    "landscape": landscape,
    "label_noise": label_noise,
    "md_model": md_model,
    "imbalance": imbalance,
    "real_network": real_network,
    "label_noise_network": label_noise_network,
    "ls_empirical": ls_empirical,
}


PROG = "python -m experiments.run_all"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=plain(__doc__.splitlines()[0]))
    parser.add_argument(
        "--out", metavar="ROOT", type=folder_name, default="results", help="root folder (default results)"
    )
    parser.add_argument("--quick", action="store_true", help="small settings (minutes on 2 CPU cores)")
    parser.add_argument("--force", action="store_true", help="overwrite existing outputs")
    add_format_argument(parser)
    _cache.add_argument(parser)
    return parser


def main(argv=None) -> int:
    """Check every output folder first (none may hold files unless ``--force``), then run each experiment."""
    prog = PROG
    with exit_on_interrupt(prog):  # SIGINT / SIGTERM between experiments too: one line, 130 / 143
        parser = build_parser()
        args = _prog.parse(parser, argv)  # --help to a reader that has gone: exit 141
        if isinstance(args, int):
            return args
        try:  # before any computation: a refusal leaves every folder as it was
            preflight([Path(args.out) / name for name in EXPERIMENTS], args.force)
        except OSError as error:
            print(f"{prog}: error: {error}", file=sys.stderr)
            return 2
        worst = 0
        complete: list[str] = []  # the experiments whose outputs are all written
        try:
            for name, module in EXPERIMENTS.items():
                # an interrupt from here on says which experiments' outputs are complete (in its program name)
                note = f" (run_all: the outputs of {', '.join(complete)} are complete)" if complete else ""
                _common.run_all_note = note
                start = time.perf_counter()
                argv_one = (
                    ["--out", str(Path(args.out) / name)]
                    + ["--quick"] * args.quick
                    + ["--force"] * args.force
                    + ["--no-cache"] * args.no_cache
                    + ["--format", args.format]
                )
                with exit_on_interrupt(prog + note):  # between experiments
                    code = module.main(argv_one)
                    print(f"[{name}] exit {code} in {time.perf_counter() - start:.1f} s")
                if code == 0:
                    complete.append(name)
                worst = max(worst, code)
        finally:
            _common.run_all_note = ""
    return worst


if __name__ == "__main__":
    raise SystemExit(main())
