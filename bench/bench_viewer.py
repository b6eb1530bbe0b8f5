"""Viewer load time: a large trace opened in headless Chromium through the trace server.

Usage: ``python bench/bench_viewer.py [--events N] [--runs 3] [--trace FILE] [--shots DIR]``
(also run by ``make bench``).

* Generates a synthetic, sled-agent-like trace of ``--events`` events (1,000,000 by
  default: actors under a supervision tree, tells and asks with payloads, receives folded
  into their handles, replies, tasks, watches, admission refusals, timeouts, failures and
  restarts) in the temp dir, or reuses the cached one (``--trace`` opens any trace file).
* Serves it with ``trioxide view`` (a subprocess, as a user would) and opens the page in
  Debian's Chromium (``/usr/bin/chromium``, headless, driven by Playwright; never a
  downloaded browser), ``--runs`` times, each in a fresh browser context.
* "Opens" is measured from navigation start to the first full draw with every event
  ingested (``window.__trioxide.ready``); prints the median and the breakdown that the
  page records in ``window.__trioxide.timing`` (server time to build the frames, bytes
  received, parse, ingest, index, draws, DOM nodes), the JS heap per event (CDP
  ``Runtime.getHeapUsage`` after a forced GC, plus the typed-array backing stores), the
  time ``trioxide view`` takes to print its URL, and the response time of a filter and
  of a click after the load.

Target (issue 13): a 1,000,000-event trace opens in <= 5 s and stays interactive.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from trioxide.traces import NO_PAYLOAD, TraceEvent, TraceHeader  # noqa: E402

__all__ = ["cached_trace", "chromium", "generate", "interact", "load", "main", "measure", "serve"]

#: Bump when the generator changes: cached traces of an older generator are not reused.
GENERATOR_VERSION = 1
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
TARGET_SECONDS = 5.0



# -- the synthetic trace ---------------------------------------------------------------------


class _Writer:
    """Assigns seqs and writes events as the tracer does: a receive immediately followed by
    its handle is folded into the handle (``t0``), the receive's seq stays reserved."""

    def __init__(self, out: Any, limit: int) -> None:
        self.out = out
        self.limit = limit
        self.seq = 0
        self.count = 0  # events as a reader sees them (expanded)
        self.pending: TraceEvent | None = None  # the last receive, not yet written
        self.encode = msgspec.json.Encoder().encode

    @property
    def full(self) -> bool:
        return self.count >= self.limit

    def emit(self, t: float, kind: str, actor: str, **kw: Any) -> int:
        self.seq += 1
        self.count += 1
        event = TraceEvent(self.seq, t, kind, actor, **kw)
        pending = self.pending
        if pending is not None:
            self.pending = None
            if kind == "handle" and pending.msg_id == event.msg_id and pending.actor == actor:
                event = msgspec.structs.replace(
                    event, t0=pending.t, msg_type=pending.msg_type, corr=pending.corr
                )
            else:
                self._write(pending)
        if kind == "receive":
            self.pending = event
        else:
            self._write(event)
        return self.seq

    def _write(self, event: TraceEvent) -> None:
        self.out.write(self.encode(event))
        self.out.write(b"\n")

    def close(self) -> None:
        if self.pending is not None:
            self._write(self.pending)
            self.pending = None


