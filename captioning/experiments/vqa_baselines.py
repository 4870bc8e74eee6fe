"""The four VQA models on the shapes questions, several seeds: VQA accuracy overall and by type.

    python -m captioning.experiments.vqa_baselines --out DIR
        [--models lstm_q_norm_i,attention,blind,image_only] [--seeds 3] [--epochs 6]
        [--data data/corpora/shapes_vqa] [--config configs/vqa/shapes_attention.yaml]
        [--overwrite] [any LightningCLI override for every run, e.g. --model.init_args.joint_size 512]

Each (model, seed) trains from the config with `model` set, seed_everything and the data order's
seed = the seed, max_epochs = --epochs, one device, through the same LightningCLI as `python -m
captioning fit`; its best checkpoint (val VQA accuracy) is then tested. The frozen CNN's grid
features come from the feature cache, so the CNN runs once for all the trainings. Where --data has
no questions yet they are generated (``data.builders.shapes_vqa``, from the shapes set, itself drawn with
its defaults when missing).

The `majority` row is the test accuracy of always giving the most frequent training answer of the
question's type (the type given for free): what a model that ignores the image can reach on
balanced answers, and the bar the blind model is checked against (at most +5 points per type).

Outputs in DIR: vqa_baselines.csv (model, seed, overall and per-type test accuracy, best val
accuracy, epochs, train_seconds), vqa_baselines.png (accuracy by question type per model: the mean
over seeds, one dot per seed), vqa_baselines.md (the table, mean ± sd, and the issue's checks),
config.json (arguments, checkpoints, run times) and runs/.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from statistics import mean, stdev

from captioning.experiments.image_input import prepare_data
from captioning.vqa.metrics import vqa_scores
from captioning.vqa.network import KINDS
from data.builders.shapes_vqa import TYPES
from data.core.corpus_io import CorpusError
from data.core.parallel import DataError
from seq2seq.experiments.cli import int_at_least, lightning_overrides, prepare_out, write_csv

NAMES = {"attention": "attention (SAN, 2 hops)", "lstm_q_norm_i": "LSTM Q + norm I",
         "blind": "blind (Q only)", "image_only": "image only", "majority": "majority per type"}  # fmt: skip
RESERVED = ("--data.init_args.root", "--data.init_args.seed", "--model.init_args.model",
            "--trainer.default_root_dir", "--trainer.max_epochs", "--trainer.devices",
            "--seed_everything")  # fmt: skip
FILES = ["vqa_baselines.csv", "vqa_baselines.png", "vqa_baselines.md", "config.json"]
COLUMNS = ["model", "seed", "overall", *TYPES, "best_val_acc", "epochs", "train_seconds"]


def prepare_questions(root: Path) -> None:
    """The shapes questions in `root` (and the shapes set beside them) where they are missing."""
    if (root / "train_questions.json").exists():
        return
    from data.builders import shapes_vqa

    source = Path("data/corpora/shapes")
    prepare_data(source / "dataset_shapes.json", "vqa_baselines")
    print(f"[vqa_baselines] writing the shapes questions in {root}", file=sys.stderr)
    shapes_vqa.write(root, shapes_vqa.build(source))


def majority_row(root: Path) -> dict:
    """Test accuracy of the most frequent training answer of each question type."""
    from data.core.vqa import read_vqa

    def read(split: str):
        return read_vqa(root / f"{split}_questions.json", root / f"{split}_annotations.json",
                        images=root / f"{split}_images.json", check_images=False)  # fmt: skip

    by_type = defaultdict(Counter)
    for item in read("train"):
        by_type[item.question_type][item.answer] += 1
    guess = {t: c.most_common(1)[0][0] for t, c in by_type.items()}
    scores = vqa_scores(
        (guess.get(it.question_type, ""), it.answers, it.question_type) for it in read("test")
    )
    return {"model": "majority", "seed": "", **{k: round(v, 2) for k, v in scores.items()},
            "best_val_acc": "", "epochs": "", "train_seconds": 0.0}  # fmt: skip


def train_and_test(model: str, seed: int, args: argparse.Namespace, out: Path, extra: list[str]) -> dict:
    """One `python -m captioning fit` run, then the test of its best checkpoint -> a CSV row."""
    from seq2seq.training.cli import main as cli

    began = time.perf_counter()
    run = cli([
        "fit", "-c", args.config, "--seed_everything", str(seed),
        "--trainer.max_epochs", str(args.epochs), "--trainer.devices", "1",
        "--trainer.default_root_dir", str(out / "runs"), "--run_name", f"{model}_seed{seed}",
        "--data.init_args.root", str(args.data), "--data.init_args.seed", str(seed),
        "--model.init_args.model", model, *extra,
    ])  # fmt: skip
    trainer, callback = run.trainer, run.trainer.checkpoint_callback
    seconds = time.perf_counter() - began
    best = callback.best_model_path or callback.last_model_path
    results = trainer.test(run.model, datamodule=run.datamodule, ckpt_path=best, verbose=False)[0]
    score = callback.best_model_score
    return {
        "model": model, "seed": seed, "overall": round(results["test_acc"], 2),
        **{t: round(results.get(f"test_acc_{t}", float("nan")), 2) for t in TYPES},
        "best_val_acc": round(float(score), 2) if score is not None else "",
        "epochs": trainer.current_epoch, "train_seconds": round(seconds, 1), "checkpoint": best,
    }  # fmt: skip


def _cell(values: list[float]) -> str:
    return f"{mean(values):.1f}" + (f" ± {stdev(values):.1f}" if len(values) > 1 else "")


def format_table(rows: list[dict]) -> str:
    """A Markdown table: test VQA accuracy (%) per model and question type, mean ± sd over seeds."""
    head = ["model", "seeds", "overall", *TYPES]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        seeds = str(len(mine)) if model != "majority" else "-"
        cells = [_cell([r[k] for r in mine]) for k in ("overall", *TYPES)]
        lines.append("| " + " | ".join([NAMES.get(model, model), seeds, *cells]) + " |")
    return "\n".join(lines)


def checks(rows: list[dict]) -> list[str]:
    """The issue's targets, each with the measured numbers and whether it holds."""

    def avg(model: str, key: str) -> float | None:
        values = [r[key] for r in rows if r["model"] == model]
        return mean(values) if values else None

    out = []
    att = avg("attention", "overall")
    if att is not None:
        out.append(f"- attention overall {att:.1f}% (target >= 90): {'met' if att >= 90 else 'NOT met'}")
    a, lq = avg("attention", "relation"), avg("lstm_q_norm_i", "relation")
    if a is not None and lq is not None:
        out.append(f"- relation: lstm_q_norm_i {lq:.1f}% vs attention {a:.1f}%: "
                   f"{a - lq:+.1f} points for attention")  # fmt: skip
    if avg("blind", "overall") is not None:
        over = [(t, avg("blind", t), avg("majority", t)) for t in TYPES]
        worst = max(over, key=lambda x: x[1] - x[2])
        ok = all(b <= m + 5 for _, b, m in over)
        out.append(f"- blind vs majority per type: largest margin {worst[1] - worst[2]:+.1f} points "
                   f"({worst[0]}: {worst[1]:.1f} vs {worst[2]:.1f}; target <= +5): "
                   f"{'met' if ok else 'NOT met'}")  # fmt: skip
    return out


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in rows))
    keys = ["overall", *TYPES]
    width = 0.8 / len(models)
    fig, ax = plt.subplots(figsize=(9.0, 4.2))
    for i, model in enumerate(models):
        mine = [r for r in rows if r["model"] == model]
        xs = [k - 0.4 + width * (i + 0.5) for k in range(len(keys))]
        color = "0.6" if model == "majority" else f"C{i}"
        ax.bar(xs, [mean(r[k] for r in mine) for k in keys], width * 0.9, color=color,
               label=NAMES.get(model, model))  # fmt: skip
        if len(mine) > 1:
            for x, k in zip(xs, keys):
                ax.plot([x] * len(mine), [r[k] for r in mine], "o", color="black", markersize=2.5)
    ax.axhline(90, color="0.3", lw=0.8, ls="--")
    ax.set_xticks(range(len(keys)), keys)
    ax.set_ylabel("test VQA accuracy (%)")
    ax.set_ylim(0, 105)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper center", ncol=len(models), bbox_to_anchor=(0.5, -0.08), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def models_list(text: str) -> list[str]:
    models = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in models if m not in KINDS]
    if bad or not models:
        raise argparse.ArgumentTypeError(f"models are {', '.join(KINDS)}; got {text!r}")
    return list(dict.fromkeys(models))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m captioning.experiments.vqa_baselines", description=__doc__.split("\n")[0],
        epilog="Other --model.*, --trainer.* and --data.* arguments go to LightningCLI for every run.",
    )  # fmt: skip
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--models", type=models_list, default=list(KINDS), help="comma-separated")
    parser.add_argument("--seeds", type=int_at_least(1), default=3, help="seeds 0..N-1 for every model")
    parser.add_argument("--epochs", type=int_at_least(1), default=6, help="max_epochs of each training")
    parser.add_argument("--data", type=Path, default=Path("data/corpora/shapes_vqa"), help="the questions")
    parser.add_argument("--config", default="configs/vqa/shapes_attention.yaml", help="a VQA config")
    parser.add_argument("--overwrite", action="store_true", help="replace results already in --out")
    return parser


