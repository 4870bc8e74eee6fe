"""seq2seq.bench_anchor without JoeyNMT: the measurement, the choice of interpreter, the files both
read and the JoeyNMT config against configs/translation/gettext_attention.yaml (a change there that
the anchor does not follow fails here)."""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import pytest
import yaml

from data.core.vocab import SPECIALS
from seq2seq import bench_anchor
from seq2seq.bench_anchor import (
    CONFIG,
    joeynmt_config,
    joeynmt_python,
    pretokenize,
    run_measured,
    write_joeynmt_config,
)


def test_run_measured_reports_the_childs_peak_rss_wall_time_and_exit_status(tmp_path):
    child = "import sys; block = b'x' * 200 * 2**20; print('out'); print('err', file=sys.stderr); sys.exit(3)"
    log = tmp_path / "child.log"
    measured = run_measured([sys.executable, "-S", "-c", child], log_path=log)
    assert measured.returncode == 3
    assert 200 < measured.peak_rss_mb < 1024
    assert measured.seconds > 0
    assert log.read_text().split() == ["out", "err"]


def test_the_callers_memory_is_not_the_childs(tmp_path, capfd):
    """A child's ru_maxrss starts at the high-water mark of the process it was forked from."""
    ballast = b"x" * (300 * 2**20)  # this process: over 300 MB
    measured = run_measured([sys.executable, "-S", "-c", "print('nothing to see')"], cwd=tmp_path)
    assert len(ballast) and measured.returncode == 0
    assert measured.peak_rss_mb < 100
    assert capfd.readouterr().out == ""  # without a log the output goes nowhere


def test_a_command_that_cannot_start_is_an_error(tmp_path):
    with pytest.raises(RuntimeError, match="could not be run"):
        run_measured([str(tmp_path / "no-such-program")], log_path=tmp_path / "log")
    assert "no-such-program" in (tmp_path / "log").read_text()


def interpreter(path: Path, *, site: Path | None) -> str:
    """A stand-in for another interpreter: this one, isolated from every installed package
    (site None) or seeing only the packages under `site`."""
    flags = f'PYTHONPATH="{site}" exec "{sys.executable}" -S' if site else f'exec "{sys.executable}" -I -S'
    path.write_text(f'#!/bin/sh\n{flags} "$@"\n')
    path.chmod(0o755)
    return str(path)


@pytest.fixture
def without_joeynmt(tmp_path) -> str:
    return interpreter(tmp_path / "python-without", site=None)


@pytest.fixture
def with_joeynmt(tmp_path) -> str:
    dist = tmp_path / "site" / "joeynmt-2.3.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: joeynmt\nVersion: 2.3.0\n")
    return interpreter(tmp_path / "python-with", site=tmp_path / "site")


def test_joeynmt_python_takes_an_explicit_interpreter_that_has_joeynmt(with_joeynmt):
    assert bench_anchor.joeynmt_version(with_joeynmt) == "2.3.0"
    assert joeynmt_python(with_joeynmt) == with_joeynmt


def test_joeynmt_python_refuses_an_explicit_interpreter_without_joeynmt(without_joeynmt, tmp_path):
    with pytest.raises(ValueError, match="has no joeynmt"):
        joeynmt_python(without_joeynmt)
    with pytest.raises(ValueError, match="has no joeynmt"):
        joeynmt_python(str(tmp_path / "no-such-python"))


def test_joeynmt_python_is_this_interpreter_when_it_has_joeynmt_else_none(
    monkeypatch, with_joeynmt, without_joeynmt
):
    monkeypatch.setattr(sys, "executable", without_joeynmt)
    assert joeynmt_python(None) is None
    monkeypatch.setattr(sys, "executable", with_joeynmt)
    assert joeynmt_python(None) == with_joeynmt


