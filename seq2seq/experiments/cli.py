"""Command-line helpers shared by the experiments: argument types, the output folder, CSV and config."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import torch


def int_at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


def int_list(minimum: int, what: str):
    def parse(text: str) -> list[int]:
        try:
            values = [int(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
        if not values:
            raise argparse.ArgumentTypeError(f"give at least one {what}")
        bad = [v for v in values if v < minimum]
        if bad:
            raise argparse.ArgumentTypeError(f"every {what} must be >= {minimum}, got {bad[0]}")
        return sorted(set(values))

    return parse


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def prepare_out(parser: argparse.ArgumentParser, out: str, files: list[str], overwrite: bool) -> Path:
    """Creates DIR; refuses (parser.error) to replace earlier results unless --overwrite."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        parser.error(f"--out {out}: exists and is not a directory")
    existing = [f for f in files if (path / f).exists()]
    if existing and not overwrite:
        parser.error(f"--out {out} already holds {', '.join(existing)}; pass --overwrite to replace them")
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def write_config(path: Path, args: argparse.Namespace, seconds: float) -> None:
    config = dict(vars(args))
    config.update(torch_version=torch.__version__, seconds=round(seconds, 1))
    path.write_text(json.dumps(config, indent=2) + "\n")


def lightning_overrides(parser: argparse.ArgumentParser, extra: list[str], reserved: tuple[str, ...]) -> None:
    """Checks the arguments an experiment passes on to LightningCLI: only --model.*, --trainer.* and
    --data.* ones, none of those the experiment sets itself (parser.error otherwise)."""
    flags = [a.split("=")[0] for a in extra if a.startswith("-")]
    unknown = [f for f in flags if not f.startswith(("--model.", "--trainer.", "--data."))]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    taken = [f for f in flags if f in reserved]
    if taken:
        parser.error(f"{' '.join(taken)}: set by the experiment itself for every run; see --help")
