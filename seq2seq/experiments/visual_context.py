"""Visual context: does a multimodal translator read the image, or only the sentence?

    python -m seq2seq.experiments.visual_context --out DIR [--seeds 3] [--epochs N]
        [--fusions none,decinit,flat,doubly] [--sources en,en_masked] [--data-dir DIR]
        [--n-train 4000] [--n-dev 300] [--n-test 500] [--overwrite]
        [any LightningCLI override for every model, e.g. --model.init_args.rnn.hidden_size 64]

The probes of Caglayan et al. 2019 ("Probing the Need for Visual Context in Multimodal Machine
Translation") and Elliott 2018 ("Adversarial evaluation of multimodal MT") on the shapes scenes
(data.builders.shapes_mmt: English descriptions of a rendered scene, German translations with gender, case
and adjective endings). For every source side, fusion and seed, configs/translation/shapes_mmt.yaml
is trained through the same LightningCLI as `python -m seq2seq fit` (seed_everything and the data
order's seed = the seed; best checkpoint on dev BLEU), then tested twice with beam search:

* with the right image of every test sentence (congruent), and
* with the test images shuffled among the sentences (incongruent; the same permutation for every
  model), which cannot hurt a model that ignores the image.

Sources: ``en`` (the full English sentence: the image adds nothing the translation needs) and
``en_masked`` (every colour word replaced by ``[v]``: only the image can tell the colour).
Fusions: ``none`` (text only), ``decinit``, ``flat`` and ``doubly`` (seq2seq/modules/decoder.py).
Metrics: sacreBLEU against the German reference and the share of the reference's colour words that
the output has in the same place (data.builders.shapes_mmt.colour_accuracy; chance is 1 in 8 colours).

The frozen EfficientNet-Lite0 runs once per image (the feature cache, DIR/feature_cache, shared by
every run); the data is built into DIR/data unless --data-dir names a shapes_mmt folder (with
--mask). Outputs in DIR: visual_context.csv (source, fusion, seed, images, bleu, colour_accuracy,
train_seconds), visual_context.png (BLEU and colour accuracy per fusion, mean and sd over seeds),
visual_context.md (the table), config.json (arguments, run times) and runs/ (each training's logs,
checkpoints and config.yaml).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from statistics import mean, stdev

from data.core.corpus_io import CorpusError
from data.core.parallel import DataError
from seq2seq.experiments.cli import int_at_least, lightning_overrides, prepare_out, write_config, write_csv
from seq2seq.training.metrics import sacre_bleu

FUSIONS = ("none", "decinit", "flat", "doubly")
SOURCES = ("en", "en_masked")
IMAGES = ("congruent", "incongruent")
SHUFFLE_SEED = 12345  # the one permutation of the test images every model sees
OUTPUTS = ["visual_context.csv", "visual_context.png", "visual_context.md", "config.json"]
COLUMNS = ["source", "fusion", "seed", "images", "bleu", "colour_accuracy", "train_seconds"]


def prepare_data(args: argparse.Namespace, out: Path) -> Path:
    """The shapes_mmt folder: --data-dir, or built into DIR/data (kept for a rerun)."""
    from data.builders.shapes_mmt import build_shapes_mmt

    if args.data_dir:
        data = Path(args.data_dir)
        missing = [f for f in ("train.en_masked", "test_images.txt") if not (data / f).is_file()]
        if missing:
            hint = f"python -m data.builders.shapes_mmt --out {data} --mask"
            raise DataError(f"{data}: no {missing[0]}; build it with {hint}")
        return data
    data = out / "data"
    if not (data / "stats.json").is_file():
        build_shapes_mmt(
            data, n_train=args.n_train, n_dev=args.n_dev, n_test=args.n_test, seed=0, mask=True, force=True
        )
    return data


def train(source: str, fusion: str, seed: int, args, data: Path, out: Path, extra: list[str]):
    """One `python -m seq2seq fit` run -> the LightningCLI (its trainer, model and datamodule)."""
    from seq2seq.training.cli import main as cli

    return cli([
        "fit", "-c", str(Path(args.configs) / "shapes_mmt.yaml"), "--seed_everything", str(seed),
        *(["--trainer.max_epochs", str(args.epochs)] if args.epochs else []),
        "--trainer.default_root_dir", str(out / "runs"), "--run_name", f"{source}_{fusion}_seed{seed}",
        "--trainer.devices", "1", "--model.init_args.fusion", fusion,
        "--data.init_args.data_dir", str(data), "--data.init_args.image_dir", str(data / "images"),
        "--data.init_args.cache_dir", str(out / "feature_cache"), "--data.init_args.src_lang", source,
        "--data.init_args.seed", str(seed), *extra,
    ])  # fmt: skip


def test(run, images: str) -> tuple[float, float]:
    """(test BLEU, colour accuracy) of the run's best checkpoint with congruent or shuffled images."""
    from data.builders.shapes_mmt import colour_accuracy

    dm = run.datamodule
    if images == "incongruent":
        init = {k: v for k, v in dm.hparams.items() if not k.startswith("_")}
        dm = type(dm)(**{**init, "shuffle_images": SHUFFLE_SEED})
    callback = run.trainer.checkpoint_callback
    run.trainer.test(run.model, datamodule=dm, ckpt_path=callback.best_model_path or "last", verbose=False)
    outputs = sorted(run.model.test_outputs, key=lambda o: o["index"])
    hyps, refs = [o["hyp"] for o in outputs], [o["ref"] for o in outputs]
    return sacre_bleu(hyps, refs)[0], 100 * colour_accuracy(hyps, refs)


