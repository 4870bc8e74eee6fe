"""An offline multimodal-translation benchmark: English scene descriptions, German translations, images.

Usage::

    seqcap data shapes_mmt --out data/shapes_mmt --n-train 4000 --n-dev 300 --n-test 500 --seed 0 \\
        [--size 128] [--mask] [--force]

The scenes are those of :mod:`data.builders.shapes_scenes` (1-3 non-overlapping objects on a
plain, gradient or noisy background, drawn by :func:`data.builders.shapes_scenes.render`) with a
palette of eight colours, so that guessing a colour is right 1 time in 8: the six of
:data:`data.builders.shapes_scenes.COLOURS` plus black and brown. Each image gets one sentence
pair, true of the scene, from a template picked at random among those that apply
(:func:`describe_pair`); every object is mentioned, so every colour of the image is in the sentence.

* English is lowercase without punctuation, like :mod:`data.builders.shapes`' captions: noun phrases
  ``a [small|large|big] <colour> <shape>`` (``an`` before a vowel; the size word is included with
  probability 1/2 per object, the same way in all its mentions), relations ``above``, ``below``,
  ``left of`` / ``to the left of``, ``right of`` / ``to the right of``
  (:func:`data.builders.shapes_scenes.relation`) and regions of the grid of thirds
  (:func:`data.builders.shapes_scenes.region`, only away from the third lines).
* German is lowercase except nouns (``Kreis``, ``Quadrat``, ``Dreieck``, ``Stern``, ``Kreuz``,
  ``Ecke``, ``Mitte``), UTF-8 with umlauts and ß, with gender, case and adjective endings right:
  ``ein großer roter Kreis`` (nominative), ``es gibt einen großen roten Kreis`` (accusative),
  ``über einem blauen Quadrat`` / ``links von dem blauen Quadrat`` (prepositions of place take the
  dative). Colours: rot, grün, blau, gelb, violett, orangefarben, schwarz, braun; sizes klein, groß.

Output, in the Multi30k layout (split names train, dev, test):

* ``<out>/images/<split>_<nnnnn>.png``: one image per sentence pair, ``--size`` pixels square;
* ``<out>/<split>.en``, ``<out>/<split>.de``, ``<out>/<split>_images.txt`` (line ``i``: the image file
  name of pair ``i``, relative to ``<out>/images``);
* with ``--mask``, ``<out>/<split>.en_masked``: the English line with every colour word replaced by
  :data:`MASK_TOKEN` (the colour deprivation of Caglayan et al. 2019, "Probing the Need for Visual
  Context in Multimodal Machine Translation") and "an" before it written "a" (else "an [v]" would
  say orange); a data module with ``src_lang: en_masked`` reads it;
* ``<out>/scenes.json`` (per split, the scene records of
  :func:`data.builders.shapes_scenes.make_scene` in line order) and ``<out>/stats.json`` (counts
  and arguments).

:func:`colour_accuracy` scores translations by their German colour words (the experiment's second
metric). Image ``i`` of a split is drawn from its own random stream, ``numpy.random.default_rng([seed,
split, i])`` (split 0, 1, 2 for train, dev, test): the output is byte-for-byte the same for the same
arguments, and changing ``--n-train`` leaves dev and test as they were.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from data.builders.shapes import (
    IMAGE_DIR,
    MAX_SIZE,
    MIN_SIZE,
    REGION_PHRASES,
    RELATION_WORDS,
    SIZE_WORDS,
    _article,
)
from data.builders.shapes_scenes import COLOURS, Obj, Scene, make_scene, region, relation, render
from data.core.corpus_io import SPLITS, CorpusError, check_out_dir, write_lines, write_parallel, write_stats

DATASET = "shapes_mmt"
SRC, TGT, MASKED = "en", "de", "en_masked"
MASK_TOKEN = "[v]"
PALETTE: dict[str, tuple[int, int, int]] = {**COLOURS, "black": (25, 25, 25), "brown": (130, 80, 35)}

GERMAN_COLOURS = {
    "red": "rot", "green": "grün", "blue": "blau", "yellow": "gelb",
    "purple": "violett", "orange": "orangefarben", "black": "schwarz", "brown": "braun",
}  # fmt: skip
GERMAN_SIZES = {"small": "klein", "large": "groß"}
GERMAN_NOUNS = {  # shape -> (noun, gender)
    "circle": ("Kreis", "masc"), "square": ("Quadrat", "neut"), "triangle": ("Dreieck", "neut"),
    "star": ("Stern", "masc"), "cross": ("Kreuz", "neut"),
}  # fmt: skip
GERMAN_RELATIONS = {"above": "über", "below": "unter", "left of": "links von", "right of": "rechts von"}
GERMAN_REGIONS = {
    ("top", "left"): "in der oberen linken Ecke",
    ("top", "centre"): "oben",
    ("top", "right"): "in der oberen rechten Ecke",
    ("middle", "left"): "links",
    ("middle", "centre"): "in der Mitte",
    ("middle", "right"): "rechts",
    ("bottom", "left"): "in der unteren linken Ecke",
    ("bottom", "centre"): "unten",
    ("bottom", "right"): "in der unteren rechten Ecke",
}
# (definite, case) -> gender -> (article, adjective ending): mixed declension after "ein", weak after "der"
DECLENSION = {
    (False, "nom"): {"masc": ("ein", "er"), "neut": ("ein", "es")},
    (False, "acc"): {"masc": ("einen", "en"), "neut": ("ein", "es")},
    (False, "dat"): {"masc": ("einem", "en"), "neut": ("einem", "en")},
    (True, "nom"): {"masc": ("der", "e"), "neut": ("das", "e")},
    (True, "acc"): {"masc": ("den", "en"), "neut": ("das", "e")},
    (True, "dat"): {"masc": ("dem", "en"), "neut": ("dem", "en")},
}
ENDINGS = ("", "e", "er", "es", "en", "em")

_OWN_IMAGE = re.compile(r"(train|dev|test)_\d{5,}\.png")
_STEMS = "|".join(sorted(GERMAN_COLOURS.values(), key=len, reverse=True))
_COLOUR_WORD = re.compile(rf"({_STEMS})({'|'.join(e for e in ENDINGS if e)})?", re.IGNORECASE)

Pair = tuple[str, str]  # (English, German)


# ---------------------------------------------------------------------------------------------
# sentence pairs


class Mention:
    """How one object is named in both languages; ``size_word`` (English ``small``, ``large`` or
    ``big``, or None to leave the size out) is the same in all its mentions."""

    def __init__(self, obj: Obj, size_word: str | None = None):
        if size_word is not None and size_word not in SIZE_WORDS[obj["size"]]:
            raise ValueError(f"size word {size_word!r} for a {obj['size']} object")
        self.obj = obj
        self.size_word = size_word

    @classmethod
    def draw(cls, obj: Obj, rng: np.random.Generator) -> Mention:
        """The size word included with probability 1/2 (``large`` or ``big`` at random)."""
        if rng.random() >= 0.5:
            return cls(obj)
        options = SIZE_WORDS[obj["size"]]
        return cls(obj, options[int(rng.integers(len(options)))])

    def en(self, definite: bool = False) -> str:
        """``a large red circle`` / ``the red circle``."""
        words = [self.obj["colour"], self.obj["shape"]]
        if self.size_word is not None:
            words.insert(0, self.size_word)
        bare = " ".join(words)
        return f"{'the' if definite else _article(bare)} {bare}"

    def de(self, case: str, definite: bool = False) -> str:
        """``einen großen roten Kreis`` for ``case`` nom, acc or dat."""
        noun, gender = GERMAN_NOUNS[self.obj["shape"]]
        article, ending = DECLENSION[definite, case][gender]
        adjectives = [GERMAN_COLOURS[self.obj["colour"]]]
        if self.size_word is not None:
            adjectives.insert(0, GERMAN_SIZES[self.obj["size"]])
        return " ".join([article, *(a + ending for a in adjectives), noun])


def candidates(mentions: list[Mention], size: int, rng: np.random.Generator) -> list[Pair]:
    """The (English, German) pair of every template that applies to ``mentions`` in this order, in
    an image ``size`` pixels square; ``rng`` picks between synonymous English relation words (the
    same ones in every candidate)."""

    def rel(a: Mention, b: Mention) -> Pair:  # where a is relative to b
        name = relation(a.obj, b.obj)
        options = RELATION_WORDS[name]
        return options[int(rng.integers(len(options)))], GERMAN_RELATIONS[name]

    cells = [region(m.obj, size) for m in mentions]
    where = [(REGION_PHRASES[c], GERMAN_REGIONS[c]) if c is not None else None for c in cells]
    if len(mentions) == 1:
        (a,) = mentions
        pairs = [(a.en(), a.de("nom")), (f"there is {a.en()}", f"es gibt {a.de('acc')}")]
        if where[0] is not None:
            en, de = where[0]
            pairs += [
                (f"{a.en()} {en}", f"{a.de('nom')} {de}"),
                (f"there is {a.en()} {en}", f"es gibt {a.de('acc')} {de}"),
                (f"{a.en(True)} is {en}", f"{a.de('nom', True)} ist {de}"),
            ]
        return pairs
    if len(mentions) == 2:
        a, b = mentions
        er, dr = rel(a, b)
        pairs = [
            (f"{a.en()} {er} {b.en()}", f"{a.de('nom')} {dr} {b.de('dat')}"),
            (f"{a.en(True)} is {er} {b.en()}", f"{a.de('nom', True)} ist {dr} {b.de('dat')}"),
            (f"there is {a.en()} {er} {b.en(True)}", f"es gibt {a.de('acc')} {dr} {b.de('dat', True)}"),
        ]
        if None not in where:
            (ea, da), (eb, db) = where
            pairs.append((f"{a.en()} {ea} and {b.en()} {eb}", f"{a.de('nom')} {da} und {b.de('nom')} {db}"))
        return pairs
    a, b, c = mentions
    (er, dr), (es, ds) = rel(a, b), rel(c, b)
    en = f"{a.en()} {er} {b.en()} and {c.en()} {es} {b.en(True)}"
    return [
        (en, f"{a.de('nom')} {dr} {b.de('dat')} und {c.de('nom')} {ds} {b.de('dat', True)}"),
        (
            f"there is {en}",
            f"es gibt {a.de('acc')} {dr} {b.de('dat')} und {c.de('acc')} {ds} {b.de('dat', True)}",
        ),
    ]


def describe_pair(scene: Scene, rng: np.random.Generator) -> Pair:
    """One (English, German) description of ``scene``: size words drawn per object, the objects in a
    random order, one of the :func:`candidates` at random."""
    mentions = [Mention.draw(o, rng) for o in scene["objects"]]
    order = [mentions[int(i)] for i in rng.permutation(len(mentions))]
    pairs = candidates(order, scene["image_size"], rng)
    return pairs[int(rng.integers(len(pairs)))]


def mask_colours(sentence: str) -> str:
    """The English ``sentence`` with every colour word of :data:`PALETTE` replaced by :data:`MASK_TOKEN`,
    and "an" before it written "a": the article would otherwise tell "an [v]" (orange) apart."""
    words = [MASK_TOKEN if word in PALETTE else word for word in sentence.split()]
    after = words[1:] + [""]
    return " ".join("a" if w == "an" and nxt == MASK_TOKEN else w for w, nxt in zip(words, after))


# ---------------------------------------------------------------------------------------------
# the metric


def colour_words(sentence: str) -> list[str]:
    """The German colour stems of ``sentence`` in order (``roten`` -> ``rot``; any case; endings
    "", e, er, es, en, em); other words are ignored."""
    return [m.group(1).lower() for w in re.findall(r"\w+", sentence) if (m := _COLOUR_WORD.fullmatch(w))]


def colour_accuracy(hypotheses: list[str], references: list[str]) -> float:
    """Share of the references' colour words that the hypotheses got right, over the corpus.

    The k-th colour word of a reference counts as right when the hypothesis has the same stem as its
    k-th colour word (position by position, inflection ignored); a hypothesis with fewer colour words
    gets the missing ones wrong. Raises ValueError on lists of different lengths or references
    without any colour word.
    """
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    right = total = 0
    for hyp, ref in zip(hypotheses, references):
        want, got = colour_words(ref), colour_words(hyp)
        total += len(want)
        right += sum(w == g for w, g in zip(want, got))
    if total == 0:
        raise ValueError(f"no colour words in the {len(references)} references")
    return right / total


# ---------------------------------------------------------------------------------------------
# the dataset


def _check_args(n_train: int, n_dev: int, n_test: int, seed: int, size: int) -> None:
    if n_train < 1:
        raise CorpusError(f"--n-train {n_train} must be at least 1")
    for name, value in (("--n-dev", n_dev), ("--n-test", n_test), ("--seed", seed)):
        if value < 0:
            raise CorpusError(f"{name} {value} must be 0 or more")
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise CorpusError(f"--size {size} is outside {MIN_SIZE}-{MAX_SIZE} pixels")


def pair_entry(split: str, index: int, seed: int, size: int) -> tuple[Scene, Pair, Image.Image]:
    """The scene, its (English, German) pair and its image for pair ``index`` of ``split``."""
    rng = np.random.default_rng([seed, SPLITS.index(split), index])
    scene = make_scene(rng, size, colours=PALETTE)
    pair = describe_pair(scene, rng)
    return scene, pair, render(scene, rng)


def build_shapes_mmt(
    out: str | Path,
    n_train: int = 4000,
    n_dev: int = 300,
    n_test: int = 500,
    seed: int = 0,
    size: int = 128,
    mask: bool = False,
    force: bool = False,
    progress: bool = True,
) -> dict:
    """Write the images, the parallel text and image lists, ``scenes.json`` and ``stats.json``.

    Returns the stats. With ``force`` in an existing folder, images this builder wrote before that
    the new set does not use, and ``<split>.en_masked`` files when ``mask`` is off, are removed;
    other files are left alone. Text is written after all images, ``stats.json`` last.
    """
    _check_args(n_train, n_dev, n_test, seed, size)
    out = Path(out)
    check_out_dir(out, force)
    image_dir = out / IMAGE_DIR
    image_dir.mkdir(parents=True, exist_ok=True)
    plan = {"train": n_train, "dev": n_dev, "test": n_test}
    text: dict[str, dict[str, list]] = {s: {"en": [], "de": [], "images": [], "scenes": []} for s in plan}
    with tqdm(total=sum(plan.values()), desc=DATASET, unit="img", disable=not progress) as bar:
        for split, n in plan.items():
            for index in range(n):
                scene, (en, de), image = pair_entry(split, index, seed, size)
                name = f"{split}_{index:05d}.png"
                image.save(image_dir / name, format="PNG")
                for key, value in (("en", en), ("de", de), ("images", name), ("scenes", scene)):
                    text[split][key].append(value)
                bar.update()
    written = {name for t in text.values() for name in t["images"]}
    for stale in image_dir.iterdir():
        if _OWN_IMAGE.fullmatch(stale.name) and stale.name not in written:
            stale.unlink()
    for split, t in text.items():
        write_parallel(out, split, t["en"], t["de"], SRC, TGT)
        write_lines(out / f"{split}_images.txt", t["images"])
        masked = out / f"{split}.{MASKED}"
        if mask:
            write_lines(masked, [mask_colours(s) for s in t["en"]])
        elif masked.exists():
            masked.unlink()
    scenes = out / "scenes.json"
    tmp = scenes.with_name(scenes.name + ".tmp")
    tmp.write_text(json.dumps({s: t["scenes"] for s, t in text.items()}) + "\n", encoding="utf-8")
    os.replace(tmp, scenes)
    stats = {
        "dataset": DATASET,
        "arguments": {
            "n_train": n_train,
            "n_dev": n_dev,
            "n_test": n_test,
            "seed": seed,
            "size": size,
            "mask": mask,
        },
        "pairs": {s: len(t["en"]) for s, t in text.items()},
        "objects": {s: sum(len(scene["objects"]) for scene in t["scenes"]) for s, t in text.items()},
        "colours": {c: GERMAN_COLOURS[c] for c in PALETTE},
        "vocab_size": {
            lang: len({w for t in text.values() for line in t[lang] for w in line.split()})
            for lang in (SRC, TGT)
        },
    }
    write_stats(out, stats)
    return stats


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    parser = argparse.ArgumentParser(
        prog="python -m data.builders.shapes_mmt",
        description="Write a synthetic English-German multimodal translation set (Multi30k layout + PNGs).",
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--n-train", type=int, default=4000, help="training pairs (one image each)")
    parser.add_argument("--n-dev", type=int, default=300, help="development pairs")
    parser.add_argument("--n-test", type=int, default=500, help="test pairs")
    parser.add_argument("--seed", type=int, default=0, help="random seed (0 or more)")
    parser.add_argument("--size", type=int, default=128, help=f"image side in pixels ({MIN_SIZE}-{MAX_SIZE})")
    parser.add_argument(
        "--mask", action="store_true", help=f"also write <split>.{MASKED} (colours -> {MASK_TOKEN})"
    )
    parser.add_argument("--force", action="store_true", help="write into a non-empty --out")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """CLI entry point: build the set and print its counts; user errors exit with a message."""
    args = parse_args(argv)
    try:
        stats = build_shapes_mmt(
            args.out, n_train=args.n_train, n_dev=args.n_dev, n_test=args.n_test,
            seed=args.seed, size=args.size, mask=args.mask, force=args.force,
        )  # fmt: skip
    except CorpusError as err:
        raise SystemExit(f"error: {err}") from None
    pairs = ", ".join(f"{s} {n}" for s, n in stats["pairs"].items())
    vocab = stats["vocab_size"]
    masked = f"; masked source .{MASKED}" if args.mask else ""
    print(
        f"wrote {args.out}: pairs {pairs}; vocabulary {vocab[SRC]} English / {vocab[TGT]} German words; "
        f"{args.size}x{args.size} PNGs in {args.out / IMAGE_DIR}{masked}"
    )


if __name__ == "__main__":
    main()
