"""The malformed requests of `seqcap bench serve` (seqcap/bench_serve.py): requests every server must
refuse with a 4xx, drawn from a seeded random.Random: random bytes, wrong JSON types, huge fields,
unknown model names, truncated JSON and, with a captioning model, bad images."""

from __future__ import annotations

import functools
import io
import random

# 64M pixels: over `seqcap serve`'s default --max-image-pixels (25M), under PIL's decompression bomb check
OVERSIZED = (8000, 8000)


def png_bytes(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@functools.cache
def bad_images() -> dict[str, bytes]:
    """The images a server must refuse: a PNG of noise (to be cut short: truncated) and one of
    OVERSIZED pixels (1 bit each, a few kB of PNG)."""
    from PIL import Image

    noise = Image.frombytes("RGB", (48, 48), random.Random(0).randbytes(3 * 48 * 48))
    return {"noise": png_bytes(noise), "oversized": png_bytes(Image.new("1", OVERSIZED))}


def malformed_image_request(rng: random.Random, caption_model: str) -> tuple[str, dict]:
    """A /caption request with a bad image, which a server must refuse with a 4xx: random bytes, a
    truncated PNG (cut anywhere after its 8-byte signature) or an image over the default pixel limit."""
    kind = rng.randrange(3)
    if kind == 0:
        name, data = "random.png", rng.randbytes(rng.randrange(1, 2000))
    elif kind == 1:
        noise = bad_images()["noise"]
        name, data = "truncated.png", noise[: rng.randrange(8, len(noise) // 2)]
    else:
        name, data = "oversized.png", bad_images()["oversized"]
    return f"/caption/{caption_model}", {"files": [("images", (name, data, "image/png"))]}


def malformed_request(rng: random.Random, model: str, caption_model: str | None = None) -> tuple[str, dict]:
    """A request every server must refuse with a 4xx: (path, httpx.post keyword arguments); with a
    captioning model, three in ten are bad images (malformed_image_request)."""
    kind = rng.randrange(10 if caption_model else 7)
    if kind >= 7:
        return malformed_image_request(rng, caption_model)
    path = f"/translate/{model}"
    if kind == 0:  # random bytes as a JSON body
        return path, {"content": rng.randbytes(rng.randrange(1, 200)),
                      "headers": {"content-type": "application/json"}}  # fmt: skip
    if kind == 1:  # wrong JSON types
        wrong = [{"sentences": "not a list"}, {"sentences": [1, {"a": 2}]},
                 {"sentences": ["a"], "beam_size": "five"}, [1, 2, 3], "text"]  # fmt: skip
        return path, {"json": rng.choice(wrong)}
    if kind == 2:  # a huge sentence (over --max-sentence-chars)
        return path, {"json": {"sentences": ["word " * 20_000]}}
    if kind == 3:  # too many sentences (over --max-sentences)
        return path, {"json": {"sentences": ["a b"] * 5000}}
    if kind == 4:  # a huge beam
        return path, {"json": {"sentences": ["a b"], "beam_size": 10**6}}
    if kind == 5:  # an unknown model name
        return f"/translate/no-such-model-{rng.randrange(1000)}", {"json": {"sentences": ["a b"]}}
    return path, {"content": b'{"sentences": ["trunc', "headers": {"content-type": "application/json"}}
