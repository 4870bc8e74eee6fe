"""Every shipped config under configs/ trains: `fit -c CONFIG --trainer.fast_dev_run true` (one
training and one validation batch) runs to completion in-process on tiny data this module builds.

The configs are found with `configs/**/*.yaml`, so a new config is picked up automatically, and it
fails here until OVERRIDES says where its tiny data lies. Each run keeps the config's own classes
and options (cell, attention, fusion, backbone, model kind, ...); the test overrides only where the
data is (every path in the config's data section: nothing is read from data/corpora or from the
machine), where caches and logs go (tmp_path), and sizes (embeddings, hidden units, 64-pixel
images) so that all configs train in a few seconds each.

Data that does not exist here gets a tiny stand-in in the layout the config expects:

- the reversal task: conftest's session corpus;
- the gettext en-de corpus: {train,dev,test}.{en,de} of software-message-like pairs;
- the licence texts (/usr/share/common-licenses): a folder of hard-wrapped paragraphs, one file a
  symlink to another (as GPL -> GPL-3), read once;
- shapes captioning, shapes VQA and shapes MMT: the repository's builders, a few 64-pixel images;
- Flickr8k: the shapes images as JPEGs with Flickr-like names in Flicker8k_Dataset/ and a Karpathy
  dataset_flickr8k.json, checked with `data.builders.flickr8k.check` as a user checks the real one;
- Multi30k: the official file names (train.en, val.en, test_2016_flickr.en, train.txt, ...) made
  from the shapes MMT text, with JPEGs named as Flickr30k's, turned into the MultimodalDataModule
  layout by `data.builders.multi30k.build_multi30k`, which also checks every listed image.
"""

from __future__ import annotations

import json
import math
import random
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from PIL import Image

from data.builders import shapes_vqa
from data.builders.flickr8k import IMAGES_DIR, KARPATHY_JSON
from data.builders.flickr8k import check as check_flickr8k
from data.builders.multi30k import OFFICIAL_STEMS, build_multi30k, image_list_files
from data.builders.shapes import JSON_NAME as SHAPES_JSON
from data.builders.shapes import build_shapes_dataset
from data.builders.shapes_mmt import build_shapes_mmt
from seq2seq.training.cli import main
from tests.conftest import REPO, reverse_corpus_at

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIGS = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "configs").rglob("*.yaml"))
SPLITS = ("train", "dev", "test")


# -- tiny data, built once per module --------------------------------------------------------------
@dataclass
class Tiny:
    reverse: Path  # {train,dev,test}.{src,tgt}
    gettext: Path  # {train,dev,test}.{en,de}
    licenses: Path  # a folder of text files, paragraphs separated by blank lines
    shapes: Path  # dataset_shapes.json + images/
    shapes_vqa: Path  # {split}_{questions,annotations,images}.json
    shapes_mmt: Path  # {split}.{en,de}, {split}_images.txt, images/
    flickr8k: Path  # dataset_flickr8k.json + Flicker8k_Dataset/*.jpg
    multi30k: Path  # {split}.{en,de}, {split}_images.txt (the builder's output)
    flickr30k_images: Path  # <digits>.jpg


OBJECTS = {"file": "Datei", "folder": "Ordner", "printer": "Drucker", "network": "Netzwerk",
           "device": "Gerät", "window": "Fenster", "user": "Benutzer", "package": "Paket"}  # fmt: skip
MESSAGES = [("Cannot open the {}.", "{} kann nicht geöffnet werden."),
            ("The {} was not found.", "{} wurde nicht gefunden."),
            ("Remove the selected {}?", "Ausgewählte {} entfernen?"),
            ("Unable to read the {} .", "{} kann nicht gelesen werden.")]  # fmt: skip


