"""`seqcap translate` and `seqcap evaluate` never lose what the user has: outputs written whole or
not at all, refused up front when they would replace an input, a folder or (without --overwrite)
an existing file; stdin decoded strictly; the input streamed in chunks with the same output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from seq2seq.translation import cli as translate_cli
from seq2seq.translation import evaluate as evaluate_cli
from tests.conftest import cli_env, explain, run_python

TRANSLATE = ["-m", "seq2seq.translation.cli"]


def sources(n: int) -> list[str]:
    """n reversal-task sentences of 3-8 words w0..w9 (deterministic)."""
    return [" ".join(f"w{(i * 7 + k * 3) % 10}" for k in range(3 + i % 6)) for i in range(n)]


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_an_error_part_way_leaves_the_existing_output_and_no_temporary_file(trained_run, tmp_path):
    """Line 8 has a tab (an error for a text-only checkpoint) and chunks are 3 lines: two chunks
    are translated and written before the error, yet out.txt stays byte for byte as it was."""
    lines = sources(10)
    lines[7] = "w1\tw2"
    write_lines(tmp_path / "in.txt", lines)
    old = b"my earlier translations\n\xff keep me\n"
    (tmp_path / "out.txt").write_bytes(old)
    result = run_python(
        [*TRANSLATE, "--checkpoint", str(trained_run.last_ckpt), "--input", "in.txt", "--output", "out.txt",
         "--overwrite", "--chunk-size", "3", "--device", "cpu"],
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2, explain(result)
    assert result.stderr.strip().splitlines()[-1].startswith("error: in.txt, line 8: a tab")
    assert "Traceback" not in result.stderr
    assert (tmp_path / "out.txt").read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt", "out.txt"]


def test_non_utf8_stdin_is_an_error_naming_stdin_and_line(trained_run, tmp_path):
    for command in (TRANSLATE, ["-m", "seqcap", "translate"]):
        result = subprocess.run(  # bytes in: run_python sends text
            [sys.executable, *command, "--checkpoint", str(trained_run.last_ckpt), "--device", "cpu"],
            cwd=tmp_path, input=b"w1 w2 w3\nw1 w2 \xff\xfe w3\n", capture_output=True, env=cli_env(),
            timeout=300,
        )  # fmt: skip
        err = result.stderr.decode()
        assert result.returncode == 2, err
        assert err.strip().splitlines() == [
            "error: <stdin>, line 2: not valid UTF-8 (invalid start byte at byte 6); "
            "convert the file to UTF-8, e.g. with `iconv -f LATIN1 -t UTF-8`"
        ]


def test_chunked_translation_equals_unchunked_with_n_best_and_plots(trained_run, tmp_path):
    lines = sources(11)
    lines[4] = ""
    lines[9] = " ".join(["w3"] * 30)  # truncated: the warning names its file line in any chunk
    write_lines(tmp_path / "in.txt", lines)
    outputs, plots, warnings = {}, {}, {}
    for chunk in (3, 1000):
        argv = ["--checkpoint", str(trained_run.last_ckpt), "--input", str(tmp_path / "in.txt"),
                "--output", str(tmp_path / f"out{chunk}.txt"), "--chunk-size", str(chunk), "--n-best", "2",
                "--beam-size", "3", "--batch-size", "2", "--device", "cpu",
                "--attention-plot", str(tmp_path / f"plots{chunk}")]  # fmt: skip
        run = run_python(["-m", "seqcap", "translate", *argv], cwd=tmp_path)
        assert run.returncode == 0, explain(run)
        outputs[chunk] = (tmp_path / f"out{chunk}.txt").read_text(encoding="utf-8")
        plots[chunk] = sorted(p.name for p in (tmp_path / f"plots{chunk}").iterdir())
        found = run.stderr.replace("\r", "\n").splitlines()  # a progress bar may share the line
        warnings[chunk] = [w[w.index("warning:") :] for w in found if "warning:" in w]
    # the same translations; a score may differ in its 4th decimal, as it does with another
    # --batch-size (float sums over other batch shapes)
    parsed = {c: [line.split(" ||| ") for line in outputs[c].splitlines()] for c in outputs}
    assert [row[:2] for row in parsed[3]] == [row[:2] for row in parsed[1000]]
    for a, b in zip(parsed[3], parsed[1000]):
        assert float(a[2]) == pytest.approx(float(b[2]), abs=2e-4)
    indices = [line.split(" ||| ")[0] for line in outputs[3].splitlines()]
    assert indices == [str(i) for i in range(11) for _ in range(2)]
    assert plots[3] == plots[1000] == [f"{i:05d}.png" for i in range(1, 12) if i != 5]
    assert warnings[3] == warnings[1000] and len(warnings[3]) == 1 and "line 10: 30 tokens" in warnings[3][0]


def test_existing_output_and_plots_need_overwrite(trained_run, tmp_path, capsys):
    write_lines(tmp_path / "in.txt", sources(3))
    (tmp_path / "out.txt").write_text("old\n", encoding="utf-8")
    argv = ["--checkpoint", str(trained_run.last_ckpt), "--input", str(tmp_path / "in.txt"),
            "--output", str(tmp_path / "out.txt"), "--device", "cpu"]  # fmt: skip
    assert translate_cli.main(argv) == 2
    err = capsys.readouterr().err
    out = tmp_path / "out.txt"
    assert err == f"error: --output {out} exists; pass --overwrite to replace it, or choose another path\n"
    assert (tmp_path / "out.txt").read_text(encoding="utf-8") == "old\n"
    assert translate_cli.main([*argv, "--overwrite"]) == 0
    replaced = (tmp_path / "out.txt").read_text(encoding="utf-8").splitlines()
    assert len(replaced) == 3 and replaced != ["old"]
    plots = tmp_path / "plots"
    plots.mkdir()
    (plots / "00002.png").write_bytes(b"my plot")
    (plots / "notes.txt").write_text("mine")
    argv = ["--checkpoint", str(trained_run.last_ckpt), "--input", str(tmp_path / "in.txt"),
            "--attention-plot", str(plots), "--device", "cpu"]  # fmt: skip
    assert translate_cli.main(argv) == 2
    captured = capsys.readouterr()
    assert f"--attention-plot {plots} already holds attention plots ({plots / '00002.png'})" in captured.err
    assert captured.out == "" and (plots / "00002.png").read_bytes() == b"my plot"
    assert translate_cli.main([*argv, "--overwrite"]) == 0
    assert (plots / "00002.png").read_bytes()[:4] == b"\x89PNG" and (
        plots / "notes.txt"
    ).read_text() == "mine"
    assert sorted(p.name for p in plots.iterdir()) == ["00001.png", "00002.png", "00003.png", "notes.txt"]


def test_an_input_or_folder_as_output_is_refused_before_any_work(trained_run, tmp_path, capsys):
    source = write_lines(tmp_path / "in.txt", sources(2))
    before = source.read_bytes()
    os.link(source, tmp_path / "hardlink.txt")
    (tmp_path / "plots").write_text("a file")
    bad_checkpoint = str(tmp_path / "never-loaded.ckpt")  # refusals come before the checkpoint is read
    cases = {
        "hardlink.txt": ("--output", "is the same file as the input"),
        ".": ("--output", "is a folder"),
        "plots": ("--attention-plot", "exists and is not a folder"),
    }
    for target, (option, message) in cases.items():
        argv = ["--checkpoint", bad_checkpoint, "--input", str(source), option, str(tmp_path / target)]
        assert translate_cli.main([*argv, "--overwrite"]) == 2
        err = capsys.readouterr().err
        assert (
            err.startswith(f"error: {option} {tmp_path / target}") and message in err and err.count("\n") == 1
        )
    assert source.read_bytes() == before
    for args in (
        ["--src", str(source), "--ref", str(tmp_path / "hardlink.txt")],
        ["--src", str(tmp_path / "other.txt"), "--ref", str(source)],
    ):
        code = evaluate_cli.main(
            ["--checkpoint", bad_checkpoint, *args, "--output", str(tmp_path / "hardlink.txt"), "--overwrite"]
        )
        assert code == 2 and "is the same file as the input" in capsys.readouterr().err
    assert source.read_bytes() == before


def test_evaluate_writes_its_json_line_whole_and_refuses_to_replace_it(trained_run, tmp_path, capsys):
    src = write_lines(tmp_path / "src.txt", sources(4))
    ref = write_lines(tmp_path / "ref.txt", [" ".join(reversed(s.split())) for s in sources(4)])
    out = tmp_path / "scores.json"
    argv = ["--checkpoint", str(trained_run.last_ckpt), "--src", str(src), "--ref", str(ref),
            "--output", str(out), "--device", "cpu", "--beam-size", "2"]  # fmt: skip
    assert evaluate_cli.main(argv) == 0
    scores = json.loads(out.read_text(encoding="utf-8"))
    assert scores["sentences"] == 4 and scores["beam_size"] == 2 and capsys.readouterr().out == ""
    assert evaluate_cli.main(argv) == 2
    assert f"--output {out} exists" in capsys.readouterr().err
    assert json.loads(out.read_text(encoding="utf-8")) == scores
