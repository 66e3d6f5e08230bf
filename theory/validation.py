"""The package-wide argument rules: one check, one message, for :mod:`theory`, :mod:`ufm` and the CLIs.

Internal API: not exported from :mod:`theory`; :mod:`ufm` may import it (the one part of
:mod:`theory` the solver modules use: rules about arguments, no formulas; ARCHITECTURE.md).
It imports numpy only, so :mod:`theory` keeps its rule of never importing :mod:`ufm`.

Every check raises :class:`ValueError` whose message names the parameter, the allowed range
and the offending value, so that a bad call fails at the boundary of the library instead of
deep inside numpy. The argparse types (:func:`number_type`, :func:`integer_type`) are thin
wrappers: they parse the text and apply the same check, so a CLI says what the library says
(argparse then prints it as ``<prog>: error: argument --x: <message>`` and exits 2).
The free host memory that :func:`allocation` compares with is read by :mod:`theory._host`.
"""

from __future__ import annotations

import argparse
import math
import numbers

import numpy as np

from theory import _host


def describe(value) -> str:
    """``value`` for a message: its repr, or its shape if it is an array."""
    arr = np.asarray(value) if not isinstance(value, str) else None
    if arr is not None and arr.ndim > 0:
        return f"an array of shape {arr.shape}"
    return repr(value)


def show(value: int) -> str:
    """An integer for a message: in full up to 30 digits, else its first digits and its length."""
    text = str(value)
    return text if len(text) <= 30 else f"{text[:4]}... ({len(text.lstrip('-'))} digits)"


def _finite(value) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # a Python int beyond the float range
        return False


def integer(name: str, value, minimum: int, maximum: int | None = None, *, float64: bool = False) -> int:
    """Return ``value`` as a Python int in ``[minimum, maximum]`` (``maximum`` None: no upper bound).

    Numpy integers and integral floats (``10.0``) are accepted; booleans, strings, arrays,
    fractional and non-finite numbers are not. Python ints of any size are compared exactly
    (never through float). ``float64=True``: also refuse integers beyond the float64 range,
    for a caller that computes with ``float(value)`` (the closed forms of :mod:`theory`).
    """
    bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be an integer {bound}, got {describe(value)}")
    if not isinstance(value, numbers.Integral) and not (_finite(value) and float(value).is_integer()):
        raise ValueError(f"{name} must be an integer {bound}, got {value!r}")
    # exact for integers of any size; otherwise an integral finite float (checked above)
    as_int = int(value) if isinstance(value, numbers.Integral) else int(float(value))
    if float64 and not _finite(as_int):
        raise ValueError(
            f"{name} must be an integer {bound} and below 2**1024 (the formulas use it as a "
            f"float64), got an integer of {len(str(abs(as_int)))} digits"
        )
    if as_int < minimum or (maximum is not None and as_int > maximum):
        raise ValueError(f"{name} must be an integer {bound}, got {show(as_int)}")
    return as_int


def interval(
    name: str,
    value,
    low: float,
    high: float | None = None,
    *,
    low_open: bool,
    high_open: bool = True,
    shown: str | None = None,
) -> float:
    """A single finite real number in the interval from ``low`` to ``high`` (None: no upper bound), each end
    open or closed; returned as a float. ``shown``: how to print the value in the message (default its repr)."""
    upper = "inf)" if high is None else f"{high:g}" + (")" if high_open else "]")
    text = ("(" if low_open else "[") + f"{low:g}, " + upper
    shown = repr(value) if shown is None else shown
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or not _finite(value):
        raise ValueError(f"{name} must be a finite number in {text}, got {shown}")
    value = float(value)
    too_low = value <= low if low_open else value < low
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        raise ValueError(f"{name} must be in {text}, got {shown}")
    return value


