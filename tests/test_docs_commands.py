"""Every command in a fenced block of README.md and docs/*.md runs as written, at least in its
--help form: `seqcap` sub-commands reach their parser and know every option the line uses, the
train commands' configs and overrides parse (LightningCLI's --print_config), `python -m` modules
exist with a main, and `make` targets exist. In-process: a subprocess per line would spend most
of the suite's time importing torch."""

from __future__ import annotations

import importlib
import re
import shlex
import sys
from pathlib import Path

import pytest

from seqcap.cli import COMMANDS, GROUPS, main
from tests.conftest import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
TRAIN = ("fit", "validate", "test", "predict")


def fenced_commands(path: Path) -> list[str]:
    """The command lines of the file's fenced blocks (comments and continuations folded)."""
    lines, inside, fence = [], False, ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        stripped = raw.strip()
        if stripped.startswith("```"):
            inside, fence = not inside, stripped[3:].strip() if not inside else ""
            continue
        if inside and fence in ("", "bash", "sh", "console", "shell"):
            line = stripped.split("  #")[0].strip()
            if lines and lines[-1].endswith("\\"):
                lines[-1] = lines[-1][:-1] + " " + line
            elif re.match(r"(seqcap|python -m|make) ", line + " "):
                lines.append(line)
    return lines


CASES = [(path.relative_to(REPO).as_posix(), line) for path in DOCS for line in fenced_commands(path)]


def test_the_docs_have_commands_to_check():
    assert len(CASES) > 30 and any(p == "README.md" for p, _ in CASES)
    assert {p for p, _ in CASES} >= {"README.md", "docs/translation.md", "docs/captioning.md", "docs/api.md"}


def options_of(text: str) -> set[str]:
    return set(re.findall(r"(--[a-z][a-z0-9-]*)", text))


def help_text(run, argv: list[str], capsys) -> str:
    """What `run(argv)` prints for --help; it must end with status 0 (return or SystemExit)."""
    try:
        code = run(argv)
    except SystemExit as done:
        code = done.code
    out = capsys.readouterr().out
    assert code in (0, None) and "usage" in out.lower(), out[-2000:]
    return out


@pytest.mark.parametrize("where, line", CASES, ids=[f"{p}:{i}" for i, (p, _) in enumerate(CASES)])
def test_command_runs_in_its_help_form(where, line, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(sys, "argv", ["seqcap"])  # pytest's own arguments are not the command's
    words = shlex.split(line)
    if words[0] == "make":
        targets = re.findall(r"^([a-z][\w-]*):", (REPO / "Makefile").read_text(), re.M)
        assert words[1] in targets, f"{where}: make {words[1]}: no such target"
        return
    if words[0] == "python":
        module = importlib.import_module(words[2])
        if words[2] in ("seq2seq", "captioning", "seqcap"):  # the LightningCLI / seqcap itself
            return
        help_text(module.main, ["--help"], capsys)
        return
    sub, rest = words[1], words[2:]
    assert sub in COMMANDS or sub in GROUPS, f"{where}: seqcap {sub}: no such sub-command"
    if sub in TRAIN:  # the config and every override parse
        with pytest.raises(SystemExit) as done:
            main([sub, *rest, "--print_config"])
        assert done.value.code in (0, None), f"{where}: {line}\n{capsys.readouterr().err[-2000:]}"
        return
    if sub == "evaluate":  # the options of both evaluators (the checkpoint picks one)
        out = "".join(
            help_text(importlib.import_module(m).main, ["--help"], capsys)
            for m in ("seq2seq.translation.evaluate", "captioning.captioner.evaluate")
        )
    else:
        head = [rest[0]] if sub in GROUPS else []
        out = help_text(lambda a: main([sub, *a]), [*head, "--help"], capsys)
    unknown = options_of(" ".join(rest)) - options_of(out)
    assert not unknown, f"{where}: {line}: options its --help does not list: {sorted(unknown)}"
