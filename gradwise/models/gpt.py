"""A decoder-only GPT: pre-LayerNorm blocks, SDPA causal attention, GELU MLP, tied embeddings.

The modern options (each off by default, so the GPT-2 shape and old runs stay as they were): rotary position
embeddings instead of a learned table (``pos: rope``), RMS-normalised queries and keys (``qk_norm``), a
squared-ReLU MLP (``activation: relu2``), zero-initialised output projections (``zero_init``), and the
logits soft-capped by ``logit_softcap * tanh(logits / logit_softcap)`` (usually with untied embeddings).

Shapes are written next to each line: B batch, T time (tokens), C width (n_embd), H heads,
D head width (C / H), V vocabulary.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gradwise.models.chunked_ce import linear_cross_entropy


@dataclass
class GPTConfig:
    vocab_size: int
    block_size: int = 128
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0  # default for the three places below
    embd_dropout: float | None = None
    attn_dropout: float | None = None
    resid_dropout: float | None = None
    bias: bool = False
    tie_embeddings: bool = True
    activation: str = "gelu"  # gelu (exact, erf), gelu_tanh (OpenAI's GPT-2) or relu2 (squared ReLU)
    pos: str = "learned"  # learned (a position table, GPT-2) or rope (rotary, on queries and keys)
    qk_norm: bool = False  # RMS-normalise each head's queries and keys before attention
    zero_init: bool = False  # output projections (attention and MLP) start at zero: each block starts as identity
    logit_softcap: float | None = None  # logits -> cap * tanh(logits / cap)

    def rate(self, where: str) -> float:
        """The dropout rate at ``where`` (embd, attn or resid): its own if set, else ``dropout``."""
        own = getattr(self, f"{where}_dropout")
        return self.dropout if own is None else own


ROPE_BASE = 10_000.0  # the rotary wavelengths' base (RoFormer, Llama)


def rope_tables(length: int, head_dim: int, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin (T, D/2) of each position's angle for each pair of channels (pairs: channel i with i + D/2)."""
    inv = 1.0 / ROPE_BASE ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim)  # (D/2,)
    angles = torch.outer(torch.arange(length, dtype=torch.float32, device=device), inv)  # (T, D/2)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each channel pair of x (B, H, T, D) by its position's angle; computed in fp32, returned in x's dtype."""
    T = x.shape[-2]
    x1, x2 = x.float().chunk(2, dim=-1)  # 2 x (B, H, T, D/2)
    c, s = cos[:T], sin[:T]  # (T, D/2)
    return torch.cat((x1 * c - x2 * s, x1 * s + x2 * c), dim=-1).to(x.dtype)  # (B, H, T, D)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.qk_norm = cfg.qk_norm
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.attn_dropout = cfg.rate("attn")
        self.resid_drop = nn.Dropout(cfg.rate("resid"))

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)  # 3 x (B, T, C)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
        if self.qk_norm:
            q, k = F.rms_norm(q, (q.size(-1),)), F.rms_norm(k, (k.size(-1),))  # (B, H, T, D), no weights
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                           dropout_p=self.attn_dropout if self.training else 0.0)  # (B, H, T, D)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.resid_drop(self.proj(y))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.drop = nn.Dropout(cfg.rate("resid"))
        self.relu2 = cfg.activation == "relu2"
        self.approximate = "tanh" if cfg.activation == "gelu_tanh" else "none"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)  # (B, T, 4C)
        h = F.relu(h).square() if self.relu2 else F.gelu(h, approximate=self.approximate)
        return self.drop(self.proj(h))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), rope)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)  # token embedding (V, C)
        if cfg.pos == "rope":  # angles, not weights: recomputed on load, never saved
            self.wpe = None
            cos, sin = rope_tables(cfg.block_size, cfg.n_embd // cfg.n_head)
            self.register_buffer("rope_cos", cos, persistent=False)  # (T_max, D/2)
            self.register_buffer("rope_sin", sin, persistent=False)
        else:
            self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)  # position embedding (T_max, C)
        self.drop = nn.Dropout(cfg.rate("embd"))
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.wte.weight
        self.apply(self._init_weights)
        # Residual projections scaled down so the residual stream's variance does not grow with depth.
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):
                if cfg.zero_init:
                    nn.init.zeros_(p)
                else:
                    nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameters counted once (tied weights are shared); non_embedding drops position embeddings
        and, if untied, the token embedding (the usual convention for 6N FLOP estimates)."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.wpe.weight.numel() if self.wpe is not None else 0
            if not self.cfg.tie_embeddings:
                n -= self.wte.weight.numel()
        return n

    def forward(self, idx: torch.Tensor, loss_targets: torch.Tensor | None = None, label_smoothing: float = 0.0,
                z_loss: float = 0.0) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Token ids (B, T) -> logits (B, T, V); or, given ``loss_targets``, the loss (total, cross-entropy,
        z-loss) computed through the output layer in chunks, without all the logits (chunked_ce.py). The loss
        is computed here, inside forward, so DDP/FSDP and torch.compile wrappers see one ordinary call."""
        if loss_targets is None:
            return softcap(self.lm_head(self.hidden(idx)), self.cfg.logit_softcap)  # (B, T, V)
        return linear_cross_entropy(self.hidden(idx), self.lm_head.weight, loss_targets,
                                    label_smoothing=label_smoothing, z_weight=z_loss, softcap=self.cfg.logit_softcap)

    def hidden(self, idx: torch.Tensor) -> torch.Tensor:
        """Token ids (B, T) -> final normalised hidden states (B, T, C): what heads read."""
        B, T = idx.shape
        if self.cfg.block_size < T:
            raise ValueError(f"sequence of {T} tokens exceeds block_size {self.cfg.block_size}")
        x = self.wte(idx)  # (B, T, C)
        rope = None
        if self.wpe is not None:
            x = x + self.wpe(torch.arange(T, device=idx.device))
        else:
            rope = (self.rope_cos, self.rope_sin)
        x = self.drop(x)
        for block in self.blocks:
            x = block(x, rope)
        return self.ln_f(x)  # (B, T, C)

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None,
                 generator: torch.Generator | None = None, stop_token: int | None = None,
                 on_token: Callable[[torch.Tensor], None] | None = None) -> torch.Tensor:
        """Sample ``max_new_tokens`` continuations of idx (B, T); temperature 0 is greedy."""
        return sample_tokens(self, idx, self.cfg.block_size, max_new_tokens, temperature, top_k, top_p, generator,
                             stop_token, on_token)


def softcap(logits: torch.Tensor, cap: float | None) -> torch.Tensor:
    """cap * tanh(logits / cap): logits bounded in (-cap, cap), nearly unchanged well inside; None: as they are."""
    return logits if not cap else cap * torch.tanh(logits / cap)


@torch.no_grad()
def sample_tokens(model: nn.Module, idx: torch.Tensor, block_size: int, max_new_tokens: int,
                  temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                  generator: torch.Generator | None = None, stop_token: int | None = None,
                  on_token: Callable[[torch.Tensor], None] | None = None) -> torch.Tensor:
    """Autoregressive sampling from any model mapping ids (B, T) to logits (B, T, V), reading at most the last
    ``block_size`` tokens (no key/value cache: simple, and the same for every model gradwise trains).
    ``on_token`` sees each step's new ids (B, 1) as they are drawn: streaming and progress."""
    for _ in range(max_new_tokens):
        logits = model(idx[:, -block_size:])[:, -1, :].float()  # (B, V)
        if temperature <= 0:
            next_id = logits.argmax(dim=-1, keepdim=True)
        else:
            probs = F.softmax(filter_logits(logits / temperature, top_k, top_p), dim=-1)
            next_id = torch.multinomial(probs, 1, generator=generator)
        idx = torch.cat([idx, next_id], dim=1)
        if on_token is not None:
            on_token(next_id)
        if stop_token is not None and bool((next_id == stop_token).all()):
            break
    return idx


def filter_logits(logits: torch.Tensor, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """Keep the top-k logits and/or the smallest set whose probability reaches top_p; mask the rest."""
    if top_k is not None and 0 < top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and 0.0 < top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop_sorted = cum - sorted_logits.softmax(dim=-1) >= top_p  # keep the token that crosses top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits
