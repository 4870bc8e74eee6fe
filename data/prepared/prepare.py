"""Tokenise and encode a parallel corpus once, for memory-mapped training (data.prepared.parallel).

    python -m data.prepared.prepare -c configs/translation/gettext_attention.yaml --out data/prepared/gettext
    python -m data.prepared.prepare --data_dir data/corpora/gettext-en-de --max_vocab_size 32000 --out DIR

Takes the `data:` section of a training config (ParallelTextDataModule, MultimodalDataModule,
or TextDataModule for a language model)
and/or that data module's options as ``--NAME VALUE`` (a value is read as YAML: ``--max_len 50``,
``--lowercase true``, ``--max_vocab_size null``). ``--out`` defaults to the config's
``prepared_dir``. Training then reads the folder with ``data.init_args.prepared_dir`` set to the
same DIR (it picks the sub-folder of its options). Tokenisation runs on ``--workers`` processes
(default: every core this process may use), with a progress bar.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

import yaml

from data.core.parallel import DataError
from data.prepared.parallel import prepare, prepared_key
from data.prepared.store import keyed_folder
from data.prepared.text import prepare_text, text_key

DEFAULT_CLASS = "data.datamodules.translation.ParallelTextDataModule"


def data_options(config: str | None, extra: list[str]) -> tuple[str, dict]:
    """(class path, init args) from the config's `data:` section, overridden by --NAME VALUE pairs."""
    class_path, init_args = DEFAULT_CLASS, {}
    if config:
        try:
            loaded = yaml.safe_load(Path(config).read_text()) or {}
        except (OSError, yaml.YAMLError) as error:
            raise DataError(f"{config}: cannot be read as a YAML config ({error})") from None
        section = loaded.get("data") if isinstance(loaded, dict) else None
        if not isinstance(section, dict):
            raise DataError(f"{config}: no `data:` section (class_path + init_args) to prepare")
        class_path = section.get("class_path", class_path)
        init_args = dict(section.get("init_args") or {})
    if len(extra) % 2:
        raise DataError(f"options come as --NAME VALUE pairs; got {' '.join(extra)}")
    for name, value in zip(extra[::2], extra[1::2]):
        if not name.startswith("--"):
            raise DataError(f"{name!r}: expected an option --NAME (then its value)")
        init_args[name[2:].removeprefix("data.").removeprefix("init_args.")] = yaml.safe_load(value)
    return class_path, init_args


def build_datamodule(class_path: str, init_args: dict):
    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        raise DataError(f"data class_path {class_path!r}: no such class") from None
    if not (hasattr(cls, "split_files") or hasattr(cls, "source_files")):
        raise DataError(
            f"{class_path}: data.prepared.prepare takes a ParallelTextDataModule (or subclass) or a "
            "TextDataModule"
        )
    try:
        return cls(**init_args)
    except TypeError as error:
        raise DataError(f"{class_path}: {error}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m data.prepared.prepare", description=__doc__.split("\n")[0],
        epilog="Other --NAME VALUE pairs set the data module's options (as in the config's data.init_args).",
    )  # fmt: skip
    parser.add_argument("-c", "--config", help="a training config; its data: section is used")
    parser.add_argument("--out", help="the prepared folder's parent (default: the config's prepared_dir)")
    parser.add_argument("--workers", type=int, default=None, help="tokenising processes (default: all cores)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args, extra = parser.parse_known_args(argv)
    try:
        class_path, init_args = data_options(args.config, extra)
        out = args.out or init_args.get("prepared_dir")
        if not out:
            raise DataError("say where to write: --out DIR (or prepared_dir in the config's data.init_args)")
        if args.workers is not None and args.workers < 1:
            raise DataError(f"--workers must be >= 1, got {args.workers}")
        init_args["prepared_dir"] = out
        dm = build_datamodule(class_path, init_args)
        started = time.perf_counter()
        lm = hasattr(dm, "source_files")  # language-model text, or parallel text
        key = text_key(dm) if lm else prepared_key(dm)
        _, there = keyed_folder(out, key)
        folder = (prepare_text if lm else prepare)(
            dm, out, workers=args.workers, progress=not args.no_progress
        )
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - started
    done = "already prepared for these options" if there else f"prepared in {seconds:.1f} s"
    print(f"{folder} ({done}); train with data.init_args.prepared_dir: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
