"""`seqcap export CKPT --format onnx --out DIR` and the onnxruntime loop over what it writes
(seq2seq/translation/export.py, onnx_decode.py).

The trained translator (tests/conftest.py: `trained_run`) is exported once, by `seqcap export` in a
subprocess; on it the ONNX loop must give the PyTorch Translator's output token for token, greedy
and beam, over batches of sentences of different lengths. Other configurations (GRU, vanilla RNN,
fixed context, Luong, two layers, the cell path) are exported from untrained models with random
weights, written as checkpoints here. Refusals are one `error:` line and exit status 2.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from seq2seq.modules.rnn import RecurrentOptions
from seq2seq.training.checkpoint import constructor_args
from seq2seq.translation.export import FILES, export_onnx
from seq2seq.translation.network import Seq2Seq
from seq2seq.translation.onnx_decode import OnnxTranslator
from seq2seq.translation.predictor import Translator
from seqcap.cli import main as seqcap
from tests.conftest import REPO, TRAINED_MAX_LEN, explain, run_python

pytestmark = pytest.mark.usefixtures("one_thread_per_module")
LEGACY_DIR = REPO / "tests" / "fixtures" / "legacy"


def sources(trained_run) -> list[str]:
    """The test set's 50 sentences (3-8 words) and some harder ones: an unknown word, an empty
    line, one over the model's max_len (cut), one of a single word."""
    lines = (trained_run.data_dir / "test.src").read_text(encoding="utf-8").splitlines()
    long = " ".join(f"w{i % 10}" for i in range(TRAINED_MAX_LEN + 5))
    return lines + ["w1 zebra w3 w4", "", long, "w7", "w2 w2 w2 w2 w2 w2 w2 w2 w2 w2 w2 w2"]


@pytest.fixture(scope="module")
def exported(trained_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "onnx"
    ckpt = str(trained_run.last_ckpt)
    result = run_python(
        ["-m", "seqcap", "export", ckpt, "--format", "onnx", "--out", str(out)], cwd=out.parent
    )
    assert result.returncode == 0, explain(result)
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)
    assert [p.name for p in out.parent.iterdir()] == ["onnx"]  # no temporary folder left
    return out


@pytest.fixture(scope="module")
def translator(trained_run) -> Translator:
    return Translator.from_checkpoint(trained_run.last_ckpt, "cpu")


def same(expected, got, n_best: int = 1) -> None:
    assert len(expected) == len(got)
    for i, (a, b) in enumerate(zip(expected, got)):
        assert len(a) == len(b) == n_best, i
        for x, y in zip(a, b):
            assert (x.tokens, x.text) == (y.tokens, y.text), f"sentence {i}"
            assert x.score == pytest.approx(y.score, abs=1e-4), f"sentence {i}"


@pytest.mark.parametrize("method", ["greedy", "beam"])
def test_the_onnx_loop_gives_the_pytorch_output_token_for_token(exported, translator, trained_run, method):
    sentences = sources(trained_run)
    runtime = OnnxTranslator(exported, threads=1)
    for batch_size in (64, 7):  # one batch, and batches of several lengths each
        expected = translator.translate(sentences, 5, 0.6, batch_size=batch_size, method=method)
        same(expected, runtime.translate(sentences, 5, 0.6, batch_size=batch_size, method=method))
    assert sum(bool(o[0].tokens) for o in expected) == len(sentences) - 1  # only the empty line is empty


def test_n_best_and_beam_sizes_agree(exported, translator, trained_run):
    sentences = sources(trained_run)[:20]
    runtime = OnnxTranslator(exported, threads=1)
    same(translator.translate(sentences, 4, 1.0, n_best=3), runtime.translate(sentences, 4, 1.0, n_best=3), 3)
    same(translator.translate(sentences, 1, 0.0), runtime.translate(sentences, 1, 0.0))