class _Sim:
    """VMMs come and go under one sled; each VMM's life is a generator of steps."""

    IM = "sled/instance-manager"
    PH = "sled/propolis-host"
    ZC = "sled/zone-cleanup"
    NN = "sled/nexus-notifier"

    def __init__(self, w: _Writer, seed: int) -> None:
        self.w = w
        self.rng = random.Random(seed)
        self.t = 0.0

    def at(self, dt: float = 0.0) -> float:
        self.t += dt
        return round(self.t, 6)

    def send(
        self, to: str, frm: str | None, mtype: str, payload: Any = None, *,
        ask: bool = False, cause: int | None = None, system: bool = False,
    ) -> int:  # fmt: skip
        seq = self.w.seq + 1
        raw = NO_PAYLOAD if payload is None else msgspec.Raw(msgspec.json.encode(payload))
        return self.w.emit(
            self.at(0.000013), "send", to, peer=frm, msg_id=seq, cause=cause,
            corr=seq if ask else None, msg_type=mtype, payload=raw,
            detail="system" if system else None,
        )  # fmt: skip

    def handle(
        self, actor: str, mid: int, mtype: str, *, corr: int | None = None,
        outcome: str = "ok", detail: str | None = None, work: float = 0.0,
        inner: Iterator[None] | None = None,
    ) -> None:  # fmt: skip
        w = self.w
        w.emit(self.at(0.00002), "receive", actor, msg_id=mid, corr=corr, msg_type=mtype)
        if inner is not None:
            for _ in inner:
                pass
        w.emit(self.at(work), "handle", actor, msg_id=mid, outcome=outcome, detail=detail)

    def reply(self, actor: str, to: str | None, corr: int, outcome: str = "ok") -> None:
        detail = None if outcome == "ok" else "Rejected('busy')"
        self.w.emit(self.at(0.00001), "reply", actor, peer=to, corr=corr, outcome=outcome,
                    detail=detail)  # fmt: skip

    def spawn(self, actor: str, parent: str, cls: str) -> None:
        self.w.emit(self.at(), "spawn", actor, peer=parent, detail=cls)
        self.w.emit(self.at(0.00001), "start", actor)

    def stop(self, actor: str, reason: str = "stopped") -> None:
        self.w.emit(self.at(0.00001), "stop", actor, detail=reason, outcome="ok")

    # -- one VMM -------------------------------------------------------------------------

    def vmm(self, n: int) -> Iterator[float]:
        """The steps of one VMM's life; yields the virtual time until its next step."""
        rng = self.rng
        vid = f"vmm-{n:05d}"
        runner = f"{self.IM}/runner-{vid}-g1"
        monitor = f"{runner}/monitor"
        propolis = f"{self.PH}/propolis-{vid}"
        disk = f"{propolis}/crucible-disk0"
        spec = {
            "ncpus": rng.choice((1, 2, 4, 8)), "memory_bytes": 1 << rng.randrange(29, 35),
            "disks": {"disk0": {"type": "volume", "id": f"vol-{vid}", "block_size": 512}},
        }  # fmt: skip
        # Nexus (outside any actor) registers the VMM: the manager spawns its runner.
        ask = self.send(self.IM, None, "EnsureRegistered",
                        {"propolis_id": vid, "instance_id": f"inst-{n:05d}", "spec": spec,
                         "vmm_gen": 1}, ask=True)  # fmt: skip
        yield rng.uniform(0.0005, 0.004)

        def registered() -> Iterator[None]:
            self.spawn(runner, self.IM, "InstanceRunner")
            self.spawn(monitor, runner, "InstanceMonitor")
            self.w.emit(self.at(0.00001), "task_start", runner, detail="nexus-publisher")
            yield

        self.handle(self.IM, ask, "EnsureRegistered", corr=ask, inner=registered())
        self.reply(self.IM, None, ask)
        # The runner asks the Propolis host for a zone and a Propolis server.
        launch = self.send(self.PH, runner, "LaunchPropolis", {"propolis_id": vid}, ask=True)
        yield rng.uniform(0.001, 0.01)

        def launched() -> Iterator[None]:
            self.spawn(propolis, self.PH, "PropolisServer")
            self.spawn(disk, propolis, "CrucibleBackend")
            yield

        self.handle(self.PH, launch, "LaunchPropolis", corr=launch, inner=launched())
        self.reply(self.PH, runner, launch)
        start = self.send(propolis, runner, "Start", None, ask=True)
        yield rng.uniform(0.001, 0.02)
        self.handle(propolis, start, "Start", corr=start, work=rng.uniform(0.001, 0.05))
        self.reply(propolis, runner, start)
        self.w.emit(self.at(0.00001), "watch_set", runner, detail=f"state[{vid}] = Running")
        gen = 1
        polls = rng.randrange(40, 70)
        for k in range(polls):
            # The monitor long-polls Propolis for its state; Propolis looks the VMM up in
            # the instance manager while handling it (a nested ask: a causal chain).
            poll = self.send(propolis, monitor, "CurrentState", {"gen": gen}, ask=True)
            yield rng.uniform(0.05, 0.6)
            if rng.random() < 0.01:  # the ask timed out while queued
                self.w.emit(self.at(0.00001), "timeout", propolis, peer=monitor, msg_id=poll,
                            corr=poll, outcome="timeout", detail="timeout")  # fmt: skip
                continue
            self.w.emit(self.at(0.00002), "receive", propolis, msg_id=poll, corr=poll,
                        msg_type="CurrentState")  # fmt: skip
            look = self.send(self.IM, propolis, "Lookup", {"propolis_id": vid}, ask=True,
                             cause=poll)  # fmt: skip
            yield rng.uniform(0.0001, 0.002)
            refused = rng.random() < 0.004
            if refused:
                self.w.emit(self.at(0.00001), "admit", self.IM, peer=propolis, msg_id=look,
                            msg_type="Lookup", detail=rng.choice(("reject: Busy()", "full",
                                                                  "ignore")))  # fmt: skip
            else:
                self.handle(self.IM, look, "Lookup", corr=look, work=rng.uniform(0, 0.0005))
                self.reply(self.IM, propolis, look)
            failed = rng.random() < 0.003
            lost = "RuntimeError('lost the serial console')"
            self.w.emit(self.at(rng.uniform(0.0001, 0.003)), "handle", propolis, msg_id=poll,
                        outcome="error" if failed else "ok",
                        detail=lost if failed else None)  # fmt: skip
            self.reply(propolis, monitor, poll, "error" if failed else "ok")
            if failed:
                self.w.emit(self.at(0.00001), "fail", propolis, detail=lost, outcome="error")
                self.w.emit(self.at(0.0001), "restart", propolis, peer=self.PH, detail="1")
            if k % 5 == 0:
                gen += 1
                obs = self.send(runner, monitor, "Observation",
                                {"propolis_id": vid, "gen": gen, "state": "Running"})  # fmt: skip
                yield rng.uniform(0.0001, 0.003)
                self.handle(runner, obs, "Observation")
                put = self.send(self.NN, runner, "PutState",
                                {"propolis_id": vid, "gen": gen, "state": "Running"},
                                cause=obs)  # fmt: skip
                yield rng.uniform(0.0001, 0.01)
                self.handle(self.NN, put, "PutState", work=rng.uniform(0.0001, 0.002))
        # Nexus unregisters the VMM: the runner stops Propolis and hands the zone over.
        unreg = self.send(self.IM, None, "EnsureUnregistered", {"propolis_id": vid}, ask=True)
        yield rng.uniform(0.0005, 0.004)
        self.handle(self.IM, unreg, "EnsureUnregistered", corr=unreg)
        self.reply(self.IM, None, unreg)
        term = self.send(runner, self.IM, "Terminate", None, cause=unreg)
        yield rng.uniform(0.0005, 0.004)

        def terminating() -> Iterator[None]:
            if rng.random() < 0.05:  # a tick still queued at the monitor's stop
                tick = self.send(monitor, runner, "Tick", {"propolis_id": vid}, cause=term)
                self.w.emit(self.at(0.00001), "drop", monitor, msg_id=tick, detail="stopped")
            self.stop(monitor)
            self.w.emit(self.at(0.00001), "task_end", runner,
                        detail="nexus-publisher: Cancelled()", outcome="cancelled")  # fmt: skip
            yield

        self.handle(runner, term, "Terminate", inner=terminating())
        kill = self.send(self.PH, runner, "Kill", {"propolis_id": vid}, ask=True)
        yield rng.uniform(0.001, 0.01)

        def killing() -> Iterator[None]:
            self.stop(disk)
            self.stop(propolis)
            yield

        self.handle(self.PH, kill, "Kill", corr=kill, inner=killing())
        self.reply(self.PH, runner, kill)
        clean = self.send(self.ZC, runner, "CleanupZone", {"zone": f"oxz_propolis_{vid}"})
        yield rng.uniform(0.001, 0.05)
        self.handle(self.ZC, clean, "CleanupZone", work=rng.uniform(0.01, 0.2))
        self.stop(runner, "terminated")
        self.send(self.IM, runner, "Terminated", None, system=True)

    def run(self) -> None:
        import heapq

        w = self.w
        rng = self.rng
        for actor, parent, cls in (
            ("sled", None, "SledAgent"),
            (self.IM, "sled", "InstanceManager"),
            (self.PH, "sled", "PropolisHost"),
            (self.ZC, "sled", "ZoneCleanup"),
            (self.NN, "sled", "NexusNotifier"),
        ):
            w.emit(self.at(), "spawn", actor, peer=parent, detail=cls)
            w.emit(self.at(), "start", actor)
        heap: list[tuple[float, int, Iterator[float]]] = []
        n = 0
        live = 300
        while not w.full:
            while len(heap) < live and not w.full:
                life = self.vmm(n)
                heapq.heappush(heap, (self.t + rng.uniform(0, 2.0), n, life))
                n += 1
            when, k, life = heapq.heappop(heap)
            self.t = max(self.t, when)
            try:
                delay = next(life)
            except StopIteration:
                continue
            heapq.heappush(heap, (self.t + delay, k, life))
        w.close()


