import torch

from seq2seq.translation.predictor import replace_unknowns


def test_unknowns_take_the_most_attended_source_token():
    attention = torch.tensor([[0.9, 0.1, 0.0], [0.1, 0.2, 0.7], [0.0, 0.8, 0.2]])
    out = replace_unknowns(["Datei", "<unk>", "<unk>"], attention, ["file", "%s", "--help"])
    assert out == ["Datei", "--help", "%s"]


def test_nothing_changes_without_attention_or_unknowns():
    assert replace_unknowns(["a", "<unk>"], None, ["x"]) == ["a", "<unk>"]
    assert replace_unknowns(["a", "b"], torch.ones(2, 1), ["x"]) == ["a", "b"]
