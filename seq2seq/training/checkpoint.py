"""Reading seqcap checkpoints for inference: one loader, one error, one model rebuild.

Every inference CLI (translate, evaluate, generate, caption) starts here: `load_checkpoint` reads
a `.ckpt` with `torch.load(weights_only=True)` (a checkpoint cannot run code), `build_from_hparams`
rebuilds a module from the hyperparameters Lightning saved in it, and `resolve_device` turns
"auto" into cuda when there is one.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from pathlib import Path

import torch
from torch import nn


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and what to do."""


def load_checkpoint(path: str | Path) -> dict:
    """torch.load(weights_only=True) on the CPU, with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means: not a usable checkpoint
        first = (str(e).strip().splitlines() or [""])[0].split(". ")[0]  # torch adds paragraphs
        why = f"{type(e).__name__}: {first}"
        raise CheckpointError(
            f"{path}: not a loadable seqcap checkpoint ({why}): truncated, damaged or not a .ckpt that "
            "`seqcap fit` wrote; use another checkpoint"
        ) from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: not a Lightning checkpoint (a {type(ckpt).__name__}, not a dict)")
    return ckpt


def seqcap_state(ckpt: dict, path: str | Path, key: str, what: str) -> dict:
    """checkpoint["seqcap"] (vocabularies, tokenizers) when it holds `key`; else a CheckpointError
    that says the file holds no `what` (e.g. "translation model")."""
    meta = ckpt.get("seqcap")
    if not isinstance(meta, dict) or key not in meta or "state_dict" not in ckpt:
        raise CheckpointError(f"{path}: holds no seqcap {what} (no {key.replace('_', ' ')} inside)")
    return meta


def legacy_defaults(hparams: dict) -> dict:
    """Options whose default changed, as a checkpoint saved before the change was trained: a GRU
    on the cell path without a saved `gru_reset_after` predates GRUCell's reset_after=True default
    and computed the seeds' reset-before GRU (the fused path always was reset-after). Such
    checkpoints also predate the option groups: their options are flat."""
    if hparams.get("cell") == "gru" and hparams.get("impl") == "cells" and "gru_reset_after" not in hparams:
        return {"gru_reset_after": False}
    return {}


# a flat hyperparameter of checkpoints written before the option groups, by its field's name now
LEGACY_NAMES = {"method": "test_decode"}


def saved_options(kind: type, hparams: dict, name: str, default=None, own: typing.Collection[str] = ()):
    """The option group `name` (a dataclass `kind`: RecurrentOptions, SearchOptions, ImageOptions)
    of a checkpoint's hyperparameters: the dict saved under `name` (checkpoints since the groups),
    else the flat hyperparameters named as its fields (older checkpoints; a name in `own`, a
    parameter of the class being built, stays with that class: VQA's classifier dropout), over
    `default` (the parameter's default)."""
    base = default if dataclasses.is_dataclass(default) else kind()
    fields = {f.name for f in dataclasses.fields(kind)}
    saved = hparams.get(name)
    if isinstance(saved, dict):
        values = {k: v for k, v in saved.items() if k in fields}
    else:
        values = {}
        for field in fields - set(own):
            key = field if field in hparams else LEGACY_NAMES.get(field)
            if key in hparams:
                values[field] = hparams[key]
    return dataclasses.replace(base, **values)


def constructor_args(cls: type, hparams: dict) -> dict:
    """The hyperparameters `cls(...)` accepts (saved ones it does not know are left out), with the
    old defaults of options a checkpoint predates (`legacy_defaults`). An option group parameter
    (a dataclass) is built by `saved_options`; a plain parameter is found at the top level or,
    for a class that takes flat options (ImageEncoder), inside a saved group."""
    hparams = {**legacy_defaults(hparams), **dict(hparams)}
    params = {k: p for k, p in inspect.signature(cls.__init__).parameters.items() if k != "self"}
    hints = typing.get_type_hints(cls.__init__)
    grouped = {k: v for group in hparams.values() if isinstance(group, dict) for k, v in group.items()}
    args = {}
    for name, param in params.items():
        kind = hints.get(name)
        if dataclasses.is_dataclass(kind):
            args[name] = saved_options(kind, hparams, name, param.default, own=params)
        elif name in hparams:
            args[name] = hparams[name]
        elif name in grouped:
            args[name] = grouped[name]
    return args


def build_from_hparams(
    cls: type[nn.Module], ckpt: dict, path: str | Path, prefix: str = "", **overrides
) -> nn.Module:
    """cls(**hyperparameters, **overrides) with the checkpoint's weights under `prefix`
    ("model." takes the inner model of a LightningModule, "" the whole module).
    A model that does not rebuild or load is a CheckpointError naming the file."""
    args = constructor_args(cls, ckpt.get("hyper_parameters") or {})
    args.update(overrides)
    state = {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    try:
        module = cls(**args)
        module.load_state_dict(state)
    except (TypeError, ValueError, RuntimeError, KeyError) as e:
        why = f"{type(e).__name__}: {e}"
        raise CheckpointError(f"{path}: cannot rebuild its {cls.__name__} ({why})") from None
    return module


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """ "auto" -> cuda when available, else cpu; anything else as torch.device."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def split_checkpoint_values(values: list[str]) -> tuple[list[str], list[str]]:
    """`--checkpoint A.ckpt B.ckpt IMG ...` on a command with positional arguments: argparse gives
    --checkpoint every value. The checkpoints are the first value and those right after it whose
    name ends in .ckpt; the rest -> the command's positional arguments."""
    n = 1
    while n < len(values) and values[n].endswith(".ckpt"):
        n += 1
    return values[:n], values[n:]
