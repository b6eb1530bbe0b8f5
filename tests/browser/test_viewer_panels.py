"""The viewer's panels in a real browser (issue 13): findings, search matches, payload diff,
actor table. Debian's Chromium driven by Playwright, on one demo trace for the module.

Each test reads what the page shows and checks it against the trace file read here with
``traces.read_trace``. Skipped where Chromium or Playwright is missing (never a downloaded
browser). Screenshots are saved under the module's tmp dir.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from trioxide import traces

from ._serve import launch, needs_chromium, served, write_demo_trace

sync_api = pytest.importorskip("playwright.sync_api")
pytestmark = needs_chromium
VCR_DISK = "sled/propolis-host/propolis-vmm-vcr/crucible-disk0"


@dataclass
class Page:
    page: Any
    trace: traces.TraceFile
    shots: Path


@pytest.fixture(scope="module")
def viewer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Page]:
    tmp = tmp_path_factory.mktemp("panels")
    trace = tmp / "sled.jsonl"
    write_demo_trace(trace)
    with served(trace) as url, sync_api.sync_playwright() as p:
        browser = launch(p)
        try:
            # The server's CSP forbids eval; Playwright's string predicates need it.
            context = browser.new_context(viewport={"width": 1600, "height": 1000}, bypass_csp=True)
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url)
            page.wait_for_function("window.viewer && window.viewer.stats().ended", timeout=60_000)
            page.wait_for_selector("#panels table.ptable", timeout=10_000)
            yield Page(page, traces.read_trace(trace), tmp)
            assert not errors, errors
        finally:
            browser.close()


def _reset(v: Page, tab: str) -> None:
    v.page.evaluate(
        "window.viewer.setFilter({actor: '', type: '', vmm: '', search: '', kinds: null})"
    )
    v.page.evaluate("window.viewer.setCutoff(null)")
    v.page.evaluate(f"window.viewer.showPanel({tab!r})")


def _rows(v: Page) -> list[dict[str, Any]]:
    """The visible panel's table: one dict per row, by column key, plus the seq a click on the
    row jumps to ('at') and each numeric cell's exact value (data-value) under '<key>#'."""
    rows: list[dict[str, Any]] = v.page.evaluate(
        """() => {
        const t = document.querySelector('#panels table.ptable');
        const heads = [...t.querySelectorAll('th')].map((th) => th.dataset.key);
        return [...t.querySelectorAll('tbody tr')].map((tr) => {
          const row = {
            at: Number(tr.dataset.seq),
            to: tr.dataset.to === undefined ? null : Number(tr.dataset.to),
          };
          [...tr.children].forEach((td, k) => {
            row[heads[k]] = td.textContent;
            if (td.dataset.value !== undefined) row[heads[k] + '#'] = Number(td.dataset.value);
          });
          return row;
        });
      }"""
    )
    return rows


def _receive_of(tf: traces.TraceFile, actor: str, msg_type: str) -> traces.TraceEvent:
    return next(
        e for e in tf.events if e.kind == "receive" and e.actor == actor and e.msg_type == msg_type
    )


