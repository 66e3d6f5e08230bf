"""Estimate memory before allocating, and fail fast with the estimate and a way out.

A solve or a dense Hessian that does not fit is refused with a :class:`MemoryEstimateError` (a
``ValueError``, exported as ``ufm.MemoryEstimateError``; message starting "not enough memory") that names the
sizes responsible, the estimate, the memory available, and what to do instead, rather than being killed by
the operating system halfway through. What to do instead is structured where the caller knows it
(:class:`ufm.results.Alternative`: parameters and values with their estimates): the message names them as
Python keywords, and the command lines word the same error with their flags (:meth:`MemoryEstimateError.describe`
with :func:`ufm._cli.flag`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import jax

from theory import _host

if TYPE_CHECKING:
    from ufm.results import Alternative, Spelling


class MemoryEstimateError(ValueError):
    """A computation refused before allocating: its estimated peak memory exceeds what is free.

    A ``ValueError`` (``except ValueError`` catches it); its message names Python keywords.

    Attributes:
        estimate: the estimated peak bytes of what was asked.
        available: the bytes free on the device when it was refused (:func:`free_bytes`).
        advice: the :class:`~ufm.results.Alternative` runs that fit (each a tuple of
            :class:`~ufm.results.Advice`, parameters and values, with its estimated bytes), in the order
            offered; empty when the caller had none structured (then ``hint`` says what to do).
        what, sizes: what was refused and the sizes responsible (words of the message).
        hint: the caller's sentence on what to do instead, when it gave one rather than ``advice``.
        platform: the device's platform (``"cpu"``, ``"gpu"``).
    """

    def __init__(
        self,
        estimate: float,
        available: float,
        what: str,
        sizes: str,
        advice: Sequence[Alternative] = (),
        hint: str = "",
        platform: str = "cpu",
    ) -> None:
        self.estimate, self.available, self.what, self.sizes = float(estimate), available, what, sizes
        self.advice: tuple[Alternative, ...] = tuple(advice)
        self.hint, self.platform = hint, platform
        super().__init__(self.describe())

    def __reduce__(self):  # pickled with its fields (a Dask worker's error reaches the client whole)
        fields = (self.estimate, self.available, self.what, self.sizes, self.advice, self.hint, self.platform)
        return type(self), fields

    def describe(self, spell: Spelling | None = None, sep: str = ", ") -> str:
        """The message with the advice's parameters spelled by ``spell`` and joined by ``sep`` (default: the
        library's keywords, :func:`ufm.results.python_spelling`; the command lines: :func:`ufm._cli.flag`, " ")."""
        if self.advice:
            from ufm.results import python_spelling, word_alternative

            spell = python_spelling if spell is None else spell
            words = (f"{word_alternative(a, spell, sep)} (about {gib(a.nbytes)})" for a in self.advice)
            instead = "instead: " + "; or ".join(words)
        else:
            instead = self.hint or "reduce the sizes"
        return (
            f"not enough memory: {self.what} for {self.sizes} needs about {gib(self.estimate)} "
            f"but {gib(self.available)} are free on {self.platform}; {instead}"
        )


def free_bytes(device=None) -> int:
    """Bytes free on ``device`` (default: JAX's first device): its allocator's limit on accelerators, host RAM
    on CPU."""
    device = jax.devices()[0] if device is None else device
    if device.platform != "cpu":
        stats = device.memory_stats() or {}
        if "bytes_limit" in stats:
            return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    return _host.free_bytes()  # the package's one reader of free host memory


def fits(needed_bytes: float) -> bool:
    """Whether ``needed_bytes`` fits in the free memory of the default device now."""
    return needed_bytes <= free_bytes()


def gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:.3g} GiB"


def require(
    needed_bytes: float,
    what: str,
    sizes: str,
    advice: str | Sequence[Alternative] | Callable[[], str | Sequence[Alternative]],
) -> None:
    """Raise :class:`MemoryEstimateError` if ``needed_bytes`` exceeds the free memory of the default device.

    ``advice``: a sentence, or a sequence (or a function returning either, called only on refusal) of
    :class:`~ufm.results.Alternative` runs; then only the alternatives that fit are offered (each with its
    estimate), and the last entry, which should always fit (e.g. a smaller size computed to fit), stands
    alone when none of the others does ("reduce the sizes" when not even it fits).
    """
    free = free_bytes()
    if needed_bytes > free:
        advice = advice() if callable(advice) else advice
        platform = jax.devices()[0].platform
        if isinstance(advice, str):
            raise MemoryEstimateError(needed_bytes, free, what, sizes, hint=advice, platform=platform)
        fitting = tuple(a for a in advice if a.nbytes <= free)
        raise MemoryEstimateError(needed_bytes, free, what, sizes, fitting, platform=platform)


