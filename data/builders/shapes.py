"""A synthetic image-captioning dataset: coloured shapes on plain, gradient or noisy backgrounds.

Usage::

    python -m data.builders.shapes --out data/shapes --n-train 6000 --n-val 500 --n-test 500 --seed 0 [--size 128]

Each image (PNG, ``--size`` pixels square, under ``<out>/images/``) holds 1-3 objects. An object has a
shape (circle, square, triangle, star, cross), a colour (red, green, blue, yellow, purple, orange,
drawn with a small random jitter), a size (small or large: radius 7-10 % or 14-19 % of the image side)
and a centre; objects are placed so that their bounding boxes (centre +- radius) are at least
``max(2, 3 %)`` pixels apart, and no two objects of one image share both colour and shape, so every
noun phrase names one object. Backgrounds are low-saturation plain colours, two-colour linear
gradients, or a plain colour with light Gaussian noise. Shapes are drawn at twice the size and
box-filtered down (anti-aliased edges); the pixel at an object's centre is its fill colour.

Every image has exactly 5 different captions, each from a different template of a small grammar
(``describe``), all true of the scene:

* noun phrases ``a [small|large|big] <colour> <shape>`` (``an`` before a vowel; the size word is
  included at random), ``the ...`` for a definite reference, ``it`` for the sentence's first object;
* relations ``above``, ``below``, ``left of`` / ``to the left of``, ``right of`` / ``to the right of``
  between two objects, from their centres along the axis where the centres differ more:
  ``X above Y`` means ``y(Y) - y(X) > 0`` and ``|dy| >= |dx|`` (image y grows downwards). Bounding
  boxes never overlap, so along that axis the two boxes are apart: X lies wholly above Y;
* regions of the 3x3 grid of thirds: ``in the top left corner``, ``at the top``, ``on the left``,
  ``in the centre``, ... only for an object whose centre is at least 4 % of the side away from
  every third line (so the phrase is never borderline);
* counts: ``one`` / ``single`` / ``only shape`` for one object, ``two`` and ``three``.

Captions are lowercase and punctuation-free (like the tokenised Karpathy splits); ``tokens`` is
``raw.split()``. The JSON file ``<out>/dataset_shapes.json`` has the layout of Karpathy's
``dataset_flickr8k.json`` (``{"images": [...], "dataset": "shapes"}``; ``imgid`` 0.. over train, val,
test in that order; ``sentid = 5 * imgid + k``) and one extra key per image, ``scene``: the image
size, the background, and the objects with ``shape``, ``colour``, ``size``, ``centre`` ([x, y],
pixels), ``radius``, ``bbox`` ([x0, y0, x1, y1] = centre -+ radius) and ``rgb`` (the fill colour).

Image ``i`` of a split is drawn from its own random stream, ``numpy.random.default_rng([seed, split,
i])``: the output is byte-for-byte the same for the same arguments, and changing ``--n-train`` leaves
the val and test images as they were (their ``imgid`` shifts). No global random state is used.
"""

from __future__ import annotations

import argparse
import colorsys
import json
import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from data.core.corpus_io import CorpusError, check_out_dir

DATASET = "shapes"
JSON_NAME = "dataset_shapes.json"
IMAGE_DIR = "images"
SPLITS = ("train", "val", "test")
CAPTIONS_PER_IMAGE = 5
MIN_SIZE, MAX_SIZE = 48, 1024

SHAPES = ("circle", "square", "triangle", "star", "cross")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 80, 215),
    "yellow": (235, 205, 30),
    "purple": (140, 60, 190),
    "orange": (240, 130, 20),
}
COLOUR_JITTER = 12  # each channel of a fill colour is its prototype +- this much
SIZES = {"small": (0.07, 0.10), "large": (0.14, 0.19)}  # radius as a fraction of the image side
SIZE_WORDS = {"small": ("small",), "large": ("large", "big")}
OBJECT_COUNTS, COUNT_PROBS = (1, 2, 3), (0.25, 0.4, 0.35)
COUNT_WORDS = {1: "one", 2: "two", 3: "three"}
REGION_MARGIN = 0.04  # a region phrase needs the centre this far (fraction of side) from third lines
ROWS, COLUMNS = ("top", "middle", "bottom"), ("left", "centre", "right")
REGION_PHRASES = {
    ("top", "left"): "in the top left corner",
    ("top", "centre"): "at the top",
    ("top", "right"): "in the top right corner",
    ("middle", "left"): "on the left",
    ("middle", "centre"): "in the centre",
    ("middle", "right"): "on the right",
    ("bottom", "left"): "in the bottom left corner",
    ("bottom", "centre"): "at the bottom",
    ("bottom", "right"): "in the bottom right corner",
}
RELATION_WORDS = {
    "above": ("above",),
    "below": ("below",),
    "left of": ("left of", "to the left of"),
    "right of": ("right of", "to the right of"),
}
INVERSE = {"above": "below", "below": "above", "left of": "right of", "right of": "left of"}