def test_findings_list_the_480s_activation_and_a_click_selects_it(viewer: Page) -> None:
    v = viewer
    _reset(v, "findings")
    recv = _receive_of(v.trace, VCR_DISK, "Activate")
    handle = next(e for e in v.trace.events if e.kind == "handle" and e.msg_id == recv.msg_id)
    assert 480 <= handle.t - recv.t < 481  # the black-holed disk's activation
    v.page.click("#panels .chip[data-cat=slow]")
    v.page.wait_for_timeout(100)
    rows = _rows(v)
    assert {r["cat"] for r in rows} == {"slowest handlers"}
    durations = [r["dur#"] for r in rows]
    assert durations == sorted(durations, reverse=True)
    row = next(r for r in rows if r["at"] == recv.seq)
    assert row["actor"] == VCR_DISK and row["type"] == "Activate"
    assert row["dur#"] == pytest.approx(handle.t - recv.t)
    assert row["dur"] == "480.050 s"
    # A cancelled handler reads as a cancellation (by its cause when the trace names one),
    # never as the raw exception group of its Cancelled.
    ends = {e.seq: e for e in v.trace.events if e.kind == "handle"}
    cancelled = [ends[r["to"]] for r in rows if r["to"] in ends]
    # (vmm-abort's activation, cancelled by the Stop)
    assert any(h.outcome == "cancelled" for h in cancelled)
    for r in rows:
        h = ends.get(r["to"])
        if h is not None and h.outcome == "cancelled":
            assert r["detail"].startswith("cancelled") and "ExceptionGroup" not in r["detail"]
            if h.cause is not None:
                sent = next(e for e in v.trace.events if e.seq == h.cause)
                assert r["detail"] == f"cancelled by {sent.msg_type} (msg {h.cause})"

    # sortable: by seq (a number column: descending on the first click, ascending next)
    v.page.click("#panels th[data-key=seq]")
    seqs = [r["at"] for r in _rows(v)]
    assert seqs == sorted(seqs, reverse=True)
    v.page.click("#panels th[data-key=seq]")
    seqs = [r["at"] for r in _rows(v)]
    assert seqs == sorted(seqs)

    v.page.click(f"#panels tbody tr[data-seq='{recv.seq}']")
    v.page.wait_for_timeout(200)
    assert v.page.evaluate("window.viewer.stats().selected") == recv.seq
    details = v.page.inner_text("#details")
    assert f"seq {recv.seq}" in details and "Activate" in details and "480.050 s" in details
    # the jump zoomed so that the whole slice is on screen, and the event is drawn there
    pos = v.page.evaluate(f"window.viewer.position({recv.seq})")
    end = v.page.evaluate(f"window.viewer.position({handle.seq})")
    chart = v.page.locator("#chart").bounding_box()
    assert pos is not None and end is not None and chart is not None
    assert chart["x"] <= pos["x"] < end["x"] <= chart["x"] + chart["width"]
    v.page.screenshot(path=str(v.shots / "findings.png"))


def _search_hits(tf: traces.TraceFile, q: str) -> list[int]:
    """The seqs of the events the viewer's search matches: actor, peer, message type (the
    event's or its message's), detail or payload (the event's or its message's send's)."""
    sends = {e.msg_id: e for e in tf.events if e.kind == "send"}
    hits = []
    for e in tf.events:
        mid = e.corr if e.kind == "reply" else (e.msg_id if e.msg_id is not None else e.corr)
        send = sends.get(mid)
        msg_type = e.msg_type or (send.msg_type if send else None)
        payload = bytes(e.payload) or (bytes(send.payload) if send else b"")
        fields = [e.actor, e.peer, msg_type, e.detail, payload.decode()]
        if any(f and q in f.lower() for f in fields):
            hits.append(e.seq)
    return hits


