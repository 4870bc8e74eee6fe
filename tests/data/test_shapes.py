"""The synthetic shapes captioning dataset (data.builders.shapes): Karpathy JSON layout, captions true of
their
scenes (checked by an independent parser here), drawing that matches the scene, determinism, CLI."""

from __future__ import annotations

import colorsys
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data.builders.shapes import build_shapes_dataset, describe
from data.builders.shapes_scenes import make_scene
from data.core.corpus_io import CorpusError

ROOT = Path(__file__).resolve().parents[2]
SIZE = 96

# The test's own reading of the caption language (not imported from data.builders.shapes).
COLOUR_HUES = {"red": 0, "orange": 28, "yellow": 50, "green": 130, "blue": 225, "purple": 280}
SHAPE_WORDS = {"circle", "square", "triangle", "star", "cross"}
SIZE_WORDS = {"small": "small", "large": "large", "big": "large"}
COUNT_WORDS = {"one": 1, "single": 1, "only": 1, "two": 2, "three": 3}
REGIONS = {  # phrase -> (row, column) in the grid of thirds
    "in the top left corner": (0, 0), "at the top": (0, 1), "in the top right corner": (0, 2),
    "on the left": (1, 0), "in the centre": (1, 1), "on the right": (1, 2),
    "in the bottom left corner": (2, 0), "at the bottom": (2, 1), "in the bottom right corner": (2, 2),
}  # fmt: skip


def parse(caption: str) -> list[tuple]:
    """Caption -> items: ("np", colour, shape, size|None), ("it",), ("rel", word), ("region", cell),
    ("count", n); other words (articles, "is", "with", "and", ...) are dropped."""
    tokens, items, i = caption.split(), [], 0
    while i < len(tokens):
        rest = " ".join(tokens[i:])
        phrase = next((p for p in REGIONS if rest == p or rest.startswith(p + " ")), None)
        word = tokens[i]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else None
        if phrase:
            items.append(("region", REGIONS[phrase]))
            i += len(phrase.split())
        elif word in SIZE_WORDS and nxt in COLOUR_HUES:
            items.append(("np", nxt, tokens[i + 2], SIZE_WORDS[word]))
            i += 3
        elif word in COLOUR_HUES:
            items.append(("np", word, nxt, None))
            i += 2
        elif word == "it":
            items.append(("it",))
            i += 1
        elif word in ("above", "below"):
            items.append(("rel", word))
            i += 1
        elif word in ("left", "right") and nxt == "of":
            items.append(("rel", f"{word} of"))
            i += 2
        else:
            if word in COUNT_WORDS:
                items.append(("count", COUNT_WORDS[word]))
            i += 1
    return items


def holds(rel: str, a: dict, b: dict) -> bool:
    """Whether ``a rel b`` is true of the centres (image y grows downwards; dominant axis)."""
    dx = b["centre"][0] - a["centre"][0]
    dy = b["centre"][1] - a["centre"][1]
    return {
        "above": dy > 0 and abs(dy) >= abs(dx),
        "below": dy < 0 and abs(dy) >= abs(dx),
        "left of": dx > 0 and abs(dx) >= abs(dy),
        "right of": dx < 0 and abs(dx) >= abs(dy),
    }[rel]


def check_caption(caption: str, scene: dict) -> None:
    """Assert that every claim of ``caption`` is true of ``scene``."""
    objects = scene["objects"]
    assert re.fullmatch(r"[a-z]+( [a-z]+)*", caption), caption
    items = parse(caption)
    resolved: list[tuple] = []  # items with noun phrases replaced by the scene object they name
    for item in items:
        if item[0] == "np":
            _, colour, shape, size = item
            assert shape in SHAPE_WORDS, (caption, item)
            matches = [o for o in objects if o["colour"] == colour and o["shape"] == shape]
            assert len(matches) == 1, f"{caption!r}: {colour} {shape} names {len(matches)} objects"
            assert size in (None, matches[0]["size"]), f"{caption!r}: size of {matches[0]}"
            resolved.append(("obj", matches[0]))
        elif item[0] == "it":
            first = next(r for r in resolved if r[0] == "obj")
            resolved.append(first)
        else:
            resolved.append(item)
    assert any(r[0] == "obj" for r in resolved), caption
    for k, item in enumerate(resolved):
        if item[0] == "rel":
            before, after = resolved[k - 1], resolved[k + 1]
            assert before[0] == "obj" and after[0] == "obj", f"{caption!r}: relation without two objects"
            assert holds(item[1], before[1], after[1]), f"{caption!r}: {item[1]} is false for {scene}"
        elif item[0] == "region":
            obj = resolved[k - 1][1]
            cell = tuple(min(2, int(3 * (v + 0.5) / scene["image_size"])) for v in obj["centre"][::-1])
            assert cell == item[1], f"{caption!r}: centre {obj['centre']} is in cell {cell}"
        elif item[0] == "count":
            assert item[1] == len(objects), f"{caption!r} for {len(objects)} objects"


