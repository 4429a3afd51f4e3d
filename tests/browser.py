"""Headless Chromium for the web page's tests: Debian's `chromium` (installed by `make test`)
driven by Playwright, started as the machine's closed network needs it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# No sandbox as root; no background connections (refused here, and slow to fail)
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Where the page's screenshots go (git-ignored).
OUTPUT = REPO_ROOT / "build" / "test-output" / "web"


@contextmanager
def launch() -> Iterator:
    """Debian's Chromium, headless, through Playwright (for the tests and benchmarks)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def chromium() -> Iterator:
    """`launch`, or the test skipped when the browser or Playwright is not installed."""
    pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).is_file():
        pytest.skip("Debian's chromium is not installed (`make test` installs it)")
    with launch() as browser:
        yield browser