def write_gettext_like(out: Path) -> Path:
    """English -> German software messages in data.builders.gettext's output layout."""
    pairs = [(en.format(o), de.format(d)) for en, de in MESSAGES for o, d in OBJECTS.items()]  # 32 pairs
    random.Random(0).shuffle(pairs)
    out.mkdir(parents=True)
    for split, chunk in (("train", pairs[:24]), ("dev", pairs[24:28]), ("test", pairs[28:])):
        (out / f"{split}.en").write_text("".join(f"{en}\n" for en, _ in chunk), encoding="utf-8")
        (out / f"{split}.de").write_text("".join(f"{de}\n" for _, de in chunk), encoding="utf-8")
    return out


LICENCE_WORDS = (
    "the software is provided as is without warranty of any kind you may copy modify and "
    "distribute copies of this licence document but changing it is not allowed permission is "
    "hereby granted free of charge to any person obtaining a copy of the program"
).split()


def write_licence_folder(out: Path, files: int = 4, paragraphs: int = 30) -> Path:
    """A folder like /usr/share/common-licenses: hard-wrapped paragraphs (a blank line ends one),
    enough of them that the 10%/10% hash split gives every split a few, and a symlink that the
    data module reads once (as GPL -> GPL-3)."""
    rng = random.Random(0)
    out.mkdir(parents=True)
    for f in range(files):
        blocks = []
        for p in range(paragraphs):
            words = [rng.choice(LICENCE_WORDS) for _ in range(rng.randint(12, 30))] + [f"clause-{p}."]
            blocks.append("\n".join(" ".join(words[i : i + 8]) for i in range(0, len(words), 8)))
        (out / f"LICENCE-{f}").write_text("\n\n".join(blocks) + "\n", encoding="utf-8")
    (out / "LICENCE").symlink_to("LICENCE-0")
    return out


def fake_flickr8k(shapes: Path, out: Path) -> Path:
    """The shapes images and captions as Flickr8k: JPEGs named like Flickr's in Flicker8k_Dataset/
    and Karpathy's dataset_flickr8k.json (no filepath, as the real one)."""
    data = json.loads((shapes / SHAPES_JSON).read_text())
    (out / IMAGES_DIR).mkdir(parents=True)
    images = []
    for i, entry in enumerate(data["images"]):
        name = f"{1000268201 + i}_{i:010x}.jpg"
        with Image.open(shapes / entry["filepath"] / entry["filename"]) as image:
            image.convert("RGB").save(out / IMAGES_DIR / name, "JPEG")
        sentences = [{"tokens": s["tokens"], "raw": s["raw"], "imgid": i, "sentid": 5 * i + k}
                     for k, s in enumerate(entry["sentences"])]  # fmt: skip
        images.append({"filename": name, "imgid": i, "split": entry["split"], "sentences": sentences,
                       "sentids": [s["sentid"] for s in sentences]})  # fmt: skip
    (out / KARPATHY_JSON).write_text(json.dumps({"images": images, "dataset": "flickr8k"}))
    assert check_flickr8k(out, progress=False) == 0  # the layout the Flickr8k checker accepts
    return out


def fake_multi30k(mmt: Path, raw: Path, image_dir: Path, out: Path) -> Path:
    """The shapes MMT pairs under Multi30k's official file names (train/val/test_2016_flickr, the
    image lists train.txt, ...), their images as Flickr30k-named JPEGs; then the Multi30k builder
    writes the MultimodalDataModule layout and checks every listed image."""
    raw.mkdir(parents=True)
    image_dir.mkdir(parents=True)
    number = 1000092795
    for split, stem in OFFICIAL_STEMS.items():
        for lang in ("en", "de"):
            (raw / f"{stem}.{lang}").write_bytes((mmt / f"{split}.{lang}").read_bytes())
        names = []
        for source in (mmt / f"{split}_images.txt").read_text().splitlines():
            names.append(f"{number}.jpg")
            number += 1
            with Image.open(mmt / "images" / source) as image:
                image.convert("RGB").save(image_dir / names[-1], "JPEG")
        (raw / f"{stem}.txt").write_text("".join(f"{n}\n" for n in names))
    assert sorted(p.name for p in raw.glob("*.txt")) == sorted(image_list_files())
    build_multi30k(out, from_dir=raw, images=image_dir)
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Tiny:
    base = tmp_path_factory.mktemp("configs-data")
    shapes = base / "shapes"
    build_shapes_dataset(shapes, n_train=8, n_val=4, n_test=2, size=64, progress=False)
    shapes_vqa.write(base / "shapes_vqa", shapes_vqa.build(shapes))
    mmt = base / "shapes_mmt"
    build_shapes_mmt(mmt, n_train=8, n_dev=4, n_test=2, size=64, progress=False)
    return Tiny(
        reverse=reverse_corpus_at(base / "reverse", n=64, n_dev=8, n_test=4),
        gettext=write_gettext_like(base / "gettext-en-de"),
        licenses=write_licence_folder(base / "common-licenses"),
        shapes=shapes,
        shapes_vqa=base / "shapes_vqa",
        shapes_mmt=mmt,
        flickr8k=fake_flickr8k(shapes, base / "flickr8k"),
        multi30k=fake_multi30k(mmt, base / "multi30k-raw", base / "flickr30k-images", base / "multi30k"),
        flickr30k_images=base / "flickr30k-images",
    )


