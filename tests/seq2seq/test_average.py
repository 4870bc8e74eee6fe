"""`seqcap average` (seq2seq/training/average.py) and `checkpoint.keep_last` (BestAndLastCheckpoint):
the average is the element-wise mean of the weights, a checkpoint that inference and `seqcap test`
load; mixes that cannot be averaged are one `error:` line with nothing written; a run keeps the
checkpoints of its last N validations, across a resume. The checkpoints are the session's trained
translator (conftest.trained_run) and a tiny run trained here; the refusals and the arithmetic
run `seqcap average` in this process, the runs as a user runs them (subprocesses)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from seq2seq.predictor import Predictor
from seq2seq.training.average import average_checkpoints
from seq2seq.training.checkpoint import load_checkpoint
from seqcap.cli import main as seqcap
from tests.conftest import REPO, explain, fit_args, reverse_corpus_at, run_python
from tests.seq2seq.test_cli_errors import TINY, error_line, in_process

pytestmark = pytest.mark.usefixtures("one_thread_per_module")  # conftest: torch on one thread

LEGACY = REPO / "tests" / "fixtures" / "legacy"
# what an average keeps of the last checkpoint, and the training state it drops
KEPT = {"state_dict", "hyper_parameters", "hparams_name", "seqcap", "epoch", "global_step"}
KEPT |= {"pytorch-lightning_version", "datamodule_hyper_parameters", "datamodule_hparams_name"}
TRAINING_STATE = {"optimizer_states", "lr_schedulers", "loops", "callbacks", "random_states"}
TRAINING_STATE |= {"seqcap_plateau"}
OR_ANOTHER = ", or choose another path\n"
SENTENCES = ["w1 w2 w3", "w4 w5 w6 w7 w8", "w9 w0 w9 w1", "w2 w2 w3 w5 w7 w1"]


def average(capsys, *args: str | Path) -> tuple[int, str]:
    """`seqcap average ARGS` in this process: its exit status and stderr."""
    code = seqcap(["average", *map(str, args)])
    return code, capsys.readouterr().err


def translations(path: Path) -> list[list[tuple[str, float]]]:
    p = Predictor.from_checkpoint(path, device="cpu")
    return [[(t.text, t.score) for t in hyps] for hyps in p.translate(SENTENCES, beam_size=3, n_best=2)]


def save_variant(base: dict, path: Path, change) -> Path:
    """A copy of the loaded checkpoint `base`, changed by change(copy), saved at path."""
    ckpt = {**base, "state_dict": dict(base["state_dict"]), "seqcap": dict(base["seqcap"])}
    hparams = base["hyper_parameters"]
    ckpt["hyper_parameters"] = {k: dict(v) if isinstance(v, dict) else v for k, v in hparams.items()}
    change(ckpt)
    torch.save(ckpt, path)
    return path


def test_two_copies_average_to_the_checkpoint(trained_run, tmp_path, capsys):
    """Same weights bit for bit, same translations; the metadata of the last, no training state."""
    last = trained_run.last_ckpt
    copy = shutil.copy(last, tmp_path / "copy.ckpt")
    code, err = average(capsys, last, copy, "--out", tmp_path / "avg.ckpt")
    assert code == 0, err
    a, avg = load_checkpoint(last), load_checkpoint(tmp_path / "avg.ckpt")
    assert list(avg["state_dict"]) == list(a["state_dict"])
    for key, value in a["state_dict"].items():
        assert avg["state_dict"][key].dtype == value.dtype and torch.equal(avg["state_dict"][key], value), key
    assert set(avg) == KEPT and set(a) == KEPT | TRAINING_STATE, (sorted(avg), sorted(a))
    for key in ("epoch", "global_step", "pytorch-lightning_version", "hyper_parameters"):
        assert avg[key] == a[key], key
    meta = dict(avg["seqcap"])
    assert meta.pop("averaged_from") == [os.path.abspath(last), os.path.abspath(copy)]
    assert meta == a["seqcap"]
    assert translations(tmp_path / "avg.ckpt") == translations(last)
    assert not list(last.parent.glob("step-*.ckpt"))  # keep_last is off by default


def test_one_checkpoint_gives_its_weights_alone(trained_run, tmp_path, capsys):
    code, err = average(capsys, trained_run.best_ckpt, "--out", tmp_path / "slim.ckpt")
    assert code == 0, err
    a, slim = load_checkpoint(trained_run.best_ckpt), load_checkpoint(tmp_path / "slim.ckpt")
    assert all(torch.equal(slim["state_dict"][k], v) for k, v in a["state_dict"].items())
    assert "optimizer_states" not in slim and slim["seqcap"]["averaged_from"] == [str(trained_run.best_ckpt)]


def test_the_average_is_the_mean_of_the_weights(trained_run, tmp_path):
    """Three checkpoints with different weights: each floating weight is their mean; an integer
    buffer and the metadata are the last one's."""
    base = load_checkpoint(trained_run.last_ckpt)
    gen = torch.Generator().manual_seed(0)
    paths = []
    for i in range(3):

        def change(ckpt, i=i):
            for key, value in ckpt["state_dict"].items():
                ckpt["state_dict"][key] = value + torch.randn(value.shape, generator=gen) * (i + 1)
            ckpt["state_dict"]["model.counter"] = torch.tensor([10 * i, i], dtype=torch.long)
            ckpt["global_step"] = 1000 + i

        paths.append(save_variant(base, tmp_path / f"{i}.ckpt", change))
    loaded = [load_checkpoint(p)["state_dict"] for p in paths]
    avg = average_checkpoints(paths)
    for key in base["state_dict"]:
        mean = ((loaded[0][key].double() + loaded[1][key].double() + loaded[2][key].double()) / 3).float()
        assert avg["state_dict"][key].dtype == torch.float32
        torch.testing.assert_close(avg["state_dict"][key], mean, rtol=0, atol=1e-7)
        assert not torch.equal(avg["state_dict"][key], loaded[2][key])
    assert avg["state_dict"]["model.counter"].tolist() == [20, 2]
    assert avg["global_step"] == 1002 and avg["seqcap"]["averaged_from"] == [str(p) for p in paths]


