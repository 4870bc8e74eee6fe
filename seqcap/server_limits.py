"""The limits of `seqcap serve` (seqcap/server.py) on one request, and the checks that answer a
request over one with a 413 or 422 whose message names the limit and its value."""

from __future__ import annotations

import io
from dataclasses import dataclass, field

from fastapi import HTTPException
from fastapi.responses import JSONResponse
from PIL import Image, UnidentifiedImageError

# the requests' defaults that a limit must allow: beam_size 5, top 5, num 5, max_len 50
REQUEST_DEFAULTS = {"max_beam": 5, "max_n_best": 5, "max_num": 5, "max_output_len": 50}


@dataclass(frozen=True)
class ServerOptions:
    """How the server batches, whom it lets in, and the limits on one request (each one a
    `seqcap serve` option of the same name with hyphens)."""

    max_batch: int = 32  # items (sentences, images, questions) run together per model (1: no batching)
    max_wait_ms: float = 5.0  # the longest the worker gathers requests to batch (0: none)
    # when set, every request but /health, /docs and /openapi.json needs `Authorization: Bearer TOKEN`
    token: str | None = field(default=None, repr=False)
    max_body_bytes: int = 20_000_000
    max_image_bytes: int = 10_000_000  # one uploaded image file
    max_image_pixels: int = 25_000_000  # width x height of one image
    max_images: int = 16  # images in one /caption request
    max_sentences: int = 64  # sentences (or questions) in one request
    max_sentence_chars: int = 2000  # characters in one sentence, question or prompt
    max_beam: int = 16  # beam_size
    max_n_best: int = 16  # n_best (and /answer's top)
    max_num: int = 64  # /generate's num
    max_output_len: int = 200  # /generate's and /caption's max_len

    def __post_init__(self) -> None:
        """ValueError for a limit below the default of what it limits (a request that leaves the
        option out would be refused) or a batch below 1."""
        if self.max_batch < 1 or self.max_wait_ms < 0:
            raise ValueError(
                f"max_batch must be >= 1 and max_wait_ms >= 0, got {self.max_batch}, {self.max_wait_ms}"
            )
        for name, least in REQUEST_DEFAULTS.items():
            if getattr(self, name) < least:
                option = "--" + name.replace("_", "-")
                raise ValueError(
                    f"{option} must be at least {least} (the requests' default), got {getattr(self, name)}"
                )


class BodyLimit:
    """ASGI middleware: 413 for a request body over `limit` bytes, from Content-Length or, for a
    chunked body, as soon as the bytes received pass it."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        message = f"the request body is over this server's limit of {self.limit} bytes (--max-body-bytes)"
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await JSONResponse({"detail": message}, status_code=413)(scope, receive, send)
        received = 0

        async def limited():
            nonlocal received
            event = await receive()
            if event["type"] == "http.request":
                received += len(event.get("body", b""))
                if received > self.limit:
                    raise HTTPException(413, message)
            return event

        return await self.app(scope, limited, send)


def limit(value: int, cap: int, what: str, option: str, status: int = 422) -> None:
    """HTTPException(status) "WHAT VALUE is over this server's limit of CAP (OPTION)" when value > cap."""
    if value > cap:
        raise HTTPException(status, f"{what} {value} is over this server's limit of {cap} ({option})")


def check_texts(texts: list[str], options: ServerOptions, what: str) -> None:
    """413 for more texts than --max-sentences or one longer than --max-sentence-chars."""
    limit(len(texts), options.max_sentences, f"{what}: the count", "--max-sentences", 413)
    for i, text in enumerate(texts):
        if len(text) > options.max_sentence_chars:
            raise HTTPException(
                413,
                f"{what} {i}: {len(text)} characters, over this server's limit of "
                f"{options.max_sentence_chars} (--max-sentence-chars)",
            )


def decode_image(data: bytes, filename: str, options: ServerOptions) -> Image.Image:
    """Uploaded bytes -> an RGB PIL image; 413 over the byte or pixel limit, 400 when PIL cannot
    decode it (the message names the upload)."""
    if len(data) > options.max_image_bytes:  # the caller reads at most one byte more than the limit
        raise HTTPException(
            413,
            f"image {filename!r}: over this server's limit of {options.max_image_bytes} bytes "
            "(--max-image-bytes)",
        )
    try:
        with Image.open(io.BytesIO(data)) as img:  # reads the header only
            width, height = img.size
            if width * height > options.max_image_pixels:
                raise HTTPException(
                    413,
                    f"image {filename!r}: {width}x{height} = {width * height} pixels, over this server's "
                    f"limit of {options.max_image_pixels} (--max-image-pixels)",
                )
            img.load()
            return img.convert("RGB")
    except UnidentifiedImageError:
        raise HTTPException(
            400, f"image {filename!r} cannot be decoded: not an image format PIL reads"
        ) from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise HTTPException(400, f"image {filename!r} cannot be decoded: {e}") from None
