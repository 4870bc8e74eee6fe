"""Length buckets, padding, and ParallelTextDataModule on tiny files written into tmp_path."""

from __future__ import annotations

import io
import random
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from data.core.batching import BucketBatchSampler, collate_pairs
from data.core.parallel import DataError
from data.core.tokenizers import tokenizer_from_state
from data.core.vocab import BOS, EOS, PAD, UNK
from data.datamodules.translation import ParallelTextDataModule

# ---------------------------------------------------------------------------------------------
# BucketBatchSampler
# ---------------------------------------------------------------------------------------------


def random_lengths(n: int = 1000, low: int = 1, high: int = 60, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(low, high) for _ in range(n)]


def flat(batches: list[list[int]]) -> list[int]:
    return [i for batch in batches for i in batch]


def padding_ratio(batches: list[list[int]], lengths: list[int]) -> float:
    """Mean over batches of the padded share of the (batch x longest) block."""
    ratios = []
    for batch in batches:
        block = max(lengths[i] for i in batch) * len(batch)
        ratios.append(1 - sum(lengths[i] for i in batch) / block)
    return sum(ratios) / len(ratios)


@pytest.mark.parametrize("batch_by, batch_size", [("sentences", 16), ("tokens", 200)])
@pytest.mark.parametrize("shuffle", [True, False])
def test_every_index_exactly_once_per_epoch(batch_by, batch_size, shuffle):
    lengths = random_lengths()
    sampler = BucketBatchSampler(lengths, batch_size, batch_by, shuffle=shuffle, seed=3)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert sorted(flat(batches)) == list(range(len(lengths)))
        assert all(batches), "no empty batch"
        assert len(sampler) == len(batches)


def test_sentence_batches_hold_at_most_batch_size_sentences():
    lengths = random_lengths(1003)
    batches = list(BucketBatchSampler(lengths, 16, "sentences", seed=1))
    sizes = [len(b) for b in batches]
    assert max(sizes) == 16
    assert sum(sizes) == 1003
    # sorted chunks of 1,600 sentences: only the last batch of a chunk can be short
    assert sum(size < 16 for size in sizes) <= 1


def test_token_batches_fit_the_budget_padding_included():
    budget = 120
    lengths = random_lengths(800, 1, 60) + [150, 200, 121]  # three longer than the whole budget
    batches = list(BucketBatchSampler(lengths, budget, "tokens", seed=0))
    assert sorted(flat(batches)) == list(range(len(lengths)))
    for batch in batches:
        longest = max(lengths[i] for i in batch)
        if len(batch) == 1 and longest > budget:
            continue  # a single example longer than the budget gets a batch of its own
        assert longest * len(batch) <= budget, (batch, [lengths[i] for i in batch])
    alone = {i for batch in batches if len(batch) == 1 for i in batch}
    assert {800, 801, 802} <= alone
    # batches are filled, not one sentence each: the budget is used well on average
    used = [max(lengths[i] for i in b) * len(b) / budget for b in batches if len(b) > 1]
    assert sum(used) / len(used) > 0.7


