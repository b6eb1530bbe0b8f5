"""``trioxide view`` as a process: stopped by SIGTERM (a service manager, a test), it closes
like on Ctrl-C and leaves no worker process behind (a large file is decoded by a pool of
them). Linux only: children are found through ``/proc``."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures.process import _ExecutorManagerThread
from contextlib import contextmanager
from pathlib import Path

import msgspec
import pytest
import trio

from trioxide import traces

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(
    not Path("/proc/self/stat").exists() or (os.cpu_count() or 1) < 2,
    reason="needs /proc and two CPUs (the server decodes with a pool only then)",
)


def children(pid: int) -> list[int]:
    """The live child processes of *pid*."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # gone meanwhile
                continue
            # pid (comm) state ppid ...: comm may hold spaces, so split after its ")".
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z"


def wait_exited(pids: list[int], timeout: float) -> None:
    """Wait until each of *pids* has exited (their exit is asynchronous to the parent's:
    multiprocessing's resource tracker leaves once the parent's pipe closes), each at most
    *timeout* seconds - an event wait on a pidfd, not a sleep."""
    for pid in pids:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        try:
            select.select([fd], [], [], timeout)
        finally:
            os.close(fd)


def large_trace(tmp_path: Path) -> Path:
    """A 70,000-event trace file (17 chunks: the server decodes it with a worker pool)."""
    path = tmp_path / "large.jsonl"
    header = msgspec.json.encode(traces.TraceHeader(seed=1))
    event = traces.TraceEvent(1, 0.0, "start", "a")
    lines = [msgspec.json.encode(msgspec.structs.replace(event, seq=i)) for i in range(1, 70_001)]
    path.write_bytes(b"\n".join([header, *lines]) + b"\n")
    return path


@contextmanager
def view_large_file(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """``trioxide view`` of ``large_trace``; killed at the end if the test left it running."""
    path = large_trace(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "trioxide", "view", str(path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert "http://127.0.0.1:" in proc.stdout.readline()
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="needs os.pidfd_open (Linux 5.3+)")
def test_view_catches_sigterm_before_it_prints_its_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whoever read the URL may send SIGTERM at once: ``trioxide view`` caught it only after
    printing, so a quick SIGTERM killed it (exit -15, no cleanup: 2 of 15 runs of
    ``test_sigterm_stops_view_and_every_worker_process``'s steps). In process: the URL's
    ``print`` looks at the SIGTERM handler, then sends the signal as that test does."""
    from trioxide import cli
    from trioxide.traces import cli as traces_cli

    handlers: list[object] = []

    def sees_url(*args: object, **kwargs: object) -> None:
        handlers.append(signal.getsignal(signal.SIGTERM))
        if handlers[-1] == signal.SIG_DFL:
            raise AssertionError("the URL was printed while SIGTERM would kill the process")
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(traces_cli, "print", sees_url, raising=False)
    assert cli.main(["view", str(large_trace(tmp_path))]) == 0
    assert handlers and handlers[0] != signal.SIG_DFL


def test_sigterm_stops_view_and_every_worker_process(tmp_path: Path) -> None:
    with view_large_file(tmp_path) as proc:
        workers = children(proc.pid)
        assert workers, "the large file was expected to be decoded by worker processes"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert proc.stderr is not None and "Traceback" not in proc.stderr.read()
        wait_exited(workers, timeout=30)
        assert [pid for pid in workers if alive(pid)] == []


@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="needs os.pidfd_open (Linux 5.3+)")
def test_kill_9_of_view_leaves_no_decode_worker(tmp_path: Path) -> None:
    """``kill -9`` runs none of ``trioxide view``'s cleanup: its decode workers end with it
    all the same (``PR_SET_PDEATHSIG`` in their initializer); they used to live on."""
    with view_large_file(tmp_path) as proc:
        workers = [pid for pid in children(proc.pid) if b"multiprocessing" in _cmdline(pid)]
        workers = [pid for pid in workers if b"resource_tracker" not in _cmdline(pid)]
        assert workers, "the large file was expected to be decoded by worker processes"
        proc.kill()
        proc.wait(timeout=30)
        wait_exited(workers, timeout=30)
        assert [pid for pid in workers if alive(pid)] == []


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _pool_manager_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if isinstance(t, _ExecutorManagerThread)]


def test_serve_returns_only_once_its_decode_pool_has_shut_down(tmp_path: Path) -> None:
    """``TraceServer.serve`` of a large file returns after its worker pool's manager thread
    has ended. Left running (``shutdown(wait=False)``, as before), that thread closes its
    wakeup pipe while the interpreter's exit writes to it (CPython 3.11's
    ``concurrent.futures.process._python_exit``): ``trioxide view`` stopped by SIGTERM then
    sometimes printed "Exception ignored in: <module 'threading'>" and a traceback
    (``test_sigterm_stops_view_and_every_worker_process`` failed now and then)."""
    from trioxide.traces.server import TraceServer

    assert _pool_manager_threads() == []
    server = TraceServer.from_file(large_trace(tmp_path))

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve)
            assert _pool_manager_threads() != [], "expected the file to be decoded by a pool"
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert _pool_manager_threads() == []

