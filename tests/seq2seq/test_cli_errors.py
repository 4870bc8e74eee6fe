"""The user errors of `seqcap fit|validate|test` end with one line `error: ...` on stderr, exit
status 2 and no traceback (seq2seq/training/cli_checks.py): a --ckpt_path that is missing,
truncated, not a checkpoint or of another task, a constructor's refusal of an option, and a
checkpoint whose network the command line contradicts. Options that only train or decode differ
with a warning that says which value is used. The runs that train, and one of each kind of
error, run as a user runs them (subprocesses); the other errors, which stop before anything
is built, run the same `seqcap` main in this process (no interpreter start-up per case)."""

from __future__ import annotations

import contextlib
import io
import linecache
import shutil
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
import torch

from seq2seq.training import cli_checks
from seq2seq.training.cli_checks import command_line_options, user_error
from tests.conftest import REPO, explain, fit_args, reverse_corpus_at, run_python

LEGACY = REPO / "tests" / "fixtures" / "legacy"
CAPTION_CONFIG = "configs/captioning/shapes_showtell.yaml"
VQA_CONFIG = "configs/vqa/shapes_attention.yaml"
TINY = (
    "--model.init_args.rnn.embed_dim", "8",
    "--model.init_args.rnn.hidden_size", "16",
    "--data.init_args.batch_size", "64",
    "--trainer.limit_val_batches", "1",
    "--trainer.num_sanity_val_steps", "0",
)  # fmt: skip


def in_process(args: list[str]) -> subprocess.CompletedProcess:
    """`python -m seqcap ARGS` (args as for run_python) run in this process: its exit status and
    what it printed; an exception that escapes is exit status 1 with its traceback in stderr."""
    assert args[:2] == ["-m", "seqcap"], args
    from seqcap.cli import main

    out, err = io.StringIO(), io.StringIO()
    argv = sys.argv
    sys.argv = ["seqcap", *args[2:]]  # LightningCLI compares its args with sys.argv
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(args[2:])
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
            except Exception:  # noqa: BLE001 - reported as the interpreter would
                err.write(traceback.format_exc())
                code = 1
    finally:
        sys.argv = argv
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def error_line(result, *parts: str) -> str:
    """The one `error:` line of a run that must have failed as a user error; it holds every part."""
    assert result.returncode == 2, explain(result)
    assert "Traceback" not in result.stderr, explain(result)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and result.stderr.strip().splitlines()[-1] == errors[0], explain(result)
    for part in parts:
        assert part in errors[0], (part, errors[0])
    return errors[0]


def warnings(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("warning:")]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A 2-step translation checkpoint (embed 8, hidden 16) and its corpus, in a run folder."""
    base = tmp_path_factory.mktemp("cli_errors")
    data = reverse_corpus_at(base / "data", n=128, n_dev=8, n_test=8)
    result = run_python(fit_args(data, base / "runs", *TINY, "--trainer.max_steps", "2"), cwd=REPO)
    assert result.returncode == 0, explain(result)
    return base


def ckpt_of(tiny: Path) -> Path:
    return tiny / "runs" / "reverse_attention" / "version_0" / "checkpoints" / "last.ckpt"


def fit(tiny: Path, root: Path, *extra: str, sub: str = "fit", here: bool = False):
    """The sub-command on the tiny corpus: a subprocess, or in this process (`here`)."""
    args = fit_args(tiny / "data", root, *TINY, "--trainer.max_steps", "4", *extra)
    args[args.index("fit")] = sub
    return in_process(args) if here else run_python(args, cwd=REPO)


# -- 1. a --ckpt_path that does not load -----------------------------------------------------------
@pytest.mark.parametrize("kind", ["missing", "truncated", "text"])
def test_a_ckpt_path_that_does_not_load_is_named(tiny, tmp_path, kind):
    path = tmp_path / f"{kind}.ckpt"
    if kind == "truncated":  # the first 100 bytes of a real checkpoint
        path.write_bytes(ckpt_of(tiny).read_bytes()[:100])
    elif kind == "text":
        path.write_text("not a checkpoint\n")
    why = "no such checkpoint file" if kind == "missing" else "not a loadable seqcap checkpoint"
    result = fit(tiny, tmp_path / "runs", "--ckpt_path", str(path), here=kind != "text")
    error_line(result, f"error: {path}: {why}")
    assert not (tmp_path / "runs").exists()  # nothing was started


def test_ckpt_path_last_with_a_truncated_last_ckpt_names_it(tiny, tmp_path):
    checkpoints = tmp_path / "runs" / "reverse_attention" / "version_0" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "last.ckpt").write_bytes(ckpt_of(tiny).read_bytes()[:100])
    error_line(
        fit(tiny, tmp_path / "runs", "--ckpt_path", "last", here=True),
        f"error: {checkpoints / 'last.ckpt'}: not a loadable seqcap checkpoint", "truncated",
    )  # fmt: skip


def test_ckpt_path_last_without_a_run_says_so_and_trains_from_scratch(tiny, tmp_path):
    """Lightning's behaviour (a resume command may run first), said in one line."""
    result = fit(tiny, tmp_path / "runs", "--ckpt_path", "last", "--trainer.max_steps", "1")
    assert result.returncode == 0, explain(result)
    assert warnings(result) == [
        f"warning: --ckpt_path last: no {tmp_path / 'runs' / 'reverse_attention'}/version_*/checkpoints/"
        "last.ckpt; training starts from scratch"
    ]
    assert (tmp_path / "runs" / "reverse_attention" / "version_0" / "checkpoints" / "last.ckpt").is_file()


