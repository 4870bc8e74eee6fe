"""Length curve: BLEU and exact match against source length, fixed-vector decoder vs attention.

    python -m seq2seq.experiments.length_curve --out DIR [--task reverse|gettext] [--epochs N]
        [--seeds 3] [--checkpoints FIXED ATTENTION] [--bucket-width 5] [--beam-size 5]
        [--n-train 20000] [--n-dev 1000] [--n-test 1200] [--data-dir DIR] [--overwrite]
        [any LightningCLI override for both models, e.g. --model.init_args.rnn.hidden_size 64]

The claim tested (seed 002 §8.5.2, Fig. 8-21 vs 8-22; Bahdanau et al. 2015, Fig. 2): a decoder that
sees the source only through one fixed-length vector loses long sentences, while one that attends
over all encoder states does not. For each seed, `configs/translation/{task}_fixed.yaml` and
`{task}_attention.yaml` (identical sizes; only `context` differs) are trained through the same
LightningCLI as `python -m seq2seq fit` (seed_everything and the data order's seed = the seed,
max_epochs = --epochs or the config's, one device, best checkpoint on dev BLEU), or --checkpoints
gives the two trained models (checked: their `context` and languages). Each decodes the test set
with beam search (--beam-size 5, GNMT length penalty 0.6), without <unk> replacement (only the
attention model could use it) and without cutting sources at the model's max_len. Test sentences
are grouped into buckets of --bucket-width source lengths in words (a bucket with fewer than
--min-count sentences joins the next longer one), the same buckets for every model, and each
bucket gets sacreBLEU and the exact-match rate (output == reference, compared as sacreBLEU's 13a
tokens). The copy baseline scores the source itself as the output.

Tasks. reverse: the synthetic reversal corpus (data.builders.synthetic, vocabulary 20) with training and dev
sources of 5-20 tokens and test sources of 5-60, so the curve goes past the training lengths;
built into DIR/data unless --data-dir names one. gettext: English -> German software messages
(data.builders.gettext, buckets by source length in words), from data/corpora/gettext-en-de, built there
when missing.

Outputs in DIR: length_curve.csv (task, model, seed, bucket, min_len, max_len, mean_len, count,
bleu, exact_match; bucket "all" rows hold the whole test set; model "copy" is the baseline),
length_curve.png (BLEU and exact match against source length, one curve per model: mean over
seeds, band from the lowest to the highest seed), config.json (arguments, data statistics, run
times, checkpoints) and runs/ with each training's logs, checkpoints and config.yaml (the exact
configuration LightningCLI ran).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from statistics import mean, stdev

from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

from data.builders.synthetic import build_synthetic_corpus
from data.core.corpus_io import CorpusError
from data.core.parallel import DataError, ParallelText, find_split
from seq2seq.experiments.cli import int_at_least, lightning_overrides, prepare_out, write_csv
from seq2seq.training.checkpoint import CheckpointError, load_checkpoint
from seq2seq.training.metrics import sacre_bleu
from seq2seq.translation.predictor import Translator

MODELS = ("fixed", "attention")
TASKS = {
    # task: (languages, default data folder or None for DIR/data)
    "reverse": (("src", "tgt"), None),
    "gettext": (("en", "de"), Path("data/corpora/gettext-en-de")),
}
SYNTHETIC = {"vocab": 20, "train_len": (5, 20), "test_len": (5, 60)}
# set by the experiment for every run (use --epochs, --data-dir and --out instead)
RESERVED = (
    "--data.init_args.data_dir",
    "--data.init_args.seed",
    "--trainer.default_root_dir",
    "--trainer.max_epochs",
)
_TOKENIZE_13A = Tokenizer13a()
FILES = ["length_curve.csv", "length_curve.png", "config.json"]
COLUMNS = [
    "task",
    "model",
    "seed",
    "bucket",
    "min_len",
    "max_len",
    "mean_len",
    "count",
    "bleu",
    "exact_match",
]


# -- buckets and scores ----------------------------------------------------------------------------


def bucket_by_length(lengths: list[int], width: int, min_count: int = 1) -> list[list[int]]:
    """Sentence indices grouped by length: bins [k*width, (k+1)*width) in increasing order; a bin
    with fewer than `min_count` sentences joins the next longer one, and a short remainder at the
    end joins the last group. Every index lands in exactly one group; empty bins give none."""
    if width < 1 or min_count < 1:
        raise ValueError(f"width and min_count must be >= 1, got {width}, {min_count}")
    bins: dict[int, list[int]] = {}
    for i, n in enumerate(lengths):
        bins.setdefault(n // width, []).append(i)
    groups: list[list[int]] = []
    pending: list[int] = []
    for key in sorted(bins):
        pending += bins[key]
        if len(pending) >= min_count:
            groups.append(pending)
            pending = []
    if pending:
        if groups:
            groups[-1] += pending
        else:
            groups.append(pending)
    return groups


def same_text(a: str, b: str) -> bool:
    """Exact match of the tokens sacreBLEU counts (13a tokenization): spacing does not matter."""
    return _TOKENIZE_13A(a).split() == _TOKENIZE_13A(b).split()


def score(hyps: list[str], refs: list[str]) -> tuple[float, float]:
    """-> (sacreBLEU 0-100, exact-match rate 0-100) of a set of sentences."""
    bleu, _ = sacre_bleu(hyps, refs)
    exact = 100.0 * sum(same_text(h, r) for h, r in zip(hyps, refs)) / len(hyps)
    return bleu, exact


def bucket_rows(
    task: str, model: str, seed: int | str, hyps: list[str], refs: list[str], lengths: list[int],
    groups: list[list[int]],
) -> list[dict]:  # fmt: skip
    """One row per bucket plus the "all" row for the whole test set."""
    rows = []
    for group in groups + [list(range(len(hyps)))]:
        bleu, exact = score([hyps[i] for i in group], [refs[i] for i in group])
        n = [lengths[i] for i in group]
        rows.append({
            "task": task, "model": model, "seed": seed,
            "bucket": "all" if len(rows) == len(groups) else f"{min(n)}-{max(n)}",
            "min_len": min(n), "max_len": max(n), "mean_len": round(mean(n), 2), "count": len(group),
            "bleu": round(bleu, 2), "exact_match": round(exact, 2),
        })  # fmt: skip
    return rows


# -- data, training, decoding ----------------------------------------------------------------------


def prepare_data(args: argparse.Namespace, out: Path) -> tuple[Path, ParallelText, dict]:
    """The task's corpus (built when missing) -> its folder, the test split and its statistics."""
    (src_lang, tgt_lang), default = TASKS[args.task]
    data_dir = Path(args.data_dir) if args.data_dir else (default or out / "data")
    has_train = (data_dir / f"train.{src_lang}").exists() or (data_dir / "train.tsv").exists()
    if not has_train:  # (the training split itself is read by the datamodule, once)
        if args.task == "reverse":
            print(f"[length_curve] writing the reversal corpus to {data_dir}", file=sys.stderr)
            build_synthetic_corpus(
                "reverse", data_dir, SYNTHETIC["vocab"], SYNTHETIC["train_len"], SYNTHETIC["test_len"],
                n=args.n_train, n_dev=args.n_dev, n_test=args.n_test, seed=args.data_seed,
            )  # fmt: skip
        else:
            from data.builders.gettext import build_gettext_corpus

            print(f"[length_curve] building the gettext en-de corpus in {data_dir}", file=sys.stderr)
            build_gettext_corpus("en", "de", data_dir)
    test = find_split(data_dir, "test", src_lang, tgt_lang)
    if test is None or len(test) == 0:
        raise DataError(f"{data_dir}: no test.{src_lang} + test.{tgt_lang} to measure the length curve on")
    stats_file = data_dir / "stats.json"
    stats = json.loads(stats_file.read_text()) if stats_file.is_file() else {}
    if args.task == "reverse" and not args.data_dir:  # DIR/data is ours: it must be what was asked for
        asked = {"train": args.n_train, "dev": args.n_dev, "test": args.n_test}
        if stats.get("pairs") != asked or stats.get("seed") != args.data_seed:
            raise DataError(
                f"{data_dir} holds a corpus of {stats.get('pairs')} pairs (seed {stats.get('seed')}), "
                f"not the {asked} (seed {args.data_seed}) asked for: use another --out, or delete {data_dir}"
            )
    return data_dir, test, stats


