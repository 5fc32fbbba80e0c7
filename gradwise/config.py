"""Typed config tree: YAML/TOML load, dotted overrides, validation with one-line errors.

A config is data, never code: files are read with ``yaml.safe_load`` or ``tomllib``. Every key is
checked against the dataclasses below, so a typo such as ``model.n_layers`` stops the run with a
message that names the key and suggests the right one, before any work is done.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from gradwise.errors import ConfigError

PRESETS_DIR = Path(__file__).parent / "presets"


@dataclass
class DataConfig:
    """Where the corpus comes from, how it is tokenized and split."""

    path: str | None = None  # text file, directory or .jsonl; None = the embedded Python docs corpus
    format: Literal["auto", "text", "dir", "jsonl"] = "auto"
    text_field: str = "text"  # JSONL field (CSV column) holding the text
    label_field: str = "label"  # classification: the field (column) holding the label
    multi_label: bool = False  # classification: each record has a set of labels (a JSON list, or separated text)
    label_separator: str = ","  # multi-label: separates labels given as one string, e.g. "sports,politics"
    tokenizer: Literal["char", "bpe"] = "char"
    vocab_size: int = 4096  # BPE only
    split: list[float] = field(default_factory=lambda: [0.9, 0.05, 0.05])  # train/val/test
    split_chunks: int = 10  # the token stream is cut into this many chunks, each split 90/5/5
    cache_dir: str | None = None  # default: $GRADWISE_CACHE or ~/.cache/gradwise
    check: bool = True  # check duplicates and split leakage before training (cached; data_check.json in the run)
    dedupe: bool = False  # drop exact and near duplicates (paragraphs / records) before splitting
    near_threshold: float = 0.8  # Jaccard similarity (3-word shingles) from which two texts are near copies
    ngram: int = 13  # LM contamination: words in a run shared by a val/test window and the training split
    min_unit_chars: int = 30  # LM: paragraphs shorter than this are not compared (names, headings)


@dataclass
class LoraSettings:
    """LoRA adapters (peft) on a Hugging Face model: only the adapters train."""

    r: int = 8  # rank of each adapter
    alpha: float = 16.0  # scale: the update is (alpha / r) * B @ A
    dropout: float = 0.0  # on the adapter's input
    targets: list[str] | None = None  # module names such as [c_attn]; default: peft's for the architecture


@dataclass
class ModelConfig:
    """The network: a decoder-only GPT (language modelling), an LSTM (classification) or a local Hugging
    Face causal LM (``arch: hf``, language modelling)."""

    arch: Literal["gpt", "lstm", "hf"] = "gpt"
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 128  # context length in tokens (classification: texts are cut to this many)
    hidden: int | None = None  # LSTM hidden size (default: n_embd)
    bidirectional: bool = True  # LSTM reads both directions
    pool: Literal["last", "mean"] = "last"  # classifiers: read the last real token, or the mean over the text
    dropout: float = 0.0  # the rate for all three places below unless they set their own
    embd_dropout: float | None = None  # on token + position embeddings
    attn_dropout: float | None = None  # on attention weights
    resid_dropout: float | None = None  # on each block's attention and MLP output (the residual path)
    bias: bool = False
    tie_embeddings: bool = True
    activation: Literal["gelu", "gelu_tanh"] = "gelu"  # GPT MLP: exact GELU, or the tanh form of OpenAI's GPT-2
    # A gradwise GPT run to start from: its weights, tokenizer and shape (layers, heads, width, context)
    # are taken over, the optimizer starts fresh. For classify: fine-tune a pretrained LM as a classifier.
    init_from: str | None = None
    # arch hf: a local Hugging Face causal-LM directory (any AutoModelForCausalLM), trained with its own
    # tokenizer; the GPT shape keys above do not apply, nor do the dropout keys (the model keeps its own).
    hf_path: str | None = None
    lora: LoraSettings | None = None  # arch hf: train LoRA adapters instead of every weight


@dataclass
class ObjectiveTerm:
    """One weighted part of the objective."""

    name: Literal["lm", "classify", "multilabel"]  # next-token CE, class CE, per-class binary CE
    weight: float = 1.0


@dataclass
class ObjectiveConfig:
    """What the step minimises (the evaluation always reports plain cross-entropy)."""

    label_smoothing: float = 0.0  # spread this much target probability over the whole vocabulary
    z_loss: float = 0.0  # weight of mean(logsumexp(logits)^2): keeps logits small and training stable
    class_weights: list[float] | None = None  # classification: one weight per class (in sorted label order)
    balance_classes: bool = False  # classification: weights inversely proportional to class frequency
    # Weighted sum of several objectives on one forward pass, e.g. [{name: classify}, {name: lm, weight: 0.5}]
    # (a classifier with an auxiliary LM loss on its own texts). Default: the task's own objective.
    terms: list[ObjectiveTerm] | None = None


@dataclass
class RegularizationConfig:
    """Explicit penalties added to the loss, separate from optim.weight_decay."""

    l1: float = 0.0  # weight of sum |w|
    l2: float = 0.0  # weight of sum w^2
    params: list[str] = field(default_factory=lambda: ["*"])  # name patterns, e.g. "blocks.*.mlp.*.weight"


@dataclass
class OptimConfig:
    """The optimizer and its hyperparameters."""

    # auto: muon for GPT models (fewer steps to the same loss, docs/benchmarks.md), adamw for the LSTM
    name: Literal["auto", "adamw", "adam", "sgd", "muon", "lion", "adafactor", "radam", "nadam"] = "auto"
    lr: float = 1e-3  # the main learning rate (with muon: the AdamW part's, and Muon's unless muon_lr is set)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    eps: float = 1e-8
    weight_decay: float = 0.1
    weight_decay_on: Literal["matrices", "all"] = "matrices"  # matrices: not biases, norms, embeddings
    momentum: float = 0.9  # SGD only
    nesterov: bool = False  # SGD only
    fused: bool | None = None  # None: fused kernels wherever the device supports them
    embedding_lr: float | None = None  # own learning rate for embedding tables and the output head
    muon_lr: float | None = None  # Muon's learning rate for hidden matrices (default: optim.lr)
    muon_momentum: float = 0.95
    muon_adjust_lr: Literal["match_rms_adamw", "original"] = "match_rms_adamw"  # match: AdamW-sized lr works


@dataclass
class ScheduleConfig:
    """Learning-rate schedule: linear warmup, then constant, linear or cosine decay to a floor."""

    name: Literal["constant", "linear", "cosine", "wsd", "inverse_sqrt", "onecycle"] = "cosine"
    warmup_steps: int = 100  # onecycle: the rise from lr/25 to lr
    min_lr: float = 1e-4  # the floor the decay ends at
    decay_steps: int | None = None  # default: train.max_steps
    decay_fraction: float = 0.2  # wsd: the final fraction of steps spent decaying


@dataclass
class TrainConfig:
    """The loop: batch, steps, evaluation cadence, stopping rules, device."""

    batch_size: int = 12  # sequences per micro-batch
    grad_accum: int = 1  # micro-batches per optimization step
    max_steps: int = 2000
    max_time: str | None = None  # wall-clock budget such as "90s", "10m", "2h"
    eval_every: int = 250
    eval_batches: int = 50  # fixed validation batches per evaluation
    log_every: int = 10
    checkpoint_every: int | None = None  # default: eval_every
    patience: int | None = None  # early stopping after this many evaluations without improvement
    min_delta: float = 0.0  # an improvement smaller than this does not count
    grad_clip: float = 1.0  # clip threshold; 0 disables clipping (the norm is still reported)
    grad_clip_mode: Literal["norm", "value"] = "norm"  # by global L2 norm, or each element by value
    tokens_per_step: int | None = None  # target tokens per optimization step: sets grad_accum
    max_nonfinite: int = 10  # stop after this many non-finite steps in a row
    device: str = "auto"  # auto, cpu, cuda, cuda:1, mps
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"  # auto: bf16 autocast on CUDA, fp32 elsewhere
    compile: bool = False  # torch.compile the model
    # torch.compile's mode: max-autotune searches matmul kernels (minutes of compile time), reduce-overhead
    # replays CUDA graphs (fewer launches); default compiles fastest.
    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = "default"
    fused_ce: bool = False  # GPT LM: loss through the output layer in chunks, never all logits (chunked_ce.py)
    fp8: bool = False  # LM: fp8 matmuls in the hidden layers through torchao (H100/H200/Ada; fp8.py)
    # No host sync per step: loss and norms are read at log, eval and checkpoint steps, and a non-finite step
    # is skipped on the device. Needs fused AdamW or Adam. Off until a real GPU has shown it correct and faster
    # (None, in configs saved while it defaulted to on for CUDA, is off too).
    async_steps: bool | None = False
    deterministic: bool = True  # deterministic kernels (exact resume on CPU)
    test_eval: bool = True  # evaluate the best checkpoint on the test split at the end
    tensorboard: bool = False  # mirror metrics.jsonl into TensorBoard event files in RUN/tensorboard
    peak_tflops: float | None = None  # the device's peak for MFU (default on CUDA: a measured bf16 matmul)
    # Under torchrun (WORLD_SIZE > 1): ddp replicates the model on every rank (auto), fsdp shards it (FSDP2)
    # for models that do not fit one device. One process ignores it. See docs/scaling.md.
    parallel: Literal["auto", "ddp", "fsdp"] = "auto"


@dataclass
class Config:
    """A whole training run."""

    name: str | None = None  # run directory name; default: <config name>-<timestamp>
    task: Literal["lm", "classify"] = "lm"  # language modelling, or text classification
    out_dir: str = "runs"
    seed: int = 1337
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    regularization: RegularizationConfig = field(default_factory=RegularizationConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------- loading

def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or TOML file (or a preset name) into a plain dict."""
    p = resolve_config_path(path)
    text = p.read_text(encoding="utf-8")
    try:
        if p.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            data = yaml.safe_load(text)
    except Exception as exc:  # parser messages are already precise
        raise ConfigError(f"cannot parse {p}: {str(exc).splitlines()[0]}; fix the syntax there") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p} must hold a mapping of config keys, not a {type(data).__name__}")
    return data


