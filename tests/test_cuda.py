"""What only a GPU can show: cuDNN's fused RNNs compute the cells' function, a model gives the same
outputs on CUDA as on the CPU, bf16 autocast trains, a CUDA state dict loads on the CPU.

Marked `cuda`: skipped without a GPU (tests/conftest.py), run by `make gpu-check` (`pytest -m cuda`).
"""

from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F

from data.core.vocab import PAD
from seq2seq.modules.rnn import RecurrentOptions
from seq2seq.search import SearchOptions
from seq2seq.translation.network import Seq2Seq
from seqcap.gpu_check import CELLS, TOLERANCE, rnn_agreement, strict_fp32

pytestmark = pytest.mark.cuda

CUDA = torch.device("cuda")


@pytest.mark.parametrize("cell", CELLS)
def test_cudnn_fused_equals_cells(cell):
    """Outputs, final states and every gradient, two bidirectional layers, ragged lengths."""
    diffs = rnn_agreement(cell, CUDA)
    assert max(diffs.values()) <= TOLERANCE, diffs


def tiny_translator(cell: str = "lstm") -> Seq2Seq:
    torch.manual_seed(0)
    return Seq2Seq(11, 13, RecurrentOptions(cell=cell, embed_dim=16, hidden_size=32, dropout=0.0)).eval()


def batch(seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([7, 3, 5, 1])
    src = torch.randint(4, 11, (4, 7), generator=gen)
    src[torch.arange(7)[None, :] >= lengths[:, None]] = PAD
    tgt = torch.randint(4, 13, (4, 6), generator=gen)
    return {"src": src, "src_lengths": lengths, "tgt_in": tgt[:, :-1], "tgt_out": tgt[:, 1:]}


@pytest.mark.parametrize("cell", CELLS)
def test_translator_on_cuda_matches_cpu(cell):
    model, b = tiny_translator(cell), batch()
    with strict_fp32(), torch.no_grad():
        cpu = model(b["src"], b["src_lengths"], b["tgt_in"])
        hyps_cpu = model.translate(b["src"], b["src_lengths"], SearchOptions(method="greedy", max_len=10))
        model.to(CUDA)
        gpu = model(b["src"].to(CUDA), b["src_lengths"].to(CUDA), b["tgt_in"].to(CUDA))
        hyps_gpu = model.translate(
            b["src"].to(CUDA), b["src_lengths"].to(CUDA), SearchOptions(method="greedy", max_len=10)
        )
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=1e-4)
    assert [h[0].tokens for h in hyps_gpu] == [h[0].tokens for h in hyps_cpu]


def test_bf16_autocast_training_step_on_cuda():
    """A training step under bf16 autocast (what `--trainer.precision bf16-mixed` runs): finite
    loss and gradients, the loss within bf16's precision of the fp32 loss."""
    model, b = tiny_translator().train().to(CUDA), {k: v.to(CUDA) for k, v in batch().items()}

    def loss() -> torch.Tensor:
        logits = model(b["src"], b["src_lengths"], b["tgt_in"])
        return F.cross_entropy(logits.float().flatten(0, 1), b["tgt_out"].flatten(), ignore_index=PAD)

    with strict_fp32(), torch.no_grad():
        fp32 = float(loss())
    with torch.autocast("cuda", dtype=torch.bfloat16):
        bf16 = loss()
    bf16.backward()
    assert torch.isfinite(bf16) and abs(float(bf16) - fp32) <= 0.05 * abs(fp32), (float(bf16), fp32)
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_cuda_state_dict_loads_on_cpu():
    model = tiny_translator().to(CUDA)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, map_location="cpu", weights_only=True)
    cpu = tiny_translator()
    cpu.load_state_dict(state)
    assert all(v.device.type == "cpu" for v in state.values())
    for (name, a), b in zip(model.state_dict().items(), cpu.state_dict().values()):
        torch.testing.assert_close(a.cpu(), b, msg=name)


def test_written_out_decoder_loop_on_cuda_equals_autograd():
    """modules/decoder_loop.py on CUDA: the training loop's outputs and every gradient equal the
    autograd loop's (float64, so that only the summation order can differ)."""
    model = (
        Seq2Seq(11, 13, RecurrentOptions(embed_dim=16, hidden_size=32, dropout=0.0)).double().train().to(CUDA)
    )
    b = {k: v.to(CUDA) for k, v in batch().items()}
    results = []
    for fused in (True, False):
        model.decoder.fused_loop = fused
        model.zero_grad(set_to_none=True)
        o, attention = model.features(b["src"], b["src_lengths"], b["tgt_in"])
        weights = torch.linspace(-1, 1, o.numel(), dtype=o.dtype, device=CUDA).view(o.shape)
        ((o * weights).sum() + attention.square().sum()).backward()
        results.append(
            [o.detach(), attention.detach()] + [p.grad for p in model.parameters() if p.grad is not None]
        )
    assert len(results[0]) == len(results[1])
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-8)
