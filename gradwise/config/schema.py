"""The typed config tree: one dataclass per section, each key with its type, default and meaning.

A config is data, never code (gradwise.config.load reads it). Every key is checked against these
dataclasses, so a typo such as ``model.n_layers`` stops the run with a message that names the key and
suggests the right one, before any work is done. Once a run's config is resolved it is frozen
(:func:`freeze`): nothing downstream can rewrite it, and the run's config.yaml is that object.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal


class Section:
    """A part of the config tree that can be frozen: setting a key of a frozen config raises
    ``dataclasses.FrozenInstanceError`` instead of quietly changing what a run was resolved to."""

    def __setattr__(self, name: str, value: Any) -> None:
        if self.__dict__.get("_frozen"):
            raise dataclasses.FrozenInstanceError(
                f"cannot set {type(self).__name__}.{name}: the config is resolved and frozen; build a new one "
                "(gradwise.config.build_config with overrides) instead")
        super().__setattr__(name, value)


def freeze(config: Any) -> Any:
    """Freeze a config tree in place (every section and the sections in its lists) and return it."""
    if isinstance(config, Section):
        for f in dataclasses.fields(config):  # type: ignore[arg-type]
            freeze(getattr(config, f.name))
        object.__setattr__(config, "_frozen", True)
    elif isinstance(config, list):
        for item in config:
            freeze(item)
    return config


def is_frozen(config: Any) -> bool:
    return bool(getattr(config, "__dict__", {}).get("_frozen"))


@dataclass
class DataConfig(Section):
    """Where the corpus comes from, how it is tokenized and split."""

    path: str | None = None  # text file, directory or .jsonl; None = the embedded Python docs corpus
    format: Literal["auto", "text", "dir", "jsonl"] = "auto"
    text_field: str = "text"  # JSONL field (CSV column) holding the text
    label_field: str = "label"  # classification: the field (column) holding the label
    multi_label: bool = False  # classification: each record has a set of labels (a JSON list, or separated text)
    label_separator: str = ","  # multi-label: separates labels given as one string, e.g. "sports,politics"
    tokenizer: Literal["char", "bpe", "ngram"] = "char"  # ngram: hashed word and char n-grams (classify, arch ngram)
    vocab_size: int = 4096  # BPE only
    split: list[float] = field(default_factory=lambda: [0.9, 0.05, 0.05])  # train/val/test
    split_chunks: int = 10  # the token stream is cut into this many chunks, each split 90/5/5
    cache_dir: str | None = None  # default: $GRADWISE_CACHE or ~/.cache/gradwise
    check: bool = True  # check duplicates and split leakage before training (cached; data_check.json in the run)
    dedupe: bool = False  # drop exact and near duplicates (paragraphs / records) before splitting
    baseline: bool = True  # classify: fit TF-IDF + logistic regression on the same split and report the model beside it
    near_threshold: float = 0.8  # Jaccard similarity (3-word shingles) from which two texts are near copies
    ngram: int = 13  # LM contamination: words in a run shared by a val/test window and the training split
    min_unit_chars: int = 30  # LM: paragraphs shorter than this are not compared (names, headings)


@dataclass
class LoraSettings(Section):
    """LoRA adapters (peft) on a Hugging Face model: only the adapters train."""

    r: int = 8  # rank of each adapter
    alpha: float = 16.0  # scale: the update is (alpha / r) * B @ A
    dropout: float = 0.0  # on the adapter's input
    targets: list[str] | None = None  # module names such as [c_attn]; default: peft's for the architecture


@dataclass
class ModelConfig(Section):
    """The network: a decoder-only GPT (language modelling), an LSTM (classification) or a local Hugging
    Face causal LM (``arch: hf``, language modelling)."""

    arch: Literal["gpt", "lstm", "ngram", "hf"] = "gpt"
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 128  # context length in tokens (classification: texts are cut to this many)
    hidden: int | None = None  # LSTM hidden size (default: n_embd)
    bidirectional: bool = True  # LSTM reads both directions
    pool: Literal["last", "mean"] = "last"  # classifiers: read the last real token, or the mean over the text
    idf: bool = False  # arch ngram: weigh each n-gram by its inverse document frequency in the training split
    nb: bool = False  # arch ngram: weigh each n-gram also by how well it tells the classes apart in training
    dropout: float = 0.0  # the rate for all three places below unless they set their own
    embd_dropout: float | None = None  # on token + position embeddings
    attn_dropout: float | None = None  # on attention weights
    resid_dropout: float | None = None  # on each block's attention and MLP output (the residual path)
    bias: bool = False
    tie_embeddings: bool = True
    activation: Literal["gelu", "gelu_tanh", "relu2"] = "gelu"  # GPT MLP: exact GELU, GPT-2's tanh GELU, ReLU²
    # The modern GPT options (gradwise/models/gpt.py), each off by default so that old runs reproduce:
    pos: Literal["learned", "rope"] = "learned"  # positions: a learned table (GPT-2) or rotary, on queries and keys
    qk_norm: bool = False  # RMS-normalise each head's queries and keys
    zero_init: bool = False  # attention and MLP output projections start at zero
    logit_softcap: float | None = None  # logits -> cap * tanh(logits / cap), e.g. 15 (with tie_embeddings false)
    # A gradwise GPT run to start from: its weights, tokenizer and shape (layers, heads, width, context)
    # are taken over, the optimizer starts fresh. For classify: fine-tune a pretrained LM as a classifier.
    init_from: str | None = None
    # arch hf: a local Hugging Face causal-LM directory (any AutoModelForCausalLM), trained with its own
    # tokenizer; the GPT shape keys above do not apply, nor do the dropout keys (the model keeps its own).
    hf_path: str | None = None
    lora: LoraSettings | None = None  # arch hf: train LoRA adapters instead of every weight


@dataclass
class ObjectiveTerm(Section):
    """One weighted part of the objective."""

    name: Literal["lm", "classify", "multilabel"]  # next-token CE, class CE, per-class binary CE
    weight: float = 1.0


@dataclass
class ObjectiveConfig(Section):
    """What the step minimises (the evaluation always reports plain cross-entropy)."""

    label_smoothing: float = 0.0  # spread this much target probability over the whole vocabulary
    z_loss: float = 0.0  # weight of mean(logsumexp(logits)^2): keeps logits small and training stable
    class_weights: list[float] | None = None  # classification: one weight per class (in sorted label order)
    balance_classes: bool = False  # classification: weights inversely proportional to class frequency
    # Weighted sum of several objectives on one forward pass, e.g. [{name: classify}, {name: lm, weight: 0.5}]
    # (a classifier with an auxiliary LM loss on its own texts). Default: the task's own objective.
    terms: list[ObjectiveTerm] | None = None


@dataclass
class RegularizationConfig(Section):
    """Explicit penalties added to the loss, separate from optim.weight_decay."""

    l1: float = 0.0  # weight of sum |w|
    l2: float = 0.0  # weight of sum w^2
    params: list[str] = field(default_factory=lambda: ["*"])  # name patterns, e.g. "blocks.*.mlp.*.weight"


@dataclass
class OptimConfig(Section):
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
    muon_ns_steps: int = 5  # Newton-Schulz iterations per Muon update: most of its cost (docs/benchmarks.md)
    muon_ns_dtype: Literal["auto", "float32", "bfloat16"] = "auto"  # auto: bf16 on GPUs, fp32 on CPUs (optim/muon.py)
    muon_adjust_lr: Literal["match_rms_adamw", "original"] = "match_rms_adamw"  # match: AdamW-sized lr works


@dataclass
class ScheduleConfig(Section):
    """Learning-rate schedule: linear warmup, then constant, linear or cosine decay to a floor."""

    name: Literal["constant", "linear", "cosine", "wsd", "inverse_sqrt", "onecycle"] = "cosine"
    warmup_steps: int = 100  # onecycle: the rise from lr/25 to lr
    min_lr: float = 1e-4  # the floor the decay ends at
    decay_steps: int | None = None  # default: train.max_steps
    decay_fraction: float = 0.2  # wsd: the final fraction of steps spent decaying
    # steps: the schedule follows the step count; time: whichever is further, the steps or the share of
    # train.max_time spent, so a run the clock stops has decayed (not bit-exact on resume)
    horizon: Literal["steps", "time"] = "steps"


@dataclass
class TrainConfig(Section):
    """The loop: batch, steps, evaluation cadence, stopping rules, device."""

    batch_size: int = 12  # sequences per micro-batch
    grad_accum: int = 1  # micro-batches per optimization step
    max_steps: int = 2000
    max_time: str | None = None  # wall-clock budget such as "90s", "10m", "2h"
    eval_every: int = 250
    eval_batches: int | Literal["auto"] = 50  # fixed validation batches per evaluation; auto: see eval_target_se
    # eval_batches auto (language models): after the first trained evaluation, the fewest batches whose
    # standard error is at most this many nats; every later evaluation uses that many (the same windows)
    eval_target_se: float = 0.005
    log_every: int = 10
    checkpoint_every: int | None = None  # default: eval_every
    patience: int | None = None  # early stopping after this many evaluations without improvement
    # What picks the best checkpoint and drives early stopping: the validation loss (lower is better), or a
    # classifier's validation macro_f1 or accuracy (higher is better; ties keep the lower loss's checkpoint)
    best_on: Literal["loss", "macro_f1", "accuracy"] = "loss"
    min_delta: float = 0.0  # an improvement smaller than this does not count
    # The decay of an exponential moving average of the weights, updated every step (such as 0.995, about the
    # last 200 steps): validation, the best checkpoint, test, export and predict use the average; None: off
    ema: float | None = None
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
    memory_check: bool = True  # refuse a run whose estimated memory exceeds what the device has free
    test_eval: bool = True  # evaluate the best checkpoint on the test split at the end
    tensorboard: bool = False  # mirror metrics.jsonl into TensorBoard event files in RUN/tensorboard
    peak_tflops: float | None = None  # the device's peak for MFU (default on CUDA: a measured bf16 matmul)
    # Under torchrun (WORLD_SIZE > 1): ddp replicates the model on every rank (auto), fsdp shards it (FSDP2)
    # for models that do not fit one device. One process ignores it. See docs/scaling.md.
    parallel: Literal["auto", "ddp", "fsdp"] = "auto"


@dataclass
class Config(Section):
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

# ---------------------------------------------------------------- typed conversion

# ---------------------------------------------------------------- value checks

