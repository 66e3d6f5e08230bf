"""The one number format of every report (``ufm.solve``, ``ufm.analyze``, ``ufm.md``, ``ufm.compare``'s table).

Internal API: :func:`format_number` for a computed number, :func:`format_input` for a parameter as the user
gave it. Errors and tolerances (``3.66e-12``, ``1e-06``) are not computed results and keep their short
forms at the call sites. No imports beyond the standard library, so that a command line's start-up pays
nothing for it.
"""

from __future__ import annotations


def format_number(value) -> str:
    """One format for every computed number of a report: 10 significant digits, trailing zeros kept
    (``8.093769410``, so that the digits of two numbers in one row line up), an exact zero as ``0``
    (``-`` for none, ``nan``/``inf`` as such)."""
    if value is None:
        return "-"
    value = float(value)
    if value != value or value in (float("inf"), float("-inf")):
        return str(value)
    if value == 0:
        return "0"
    return f"{value:#.10g}".replace(".e", "e").rstrip(".")


def format_input(value) -> str:
    """A parameter as given (the shortest text that reads back as the same float: ``0.0005``, ``1e-06``)."""
    return repr(float(value) + 0.0).removesuffix(".0")