Scene = dict
Obj = dict


# ---------------------------------------------------------------------------------------------
# scenes


def _gap(size: int) -> int:
    """Minimum distance in pixels between two objects' bounding boxes."""
    return max(2, round(0.03 * size))


def boxes_apart(a: list[int], b: list[int], gap: int = 0) -> bool:
    """Whether boxes ``[x0, y0, x1, y1]`` are at least ``gap`` pixels apart along some axis."""
    return a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]


def _background(rng: np.random.Generator) -> dict:
    """A low-saturation background description: plain, gradient or noise."""

    def pale() -> list[int]:
        h, s, v = rng.random(), rng.uniform(0.0, 0.2), rng.uniform(0.45, 0.95)
        return [round(255 * c) for c in colorsys.hsv_to_rgb(h, s, v)]

    kind = str(rng.choice(["plain", "gradient", "noise"]))
    if kind == "plain":
        return {"kind": kind, "colour": pale()}
    if kind == "gradient":
        direction = str(rng.choice(["vertical", "horizontal", "diagonal", "antidiagonal"]))
        return {"kind": kind, "colours": [pale(), pale()], "direction": direction}
    return {"kind": kind, "colour": pale(), "std": int(rng.integers(4, 13))}


def _place(rng: np.random.Generator, size: int, radii: list[int], tries: int = 200) -> list[list[int]] | None:
    """Centres for objects of the given radii, inside the image, bounding boxes apart; None if stuck."""
    gap, centres, boxes = _gap(size), [], []
    for r in radii:
        for _ in range(tries):
            cx, cy = (int(v) for v in rng.integers(r + 1, size - r - 1, size=2))
            box = [cx - r, cy - r, cx + r, cy + r]
            if all(boxes_apart(box, other, gap) for other in boxes):
                centres.append([cx, cy])
                boxes.append(box)
                break
        else:
            return None
    return centres


def make_scene(
    rng: np.random.Generator, size: int = 128, colours: dict[str, tuple[int, int, int]] = COLOURS
) -> Scene:
    """A random scene: background and 1-3 objects with distinct (colour, shape), not overlapping.

    ``colours`` maps colour names to prototype RGB (default: the six of :data:`COLOURS`).
    """
    background = _background(rng)
    n = int(rng.choice(OBJECT_COUNTS, p=COUNT_PROBS))
    combos = [(c, s) for c in colours for s in SHAPES]
    while True:  # three large objects fit easily at MIN_SIZE; a retry is rare and always ends
        picks = [combos[int(i)] for i in rng.choice(len(combos), size=n, replace=False)]
        sizes = [str(rng.choice(list(SIZES))) for _ in range(n)]
        radii = [max(2, round(size * rng.uniform(*SIZES[s]))) for s in sizes]
        centres = _place(rng, size, radii)
        if centres is not None:
            break
    objects = []
    for (colour, shape), size_name, r, (cx, cy) in zip(picks, sizes, radii, centres):
        jitter = rng.integers(-COLOUR_JITTER, COLOUR_JITTER + 1, size=3)
        rgb = [int(np.clip(c + j, 0, 255)) for c, j in zip(colours[colour], jitter)]
        objects.append({
            "shape": shape, "colour": colour, "size": size_name, "centre": [cx, cy], "radius": r,
            "bbox": [cx - r, cy - r, cx + r, cy + r], "rgb": rgb,
        })  # fmt: skip
    return {"image_size": size, "background": background, "objects": objects}


