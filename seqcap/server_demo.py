"""The demo page of `seqcap serve` at `/`: plain HTML, CSS and JS (seqcap/demo/) that call the JSON
API like any client. The panels follow GET /models: translate (with the attention as a heatmap),
an image to caption (with the attention over it, for an attention captioner) and to ask about
(VQA), and samples of a language model.

The page's files are open to anyone who reaches the server, like /docs: they hold no model and no
data. With a token, the page asks for it and sends it on each API call."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse

DEMO_DIR = Path(__file__).parent / "demo"
DEMO_FILES = {"demo.js": "text/javascript", "demo.css": "text/css"}
DEMO_PATHS = frozenset({"/", *(f"/demo/{name}" for name in DEMO_FILES)})  # need no token


def add_demo(app: FastAPI) -> None:
    """GET / (the page) and GET /demo/demo.js, /demo/demo.css on `app`; left out of /docs."""

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(DEMO_DIR / "index.html", media_type="text/html")

    for name, media_type in DEMO_FILES.items():
        app.add_api_route(f"/demo/{name}", serve(DEMO_DIR / name, media_type), include_in_schema=False)


def serve(path: Path, media_type: str):
    """A route handler (no parameters) that answers with the file at `path`."""

    async def handler() -> FileResponse:
        return FileResponse(path, media_type=media_type)

    return handler
