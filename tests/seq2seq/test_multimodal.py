"""Multimodal Seq2Seq (fusion none / decinit / flat / doubly): the text-only model is unchanged, search
batches as one sentence at a time, attention masks exactly, and the image really enters."""

from __future__ import annotations

import pytest
import torch

from seq2seq.modules.rnn import RecurrentOptions
from seq2seq.modules.vision import ImageOptions
from seq2seq.search import SearchOptions
from seq2seq.translation.network import Seq2Seq, pad_batch
from tests.conftest import with_rnn

FUSIONS = ("decinit", "flat", "doubly")
R, DI = 4, 6  # image regions and their size
SMALL = RecurrentOptions(embed_dim=8, hidden_size=8)


def tiny(fusion: str = "none", seed: int = 0, **kw) -> Seq2Seq:
    torch.manual_seed(seed)
    image_size = 0 if fusion == "none" else DI
    return Seq2Seq(13, 15, fusion=fusion, image_size=image_size, **with_rnn(SMALL, **kw)).eval()


def batch():
    src, lengths = pad_batch([[5, 6, 7, 8, 9], [10, 4], [7, 7, 7]])
    torch.manual_seed(1)
    return src, lengths, torch.randn(3, R, DI)


def test_fusion_none_is_the_text_only_model_parameter_for_parameter():
    a = tiny()
    torch.manual_seed(0)
    b = Seq2Seq(13, 15, rnn=RecurrentOptions(embed_dim=8, hidden_size=8)).eval()
    assert list(a.state_dict()) == list(b.state_dict())
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())


def test_text_only_module_unchanged_by_the_image_options():
    """TranslationModule with fusion none builds no CNN and is Seq2Seq for the same seed; building
    the CNN of a multimodal one draws nothing from the random stream (its text encoder, built
    before the decoder's bridge, gets the same initial weights)."""
    from seq2seq.translation.module import TranslationModule

    torch.manual_seed(0)
    plain = TranslationModule(13, 15, rnn=RecurrentOptions(dropout=0.0, embed_dim=8, hidden_size=8))
    assert plain.image_encoder is None
    reference = tiny()
    assert all(torch.equal(v, plain.model.state_dict()[k]) for k, v in reference.state_dict().items())
    torch.manual_seed(0)
    mm = TranslationModule(
        13,
        15,
        rnn=RecurrentOptions(dropout=0.2, embed_dim=8, hidden_size=8),
        image=ImageOptions(pretrained=False),
        fusion="decinit",
    )
    encoder = [k for k in plain.state_dict() if k.startswith(("model.encoder.", "model.decoder.embedding"))]
    assert len(encoder) >= 5
    assert all(torch.equal(plain.state_dict()[k], mm.state_dict()[k]) for k in encoder)


@pytest.mark.parametrize("fusion", FUSIONS)
def test_each_sentence_reads_its_own_image_where_the_fusion_says(fusion):
    """The same image gives bit-identical logits; another image for sentence 0 moves sentence 0's
    logits by a clear margin (1% of their scale; the changes here are 4-36x that) and leaves the other
    sentences' untouched; with the images swapped each sentence gets what it gets alone with its
    new image; the regions are a set (their order does not matter); decinit reads only their mean
    (regions changed around the same mean change nothing), flat and doubly attend to each region
    (the same change moves the output)."""
    model = tiny(fusion)
    src, lengths, image = batch()
    tgt = torch.tensor([[2, 5, 6], [2, 7, 0], [2, 4, 4]])
    g = torch.Generator().manual_seed(5)
    other = image.clone()
    other[0] = 3 * torch.randn(R, DI, generator=g)
    shift = 3 * torch.randn(3, R, DI, generator=g)
    shift -= shift.mean(1, keepdim=True)  # the regions move, their mean stays
    with torch.no_grad():
        a = model(src, lengths, tgt, image=image)
        scale = a[0].abs().max()
        assert torch.equal(model(src, lengths, tgt, image=image.clone()), a)
        b = model(src, lengths, tgt, image=other)
        torch.testing.assert_close(b[1:], a[1:], atol=1e-6, rtol=0)
        assert (b[0] - a[0]).abs().max() > 0.01 * scale, ((b[0] - a[0]).abs().max(), scale)

        swapped = image.flip(0)
        together = model(src, lengths, tgt, image=swapped)
        for i in range(3):
            alone = model(
                src[i : i + 1, : lengths[i]], lengths[i : i + 1], tgt[i : i + 1], image=swapped[i : i + 1]
            )
            torch.testing.assert_close(together[i : i + 1], alone, atol=1e-5, rtol=0)
        assert (together[0] - a[0]).abs().max() > 0.01 * scale

        permuted = image[:, torch.tensor([2, 0, 3, 1])]
        torch.testing.assert_close(model(src, lengths, tgt, image=permuted), a, atol=1e-5, rtol=0)

        moved = model(src, lengths, tgt, image=image + shift)
        if fusion == "decinit":
            torch.testing.assert_close(moved, a, atol=1e-5, rtol=0)
        else:
            assert ((moved - a).abs().amax(dim=(1, 2)) > 0.01 * a.abs().amax(dim=(1, 2))).all()
    with pytest.raises(ValueError, match="image"):
        model(src, lengths, tgt)


