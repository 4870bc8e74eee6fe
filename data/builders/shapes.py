"""A synthetic image-captioning dataset: coloured shapes on plain, gradient or noisy backgrounds.

Usage::

    seqcap data shapes --out data/shapes --n-train 6000 --n-val 500 --n-test 500 --seed 0 [--size 128]

Each image (PNG, ``--size`` pixels square, under ``<out>/images/``) shows one scene of
:mod:`data.builders.shapes_scenes`: 1-3 coloured shapes (circle, square, triangle, star, cross in
red, green, blue, yellow, purple, orange; small or large), their bounding boxes apart and no two
sharing colour and shape, so every noun phrase names one object, on a plain, gradient or noisy
background. That module makes, measures and draws the scenes; this one describes them in English
and writes the dataset.

Every image has exactly 5 different captions, each from a different template of a small grammar
(``describe``), all true of the scene:

* noun phrases ``a [small|large|big] <colour> <shape>`` (``an`` before a vowel; the size word is
  included at random), ``the ...`` for a definite reference, ``it`` for the sentence's first object;
* relations ``above``, ``below``, ``left of`` / ``to the left of``, ``right of`` / ``to the right of``
  between two objects, from their centres along the axis where the centres differ more
  (:func:`data.builders.shapes_scenes.relation`): ``X above Y`` means ``y(Y) - y(X) > 0`` and
  ``|dy| >= |dx|`` (image y grows downwards). Bounding boxes never overlap, so along that axis the
  two boxes are apart: X lies wholly above Y;
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
import json
import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from data.builders.shapes_scenes import Obj, Scene, make_scene, region, relation, render
from data.core.corpus_io import CorpusError, check_out_dir

DATASET = "shapes"
JSON_NAME = "dataset_shapes.json"
IMAGE_DIR = "images"
SPLITS = ("train", "val", "test")
CAPTIONS_PER_IMAGE = 5
MIN_SIZE, MAX_SIZE = 48, 1024

SIZE_WORDS = {"small": ("small",), "large": ("large", "big")}
COUNT_WORDS = {1: "one", 2: "two", 3: "three"}
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