def main(argv: list[str] | None = None) -> list[dict]:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    lightning_overrides(parser, extra, RESERVED)
    if not Path(args.config).is_file():
        parser.error(f"--config {args.config}: no such file; run from the repository root or give the path")
    out = prepare_out(parser, args.out, FILES, args.overwrite)
    os.environ.setdefault("WANDB_MODE", "offline")
    start = time.perf_counter()
    rows = []
    try:
        prepare_questions(args.data)
        for model in args.models:
            for seed in range(args.seeds):
                rows.append(train_and_test(model, seed, args, out, extra))
                print(f"[vqa_baselines] {model} seed {seed}: test accuracy {rows[-1]['overall']:.2f}",
                      file=sys.stderr)  # fmt: skip
        rows.append(majority_row(args.data))
    except CorpusError as e:  # a shapes folder left half-drawn by an interrupted run
        raise SystemExit(
            f"error: {e}; draw it again with `python -m data.builders.shapes --out DIR --force`"
        ) from None
    except DataError as e:
        raise SystemExit(f"error: {e}") from None
    seconds = time.perf_counter() - start
    write_csv(out / "vqa_baselines.csv", [{k: r[k] for k in COLUMNS} for r in rows], COLUMNS)
    plot(rows, out / "vqa_baselines.png", f"VQA on the shapes questions (test, <= {args.epochs} epochs)")
    table = format_table(rows)
    notes = "\n".join(checks(rows))
    minutes = f"{len(rows) - 1} trainings in {seconds / 60:.1f} min"
    (out / "vqa_baselines.md").write_text(f"{table}\n\n{notes}\n\n{minutes}\n")
    runs = [
        {k: r[k] for k in ("model", "seed", "checkpoint", "train_seconds")} for r in rows if r["seed"] != ""
    ]
    config = dict(
        vars(args), data=str(args.data), lightning_overrides=extra, runs=runs, seconds=round(seconds, 1)
    )
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    print(f"{table}\n{notes}\n{minutes}; wrote {', '.join(str(out / f) for f in FILES)}")
    return rows


if __name__ == "__main__":
    main()
