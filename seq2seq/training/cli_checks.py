"""What the LightningCLI (seq2seq/training/cli.py) checks before it builds anything, and which
errors it reports as one line (`error: ...`, exit status 2) instead of a traceback.

`review_ckpt_path`  a `--ckpt_path` of fit, validate, test or predict, right after the command
                    line is parsed: the file loads (missing, truncated, not a checkpoint: an error
                    naming it), resumes (fit: not weights alone, such as a `seqcap average`),
                    holds a model of the config's task, and its hyperparameters against
                    the config's. The network is the checkpoint's: an option that changes it, given
                    on the command line, is an error (its weights cannot fit); one that only the
                    config file sets is replaced by the checkpoint's value, with a warning. Options of
                    training and decoding stay this run's (a warning names both values), except the
                    optimizer's (lr, ...): resuming restores the checkpoint's optimizer and schedule.
`user_error`        the message of a user error in an exception's chain: a DataError or
                    CheckpointError anywhere, or a ValueError that one of our constructors raised
                    itself (LightningCLI wraps it in jsonargparse's error); None for anything else,
                    a bug, whose traceback the user should see.
"""

from __future__ import annotations

import dataclasses
import importlib
import linecache
import re
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from seq2seq.training.checkpoint import CheckpointError, constructor_args, load_checkpoint

# Options that do not change the network, by what they act on (a group's field as "group.field").
# Every other option of a model changes the network, so its weights fit only the value they were
# trained with.
OPTIMIZER = {"lr", "backbone_lr", "weight_decay", "lr_patience", "lr_factor"}
TRAINING = {
    "dropout", "rnn.dropout", "label_smoothing", "monitor", "self_critical", "scst_samples",
    "scst_baseline", "init_checkpoint", "image.cache_features",
}  # fmt: skip
DECODING = {"val_decode", "num_samples", "unk_replace", "sample_len"}
DECODING_GROUPS = ("search.",)
SPECIAL_PATHS = ("best", "hpc")  # Lightning's own names; "last" is resolved here
TASK_CONFIGS = {"translation": "translation", "lm": "lm", "captioning": "captioning", "vqa": "vqa"}
# what Lightning counts as a "last" checkpoint (ModelCheckpoint._find_last_checkpoints)
LAST = re.compile(r"^last(-\d+)?\.ckpt$")
OUR_PACKAGES = ("seq2seq", "captioning", "data", "seqcap")


def resumable_versions(root: Path, run_name: str) -> list[int]:
    """The version numbers of root/run_name/version_N folders that hold checkpoints/last.ckpt."""
    return sorted(
        int(p.name.split("_")[1]) for p in (root / run_name).glob("version_*")
        if p.name.split("_")[1].isdigit() and (p / "checkpoints" / "last.ckpt").exists()
    )  # fmt: skip


def last_checkpoint(checkpoints: Path) -> Path | None:
    """The newest last*.ckpt of a checkpoint folder: the file Lightning resumes `last` from."""
    found = [p for p in checkpoints.glob("last*.ckpt") if LAST.match(p.name)] if checkpoints.is_dir() else []
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def model_class(class_path: str | None) -> type | None:
    if not class_path or "." not in class_path:
        return None
    module, _, name = class_path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):  # jsonargparse has refused it already if it is wrong
        return None


def task_check(ckpt: dict, path: Path, cls: type, subcommand: str) -> None:
    """A CheckpointError when the checkpoint's task is not the model class's."""
    from seq2seq.predictor import TASKS, checkpoint_task  # imports no task package

    task, want = checkpoint_task(ckpt, path), getattr(cls, "task", "")
    if not want or task == want:
        return
    what, model = TASKS.get(task, (task, ""))[0], TASKS.get(want, (want, ""))[0]
    config = path.parent.parent / "config.yaml"  # the run folder of a checkpoints/ file
    hint = f"-c {config}" if config.is_file() else f"-c configs/{TASK_CONFIGS.get(task, task)}/..."
    raise CheckpointError(
        f"{path}: a {what} checkpoint; this config's model is a {model} model ({cls.__name__}): use a "
        f"{model} checkpoint, or the {what} checkpoint with a {what} config (seqcap {subcommand} {hint})"
    )


