"""A local Hugging Face model as a gradwise text classifier (``--task classify --model hf:DIR``).

Whatever ``AutoModelForSequenceClassification`` builds from the directory is trained as it is: an encoder
(BERT-like, reading its first token through the pooler) or a causal LM (GPT-2-like, reading the last real
token). Its trained weights are loaded and a new class head (``classifier`` or ``score``) starts from random,
sized for the labels of the data; ``id2label`` / ``label2id`` carry the class names, so an export loads in
transformers with them. Padding is the tokenizer's pad token (its eos token when it has none, as GPT-2's) and
the attention mask is "not padding", the same rule the model's own head uses to find the last real token.

A run keeps ``RUN/hf/config.json`` as the classifier's config (head size, labels, pad id), so eval, predict,
resume and export rebuild the same model from the run alone. With LoRA (``--lora``) peft freezes the base and
trains the adapters and, in full, the new head and whatever else the pretrained file lacks (a pooler, which a
masked-LM checkpoint does not hold: frozen, it would stay random); checkpoints hold those only, and the frozen base is read again from ``model.hf_path``, checked by its fingerprint, as for a causal LM.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from gradwise.config.schema import ModelConfig
from gradwise.core.errors import GradwiseError
from gradwise.hf import RUN_MODEL_DIR
from gradwise.hf.causal import CONFIG_FILE, model_config, model_dir, quiet_transformers
from gradwise.hf.lora import apply_lora
from gradwise.hf.wrapper import HFWrapper, check_vocab, frozen_base_record, uses_pretrained

HEAD_HINTS = ("classifier", "score", "pooler")  # weights a classifier may lack in a pretrained directory: new


class HFSequenceClassifier(HFWrapper):
    """Token ids (B, T), right-padded with ``pad_id`` -> class logits (B, n_classes)."""

    def __init__(self, hf: nn.Module, block_size: int, pad_id: int, frozen_base: dict[str, str] | None = None):
        super().__init__(hf, block_size, frozen_base)
        self.pad_id = pad_id

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        self.check_length(tokens)
        return self.hf(input_ids=tokens, attention_mask=(tokens != self.pad_id).long()).logits


def classifier_config(source: str | Path, classes: list[str], pad_id: int) -> Any:
    """The directory's config made a classifier's: one output per class, named, and the pad id that finds the
    last real token (causal LMs) and masks padding."""
    config = model_config(model_dir(source))
    config.num_labels = len(classes)
    config.id2label = dict(enumerate(classes))
    config.label2id = {c: i for i, c in enumerate(classes)}
    config.pad_token_id = pad_id
    config.problem_type = None  # gradwise's objective computes the loss; the model returns logits
    return config


def save_classifier_config(source: str | Path, classes: list[str], pad_id: int, run_dir: Path) -> None:
    """``RUN/hf/config.json``: the classifier's config, what :func:`build_hf_classifier` rebuilds a run from."""
    out = Path(run_dir) / RUN_MODEL_DIR
    out.mkdir(parents=True, exist_ok=True)
    classifier_config(source, classes, pad_id).to_json_file(str(out / CONFIG_FILE))


def _build(config: Any, what: str, weights: Path | None) -> tuple[nn.Module, list[str]]:
    """The classifier, with the pretrained ``weights`` when given, and the modules the weights did not fill
    (the new head, and a pooler a language-model checkpoint lacks)."""
    with quiet_transformers() as transformers:
        auto = transformers.AutoModelForSequenceClassification
        try:
            if weights is None:
                return auto.from_config(config).float(), []
            model, info = auto.from_pretrained(str(weights), config=config, local_files_only=True,
                                               use_safetensors=True, output_loading_info=True)
        except Exception as exc:  # transformers raises many kinds; one line says which model and why
            if "Unrecognized configuration class" in str(exc):
                raise GradwiseError(f"{what}: transformers has no sequence-classification head for "
                                    f"{type(config).__name__}; use a model whose architecture has one (BERT-like "
                                    "encoders, GPT-2, Llama, ...) or train it as a language model (--task lm)") \
                    from None
            raise GradwiseError(f"cannot build {what} as a classifier: {str(exc).strip().splitlines()[0]}") from None
    missing = sorted(info.get("missing_keys") or [])
    lacking = [k for k in missing if not any(h in k for h in HEAD_HINTS)]  # not a head: the file is incomplete
    if lacking:
        raise GradwiseError(f"{what} lacks weights the model needs ({', '.join(lacking[:3])}"
                            f"{', ...' if len(lacking) > 3 else ''}); is it a complete checkpoint?")
    return model.float(), sorted({k.rsplit(".", 1)[0] for k in missing})


def meta_classifier(source: str | Path) -> nn.Module:
    """The directory's classifier on the meta device (shapes only, no weights read): what LoRA targets are
    found on."""
    with torch.device("meta"):
        return _build(classifier_config(source, ["a", "b"], 0), f"hf:{source}", None)[0]


def build_hf_classifier(m: ModelConfig, classes: list[str], pad_id: int, vocab_size: int,
                        run_dir: Path | None = None) -> HFSequenceClassifier:
    """The ``model.hf_path`` model with a new class head and its pretrained weights, or (``run_dir``) rebuilt
    from the run's classifier config for a checkpoint to fill; with ``model.lora``, wrapped with adapters."""
    pretrained = uses_pretrained(m, run_dir)
    where = f"hf:{m.hf_path}"
    if run_dir is not None:
        config = model_config(model_dir(Path(run_dir) / RUN_MODEL_DIR))
        if list(config.id2label.values()) != list(classes):
            raise GradwiseError(f"{run_dir}/{RUN_MODEL_DIR}/{CONFIG_FILE} names other classes than labels.json; "
                                "the run directory was edited: start a new run")
    else:
        config = classifier_config(m.hf_path, classes, pad_id)
    model, new = _build(config, where, model_dir(m.hf_path, weights=True) if pretrained else None)
    check_vocab(model, vocab_size, where)
    if m.lora is not None:
        model, _ = apply_lora(model, m.lora.r, m.lora.alpha, m.lora.dropout, m.lora.targets, task="SEQ_CLS",
                              trained_in_full=new)
    return HFSequenceClassifier(model, m.block_size, pad_id, frozen_base_record(m, pretrained))


__all__ = ["HFSequenceClassifier", "build_hf_classifier", "classifier_config", "meta_classifier",
           "save_classifier_config"]
