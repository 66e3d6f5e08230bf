"""The in-process cache of compiled programs: each ``jit`` program is lowered and compiled once per function,
argument shapes, dtypes and shardings and static arguments, and its compile time is reported once.

Internal API (:mod:`ufm.solver`, :mod:`ufm.sweep`): :func:`compile_once`. :func:`compiled_programs` is the
public introspection (``ufm.compiled_programs()``): what has been compiled in this process, for tests and
for users who want to know what a call cost, without reading the cache's keys.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

import jax


class Program(NamedTuple):
    """One compiled program: the ``function`` traced, its ``statics`` (static arguments, by name), the
    argument ``shapes`` (shape, dtype, sharding of every leaf), the ``compiled`` executable (its
    ``input_shardings`` say where the arguments live) and the ``seconds`` its tracing and compilation took."""

    function: Any
    statics: dict[str, Any]
    shapes: tuple
    compiled: Any
    seconds: float


_PROGRAMS: dict[Any, Program] = {}


def compile_once(function, args, statics) -> tuple[Any, float]:
    """``(compiled, compile seconds)`` of ``jit(function)`` for these argument shapes, dtypes and shardings and
    these static arguments; compiled once per key (seconds 0.0 afterwards)."""
    shapes = tuple((x.shape, str(x.dtype), str(getattr(x, "sharding", None))) for x in jax.tree_util.tree_leaves(args))
    key = (function, shapes, tuple(sorted((k, str(v)) for k, v in statics.items())))
    if key not in _PROGRAMS:
        start = time.perf_counter()
        lowered = jax.jit(function, static_argnames=tuple(statics)).lower(*args, **statics)
        compiled = lowered.compile()
        _PROGRAMS[key] = Program(function, dict(statics), shapes, compiled, time.perf_counter() - start)
        return compiled, _PROGRAMS[key].seconds
    return _PROGRAMS[key].compiled, 0.0


def compiled_programs(function=None) -> tuple[Program, ...]:
    """The programs compiled so far in this process, oldest first (only those of ``function`` when given)."""
    return tuple(p for p in _PROGRAMS.values() if function is None or p.function is function)
