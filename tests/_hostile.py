"""Hypothesis strategies of hostile inputs and the contract every public entry point must keep.

Contract: a call either returns finite numbers, or raises ``ValueError`` /
``OverflowError`` whose message names one of the offending parameters. Anything
else (TypeError from numpy, an XLA error, NaN returned as a result) is a defect.
"""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np
from hypothesis import strategies as st

SPECIALS = [
    float("nan"),
    float("inf"),
    -float("inf"),
    0.0,
    -0.0,
    1.0,
    5e-324,
    1e-300,
    1e300,
    1.7e308,
    True,
    False,
    None,
    "",
    "1",
    "abc",
    [0.1, 0.2],
    np.float32(0.5),
    np.int64(3),
    1 + 2j,
]

hostile = st.one_of(
    st.sampled_from(SPECIALS),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-10, 10),
    st.integers(10**6, 10**40),
    st.text(max_size=4),
)


def maybe(valid: st.SearchStrategy) -> st.SearchStrategy:
    """Mostly hostile, sometimes valid: the valid draws let the other arguments be reached."""
    return st.one_of(valid, hostile)


def _numbers(value):
    if isinstance(value, (bool, np.bool_, str)) or value is None:
        return
    if isinstance(value, (int, float, np.number)):
        yield float(value)
    elif isinstance(value, np.ndarray):
        yield from np.asarray(value, dtype=np.float64).ravel()
    elif dataclasses.is_dataclass(value):
        for field in dataclasses.fields(value):
            yield from _numbers(getattr(value, field.name))
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _numbers(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _numbers(item)
    elif hasattr(value, "__array__"):
        yield from np.asarray(value, dtype=np.float64).ravel()


def check_contract(call, names) -> object:
    """Run ``call()``; assert the contract. Returns the result or the raised error."""
    try:
        result = call()
    except (ValueError, OverflowError) as error:
        message = str(error)
        assert any(re.search(rf"(?<![A-Za-z_]){re.escape(name)}(?![A-Za-z_])", message) for name in names), (
            f"error does not name any of {names}: {message}"
        )
        assert "\n" not in message.strip(), f"error is not one line: {message!r}"
        return error
    bad = [x for x in _numbers(result) if not math.isfinite(x)]
    assert not bad, f"non-finite numbers returned as if valid: {bad[:3]}"
    return result
