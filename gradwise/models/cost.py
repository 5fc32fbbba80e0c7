"""What a model costs: its parameter tensors and training FLOPs per token, from its config alone.

Shared by training's FLOP meter (MFU on every log line) and the planner."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from gradwise.config.schema import Config
from gradwise.config.validate import objective_terms
from gradwise.core.errors import GradwiseError

if TYPE_CHECKING:
    from gradwise.plan.hf_shape import HFModelShape


@dataclass(frozen=True)
class ParamTensor:
    """One parameter tensor as the model builds it; ``kind`` is its optimizer group (optim/optimizers.py)."""

    name: str
    shape: tuple[int, ...]
    kind: str  # matrices | embeddings | vectors
    grad: bool = True  # False: the tensor never receives a gradient (an untied LM head nobody reads)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass
class ModelSpec:
    """The shape of the network a config builds: all the planner's formulas read from this."""

    arch: str  # gpt | lstm | hf
    task: str  # lm | classify
    vocab_size: int
    n_layer: int
    n_head: int
    n_embd: int
    block_size: int
    hidden: int = 0  # LSTM hidden size
    bidirectional: bool = False
    bias: bool = False
    tie_embeddings: bool = True
    n_classes: int = 0  # classify only
    with_lm: bool = True  # the LM head is computed (task lm, or a classifier with an lm objective term)
    drop: dict[str, float] = field(default_factory=dict)  # embd / attn / resid (GPT), between (LSTM layers)
    fused_ce: bool = False  # train.fused_ce: the loss goes through the output layer in chunks (chunked_ce.py)
    pos: str = "learned"  # GPT positions: a learned table, or rope (no table; rotated queries and keys)
    qk_norm: bool = False
    activation: str = "gelu"
    softcap: float | None = None
    hf: HFModelShape | None = None  # a Hugging Face model: read from the model itself (plan/hf_shape.py), not modelled

    @property
    def directions(self) -> int:
        return 2 if self.bidirectional else 1


def architecture_spec(cfg: Config, vocab_size: int, n_classes: int = 0,
               hf: tuple[HFModelShape, dict[str, int]] | None = None) -> ModelSpec:
    """The :class:`ModelSpec` of ``cfg`` with the tokenizer's vocabulary (and the number of classes). A Hugging
    Face model's shape is read from the model itself by the planner (``hf``: gradwise.plan.hf_shape)."""
    m = cfg.model

    def rate(own: float | None) -> float:
        return m.dropout if own is None else own

    with_lm = cfg.task == "lm" or any(name == "lm" for name, _ in objective_terms(cfg))
    if m.arch == "hf":
        if hf is None:
            raise ValueError("a Hugging Face model's spec is read from the model: pass hf=(shape, dims) "
                             "from gradwise.plan.hf_shape.hf_shape")
        shape, dims = hf
        return ModelSpec("hf", cfg.task, shape.output_rows, dims["n_layer"], dims["n_head"], dims["n_embd"],
                         m.block_size, tie_embeddings=False, hf=shape)
    return ModelSpec(m.arch, cfg.task, vocab_size, m.n_layer, m.n_head, m.n_embd, m.block_size,
                     hidden=m.hidden or m.n_embd, bidirectional=m.bidirectional, bias=m.bias,
                     tie_embeddings=m.tie_embeddings, n_classes=n_classes, with_lm=with_lm,
                     drop={"embd": rate(m.embd_dropout), "attn": rate(m.attn_dropout),
                           "resid": rate(m.resid_dropout), "between": m.dropout},
                     fused_ce=cfg.train.fused_ce and with_lm and m.arch == "gpt", pos=m.pos, qk_norm=m.qk_norm,
                     activation=m.activation, softcap=m.logit_softcap)


def param_tensors(spec: ModelSpec) -> list[ParamTensor]:
    """Every parameter tensor the model owns, once (tied weights are one tensor), in the optimizer's kinds."""
    if spec.hf is not None:
        return list(spec.hf.tensors)
    if spec.arch == "lstm":
        return _lstm_tensors(spec)
    if spec.arch == "ngram":
        return [ParamTensor("embed.weight", (spec.vocab_size, spec.n_embd), "embeddings"),
                ParamTensor("head.weight", (spec.n_classes, spec.n_embd), "matrices"),
                ParamTensor("head.bias", (spec.n_classes,), "vectors")]
    return _gpt_tensors(spec)


