"""Does a language model of the target language pick better translations? (seed 002 §8.5.1)

    python -m seq2seq.experiments.lm_rescoring --checkpoint TM.ckpt --out DIR [--lm LM.ckpt]
        [--weights 0,0.1,0.2,0.3,0.5,0.8] [--modes rescore,fusion] [--beam-size 5] [--alpha 0.6]
        [--data-dir data/corpora/gettext-en-de] [--src-lang en] [--tgt-lang de] [--overwrite]
        [any LightningCLI override for the LM, e.g. --trainer.max_epochs 3]

The seeds: a language model "picks, among the candidate sentences a translator or a speech
recogniser outputs, the one with the highest probability". Without --lm, a German word LSTM is
trained first by `seqcap fit -c configs/lm/gettext_de_word_lstm.yaml` on the corpus's train.de
(the translator's training targets; nothing of dev or test), into DIR/runs. Then, for each mode
(rescore: the beam's n-best list reordered by (log P_tm + W log P_lm) / lp; fusion: W log p_lm
added at every beam step; seq2seq/lm/rescoring.py), W is chosen among --weights by dev BLEU, and
test BLEU is reported with that W beside the translator alone (W = 0). The test set is never used
to choose anything.

Outputs in DIR: lm_rescoring.csv (mode, weight, split, bleu), lm_rescoring.png (dev BLEU against
W per mode, the chosen W marked), lm_rescoring.md (the table) and config.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from data.core.parallel import DataError, read_lines
from seq2seq.experiments.cli import lightning_overrides, prepare_out, write_config, write_csv
from seq2seq.lm.rescoring import LanguageModelScoring
from seq2seq.training.checkpoint import CheckpointError
from seq2seq.training.metrics import sacre_bleu
from seq2seq.translation.predictor import Translator

OUTPUTS = ["lm_rescoring.csv", "lm_rescoring.png", "lm_rescoring.md", "config.json"]
COLUMNS = ["mode", "weight", "split", "bleu"]
LM_CONFIG = "configs/lm/gettext_de_word_lstm.yaml"


def train_lm(args, out: Path, extra: list[str]) -> Path:
    """`seqcap fit -c configs/lm/gettext_de_word_lstm.yaml` on DATA/train.de -> its best checkpoint."""
    from seq2seq.training.cli import main as cli

    data, tgt = Path(args.data_dir), args.tgt_lang
    run = cli([
        "fit", "-c", LM_CONFIG, "--trainer.default_root_dir", str(out / "runs"),
        "--data.init_args.train_files", f"[{data / f'train.{tgt}'}]",
        "--data.init_args.val_files", f"[{data / f'dev.{tgt}'}]", "--trainer.devices", "1", *extra,
    ])  # fmt: skip
    callback = run.trainer.checkpoint_callback
    return Path(callback.best_model_path or callback.last_model_path)


def bleu(translator: Translator, src: list[str], ref: list[str], args) -> float:
    hyps = translator.translate(src, args.beam_size, args.alpha, batch_size=args.batch_size)
    return sacre_bleu([h[0].text for h in hyps], ref)[0]


def plot(rows: list[dict], chosen: dict[str, float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for mode in chosen:
        points = sorted((r["weight"], r["bleu"]) for r in rows if r["mode"] == mode and r["split"] == "dev")
        ax.plot([w for w, _ in points], [b for _, b in points], marker="o", label=mode)
        best = dict(points)[chosen[mode]]
        ax.scatter([chosen[mode]], [best], s=120, facecolors="none", edgecolors="black")
    ax.set_xlabel("LM weight W")
    ax.set_ylabel("dev BLEU (beam search)")
    ax.set_title("A German LM with the en-de translator (circled: W chosen)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m seq2seq.experiments.lm_rescoring", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--checkpoint", required=True, help="the translator (e.g. the quickstart's last.ckpt)"
    )
    parser.add_argument(
        "--out", required=True, help="folder for the CSV, PNG, table and (without --lm) the LM"
    )
    parser.add_argument("--lm", help="a German LM checkpoint (default: train one)")
    parser.add_argument("--weights", default="0,0.1,0.2,0.3,0.5,0.8", help="LM weights W tried on dev")
    parser.add_argument("--modes", default="rescore,fusion", help="rescore, fusion or both")
    parser.add_argument("--data-dir", default="data/corpora/gettext-en-de", help="dev/test .en/.de, train.de")
    parser.add_argument("--src-lang", default="en", help="the source files' suffix (dev.en, test.en)")
    parser.add_argument("--tgt-lang", default="de", help="the target files' suffix (train.de for the LM)")
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--alpha", type=float, default=0.6)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--overwrite", action="store_true", help="replace earlier results in --out")
    args, extra = parser.parse_known_args(argv)
    lightning_overrides(parser, extra, ("--trainer.default_root_dir",))
    try:
        args.weights = sorted({float(w) for w in args.weights.split(",") if w.strip()} | {0.0})
    except ValueError:
        parser.error(f"--weights must be numbers separated by commas, got {args.weights!r}")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or set(modes) - {"rescore", "fusion"}:
        parser.error(f"--modes must be rescore, fusion or both, got {args.modes!r}")
    out = prepare_out(parser, args.out, OUTPUTS, args.overwrite)
    start = time.time()
    try:
        data = Path(args.data_dir)
        split = {
            s: (read_lines(data / f"{s}.{args.src_lang}"), read_lines(data / f"{s}.{args.tgt_lang}"))
            for s in ("dev", "test")
        }
        translator = Translator.from_checkpoint(args.checkpoint, "cpu")
        lm_path = Path(args.lm) if args.lm else train_lm(args, out, extra)
        args.lm = str(lm_path)
        rows = []
        for s in ("dev", "test"):
            rows.append(
                {"mode": "none", "weight": 0.0, "split": s, "bleu": bleu(translator, *split[s], args)}
            )
        chosen = {}
        for mode in modes:
            lm = LanguageModelScoring.from_checkpoint(lm_path, 0.0, mode, "cpu")
            translator.use_lm(lm)
            for w in args.weights:
                lm.weight = w
                score = rows[0]["bleu"] if w == 0 else bleu(translator, *split["dev"], args)
                rows.append({"mode": mode, "weight": w, "split": "dev", "bleu": score})
                print(f"{mode}: W {w} -> dev BLEU {score:.2f}", file=sys.stderr, flush=True)
            dev = {r["weight"]: r["bleu"] for r in rows if r["mode"] == mode and r["split"] == "dev"}
            lm.weight = chosen[mode] = max(dev, key=lambda w: (dev[w], -w))  # ties: the smaller W
            test = bleu(translator, *split["test"], args)
            rows.append({"mode": mode, "weight": lm.weight, "split": "test", "bleu": test})
            translator.use_lm(None)
    except (CheckpointError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for r in rows:
        r["bleu"] = round(r["bleu"], 2)
    write_csv(out / "lm_rescoring.csv", rows, COLUMNS)
    plot(rows, chosen, out / "lm_rescoring.png")
    base = rows[1]["bleu"]
    lines = ["| mode | W (chosen on dev) | dev BLEU | test BLEU | test change |", "|---|---|---|---|---|"]
    lines.append(f"| translator alone | 0 | {rows[0]['bleu']:.2f} | {base:.2f} | |")
    for mode, w in chosen.items():
        dev = next(r["bleu"] for r in rows if r["mode"] == mode and r["split"] == "dev" and r["weight"] == w)
        test = next(r["bleu"] for r in rows if r["mode"] == mode and r["split"] == "test")
        lines.append(f"| {mode} | {w} | {dev:.2f} | {test:.2f} | {test - base:+.2f} |")
    table = "\n".join(lines) + "\n"
    (out / "lm_rescoring.md").write_text(table)
    write_config(out / "config.json", args, time.time() - start)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
