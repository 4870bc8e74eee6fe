"""`seqcap`: one command for every task, each sub-command a thin shell over a task's own entry point.

    seqcap fit -c configs/translation/quickstart.yaml      train (any task; LightningCLI)
    seqcap translate --checkpoint CKPT < input.txt         infer with a checkpoint and nothing else
    seqcap data shapes --out data/corpora/shapes           build a corpus
    seqcap experiment length_curve --out runs/length       one of the seeds' claims
    seqcap --help                                          everything, one line each

A sub-command's module is imported only when it runs, so `seqcap --help` is quick. Every
sub-command's own options are in `seqcap SUBCOMMAND --help`. The `python -m` forms (named in each
line of --help) stay and do the same. Names with underscores also take hyphens (shapes-vqa).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

# name -> (module, function, what it does); a function gets the remaining arguments
TRAIN = "seq2seq.training.cli"
COMMANDS: dict[str, tuple[str, str, str]] = {
    "fit": (TRAIN, "run", "train a model from a YAML config: seqcap fit -c CONFIG [--model.init_args.X V]"),
    "validate": (TRAIN, "run", "validate a checkpoint: seqcap validate -c CONFIG --ckpt_path CKPT"),
    "test": (
        TRAIN,
        "run",
        "test a checkpoint (BLEU, CIDEr-D, perplexity, VQA accuracy): -c CONFIG --ckpt_path CKPT",
    ),
    "predict": (TRAIN, "run", "Lightning's predict loop over a config's data"),
    "translate": (
        "seq2seq.translation.cli",
        "main",
        "translate text (and images, multimodal) with a checkpoint",
    ),
    "evaluate": (
        "seqcap.cli",
        "evaluate",
        "score a translation (BLEU) or captioning (COCO metrics) checkpoint",
    ),
    "generate": ("seq2seq.lm.cli", "main", "sample or score text with a language-model checkpoint"),
    "caption": ("captioning.captioner.cli", "main", "caption images with a captioning checkpoint"),
    "answer": ("captioning.vqa.cli", "main", "answer questions about an image with a VQA checkpoint"),
    "average": ("seq2seq.training.average", "main", "average the weights of checkpoints of one model"),
    "export": ("seq2seq.translation.export", "main", "export a translation model to ONNX: CKPT --out DIR"),
    "serve": ("seqcap.server", "main", "serve checkpoints over a JSON HTTP API: --model NAME=CKPT ..."),
    "prepare": (
        "data.prepared.prepare",
        "main",
        "tokenise and encode a corpus once for memory-mapped training",
    ),
}
# name -> {choice: module}; the module's main() gets the remaining arguments
GROUPS: dict[str, tuple[str, dict[str, str]]] = {
    "data": (
        "build a corpus or dataset",
        {
            "gettext": "data.builders.gettext",
            "synthetic": "data.builders.synthetic",
            "shapes": "data.builders.shapes",
            "shapes_mmt": "data.builders.shapes_mmt",
            "shapes_vqa": "data.builders.shapes_vqa",
            "flickr8k": "data.builders.flickr8k",
            "multi30k": "data.builders.multi30k",
        },
    ),
    "experiment": (
        "run one of the seeds' claims as an experiment (CSV, PNG and a table)",
        {
            "gradient_flow": "seq2seq.experiments.gradient_flow",
            "long_dependency": "seq2seq.experiments.long_dependency",
            "length_curve": "seq2seq.experiments.length_curve",
            "visual_context": "seq2seq.experiments.visual_context",
            "lm_rescoring": "seq2seq.experiments.lm_rescoring",
            "image_input": "captioning.experiments.image_input",
            "scst": "captioning.experiments.scst",
            "vqa_baselines": "captioning.experiments.vqa_baselines",
        },
    ),
    "bench": (
        "run a benchmark that prints numbers",
        {
            "translation": "seq2seq.bench",
            "decoding": "seq2seq.bench_decoding",
            "captioning": "captioning.bench",
            "prepare": "data.prepared.bench",
            "serve": "seqcap.bench_serve",
        },
    ),
    "quickstart": (
        "train and show a task end to end on offline data",
        {"translation": "seq2seq.translation.quickstart", "captioning": "captioning.captioner.quickstart"},
    ),
}
EVALUATORS = {"translation": "seq2seq.translation.evaluate", "captioning": "captioning.captioner.evaluate"}


def overview() -> str:
    lines = ["usage: seqcap SUBCOMMAND [options]   (seqcap SUBCOMMAND --help for its options)", ""]
    for name, (_, _, what) in COMMANDS.items():
        lines.append(f"  {name:<11} {what}")
    for name, (what, choices) in GROUPS.items():
        lines.append(f"  {name:<11} {what}: {' | '.join(choices)}")
    return "\n".join(lines)


def exit_code(result) -> int:
    """A main's return value as an exit status: an int is one, anything else means success."""
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


