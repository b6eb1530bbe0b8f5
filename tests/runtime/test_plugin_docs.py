"""The test toolkit explains itself: fixture docstrings in ``pytest --fixtures``, the
``SeededRun`` example, and ``--trace-keep=all`` saving passing tests' traces (issue 13)."""

from __future__ import annotations

import doctest
import inspect
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from trioxide import traces
from trioxide.runtime.testing import _plugin
from trioxide.testing import SeededRun

from .test_probe_and_plugin import FAILING_TEST

pytest_plugins = ["pytester"]

FIXTURES = ("trioxide_seed", "trace_sink", "actor_runtime", "probe")


def _fixtures_section(tmp_path: Path) -> list[str]:
    """The lines ``pytest --fixtures`` prints under the trioxide plugin's heading."""
    (tmp_path / "test_nothing.py").write_text("def test_nothing():\n    pass\n")
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "--fixtures", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    start = next(i for i, line in enumerate(out) if "trioxide.runtime.testing._plugin" in line)
    section = []
    for line in out[start + 1 :]:
        if line.startswith(("---", "===")):
            break
        section.append(line)
    return section


def test_pytest_fixtures_lists_every_trioxide_fixture_with_its_docstring(
    tmp_path: Path,
) -> None:
    section = _fixtures_section(tmp_path)
    listed = {line.split(" -- ")[0] for line in section if " -- " in line}
    assert set(FIXTURES) <= listed
    assert not any("no docstring" in line for line in section), "\n".join(section)
    text = "\n".join(section)
    for name in FIXTURES:
        doc = inspect.getdoc(getattr(_plugin, name))
        assert doc is not None, name
        assert f"    {doc.splitlines()[0]}" in section, (name, text)
    # The first paragraph (what --fixtures shows) carries the guarantees and the replay.
    entry = text.split("actor_runtime -- ")[1].split("\n\n")[0]
    for needle in ("seeded", "MockClock(autojump_threshold=0)", "trace_sink", "--trioxide-seed"):
        assert needle in entry, (needle, entry)


def test_seeded_run_docstring_example_runs() -> None:
    tests = doctest.DocTestFinder().find(SeededRun, "SeededRun", globs={})
    runner = doctest.DocTestRunner()
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.attempted >= 10
    assert result.failed == 0
    assert "same seed" in (SeededRun.__doc__ or "").lower()
    assert SeededRun.__init__.__doc__ and SeededRun.events.__doc__


# A passing and a failing test of the runtime, and one that does not use it.
PASSING_AND_FAILING = FAILING_TEST + """
def test_without_runtime():
    pass
"""


def test_trace_keep_all_saves_passing_tests_traces(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    pytester.makeini("[pytest]\ntrio_mode = true\n")
    pytester.makepyfile(test_greeter=PASSING_AND_FAILING)
    trace_dir = tmp_path / "traces"
    result = pytester.runpytest_subprocess(
        f"--trace-dir={trace_dir}", "--trace-keep=all", "-p", "no:cacheprovider", "-rA"
    )
    result.assert_outcomes(passed=2, failed=1)
    node = "test_greeter.py::test_passes"
    seed = zlib.crc32(node.encode())
    result.stdout.fnmatch_lines([f"*replay: pytest '{node}' --trioxide-seed={seed}*"])
    names = sorted(f.name for f in trace_dir.iterdir())
    assert names == ["test_greeter.py_test_fails.jsonl", "test_greeter.py_test_passes.jsonl"]
    tf = traces.read_trace(trace_dir / "test_greeter.py_test_passes.jsonl")
    assert tf.errors == []
    assert tf.header.seed == seed
    assert tf.header.command == ["pytest", node]
    replies = [e for e in tf.events if e.kind == "reply"]
    assert [e.outcome for e in replies] == ["ok"]
    assert tf.events[-1].t == 1.0  # the handler's virtual second, then the runtime stopped


def test_trace_keep_all_without_trace_dir_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    result = pytester.runpytest_inprocess("--trace-keep=all", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--trace-keep=all needs --trace-dir=DIR*"])
    assert "Traceback" not in result.stderr.str()
    bad = pytester.runpytest_inprocess("--trace-keep=some", "-p", "no:cacheprovider")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(["*--trace-keep*invalid choice*'some'*"])
