"""Exact blockwise Hessian spectra (Theorem 4.2, loss term phi) at CIFAR-100 size.

``python benchmarks/spectra_at_scale.py [--K 100 --n 5000 --d 512]``: builds the
global minimizer of Theorem 4.1 (float64), computes every eigenvalue of the W block
(dK x dK) and of the H block (dN x dN) with multiplicities by
``ufm.block_spectrum(method="structured")`` and checks them against
``theory.hessian_spectrum``. Prints time, peak memory (ru_maxrss of the process) and
the relative error of the distinct eigenvalues and their multiplicities. The
baseline row is the old structured path (per-sample K x K logit Hessians via
``jax.hessian`` and an rK x rK ``eigh``), run only on a smaller size where it fits.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import theory  # noqa: E402
import ufm  # noqa: E402
from benchmarks._common import machine, peak_rss_gib, print_table  # noqa: E402

DELTA, LAM = 0.1, 5e-5  # c = sqrt(KN) lam + delta = 0.45 < 1 at K=100, n=5000: a non-zero minimizer


def check(K, n, d, block, spectrum):
    """Largest relative error of the distinct eigenvalues against theory; multiplicities equal?"""
    predicted = getattr(theory.hessian_spectrum(K, n, d, delta=DELTA, lam_W=LAM, lam_H=LAM), block)
    values, counts = spectrum.distinct(rtol=1e-6)
    if values.shape != predicted.values.shape or not np.array_equal(counts, predicted.multiplicities):
        return float("inf"), False
    scale = np.max(np.abs(predicted.values))
    return float(np.max(np.abs(values - predicted.values)) / scale), True


def old_structured(params, labels, weights, block):
    """The first structured path (kept here as the baseline): every per-sample
    K x K logit Hessian by ``vmap(jax.hessian)``, then N K x K ``eigh`` (H block) or one
    dense rK x rK ``eigh`` (W block)."""
    d, K = params.W.shape
    N = params.H.shape[1]
    S = ufm.logit_hessians(params, labels, weights)
    if block == "H":
        _, R = jnp.linalg.qr(params.W)
        blocks = jnp.einsum("ak,ikl,bl->iab", R, S, R) / N
        return np.concatenate([np.asarray(jnp.linalg.eigvalsh(blocks)).ravel(), np.zeros(N * (d - K))])
    U, sigma, _ = jnp.linalg.svd(params.H, full_matrices=False)
    r = int(jnp.sum(sigma > 1e-8 * sigma[0]))
    G = U[:, :r].T @ params.H
    reduced = jnp.einsum("ai,bi,ikl->akbl", G, G, S).reshape(r * K, r * K) / N
    return np.sort(np.concatenate([np.asarray(jnp.linalg.eigvalsh(reduced)), np.zeros((d - r) * K)]))


def point(K, n, d):
    W, H, b = theory.global_minimizer(K, n, d, delta=DELTA, lam_W=LAM, lam_H=LAM)
    params = ufm.Params(jnp.asarray(W), jnp.asarray(H), jnp.asarray(b))
    weights = ufm.Weights(*(jnp.float64(x) for x in (DELTA, LAM, LAM, LAM)))
    return params, ufm.class_major_labels(K, n), weights


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--K", type=int, default=100)
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--d", type=int, default=512)
    parser.add_argument(
        "--baseline-n",
        type=int,
        default=2,
        help="n of the old-path baseline (K, d as above; 0 skips it: ~10 min at K = 100)",
    )
    args = parser.parse_args(argv)
    print(f"machine: {machine()}; OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}")
    rows = []
    runs = [("new structured path", args.n, False)]
    if args.baseline_n:
        runs = [
            ("old structured path (baseline)", args.baseline_n, True),
            ("new structured path, same size", args.baseline_n, False),
        ] + runs
    for label, n, old in runs:
        params, labels, weights = point(args.K, n, args.d)
        for block in ("W", "H"):
            start = time.perf_counter()
            if old:
                values = old_structured(params, labels, weights, block)
                spectrum = ufm.EigenvalueCounts(values, np.ones(values.size, np.int64), "structured")
            else:
                spectrum = ufm.block_spectrum(params, labels, weights, block, method="structured")
            seconds = time.perf_counter() - start
            err, ok = check(args.K, n, args.d, block, spectrum)
            size = spectrum.size
            rows.append(
                [
                    label,
                    f"K={args.K} n={n} d={args.d}",
                    block,
                    f"{size:.3g}",
                    seconds,
                    f"{peak_rss_gib():.2f}",
                    f"{err:.1e}",
                    "yes" if ok else "NO",
                    f"{spectrum.error_bound:.1e}",
                ]
            )
        del params
    print_table(
        [
            "path",
            "size",
            "block",
            "block dim",
            "seconds",
            "peak RSS GiB (process)",
            "max rel err vs theory",
            "multiplicities equal",
            "merge bound",
        ],
        rows,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
