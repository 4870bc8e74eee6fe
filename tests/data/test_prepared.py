"""Prepared corpora (data.prepared.parallel, data.prepared.prepare): the same batches as the raw text, keyed
folders, errors that name what differs, no half folder after an interruption."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from data.core.parallel import DataError
from data.datamodules.multimodal import MultimodalDataModule
from data.datamodules.translation import ParallelTextDataModule
from data.prepared import parallel as prepared_module
from data.prepared.parallel import prepare
from tests.data.test_multimodal import write_set

ROOT = Path(__file__).resolve().parents[2]
WORDS = "the a red blue cat dog sees eats %s file <eos> big small runs , . !".split()


def write_corpus(root: Path, n: int = 400, seed: int = 0) -> Path:
    """train/dev/test with empty lines, pairs longer than max_len=12 and special strings in the text."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for split, size in (("train", n), ("dev", n // 4), ("test", n // 5)):
        en, de = [], []
        for i in range(size):
            length = rng.randint(1, 16)
            words = [rng.choice(WORDS) for _ in range(length)]
            en.append("" if i % 37 == 5 else " ".join(words))
            de.append(" ".join(w.upper() for w in reversed(words)) + f" {i % 7}")
        (root / f"{split}.en").write_text("\n".join(en) + "\n")
        (root / f"{split}.de").write_text("\n".join(de) + "\n")
    return root


OPTIONS = dict(max_len=12, max_vocab_size=20, batch_size=60, batch_by="tokens", val_size=50, seed=3)


def same_batches(a, b) -> int:
    """Assert two loaders yield equal batches (tensors and lists); returns how many."""
    n = 0
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for key in x:
            if isinstance(x[key], torch.Tensor):
                assert torch.equal(x[key], y[key]), key
            else:
                assert x[key] == y[key], key
        n += 1
    return n


@pytest.mark.parametrize("tokenizer", ["word", "sentencepiece"])
def test_prepared_folder_gives_exactly_the_raw_batches(tmp_path, tokenizer):
    data = write_corpus(tmp_path / "corpus")
    options = OPTIONS | {"tokenizer": tokenizer, "sp_vocab_size": 40}
    raw = ParallelTextDataModule(str(data), **options)
    ready = ParallelTextDataModule(str(data), **options, prepared_dir=str(tmp_path / "prep"))
    raw.setup("fit")
    ready.setup("fit")
    assert ready.src_vocab == raw.src_vocab and ready.tgt_vocab == raw.tgt_vocab
    assert ready.vocab_state() == raw.vocab_state()
    assert len(ready.datasets["train"]) == len(raw.datasets["train"]) < 400  # empty and long pairs gone
    for epoch in (0, 1):  # the shuffle depends on the epoch; both paths alike
        a, b = raw.train_dataloader(), ready.train_dataloader()
        a.batch_sampler.set_epoch(epoch)
        b.batch_sampler.set_epoch(epoch)
        assert same_batches(a, b) > 3
    assert same_batches(raw.val_dataloader(), ready.val_dataloader()) >= 1  # val_size: the same 50
    assert same_batches(raw.test_dataloader(), ready.test_dataloader()) >= 1
    assert ready.datasets["dev"].text.src[0] == raw.datasets["dev"].text.src[0]
    encoded = ready.encode_text(raw.datasets["test"].text)  # the tokenizers come back from the folder
    assert encoded.src_ids == raw.datasets["test"].src_ids


def test_one_process_and_a_pool_write_the_same_folder(tmp_path):
    data = write_corpus(tmp_path / "corpus", n=300)
    one = prepare(ParallelTextDataModule(str(data), **OPTIONS), tmp_path / "one", workers=1, progress=False)
    two = prepare(ParallelTextDataModule(str(data), **OPTIONS), tmp_path / "two", workers=2, progress=False)
    assert one.name == two.name
    for path in sorted(one.glob("*.npy")):
        assert path.read_bytes() == (two / path.name).read_bytes(), path.name


