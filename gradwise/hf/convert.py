"""gradwise GPT <-> Hugging Face GPT-2: the config and weight mapping, export and import.

The two models compute the same function: token + position embeddings, pre-LayerNorm blocks (causal
self-attention scaled by 1/sqrt(head width), then a 4x MLP), a final LayerNorm and a bias-free LM head.
The differences are in names and layouts only:

==========================================  ===========================================  =============
gradwise (``GPT.state_dict()``)             GPT-2 (``GPT2LMHeadModel``)                   layout
==========================================  ===========================================  =============
``wte.weight``                              ``transformer.wte.weight``                    same (V, C)
``wpe.weight``                              ``transformer.wpe.weight``                    same (T, C)
``blocks.{i}.ln_1.weight`` / ``.bias``      ``transformer.h.{i}.ln_1.weight`` / ``.bias`` same (C,)
``blocks.{i}.attn.qkv.weight``              ``transformer.h.{i}.attn.c_attn.weight``      transposed
``blocks.{i}.attn.proj.weight``             ``transformer.h.{i}.attn.c_proj.weight``      transposed
``blocks.{i}.ln_2.*``                       ``transformer.h.{i}.ln_2.*``                  same
``blocks.{i}.mlp.fc.weight``                ``transformer.h.{i}.mlp.c_fc.weight``         transposed
``blocks.{i}.mlp.proj.weight``              ``transformer.h.{i}.mlp.c_proj.weight``       transposed
``ln_f.*``                                  ``transformer.ln_f.*``                        same
``lm_head.weight`` (untied only)            ``lm_head.weight`` (tie_word_embeddings off)  same (V, C)
==========================================  ===========================================  =============

GPT-2's ``Conv1D`` stores (in, out) where ``nn.Linear`` stores (out, in), hence the transposes; the
fused q/k/v projection splits into q, k, v and then into heads in the same order in both. GPT-2 has a bias
on every linear layer and LayerNorm: a gradwise model with ``bias=False`` is exported with zero biases
(the same function) and ``"gradwise": {"bias": false}`` in config.json, which brings it back bias-free.
gradwise's GELU is the exact (erf) one: ``activation_function: gelu``; its LayerNorm eps is 1e-5.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gradwise.core.errors import GradwiseError
from gradwise.data.tokenizers import BPETokenizer, CharTokenizer, Tokenizer
from gradwise.hf import hf_path, is_hf_source
from gradwise.hf.tokenizer import read_tokenizer
from gradwise.models.gpt import GPT, GPTConfig

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
ACTIVATION = "gelu"  # gradwise's default MLP GELU is the exact erf form, which transformers names "gelu"
TANH_GELU = "gelu_new"  # model.activation gelu_tanh: the tanh approximation of OpenAI's GPT-2 checkpoints
TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh")  # the same function in transformers under two names
LINEARS = {"attn.qkv": "attn.c_attn", "attn.proj": "attn.c_proj", "mlp.fc": "mlp.c_fc", "mlp.proj": "mlp.c_proj"}
NORMS = ("ln_1", "ln_2")
IGNORED_BUFFERS = ("attn.bias", "attn.masked_bias")  # causal-mask buffers older GPT-2 checkpoints carry
SUPPORTED = ("gradwise imports GPT-2 models only (model_type gpt2, GPT2LMHeadModel: gpt2, distilgpt2, a gradwise "
             "export); to train another causal LM as it is, use --model hf:DIR")


# ---------------------------------------------------------------- weight mapping

def gpt_to_hf_state(state: dict[str, torch.Tensor], cfg: GPTConfig) -> dict[str, torch.Tensor]:
    """A gradwise GPT's state dict -> GPT-2 tensors (float32, contiguous, zero biases where gradwise has none)."""
    C = cfg.n_embd

    def bias(name: str, size: int) -> torch.Tensor:
        return state[name] if name in state else torch.zeros(size)

    out = {"transformer.wte.weight": state["wte.weight"], "transformer.wpe.weight": state["wpe.weight"]}
    for i in range(cfg.n_layer):
        g, h = f"blocks.{i}.", f"transformer.h.{i}."
        for ln in NORMS:
            out[f"{h}{ln}.weight"] = state[f"{g}{ln}.weight"]
            out[f"{h}{ln}.bias"] = bias(f"{g}{ln}.bias", C)
        for ours, theirs in LINEARS.items():
            w = state[f"{g}{ours}.weight"]  # nn.Linear: (out, in)
            out[f"{h}{theirs}.weight"] = w.t()  # Conv1D: (in, out)
            out[f"{h}{theirs}.bias"] = bias(f"{g}{ours}.bias", w.shape[0])
    out["transformer.ln_f.weight"] = state["ln_f.weight"]
    out["transformer.ln_f.bias"] = bias("ln_f.bias", C)
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = state["lm_head.weight"]
    return {k: v.detach().to("cpu", torch.float32).contiguous().clone() for k, v in out.items()}


