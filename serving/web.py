"""The page to try the served models (`--enable_web_ui`): static files on the REST port.

The page (`serving/webui/`: HTML, CSS and JavaScript, no library, nothing fetched from
elsewhere) is read into memory once when the server starts and answered from there: `/` and
`/ui/<file>`. It calls only the public REST API, as any client does. Its Content-Security-
Policy allows nothing but this origin (and `blob:`/`data:` images for the photos the user
chooses), so the page can load no remote script, style or font.
"""

from __future__ import annotations

from pathlib import Path

WEBUI_DIR = Path(__file__).with_name("webui")

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}

HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


class WebUi:
    """The page's files by request path, read once from `directory`."""

    def __init__(self, directory: Path = WEBUI_DIR):
        self.files: dict[str, tuple[bytes, str]] = {}
        for path in sorted(directory.iterdir()):
            if path.suffix in _TYPES:
                self.files[f"/ui/{path.name}"] = (path.read_bytes(), _TYPES[path.suffix])
        self.files["/"] = self.files["/ui/index.html"]

    def get(self, path: str) -> tuple[bytes, str] | None:
        """(body, content type) of the file at `path`, None when the page has none."""
        return self.files.get(path)

    def total_bytes(self) -> int:
        """The size of the whole page: every file once."""
        return sum(len(body) for path, (body, _) in self.files.items() if path != "/")
