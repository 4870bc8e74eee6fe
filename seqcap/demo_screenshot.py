"""A screenshot of the demo page of a running `seqcap serve` (seqcap/server_demo.py), taken in
headless Chromium through Playwright (dev dependencies: `pip install -e '.[dev]'` and Debian's
`chromium`): it fills every panel the page shows, waits for the answers, and writes a PNG.

    python -m seqcap.demo_screenshot http://127.0.0.1:8000 docs/images/demo_page.png \\
        --sentence "Could not open the file." --image .../test_00002.png --word triangle

The README's picture is made this way (on `seqcap serve --quickstart --model caption=ATTENTION_CKPT`:
the quickstart translator beside an attention captioner); tests/test_demo_page.py drives the same
page step by step and checks what it shows.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
INSTALL = (
    "install it with `apt-get install chromium` (Debian/Ubuntu) or point SEQCAP_CHROMIUM at a Chrome or "
    "Chromium binary; the playwright package comes with the dev dependencies (pip install -e '.[dev]')"
)


def find_browser() -> tuple[str | None, str]:
    """(the Chromium binary, "") or (None, why not): SEQCAP_CHROMIUM, else the first of BROWSERS on
    PATH, and the playwright package to drive it."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return None, "the playwright package is not installed"
    found = os.environ.get("SEQCAP_CHROMIUM") or next(filter(None, map(shutil.which, BROWSERS)), None)
    if found is None:
        return None, f"no Chromium found (looked for {', '.join(BROWSERS)} on PATH and SEQCAP_CHROMIUM)"
    return found, ""


def take(
    url: str,
    out: Path,
    *,
    sentence: str,
    image: Path | None,
    question: str,
    token: str | None,
    word: str | None = None,
) -> None:
    """Opens `url`, gives the token if the page asks, translates `sentence`, chooses `image` (it is
    captioned; with `word`, the pointer rests on that word of the caption, so an attention
    captioner's overlay shows it), asks `question`, samples the LM, each where the page has that
    panel; then a full-page PNG at `out` (written whole: a temporary file renamed)."""
    from playwright.sync_api import sync_playwright

    browser_path, why = find_browser()
    if browser_path is None:
        raise RuntimeError(f"{why}; {INSTALL}")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1000, "height": 900})
        page.goto(url.rstrip("/") + "/")
        page.wait_for_function("document.getElementById('models-line').textContent !== 'Loading the models…'")
        if page.locator("#token-form").is_visible():
            if not token:
                raise RuntimeError("the server needs a token: give --token or set SEQCAP_TOKEN")
            page.fill("#token-input", token)
            page.click("#token-form button")
            page.wait_for_function(
                "document.getElementById('token-form').hidden || "
                "document.getElementById('status').textContent === 'That token was refused.'"
            )
            if not page.locator("#token-form").is_hidden():
                raise RuntimeError("the server refused the token")
        if page.locator("#translate-panel").is_visible():
            page.fill("#translate-input", sentence)
            page.click("#translate-button")
            page.wait_for_selector("#translate-attention table")
        if image is not None and page.locator("#image-panel").is_visible():
            page.set_input_files("#image-input", str(image))
            if page.locator("#caption-part").is_visible():
                page.wait_for_selector("#caption-output .word")
                words = page.locator("#caption-output .word").all_inner_texts()
                if word in words:
                    page.locator("#caption-output .word").nth(words.index(word)).hover()
                elif word is not None:
                    print(f"note: the caption has no word {word!r}: the overlay shows the first word's",
                          file=sys.stderr)  # fmt: skip
            if page.locator("#answer-part").is_visible():
                page.fill("#question-input", question)
                page.click("#answer-button")
                page.wait_for_selector("#answer-output li")
        if page.locator("#generate-panel").is_visible():
            page.click("#generate-button")
            page.wait_for_selector("#generate-output li")
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_name(out.name + ".partial.png")
        page.screenshot(path=str(partial), full_page=True)
        browser.close()
    partial.replace(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m seqcap.demo_screenshot", description=__doc__.split("\n")[0])
    p.add_argument("url", help="the server, e.g. http://127.0.0.1:8000")
    p.add_argument("out", type=Path, help="the PNG to write")
    p.add_argument("--sentence", default="Open the file in a new window.")
    p.add_argument("--image", type=Path, default=None, help="an image to caption and ask about")
    p.add_argument("--question", default="what colour is the circle?")
    p.add_argument("--word", help="a word of the caption to point at: its attention shows over the image")
    p.add_argument("--token", default=os.environ.get("SEQCAP_TOKEN"), help="default: $SEQCAP_TOKEN")
    args = p.parse_args(argv)
    if args.image is not None and not args.image.is_file():
        print(f"error: --image {args.image}: no such file", file=sys.stderr)
        return 2
    browser_path, why = find_browser()
    if browser_path is None:
        print(f"error: {why}; {INSTALL}", file=sys.stderr)
        return 2
    from playwright.sync_api import Error as BrowserError

    try:
        take(
            args.url,
            args.out,
            sentence=args.sentence,
            image=args.image,
            question=args.question,
            token=args.token,
            word=args.word,
        )
    except (RuntimeError, BrowserError) as e:  # no server at the URL, a refused token, a page that failed
        print(f"error: {args.url}: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
