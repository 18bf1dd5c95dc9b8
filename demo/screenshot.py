"""Take the README's screenshot of the demo (``docs/demo.png``) in headless Chromium.

    python -m demo.screenshot [--model DIR ...] [--out docs/demo.png]

Starts the demo in this process, transcribes the first example clip on the Transcribe tab and saves
the whole page as a palette PNG (small enough for the repository). Needs Debian's ``chromium`` and
the ``playwright`` package (never ``playwright install``).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from PIL import Image

from .app import DEFAULT_EXAMPLES, build_app

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


def shoot(out: Path, models: list[Path] | None = None, *, examples: Path | None = None, width: int = 1280,
          colors: int = 96) -> Path:
    """Screenshot of the page after transcribing the first example clip, as a ``colors``-colour PNG."""
    from playwright.sync_api import sync_playwright

    app = build_app(models or None, threads=1, examples=DEFAULT_EXAMPLES if examples is None else examples)
    app.launch(prevent_thread_lock=True, quiet=True)
    try:
        with sync_playwright() as pw, tempfile.TemporaryDirectory() as profile:
            browser = pw.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, headless=True, args=ARGS,
                                                            viewport={"width": width, "height": 900})
            page = browser.new_page()
            assert app.local_url is not None  # set by launch()
            page.goto(app.local_url)
            page.wait_for_selector("#tabs")
            if page.locator("#asr-run").count() and page.locator("#asr-examples").count():
                page.click("#asr-examples button >> nth=0")
                page.wait_for_selector("#asr-audio audio", state="attached")
                page.click("#asr-run")
                page.wait_for_function("document.querySelector('#transcript textarea').value.length > 0")
                page.wait_for_selector("#posteriorgram img")
            page.wait_for_timeout(500)
            raw = Path(profile) / "page.png"
            page.screenshot(path=str(raw), full_page=True)
            browser.close()
            out.parent.mkdir(parents=True, exist_ok=True)
            image = Image.open(raw).convert("RGB").quantize(colors=colors, method=Image.Quantize.MEDIANCUT)
            image.save(out, optimize=True)
    finally:
        app.close()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, action="append", default=[], help="model directory (default: demo/models/)")
    p.add_argument("--examples", type=Path, help="examples folder (default: demo/examples/)")
    p.add_argument("--out", type=Path, default=Path("docs/demo.png"))
    a = p.parse_args()
    path = shoot(a.out, a.model, examples=a.examples)
    print(f"{path}: {path.stat().st_size / 1024:.0f} KB")


if __name__ == "__main__":
    main()