def train(
    task: str, model: str, seed: int, args: argparse.Namespace, data_dir: Path, out: Path, extra: list[str]
) -> str:
    """One `python -m seq2seq fit` run of configs/translation/{task}_{model}.yaml -> its best checkpoint."""
    from seq2seq.training.cli import main as cli

    config = Path(args.configs) / f"{task}_{model}.yaml"
    if not config.is_file():
        raise DataError(f"{config}: no such config; run from the repository root or pass --configs DIR")
    run = cli([
        "fit", "-c", str(config), "--seed_everything", str(seed),
        *(["--trainer.max_epochs", str(args.epochs)] if args.epochs else []),
        "--trainer.default_root_dir", str(out / "runs"), "--run_name", f"{task}_{model}_seed{seed}",
        "--data.init_args.data_dir", str(data_dir), "--data.init_args.seed", str(seed),
        "--trainer.devices", "1", *extra,
    ])  # fmt: skip
    callback = run.trainer.checkpoint_callback
    return callback.best_model_path or callback.last_model_path


def check_checkpoint(path: str, model: str, task: str) -> None:
    """A checkpoint given as --checkpoints FIXED ATTENTION must be that model, trained on the task's
    languages; CheckpointError naming the file otherwise."""
    ckpt = load_checkpoint(path)
    context = ckpt.get("hyper_parameters", {}).get("context")
    if context != model:
        raise CheckpointError(
            f"{path}: a {context!r} model, given as the {model!r} one; order: FIXED ATTENTION"
        )
    languages = (ckpt.get("seqcap") or {}).get("src_lang"), (ckpt.get("seqcap") or {}).get("tgt_lang")
    if languages != TASKS[task][0]:
        raise CheckpointError(
            f"{path}: trained on {'-'.join(map(str, languages))}, not the {task} task's data"
        )


