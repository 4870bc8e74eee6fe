"""AtomicCheckpointIO: a checkpoint on disk is the previous one or the new one, never part of one.

The kill test saves a large checkpoint (200 MB) in a loop in a subprocess whose TMPDIR is another
filesystem (/dev/shm, where Lightning's own rename-from-temp falls back to copying in place) and
kills it with SIGKILL while a save is being written."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from seq2seq.training.resume import AtomicCheckpointIO
from tests.conftest import REPO, cli_env

SAVER = """
import sys, torch
from seq2seq.training.resume import AtomicCheckpointIO
io, path = AtomicCheckpointIO(), sys.argv[1]
weights = torch.arange(50_000_000, dtype=torch.float32)  # 200 MB
for step in range(1000):
    io.save_checkpoint({"global_step": step, "state_dict": {"w": weights + step}}, path)
"""


def temp_files(folder: Path) -> list[Path]:
    return sorted(folder.glob(".last.ckpt.tmp-*"))


def test_kill_during_a_save_leaves_the_previous_checkpoint_loadable(tmp_path):
    path = tmp_path / "checkpoints" / "last.ckpt"
    shm = Path("/dev/shm")
    env = cli_env(TMPDIR=str(shm)) if shm.is_dir() else cli_env()
    proc = subprocess.Popen([sys.executable, "-c", SAVER, str(path)], cwd=REPO, env=env)
    try:
        deadline = time.monotonic() + 120
        # wait for one whole checkpoint, then for the next save to be under way
        while not (path.exists() and temp_files(path.parent)) and time.monotonic() < deadline:
            assert proc.poll() is None, "the saver exited early"
            time.sleep(0.01)
        assert temp_files(path.parent), "no save was seen in progress"
        time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    ckpt = torch.load(path, weights_only=True)  # whole: loads, and every value is there
    step = ckpt["global_step"]
    assert torch.equal(ckpt["state_dict"]["w"], torch.arange(50_000_000, dtype=torch.float32) + step)
    # the killed save's temporary file lies beside the target (not in TMPDIR), and the next save
    # (another process) removes it, its writer being gone
    (orphan,) = temp_files(path.parent)
    assert orphan.name == f".last.ckpt.tmp-{proc.pid}"
    assert not list(Path(env.get("TMPDIR", "/tmp")).glob(f"*{proc.pid}*"))
    AtomicCheckpointIO().save_checkpoint({"global_step": step + 1}, path)
    assert temp_files(path.parent) == []
    assert torch.load(path, weights_only=True) == {"global_step": step + 1}


def test_a_failed_save_keeps_the_previous_checkpoint_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"global_step": 1}, path)
    before = path.read_bytes()
    with pytest.raises(Exception):  # noqa: B017 - whatever pickling raises
        io.save_checkpoint({"global_step": 2, "bad": lambda: None}, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]
    assert os.stat(path).st_size > 0
