"""The translation pipeline as a user runs it: `python -m seq2seq fit` (LightningCLI), the
inference CLIs on the checkpoint alone, resuming a killed run, DDP on CPU, and the quickstart.

Every command runs in a subprocess with `sys.executable`; every output goes under tmp_path.
The trained translator (tests/conftest.py: `trained_run`) is shared by the tests of this file.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from seq2seq.translation import cli as translate_cli
from tests.conftest import (
    REPO,
    TRAINED_MAX_LEN,
    cli_env,
    explain,
    fit_args,
    metric_values,
    read_metrics,
    run_python,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
WORDS = sorted(f"w{i}" for i in range(10))  # the synthetic corpus's vocabulary


def reversed_line(line: str) -> str:
    return " ".join(line.split()[::-1])


def first_test_sources(run, n: int) -> list[str]:
    return (run.data_dir / "test.src").read_text(encoding="utf-8").splitlines()[:n]


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


# ---------------------------------------------------------------------------------------------
# fit through the CLI, and learning
# ---------------------------------------------------------------------------------------------


def test_fit_writes_checkpoints_metrics_samples_and_attention_plots(trained_run):
    log_dir = trained_run.log_dir
    assert "2400 training pairs" in trained_run.result.stderr + trained_run.result.stdout
    # checkpoints: last and the best on val BLEU, named after it
    assert trained_run.last_ckpt.is_file()
    match = re.fullmatch(r"best-epoch=(\d+)-val_bleu=(\d+\.\d\d)\.ckpt", trained_run.best_ckpt.name)
    assert match, trained_run.best_ckpt.name
    # metrics.csv: train loss every 10 steps, val BLEU and loss after each of the two epochs
    rows = read_metrics(log_dir / "metrics.csv")
    assert {"train_loss", "train_ppl", "val_bleu", "val_loss", "val_ppl", "epoch", "step"} <= set(rows[0])
    train_loss, val_bleu = metric_values(rows, "train_loss"), metric_values(rows, "val_bleu")
    assert len(train_loss) == 15 and all(0 < x < 10 for x in train_loss)
    assert len(val_bleu) == 2 and all(0 <= x <= 100 for x in val_bleu)
    best_epoch = max(range(2), key=lambda e: val_bleu[e])
    assert int(match.group(1)) == best_epoch
    assert float(match.group(2)) == pytest.approx(max(val_bleu), abs=0.01)
    # sample translations and attention heatmaps of dev sentences, per validation
    for epoch in (0, 1):
        samples = (log_dir / "samples" / f"val_epoch{epoch:03d}.txt").read_text(encoding="utf-8")
        assert samples.count("SRC ") == samples.count("HYP ") == samples.count("REF ") == 5
        plots = sorted((log_dir / "attention").glob(f"val_epoch{epoch:03d}_*.png"))
        assert len(plots) == 3
        assert all(p.read_bytes()[:8] == PNG_MAGIC and p.stat().st_size > 1000 for p in plots)
    assert "hidden_size: 64" in (log_dir / "config.yaml").read_text(encoding="utf-8")
    # the checkpoint carries the vocabularies as plain lists and loads with weights_only=True
    ckpt = load(trained_run.last_ckpt)
    vocab = ckpt["seqcap"]["src_vocab"]
    assert vocab[:4] == ["<pad>", "<unk>", "<bos>", "<eos>"] and sorted(vocab[4:]) == WORDS
    assert ckpt["seqcap"]["max_len"] == TRAINED_MAX_LEN
    assert ckpt["hyper_parameters"]["rnn"]["hidden_size"] == 64 and ckpt["global_step"] == 150


def test_training_learns_to_reverse(trained_run):
    """2,400 pairs, 150 steps of a 64-unit attention model: val BLEU > 50 (it reaches ~98)."""
    rows = read_metrics(trained_run.log_dir / "metrics.csv")
    val_bleu, train_loss = metric_values(rows, "val_bleu"), metric_values(rows, "train_loss")
    print(f"fit took {trained_run.seconds:.1f} s; val_bleu per epoch {val_bleu}")
    assert max(val_bleu) > 50, val_bleu
    assert train_loss[-1] < 0.5 * train_loss[0]


# ---------------------------------------------------------------------------------------------
# inference on the checkpoint alone: translate, evaluate
# ---------------------------------------------------------------------------------------------


def test_translate_stdin_from_another_directory_without_the_data(trained_run, tmp_path):
    assert not trained_run.trained_on.exists()  # the data the model was trained on is gone
    sources = first_test_sources(trained_run, 8)
    too_long = " ".join(f"w{i % 10}" for i in range(TRAINED_MAX_LEN + 5))
    lines = sources[:3] + [""] + sources[3:6] + [too_long] + sources[6:]
    result = run_python(
        ["-m", "seq2seq.translation.cli", "--checkpoint", str(trained_run.best_ckpt)],
        cwd=tmp_path, input="\n".join(lines) + "\n",
    )  # fmt: skip
    assert result.returncode == 0, explain(result)
    out = result.stdout.split("\n")
    assert out[-1] == "" and len(out) - 1 == len(lines), result.stdout
    out = out[:-1]
    assert out[3] == ""  # an empty line gives an empty line, in place
    pairs = [(src, hyp) for src, hyp in zip(lines, out) if src and src != too_long]
    exact = sum(hyp == reversed_line(src) for src, hyp in pairs)
    assert exact >= 0.6 * len(pairs), pairs  # in order: each output is its own line reversed
    warnings = [w for w in result.stderr.splitlines() if w.startswith("warning:")]
    assert len(warnings) == 1, result.stderr
    assert "line 8" in warnings[0] and "25 tokens" in warnings[0] and str(TRAINED_MAX_LEN) in warnings[0]


def test_translate_n_best(trained_run, tmp_path):
    sources = first_test_sources(trained_run, 3)
    result = run_python(
        ["-m", "seq2seq.translation.cli", "--checkpoint", str(trained_run.last_ckpt), "--n-best", "3"],
        cwd=tmp_path, input="\n".join(sources) + "\n",
    )  # fmt: skip
    assert result.returncode == 0, explain(result)
    out = result.stdout.splitlines()
    assert len(out) == 9, out
    parsed = []
    for line in out:
        match = re.fullmatch(r"(\d+) \|\|\| (.*) \|\|\| (-?\d+\.\d{4})", line)
        assert match, line
        parsed.append((int(match.group(1)), match.group(2), float(match.group(3))))
    assert [i for i, _, _ in parsed] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    for i in range(len(sources)):
        options = parsed[3 * i : 3 * i + 3]
        scores = [s for _, _, s in options]
        assert scores == sorted(scores, reverse=True) and all(s <= 0 for s in scores)
        assert len({t for _, t, _ in options}) == 3  # three different translations
    assert sum(parsed[3 * i][1] == reversed_line(s) for i, s in enumerate(sources)) >= 2


def test_translate_files_and_attention_plots(trained_run, tmp_path):
    sources = first_test_sources(trained_run, 4)
    lines = sources[:2] + [""] + sources[2:]
    (tmp_path / "in.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = run_python(
        ["-m", "seq2seq.translation.cli", "--checkpoint", str(trained_run.best_ckpt), "--input", "in.txt",
         "--output", "out.txt", "--attention-plot", "plots", "--beam-size", "3"],
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, explain(result)
    assert result.stdout == ""
    out = (tmp_path / "out.txt").read_text(encoding="utf-8").splitlines()
    assert len(out) == 5 and out[2] == ""
    assert sum(o == reversed_line(s) for s, o in zip(lines, out) if s) >= 3
    plots = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert plots == ["00001.png", "00002.png", "00004.png", "00005.png"]  # one per nonempty line
    assert all((tmp_path / "plots" / p).read_bytes()[:8] == PNG_MAGIC for p in plots)


def test_translate_missing_checkpoint_exits_2_naming_the_file(tmp_path):
    missing = tmp_path / "no" / "such.ckpt"
    result = run_python(
        ["-m", "seq2seq.translation.cli", "--checkpoint", str(missing)], cwd=tmp_path, input="w1\n"
    )
    assert result.returncode == 2, explain(result)
    assert str(missing) in result.stderr and "no such checkpoint file" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_translate_bad_checkpoint_and_overwriting_the_input_are_refused(tmp_path, capsys):
    """In-process (the same main() as the CLI): quick checks of two more user errors."""
    bad = tmp_path / "notes.ckpt"
    bad.write_text("not a checkpoint\n", encoding="utf-8")
    (tmp_path / "in.txt").write_text("w1 w2\n", encoding="utf-8")
    assert translate_cli.main(["--checkpoint", str(bad), "--input", str(tmp_path / "in.txt")]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "not a loadable seqcap checkpoint" in err
    code = translate_cli.main(["--checkpoint", str(bad), "--input", str(tmp_path / "in.txt"),
                               "--output", str(tmp_path / "in.txt"), "--overwrite"])  # fmt: skip
    assert code == 2 and "is the same file as the input" in capsys.readouterr().err
    assert (tmp_path / "in.txt").read_text(encoding="utf-8") == "w1 w2\n"


def test_n_best_gives_n_lines_for_an_empty_input_line(trained_run, tmp_path):
    """`--n-best N`: N lines for every input, an empty one too (it used to give one line)."""
    (tmp_path / "in.txt").write_text("w1 w2 w3\n\nw4 w5\n", encoding="utf-8")
    argv = ["--checkpoint", str(trained_run.last_ckpt), "--input", str(tmp_path / "in.txt"),
            "--output", str(tmp_path / "out.txt"), "--n-best", "2", "--device", "cpu"]  # fmt: skip
    assert translate_cli.main(argv) == 0
    indices = [line.split(" ||| ")[0] for line in (tmp_path / "out.txt").read_text().splitlines()]
    assert indices == ["0", "0", "1", "1", "2", "2"]


def test_evaluate_prints_one_json_line(trained_run, tmp_path):
    data = trained_run.data_dir
    result = run_python(
        ["-m", "seq2seq.translation.evaluate", "--checkpoint", str(trained_run.best_ckpt),
         "--src", str(data / "test.src"), "--ref", str(data / "test.tgt"), "--beam-size", "3"],
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, explain(result)
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    scores = json.loads(lines[0])
    assert {"sacrebleu", "signature", "nltk_bleu", "copy_sacrebleu"} <= set(scores)
    assert scores["sentences"] == 50 and scores["beam_size"] == 3
    assert scores["signature"].startswith("nrefs:1|") and "tok:13a" in scores["signature"]
    assert scores["sacrebleu"] > 50 and scores["nltk_bleu"] > 50
    assert scores["sacrebleu"] > scores["copy_sacrebleu"] + 20  # copying a reversal is no solution


def test_evaluate_line_count_mismatch_exits_2(trained_run, tmp_path, capsys):
    from seq2seq.translation import evaluate

    (tmp_path / "src").write_text("w1 w2\nw3\n", encoding="utf-8")
    (tmp_path / "ref").write_text("w2 w1\n", encoding="utf-8")
    argv = ["--checkpoint", str(trained_run.last_ckpt), "--src", str(tmp_path / "src"),
            "--ref", str(tmp_path / "ref")]  # fmt: skip
    assert evaluate.main(argv) == 2
    err = capsys.readouterr().err
    assert "has 2 lines" in err and "has 1" in err and str(tmp_path / "ref") in err


# ---------------------------------------------------------------------------------------------
# resume: a 2-epoch run killed after its first checkpoint, resumed with --ckpt_path last
# ---------------------------------------------------------------------------------------------

RESUME_ARGS = (
    "--model.init_args.rnn.embed_dim", "16",
    "--model.init_args.rnn.hidden_size", "32",
    "--model.init_args.rnn.dropout", "0",
    "--model.init_args.lr", "0.01",
    "--data.init_args.batch_size", "32",
    "--trainer.max_epochs", "2",
)  # fmt: skip
STEPS_PER_EPOCH = 20  # 640 pairs in batches of 32


@dataclass
class ResumeRuns:
    straight: Path  # last.ckpt of the uninterrupted 2-epoch run
    resumed: Path  # last.ckpt of the killed and resumed run
    killed_while_running: bool
    at_kill: dict  # epoch and global_step of the last.ckpt the killed run left
    at_kill_weights: dict  # and its weights
    resume_result: subprocess.CompletedProcess
    no_improvement: Path  # last.ckpt of a 2-epoch run (lr 0) whose val BLEU never improves


def _start(args: list[str], log: Path, **env: str) -> subprocess.Popen:
    with open(log, "w") as f:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, *args], cwd=REPO, env=cli_env(**env), stdout=f, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip


def _finish(proc: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    assert proc.wait(timeout=timeout) == 0, log.read_text()[-4000:]


@pytest.fixture(scope="module")
def resume_runs(reverse_corpus, tmp_path_factory) -> ResumeRuns:
    base = tmp_path_factory.mktemp("resume")
    ckpts = "reverse_attention/version_0/checkpoints/last.ckpt"

    # three runs at once (one thread each): uninterrupted, to be killed, never improving
    def start(name: str, *extra: str) -> subprocess.Popen:
        return _start(fit_args(reverse_corpus, base / name, *RESUME_ARGS, *extra), base / f"{name}.log")

    straight = start("straight")
    killed = start("killed")
    flat = start("flat", "--model.init_args.lr", "0")
    try:
        # kill -9 as soon as the first checkpoint exists: Lightning writes it to a temporary file
        # and renames it, so the file is complete once it is visible
        last = base / "killed" / ckpts
        deadline = time.monotonic() + 300
        while not last.exists() and killed.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        killed_while_running = killed.poll() is None
        os.killpg(killed.pid, signal.SIGKILL)
        killed.wait()
        assert last.exists(), (base / "killed.log").read_text()[-4000:]
        state = load(last)
        at_kill = {"epoch": state["epoch"], "global_step": state["global_step"]}
        resume = run_python(
            fit_args(reverse_corpus, base / "killed", *RESUME_ARGS, "--ckpt_path", "last"), cwd=REPO
        )
        _finish(straight, base / "straight.log")
        _finish(flat, base / "flat.log")
    finally:
        for proc in (straight, killed, flat):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    straight_last, flat_last = base / "straight" / ckpts, base / "flat" / ckpts
    return ResumeRuns(
        straight_last, last, killed_while_running, at_kill, state["state_dict"], resume, flat_last
    )


def test_resume_after_kill_matches_uninterrupted_training(resume_runs):
    """2 epochs straight == 1 epoch, kill -9, `fit --ckpt_path last` up to max_epochs 2:
    same weights, optimizer state, epoch, global_step, val BLEU history and early stopping."""
    r = resume_runs
    # the kill came mid-run: after epoch 0's checkpoint, before the run could finish
    assert r.killed_while_running
    assert r.at_kill == {"epoch": 0, "global_step": STEPS_PER_EPOCH}
    assert r.resume_result.returncode == 0, explain(r.resume_result)
    # --ckpt_path last: the CLI reuses the newest version_N that has a last.ckpt, and Lightning
    # loads that folder's last.ckpt; the resumed run logs into the same folder
    log = r.resume_result.stderr + r.resume_result.stdout
    assert f"Restoring states from the checkpoint path at {r.resumed}" in log
    run_dir = r.resumed.parents[1]
    assert sorted(p.name for p in run_dir.parent.iterdir()) == ["version_0"]
    a, b = load(r.straight), load(r.resumed)
    assert (b["epoch"], b["global_step"]) == (a["epoch"], a["global_step"]) == (1, 2 * STEPS_PER_EPOCH)
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key in a["state_dict"]:
        assert torch.allclose(a["state_dict"][key], b["state_dict"][key], atol=1e-6), key
    # and training did move them after the checkpoint the killed run left
    assert any(not torch.allclose(r.at_kill_weights[k], a["state_dict"][k]) for k in a["state_dict"])
    oa, ob = a["optimizer_states"][0], b["optimizer_states"][0]
    assert oa["param_groups"] == ob["param_groups"]
    assert oa["state"].keys() == ob["state"].keys()
    for i in oa["state"]:
        for name, value in oa["state"][i].items():
            assert torch.allclose(value.float(), ob["state"][i][name].float(), atol=1e-6), (i, name)
    # the resumed run's metrics.csv holds both epochs (appended), with the same val BLEU
    straight_bleu = metric_values(read_metrics(r.straight.parents[1] / "metrics.csv"), "val_bleu")
    resumed_bleu = metric_values(read_metrics(run_dir / "metrics.csv"), "val_bleu")
    assert len(straight_bleu) == 2 and resumed_bleu == pytest.approx(straight_bleu, abs=1e-4)
    early_a, early_b = (
        next(v for k, v in ckpt["callbacks"].items() if k.startswith("EarlyStopping")) for ckpt in (a, b)
    )
    assert early_a["wait_count"] == early_b["wait_count"]
    assert torch.allclose(early_a["best_score"], early_b["best_score"])


def test_resume_restores_the_lr_scheduler_state(resume_runs):
    """ReduceLROnPlateau on val BLEU: the resumed run's state equals the uninterrupted run's. (It
    used to be one epoch behind: Lightning stepped it after the validation checkpoint was written,
    and a resume never replayed that step.)"""
    a, b = load(resume_runs.straight), load(resume_runs.resumed)
    # wherever the scheduler state is kept: Lightning's lr_schedulers or the module's own key
    states_a, states_b = (
        {k: v for k, v in ckpt.items() if "sched" in k.lower() or "plateau" in k.lower()} for ckpt in (a, b)
    )
    assert any(states_a.values()), f"no scheduler state in the checkpoint: {sorted(a)}"
    assert states_b == states_a


def test_last_ckpt_holds_the_last_epoch(resume_runs):
    """last.ckpt is the latest state even when val BLEU does not improve. (pytorch-lightning >= 2.6
    rewrites last.ckpt only together with a top-k checkpoint; with the CLI's save_top_k 1 on
    val_bleu, last.ckpt used to stay at the best epoch and `--ckpt_path last` resumed from it.)"""
    rows = read_metrics(resume_runs.no_improvement.parents[1] / "metrics.csv")
    bleu = metric_values(rows, "val_bleu")
    assert len(bleu) == 2 and bleu[0] == bleu[1]  # lr 0: the same model, the same BLEU, twice
    ckpt = load(resume_runs.no_improvement)
    assert (ckpt["epoch"], ckpt["global_step"]) == (1, 2 * STEPS_PER_EPOCH)


# ---------------------------------------------------------------------------------------------
# DDP on CPU: two processes, gloo
# ---------------------------------------------------------------------------------------------

DDP_ARGS = (
    "--model.init_args.rnn.embed_dim", "8",
    "--model.init_args.rnn.hidden_size", "16",
    "--data.init_args.batch_size", "32",
    "--data.init_args.eval_batch_size", "8",
    "--trainer.strategy", "ddp",
    "--trainer.devices", "2",
    "--trainer.accelerator", "cpu",
    "--trainer.log_every_n_steps", "1",
)  # fmt: skip


def _group_cpu_ticks(pgid: int) -> dict[int, int]:
    """pid -> CPU time (user + system, clock ticks) of the live processes in a process group."""
    ticks = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid:  # fields[0] is field 3 (state): pgrp 5, utime 14, stime 15
            ticks[int(stat.parent.name)] = int(fields[11]) + int(fields[12])
    return ticks


def run_watched(args: list[str], log: Path, idle_s: float = 8, timeout: float = 150) -> int | None:
    """Run `python ARGS` from the repository; None when it hangs: all its processes together use
    less than a tenth of a core for idle_s seconds (deadlocked in a collective: only gloo's and
    Lightning's watcher threads still tick), or it outlives timeout. A hung run's processes get
    SIGABRT first, so faulthandler writes each one's Python stack into the log; then SIGKILL."""
    proc = _start(args, log, PYTHONFAULTHANDLER="1")
    per_second = os.sysconf("SC_CLK_TCK")
    start = time.monotonic()
    history: list[tuple[float, int]] = []  # (time, CPU ticks of the group)
    while proc.poll() is None:
        time.sleep(0.5)
        now = time.monotonic()
        pids = _group_cpu_ticks(proc.pid)
        history.append((now, sum(pids.values())))
        window = [ticks for t, ticks in history if t >= now - idle_s]
        idle = history[0][0] <= now - idle_s and window[-1] - window[0] < 0.1 * idle_s * per_second
        if idle or now - start > timeout:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGABRT)
            time.sleep(1.0)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return None
    with contextlib.suppress(ProcessLookupError):  # DDP workers share the group: none outlives it
        os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode


