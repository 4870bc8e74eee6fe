"""The LightningCLI that every task runs through (`python -m seq2seq`, `python -m captioning`).

LightningCLI over the LightningModules and datamodules named in the config (class_path /
init_args). Every run gets: a CSV logger (always) and wandb when `--wandb` is not "off"
("auto": online when you are logged in to wandb, offline otherwise, so no account is needed);
checkpoints on val BLEU (best and last; on val_<monitor> for a model with a `monitor` option, as
captioning's), early stopping, a learning-rate monitor and a progress
bar. Precision defaults to bf16-mixed on GPUs that support it and fp32 otherwise.
"""

from __future__ import annotations

import csv
import netrc
import os
import sys
from pathlib import Path
from typing import Literal

import torch
from lightning_fabric.plugins import CheckpointIO
from pytorch_lightning.callbacks import EarlyStopping, LearningRateMonitor
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI
from pytorch_lightning.loggers import CSVLogger, WandbLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment

from seq2seq.training.cli_checks import resumable_versions, review_ckpt_path, user_error
from seq2seq.training.resume import AtomicCheckpointIO, BestAndLastCheckpoint

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


class _AppendingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        """Lightning deletes an existing metrics.csv here; a resumed run appends to it instead,
        starting from its columns (else the first new column rewrites the file with the resumed
        run's columns alone, and the old rows no longer fit)."""
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self.metrics_keys = sorted(next(csv.reader(file), []))


class ResumableCSVLogger(CSVLogger):
    """CSVLogger that keeps (appends to) the metrics of the run it resumes."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


class SeqCapCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--run_name", type=str, default="run", help="name of the run's log folder")
        parser.add_argument("--wandb", type=WandbMode, default="off", help="wandb logging mode")
        parser.add_argument("--wandb_project", type=str, default="seqcap")
        parser.add_lightning_class_args(BestAndLastCheckpoint, "checkpoint")
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
        parser.link_arguments("data.src_vocab_size", "model.init_args.src_vocab_size", apply_on="instantiate")
        parser.link_arguments("data.tgt_vocab_size", "model.init_args.tgt_vocab_size", apply_on="instantiate")
        # Links whose source or target the chosen classes lack are skipped by jsonargparse, so
        # one CLI serves translation (src/tgt sizes), language models (one vocab_size) and VQA
        # (vocab_size and num_answers).
        parser.link_arguments("data.vocab_size", "model.init_args.vocab_size", apply_on="instantiate")
        parser.link_arguments("data.num_answers", "model.init_args.num_answers", apply_on="instantiate")

    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        """Parses, then checks a --ckpt_path before anything is built (cli_checks.review_ckpt_path:
        the file loads, is of the config's task, its network is the one the options give)."""
        super().parse_arguments(parser, args)
        argv = sys.argv[1:] if args is None else args if isinstance(args, list) else []
        self.ckpt_file = review_ckpt_path(self.config, argv)

    def _parse_ckpt_path(self) -> None:
        """Lightning would parse a ckpt_path's hyperparameters over the config and the command line
        here, silently (a --model option would be dropped); review_ckpt_path has done it instead,
        and said what differs."""

    def before_instantiate_classes(self) -> None:
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        self.use_model_monitor(cfg)
        root = Path(cfg.trainer.default_root_dir or "runs")
        version = None
        if self.subcommand == "fit" and cfg.get("ckpt_path") == "last":
            # resume: log into the latest run's folder, where its last.ckpt is found
            versions = resumable_versions(root, cfg.run_name)
            version = versions[-1] if versions else None
        loggers = [ResumableCSVLogger(save_dir=str(root), name=cfg.run_name, version=version)]
        mode = cfg.wandb
        if mode == "auto":
            mode = "online" if wandb_logged_in() else "offline"
        if mode != "off" and os.environ.get("WANDB_MODE") != "disabled":
            wandb = WandbLogger(
                project=cfg.wandb_project, name=cfg.run_name, save_dir=str(root), offline=mode == "offline"
            )
            loggers.append(wandb)
        self._loggers = loggers

    @staticmethod
    def use_model_monitor(cfg) -> None:
        """A model with a `monitor` option (captioning: cider, bleu4, ...) decides what the
        checkpoint and early stopping watch, val_<monitor>, where they still watch the default."""
        init = (cfg.get("model") or {}).get("init_args") or {}
        monitor = init.get("monitor") if hasattr(init, "get") else None
        if not monitor:
            return
        key = f"val_{monitor}"
        if cfg.checkpoint.monitor == "val_bleu":
            cfg.checkpoint.monitor = key
            if cfg.checkpoint.filename == "best-{epoch:02d}-{val_bleu:.2f}":
                cfg.checkpoint.filename = f"best-{{epoch:02d}}-{{{key}:.2f}}"
        if cfg.early_stopping.monitor == "val_bleu":
            cfg.early_stopping.monitor = key

    def instantiate_trainer(self, **kwargs):
        cfg = self.config_init[self.subcommand] if self.subcommand else self.config_init
        if cfg.trainer.logger in (None, True):  # a logger set in the config wins
            kwargs.setdefault("logger", self._loggers)
        # a checkpoint is whole or absent, on any filesystem (unless the config brings its own IO)
        plugins = cfg.trainer.get("plugins") or []
        plugins = list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            kwargs["plugins"] = [*plugins, AtomicCheckpointIO()]
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
            # our batch samplers shard by rank themselves; Lightning's injection would fail
            "use_distributed_sampler": False,
        },
        save_config_kwargs={"overwrite": True},
        args=args,
    )


def run(args: list[str] | None = None) -> SeqCapCLI:
    """`main` for a `__main__` module: a user error (a DataError or CheckpointError, which names the
    file and the line, image or option, or a ValueError one of our constructors raised about its
    arguments; cli_checks.user_error) ends the run with one line `error: ...` on stderr and exit
    status 2 instead of a traceback, also when LightningCLI wrapped it in jsonargparse's error."""
    try:
        return main(args)
    except Exception as e:  # noqa: BLE001 - re-raised unless a user error is in its chain
        message = user_error(e)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