def largest_fitting(low: int, high: int, needed) -> int | None:
    """The largest integer ``m`` in ``[low, high]`` with ``fits(needed(m))`` (``needed`` increasing), or None."""
    free = free_bytes()
    if needed(low) > free:
        return None
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if needed(middle) <= free else (low, middle - 1)
    return low


def solve_bytes(K: int, N: int, d: int, itemsize: int, method, history_rows: int = 0) -> float:
    """Estimated peak bytes of ``ufm.solve`` with ``method`` (a name or :class:`ufm.methods.Method`): its
    :attr:`~ufm.methods.Method.memory_copies` of (W, H, b) plus ~8 K x N logit-sized temporaries and the
    recorded history (``history_rows`` rows of 8 numbers)."""
    from ufm.methods import method_spec

    parameters = float(d) * (K + N) + K
    return itemsize * (method_spec(method).memory_copies * parameters + 8.0 * K * N + 8.0 * history_rows)


def sweep_bytes(M: int, lanes: int, K: int, N: int, d: int, itemsize: int, method: str) -> float:
    """Estimated peak bytes of ``ufm.sweep``: the results of all ``M`` (W, H, b), twice (device and host),
    plus ``lanes`` configurations solving at once (:func:`solve_bytes` each)."""
    return 2.0 * itemsize * M * (float(d) * (K + N) + K) + lanes * solve_bytes(K, N, d, itemsize, method)


#: float-sized arrays of the (d, N) size held while :meth:`ufm.Problem.init` draws H: the drawn batch (up
#: to 1.25 times the entries), the sampler's random bits, and the copy trimmed to (d, N).
INIT_COPIES = 3.5


def init_bytes(K: int, N: int, d: int, itemsize: int) -> float:
    """Estimated peak bytes of :meth:`ufm.Problem.init`: W (d, K), b (K,) and ``INIT_COPIES`` times H (d, N)."""
    return itemsize * (INIT_COPIES * float(d) * N + 2.0 * float(d) * K + K)


#: Numbers held per Hessian-vector product of the objective, in units of the logits (K x N) and of the
#: parameters P = d(K + N) + K: the forward-over-reverse pass keeps the logits, the softmax, their
#: tangents and the cotangents. Calibrated on CPU (float64, K = 10, d = 10, n = 2000, a W-block
#: Hessian of 100 columns computed in one batch): peak RSS grew by ~1.9 GB for 100 products,
#: estimate 2.0 GiB (``tests/test_reliability_memory.py`` keeps the estimate above the measurement).
HVP_LOGIT_COPIES = 24
HVP_PARAMETER_COPIES = 6


def hvp_bytes(K: int, N: int, d: int, itemsize: int = 8) -> float:
    """Bytes of one Hessian-vector product of L (any block or all variables jointly)."""
    return itemsize * (HVP_LOGIT_COPIES * float(K) * N + HVP_PARAMETER_COPIES * (float(d) * (K + N) + K))


def dense_hessian_bytes(size: int, K: int, N: int, d: int, batch: int = 1, itemsize: int = 8) -> float:
    """A dense ``size x size`` Hessian built from ``batch`` Hessian-vector products at a time, then
    ``eigvalsh`` (the matrix, its host copy and LAPACK's workspace: 3 copies)."""
    return 3.0 * itemsize * float(size) ** 2 + batch * hvp_bytes(K, N, d, itemsize)


def lanczos_bytes(size: int, K: int, N: int, d: int, ncv: int = 20, itemsize: int = 8) -> float:
    """ARPACK's ``eigsh`` on Hessian-vector products: ``ncv`` Lanczos vectors of the block plus one product."""
    return itemsize * (ncv + 4.0) * size + hvp_bytes(K, N, d, itemsize)


#: Python objects per sweep configuration: its Problem (measured 0.29 kB with tracemalloc over a grid of
#: 2e4), its row dict and text of the written file (~1.5 kB, not measured); 4 kB keeps a margin.
SWEEP_BYTES_PER_CONFIGURATION = 4096.0
