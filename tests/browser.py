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
def chromium() -> Iterator:
    """A headless Chromium browser (skips the test when the browser is not installed)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).is_file():
        pytest.skip("Debian's chromium is not installed (`make test` installs it)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()