def test_export_writes_the_vocabularies_and_tokenizers(exported, translator):
    config = json.loads((exported / "config.json").read_text(encoding="utf-8"))
    vocab = json.loads((exported / "vocab.json").read_text(encoding="utf-8"))
    assert vocab == {"src_vocab": translator.src_vocab.to_list(), "tgt_vocab": translator.tgt_vocab.to_list()}
    assert config["src_tokenizer"] == translator.src_tokenizer.state() == {
        "type": "word", "lowercase": False, "kind": "space",
    }  # fmt: skip
    assert config["max_len"] == TRAINED_MAX_LEN and config["attention"]
    assert config["decoder_step"]["static"] == ["memory", "keys", "mask"]


def test_the_onnx_decode_cli_translates_stdin_without_torch(exported, translator, trained_run, tmp_path):
    sentences = sources(trained_run)[:10] + [""]
    text = "".join(s + "\n" for s in sentences)
    module = "seq2seq.translation.onnx_decode"
    result = run_python(["-m", module, str(exported), "--beam-size", "5", "--alpha", "0.6"], tmp_path, text)
    assert result.returncode == 0, explain(result)
    assert result.stdout.splitlines() == [o[0].text for o in translator.translate(sentences, 5, 0.6)]
    greedy = run_python(["-m", module, str(exported), "--greedy"], tmp_path, text)
    assert greedy.stdout.splitlines() == [o[0].text for o in translator.translate(sentences, method="greedy")]
    script = (
        "import sys; from seq2seq.translation.onnx_decode import OnnxTranslator; "
        f"OnnxTranslator({str(exported)!r}).translate(['w1 w2 w3']); "
        "print(sorted(m for m in ('torch', 'pytorch_lightning', 'seq2seq.search') if m in sys.modules))"
    )
    result = run_python(["-c", script], tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == "[]", explain(result)
    bad = run_python(["-m", module, str(tmp_path)], tmp_path, "w1\n")
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "config.json" in bad.stderr, explain(
        bad
    )


# ---------------------------------------------------------------------------------------------
# other configurations, from random weights
# ---------------------------------------------------------------------------------------------


def write_checkpoint(base: Path, path: Path, seed: int = 0, **changes) -> Path:
    """The checkpoint `base` with other hyperparameters (those of `rnn` by field) and fresh random
    weights for them: a checkpoint as `seqcap fit` writes one, without the training."""
    ckpt = torch.load(base, map_location="cpu", weights_only=True)
    hp = dict(ckpt["hyper_parameters"])
    fields = {f.name for f in dataclasses.fields(RecurrentOptions)}
    hp["rnn"] = {**hp["rnn"], **{k: v for k, v in changes.items() if k in fields}}
    hp.update({k: v for k, v in changes.items() if k not in fields})
    torch.manual_seed(seed)
    model = Seq2Seq(**constructor_args(Seq2Seq, hp))
    ckpt["hyper_parameters"] = hp
    ckpt["state_dict"] = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save(ckpt, path)
    return path


VARIANTS = {
    "gru": {"cell": "gru"},
    "rnn-2-layers-luong-feeding": {"cell": "rnn", "num_layers": 2, "attention": "luong_general"},
    "lstm-fixed-context": {"context": "fixed"},
    "luong-dot-parallel": {"attention": "luong_dot", "input_feeding": False, "bidirectional": False},
    "cell-path-2-layers": {"impl": "cells", "num_layers": 2},
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_other_configurations_export_and_decode_alike(trained_run, tmp_path, variant):
    ckpt = write_checkpoint(
        trained_run.last_ckpt, tmp_path / "model.ckpt", hidden_size=32, **VARIANTS[variant]
    )
    export_onnx(ckpt, tmp_path / "onnx")
    translator, runtime = (
        Translator.from_checkpoint(ckpt, "cpu"),
        OnnxTranslator(tmp_path / "onnx", threads=1),
    )
    sentences = sources(trained_run)[:12]
    for method in ("greedy", "beam"):
        expected = translator.translate(sentences, 3, 0.6, batch_size=5, method=method)
        same(expected, runtime.translate(sentences, 3, 0.6, batch_size=5, method=method))


# ---------------------------------------------------------------------------------------------
# refusals
# ---------------------------------------------------------------------------------------------


def refused(capsys, *argv: str) -> str:
    """`seqcap export ARGV` in this process: exit status 2 and one `error:` line, returned."""
    assert seqcap(["export", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def test_an_existing_folder_is_refused_unless_it_is_an_export_and_overwrite_is_given(
    exported, trained_run, tmp_path, capsys
):
    ckpt = str(trained_run.last_ckpt)
    full = tmp_path / "full"
    full.mkdir()
    (full / "notes.txt").write_text("mine", encoding="utf-8")
    assert "not empty; pass --overwrite" in refused(capsys, ckpt, "--out", str(full))
    assert "notes.txt, which is not part of an export" in refused(
        capsys, ckpt, "--out", str(full), "--overwrite"
    )
    assert (full / "notes.txt").read_text(encoding="utf-8") == "mine"
    assert "not a folder" in refused(capsys, ckpt, "--out", str(full / "notes.txt"))
    assert "does not exist" in refused(capsys, ckpt, "--out", str(tmp_path / "no" / "such"))

    again = tmp_path / "again"
    again.mkdir()  # an empty folder is fine
    assert seqcap(["export", ckpt, "--out", str(again)]) == 0
    (again / "config.json").write_text("old", encoding="utf-8")
    assert "not empty" in refused(capsys, ckpt, "--out", str(again))
    assert seqcap(["export", ckpt, "--out", str(again), "--overwrite"]) == 0
    assert json.loads((again / "config.json").read_text(encoding="utf-8"))["format"] == "seqcap-onnx"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again", "full"]  # no temporary folder left


@pytest.mark.parametrize(
    "name, expected",
    [
        (
            "caption_attention.ckpt",
            "a captioning checkpoint; seqcap export takes translation checkpoints only",
        ),
        ("lm.ckpt", "a language model checkpoint; seqcap export takes translation checkpoints only"),
    ],
)
def test_checkpoints_of_other_tasks_are_refused(tmp_path, capsys, name, expected):
    err = refused(capsys, str(LEGACY_DIR / name), "--out", str(tmp_path / "onnx"))
    assert expected in err and not (tmp_path / "onnx").exists()


def test_what_cannot_be_exported_is_named(trained_run, tmp_path, capsys):
    peephole = write_checkpoint(trained_run.last_ckpt, tmp_path / "peephole.ckpt", peephole=True)
    assert "rnn.peephole=True" in refused(capsys, str(peephole), "--out", str(tmp_path / "a"))
    seeds_gru = write_checkpoint(
        trained_run.last_ckpt, tmp_path / "gru.ckpt", cell="gru", gru_reset_after=False
    )
    assert "rnn.gru_reset_after=False" in refused(capsys, str(seeds_gru), "--out", str(tmp_path / "b"))
    # a multimodal checkpoint is refused from its hyperparameters, before its CNN is built
    ckpt = torch.load(trained_run.last_ckpt, map_location="cpu", weights_only=True)
    ckpt["hyper_parameters"] = {**ckpt["hyper_parameters"], "fusion": "doubly"}
    torch.save(ckpt, tmp_path / "mmt.ckpt")
    assert "multimodal translator (fusion='doubly')" in refused(
        capsys, str(tmp_path / "mmt.ckpt"), "--out", str(tmp_path / "c")
    )
    assert "no such checkpoint" in refused(capsys, str(tmp_path / "none.ckpt"), "--out", str(tmp_path / "d"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gru.ckpt", "mmt.ckpt", "peephole.ckpt"]


def test_export_check_reports_identical_outputs(exported, trained_run, tmp_path):
    src = tmp_path / "src.txt"
    src.write_text("".join(s + "\n" for s in sources(trained_run)[:20]), encoding="utf-8")
    args = ["-m", "seqcap", "export", str(trained_run.last_ckpt), "--out", str(tmp_path / "onnx")]
    result = run_python([*args, "--check", str(src), "--limit", "12", "--beam-size", "3"], tmp_path)
    assert result.returncode == 0, explain(result)
    assert "greedy: 12/12 identical (100.00%), scores within" in result.stdout, explain(result)
    assert "beam 3 (alpha 0.6): 12/12 identical (100.00%), scores within" in result.stdout, explain(result)