def resolve_config_path(path: str | Path) -> Path:
    p = Path(path)
    if p.is_file():
        return p
    preset = PRESETS_DIR / f"{path}.yaml"
    if p.suffix == "" and preset.is_file():
        return preset
    names = ", ".join(sorted(x.stem for x in PRESETS_DIR.glob("*.yaml")))
    raise ConfigError(f"config file '{path}' not found; give a YAML/TOML path or a preset name ({names})")


def parse_override(text: str) -> tuple[str, Any]:
    """``optim.lr=3e-4`` -> ("optim.lr", 0.0003). Values are parsed as YAML scalars/lists."""
    if "=" not in text:
        raise ConfigError(f"--set '{text}' must look like KEY=VALUE, for example --set optim.lr=3e-4")
    key, raw = text.split("=", 1)
    key = key.strip()
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set dotted keys in a raw config dict (validation happens afterwards, in :func:`build_config`)."""
    for item in overrides:
        key, value = parse_override(item)
        parts = key.split(".")
        node = data
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {key}: '{part}' is a value, not a section")
            node = child
        node[parts[-1]] = value
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a config file (default preset if None), apply ``--set`` overrides, validate."""
    data = read_config_file(path if path is not None else "default")
    apply_overrides(data, list(overrides or []))
    return build_config(data)