def generate(path: str | os.PathLike[str], events: int = 1_000_000, seed: int = 1) -> int:
    """Write a synthetic trace of about *events* events (as read back, expanded) to *path*;
    returns the number of events. Deterministic for a given *events* and *seed*."""
    tmp = Path(f"{os.fspath(path)}.part")
    with open(tmp, "wb", buffering=1 << 20) as out:
        header = TraceHeader(seed=seed, command=["bench_viewer.py", f"--events={events}"])
        out.write(msgspec.json.encode(header) + b"\n")
        writer = _Writer(out, events)
        _Sim(writer, seed).run()
    tmp.replace(path)
    return writer.count


def cached_trace(events: int = 1_000_000, seed: int = 1, directory: Path | None = None) -> Path:
    """The synthetic trace for (*events*, *seed*), generated once per temp dir."""
    base = directory or Path(tempfile.gettempdir()) / "trioxide-bench-viewer"
    base.mkdir(parents=True, exist_ok=True)
    path = base / f"synthetic-{events}-s{seed}-g{GENERATOR_VERSION}.jsonl"
    if not path.exists():
        generate(path, events, seed)
    return path


# -- serving and measuring ---------------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of process *pid* (Linux ``/proc``; 0 if unknown)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _descendants(root: int) -> list[int]:
    """The processes under *root* (Linux ``/proc``)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rpartition(")")[2].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out: list[int] = []
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


class CpuMeter:
    """CPU seconds used by the server process and by the browser's processes (every other
    process under this one: Chromium and Playwright's driver) between two readings."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid

    def read(self) -> tuple[float, float]:
        browser = [p for p in _descendants(os.getpid()) if p != self.server_pid]
        return _cpu_seconds(self.server_pid), sum(_cpu_seconds(p) for p in browser)