def decode(checkpoint: str, test: ParallelText, args: argparse.Namespace) -> list[str]:
    """Beam-search translations of the test sources. No <unk> replacement (only the attention
    model could use it) and no cut at the model's max_len: the long buckets measure the model."""
    translator = Translator.from_checkpoint(checkpoint, args.device, unk_replace=False)
    translator.max_len = max(
        translator.max_len, *(len(translator.src_tokenizer.tokenize(s)) for s in test.src)
    )
    results = translator.translate(
        test.src, args.beam_size, args.alpha, batch_size=args.batch_size, progress=True
    )
    return [r[0].text for r in results]


# -- table and plot --------------------------------------------------------------------------------


def summarize(rows: list[dict]) -> dict[tuple[str, str], dict]:
    """-> {(model, bucket): {"mean_len", "count", "bleu": [per seed], "exact_match": [per seed]}}"""
    table: dict[tuple[str, str], dict] = {}
    for r in rows:
        cell = table.setdefault(
            (r["model"], r["bucket"]),
            {"mean_len": r["mean_len"], "count": r["count"], "bleu": [], "exact_match": []},
        )
        cell["bleu"].append(r["bleu"])
        cell["exact_match"].append(r["exact_match"])
    return table


def _mean_sd(values: list[float]) -> str:
    return f"{mean(values):.1f}" + (f"±{stdev(values):.1f}" if len(values) > 1 else "")


