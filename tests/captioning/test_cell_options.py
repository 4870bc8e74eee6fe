"""The captioners take the seeds' cell variants as typed options, and
configs/captioning/shapes_showtell_peephole.yaml trains with them through the CLI."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from captioning.captioner.network import ShowAttendTell, ShowTell
from captioning.captioner.predictor import Captioner
from data.builders.shapes import build_shapes_dataset
from seq2seq.modules.rnn import RNN, RecurrentOptions
from tests.conftest import REPO, explain, run_python


@pytest.mark.parametrize("cls, features", [(ShowTell, (2, 6)), (ShowAttendTell, (2, 4, 6))])
def test_captioners_build_the_seeds_cells(cls, features):
    torch.manual_seed(0)
    small = RecurrentOptions(embed_dim=4, hidden_size=5)
    peep = cls(9, 6, replace(small, peephole=True)).eval()
    gru = cls(9, 6, replace(small, cell="gru", gru_reset_after=False))
    for model, option in ((peep, "peephole"), (gru, "reset_after")):
        (rnn,) = [m for m in model.modules() if isinstance(m, RNN)]
        assert rnn.impl == "cells" and getattr(rnn.cells["l0"], option) is (option == "peephole")
    logits = peep(torch.randn(*features), torch.tensor([[2, 4, 5], [2, 6, 0]]))
    assert logits.shape == (2, 3, 9) and torch.isfinite(logits).all()
    with pytest.raises(ValueError, match="impl='cells'"):
        cls(9, 6, replace(small, peephole=True, impl="fused"))


def test_peephole_showtell_config_trains_and_captions(tmp_path):
    out = tmp_path / "shapes"
    build_shapes_dataset(out, n_train=8, n_val=2, n_test=2, size=64, progress=False)
    args = [
        "-m", "captioning", "fit", "-c", "configs/captioning/shapes_showtell_peephole.yaml",
        "--data.init_args.source", str(out / "dataset_shapes.json"),
        "--data.init_args.batch_size", "16", "--data.init_args.image_size", "64",
        "--trainer.max_steps", "2", "--trainer.limit_val_batches", "1",
        "--trainer.default_root_dir", str(tmp_path / "runs"), "--trainer.enable_progress_bar", "false",
        "--model.init_args.image.pretrained", "false", "--model.init_args.rnn.embed_dim", "8",
        "--model.init_args.rnn.hidden_size", "8", "--model.init_args.search.max_len", "6",
    ]  # fmt: skip
    result = run_python(args, cwd=REPO)
    assert result.returncode == 0, explain(result)
    last = tmp_path / "runs" / "shapes_showtell_peephole" / "version_0" / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    assert ckpt["hyper_parameters"]["rnn"]["peephole"] is True
    assert "model.rnn.weight_co_l0" in ckpt["state_dict"]
    captioner = Captioner.from_checkpoint(last, device="cpu")
    (image,) = sorted((out / "images").glob("*"))[:1]
    (caption,) = captioner.caption([image], method="greedy")
    assert len(caption.tokens) <= 6
