"""The in-process cache of compiled programs: each ``jit`` program is lowered and compiled once per function,
argument shapes, dtypes and shardings and static arguments, and its compile time is reported once.

Internal API: :func:`compile_once` (:mod:`ufm.solver`, :mod:`ufm.sweep`) and :func:`stored_jit` (:mod:`ufm.problem`,
:mod:`ufm.metrics`, :mod:`ufm.compare`, :mod:`ufm.hessian`). :func:`compiled_programs` is the
public introspection (``ufm.compiled_programs()``): what has been compiled in this process, for tests and
for users who want to know what a call cost, without reading the cache's keys.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import time
from typing import Any, NamedTuple

import jax

from ufm import _cache

#: JAX's event for a program it read from its persistent cache (also recorded for one read from the store)
_JAX_HIT = "/jax/compilation_cache/cache_hits"
_JAX_REQUEST = "/jax/compilation_cache/compile_requests_use_cache"
#: JAX's duration event of a compilation that reached XLA (or its persistent cache); none for an in-memory hit
_XLA_COMPILE = "/jax/core/compile/backend_compile_duration"


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
    shapes = _cache.argument_shapes(jax.tree_util.tree_leaves(args))
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

    Only an executable XLA compiled in this call is stored as it is: one that JAX read from its persistent cache
    serializes without its code, and so may one JAX returned from its in-memory cache (the same lowered module
    compiled earlier in this process, perhaps itself read from the persistent cache; no event says which). Either
    is compiled once more, afresh (:func:`ufm._cache.compile_fresh`), unless it cannot be stored at all. (An
    entry stored without its code fails in the next process that runs it: ``Function ... not found``.)"""
    lowered = jax.jit(function, static_argnames=tuple(statics)).lower(*args, **statics)
    if not _cache.storing():  # nothing is kept: JAX's program, wherever it came from
        return lowered.compile()
    events: list[str] = []

    def hit(event: str, **_: str | int) -> None:
        if event == _JAX_HIT:
            events.append(event)

    def compiled_now(event: str, duration_secs: float, **_: str | int) -> None:
        if event == _XLA_COMPILE:
            events.append(event)

    jax.monitoring.register_event_listener(hit)
    jax.monitoring.register_event_duration_secs_listener(compiled_now)
    try:
        compiled = lowered.compile()
    finally:
        with contextlib.suppress(AssertionError, ValueError):
            jax.monitoring.unregister_event_listener(hit)
        with contextlib.suppress(AssertionError, ValueError):
            jax.monitoring.unregister_event_duration_listener(compiled_now)
    fresh = _XLA_COMPILE in events and _JAX_HIT not in events
    if not fresh and _cache.serializable(compiled):
        compiled = _cache.compile_fresh(lowered)
    _cache.store_program(function, args, statics, compiled)
    return compiled


def stored_jit(function=None, *, static_argnames: str | tuple[str, ...] = ()):
    """``jax.jit(function, static_argnames=...)`` whose calls on concrete values go through :func:`compile_once`
    (the program store: a warm process neither traces nor lowers them); a call under a trace (inside another
    program) is the plain ``jit`` call, so the enclosing program is the one it was. Arguments that are not JAX
    arrays (numpy arrays, Python scalars) are placed as ``jit`` would place them (``jax.device_put``: the same
    dtype, weakly typed for a Python scalar), without a program of their own, so that one program has one key
    (a second compilation of the same module in a process may not serialize). Usable as
    ``@stored_jit(static_argnames=...)`` or ``stored_jit(f, ...)``."""
    if function is None:
        return functools.partial(stored_jit, static_argnames=static_argnames)
    names = (static_argnames,) if isinstance(static_argnames, str) else tuple(static_argnames)
    jitted = jax.jit(function, static_argnames=names)
    signature = inspect.signature(function)

    @functools.wraps(function)
    def call(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        statics = {name: arguments.pop(name) for name in names}
        dynamic = tuple(arguments.values())
        leaves = jax.tree_util.tree_leaves(dynamic)
        if any(isinstance(x, jax.core.Tracer) for x in leaves):
            return jitted(*args, **kwargs)
        if not all(isinstance(x, jax.Array) for x in leaves):  # as jit would place them: one key per program
            dynamic = jax.tree_util.tree_map(lambda x: x if isinstance(x, jax.Array) else jax.device_put(x), dynamic)
        compiled, _ = compile_once(function, dynamic, statics)
        return compiled(*dynamic)

    call.jitted = jitted  # type: ignore[attr-defined]
    return call


def compiled_programs(function=None) -> tuple[Program, ...]:
    """The programs compiled so far in this process, oldest first (only those of ``function`` when given)."""
    return tuple(p for p in _PROGRAMS.values() if function is None or p.function is function)
