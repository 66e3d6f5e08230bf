"""Reproductions of the papers' UFM claims: each module is ``python -m experiments.<name>``."""