def format_table(rows: list[dict]) -> str:
    """BLEU per bucket and model (mean ± standard deviation over seeds), then exact match."""
    table = summarize(rows)
    buckets = list(dict.fromkeys(r["bucket"] for r in rows))
    models = list(dict.fromkeys(r["model"] for r in rows))
    lines = []
    for metric in ("bleu", "exact_match"):
        lines.append(
            f"{'BLEU' if metric == 'bleu' else 'exact match %'} by source length (mean±sd over seeds)"
        )
        lines.append(f"{'model':<10}" + "".join(f"{b:>12}" for b in buckets))
        for m in models:
            cells = [table.get((m, b)) for b in buckets]
            lines.append(f"{m:<10}" + "".join(f"{_mean_sd(c[metric]) if c else '-':>12}" for c in cells))
        lines.append("")
    counts = [table[(models[0], b)]["count"] for b in buckets]
    lines.append(f"{'sentences':<10}" + "".join(f"{c:>12}" for c in counts))
    return "\n".join(lines)


def plot(rows: list[dict], path: Path, title: str, train_max: int | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = summarize([r for r in rows if r["bucket"] != "all"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric, label in zip(axes, ("bleu", "exact_match"), ("BLEU", "exact match (%)")):
        for i, model in enumerate(dict.fromkeys(r["model"] for r in rows)):
            cells = sorted((c for (m, _), c in table.items() if m == model), key=lambda c: c["mean_len"])
            if not cells or (model == "copy" and metric == "exact_match"):
                continue
            xs = [c["mean_len"] for c in cells]
            ys = [mean(c[metric]) for c in cells]
            if model == "copy":
                ax.plot(xs, ys, "--", color="gray", linewidth=1, label="copy the source")
                continue
            seeds = len(cells[0][metric])
            ax.plot(
                xs, ys, "-o", color=f"C{i}", markersize=4, label=f"{model} ({seeds} seed{'s' * (seeds > 1)})"
            )
            if seeds > 1:
                lows, highs = [min(c[metric]) for c in cells], [max(c[metric]) for c in cells]
                ax.fill_between(xs, lows, highs, color=f"C{i}", alpha=0.2)
        if train_max is not None:
            ax.axvline(
                train_max,
                color="black",
                linestyle=":",
                linewidth=1,
                label=f"longest training source ({train_max})",
            )
        ax.set_xlabel("source length (mean of the bucket)")
        ax.set_ylabel(label)
        ax.set_ylim(0, 102)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title + "  (band: lowest to highest seed)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# -- command line ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m seq2seq.experiments.length_curve", description=__doc__.split("\n")[0],
        epilog="Other --model.*, --trainer.* and --data.* arguments go to LightningCLI for both models.",
    )  # fmt: skip
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--task", choices=sorted(TASKS), default="reverse")
    parser.add_argument(
        "--epochs",
        type=int_at_least(1),
        help="max_epochs of each training (default: the config's: 10 in reverse_*, 5 in gettext_*)",
    )
    parser.add_argument(
        "--seeds", type=int_at_least(1), default=3, help="seeds 0..N-1, one training of each model per seed"
    )
    parser.add_argument(
        "--checkpoints", nargs=2, metavar=("FIXED", "ATTENTION"),
        help="evaluate these two trained checkpoints instead of training",
    )  # fmt: skip
    parser.add_argument(
        "--data-dir", help="corpus folder (default: DIR/data for reverse, data/corpora/gettext-en-de)"
    )
    parser.add_argument(
        "--configs", default="configs/translation", help="folder of {task}_{fixed,attention}.yaml"
    )
    parser.add_argument("--n-train", type=int_at_least(1), default=20000, help="reverse: training pairs")
    parser.add_argument("--n-dev", type=int_at_least(1), default=1000, help="reverse: dev pairs")
    parser.add_argument(
        "--n-test", type=int_at_least(1), default=1200, help="reverse: test pairs (lengths 5-60)"
    )
    parser.add_argument("--data-seed", type=int, default=0, help="reverse: the corpus's random seed")
    parser.add_argument("--bucket-width", type=int_at_least(1), default=5, help="source lengths per bucket")
    parser.add_argument("--min-count", type=int_at_least(1), default=30, help="fewest sentences in a bucket")
    parser.add_argument("--beam-size", type=int_at_least(1), default=5)
    parser.add_argument("--alpha", type=float, default=0.6, help="GNMT length penalty")
    parser.add_argument("--batch-size", type=int_at_least(1), default=64, help="sentences per decoding batch")
    parser.add_argument("--device", default="auto", help="decoding device: auto, cpu, cuda, ...")
    parser.add_argument("--overwrite", action="store_true", help="replace results already in --out")
    return parser


def main(argv: list[str] | None = None) -> list[dict]:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    lightning_overrides(parser, extra, RESERVED)
    if args.checkpoints and extra:
        parser.error("--checkpoints evaluates trained models: LightningCLI overrides do not apply")
    for checkpoint in args.checkpoints or []:
        if not Path(checkpoint).is_file():
            parser.error(f"--checkpoints: {checkpoint}: no such checkpoint file")
    out = prepare_out(parser, args.out, FILES, args.overwrite)
    os.environ.setdefault("WANDB_MODE", "offline")
    start = time.perf_counter()
    try:
        for model, checkpoint in zip(MODELS, args.checkpoints or []):
            check_checkpoint(checkpoint, model, args.task)
        data_dir, test, stats = prepare_data(args, out)
        refs = test.tgt
        lengths = [len(s.split()) for s in test.src]  # words: the same buckets for every model
        groups = bucket_by_length(lengths, args.bucket_width, args.min_count)
        runs, rows = [], []
        plan = [("given", m, c) for m, c in zip(MODELS, args.checkpoints)] if args.checkpoints else [
            (seed, m, None) for seed in range(args.seeds) for m in MODELS
        ]  # fmt: skip
        for seed, model, checkpoint in plan:
            began = time.perf_counter()
            if checkpoint is None:
                checkpoint = train(args.task, model, seed, args, data_dir, out, extra)
            trained = time.perf_counter()
            hyps = decode(checkpoint, test, args)
            rows += bucket_rows(args.task, model, seed, hyps, refs, lengths, groups)
            decoded = time.perf_counter()
            runs.append({
                "model": model, "seed": seed, "checkpoint": str(checkpoint),
                "train_seconds": round(trained - began, 1), "decode_seconds": round(decoded - trained, 1),
            })  # fmt: skip
            print(f"[length_curve] {model} seed {seed}: test BLEU {rows[-1]['bleu']:.2f}", file=sys.stderr)
        rows += bucket_rows(args.task, "copy", "", test.src, refs, lengths, groups)
    except (DataError, CorpusError, CheckpointError) as e:
        raise SystemExit(f"error: {e}") from None
    seconds = time.perf_counter() - start
    write_csv(out / "length_curve.csv", rows, COLUMNS)
    if args.task == "reverse" and "train_len" in stats:
        (lo, hi), (tlo, thi) = stats["train_len"], stats["test_len"]
        title, train_max = f"Reversal (train {lo}-{hi} tokens, test {tlo}-{thi})", hi
    else:
        title, train_max = f"{args.task} ({len(test)} test sentences, lengths in words)", None
    plot(rows, out / "length_curve.png", f"{title}, beam {args.beam_size}", train_max)
    config = dict(vars(args), lightning_overrides=extra, data_dir=str(data_dir), data_stats=stats, runs=runs)
    config["seconds"] = round(seconds, 1)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    print(format_table(rows))
    print(f"{len(runs)} models in {seconds / 60:.1f} min; wrote {', '.join(str(out / f) for f in FILES)}")
    return rows


if __name__ == "__main__":
    main()
