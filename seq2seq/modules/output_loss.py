"""The output layer and its cross-entropy in one pass over chunks of positions.

    loss = mean_n CE(W o_n + b, y_n)    (label smoothing ε: (1-ε) NLL + ε mean_v -log p_v)

With an 8k-word vocabulary the logits of a batch are its largest tensors: N x V floats, and
autograd keeps the logits, their log-softmax and their gradient, about 250 MB each for a batch of
64 sentences of 50 words. `linear_cross_entropy` never holds more than `chunk` rows of them: for
each chunk it computes the logits, the loss and, when gradients are wanted, the gradient of the
loss with respect to the logits, softmax - ((1-ε) onehot(y) + ε/V), and from it those of o, W and b
at once; backward only scales them. The same function as
F.cross_entropy(F.linear(o, W, b), y, label_smoothing=ε), to float rounding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

CHUNK = 512  # positions a pass: 16 MB of logits at 8k words


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, o, weight, bias, target, label_smoothing: float, chunk: int, grads: bool):
        N, V = o.shape[0], weight.shape[0]
        wants = ctx.needs_input_grad if grads else (False,) * 3
        total = o.new_zeros((), dtype=torch.float32)
        grad_o = torch.empty_like(o) if wants[0] else None
        grad_w = torch.zeros_like(weight) if wants[1] else None
        grad_b = torch.zeros_like(bias) if bias is not None and wants[2] else None
        for start in range(0, N, chunk):
            o_c, y = o[start : start + chunk], target[start : start + chunk]
            log_p = torch.log_softmax(F.linear(o_c, weight, bias).float(), dim=-1)  # (n, V)
            loss = -log_p.gather(1, y[:, None]).squeeze(1)
            if label_smoothing:
                loss = (1 - label_smoothing) * loss - label_smoothing * log_p.mean(-1)
            total += loss.sum()
            if not any(wants[:3]):
                continue
            grad = log_p.exp_()  # softmax, in place: d loss_n / d logits_n
            grad.scatter_add_(1, y[:, None], grad.new_full((len(y), 1), -(1 - label_smoothing)))
            if label_smoothing:
                grad -= label_smoothing / V
            grad = grad.to(o.dtype)
            if grad_o is not None:
                grad_o[start : start + chunk] = grad @ weight
            if grad_w is not None:
                grad_w += grad.t() @ o_c  # not addmm_: FlopCounterMode (seq2seq.bench) counts mm
            if grad_b is not None:
                grad_b += grad.sum(0)
        ctx.grads = tuple(None if g is None else g / N for g in (grad_o, grad_w, grad_b))
        return total / N

    @staticmethod
    def backward(ctx, grad_loss):
        grads = tuple(None if g is None else g * grad_loss for g in ctx.grads)
        return *grads, None, None, None, None


def linear_cross_entropy(
    o: Tensor, weight: Tensor, bias: Tensor | None, target: Tensor, label_smoothing: float = 0.0
) -> Tensor:
    """o: (N, O) the output layer's input at the positions that count, weight: (V, O), bias: (V,),
    target: (N,) long -> the mean cross-entropy of softmax(W o + b), a scalar. Under autocast (mixed
    precision) it is F.cross_entropy on the logits, as autocast casts them."""
    if torch.is_autocast_enabled(o.device.type) or o.dtype != weight.dtype:
        logits = F.linear(o, weight, bias)
        return F.cross_entropy(logits.float(), target, label_smoothing=label_smoothing)
    return _LinearCrossEntropy.apply(o, weight, bias, target, label_smoothing, CHUNK, torch.is_grad_enabled())