def test_a_change_of_options_or_data_prepares_a_new_folder(tmp_path):
    data = write_corpus(tmp_path / "corpus", n=100)
    root = tmp_path / "prep"
    first = prepare(ParallelTextDataModule(str(data), **OPTIONS), root, workers=1, progress=False)
    assert prepare(ParallelTextDataModule(str(data), **OPTIONS), root, workers=1, progress=False) == first
    other_len = prepare(
        ParallelTextDataModule(str(data), **OPTIONS | {"max_len": 8}), root, workers=1, progress=False
    )
    with open(data / "train.de", "a") as f:
        f.write("one more\n")
    with open(data / "train.en", "a") as f:
        f.write("ein mehr\n")
    other_data = prepare(ParallelTextDataModule(str(data), **OPTIONS), root, workers=1, progress=False)
    assert len({first, other_len, other_data}) == 3 and all(
        (p / "meta.json").is_file() for p in (first, other_data)
    )
    assert json.loads((other_data / "meta.json").read_text())["pairs"]["train"] == (
        json.loads((first / "meta.json").read_text())["pairs"]["train"] + 1
    )


def test_a_folder_given_directly_must_fit_the_options_and_says_what_differs(tmp_path):
    data = write_corpus(tmp_path / "corpus", n=100)
    folder = prepare(
        ParallelTextDataModule(str(data), **OPTIONS), tmp_path / "prep", workers=1, progress=False
    )
    pinned = ParallelTextDataModule(str(data), **OPTIONS, prepared_dir=str(folder))
    pinned.build()  # the same options: used as it is
    with pytest.raises(DataError, match=r"max_vocab_size: 20 in the folder, 30 asked for"):
        ParallelTextDataModule(
            str(data), **OPTIONS | {"max_vocab_size": 30}, prepared_dir=str(folder)
        ).build()
    meta = json.loads((folder / "meta.json").read_text())
    meta["key"]["tokenizer_version"] = 0
    (folder / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match=r"tokenizer_version: 0 in the folder, 1 in this code"):
        ParallelTextDataModule(str(data), **OPTIONS, prepared_dir=str(folder)).build()


def test_an_interrupted_preparation_leaves_nothing_a_later_run_trusts(tmp_path, monkeypatch):
    data = write_corpus(tmp_path / "corpus", n=100)
    root = tmp_path / "prep"
    real = prepared_module._write_split

    def fail_on_dev(folder, name, *args, **kw):
        if name == "dev":
            raise KeyboardInterrupt
        return real(folder, name, *args, **kw)

    monkeypatch.setattr(prepared_module, "_write_split", fail_on_dev)
    with pytest.raises(KeyboardInterrupt):
        ParallelTextDataModule(str(data), **OPTIONS, prepared_dir=str(root)).build()
    assert list(root.iterdir()) == []  # neither a folder nor its temporary
    monkeypatch.setattr(prepared_module, "_write_split", real)
    (root / ".leftover.tmp-1").mkdir()  # a killed run's temporary (kill -9 cannot clean up)
    dm = ParallelTextDataModule(str(data), **OPTIONS, prepared_dir=str(root))
    dm.setup("fit")
    assert len(dm.datasets["train"]) > 50


def test_mismatched_line_counts_are_named(tmp_path):
    data = write_corpus(tmp_path / "corpus", n=50)
    (data / "train.de").write_text("nur eine zeile\n")
    with pytest.raises(DataError, match=r"train.en has 50 lines but .*train.de has 1"):
        ParallelTextDataModule(str(data), **OPTIONS, prepared_dir=str(tmp_path / "prep")).build()
    assert not (tmp_path / "prep").exists()


def test_multimodal_pairs_keep_their_images_from_a_prepared_folder(tmp_path):
    root = write_set(tmp_path / "d", n=6, empty_line=1)
    args = dict(data_dir=str(root), image_dir=str(root / "images"), word_tokenizer="space", image_size=32)
    raw, ready = (
        MultimodalDataModule(**args),
        MultimodalDataModule(**args, prepared_dir=str(tmp_path / "prep")),
    )
    for dm in (raw, ready):
        dm.setup("fit")
    assert list(ready.datasets["train"].text.lines) == [0, 2, 3, 4, 5]
    assert ready.image_paths("train") == raw.image_paths("train")
    assert same_batches(raw.train_dataloader(), ready.train_dataloader()) >= 1


