"""The viewer shows the merged traces of several processes (``trioxide view a b c``), in
real Chromium driven by Playwright: every process's actors under its name, and an arrow
from each HTTP request sent to where another process served it (the ``cause`` of the
``http_serve``). The traces are those of ``tests/traces/test_merge.py``: Nexus calls a
sled agent, whose runner calls Propolis. The screenshot goes to the test's tmp dir.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.traces.test_merge import three_processes
from trioxide import traces

from ._serve import needs_chromium, served

sync_api = pytest.importorskip("playwright.sync_api")
pytestmark = needs_chromium


def test_merged_view_draws_requests_across_processes(browser: Any, tmp_path: Path) -> None:
    paths = []
    for proc in three_processes():
        path = tmp_path / f"{proc.name}.jsonl"
        traces.write_trace(path, proc.header, proc.sink.events)
        paths.append(path)
    merged = traces.merge_files(paths)
    sends = {e.seq: e for e in merged.events if e.kind == "http_send"}
    serves = [e for e in merged.events if e.kind == "http_serve"]
    expected = {(s.cause, s.seq) for s in serves}
    assert len(expected) == 2 and all(cause in sends for cause, _ in expected)

    with served(paths[0], str(paths[1]), str(paths[2])) as url:
        context = browser.new_context(viewport={"width": 1400, "height": 700}, bypass_csp=True)
        page = context.new_page()
        try:
            page.goto(url)
            page.wait_for_function("window.__trioxide && window.__trioxide.ready", timeout=60_000)
            assert page.evaluate("window.viewer.stats()")["events"] == len(merged.events)
            page.wait_for_timeout(200)
            links = page.evaluate("window.viewer.causeLinks()")
            drawn = {(link["from"], link["to"]) for link in links if link["how"] == "http"}
            assert drawn == expected, links
            # The served request's mark is drawn where the event is (a trace whose clock
            # starts far from 0, as a rack process's does, had its marks off screen).
            (aserve,) = [s for s in serves if s.actor.startswith("sled-1/")]
            assert _is_teal(page.evaluate(_PIXEL_ABOVE, aserve.seq)), aserve
            names = " ".join(page.locator(".tree-row .name").all_inner_texts())
            for process in ("nexus", "sled-1", "hypervisor"):
                assert process in names, names
            # The details of a served request name the request that caused it.
            (pserve,) = [s for s in serves if s.actor.startswith("hypervisor/")]
            page.evaluate(f"window.viewer.select({pserve.seq})")
            page.wait_for_timeout(100)
            details = page.inner_text("#details")
            assert f"#{pserve.cause} PUT /instance/state" in details, details
            page.screenshot(path=str(tmp_path / "merged.png"))
        finally:
            context.close()


# The canvas pixel 3 px above event *seq*'s position (inside an http_serve's triangle).
_PIXEL_ABOVE = """(seq) => {
  const p = window.viewer.position(seq);
  const cv = document.getElementById('canvas');
  const r = cv.getBoundingClientRect();
  const d = cv.width / r.width;
  const x = Math.round((p.x - r.left) * d);
  const y = Math.round((p.y - 3 - r.top) * d);
  return Array.from(cv.getContext('2d').getImageData(x, y, 1, 1).data);
}"""


def _is_teal(rgba: list[int]) -> bool:
    """The http_serve mark's color (#4fd6be), give or take antialiasing."""
    return abs(rgba[0] - 0x4F) < 40 and abs(rgba[1] - 0xD6) < 40 and abs(rgba[2] - 0xBE) < 40