def _gpt_tensors(s: ModelSpec) -> list[ParamTensor]:
    C, V = s.n_embd, s.vocab_size
    out = [ParamTensor("wte", (V, C), "embeddings")]
    if s.pos != "rope":
        out.append(ParamTensor("wpe", (s.block_size, C), "embeddings"))

    def linear(name: str, rows: int, cols: int) -> None:
        out.append(ParamTensor(f"{name}.weight", (rows, cols), "matrices"))
        if s.bias:
            out.append(ParamTensor(f"{name}.bias", (rows,), "vectors"))

    def norm(name: str) -> None:
        out.extend(ParamTensor(f"{name}.{p}", (C,), "vectors") for p in (("weight", "bias") if s.bias else ("weight",)))

    for i in range(s.n_layer):
        norm(f"blocks.{i}.ln_1")
        linear(f"blocks.{i}.attn.qkv", 3 * C, C)
        linear(f"blocks.{i}.attn.proj", C, C)
        norm(f"blocks.{i}.ln_2")
        linear(f"blocks.{i}.mlp.fc", 4 * C, C)
        linear(f"blocks.{i}.mlp.proj", C, 4 * C)
    norm("ln_f")
    if not s.tie_embeddings:
        # A GPT's lm_head is an "embeddings" tensor; inside a classifier the grouping does not find it (the
        # classifier has no lm_head attribute), so it is a matrix there, with a gradient only if read.
        classifier = s.task == "classify"
        out.append(ParamTensor("lm_head.weight", (V, C), "matrices" if classifier else "embeddings",
                               grad=s.with_lm))
    if s.task == "classify":
        out += [ParamTensor("head.weight", (s.n_classes, C), "matrices"), ParamTensor("head.bias", (s.n_classes,), "vectors")]
    return out


def _lstm_tensors(s: ModelSpec) -> list[ParamTensor]:
    H, D = s.hidden, s.directions
    out = [ParamTensor("embed.weight", (s.vocab_size, s.n_embd), "embeddings")]
    for layer in range(s.n_layer):
        width = s.n_embd if layer == 0 else H * D
        for suffix in ("", "_reverse")[:D]:
            out += [ParamTensor(f"lstm.weight_ih_l{layer}{suffix}", (4 * H, width), "matrices"),
                    ParamTensor(f"lstm.weight_hh_l{layer}{suffix}", (4 * H, H), "matrices"),
                    ParamTensor(f"lstm.bias_ih_l{layer}{suffix}", (4 * H,), "vectors"),
                    ParamTensor(f"lstm.bias_hh_l{layer}{suffix}", (4 * H,), "vectors")]
    return out + [ParamTensor("head.weight", (s.n_classes, H * D), "matrices"),
                  ParamTensor("head.bias", (s.n_classes,), "vectors")]


def param_counts(spec: ModelSpec) -> dict[str, int]:
    """Total and non-embedding parameters, as ``num_params`` of the models counts them.

    Non-embedding drops the position table and an untied token table (GPT), or the embedding (LSTM): the N
    of the 6N FLOP rule, where a tied table still counts once because it is also the output layer.
    """
    tensors = param_tensors(spec)
    total = sum(t.numel for t in tensors)
    dropped = {"wpe"} | ({"embed.weight"} if spec.arch in ("lstm", "ngram") else set())
    if spec.arch == "gpt" and not spec.tie_embeddings:
        dropped.add("wte")
    embedding = spec.hf.input_tables if spec.hf is not None else sum(t.numel for t in tensors if t.name in dropped)
    return {"total": total, "non_embedding": total - embedding,
            "trainable": sum(t.numel for t in tensors if t.grad), "tensors": len(tensors)}