def hf_to_gpt_state(tensors: dict[str, torch.Tensor], cfg: GPTConfig, where: str = "the model") -> dict[str, torch.Tensor]:
    """GPT-2 tensors -> a state dict ``GPT(cfg).load_state_dict`` takes (float32; shapes and names checked)."""
    hf = {(k[len("transformer."):] if k.startswith("transformer.") else k): v for k, v in tensors.items()}
    used: set[str] = set()

    def take(name: str, transpose: bool = False) -> torch.Tensor:
        if name not in hf:
            raise GradwiseError(f"{where} has no tensor '{name}'; is it a complete GPT-2 checkpoint?")
        used.add(name)
        t = hf[name].to(torch.float32)
        return t.t().contiguous() if transpose else t

    def keep_bias(ours: str, theirs: str) -> None:
        b = take(theirs)
        if cfg.bias:
            out[ours] = b
        elif b.abs().max().item() != 0:
            raise GradwiseError(f"{where} has a non-zero {theirs}; it needs a GPT with model.bias=true")

    out = {"wte.weight": take("wte.weight"), "wpe.weight": take("wpe.weight")}
    for i in range(cfg.n_layer):
        g, h = f"blocks.{i}.", f"h.{i}."
        for ln in NORMS:
            out[f"{g}{ln}.weight"] = take(f"{h}{ln}.weight")
            keep_bias(f"{g}{ln}.bias", f"{h}{ln}.bias")
        for ours, theirs in LINEARS.items():
            out[f"{g}{ours}.weight"] = take(f"{h}{theirs}.weight", transpose=True)
            keep_bias(f"{g}{ours}.bias", f"{h}{theirs}.bias")
    out["ln_f.weight"] = take("ln_f.weight")
    keep_bias("ln_f.bias", "ln_f.bias")
    if cfg.tie_embeddings:
        used.add("lm_head.weight")  # some saves repeat the tied matrix; the embedding is the one used
        out["lm_head.weight"] = out["wte.weight"]
    else:
        out["lm_head.weight"] = take("lm_head.weight")
    extra = sorted(k for k in hf if k not in used and not k.endswith(IGNORED_BUFFERS))
    if extra:
        raise GradwiseError(f"{where} holds tensors a GPT-2 language model does not have ({', '.join(extra[:3])}); "
                            f"{SUPPORTED}")
    expected = _expected_shapes(cfg)
    for name, t in out.items():
        if tuple(t.shape) != expected[name]:
            raise GradwiseError(f"{where}: tensor for {name} has shape {tuple(t.shape)}, its config.json implies "
                                f"{expected[name]}; the weights and config.json do not match")
    return out


def _expected_shapes(cfg: GPTConfig) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in GPT(cfg).state_dict().items()}


# ---------------------------------------------------------------- config mapping

def gpt2_cannot_hold(cfg: GPTConfig) -> list[str]:
    """The options of ``cfg`` that GPT-2's format (and transformers' GPT2LMHeadModel) has no place for, as
    ``key=value``; zero-initialised projections are only a starting point, so they export."""
    out = [f"model.pos={cfg.pos}"] if cfg.pos != "learned" else []
    out += ["model.qk_norm=true"] if cfg.qk_norm else []
    out += [f"model.activation={cfg.activation}"] if cfg.activation not in ("gelu", "gelu_tanh") else []
    out += [f"model.logit_softcap={cfg.logit_softcap:g}"] if cfg.logit_softcap else []
    return out


def hf_config(cfg: GPTConfig, eot_id: int, layer_norm_eps: float, provenance: dict[str, Any]) -> dict[str, Any]:
    """GPT-2's config.json for a gradwise GPT."""
    return {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "vocab_size": cfg.vocab_size, "n_positions": cfg.block_size, "n_embd": cfg.n_embd,
        "n_layer": cfg.n_layer, "n_head": cfg.n_head, "n_inner": None,
        "activation_function": TANH_GELU if cfg.activation == "gelu_tanh" else ACTIVATION,
        "layer_norm_epsilon": layer_norm_eps,
        "resid_pdrop": cfg.rate("resid"), "embd_pdrop": cfg.rate("embd"), "attn_pdrop": cfg.rate("attn"),
        "initializer_range": 0.02, "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False, "add_cross_attention": False, "use_cache": True,
        "bos_token_id": eot_id, "eos_token_id": eot_id, "tie_word_embeddings": cfg.tie_embeddings,
        "dtype": "float32",
        "gradwise": {"bias": cfg.bias, **provenance},
    }