def test_prepare_cli_takes_a_training_config_and_reports_bad_options(tmp_path):
    data = write_corpus(tmp_path / "corpus", n=120)
    config = tmp_path / "train.yaml"
    config.write_text(
        "model:\n  class_path: seq2seq.translation.module.TranslationModule\n"
        f"data:\n  class_path: data.datamodules.translation.ParallelTextDataModule\n  init_args:\n"
        f"    data_dir: {data}\n    max_len: 12\n    max_vocab_size: 20\n"
    )
    run = [sys.executable, "-m", "data.prepared.prepare", "-c", str(config), "--out", str(tmp_path / "prep")]
    done = subprocess.run(run + ["--seed", "3"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    folder = Path(done.stdout.split()[0])
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["key"]["options"]["max_len"] == 12 and meta["key"]["options"]["seed"] == 3
    dm = ParallelTextDataModule(str(data), **OPTIONS, prepared_dir=str(tmp_path / "prep"))
    dm.build()  # training with the same options finds the folder (no second preparation)
    assert sorted(p.name for p in (tmp_path / "prep").iterdir()) == [folder.name]
    bad = subprocess.run(run + ["--max_len"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "--NAME VALUE" in bad.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "data.prepared.prepare", "--data_dir", str(tmp_path / "nothing"),
         "--out", str(tmp_path / "p2")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert missing.returncode == 2 and "nothing: no such data directory" in missing.stderr


# -- language-model text (data.prepared.text) -------------------------------------------------
def write_text_dir(root: Path, seed: int = 0) -> Path:
    rng = random.Random(seed)
    root.mkdir(parents=True)
    for name, n in (("train.txt", 300), ("valid.txt", 60), ("test.txt", 50)):
        lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 12))) for _ in range(n)]
        (root / name).write_text("\n".join(lines[:10] + [""] + lines[10:]) + "\n")  # an empty line too
    return root


@pytest.mark.parametrize("tbptt_steps", [7, None])
def test_prepared_lm_text_gives_exactly_the_raw_batches(tmp_path, tbptt_steps):
    from data.datamodules.text import TextDataModule

    data = write_text_dir(tmp_path / "text")
    options = dict(
        data_dir=str(data), max_vocab_size=15, batch_size=4, eval_batch_size=3, tbptt_steps=tbptt_steps
    )
    raw = TextDataModule(**options)
    ready = TextDataModule(**options, prepared_dir=str(tmp_path / "prep"))
    raw.setup("fit")
    ready.setup("fit")
    assert ready.vocab_state() == raw.vocab_state()
    for split in ("train", "valid", "test"):
        assert list(ready.units[split]) == raw.units[split]
        a, b = raw.stream(split), ready.stream(split)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert same_batches(raw.train_dataloader(), ready.train_dataloader()) > 5
    assert same_batches(raw.val_dataloader(), ready.val_dataloader()) > 1
    assert same_batches(raw.test_dataloader(), ready.test_dataloader()) > 1


def test_prepared_lm_text_follows_its_files_and_names_what_differs(tmp_path):
    from data.datamodules.text import TextDataModule

    data = write_text_dir(tmp_path / "text")
    root = tmp_path / "prep"
    TextDataModule(data_dir=str(data), prepared_dir=str(root)).build()
    with open(data / "train.txt", "a") as f:
        f.write("one more line\n")
    dm = TextDataModule(data_dir=str(data), prepared_dir=str(root))
    dm.build()
    assert len(list(root.iterdir())) == 2 and len(dm.units["train"]) == 301
    with pytest.raises(DataError, match=r"level: 'word' in the folder, 'char' asked for"):
        TextDataModule(data_dir=str(data), level="char", prepared_dir=str(dm.prepared)).build()


