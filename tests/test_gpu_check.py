"""`make gpu-check` (seqcap/gpu_check.py) on the CPU: the same pipeline in its --quick form, the
message and exit code 0 without a GPU, and exit code 1 when a check fails."""

from __future__ import annotations

import subprocess
import sys

from seqcap import gpu_check
from tests.conftest import REPO, cli_env, explain

CHECKS = [
    "tests -m cuda", "bench translation", "fused = cells rnn", "fused = cells lstm", "fused = cells gru",
    "fit translation", "fit multimodal", "fit lm", "fit captioning", "fit vqa",
]  # fmt: skip


def table_rows(stdout: str) -> dict[str, list[str]]:
    """The printed table: {check: [result, figure, time]}."""
    lines = stdout.splitlines()
    lines = lines[next(i for i, line in enumerate(lines) if line.startswith("check ")) :]
    assert lines[0].split(" | ")[0].strip() == "check" and set(lines[1]) <= {"-", "+"}, lines[:2]
    rows = {}
    for line in lines[2:]:
        if not line.strip():
            break
        cells = [c.strip() for c in line.split(" | ")]
        rows[cells[0]] = cells[1:]
    return rows


RUN_HERE = CHECKS[:6]  # every kind of check; the other fits are the same code on other configs,
# and every config trains in tests/test_configs.py and tests/test_resume.py


def test_every_check_is_listed():
    assert [name for name, _ in gpu_check.checks()] == CHECKS


def test_quick_cpu_form_runs_every_kind_of_check(tmp_path):
    command = ["-m", "seqcap.gpu_check", "--device", "cpu", "--quick", "--tests", "tests/test_cuda.py",
               "--only", "tests", "bench", "fused", "fit translation"]  # fmt: skip
    result = subprocess.run(
        [sys.executable, *command], cwd=REPO, capture_output=True, text=True, timeout=400,
        env=cli_env(CUDA_VISIBLE_DEVICES=""),
    )  # fmt: skip
    assert result.returncode == 0, explain(result)
    rows = table_rows(result.stdout)
    assert list(rows) == RUN_HERE, result.stdout
    # without a GPU the cuda tests are collected and skip (conftest), with the count as the figure
    assert rows["tests -m cuda"][0] == "skip" and "skipped" in rows["tests -m cuda"][1], rows
    for check in RUN_HERE[1:]:
        assert rows[check][0] == "pass", (check, rows[check], result.stdout)
        assert rows[check][2].endswith(" s"), rows[check]
    assert "tok/s train" in rows["bench translation"][1]
    for cell in gpu_check.CELLS:
        assert f"tol {gpu_check.TOLERANCE:.0e}" in rows[f"fused = cells {cell}"][1]
    assert rows["fit translation"][1].startswith("2 steps") and "bf16-mixed" in rows["fit translation"][1]
    assert "all checks passed" in result.stdout


def test_without_cuda_the_default_command_says_so_and_exits_0():
    result = subprocess.run(
        [sys.executable, "-m", "seqcap.gpu_check"], cwd=REPO, capture_output=True, text=True, timeout=120,
        env=cli_env(CUDA_VISIBLE_DEVICES=""),
    )  # fmt: skip
    assert result.returncode == 0, explain(result)
    assert result.stdout.startswith("gpu-check: no GPU: torch ") and "0 CUDA devices" in result.stdout
    assert "check |" not in result.stdout  # no table: nothing ran


def test_a_failed_check_is_a_row_and_exit_code_1(monkeypatch, capsys):
    def broken(args, profile, tmp):
        raise RuntimeError("boom")

    monkeypatch.setattr(gpu_check, "checks", lambda: [
        ("good", lambda args, profile, tmp: ("pass", "fine")),
        ("bad", lambda args, profile, tmp: ("fail", "wrong")),
        ("broken", broken),
        ("skipped", lambda args, profile, tmp: ("skip", "n/a")),
    ])  # fmt: skip
    assert gpu_check.main(["--device", "cpu", "--quick"]) == 1
    rows = table_rows(capsys.readouterr().out)
    assert {k: v[:2] for k, v in rows.items()} == {
        "good": ["pass", "fine"], "bad": ["fail", "wrong"], "broken": ["fail", "RuntimeError: boom"],
        "skipped": ["skip", "n/a"],
    }  # fmt: skip


def test_out_of_budget_fails_the_remaining_checks(monkeypatch, capsys):
    monkeypatch.setattr(gpu_check, "checks", lambda: [("bench", gpu_check.check_bench)])
    assert gpu_check.main(["--device", "cpu", "--quick", "--budget", "1"]) == 1
    assert table_rows(capsys.readouterr().out)["bench"][:2] == ["fail", "OutOfTime: no time left (--budget)"]