def _other_vocabulary(ckpt):
    ckpt["seqcap"]["tgt_vocab"] = [*ckpt["seqcap"]["tgt_vocab"][:5], "zzz", *ckpt["seqcap"]["tgt_vocab"][6:]]


def _other_hidden_size(ckpt):  # the weights as they are: only the hyperparameter tells
    ckpt["hyper_parameters"]["rnn"]["hidden_size"] = 32


def _other_shape(ckpt):
    ckpt["state_dict"]["model.decoder.output.bias"] = torch.zeros(3)


def _extra_weight(ckpt):
    ckpt["state_dict"]["model.decoder.extra"] = torch.zeros(3)


@pytest.mark.parametrize(
    ("change", "parts"),
    [
        (_other_vocabulary, ["its vocabularies differ from", "tgt_vocab id 5: 'zzz' in one"]),
        (_other_hidden_size, ["another network", "hyperparameter rnn.hidden_size is 32 there and 64 in"]),
        (_other_shape, ["weight model.decoder.output.bias is torch.float32 (3,) there", "another network"]),
        (_extra_weight, ["holds the weight model.decoder.extra", "does not: another network"]),
        (None, ["lm.ckpt: a language model checkpoint and", "a translation one"]),
    ],
    ids=["vocabulary", "hyperparameter", "shape", "key", "task"],
)  # fmt: skip
def test_a_mix_that_cannot_be_averaged_is_refused_and_nothing_written(
    trained_run, tmp_path, capsys, change, parts
):
    other = LEGACY / "lm.ckpt"
    if change is not None:
        other = save_variant(load_checkpoint(trained_run.last_ckpt), tmp_path / "other.ckpt", change)
    before = sorted(tmp_path.iterdir())
    code, err = average(capsys, trained_run.last_ckpt, other, "--out", tmp_path / "avg.ckpt")
    assert code == 2 and err.count("error:") == 1 and err.startswith(f"error: {other}"), err
    assert all(part in err for part in parts), (parts, err)
    assert str(trained_run.last_ckpt) in err
    assert sorted(tmp_path.iterdir()) == before  # no output, no temporary file


def test_options_that_only_train_or_decode_may_differ_with_a_warning(trained_run, tmp_path, capsys):
    def change(ckpt):
        ckpt["hyper_parameters"]["lr"] = 0.5
        ckpt["hyper_parameters"]["search"]["beam_size"] = 7

    other = save_variant(load_checkpoint(trained_run.last_ckpt), tmp_path / "other.ckpt", change)
    code, err = average(capsys, trained_run.last_ckpt, other, "--out", tmp_path / "avg.ckpt")
    assert code == 0, err
    warnings = sorted(line for line in err.splitlines() if line.startswith("warning:"))
    assert len(warnings) == 2, err
    assert warnings[0].startswith(f"warning: hyperparameter lr is 0.003 in {trained_run.last_ckpt} and 0.5")
    assert warnings[1].startswith("warning: hyperparameter search.beam_size is 5 in")
    assert all(w.endswith("; the average has the last one's") for w in warnings)
    hp = load_checkpoint(tmp_path / "avg.ckpt")["hyper_parameters"]
    assert hp["lr"] == 0.5 and hp["search"]["beam_size"] == 7