def build_config(data: dict[str, Any]) -> Config:
    cfg = _from_dict(Config, data, "")
    validate(cfg)
    return cfg


def save_config(cfg: Config, path: Path) -> None:
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), encoding="utf-8")


# ---------------------------------------------------------------- typed conversion

def _from_dict(cls: type, data: Any, prefix: str) -> Any:
    where = prefix.rstrip(".") or "config"
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a mapping of keys, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else f"; known keys: {', '.join(fields)}"
            raise ConfigError(f"unknown config key '{prefix}{key}'{hint}")
        kwargs[key] = _convert(hints[key], value, f"{prefix}{key}")
    return cls(**kwargs)


def _convert(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _from_dict(tp, value if value is not None else {}, key + ".")
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(args[0], value, key)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{key} must be one of {', '.join(map(str, choices))}; got {value!r}")
        return value
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key} must be a list, for example [0.9, 0.95]; got {value!r}")
        return [_convert(item_tp, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false; got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{key} must be a whole number; got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key} must be a number; got {value!r}")
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 3e-4 as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key} must be a number; got {value!r}")
    if tp is str:
        if isinstance(value, bool) or value is None:
            raise ConfigError(f"{key} must be text; got {value!r}")
        return str(value)
    raise TypeError(f"unsupported config type {tp} for {key}")  # a bug in gradwise, not user input