@dataclass
class HFShape:
    """What a Hugging Face GPT-2 directory holds, read without its weights (biases aside)."""

    directory: Path
    config: GPTConfig
    tokenizer: Tokenizer
    warnings: list[str] = field(default_factory=list)


def read_hf_config(directory: Path) -> dict[str, Any]:
    directory = Path(directory)
    if not directory.is_dir():
        raise GradwiseError(f"hf:{directory}: no such directory; give a local Hugging Face model directory "
                            "(config.json, model.safetensors, tokenizer files); gradwise downloads nothing")
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise GradwiseError(f"{directory} has no {CONFIG_FILE}; is it a Hugging Face model directory "
                            "(what save_pretrained writes)?")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GradwiseError(f"cannot read {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise GradwiseError(f"{path} does not hold a JSON object; is it a Hugging Face config?")
    kind = data.get("model_type")
    if kind != "gpt2":
        raise GradwiseError(f"{directory} holds a '{kind or 'unknown'}' model; {SUPPORTED}")
    return data


def read_hf_shape(directory: str | Path) -> HFShape:
    """The GPTConfig and gradwise tokenizer of a Hugging Face GPT-2 directory; refuses what gradwise cannot run."""
    directory = Path(directory).expanduser()
    data = read_hf_config(directory)

    def get(*names: str, default: Any = None) -> Any:
        return next((data[n] for n in names if data.get(n) is not None), default)

    n_embd, n_head = int(get("n_embd", "hidden_size", default=768)), int(get("n_head", "num_attention_heads", default=12))
    n_layer, n_pos = int(get("n_layer", "num_hidden_layers", default=12)), int(get("n_positions", "max_position_embeddings", default=1024))
    vocab = int(get("vocab_size", default=50257))
    where = f"hf:{directory}"
    if get("add_cross_attention", default=False):
        raise GradwiseError(f"{where} has cross-attention (an encoder-decoder part); {SUPPORTED}")
    if not get("scale_attn_weights", default=True) or get("scale_attn_by_inverse_layer_idx", default=False):
        raise GradwiseError(f"{where} scales attention differently from 1/sqrt(head width) "
                            "(scale_attn_weights / scale_attn_by_inverse_layer_idx); gradwise's GPT cannot run it")
    inner = get("n_inner")
    if inner is not None and int(inner) != 4 * n_embd:
        raise GradwiseError(f"{where} has an MLP width of {inner} (n_inner); gradwise's GPT uses 4 x n_embd = "
                            f"{4 * n_embd}")
    if n_embd % n_head:
        raise GradwiseError(f"{where}: n_embd {n_embd} is not divisible by n_head {n_head}")
    warnings = []
    act = get("activation_function", default="gelu_new")
    if act not in (ACTIVATION, *TANH_GELUS):
        raise GradwiseError(f"{where} uses activation '{act}'; gradwise's GPT runs {ACTIVATION} (exact GELU) and "
                            f"{', '.join(TANH_GELUS)} (its tanh approximation)")
    eps = float(get("layer_norm_epsilon", default=1e-5))
    if abs(eps - 1e-5) > 1e-12:
        warnings.append(f"{where} uses LayerNorm eps {eps:g}; gradwise's GPT uses 1e-05, so outputs differ slightly")
    tok = read_tokenizer(directory)
    if tok.vocab_size != vocab:
        raise GradwiseError(f"{where}: the model has vocab_size {vocab} but its tokenizer has {tok.vocab_size} "
                            "tokens; gradwise needs them equal (resize the embeddings to the tokenizer first)")
    marker = data.get("gradwise") if isinstance(data.get("gradwise"), dict) else {}
    bias = not (marker.get("bias") is False and _biases_are_zero(directory, n_layer))
    cfg = GPTConfig(vocab_size=vocab, block_size=n_pos, n_layer=n_layer, n_head=n_head, n_embd=n_embd, bias=bias,
                    tie_embeddings=bool(get("tie_word_embeddings", default=True)),
                    activation="gelu_tanh" if act in TANH_GELUS else "gelu")
    return HFShape(directory, cfg, tok, warnings)


def _biases_are_zero(directory: Path, n_layer: int) -> bool:
    """Whether every bias is zero, as in a bias-free gradwise model's export (reads the bias tensors only)."""
    by_file: dict[Path, list[str]] = {}
    for name, path in _weight_files(directory).items():
        if name.endswith(".bias") and not name.endswith(IGNORED_BUFFERS):
            by_file.setdefault(path, []).append(name)
    return all(not t.any() for path, names in by_file.items() for t in _read_tensors(path, names).values())


# ---------------------------------------------------------------- weight files

def _weight_files(directory: Path) -> dict[str, Path]:
    """Tensor name -> the safetensors file holding it (one file, or shards named by the index)."""
    from safetensors import safe_open

    single, index = directory / WEIGHTS_FILE, directory / WEIGHTS_INDEX
    if single.is_file():
        try:
            with safe_open(str(single), "pt") as f:
                return dict.fromkeys(f.keys(), single)
        except Exception as exc:
            raise GradwiseError(f"cannot read {single}: {str(exc).splitlines()[0]}") from None
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise GradwiseError(f"cannot read {index}: {exc}") from None
        return {name: directory / file for name, file in weight_map.items()}
    if any((directory / f).is_file() for f in ("pytorch_model.bin", "pytorch_model.bin.index.json")):
        raise GradwiseError(f"{directory} holds pickled weights (pytorch_model.bin) only; gradwise reads safetensors: "
                            "re-save it with transformers (from_pretrained, then save_pretrained)")
    raise GradwiseError(f"{directory} has no {WEIGHTS_FILE}; is the Hugging Face model directory complete?")


def _read_tensors(path: Path, names: list[str]) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return {n: f.get_tensor(n) for n in names}
    except Exception as exc:
        raise GradwiseError(f"cannot read {path}: {str(exc).splitlines()[0]}") from None


def read_hf_weights(directory: Path) -> dict[str, torch.Tensor]:
    by_file: dict[Path, list[str]] = {}
    for name, path in _weight_files(directory).items():
        by_file.setdefault(path, []).append(name)
    tensors: dict[str, torch.Tensor] = {}
    for path, names in by_file.items():
        tensors.update(_read_tensors(path, names))
    return tensors


# ---------------------------------------------------------------- import: Hugging Face -> gradwise

@dataclass
class HFImport:
    config: GPTConfig
    state_dict: dict[str, torch.Tensor]
    tokenizer: Tokenizer
    warnings: list[str] = field(default_factory=list)

    def __iter__(self):  # config, state_dict, tokenizer = gpt_from_hf(path)
        return iter((self.config, self.state_dict, self.tokenizer))

    def model(self) -> GPT:
        """The gradwise GPT with these weights (eval mode)."""
        model = GPT(self.config)
        model.load_state_dict(self.state_dict)
        return model.eval()


def gpt_from_hf(path: str | Path) -> HFImport:
    """A Hugging Face GPT-2 directory (``DIR`` or ``hf:DIR``) -> GPTConfig, gradwise state dict and tokenizer."""
    shape = read_hf_shape(hf_path(str(path)))
    state = hf_to_gpt_state(read_hf_weights(shape.directory), shape.config, f"hf:{shape.directory}")
    return HFImport(shape.config, state, shape.tokenizer, shape.warnings)


def adopt_hf_config(cfg: Any) -> None:
    """``model.init_from=hf:DIR``: take the model's shape and tokenizer keys into ``cfg`` (a gradwise Config,
    while it is resolved: nothing rewrites it afterwards)."""
    if cfg.model.arch != "gpt":
        raise GradwiseError("model.init_from loads a GPT; set model.arch=gpt (the LSTM cannot start from it)")
    shape = read_hf_shape(hf_path(cfg.model.init_from))
    for key in ("n_layer", "n_head", "n_embd", "block_size", "bias", "activation"):
        setattr(cfg.model, key, getattr(shape.config, key))
    cfg.model.tie_embeddings = shape.config.tie_embeddings
    cfg.data.tokenizer = shape.tokenizer.kind
    if isinstance(shape.tokenizer, BPETokenizer):
        cfg.data.vocab_size = shape.tokenizer.vocab_size
    for line in shape.warnings:
        print(f"gradwise: warning: {line}", file=sys.stderr)


def hf_init_tokenizer(cfg: Any) -> Tokenizer:
    """The tokenizer of ``model.init_from=hf:DIR``, as gradwise's own (its keys are in ``cfg`` already)."""
    tok = read_hf_shape(hf_path(cfg.model.init_from)).tokenizer
    if isinstance(tok, CharTokenizer) and cfg.task == "classify":
        tok.skip_unknown = True  # labelled texts may hold characters the model's corpus never had
    return tok


def load_hf_weights(init_from: str, model: GPT) -> None:
    """Load ``hf:DIR``'s weights into a gradwise GPT shaped by :func:`adopt_hf_config`."""
    directory = Path(hf_path(init_from)).expanduser()
    read_hf_config(directory)
    state = hf_to_gpt_state(read_hf_weights(directory), model.cfg, f"hf:{directory}")
    model.load_state_dict(state)


__all__ = ["HFImport", "HFShape", "adopt_hf_config", "hf_init_tokenizer", "gpt_from_hf", "gpt_to_hf_state", "hf_config", "hf_to_gpt_state",
           "is_hf_source", "load_hf_weights", "read_hf_shape"]
