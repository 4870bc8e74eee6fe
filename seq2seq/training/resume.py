"""Training that survives being killed: a resumed run equals an uninterrupted one.

What a checkpoint needs for that, beyond Lightning's weights, optimizer and loop counters:

random states    Python's, NumPy's, torch's (CPU and every CUDA device) of every process,
                 written by `SeqCapModule.on_save_checkpoint` (`random_states`) and set again when the
                 resumed training starts (`SeqCapModule.on_train_start`). Validation draws from a
                 copy of them (`SeqCapModule.on_validation_start/end`), so the training's own
                 stream does not depend on where validation ran or was skipped.
the epoch        the training loader's (epoch, batches served): data/core/resumable.py.
position
recurrent state  the language model's truncated-BPTT state (seq2seq/lm/module.py).

And checkpoints that cannot be torn (`AtomicCheckpointIO`) and a `last.ckpt` that follows the run
(`BestAndLastCheckpoint`).
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.utilities.exceptions import SIGTERMException


# -- random states -----------------------------------------------------------------------------
def random_states() -> dict[str, Any]:
    """This process's random states as plain types and tensors (torch.load(weights_only=True)
    reads them back)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    states = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "torch": torch.get_rng_state(),
    }  # fmt: skip
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_random_states(states: dict[str, Any]) -> None:
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    n = states["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def gather(value: Any) -> list[Any]:
    """[value of process 0, value of process 1, ...] (one process: [value])."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        everything: list = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(everything, value)
        return everything
    return [value]


def mine(values: list[Any], what: str) -> Any:
    """This process's entry of a `gather`ed list (process 0's when the number of processes
    changed: the resume is then not exact, and says so)."""
    rank, world = 0, 1
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    if len(values) != world:
        if rank == 0:
            print(
                f"warning: the checkpoint holds the {what} of {len(values)} processes and this run has "
                f"{world}: it resumes from process 0's, so it will not repeat the interrupted run exactly"
            )
        return values[0]
    return values[rank]


# -- checkpoints that cannot be torn -----------------------------------------------------------
def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save into `.NAME.tmp-PID` beside the target, fsync, os.replace, fsync the folder: a
    reader sees the previous checkpoint or the new one, never part of one, on any filesystem
    (Lightning's own save renames from the system temp folder, which fails across filesystems and
    then copies in place). Temporary files of killed saves (their process gone) are removed."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in path.parent.glob(f".{path.name}.tmp-*"):
            pid = stale.name.rsplit("-", 1)[-1]
            if pid.isdigit() and not _alive(int(pid)):
                stale.unlink(missing_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            with open(tmp, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


# -- a last.ckpt that follows the run ----------------------------------------------------------
class BestAndLastCheckpoint(ModelCheckpoint):
    """ModelCheckpoint that keeps the best checkpoints (by the monitored validation metric) and a
    `last.ckpt` that follows the run: rewritten after every validation, every
    `every_n_train_steps` optimizer steps (0: never), when training ends (max_steps, max_epochs,
    early stopping) and when the process gets SIGTERM (a preempted job resumes with
    `--ckpt_path last` and loses at most `every_n_train_steps` steps; kill -9 too).

    A step save is skipped when validation runs right after that batch: the save after
    validation follows, and Lightning does not run that validation again on resume (its plateau
    and early-stopping decisions must be in the checkpoint).

    `keep_last` N > 0 also keeps the checkpoints of the last N validations, `step-NNNNN.ckpt`
    (the global step), for `seqcap average`: each is written after its validation (before
    last.ckpt), then the older ones beyond N are deleted. Which ones exist is read from the
    folder, so a run resumed into it (`--ckpt_path last`) goes on where it was; a step file that a
    killed run wrote after the last.ckpt it resumes from is written again when the resumed run
    gets there. 0 (the default) keeps none."""

    STEP_FILE = re.compile(r"^step-(\d+)\.ckpt$")

    def __init__(self, *args, every_n_train_steps: int = 200, keep_last: int = 0, **kwargs):
        if every_n_train_steps < 0:
            raise ValueError(f"checkpoint.every_n_train_steps must be >= 0, got {every_n_train_steps}")
        if keep_last < 0:
            raise ValueError(f"checkpoint.keep_last must be >= 0, got {keep_last}")
        super().__init__(*args, **kwargs)  # Lightning's own every_n_train_steps stays off: it
        self.last_every_n_steps = every_n_train_steps  # would also stop the saves after validation
        self.keep_last = keep_last

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        n = self.last_every_n_steps
        if not n or trainer.global_step % n or self._should_skip_saving_checkpoint(trainer):
            return
        loop = trainer.fit_loop
        if loop.epoch_loop._should_check_val_fx(loop._data_fetcher):
            return
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_validation_end(self, trainer, pl_module) -> None:
        """Lightning >= 2.6 rewrites last.ckpt only when a top-k checkpoint is saved too; without
        this `--ckpt_path last` would resume from the best epoch rather than the latest one."""
        if self._should_skip_saving_checkpoint(trainer) or self._should_save_on_train_epoch_end(trainer):
            return
        candidates = self._monitor_candidates(trainer)
        if self._every_n_epochs >= 1 and (trainer.current_epoch + 1) % self._every_n_epochs == 0:
            self._save_topk_checkpoint(trainer, candidates)
        if self.keep_last:
            self._save_step_checkpoint(trainer)
        self._save_last_checkpoint(trainer, candidates)

    def _save_step_checkpoint(self, trainer) -> None:
        """step-NNNNN.ckpt of this validation, then the step files older than the last keep_last go.
        trainer.save_checkpoint, not Lightning's _save_checkpoint: a step file is no top-k or last
        checkpoint (save_last="link" must not point at a file that is deleted later)."""
        assert self.dirpath is not None
        path = os.path.join(self.dirpath, f"step-{trainer.global_step:05d}.ckpt")
        trainer.save_checkpoint(path, self.save_weights_only)  # every process; rank 0 writes
        if not trainer.is_global_zero:
            return
        found = []
        for name in self._fs.ls(self.dirpath, detail=False):
            match = self.STEP_FILE.match(os.path.basename(name))
            if match:
                found.append((int(match.group(1)), os.path.join(self.dirpath, os.path.basename(name))))
        for _, old in sorted(found)[: -self.keep_last]:
            if self._should_remove_checkpoint(trainer, old, path):  # not the one resumed from
                self._remove_checkpoint(trainer, old)

    def on_train_end(self, trainer, pl_module) -> None:
        if not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException) and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
