"""Cross-entropy, then self-critical training from that checkpoint: the COCO metrics of both.

    python -m captioning.experiments.scst --out DIR [--models showtell,attention] [--scst-epochs 5]
        [--scst-lr 2e-4] [--scst-samples 5] [--scst-baseline greedy] [--xe-checkpoint MODEL=CKPT ...]
        [--source data/corpora/shapes/dataset_shapes.json] [--overwrite]
        [any LightningCLI override for every run, e.g. --trainer.limit_train_batches 50]

For each model (showtell: configs/captioning/shapes_showtell.yaml, attention:
shapes_attention.yaml), through the same LightningCLI as `python -m captioning fit`:

1. cross-entropy: the config as it is (seed 0), best checkpoint on val CIDEr-D (`monitor: cider`),
   tested (beam search as the config says) -- or the checkpoint --xe-checkpoint names, tested;
2. SCST: the same config with `self_critical: true`, `init_checkpoint` = step 1's best checkpoint,
   lr --scst-lr, --scst-epochs epochs, then its best checkpoint (val CIDEr-D) tested the same way.

The frozen CNN's features come from the feature cache; the CIDEr-D document frequencies of the
training captions are cached beside them. The shapes set is drawn with its defaults where --source
does not exist yet. Outputs in DIR: scst.csv (model, stage, epochs, bleu1..4, meteor, rouge_l,
cider, nltk_bleu4, train_seconds), scst.png (test metrics, cross-entropy vs SCST per model),
scst.md (the table, with SCST's relative CIDEr-D gain), config.json and runs/.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from captioning.experiments.image_input import prepare_data
from data.core.corpus_io import CorpusError
from data.core.parallel import DataError
from seq2seq.experiments.cli import int_at_least, lightning_overrides, positive_float, prepare_out, write_csv

CONFIGS = {
    "showtell": "configs/captioning/shapes_showtell.yaml",
    "attention": "configs/captioning/shapes_attention.yaml",
}
NAMES = {"showtell": "ShowTell", "attention": "ShowAttendTell"}
RESERVED = ("--data.init_args.source", "--trainer.default_root_dir", "--model.init_args.self_critical",
            "--model.init_args.init_checkpoint")  # fmt: skip
FILES = ["scst.csv", "scst.png", "scst.md", "config.json"]
METRICS = ["bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rouge_l", "cider", "nltk_bleu4"]
COLUMNS = ["model", "stage", "epochs", *METRICS, "best_val_cider", "train_seconds"]


def run(
    model: str, stage: str, args: argparse.Namespace, out: Path, extra: list[str], init: str | None
) -> dict:
    """One fit (or, for a given cross-entropy checkpoint, only its test) -> a CSV row."""
    from seq2seq.training.cli import main as cli

    began = time.perf_counter()
    common = ["-c", CONFIGS[model], "--data.init_args.source", str(args.source),
              "--trainer.default_root_dir", str(out / "runs"), "--trainer.devices", "1"]  # fmt: skip
    if stage == "xe" and init is not None:  # a checkpoint already trained: test it
        lightning = cli(["test", *common, "--ckpt_path", init, "--run_name", f"{model}_xe_test", *extra])
        results = lightning.trainer.callback_metrics
        best, score, epochs, seconds = init, None, "", 0.0
    else:
        scst = [] if stage == "xe" else [
            "--model.init_args.self_critical", "true", "--model.init_args.init_checkpoint", init,
            "--model.init_args.lr", str(args.scst_lr), "--trainer.max_epochs", str(args.scst_epochs),
            "--model.init_args.scst_samples", str(args.scst_samples),
            "--model.init_args.scst_baseline", args.scst_baseline,
        ]  # fmt: skip
        # the SCST options last: --scst-epochs and --scst-lr win over an override for every run
        lightning = cli(["fit", *common, "--run_name", f"{model}_{stage}", *extra, *scst])
        seconds = time.perf_counter() - began
        callback = lightning.trainer.checkpoint_callback
        best = callback.best_model_path or callback.last_model_path
        score, epochs = callback.best_model_score, lightning.trainer.current_epoch
        results = lightning.trainer.test(
            lightning.model, datamodule=lightning.datamodule, ckpt_path=best, verbose=False
        )[0]
    row = {
        "model": model,
        "stage": stage,
        "epochs": epochs,
        "train_seconds": round(seconds, 1),
        "checkpoint": best,
    }
    for key in METRICS:
        value = results.get(f"test_{key}")
        row[key] = round(float(value), 2) if value is not None else ""
    row["best_val_cider"] = round(float(score), 2) if score is not None else ""
    print(f"[scst] {NAMES[model]} {stage}: test CIDEr-D {row['cider']}", file=sys.stderr)
    return row


def format_table(rows: list[dict], args: argparse.Namespace) -> str:
    head = "| model | training | BLEU-4 | METEOR | ROUGE-L | CIDEr-D | CIDEr-D vs cross-entropy |"
    lines = [head, "|---|---|---|---|---|---|---|"]
    for model in dict.fromkeys(r["model"] for r in rows):
        xe = next((r for r in rows if r["model"] == model and r["stage"] == "xe"), None)
        for r in (r for r in rows if r["model"] == model):
            n = r["epochs"] or args.scst_epochs
            what = "cross-entropy" if r["stage"] == "xe" else f"+ SCST, {n} epoch{'s' * (n != 1)}"
            gain = ""
            if r["stage"] == "scst" and xe is not None and xe["cider"]:
                gain = f"{100 * (r['cider'] / xe['cider'] - 1):+.1f}%"
            meteor = "needs java" if r["meteor"] == "" else f"{r['meteor']:.1f}"
            cells = [
                NAMES[model],
                what,
                f"{r['bleu4']:.1f}",
                meteor,
                f"{r['rouge_l']:.1f}",
                f"{r['cider']:.1f}",
                gain,
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    from matplotlib.figure import Figure

    keys = [k for k in ("bleu4", "meteor", "rouge_l", "cider") if any(r[k] != "" for r in rows)]
    labels = {"bleu4": "BLEU-4", "meteor": "METEOR", "rouge_l": "ROUGE-L", "cider": "CIDEr-D"}
    fig = Figure(figsize=(max(3.0, 1.05 * len(rows) + 0.4) * len(keys), 3.4))  # room for every bar label
    groups = [(r["model"], r["stage"]) for r in rows]
    for i, key in enumerate(keys):
        ax = fig.add_subplot(1, len(keys), i + 1)
        values = [r[key] if r[key] != "" else 0.0 for r in rows]
        colors = ["C0" if stage == "xe" else "C1" for _, stage in groups]
        bars = ax.bar(range(len(rows)), values, color=colors)
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
        ax.set_xticks(
            range(len(rows)), [f"{NAMES[m]}\n{'XE' if s == 'xe' else '+SCST'}" for m, s in groups], fontsize=7
        )
        ax.set_title(f"test {labels[key]}", fontsize=9)
    fig.suptitle("captioning on shapes: cross-entropy (XE), then self-critical training", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def checkpoints(pairs: list[str]) -> dict[str, str]:
    found = {}
    for pair in pairs:
        model, _, path = pair.partition("=")
        if model not in CONFIGS or not path:
            raise argparse.ArgumentTypeError(
                f"--xe-checkpoint {pair!r}: give MODEL=CKPT, MODEL one of {', '.join(CONFIGS)}"
            )
        if not Path(path).is_file():
            raise argparse.ArgumentTypeError(f"--xe-checkpoint {pair!r}: no such file {path}")
        found[model] = path
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m captioning.experiments.scst", description=__doc__.split("\n")[0],
        epilog="Other --model.*, --trainer.* and --data.* arguments go to LightningCLI for every run.",
    )  # fmt: skip
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--models", default="showtell,attention", help="comma-separated: showtell, attention")
    parser.add_argument("--scst-epochs", type=int_at_least(1), default=5)
    parser.add_argument("--scst-lr", type=positive_float, default=2e-4)
    parser.add_argument("--scst-samples", type=int_at_least(1), default=5)
    parser.add_argument("--scst-baseline", choices=("greedy", "mean"), default="greedy")
    parser.add_argument("--xe-checkpoint", action="append", default=[], metavar="MODEL=CKPT",
                        help="a cross-entropy checkpoint to start from instead of training one")  # fmt: skip
    parser.add_argument("--source", type=Path, default=Path("data/corpora/shapes/dataset_shapes.json"))
    parser.add_argument("--overwrite", action="store_true", help="replace results already in --out")
    return parser


def main(argv: list[str] | None = None) -> list[dict]:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    lightning_overrides(parser, extra, RESERVED)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    bad = [m for m in models if m not in CONFIGS]
    if bad or not models:
        parser.error(f"--models {args.models}: choose from {', '.join(CONFIGS)}")
    try:
        given = checkpoints(args.xe_checkpoint)
    except argparse.ArgumentTypeError as e:
        parser.error(str(e))
    out = prepare_out(parser, args.out, FILES, args.overwrite)
    os.environ.setdefault("WANDB_MODE", "offline")
    start = time.perf_counter()
    rows = []
    try:
        prepare_data(args.source, "scst")
        for model in models:
            xe = run(model, "xe", args, out, extra, given.get(model))
            rows.append(xe)
            rows.append(run(model, "scst", args, out, extra, xe["checkpoint"]))
    except CorpusError as e:
        raise SystemExit(
            f"error: {e}; draw it again with `python -m data.builders.shapes --out DIR --force`"
        ) from None
    except DataError as e:
        raise SystemExit(f"error: {e}") from None
    seconds = time.perf_counter() - start
    write_csv(out / "scst.csv", [{k: r[k] for k in COLUMNS} for r in rows], COLUMNS)
    plot(rows, out / "scst.png")
    table = format_table(rows, args)
    (out / "scst.md").write_text(table + "\n")
    runs = [{k: r[k] for k in ("model", "stage", "checkpoint", "train_seconds")} for r in rows]
    config = dict(
        vars(args), source=str(args.source), lightning_overrides=extra, runs=runs, seconds=round(seconds, 1)
    )
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    print(table)
    print(f"{len(rows)} runs in {seconds / 60:.1f} min; wrote {', '.join(str(out / f) for f in FILES)}")
    return rows


if __name__ == "__main__":
    main()
