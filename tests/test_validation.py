"""``theory.validation``'s array rules, shared by ``ufm.analyze``, calibration, the tracker and the Hessian
helpers: one message per parameter, always naming it."""

import numpy as np
import pytest

from theory import validation

BAD_ARRAYS = [
    (None, 1, "got None"),
    ("abc", 1, "got 'abc'"),
    ([[1.0, 2.0], [3.0]], 2, "features must be a 2-D real array"),  # ragged
    (np.array(["a", "b"]), 1, "got dtype <U1"),
    (np.array([True, False]), 1, "got dtype bool"),
    (np.array([1j, 2j]), 1, "got dtype complex128"),
    (np.ones((2, 2)), 1, "shape \\(2, 2\\)"),
]


@pytest.mark.parametrize("value,ndim,match", BAD_ARRAYS)
def test_array_refuses_naming_the_parameter(value, ndim, match):
    with pytest.raises(ValueError, match=match) as error:
        validation.array("features", value, ndim)
    assert str(error.value).startswith("features must be")


def test_array_keeps_an_array_as_it_is(tmp_path):
    mapped = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float32, shape=(3, 2))
    assert validation.array("features", mapped, 2) is mapped  # no copy: a memory map stays one
    assert validation.array("labels", [0, 1, 1], 1).dtype.kind == "i"
    with pytest.raises(ValueError, match=r"logits must be a real array of shape \(N, K\) with no empty axis"):
        validation.array("logits", np.ones((0, 3)), 2, shape="(N, K)", nonempty=True)


@pytest.mark.parametrize("index", [(0, 0), (1, 2)])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_finite_array_names_the_first_bad_index(index, bad):
    values = np.ones((2, 3))
    values[index] = bad
    with pytest.raises(ValueError, match=rf"weight must be finite, got NaN or inf at index \[{index[0]}, {index[1]}\]"):
        validation.finite_array("weight", values)


def test_finite_array_is_float64_without_copying_float64():
    x = np.arange(3.0)
    assert validation.finite_array("x", x) is x
    assert validation.finite_array("x", np.arange(3)).dtype == np.float64


@pytest.mark.parametrize("value", [1.0, -0.1, [0.2, 1.5]])
def test_delta_has_one_message(value):
    # the words of validation.interval, which the solver's Problem uses for the same parameter
    with pytest.raises(ValueError, match=r"^delta must be in \[0, 1\), got "):
        validation.delta(value)
    with pytest.raises(ValueError, match=r"^delta must be in \[0, 1\), got "):
        validation.interval("delta", np.ravel(value)[-1], 0.0, 1.0, low_open=False)


@pytest.mark.parametrize(
    "labels,match",
    [
        (np.array([0.0, 1.5]), "labels must be integers, got non-integer values of dtype float64"),
        (np.array([0.0, np.nan]), "labels must be integers"),
        (np.array([0, 3]), r"labels must be in \[0, K\) = \[0, 3\) \(K = columns of logits\), got values in \[0, 3\]"),
        (np.array([-1, 2]), r"got values in \[-1, 2\]"),
    ],
)
def test_class_labels_refuse(labels, match):
    with pytest.raises(ValueError, match=match):
        validation.class_labels("labels", labels, 3, K_is="columns of logits")


def test_class_labels_are_int64():
    out = validation.class_labels("labels", np.array([2.0, 0.0, 1.0]), 3)
    assert out.dtype == np.int64 and out.tolist() == [2, 0, 1]
    assert validation.class_labels("labels", np.array([], dtype=np.uint8), 3).size == 0