# ---------------------------------------------------------------- value checks

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|hr|d)?\s*$")


def parse_duration(text: str | None, key: str = "train.max_time") -> float | None:
    """'90s' / '10m' / '2h' / '3600' -> seconds."""
    if text is None:
        return None
    m = _DURATION.match(str(text))
    if not m:
        raise ConfigError(f"{key} must be a duration such as 90s, 10m or 2h; got {text!r}")
    scale = {None: 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600, "d": 86400}[m.group(2)]
    seconds = float(m.group(1)) * scale
    if seconds <= 0:
        raise ConfigError(f"{key} must be positive; got {text!r}")
    return seconds


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def default_optimizer(arch: str) -> str:
    """``optim.name: auto``: Muon (paired with AdamW) for the GPT; AdamW for the LSTM and for Hugging Face models
    (fine-tuning pretrained weights, where AdamW is the tried default)."""
    return "muon" if arch == "gpt" else "adamw"


def objective_terms(cfg: Config) -> list[tuple[str, float]]:
    """The (name, weight) pairs the step minimises: the configured terms, or the task's own objective."""
    if cfg.objective.terms:
        return [(t.name, t.weight) for t in cfg.objective.terms]
    if cfg.task == "lm":
        return [("lm", 1.0)]
    return [("multilabel" if cfg.data.multi_label else "classify", 1.0)]


def _validate_terms(cfg: Config) -> None:
    terms = objective_terms(cfg)
    names = [n for n, _ in terms]
    _require(len(set(names)) == len(names), f"objective.terms names a term twice: {names}")
    _require(all(w >= 0 and math.isfinite(w) for _, w in terms) and any(w > 0 for _, w in terms),
             f"objective.terms weights must be >= 0 with at least one positive; got {terms}")
    if cfg.task == "lm":
        _require(names == ["lm"], f"task lm minimises the lm term only; got objective.terms {names}")
        return
    label_term = "multilabel" if cfg.data.multi_label else "classify"
    other = "classify" if cfg.data.multi_label else "multilabel"
    _require(other not in names, f"objective term '{other}' does not fit data.multi_label={cfg.data.multi_label}; "
             f"use '{label_term}'")
    _require(label_term in names, f"objective.terms must include '{label_term}' for a classifier; got {names}")
    _require("lm" not in names or cfg.model.arch == "gpt",
             "objective term 'lm' needs a GPT backbone (model.arch: gpt); the LSTM has no language-model head")


