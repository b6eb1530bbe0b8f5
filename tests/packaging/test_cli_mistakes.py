"""The ``trioxide`` command answers a user's mistake with one line, never a traceback.

Each case runs the real command (``trioxide.cli.main`` in this process, or ``python -m
trioxide`` where a signal is needed) and checks what the user sees: a non-zero exit, one
line on stderr naming the bad value and what to do, and no ``Traceback``.
"""

from __future__ import annotations

import argparse
import gc
import os
import signal
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from trioxide import cli
from trioxide.cli import CommandError, main

ROOT = Path(__file__).resolve().parents[2]
FIXED = "examples.lost_update:fixed"


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder of bad (and one good) trace files; the current directory is the
    repository's, so ``examples.*`` scenarios import."""
    monkeypatch.chdir(ROOT)
    (tmp_path / "empty.jsonl").write_bytes(b"")
    (tmp_path / "binary.jsonl").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "folder").mkdir()
    (tmp_path / "wrong.json").write_text('{"name": "not a trace", "version": 1}\n')
    (tmp_path / "newer.jsonl").write_text('{"trioxide_trace": 999}\n')
    (tmp_path / "ok.jsonl").write_text('{"trioxide_trace": 3}\n')
    return tmp_path


# (argv, what stderr must say); "{t}" is the folder of the ``files`` fixture.
MISTAKES = [
    # view / export: the trace file
    ("view {t}/missing.jsonl", "no such trace file: {t}/missing.jsonl"),
    ("view {t}/empty.jsonl", "{t}/empty.jsonl is empty, not a trioxide trace"),
    ("view {t}/binary.jsonl", "{t}/binary.jsonl is not a trioxide trace"),
    ("view {t}/folder", "{t}/folder is a folder, not a trace file"),
    ("view {t}/wrong.json", "{t}/wrong.json is not a trioxide trace"),
    ("view {t}/newer.jsonl", "is newer than this reader (4); upgrade trioxide"),
    ("export {t}/missing.jsonl --otlp {t}/o.json", "no such trace file: {t}/missing.jsonl"),
    ("export {t}/empty.jsonl --otlp {t}/o.json", "{t}/empty.jsonl is empty"),
    ("export {t}/binary.jsonl --otlp {t}/o.json", "{t}/binary.jsonl is not a trioxide trace"),
    ("export {t}/folder --perfetto {t}/p.json", "{t}/folder is a folder, not a trace file"),
    ("export {t}/wrong.json --otlp {t}/o.json", "{t}/wrong.json is not a trioxide trace"),
    ("export {t}/newer.jsonl --otlp {t}/o.json", "upgrade trioxide"),
    # export: the output
    ("export {t}/ok.jsonl", "give --perfetto FILE and/or --otlp FILE"),
    ("export {t}/ok.jsonl --otlp {t}/nope/o.json", "the folder {t}/nope does not exist"),
    ("export {t}/ok.jsonl --perfetto {t}/folder", "--perfetto {t}/folder is a folder"),
    # the trace server's options (refused before the file is looked at: were they not,
    # the missing file would be the message, and a test would fail rather than serve)
    ("view {t}/missing --port 99999", "'99999' is not a port: give 1..65535, or 0"),
    ("view {t}/missing --port -5", "'-5' is not a port"),
    ("view {t}/missing --port http", "'http' is not a port"),
    ("demo --view --port 65536 --vmms 0", "'65536' is not a port"),
    ("view {t}/missing --host 0.0.0.0", "binding '0.0.0.0' (not loopback)"),
    ("demo --view --host 0.0.0.0 --trace {t}/d.jsonl", "a token is required; add --token"),
    ("view {t}/missing --token=", "argument --token: the token must not be empty"),
    ("view {t}/ok.jsonl --host bad..name --token t", "'bad..name' is not a valid host name"),
    # counts
    ("demo --vmms 0 --trace {t}/d.jsonl", "argument --vmms: 0 is too small: give 1 or more"),
    ("demo --vmms -3 --trace {t}/d.jsonl", "argument --vmms: -3 is too small"),
    ("explore " + FIXED + " --seeds 0 --trace-dir {t}", "argument --seeds: 0 is too small"),
    ("explore " + FIXED + " --seeds -2 --trace-dir {t}", "argument --seeds: -2 is too small"),
    ("explore " + FIXED + " --pct -1 --trace-dir {t}", "argument --pct: -1 is too small"),
    # a process per sled: a mistyped count must not start thousands of processes
    ("rack --sleds 0", "argument --sleds: 0 is too small: give 1 or more"),
    ("rack --sleds 99999", "argument --sleds: 99999 is too large: give at most 32"),
    ("explore " + FIXED + " --extra-yields 2 --trace-dir {t}", "'2' is not a probability"),
    # explore's target and output folder
    ("explore nothing", "expected MODULE:ATTRIBUTE"),
    ("explore no_such_module_xyz:thing", "cannot import 'no_such_module_xyz'"),
    ("explore examples.lost_update:nothing", "has no attribute 'nothing'"),
    ("explore " + FIXED + " --trace-dir {t}/ok.jsonl", "--trace-dir {t}/ok.jsonl is a file"),
    # demo's trace path (its folder is a file)
    ("demo --vmms 1 --trace {t}/ok.jsonl/demo.jsonl", "cannot write the trace to {t}/ok"),
    # the command line itself
    ("vieww {t}/ok.jsonl", "invalid choice: 'vieww'"),
    ("view", "the following arguments are required: trace"),
]