def test_pretokenize_writes_the_pairs_seqcap_keeps_as_space_separated_tokens(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "data"
    raw.mkdir()
    (raw / "train.en").write_text("File %s not found.\n\nOne two three four five six\nDon't stop!\n")
    (raw / "train.de").write_text("Datei %s nicht gefunden.\nleer\nEins zwei\nHör nicht auf!\n")
    (raw / "dev.en").write_text("One two three four five six\n")
    (raw / "dev.de").write_text("Eins\n")
    assert pretokenize(raw, out, max_len=5) == 2  # the empty side and the 6-token pair are gone
    assert (out / "train.en").read_text() == "File %s not found .\nDon't stop !\n"
    assert (out / "train.de").read_text() == "Datei %s nicht gefunden .\nHör nicht auf !\n"
    assert (out / "dev.en").read_text() == "One two three four five six\n"  # dev is kept whole


def seqcap_options() -> dict:
    return yaml.safe_load(CONFIG.read_text())


def test_the_joeynmt_config_is_gettext_attention(tmp_path):
    """Every value the seqcap config sets is either mirrored in the JoeyNMT config or named here
    as having no JoeyNMT counterpart that matters to one epoch without validation."""
    ours = seqcap_options()
    model, data = ours["model"]["init_args"], ours["data"]["init_args"]
    rnn = model["rnn"]
    assert set(rnn) == {"embed_dim", "hidden_size", "cell", "num_layers", "dropout"}
    assert set(model) == {"bidirectional", "context", "attention", "lr", "val_decode", "rnn", "search"}
    assert ours["model"]["class_path"] == "seq2seq.translation.module.TranslationModule"
    assert set(ours["trainer"]) == {"max_epochs", "gradient_clip_val"}
    assert model["context"] == "attention"
    assert set(data) == {
        "data_dir", "src_lang", "tgt_lang", "tokenizer", "word_tokenizer", "max_vocab_size", "max_len",
        "batch_size",
    }  # fmt: skip
    assert data["tokenizer"] == "word"
    assert data["word_tokenizer"] == inspect.signature(pretokenize).parameters["word_tokenizer"].default
    assert data["max_len"] == inspect.signature(pretokenize).parameters["max_len"].default

    joey = joeynmt_config(tmp_path / "data", tmp_path / "model")
    encoder, decoder = joey["model"]["encoder"], joey["model"]["decoder"]
    for part in (encoder, decoder):
        assert part["type"] == "recurrent"
        assert part["rnn_type"] == rnn["cell"]
        assert part["embeddings"]["embedding_dim"] == rnn["embed_dim"]
        assert part["hidden_size"] == rnn["hidden_size"]  # per direction in both encoders
        assert part["num_layers"] == rnn["num_layers"]
        assert part["dropout"] == rnn["dropout"]
    assert encoder["bidirectional"] == model["bidirectional"]
    assert decoder["attention"] == model["attention"] == "bahdanau"
    assert decoder["hidden_dropout"] == rnn["dropout"]
    assert decoder["init_hidden"] == "bridge"  # seqcap's Bridge: tanh(W [h_fwd; h_bwd])

    for side, lang in (("src", data["src_lang"]), ("trg", data["tgt_lang"])):
        cfg = joey["data"][side]
        assert cfg["lang"] == lang and cfg["level"] == "word"
        assert cfg["tokenizer_cfg"]["pretokenizer"] == "none"  # JoeyNMT splits on single spaces
        assert cfg["voc_limit"] + len(SPECIALS) == data["max_vocab_size"]  # JoeyNMT adds its 4 specials
        assert cfg["max_length"] == data["max_len"]
        assert cfg["lowercase"] is False and cfg["normalize"] is False
    assert joey["data"]["train"] == str(tmp_path / "data" / "train")

    training = joey["training"]
    assert training["batch_size"] == data["batch_size"] and training["batch_type"] == "sentence"
    assert training["optimizer"] == "adam" and training["learning_rate"] == model["lr"]
    assert training["clip_grad_norm"] == ours["trainer"]["gradient_clip_val"]
    assert training["epochs"] == 1 and training["label_smoothing"] == 0.0
    assert joey["random_seed"] == ours["seed_everything"]
    assert joey["use_cuda"] is False and joey["fp16"] is False and joey["num_workers"] == 0


def test_the_joeynmt_config_never_validates_and_passes_joeynmts_checks(tmp_path):
    training = joeynmt_config(tmp_path / "data", tmp_path / "model")["training"]
    assert training["logging_freq"] <= training["validation_freq"]
    assert training["validation_freq"] % training["logging_freq"] == 0
    assert training["validation_freq"] > 10**6  # updates of 64 sentences: more than any corpus here
    assert training["scheduling"] == "exponential" and training["decrease_factor"] == 1.0  # a constant rate


def test_the_written_config_reads_back(tmp_path):
    config = joeynmt_config(tmp_path / "data", tmp_path / "model")
    path = write_joeynmt_config(config, tmp_path / "sub" / "joeynmt.yaml")
    assert path.read_text().startswith("# JoeyNMT 2.3 anchor of configs/translation/gettext_attention.yaml")
    assert yaml.safe_load(path.read_text()) == config
