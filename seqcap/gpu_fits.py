"""The sizes and the fits of `make gpu-check` (seqcap/gpu_check.py): the two profiles (full, on a
GPU; --quick), for each task the shipped config it trains and the command-line overrides that
point it at tiny synthetic data, built here on first use, and the training losses a run logged."""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Profile:
    """Sizes of one run: the full GPU form, or --quick (tiny data and models, a few steps)."""

    bench_steps: int
    bench_warmup: int
    bench_decode: int
    bench_vocab: int  # words of the bench's synthetic corpus (the bench caps its vocabularies at 8,000)
    bench_len: tuple[int, int]  # its sentence lengths
    fit_steps: int
    pairs: int  # training pairs of the synthetic corpora
    images: int  # training images of the shapes sets
    image_size: int | None  # None: the configs' own (224, 320)
    small_models: bool  # the tiny sizes of tests/test_configs.py instead of the configs' own
    sanity_val: bool  # Lightning's sanity validation before training (quick: one epoch is two
    # batches, so the epoch-end validation runs anyway; full: epochs outlast max_steps)


FULL = Profile(bench_steps=40, bench_warmup=5, bench_decode=256, bench_vocab=8000, bench_len=(5, 30),
               fit_steps=30, pairs=4000, images=160,
               image_size=None, small_models=False, sanity_val=True)  # fmt: skip
QUICK = Profile(bench_steps=2, bench_warmup=1, bench_decode=4, bench_vocab=100, bench_len=(3, 8),
                fit_steps=2, pairs=128, images=8,
                image_size=64, small_models=True, sanity_val=False)  # fmt: skip


def write_texts(out: Path, files: int = 4, paragraphs: int = 30, seed: int = 0) -> Path:
    """A folder of hard-wrapped paragraphs (a blank line ends one), like /usr/share/common-licenses."""
    words = ("the software is provided as is without warranty of any kind you may copy modify and "
             "distribute copies of this licence document but changing it is not allowed").split()  # fmt: skip
    rng = random.Random(seed)
    out.mkdir(parents=True)
    for f in range(files):
        blocks = []
        for p in range(paragraphs):
            para = [rng.choice(words) for _ in range(rng.randint(12, 40))] + [f"clause-{p}."]
            blocks.append("\n".join(" ".join(para[i : i + 8]) for i in range(0, len(para), 8)))
        (out / f"LICENCE-{f}").write_text("\n\n".join(blocks) + "\n", encoding="utf-8")
    return out


class TinyData:
    """The synthetic data of the fits, built on first use under one folder."""

    def __init__(self, root: Path, profile: Profile):
        self.root, self.p = root, profile
        self._built: dict[str, Path] = {}
        self.render_size = 64 if profile.image_size else 128  # pixels of the drawn shapes images

    def get(self, name: str, build: Callable[[Path], object]) -> Path:
        if name not in self._built:
            build(self.root / name)
            self._built[name] = self.root / name
        return self._built[name]

    def reverse(self) -> Path:
        from data.builders.synthetic import build_synthetic_corpus

        n = self.p.pairs
        return self.get("reverse", lambda out: build_synthetic_corpus(
            "reverse", out, vocab=20, train_len=(5, 20), test_len=(5, 20), n=n, n_dev=max(8, n // 20),
            n_test=max(4, n // 40)))  # fmt: skip

    def shapes(self) -> Path:
        from data.builders.shapes import build_shapes_dataset

        n = self.p.images
        size = self.render_size
        return self.get("shapes", lambda out: build_shapes_dataset(
            out, n_train=n, n_val=max(4, n // 4), n_test=2, size=size, progress=False))  # fmt: skip

    def shapes_vqa(self) -> Path:
        from data.builders import shapes_vqa

        shapes = self.shapes()
        return self.get("shapes_vqa", lambda out: shapes_vqa.write(out, shapes_vqa.build(shapes)))

    def shapes_mmt(self) -> Path:
        from data.builders.shapes_mmt import build_shapes_mmt

        n = self.p.images
        size = self.render_size
        return self.get("shapes_mmt", lambda out: build_shapes_mmt(
            out, n_train=n, n_dev=max(4, n // 4), n_test=2, size=size, progress=False))  # fmt: skip

    def texts(self) -> Path:
        return self.get("texts", lambda out: write_texts(out, paragraphs=max(30, self.p.pairs // 20)))


def small(embed: int = 16, hidden: int = 32) -> list[str]:
    return ["--model.init_args.rnn.embed_dim", str(embed), "--model.init_args.rnn.hidden_size", str(hidden)]


def images(profile: Profile, tmp: Path) -> list[str]:
    size = ["--data.init_args.image_size", str(profile.image_size)] if profile.image_size else []
    return [*size, "--data.init_args.cache_dir", str(tmp / "feature_cache")]


# task -> (config, its data and size overrides)
FITS: dict[str, tuple[str, Callable[[TinyData, Path], list[str]]]] = {
    "translation": ("configs/translation/reverse_attention.yaml", lambda d, tmp: [
        "--data.init_args.data_dir", str(d.reverse()), *(small() if d.p.small_models else [])]),
    "multimodal": ("configs/translation/shapes_mmt.yaml", lambda d, tmp: [
        "--data.init_args.data_dir", str(d.shapes_mmt()),
        "--data.init_args.image_dir", str(d.shapes_mmt() / "images"),
        *images(d.p, tmp), *(small() if d.p.small_models else [])]),
    "lm": ("configs/lm/licenses_word_lstm.yaml", lambda d, tmp: [
        "--data.init_args.files", json.dumps([str(d.texts())]),
        *(small(32, 32) if d.p.small_models else [])]),  # tied embeddings: embed_dim == hidden_size
    "captioning": ("configs/captioning/shapes_attention.yaml", lambda d, tmp: [
        "--data.init_args.source", str(d.shapes() / "dataset_shapes.json"),
        *images(d.p, tmp), *(small() if d.p.small_models else [])]),
    "vqa": ("configs/vqa/shapes_attention.yaml", lambda d, tmp: [
        "--data.init_args.root", str(d.shapes_vqa()), *images(d.p, tmp),
        *([*small(), "--model.init_args.joint_size", "32"] if d.p.small_models else [])]),
}  # fmt: skip


def train_losses(root: Path) -> list[float]:
    values = []
    for path in sorted(root.rglob("metrics.csv")):
        with open(path, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                for key in ("train_loss_step", "train_loss"):
                    if row.get(key) not in (None, ""):
                        values.append(float(row[key]))
                        break
    return values
