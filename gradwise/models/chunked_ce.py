"""Cross-entropy through the output layer in chunks of tokens, never holding all the logits.

The plain path computes logits for every token (B·T × V: 3.3 GB in bf16 for GPT-2 at batch 32, context 1024)
and then an fp32 copy for the softmax and another for its gradient. Here the rows go through the output
layer a chunk at a time: logits, log-sum-exp, loss and the gradient of the loss with respect to the logits are
computed for one chunk, folded at once into the gradients of the hidden states and of the output weight, and
dropped. The backward pass only scales those two saved gradients by the incoming one, so no FLOP is spent
twice (as re-computation would), and memory for logits falls from N·V to chunk·V.

It computes the same objective as ``CausalLMObjective``: mean cross-entropy over non-ignored targets, with
label smoothing, plus ``z_weight`` times the mean squared log-partition (z-loss), on logits soft-capped as
``cap * tanh(logits / cap)`` when ``softcap`` is given (model.logit_softcap). Enabled with
``train.fused_ce: true`` (GPT models). Matmuls run in the autocast dtype when autocast is on, as ``nn.Linear``
would; the softmax and the loss are fp32.
"""

from __future__ import annotations

import math

import torch

IGNORE_INDEX = -100


MIN_CHUNK_ROWS = 256  # fewer rows make the output layer's matmuls too small to run at speed (on a CPU: 1.4x slower)


def chunk_rows(n_rows: int, width: int, vocab: int) -> int:
    """Rows per chunk: logits of a chunk about as big as the hidden states of all rows (a power of two), but
    at least MIN_CHUNK_ROWS (or all rows, when fewer)."""
    rows = max(1, math.ceil(n_rows / max(1, math.ceil(vocab / width))))
    return min(n_rows, max(MIN_CHUNK_ROWS, 1 << (rows - 1).bit_length()))


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, *,
                         label_smoothing: float = 0.0, z_weight: float = 0.0, chunk: int | None = None,
                         softcap: float | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, cross-entropy, z-loss) of ``hidden @ weight.T`` against ``targets``; only ``total`` carries a
    gradient. ``hidden`` (..., C), ``weight`` (V, C), ``targets`` (...) with IGNORE_INDEX for padding."""
    h = hidden.reshape(-1, hidden.shape[-1])
    t = targets.reshape(-1)
    device = h.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else h.dtype
    cap = float(softcap or 0.0)
    # a soft-cap keeps its tanh beside the logits: half the rows, the same chunk memory
    rows = chunk or max(1, chunk_rows(h.shape[0], h.shape[1], weight.shape[0]) // (2 if cap else 1))
    if torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad):
        return _LinearCrossEntropy.apply(h, weight, t, rows, float(label_smoothing), float(z_weight), dtype, cap)
    with torch.autocast(device, enabled=False):
        ce, z, _, _ = _forward(h, weight, t, rows, label_smoothing, z_weight, dtype, grads=False, cap=cap)
    return ce + z_weight * z, ce, z


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, weight, t, rows, smoothing, z_weight, dtype, cap):  # noqa: D102 (see module docstring)
        with torch.autocast(h.device.type, enabled=False):
            ce, z, grad_h, grad_w = _forward(h, weight, t, rows, smoothing, z_weight, dtype, grads=True, cap=cap)
        ctx.save_for_backward(grad_h, grad_w)
        total = ce + z_weight * z
        ctx.mark_non_differentiable(ce, z)
        return total, ce, z

    @staticmethod
    def backward(ctx, grad_total, _grad_ce, _grad_z):  # noqa: D102
        grad_h, grad_w = ctx.saved_tensors
        return (grad_h * grad_total.to(grad_h.dtype), grad_w * grad_total.to(grad_w.dtype), None, None, None, None,
                None, None)


def _forward(h: torch.Tensor, weight: torch.Tensor, t: torch.Tensor, rows: int, smoothing: float, z_weight: float,
             dtype: torch.dtype, grads: bool, cap: float = 0.0
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Mean loss terms over non-ignored rows, and (``grads``) the gradients of ce + z_weight·z w.r.t. h and weight;
    ``cap`` > 0 soft-caps the logits first (their gradient then passes through tanh's, 1 - tanh²)."""
    n, vocab = h.shape[0], weight.shape[0]
    valid = t != IGNORE_INDEX
    count = valid.sum().clamp_min(1).to(torch.float32)
    w = weight.to(dtype)
    ce_sum = torch.zeros((), device=h.device, dtype=torch.float32)
    z_sum = torch.zeros((), device=h.device, dtype=torch.float32)
    grad_h = torch.empty_like(h) if grads else None
    grad_w = torch.zeros(weight.shape, device=weight.device, dtype=torch.float32) if grads else None
    for s in range(0, n, rows):
        hc, tc, mc = h[s:s + rows].to(dtype), t[s:s + rows], valid[s:s + rows]
        logits = (hc @ w.T).float()  # (rows, V)
        if cap:
            capped = logits.div_(cap).tanh_()  # tanh(raw / cap), kept for its gradient
            logits = capped * cap
        lse = torch.logsumexp(logits, dim=-1)
        safe_t = torch.where(mc, tc, torch.zeros_like(tc))
        row_loss = lse - logits.gather(1, safe_t[:, None]).squeeze(1)
        if smoothing:
            row_loss = (1 - smoothing) * row_loss + smoothing * (lse - logits.mean(dim=-1))
        ce_sum += torch.where(mc, row_loss, 0.0).sum()  # where, not *: an ignored row's inf stays out
        z_sum += torch.where(mc, lse.square(), 0.0).sum()
        if grads:
            # d(row loss + z_weight·lse²)/d logits = softmax·(1 + 2·z_weight·lse) - (1-ε)·onehot - ε/V
            g = logits.sub_(lse[:, None]).exp_()  # the softmax, in the logits' memory
            if z_weight:
                g.mul_((1 + 2 * z_weight * lse)[:, None])
            g[torch.arange(len(tc), device=g.device), safe_t] -= 1 - smoothing
            if smoothing:
                g.sub_(smoothing / vocab)
            if cap:
                g.mul_(1 - capped.square())  # through cap * tanh(raw / cap)
            g = torch.where(mc[:, None], g / count, 0.0)
            gd = g.to(dtype)
            grad_h[s:s + rows] = (gd @ w).to(h.dtype)
            grad_w += (gd.T @ hc).float()
    grad_w = grad_w.to(weight.dtype) if grad_w is not None else None
    return ce_sum / count, z_sum / count, grad_h, grad_w