def test_the_output_is_checked_before_any_work(trained_run, tmp_path, capsys):
    ckpts = [trained_run.last_ckpt, trained_run.best_ckpt]
    out = tmp_path / "avg.ckpt"
    out.write_bytes(b"keep me")
    code, err = average(capsys, *ckpts, "--out", out)
    assert code == 2 and err == f"error: --out {out} exists; pass --overwrite to replace it{OR_ANOTHER}"
    assert out.read_bytes() == b"keep me"
    code, err = average(capsys, *ckpts, "--out", trained_run.best_ckpt, "--overwrite")
    assert code == 2 and "is the same file as the input" in err
    code, err = average(capsys, *ckpts, "--out", tmp_path, "--overwrite")
    assert code == 2 and "is a folder" in err
    code, err = average(capsys, *ckpts, tmp_path / "typo.ckpt", "--out", tmp_path / "new.ckpt")
    assert code == 2 and err == f"error: {tmp_path / 'typo.ckpt'}: no such checkpoint file\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["avg.ckpt"]
    code, err = average(capsys, *ckpts, "--out", out, "--overwrite")
    assert code == 0, err
    assert load_checkpoint(out)["seqcap"]["averaged_from"] == [str(p) for p in ckpts]


def test_seqcap_average_and_translate_as_commands(trained_run, tmp_path):
    best, last = str(trained_run.best_ckpt), str(trained_run.last_ckpt)
    result = run_python(["-m", "seqcap", "average", best, last, "--out", "avg.ckpt"], cwd=tmp_path)
    assert result.returncode == 0, explain(result)
    assert result.stderr.strip().splitlines()[-1] == "avg.ckpt: the average of 2 checkpoints"
    out = run_python(
        ["-m", "seqcap", "translate", "--checkpoint", "avg.ckpt", "--beam-size", "3", "--device", "cpu"],
        cwd=tmp_path, input="".join(s + "\n" for s in SENTENCES),
    )  # fmt: skip
    assert out.returncode == 0, explain(out)
    assert out.stdout.splitlines() == [hyps[0][0] for hyps in translations(tmp_path / "avg.ckpt")]


# -- checkpoint.keep_last: a tiny run (2 steps an epoch, a validation after each) and its resume -------
def test_keep_last_keeps_the_last_validations_across_a_resume(tmp_path, capsys):
    data = reverse_corpus_at(tmp_path / "data", n=128, n_dev=8, n_test=8)  # 2 batches of 64

    def run(sub: str, *extra: str, here: bool = False):
        args = fit_args(data, tmp_path / "runs", *TINY, "--early_stopping.patience", "100", *extra)
        args[args.index("fit")] = sub
        return in_process(args) if here else run_python(args, cwd=REPO)

    checkpoints = tmp_path / "runs" / "reverse_attention" / "version_0" / "checkpoints"
    first = run("fit", "--checkpoint.keep_last", "2", "--trainer.max_steps", "6")
    assert first.returncode == 0, explain(first)
    assert sorted(p.name for p in checkpoints.glob("step-*")) == ["step-00004.ckpt", "step-00006.ckpt"]
    resumed = run("fit", "--checkpoint.keep_last", "2", "--trainer.max_steps", "10", "--ckpt_path", "last")
    assert resumed.returncode == 0, explain(resumed)
    assert sorted(p.name for p in checkpoints.glob("step-*")) == ["step-00008.ckpt", "step-00010.ckpt"]
    assert [p.name for p in checkpoints.parents[1].iterdir()] == ["version_0"]  # one run folder
    newest, last = (load_checkpoint(checkpoints / name) for name in ("step-00010.ckpt", "last.ckpt"))
    assert newest["global_step"] == last["global_step"] == 10 and "optimizer_states" in newest
    assert all(torch.equal(newest["state_dict"][k], v) for k, v in last["state_dict"].items())

    avg = tmp_path / "avg.ckpt"
    code, err = average(capsys, *sorted(checkpoints.glob("step-*.ckpt")), "--out", avg)
    assert code == 0, err
    tested = run("test", "--ckpt_path", str(avg))
    assert tested.returncode == 0 and "test_bleu" in tested.stdout, explain(tested)
    error_line(
        run("fit", "--ckpt_path", str(avg), here=True),
        f"error: {avg}: the average of 2 checkpoints, without the optimizer and loop states",
    )
