"""The shapes multimodal-translation set (data.builders.shapes_mmt): exact German grammar for hand-built
scenes,
an independent agreement check on many random ones, the Multi30k layout, colour masking, determinism,
colour_accuracy and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data.builders.shapes_mmt import (
    MASK_TOKEN,
    PALETTE,
    Mention,
    build_shapes_mmt,
    candidates,
    colour_accuracy,
    colour_words,
    describe_pair,
    mask_colours,
)
from data.builders.shapes_scenes import make_scene

ROOT = Path(__file__).resolve().parents[2]
SPLITS = ("train", "dev", "test")

# The test's own tables (not imported from data.builders.shapes_mmt).
COLOURS_DE = {
    "red": "rot", "green": "grün", "blue": "blau", "yellow": "gelb",
    "purple": "violett", "orange": "orangefarben", "black": "schwarz", "brown": "braun",
}  # fmt: skip
NOUNS_DE = {"Kreis": "masc", "Stern": "masc", "Quadrat": "neut", "Dreieck": "neut", "Kreuz": "neut"}
SHAPES_EN = {"circle": "Kreis", "star": "Stern", "square": "Quadrat", "triangle": "Dreieck", "cross": "Kreuz"}
ENDING_AFTER = {  # (article, gender) -> adjective ending; a missing key is a gender error
    ("ein", "masc"): "er", ("ein", "neut"): "es", ("einen", "masc"): "en",
    ("einem", "masc"): "en", ("einem", "neut"): "en", ("der", "masc"): "e", ("das", "neut"): "e",
    ("den", "masc"): "en", ("dem", "masc"): "en", ("dem", "neut"): "en",
}  # fmt: skip
CASE_OF = {  # (article, gender) -> the cases it can mark
    ("ein", "masc"): {"nom"}, ("ein", "neut"): {"nom", "acc"}, ("einen", "masc"): {"acc"},
    ("einem", "masc"): {"dat"}, ("einem", "neut"): {"dat"}, ("der", "masc"): {"nom"},
    ("das", "neut"): {"nom", "acc"}, ("den", "masc"): {"acc"}, ("dem", "masc"): {"dat"},
    ("dem", "neut"): {"dat"},
}  # fmt: skip
RELATIONS = {"above": "über", "below": "unter", "left of": "links von", "right of": "rechts von"}
SIZE = 96


def obj(shape: str, colour: str, size: str, cx: int, cy: int, r: int = 8) -> dict:
    return {
        "shape": shape, "colour": colour, "size": size, "centre": [cx, cy], "radius": r,
        "bbox": [cx - r, cy - r, cx + r, cy + r], "rgb": list(PALETTE[colour]),
    }  # fmt: skip


# ---------------------------------------------------------------------------------------------
# exact strings


def test_noun_phrases_gender_case_definiteness_and_size():
    circle, square = obj("circle", "red", "large", 48, 48), obj("square", "red", "large", 48, 48)
    want = {  # (definite, case): [circle with size, circle, square with size, square]
        (
            False,
            "nom",
        ): "ein großer roter Kreis | ein roter Kreis | ein großes rotes Quadrat | ein rotes Quadrat",
        (
            False,
            "acc",
        ): "einen großen roten Kreis | einen roten Kreis | ein großes rotes Quadrat | ein rotes Quadrat",
        (
            False,
            "dat",
        ): "einem großen roten Kreis | einem roten Kreis | einem großen roten Quadrat | einem roten Quadrat",
        (True, "nom"): "der große rote Kreis | der rote Kreis | das große rote Quadrat | das rote Quadrat",
        (True, "acc"): "den großen roten Kreis | den roten Kreis | das große rote Quadrat | das rote Quadrat",
        (
            True,
            "dat",
        ): "dem großen roten Kreis | dem roten Kreis | dem großen roten Quadrat | dem roten Quadrat",
    }
    for (definite, case), phrases in want.items():
        got = [
            Mention(o, w).de(case, definite) for o in (circle, square) for w in ("large", None)
        ]  # fmt: skip
        assert got == phrases.split(" | "), (definite, case)
    assert Mention(circle, "big").de("nom") == "ein großer roter Kreis"
    assert Mention(circle, "big").en() == "a big red circle" and Mention(circle).en(True) == "the red circle"
    triangle = obj("triangle", "orange", "small", 48, 48)
    assert (
        Mention(triangle).en() == "an orange triangle"
        and Mention(triangle, "small").en() == "a small orange triangle"
    )
    assert Mention(triangle, "small").de("nom") == "ein kleines orangefarbenes Dreieck"
    assert (
        Mention(obj("star", "purple", "small", 48, 48), "small").de("acc") == "einen kleinen violetten Stern"
    )
    with pytest.raises(ValueError, match="size word 'big' for a small object"):
        Mention(triangle, "big")


def test_one_object_templates_with_and_without_region():
    rng = np.random.default_rng(0)
    a = Mention(obj("circle", "green", "small", 16, 16), "small")
    assert candidates([a], SIZE, rng) == [
        ("a small green circle", "ein kleiner grüner Kreis"),
        ("there is a small green circle", "es gibt einen kleinen grünen Kreis"),
        ("a small green circle in the top left corner", "ein kleiner grüner Kreis in der oberen linken Ecke"),
        (
            "there is a small green circle in the top left corner",
            "es gibt einen kleinen grünen Kreis in der oberen linken Ecke",
        ),
        (
            "the small green circle is in the top left corner",
            "der kleine grüne Kreis ist in der oberen linken Ecke",
        ),
    ]
    on_a_third_line = Mention(obj("cross", "yellow", "large", 32, 48))
    assert candidates([on_a_third_line], SIZE, rng) == [
        ("a yellow cross", "ein gelbes Kreuz"),
        ("there is a yellow cross", "es gibt ein gelbes Kreuz"),
    ]
    centre = Mention(obj("square", "black", "large", 48, 48), "large")
    assert candidates([centre], SIZE, rng)[2:] == [
        ("a large black square in the centre", "ein großes schwarzes Quadrat in der Mitte"),
        ("there is a large black square in the centre", "es gibt ein großes schwarzes Quadrat in der Mitte"),
        ("the large black square is in the centre", "das große schwarze Quadrat ist in der Mitte"),
    ]


def test_two_object_templates_vertical_both_orders():
    rng = np.random.default_rng(0)
    star = Mention(obj("star", "black", "large", 48, 16), "large")
    cross = Mention(obj("cross", "brown", "small", 48, 80))
    assert candidates([star, cross], SIZE, rng) == [
        ("a large black star above a brown cross", "ein großer schwarzer Stern über einem braunen Kreuz"),
        (
            "the large black star is above a brown cross",
            "der große schwarze Stern ist über einem braunen Kreuz",
        ),
        (
            "there is a large black star above the brown cross",
            "es gibt einen großen schwarzen Stern über dem braunen Kreuz",
        ),
        (
            "a large black star at the top and a brown cross at the bottom",
            "ein großer schwarzer Stern oben und ein braunes Kreuz unten",
        ),
    ]
    assert candidates([cross, star], SIZE, rng) == [
        ("a brown cross below a large black star", "ein braunes Kreuz unter einem großen schwarzen Stern"),
        (
            "the brown cross is below a large black star",
            "das braune Kreuz ist unter einem großen schwarzen Stern",
        ),
        (
            "there is a brown cross below the large black star",
            "es gibt ein braunes Kreuz unter dem großen schwarzen Stern",
        ),
        (
            "a brown cross at the bottom and a large black star at the top",
            "ein braunes Kreuz unten und ein großer schwarzer Stern oben",
        ),
    ]


def test_two_object_templates_horizontal_with_either_english_wording():
    square = Mention(obj("square", "yellow", "large", 16, 48), "big")
    triangle = Mention(obj("triangle", "blue", "small", 80, 50))
    want = {  # order -> templates, {} the English relation
        "square first": [
            (
                "a big yellow square {} a blue triangle",
                "ein großes gelbes Quadrat links von einem blauen Dreieck",
            ),
            (
                "the big yellow square is {} a blue triangle",
                "das große gelbe Quadrat ist links von einem blauen Dreieck",
            ),
            (
                "there is a big yellow square {} the blue triangle",
                "es gibt ein großes gelbes Quadrat links von dem blauen Dreieck",
            ),
            (
                "a big yellow square on the left and a blue triangle on the right",
                "ein großes gelbes Quadrat links und ein blaues Dreieck rechts",
            ),
        ],
        "triangle first": [
            (
                "a blue triangle {} a big yellow square",
                "ein blaues Dreieck rechts von einem großen gelben Quadrat",
            ),
            (
                "the blue triangle is {} a big yellow square",
                "das blaue Dreieck ist rechts von einem großen gelben Quadrat",
            ),
            (
                "there is a blue triangle {} the big yellow square",
                "es gibt ein blaues Dreieck rechts von dem großen gelben Quadrat",
            ),
            (
                "a blue triangle on the right and a big yellow square on the left",
                "ein blaues Dreieck rechts und ein großes gelbes Quadrat links",
            ),
        ],
    }
    seen = set()
    for seed in range(8):
        for order, rel in (([square, triangle], "left of"), ([triangle, square], "right of")):
            got = candidates(order, SIZE, np.random.default_rng(seed))
            wording = next(
                w for w in (rel, f"to the {rel}") if got[0][0].startswith(order[0].en() + f" {w} a")
            )
            seen.add(wording)
            expected = want["square first" if order[0] is square else "triangle first"]
            assert got == [(en.format(wording), de) for en, de in expected]
    assert seen == {"left of", "to the left of", "right of", "to the right of"}


def test_three_object_templates():
    rng = np.random.default_rng(0)
    circle = Mention(obj("circle", "red", "small", 16, 16))
    square = Mention(obj("square", "purple", "small", 48, 48), "small")
    triangle = Mention(obj("triangle", "orange", "large", 48, 85))
    assert candidates([circle, square, triangle], SIZE, rng) == [
        (
            "a red circle above a small purple square and an orange triangle below the small purple square",
            "ein roter Kreis über einem kleinen violetten Quadrat und ein orangefarbenes Dreieck "
            "unter dem kleinen violetten Quadrat",
        ),
        (
            "there is a red circle above a small purple square "
            "and an orange triangle below the small purple square",
            "es gibt einen roten Kreis über einem kleinen violetten Quadrat und ein orangefarbenes Dreieck "
            "unter dem kleinen violetten Quadrat",
        ),
    ]


# ---------------------------------------------------------------------------------------------
# many random scenes, checked by the test's own reading of the German


def check_german(de: str) -> list[str]:
    """Agreement, case and capitalisation of one German line; returns the nouns in order."""
    tokens = de.split()
    nouns = []
    for k, word in enumerate(tokens):
        if word[0].isupper():
            assert word in NOUNS_DE or word in ("Ecke", "Mitte"), f"{de!r}: capitalised {word!r}"
        else:
            assert word == word.lower()
        if word not in NOUNS_DE:
            continue
        nouns.append(word)
        start = k - 1
        while tokens[start] not in {a for a, _ in ENDING_AFTER}:
            start -= 1
        article, adjectives, gender = tokens[start], tokens[start + 1 : k], NOUNS_DE[word]
        assert (article, gender) in ENDING_AFTER, f"{de!r}: {article} {word}"
        ending = ENDING_AFTER[article, gender]
        assert 1 <= len(adjectives) <= 2 and all(a.endswith(ending) for a in adjectives), (
            f"{de!r}: {adjectives}"
        )
        stems = [a[: -len(ending)] for a in adjectives]
        assert stems[-1] in COLOURS_DE.values() and stems[:-1] in ([], ["klein"], ["groß"]), f"{de!r}"
        before = tokens[start - 1] if start > 0 else None
        if before in ("über", "unter", "von"):
            case = "dat"
        elif tokens[:2] == ["es", "gibt"] and before != "ist":
            case = "acc"
        else:
            case = "nom"
        assert case in CASE_OF[article, gender], f"{de!r}: {article} {word} is not {case}"
    return nouns


def test_random_scenes_agree_translate_and_mention_every_object():
    seen: set[str] = set()
    for i in range(600):
        rng = np.random.default_rng([7, i])
        scene = make_scene(rng, SIZE, colours=PALETTE)
        en, de = describe_pair(scene, rng)
        assert en == en.lower() and set(en) <= set("abcdefghijklmnopqrstuvwxyz ")
        nouns = check_german(de)
        en_tokens = en.split()
        en_colours = [w for w in en_tokens if w in COLOURS_DE]
        assert colour_words(de) == [COLOURS_DE[c] for c in en_colours], (en, de)
        assert [SHAPES_EN[w] for w in en_tokens if w in SHAPES_EN] == nouns, (en, de)
        mentioned = {(c, s) for c, s in zip(en_tokens, en_tokens[1:]) if c in COLOURS_DE}
        assert mentioned == {(o["colour"], o["shape"]) for o in scene["objects"]}, (en, scene)
        en_rels = [r for r in RELATIONS if f" {r} " in f" {en} "]
        assert all(RELATIONS[r] in de for r in en_rels), (en, de)
        seen.update(en_tokens + de.split())
    assert set(COLOURS_DE) <= seen and set(SHAPES_EN) <= seen and set(NOUNS_DE) <= seen
    assert {
        "ein",
        "einen",
        "einem",
        "der",
        "das",
        "dem",
        "Ecke",
        "Mitte",
        "oben",
        "links",
        "ist",
        "es",
    } <= seen
    assert {
        "über",
        "unter",
        "großer",
        "großes",
        "kleinen",
        "orangefarbenes",
        "violetter",
        "an",
        "big",
    } <= seen


# ---------------------------------------------------------------------------------------------
# the files


def build(out: Path, **kwargs) -> dict:
    args = dict(n_train=10, n_dev=4, n_test=4, seed=1, size=48, mask=True, progress=False)
    return build_shapes_mmt(out, **{**args, **kwargs})


def read(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("mmt") / "set"
    return out, build(out)


def test_multi30k_layout_images_and_scenes(built):
    out, stats = built
    scenes = json.loads((out / "scenes.json").read_text(encoding="utf-8"))
    assert stats["pairs"] == {"train": 10, "dev": 4, "test": 4}
    assert json.loads((out / "stats.json").read_text(encoding="utf-8"))["arguments"] == {
        "n_train": 10, "n_dev": 4, "n_test": 4, "seed": 1, "size": 48, "mask": True,
    }  # fmt: skip
    for split in SPLITS:
        en, de = read(out / f"{split}.en"), read(out / f"{split}.de")
        masked, names = read(out / f"{split}.en_masked"), read(out / f"{split}_images.txt")
        assert len(en) == len(de) == len(masked) == len(names) == len(scenes[split]) == stats["pairs"][split]
        assert names == [f"{split}_{i:05d}.png" for i in range(len(en))]
        for e, d, name, scene in zip(en, de, names, scenes[split]):
            image = np.asarray(Image.open(out / "images" / name))
            assert image.shape == (48, 48, 3)
            colours = {o["colour"] for o in scene["objects"]}
            assert {w for w in e.split() if w in COLOURS_DE} == colours
            assert set(colour_words(d)) == {COLOURS_DE[c] for c in colours}
            for o in scene["objects"]:
                x, y = o["centre"]
                assert np.abs(image[y, x].astype(int) - o["rgb"]).max() <= 3, (name, o)
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(
        f"{s}_{i:05d}.png" for s in SPLITS for i in range(stats["pairs"][s])
    )


def test_masked_side_replaces_exactly_the_colour_words(built):
    out, _ = built
    replaced = 0
    for split in SPLITS:
        for e, m in zip(read(out / f"{split}.en"), read(out / f"{split}.en_masked")):
            e_tokens, m_tokens = e.split(), m.split()
            assert len(e_tokens) == len(m_tokens)
            for k, (a, b) in enumerate(zip(e_tokens, m_tokens)):
                if a == "an" and e_tokens[k + 1] in COLOURS_DE:  # "an orange": the article would tell
                    assert b == "a", (e, m)
                    continue
                assert b == (MASK_TOKEN if a in COLOURS_DE else a), (e, m)
                replaced += b == MASK_TOKEN
            assert not set(m_tokens) & set(COLOURS_DE)
    assert replaced >= 18  # at least one colour a line
    assert mask_colours("there is an orange star above an apple") == "there is a [v] star above an apple"


def test_same_arguments_same_bytes_and_dev_test_independent_of_n_train(tmp_path):
    a, b, c, d = (tmp_path / n for n in "abcd")
    build(a)
    build(b)
    build(c, seed=2)
    build(d, n_train=3)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 18 + 4 * 3 + 2
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    assert (a / "train.de").read_bytes() != (c / "train.de").read_bytes()
    for f in ("dev.en", "dev.de", "test.en_masked", "test_images.txt", "images/dev_00003.png"):
        assert (a / f).read_bytes() == (d / f).read_bytes(), f


def test_force_rebuild_removes_its_own_stale_files_only(tmp_path):
    out = tmp_path / "set"
    build(out)
    (out / "notes.txt").write_text("mine")
    build(out, n_train=3, mask=False, force=True)
    assert (out / "notes.txt").read_text() == "mine"
    assert not list(out.glob("*.en_masked"))
    assert len(list((out / "images").iterdir())) == 3 + 4 + 4
    assert len(read(out / "train.en")) == 3


# ---------------------------------------------------------------------------------------------
# the metric


def test_colour_words_recognise_every_stem_and_ending():
    assert colour_words("Orangefarbenes Dreieck, schwarzem Stern und braun") == [
        "orangefarben",
        "schwarz",
        "braun",
    ]
    assert colour_words("ROTES rotem Grüne violettes gelben blauer Brot rotkehlchen") == [
        "rot", "rot", "grün", "violett", "gelb", "blau",
    ]  # fmt: skip
    assert colour_words("ein Kreis") == []


def test_colour_accuracy_hand_computed():
    refs = [
        "ein roter Kreis über einem blauen Quadrat",
        "der große gelbe Stern ist links von einem grünen Kreuz",
    ]
    assert colour_accuracy(refs, refs) == 1.0
    # rot right, grün for blau wrong; gelb right, the missing fourth wrong: 2 of 4
    assert colour_accuracy(["ein ROTES Kreis über einem grüne Quadrat", "der gelbe Stern"], refs) == 0.5
    assert colour_accuracy(["", "ein grünes Kreuz und ein gelber Stern"], refs) == 0.0  # order counts
    assert (
        colour_accuracy(["ein orangefarbenes Dreieck", "x"], ["das orangefarbene Dreieck", "ein Kreis"])
        == 1.0
    )
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        colour_accuracy(["a", "b"], ["ein roter Kreis"])
    with pytest.raises(ValueError, match="no colour words"):
        colour_accuracy(["ein roter Kreis"], ["ein Kreis"])


# ---------------------------------------------------------------------------------------------
# the command line


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "data.builders.shapes_mmt", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_writes_refuses_a_non_empty_out_and_forces(tmp_path):
    out = tmp_path / "mmt"
    args = ["--out", str(out), "--n-train", "8", "--n-dev", "2", "--n-test", "2", "--size", "48", "--mask"]
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr
    assert "pairs train 8, dev 2, test 2" in done.stdout and "en_masked" in done.stdout
    assert len(read(out / "train.en_masked")) == 8 and len(list((out / "images").glob("*.png"))) == 12
    before = (out / "train.de").read_bytes()

    refused = run_cli(*args)
    assert (refused.returncode, refused.stdout) == (1, "")
    assert all(part in refused.stderr for part in ("error: ", "not empty", "--force"))
    assert "Traceback" not in refused.stderr and (out / "train.de").read_bytes() == before
    forced = run_cli(*args, "--force")
    assert forced.returncode == 0, forced.stderr
    assert (out / "train.de").read_bytes() == before  # same seed, same bytes

    bad = run_cli("--out", str(tmp_path / "bad"), "--n-dev", "-1")
    assert bad.returncode == 1 and "--n-dev -1" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "bad").exists()