def test_test_with_ckpt_path_last_asks_for_the_file(tiny):
    """Lightning would look in the test's new run folder, find nothing and test random weights."""
    result = fit(tiny, tiny / "runs", "--ckpt_path", "last", sub="test", here=True)
    error_line(result, "error: --ckpt_path last: test needs the checkpoint's file", str(ckpt_of(tiny)))


# -- 2. a checkpoint of another task ---------------------------------------------------------------
def test_a_translation_checkpoint_with_a_captioning_config(tiny, tmp_path):
    result = run_python(
        ["-m", "seqcap", "fit", "-c", CAPTION_CONFIG, "--data.init_args.source", str(tmp_path / "none.json"),
         "--trainer.default_root_dir", str(tmp_path / "runs"), "--ckpt_path", str(ckpt_of(tiny))],
        cwd=REPO,
    )  # fmt: skip
    config = ckpt_of(tiny).parents[1] / "config.yaml"
    error_line(
        result,
        f"error: {ckpt_of(tiny)}: a translation checkpoint; this config's model is a captioning model "
        f"(CaptioningModule): use a captioning checkpoint, or the translation checkpoint with a "
        f"translation config (seqcap fit -c {config})",
    )


@pytest.mark.parametrize(
    ("sub", "config", "ckpt", "message"),
    [
        ("fit", "configs/translation/reverse_attention.yaml", "caption_showtell.ckpt",
         "a captioning checkpoint; this config's model is a translation model (TranslationModule)"),
        ("test", CAPTION_CONFIG, "vqa.ckpt",
         "a VQA checkpoint; this config's model is a captioning model (CaptioningModule): use a captioning "
         "checkpoint, or the VQA checkpoint with a VQA config (seqcap test -c configs/vqa/...)"),
        ("validate", VQA_CONFIG, "lm.ckpt",
         "a language model checkpoint; this config's model is a VQA model"),
    ],
)  # fmt: skip
def test_a_checkpoint_of_another_task_written_before_tasks_were_recorded(
    tmp_path, sub, config, ckpt, message
):
    result = in_process(
        ["-m", "seqcap", sub, "-c", config, "--trainer.default_root_dir", str(tmp_path),
         "--ckpt_path", str(LEGACY / ckpt)],
    )  # fmt: skip
    error_line(result, f"error: {LEGACY / ckpt}: {message}")


# -- 3. a constructor's ValueError -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("config", "option", "message"),
    [
        (CAPTION_CONFIG, "--data.init_args.max_caption_len",
         "error: CaptionDataModule: max_caption_len must be an int >= 1, got 0"),
        (VQA_CONFIG, "--data.init_args.max_answers",
         "error: VQADataModule: max_answers must be an int >= 1, got 0"),
    ],
)  # fmt: skip
def test_a_value_a_constructor_refuses_is_one_line_naming_the_class(tmp_path, config, option, message):
    args = ["-m", "seqcap", "fit", "-c", config, "--trainer.default_root_dir", str(tmp_path), option, "0"]
    result = run_python(args, cwd=REPO) if config == VQA_CONFIG else in_process(args)
    error_line(result, message)


def test_a_refusal_deep_inside_the_model_names_the_configured_class(tiny, tmp_path):
    """The decoder's check (a function its constructor calls) refuses; the user set TranslationModule."""
    result = fit(tiny, tmp_path, "--model.init_args.fusion", "doubly", "--model.init_args.attention",
                 "luong_dot", "--model.init_args.image.pretrained", "false", here=True)  # fmt: skip
    error_line(
        result, "error: TranslationModule: fusion='doubly' is written for attention='bahdanau'; use "
        "fusion='flat' with Luong"
    )  # fmt: skip


def test_a_bug_keeps_its_traceback_and_a_refusal_is_named(monkeypatch):
    """Only a `raise` of our own, in a constructor of ours, is a user error: Python's ValueError on
    a bad unpacking in the same place is a bug."""
    fake = str(REPO / "seq2seq" / "not_a_module.py")
    source = (
        "class Refuses:\n    def __init__(self, n):\n        raise ValueError(f'n must be >= 1, got {n}')\n"
        "class Buggy:\n    def __init__(self, n):\n        a, b = [n]\n"
        "def helper(n):\n    raise ValueError('not a constructor')\n"
    )
    monkeypatch.setitem(linecache.cache, fake, (len(source), None, source.splitlines(True), fake))
    scope: dict = {}
    exec(compile(source, fake, "exec"), scope)  # noqa: S102 - a module of our package, for the frames

    def caught(call) -> BaseException:
        try:
            call()
        except ValueError as e:
            try:  # wrapped as jsonargparse wraps a constructor's error
                raise TypeError("Problem with given class_path") from e
            except TypeError as wrapped:
                return wrapped
        raise AssertionError("no error")

    assert user_error(caught(lambda: scope["Refuses"](0))) == "Refuses: n must be >= 1, got 0"
    assert user_error(caught(lambda: scope["Buggy"](0))) is None
    assert user_error(caught(lambda: scope["helper"](0))) is None
    assert user_error(caught(lambda: int("x"))) is None


