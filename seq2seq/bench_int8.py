"""int8 against float32 decoding of a translation checkpoint on the CPU:

    python -m seq2seq.bench_int8 --checkpoint CKPT --src test.en --ref test.de [--speed-sentences 480]

Loads the checkpoint once through the Translator (on the CPU), quantizes a copy of its model
(seq2seq/modules/quantize.py), then
- translates all of `--src` with both (beam search, `--beam-size` 5, `--alpha` 0.6, batches of
  `--batch-size` 64): sacreBLEU of each against `--ref`, and how many translations are identical;
- times both on the first `--speed-sentences` sources, interleaved (fp32, int8, fp32, ...)
  `--repeats` times in this one process, so that a noisy machine slows both alike: sentences/s,
  best and median of the repeats, and their ratio;
- with `--profile`, where int8 decoding's time goes (torch.profiler, one pass over the speed set).

`measure(...)` returns the same numbers as a dict, for other benchmarks to call.
Numbers, not a test: run it on an idle machine (`--threads` sets torch's intra-op threads).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from seq2seq.modules.quantize import quantize_int8, quantized_engine
from seq2seq.training.metrics import sacre_bleu
from seq2seq.translation.predictor import Translator


def _translate(translator: Translator, model, sources: list[str], search: dict) -> tuple[list[str], float]:
    """The translations of `sources` with `model` in the translator, and the seconds they took."""
    translator.model = model
    start = time.perf_counter()
    out = translator.translate(sources, **search)
    return [options[0].text for options in out], time.perf_counter() - start


def measure(
    checkpoint: str | Path,
    src: str | Path,
    ref: str | Path,
    speed_sentences: int = 480,
    repeats: int = 3,
    beam_size: int = 5,
    alpha: float = 0.6,
    batch_size: int = 64,
    engine: str | None = None,
    profile: bool = False,
) -> dict:
    """fp32 and int8 beam search of one checkpoint on the CPU: a dict with, per "fp32" and "int8",
    bleu (all of src against ref), sentences_per_s (best of the repeats over the first
    speed_sentences sources: 0 means all), median_sentences_per_s, all_sentences_per_s (the one
    pass over all of src); and speedup (best / best), median_speedup, identical (how many of the
    translations are the same), sentences, speed_sentences, threads, engine; with `profile`,
    "profile": torch.profiler's table of int8 decoding's ops over the speed set."""
    sources = Path(src).read_text(encoding="utf-8").splitlines()
    references = Path(ref).read_text(encoding="utf-8").splitlines()
    if len(sources) != len(references):
        raise ValueError(
            f"{src} has {len(sources)} lines but {ref} has {len(references)}: give one reference a line"
        )
    translator = Translator.from_checkpoint(checkpoint, "cpu")
    models = {"fp32": translator.model, "int8": quantize_int8(translator.model, engine)}
    search = {"beam_size": beam_size, "alpha": alpha, "batch_size": batch_size}
    speed_set = sources[:speed_sentences] if speed_sentences else sources
    result: dict = {"sentences": len(sources), "speed_sentences": len(speed_set)}
    texts = {}
    with torch.inference_mode():
        for name, model in models.items():  # warm-up, then all sentences once: BLEU
            _translate(translator, model, speed_set[:batch_size], search)
            texts[name], seconds = _translate(translator, model, sources, search)
            result[name] = {
                "bleu": sacre_bleu(texts[name], references)[0],
                "all_sentences_per_s": len(sources) / seconds,
            }
        times: dict[str, list[float]] = {name: [] for name in models}
        for _ in range(repeats):
            for name, model in models.items():
                times[name].append(_translate(translator, model, speed_set, search)[1])
    for name in models:
        result[name]["sentences_per_s"] = len(speed_set) / min(times[name])
        result[name]["median_sentences_per_s"] = len(speed_set) / statistics.median(times[name])
    result["speedup"] = result["int8"]["sentences_per_s"] / result["fp32"]["sentences_per_s"]
    result["median_speedup"] = (
        result["int8"]["median_sentences_per_s"] / result["fp32"]["median_sentences_per_s"]
    )
    result["identical"] = sum(a == b for a, b in zip(texts["fp32"], texts["int8"]))
    result["threads"] = torch.get_num_threads()
    result["engine"] = quantized_engine(engine)
    if profile:
        result["profile"] = profile_table(translator, models["int8"], speed_set, search)
    return result


def profile_table(translator: Translator, model, sources: list[str], search: dict, rows: int = 20) -> str:
    """torch.profiler's table of the ops that take `model`'s decoding time, by their own time."""
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
        _translate(translator, model, sources, search)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m seq2seq.bench_int8", description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True, help="a translation checkpoint")
    parser.add_argument("--src", required=True, help="source sentences, one a line")
    parser.add_argument("--ref", required=True, help="their reference translations, one a line")
    parser.add_argument("--speed-sentences", type=int, default=480, help="sources timed (0: all)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes of each model, interleaved")
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--alpha", type=float, default=0.6)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--engine", choices=["x86", "fbgemm", "onednn"], help="quantized engine (default: first)"
    )
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--profile", action="store_true", help="also profile int8 decoding")
    args = parser.parse_args(argv)
    from seq2seq.bench import cpu_name  # imports Lightning: only for the printed table

    if args.threads:
        torch.set_num_threads(args.threads)
    r = measure(
        args.checkpoint, args.src, args.ref, args.speed_sentences, args.repeats, args.beam_size, args.alpha,
        args.batch_size, args.engine, args.profile,
    )  # fmt: skip
    fp32, int8 = r["fp32"], r["int8"]
    print(
        f"machine: {cpu_name()}, {r['threads']} threads, torch {torch.__version__}, engine {r['engine']}; "
        f"beam {args.beam_size}, alpha {args.alpha}, batches of {args.batch_size}"
    )
    print("\n| | fp32 | int8 | int8 / fp32 |\n|---|---|---|---|")
    n, reps = r["speed_sentences"], args.repeats
    print(
        f"| sentences/s, first {n} sentences, best of {reps} | {fp32['sentences_per_s']:.1f} | "
        f"{int8['sentences_per_s']:.1f} | {r['speedup']:.2f}x |"
    )
    print(
        f"| sentences/s, first {n} sentences, median of {reps} | {fp32['median_sentences_per_s']:.1f} | "
        f"{int8['median_sentences_per_s']:.1f} | {r['median_speedup']:.2f}x |"
    )
    once = int8["all_sentences_per_s"] / fp32["all_sentences_per_s"]
    print(
        f"| sentences/s, all {r['sentences']} sentences, one pass | {fp32['all_sentences_per_s']:.1f} | "
        f"{int8['all_sentences_per_s']:.1f} | {once:.2f}x |"
    )
    print(f"| sacreBLEU, all {r['sentences']} sentences | {fp32['bleu']:.2f} | {int8['bleu']:.2f} | "
          f"{int8['bleu'] - fp32['bleu']:+.2f} |")  # fmt: skip
    share = r["identical"] / r["sentences"]
    print(f"| translations identical to fp32's | | {r['identical']} of {r['sentences']} ({share:.1%}) | |")
    if args.profile:
        print(f"\nint8 decoding of the first {n} sentences, by each op's own time:")
        print(r["profile"])


if __name__ == "__main__":
    main()
