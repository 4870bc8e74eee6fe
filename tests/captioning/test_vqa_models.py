"""VQANet: attention over the grid, inputs really dropped by the baselines, a tiny task learned."""

from __future__ import annotations

import pytest
import torch

from captioning.vqa.network import KINDS, VQANet
from seq2seq.modules.rnn import RecurrentOptions


def inputs(seed: int = 0, B: int = 4, T: int = 5, R: int = 6, F: int = 10):
    g = torch.Generator().manual_seed(seed)
    question = torch.randint(1, 20, (B, T), generator=g)
    lengths = torch.tensor([T, T - 1, 3, T][:B])
    question[1, T - 1 :] = 0
    question[2, 3:] = 0
    return question, lengths, torch.randn(B, R, F, generator=g)


@pytest.mark.parametrize("hops", [1, 2])
def test_attention_weights_cover_the_grid_and_sum_to_one(hops):
    torch.manual_seed(0)
    net = VQANet(
        20, 7, 10, "attention", rnn=RecurrentOptions(embed_dim=8, hidden_size=8), joint_size=16, hops=hops
    ).eval()
    logits, weights = net(*inputs())
    assert logits.shape == (4, 7) and len(weights) == hops
    for p in weights:
        assert p.shape == (4, 6)
        assert torch.allclose(p.sum(-1), torch.ones(4)) and bool((p > 0).all())  # every region seen


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_reads_exactly_its_inputs(kind):
    torch.manual_seed(0)
    net = VQANet(20, 7, 10, kind, rnn=RecurrentOptions(embed_dim=8, hidden_size=8), joint_size=16).eval()
    question, lengths, features = inputs()
    base = net(question, lengths, features)[0]
    other_image = net(question, lengths, features + torch.randn_like(features))[0]
    other_question = net(torch.where(question > 0, question % 19 + 1, 0), lengths, features)[0]
    assert torch.equal(base, other_image) == (kind == "blind")  # blind drops the image
    assert torch.equal(base, other_question) == (kind == "image_only")  # image_only drops the question


def test_a_tiny_attention_model_learns_a_colour_question():
    """Each image: 4 regions, each a different shape (a feature code) of a random colour (another
    code, added); the question names a shape, the answer is its colour. Chance is 25%."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    N, R, F, colours = 512, 4, 16, 4
    shape_codes, colour_codes = torch.randn(R, F, generator=g), torch.randn(colours, F, generator=g)
    shape_of = torch.stack([torch.randperm(R, generator=g) for _ in range(N)])  # (N, R)
    colour_of = torch.randint(0, colours, (N, R), generator=g)
    features = shape_codes[shape_of] + colour_codes[colour_of] + 0.1 * torch.randn(N, R, F, generator=g)
    asked = torch.randint(0, R, (N,), generator=g)  # the shape asked about
    where = (shape_of == asked[:, None]).float().argmax(1)
    question = torch.stack([torch.full((N,), 5), asked + 1], dim=1)  # "colour <shape>"
    lengths = torch.full((N,), 2)
    answer = colour_of[torch.arange(N), where]
    net = VQANet(
        6,
        colours,
        F,
        "attention",
        rnn=RecurrentOptions(embed_dim=16, hidden_size=16),
        joint_size=32,
        hops=1,
        dropout=0.0,
    )
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    train, test = slice(0, 384), slice(384, N)
    for _ in range(150):
        logits = net(question[train], lengths[train], features[train])[0]
        loss = torch.nn.functional.cross_entropy(logits, answer[train])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    net.eval()
    with torch.no_grad():
        logits, (p,) = net(question[test], lengths[test], features[test])
    assert (logits.argmax(-1) == answer[test]).float().mean() > 0.8
    assert (p.argmax(-1) == where[test]).float().mean() > 0.8  # it looks at the shape asked about


def test_a_bad_kind_is_named():
    with pytest.raises(ValueError, match=r"model kind must be one of .*got 'cnn'"):
        VQANet(20, 7, 10, "cnn")