def hue_name(rgb) -> str:
    h, _, _ = colorsys.rgb_to_hsv(*(c / 255 for c in rgb))
    deg = 360 * h
    return min(COLOUR_HUES, key=lambda n: min(abs(deg - COLOUR_HUES[n]), 360 - abs(deg - COLOUR_HUES[n])))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("shapes") / "ds"
    stats = build_shapes_dataset(out, n_train=40, n_val=10, n_test=8, seed=3, size=SIZE, progress=False)
    data = json.loads((out / "dataset_shapes.json").read_text(encoding="utf-8"))
    return out, stats, data


def test_karpathy_layout_and_counts(built):
    out, stats, data = built
    assert data["dataset"] == "shapes" and set(data) == {"images", "dataset"}
    images = data["images"]
    assert [e["split"] for e in images] == ["train"] * 40 + ["val"] * 10 + ["test"] * 8
    assert stats["images"] == {"train": 40, "val": 10, "test": 8}
    assert stats["captions"] == {"train": 200, "val": 50, "test": 40}
    sentid = 0
    for imgid, e in enumerate(images):
        assert e["imgid"] == imgid and e["filepath"] == "images" and e["filename"].endswith(".png")
        assert (out / e["filepath"] / e["filename"]).is_file()
        assert len(e["sentences"]) == 5 and e["sentids"] == list(range(sentid, sentid + 5))
        for s, sid in zip(e["sentences"], e["sentids"]):
            assert s["sentid"] == sid and s["imgid"] == imgid and s["tokens"] == s["raw"].split()
        assert len({s["raw"] for s in e["sentences"]}) == 5
        sentid += 5
    assert len({e["filename"] for e in images}) == len(images)
    vocab = {t for e in images for s in e["sentences"] for t in s["tokens"]}
    assert stats["vocab_size"] == len(vocab) and stats["vocab"] == sorted(vocab)
    assert sorted(p.name for p in out.iterdir()) == ["dataset_shapes.json", "images"]


def test_captions_true_of_their_scenes(built):
    _, _, data = built
    for e in data["images"]:
        for s in e["sentences"]:
            check_caption(s["raw"], e["scene"])


def test_describe_on_many_scenes_covers_the_grammar():
    seen = set()
    for i in range(600):
        rng = np.random.default_rng([11, i])
        scene = make_scene(rng, 128)
        captions = describe(scene, rng)
        assert len(captions) == 5 and len(set(captions)) == 5
        for caption in captions:
            check_caption(caption, scene)
            seen.update(item[0] if item[0] != "rel" else item[1] for item in parse(caption))
            seen.update(caption.split())
    assert {"above", "below", "left of", "right of", "region", "count", "it"} <= seen
    assert {"small", "large", "big", "an", "the"} <= seen and SHAPE_WORDS <= seen and set(COLOUR_HUES) <= seen


def test_objects_inside_apart_and_drawn_in_their_colour(built):
    out, _, data = built
    counts = set()
    for e in data["images"]:
        scene = e["scene"]
        objects = scene["objects"]
        counts.add(len(objects))
        assert 1 <= len(objects) <= 3
        assert len({(o["colour"], o["shape"]) for o in objects}) == len(objects)
        for o in objects:
            x, y, r = *o["centre"], o["radius"]
            assert o["bbox"] == [x - r, y - r, x + r, y + r]
            assert 0 <= x - r and x + r < SIZE and 0 <= y - r and y + r < SIZE
        for i, a in enumerate(objects):
            for b in objects[i + 1 :]:
                p, q = a["bbox"], b["bbox"]
                assert p[2] < q[0] or q[2] < p[0] or p[3] < q[1] or q[3] < p[1], f"{e['filename']}: overlap"
        image = np.asarray(Image.open(out / "images" / e["filename"]))
        assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
        for o in objects:
            x, y = o["centre"]
            pixel = image[y, x].astype(int)
            assert np.abs(pixel - o["rgb"]).max() <= 3, f"{e['filename']}: {pixel} at {o}"
            assert hue_name(pixel) == o["colour"], f"{e['filename']}: {pixel} is not {o['colour']}"
        corners = image[[0, 0, -1, -1], [0, -1, 0, -1]].astype(float) / 255
        sats = [colorsys.rgb_to_hsv(*c)[1] for c in corners]
        assert max(sats) < 0.45, f"{e['filename']}: background corner saturation {sats}"
    assert counts == {1, 2, 3}
    assert {e["scene"]["background"]["kind"] for e in data["images"]} == {"plain", "gradient", "noise"}
    small = [o["radius"] for e in data["images"] for o in e["scene"]["objects"] if o["size"] == "small"]
    large = [o["radius"] for e in data["images"] for o in e["scene"]["objects"] if o["size"] == "large"]
    assert small and large and max(small) < min(large)


