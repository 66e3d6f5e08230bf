"""Estimate memory before allocating, and fail fast with the estimate and a way out.

A solve or a dense Hessian that does not fit is refused with a ``ValueError``
(message starting "not enough memory") that names the sizes responsible, the
estimate, the memory available, and what to do instead, rather than being
killed by the operating system halfway through.
"""

from __future__ import annotations

import os

import jax


def _host_free_bytes() -> int:
    try:
        with open("/proc/meminfo") as meminfo:
            fields = dict(line.split(":", 1) for line in meminfo)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def free_bytes(device=None) -> int:
    """Bytes free on ``device`` (default: JAX's first device): its allocator's limit on accelerators, host RAM on CPU."""
    device = jax.devices()[0] if device is None else device
    if device.platform != "cpu":
        stats = device.memory_stats() or {}
        if "bytes_limit" in stats:
            return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    return _host_free_bytes()


def require(needed_bytes: float, what: str, sizes: str, advice: str) -> None:
    """Raise ``ValueError`` if ``needed_bytes`` exceeds the free memory of the default device."""
    free = free_bytes()
    if needed_bytes > free:
        raise ValueError(f"not enough memory: {what} for {sizes} needs about {needed_bytes / 2**30:.3g} GiB "
                         f"but {free / 2**30:.3g} GiB are free on {jax.devices()[0].platform}; {advice}")


#: float-sized arrays of the parameter size P = d(K + N) + K held per method:
#: parameters, gradient, candidate and its gradient, optimizer state (L-BFGS keeps 10 pairs; "reduced"
#: holds only x_0, its full gradient and the lifted result at full size).
#: Calibrated on CPU, K = 10, n = 1e5, d = 10, float64: peak RSS grew by 1.00 GB (gd; estimate
#: 1.19 GiB), 3.0 GB (lbfgs; estimate 2.98 GiB) and 0.97 GB (reduced; estimate 1.04 GiB).
_COPIES = {"gd": 8, "momentum": 10, "nesterov": 10, "lbfgs": 32, "reduced": 6}


def solve_bytes(K: int, N: int, d: int, itemsize: int, method: str) -> float:
    """Estimated peak bytes of ``ufm.solve``: the copies of (W, H, b) plus ~8 K x N logit-sized temporaries."""
    parameters = float(d) * (K + N) + K
    return itemsize * (_COPIES.get(method, 32) * parameters + 8.0 * K * N)
