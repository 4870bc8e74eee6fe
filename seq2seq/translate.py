"""Translate raw sentences with a checkpoint and nothing else.

    python -m seq2seq.translate --checkpoint CKPT [--beam-size 5] [--alpha 0.6] [--n-best 1]
        [--input FILE] [--output FILE] [--batch-size 64] [--attention-plot DIR]

Reads one sentence a line (stdin by default), writes detokenized translations in input order
(stdout by default). An empty line gives an empty line; a sentence longer than the model's
maximum length is truncated with a warning on stderr. With --n-best N > 1 each input gives N
lines `INDEX ||| TRANSLATION ||| SCORE`. With an attention model, an <unk> in the output is
replaced by the source word it attends to most (--no-unk-replace keeps it). The checkpoint is
loaded with weights_only=True.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from data.parallel import DataError, read_lines
from data.tokenizers import tokenizer_from_state
from data.vocab import Vocabulary

from .model import Seq2Seq, pad_batch
from .plots import attention_heatmap


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and what to do."""


def load_checkpoint(path: str | Path) -> dict:
    """torch.load with weights_only=True, with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means: not a usable checkpoint
        raise CheckpointError(f"{path}: not a loadable seqcap checkpoint ({type(e).__name__}: {e})") from None


def replace_unknowns(
    tokens: list[str], attention: torch.Tensor | None, src_tokens: list[str], unk: str = "<unk>"
) -> list[str]:
    """Each <unk> in the output becomes the source token it attends to most (Luong et al. 2015,
    "Addressing the rare word problem"): names, placeholders and numbers pass through.
    tokens: T output tokens, attention: (T, S) or None (then nothing changes)."""
    if attention is None or unk not in tokens or not src_tokens:
        return tokens
    best = attention[: len(tokens), : len(src_tokens)].argmax(-1).tolist()
    return [src_tokens[best[t]] if tok == unk else tok for t, tok in enumerate(tokens)]


@dataclass
class Translation:
    text: str
    score: float
    tokens: list[str]
    attention: torch.Tensor | None = None


class Translator:
    """A Seq2Seq with its vocabularies and tokenizers: raw text in, raw text out."""

    def __init__(
        self, model: Seq2Seq, vocab_state: dict, device: str | torch.device = "cpu", unk_replace: bool = True
    ):
        self.unk_replace = unk_replace
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.src_vocab = Vocabulary.from_list(vocab_state["src_vocab"])
        self.tgt_vocab = Vocabulary.from_list(vocab_state["tgt_vocab"])
        self.src_tokenizer = tokenizer_from_state(vocab_state["src_tokenizer"])
        self.tgt_tokenizer = tokenizer_from_state(vocab_state["tgt_tokenizer"])
        self.max_len = int(vocab_state.get("max_len", 100))

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto", unk_replace: bool = True) -> Translator:
        ckpt = load_checkpoint(path)
        if "seqcap" not in ckpt or not ckpt["seqcap"] or "state_dict" not in ckpt:
            raise CheckpointError(f"{path}: holds no seqcap translation model (no vocabularies inside)")
        hparams = ckpt.get("hyper_parameters", {})
        accepted = inspect.signature(Seq2Seq).parameters
        model = Seq2Seq(**{k: v for k, v in hparams.items() if k in accepted})
        state = {k[len("model.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
        model.load_state_dict(state)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        return cls(model, ckpt["seqcap"], device, unk_replace)

    def encode(self, sentence: str) -> tuple[list[int], list[str], bool]:
        """-> ids, tokens (both cut to max_len) and whether the sentence was truncated."""
        tokens = self.src_tokenizer.tokenize(sentence)
        cut = len(tokens) > self.max_len
        tokens = tokens[: self.max_len]
        return self.src_vocab.encode(tokens), tokens, cut

    def translate(
        self,
        sentences: list[str],
        beam_size: int = 5,
        alpha: float = 0.6,
        n_best: int = 1,
        batch_size: int = 64,
        return_attention: bool = False,
        progress: bool = False,
        warn=None,
    ) -> list[list[Translation]]:
        """One list of n_best translations per sentence, in input order (empty in, empty out)."""
        encoded = [self.encode(s) for s in sentences]
        for i, (_, _, cut) in enumerate(encoded):
            if cut and warn is not None:
                warn(f"line {i + 1}: {len(self.src_tokenizer.tokenize(sentences[i]))} tokens, "
                     f"truncated to the model's maximum of {self.max_len}")
        results: list[list[Translation]] = [[Translation("", 0.0, [])] * n_best for _ in sentences]
        todo = sorted((i for i, (ids, _, _) in enumerate(encoded) if ids), key=lambda i: len(encoded[i][0]))
        batches = [todo[k : k + batch_size] for k in range(0, len(todo), batch_size)]
        for batch in tqdm(batches, desc="translating", unit="batch", disable=not progress, file=sys.stderr):
            src, lengths = pad_batch([encoded[i][0] for i in batch])
            hyps = self.model.translate(
                src.to(self.device), lengths.to(self.device), method="beam", beam_size=beam_size,
                alpha=alpha, n_best=n_best, return_attention=return_attention or self.unk_replace,
            )  # fmt: skip
            for i, options in zip(batch, hyps):
                results[i] = []
                for h in options:
                    tokens = self.tgt_vocab.decode(h.tokens)
                    if self.unk_replace:
                        tokens = replace_unknowns(tokens, h.attention, encoded[i][1])
                    text = self.tgt_tokenizer.detokenize(tokens)
                    results[i].append(Translation(text, h.score, tokens, h.attention))
        return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m seq2seq.translate", description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True, help="a .ckpt written by `python -m seq2seq fit`")
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--alpha", type=float, default=0.6, help="GNMT length penalty")
    parser.add_argument("--n-best", type=int, default=1)
    parser.add_argument("--input", help="file with one sentence a line (default: stdin)")
    parser.add_argument("--output", help="file to write (default: stdout)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--attention-plot", metavar="DIR", help="write an attention heatmap PNG per sentence")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument(
        "--no-unk-replace", action="store_true",
        help="keep <unk> in the output instead of copying the source word it attends to most",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.beam_size < 1 or not 1 <= args.n_best <= args.beam_size:
        parser.error(
            f"need --beam-size >= 1 and 1 <= --n-best <= --beam-size, got {args.beam_size}, {args.n_best}"
        )
    if args.output and args.input and Path(args.output).resolve() == Path(args.input).resolve():
        parser.error("--output must not be the --input file: it would overwrite your input")
    try:
        translator = Translator.from_checkpoint(args.checkpoint, args.device, not args.no_unk_replace)
        lines = read_lines(args.input) if args.input else sys.stdin.read().splitlines()
    except (CheckpointError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    def warn(message: str) -> None:
        print(f"warning: {args.input or 'stdin'}, {message}", file=sys.stderr)

    results = translator.translate(
        lines, args.beam_size, args.alpha, args.n_best, args.batch_size,
        return_attention=bool(args.attention_plot), progress=len(lines) > args.batch_size, warn=warn,
    )  # fmt: skip
    out = []
    for i, options in enumerate(results):
        if args.n_best == 1:
            out.append(options[0].text)
        else:
            out.extend(f"{i} ||| {t.text} ||| {t.score:.4f}" for t in options)
        if args.attention_plot and options[0].attention is not None and options[0].tokens:
            src_tokens = translator.encode(lines[i])[1]
            attention_heatmap(
                options[0].attention, src_tokens, options[0].tokens,
                Path(args.attention_plot) / f"{i + 1:05d}.png", title=f"line {i + 1}",
            )  # fmt: skip
    text = "\n".join(out) + ("\n" if out else "")
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
