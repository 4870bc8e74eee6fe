"""Decoding in forked worker processes (seq2seq/workers.py, `--workers N`): the same translations
as one process, the work really done elsewhere on one thread, errors brought back, and the
refusals."""

from __future__ import annotations

import json
import os
import signal
import threading

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


def identity(item: int) -> int:
    return item


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


class NeedsTwo(Exception):
    def __init__(self, path, why):  # pickles, but cannot be rebuilt from its args alone
        super().__init__(f"{path}: {why}")


def raises_unrebuildable(item: int) -> int:
    raise NeedsTwo(f"file{item}", "is bad")


def dies_on_two(item: int) -> int:
    if item == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return item


def tensor_of(item: int) -> torch.Tensor:
    return torch.full((3, 4), float(item))[:, :2]  # a view, as attention slices are


def test_an_exception_the_parent_cannot_rebuild_comes_back_named():
    with pytest.raises(RuntimeError, match="NeedsTwo: file0: is bad"):
        list(workers.map_in_workers(raises_unrebuildable, [0, 1], 2))


def test_a_worker_that_dies_is_an_error_not_a_hang():
    with pytest.raises(RuntimeError, match="a worker process died"):
        list(workers.map_in_workers(dies_on_two, list(range(6)), 2))


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_tensors_come_back_by_value_not_as_file_descriptors():
    """torch's pickler would send each tensor as a shared-memory descriptor: 2,000 results would
    hold 2,000 of the parent's descriptors (a hang past the limit)."""
    before = open_descriptors()
    out = list(workers.map_in_workers(tensor_of, list(range(2000)), 2))
    assert open_descriptors() - before < 20
    assert all(torch.equal(t, torch.full((3, 2), float(k))) for k, t in enumerate(out))


def test_two_threads_each_get_their_own_work_done():
    """The function travels to the workers through fork, not through a module global the other
    thread could replace."""
    got: dict[str, list] = {}

    def run(name: str, fn) -> None:
        got[name] = list(workers.map_in_workers(fn, list(range(40)), 2))

    threads = [
        threading.Thread(target=run, args=("squares", where_and_how)),
        threading.Thread(target=run, args=("same", identity)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert [r[0] for r in got["squares"]] == [k * k for k in range(40)]
    assert got["same"] == list(range(40))


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


def test_translate_and_evaluate_refuse_no_workers(trained_run):
    result = run_python([*TRANSLATE, "--checkpoint", str(trained_run.last_ckpt), "--workers", "0"], cwd=REPO)
    assert result.returncode == 2
    assert "--workers must be >= 1, got 64, 1000, 0" in result.stderr
    assert "Traceback" not in result.stderr
    evaluate = [
        "-m",
        "seq2seq.translation.evaluate",
        "--checkpoint",
        "missing.ckpt",
        "--src",
        "a",
        "--ref",
        "b",
    ]
    result = run_python([*evaluate, "--workers", "-1"], cwd=REPO)
    assert result.returncode == 2 and "--workers must be >= 1, got -1" in result.stderr  # before any loading
    assert "Traceback" not in result.stderr