def flops_per_token(spec: ModelSpec) -> tuple[float, str]:
    """Training FLOPs per token (forward + backward) and the formula used, in words."""
    if spec.hf is not None:
        return spec.hf.flops_per_token, ("4N + 2N_trained + 12*L*H*Q*T, N read from the model's parameters: each "
                                         "weight a token meets costs 2 FLOPs forward and 2 for the input's "
                                         "gradient, 2 more when it trains; lookups count nothing")
    if spec.arch == "lstm":
        H, D = spec.hidden, spec.directions
        widths = [spec.n_embd] + [H * D] * (spec.n_layer - 1)
        n = sum(D * 4 * H * (w + H) for w in widths)
        return 6.0 * n, ("6N, N = LSTM gate weights = sum over layers of 4 gates x (input + hidden) x hidden, x2 "
                         "when bidirectional (2 FLOPs per multiply-add, x3 for forward + backward); "
                         "embedding lookups and the per-record head ignored")
    if spec.arch == "ngram":  # per feature: the sum of its vector (1 add per width), forward and backward
        return 3.0 * spec.n_embd, ("3 x n_embd per feature (the bag's sums, forward and backward); the "
                                   "per-record head ignored")
    C, L, T = spec.n_embd, spec.n_layer, spec.block_size
    n = param_counts(spec)["non_embedding"]
    if spec.task == "classify":  # the class head reads one position per record; the LM head only with an lm term
        n -= spec.n_classes * (C + 1) + (0 if spec.with_lm else spec.vocab_size * C)
    return 6.0 * n + 12.0 * L * C * T, ("6N + 12*L*H*Q*T (PaLM appendix B, nanoGPT's MFU): N non-embedding "
                                        "parameters (output head included), H*Q = n_embd, attention over the "
                                        "full context T without causal halving")


def model_flops_per_token(cfg: Config, vocab_size: int, n_classes: int = 0) -> float:
    """Training FLOPs per token of ``cfg``'s model (forward + backward): gradwise's GPT and LSTM."""
    return flops_per_token(architecture_spec(cfg, vocab_size, n_classes))[0]


def transformer_flops_per_token(model: torch.nn.Module, n_layer: int, attention_width: int, context: int) -> float:
    """Training FLOPs per token of any transformer, read from its parameters (a Hugging Face model).

    Each weight a token meets in a matmul costs 2 FLOPs forward and 2 for the input's gradient, plus 2 for its
    own gradient when it trains: 6N for full training, about 4N on a frozen LoRA base. Embedding lookups cost
    nothing, except a table tied to the output layer (it is then a matmul). Attention adds 12·L·H·Q·T, as in
    the GPT formula."""
    lookups = {id(p) for p in lookup_tables(model)}
    matmul = [p for p in model.parameters() if id(p) not in lookups]
    n = sum(p.numel() for p in matmul)
    trained = sum(p.numel() for p in matmul if p.requires_grad)
    return 4.0 * n + 2.0 * trained + 12.0 * n_layer * attention_width * context


def lookup_tables(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The embedding tables a token is only looked up in: every one but a table tied to the output layer."""
    out = getattr(model, "get_output_embeddings", lambda: None)()
    out_weight = getattr(out, "weight", None)
    tables = {id(m.weight): m.weight for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    return [w for i, w in tables.items() if i != id(out_weight)]


def hf_attention_shape(config: Any, where: str) -> tuple[int, int, int]:
    """(layers, heads, heads x head width) from a Hugging Face config: what the attention term of the FLOPs
    and the planner's shape read; a config without them is one line naming ``where`` it came from."""
    layers, heads = getattr(config, "num_hidden_layers", None), getattr(config, "num_attention_heads", None)
    if not layers or not heads:
        raise GradwiseError(f"{where}: its config.json names no num_attention_heads / num_hidden_layers (not a "
                            "transformer decoder gradwise can size)")
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return layers, heads, heads * head_dim


def hf_flops_per_token(model: torch.nn.Module, context: int) -> float:
    """:func:`transformer_flops_per_token` with the shape a Hugging Face model's config gives."""
    config = model.base_model().config
    layers, _, width = hf_attention_shape(config, f"hf:{getattr(config, '_name_or_path', '') or 'model'}")
    return transformer_flops_per_token(model, layers, width, context)
