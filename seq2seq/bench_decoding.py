"""Decoding as the field does it, measured side by side in one run: ensembles, checkpoint
averaging, LM rescoring and shallow fusion, int8, ONNX (issue 29's numbers).

    seqcap bench decoding --checkpoint A.ckpt [--second B.ckpt] [--average C.ckpt D.ckpt E.ckpt]
        [--lm LM.ckpt] [--src test.en --ref test.de] [--dev-src dev.en --dev-ref dev.de]
        [--only ensemble,average,lm,int8,onnx] [--speed-sentences 500]

Every BLEU is sacreBLEU of beam 5 (alpha 0.6, --beam-size/--alpha) on the whole --src/--ref; the
rows print as they finish, then one table:

- ensemble: A, B and the ensemble A+B (one search over the log of their mean probability);
- average: the last of --average alone and the average of all of them (seqcap average);
- lm: W picked on the dev set among --weights (rescoring the beam, then fusion), test BLEU with
  that W beside W = 0;
- int8: A in fp32 and dynamically quantized (seq2seq.bench_int8.measure): BLEU, and beam
  sentences/s on the first --speed-sentences sentences, interleaved, the best of --repeats;
- onnx: A exported (seqcap export) and decoded on onnxruntime: the share of identical outputs
  (greedy, beam) and sentences/s beside PyTorch's.

Nothing is trained here: the quickstart (`make quickstart`) and `seqcap fit -c
configs/lm/gettext_de_word_lstm.yaml` make the checkpoints (docs/translation.md, "Decoding").
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from data.core.parallel import DataError, read_lines
from seq2seq.lm.rescoring import LanguageModelScoring
from seq2seq.training.checkpoint import CheckpointError
from seq2seq.training.metrics import sacre_bleu
from seq2seq.translation.predictor import Translator

CORPUS = Path("data/corpora/gettext-en-de")
PARTS = ("ensemble", "average", "lm", "int8", "onnx")


@dataclass
class Row:
    part: str
    what: str
    bleu: float | None = None
    speed: float | None = None  # sentences/s
    note: str = ""

    def text(self) -> str:
        bleu = "" if self.bleu is None else f"{self.bleu:.2f}"
        speed = "" if self.speed is None else f"{self.speed:.1f}"
        return f"| {self.part} | {self.what} | {bleu} | {speed} | {self.note} |"


def bleu(translator: Translator, src: list[str], ref: list[str], options: argparse.Namespace) -> float:
    hyps = translator.translate(src, options.beam_size, options.alpha, batch_size=options.batch_size)
    return sacre_bleu([h[0].text for h in hyps], ref)[0]


def ensemble_rows(args, src, ref) -> list[Row]:
    a = bleu(Translator.from_checkpoint(args.checkpoint, "cpu"), src, ref, args)
    b = bleu(Translator.from_checkpoint(args.second, "cpu"), src, ref, args)
    pair = Translator.from_checkpoint([args.checkpoint, args.second], "cpu")
    both = bleu(pair, src, ref, args)
    return [
        Row("ensemble", f"A {args.checkpoint}", a),
        Row("ensemble", f"B {args.second}", b),
        Row(
            "ensemble", "A + B (mean probability)", both, note=f"{both - max(a, b):+.2f} over the better one"
        ),
    ]


def average_rows(args, src, ref) -> list[Row]:
    from seq2seq.training.average import average_checkpoints

    last = bleu(Translator.from_checkpoint(args.average[-1], "cpu"), src, ref, args)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "average.ckpt"
        torch.save(average_checkpoints(args.average), path)
        mean = bleu(Translator.from_checkpoint(path, "cpu"), src, ref, args)
    return [
        Row("average", f"last of {len(args.average)}: {args.average[-1]}", last),
        Row("average", f"average of the last {len(args.average)}", mean, note=f"{mean - last:+.2f}"),
    ]


def lm_rows(args, src, ref) -> list[Row]:
    """W picked on dev for each mode; test BLEU with it beside none."""
    dev_src, dev_ref = read_lines(args.dev_src), read_lines(args.dev_ref)
    translator = Translator.from_checkpoint(args.checkpoint, "cpu")
    base = bleu(translator, src, ref, args)
    rows = [Row("lm", "no LM", base)]
    for mode in ("rescore", "fusion"):
        lm = LanguageModelScoring.from_checkpoint(args.lm, 0.0, mode, "cpu")
        translator.use_lm(lm)
        on_dev = {}
        for w in args.weights:
            lm.weight = w
            on_dev[w] = bleu(translator, dev_src, dev_ref, args)
            print(f"  lm {mode}: W {w} -> dev BLEU {on_dev[w]:.2f}", file=sys.stderr)
        lm.weight = max(on_dev, key=on_dev.get)
        test = bleu(translator, src, ref, args)
        dev = ", ".join(f"{w}: {b:.2f}" for w, b in on_dev.items())
        rows.append(
            Row("lm", f"{mode}, W = {lm.weight} (best on dev)", test, note=f"{test - base:+.2f}; dev {dev}")
        )
        translator.use_lm(None)
    return rows


def int8_rows(args, src, ref) -> list[Row]:
    """seq2seq.bench_int8.measure: BLEU on all of --src, speed on --speed-sentences, interleaved."""
    from seq2seq.bench_int8 import measure

    m = measure(
        args.checkpoint, args.src, args.ref, speed_sentences=args.speed_sentences, repeats=args.repeats,
        beam_size=args.beam_size, alpha=args.alpha, batch_size=args.batch_size,
    )  # fmt: skip
    fp32, int8 = m["fp32"], m["int8"]
    change = int8["bleu"] - fp32["bleu"]
    note = (
        f"{m['speedup']:.2f}x the speed (median {m['median_speedup']:.2f}x), {change:+.2f} BLEU, "
        f"{m['identical']}/{m['sentences']} identical"
    )
    return [
        Row("int8", "fp32", fp32["bleu"], fp32["sentences_per_s"]),
        Row("int8", f"int8 ({m['engine']})", int8["bleu"], int8["sentences_per_s"], note),
    ]


def onnx_rows(args, src, ref) -> list[Row]:
    from seq2seq.translation.export import export_onnx
    from seq2seq.translation.onnx_check import compare
    from seq2seq.translation.onnx_decode import OnnxTranslator

    translator = Translator.from_checkpoint(args.checkpoint, "cpu")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        export_onnx(args.checkpoint, Path(folder) / "onnx")
        runtime = OnnxTranslator(Path(folder) / "onnx", threads=torch.get_num_threads())
        for method in ("greedy", "beam"):
            c = compare(translator, runtime, src, method, args.beam_size, args.alpha, args.batch_size)
            same = f"{c.identical}/{c.sentences} identical ({100 * c.share:.2f}%)"
            rows.append(Row("onnx", f"{c.method}, torch", speed=c.sentences / c.torch_seconds))
            rows.append(
                Row("onnx", f"{c.method}, onnxruntime", speed=c.sentences / c.onnx_seconds, note=same)
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m seq2seq.bench_decoding", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--checkpoint", required=True, help="the translation model A")
    parser.add_argument("--second", help="another seed's checkpoint B, for the ensemble")
    parser.add_argument("--average", nargs="+", metavar="CKPT", help="checkpoints to average, oldest first")
    parser.add_argument("--lm", help="a language model of the target language")
    parser.add_argument("--weights", default="0,0.1,0.2,0.3,0.5", help="LM weights W tried on dev")
    parser.add_argument("--src", default=str(CORPUS / "test.en"))
    parser.add_argument("--ref", default=str(CORPUS / "test.de"))
    parser.add_argument("--dev-src", default=str(CORPUS / "dev.en"))
    parser.add_argument("--dev-ref", default=str(CORPUS / "dev.de"))
    parser.add_argument("--only", default=",".join(PARTS), help=f"some of {', '.join(PARTS)}")
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--alpha", type=float, default=0.6)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--speed-sentences", type=int, default=500, help="sentences timed for int8")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each (the best counts)")
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"--only: unknown part(s) {', '.join(unknown)}; choose among {', '.join(PARTS)}")
    try:
        args.weights = [float(w) for w in args.weights.split(",")]
    except ValueError:
        parser.error(f"--weights must be numbers separated by commas, got {args.weights!r}")
    needs = {
        "ensemble": ("--second", args.second),
        "average": ("--average", args.average),
        "lm": ("--lm", args.lm),
    }
    for part in list(parts):
        if part in needs and not needs[part][1]:
            print(f"skipping {part}: give {needs[part][0]}", file=sys.stderr)
            parts.remove(part)
    runners = {"ensemble": ensemble_rows, "average": average_rows, "lm": lm_rows, "int8": int8_rows}
    runners["onnx"] = onnx_rows
    try:
        src, ref = read_lines(args.src), read_lines(args.ref)
        if len(src) != len(ref):
            raise DataError(f"{args.src} has {len(src)} lines but {args.ref} has {len(ref)}")
        threads = torch.get_num_threads()
        print(f"{len(src)} test sentences, beam {args.beam_size} (alpha {args.alpha}), {threads} threads")
        rows = []
        for part in parts:
            start = time.perf_counter()
            found = runners[part](args, src, ref)
            for row in found:
                print(row.text(), flush=True)
            print(f"  ({part}: {time.perf_counter() - start:.0f} s)", file=sys.stderr)
            rows.extend(found)
    except (CheckpointError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("\n| part | what | test BLEU | sentences/s | |\n|---|---|---|---|---|")
    print("\n".join(row.text() for row in rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
