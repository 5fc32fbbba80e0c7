"""``model.init_from``: start a task from a gradwise LM run or a Hugging Face GPT-2 directory."""

from __future__ import annotations

from torch import nn

from gradwise.config.load import build_config, read_config_file
from gradwise.config.schema import Config
from gradwise.core.checkpoint import load_weights
from gradwise.core.errors import GradwiseError
from gradwise.core.rundir import RunDir
from gradwise.data import Tokenizer
from gradwise.data.tokenizers import CharTokenizer
from gradwise.hf import is_hf_source
from gradwise.hf.auto_tokenizer import load_any_tokenizer
from gradwise.models.gpt_classifier import GPTClassifier


def adopt_init_run(cfg: Config) -> Tokenizer | None:
    """With ``model.init_from``: take the run's tokenizer and GPT shape into ``cfg``; returns the tokenizer."""
    if not cfg.model.init_from:
        return None
    if is_hf_source(cfg.model.init_from):  # hf:DIR, a Hugging Face GPT-2 model (gradwise/hf/convert.py)
        from gradwise.hf.convert import adopt_hf_model

        return adopt_hf_model(cfg)
    run = RunDir.existing(cfg.model.init_from)
    source = build_config(read_config_file(run.config))
    if source.task != "lm" or source.model.arch != "gpt":
        raise GradwiseError(f"model.init_from {run.path} is a {source.task} run; start from a gradwise language-model "
                            "(GPT) run")
    if cfg.model.arch != "gpt":
        raise GradwiseError("model.init_from loads a GPT; set model.arch=gpt (the LSTM cannot start from it)")
    for key in ("n_layer", "n_head", "n_embd", "block_size", "bias", "tie_embeddings", "activation"):
        setattr(cfg.model, key, getattr(source.model, key))
    cfg.data.tokenizer, cfg.data.vocab_size = source.data.tokenizer, source.data.vocab_size
    tok = load_any_tokenizer(run.tokenizer)
    if isinstance(tok, CharTokenizer) and cfg.task == "classify":
        tok.skip_unknown = True  # labelled texts may hold characters the LM corpus never had
    return tok


def load_init_weights(cfg: Config, model: nn.Module) -> None:
    """Load the ``model.init_from`` run's best weights into the GPT (a classifier's backbone)."""
    target = model.backbone if isinstance(model, GPTClassifier) else model
    if is_hf_source(cfg.model.init_from):  # hf:DIR, a Hugging Face GPT-2 model (gradwise/hf/convert.py)
        from gradwise.hf.convert import load_hf_weights

        load_hf_weights(cfg.model.init_from, target)
        return
    load_weights(RunDir.existing(cfg.model.init_from).best, target)
