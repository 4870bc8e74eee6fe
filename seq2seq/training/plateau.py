"""ReduceLROnPlateau stepped by the LightningModule itself, right after each validation.

Lightning steps an epoch-interval scheduler after the checkpoint of that validation is written,
so a run resumed from that checkpoint would lose one scheduler step. Stepped here, the state the
checkpoint holds (under "seqcap_plateau") is the one the next epoch starts from. `patience`
counts validations.
"""

from __future__ import annotations

from typing import Literal

import torch


class Plateau:
    KEY = "seqcap_plateau"

    def __init__(self, mode: Literal["min", "max"], factor: float, patience: int):
        self.mode, self.factor, self.patience = mode, factor, patience
        self.scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau | None = None
        self._pending: dict | None = None  # a state loaded before the optimizer exists

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        """Called from configure_optimizers."""
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode=self.mode, factor=self.factor, patience=self.patience
        )
        if self._pending is not None:
            self.scheduler.load_state_dict(self._pending)

    def step(self, trainer, value: float) -> None:
        """After a validation (not the sanity check), with the monitored value."""
        if self.scheduler is not None and not trainer.sanity_checking:
            self.scheduler.step(value)

    def save(self, checkpoint: dict) -> None:
        if self.scheduler is not None:
            checkpoint[self.KEY] = self.scheduler.state_dict()

    def load(self, checkpoint: dict) -> None:
        self._pending = checkpoint.get(self.KEY)
        if self.scheduler is not None and self._pending is not None:
            self.scheduler.load_state_dict(self._pending)
