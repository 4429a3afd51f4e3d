"""The web page of `zoo serve --enable_web_ui` in headless Chromium: time to each panel's
first answer, and the page's weight.

    .venv/bin/python -m benchmarks.web_page [--models models] [--runs 5]

Serves the models folder of `make serve` (installed first by `catalogue.bootstrap` when it is
missing) on free loopback ports, with the page on. For each panel, every run opens the page
in a new browser context (nothing cached), does what a person does (chooses a photo, or types
and presses the button) and stops the clock when the answer is on the page. The baseline, in
the same invocation, is the same request to the same server over REST from Python (what the
page's call costs without the browser). The median of `--runs` counts for each. Also prints
the bytes of the page's files (the target: under 200 KB without the images) and every
request the page made while it loaded.

Needs Debian's chromium (`make test` installs it) and the dev extra (Playwright).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.browser import launch
from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
PHOTO = sorted((DATA / "imagenette" / "val" / "n03028079").iterdir())[0]
CAPTION_PHOTO = sorted((DATA / "flickr8k" / "images").iterdir())[0]
SENTENCE = "The old man reads a book in the garden ."
SOURCE = "Two dogs play in the snow ."


def _b64(path: Path) -> dict:
    return {"b64": base64.b64encode(path.read_bytes()).decode()}


def _rest(port: int, model: str, body: dict) -> float:
    """Seconds of one REST predict call (the baseline)."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/models/{model}:predict",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    start = time.perf_counter()
    with urllib.request.urlopen(request) as answer:
        answer.read()
    return time.perf_counter() - start


def _choose(path: Path):
    def act(section):
        section.locator("input[type=file]").set_input_files(str(path))

    return act


def _type(label: str, text: str, button: str):
    def act(section):
        section.get_by_label(label).fill(text)
        section.get_by_role("button", name=button).click()

    return act


#: (panel, model, what a person does, the element that shows the answer, the REST call)
PANELS = [
    ("image classification", "googlenet", _choose(PHOTO), ".bars .label",
     {"instances": [_b64(PHOTO)]}),
    ("captioning", "captioner", _choose(CAPTION_PHOTO), ".words canvas",
     {"signature_name": "caption_with_attention",
      "inputs": {"image_bytes": [_b64(CAPTION_PHOTO)], "beam_size": 0, "max_length": 0}}),
    ("tagging", "tagger", _type("Sentence", SENTENCE, "Tag"), ".token",
     {"inputs": {"sentences": [SENTENCE]}}),
    ("translation", "seq2seq", _type("Sentence", SOURCE, "Translate"), "table.alignment",
     {"signature_name": "translate_with_attention",
      "inputs": {"source": [SOURCE], "beam_size": 0, "max_length": 0}}),
    ("language model", "gpt", _type("Prompt", "ROMEO:", "Generate"), "pre.completion",
     {"signature_name": "generate",
      "inputs": {"prompt": ["ROMEO:"], "temperature": [0.8], "top_k": [40], "top_p": [1.0],
                 "seed": [0], "max_new_tokens": [200], "stop": [""]}}),
]  # fmt: skip


def _serve(models: Path) -> tuple[subprocess.Popen, int]:
    if not (models / "models.config").is_file():
        subprocess.run([sys.executable, "-m", "catalogue.bootstrap", "--models", str(models)],
                       cwd=REPO, check=True)  # fmt: skip
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "serving", f"--port={free_port()}", f"--rest_api_port={port}",
         f"--model_config_file={models / 'models.config'}", "--enable_web_ui"],
        cwd=REPO, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready") as answer:
                if answer.status == 200:
                    return proc, port
        except OSError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("the server was not ready within 300 s")


def main(argv: list[str] | None = None) -> int:
    """Measure and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=REPO / "models")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    proc, port = _serve(args.models)
    origin = f"http://127.0.0.1:{port}"
    try:
        rows = []
        with launch() as browser:
            for panel, model, act, shown, body in PANELS:
                page_times, ready_times, rest_times = [], [], []
                for _ in range(args.runs):
                    context = browser.new_context()
                    page = context.new_page()
                    start = time.perf_counter()
                    page.goto(f"{origin}/")
                    page.wait_for_selector("body[data-ready=true]")
                    ready_times.append(time.perf_counter() - start)
                    section = page.locator(f"#model-{model}")
                    act(section)
                    section.locator(shown).first.wait_for(timeout=120_000)
                    page_times.append(time.perf_counter() - start)
                    context.close()
                    rest_times.append(_rest(port, model, body))
                rows.append((panel, model, *map(statistics.median,
                                                (ready_times, page_times, rest_times))))  # fmt: skip
            context = browser.new_context()
            page = context.new_page()
            loaded: list[tuple[str, int]] = []
            page.on("requestfinished",
                    lambda r: loaded.append((r.url.replace(origin, ""), r.sizes()["responseBodySize"])))  # fmt: skip
            page.goto(f"{origin}/")
            page.wait_for_selector("body[data-ready=true]")
            context.close()
    finally:
        proc.terminate()
        proc.wait(30)
    print(f"\nweb page, headless Chromium, median of {args.runs} runs (open -> answer on the page)")
    print(f"{'panel':<22}{'model':<11}{'page ready ms':>15}{'first answer ms':>17}"
          f"{'REST alone ms':>15}{'answer / REST':>15}")  # fmt: skip
    for panel, model, ready, answer, rest in rows:
        print(f"{panel:<22}{model:<11}{1000 * ready:>15.0f}{1000 * answer:>17.0f}"
              f"{1000 * rest:>15.0f}{answer / rest:>14.1f}x")  # fmt: skip
    files = [(url, size) for url, size in loaded if url.startswith("/ui/") or url == "/"]
    print("\nthe page's files (bytes)")
    for url, size in files:
        print(f"  {url:<20}{size:>8}")
    print(f"  {'total':<20}{sum(size for _, size in files):>8}   (target < 200,000)")
    print(f"\nrequests while the page loads: {len(loaded)}, other origins: "
          f"{sum(not (u.startswith('/') or u.startswith('data:')) for u, _ in loaded)}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