@contextmanager
def serve(trace: Path) -> Iterator[tuple[str, float, CpuMeter]]:
    """``trioxide view TRACE`` in a subprocess: yields its URL, the seconds it took to
    print it (the server's start: reading the header, counting the events) and a meter of
    the CPU time the server and the browser use."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "trioxide", "view", str(trace)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:\d+/\S*", line)
        if not match:
            raise RuntimeError(f"trioxide view printed no URL: {line!r}")
        yield match.group(0), time.perf_counter() - started, CpuMeter(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@contextmanager
def chromium(width: int = 1600, height: int = 1000) -> Iterator[int]:
    """A fresh headless Chromium (its own profile, no automation attached), showing
    ``about:blank``: yields its DevTools port."""
    profile = Path(tempfile.mkdtemp(prefix="trioxide-bench-chromium-"))
    proc = subprocess.Popen(
        [
            CHROMIUM,
            *CHROMIUM_ARGS,
            f"--user-data-dir={profile}",
            "--remote-debugging-port=0",
            f"--window-size={width},{height}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        active = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (active.exists() and active.read_text().strip()):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{CHROMIUM} did not start (exit code {proc.poll()})")
            time.sleep(0.05)
        yield int(active.read_text().split()[0])
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(profile, ignore_errors=True)


class _Cdp:
    """A minimal Chrome DevTools Protocol client on one target's WebSocket. It enables no
    domain, so Chromium sends it no events (Playwright enables the Network domain, which
    makes Chromium copy every WebSocket frame the page receives into a DevTools event)."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.ids = 0

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.ids += 1
        await self.ws.send_message(json.dumps({"id": self.ids, "method": method, "params": params}))
        while True:
            reply = json.loads(await self.ws.get_message())
            if reply.get("id") == self.ids:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply["result"]
                return result

    async def evaluate(self, expression: str) -> Any:
        result = await self.call(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:60]}...: {result['exceptionDetails']}")
        return result["result"].get("value")


