"""The flags the command lines share (ufm._cli): every Problem flag and output flag has one type, default and
help in every parser that has it, built by add_problem_flags / add_output_flags; what differs on purpose
(the sweep's grids and --n, ufm.md's model flags) is named here and in docs/cli.md."""

import argparse
import importlib
from pathlib import Path

import pytest

from ufm import _cli
from ufm.losses import LOSS_SPECS

ROOT = Path(__file__).resolve().parents[1]
#: the parsers and the shared flags each must have: (module, Problem flag names, output flags, grid flags)
PARSERS = [
    ("ufm.solve", ("K", "d", "float32", "lam", "loss"), ("json", "force", "quiet"), ()),
    ("ufm.sweep", ("K", "d", "float32", "lam", "loss"), ("force",), ("delta", "lam")),
    ("ufm.analyze", ("loss",), ("json", "force", "quiet"), ()),
    ("ufm.md", (), ("json", "force", "quiet"), ()),
]


def _actions(parser: argparse.ArgumentParser) -> dict:
    return {option: action for action in parser._actions for option in action.option_strings}


def _reference(names, outputs, output="--json") -> dict:
    parser = argparse.ArgumentParser(add_help=False)
    _cli.add_problem_flags(parser, *names)
    _cli.add_output_flags(parser, *outputs, output=output)
    return _actions(parser)


def _probe(action, text):
    """What the flag's type makes of ``text``, or the refusal's words (types are closures: compared by effect)."""
    try:
        return action.type(text)
    except (argparse.ArgumentTypeError, ValueError) as error:
        return str(error)


@pytest.mark.parametrize("module_name,names,outputs,grid", PARSERS, ids=[p[0] for p in PARSERS])
def test_shared_flags_have_one_default_help_and_type(module_name, names, outputs, grid):
    actions = _actions(importlib.import_module(module_name).build_parser())
    output = "--out" if module_name == "ufm.sweep" else "--json"
    reference = _reference(names, outputs, output)
    for option, expected in reference.items():
        assert option in actions, (module_name, option)
        action = actions[option]
        gridded = option.lstrip("-").replace("-", "_") in grid
        assert action.help == expected.help + (_cli.GRID_HELP if gridded else ""), (module_name, option)
        default = expected.default
        assert action.default == ([default] if gridded and default is not None else default), (module_name, option)
        assert action.choices == expected.choices and action.nargs == expected.nargs
        if expected.type is not None:
            for text in ("0", "0.5", "1", "2", "-1", "nan", "abc"):
                one = _probe(expected, text)
                assert _probe(action, text) == ([one] if gridded and not isinstance(one, str) else one), (option, text)
    # no shared flag is defined by hand with other words beside them (ufm.md: its model flags are its own)
    every_shared = _reference(("K", "d", "float32", "lam", "loss"), ("json", "force", "quiet"))
    assert set(actions) & set(every_shared) <= set(reference), module_name


def test_every_loss_parameter_is_a_flag_of_every_loss_cli():
    """Adding a loss parameter to ufm.losses reaches --help of ufm.solve, ufm.sweep and ufm.analyze."""
    parameters = {p for spec in LOSS_SPECS.values() for p in spec.parameters}
    for module_name in ("ufm.solve", "ufm.sweep", "ufm.analyze"):
        actions = _actions(importlib.import_module(module_name).build_parser())
        assert {"--" + p.replace("_", "-") for p in parameters} <= set(actions), module_name
        assert set(actions["--loss"].choices) == set(LOSS_SPECS)


def test_the_differences_are_stated_in_help_and_docs():
    """--n: the sweep's default is 50 (solve's 500) with its reason in --help and docs/cli.md; ufm.md's model
    flags are its own (docs/cli.md says which and why); the grid flags say they take comma-separated values."""
    from ufm import sweep

    actions = _actions(sweep.build_parser())
    assert actions["--n"].default == 50 and "not ufm.solve's 500" in actions["--n"].help
    assert "500" in _actions(importlib.import_module("ufm.solve").build_parser())["--n"].help
    text = (ROOT / "docs" / "cli.md").read_text()
    assert "not `ufm.solve`'s 500" in text and "MD-specific" in text
    for option in ("--delta", "--lam"):
        assert actions[option].help.endswith(_cli.GRID_HELP)


def test_unknown_shared_flags_are_refused():
    parser = argparse.ArgumentParser()
    for call in (
        lambda: _cli.add_problem_flags(parser, "n"),
        lambda: _cli.add_problem_flags(parser, "K", grid=("K",)),
        lambda: _cli.add_output_flags(parser, "out"),
    ):
        with pytest.raises(ValueError, match="no (shared|grid)"):
            call()
