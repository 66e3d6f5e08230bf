"""The one number format of the reports (``ufm._format``) and its users."""

import importlib
import math

import pytest

from ufm import _format

#: the modules (``ufm.analyze``, ``ufm.compare`` and ``ufm.md`` are also names of functions in ``ufm``)
analyze, compare, md = (importlib.import_module(f"ufm.{name}") for name in ("analyze", "compare", "md"))

TABLE = [
    (8.0937694105, "8.093769411"),
    (8.09376941, "8.093769410"),  # trailing zero kept: the digits of a row line up
    (0.8993769410, "0.8993769410"),
    (3.059652134e-29, "3.059652134e-29"),
    (-2.5e7, "-25000000.00"),
    (1e20, "1.000000000e+20"),
    (0.0, "0"),
    (None, "-"),
    (math.nan, "nan"),
    (-math.inf, "-inf"),
]


@pytest.mark.parametrize("value,text", TABLE)
def test_format_number(value, text):
    assert _format.format_number(value) == text


@pytest.mark.parametrize("value", [8.09376941, 3.1e-5, 12345.678901234, 0.0, None])
def test_every_report_uses_the_one_format(value):
    # ufm.solve's table (through ufm.compare), ufm.analyze and ufm.md print the same text for a number
    assert compare.format_number is _format.format_number
    assert md.format_number is _format.format_number
    assert analyze._fmt(value) == _format.format_number(value)


def test_analyze_shows_a_missing_value_as_undefined():
    assert analyze._fmt(math.nan) == "undefined"
    assert analyze._fmt(math.inf) == "undefined"
