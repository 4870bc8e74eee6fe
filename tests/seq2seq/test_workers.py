"""Decoding in forked worker processes (seq2seq/workers.py, `--workers N`): the same translations
as one process, the work really done elsewhere on one thread, errors brought back, and the
refusals."""

from __future__ import annotations

import json
import os

import pytest
import torch

from seq2seq import workers
from seq2seq.translation.predictor import Translator
from tests.conftest import REPO, explain, run_python

pytestmark = pytest.mark.skipif(
    "fork" not in __import__("multiprocessing").get_all_start_methods(), reason="no fork on this OS"
)


def where_and_how(item: int) -> tuple[int, int, int]:
    return item * item, os.getpid(), torch.get_num_threads()


def fails_on_three(item: int) -> int:
    if item == 3:
        raise ValueError(f"item {item} is bad")
    return item


def test_map_in_workers_keeps_the_order_and_runs_in_one_thread_processes():
    out = list(workers.map_in_workers(where_and_how, list(range(12)), 2))
    assert [square for square, _, _ in out] == [k * k for k in range(12)]
    pids = {pid for _, pid, _ in out}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2
    assert {threads for _, _, threads in out} == {1}


def test_one_worker_runs_here():
    out = list(workers.map_in_workers(where_and_how, [1, 2, 3], 1))
    assert [pid for _, pid, _ in out] == [os.getpid()] * 3


def test_an_error_in_a_worker_is_raised_here():
    with pytest.raises(ValueError, match="item 3 is bad"):
        list(workers.map_in_workers(fails_on_three, list(range(6)), 2))


def test_usable_refuses_no_workers_and_workers_on_a_gpu():
    assert workers.usable(3, "cpu") == 3
    assert workers.usable(1, "cuda") == 1
    with pytest.raises(ValueError, match="must be >= 1"):
        workers.usable(0, "cpu")
    with pytest.raises(ValueError, match="on the CPU only; on cuda:1 use one"):
        workers.usable(2, "cuda:1")


def sources(n: int) -> list[str]:
    return [" ".join(f"w{(i * 7 + k * 3) % 10}" for k in range(3 + i % 6)) for i in range(n)]


def test_translate_with_workers_equals_one_process(trained_run):
    """n-best lists, scores and attention of 40 sentences in batches of 8 (5 batches over 2
    workers) are those of one process (scores and attention to float rounding: 1 thread vs 2)."""
    translator = Translator.from_checkpoint(trained_run.last_ckpt, "cpu")
    lines = sources(40)
    lines[5] = ""  # an empty line stays empty
    kwargs = dict(beam_size=3, n_best=2, batch_size=8, return_attention=True)
    alone = translator.translate(lines, **kwargs)
    forked = translator.translate(lines, workers=2, **kwargs)
    assert forked[5] == alone[5] and alone[5][0].text == ""
    for mine, theirs in zip(forked, alone):
        assert [t.tokens for t in mine] == [t.tokens for t in theirs]
        assert [t.text for t in mine] == [t.text for t in theirs]
        for a, b in zip(mine, theirs):
            assert a.score == pytest.approx(b.score, abs=1e-5)
            if b.attention is not None:
                torch.testing.assert_close(a.attention, b.attention, atol=1e-5, rtol=0)


TRANSLATE = ["-m", "seq2seq.translation.cli"]


def test_translate_cli_with_workers_writes_what_one_process_writes(trained_run, tmp_path):
    (tmp_path / "in.txt").write_text("".join(s + "\n" for s in sources(30)), encoding="utf-8")
    outputs = []
    for n in (1, 2):
        result = run_python(
            [*TRANSLATE, "--checkpoint", str(trained_run.last_ckpt), "--device", "cpu", "--input",
             str(tmp_path / "in.txt"), "--output", str(tmp_path / f"out{n}.txt"), "--batch-size", "4",
             "--chunk-size", "16", "--workers", str(n)],
            cwd=REPO,
        )  # fmt: skip
        assert result.returncode == 0, explain(result)
        outputs.append((tmp_path / f"out{n}.txt").read_text(encoding="utf-8"))
    assert outputs[0] == outputs[1] and len(outputs[0].splitlines()) == 30


def test_evaluate_cli_with_workers_scores_what_one_process_scores(trained_run):
    data = trained_run.data_dir
    scores = []
    for n in (1, 2):
        result = run_python(
            ["-m", "seq2seq.translation.evaluate", "--checkpoint", str(trained_run.last_ckpt), "--device",
             "cpu", "--src", str(data / "test.src"), "--ref", str(data / "test.tgt"), "--batch-size", "8",
             "--workers", str(n)],
            cwd=REPO,
        )  # fmt: skip
        assert result.returncode == 0, explain(result)
        scores.append(json.loads(result.stdout.strip().splitlines()[-1]))
    assert scores[0] == scores[1] and scores[0]["sentences"] == 50


def test_translate_cli_refuses_no_workers(trained_run):
    result = run_python([*TRANSLATE, "--checkpoint", str(trained_run.last_ckpt), "--workers", "0"], cwd=REPO)
    assert result.returncode == 2
    assert "--workers must be >= 1, got 64, 1000, 0" in result.stderr
    assert "Traceback" not in result.stderr
