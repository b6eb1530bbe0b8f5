"""Fixtures shared by the runtime tests: ``run_impl`` (both run recorders, see
``_run_impls``)."""

from ._run_impls import run_impl

__all__ = ["run_impl"]
