"""``trioxide rack``: the main job at scale, end to end (real processes on loopback).

One bounded run with every fault: it must exit 0 (every request answered, no 5xx but
503, each fault had its effect, every process stopped cleanly) and say so in its summary;
its trace files merge. A user's mistake is one line and status 2.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.browser._serve import launch as launch_browser
from tests.browser._serve import needs_chromium, served

TRIOXIDE = [sys.executable, "-m", "trioxide.cli"]


@pytest.fixture(scope="module")
def rack_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("rack")
    done = subprocess.run(
        [*TRIOXIDE, "rack", "--sleds", "2", "--vmms", "2", "--rounds", "3", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=out,
    )
    return done, out


def test_rack_answers_every_request_under_faults(
    rack_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    done, _out = rack_run
    text = done.stdout
    assert done.returncode == 0, text + done.stderr[-3000:]
    m = re.search(r"sent (\d+), answered (\d+) \(([^)]*)\)", text)
    assert m is not None, text
    assert m.group(1) == m.group(2) and int(m.group(1)) > 0
    codes = [int(c.split(":")[0]) for c in m.group(3).split(", ")]
    assert all(c < 500 or c == 503 for c in codes), m.group(3)
    for fault in (
        "VCR replacement",
        "stop during activation",
        "Nexus outage",
        "hypervisor kill -9",
    ):
        assert re.search(rf"{fault}: .*\[ok\]", text), (fault, text)
    assert "NOT AS EXPECTED" not in text and "UNANSWERED" not in text
    assert re.search(r"exit statuses: nexus 0, sled-0 0, sled-1 0, .*-9, hypervisor 0", text), text
    assert "Traceback" not in done.stderr


def test_rack_writes_a_trace_per_process(
    rack_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    _done, out = rack_run
    names = {p.name for p in out.glob("*.jsonl")}
    assert {
        "nexus.jsonl",
        "sled-0.jsonl",
        "sled-1.jsonl",
        "hypervisor.jsonl",
        "rack.jsonl",
    } <= names
    assert "hypervisor-2.jsonl" in names  # the hypervisor started again after kill -9
    for name in ("nexus.jsonl", "sled-0.jsonl", "rack.jsonl"):
        lines = (out / name).read_text().splitlines()
        assert lines[0].startswith('{"trioxide_trace"') and len(lines) > 10, name


@pytest.mark.parametrize(
    ("args", "needle"),
    [(["--sleds", "0"], "--sleds"), (["--vmms", "x"], "--vmms")],
)
def test_rack_mistakes_are_one_line(args: list[str], needle: str) -> None:
    done = subprocess.run([*TRIOXIDE, "rack", *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert needle in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def _vmm_start(out: Path, pid: str) -> tuple[Any, list[Any]]:
    """The merged trace of a rack run and one VMM's start in it: the driver's
    ``PUT /vmms/<pid>/state`` as the agent served it, then the runner's launch of its
    Propolis as the hypervisor served it (each served request linked to its sender)."""
    from trioxide import traces

    merged = traces.merge_files(sorted(out.glob("*.jsonl")))
    by_seq = {e.seq: e for e in merged.events}

    def served(path: str, process: str) -> Any:
        (event,) = [
            e
            for e in merged.events
            if e.kind == "http_serve" and e.detail == path and e.actor.startswith(process)
        ][:1]
        return event

    put = served(f"PUT /vmms/{pid}/state", "sled-0/")
    launch = served(f"PUT /admin/propolis/{pid}", "hypervisor")
    return merged, [by_seq[put.cause], put, by_seq[launch.cause], launch]


def test_one_vmm_start_is_one_trace_across_the_rack_processes(
    rack_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    """Done-when of #14: the rack's traces merge with cross-process links for a VMM's
    start - the driver's request to the agent, the runner's launch on the hypervisor -
    and the launch continues the trace of the request that started the VMM."""
    _done, out = rack_run
    merged, (sent, put, launch_sent, launch) = _vmm_start(out, "s0-v0-r0")
    assert merged.statistics.unmatched == 0 and merged.statistics.links > 10
    assert sent.kind == "http_send" and sent.actor.startswith("rack/")
    assert put.cause == sent.seq and put.trace_id == sent.trace_id
    assert put.parent_span == sent.span_id
    assert launch_sent.kind == "http_send" and "runner-s0-v0-r0" in launch_sent.actor
    assert launch.cause == launch_sent.seq and launch.parent_span == launch_sent.span_id
    assert launch_sent.trace_id == put.trace_id  # the start request's trace, continued
    assert sent.t <= put.t <= launch_sent.t <= launch.t


@needs_chromium
def test_the_merged_rack_trace_opens_in_the_viewer_with_the_arrows(
    rack_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    _done, out = rack_run
    merged, (sent, put, launch_sent, launch) = _vmm_start(out, "s0-v0-r0")
    paths = sorted(out.glob("*.jsonl"))
    with sync_api.sync_playwright() as p:
        browser = launch_browser(p)
        try:
            with served(paths[0], *map(str, paths[1:])) as url:
                context = browser.new_context(
                    viewport={"width": 1400, "height": 700}, bypass_csp=True
                )
                page = context.new_page()
                page.goto(url)
                page.wait_for_function(
                    "window.__trioxide && window.__trioxide.ready", timeout=60_000
                )
                assert page.evaluate("window.viewer.stats()")["events"] == len(merged.events)
                links = page.evaluate("window.viewer.causeLinks()")
                http = {(link["from"], link["to"]) for link in links if link["how"] == "http"}
                assert (sent.seq, put.seq) in http and (launch_sent.seq, launch.seq) in http
                page.screenshot(path=str(out / "merged-rack.png"))
        finally:
            browser.close()


def test_ctrl_c_stops_every_process_of_the_rack(tmp_path: Path) -> None:
    """Ctrl-C mid-run: the rack stops each of its processes (SIGTERM, each exits 0), says
    so, and exits 130; nothing is left running."""
    import signal

    proc = subprocess.Popen(
        [*TRIOXIDE, "rack", "--sleds", "2", "--out", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:  # the rack is up once its last sled is listed
        seen.append(line)
        if line.strip().startswith("sled-1"):
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    text = "".join(seen) + out
    assert proc.returncode == 130, text + err
    assert "the rack stopped early; its processes were stopped" in text
    assert re.search(r"exit statuses: nexus 0, sled-0 0, sled-1 0, hypervisor 0", text), text
    assert "Traceback" not in err