def test_deterministic_under_seed(tmp_path):
    kwargs = dict(n_train=6, n_val=3, n_test=3, size=64, progress=False)
    a, b, c, d = (tmp_path / n for n in "abcd")
    build_shapes_dataset(a, seed=5, **kwargs)
    build_shapes_dataset(b, seed=5, **kwargs)
    build_shapes_dataset(c, seed=6, **kwargs)
    assert (a / "dataset_shapes.json").read_bytes() == (b / "dataset_shapes.json").read_bytes()
    names = sorted(p.name for p in (a / "images").iterdir())
    assert len(names) == 12
    for name in names:
        assert (a / "images" / name).read_bytes() == (b / "images" / name).read_bytes(), name
    assert (a / "dataset_shapes.json").read_bytes() != (c / "dataset_shapes.json").read_bytes()
    assert sum((a / "images" / n).read_bytes() != (c / "images" / n).read_bytes() for n in names) >= 10
    # val and test images do not depend on the size of the training split
    build_shapes_dataset(d, seed=5, **{**kwargs, "n_train": 2})
    for name in names:
        if not name.startswith("train"):
            assert (a / "images" / name).read_bytes() == (d / "images" / name).read_bytes(), name


def test_refuses_bad_arguments_and_occupied_folder(tmp_path):
    with pytest.raises(CorpusError, match="--size 16"):
        build_shapes_dataset(tmp_path / "x", n_train=1, size=16)
    with pytest.raises(CorpusError, match="--n-train 0"):
        build_shapes_dataset(tmp_path / "x", n_train=0)
    assert not (tmp_path / "x").exists()
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(CorpusError, match="not empty.*--force"):
        build_shapes_dataset(out, n_train=2, n_val=0, n_test=0, size=64, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    build_shapes_dataset(out, n_train=3, n_val=0, n_test=0, size=64, force=True, progress=False)
    build_shapes_dataset(out, n_train=2, n_val=0, n_test=0, size=64, force=True, progress=False)
    assert (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in (out / "images").iterdir()) == ["train_00000.png", "train_00001.png"]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "data.builders.shapes", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli(tmp_path):
    out = tmp_path / "shapes"
    args = ["--out", str(out), "--n-train", "20", "--n-val", "5", "--n-test", "5"]
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr
    assert (
        "train 20 images / 100 captions, val 5 images / 25 captions, test 5 images / 25 captions"
        in done.stdout
    )
    vocab = int(re.search(r"vocabulary (\d+) words", done.stdout).group(1))
    data = json.loads((out / "dataset_shapes.json").read_text(encoding="utf-8"))
    assert vocab == len({t for e in data["images"] for s in e["sentences"] for t in s["tokens"]})
    assert len(data["images"]) == 30 and len(list((out / "images").glob("*.png"))) == 30
    assert Image.open(out / "images" / data["images"][0]["filename"]).size == (128, 128)

    before = (out / "dataset_shapes.json").read_bytes()
    again = run_cli(*args)
    assert again.returncode == 1
    assert "error: " in again.stderr and "not empty" in again.stderr and "--force" in again.stderr
    assert "Traceback" not in again.stderr
    assert (out / "dataset_shapes.json").read_bytes() == before

    forced = run_cli(*args, "--force")
    assert forced.returncode == 0, forced.stderr
    assert (out / "dataset_shapes.json").read_bytes() == before  # same seed, same bytes

    bad = run_cli("--out", str(tmp_path / "bad"), "--size", "20")
    assert bad.returncode == 1 and "--size 20" in bad.stderr and "Traceback" not in bad.stderr
