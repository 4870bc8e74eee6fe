"""Answer questions about an image with a VQA checkpoint and nothing else.

    python -m captioning.vqa.cli --checkpoint CKPT IMAGE "what colour is the star?" ["how many ..." ...]
        [--top 5] [--attention-plot DIR] [--device auto]

Prints, per question, the question and its `--top` answers with their probabilities (softmax over
the model's K answers), most likely first::

    what colour is the star?
      0.981  red
      0.012  orange

The checkpoint (from `python -m captioning fit -c configs/vqa/...`) holds the CNN, the VQA network
and both vocabularies. A question word the model never saw is read as `<unk>` (a warning on stderr
names it) and the question still gets an answer. An image that cannot be read is named
(`error: cannot read image PATH: ...`, exit status 2) before any model work. --attention-plot DIR
writes DIR/<image stem>-q<N>.png per question: each hop's attention over the CNN grid, drawn on the
image (attention checkpoints only; a file already there is never overwritten).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from captioning.captioner.predictor import image_problem
from data.core.images import ImageFileError, default_transform, load_rgb
from data.core.parallel import DataError
from data.datamodules.vqa import TOKENIZER_NAME, tokenize_question
from seq2seq.modules.pretrained import input_normalization
from seq2seq.training.checkpoint import CheckpointError, build_from_hparams, load_checkpoint, resolve_device

__all__ = ["Answer", "Answerer", "main"]


@dataclass
class Answer:
    """One question's answers: (answer, probability) pairs, most likely first; the question words
    the model never saw; and for an attention model the weights of each hop (hops, R) on the CPU."""

    question: str
    top: list[tuple[str, float]]
    unknown: list[str]
    attention: Tensor | None = None


class Answerer:
    """A VQAModule with its vocabularies and preprocessing: (image, questions) in, answers out."""

    def __init__(self, module, image_size: int, device: str | torch.device = "cpu", normalization=None):
        self.device = resolve_device(device)
        self.module = module.to(self.device).eval()
        mean, std = normalization or (module.encoder.mean, module.encoder.std)
        self.transform = default_transform(int(image_size), mean, std)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "auto") -> Answerer:
        from captioning.vqa.module import VQAModule

        ckpt = load_checkpoint(path)
        meta = ckpt.get("seqcap")
        if not isinstance(meta, dict) or "answers" not in meta or "state_dict" not in ckpt:
            raise CheckpointError(
                f"{path}: not a seqcap VQA checkpoint (no answer vocabulary inside); train one with "
                "`python -m captioning fit -c configs/vqa/shapes_attention.yaml`"
            )
        if meta.get("tokenizer", TOKENIZER_NAME) != TOKENIZER_NAME:
            raise CheckpointError(
                f"{path}: questions tokenized by {meta['tokenizer']!r}, not {TOKENIZER_NAME!r}"
            )
        module = build_from_hparams(VQAModule, ckpt, path, pretrained=False, weights_path=None)
        module.on_load_checkpoint(ckpt)  # the vocabularies, as Lightning restores them
        hp = ckpt.get("hyper_parameters") or {}
        normalization = input_normalization(
            hp.get("backbone", "efficientnet_lite0"), hp.get("pretrained", True), hp.get("weights_path")
        )
        return cls(module, int(meta.get("image_size") or 224), device, normalization)

    @property
    def has_attention(self) -> bool:
        return self.module.hparams.model == "attention"

    @torch.inference_mode()
    def answer(self, image: str | Path, questions: list[str], top: int = 5) -> list[Answer]:
        """The `top` answers of each question about `image` (ImageFileError when it cannot be read)."""
        module = self.module
        pixels = self.transform(load_rgb(image)).unsqueeze(0).to(self.device)
        grid = module.encoder(pixels).expand(len(questions), -1, -1)  # (B, R, F): one image, B questions
        ids, lengths = module.encode_questions(questions)
        logits, weights = module(ids, lengths, grid)
        probs = logits.float().softmax(-1).cpu()
        best = probs.topk(min(top, probs.shape[1]), dim=-1)
        known = module.vocab.stoi
        out = []
        for b, question in enumerate(questions):
            pairs = [(module.answers[int(k)], float(p)) for p, k in zip(best.values[b], best.indices[b])]
            unknown = [w for w in tokenize_question(question) if w not in known]
            attention = torch.stack([w[b] for w in weights]).float().cpu() if weights else None
            out.append(Answer(question, pairs, unknown, attention))
        return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m captioning.vqa.cli", description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True, help="a .ckpt from `python -m captioning fit` (VQA)")
    parser.add_argument("image", metavar="IMAGE", help="an image file")
    parser.add_argument("questions", nargs="+", metavar="QUESTION", help="questions about the image")
    parser.add_argument("--top", type=int, default=5, help="answers shown per question")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument(
        "--attention-plot", metavar="DIR",
        help="write DIR/<image stem>-q<N>.png: each hop's attention (attention checkpoints only)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.top < 1:
        parser.error(f"--top must be >= 1, got {args.top}")
    if args.attention_plot and Path(args.attention_plot).exists() and not Path(args.attention_plot).is_dir():
        parser.error(f"--attention-plot {args.attention_plot} exists and is not a folder")
    stem = Path(args.image).stem or "image"
    out = Path(args.attention_plot) if args.attention_plot else None
    plots = [out / f"{stem}-q{n + 1}.png" for n in range(len(args.questions))] if out else []
    try:
        problem = image_problem(args.image)
        if problem is not None:
            raise ImageFileError(problem)
        taken = [str(p) for p in plots if p.exists()]
        if taken:  # nothing the user had is overwritten
            raise DataError(f"--attention-plot {args.attention_plot}: {taken[0]} exists; choose a new folder")
        answerer = Answerer.from_checkpoint(args.checkpoint, args.device)
        if args.attention_plot and not answerer.has_attention:
            kind = answerer.module.hparams.model
            raise CheckpointError(
                f"{args.checkpoint} is a {kind!r} model, which has no attention to plot: "
                "--attention-plot needs a model='attention' checkpoint"
            )
        answers = answerer.answer(args.image, args.questions, args.top)
    except (CheckpointError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for a in answers:
        if a.unknown:
            print(f"warning: {a.question!r}: words the model never saw, read as <unk>: "
                  f"{', '.join(a.unknown)}", file=sys.stderr)  # fmt: skip
        print(a.question)
        for text, p in a.top:
            print(f"  {p:.3f}  {text}")
    if args.attention_plot:
        from seq2seq.training.plots import attention_overlay

        for a, png in zip(answers, plots):
            hops = [f"hop {k + 1}" for k in range(a.attention.shape[0])]
            answer, p = a.top[0]
            attention_overlay(args.image, hops, a.attention, png, title=f"answer: {answer} ({p:.2f})")
            print(f"attention plot for {a.question!r}: {png}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
