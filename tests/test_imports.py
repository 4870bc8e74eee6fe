"""Inference imports what it uses (issue 28): no Lightning (pytorch_lightning, lightning_fabric,
torchmetrics, jsonargparse) from loading a checkpoint to writing the output, in any task, and a
text-only translation none of the heavy libraries it does not use (torchvision, timm, matplotlib,
wandb, pycocoevalcap, nltk, sacrebleu).

One fresh interpreter runs the commands as `python -m seqcap ...` does (runpy) and, after each,
reports which of those packages are in sys.modules: translate first, on the trained text-only
checkpoint (space-split words), while nothing else has been imported; then evaluate, generate,
caption and answer on the checked-in checkpoints, for which only Lightning is forbidden (they may
need NLTK, sacreBLEU, timm, torchvision).
"""

from __future__ import annotations

import json

from tests.conftest import REPO, explain, run_python

LEGACY = REPO / "tests" / "fixtures" / "legacy"
LIGHTNING = ("pytorch_lightning", "lightning", "lightning_fabric", "torchmetrics", "jsonargparse")
HEAVY = ("torchvision", "timm", "matplotlib", "wandb", "pycocoevalcap", "nltk", "sacrebleu")

# argv: [[name, [seqcap arguments]], ...] -> one JSON line {name: [exit status, [packages loaded]]}
WRAPPER = """
import json, runpy, sys
WATCHED = {watched!r}
report = {{}}
for name, argv in json.loads(sys.argv[1]):
    sys.argv = ["seqcap", *argv]
    try:
        runpy.run_module("seqcap", run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as e:
        code = e.code
    report[name] = [code, sorted(m for m in WATCHED if m in sys.modules)]
print(json.dumps(report))
"""


def test_inference_commands_import_no_lightning_and_a_text_translation_nothing_heavy(trained_run, tmp_path):
    sentences = tmp_path / "in.txt"
    sentences.write_text("w1 w2 w3\nw4 w5 w6 w7\n", encoding="utf-8")
    references = tmp_path / "ref.txt"
    references.write_text("w3 w2 w1\nw7 w6 w5 w4\n", encoding="utf-8")
    ckpt, out = str(trained_run.last_ckpt), tmp_path / "out"
    commands = [
        ["translate", ["translate", "--checkpoint", ckpt, "--input", str(sentences),
                       "--output", f"{out}.translate", "--device", "cpu", "--beam-size", "2"]],
        ["evaluate", ["evaluate", "--checkpoint", ckpt, "--src", str(sentences), "--ref", str(references),
                      "--output", f"{out}.evaluate", "--device", "cpu", "--beam-size", "2"]],
        ["generate", ["generate", "--checkpoint", str(LEGACY / "lm.ckpt"), "--num", "2", "--seed", "0",
                      "--output", f"{out}.generate", "--device", "cpu"]],
        ["caption", ["caption", "--checkpoint", str(LEGACY / "caption_attention.ckpt"),
                     str(LEGACY / "image0.png"), "--output", f"{out}.caption", "--device", "cpu"]],
        ["answer", ["answer", "--checkpoint", str(LEGACY / "vqa.ckpt"), str(LEGACY / "image0.png"),
                    "what colour is the star?", "--output", f"{out}.answer", "--device", "cpu"]],
    ]  # fmt: skip
    script = WRAPPER.format(watched=LIGHTNING + HEAVY)
    result = run_python(["-c", script, json.dumps(commands)], cwd=tmp_path)
    assert result.returncode == 0, explain(result)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    for name, _ in commands:
        assert report[name][0] == 0 and (tmp_path / f"out.{name}").stat().st_size > 0, explain(result)
    imported = {
        name: sorted(set(loaded) & set(LIGHTNING + HEAVY if name == "translate" else LIGHTNING))
        for name, (_, loaded) in report.items()
    }
    assert not any(imported.values()), f"imported what they must not: {imported}"
