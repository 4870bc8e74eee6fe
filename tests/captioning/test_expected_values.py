"""Whole forward passes of the captioners against numbers computed once and written down:
ShowTell and ShowAttendTell built under torch.manual_seed(0) on fixed captions and features
drawn from a seeded generator (no CNN). Why, and how to update them: see
tests/seq2seq/test_expected_values.py, whose inputs and helpers these tests share.
"""

from __future__ import annotations

import pytest
import torch

from captioning.captioner.network import ShowAttendTell, ShowTell
from seq2seq.modules.rnn import RecurrentOptions
from seq2seq.search import SearchOptions
from tests.conftest import with_rnn
from tests.seq2seq.test_expected_values import TGT_IN, TGT_OUT, check, close, summary

C, HW = 6, 3  # feature_dim, grid size of ShowAttendTell
CAPTIONS_IN, CAPTIONS_OUT = TGT_IN, TGT_OUT  # (2, 5): <bos> w .., row 1 padded after 3 tokens


def global_features() -> torch.Tensor:
    """(2, C) from torch.Generator().manual_seed(1)."""
    return torch.randn(2, C, generator=torch.Generator().manual_seed(1))


def grid_features() -> torch.Tensor:
    """(2, HW, C) from torch.Generator().manual_seed(2)."""
    return torch.randn(2, HW, C, generator=torch.Generator().manual_seed(2))


def build(cls, dropout: float, **kw):
    """torch.manual_seed(0), then cls(11, C, embed 4, hidden 5, one layer, dropout)."""
    torch.manual_seed(0)
    kw.setdefault("cell", "lstm")
    rnn = RecurrentOptions(embed_dim=4, hidden_size=5, num_layers=1, dropout=dropout)
    return cls(11, C, **with_rnn(rnn, **kw))


def caption_values(cls, features: torch.Tensor, **kw) -> dict:
    """Eval mode (dropout 0.3 off): teacher-forced logits of (features, CAPTIONS_IN) against
    CAPTIONS_OUT, and the greedy captions (max_len 6) of both images: token ids and scores."""
    model = build(cls, dropout=0.3, **kw).eval()
    with torch.no_grad():
        values = summary(model(features, CAPTIONS_IN), CAPTIONS_OUT)
    hyps = [h[0] for h in model.caption(features, SearchOptions(method="greedy", max_len=6))]
    values["greedy"] = [h.tokens for h in hyps]
    values["greedy_score"] = [h.score for h in hyps]
    return values


def caption_train_values(cls, features: torch.Tensor, **kw) -> dict:
    """Train mode, dropout 0.5: torch.manual_seed(1) right before the forward pass."""
    model = build(cls, dropout=0.5, **kw).train()
    torch.manual_seed(1)
    with torch.no_grad():
        return summary(model(features, CAPTIONS_IN), CAPTIONS_OUT)


CONFIGS = {
    "show_tell-lstm": (ShowTell, global_features, dict(cell="lstm")),
    "show_tell-lstm-every_step-tied": (
        ShowTell,
        global_features,
        dict(cell="lstm", image_every_step=True, tie_embeddings=True),
    ),
    "show_tell-rnn": (ShowTell, global_features, dict(cell="rnn")),
    "show_attend_tell-bahdanau": (ShowAttendTell, grid_features, dict(attention="bahdanau")),
    "show_attend_tell-luong_general": (ShowAttendTell, grid_features, dict(attention="luong_general")),
}

