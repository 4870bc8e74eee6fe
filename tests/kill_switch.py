"""A callback for the resume tests: the training process kills itself (SIGKILL, no cleanup, as
`kill -9` would; or SIGTERM) when it reaches an optimizer step, at a point of the step the test
chooses."""

from __future__ import annotations

import os
import signal
from typing import Literal

import pytorch_lightning as pl


class KillAt(pl.Callback):
    """SIGKILL at global step `step`, `when` the batch starts or ends (callbacks run before
    ModelCheckpoint, so `end` kills before this step's save); with `group`, the whole process
    group (both processes of a DDP run). `term` sends SIGTERM instead, once, as a cluster that
    preempts the job does."""

    def __init__(
        self, step: int, when: Literal["start", "end"] = "start", group: bool = False, term: bool = False
    ):
        self.step, self.when, self.group, self.term = step, when, group, term

    def _maybe_kill(self, trainer: pl.Trainer, when: str) -> None:
        if when == self.when and trainer.global_step == self.step:
            sig = signal.SIGTERM if self.term else signal.SIGKILL
            if self.group:  # every process of the run (DDP: the launcher started it in its own group)
                os.killpg(os.getpgid(0), sig)
            os.kill(os.getpid(), sig)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._maybe_kill(trainer, "start")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._maybe_kill(trainer, "end")
