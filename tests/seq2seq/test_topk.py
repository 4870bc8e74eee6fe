"""seq2seq/topk.py: the two-pass top-k of beam search gives torch's topk values exactly, and
takes torch's topk where two passes do not apply."""

from __future__ import annotations

import pytest
import torch

from seq2seq import topk


@pytest.mark.parametrize("shape", [(320, 8000), (160, 8000), (8, 2560), (40, 32000)])
def test_top_words_equals_topk(shape):
    g = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(shape, generator=g).log_softmax(-1)
    x[:, :3] = float("-inf")  # banned words
    values, indices = topk.top_words(x, 10)
    expected = x.topk(10, dim=-1)
    assert torch.equal(values, expected.values) and torch.equal(indices, expected.indices)


def test_top_words_values_are_exact_with_ties():
    """Equal values in different blocks: the values are topk's; each index points at its value."""
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 40, (64, 4096), generator=g).float()  # many ties
    values, indices = topk.top_words(x, 10)
    assert torch.equal(values, x.topk(10, dim=-1).values)
    assert torch.equal(x.gather(1, indices), values)
    assert all(len(set(row)) == 10 for row in indices.tolist())


@pytest.mark.parametrize("shape", [(5, 8000), (320, 8004), (320, 600)])
def test_top_words_takes_topk_where_two_passes_do_not_apply(shape, monkeypatch):
    """One beam's rows, a vocabulary not a multiple of the block, too few blocks: torch's topk."""
    calls = []
    original = torch.Tensor.topk

    def counted(t, *args, **kwargs):
        calls.append(t.shape)
        return original(t, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "topk", counted)
    x = torch.randn(shape)
    values, indices = topk.top_words(x, 10)
    assert calls == [torch.Size(shape)]
    assert torch.equal(values, original(x, 10, dim=-1).values)