#: Resolves with the viewer's load timings once it is ready (waits for the page's script
#: first: the evaluation may start in the document that the navigation replaces).
_READY_EXPRESSION = """(async () => {
  for (let i = 0; !window.__trioxide; i++) {
    if (i > 3000) throw new Error('no viewer on this page');
    await new Promise((r) => setTimeout(r, 10));
  }
  const ready = window.__trioxide.whenReady;
  const late = new Promise((_, reject) => setTimeout(() => reject(new Error('not ready')), %d));
  await Promise.race([ready, late]);
  return {
    timing: window.__trioxide.timing,
    stats: window.viewer.stats(),
    memory: window.viewer.memory(),
    domNodes: document.getElementsByTagName('*').length,
    treeRows: document.querySelectorAll('#tree-inner .tree-row').length,
    viewport: [innerWidth, innerHeight],
  };
})()"""


async def _load(port: int, url: str, timeout_s: float) -> dict[str, Any]:
    import trio
    import trio_websocket

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list") as response:  # noqa: ASYNC210 - once, before the measurement
        targets = json.loads(response.read())
    target = next(t for t in targets if t["type"] == "page")
    async with trio_websocket.open_websocket_url(
        target["webSocketDebuggerUrl"], max_message_size=1 << 26
    ) as ws:
        cdp = _Cdp(ws)
        await cdp.call("Page.navigate", url=url)
        with trio.fail_after(timeout_s):
            while True:
                try:
                    loaded: dict[str, Any] = await cdp.evaluate(
                        _READY_EXPRESSION % (timeout_s * 1000)
                    )
                    break
                except RuntimeError as exc:  # the navigation replaced the document
                    if "not ready" in str(exc):
                        raise
                    await trio.sleep(0.05)
        await cdp.call("HeapProfiler.collectGarbage")
        loaded["heap"] = await cdp.call("Runtime.getHeapUsage")
    return loaded


def load(port: int, url: str, timeout_s: float = 120.0) -> dict[str, Any]:
    """Navigate the browser on DevTools *port* to *url*; once the viewer is ready, its load
    timings, stats, memory (JS heap after a GC) and DOM size."""
    import trio

    result: dict[str, Any] = trio.run(_load, port, url, timeout_s)
    return result


_APPLY_FILTER = """async (f) => {
  const tm = () => window.__trioxide.timing;
  const before = tm().draws;
  const t0 = performance.now();
  const stats = window.viewer.setFilter(f);
  while (tm().draws === before) await new Promise((r) => setTimeout(r, 2));
  return { ms: tm().lastFrameEnd - t0, stats };
}"""

_FIND_SEND = """(type) => {
  for (let s = 1; s < 200000; s++) {
    const e = window.viewer.event(s);
    if (e && e.kind === 'send' && e.msg_type === type && e.payload) return s;
  }
  return null;
}"""


