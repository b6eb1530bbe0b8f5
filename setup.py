"""The compiled part of trioxide: the run recorders (``traces/_cruns.c``).

Everything else is in ``pyproject.toml``. The extension is optional: where it cannot be
built (no C compiler or no Python headers) the install goes on and traces record runs with
the pure-Python classes (``trioxide.traces._runs.COMPILED`` says which).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "trioxide.traces._cruns",
            sources=["traces/_cruns.c"],
            optional=True,
            extra_compile_args=["-O2"],
        )
    ]
)