def test_search_lists_its_matches_and_a_click_jumps(viewer: Page) -> None:
    v = viewer
    _reset(v, "findings")
    hits = _search_hits(v.trace, "vmm-vcr-ds-new")
    assert 4 < len(hits) < 200
    v.page.fill("#search", "vmm-vcr-ds-new")  # typing a search shows the matches panel
    v.page.wait_for_function(
        "document.querySelector('#panels button.on[data-tab=matches]') !== null", timeout=5000
    )
    v.page.wait_for_function(
        "(document.querySelector('#panels .count') || {}).textContent?.includes('vmm-vcr-ds-new')",
        timeout=5000,
    )
    count = v.page.inner_text("#panels .count")
    assert count.startswith(f"{len(hits)} events matching")
    rows = _rows(v)
    assert [r["at"] for r in rows] == hits
    assert all("vmm-vcr-ds-new" in r["detail"] for r in rows if r["kind"] == "send")
    target = rows[len(rows) // 2]
    v.page.click(f"#panels tbody tr[data-seq='{target['at']}']")
    v.page.wait_for_timeout(200)
    assert v.page.evaluate("window.viewer.stats().selected") == target["at"]
    assert f"seq {target['at']}" in v.page.inner_text("#details")
    v.page.screenshot(path=str(v.shots / "matches.png"))


def _diff(a: Any, b: Any, path: str = "") -> list[str]:
    """Changed / added / removed leaf paths from a to b, named as the panel names them."""
    if isinstance(a, dict) and isinstance(b, dict):
        keys: list[Any] = sorted(a.keys() | b.keys())
        name = (lambda k: f"{path}.{k}") if path else str
    elif isinstance(a, list) and isinstance(b, list):
        keys = list(range(max(len(a), len(b))))
        name = lambda k: f"{path}[{k}]"  # noqa: E731
    else:
        return [] if a == b else [path or "(the whole payload)"]
    out = []
    for k in keys:
        both = k in a and k in b if isinstance(a, dict) else k < min(len(a), len(b))
        out += _diff(a[k], b[k], name(k)) if both else [name(k)]
    return out


def _diff_rows(v: Page) -> list[tuple[str, str, str]]:
    rows: list[list[str]] = v.page.evaluate(
        "[...document.querySelectorAll('#details .pdiff tr')].map((tr) =>"
        " ['.op', '.path', '.val'].map((c) => tr.querySelector(c).textContent))"
    )
    return [(op, path, val) for op, path, val in rows]


def test_payload_diff_names_what_changed(viewer: Page) -> None:
    v = viewer
    _reset(v, "findings")
    tf = v.trace
    # The VCR replacement: the first ReplaceVcr to this VMM, compared with the VCR it
    # launched with (the same volume id in LaunchPropolis).
    replace = next(e for e in tf.events if e.kind == "send" and e.msg_type == "ReplaceVcr")
    launch = next(
        e
        for e in tf.events
        if e.kind == "send"
        and e.msg_type == "LaunchPropolis"
        and e.seq < replace.seq
        and json.loads(bytes(e.payload)).get("propolis_id") == "vmm-vcr"
    )
    assert v.page.evaluate(f"window.viewer.jump({replace.seq})")
    caption = v.page.inner_text("#details .pdiff .cap")
    assert "LaunchPropolis" in caption and f"seq {launch.seq}" in caption
    old = json.loads(bytes(launch.payload))["disks"]["disk0"]
    new = json.loads(bytes(replace.payload))["vcr"]
    changed = sorted(f"vcr.{p}" for p in _diff(old, new))
    assert changed == ["vcr.sub_volumes[0].generation", "vcr.sub_volumes[0].targets[1]"]
    assert sorted(_diff_rows(v)) == [
        ("changed", "vcr.sub_volumes[0].generation", "1 → 2"),
        ("changed", "vcr.sub_volumes[0].targets[1]", '"vmm-vcr-ds-b" → "vmm-vcr-ds-new"'),
    ]
    v.page.locator("#details .pdiff").scroll_into_view_if_needed()
    v.page.screenshot(path=str(v.shots / "diff.png"))

    # The rule itself: against the previous message of the same type to the same actor.
    last: dict[tuple[str, str | None], traces.TraceEvent] = {}
    pick = None
    for e in tf.events:
        if e.kind != "send" or not bytes(e.payload):
            continue
        prev = last.get((e.actor, e.msg_type))
        last[(e.actor, e.msg_type)] = e
        if prev is not None and isinstance(json.loads(bytes(e.payload)), dict):
            paths = _diff(json.loads(bytes(prev.payload)), json.loads(bytes(e.payload)))
            if paths and pick is None:
                pick = (prev, e, paths)
    assert pick is not None
    prev, ev, paths = pick
    # selecting the message's receive shows its payload's diff too
    recv = next((e for e in tf.events if e.kind == "receive" and e.msg_id == ev.msg_id), ev)
    assert v.page.evaluate(f"window.viewer.jump({recv.seq})")
    caption = v.page.inner_text("#details .pdiff .cap")
    assert f"previous {ev.msg_type} to this actor" in caption and f"seq {prev.seq}" in caption
    assert sorted(p for _, p, _ in _diff_rows(v)) == sorted(paths)


def _actor_table(
    tf: traces.TraceFile, cut: int
) -> dict[str, tuple[int, int, float, float | None, int]]:
    """actor -> (mailbox depth, handled, busy, age of the handler in progress, restarts)
    over the events up to seq `cut`."""
    evs = [e for e in tf.events if e.seq <= cut]
    now = evs[-1].t
    depth: Counter[str] = Counter()
    handled: Counter[str] = Counter()
    restarts: Counter[str] = Counter()
    busy: dict[str, float] = {}
    oldest: dict[str, float] = {}
    open_: dict[str, dict[int | None, float]] = {}
    for e in evs:
        a = e.actor
        busy.setdefault(a, 0.0)
        if e.kind == "send":
            depth[a] += 1
        elif e.kind == "receive":
            depth[a] -= 1
            if e.detail is None:  # selective / interrupt receives have no slice
                open_.setdefault(a, {})[e.msg_id] = e.t
        elif e.kind == "drop" or (
            e.kind in ("cancel", "timeout") and e.detail in ("cancelled", "timeout")
        ):
            depth[a] -= 1
        elif e.kind == "restart":
            restarts[a] += 1
        elif e.kind == "handle" and e.msg_id in open_.get(a, {}):
            busy[a] += e.t - open_[a].pop(e.msg_id)
            handled[a] += 1
        elif e.kind in ("stop", "fail"):  # a handler still running ended with its actor
            for t in open_.pop(a, {}).values():
                busy[a] += e.t - t
    for a, slices in open_.items():
        for t in slices.values():
            busy[a] += now - t
        if slices:
            oldest[a] = now - min(slices.values())
    return {a: (depth[a], handled[a], busy[a], oldest.get(a), restarts[a]) for a in busy}


def test_actor_table_shows_the_state_at_the_cursor_and_sorts(viewer: Page) -> None:
    v = viewer
    _reset(v, "actors")
    tf = v.trace
    recv = _receive_of(tf, VCR_DISK, "Activate")
    # the cursor mid-way through the black-holed activation
    cut = next(e.seq for e in tf.events if e.t >= recv.t + 200)
    expected = _actor_table(tf, cut)
    assert expected[VCR_DISK][3] is not None and expected[VCR_DISK][3] >= 200
    v.page.evaluate(f"window.viewer.setCutoff({cut})")
    v.page.wait_for_function(
        f"(document.querySelector('#panels .count') || {{}}).textContent?.includes('seq {cut:,}')",
        timeout=5000,
    )
    rows = {r["actor"]: r for r in _rows(v)}
    assert set(rows) == set(expected)
    for actor, (depth, handled, busy, age, restarts) in expected.items():
        r = rows[actor]
        assert (int(r["depth"]), int(r["handled"]), int(r["restarts"])) == (
            depth,
            handled,
            restarts,
        ), actor
        assert r["busy#"] == pytest.approx(busy, abs=1e-6), actor
        if age is None:
            assert r["age"] == "", actor
        else:
            assert r["age#"] == pytest.approx(age, abs=1e-6), actor
    assert "Activate" in rows[VCR_DISK]["age"]
    v.page.screenshot(path=str(v.shots / "actors.png"))

    # sort by mailbox depth, then by the age of the handler in progress
    v.page.click("#panels th[data-key=depth]")
    depths = [int(r["depth"]) for r in _rows(v)]
    assert depths == sorted(depths, reverse=True)
    v.page.click("#panels th[data-key=age]")
    ages = [r.get("age#") for r in _rows(v)]
    shown = [a for a in ages if a is not None]
    assert shown == sorted(shown, reverse=True) and ages[: len(shown)] == shown  # blanks last
    assert _rows(v)[0]["actor"] in {a for a, x in expected.items() if x[3] == max(shown)}

    # the end of the trace: every mailbox is empty
    v.page.evaluate("window.viewer.setCutoff(null)")
    last = tf.events[-1].seq
    v.page.wait_for_function(
        f"(document.querySelector('#panels .count') || {{}}).textContent?.includes('seq {last:,}')",
        timeout=5000,
    )
    assert {int(r["depth"]) for r in _rows(v)} == {0}
