"""Advice as parameters: a problem that does not fit in memory is refused with a ``ufm.MemoryEstimateError``
(a ValueError) whose fields are the estimate, the bytes free and the alternatives that fit as ``Advice``
records with their estimates; its message names Python keywords, the command line words the same advice as
flags. And the one step-size rule, ``Method.safe_step``, as ``ufm.curvature.safe_step`` and ``ufm.policy``
use it.

The memory verdicts do not depend on the machine: the free memory is set to 4 GiB. Estimates are compared
exactly (the same float64 formula of ``ufm._memory`` evaluated here on its own, not through the advice).
"""

import pickle

import numpy as np
import pytest

import ufm
from ufm import _cli, _memory, curvature, policy
from ufm.methods import METHOD_SPECS
from ufm.results import Advice, Alternative, python_spelling, word_alternative

FREE = 4 * 2**30
#: lbfgs (32 copies) does not fit at K = 10, n = 200,000, d = 10 in float64 (6.4 GB); gd (8 copies) does
#: (2.6 GB), and so does float32 with either method. Second: a small problem whose 10^8 history rows (6.4 GB)
#: do not fit; without history, or in float32 (3.2 GB), it does.
CASES = {
    "large n": dict(K=10, n=200_000, d=10, max_iters=100, record_every=1),
    "long history": dict(K=3, n=2, d=3, max_iters=10**8, record_every=1),
}


@pytest.fixture
def four_gib(monkeypatch):
    monkeypatch.setattr(_memory, "free_bytes", lambda device=None: FREE)


def _bytes(case, method="lbfgs", itemsize=8, n=None, rows=None):
    """ufm._memory's estimate of a solve of ``case`` evaluated here (not through the advice)."""
    c = CASES[case]
    n = c["n"] if n is None else n
    rows = ufm.loop.history_rows(c["max_iters"], c["record_every"]) if rows is None else rows
    return _memory.solve_bytes(c["K"], n * c["K"], c["d"], itemsize, method, rows)


def _largest_n(case):
    """The largest n below the one asked for whose lbfgs solve fits, by a plain scan (not bisection); None."""
    n = CASES[case]["n"] - 1
    while n >= 1 and _bytes(case, n=n) > FREE:
        n -= 1
    return n or None


def _refusal(case):
    c = CASES[case]
    problem = ufm.Problem(K=c["K"], n=c["n"], d=c["d"])
    with pytest.raises(ufm.MemoryEstimateError) as caught:
        ufm.solve(problem, "lbfgs", max_iters=c["max_iters"], record_every=c["record_every"])
    return caught.value


@pytest.mark.parametrize("case", list(CASES))
def test_the_refusal_carries_the_estimate_the_free_bytes_and_the_alternatives_as_parameters(four_gib, case):
    error = _refusal(case)
    assert isinstance(error, ValueError)  # existing `except ValueError` still catches it
    assert error.estimate == _bytes(case) > FREE and error.available == FREE
    n_max = _largest_n(case)
    candidates = [
        ((Advice("method", "gd"),), _bytes(case, "gd")),
        ((Advice("dtype", "float32"), Advice("method", "lbfgs")), _bytes(case, itemsize=4)),
        ((Advice("dtype", "float32"), Advice("method", "gd")), _bytes(case, "gd", itemsize=4)),
        ((Advice("history", False),), _bytes(case, rows=1)),
    ] + ([((Advice("n", n_max),), _bytes(case, n=n_max))] if n_max else [])
    offered = [(a.advice, a.nbytes) for a in error.advice]
    assert offered == [c for c in candidates if c[1] <= FREE]  # in that order, only those that fit
    expected = {"large n": ["method", "dtype", "dtype", "n"], "long history": ["dtype", "dtype", "history"]}[case]
    assert [a.advice[0].parameter for a in error.advice] == expected  # each kind offered where it fits
    assert [a.at_most for a in error.advice] == [p == "n" for p in expected]


@pytest.mark.parametrize("case", list(CASES))
def test_the_python_message_names_keywords_and_no_flag(four_gib, case):
    text = str(_refusal(case))
    assert text.startswith("not enough memory: solving with lbfgs for K = ") and "--" not in text, text
    words = {
        "large n": ("method='gd' (fewest copies)", "dtype='float32', method='lbfgs'", "n <= "),
        "long history": ("dtype='float32', method='gd'", "; or history=False (about "),
    }[case]
    for word in words:
        assert word in text, text