def relation(a: Obj, b: Obj) -> str:
    """Where ``a`` is relative to ``b``: above, below, left of or right of (dominant axis; y down)."""
    dx = b["centre"][0] - a["centre"][0]
    dy = b["centre"][1] - a["centre"][1]
    if abs(dy) >= abs(dx):
        return "above" if dy > 0 else "below"
    return "left of" if dx > 0 else "right of"


def region(obj: Obj, size: int) -> tuple[str, str] | None:
    """``(row, column)`` of the object's centre in the grid of thirds; None near a third line."""
    cell = []
    for v, names in zip(obj["centre"][::-1], (ROWS, COLUMNS)):
        t = (v + 0.5) / size
        for line in (1 / 3, 2 / 3):
            if abs(t - line) < REGION_MARGIN:
                return None
        cell.append(names[min(2, int(t * 3))])
    return cell[0], cell[1]


# ---------------------------------------------------------------------------------------------
# captions


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def describe(scene: Scene, rng: np.random.Generator) -> list[str]:
    """Five different captions of ``scene``, each from a different template, all true of it."""
    size = scene["image_size"]
    objects = scene["objects"]

    def bare(obj: Obj) -> str:  # "[size] colour shape", the size word at random
        words = [obj["colour"], obj["shape"]]
        if rng.random() < 0.5:
            options = SIZE_WORDS[obj["size"]]
            words.insert(0, options[int(rng.integers(len(options)))])
        return " ".join(words)

    def np_(obj: Obj, definite: bool = False) -> str:
        noun = bare(obj)
        return f"{'the' if definite else _article(noun)} {noun}"

    def rel(a: Obj, b: Obj) -> str:
        options = RELATION_WORDS[relation(a, b)]
        return options[int(rng.integers(len(options)))]

    def where(obj: Obj) -> str:
        return REGION_PHRASES[region(obj, size)]

    def order() -> list[Obj]:
        return [objects[int(i)] for i in rng.permutation(len(objects))]

    Template = Callable[[], str]
    templates: list[Template]
    if len(objects) == 1:
        (a,) = objects
        templates = [
            lambda: np_(a),
            lambda: f"there is {np_(a)}",
            lambda: f"a single {bare(a)}",
            lambda: f"an image of {np_(a)}",
            lambda: f"the only shape is {np_(a)}",
            lambda: f"a picture with one {bare(a)}",
        ]
        if region(a, size) is not None:
            templates += [lambda: f"{np_(a)} {where(a)}", lambda: f"there is {np_(a)} {where(a)}"]
    elif len(objects) == 2:

        def pair(fmt: Callable[[Obj, Obj], str]) -> Template:
            return lambda: fmt(*order())

        templates = [
            pair(lambda a, b: f"{np_(a)} {rel(a, b)} {np_(b)}"),
            pair(lambda a, b: f"{np_(a)} is {rel(a, b)} {np_(b)}"),
            pair(lambda a, b: f"{np_(a, True)} is {rel(a, b)} {np_(b, True)}"),
            pair(lambda a, b: f"there is {np_(a)} and {np_(b)}"),
            pair(lambda a, b: f"{np_(a)} and {np_(b)}"),
            pair(lambda a, b: f"the two shapes are {np_(a)} and {np_(b)}"),
            pair(lambda a, b: f"two shapes with {np_(a, True)} {rel(a, b)} {np_(b, True)}"),
            pair(lambda a, b: f"{np_(a)} with {np_(b)} {rel(b, a)} it"),
        ]
        if all(region(o, size) is not None for o in objects):
            templates.append(pair(lambda a, b: f"{np_(a)} {where(a)} and {np_(b)} {where(b)}"))
    else:

        def triple(fmt: Callable[[Obj, Obj, Obj], str]) -> Template:
            return lambda: fmt(*order())

        templates = [
            triple(lambda a, b, c: f"{np_(a)} {rel(a, b)} {np_(b)} and {np_(c)} {rel(c, b)} {np_(b, True)}"),
            triple(lambda a, b, c: f"{np_(a)} {np_(b)} and {np_(c)}"),
            triple(lambda a, b, c: f"there are three shapes {np_(a)} {np_(b)} and {np_(c)}"),
            triple(lambda a, b, c: f"three shapes with {np_(a, True)} {rel(a, b)} {np_(b, True)}"),
            triple(
                lambda a, b, c: (
                    f"{np_(a, True)} is {rel(a, b)} {np_(b, True)} "
                    f"and {np_(c, True)} is {rel(c, a)} {np_(a, True)}"
                )
            ),
            triple(lambda a, b, c: f"{np_(a)} with {np_(b)} {rel(b, a)} it and {np_(c)} {rel(c, a)} it"),
            triple(lambda a, b, c: f"{np_(a)} {rel(a, b)} {np_(b)}"),
        ]
    captions: list[str] = []
    for i in rng.permutation(len(templates)):
        caption = templates[int(i)]()
        if caption not in captions:
            captions.append(caption)
        if len(captions) == CAPTIONS_PER_IMAGE:
            return captions
    raise AssertionError(f"only {len(captions)} different captions for scene {scene}")  # never happens


