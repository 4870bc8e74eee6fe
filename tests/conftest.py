"""Shared fixtures: tiny synthetic corpora, one trained tiny translator, and helpers that run the
command-line tools the way a user does (a subprocess with `sys.executable -m ...`).

Every output goes under pytest's tmp_path / tmp_path_factory, never into the repository.
wandb is disabled for every test and every subprocess.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

os.environ["WANDB_MODE"] = "disabled"

from data.builders.synthetic import build_synthetic_corpus  # noqa: E402
from seq2seq.modules.rnn import RecurrentOptions  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
REVERSE_CONFIG = "configs/translation/reverse_attention.yaml"


def with_rnn(rnn: RecurrentOptions, **kw) -> dict:
    """A network's keyword arguments from one flat dict, as parametrized tests write them: the
    RecurrentOptions fields among `kw` (cell, hidden_size, impl, ...) replace those of `rnn`, the
    rest (context, attention, fusion, ...) stay keyword arguments."""
    fields = {f.name for f in dataclasses.fields(RecurrentOptions)}
    options = dataclasses.replace(rnn, **{k: v for k, v in kw.items() if k in fields})
    return {"rnn": options, **{k: v for k, v in kw.items() if k not in fields}}


def cli_env(**extra: str) -> dict[str, str]:
    """The environment for the CLI subprocesses: wandb off, the repository importable from any
    working directory, and one BLAS/OpenMP thread per process. The models here are tiny, so one
    thread is as fast as two, and a DDP run's two processes then share two cores without
    oversubscription (with OMP threads = cores, a loaded 2-core machine runs ~10x slower)."""
    env = dict(os.environ)
    env["WANDB_MODE"] = "disabled"
    env["OMP_NUM_THREADS"] = "1"
    env["MKL_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """In-process torch on n intra-op threads, as before afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# One thread for the tiny in-process models, like the subprocesses (cli_env): on a loaded 2-core
# machine extra OpenMP threads only add overhead and can make a tiny forward pass ~100x slower.
# A test asks for `one_thread`; a module has all of its tests share one with
# `pytestmark = pytest.mark.usefixtures("one_thread_per_module")` (or "one_thread", per test).
@pytest.fixture
def one_thread() -> Iterator[None]:
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def one_thread_per_module() -> Iterator[None]:
    with torch_threads(1):
        yield


def run_python(
    args: list[str], cwd: Path, input: str | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """`python ARGS` in a subprocess (this interpreter), text output captured."""
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, input=input, capture_output=True, text=True,
        timeout=timeout, env=cli_env(),
    )  # fmt: skip


def fit_args(data_dir: Path, root: Path, *extra: str, config: str = REVERSE_CONFIG) -> list[str]:
    """`-m seqcap fit -c CONFIG` on data_dir, logging under root (run from the repository)."""
    return [
        "-m", "seqcap", "fit", "-c", config,
        "--data.init_args.data_dir", str(data_dir),
        "--trainer.default_root_dir", str(root),
        "--trainer.enable_progress_bar", "false",
        *extra,
    ]  # fmt: skip


def explain(result: subprocess.CompletedProcess, chars: int = 4000) -> str:
    """The tail of a subprocess's output, for assertion messages."""
    return (
        f"exit code {result.returncode}\n--- stdout ---\n{result.stdout[-chars:]}\n"
        f"--- stderr ---\n{result.stderr[-chars:]}"
    )