def call(module: str, function: str, argv: list[str]) -> int:
    return exit_code(getattr(importlib.import_module(module), function)(argv))


def run_group(name: str, argv: list[str]) -> int:
    what, choices = GROUPS[name]
    choice = argv[0].replace("-", "_") if argv else ""
    if choice not in choices:
        listing = "\n".join(f"  {c:<16} python -m {m}" for c, m in choices.items())
        text = f"usage: seqcap {name} NAME [options]   ({what})\n\n{listing}"
        if not argv or argv[0] in ("-h", "--help"):
            print(text)
            return 0
        print(f"{text}\nerror: seqcap {name}: unknown name {argv[0]!r}", file=sys.stderr)
        return 2
    return call(choices[choice], "main", argv[1:])


def checkpoint_argument(argv: Sequence[str]) -> str | None:
    """The value of --checkpoint in argv (`--checkpoint X` or `--checkpoint=X`), or None."""
    for i, arg in enumerate(argv):
        if arg == "--checkpoint" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--checkpoint="):
            return arg.split("=", 1)[1]
    return None


def evaluate(argv: list[str]) -> int:
    """`seqcap evaluate --checkpoint CKPT ...`: the evaluator of the checkpoint's task."""
    path = checkpoint_argument(argv)
    if path is None:
        print(
            "usage: seqcap evaluate --checkpoint CKPT [options of the checkpoint's task]\n\n"
            "  translation: seqcap evaluate --checkpoint CKPT --src FILE --ref FILE   (BLEU; see\n"
            "               python -m seq2seq.translation.evaluate --help)\n"
            "  captioning:  seqcap evaluate --checkpoint CKPT --data SOURCE --split test\n"
            "               (COCO metrics; see\n"
            "               python -m captioning.captioner.evaluate --help)\n"
            "  a language model is scored by `seqcap test -c CONFIG --ckpt_path CKPT` (perplexity)",
            file=sys.stdout if any(a in ("-h", "--help") for a in argv) else sys.stderr,
        )
        return 0 if any(a in ("-h", "--help") for a in argv) else 2
    from seq2seq.predictor import TASKS, checkpoint_task
    from seq2seq.training.checkpoint import CheckpointError, load_checkpoint

    try:
        task = checkpoint_task(load_checkpoint(path), path)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if task not in EVALUATORS:
        what, command = TASKS.get(task, (task, "seqcap"))
        print(
            f"error: {path}: a {what} checkpoint; `seqcap evaluate` scores translation and captioning "
            f"checkpoints (use `{command}`, or `seqcap test -c CONFIG --ckpt_path {path}`)",
            file=sys.stderr,
        )
        return 2
    return call(EVALUATORS[task], "main", argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(overview())
        return 0
    name, rest = argv[0], argv[1:]
    if name in COMMANDS:
        module, function, _ = COMMANDS[name]
        return call(module, function, [name, *rest] if module == TRAIN else rest)
    if name in GROUPS:
        return run_group(name, rest)
    print(f"{overview()}\nerror: unknown sub-command {name!r}", file=sys.stderr)
    return 2