# ---------------------------------------------------------------------------------------------
# images


def _background_array(background: dict, size: int, rng: np.random.Generator) -> np.ndarray:
    """The background as a ``(size, size, 3)`` uint8 array."""
    kind = background["kind"]
    if kind == "gradient":
        lo, hi = (np.array(c, dtype=np.float64) for c in background["colours"])
        ramp = np.arange(size, dtype=np.float64) / (size - 1)
        y, x = ramp[:, None], ramp[None, :]
        t = {
            "vertical": y + 0 * x,
            "horizontal": x + 0 * y,
            "diagonal": (x + y) / 2,
            "antidiagonal": (1 - x + y) / 2,
        }[background["direction"]]
        pixels = lo + (hi - lo) * t[..., None]
    else:
        pixels = np.broadcast_to(np.array(background["colour"], dtype=np.float64), (size, size, 3))
        if kind == "noise":
            pixels = pixels + rng.normal(0.0, background["std"], size=(size, size, 3))
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def _draw_object(draw: ImageDraw.ImageDraw, obj: Obj, scale: int) -> None:
    """Draw one filled object on a canvas ``scale`` times the image size."""
    cx, cy = ((v + 0.5) * scale - 0.5 for v in obj["centre"])  # pixel centres map to pixel centres
    r = obj["radius"] * scale
    fill = tuple(obj["rgb"])
    shape = obj["shape"]
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        h = 0.85 * r
        draw.rectangle([cx - h, cy - h, cx + h, cy + h], fill=fill)
    elif shape == "triangle":  # equilateral, pointing up, circumcentre at the centre
        angles = np.deg2rad([-90, 30, 150])
        draw.polygon([(cx + r * np.cos(t), cy + r * np.sin(t)) for t in angles], fill=fill)
    elif shape == "star":  # five points, inner radius 45 % of the outer
        angles = np.deg2rad(-90 + 36 * np.arange(10))
        radii = np.where(np.arange(10) % 2 == 0, r, 0.45 * r)
        draw.polygon([(cx + q * np.cos(t), cy + q * np.sin(t)) for q, t in zip(radii, angles)], fill=fill)
    elif shape == "cross":
        w = 0.35 * r
        draw.rectangle([cx - r, cy - w, cx + r, cy + w], fill=fill)
        draw.rectangle([cx - w, cy - r, cx + w, cy + r], fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def render(scene: Scene, rng: np.random.Generator, scale: int = 2) -> Image.Image:
    """The scene as an RGB image: background, then objects drawn at ``scale`` x and box-filtered down."""
    size = scene["image_size"]
    canvas = Image.fromarray(_background_array(scene["background"], size, rng), "RGB")
    canvas = canvas.resize((size * scale, size * scale), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(canvas)
    for obj in scene["objects"]:
        _draw_object(draw, obj, scale)
    return canvas.reduce(scale)


# ---------------------------------------------------------------------------------------------
# the dataset


def _check_args(n_train: int, n_val: int, n_test: int, seed: int, size: int) -> None:
    if n_train < 1:
        raise CorpusError(f"--n-train {n_train} must be at least 1")
    for name, value in (("--n-val", n_val), ("--n-test", n_test), ("--seed", seed)):
        if value < 0:
            raise CorpusError(f"{name} {value} must be 0 or more")
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise CorpusError(f"--size {size} is outside {MIN_SIZE}-{MAX_SIZE} pixels")


def image_entry(split: str, index: int, imgid: int, seed: int, size: int) -> tuple[dict, Image.Image]:
    """The Karpathy-format record (with ``scene``) and the image for image ``index`` of ``split``."""
    rng = np.random.default_rng([seed, SPLITS.index(split), index])
    scene = make_scene(rng, size)
    captions = describe(scene, rng)
    image = render(scene, rng)
    sentids = [CAPTIONS_PER_IMAGE * imgid + k for k in range(len(captions))]
    entry = {
        "filename": f"{split}_{index:05d}.png",
        "filepath": IMAGE_DIR,
        "split": split,
        "imgid": imgid,
        "sentids": sentids,
        "sentences": [
            {"tokens": raw.split(), "raw": raw, "imgid": imgid, "sentid": sid}
            for raw, sid in zip(captions, sentids)
        ],
        "scene": scene,
    }
    return entry, image


_OWN_IMAGE = re.compile(r"(train|val|test)_\d{5,}\.png")


def build_shapes_dataset(
    out: str | Path,
    n_train: int = 6000,
    n_val: int = 500,
    n_test: int = 500,
    seed: int = 0,
    size: int = 128,
    force: bool = False,
    progress: bool = True,
) -> dict:
    """Write ``<out>/images/*.png`` and ``<out>/dataset_shapes.json``; return the counts.

    With ``force`` in an existing folder, images this builder wrote before that the new dataset does
    not use (``<split>_<nnnnn>.png``) are removed; other files are left alone. The JSON is written
    last (through a temporary file), so an interrupted build never leaves one that names missing
    images.
    """
    _check_args(n_train, n_val, n_test, seed, size)
    out = Path(out)
    check_out_dir(out, force)
    image_dir = out / IMAGE_DIR
    image_dir.mkdir(parents=True, exist_ok=True)
    plan = {"train": n_train, "val": n_val, "test": n_test}
    images, written = [], set()
    with tqdm(total=sum(plan.values()), desc="shapes", unit="img", disable=not progress) as bar:
        for split, n in plan.items():
            for index in range(n):
                entry, image = image_entry(split, index, len(images), seed, size)
                image.save(image_dir / entry["filename"], format="PNG")
                written.add(entry["filename"])
                images.append(entry)
                bar.update()
    for stale in image_dir.iterdir():
        if _OWN_IMAGE.fullmatch(stale.name) and stale.name not in written:
            stale.unlink()
    path = out / JSON_NAME
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"images": images, "dataset": DATASET}) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    vocab = sorted({t for e in images for s in e["sentences"] for t in s["tokens"]})
    return {
        "dataset": DATASET,
        "json": str(path),
        "seed": seed,
        "size": size,
        "images": {s: sum(e["split"] == s for e in images) for s in SPLITS},
        "captions": {s: sum(len(e["sentences"]) for e in images if e["split"] == s) for s in SPLITS},
        "vocab_size": len(vocab),
        "vocab": vocab,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    parser = argparse.ArgumentParser(
        prog="python -m data.builders.shapes",
        description="Write a synthetic shapes image-captioning dataset (Karpathy split JSON + PNGs).",
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--n-train", type=int, default=6000, help="training images")
    parser.add_argument("--n-val", type=int, default=500, help="validation images")
    parser.add_argument("--n-test", type=int, default=500, help="test images")
    parser.add_argument("--seed", type=int, default=0, help="random seed (0 or more)")
    parser.add_argument("--size", type=int, default=128, help=f"image side in pixels ({MIN_SIZE}-{MAX_SIZE})")
    parser.add_argument("--force", action="store_true", help="write into a non-empty --out")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """CLI entry point: build the dataset and print its counts; user errors exit with a message."""
    args = parse_args(argv)
    try:
        stats = build_shapes_dataset(
            args.out, n_train=args.n_train, n_val=args.n_val, n_test=args.n_test,
            seed=args.seed, size=args.size, force=args.force,
        )  # fmt: skip
    except CorpusError as err:
        raise SystemExit(f"error: {err}") from None
    per_split = ", ".join(
        f"{s} {stats['images'][s]} images / {stats['captions'][s]} captions" for s in SPLITS
    )
    print(
        f"wrote {stats['json']}: {per_split}; vocabulary {stats['vocab_size']} words; "
        f"{stats['size']}x{stats['size']} PNGs in {Path(args.out) / IMAGE_DIR}"
    )


if __name__ == "__main__":
    main()