def _argparse_type(convert, check):
    """An argparse ``type``: ``check(value, text)`` of ``value = convert(text)`` (the text itself when it
    does not convert, so the check names what was typed); a ``ValueError`` becomes argparse's error."""

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            value = text
        try:
            return check(value, text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return parse


def number_type(name: str, low: float, high: float | None = None, *, low_open: bool = True, high_open: bool = True):
    """An argparse ``type``: the text as a float checked by :func:`interval` (``-0.0`` becomes ``0.0``,
    so reports and JSON never show "-0")."""
    return _argparse_type(
        float,
        lambda value, text: (
            interval(
                name,
                value,
                low,
                high,
                low_open=low_open,
                high_open=high_open,
                shown=None if isinstance(value, str) else text,
            )
            + 0.0
        ),
    )


def integer_type(name: str, minimum: int, maximum: int | None = None):
    """An argparse ``type``: the text as an int (decimal digits; ``"10.0"`` is refused) checked by :func:`integer`."""
    return _argparse_type(int, lambda value, text: integer(name, value, minimum, maximum))


def real_array(name: str, value, allowed: str) -> np.ndarray:
    """``value`` as a finite float64 array (any shape); ``allowed`` describes the range in the message."""
    if isinstance(value, (str, bytes)) or value is None:
        raise ValueError(f"{name} must be a real number with {allowed}, got {value!r}")
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number with {allowed}, got {describe(value)}") from None
    if not np.all(np.isfinite(arr)):
        raise ValueError(
            f"{name} must be finite with {allowed}, got {describe(value)}"
            + (f" = {value!r}" if arr.ndim == 0 else " containing nan/inf")
        )
    return arr


def array(name: str, value, ndim: int, *, shape: str | None = None, nonempty: bool = False) -> np.ndarray:
    """``value`` as a numpy array of real numbers (integer or floating dtype) with ``ndim`` axes, not copied:
    an array is returned as it is (a memory map stays one, its dtype is kept), anything else through
    ``np.asarray``. ``shape``: the expected shape as the message writes it (``"(N, K)"``; default
    ``"<ndim>-D"``); ``nonempty``: refuse an array with an empty axis. Values are not read (see
    :func:`finite_array`); None, text, objects, booleans and complex numbers are refused naming ``name``."""
    expected = f"a real array of shape {shape}" if shape else f"a {ndim}-D real array"
    if value is None or isinstance(value, (str, bytes)):
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    try:
        arr = value if isinstance(value, np.ndarray) else np.asarray(value)
    except (TypeError, ValueError) as error:  # e.g. ragged nested lists
        raise ValueError(f"{name} must be {expected} ({error})") from None
    if arr.dtype.kind not in "fiu" or arr.ndim != ndim or (nonempty and not arr.size):
        raise ValueError(
            f"{name} must be {expected}{' with no empty axis' if nonempty else ''}, "
            f"got dtype {arr.dtype} and shape {arr.shape}"
        )
    return arr


def finite_array(name: str, value) -> np.ndarray:
    """``value`` (a real array, :func:`array`) as float64 (no copy if it is one), NaN and inf refused with the
    index of the first."""
    arr = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        where = np.argwhere(~np.isfinite(arr))[0].tolist()
        raise ValueError(f"{name} must be finite, got NaN or inf at index {where}")
    return arr


def class_labels(name: str, labels: np.ndarray, K: int, *, K_is: str = "") -> np.ndarray:
    """``labels`` (a 1-D real array, :func:`array`) as int64 class indices in ``[0, K)``: integers, or floats
    with integral values. ``K_is``: what K is, for the message (``"columns of logits"``)."""
    if labels.dtype.kind == "f" and not np.all(np.isfinite(labels) & (labels == np.round(labels))):
        raise ValueError(f"{name} must be integers, got non-integer values of dtype {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= K):
        low, high = int(labels.min()), int(labels.max())
        what = f" (K = {K_is})" if K_is else ""
        raise ValueError(f"{name} must be in [0, K) = [0, {K}){what}, got values in [{low}, {high}]")
    return labels.astype(np.int64)


def _scalar_or_array(arr: np.ndarray):
    return float(arr) if arr.ndim == 0 else arr


def delta(value):
    """Smoothing parameter: finite, ``0 <= delta < 1`` (scalar or array)."""
    arr = real_array("delta", value, "0 <= delta < 1")
    if np.any(arr < 0.0) or np.any(arr >= 1.0):
        bad = arr[(arr < 0.0) | (arr >= 1.0)].ravel()[0]
        raise ValueError(f"delta must be in [0, 1), got {float(bad)!r}")  # the words of interval()
    return _scalar_or_array(arr)


def positive(name: str, value):
    """A regularization strength: finite and ``> 0`` (scalar or array)."""
    arr = real_array(name, value, f"{name} > 0")
    if np.any(arr <= 0.0):
        bad = arr[arr <= 0.0].ravel()[0]
        raise ValueError(f"{name} must be > 0, got {bad!r}")
    return _scalar_or_array(arr)


def classes_and_samples(K, n) -> tuple[int, int]:
    return integer("K", K, 2, float64=True), integer("n", n, 1, float64=True)


def dimension(d, K: int) -> int:
    d_int = integer("d", d, 1, float64=True)
    if d_int < K:
        raise ValueError(f"d must be an integer >= K = {K} (Theorem 4.1 needs d >= K), got {d_int}")
    return d_int


def allocation(what: str, floats: float, sizes: str) -> None:
    """Refuse, before allocating, a result of ``floats`` float64 numbers larger than free memory.

    ``sizes`` names the parameters responsible (e.g. ``"K = 100000, n = 5"``).
    """
    needed, free = 8.0 * float(floats), _host.free_bytes()
    if needed > free:
        raise ValueError(
            f"{what} for {sizes} needs {needed / 2**30:.3g} GiB, more than the {free / 2**30:.3g} GiB "
            "of free memory; reduce these sizes"
        )


def positive_scalar(name: str, value) -> float:
    """A single finite number ``> 0`` (arrays are refused)."""
    checked = positive(name, value)
    if np.ndim(checked) != 0:
        raise ValueError(f"{name} must be a single number > 0, got {describe(value)}")
    return float(checked)


def nonnegative_scalar(name: str, value) -> float:
    """A single finite number ``>= 0`` (arrays are refused)."""
    arr = real_array(name, value, f"{name} >= 0")
    if arr.ndim != 0 or float(arr) < 0.0:
        raise ValueError(f"{name} must be a real number >= 0, got {value!r}")
    return float(arr)


def semi_orthogonal(P, d: int, K: int) -> np.ndarray:
    """``P`` as a finite float64 ``(d, K)`` array with ``P^T P = I_K`` (to 1e-10, far above rounding)."""
    try:
        P = np.asarray(P, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("P must be a real (d, K) array with P^T P = I_K") from None
    if P.shape != (d, K):
        raise ValueError(f"P must have shape (d, K) = ({d}, {K}), got {P.shape}")
    if not np.all(np.isfinite(P)):
        raise ValueError("P must be finite (got nan/inf)")
    defect = np.max(np.abs(P.T @ P - np.eye(K)))
    if defect > 1e-10:
        raise ValueError(f"P must be semi-orthogonal (P^T P = I_K); max |P^T P - I| = {defect:.3e}")
    return P
