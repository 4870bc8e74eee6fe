"""Benchmark of the feature cache: one training epoch that recomputes the frozen CNN on every batch
against one that reads the cached features.

    python -m captioning.bench [--data SOURCE] [--images 300] [--model showtell|attention]
        [--backbone efficientnet_lite0] [--batch-size 32] [--device auto|cpu|cuda]

Without --data it writes a shapes dataset of --images training images (5 captions each) into a
temporary folder. Both runs train the same model (frozen pretrained CNN, the config sizes of
configs/captioning/shapes_showtell.yaml) for one epoch with Lightning, validation off; the time is
the epoch's (on_train_epoch_start to on_train_epoch_end). The cache is built in between, timed on
its own: it is paid once per image, transform and backbone. Prints one line per run and the speedup.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch

from captioning.captioner.module import CaptioningModule
from data.builders.shapes import build_shapes_dataset
from data.datamodules.captions import CaptionDataModule
from seq2seq.modules.rnn import RecurrentOptions
from seq2seq.modules.vision import ImageOptions
from seq2seq.training.checkpoint import resolve_device


class EpochTimer(pl.Callback):
    def on_train_epoch_start(self, trainer, module) -> None:
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer, module) -> None:
        self.seconds = time.perf_counter() - self.start


def epoch_seconds(args, source: str, cache_dir: str, cache: bool) -> tuple[float, int]:
    """(seconds of one training epoch, batches in it)."""
    dm = CaptionDataModule(
        source, min_freq=1, batch_size=args.batch_size, eval_batch_size=args.batch_size,
        cache_dir=cache_dir, num_workers=args.workers,
    )  # fmt: skip
    torch.manual_seed(0)
    module = CaptioningModule(
        dm.vocab_size, model=args.model, image=ImageOptions(backbone=args.backbone, cache_features=cache),
        rnn=RecurrentOptions(embed_dim=128, hidden_size=256, dropout=0.3),
    )  # fmt: skip
    timer = EpochTimer()
    trainer = pl.Trainer(
        accelerator=args.device, devices=1, max_epochs=1, limit_val_batches=0, logger=False,
        enable_checkpointing=False, enable_model_summary=False, callbacks=[timer], num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(module, datamodule=dm)
    return timer.seconds, trainer.num_training_batches


def build_cache(args, source: str, cache_dir: str) -> float:
    dm = CaptionDataModule(source, min_freq=1, eval_batch_size=args.batch_size, cache_dir=cache_dir)
    module = CaptioningModule(dm.vocab_size, model=args.model, image=ImageOptions(backbone=args.backbone))
    device = resolve_device(args.device)
    module.to(device)
    dm.use_normalization(module.encoder.mean, module.encoder.std)  # as the module's setup does: same key
    start = time.perf_counter()
    dm.use_features(module.extract_features, module.encoder.fingerprint(), ["train"])
    return time.perf_counter() - start


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m captioning.bench", description=__doc__.split("\n")[0])
    p.add_argument("--data", help="a caption source (Karpathy JSON, ...); default: a new shapes set")
    p.add_argument("--images", type=int, default=300, help="training images of the generated shapes set")
    p.add_argument("--model", choices=["showtell", "attention"], default="showtell")
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("WANDB_MODE", "disabled")
    with tempfile.TemporaryDirectory(prefix="seqcap-bench-") as tmp:
        source = args.data
        if source is None:
            build_shapes_dataset(Path(tmp) / "shapes", n_train=args.images, n_val=2, n_test=2, progress=False)
            source = str(Path(tmp) / "shapes" / "dataset_shapes.json")
        cache_dir = str(Path(tmp) / "cache")
        slow, batches = epoch_seconds(args, source, cache_dir, cache=False)
        build = build_cache(args, source, cache_dir)
        fast, _ = epoch_seconds(args, source, cache_dir, cache=True)
    threads = torch.get_num_threads()
    print(f"\n{args.model} on {args.backbone}, {batches} batches of {args.batch_size}, {threads} CPU threads")
    print(f"epoch recomputing the CNN: {slow:8.2f} s")
    print(f"building the cache (once): {build:8.2f} s")
    print(f"epoch from the cache:      {fast:8.2f} s")
    print(f"speedup per epoch:         {slow / fast:8.1f}x")


if __name__ == "__main__":
    main()
