"""Muon for 2-D weight matrices, with the orthogonalization batched over matrices of the same shape.

Muon keeps a Nesterov momentum of each matrix's gradient and replaces the update by its nearest
semi-orthogonal matrix (all singular values near 1), found by a few Newton-Schulz iterations. The update
then moves every direction of the matrix by the same amount, which trains transformers' hidden layers in
fewer steps than Adam.

Why gradwise has its own (``torch.optim.Muon`` exists from PyTorch 2.9): the orthogonalization is most
of Muon's cost, and PyTorch runs it one matrix at a time. Here matrices of one shape (after turning tall
ones wide) are stacked and orthogonalized in one batched matmul chain, and the momentum and weight-decay
updates use foreach kernels. In fp32 (the CPU default), matrices at least twice as wide as tall run the
same iteration on their small Gram matrix, which needs about half the FLOPs for the MLP's and attention's
matrices (:func:`_gram_newton_schulz`). The arithmetic is PyTorch's (a test compares them in bf16, and one
holds the Gram path to the plain one in fp32), it works on any PyTorch gradwise supports, and the state (``momentum_buffer``) has the same name and shape.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable

import torch

from gradwise.core.runtime import is_sharded, whole
from gradwise.optim.state import grads_and_buffers

# Quintic Newton-Schulz coefficients tuned for a steep slope at zero (K. Jordan's Muon): five steps take
# singular values from (0, 1] to roughly [0.7, 1.2], which is all Muon needs.
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


GRAM_RATIO = 2  # fp32 matrices at least this many times wider than tall iterate on their Gram matrix


def orthogonalize(g: torch.Tensor, steps: int = 5, eps: float = 1e-7,
                  dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """Approximately U V^T of each matrix's SVD U S V^T; ``g`` is (m, n) or (k, m, n) with m <= n."""
    a, b, c = NS_COEFFICIENTS
    x = g.to(dtype)
    x = x / x.norm(dim=(-2, -1), keepdim=True).clamp_min(eps)  # spectral norm <= Frobenius norm <= 1
    squeeze = x.ndim == 2
    if squeeze:
        x = x[None]
    if dtype == torch.float32 and x.shape[-1] >= GRAM_RATIO * x.shape[-2]:
        x = _gram_newton_schulz(x, steps)
    else:
        for _ in range(steps):
            gram = x @ x.mT  # (k, m, m): the small side, which is why tall matrices are transposed first
            poly = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)  # b * gram + c * gram @ gram, one kernel
            x = torch.baddbmm(x, poly, x, beta=a)  # a * x + poly @ x
    return x[0] if squeeze else x


def _gram_newton_schulz(x: torch.Tensor, steps: int) -> torch.Tensor:
    """The same iteration, run on the (m, m) Gram matrix G = X X^T instead of on X (m, n).

    Each step is X <- p(G) X with p(G) = aI + bG + cG²; so X_K = Q X_0 with Q = p_K ... p_1, and the next Gram
    matrix is p G p = p² G (p is a polynomial in G: they commute). Only m x m products until the one final
    Q X_0: 2 m²n + 17 m³ multiply-adds for 5 steps against 10 m²n + 5 m³, which is less when n > 1.5 m (the
    MLP's 4:1 and the attention's 3:1 matrices). In exact arithmetic it is the same X_K; in fp32 it agrees to
    within 6e-4 of the update's largest entry even for low-rank momentum, where the Gram matrix squares the
    spread of singular values (measured; a test holds it within 1e-3); bf16 keeps the plain iteration, which is
    what Muon was tuned with."""
    a, b, c = NS_COEFFICIENTS
    gram = x @ x.mT  # (k, m, m)
    q = None
    for i in range(steps):
        poly = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)  # b G + c G²
        poly.diagonal(dim1=-2, dim2=-1).add_(a)  # + a I
        q = poly if q is None else poly @ q  # (k, m, m)
        if i < steps - 1:
            gram = (poly @ poly) @ gram  # p² G, the next step's Gram matrix
    return q @ x  # (k, m, n)


def _ns_dtype(name: str, device: torch.device) -> torch.dtype:
    """The Newton-Schulz precision. ``auto``: bf16 on GPUs (tensor cores; what Muon is tuned for), fp32 on CPUs,
    where bf16 matmuls are emulated without AVX-512 BF16/AMX: 45x slower measured on an AVX2 EPYC (4 x 256 x 768
    batch: 2.33 s vs 0.05 s), and fp32 is the more exact of the two."""
    if name == "auto":
        return torch.bfloat16 if device.type in ("cuda", "xpu") else torch.float32
    return getattr(torch, name)