def test_mapped_stream_chunks_of_one_rank_are_its_rows_of_batchify():
    """Under DDP rank r reads rows [r*B, (r+1)*B) of the stream cut into B * world streams."""
    import numpy as np

    from data.datamodules.text import StreamChunks, batchify
    from data.prepared.text import MappedStreamChunks

    stream = np.array([2, 5, 6, 3, 2, 7, 3, 2, 8, 9, 9, 3] * 9, dtype=np.int32)
    inputs, targets = batchify(torch.from_numpy(stream.astype(np.int64)), 6)
    for rank in (0, 1):
        rows = slice(rank * 3, (rank + 1) * 3)
        mapped = MappedStreamChunks(stream, 6, range(rank * 3, (rank + 1) * 3), 5)
        assert same_batches(StreamChunks(inputs[rows], targets[rows], 5), mapped) == 4


def test_prepare_cli_prepares_language_model_text_from_its_config(tmp_path):
    from data.datamodules.text import TextDataModule

    data = write_text_dir(tmp_path / "text")
    config = tmp_path / "lm.yaml"
    config.write_text(
        f"data:\n  class_path: data.datamodules.text.TextDataModule\n  init_args:\n    data_dir: {data}\n"
        f"    max_vocab_size: 15\n    prepared_dir: {tmp_path / 'prep'}\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "data.prepared.prepare", "-c", str(config), "--no-progress"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    dm = TextDataModule(data_dir=str(data), max_vocab_size=15, prepared_dir=str(tmp_path / "prep"))
    dm.build()
    assert str(dm.prepared) == done.stdout.split()[0] and len(dm.vocab) == 15


def test_other_local_ranks_wait_for_rank_0_and_never_prepare(tmp_path, monkeypatch):
    import threading

    data = write_corpus(tmp_path / "corpus", n=100)
    root = tmp_path / "prep"
    calls = []
    real = prepared_module.prepare

    def counted(*args, **kw):
        calls.append(1)
        return real(*args, **kw)

    monkeypatch.setattr("data.datamodules.translation.prepare", counted)
    monkeypatch.setenv("LOCAL_RANK", "1")
    rank0 = ParallelTextDataModule(str(data), **OPTIONS)  # as local rank 0 would, a little later
    later = threading.Timer(1.0, lambda: real(rank0, root, workers=1, progress=False))
    later.start()
    dm = ParallelTextDataModule(str(data), **OPTIONS, prepared_dir=str(root))
    dm.build()
    later.join()
    assert calls == [] and len(dm.datasets["train"]) > 50


def test_an_empty_dev_split_and_slices_of_prepared_text_work_as_raw(tmp_path):
    data = write_corpus(tmp_path / "corpus", n=80)
    (data / "dev.en").write_text("\n\n")  # every pair has an empty side
    (data / "dev.de").write_text("x\n\n")
    raw = ParallelTextDataModule(str(data), **OPTIONS | {"val_size": None})
    ready = ParallelTextDataModule(
        str(data), **OPTIONS | {"val_size": None}, prepared_dir=str(tmp_path / "p")
    )
    raw.build()
    ready.build()
    assert len(ready.datasets["dev"]) == len(raw.datasets["dev"]) == 0
    test_raw, test_ready = raw.datasets["test"].text, ready.datasets["test"].text
    assert test_ready.src[:5] == test_raw.src[:5] and test_ready.tgt[2:4] == test_raw.tgt[2:4]


def test_a_short_image_list_is_named_on_the_prepared_path(tmp_path):
    root = write_set(tmp_path / "d", n=6)
    args = dict(data_dir=str(root), image_dir=str(root / "images"), word_tokenizer="space", image_size=32)
    MultimodalDataModule(**args, prepared_dir=str(tmp_path / "prep")).build()
    (root / "dev_images.txt").write_text("dev_0.png\n")
    with pytest.raises(DataError, match=r"dev_images.txt has 1 lines but .* at least 6 sentence pairs"):
        MultimodalDataModule(**args, prepared_dir=str(tmp_path / "prep")).build()
