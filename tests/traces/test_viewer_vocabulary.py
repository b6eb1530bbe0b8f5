"""The viewer speaks the trace vocabulary of ``trioxide.traces`` (kinds and outcomes).

The viewer is static JavaScript with no build step, so its lists are checked against the
Python definitions here: a kind added to ``traces.KINDS`` without the viewer learning it
(a filter checkbox, a mark or a slice) fails this test.
"""

from __future__ import annotations

import re
from pathlib import Path

from trioxide import traces

VIEWER = Path(traces.__file__).parent / "viewer" / "viewer.js"


def _js_array(name: str, text: str) -> list[str]:
    m = re.search(rf"const {name} = \[(.*?)\];", text, re.S)
    assert m, f"viewer.js has no {name} array"
    return re.findall(r"'([a-z_]+)'", m.group(1))


def _js_object_keys(name: str, text: str) -> set[str]:
    """Top-level keys of ``const NAME = { key: ..., ... };`` (one line or one per line)."""
    start = text.index(f"const {name} = {{")
    body = text[start + len(f"const {name} = {{") : text.index("};", start)]
    keys: set[str] = set()
    depth = 0
    for m in re.finditer(r"[{}]|(\w+):", body):
        if m.group(0) == "{":
            depth += 1
        elif m.group(0) == "}":
            depth -= 1
        elif depth == 0 and m.group(1):
            keys.add(m.group(1))
    return keys


def test_viewer_kinds_are_the_trace_kinds() -> None:
    text = VIEWER.read_text()
    kinds = _js_array("KINDS", text)
    assert len(kinds) == len(set(kinds)) and set(kinds) == set(traces.KINDS)


def test_every_kind_is_drawn_as_a_mark_or_an_arrow_or_a_slice() -> None:
    text = VIEWER.read_text()
    drawn = _js_object_keys("MARKS", text) | _js_object_keys("KIND_ICONS", text)
    assert set(traces.KINDS) <= drawn, set(traces.KINDS) - drawn


def test_viewer_slice_styles_cover_every_handler_outcome() -> None:
    text = VIEWER.read_text()
    styles = _js_object_keys("SLICE_STYLE", text)
    assert {"ok", "error", "cancelled"} <= styles
    assert styles <= set(traces.OUTCOMES)