def test_the_command_line_words_the_same_advice_as_flags(four_gib, capsys):
    from ufm.solve import main

    c = CASES["large n"]
    argv = ["--K", str(c["K"]), "--n", str(c["n"]), "--d", str(c["d"]), "--method", "lbfgs", "--no-hessian", "--quiet"]
    assert main(argv) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(lines) == 1, lines
    # the command line records no history (1 row): the text users saw before the advice was structured
    gib = lambda method, itemsize=8, n=None: _memory.gib(_bytes("large n", method, itemsize, n, rows=1))
    n_max = c["n"] - 1
    while _bytes("large n", n=n_max, rows=1) > FREE:
        n_max -= 1
    assert lines[0].endswith(
        f"error: not enough memory: solving with lbfgs for K = 10, n = 200000, d = 10 needs about {gib('lbfgs')} "
        f"but 4 GiB are free on cpu; instead: --method gd (fewest copies) (about {gib('gd')}); or --float32 "
        f"--method lbfgs (about {gib('lbfgs', 4)}); or --float32 --method gd (about {gib('gd', 4)}); or "
        f"n <= {n_max} with lbfgs (about {gib('lbfgs', n=n_max)})"
    ), lines[0]


def test_the_command_line_offers_to_skip_its_hessian_check_as_a_flag(four_gib, capsys):
    """K = 200, n = 100: the Hessian check needs ~48 GiB, the solve alone fits (refused before solving)."""
    from ufm.solve import main

    assert main(["--K", "200", "--n", "100", "--quiet"]) == 2
    solve = _memory.gib(_memory.solve_bytes(200, 200 * 100, 200, 8, "reduced"))
    line = [line for line in capsys.readouterr().err.splitlines() if "error:" in line][0]
    assert line.endswith(f"; instead: --no-hessian (then only the solve runs) (about {solve})"), line


def test_the_error_survives_pickling_whole(four_gib):
    """A Dask worker's refusal reaches the client with its fields (the exception pickles by them)."""
    error = _refusal("large n")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is ufm.MemoryEstimateError and str(copy) == str(error)
    assert (copy.estimate, copy.available, copy.advice) == (error.estimate, error.available, error.advice)


def test_a_sentence_of_advice_is_kept_as_the_hint(monkeypatch):
    problem = ufm.Problem(K=3, n=2, d=3)
    monkeypatch.setattr(_memory, "free_bytes", lambda device=None: 1024)
    with pytest.raises(ufm.MemoryEstimateError, match="use largest_curvature") as caught:
        curvature.joint_eigenvalues(problem.init(), problem.labels(), problem.weights())
    size = 3 * 3 + 3 * 6 + 3  # d K + d N + K
    assert caught.value.advice == () and caught.value.estimate == 3 * 8.0 * size**2
    assert caught.value.hint == "use largest_curvature (Lanczos) instead"


def test_alternatives_that_do_not_fit_are_not_offered(monkeypatch):
    monkeypatch.setattr(_memory, "free_bytes", lambda device=None: 100)
    options = [Alternative((Advice("method", "gd"),), 99.0), Alternative((Advice("n", 3),), 101.0, at_most=True)]
    with pytest.raises(ufm.MemoryEstimateError) as caught:
        _memory.require(200.0, "x", "y", options)
    assert caught.value.advice == (options[0],)
    with pytest.raises(ufm.MemoryEstimateError, match="; reduce the sizes$") as caught:
        _memory.require(200.0, "x", "y", lambda: options[1:])
    assert caught.value.advice == ()


@pytest.mark.parametrize(
    ("parameter", "value", "python", "flag"),
    [
        ("lr", 0.123456, "lr=0.123", "--lr 0.123"),
        ("n", 123456, "n=123456", "--n 123456"),  # an integer in full, never 1.23e+05
        ("method", "gd", "method='gd'", "--method gd"),
        ("dtype", "float32", "dtype='float32'", "--float32"),
        ("history", False, "history=False", "--no-history"),
        ("hessian", False, "hessian=False", "--no-hessian"),
        ("max_iters", None, "max_iters", "--max-iters"),
    ],
)
def test_one_advice_two_spellings(parameter, value, python, flag):
    assert python_spelling(parameter, value) == python and _cli.flag(parameter, value) == flag


