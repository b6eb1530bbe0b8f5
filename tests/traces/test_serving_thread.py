"""``TraceServer.serve_in_thread``'s thread under Ctrl-C: wherever the interrupt lands
while the server starts, the thread is stopped and joined before ``KeyboardInterrupt``
leaves ``start`` (``trioxide demo --view`` hung in CI on a thread left serving), a stop
asked before the server listens is kept, and the thread never keeps the process alive.

The interrupts are real SIGINTs (``signal.raise_signal``) sent from the points a Ctrl-C
can land, in the main thread under Python's own handler, as in the command."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator

import pytest

from trioxide.traces.server import ServingThread, TraceServer, _ctrl_c_deferred


@pytest.fixture(autouse=True)
def python_sigint_handler() -> Iterator[None]:
    """The tests send SIGINT: they need Python's own handler, as a command has it."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("SIGINT handlers are the main thread's")
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


#: How long a test waits for a thread that should end within milliseconds: a guard that
#: turns a hang (the bug) into a failure, not a measurement.
HUNG = 60.0


def _ended(thread: ServingThread) -> bool:
    """Whether *thread*'s OS thread has ended (if not, it is stopped once it listens, so
    that a failing test leaves no server behind)."""
    alive = thread._thread.is_alive()
    if alive:
        thread._listening.wait(HUNG)
        thread.server.close()
        thread._thread.join(HUNG)
    return not alive


def test_ctrl_c_inside_thread_start_stops_and_joins_the_thread() -> None:
    """Ctrl-C inside ``threading.Thread.start`` (it waits for the new thread to run):
    raised there, ``start`` never learned that the thread ran, and left it serving."""
    thread = ServingThread(TraceServer("127.0.0.1", 0))
    real_start = thread._thread.start

    def start_interrupted() -> None:
        real_start()
        signal.raise_signal(signal.SIGINT)  # as if during its wait for the new thread

    thread._thread.start = start_interrupted  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        thread.start()
    assert _ended(thread)


def test_ctrl_c_while_the_server_starts_to_listen_stops_and_joins_the_thread() -> None:
    """Ctrl-C while ``start`` waits for the server to listen: the server is stopped (the
    stop kept until it listens) and the thread joined before ``KeyboardInterrupt``."""
    thread = ServingThread(TraceServer("127.0.0.1", 0))
    real = thread._listening

    class Interrupted:
        calls = 0

        def wait(self) -> bool:
            Interrupted.calls += 1
            if Interrupted.calls == 1:
                signal.raise_signal(signal.SIGINT)
            return real.wait()

        def set(self) -> None:
            real.set()

    thread._listening = Interrupted()  # type: ignore[assignment]
    with pytest.raises(KeyboardInterrupt):
        thread.start()
    assert _ended(thread)


def test_a_stop_asked_before_the_server_listens_stops_it_once_it_does() -> None:
    """``stop`` before the server listens (``TraceServer.close`` alone does nothing then):
    kept, so the server stops as soon as it listens and the thread ends."""
    thread = ServingThread(TraceServer("127.0.0.1", 0))
    thread.stop()
    thread.start()  # returns once the server listened
    thread._thread.join(HUNG)
    assert _ended(thread)


def test_serve_in_thread_interrupted_in_start_leaves_no_thread() -> None:
    """The whole ``serve_in_thread`` block, interrupted inside the thread's start."""
    server = TraceServer("127.0.0.1", 0)
    before = set(threading.enumerate())
    real_start = threading.Thread.start

    def start_interrupted(self: threading.Thread) -> None:
        real_start(self)
        if self.name == "trioxide trace server":
            signal.raise_signal(signal.SIGINT)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(threading.Thread, "start", start_interrupted)
        with pytest.raises(KeyboardInterrupt), server.serve_in_thread():
            pytest.fail("the block ran although the start was interrupted")
    assert [t.name for t in set(threading.enumerate()) - before] == []


def test_the_serving_thread_is_a_daemon() -> None:
    """A thread that nothing stopped (it cannot happen above; the backstop if it did)
    never keeps the process alive at exit."""
    thread = ServingThread(TraceServer("127.0.0.1", 0))
    assert thread._thread.daemon


def test_ctrl_c_deferred_holds_the_interrupt_until_the_block_ends() -> None:
    ran = []
    with pytest.raises(KeyboardInterrupt), _ctrl_c_deferred():
        signal.raise_signal(signal.SIGINT)
        ran.append("after the signal")  # the block runs whole
    assert ran == ["after the signal"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with _ctrl_c_deferred():  # nothing pressed: nothing raised
        pass


def test_ctrl_c_deferred_raises_the_interrupt_over_the_blocks_error() -> None:
    with pytest.raises(KeyboardInterrupt) as info, _ctrl_c_deferred():
        signal.raise_signal(signal.SIGINT)
        raise OSError("the block's own error")
    assert isinstance(info.value.__context__, OSError)


def test_ctrl_c_deferred_leaves_another_handler_alone() -> None:
    """Not Python's default handler in place (Trio's, a program's own): it is theirs."""
    seen: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, frame: seen.append(signum))
    with _ctrl_c_deferred():
        signal.raise_signal(signal.SIGINT)
    assert seen == [signal.SIGINT]
