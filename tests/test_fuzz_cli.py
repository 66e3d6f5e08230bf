"""Fuzzing the command line: any argv gives exit 0, 1, 2 or 3, never a traceback.

Exit 2 comes with exactly one ``error:`` line on stderr that names the offending flag (or the
unrecognised argument). Free memory is reported as 64 MiB: a valid but large problem is refused
with exit 2 by the memory guard instead of being solved.
"""

import contextlib
import io

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ufm import _memory
from ufm.solve import main

HOSTILE_TEXT = st.one_of(
    st.sampled_from(
        [
            "nan",
            "inf",
            "-inf",
            "-1",
            "0",
            "1e400",
            "1e-400",
            "abc",
            "",
            "1.5",
            "2",
            "-0",
            "0x10",
            "1_0",
            " 3",
            "3 ",
            "None",
            "True",
            "1e308",
            "5e-324",
        ]
    ),
    st.text(max_size=4),
)

VALID = {
    "--K": ["2", "3"],
    "--n": ["1", "2"],
    "--d": ["2", "4"],
    "--delta": ["0", "0.1", "0.99"],
    "--lam": ["1e-2", "0.5"],
    "--lam-W": ["1e-2"],
    "--lam-H": ["1e-3"],
    "--lam-b": ["0", "1e-2"],
    "--seed": ["0", "7"],
    "--method": ["lbfgs", "gd", "momentum", "nesterov"],
    "--lr": ["0.5", "1e6"],
    "--tol": ["1e-6"],
    "--max-iters": ["4"],
    "--rtol": ["1e-3"],
}
SWITCHES = ["--float32", "--no-hessian", "--quiet", "--force", "--help-me", "-x"]


def _option(flag):
    return st.tuples(st.just(flag), st.one_of(st.sampled_from(VALID[flag]), HOSTILE_TEXT))


#: --no-hessian: the spectra paths are fuzzed directly in test_fuzz_ufm.py (and cost a compilation per run)
arguments = st.lists(
    st.one_of(
        st.sampled_from(list(VALID)).flatmap(_option),
        st.sampled_from(SWITCHES).map(lambda s: (s,)),
        HOSTILE_TEXT.map(lambda s: (s,)),
    ),
    max_size=6,
).map(lambda parts: ["--quiet", "--no-hessian", "--max-iters", "4"] + [token for part in parts for token in part])


@pytest.fixture(autouse=True, scope="module")
def _small_memory():
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_memory, "free_bytes", lambda device=None: 64 * 2**20)
        yield


@given(arguments)
def test_any_argv_exits_cleanly(argv):
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(argv)
    assert code in (0, 1, 2, 3), (argv, code)
    errors = [line for line in stderr.getvalue().splitlines() if "error:" in line]
    if code == 2:
        assert len(errors) == 1, (argv, stderr.getvalue())
        assert "Traceback" not in stderr.getvalue()
    else:
        assert not errors and "VERDICT" in stdout.getvalue(), (argv, stderr.getvalue())


#: the other command lines of the package, fuzzed the same way (valid values and hostile text per flag)
ANALYZE_VALID = {
    "--loss": ["ce", "ls", "focal", "mse"],
    "--delta": ["0", "0.1"],
    "--gamma": ["0", "2"],
    "--lam-W": ["1e-3"],
    "--lam-H": ["1e-3"],
    "--lam-b": ["0", "1e-3"],
    "--chunk-size": ["1", "7"],
    "--spectra": ["off", "on"],
    "--rtol": ["1e-6", "0.5"],
}
MD_VALID = {
    "--M": ["2", "3"],
    "--alpha": ["0.1", "0.5"],
    "--eta": ["1e-3", "0.5"],
    "--c-md": ["1", "0.1"],
    "--lam-W": ["1e-3"],
    "--lam-H": ["1e-3"],
    "--distribution": ["two-point", "circle"],
    "--grid": ["5", "16"],
}


def _argv(valid):
    option = st.sampled_from(list(valid)).flatmap(
        lambda flag: st.tuples(st.just(flag), st.one_of(st.sampled_from(valid[flag]), HOSTILE_TEXT))
    )
    tokens = st.one_of(option, st.sampled_from(["--force", "-x", "--help-me"]).map(lambda s: (s,)))
    return st.lists(tokens, max_size=4).map(lambda parts: [token for part in parts for token in part])


@pytest.fixture(scope="module")
def last_layer(tmp_path_factory):
    """A small valid .npz (K = 3, d = 4, N = 12) for the analyze command line."""
    import numpy as np

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 4)
    weight = rng.normal(size=(3, 4))
    path = tmp_path_factory.mktemp("fuzz") / "layer.npz"
    np.savez(path, features=weight[labels] + 0.1 * rng.normal(size=(12, 4)), labels=labels, weight=weight)
    return str(path)


def _check_one_error_line(code, stderr, argv):
    errors = [line for line in stderr.splitlines() if "error:" in line]
    if code == 2:
        assert len(errors) == 1 and "Traceback" not in stderr, (argv, stderr)
    else:
        assert not errors, (argv, stderr)


@given(_argv(ANALYZE_VALID))
def test_analyze_any_argv_exits_cleanly(last_layer, argv):
    from ufm.analyze import main as analyze_main

    argv = [last_layer, "--quiet", "--no-cache", *argv]
    stderr = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(stderr):
        code = analyze_main(argv)
    assert code in (0, 2), (argv, code)
    _check_one_error_line(code, stderr.getvalue(), argv)


@given(_argv(MD_VALID))
def test_md_any_argv_exits_cleanly(argv):
    from ufm.md import main as md_main

    # a small grid unless the example sets one (the default's programs are compiled by test_md.py): each
    # grid size is a compilation of its own
    argv = ["--quiet", "--no-cache", "--grid", "5", *argv]
    stderr = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(stderr):
        code = md_main(argv)
    assert code in (0, 1, 2), (argv, code)
    _check_one_error_line(code, stderr.getvalue(), argv)