def one_line(err: str) -> str:
    """*err* if it is exactly one line (and no traceback); fails the test otherwise."""
    assert "Traceback" not in err, err
    assert err.endswith("\n") and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize(("argv", "says"), MISTAKES, ids=[argv for argv, _ in MISTAKES])
def test_a_mistake_exits_2_with_one_line(
    files: Path, capsys: pytest.CaptureFixture[str], argv: str, says: str
) -> None:
    assert main(argv.format(t=files).split()) == 2
    out, err = capsys.readouterr()
    assert says.format(t=files) in one_line(err)
    assert err.startswith("trioxide") and out == ""


def test_a_port_in_use_is_one_line(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["view", str(files / "ok.jsonl"), "--port", str(port)]) == 2
        err = one_line(capsys.readouterr().err)
        assert f"port {port} on 127.0.0.1 is in use; pick another with --port or use 0" in err
        demo = ["demo", "--view", "--vmms", "1", "--trace", str(files / "d.jsonl")]
        assert main([*demo, "--port", str(port)]) == 2
        err = one_line(capsys.readouterr().err)
        assert f"port {port} on 127.0.0.1 is in use" in err


def test_an_unknown_host_name_is_one_line(
    files: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_such_name(*args: object, **kwargs: object) -> list[object]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_name)  # no DNS query from a test
    argv = ["view", str(files / "ok.jsonl"), "--host", "sled.example", "--token", "t"]
    assert main(argv) == 2
    err = one_line(capsys.readouterr().err)
    assert "cannot resolve --host 'sled.example'" in err and "127.0.0.1" in err


def test_debug_shows_the_traceback(files: Path) -> None:
    with pytest.raises(CommandError, match="no such trace file"):
        main(["--debug", "view", str(files / "missing.jsonl")])


