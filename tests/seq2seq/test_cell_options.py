"""The seeds' cell variants (peephole LSTM, reset-before GRU) reach every model as typed options,
the configs that use them train through the CLI, and the shared modules take the padding id
instead of importing it from data/."""

from __future__ import annotations

import ast
import dataclasses

import pytest
import torch

from seq2seq.lm.network import LanguageModel
from seq2seq.modules.decoder import RecurrentDecoder
from seq2seq.modules.encoder import RecurrentEncoder
from seq2seq.modules.rnn import RecurrentOptions
from seq2seq.translation.network import Seq2Seq, pad_batch
from tests.conftest import REPO, explain, fit_args, reverse_corpus_at, run_python


def rnns(model: torch.nn.Module):
    from seq2seq.modules.rnn import RNN

    return [m for m in model.modules() if isinstance(m, RNN)]


def test_seq2seq_peephole_runs_every_rnn_on_peephole_cells():
    torch.manual_seed(0)
    model = Seq2Seq(11, 12, rnn=RecurrentOptions(embed_dim=4, hidden_size=5, peephole=True)).eval()
    assert [r.impl for r in rnns(model)] == ["cells", "cells"]
    assert all(cell.peephole for r in rnns(model) for cell in r.cells.values())
    keys = model.state_dict().keys()
    assert "encoder.rnn.weight_ci_l0" in keys and "decoder.rnn.weight_co_l0" in keys
    # the peepholes are in the function: zeroing them changes the output
    src, lengths = pad_batch([[4, 5, 6, 7], [8, 9]])
    tgt_in = torch.tensor([[2, 4, 5], [2, 6, 7]])
    before = model(src, lengths, tgt_in)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "weight_c" in name:
                p.zero_()
    assert not torch.allclose(before, model(src, lengths, tgt_in))
    # padding is still masked on the cell path: the short sentence alone gives the same logits
    alone = model(src[1:, :2], lengths[1:], tgt_in[1:])
    torch.testing.assert_close(model(src, lengths, tgt_in)[1], alone[0], atol=1e-5, rtol=0)


def test_seeds_gru_reaches_seq2seq_and_the_language_model():
    s2s = Seq2Seq(11, 12, rnn=RecurrentOptions(cell="gru", embed_dim=4, hidden_size=5, gru_reset_after=False))
    lm = LanguageModel(
        11,
        rnn=RecurrentOptions(
            num_layers=2, dropout=0.3, cell="gru", embed_dim=4, hidden_size=5, gru_reset_after=False
        ),
    )
    for model in (s2s, lm):
        assert all(r.impl == "cells" for r in rnns(model))
        assert all(cell.reset_after is False for r in rnns(model) for cell in r.cells.values())
    default = Seq2Seq(11, 12, rnn=RecurrentOptions(cell="gru", embed_dim=4, hidden_size=5))
    assert default.encoder.rnn.impl == "fused"  # the default GRU is the cuDNN one
    assert default.decoder.rnn.impl == "cells"  # an attention decoder steps: RNN.step on the cells


def test_a_fused_path_with_a_cell_only_option_is_refused():
    with pytest.raises(ValueError, match="impl='cells'"):
        Seq2Seq(11, 12, rnn=RecurrentOptions(embed_dim=4, hidden_size=5, impl="fused", peephole=True))
    with pytest.raises(ValueError, match="reset_after"):
        LanguageModel(
            11,
            rnn=RecurrentOptions(
                num_layers=2,
                dropout=0.3,
                cell="gru",
                embed_dim=4,
                hidden_size=5,
                impl="fused",
                gru_reset_after=False,
            ),
        )
    with pytest.raises(ValueError, match="peephole=True needs cell='lstm'"):
        Seq2Seq(11, 12, rnn=RecurrentOptions(cell="gru", embed_dim=4, hidden_size=5, peephole=True))


def test_pad_id_is_a_constructor_argument_of_the_shared_modules():
    encoder = RecurrentEncoder(10, rnn=RecurrentOptions(embed_dim=4, hidden_size=5), pad_id=7)
    decoder = RecurrentDecoder(10, rnn=RecurrentOptions(embed_dim=4, hidden_size=5), memory_size=10, pad_id=7)
    for module in (encoder, decoder):
        assert module.embedding.padding_idx == 7
        assert module.embedding.weight[7].abs().sum() == 0


