"""Language model: stream layout, truncated BPTT (state carried, gradients stopped), sampling,
a short Lightning fit on a repetitive corpus, the generate CLI. Tiny models, fixed seeds."""

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from data.core.corpus_io import split_of
from data.core.parallel import DataError
from data.core.tokenizers import CharTokenizer, tokenizer_from_state
from data.core.vocab import BOS, EOS, PAD, SPECIALS
from data.datamodules.text import TextDataModule, batchify, collate_units
from seq2seq import search
from seq2seq.lm.module import LanguageModule
from seq2seq.lm.predictor import LanguageModelPredictor
from seq2seq.modules.rnn import RecurrentOptions

ROOT = Path(__file__).resolve().parents[2]
WORDS = "the a cat dog sat ran on under mat rug and then".split()


pytestmark = pytest.mark.usefixtures("one_thread_per_module")  # conftest: torch on one thread


def write_corpus(folder: Path, splits: dict[str, list[str]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, lines in splits.items():
        (folder / f"{name}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def random_lines(n: int, seed: int) -> list[str]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, 9, (n,), generator=g).tolist()
    picks = [torch.randint(0, len(WORDS), (k,), generator=g).tolist() for k in lengths]
    return [" ".join(WORDS[i] for i in p) for p in picks]


def quiet_trainer(**kwargs) -> pl.Trainer:
    defaults = dict(
        accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )  # fmt: skip
    return pl.Trainer(**{**defaults, **kwargs})


def full_pass_loss(module: LanguageModule, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[float, int]:
    """Sum of token losses of one pass over each whole stream row, and the number of tokens."""
    with torch.no_grad():
        logits, _ = module.model(inputs)
    logits, targets = logits.flatten(0, 1).double(), targets.flatten()
    loss = F.cross_entropy(logits, targets, ignore_index=PAD, reduction="sum")
    return float(loss), int((targets != PAD).sum())


# ---------------------------------------------------------------------------------------------
# Data: stream layout, units, splits
# ---------------------------------------------------------------------------------------------


def test_stream_batching_layout_exact(tmp_path):
    """Units <bos> w <eos> end to end, cut into B=2 rows; batch i = columns [2i, 2i+2), in order."""
    folder = write_corpus(tmp_path / "tiny", {"train": ["a b", "c d e", "f"], "valid": ["a b"]})
    dm = TextDataModule(data_dir=str(folder), word_tokenizer="space", batch_size=2, tbptt_steps=2)
    assert dm.vocab_size == 10  # 4 specials + a..f (ids 4..9: equal counts, alphabetical)
    # stream: 2 4 5 3 | 2 6 7 8 3 | 2 9 3  (L = 12, N = 11 // 2 = 5)
    inputs, targets = dm.stream("train")
    assert inputs.tolist() == [[2, 4, 5, 3, 2], [6, 7, 8, 3, 2]]
    assert targets.tolist() == [[4, 5, 3, 0, 6], [7, 8, 3, 0, 9]]  # target <bos> -> <pad>
    dm.setup("fit")
    for _ in range(2):  # every epoch: the same chunks, in order
        batches = list(dm.train_dataloader())
        assert [b["chunk"] for b in batches] == [0, 1, 2]
        assert [b["input"].tolist() for b in batches] == [[[2, 4], [6, 7]], [[5, 3], [8, 3]], [[2], [2]]]
        assert [b["target"].tolist() for b in batches] == [[[4, 5], [7, 8]], [[3, 0], [3, 0]], [[6], [9]]]


def test_batchify_every_token_after_the_first_is_a_target_once():
    stream = torch.tensor([BOS, 4, 5, 6, EOS, BOS, 7, EOS, BOS, 8, 9, EOS, BOS, 4])
    inputs, targets = batchify(stream, 3)  # N = 13 // 3 = 4
    assert inputs.tolist() == [[2, 4, 5, 6], [3, 2, 7, 3], [2, 8, 9, 3]]
    assert targets.tolist() == [[4, 5, 6, 3], [0, 7, 3, 0], [8, 9, 3, 0]]
    with pytest.raises(ValueError):
        batchify(stream[:3], 3)


def test_full_bptt_batches_are_padded_units():
    batch = collate_units([[4, 5, 6], [7]])
    assert batch["input"].tolist() == [[BOS, 4, 5, 6], [BOS, 7, PAD, PAD]]
    assert batch["target"].tolist() == [[4, 5, 6, EOS], [7, EOS, PAD, PAD]]
    assert batch["lengths"].tolist() == [4, 2]


def test_files_paragraphs_hash_split_and_symlinks_read_once(tmp_path):
    # distinct paragraphs over a few words (each in train, so nothing decodes to <unk>)
    paragraphs = [f"w{i % 5} x{i % 7}\n  y{i % 8} and more" for i in range(40)]
    folder = tmp_path / "licences"
    folder.mkdir()
    (folder / "A").write_text("\n\n".join(paragraphs[:25]) + "\n", encoding="utf-8")
    (folder / "B").write_text("\n\n\n".join(paragraphs[25:]) + "\n", encoding="utf-8")
    (folder / "C").symlink_to(folder / "A")
    dm = TextDataModule(
        files=[str(folder)], val_fraction=0.2, test_fraction=0.2, unit="paragraph", word_tokenizer="space"
    )
    dm.build()
    decoded = {s: [" ".join(dm.vocab.decode(u)) for u in units] for s, units in dm.units.items()}
    assert sum(len(v) for v in decoded.values()) == 40  # C (a symlink to A) is not read twice
    for i, text in enumerate(" ".join(p.split()) for p in paragraphs):
        rule = {"dev": "valid"}.get(split_of(text, 0.2, 0.2), split_of(text, 0.2, 0.2))
        assert text in decoded[rule], (i, rule)
    assert all(decoded[s] for s in ("train", "valid", "test"))


def test_char_tokenizer_and_bad_sources(tmp_path):
    tok = CharTokenizer()
    assert tok.tokenize("ab  c\n") == ["a", "b", " ", "c"]
    assert tok.detokenize(tok.tokenize("Hello, world!")) == "Hello, world!"
    assert tokenizer_from_state(tok.state()) == tok
    with pytest.raises(DataError, match="exactly one"):
        TextDataModule(data_dir=str(tmp_path), files=[str(tmp_path)]).build()
    with pytest.raises(DataError, match="no such file or folder"):
        TextDataModule(files=[str(tmp_path / "missing")]).build()


# ---------------------------------------------------------------------------------------------
# Truncated BPTT: the state carries over, gradients stop at chunk boundaries
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def random_corpus(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("random")
    splits = {"train": random_lines(60, 0), "valid": random_lines(20, 1), "test": random_lines(20, 2)}
    return write_corpus(folder, splits)


@pytest.mark.parametrize("cell,impl", [("lstm", "fused"), ("gru", "cells"), ("rnn", "fused")])
def test_chunks_in_eval_equal_one_pass_over_the_stream(random_corpus, cell, impl):
    torch.manual_seed(0)
    dm = TextDataModule(data_dir=str(random_corpus), word_tokenizer="space", batch_size=3, tbptt_steps=7)
    dm.setup("fit")
    module = (
        LanguageModule(
            dm.vocab_size,
            rnn=RecurrentOptions(
                num_layers=2, dropout=0.3, cell=cell, embed_dim=8, hidden_size=12, impl=impl
            ),
        )
        .double()
        .eval()
    )
    inputs, targets = dm.stream("valid")
    assert inputs.shape[1] > 3 * 7  # several chunks
    expected, tokens = full_pass_loss(module, inputs, targets)
    for _ in range(2):  # chunk 0 resets the state: the second pass gives the same sum
        total, count = 0.0, 0
        with torch.no_grad():
            for batch in dm.val_dataloader():
                loss_sum, n = module.chunk_loss(batch, "val")
                total, count = total + float(loss_sum), count + int(n)
        assert count == tokens
        assert total == pytest.approx(expected, abs=1e-5)
    # without carrying the state the loss differs: the test above can fail
    fresh = 0.0
    with torch.no_grad():
        for batch in dm.val_dataloader():
            module.reset_state("val")
            fresh += float(module.chunk_loss(batch, "val")[0])
    assert abs(fresh - expected) > 1e-3


def test_lightning_validate_perplexity_is_one_pass_over_the_split(random_corpus):
    torch.manual_seed(0)
    dm = TextDataModule(data_dir=str(random_corpus), word_tokenizer="space", batch_size=2, tbptt_steps=5)
    dm.setup("fit")
    module = LanguageModule(
        dm.vocab_size,
        rnn=RecurrentOptions(num_layers=1, dropout=0.0, cell="lstm", embed_dim=8, hidden_size=12),
    )
    expected, tokens = full_pass_loss(module, *dm.stream("valid"))
    [metrics] = quiet_trainer().validate(module, datamodule=dm, verbose=False)
    assert metrics["val_ppl"] == pytest.approx(math.exp(expected / tokens), rel=1e-5)
    assert metrics["val_loss"] == pytest.approx(expected / tokens, rel=1e-5)


def test_gradients_stop_at_chunk_boundaries(random_corpus):
    torch.manual_seed(0)
    dm = TextDataModule(data_dir=str(random_corpus), word_tokenizer="space", batch_size=2, tbptt_steps=4)
    dm.setup("fit")
    module = LanguageModule(
        dm.vocab_size,
        rnn=RecurrentOptions(num_layers=2, dropout=0.0, cell="lstm", embed_dim=8, hidden_size=12),
    ).train()
    chunk0, chunk1 = list(dm.train_dataloader())[:2]
    embedded = []

    def keep(_module, _inputs, output):
        output.retain_grad()
        embedded.append(output)

    handle = module.model.embedding.register_forward_hook(keep)
    module.chunk_loss(chunk0, "train")
    h, c = module._states["train"]
    assert h.grad_fn is None and c.grad_fn is None and not h.requires_grad  # carried, detached
    assert h.abs().sum() > 0  # ... and not reset: the state after chunk 0
    loss1, _ = module.chunk_loss(chunk1, "train")
    loss1.backward()
    assert embedded[0].grad is None  # chunk 0's embeddings get nothing from chunk 1's loss
    assert embedded[1].grad.abs().sum() > 0

    # the same two chunks with the state not detached: the gradient does reach chunk 0
    embedded.clear()
    _, state = module.model(chunk0["input"])
    logits, _ = module.model(chunk1["input"], state)
    F.cross_entropy(logits.flatten(0, 1), chunk1["target"].flatten(), ignore_index=PAD).backward()
    assert embedded[0].grad.abs().sum() > 0
    handle.remove()


def test_full_bptt_padded_batches_score_each_unit_alone(random_corpus):
    torch.manual_seed(0)
    dm = TextDataModule(data_dir=str(random_corpus), word_tokenizer="space", batch_size=4, tbptt_steps=None)
    dm.setup("fit")
    module = (
        LanguageModule(
            dm.vocab_size,
            rnn=RecurrentOptions(num_layers=2, dropout=0.0, cell="gru", embed_dim=8, hidden_size=12),
        )
        .double()
        .eval()
    )
    words = list(range(len(SPECIALS), dm.vocab_size))
    built = collate_units([words[:2], words[:8]])  # lengths 3 and 9: six steps of padding
    for batch in (next(iter(dm.val_dataloader())), built):
        assert batch["lengths"].min() < batch["lengths"].max(), batch["lengths"]  # the batch is padded
        with torch.no_grad():
            loss_sum, tokens = module.chunk_loss(batch, "val")
            alone = sum(
                float(module.chunk_loss(collate_units([u]), "val")[0])
                for u in (row[1:n].tolist() for row, n in zip(batch["input"], batch["lengths"]))
            )
        assert "val" not in module._states  # nothing carries between padded batches
        assert int(tokens) == int(batch["lengths"].sum())
        assert float(loss_sum) == pytest.approx(alone, abs=1e-8)


# ---------------------------------------------------------------------------------------------
# Sampling (Algorithm 8-1)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def untrained(random_corpus) -> LanguageModule:
    torch.manual_seed(0)
    dm = TextDataModule(data_dir=str(random_corpus), word_tokenizer="space", batch_size=2)
    module = LanguageModule(
        dm.vocab_size,
        rnn=RecurrentOptions(num_layers=2, dropout=0.3, cell="lstm", embed_dim=8, hidden_size=16),
    ).eval()
    module.set_vocab_state(dm.vocab_state())
    return module


def test_temperature_zero_is_greedy(untrained):
    model = untrained.model
    # greedy by hand: the whole prefix through the model at each step, no state carried
    prefix = [BOS]
    with torch.no_grad():
        for _ in range(15):
            logits, _ = model(torch.tensor([prefix]))
            logits = logits[0, -1].clone()
            logits[[PAD, BOS]] = float("-inf")
            prefix.append(int(logits.argmax()))
            if prefix[-1] == EOS:
                break
    words = untrained.vocab.decode(prefix[1:])
    assert untrained.generate(3, max_len=15, temperature=0.0, seed=5) == [" ".join(words)] * 3

    step = lambda tokens, state: model.step(tokens, state)  # noqa: E731
    with torch.no_grad():
        a = search.sample(step, model.zero_state(4), 4, BOS, EOS, 15, temperature=0.0)
        b = search.greedy(step, model.zero_state(4), 4, BOS, EOS, 15)
    expected = [t for t in prefix[1:] if t != EOS]
    assert [h.tokens for h in a] == [h.tokens for h in b] == [expected] * 4


def test_a_seed_fixes_sampling(untrained):
    first = untrained.generate(4, max_len=20, seed=1)
    assert untrained.generate(4, max_len=20, seed=1) == first
    assert untrained.generate(4, max_len=20, seed=2) != first
    assert len(set(first)) > 1  # the samples of one call differ from each other
    with_prompt = untrained.generate(2, prompt="the cat", max_len=5, seed=1)
    assert all(s.startswith("the cat") for s in with_prompt)


# ---------------------------------------------------------------------------------------------
# A short fit on a repetitive corpus, and the generate CLI on its checkpoint
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """'a b c d' repeated: 200 Lightning steps of truncated BPTT (about a second)."""
    folder = tmp_path_factory.mktemp("abcd")
    line = " ".join(["a b c d"] * 3)
    write_corpus(folder, {"train": [line] * 40, "valid": [line] * 8, "test": [line] * 8})
    pl.seed_everything(0, verbose=False)
    dm = TextDataModule(data_dir=str(folder), word_tokenizer="space", batch_size=4, tbptt_steps=10)
    module = LanguageModule(
        dm.vocab_size,
        rnn=RecurrentOptions(num_layers=1, dropout=0.0, cell="lstm", embed_dim=16, hidden_size=32),
        lr=0.01,
    )
    trainer = quiet_trainer(max_steps=200, gradient_clip_val=1.0, default_root_dir=str(folder))
    trainer.fit(module, datamodule=dm)
    [metrics] = trainer.test(module, datamodule=dm, verbose=False)
    ckpt = folder / "lm.ckpt"
    trainer.save_checkpoint(ckpt)
    return metrics, ckpt, dm


def test_perplexity_on_a_repetitive_corpus_falls_below_2(trained):
    metrics, _, _ = trained
    # after <bos>: a b c d a b c d a b c d <eos>; only "a or <eos> after d" is uncertain
    assert metrics["test_ppl"] < 2.0
    assert metrics["test_loss"] == pytest.approx(math.log(metrics["test_ppl"]), rel=1e-5)


def test_checkpoint_is_self_contained_and_weights_only(trained):
    _, ckpt, dm = trained
    raw = torch.load(ckpt, weights_only=True)
    assert raw["seqcap"]["vocab"] == dm.vocab.to_list()
    assert raw["seqcap"]["tokenizer"] == {"type": "word", "lowercase": False, "kind": "space"}
    runner = LanguageModelPredictor.from_checkpoint(ckpt, device="cpu")
    assert runner.generate(1, max_len=8, temperature=0.0) == ["a b c d a b c d"]
    assert runner.generate(1, prompt="c", max_len=3, temperature=0.0) == ["c d a b"]


def run_generate(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "seq2seq.lm.cli", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_generate_cli_samples_and_scores(trained):
    _, ckpt, _ = trained
    out = run_generate("--checkpoint", str(ckpt), "--num", "4", "--max-len", "12", "--seed", "3")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 4
    assert all(set(line.split()) <= {"a", "b", "c", "d"} and line for line in lines)

    out = run_generate("--checkpoint", str(ckpt), "--score", "a b c d a b c d a b c d", "--score", "d c b a")
    assert out.returncode == 0, out.stderr
    rows = [line.split("\t") for line in out.stdout.splitlines()]
    assert [r[2] for r in rows] == ["a b c d a b c d a b c d", "d c b a"]
    good, bad = float(rows[0][0]), float(rows[1][0])
    assert rows[0][1] == "13" and rows[1][1] == "5"
    assert bad < good < 0 and good > -2.0  # the corpus's line is likely, its reverse is not
    out = run_generate(
        "--checkpoint",
        str(ckpt),
        "--quantize",
        "int8",
        "--score",
        "a b c d a b c d a b c d",
        "--score",
        "d c b a",
    )
    assert out.returncode == 0, out.stderr
    int8 = [float(line.split("\t")[0]) for line in out.stdout.splitlines()]
    assert int8 == pytest.approx([good, bad], rel=0.05, abs=0.1)  # int8 products, the same scores nearly


def test_generate_cli_missing_checkpoint_exits_2(tmp_path):
    missing = tmp_path / "nope.ckpt"
    out = run_generate("--checkpoint", str(missing))
    assert out.returncode == 2
    assert str(missing) in out.stderr and "no such checkpoint" in out.stderr
    assert "Traceback" not in out.stderr