# -- table and plot --------------------------------------------------------------------------------


def _cells(rows: list[dict], metric: str) -> dict[tuple[str, str, str], list[float]]:
    cells: dict[tuple[str, str, str], list[float]] = {}
    for r in rows:
        cells.setdefault((r["source"], r["fusion"], r["images"]), []).append(float(r[metric]))
    return cells


def _mean_sd(values: list[float]) -> str:
    return f"{mean(values):.1f} ± {stdev(values):.1f}" if len(values) > 1 else f"{values[0]:.1f}"


def format_table(rows: list[dict]) -> str:
    """Markdown: one line per source and fusion; BLEU and colour accuracy, congruent / incongruent."""
    bleu, colour = _cells(rows, "bleu"), _cells(rows, "colour_accuracy")
    lines = [
        "| source | fusion | BLEU | BLEU, shuffled images | colour words right (%) | colour, shuffled |",
        "|---|---|---|---|---|---|",
    ]
    for source in dict.fromkeys(r["source"] for r in rows):
        for fusion in dict.fromkeys(r["fusion"] for r in rows):
            key = (source, fusion)
            if key + ("congruent",) not in bleu:
                continue
            lines.append(
                f"| {source} | {fusion} | {_mean_sd(bleu[key + ('congruent',)])} | "
                f"{_mean_sd(bleu[key + ('incongruent',)])} | {_mean_sd(colour[key + ('congruent',)])} | "
                f"{_mean_sd(colour[key + ('incongruent',)])} |"
            )
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    """Two panels (BLEU, colour accuracy); bars per fusion, grouped by source and images."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fusions = list(dict.fromkeys(r["fusion"] for r in rows))
    groups = [(s, i) for s in dict.fromkeys(r["source"] for r in rows) for i in IMAGES]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    width = 0.8 / len(fusions)
    for ax, metric, label in zip(axes, ("bleu", "colour_accuracy"), ("test BLEU", "colour words right (%)")):
        cells = _cells(rows, metric)
        for k, fusion in enumerate(fusions):
            values = [cells.get((s, fusion, i), [0.0]) for s, i in groups]
            ax.bar(
                [g + (k - (len(fusions) - 1) / 2) * width for g in range(len(groups))],
                [mean(v) for v in values], width, yerr=[stdev(v) if len(v) > 1 else 0 for v in values],
                label=fusion, capsize=2,
            )  # fmt: skip
        ax.set_xticks(range(len(groups)), [f"{s}\n{i}" for s, i in groups], fontsize=8)
        ax.set_ylabel(label)
        ax.set_ylim(0, 105)
        if metric == "colour_accuracy":
            ax.axhline(100 / 8, color="grey", lw=0.8, ls="--", label="chance (1 in 8)")
        ax.legend(fontsize=7)
    fig.suptitle("Visual context on shapes_mmt: full vs colour-masked source, right vs shuffled images")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m seq2seq.experiments.visual_context", description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 2)[2],
    )  # fmt: skip
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--seeds", type=int_at_least(1), default=3)
    parser.add_argument("--epochs", type=int_at_least(1), help="max epochs (default: the config's)")
    parser.add_argument("--fusions", default=",".join(FUSIONS), help="comma-separated: " + ", ".join(FUSIONS))
    parser.add_argument("--sources", default=",".join(SOURCES), help="comma-separated: " + ", ".join(SOURCES))
    parser.add_argument("--data-dir", help="a shapes_mmt folder built with --mask (default: DIR/data)")
    parser.add_argument("--n-train", type=int_at_least(1), default=4000)
    parser.add_argument("--n-dev", type=int_at_least(1), default=300)
    parser.add_argument("--n-test", type=int_at_least(1), default=500)
    parser.add_argument("--configs", default="configs/translation", help="folder of shapes_mmt.yaml")
    parser.add_argument("--overwrite", action="store_true", help="replace earlier results in --out")
    return parser


def _choices(parser, text: str, allowed: tuple[str, ...], option: str) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    bad = [v for v in values if v not in allowed]
    if bad or not values:
        parser.error(f"{option}: {bad[0] if bad else 'nothing given'} is not one of {', '.join(allowed)}")
    return values


def main(argv: list[str] | None = None) -> list[dict]:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    reserved = ("--model.init_args.fusion", "--data.init_args.src_lang", "--data.init_args.data_dir")
    lightning_overrides(parser, extra, reserved)
    fusions = _choices(parser, args.fusions, FUSIONS, "--fusions")
    sources = _choices(parser, args.sources, SOURCES, "--sources")
    if not (Path(args.configs) / "shapes_mmt.yaml").is_file():
        parser.error(f"--configs {args.configs}: no shapes_mmt.yaml; run from the repository root")
    out = prepare_out(parser, args.out, OUTPUTS, args.overwrite)
    start = time.time()
    try:
        data = prepare_data(args, out)
    except (CorpusError, DataError) as e:
        raise SystemExit(f"error: {e}") from None
    rows = []
    for source in sources:
        for fusion in fusions:
            for seed in range(args.seeds):
                t0 = time.time()
                run = train(source, fusion, seed, args, data, out, extra)
                seconds = round(time.time() - t0, 1)
                for images in IMAGES:
                    bleu, colour = test(run, images)
                    rows.append({
                        "source": source, "fusion": fusion, "seed": seed, "images": images,
                        "bleu": round(bleu, 2), "colour_accuracy": round(colour, 2),
                        "train_seconds": seconds,
                    })  # fmt: skip
                    print(
                        f"[visual_context] {source} {fusion} seed {seed} {images}: BLEU {bleu:.2f}, "
                        f"colours {colour:.1f}% ({seconds:.0f} s training)",
                        file=sys.stderr,
                    )
                write_csv(out / "visual_context.csv", rows, COLUMNS)  # after every run: partial results
    table = format_table(rows)
    (out / "visual_context.md").write_text(table + "\n")
    plot(rows, out / "visual_context.png")
    write_config(out / "config.json", args, time.time() - start)
    print(table)
    print(f"wrote {out}/visual_context.csv, .png, .md in {(time.time() - start) / 60:.1f} min")
    return rows


if __name__ == "__main__":
    main()