def stack_lines(log: Path, where: str) -> str:
    """The lines of faulthandler's stack dumps in log that mention where."""
    return "\n".join(line for line in log.read_text().splitlines() if where in line)


def test_ddp_on_cpu_smoke(reverse_corpus, tmp_path):
    """2 CPU processes over gloo, training only (validation under DDP is tested below)."""
    log = tmp_path / "ddp.log"
    args = fit_args(reverse_corpus, tmp_path / "runs", *DDP_ARGS, "--trainer.max_steps", "3",
                    "--trainer.use_distributed_sampler", "false",
                    "--trainer.limit_val_batches", "0")  # fmt: skip
    code = run_watched(args, log)
    output = log.read_text()
    assert code == 0, output[-4000:]
    assert "distributed_backend=gloo" in output
    assert "GLOBAL_RANK: 0" in output and "GLOBAL_RANK: 1" in output
    run_dir = tmp_path / "runs" / "reverse_attention" / "version_0"
    ckpt = load(run_dir / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 3 and sorted(ckpt["seqcap"]["tgt_vocab"][4:]) == WORDS
    assert len(metric_values(read_metrics(run_dir / "metrics.csv"), "train_loss")) == 3


def test_ddp_fit_with_validation(reverse_corpus, tmp_path):
    """As documented (docs/translation.md): two gloo processes, validation every 2 steps."""
    log = tmp_path / "ddp.log"
    args = fit_args(reverse_corpus, tmp_path / "runs", *DDP_ARGS, "--trainer.max_steps", "4",
                    "--trainer.val_check_interval", "2", "--trainer.limit_val_batches", "2",
                    "--trainer.use_distributed_sampler", "false")  # fmt: skip
    code = run_watched(args, log)
    where = stack_lines(log, "seq2seq/translation/module.py") + "\n" + stack_lines(log, "log_dir")
    assert code is not None, f"deadlocked: next to no CPU used for 8 s (killed); stacks:\n{where}"
    assert code == 0, log.read_text()[-3000:]
    run_dir = tmp_path / "runs" / "reverse_attention" / "version_0"
    assert "GLOBAL_RANK: 0" in log.read_text() and "GLOBAL_RANK: 1" in log.read_text()
    assert load(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 4
    assert len(metric_values(read_metrics(run_dir / "metrics.csv"), "val_bleu")) == 2  # steps 2 and 4
    assert (run_dir / "samples" / "val_epoch000.txt").is_file()


# ---------------------------------------------------------------------------------------------
# quickstart
# ---------------------------------------------------------------------------------------------

QS_NOUNS = [("file", "Datei"), ("window", "Fenster"), ("folder", "Ordner"), ("printer", "Drucker"),
            ("disk", "Festplatte")]  # fmt: skip
QS_ADJS = [("open", "offen"), ("closed", "geschlossen"), ("empty", "leer"), ("full", "voll"),
           ("ready", "bereit"), ("missing", "verschwunden")]  # fmt: skip


def test_quickstart_on_a_tiny_gettext_corpus(tmp_path):
    # by diagonals of nouns x adjectives: the 18 training pairs hold every word of the test pairs
    grid = [(i, (i + d) % len(QS_ADJS)) for d in range(len(QS_ADJS)) for i in range(len(QS_NOUNS))]
    pairs = [(f"The {QS_NOUNS[i][0]} is {QS_ADJS[j][0]}.", f"Die {QS_NOUNS[i][1]} ist {QS_ADJS[j][1]}.")
             for i, j in grid]  # fmt: skip
    test = pairs[24:]
    # one test source of 13 tokens, whose words lie past max_len 6: both paths must cut it alike
    test[-1] = (f"Yes, yes, yes, yes: {test[-1][0]}", f"Ja, ja, ja, ja: {test[-1][1]}")
    corpus = tmp_path / "data" / "corpora" / "gettext-en-de"
    corpus.mkdir(parents=True)
    for split, part in (("train", pairs[:18]), ("dev", pairs[18:24]), ("test", test)):
        (corpus / f"{split}.en").write_text("".join(p[0] + "\n" for p in part), encoding="utf-8")
        (corpus / f"{split}.de").write_text("".join(p[1] + "\n" for p in part), encoding="utf-8")
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    result = run_python(
        ["-m", "seq2seq.translation.quickstart", "--trainer.max_steps", "30", "--trainer.max_epochs", "30",
         "--trainer.limit_val_batches", "1", "--trainer.limit_test_batches", "2",
         "--data.init_args.max_len", "6", "--trainer.default_root_dir", str(tmp_path / "runs"),
         "--trainer.enable_progress_bar", "false"],
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, explain(result)
    out = result.stdout
    assert "using the corpus in data/corpora/gettext-en-de" in out
    numbers = r"test BLEU \(beam 5\): (\d+\.\d\d)\s+copy-the-source baseline: (\d+\.\d\d)\s+\(6 sentences\)"
    match = re.search(numbers, out)
    assert match, out
    # trained far enough (33 here) that a path that decodes differently gets another score
    assert 10 < float(match.group(1)) <= 100 and 0 < float(match.group(2)) < 100
    assert float(match.group(1)) > float(match.group(2)) + 10, match.group(0)  # beats copying (33.4 vs 2.2)
    sources = re.findall(r"^\s+source:\s+(.*)$", out, flags=re.M)
    assert sources == [p[0] for p in test[:5]]  # the first five test sentences
    assert len(re.findall(r"^\s+output:", out, flags=re.M)) == 5
    checkpoint = Path(re.search(r"^checkpoint:\s+(\S+)$", out, flags=re.M).group(1))
    assert checkpoint.is_file() and checkpoint.suffix == ".ckpt"
    assert tmp_path / "runs" in checkpoint.parents
    assert load(checkpoint)["seqcap"]["src_lang"] == "en"
    ev = run_python(
        ["-m", "seq2seq.translation.evaluate", "--checkpoint", str(checkpoint),
         "--src", str(corpus / "test.en"),
         "--ref", str(corpus / "test.de"), "--beam-size", "5"],
        cwd=tmp_path,
    )  # fmt: skip
    assert ev.returncode == 0, explain(ev)
    # the figure the quickstart prints is the one a user gets again from seq2seq.translation.evaluate
    assert json.loads(ev.stdout)["sacrebleu"] == pytest.approx(float(match.group(1)), abs=0.01)
