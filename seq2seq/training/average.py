"""`seqcap average CKPT CKPT... --out FILE [--overwrite]`: the element-wise mean of the weights of
checkpoints of one model (also `python -m seq2seq.training.average`).

Averaging the last few checkpoints of a run (`checkpoint.keep_last N` in the training config keeps
them: `step-NNNNN.ckpt`) usually translates a little better than any one of them. The output is a
checkpoint that every inference command loads (`Predictor.from_checkpoint`: seqcap translate,
evaluate, caption, answer, generate) and that `seqcap test -c CONFIG --ckpt_path FILE` tests.

What the output holds:

- `state_dict`: every floating tensor is the mean of the inputs' (summed in float64, divided by
  their number, cast back to its dtype: two copies of one checkpoint average to it bit for bit).
  Integer and bool tensors are the last checkpoint's: the only ones in seqcap's models are
  BatchNorm's `num_batches_tracked` counters of a CNN, which differ between any two checkpoints
  of a run that trains its CNN and do not take part in inference.
- `hyper_parameters`, `checkpoint["seqcap"]` (vocabularies, tokenizers, task, image
  normalisation), the datamodule's hyperparameters, `epoch`, `global_step` and
  `pytorch-lightning_version`: the last checkpoint's (the last one given), with
  `checkpoint["seqcap"]["averaged_from"]`, the absolute paths of the inputs in the order given.
- nothing else: the optimizer states, learning-rate schedules, loops, callbacks and random states
  are dropped. An average is for inference and testing, not for resuming a run (`seqcap fit
  --ckpt_path` refuses it).

Checkpoints that cannot be averaged are refused (a CheckpointError: one line `error: ...`, exit
status 2, nothing written): another task, other vocabularies or tokenizers, another network (a
hyperparameter that shapes it, named with both values), other state_dict keys, shapes or dtypes
(the first one named). Hyperparameters that only train or decode (lr, dropout, search.*, ...)
may differ: the last checkpoint's are kept, and a warning names each one. One checkpoint is
fine: the output is its weights alone (a slim copy for inference). The output is checked before
anything is loaded (not an input, not a folder, not an existing file without --overwrite) and
written whole or not at all (data/core/outputs.py).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from data.core.outputs import OutputError, atomic_path, check_output, same_file
from seq2seq.predictor import TASKS, checkpoint_task, vocabulary_difference
from seq2seq.training.checkpoint import CheckpointError, constructor_args, load_checkpoint
from seq2seq.training.cli_checks import flat, kind_of, model_class, same, show

# what an average keeps of the last checkpoint besides its state_dict; everything else is training state
KEPT = (
    "epoch", "global_step", "pytorch-lightning_version", "hparams_name", "hyper_parameters",
    "datamodule_hparams_name", "datamodule_hyper_parameters", "seqcap",
)  # fmt: skip


def network_options(ckpt: dict) -> dict:
    """A checkpoint's model options, flat ("rnn.hidden_size"): as its class takes them when the
    class imports (checkpoints saved before the option groups then compare with newer ones), else
    its saved hyperparameters; Lightning's own entries (`_class_path`, ...) left out."""
    hparams = ckpt.get("hyper_parameters") or {}
    cls = model_class(hparams.get("_class_path"))
    options = constructor_args(cls, hparams) if cls is not None else hparams
    return {k: v for k, v in flat(options).items() if not k.startswith("_")}


def compare(first: dict, first_path: Path, ckpt: dict, path: Path, warn: Callable[[str], None]) -> None:
    """A CheckpointError naming the first difference that makes `ckpt` unfit to average with
    `first` (task, vocabularies, network options, state_dict keys, shapes, dtypes); a warning for
    every option that only trains or decodes and differs."""
    task_a, task_b = checkpoint_task(first, first_path), checkpoint_task(ckpt, path)
    if task_a != task_b:
        what_a, what_b = (TASKS.get(t, (t,))[0] for t in (task_a, task_b))
        raise CheckpointError(
            f"{path}: a {what_b} checkpoint and {first_path} a {what_a} one: only checkpoints of one task "
            "can be averaged"
        )
    difference = vocabulary_difference(ckpt["seqcap"], first["seqcap"])  # "in one": path's
    if difference is not None:
        raise CheckpointError(
            f"{path}: its vocabularies differ from {first_path}'s ({difference}): only checkpoints "
            "trained on one vocabulary can be averaged"
        )
    options_a, options_b = network_options(first), network_options(ckpt)
    for key in [*options_a, *(k for k in options_b if k not in options_a)]:
        if key in options_a and key in options_b and same(options_a[key], options_b[key]):
            continue
        a, b = (show(o[key]) if key in o else "not set" for o in (options_a, options_b))
        if kind_of(key) == "network":
            raise CheckpointError(
                f"{path}: another network than {first_path}'s: hyperparameter {key} is {b} there and {a} in "
                f"{first_path}; only checkpoints of one network can be averaged"
            )
        warn(f"hyperparameter {key} is {a} in {first_path} and {b} in {path}; the average has the last one's")
    state_a, state_b = first["state_dict"], ckpt["state_dict"]
    for key in [*state_a, *(k for k in state_b if k not in state_a)]:
        if key not in state_a or key not in state_b:
            where, other = (path, first_path) if key in state_b else (first_path, path)
            raise CheckpointError(f"{where}: holds the weight {key}, {other} does not: another network")
        a, b = state_a[key], state_b[key]
        if a.shape != b.shape or a.dtype != b.dtype:
            raise CheckpointError(
                f"{path}: weight {key} is {b.dtype} {tuple(b.shape)} there and {a.dtype} {tuple(a.shape)} "
                f"in {first_path}: another network"
            )


