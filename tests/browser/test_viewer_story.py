"""The viewer leads to the story of a run (issue 13), in real Chromium driven by Playwright.

One demo trace (6 VMMs) served by ``trioxide view`` for the module, one browser: the first
view shows where the events are (idle gaps compressed), zoom keeps the time under the
cursor and never shows time before the trace, and ``?focus=<vmm>`` opens on an incident.
Screenshots go to the test's tmp dir. Skipped only where Chromium or Playwright is missing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from trioxide import traces

from ._serve import needs_chromium, served, write_demo_trace

sync_api = pytest.importorskip("playwright.sync_api")
pytestmark = needs_chromium


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, traces.TraceFile]]:
    """A 6-VMM demo trace served by ``trioxide view``: (its URL, the trace as read)."""
    trace = write_demo_trace(tmp_path_factory.mktemp("story") / "sled.jsonl")
    with served(trace) as url:
        yield url, traces.read_trace(trace)


def _open(browser: Any, url: str) -> Any:
    # The server's CSP forbids eval; Playwright's string predicates need it.
    context = browser.new_context(viewport={"width": 1600, "height": 1000}, bypass_csp=True)
    page = context.new_page()
    page.goto(url)
    page.wait_for_function("window.__trioxide && window.__trioxide.ready", timeout=60_000)
    return page


def _chart_box(page: Any) -> dict[str, float]:
    box = page.locator("#canvas").bounding_box()
    assert box is not None
    return dict(box)


def test_first_view_shows_the_busy_region(
    demo: tuple[str, traces.TraceFile], browser: Any, tmp_path: Path
) -> None:
    url, tf = demo
    ts = sorted(e.t for e in tf.events)
    # the trace this is about: most events early, a long idle tail
    assert ts[int(len(ts) * 0.99)] < 0.5 * ts[-1]
    page = _open(browser, url)
    try:
        page.screenshot(path=str(tmp_path / "first-view.png"))
        view = page.evaluate("window.viewer.view()")
        assert view["mode"] == "time"
        assert view["t0"] == ts[0] and view["t1"] == ts[-1]  # everything, tail included
        # the middle 98 % of the events are drawn across most of the chart
        assert page.evaluate("window.viewer.eventsSpan(0.98)") > 0.8
        labels = [t["label"] for t in view["ticks"] if not t["gap"]]
        assert labels[0] == "0 s" and len(labels) >= 4
        # the same trace on a linear time axis: the strip the compressed axis replaces
        page.evaluate("window.viewer.setXMode('linear')")
        page.wait_for_timeout(100)
        assert page.evaluate("window.viewer.eventsSpan(0.98)") < 0.35
    finally:
        page.context.close()


def _zoom(page: Any, x: float, y: float, notches: int) -> None:
    """Ctrl+wheel at (x, y): notches > 0 zoom in."""
    page.mouse.move(x, y)
    page.keyboard.down("Control")
    for _ in range(abs(notches)):
        page.mouse.wheel(0, -150 if notches > 0 else 150)
        page.wait_for_timeout(20)
    page.keyboard.up("Control")
    page.wait_for_timeout(100)


def test_zoom_keeps_the_time_under_the_cursor_and_stays_on_the_trace(
    demo: tuple[str, traces.TraceFile], browser: Any, tmp_path: Path
) -> None:
    url, tf = demo
    page = _open(browser, url)
    try:
        box = _chart_box(page)
        y = box["y"] + 300
        for frac in (0.5, 0.3, 0.02):  # the middle, off-centre, the left edge
            x = round(box["x"] + box["width"] * frac)  # the pointer is on whole pixels
            page.evaluate("window.viewer.fit()")
            page.mouse.move(x, y)
            before = page.evaluate(f"window.viewer.timeAt({x})")
            _zoom(page, x, y, 8)
            after = page.evaluate(f"window.viewer.timeAt({x})")
            assert after == pytest.approx(before, rel=1e-9, abs=1e-9)
            view = page.evaluate("window.viewer.view()")
            assert view["t1"] - view["t0"] < 0.5 * (tf.events[-1].t - tf.events[0].t)
            assert view["cursor"] is not None and view["cursor"].startswith("t=")
        page.screenshot(path=str(tmp_path / "zoomed.png"))
        # zoomed in at the left edge, then out and panned left: never before the trace
        _zoom(page, box["x"] + 5, y, -3)
        page.mouse.move(box["x"] + 200, y)
        page.mouse.down()
        page.mouse.move(box["x"] + 900, y, steps=5)
        page.mouse.up()
        page.wait_for_timeout(100)
        view = page.evaluate("window.viewer.view()")
        assert view["t0"] >= tf.events[0].t
        assert view["k0"] >= -16 * view["kpp"] - 1e-9  # at most the 16-px margin
        for tick in view["ticks"]:
            assert not tick["label"].startswith("-"), tick
        page.screenshot(path=str(tmp_path / "left-edge.png"))
        # the tooltip follows the view: gone once the pointer leaves the chart
        page.mouse.move(box["x"] - 100, y)
        page.wait_for_timeout(100)
        assert page.evaluate("window.viewer.view()")["tooltip"] is None
        assert page.is_hidden("#tooltip")
    finally:
        page.context.close()


def test_focus_opens_on_the_aborted_start_drawn_as_a_cancellation(
    demo: tuple[str, traces.TraceFile], browser: Any, tmp_path: Path
) -> None:
    url, tf = demo
    ev = tf.events
    stop = next(
        e for e in ev if e.kind == "send" and e.msg_type == "Stop" and "vmm-abort" in e.actor
    )
    activate = next(
        e
        for e in ev
        if e.kind == "handle"
        and e.outcome == "cancelled"
        and e.actor.endswith("vmm-abort/crucible-disk0")
    )
    page = _open(browser, url + "?focus=vmm-abort")
    try:
        page.screenshot(path=str(tmp_path / "focus-vmm-abort.png"))
        box = _chart_box(page)

        def on_screen(x: float, y: float) -> bool:
            return (
                box["x"] <= x <= box["x"] + box["width"]
                and box["y"] <= y <= box["y"] + box["height"]
            )

        assert page.input_value("#filter-vmm") == "vmm-abort"
        stats = page.evaluate("window.viewer.stats()")
        assert 0 < stats["filtered"] < len(ev) // 10  # filtered to the VMM
        pos = page.evaluate(f"window.viewer.position({stop.seq})")
        assert pos is not None and on_screen(pos["x"], pos["y"]), pos
        sl = page.evaluate(f"window.viewer.slice({activate.seq})")
        assert sl["style"] == "cancelled" and sl["end"] == activate.seq
        assert on_screen(sl["x1"], sl["y"]) and on_screen(sl["x2"], sl["y"])
        assert sl["x2"] - sl["x1"] > 0.3 * box["width"]  # zoomed to the VMM: a wide slice
        # the tree names filtered lifelines by their path, not a bare leaf
        names = page.locator(".tree-row .name").all_inner_texts()
        assert "sled/propolis-host" in names and "crucible-disk0" in names
        # the details headline says cancelled; the raw exception group is folded away
        page.evaluate(f"window.viewer.select({activate.seq})")
        page.wait_for_timeout(100)
        headline = page.inner_text("#details h3")
        assert headline.endswith("· cancelled") and "Activate" in headline
        assert "ended (error)" not in page.inner_text("#details")
        assert page.locator("#details details.raw").count() == 1
        if activate.cause is not None:  # the runtime names the cancelling message
            links = page.evaluate("window.viewer.causeLinks()")
            assert {"to": activate.seq, "how": "cancelled"}.items() <= next(
                link for link in links if link["to"] == activate.seq
            ).items()
        page.screenshot(path=str(tmp_path / "focus-selected.png"))
    finally:
        page.context.close()