def flat(options: dict) -> dict:
    """{"rnn": {"hidden_size": 8}, "lr": 1} -> {"rnn.hidden_size": 8, "lr": 1}."""
    out = {}
    for key, value in options.items():
        if dataclasses.is_dataclass(value):
            value = dataclasses.asdict(value)
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out


def same(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b or (
        not isinstance(a, bool) and not isinstance(b, bool) and isinstance(a, (int, float))
        and isinstance(b, (int, float)) and a == b
    )  # fmt: skip


def kind_of(option: str) -> str:
    if option in OPTIMIZER:
        return "optimizer"
    if option in TRAINING:
        return "training"
    if option in DECODING or option.startswith(DECODING_GROUPS):
        return "decoding"
    return "network"


def command_line_options(argv: Sequence[str]) -> set[str]:
    """The model options given on the command line, as "rnn.hidden_size" ("rnn" for a whole group):
    --model.init_args.X, --model.X, with a value after a space or an '='."""
    given = set()
    for arg in argv:
        if isinstance(arg, str) and arg.startswith("--model."):
            parts = [p for p in arg[2:].split("=", 1)[0].split(".")[1:] if p != "init_args"]
            if parts:
                given.add(".".join(parts))
    return given


def explicit(option: str, given: set[str]) -> bool:
    return any(option == g or option.startswith(g + ".") for g in given)


def show(value) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def resolve(cfg, subcommand: str) -> Path | None:
    """The checkpoint file `ckpt_path` names, None for none (or a name Lightning resolves itself)."""
    ckpt_path = cfg.get("ckpt_path")
    if not ckpt_path or str(ckpt_path) in SPECIAL_PATHS or str(ckpt_path).startswith("registry"):
        return None
    if str(ckpt_path) != "last":
        return Path(ckpt_path)
    root, run_name = Path(cfg.trainer.default_root_dir or "runs"), cfg.get("run_name") or "run"
    versions = resumable_versions(root, run_name)
    found = last_checkpoint(root / run_name / f"version_{versions[-1]}" / "checkpoints") if versions else None
    if subcommand != "fit":  # a new run folder, where Lightning would find none and use random weights
        hint = f" (the latest: --ckpt_path {found})" if found else ""
        raise CheckpointError(f"--ckpt_path last: {subcommand} needs the checkpoint's file{hint}")
    if found is None:  # Lightning warns and trains from scratch: a resume command may run first
        where = root / run_name / "version_*" / "checkpoints" / "last.ckpt"
        warn(f"--ckpt_path last: no {where}; training starts from scratch")
    return found


def warn(message: str) -> None:
    from pytorch_lightning.utilities import rank_zero_only

    if rank_zero_only.rank == 0:
        print(f"warning: {message}", file=sys.stderr, flush=True)


def review_ckpt_path(config, argv: Sequence[str]) -> Path | None:
    """Checks a parsed config's ckpt_path (see the module's docstring) and makes its model options
    the ones the run will use: the checkpoint's network, this run's training and decoding. Returns
    the checkpoint file (None: no checkpoint), prints a warning line for every option it settles,
    raises a CheckpointError (one line, naming the file and what to do) for what cannot run."""
    subcommand = config.get("subcommand")
    cfg = config[subcommand] if subcommand else config
    path = resolve(cfg, subcommand or "fit")
    if path is None:
        return None
    ckpt = load_checkpoint(path)
    if subcommand in (None, "fit") and "optimizer_states" not in ckpt:
        meta = ckpt.get("seqcap")
        sources = meta.get("averaged_from") if isinstance(meta, dict) else None
        what = f"the average of {len(sources)} checkpoints" if sources else "weights only"
        raise CheckpointError(
            f"{path}: {what}, without the optimizer and loop states a run resumes from: use it with "
            "`seqcap test`/`validate` or for inference, and resume from a checkpoint `seqcap fit` wrote"
        )
    model = cfg.get("model")
    cls = model_class(model.get("class_path")) if model is not None and hasattr(model, "get") else None
    if cls is None:
        return path
    task_check(ckpt, path, cls, subcommand or "fit")
    init = model.get("init_args")
    if init is None:
        return path
    linked = set(getattr(cls, "vocab_sizes", {}).values())  # set from the data, checked when loaded
    saved = flat(constructor_args(cls, ckpt.get("hyper_parameters") or {}))
    del ckpt
    given = command_line_options(argv)
    fit = subcommand in (None, "fit")
    refused = []
    for option, value in flat(init.as_dict()).items():
        if option in linked or option not in saved or same(value, saved[option]):
            continue
        old, kind = saved[option], kind_of(option)
        name = f"model.init_args.{option}"
        if kind == "network":
            if explicit(option, given):
                refused.append(f"--{name} {show(value)} (it was trained with {show(old)})")
                continue
            init[option] = old
            warn(f"{path}: the config has {name}={show(value)}; the checkpoint's {show(old)} is used")
        elif kind == "optimizer":
            if fit:
                init[option] = old
                warn(
                    f"{path}: {name}={show(value)} is not used: resuming restores the checkpoint's optimizer "
                    f"and learning-rate schedule (trained with {show(old)}); start a new run to change it"
                )
        elif fit or kind == "decoding":
            warn(f"{path}: trained with {name}={show(old)}; this run uses {show(value)}")
    if refused:
        action = "resume" if fit else subcommand
        raise CheckpointError(
            f"{path}: its weights do not fit {'; '.join(refused)}: drop the option to {action} with the "
            "checkpoint's network, or start a new run (without --ckpt_path)"
        )
    return path


ROOTS = tuple(Path(__file__).resolve().parents[2] / p for p in OUR_PACKAGES)


def in_packages(frame) -> bool:
    path = Path(frame.f_code.co_filename).resolve()
    return any(path.is_relative_to(root) for root in ROOTS)


def culprit(frames) -> str | None:
    """What the user set that the outermost of `frames` checks: the class of a constructor
    (`__init__`, or a dataclass's `__post_init__`: the class the user configured), or --ckpt_path
    for a LightningModule's on_load_checkpoint (the checkpoint against the model and the data)."""
    for frame in frames:
        if frame.f_code.co_name in ("__init__", "__post_init__") and "self" in frame.f_locals:
            return type(frame.f_locals["self"]).__name__
        if frame.f_code.co_name == "on_load_checkpoint":
            return "--ckpt_path"
    return None


def raised_about(error: BaseException) -> str | None:
    """The culprit of an error raised by a `raise` statement of our packages in a constructor of
    ours or a checkpoint's loading hook (not by a library, nor by Python on a bug such as a bad
    unpacking); None otherwise."""
    frames = list(traceback.walk_tb(error.__traceback__))
    if not frames or not in_packages(frames[-1][0]):
        return None
    frame, line = frames[-1]
    if not linecache.getline(frame.f_code.co_filename, line).strip().startswith("raise "):
        return None
    return culprit([f for f, _ in frames if in_packages(f)])


def user_error(error: BaseException) -> str | None:
    """The one-line message of the user error in `error`'s chain (see the module's docstring)."""
    from data.core.parallel import DataError

    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, (DataError, CheckpointError)):
            return str(cause)
        if isinstance(cause, ValueError) and (about := raised_about(cause)) is not None:
            message = str(cause)
            return message if message.startswith(f"{about}:") else f"{about}: {message}"
        cause = cause.__cause__ or cause.__context__
    return None
