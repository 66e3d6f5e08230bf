"""Shared plumbing of the experiments: arguments, seeded runs, atomic CSV/PNG output."""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ufm import _io  # noqa: E402


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
        main_body(args, outputs)
    except (FileExistsError, IsADirectoryError) as error:
        print(f"python -m experiments.{name}: error: {error}", file=sys.stderr)
        return 2
    for path in outputs.written:
        print(f"wrote {path}")
    return 0