# Computed once, by caption_values(cls, features(), **kw) for CONFIGS[name]: torch.manual_seed(0),
# cls(11, 6, embed_dim=4, hidden_size=5, 1 layer, dropout 0.3), eval mode, the features of
# global_features() (seed 1) or grid_features() (seed 2), CAPTIONS_IN / CAPTIONS_OUT, greedy
# caption(max_len=6). The greedy top-2 logit gap is >= 1.6e-3 at every step.
EXPECTED = {
    "show_tell-lstm": dict(
        first=[0.4488374, 0.1611056, 0.4908123, 0.1136849],
        padded_row=[0.4348534, 0.2041807, 0.5723119, 0.1454233],
        sum=-1.7243928,
        loss=2.4751701,
        greedy=[[8, 1, 1, 1, 1, 1], [8, 8, 1]],  # row 1 ends with <eos>
        greedy_score=[-11.1518393, -7.3890829],
    ),
    "show_tell-lstm-every_step-tied": dict(
        first=[0.0268722, 0.3320618, -0.4005366, 0.0365623],
        padded_row=[0.0268722, 0.2539989, 0.0255000, 0.0213026],
        sum=-9.5411549,
        loss=2.3673038,
        greedy=[[1, 8, 8, 8, 6, 8], [9, 1, 9, 1, 9, 1]],
        greedy_score=[-11.0632763, -11.0900564],
    ),
    "show_tell-rnn": dict(
        first=[-0.7359737, -0.7667966, -0.4061443, -0.2123405],
        padded_row=[-0.7251576, -0.5659440, -0.2874305, -0.0395139],
        sum=-10.1744785,
        loss=2.3036835,
        greedy=[[9, 9, 9, 9, 9, 9], [9, 9, 9, 9, 9, 9]],
        greedy_score=[-8.6953421, -8.6695452],
    ),
    "show_attend_tell-bahdanau": dict(
        first=[0.5170248, 0.1907696, 0.1352247, -0.3961944],
        padded_row=[0.5139127, -0.1555120, -0.0481419, -0.4461936],
        sum=5.4570971,
        loss=2.6534569,
        greedy=[[4, 4, 4, 4, 4, 4], [4, 4, 4, 4, 4, 4]],
        greedy_score=[-11.2700462, -10.8995924],
    ),
    "show_attend_tell-luong_general": dict(
        first=[0.0653235, -0.3524864, 0.1278360, 0.6304312],
        padded_row=[0.0445586, -0.5709233, 0.3046923, 0.6817147],
        sum=14.1317520,
        loss=2.4538684,
        greedy=[[8, 8, 8, 8, 8, 8], [4, 4, 4, 4, 4, 4]],
        greedy_score=[-9.8859949, -9.7048874],
    ),
}

# Computed once, by caption_train_values(cls, features(), **kw) for CONFIGS[name]: the same model
# with dropout 0.5 in train mode, torch.manual_seed(1) right before model(features, CAPTIONS_IN).
TRAIN_EXPECTED = {
    "show_attend_tell-bahdanau": dict(
        first=[0.5414745, 0.8304245, -0.2648316, -0.9265988],
        padded_row=[0.2548818, -0.0895900, 0.3001961, -0.1049016],
        sum=8.4119415,
        loss=2.6659353,
    ),
    "show_tell-lstm": dict(
        first=[0.2886173, 0.3821473, 0.5287032, 0.3560327],
        padded_row=[0.2107040, 0.1913060, 0.7669434, 0.2131997],
        sum=-2.8469946,
        loss=2.4910789,
    ),
}

# Computed once: ShowAttendTell(attention="bahdanau") as in EXPECTED, forward(grid_features(),
# CAPTIONS_IN, return_attention=True): the weights over the HW=3 cells at two steps.
ATTENTION_EXPECTED = dict(
    first=[0.2807697, 0.3209931, 0.3982373], padded_row=[0.2823326, 0.3682723, 0.3493951]
)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_captioner_forward_and_greedy_match_recorded_values(name):
    cls, features, kw = CONFIGS[name]
    check(caption_values(cls, features(), **kw), EXPECTED[name])


@pytest.mark.parametrize("name", list(TRAIN_EXPECTED))
def test_captioner_dropout_matches_recorded_values(name):
    cls, features, kw = CONFIGS[name]
    check(caption_train_values(cls, features(), **kw), TRAIN_EXPECTED[name])


def test_show_attend_tell_attention_matches_recorded_values():
    model = build(ShowAttendTell, dropout=0.3, attention="bahdanau").eval()
    with torch.no_grad():
        _, attention = model(grid_features(), CAPTIONS_IN, return_attention=True)
    close(attention[0, 0], ATTENTION_EXPECTED["first"])
    close(attention[1, 2], ATTENTION_EXPECTED["padded_row"])