def read_metrics(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def metric_values(rows: list[dict[str, str]], key: str) -> list[float]:
    return [float(r[key]) for r in rows if r.get(key) not in (None, "")]


def reverse_corpus_at(out: Path, n: int, n_dev: int, n_test: int) -> Path:
    """The reversal task: vocabulary w0..w9, lengths 3-8 everywhere (fast to learn)."""
    build_synthetic_corpus(
        "reverse", out, vocab=10, train_len=(3, 8), test_len=(3, 8), n=n, n_dev=n_dev, n_test=n_test, seed=0
    )
    return out


@pytest.fixture(scope="session")
def reverse_corpus(tmp_path_factory) -> Path:
    """A tiny reversal corpus (640 training pairs: 20 batches of 32) for runs that only need to
    run, not to learn: resume, DDP. Read-only: copy it before changing anything."""
    return reverse_corpus_at(tmp_path_factory.mktemp("reverse") / "data", n=640, n_dev=40, n_test=20)


# The trained translator: small enough for ~15 s on two cores, good enough to reverse sentences.
TRAINED_MAX_LEN = 20  # data.max_len: longer input lines are truncated by seq2seq.translation.cli
TRAINED_ARGS = (
    "--model.init_args.rnn.embed_dim", "32",
    "--model.init_args.rnn.hidden_size", "64",
    "--model.init_args.rnn.dropout", "0",
    "--model.init_args.lr", "0.003",
    "--data.init_args.batch_size", "32",
    "--data.init_args.max_len", str(TRAINED_MAX_LEN),
    "--trainer.max_epochs", "2",
    "--trainer.log_every_n_steps", "10",
)  # fmt: skip


@dataclass
class TrainedRun:
    root: Path  # --trainer.default_root_dir
    log_dir: Path  # root/reverse_attention/version_0
    last_ckpt: Path
    best_ckpt: Path
    data_dir: Path  # where the corpus lies now: moved away from the path the run was trained on
    trained_on: Path  # the data_dir the run was given, which no longer exists
    result: subprocess.CompletedProcess
    seconds: float


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> TrainedRun:
    """`python -m seq2seq fit -c configs/translation/reverse_attention.yaml` on 2,400 reversal
    pairs for two epochs (150 steps), as a user runs it; then the data folder is moved away, so
    everything that uses the checkpoint afterwards proves it is self-contained."""
    base = tmp_path_factory.mktemp("trained")
    data = reverse_corpus_at(base / "data", n=2400, n_dev=100, n_test=50)
    root = base / "runs"
    start = time.monotonic()
    result = run_python(fit_args(data, root, *TRAINED_ARGS), cwd=REPO, timeout=600)
    seconds = time.monotonic() - start
    assert result.returncode == 0, explain(result)
    log_dir = root / "reverse_attention" / "version_0"
    checkpoints = log_dir / "checkpoints"
    best = sorted(checkpoints.glob("best-*.ckpt"))
    assert (checkpoints / "last.ckpt").is_file() and best, f"checkpoints: {sorted(checkpoints.iterdir())}"
    moved = base / "data-moved-away"
    shutil.move(str(data), str(moved))
    return TrainedRun(root, log_dir, checkpoints / "last.ckpt", best[-1], moved, data, result, seconds)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for a server a test starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_health(server: subprocess.Popen, base: str, seconds: float = 120) -> None:
    """Returns once `seqcap serve` at `base` answers GET /health with 200; fails with the server's
    output if it exits first, or after `seconds`."""
    import httpx

    deadline = time.monotonic() + seconds
    while True:
        assert server.poll() is None, server.communicate()
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"the server did not answer /health in {seconds:.0f} s"
        time.sleep(0.3)


def train_tiny_multimodal(base: Path) -> tuple[Path, Path]:
    """A tiny doubly attentive multimodal translator: `python -m seqcap fit` on
    configs/translation/shapes_mmt.yaml for two steps on test_multimodal_cli's colour set (16 pairs;
    about 10 s) under `base`. -> (its last.ckpt, the data folder)."""
    from tests.seq2seq.test_multimodal_cli import write_colour_set

    data = write_colour_set(base / "data", n_train=16, n_eval=4)
    args = [
        "-m", "seq2seq", "fit", "-c", "configs/translation/shapes_mmt.yaml",
        "--data.init_args.data_dir", str(data), "--data.init_args.image_dir", str(data / "images"),
        "--data.init_args.image_size", "64", "--data.init_args.batch_size", "8",
        "--model.init_args.rnn.embed_dim", "8", "--model.init_args.rnn.hidden_size", "8",
        "--model.init_args.image.feature_block", "1", "--trainer.max_steps", "2",
        "--trainer.limit_val_batches", "1", "--trainer.num_sanity_val_steps", "0",
        "--trainer.default_root_dir", str(base / "runs"), "--trainer.enable_progress_bar", "false",
    ]  # fmt: skip
    result = run_python(args, cwd=REPO, timeout=600)
    assert result.returncode == 0, explain(result)
    return base / "runs" / "shapes_mmt" / "version_0" / "checkpoints" / "last.ckpt", data


def pytest_collection_modifyitems(config, items) -> None:
    """Tests marked `cuda` need a GPU: without one they are skipped, with the reason saying what
    torch sees. `make gpu-check` runs them on a GPU machine (`pytest -m cuda`)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason=f"needs CUDA: torch {torch.__version__} sees no GPU")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)