def _validate_hf(cfg: Config) -> None:
    m = cfg.model
    if m.arch != "hf":
        _require(m.hf_path is None, f"model.hf_path is set but model.arch is {m.arch}; use --model hf:DIR (sets both)")
        _require(m.lora is None, "model.lora adapts a Hugging Face model; use it with --model hf:DIR")
        return
    _require(bool(m.hf_path), "model.arch hf needs model.hf_path, a local Hugging Face model directory; "
             "use --model hf:DIR")
    _require(cfg.task == "lm", "model.arch hf trains causal language models (task lm); for a classifier start "
             "from a gradwise GPT (--init-from)")
    _require(m.init_from is None, "model.init_from does not apply to model.arch hf: the weights come from "
             "model.hf_path")
    set_dropout = [k for k in ("dropout", "embd_dropout", "attn_dropout", "resid_dropout") if getattr(m, k)]
    _require(not set_dropout, f"model.{(set_dropout or [''])[0]} does not apply to model.arch hf: the model keeps "
             "the dropout its config.json sets; remove the key")
    if m.lora is not None:
        lo = m.lora
        _require(lo.r >= 1, f"model.lora.r must be at least 1; got {lo.r}")
        _require(lo.alpha > 0 and math.isfinite(lo.alpha), f"model.lora.alpha must be positive; got {lo.alpha}")
        _require(0.0 <= lo.dropout < 1.0, f"model.lora.dropout must be in [0, 1); got {lo.dropout}")
        _require(lo.targets is None or len(lo.targets) > 0, "model.lora.targets must name at least one module")


