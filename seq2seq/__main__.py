"""`python -m seq2seq fit|validate|test|predict -c CONFIG [--model.init_args.hidden_size 512 ...]`

LightningCLI over the seq2seq LightningModules and datamodules named in the config (class_path /
init_args). Every run gets: a CSV logger (always) and wandb when `--wandb` is not "off"
("auto": online when you are logged in to wandb, offline otherwise, so no account is needed);
checkpoints on val BLEU (best and last), early stopping, a learning-rate monitor and a progress
bar. Precision defaults to bf16-mixed on GPUs that support it and fp32 otherwise.
"""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Literal

import torch
from pytorch_lightning.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI
from pytorch_lightning.loggers import CSVLogger, WandbLogger

WandbMode = Literal["off", "auto", "offline", "online"]


def default_precision() -> str:
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def wandb_logged_in() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


class SeqCapCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--run_name", type=str, default="run", help="name of the run's log folder")
        parser.add_argument("--wandb", type=WandbMode, default="off", help="wandb logging mode")
        parser.add_argument("--wandb_project", type=str, default="seqcap")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val_bleu",
                "checkpoint.mode": "max",
                "checkpoint.save_last": True,
                "checkpoint.filename": "best-{epoch:02d}-{val_bleu:.2f}",
                "checkpoint.save_on_train_epoch_end": False,  # after validation, where val_bleu is
            }
        )
        parser.add_lightning_class_args(EarlyStopping, "early_stopping")
        parser.set_defaults(
            {
                "early_stopping.monitor": "val_bleu",
                "early_stopping.mode": "max",
                "early_stopping.patience": 5,
                "early_stopping.check_on_train_epoch_end": False,
            }
        )
        parser.link_arguments(
            "data.src_vocab_size", "model.init_args.src_vocab_size", apply_on="instantiate"
        )
        parser.link_arguments(
            "data.tgt_vocab_size", "model.init_args.tgt_vocab_size", apply_on="instantiate"
        )

    def before_instantiate_classes(self) -> None:
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        root = Path(cfg.trainer.default_root_dir or "runs")
        loggers = [CSVLogger(save_dir=str(root), name=cfg.run_name)]
        mode = cfg.wandb
        if mode == "auto":
            mode = "online" if wandb_logged_in() else "offline"
        if mode != "off" and os.environ.get("WANDB_MODE") != "disabled":
            wandb = WandbLogger(
                project=cfg.wandb_project, name=cfg.run_name, save_dir=str(root), offline=mode == "offline"
            )
            loggers.append(wandb)
        self._loggers = loggers

    def instantiate_trainer(self, **kwargs):
        cfg = self.config_init[self.subcommand] if self.subcommand else self.config_init
        if cfg.trainer.logger in (None, True):  # a logger set in the config wins
            kwargs.setdefault("logger", self._loggers)
        return super().instantiate_trainer(**kwargs)


def main(args: list[str] | None = None) -> SeqCapCLI:
    return SeqCapCLI(
        subclass_mode_model=True,
        subclass_mode_data=True,
        trainer_defaults={
            "accelerator": "auto",
            "devices": "auto",
            "precision": default_precision(),
            "callbacks": [LearningRateMonitor(logging_interval="epoch")],
            "default_root_dir": "runs",
        },
        save_config_kwargs={"overwrite": True},
        args=args,
    )


if __name__ == "__main__":
    from data.parallel import DataError

    try:
        main()
    except DataError as e:  # the user's data: say which file and line, without a traceback
        raise SystemExit(f"error: {e}") from None
