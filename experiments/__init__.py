"""Reproductions of the papers' UFM claims: each module is ``python -m experiments.<name>``."""

from ufm import _interrupt

_interrupt.guard_startup()  # started as python -m experiments.<x>: a signal during the imports ends in one line
