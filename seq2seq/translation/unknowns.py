"""<unk> replacement from attention, on torch tensors and numpy arrays alike (no torch import), so
the PyTorch Translator and the onnxruntime loop (seq2seq/translation/onnx_decode.py) share it."""

from __future__ import annotations


def replace_unknowns(tokens: list[str], attention, src_tokens: list[str], unk: str = "<unk>") -> list[str]:
    """Each <unk> in the output becomes the source token it attends to most (Luong et al. 2015,
    "Addressing the rare word problem"): names, placeholders and numbers pass through.
    tokens: T output tokens, attention: (T, S) tensor or array, or None (then nothing changes)."""
    if attention is None or unk not in tokens or not src_tokens:
        return tokens
    best = attention[: len(tokens), : len(src_tokens)].argmax(-1).tolist()
    return [src_tokens[best[t]] if tok == unk else tok for t, tok in enumerate(tokens)]
