"""VQAModule end to end on a tiny shapes set: the frozen pretrained CNN's grid from the feature
cache, the attention model learns colour questions far above chance, and validation logs VQA
accuracy by type, samples and attention overlays."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl

from captioning.vqa.module import VQAModule
from data.builders import shapes_vqa
from data.builders.shapes import build_shapes_dataset
from data.builders.shapes_scenes import COLOURS
from data.datamodules.vqa import VQADataModule
from seq2seq.modules.rnn import RecurrentOptions
from seq2seq.modules.vision import ImageOptions

pytestmark = pytest.mark.usefixtures("one_thread_per_module")


def colour_questions(base: Path) -> Path:
    """A tiny shapes set whose questions are the colour ones only ("what colour is the star?")."""
    build_shapes_dataset(base / "shapes", n_train=400, n_val=60, n_test=4, size=128, progress=False)
    built = shapes_vqa.build(base / "shapes")
    for qs, anns, _ in built.values():
        keep = {a["question_id"] for a in anns["annotations"] if a["question_type"] == "colour"}
        qs["questions"] = [q for q in qs["questions"] if q["question_id"] in keep]
        anns["annotations"] = [a for a in anns["annotations"] if a["question_id"] in keep]
    shapes_vqa.write(base / "questions", built)
    return base / "questions"


def test_the_attention_model_learns_colour_questions(tmp_path):
    pl.seed_everything(0)
    dm = VQADataModule(
        str(colour_questions(tmp_path)), batch_size=32, eval_batch_size=64, image_size=128,
        cache_dir=str(tmp_path / "cache"),
    )  # fmt: skip
    assert dm.num_answers == len(COLOURS) and set(dm.answers) == set(COLOURS)
    model = VQAModule(
        dm.vocab_size, dm.num_answers, "attention", rnn=RecurrentOptions(embed_dim=32, hidden_size=32),
        image=ImageOptions(feature_block=4), joint_size=64, hops=1, dropout=0.0, lr=3e-3, num_samples=4,
    )  # fmt: skip
    trainer = pl.Trainer(
        max_epochs=25, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=str(tmp_path / "run"), num_sanity_val_steps=0,
        accelerator="cpu", devices=1,
    )  # fmt: skip
    trainer.fit(model, dm)
    assert set(dm.features) == {"train", "val"}  # the CNN ran once per image, then the cache
    chance = 100.0 / len(COLOURS)
    acc = float(trainer.callback_metrics["val_acc"])
    assert acc > 3 * chance, f"val accuracy {acc:.1f}% vs chance {chance:.1f}%"
    assert float(trainer.callback_metrics["val_acc_colour"]) == pytest.approx(acc)
    samples = (tmp_path / "run" / "samples" / "val_epoch024.txt").read_text()
    assert samples.startswith("val VQA accuracy") and samples.count("\nQ   what colour is the ") == 4
    assert len(list((tmp_path / "run" / "attention").glob("val_epoch024_*.png"))) == 3


def test_a_checkpoint_with_other_answers_is_refused_by_name():
    module = VQAModule(
        10,
        3,
        "blind",
        rnn=RecurrentOptions(embed_dim=4, hidden_size=4),
        image=ImageOptions(pretrained=False),
        joint_size=8,
    )
    words = ["<pad>", "<unk>", "<bos>", "<eos>", *"abcdef"]
    module.set_vocab_state({"vocab": words, "answers": ["red", "blue", "green"]})
    with pytest.raises(ValueError, match="the data's answer vocabulary differs from the checkpoint's"):
        module.set_vocab_state({"vocab": words, "answers": ["red", "blue", "yellow"]})
    assert module.model.image is None and module.model.encoder is not None  # blind: no W_i at all
