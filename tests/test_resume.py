"""Training survives kill -9: a run killed at a random step and resumed with `--ckpt_path last`
ends with weights bitwise equal to an uninterrupted run of the same steps, for every task, with
dropout on (translation, multimodal translation, the LM with truncated BPTT, captioning with
cross-entropy and with SCST, VQA), and under DDP.

Each case runs as a user runs it: `python -m seqcap fit -c CONFIG` in subprocesses on tiny data
(tests/test_configs.py builds it). The killed run writes last.ckpt every 3 steps and kills
itself (SIGKILL, tests/kill_switch.py) at a step drawn at random (fixed seed), at the start or end
of a batch; its last.ckpt is then mid-epoch or at an epoch's end, and validation ran between.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from data.builders import shapes_vqa
from data.builders.shapes import JSON_NAME as SHAPES_JSON
from data.builders.shapes import build_shapes_dataset
from data.builders.shapes_mmt import build_shapes_mmt
from tests.conftest import REPO, cli_env, explain, reverse_corpus_at
from tests.test_configs import small, write_licence_folder

STEPS = 12  # optimizer steps of every run
EVERY = 3  # last.ckpt every EVERY steps in the killed run


@dataclass
class Case:
    config: str
    args: list[str]  # data and sizes
    steps_per_epoch: int


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> dict[str, Case]:
    base = tmp_path_factory.mktemp("resume-data")
    reverse = reverse_corpus_at(base / "reverse", n=160, n_dev=8, n_test=4)  # 5 batches of 32
    licenses = write_licence_folder(base / "licenses")
    shapes = base / "shapes"
    build_shapes_dataset(shapes, n_train=10, n_val=2, n_test=2, size=64, progress=False)
    shapes_vqa.write(base / "shapes_vqa", shapes_vqa.build(shapes))
    mmt = base / "shapes_mmt"
    build_shapes_mmt(mmt, n_train=16, n_dev=2, n_test=2, size=64, progress=False)
    images = ["--data.init_args.image_size", "64", "--data.init_args.cache_dir", str(base / "features")]
    captions = [  # validation (decoding, CIDEr) every other epoch of 2 batches
        "--data.init_args.source", str(shapes / SHAPES_JSON), "--data.init_args.batch_size", "8",
        "--trainer.check_val_every_n_epoch", "2",
        "--model.init_args.rnn.dropout", "0.3", *images, *small(),
    ]  # fmt: skip
    return {
        "translation": Case(
            "configs/translation/reverse_attention.yaml",
            [
                "--data.init_args.data_dir",
                str(reverse),
                "--data.init_args.batch_size",
                "32",
                "--model.init_args.rnn.dropout",
                "0.3",
                *small(),
            ],
            5,
        ),  # fmt: skip
        "multimodal": Case(
            "configs/translation/shapes_mmt.yaml",
            [
                "--data.init_args.data_dir",
                str(mmt),
                "--data.init_args.image_dir",
                str(mmt / "images"),
                "--data.init_args.batch_size",
                "4",
                "--model.init_args.rnn.dropout",
                "0.3",
                *images,
                *small(),
            ],
            4,
        ),  # fmt: skip
        "lm": Case(
            "configs/lm/licenses_word_lstm.yaml",
            [
                "--data.init_args.files",
                f'["{licenses}"]',
                "--data.init_args.batch_size",
                "4",
                "--data.init_args.tbptt_steps",
                "20",
                *small(32, 32),
            ],
            0,  # not needed: the LM's epoch length is whatever its stream gives
        ),  # fmt: skip
        "captioning": Case("configs/captioning/shapes_showtell.yaml", captions, 0),
        "scst": Case(
            "configs/captioning/shapes_showtell.yaml",
            [*captions, "--model.init_args.self_critical", "true", "--model.init_args.scst_samples", "2"],
            0,
        ),
        "vqa": Case(
            "configs/vqa/shapes_attention.yaml",
            [
                "--data.init_args.root",
                str(base / "shapes_vqa"),
                "--data.init_args.batch_size",
                "8",
                "--model.init_args.joint_size",
                "32",
                *images,
                *small(),
            ],
            0,
        ),  # fmt: skip
    }


def fit(case: Case, root: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "seqcap", "fit", "-c", case.config, *case.args,
        "--trainer.default_root_dir", str(root),
        "--trainer.max_steps", str(STEPS), "--trainer.max_epochs", "-1",
        "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false", "--early_stopping.patience", "1000",
        *extra,
    ]  # fmt: skip


def last_checkpoint(root: Path) -> Path:
    (path,) = root.glob("*/version_*/checkpoints/last.ckpt")
    return path


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def start(args: list[str], log: Path) -> subprocess.Popen:
    with open(log, "w") as out:  # its own process group: a DDP run's processes die together
        return subprocess.Popen(
            args, cwd=REPO, env=cli_env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def finish(proc: subprocess.Popen, log: Path, timeout: float = 300) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError(f"timed out:\n{log.read_text()[-4000:]}") from None


def assert_same_weights(a: dict, b: dict) -> None:
    assert a["global_step"] == b["global_step"] == STEPS
    assert a["state_dict"].keys() == b["state_dict"].keys()
    different = [k for k in a["state_dict"] if not torch.equal(a["state_dict"][k], b["state_dict"][k])]
    assert not different, f"weights differ from the uninterrupted run: {different[:5]}"
    # and what the plots are drawn from (captioning: per-epoch metrics, SCST rewards)
    assert a.get("seqcap_history") == b.get("seqcap_history")


@pytest.mark.parametrize("task", ["translation", "multimodal", "lm", "captioning", "scst", "vqa"])
def test_killed_and_resumed_run_equals_uninterrupted(task, cases, tmp_path):
    case = cases[task]
    rng = random.Random(f"resume-{task}")
    step, when = rng.randint(EVERY + 1, STEPS - 2), rng.choice(["start", "end"])
    kill = ["--trainer.callbacks+=tests.kill_switch.KillAt", "--trainer.callbacks.step", str(step),
            "--trainer.callbacks.when", when]  # fmt: skip
    every = ["--checkpoint.every_n_train_steps", str(EVERY)]
    # the uninterrupted run and the one that gets killed, side by side (one thread each)
    straight = start(fit(case, tmp_path / "straight"), tmp_path / "straight.log")
    killed = start(fit(case, tmp_path / "killed", *every, *kill), tmp_path / "killed.log")
    code = finish(killed, tmp_path / "killed.log")
    assert code == -signal.SIGKILL, (tmp_path / "killed.log").read_text()[-4000:]
    assert finish(straight, tmp_path / "straight.log") == 0, (tmp_path / "straight.log").read_text()[-4000:]
    at_kill = load(last_checkpoint(tmp_path / "killed"))
    assert 0 < at_kill["global_step"] <= step
    resumed = subprocess.run(
        fit(case, tmp_path / "killed", *every, "--ckpt_path", "last"),
        cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert resumed.returncode == 0, explain(resumed)
    output = resumed.stdout + resumed.stderr
    assert "Restored all states" in output
    assert "not resumable" not in output  # Lightning's warning for a loader it cannot resume
    straight_weights, resumed_weights = (load(last_checkpoint(tmp_path / r)) for r in ("straight", "killed"))
    assert_same_weights(straight_weights, resumed_weights)


def test_ddp_resume_equals_uninterrupted(cases, tmp_path):
    """Two gloo processes: every process's random states and loader position come back."""
    case = cases["translation"]
    ddp = ["--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu",
           "--data.init_args.batch_size", "16", "--data.init_args.eval_batch_size", "4"]  # fmt: skip
    every = ["--checkpoint.every_n_train_steps", str(EVERY)]
    kill = ["--trainer.callbacks+=tests.kill_switch.KillAt", "--trainer.callbacks.step", "8",
            "--trainer.callbacks.group", "true"]  # fmt: skip
    killed = start(fit(case, tmp_path / "killed", *ddp, *every, *kill), tmp_path / "killed.log")
    assert finish(killed, tmp_path / "killed.log") == -signal.SIGKILL, (tmp_path / "killed.log").read_text()[
        -4000:
    ]
    assert (
        load(last_checkpoint(tmp_path / "killed"))["global_step"] == 6
    )  # mid-epoch (5 batches of 16 a process)
    resumed = start(
        fit(case, tmp_path / "killed", *ddp, *every, "--ckpt_path", "last"), tmp_path / "resumed.log"
    )
    assert finish(resumed, tmp_path / "resumed.log") == 0, (tmp_path / "resumed.log").read_text()[-4000:]
    straight = start(fit(case, tmp_path / "straight", *ddp), tmp_path / "straight.log")
    assert finish(straight, tmp_path / "straight.log") == 0, (tmp_path / "straight.log").read_text()[-4000:]
    assert "not resumable" not in (tmp_path / "resumed.log").read_text()
    straight_weights, resumed_weights = (load(last_checkpoint(tmp_path / r)) for r in ("straight", "killed"))
    assert_same_weights(straight_weights, resumed_weights)