# -- what each config is run with -------------------------------------------------------------------
def small(embed: int = 16, hidden: int = 32) -> list[str]:
    return ["--model.init_args.rnn.embed_dim", str(embed), "--model.init_args.rnn.hidden_size", str(hidden)]


def reverse(t: Tiny, tmp: Path) -> list[str]:
    return ["--data.init_args.data_dir", str(t.reverse), *small()]


def gettext(t: Tiny, tmp: Path) -> list[str]:
    return ["--data.init_args.data_dir", str(t.gettext), *small()]


def licenses(t: Tiny, tmp: Path) -> list[str]:
    # tied embeddings need embed_dim == hidden_size
    return ["--data.init_args.files", json.dumps([str(t.licenses)]), *small(32, 32)]


def german(t: Tiny, tmp: Path) -> list[str]:
    """The German side of the tiny gettext-like corpus (train.de, dev.de)."""
    return [
        "--data.init_args.train_files", json.dumps([str(t.gettext / "train.de")]),
        "--data.init_args.val_files", json.dumps([str(t.gettext / "dev.de")]), *small(32, 32),
    ]  # fmt: skip


def images(tmp: Path) -> list[str]:
    """64-pixel images (the frozen CNN's grid shrinks with them); features cached per test."""
    return ["--data.init_args.image_size", "64", "--data.init_args.cache_dir", str(tmp / "feature_cache")]


def captions(t: Tiny, tmp: Path) -> list[str]:
    return ["--data.init_args.source", str(t.shapes / SHAPES_JSON), *images(tmp), *small()]


def flickr8k(t: Tiny, tmp: Path) -> list[str]:
    return [
        "--data.init_args.source", str(t.flickr8k / KARPATHY_JSON),
        "--data.init_args.image_root", str(t.flickr8k / IMAGES_DIR),
        *images(tmp), *small(),
    ]  # fmt: skip


def vqa(t: Tiny, tmp: Path) -> list[str]:
    joint = ["--model.init_args.joint_size", "32"]
    return ["--data.init_args.root", str(t.shapes_vqa), *images(tmp), *small(), *joint]


def shapes_mmt(t: Tiny, tmp: Path) -> list[str]:
    return [
        "--data.init_args.data_dir", str(t.shapes_mmt),
        "--data.init_args.image_dir", str(t.shapes_mmt / "images"),
        *images(tmp), *small(),
    ]  # fmt: skip


def multi30k(t: Tiny, tmp: Path) -> list[str]:
    return [
        "--data.init_args.data_dir", str(t.multi30k),
        "--data.init_args.image_dir", str(t.flickr30k_images),
        *images(tmp), *small(),
    ]  # fmt: skip