# -- 4. options that differ from the checkpoint's --------------------------------------------------
def test_a_network_option_against_the_checkpoint_is_an_error_naming_both_values(tiny, tmp_path):
    result = fit(tiny, tmp_path / "runs", "--ckpt_path", str(ckpt_of(tiny)),
                 "--model.init_args.rnn.hidden_size", "32", "--model.init_args.context=fixed",
                 here=True)  # fmt: skip
    error_line(
        result,
        f"error: {ckpt_of(tiny)}: its weights do not fit --model.init_args.rnn.hidden_size 32 (it was "
        "trained with 16); --model.init_args.context 'fixed' (it was trained with 'attention'): drop the "
        "option to resume with the checkpoint's network, or start a new run (without --ckpt_path)",
    )


def test_training_and_decoding_options_differ_with_a_warning_that_tells_the_truth(tiny, tmp_path):
    ckpt = tmp_path / "resume.ckpt"
    shutil.copy(ckpt_of(tiny), ckpt)
    result = fit(tiny, tmp_path / "runs", "--ckpt_path", str(ckpt), "--model.init_args.rnn.dropout", "0.4",
                 "--model.init_args.lr", "0.5", "--model.init_args.search.beam_size", "2")  # fmt: skip
    assert result.returncode == 0, explain(result)
    assert warnings(result) == [
        f"warning: {ckpt}: trained with model.init_args.rnn.dropout=0.1; this run uses 0.4",
        f"warning: {ckpt}: model.init_args.lr=0.5 is not used: resuming restores the checkpoint's optimizer "
        "and learning-rate schedule (trained with 0.002); start a new run to change it",
        f"warning: {ckpt}: trained with model.init_args.search.beam_size=5; this run uses 2",
    ]
    resumed = torch.load(
        tmp_path / "runs" / "reverse_attention" / "version_0" / "checkpoints" / "last.ckpt", weights_only=True
    )
    hp = resumed["hyper_parameters"]
    assert resumed["global_step"] == 4 and hp["rnn"]["dropout"] == 0.4 and hp["search"]["beam_size"] == 2
    assert hp["lr"] == 0.002 and resumed["optimizer_states"][0]["param_groups"][0]["lr"] == 0.002


def test_the_config_files_network_gives_way_to_the_checkpoints(tiny, tmp_path):
    """`seqcap test -c CONFIG --ckpt_path CKPT` of a run trained with --model options: the
    checkpoint's network is tested, and a warning names each option the config has otherwise."""
    ckpt = ckpt_of(tiny)
    result = run_python(
        ["-m", "seqcap", "test", "-c", "configs/translation/reverse_attention.yaml",
         "--data.init_args.data_dir", str(tiny / "data"), "--trainer.default_root_dir", str(tmp_path),
         "--trainer.enable_progress_bar", "false", "--ckpt_path", str(ckpt),
         "--model.init_args.rnn.dropout", "0.3"],
        cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 0, explain(result)
    assert warnings(result) == [
        f"warning: {ckpt}: the config has model.init_args.rnn.embed_dim=64; the checkpoint's 8 is used",
        f"warning: {ckpt}: the config has model.init_args.rnn.hidden_size=128; the checkpoint's 16 is used",
    ]  # dropout does not act in a test: no warning
    assert "test_bleu" in result.stdout


def test_resuming_on_data_of_another_vocabulary_is_one_line(tiny, tmp_path):
    other = reverse_corpus_at(tmp_path / "other", n=64, n_dev=4, n_test=4)
    for split in ("train", "dev"):  # a word the checkpoint's vocabulary lacks
        with open(other / f"{split}.src", "a", encoding="utf-8") as f:
            f.write("w1 zz w2\n")
        with open(other / f"{split}.tgt", "a", encoding="utf-8") as f:
            f.write("w2 zz w1\n")
    args = fit_args(other, tmp_path / "runs", *TINY, "--ckpt_path", str(ckpt_of(tiny)))
    error_line(
        in_process(args),
        "error: --ckpt_path: the data's src vocabulary differs from the checkpoint's: use the data_dir and "
        "tokenizer options the checkpoint was trained with",
    )


def test_command_line_options_finds_every_spelling():
    argv = ["fit", "-c", "x.yaml", "--model.init_args.rnn.hidden_size", "8", "--model.lr=0.1",
            "--model.init_args.search", "{}", "--data.init_args.batch_size", "2",
            "--model", "m.yaml"]  # fmt: skip
    given = command_line_options(argv)
    assert given == {"rnn.hidden_size", "lr", "search"}
    assert cli_checks.explicit("search.beam_size", given) and not cli_checks.explicit("rnn.dropout", given)
