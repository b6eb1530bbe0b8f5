"""The viewer in a real browser: Debian's Chromium driven by Playwright (issue 6).

Opens a recorded sled-agent trace served by ``trioxide view``, checks that lifelines and
arrows match the trace, applies a filter through the DOM, clicks an event on the canvas and
reads its payload, and saves a screenshot under the test's tmp dir. Skipped only where
Chromium or Playwright is missing (``.ci/run`` installs Chromium; never a downloaded one).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from trioxide import traces

from ._serve import launch, needs_chromium, served, write_demo_trace

sync_api = pytest.importorskip("playwright.sync_api")
pytestmark = needs_chromium


@pytest.fixture
def served_trace(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    trace = write_demo_trace(tmp_path / "sled.jsonl")
    with served(trace) as url:
        yield url, trace


def test_viewer_shows_the_trace_filters_and_details(
    served_trace: tuple[str, Path], tmp_path: Path
) -> None:
    url, trace = served_trace
    tf = traces.read_trace(trace)
    actors = {e.actor for e in tf.events}
    received = {e.msg_id for e in tf.events if e.kind == "receive"}
    pairs = sum(1 for e in tf.events if e.kind == "send" and e.msg_id in received)
    with sync_api.sync_playwright() as p:
        browser = launch(p)
        try:
            # The server's CSP forbids eval; Playwright's string predicates need it.
            context = browser.new_context(viewport={"width": 1600, "height": 1000}, bypass_csp=True)
            page = context.new_page()
            page.goto(url)
            page.wait_for_function("window.viewer && window.viewer.stats().ended", timeout=60_000)
            stats = page.evaluate("window.viewer.stats()")
            assert stats["events"] == len(tf.events)
            assert stats["actors"] == len(actors)
            assert stats["lifelines"] >= len(actors)  # a row per actor (+ tree group rows)
            assert stats["arrowsTotal"] == pairs and stats["arrows"] == pairs
            assert stats["lineErrors"] == 0 and stats["dropped"] == 0

            # A filter typed into the page narrows what is drawn.
            page.fill("#filter-actor", "vmm-vcr")
            page.wait_for_timeout(300)
            narrowed = page.evaluate("window.viewer.stats()")
            assert 0 < narrowed["arrows"] < pairs
            assert 0 < narrowed["filtered"] < len(tf.events)

            # Click an event on the canvas: the details panel shows its payload and causes.
            send = next(
                e
                for e in tf.events
                if e.kind == "send" and e.msg_type == "ReplaceVcr" and len(e.payload) > 0
            )
            pos = page.evaluate(f"window.viewer.eventPosition({send.seq})")
            assert pos is not None
            page.mouse.click(pos["x"], pos["y"])
            page.wait_for_timeout(200)
            assert page.evaluate("window.viewer.stats().selected") == send.seq
            details = page.inner_text("#details")
            assert "ReplaceVcr" in details and "backend_id" in details
            assert json.loads(bytes(send.payload))["backend_id"] in details
            shot = tmp_path / "viewer.png"
            page.screenshot(path=str(shot))
            assert shot.stat().st_size > 10_000
        finally:
            browser.close()