def average_checkpoints(
    paths: Sequence[str | Path], warn: Callable[[str], None] | None = None, progress: bool = False
) -> dict:
    """The average checkpoint of `paths` (see the module's docstring), loaded one at a time
    (memory: one checkpoint and a float64 sum of the floating weights). CheckpointError (naming the
    file and the difference) for a list that cannot be averaged; `warn(message)` for a training or
    decoding option that differs (default: a `warning:` line on stderr)."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise CheckpointError("no checkpoints to average: give one or more .ckpt files")
    if warn is None:
        warn = lambda message: print(f"warning: {message}", file=sys.stderr)  # noqa: E731
    for path in paths:  # a typo in the last name is found before the others are read
        if not path.is_file():
            raise CheckpointError(f"{path}: no such checkpoint file")
    first_path, first, sums, last = paths[0], None, {}, None
    bar = tqdm(paths, desc="averaging", unit="checkpoint", file=sys.stderr, disable=not progress)
    for path in bar:
        ckpt = load_checkpoint(path)
        checkpoint_task(ckpt, path)  # a seqcap checkpoint with vocabularies, or a CheckpointError
        if first is None:  # what compare needs: the metadata, the weights' shapes and dtypes
            first = {k: ckpt[k] for k in ("seqcap", "hyper_parameters") if k in ckpt}
            first["state_dict"] = {k: v.to("meta") for k, v in ckpt["state_dict"].items()}
        else:
            compare(first, first_path, ckpt, path, warn)
        for key, value in ckpt["state_dict"].items():
            if value.is_floating_point():
                if key in sums:
                    sums[key].add_(value.to(torch.float64))
                else:
                    sums[key] = value.to(torch.float64, copy=True)
        last = ckpt
    assert last is not None
    state = {
        key: (sums[key] / len(paths)).to(value.dtype) if key in sums else value.clone()
        for key, value in last["state_dict"].items()
    }
    out = {key: last[key] for key in KEPT if key in last}
    out["state_dict"] = state
    out["seqcap"] = {**last["seqcap"], "averaged_from": [os.path.abspath(p) for p in paths]}
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="seqcap average",
        description="Average the weights of checkpoints of one model (e.g. a run's last N, kept with "
        "checkpoint.keep_last) into a checkpoint for inference and `seqcap test` (not for resuming).",
    )
    parser.add_argument("checkpoints", nargs="+", metavar="CKPT", help="checkpoints of one model")
    parser.add_argument("--out", required=True, metavar="FILE", help="the averaged checkpoint to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    args = parser.parse_args(argv)
    try:  # the output is checked before any checkpoint is read
        check_output(args.out, overwrite=args.overwrite, inputs=args.checkpoints, option="--out")
        seen: list[str] = []
        for path in args.checkpoints:
            twice = next((p for p in seen if same_file(p, path)), None)
            if twice is not None:
                print(f"warning: {path} is {twice} again: it counts twice in the mean", file=sys.stderr)
            seen.append(path)
        ckpt = average_checkpoints(args.checkpoints, progress=sys.stderr.isatty())
        with atomic_path(args.out, overwrite=args.overwrite, inputs=args.checkpoints, option="--out") as tmp:
            torch.save(ckpt, tmp)
    except (CheckpointError, OutputError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    n = len(args.checkpoints)
    print(f"{args.out}: the average of {n} checkpoint{'s' if n > 1 else ''}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