@pytest.mark.parametrize("fusion", ("none",) + FUSIONS)
def test_batched_beam_search_equals_one_sentence_at_a_time(fusion):
    model = tiny(fusion, seed=3)
    src, lengths, image = batch()
    image = None if fusion == "none" else image * 3
    together = model.translate(src, lengths, SearchOptions(beam_size=3, max_len=12), image=image)
    for i in range(3):
        one = None if image is None else image[i : i + 1]
        alone = model.translate(
            src[i : i + 1, : lengths[i]],
            lengths[i : i + 1],
            SearchOptions(beam_size=3, max_len=12),
            image=one,
        )
        assert alone[0][0].tokens == together[i][0].tokens
        assert alone[0][0].score == pytest.approx(together[i][0].score, abs=1e-4)


@pytest.mark.parametrize("fusion", ("flat", "doubly"))
def test_attention_over_source_and_image_masks_padding_exactly(fusion):
    model = tiny(fusion)
    src, lengths, image = batch()
    tgt = torch.tensor([[2, 5, 6], [2, 7, 0], [2, 4, 4]])
    _, attention = model(src, lengths, tgt, return_attention=True, image=image)
    S = src.shape[1]
    assert attention.shape == (3, 3, S + R)
    assert torch.all(attention[1, :, 2:S] == 0)  # sentence 1 has 2 real words: exact zeros after
    assert torch.all(attention[:, :, S:] > 0)  # every region is seen
    if fusion == "flat":  # one distribution over words and regions
        torch.testing.assert_close(attention.sum(-1), torch.ones(3, 3))
    else:  # two, each summing to one
        torch.testing.assert_close(attention[..., :S].sum(-1), torch.ones(3, 3))
        torch.testing.assert_close(attention[..., S:].sum(-1), torch.ones(3, 3))


def test_padding_does_not_change_a_sentence_with_image():
    """A sentence padded into a longer batch gets the same logits as alone (flat attends over the
    regions after the padded positions)."""
    model = tiny("flat")
    src, lengths, image = batch()
    tgt = torch.tensor([[2, 5, 6], [2, 7, 0], [2, 4, 4]])
    together = model(src, lengths, tgt, image=image)
    alone = model(src[1:2, :2], lengths[1:2], tgt[1:2], image=image[1:2])
    torch.testing.assert_close(together[1:2], alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(fusion="flat", context="fixed"), "context='attention'"),
        (dict(fusion="doubly", attention="luong_general"), "bahdanau"),
        (dict(fusion="decinit", image_size=0), "image_size"),
        (dict(fusion="late"), "fusion must be"),
    ],
)
def test_impossible_fusions_are_refused(kw, message):
    args = dict(image_size=DI) | kw
    with pytest.raises(ValueError, match=message):
        Seq2Seq(13, 15, SMALL, **args)


def test_a_tiny_model_learns_colours_only_from_the_image():
    """Source "the [v] thing", target the colour id: the image (one region of a colour code) alone
    tells it. Doubly attentive fusion learns it; the text-only model stays at chance."""
    torch.manual_seed(0)
    n, colours = 256, 4
    codes = torch.randint(colours, (n,))
    image = torch.nn.functional.one_hot(codes, colours).float()[:, None, :].repeat(1, 2, 1)  # (n, 2, 4)
    src = torch.tensor([[4, 5, 6]] * n)
    lengths = torch.full((n,), 3)
    tgt_in = torch.stack([torch.full((n,), 2), 7 + codes], 1)
    tgt_out = torch.stack([7 + codes, torch.full((n,), 3)], 1)

    def accuracy(fusion: str) -> float:
        torch.manual_seed(0)
        size = 0 if fusion == "none" else colours
        model = Seq2Seq(
            8, 12, rnn=RecurrentOptions(embed_dim=8, hidden_size=16), fusion=fusion, image_size=size
        )
        opt = torch.optim.Adam(model.parameters(), lr=0.01)
        img = None if fusion == "none" else image
        for _ in range(150):
            loss = torch.nn.functional.cross_entropy(
                model(src, lengths, tgt_in, image=img).flatten(0, 1), tgt_out.flatten()
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        hyps = model.translate(src, lengths, SearchOptions(method="greedy", max_len=3), image=img)
        return sum(h[0].tokens[:1] == [7 + int(c)] for h, c in zip(hyps, codes)) / n

    assert accuracy("doubly") > 0.95
    assert accuracy("decinit") > 0.95
    assert accuracy("none") < 0.45
