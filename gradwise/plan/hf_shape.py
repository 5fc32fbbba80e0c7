"""The planner's view of a Hugging Face model: its shape, built from config.json on the meta device.

A meta-device model has every parameter's shape and dtype but no storage, so a 70B model costs nothing to
plan. Its parameters give the exact counts, the optimizer groups and the FLOPs (the rule the training log
uses). Activation memory is measured, not modelled: one forward of the training objective on the meta
device with saved-tensor hooks adds up the storages autograd keeps for backward (parameters and repeats
left out), at micro-batch 1 and 2, so any micro-batch is ``fixed + per_sample x batch``. Against a loaded
model on CPU it is exact for the plain models tested; with LoRA within 8% under (the meta pass copies a
reshape the CPU keeps as a view of a larger tensor). Attention is counted as the kernel training takes keeps
it (:func:`_fused_attention_on_meta`). The values are fp32; bf16 autocast keeps many in half the bytes, so
under bf16 it is an upper bound.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from typing import Any

import torch

from gradwise.config.schema import Config
from gradwise.core.runtime import select_device
from gradwise.hf.causal import from_config, model_dir
from gradwise.hf.lora import apply_lora, linear_like
from gradwise.hf.model import HFCausalLM
from gradwise.models.cost import ParamTensor, hf_attention_shape, hf_flops_per_token, lookup_tables
from gradwise.optim.optimizers import classify_params
from gradwise.training.memory import saved_bytes


@dataclass(frozen=True)
class HFModelShape:
    """What the planner's formulas need of a Hugging Face model (see :func:`hf_shape`)."""

    path: str
    model_type: str
    lora_r: int | None
    tensors: tuple[Any, ...]  # plan.ParamTensor, every parameter once (frozen ones with grad=False)
    output_rows: int  # the output layer's rows: the logits' width (may exceed the tokenizer's vocabulary)
    input_tables: int  # values in embedding tables only looked up (not tied to the output layer)
    flops_per_token: float
    autocast_values: int  # values bf16 autocast copies: every matmul weight, frozen ones too
    activations_fixed: int | None  # bytes saved for backward whatever the batch; None: could not be measured
    activations_per_sample: int | None
    activation_note: str | None = None


def hf_shape(cfg: Config, vocab_size: int) -> tuple[HFModelShape, dict[str, int]]:
    """The shape of ``cfg``'s Hugging Face model (LoRA applied) and its config's layer, head and width."""

    m = cfg.model
    model = meta_model(cfg)
    config = model.base_model().config
    layers, heads, width = hf_attention_shape(config, f"hf:{m.hf_path}")
    kinds = {id(p): kind for kind, params in classify_params(model).items() for p in params}
    tensors, seen = [], set()
    for name, p in model.named_parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        kind = kinds.get(id(p), "matrices" if p.dim() >= 2 else "vectors")
        tensors.append(ParamTensor(name, tuple(p.shape), kind, grad=p.requires_grad))
    head = model.get_output_embeddings()
    head_weight = getattr(head, "weight", None)
    linear = sum(mod.weight.numel() for mod in model.modules() if linear_like(mod))  # GPT-2's Conv1D too
    tied_head = head_weight is not None and not any(mod.weight is head_weight for mod in model.modules()
                                                    if linear_like(mod))
    fixed, per_sample, note = _activations(model, m.block_size, select_device(cfg.train.device).type)
    shape = HFModelShape(path=str(m.hf_path), model_type=str(getattr(config, "model_type", "?")),
                    lora_r=m.lora.r if m.lora is not None else None, tensors=tuple(tensors),
                    output_rows=head_weight.shape[0] if head_weight is not None else vocab_size,
                    input_tables=sum(t.numel() for t in lookup_tables(model)), flops_per_token=hf_flops_per_token(model, m.block_size),
                    autocast_values=linear + (head_weight.numel() if tied_head else 0),
                    activations_fixed=fixed, activations_per_sample=per_sample, activation_note=note)
    return shape, {"n_layer": layers, "n_head": heads, "n_embd": width}


def meta_model(cfg: Config, device: torch.device | str = "meta") -> Any:
    """``cfg``'s model (LoRA applied) on the meta device: shapes and dtypes, no weights read or allocated.
    On a real device: randomly initialised, which is all a timing of its steps needs."""

    m = cfg.model
    base = from_config(model_dir(m.hf_path), f"hf:{m.hf_path} as a causal language model", device)
    model, frozen = base, None
    if m.lora is not None:
        lora = copy.deepcopy(m.lora)  # apply_lora records the targets it chose: not in the user's config
        model, _ = apply_lora(base, lora.r, lora.alpha, lora.dropout, lora.targets)
        # Checkpoints then hold the adapters alone, as a LoRA run's do (the timed writes are the real ones)
        frozen = {"path": str(m.hf_path), "fingerprint": "not hashed: a plan's random-weight model"}
    return HFCausalLM(model, m.block_size, frozen).train()


def _activations(model: Any, context: int, target: str) -> tuple[int | None, int | None, str | None]:
    """(fixed, per-sample) bytes autograd keeps for backward, from meta forwards at micro-batch 1 and 2."""
    try:
        # transformers builds its causal mask by reading position ids back when no cache is asked for (a meta
        # tensor has no values); with the cache on it does not, and a cache keeps nothing for backward.
        with _fused_attention_on_meta(target), _cache_on(model):
            one, two = (saved_bytes(model, batch, context) for batch in (1, 2))
    except Exception as exc:  # noqa: BLE001 - a model whose forward reads values back cannot run on meta
        reason = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        return None, None, f"activation memory not estimated: this model's forward cannot run on the meta " \
                           f"device ({reason}); the total leaves activations out"
    return max(2 * one - two, 0), two - one, None


@contextlib.contextmanager
def _cache_on(model: Any):
    """The wrapper's forward with ``use_cache=True`` for the meta pass (see :func:`saved_bytes`)."""
    hf = model.hf
    model.forward = lambda idx: hf(input_ids=idx, use_cache=True).logits  # found before the class's forward
    try:
        yield
    finally:
        del model.forward


@contextlib.contextmanager
def _fused_attention_on_meta(target: str):
    """On the meta device attention takes PyTorch's math kernel, which keeps a T x T map per head for backward.
    Training takes a fused kernel that keeps q, k, v, the output and one log-sum-exp per row: on CUDA always
    (flash or memory-efficient), on the CPU when there is no attention dropout. The meta pass goes through the
    CPU's fused op instead (it has a meta implementation and a backward, and takes grouped-query k and v as
    they are), so it keeps what training keeps."""
    import torch.nn.functional as F

    math = F.scaled_dot_product_attention

    def attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_mask: Any = None,
                  dropout_p: float = 0.0, is_causal: bool = False, scale: float | None = None,
                  enable_gqa: bool = False) -> torch.Tensor:
        if query.device.type != "meta" or (target != "cuda" and dropout_p > 0):
            return math(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                        scale=scale, enable_gqa=enable_gqa)
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            query, key, value, dropout_p, is_causal, attn_mask=attn_mask, scale=scale)[0]

    F.scaled_dot_product_attention = attention
    try:
        yield
    finally:
        F.scaled_dot_product_attention = math
