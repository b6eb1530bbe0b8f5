"""The browser the viewer tests share (one per test module): Debian's Chromium driven by
Playwright (``_serve.launch``); the tests skip where either is missing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from ._serve import launch


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = launch(p)
        try:
            yield b
        finally:
            b.close()