def interact(port: int, shots: Path | None = None) -> dict[str, Any]:
    """On the loaded page (Playwright attached over CDP now): the time a filter takes to
    be applied and drawn, and a click on an event (selected, its payload in the details);
    screenshots of each step into *shots*."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.connect_over_cdp(f"http://127.0.0.1:{port}")
        page = browser.contexts[0].pages[0]
        if shots is not None:
            page.screenshot(path=str(shots / "loaded.png"))
        filtered = page.evaluate(_APPLY_FILTER, {"type": "PutState"})
        if shots is not None:
            page.screenshot(path=str(shots / "filtered.png"))
        cleared = page.evaluate(_APPLY_FILTER, {"type": ""})
        seq = page.evaluate(_FIND_SEND, "EnsureRegistered")
        click_ms = None
        details = ""
        if seq is not None:
            page.evaluate(f"window.viewer.eventPosition({seq})")
            page.evaluate("() => new Promise((r) => requestAnimationFrame(() => setTimeout(r)))")
            # Where it is drawn now: the panels under the chart may have changed its size
            # since it was scrolled into view.
            pos = page.evaluate(f"window.viewer.position({seq})")
            t0 = time.perf_counter()
            page.mouse.click(pos["x"], pos["y"])
            selected = page.evaluate("window.viewer.stats().selected")
            click_ms = (time.perf_counter() - t0) * 1000
            details = page.inner_text("#details")
            if selected != seq:
                raise AssertionError(f"clicked seq {seq}, selected {selected}")
            if shots is not None:
                page.screenshot(path=str(shots / "selected.png"))
        browser.close()
    return {
        "filter_ms": filtered["ms"],
        "filter_shown": filtered["stats"]["filtered"],
        "clear_ms": cleared["ms"],
        "click_ms": click_ms,
        "clicked_seq": seq,
        "details_has_payload": '"propolis_id"' in details,
    }


def measure(
    url: str, *, cpu: CpuMeter | None = None, shots: Path | None = None, timeout_s: float = 120.0
) -> dict[str, Any]:
    """One page load in a fresh Chromium: load timings, memory, then interactivity."""
    with chromium() as port:
        cpu0 = cpu.read() if cpu else (0.0, 0.0)
        loaded = load(port, url, timeout_s)
        cpu1 = cpu.read() if cpu else (0.0, 0.0)
        interactive = interact(port, shots)
    tm = loaded["timing"]
    return {
        "load_ms": tm["drawn"],
        "timing": tm,
        "events": loaded["stats"]["events"],
        "actors": loaded["stats"]["actors"],
        "arrows": loaded["stats"]["arrowsTotal"],
        "dom_nodes": loaded["domNodes"],
        "tree_rows": loaded["treeRows"],
        "viewport": loaded["viewport"],
        "heap_used": loaded["heap"]["usedSize"],
        "heap": loaded["heap"],
        "memory": loaded["memory"],
        "server_cpu_s": cpu1[0] - cpu0[0],
        "browser_cpu_s": cpu1[1] - cpu0[1],
        **interactive,
    }


def _fmt_ms(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f} ms"


def report(trace: Path, startup: float, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Print the median run and its breakdown; return the summary."""
    loads = [r["load_ms"] for r in runs]
    median = statistics.median(loads)
    run = min(runs, key=lambda r: abs(r["load_ms"] - median))
    tm = run["timing"]
    events = run["events"]
    backing = run["memory"]["typedArrayBytes"]
    size = trace.stat().st_size
    summary = {
        "trace": str(trace),
        "trace_mb": round(size / 1e6, 1),
        "events": events,
        "actors": run["actors"],
        "server_start_s": round(startup, 2),
        "load_ms_median": round(median),
        "load_ms_runs": [round(v) for v in loads],
        "heap_bytes_per_event": round(run["heap_used"] / events, 1),
        "typed_array_bytes_per_event": round(backing / events, 1),
        "dom_nodes": run["dom_nodes"],
        "tree_rows_in_dom": run["tree_rows"],
        "filter_ms": round(run["filter_ms"]),
        "clear_filter_ms": round(run["clear_ms"]),
        "click_ms": None if run["click_ms"] is None else round(run["click_ms"]),
        "server_cpu_s": round(run["server_cpu_s"], 2),
        "browser_cpu_s": round(run["browser_cpu_s"], 2),
        "load_average": os.getloadavg(),
        "timing": tm,
    }
    ok = median <= TARGET_SECONDS * 1000
    print(f"trace: {trace} ({size / 1e6:.0f} MB, {events:,} events, {run['actors']:,} actors)")
    load = os.getloadavg()
    print(
        f"machine: {os.cpu_count()} CPUs, "
        f"load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}"
    )
    print(f"server start (trioxide view prints its URL): {startup:.2f} s")
    print(
        f"load (navigation start -> first full draw, every event ingested), median of "
        f"{len(runs)}: {median / 1000:.2f} s  [{', '.join(f'{v / 1000:.2f}' for v in loads)}]"
        f"  target <= {TARGET_SECONDS:.0f} s: {'PASS' if ok else 'MISS'}"
    )
    print("breakdown of the median run (ms since navigation start, or durations):")
    rows = [
        ("websocket open", _fmt_ms(tm["wsOpen"])),
        ("hello", _fmt_ms(tm["hello"])),
        ("first events frame", _fmt_ms(tm["firstData"])),
        ("last events frame", _fmt_ms(tm["lastData"])),
        ("end", _fmt_ms(tm["end"])),
        ("drawn (ready)", _fmt_ms(tm["drawn"])),
        ("server: read + decode + build frames (CPU)", _fmt_ms((tm["serverBuildS"] or 0) * 1000)),
        ("frames / bytes received", f"{tm['frames']:,} / {tm['bytes'] / 1e6:,.1f} MB"),
        ("client: JSON.parse of frames", _fmt_ms(tm["parseMs"])),
        ("client: ingest into columns + indexes", _fmt_ms(tm["ingestMs"])),
        ("client: filters + tree layout + fit (once)", _fmt_ms(tm["indexMs"])),
        ("client: first full draw", _fmt_ms(tm["firstDrawMs"])),
        ("draws during the load", str(tm["draws"])),
        ("CPU used during the load: server process", f"{run['server_cpu_s']:.2f} s"),
        ("CPU used during the load: browser processes", f"{run['browser_cpu_s']:.2f} s"),
    ]
    for name, value in rows:
        print(f"  {name:<46} {value:>14}")
    print(
        f"memory: JS heap {run['heap_used'] / 1e6:,.1f} MB = "
        f"{summary['heap_bytes_per_event']} B/event (after GC), typed arrays "
        f"{backing / 1e6:,.1f} MB = {summary['typed_array_bytes_per_event']} B/event; "
        f"DOM nodes {run['dom_nodes']:,} ({run['tree_rows']} tree rows)"
    )
    print(
        f"interactive: filter type=PutState {_fmt_ms(run['filter_ms'])} "
        f"({run['filter_shown']:,} events shown), cleared {_fmt_ms(run['clear_ms'])}, "
        f"click -> selected + details {_fmt_ms(run['click_ms'])}"
    )
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="synthetic trace size")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--runs", type=int, default=3, help="page loads (median reported)")
    parser.add_argument("--trace", type=Path, help="open this trace instead of a synthetic one")
    parser.add_argument("--shots", type=Path, help="save screenshots of the loaded view here")
    parser.add_argument("--json", type=Path, help="write the numbers here")
    args = parser.parse_args(argv)
    if not os.path.exists(CHROMIUM):
        print(f"bench_viewer: no Chromium at {CHROMIUM}; skipped")
        return 0
    if args.trace is not None:
        trace = args.trace
    else:
        t0 = time.perf_counter()
        trace = cached_trace(args.events, args.seed)
        print(f"synthetic trace ready in {time.perf_counter() - t0:.1f} s: {trace}")
    if args.shots is not None:
        args.shots.mkdir(parents=True, exist_ok=True)
    runs: list[dict[str, Any]] = []
    with serve(trace) as (url, startup, cpu):
        for k in range(args.runs):
            shots = args.shots if k == args.runs - 1 else None
            runs.append(measure(url, cpu=cpu, shots=shots))
    summary = report(trace, startup, runs)
    if args.json is not None:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