def test_an_oserror_on_a_given_path_names_it(
    files: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The safety net for an OSError no subcommand foresaw: one line naming the path."""
    trace = files / "ok.jsonl"

    def unreadable(*args: object, **kwargs: object) -> object:
        raise PermissionError(13, "Permission denied", str(trace))

    monkeypatch.setattr("trioxide.traces._reader.read_trace", unreadable)
    assert main(["export", str(trace), "--otlp", str(files / "o.json")]) == 2
    assert f"trioxide: {trace}: Permission denied" in one_line(capsys.readouterr().err)


def test_demo_and_export_write_into_a_new_folder_or_say_why_not(
    files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``demo --trace`` makes the missing folders (so it is no mistake); ``export`` does
    not, and says so (see MISTAKES)."""
    trace = files / "new" / "sub" / "demo.jsonl"
    assert main(["demo", "--vmms", "1", "--trace", str(trace)]) == 0
    assert trace.stat().st_size > 0
    capsys.readouterr()
    assert main(["export", str(trace), "--perfetto", str(files / "p.json")]) == 0
    assert (files / "p.json").stat().st_size > 0


def test_explore_prints_its_summary_once(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    racy = "examples.lost_update:racy"
    assert main(["explore", racy, "--seeds", "5", "--trace-dir", str(files / "out")]) == 1
    out, err = capsys.readouterr()
    printed = out + err
    assert printed.count("invariant checks in") == 1 and printed.count("VIOLATION") == 1
    assert f"replay: trioxide explore {racy} --replay 0" in out
    assert main(["explore", FIXED, "--seeds", "3"]) == 0
    out, err = capsys.readouterr()
    assert (out + err).count("invariant checks in") == 1
    assert (out + err).count("no violation") == 1
    # Every line names the run as the first one does: the Exploration's name.
    assert "explore lost-update (fixed): 3 seeds" in err
    assert "fixed_scenario" not in out + err


@pytest.mark.parametrize(
    "argv",
    [
        "demo --vmms 20000 --trace {t}/demo.jsonl",
        "demo --vmms 20000 --view --trace {t}/demo.jsonl",
        "view {t}/ok.jsonl",
        f"explore {FIXED} --seeds 1000000000 --trace-dir {{t}}",
    ],
    ids=["demo", "demo-view", "view", "explore"],
)
def test_ctrl_c_exits_quietly_with_130(files: Path, argv: str) -> None:
    """SIGINT once the command printed its first line: exit status 130, stderr empty."""
    command = [sys.executable, "-m", "trioxide", *argv.format(t=files).split()]
    with _process(command) as proc:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        proc.send_signal(signal.SIGINT)
        out, err = _finish(proc)
    assert first, err  # it was running when interrupted
    assert proc.returncode == 130, (first, out, err)
    assert err == ""


#: Run as ``python -c CALLER ARGV...``: the command *ARGV*, with a SIGINT sent from inside
#: Trio's ``Nursery.start_soon`` (or ``start``) as the function *CALLER* calls it, between
#: the new child's joining its nursery and its being scheduled - where a
#: ``KeyboardInterrupt`` raised at once leaves the nursery waiting for a child that never
#: runs (the demo then ran on and never ended: CI's clean clone hung on ``[demo-view]``
#: above).
_CTRL_C_INSIDE_START_SOON = """
import os, signal, sys
from trioxide.cli import main

def inject(frame, event, arg):
    if event == "call" and frame.f_code.co_name == "_activate_cancel_status":
        spawn = frame.f_back
        caller = spawn.f_back.f_back  # spawn_impl <- start_soon <- the caller
        if spawn.f_code.co_name == "spawn_impl" and caller.f_code.co_name == sys.argv[1]:
            sys.setprofile(None)
            print("SIGINT inside start_soon", flush=True)
            os.kill(os.getpid(), signal.SIGINT)

sys.setprofile(inject)
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize(
    ("caller", "argv"),
    [
        ("_scenario", "demo --vmms 200 --trace {t}/demo.jsonl"),
        ("_scenario", "demo --vmms 200 --view --trace {t}/demo.jsonl"),
        ("serve", "view {t}/ok.jsonl"),
    ],
    ids=["demo", "demo-view", "view"],
)
def test_ctrl_c_inside_trio_spawn_code_still_ends_the_command(
    files: Path, caller: str, argv: str
) -> None:
    """The commands' runs take Ctrl-C at a checkpoint (Trio's
    ``restrict_keyboard_interrupt_to_checkpoints``), never inside Trio's own code: a
    SIGINT sent from within ``start_soon`` ends them with 130 like any other."""
    command = [sys.executable, "-c", _CTRL_C_INSIDE_START_SOON, caller]
    with _process([*command, *argv.format(t=files).split()]) as proc:
        out, err = _finish(proc)
    assert "SIGINT inside start_soon" in out, (out, err)
    assert proc.returncode == 130, (out, err)
    assert err == ""


#: Run as ``python -c SCRIPT ARGV...``: the command *ARGV* as the ``trioxide`` script runs
#: it (``from trioxide.cli import main``), with a SIGINT sent to the process as soon as
#: anything imports Trio - while the command is still starting, before it printed a line.
_CTRL_C_WHILE_STARTING = """
import os, signal, sys

class SignalOnTrio:
    def find_spec(self, name, path=None, target=None):
        if name == "trio":
            sys.meta_path.remove(self)
            print("SIGINT while importing trio", flush=True)
            os.kill(os.getpid(), signal.SIGINT)
        return None

sys.meta_path.insert(0, SignalOnTrio())
from trioxide.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize(
    "argv",
    ["demo --trace {t}/demo.jsonl", "view {t}/ok.jsonl", "--debug demo"],
    ids=["demo", "view", "debug"],
)
def test_ctrl_c_while_the_command_starts_exits_quietly_with_130(files: Path, argv: str) -> None:
    """Loading the packages takes about half a second before a command runs; a Ctrl-C then
    printed a ``KeyboardInterrupt`` traceback from the import (the script imports
    ``trioxide.cli``, which imported everything). Now it ends the command with 130 and
    nothing on stderr, as a Ctrl-C later does - unless ``--debug`` asks for tracebacks."""
    command = [sys.executable, "-c", _CTRL_C_WHILE_STARTING, *argv.format(t=files).split()]
    with _process(command) as proc:
        out, err = _finish(proc)
    assert out == "SIGINT while importing trio\n", (out, err)
    if argv.startswith("--debug"):
        assert "KeyboardInterrupt" in err, err
        return
    assert proc.returncode == 130, (out, err)
    assert err == ""


def test_the_command_module_loads_nothing_but_the_standard_library() -> None:
    """What makes a Ctrl-C while starting quiet: ``from trioxide.cli import main`` (the
    ``trioxide`` script's first line) loads no package, so the import happens in ``main``,
    which catches the interrupt."""
    probe = (
        "import sys; from trioxide.cli import main; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'trioxide', 'trio', 'msgspec', 'outcome', 'h11', 'hypercorn', 'httpx'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "['trioxide', 'trioxide.cli']"


def _process(command: list[str]) -> subprocess.Popen[str]:
    """*command* started as from a terminal: with Python's own SIGINT handler. A process
    started with SIGINT ignored keeps ignoring it (Python and Trio leave an ignored SIGINT
    alone, as Unix programs do), and a suite run in the background by a shell without job
    control - as ``make test &`` in a script - has it ignored: the child would inherit that
    and never see the Ctrl-C these tests send. (A handler, unlike an ignored signal, is
    reset to the default in the child.)"""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    finally:
        signal.signal(signal.SIGINT, previous)


def _finish(proc: subprocess.Popen[str], timeout: float = 60.0) -> tuple[str, str]:
    """The process's output once it exits; one that does not within *timeout* seconds
    (it hung: nothing here takes that long) is killed and the test fails, rather than
    the suite waiting for it forever."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"still running {timeout:.0f} s after Ctrl-C (killed):\n{out[-2000:]}{err}")


def test_ctrl_c_leaves_no_never_awaited_coroutine_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C can land between a task's coroutine being created and scheduled (Trio raises
    it at once outside KI-protected code); the unstarted coroutine, collected after the
    quiet exit, printed "RuntimeWarning: coroutine 'ActorCell.run_task' was never awaited"
    (``test_ctrl_c_exits_quietly_with_130[demo]`` failed now and then)."""

    async def task() -> None:
        pass

    def interrupted(args: argparse.Namespace) -> int:
        orphan = task()  # created, never awaited: what such a Ctrl-C leaves behind
        raise KeyboardInterrupt(orphan)

    parser = argparse.ArgumentParser()
    parser.set_defaults(run=interrupted, debug=False)
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert main([]) == 130
        gc.collect()
    assert [str(w.message) for w in seen if "never awaited" in str(w.message)] == []


def test_after_make_demo_the_readme_points_to_commands_that_work() -> None:
    """``make view`` serves the demo's trace with the venv's command; the README's first
    lines say so, and that ``trioxide …`` lives in ``.venv/bin``; the first install
    shows pip's progress."""
    makefile = (ROOT / "Makefile").read_text()
    assert "TRACE ?= traces-out/demo.jsonl" in makefile
    assert "\nview: $(STAMP)" in makefile and "\t$(BIN)/trioxide view $(TRACE)\n" in makefile
    assert "\t$(BIN)/python -m pip install -e '.[test]'\n" in makefile  # not --quiet
    head = "\n".join((ROOT / "README.md").read_text().splitlines()[:12])
    assert "`make view`" in head and "`.venv/bin/trioxide …`" in head
