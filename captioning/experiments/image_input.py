"""Image once vs image at every step: Show and Tell as in the paper against the variant that feeds
the projected image at every step, same sizes and budget, on the synthetic shapes set.

    python -m captioning.experiments.image_input --out DIR [--seeds 3] [--epochs 5]
        [--source data/corpora/shapes/dataset_shapes.json] [--config configs/captioning/shapes_showtell.yaml]
        [--overwrite] [any LightningCLI override for both variants,
         e.g. --model.init_args.rnn.hidden_size 512]

The claim tested (Vinyals et al. 2015, §3; seed 002 §8.5.3): the image enters the LSTM once, as the
first input z~_{-1} = W_I cnn(x); "feeding the image at each time step as an extra input yields
inferior results, as the network can explicitly exploit noise in the image and overfits more
easily". The variant is ShowTell(image_every_step=True): every LSTM input is [E z_t; z~_{-1}].
For each seed both variants train from the same config (seed_everything and the data order's seed
= the seed, max_epochs = --epochs (10), one device, the config's early stopping on
val BLEU-4) through the same LightningCLI as `python -m captioning fit`; the best checkpoint
(val BLEU-4) is then tested: BLEU-1..4 (nltk corpus BLEU over all references, beam search as the
config says). The frozen CNN's features come from the
feature cache, so the CNN runs once for all the trainings. The shapes set is drawn with its
defaults (6000/500/500 images, seed 0) where --source does not exist yet.

Outputs in DIR: image_input.csv (variant, seed, bleu1..bleu4, best_val_bleu4, epochs,
train_seconds), image_input.png (bars: mean BLEU-n over seeds per variant, one dot per seed),
config.json (arguments, run times, checkpoints) and runs/ with each training's logs, checkpoints,
sample captions and config.yaml (the exact configuration LightningCLI ran).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from statistics import mean, stdev

from data.core.corpus_io import CorpusError
from data.core.parallel import DataError
from seq2seq.experiments.cli import int_at_least, lightning_overrides, prepare_out, write_csv

VARIANTS = {"image_once": False, "image_every_step": True}  # name: ShowTell(image_every_step=...)
# set by the experiment for every run: an override would make the two variants' runs differ
RESERVED = ("--data.init_args.source", "--data.init_args.seed", "--model.init_args.image_every_step",
            "--trainer.default_root_dir", "--trainer.max_epochs")  # fmt: skip
FILES = ["image_input.csv", "image_input.png", "config.json"]
COLUMNS = ["variant", "seed", "bleu1", "bleu2", "bleu3", "bleu4", "best_val_bleu4", "epochs", "train_seconds"]


def prepare_data(source: Path, experiment: str = "image_input") -> None:
    """Draws the default shapes set where `source` is missing (about 30 s here)."""
    if source.exists():
        return
    if source.name != "dataset_shapes.json":
        raise DataError(
            f"{source}: no such caption file; draw a shapes set with `seqcap data shapes --out DIR`"
        )
    from data.builders.shapes import build_shapes_dataset

    print(f"[{experiment}] drawing the shapes set in {source.parent}", file=sys.stderr)
    build_shapes_dataset(source.parent)


def config_model(path: str) -> str:
    """The captioner a LightningCLI config builds (CaptioningModule's model argument)."""
    import yaml

    init = (yaml.safe_load(Path(path).read_text()) or {}).get("model", {}).get("init_args", {})
    return init.get("model", "showtell")


def train_and_test(variant: str, seed: int, args: argparse.Namespace, out: Path, extra: list[str]) -> dict:
    """One `python -m captioning fit` run, then test of its best checkpoint -> a CSV row."""
    from seq2seq.training.cli import main as cli

    began = time.perf_counter()
    run = cli([
        "fit", "-c", args.config, "--seed_everything", str(seed),
        "--trainer.max_epochs", str(args.epochs),
        "--trainer.default_root_dir", str(out / "runs"), "--run_name", f"{variant}_seed{seed}",
        "--data.init_args.source", str(args.source), "--data.init_args.seed", str(seed),
        "--trainer.devices", "1",
        "--model.init_args.image_every_step", str(VARIANTS[variant]).lower(),
        "--model.init_args.monitor", "nltk_bleu4",  # the measure of this experiment (as before)
        *extra,
    ])  # fmt: skip
    trainer, callback = run.trainer, run.trainer.checkpoint_callback
    seconds = time.perf_counter() - began
    best = callback.best_model_path or callback.last_model_path
    results = trainer.test(run.model, datamodule=run.datamodule, ckpt_path=best, verbose=False)[0]
    score = callback.best_model_score
    return {
        "variant": variant, "seed": seed,
        **{f"bleu{n}": round(results[f"test_nltk_bleu{n}"], 2) for n in range(1, 5)},
        "best_val_bleu4": round(float(score), 2) if score is not None else "",
        "epochs": trainer.current_epoch, "train_seconds": round(seconds, 1), "checkpoint": best,
    }  # fmt: skip


def format_table(rows: list[dict]) -> str:
    """Test BLEU-1..4 per variant: mean ± standard deviation over seeds."""
    lines = [f"test BLEU (nltk corpus BLEU, mean±sd over seeds)\n{'variant':<18}" + "".join(
        f"{'BLEU-' + str(n):>13}" for n in range(1, 5)
    ) + f"{'seeds':>7}"]  # fmt: skip
    for variant in dict.fromkeys(r["variant"] for r in rows):
        mine = [r for r in rows if r["variant"] == variant]
        cells = []
        for n in range(1, 5):
            values = [r[f"bleu{n}"] for r in mine]
            cells.append(f"{mean(values):.1f}" + (f"±{stdev(values):.1f}" if len(values) > 1 else ""))
        lines.append(f"{variant:<18}" + "".join(f"{c:>13}" for c in cells) + f"{len(mine):>7}")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = list(dict.fromkeys(r["variant"] for r in rows))
    width = 0.8 / len(variants)
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for i, variant in enumerate(variants):
        mine = [r for r in rows if r["variant"] == variant]
        xs = [n - 0.4 + width * (i + 0.5) for n in range(1, 5)]
        means = [mean(r[f"bleu{n}"] for r in mine) for n in range(1, 5)]
        label = variant.replace("_", " ") + f" ({len(mine)} seed{'s' * (len(mine) > 1)})"
        bars = ax.bar(xs, means, width * 0.9, color=f"C{i}", label=label)
        ax.bar_label(bars, fmt="%.1f", label_type="center", fontsize=8, color="white")
        for x, n in zip(xs, range(1, 5)):
            ax.plot([x] * len(mine), [r[f"bleu{n}"] for r in mine], "o", color="black", markersize=3)
    ax.set_xticks(range(1, 5), [f"BLEU-{n}" for n in range(1, 5)])
    ax.set_ylabel("test BLEU (0-100)")
    ax.set_ylim(0, 100)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m captioning.experiments.image_input", description=__doc__.split("\n")[0],
        epilog="Other --model.*, --trainer.* and --data.* arguments go to LightningCLI for both variants.",
    )  # fmt: skip
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument(
        "--seeds", type=int_at_least(1), default=3, help="seeds 0..N-1, both variants per seed"
    )
    parser.add_argument(
        "--epochs",
        type=int_at_least(1),
        default=10,
        help="max_epochs of each training (10: half the shapes_showtell config's, 6 trainings in ~30 min)",
    )
    parser.add_argument("--source", type=Path, default=Path("data/corpora/shapes/dataset_shapes.json"))
    parser.add_argument(
        "--config", default="configs/captioning/shapes_showtell.yaml", help="a ShowTell config"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace results already in --out")
    return parser


def main(argv: list[str] | None = None) -> list[dict]:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    lightning_overrides(parser, extra, RESERVED)
    if not Path(args.config).is_file():
        parser.error(f"--config {args.config}: no such file; run from the repository root or give the path")
    model = config_model(args.config)
    if model != "showtell":
        parser.error(
            f"--config {args.config}: its model is {model!r}; the experiment compares ShowTell variants"
        )
    out = prepare_out(parser, args.out, FILES, args.overwrite)
    os.environ.setdefault("WANDB_MODE", "offline")
    start = time.perf_counter()
    rows = []
    try:
        prepare_data(args.source)
        for seed in range(args.seeds):
            for variant in VARIANTS:
                rows.append(train_and_test(variant, seed, args, out, extra))
                print(
                    f"[image_input] {variant} seed {seed}: test BLEU-4 {rows[-1]['bleu4']:.2f}",
                    file=sys.stderr,
                )
    except CorpusError as e:  # a shapes folder left half-drawn by an interrupted run
        raise SystemExit(
            f"error: {e}; draw it again with `python -m data.builders.shapes --out DIR --force`"
        ) from None
    except DataError as e:
        raise SystemExit(f"error: {e}") from None
    seconds = time.perf_counter() - start
    write_csv(out / "image_input.csv", [{k: r[k] for k in COLUMNS} for r in rows], COLUMNS)
    epochs = max(r["epochs"] for r in rows)
    plot(
        rows,
        out / "image_input.png",
        f"Show and Tell on shapes: image once vs every step (<= {epochs} epochs)",
    )
    runs = [{k: r[k] for k in ("variant", "seed", "checkpoint", "train_seconds")} for r in rows]
    config = dict(vars(args), source=str(args.source), lightning_overrides=extra, runs=runs)
    config["seconds"] = round(seconds, 1)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    print(format_table(rows))
    print(f"{len(rows)} trainings in {seconds / 60:.1f} min; wrote {', '.join(str(out / f) for f in FILES)}")
    return rows


if __name__ == "__main__":
    main()