def test_seq2seq_modules_import_nothing_from_data():
    for path in sorted((REPO / "seq2seq" / "modules").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                assert node.module.split(".")[0] != "data", f"{path.name} imports {node.module}"
            if isinstance(node, ast.Import):
                assert not any(a.name.split(".")[0] == "data" for a in node.names), path.name


def test_peephole_config_trains_and_its_checkpoint_translates(tmp_path):
    """configs/translation/reverse_peephole.yaml as a user runs it (tiny sizes), then the checkpoint
    alone rebuilds a peephole model."""
    data = reverse_corpus_at(tmp_path / "data", n=128, n_dev=16, n_test=8)
    args = fit_args(
        data, tmp_path / "runs", "--model.init_args.rnn.embed_dim", "8",
        "--model.init_args.rnn.hidden_size", "8",
        "--data.init_args.batch_size", "32", "--trainer.max_epochs", "1",
        config="configs/translation/reverse_peephole.yaml",
    )  # fmt: skip
    result = run_python(args, cwd=REPO)
    assert result.returncode == 0, explain(result)
    last = tmp_path / "runs" / "reverse_peephole" / "version_0" / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    assert ckpt["hyper_parameters"]["rnn"]["peephole"] is True
    assert "model.encoder.rnn.weight_cf_l0_reverse" in ckpt["state_dict"]
    out = run_python(
        ["-m", "seq2seq.translation.cli", "--checkpoint", str(last)], cwd=tmp_path, input="w1 w2 w3\n"
    )
    assert out.returncode == 0 and len(out.stdout.splitlines()) == 1, explain(out)


def test_seed_gru_lm_config_trains_and_its_checkpoint_generates(tmp_path):
    """configs/lm/licenses_word_seed_gru.yaml on a tiny folder of text (tiny sizes)."""
    folder = tmp_path / "texts"
    folder.mkdir()
    verbs, places = "sat ran lay slept hid".split(), "mat rug bed box chair table sofa floor".split()
    paragraphs = [f"the cat {v} on the {p} and the dog {v} under it." for v in verbs for p in places]
    (folder / "a.txt").write_text("\n\n".join(paragraphs) + "\n", encoding="utf-8")
    args = [
        "-m", "seq2seq", "fit", "-c", "configs/lm/licenses_word_seed_gru.yaml",
        "--data.init_args.files", f"[{folder}]", "--data.init_args.batch_size", "4",
        "--data.init_args.eval_batch_size", "2", "--data.init_args.tbptt_steps", "8",
        "--model.init_args.rnn.embed_dim", "8", "--model.init_args.rnn.hidden_size", "8",
        "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(tmp_path / "runs"),
        "--trainer.enable_progress_bar", "false",
    ]  # fmt: skip
    result = run_python(args, cwd=REPO)
    assert result.returncode == 0, explain(result)
    last = tmp_path / "runs" / "licenses_word_seed_gru" / "version_0" / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    hp = ckpt["hyper_parameters"]
    assert hp["rnn"]["cell"] == "gru" and hp["rnn"]["gru_reset_after"] is False
    out = run_python(["-m", "seq2seq.lm.cli", "--checkpoint", str(last), "--num", "2"], cwd=tmp_path)
    assert out.returncode == 0 and len(out.stdout.splitlines()) == 2, explain(out)


def test_old_gru_cells_checkpoint_rebuilds_as_the_gru_it_was_trained_as():
    """A GRU trained with impl="cells" before gru_reset_after existed computed reset-before: the
    rebuild keeps that function, and resuming with the new default is refused by name."""
    from seq2seq.training.checkpoint import build_from_hparams
    from seq2seq.translation.module import TranslationModule
    from seq2seq.translation.network import Seq2Seq

    # the flat hyperparameters such a checkpoint holds (it predates the option groups too)
    hparams = dict(src_vocab_size=9, tgt_vocab_size=9, embed_dim=4, hidden_size=4, cell="gru", impl="cells")
    torch.manual_seed(0)
    gru = RecurrentOptions(embed_dim=4, hidden_size=4, cell="gru", impl="cells")
    old = Seq2Seq(9, 9, dataclasses.replace(gru, gru_reset_after=False))
    ckpt = {"hyper_parameters": hparams, "state_dict": {f"model.{k}": v for k, v in old.state_dict().items()}}
    rebuilt = build_from_hparams(Seq2Seq, ckpt, "old.ckpt", prefix="model.")
    assert rebuilt.encoder.rnn.cell_options == {"reset_after": False}
    new = dict(hparams, gru_reset_after=True)
    assert build_from_hparams(Seq2Seq, {**ckpt, "hyper_parameters": new}, "new.ckpt", prefix="model.")
    module = TranslationModule(9, 9, rnn=gru)
    with pytest.raises(ValueError, match="gru_reset_after=False"):
        module.on_load_checkpoint(ckpt)