def validate(cfg: Config) -> None:
    """Reject impossible values with a message that names the key and the fix."""
    m, o, s, t, d = cfg.model, cfg.optim, cfg.schedule, cfg.train, cfg.data
    for key, value in [("model.n_layer", m.n_layer), ("model.n_head", m.n_head), ("model.n_embd", m.n_embd),
                       ("model.block_size", m.block_size), ("train.batch_size", t.batch_size),
                       ("train.grad_accum", t.grad_accum), ("train.max_steps", t.max_steps),
                       ("train.eval_every", t.eval_every), ("train.eval_batches", t.eval_batches),
                       ("train.log_every", t.log_every), ("train.max_nonfinite", t.max_nonfinite),
                       ("data.split_chunks", d.split_chunks)]:
        _require(value >= 1, f"{key} must be at least 1; got {value}")
    _require(cfg.task != "lm" or m.arch in ("gpt", "hf"), f"task lm needs model.arch gpt or hf; got {m.arch}")
    _require(not cfg.train.fused_ce or (cfg.task == "lm" and m.arch == "gpt"),
             "train.fused_ce works with gradwise's GPT language model (task lm, model.arch gpt); "
             "set train.fused_ce=false")
    _require(not t.fp8 or (cfg.task == "lm" and m.lora is None),
             "train.fp8 trains a language model's own weights (task lm, no model.lora); set train.fp8=false")
    _validate_hf(cfg)
    _validate_terms(cfg)
    if o.name == "auto":  # resolved here so the saved config names the optimizer that really ran
        o.name = default_optimizer(m.arch)
    _require(m.hidden is None or m.hidden >= 1, f"model.hidden must be at least 1; got {m.hidden}")
    _require(cfg.objective.class_weights is None or all(w >= 0 for w in cfg.objective.class_weights),
             f"objective.class_weights must be >= 0; got {cfg.objective.class_weights}")
    _require(m.n_embd % m.n_head == 0 or m.arch != "gpt",
             f"model.n_embd ({m.n_embd}) must be divisible by model.n_head ({m.n_head}); "
             f"try n_embd={m.n_head * max(1, round(m.n_embd / m.n_head))}")
    for key in ("dropout", "embd_dropout", "attn_dropout", "resid_dropout"):
        value = getattr(m, key)
        _require(value is None or 0.0 <= value < 1.0, f"model.{key} must be in [0, 1); got {value}")
    _require(0.0 <= cfg.objective.label_smoothing < 1.0,
             f"objective.label_smoothing must be in [0, 1); got {cfg.objective.label_smoothing}")
    for key in ("objective.z_loss", "regularization.l1", "regularization.l2"):
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        _require(value >= 0 and math.isfinite(value), f"{key} must be >= 0; got {value}")
    _require(o.lr > 0 and math.isfinite(o.lr), f"optim.lr must be a positive number; got {o.lr}")
    _require(o.weight_decay >= 0, f"optim.weight_decay must be >= 0; got {o.weight_decay}")
    _require(o.eps > 0, f"optim.eps must be positive; got {o.eps}")
    _require(len(o.betas) == 2 and all(0.0 <= b < 1.0 for b in o.betas),
             f"optim.betas must be two numbers in [0, 1), for example [0.9, 0.99]; got {o.betas}")
    _require(0.0 <= o.momentum < 1.0, f"optim.momentum must be in [0, 1); got {o.momentum}")
    _require(0.0 <= o.muon_momentum < 1.0, f"optim.muon_momentum must be in [0, 1); got {o.muon_momentum}")
    for key, value in (("optim.embedding_lr", o.embedding_lr), ("optim.muon_lr", o.muon_lr)):
        _require(value is None or (value > 0 and math.isfinite(value)), f"{key} must be a positive number; got {value}")
    _require(0.0 < s.decay_fraction <= 1.0, f"schedule.decay_fraction must be in (0, 1]; got {s.decay_fraction}")
    if t.tokens_per_step is not None:
        per_micro = t.batch_size * m.block_size
        _require(t.tokens_per_step >= per_micro,
                 f"train.tokens_per_step ({t.tokens_per_step}) is less than one micro-batch "
                 f"(train.batch_size x model.block_size = {per_micro}); raise it or lower train.batch_size")
        t.grad_accum = round(t.tokens_per_step / per_micro)
    _require(s.warmup_steps >= 0, f"schedule.warmup_steps must be >= 0; got {s.warmup_steps}")
    _require(s.min_lr >= 0, f"schedule.min_lr must be >= 0; got {s.min_lr}")
    _require(s.min_lr <= o.lr, f"schedule.min_lr ({s.min_lr}) must not exceed optim.lr ({o.lr})")
    _require(s.decay_steps is None or s.decay_steps >= 1,
             f"schedule.decay_steps must be at least 1; got {s.decay_steps}")
    _require(t.grad_clip >= 0, f"train.grad_clip must be >= 0 (0 disables clipping); got {t.grad_clip}")
    _require(t.patience is None or t.patience >= 1, f"train.patience must be at least 1; got {t.patience}")
    _require(t.min_delta >= 0, f"train.min_delta must be >= 0; got {t.min_delta}")
    _require(t.checkpoint_every is None or t.checkpoint_every >= 1,
             f"train.checkpoint_every must be at least 1; got {t.checkpoint_every}")
    parse_duration(t.max_time)
    _require(len(d.split) == 3 and all(x > 0 for x in d.split) and abs(sum(d.split) - 1.0) < 1e-6,
             f"data.split must be three positive fractions (train, val, test) summing to 1; got {d.split}")
    _require(d.tokenizer != "bpe" or d.vocab_size >= 260,
             f"data.vocab_size must be at least 260 for byte-level BPE (256 bytes + merges); got {d.vocab_size}")
    _require(d.vocab_size <= 2**32 - 1, f"data.vocab_size is too large; got {d.vocab_size}")
    _require(0.0 < d.near_threshold <= 1.0, f"data.near_threshold must be in (0, 1]; got {d.near_threshold}")
    _require(d.ngram >= 2, f"data.ngram must be at least 2; got {d.ngram}")
    _require(d.min_unit_chars >= 0, f"data.min_unit_chars must be >= 0; got {d.min_unit_chars}")
    _require(cfg.seed >= 0, f"seed must be >= 0; got {cfg.seed}")
    if cfg.name is not None:
        _require(re.fullmatch(r"[A-Za-z0-9._-]+", cfg.name) is not None and cfg.name not in (".", ".."),
                 f"name must use letters, digits, '.', '_' or '-'; got {cfg.name!r}")
