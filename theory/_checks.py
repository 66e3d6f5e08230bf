"""Argument validation shared by every public function of :mod:`theory`.

Every check raises :class:`ValueError` whose message names the parameter, the
allowed range and the offending value, so that a bad call fails at the
boundary of the library instead of deep inside numpy.
"""

from __future__ import annotations

import numbers
import os

import numpy as np


def _describe(value) -> str:
    arr = np.asarray(value) if not isinstance(value, str) else None
    if arr is not None and arr.ndim > 0:
        return f"an array of shape {arr.shape}"
    return repr(value)


def integer(name: str, value, minimum: int) -> int:
    """Return ``value`` as a Python int, requiring ``value >= minimum``.

    Integral floats (``10.0``) are accepted; booleans, strings, fractional and
    non-finite numbers are not.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {_describe(value)}")
    try:
        as_float = float(value)
    except OverflowError:  # a Python int beyond float64: the formulas compute with float(value)
        digits = len(str(abs(int(value))))
        raise ValueError(f"{name} must be an integer >= {minimum} and below 2**1024 (the formulas use it as a "
                         f"float64), got an integer of {digits} digits") from None
    if not np.isfinite(as_float) or not as_float.is_integer():
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    as_int = int(value)
    if as_int < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {as_int}")
    return as_int


def _real_array(name: str, value, allowed: str) -> np.ndarray:
    if isinstance(value, (str, bytes)) or value is None:
        raise ValueError(f"{name} must be a real number with {allowed}, got {value!r}")
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            f"{name} must be a real number with {allowed}, got {_describe(value)}"
        ) from None
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite with {allowed}, got {_describe(value)}"
                         + (f" = {value!r}" if arr.ndim == 0 else " containing nan/inf"))
    return arr


def _scalar_or_array(arr: np.ndarray):
    return float(arr) if arr.ndim == 0 else arr


def delta(value):
    """Smoothing parameter: finite, ``0 <= delta < 1`` (scalar or array)."""
    arr = _real_array("delta", value, "0 <= delta < 1")
    if np.any(arr < 0.0) or np.any(arr >= 1.0):
        bad = arr[(arr < 0.0) | (arr >= 1.0)].ravel()[0]
        raise ValueError(f"delta must satisfy 0 <= delta < 1, got {bad!r}")
    return _scalar_or_array(arr)


def positive(name: str, value):
    """A regularization strength: finite and ``> 0`` (scalar or array)."""
    arr = _real_array(name, value, f"{name} > 0")
    if np.any(arr <= 0.0):
        bad = arr[arr <= 0.0].ravel()[0]
        raise ValueError(f"{name} must be > 0, got {bad!r}")
    return _scalar_or_array(arr)


def classes_and_samples(K, n) -> tuple[int, int]:
    return integer("K", K, 2), integer("n", n, 1)


def dimension(d, K: int) -> int:
    d_int = integer("d", d, 1)
    if d_int < K:
        raise ValueError(
            f"d must be an integer >= K = {K} (Theorem 4.1 needs d >= K), got {d_int}"
        )
    return d_int


def _free_bytes() -> int:
    """Memory the OS can give this process now (MemAvailable on Linux, else free pages)."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def allocation(what: str, floats: float, sizes: str) -> None:
    """Refuse, before allocating, a result of ``floats`` float64 numbers larger than free memory.

    ``sizes`` names the parameters responsible (e.g. ``"K = 100000, n = 5"``).
    """
    needed, free = 8.0 * float(floats), _free_bytes()
    if needed > free:
        raise ValueError(f"{what} for {sizes} needs {needed / 2**30:.3g} GiB, more than the {free / 2**30:.3g} GiB "
                         "of free memory; reduce these sizes")


def positive_scalar(name: str, value) -> float:
    """A single finite number ``> 0`` (arrays are refused)."""
    checked = positive(name, value)
    if np.ndim(checked) != 0:
        raise ValueError(f"{name} must be a single number > 0, got {_describe(value)}")
    return float(checked)