def test_sigterm_saves_last_and_the_resume_equals_uninterrupted(cases, tmp_path):
    """A preempted job (SIGTERM at step 7, last.ckpt otherwise only every 200 steps): Lightning
    finishes the step and stops, last.ckpt holds that step, and the resumed run is exact. The
    uninterrupted run's last.ckpt also shows the save at the end of a run (step 12, no
    validation or step save there)."""
    case = cases["translation"]
    term = ["--trainer.callbacks+=tests.kill_switch.KillAt", "--trainer.callbacks.step", "7",
            "--trainer.callbacks.term", "true"]  # fmt: skip
    stopped = start(fit(case, tmp_path / "killed", *term), tmp_path / "killed.log")
    straight = start(fit(case, tmp_path / "straight"), tmp_path / "straight.log")
    finish(stopped, tmp_path / "killed.log")
    assert load(last_checkpoint(tmp_path / "killed"))["global_step"] == 8, (
        tmp_path / "killed.log"
    ).read_text()[-3000:]
    assert finish(straight, tmp_path / "straight.log") == 0, (tmp_path / "straight.log").read_text()[-4000:]
    resumed = start(fit(case, tmp_path / "killed", "--ckpt_path", "last"), tmp_path / "resumed.log")
    assert finish(resumed, tmp_path / "resumed.log") == 0, (tmp_path / "resumed.log").read_text()[-4000:]
    straight_weights, resumed_weights = (load(last_checkpoint(tmp_path / r)) for r in ("straight", "killed"))
    assert_same_weights(straight_weights, resumed_weights)