def test_an_alternative_in_words():
    both = Alternative((Advice("dtype", "float32"), Advice("method", "lbfgs")), 1.0)
    assert word_alternative(both) == "dtype='float32', method='lbfgs'"
    assert word_alternative(both, _cli.flag, " ") == "--float32 --method lbfgs"
    bound = Alternative((Advice("n", 37),), 1.0, "with reduced", at_most=True)
    assert word_alternative(bound) == word_alternative(bound, _cli.flag, " ") == "n <= 37 with reduced"


FIXED_STEP = [name for name, spec in METHOD_SPECS.items() if spec.stability_limit is not None]


@pytest.mark.parametrize("name", FIXED_STEP)
def test_the_step_rule_on_a_quadratic_with_a_known_largest_curvature(name):
    """f(x) = 1/2 sum_i lam_i x_i^2 with lam = (0.5, 1, 3): lambda_max = 3 exactly. The rule's step is
    ``safe_fraction`` of the method's declared stability limit there, and the method's optax iteration
    converges at it: 500 steps from x = 1 leave |x| < 1e-9 (spectral radius at most sqrt(0.9) = 0.949 for
    momentum, the slowest: 0.949^500 ~ 4e-12; measured 3.7e-12, GD 2.6e-40, Nesterov 3.4e-25). At fraction
    1.05, beyond the declared limit, the top mode grows (measured > 1e20 for all three; 1e3 is the bar)."""
    import jax
    import jax.numpy as jnp

    spec = METHOD_SPECS[name]
    lam = jnp.asarray([0.5, 1.0, 3.0])
    step = spec.safe_step(3.0)
    assert step == spec.safe_fraction * spec.stability_limit / 3.0  # the rule, to the last bit
    assert 0 < spec.safe_fraction < 1 and step * 3.0 < spec.stability_limit

    def run(lr, steps):
        opt = spec.optimizer(lr)
        x = jnp.ones(3)

        def one(carry, _):
            x, state = carry
            updates, state = opt.update(lam * x, state, x)
            return (x + updates, state), None

        (x, _), _ = jax.lax.scan(one, (x, opt.init(x)), None, length=steps)
        return float(jnp.max(jnp.abs(x)))

    assert run(step, 500) < 1e-9
    assert not run(spec.safe_step(3.0, fraction=1.05), 500) < 1e3  # grew (or overflowed)


def test_gd_safe_step_is_one_over_lambda_max_to_the_bit():
    """GD: 0.5 x 2 / lambda_max is exactly 1 / lambda_max (0.5 x 2 = 1 exactly): the experiments' steps
    stay byte-identical."""
    for top in np.random.default_rng(0).uniform(1e-6, 1e6, 1_000):
        assert METHOD_SPECS["gd"].safe_step(float(top)) == 1.0 / float(top)


def test_curvature_safe_step_is_the_rule_of_each_method():
    problem = ufm.Problem(K=3, n=2, d=3)
    point, labels, weights = problem.init(), problem.labels(), problem.weights()
    top = curvature.largest_curvature(point, labels, weights)
    for name in FIXED_STEP:
        assert curvature.safe_step(point, labels, weights, name) == METHOD_SPECS[name].safe_step(top)
    assert curvature.safe_step(point, labels, weights) == 1.0 / top  # gd by default: 1 / lambda_max as before
    with pytest.raises(ValueError, match="method must be a fixed-step method"):
        curvature.safe_step(point, labels, weights, "lbfgs")


@pytest.mark.parametrize("name", FIXED_STEP)
def test_the_default_step_is_the_rule_at_the_estimated_curvature(name):
    """Large lambdas (10) make the estimated curvature c = 10 bind over the default step: the default is then
    the rule's step rounded to 3 significant digits (relative rounding error at most 5e-3)."""
    spec = METHOD_SPECS[name]
    problem = ufm.Problem(K=3, n=2, lam_W=10.0, lam_H=10.0, lam_b=10.0)
    lr = policy.default_lr(problem, name)
    assert lr < spec.default_lr and lr == float(f"{lr:.3g}")
    assert abs(lr * 10.0 / spec.stability_limit - spec.safe_fraction) <= 5e-3 * spec.safe_fraction


@pytest.mark.parametrize("value", [0.0, -1.0, float("inf"), float("nan"), True, "2"])
def test_the_rule_refuses_a_curvature_that_gives_no_step(value):
    with pytest.raises(ValueError, match="lambda_max must be finite and > 0"):
        METHOD_SPECS["gd"].safe_step(value)
    with pytest.raises(ValueError, match="line search"):
        METHOD_SPECS["lbfgs"].safe_step(1.0)
