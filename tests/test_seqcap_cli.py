"""The `seqcap` command as a user runs it (the console script pip installs), on the checkpoints
of tests/fixtures/legacy: every sub-command reaches its task's entry point, and the outputs are the
ones the Python API gives."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from seqcap.cli import COMMANDS, GROUPS, checkpoint_argument, main
from tests.conftest import cli_env, explain

LEGACY = Path(__file__).parent / "fixtures" / "legacy"
EXPECTED = json.loads((LEGACY / "expected.json").read_text())
SEQCAP = Path(sys.executable).parent / "seqcap"  # the console script of `pip install -e .`


def seqcap(*args: str, cwd: Path, input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(SEQCAP), *args], cwd=cwd, input=input, capture_output=True, text=True, timeout=300, env=cli_env()
    )


def test_help_lists_every_sub_command(tmp_path):
    result = seqcap("--help", cwd=tmp_path)
    assert result.returncode == 0, explain(result)
    for name in [*COMMANDS, *GROUPS]:
        assert f"\n  {name} " in result.stdout
    for name in ("shapes_vqa", "length_curve", "vqa_baselines", "gettext"):
        assert name in result.stdout
    wrong = seqcap("tranlsate", cwd=tmp_path)
    assert wrong.returncode == 2 and "unknown sub-command 'tranlsate'" in wrong.stderr


@pytest.mark.parametrize("group", list(GROUPS))
def test_every_group_member_has_help(group, capsys):
    """`seqcap GROUP NAME --help` reaches each module's own parser (hyphens work too); in-process,
    as a subprocess each would spend seconds importing torch."""
    assert main([group, "--help"]) == 0
    listing = capsys.readouterr().out
    for name, module in GROUPS[group][1].items():
        assert f"python -m {module}" in listing
        with pytest.raises(SystemExit) as done:
            main([group, name.replace("_", "-"), "--help"])
        assert done.value.code == 0 and "usage:" in capsys.readouterr().out
    assert main([group, "nope"]) == 2 and "unknown name 'nope'" in capsys.readouterr().err


def test_translate_and_evaluate_a_checkpoint(tmp_path):
    want = EXPECTED["translation"]["outputs"]
    out = seqcap("translate", "--checkpoint", str(LEGACY / "translation.ckpt"), "--beam-size", "3",
                 cwd=tmp_path, input="w1 w2 w3\nw4 w5 w6 w7 w8\n")  # fmt: skip
    assert out.returncode == 0, explain(out)
    assert (
        out.stdout.splitlines() == [want[0][0]["text"], want[1][0]["text"]] == ["w3 w2 w1", "w8 w7 w6 w5 w4"]
    )
    (tmp_path / "src.txt").write_text("w1 w2 w3\nw4 w5 w6 w7 w8\n")
    (tmp_path / "ref.txt").write_text("w3 w2 w1\nw8 w7 w6 w5 w4\n")
    bleu = seqcap("evaluate", "--checkpoint", str(LEGACY / "translation.ckpt"), "--src", "src.txt",
                  "--ref", "ref.txt", "--beam-size", "3", cwd=tmp_path)  # fmt: skip
    assert bleu.returncode == 0, explain(bleu)
    assert "100.0" in bleu.stdout  # both outputs equal their references


def test_evaluate_refuses_a_checkpoint_it_cannot_score(tmp_path):
    result = seqcap("evaluate", "--checkpoint", str(LEGACY / "lm.ckpt"), cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "language model checkpoint" in result.stderr and "seqcap test -c CONFIG" in result.stderr
    missing = seqcap("evaluate", "--checkpoint", str(tmp_path / "none.ckpt"), cwd=tmp_path)
    assert missing.returncode == 2 and "no such checkpoint file" in missing.stderr
    usage = seqcap("evaluate", cwd=tmp_path)
    assert usage.returncode == 2 and "--checkpoint CKPT" in usage.stderr


def test_caption_answer_and_generate_give_the_api_outputs(tmp_path):
    image = str(LEGACY / "image0.png")
    caption = seqcap("caption", "--checkpoint", str(LEGACY / "caption_showtell.ckpt"), image, "--greedy",
                     "--device", "cpu", cwd=tmp_path)  # fmt: skip
    assert caption.returncode == 0, explain(caption)
    assert EXPECTED["captioning"]["showtell"]["greedy"][0][0] in caption.stdout
    question = EXPECTED["vqa"]["questions"][0]
    answer = seqcap("answer", "--checkpoint", str(LEGACY / "vqa.ckpt"), image, question, "--top", "3",
                    cwd=tmp_path)  # fmt: skip
    assert answer.returncode == 0, explain(answer)
    top = EXPECTED["vqa"]["top3"][0]
    assert answer.stdout.splitlines() == [question] + [f"  {p:.3f}  {t}" for t, p in top]
    out = tmp_path / "scores.tsv"  # generate --output: the lines, written whole
    score = seqcap("generate", "--checkpoint", str(LEGACY / "lm.ckpt"), "--score", "w1 w2 w3",
                   "--output", str(out), cwd=tmp_path)  # fmt: skip
    assert score.returncode == 0, explain(score)
    logp, n = EXPECTED["lm"]["scores"][0]
    assert score.stdout == "" and out.read_text() == f"{logp:.4f}\t{n}\tw1 w2 w3\n"
    again = seqcap("generate", "--checkpoint", str(LEGACY / "lm.ckpt"), "--score", "w1",
                   "--output", str(out), cwd=tmp_path)  # fmt: skip
    assert again.returncode == 2 and "pass --overwrite" in again.stderr, explain(again)
    assert out.read_text() == f"{logp:.4f}\t{n}\tw1 w2 w3\n"  # left as it was


def test_checkpoint_argument_forms():
    assert checkpoint_argument(["--src", "a", "--checkpoint", "m.ckpt"]) == "m.ckpt"
    assert checkpoint_argument(["--checkpoint=m.ckpt"]) == "m.ckpt"
    assert checkpoint_argument(["--checkpoint"]) is None
