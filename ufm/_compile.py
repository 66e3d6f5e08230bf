"""The in-process cache of compiled programs: each ``jit`` program is lowered and compiled once per function,
argument shapes, dtypes and shardings and static arguments, and its compile time is reported once.

Internal API (:mod:`ufm.solver`, :mod:`ufm.sweep`): :func:`compile_once`. :func:`compiled_programs` is the
public introspection (``ufm.compiled_programs()``): what has been compiled in this process, for tests and
for users who want to know what a call cost, without reading the cache's keys.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, NamedTuple

import jax

from ufm import _cache

#: JAX's event for a program it read from its persistent cache (also recorded for one read from the store)
_JAX_HIT = "/jax/compilation_cache/cache_hits"
_JAX_REQUEST = "/jax/compilation_cache/compile_requests_use_cache"


class Program(NamedTuple):
    """One compiled program: the ``function`` traced, its ``statics`` (static arguments, by name), the
    argument ``shapes`` (shape, dtype, sharding of every leaf), the ``compiled`` executable (its
    ``input_shardings`` say where the arguments live) and the ``seconds`` its tracing and compilation took (or
    its reading from the program store)."""

    function: Any
    statics: dict[str, Any]
    shapes: tuple
    compiled: Any
    seconds: float


_PROGRAMS: dict[Any, Program] = {}


def compile_once(function, args, statics) -> tuple[Any, float]:
    """``(compiled, compile seconds)`` of ``jit(function)`` for these argument shapes, dtypes and shardings and
    these static arguments; compiled once per key (seconds 0.0 afterwards), or read from the program store of
    the persistent cache when it is on (:func:`ufm._cache.load_program`: no tracing, no lowering). A program
    read from the store is counted as a cache request and hit, as JAX counts its own (:class:`ufm._cli.CompileWatch`
    names the time by them)."""
    shapes = tuple((x.shape, str(x.dtype), str(getattr(x, "sharding", None))) for x in jax.tree_util.tree_leaves(args))
    key = (function, shapes, tuple(sorted((k, str(v)) for k, v in statics.items())))
    if key not in _PROGRAMS:
        start = time.perf_counter()
        compiled = _cache.load_program(function, args, statics)
        if compiled is None:
            compiled = _compile(function, args, statics)
        else:
            jax.monitoring.record_event(_JAX_REQUEST)
            jax.monitoring.record_event(_JAX_HIT)
        _PROGRAMS[key] = Program(function, dict(statics), shapes, compiled, time.perf_counter() - start)
        return compiled, _PROGRAMS[key].seconds
    return _PROGRAMS[key].compiled, 0.0


def _compile(function, args, statics):
    """Trace, lower and compile ``jit(function)`` and keep it in the program store (:func:`ufm._cache.store_program`).
    An executable JAX read from its own cache would be stored without its code: such a program is compiled
    once more without JAX's cache (:func:`ufm._cache.compile_fresh`), unless it cannot be stored at all."""
    hits = []
    listener = lambda event, **_: hits.append(event) if event == _JAX_HIT else None
    lowered = jax.jit(function, static_argnames=tuple(statics)).lower(*args, **statics)
    jax.monitoring.register_event_listener(listener)
    try:
        compiled = lowered.compile()
    finally:
        with contextlib.suppress(AssertionError, ValueError):
            jax.monitoring.unregister_event_listener(listener)
    if hits and _cache.serializable(compiled):  # stored by JAX but not in the store: compiled afresh, once
        compiled = _cache.compile_fresh(lowered)
    _cache.store_program(function, args, statics, compiled)
    return compiled


def compiled_programs(function=None) -> tuple[Program, ...]:
    """The programs compiled so far in this process, oldest first (only those of ``function`` when given)."""
    return tuple(p for p in _PROGRAMS.values() if function is None or p.function is function)