# Every config -> its command-line overrides; a config missing here fails (see the module docstring).
OVERRIDES = {
    "configs/captioning/flickr8k_showtell.yaml": flickr8k,
    "configs/captioning/quickstart.yaml": captions,
    "configs/captioning/shapes_attention.yaml": captions,
    "configs/captioning/shapes_showtell.yaml": captions,
    "configs/captioning/shapes_showtell_peephole.yaml": captions,
    "configs/lm/gettext_de_word_lstm.yaml": german,
    "configs/lm/licenses_char_lstm.yaml": licenses,
    "configs/lm/licenses_word_lstm.yaml": licenses,
    "configs/lm/licenses_word_seed_gru.yaml": licenses,
    "configs/translation/gettext_attention.yaml": gettext,
    "configs/translation/gettext_fixed.yaml": gettext,
    "configs/translation/multi30k_mmt.yaml": multi30k,
    "configs/translation/quickstart.yaml": gettext,
    "configs/translation/reverse_attention.yaml": reverse,
    "configs/translation/reverse_fixed.yaml": reverse,
    "configs/translation/reverse_peephole.yaml": reverse,
    "configs/translation/shapes_mmt.yaml": shapes_mmt,
    "configs/vqa/shapes_attention.yaml": vqa,
}


def overridden(args: list[str]) -> dict[str, str]:
    """`--a.b.c VALUE` pairs -> {"a.b.c": VALUE}."""
    return {args[i][2:]: args[i + 1] for i in range(0, len(args), 2)}


def qualified(obj: object) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def is_path(value: object) -> bool:
    values = value if isinstance(value, list) else [value]
    return any(isinstance(v, str) and "/" in v for v in values)


def test_every_config_has_data_overrides():
    assert len(CONFIGS) >= 15, CONFIGS
    missing, stale = sorted(set(CONFIGS) - set(OVERRIDES)), sorted(set(OVERRIDES) - set(CONFIGS))
    assert not missing, f"configs without tiny data in OVERRIDES: {missing}"
    assert not stale, f"OVERRIDES entries for configs that no longer exist: {stale}"


@pytest.mark.parametrize("config", CONFIGS)
def test_config_trains(config, tiny, tmp_path, monkeypatch):
    spec = yaml.safe_load((REPO / config).read_text())
    assert config in OVERRIDES, f"{config}: add its tiny data to OVERRIDES in {Path(__file__).name}"
    extra = OVERRIDES[config](tiny, tmp_path)
    changed = overridden(extra)
    data_args = spec["data"]["init_args"]
    # nothing is read from the repository's data/corpora or from the machine: every path is ours
    paths = {k for k, v in data_args.items() if is_path(v)}
    assert paths <= {k.removeprefix("data.init_args.") for k in changed}, (config, paths)

    monkeypatch.setattr(sys, "argv", ["python -m seq2seq"])  # pytest's own arguments are not the CLI's
    cli = main([
        "fit", "-c", str(REPO / config), *extra,
        "--trainer.fast_dev_run", "true",
        "--trainer.default_root_dir", str(tmp_path / "runs"),
        "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false",
    ])  # fmt: skip

    # the classes the config names, with its options (those the test did not shrink)
    assert qualified(cli.model) == spec["model"]["class_path"]
    assert qualified(cli.datamodule) == spec["data"]["class_path"]
    for key, value in spec["model"]["init_args"].items():
        if isinstance(value, dict):  # an option group (rnn, image, search): field by field
            for field, v in value.items():
                if f"model.init_args.{key}.{field}" not in changed:
                    assert cli.model.hparams[key][field] == v, (config, key, field)
        elif f"model.init_args.{key}" not in changed:
            assert cli.model.hparams[key] == value, (config, key)
    for key, value in data_args.items():
        if f"data.init_args.{key}" not in changed and key in cli.datamodule.hparams:
            assert cli.datamodule.hparams[key] == value, (config, key)
    # one training step and one validation batch really ran
    trainer = cli.trainer
    assert trainer.state.finished and not trainer.interrupted
    assert trainer.global_step == 1
    metrics = trainer.callback_metrics
    assert math.isfinite(float(metrics["train_loss"])), dict(metrics)
    assert any(k.startswith("val_") for k in metrics), dict(metrics)
