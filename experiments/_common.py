"""Shared plumbing of the experiments: arguments, seeded runs, atomic CSV/PNG output."""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

import jax
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import theory  # noqa: E402
import ufm  # noqa: E402
from ufm import _io  # noqa: E402
from ufm._interrupt import exit_on_interrupt  # noqa: E402


def parse_args(name: str, description: str, argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"python -m experiments.{name}", description=description)
    parser.add_argument("--out", default=f"results/{name}", help=f"output folder (default results/{name})")
    parser.add_argument("--quick", action="store_true", help="small settings (seconds on 2 CPU cores)")
    parser.add_argument("--force", action="store_true", help="overwrite existing outputs in --out")
    args = parser.parse_args(argv)
    jax.config.update("jax_enable_x64", True)  # experiments verify: float64
    args.out = Path(args.out)
    return args


class Outputs:
    """Writes each output atomically, refusing to overwrite unless ``force``."""

    def __init__(self, folder: Path, force: bool):
        self.folder, self.force, self.written = Path(folder), force, []

    def _target(self, name: str) -> Path:
        return _io.check_writable(self.folder / name, overwrite=self.force)

    def csv(self, name: str, rows: list[dict]) -> Path:
        path = self._target(name)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        self.written.append(_io.write_atomic(path, lambda handle: handle.write(buffer.getvalue().encode())))
        return path

    def figure(self, name: str, fig) -> Path:
        path = self._target(name)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
        plt.close(fig)
        self.written.append(_io.write_atomic(path, lambda handle: handle.write(buffer.getvalue())))
        return path

    def json(self, name: str, data) -> Path:
        path = self._target(name)
        self.written.append(_io.write_json(path, data))
        return path


def run(main_body, name: str, description: str, argv=None) -> int:
    """Parse arguments, run ``main_body(args, outputs)``, report what was written."""
    args = parse_args(name, description, argv)
    outputs = Outputs(args.out, args.force)
    try:
        with exit_on_interrupt(f"python -m experiments.{name}"):
            main_body(args, outputs)
    except (FileExistsError, IsADirectoryError) as error:
        print(f"python -m experiments.{name}: error: {error}", file=sys.stderr)
        return 2
    for path in outputs.written:
        print(f"wrote {path}")
    return 0


def gd_checkpoints(problem, lr: float, every: int, max_iters: int):
    """Plain gradient descent from ``problem.init()``, yielding ``(iteration, params)`` every ``every`` steps.

    Each segment is one compiled ``ufm.solve(..., "gd", max_iters=every)`` call
    restarted from the last iterate; GD has no state, so the trajectory is the
    same as one uninterrupted run. Raises ``RuntimeError`` if a segment diverges.
    """
    params, iteration = problem.init(), 0
    yield iteration, params
    while iteration < max_iters:
        # tol 1e-300: run exactly `every` steps (never met unless the gradient is exactly 0)
        result = ufm.solve(problem, "gd", lr=lr, tol=1e-300, max_iters=every, record_every=every, init=params)
        if result.status == "diverged":
            raise RuntimeError(f"gradient descent diverged near iteration {iteration}: {result.message}")
        iteration, params = iteration + result.iterations, result.params
        yield iteration, params


def logit_error(params, K: int, n: int, delta: float, lam_W: float, lam_H: float) -> float:
    """Distance to the closed-form optimum in logit space: ``||W^T Hbar - a M||_F / ||a M||_F``.

    ``Hbar: (d, K)`` are the class means of ``H``; ``a M`` is Theorem 4.1's
    ``Zbar``. Beyond the phase boundary (a = 0) the absolute distance is returned.
    """
    H_bar = np.asarray(ufm.class_means(params.H, ufm.class_major_labels(K, n), K))
    target = theory.a_delta(K, n, delta, lam_W, lam_H) * theory.simplex_projector(K)
    scale = np.linalg.norm(target)
    distance = np.linalg.norm(np.asarray(params.W).T @ H_bar - target)
    return float(distance / scale if scale > 0 else distance)