def lr_scale(shape: torch.Size, adjust: str) -> float:
    """Per-matrix lr factor. ``match_rms_adamw`` makes the update's RMS match a typical AdamW update, so
    AdamW's learning rate carries over; ``original`` is the first Muon's sqrt(max(1, rows / cols))."""
    rows, cols = shape[0], shape[1]
    if adjust == "match_rms_adamw":
        return 0.2 * math.sqrt(max(rows, cols))
    if adjust == "original":
        return math.sqrt(max(1.0, rows / cols))
    raise ValueError(f"unknown Muon lr adjustment {adjust!r}; use match_rms_adamw or original")


class Muon(torch.optim.Optimizer):
    """Momentum orthogonalized by Newton-Schulz, for 2-D parameters only (pair it with AdamW for the rest).

    Weight decay is decoupled (``p *= 1 - lr * weight_decay``), as in AdamW.
    """

    def __init__(self, params: Iterable[torch.Tensor] | Iterable[dict], lr: float = 1e-3, weight_decay: float = 0.1,
                 momentum: float = 0.95, nesterov: bool = True, ns_steps: int = 5,
                 adjust_lr: str = "match_rms_adamw", ns_dtype: str = "auto"):
        if lr < 0 or weight_decay < 0 or not 0 <= momentum < 1 or ns_steps < 1:
            raise ValueError(f"invalid Muon hyperparameters: lr={lr}, weight_decay={weight_decay}, "
                             f"momentum={momentum}, ns_steps={ns_steps}")
        lr_scale(torch.Size([1, 1]), adjust_lr)  # validates the name
        if ns_dtype not in ("auto", "bfloat16", "float32"):
            raise ValueError(f"ns_dtype must be 'auto', 'bfloat16' or 'float32', not {ns_dtype!r}")
        defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps,
                        adjust_lr=adjust_lr, ns_dtype=ns_dtype)
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                if p.ndim != 2:
                    raise ValueError(f"Muon optimizes 2-D matrices only; got a parameter of shape {tuple(p.shape)}")

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001, ANN201 - the torch.optim signature
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, bufs = grads_and_buffers(self, group, "momentum_buffer")
            if not params:
                continue
            m = group["momentum"]
            torch._foreach_lerp_(bufs, grads, 1 - m)
            updates = torch._foreach_lerp(grads, bufs, m) if group["nesterov"] else bufs
            self._apply(group, params, updates)
        return loss

    def _apply(self, group: dict, params: list[torch.Tensor], updates: list[torch.Tensor]) -> None:
        by_shape: dict[tuple, list[int]] = defaultdict(list)
        for i, p in enumerate(params):
            rows, cols = p.shape  # FSDP's DTensors report the whole matrix's shape
            by_shape[(min(rows, cols), max(rows, cols), p.device, p.dtype)].append(i)
        lr, wd = group["lr"], group["weight_decay"]
        if wd:
            torch._foreach_mul_(params, 1 - lr * wd)
        for index in by_shape.values():
            tall = [params[i].shape[0] > params[i].shape[1] for i in index]
            gathered = [whole(updates[i]) for i in index]
            stacked = torch.stack([u.mT if t else u for u, t in zip(gathered, tall, strict=True)])
            del gathered
            ortho = orthogonalize(stacked, group["ns_steps"], dtype=_ns_dtype(group["ns_dtype"], stacked.device))
            for j, (i, t) in enumerate(zip(index, tall, strict=True)):
                p = params[i]
                update = ortho[j].mT if t else ortho[j]
                _local(p).add_(_my_rows(update, p), alpha=-lr * lr_scale(p.shape, group["adjust_lr"]))


# Under FSDP2 (train.parallel=fsdp) each rank holds a block of rows of every matrix (a DTensor sharded on dim 0).
# Newton-Schulz needs the whole matrix: each update is gathered, orthogonalized on every rank alike (the same
# arithmetic as one process), and each rank applies its own rows. The gather costs one all-gather of the
# updates, as FSDP's forward does for the weights; the orthogonalization is repeated on every rank.

def _local(p: torch.Tensor) -> torch.Tensor:
    return p.to_local() if is_sharded(p) else p


def _my_rows(update: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """This rank's block of ``update``: FSDP2 splits dim 0 as ``torch.chunk`` does."""
    if not is_sharded(p):
        return update
    mesh = p.device_mesh
    if mesh.ndim != 1 or [type(pl).__name__ for pl in p.placements] != ["Shard"] or p.placements[0].dim != 0:
        raise NotImplementedError(f"Muon updates FSDP parameters sharded by rows on one mesh dimension; "
                                  f"this one is placed {p.placements}")
    chunks = update.chunk(mesh.size(), dim=0)
    rank = mesh.get_local_rank()
    mine = chunks[rank] if rank < len(chunks) else update[:0]
    local = p.to_local()
    if mine.shape != local.shape:
        raise RuntimeError(f"Muon: this rank's rows {tuple(mine.shape)} do not match its shard {tuple(local.shape)}")
    return mine