def test_buckets_pad_far_less_than_random_batches():
    lengths = random_lengths(2000, 1, 60, seed=5)
    bucketed = list(BucketBatchSampler(lengths, 32, "sentences", seed=0))
    order = list(range(len(lengths)))
    random.Random(0).shuffle(order)
    shuffled = [order[i : i + 32] for i in range(0, len(order), 32)]
    bucket_pad, random_pad = padding_ratio(bucketed, lengths), padding_ratio(shuffled, lengths)
    assert random_pad > 0.35  # uniform lengths 1-60: about half of a random batch is padding
    assert bucket_pad < 0.1 * random_pad, (bucket_pad, random_pad)
    # within a batch the lengths are close: the spread is a couple of tokens at most
    spreads = [max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in bucketed]
    assert sorted(spreads)[len(spreads) // 2] <= 1


def test_order_is_deterministic_per_seed_and_epoch_and_changes_with_the_epoch():
    lengths = random_lengths(500)

    def batches(seed: int, epoch: int) -> list[list[int]]:
        sampler = BucketBatchSampler(lengths, 16, "sentences", seed=seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert batches(7, 0) == batches(7, 0)
    assert batches(7, 4) == batches(7, 4)
    assert batches(7, 1) != batches(7, 0)  # set_epoch reshuffles
    assert sorted(map(sorted, batches(7, 1))) != sorted(map(sorted, batches(7, 0)))  # new batches too
    assert batches(8, 0) != batches(7, 0)
    # without shuffling the order is fixed: sorted by length, whatever the epoch
    fixed = BucketBatchSampler(lengths, 16, "sentences", shuffle=False)
    first = list(fixed)
    fixed.set_epoch(5)
    assert list(fixed) == first
    assert [lengths[i] for i in flat(first)] == sorted(lengths)


@pytest.mark.parametrize("batch_by, batch_size", [("sentences", 16), ("tokens", 150)])
def test_two_ranks_get_disjoint_batches_of_equal_count_when_even(batch_by, batch_size):
    lengths = random_lengths(999)
    whole = list(BucketBatchSampler(lengths, batch_size, batch_by, seed=2))
    ranks = [BucketBatchSampler(lengths, batch_size, batch_by, seed=2, rank=r, world_size=2) for r in (0, 1)]
    for sampler in ranks:
        sampler.set_epoch(1)
    r0, r1 = list(ranks[0]), list(ranks[1])
    assert len(r0) == len(r1) == len(ranks[0]) == len(ranks[1]) == len(whole) // 2
    assert not set(flat(r0)) & set(flat(r1))
    # what neither rank sees is at most the one batch that would make the counts uneven
    missing = set(range(len(lengths))) - set(flat(r0)) - set(flat(r1))
    if len(whole) % 2:
        assert len(missing) <= max(len(b) for b in whole)
    else:
        assert not missing


def test_two_ranks_cover_everything_when_not_even():
    lengths = random_lengths(999)
    n_batches = len(list(BucketBatchSampler(lengths, 16, "sentences", shuffle=False)))
    assert n_batches % 2 == 1  # 63 batches: the ranks get 32 and 31
    ranks = [
        BucketBatchSampler(lengths, 16, "sentences", shuffle=False, rank=r, world_size=2, even=False)
        for r in (0, 1)
    ]
    r0, r1 = list(ranks[0]), list(ranks[1])
    assert (len(r0), len(r1)) == (len(ranks[0]), len(ranks[1])) == (32, 31)
    assert not set(flat(r0)) & set(flat(r1))
    assert sorted(flat(r0) + flat(r1)) == list(range(len(lengths)))


def test_sampler_rejects_bad_arguments():
    with pytest.raises(ValueError, match="batch_size"):
        BucketBatchSampler([3, 4], 0)
    with pytest.raises(ValueError, match="batch_by"):
        BucketBatchSampler([3, 4], 8, "words")


# ---------------------------------------------------------------------------------------------
# collate_pairs
# ---------------------------------------------------------------------------------------------


def test_collate_pairs_builds_teacher_forcing_tensors():
    items = [
        {"index": 4, "src": [5, 6, 7], "tgt": [8, 9], "src_text": "a b c", "tgt_text": "x y"},
        {"index": 9, "src": [5], "tgt": [8, 9, 10, 11], "src_text": "a", "tgt_text": "x y z w"},
    ]
    batch = collate_pairs(items)
    assert batch["src"].tolist() == [[5, 6, 7], [5, PAD, PAD]]
    assert batch["src_lengths"].tolist() == [3, 1]
    assert batch["tgt_in"].tolist() == [[BOS, 8, 9, PAD, PAD], [BOS, 8, 9, 10, 11]]
    assert batch["tgt_out"].tolist() == [[8, 9, EOS, PAD, PAD], [8, 9, 10, 11, EOS]]
    assert batch["tgt_in"][:, 0].eq(BOS).all()
    for b, it in enumerate(items):
        n = len(it["tgt"]) + 1
        assert batch["tgt_out"][b, n - 1] == EOS  # the last real position is <eos>
        assert batch["tgt_out"][b, n:].eq(PAD).all() and batch["tgt_in"][b, n:].eq(PAD).all()
    assert batch["src"].dtype == batch["tgt_in"].dtype == torch.long
    assert batch["index"] == [4, 9]
    assert batch["src_text"] == ["a b c", "a"] and batch["tgt_text"] == ["x y", "x y z w"]


# ---------------------------------------------------------------------------------------------
# ParallelTextDataModule
# ---------------------------------------------------------------------------------------------


def write_split(d: Path, split: str, src: list[str], tgt: list[str], ext=("en", "de")) -> None:
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{split}.{ext[0]}").write_text("".join(s + "\n" for s in src), encoding="utf-8")
    (d / f"{split}.{ext[1]}").write_text("".join(t + "\n" for t in tgt), encoding="utf-8")


TRAIN_EN = ["the cat sleeps", "the dog runs", "a cat runs", "the bird sings"]
TRAIN_DE = ["die Katze schläft", "der Hund läuft", "eine Katze läuft", "der Vogel singt"]


def datamodule(d: Path, **kwargs) -> ParallelTextDataModule:
    kwargs.setdefault("word_tokenizer", "space")
    return ParallelTextDataModule(str(d), "en", "de", **kwargs)


def test_vocabulary_comes_from_train_only(tmp_path):
    write_split(tmp_path, "train", TRAIN_EN, TRAIN_DE)
    write_split(tmp_path, "dev", ["the zebra runs"], ["das Zebra läuft"])
    dm = datamodule(tmp_path)
    dm.setup("fit")
    assert "zebra" not in dm.src_vocab and "Zebra" not in dm.tgt_vocab
    assert dm.src_vocab_size == 4 + len({w for s in TRAIN_EN for w in s.split()})
    dev = dm.datasets["dev"]
    assert dev.src_ids[0] == [dm.src_vocab.stoi["the"], UNK, dm.src_vocab.stoi["runs"]]
    assert dev.tgt_ids[0][1] == UNK
    assert dev.text.src[0] == "the zebra runs"  # raw text kept for BLEU


def test_max_len_drops_long_training_pairs_and_reports_the_count(tmp_path, messages):
    long_en, long_de = " ".join(["cat"] * 7), " ".join(["Katze"] * 3)
    write_split(tmp_path, "train", TRAIN_EN + [long_en, "a b", long_de], TRAIN_DE + ["x", long_de, long_en])
    write_split(tmp_path, "dev", [long_en], [long_de])
    dm = datamodule(tmp_path, max_len=5)
    dm.setup("fit")
    assert len(dm.datasets["train"]) == len(TRAIN_EN) + 1  # 2 dropped: 7 tokens on one side
    assert "a b" in dm.datasets["train"].text.src
    assert long_en not in dm.datasets["train"].text.src
    assert any("2 longer than max_len=5 dropped" in m for m in messages), messages
    assert len(dm.datasets["dev"]) == 1  # dev and test are never filtered


def test_val_size_validates_on_a_fixed_random_subset_of_every_length(tmp_path, messages):
    """Dev sorted by length (shortest first, as the first batches of a length-bucketed dev are):
    the subset is drawn from all of it, the same for the same seed, and the loader serves it."""
    dev = [" ".join(["cat"] * n) for n in range(1, 41)]
    write_split(tmp_path, "train", TRAIN_EN, TRAIN_DE)
    write_split(tmp_path, "dev", dev, dev)
    dm = datamodule(tmp_path, val_size=10, seed=3, eval_batch_size=4)
    dm.setup("fit")
    chosen = dm.datasets["dev"].text.src
    assert len(chosen) == 10 and len(set(chosen)) == 10 and set(chosen) <= set(dev)
    assert chosen == sorted(chosen, key=dev.index)  # file order kept
    lengths = [len(s.split()) for s in chosen]
    assert max(lengths) > 20 and min(lengths) <= 20  # not just the shortest sentences
    again = datamodule(tmp_path, val_size=10, seed=3)
    again.setup("fit")
    assert again.datasets["dev"].text.src == chosen
    other = datamodule(tmp_path, val_size=10, seed=4)
    other.setup("fit")
    assert other.datasets["dev"].text.src != chosen
    served = [t for batch in dm.val_dataloader() for t in batch["src_text"]]
    assert sorted(served) == sorted(chosen)
    assert any("40 dev pairs; validating on 10 of them" in m for m in messages), messages
    everything = datamodule(tmp_path, val_size=100)
    everything.setup("fit")
    assert len(everything.datasets["dev"]) == 40  # more than dev has: all of it
    with pytest.raises(ValueError, match="val_size"):
        datamodule(tmp_path, val_size=0)


def test_all_pairs_too_long_is_a_data_error(tmp_path):
    write_split(tmp_path, "train", ["a b c d"], ["e f g h"])
    with pytest.raises(DataError, match=r"train\.en.*max_len=2"):
        datamodule(tmp_path, max_len=2).build()


def test_empty_training_file_names_the_file(tmp_path):
    write_split(tmp_path, "train", [], [])
    write_split(tmp_path, "dev", ["a"], ["b"])
    with pytest.raises(DataError, match="empty") as err:
        datamodule(tmp_path).setup("fit")
    assert str(tmp_path / "train.en") in str(err.value)


def test_missing_data_dir_and_missing_train_split(tmp_path):
    with pytest.raises(DataError, match="no such data directory"):
        datamodule(tmp_path / "nowhere").setup("fit")
    write_split(tmp_path, "dev", ["a"], ["b"])
    with pytest.raises(DataError, match=r"train\.en.*train\.de.*train\.tsv"):
        datamodule(tmp_path).setup("fit")


def test_one_side_missing_names_the_missing_file(tmp_path):
    write_split(tmp_path, "train", TRAIN_EN, TRAIN_DE)
    (tmp_path / "train.de").unlink()
    with pytest.raises(DataError, match="no such file") as err:
        datamodule(tmp_path).setup("fit")
    assert str(tmp_path / "train.de") in str(err.value)


def test_line_counts_that_differ_name_both_files_and_counts(tmp_path):
    write_split(tmp_path, "train", TRAIN_EN, TRAIN_DE[:3])
    with pytest.raises(DataError) as err:
        datamodule(tmp_path).setup("fit")
    message = str(err.value)
    assert f"{tmp_path / 'train.en'} has 4 lines" in message
    assert f"{tmp_path / 'train.de'} has 3" in message


def test_non_utf8_bytes_name_the_file_and_line(tmp_path):
    write_split(tmp_path, "train", TRAIN_EN, TRAIN_DE)
    lines = [s.encode("utf-8") for s in TRAIN_DE]
    lines[2] = "eine Katze läuft".encode("latin-1")  # ä as one byte 0xE4: not UTF-8
    (tmp_path / "train.de").write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(DataError) as err:
        datamodule(tmp_path).setup("fit")
    message = str(err.value)
    assert f"{tmp_path / 'train.de'}, line 3" in message
    assert "UTF-8" in message


def test_empty_lines_are_skipped_and_counted(tmp_path, messages):
    write_split(tmp_path, "train", TRAIN_EN + ["", "a lonely source", "   "], TRAIN_DE + ["", "", "nur Ziel"])
    write_split(tmp_path, "dev", ["the cat", ""], ["die Katze", "leer"])
    dm = datamodule(tmp_path)
    dm.setup("fit")
    train = dm.datasets["train"]
    assert len(train) == 4 and train.text.skipped_empty == 3
    assert train.text.src == TRAIN_EN
    assert any("3 with an empty side skipped" in m for m in messages), messages
    assert len(dm.datasets["dev"]) == 1 and dm.datasets["dev"].text.skipped_empty == 1


def test_tsv_input(tmp_path):
    rows = [f"{s}\t{t}" for s, t in zip(TRAIN_EN, TRAIN_DE)]
    (tmp_path / "train.tsv").write_text("\n".join(rows[:2] + [""] + rows[2:]) + "\n", encoding="utf-8")
    (tmp_path / "dev.tsv").write_text("the cat\tdie Katze\n", encoding="utf-8")
    dm = datamodule(tmp_path)
    dm.setup("fit")
    assert dm.datasets["train"].text.src == TRAIN_EN
    assert dm.datasets["train"].text.tgt == TRAIN_DE
    assert dm.datasets["train"].text.skipped_empty == 1
    assert "Katze" in dm.tgt_vocab and "cat" in dm.src_vocab and "Katze" not in dm.src_vocab
    assert dm.datasets["dev"].tgt_ids == [[dm.tgt_vocab.stoi["die"], dm.tgt_vocab.stoi["Katze"]]]
    (tmp_path / "dev.tsv").write_text("the cat\tdie Katze\nno tab here\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"dev\.tsv, line 2: expected 'source<TAB>target'"):
        datamodule(tmp_path).setup("fit")


def test_missing_dev_split_is_a_clear_error_at_fit(tmp_path):
    write_split(tmp_path, "train", TRAIN_EN, TRAIN_DE)
    dm = datamodule(tmp_path)
    with pytest.raises(DataError, match="no dev split for validation") as err:
        dm.setup("fit")
    assert str(tmp_path) in str(err.value)
    with pytest.raises(DataError, match="no test split"):
        dm.setup("test")
    dm.setup("predict")  # nothing to validate: no error


def test_vocab_state_survives_a_weights_only_checkpoint(tmp_path):
    write_split(tmp_path / "d", "train", TRAIN_EN, TRAIN_DE)
    dm = datamodule(tmp_path / "d", word_tokenizer="toktok", lowercase=True)
    state = dm.vocab_state()
    buffer = io.BytesIO()
    torch.save({"seqcap": state}, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)["seqcap"]
    assert loaded == state
    assert loaded["src_vocab"] == dm.src_vocab.to_list() and loaded["tgt_vocab"] == dm.tgt_vocab.to_list()
    assert (loaded["max_len"], loaded["src_lang"], loaded["tgt_lang"]) == (100, "en", "de")
    tok = tokenizer_from_state(loaded["src_tokenizer"])
    assert tok.tokenize("The Cat, sleeps!") == dm.src_tokenizer.tokenize("The Cat, sleeps!")
    assert tok.tokenize("The Cat, sleeps!") == ["the", "cat", ",", "sleeps", "!"]


SP_NOUNS = [("file", "Datei"), ("window", "Fenster"), ("folder", "Ordner"), ("printer", "Drucker"),
            ("disk", "Festplatte"), ("network", "Netzwerk")]  # fmt: skip
SP_ADJS = [("open", "offen"), ("closed", "geschlossen"), ("empty", "leer"), ("full", "voll"),
           ("ready", "bereit"), ("missing", "verschwunden")]  # fmt: skip


def test_sentencepiece_mode_on_a_small_corpus(tmp_path):
    pairs = [(f"The {n} is {a}.", f"Die {g} ist {b}.") for n, g in SP_NOUNS for a, b in SP_ADJS]
    write_split(tmp_path, "train", [p[0] for p in pairs], [p[1] for p in pairs])
    write_split(tmp_path, "dev", ["The file is full."], ["Die Datei ist voll."])
    dm = ParallelTextDataModule(str(tmp_path), "en", "de", tokenizer="sentencepiece", sp_vocab_size=40)
    dm.setup("fit")
    pieces = dm.src_tokenizer.tokenize("The printer is ready.")
    assert pieces[0] == "▁The" and len(pieces) > 5  # subwords, not words
    assert "".join(pieces).replace("▁", " ").strip() == "The printer is ready."
    for s, t in pairs:
        assert dm.src_tokenizer.detokenize(dm.src_tokenizer.tokenize(s)) == s
        assert dm.tgt_tokenizer.detokenize(dm.tgt_tokenizer.tokenize(t)) == t
    assert 4 < dm.src_vocab_size <= 4 + 40 and 4 < dm.tgt_vocab_size <= 4 + 40
    assert UNK not in flat(dm.datasets["train"].src_ids) and UNK not in flat(dm.datasets["dev"].tgt_ids)
    state = dm.vocab_state()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    assert loaded["src_tokenizer"]["type"] == "sentencepiece"
    rebuilt = tokenizer_from_state(loaded["tgt_tokenizer"])
    assert rebuilt.tokenize("Die Datei ist leer.") == dm.tgt_tokenizer.tokenize("Die Datei ist leer.")
    batch = next(iter(dm.train_dataloader()))
    assert batch["tgt_in"][:, 0].eq(BOS).all() and batch["src"].shape[0] == 36


def test_sentencepiece_vocab_size_too_high_is_reported(tmp_path):
    write_split(tmp_path, "train", TRAIN_EN, TRAIN_DE)
    with pytest.raises(ValueError, match="vocab_size=5000 is too high"):
        ParallelTextDataModule(str(tmp_path), tokenizer="sentencepiece", sp_vocab_size=5000).build()


def test_dataloaders_cover_every_pair_in_padded_batches(tmp_path):
    rng = random.Random(0)
    words = [f"w{i}" for i in range(10)]
    src = [" ".join(rng.choices(words, k=rng.randint(1, 12))) for _ in range(200)]
    write_split(tmp_path, "train", src, [" ".join(s.split()[::-1]) for s in src])
    write_split(tmp_path, "dev", src[:30], src[:30])
    dm = datamodule(tmp_path, batch_size=48, batch_by="tokens", eval_batch_size=8)
    dm.setup("fit")
    seen = []
    for batch in dm.train_dataloader():
        seen += batch["index"]
        B, T = batch["tgt_out"].shape
        assert B * T <= 48  # the token budget counts <eos> and padding
        assert batch["tgt_in"][:, 0].eq(BOS).all()
        assert batch["src_lengths"].tolist() == [len(dm.datasets["train"].src_ids[i]) for i in batch["index"]]
    assert sorted(seen) == list(range(200))
    dev = list(dm.val_dataloader())
    assert sorted(i for b in dev for i in b["index"]) == list(range(30))
    assert max(len(b["index"]) for b in dev) == 8


class _RecordBatches(pl.LightningModule):
    """Does nothing but remember which pairs each training step saw."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: dict[int, list[list[int]]] = {}

    def training_step(self, batch, batch_idx):
        self.seen.setdefault(self.current_epoch, []).append(list(batch["index"]))
        return self.weight.sum() * batch["src"].float().mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def test_lightning_reshuffles_batches_every_epoch(tmp_path):
    """Lightning calls set_epoch only on dataloader.sampler and dataloader.batch_sampler.sampler,
    never on the batch sampler itself: the bucket sampler must still get each epoch's number
    (this failed before data/core/batching.py forwarded it through a `.sampler` attribute)."""
    rng = random.Random(1)
    src = [" ".join(f"w{rng.randrange(10)}" for _ in range(rng.randint(1, 9))) for _ in range(256)]
    write_split(tmp_path, "train", src, src)
    write_split(tmp_path, "dev", src[:4], src[:4])
    module = _RecordBatches()
    trainer = pl.Trainer(
        max_epochs=2, limit_val_batches=0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", devices=1,
        default_root_dir=tmp_path / "runs",
    )  # fmt: skip
    trainer.fit(module, datamodule=datamodule(tmp_path, batch_size=16))
    assert sorted(flat(module.seen[0])) == sorted(flat(module.seen[1])) == list(range(256))
    assert module.seen[1] != module.seen[0]
