"""``model.init_from``: start a task from a gradwise LM run or a Hugging Face GPT-2 directory."""

from __future__ import annotations

from torch import nn

from gradwise.config.load import build_config, read_config_file
from gradwise.config.schema import Config, is_frozen
from gradwise.core.checkpoint import load_weights
from gradwise.core.errors import GradwiseError
from gradwise.core.rundir import RunDir
from gradwise.data import Tokenizer
from gradwise.data.tokenizers import CharTokenizer
from gradwise.hf import is_hf_source
from gradwise.hf.auto_tokenizer import load_any_tokenizer
from gradwise.hf.convert import adopt_hf_config, hf_init_tokenizer, load_hf_weights
from gradwise.models.gpt_classifier import GPTClassifier


def adopt_init_config(cfg: Config) -> None:
    """With ``model.init_from``: take the source's GPT shape and tokenizer keys into ``cfg``. Part of resolving
    a run's config (gradwise.training.run_config), so the saved config tells the truth and nothing rewrites it
    while the data is prepared."""
    if not cfg.model.init_from:
        return
    if is_hf_source(cfg.model.init_from):  # hf:DIR, a Hugging Face GPT-2 model (gradwise/hf/convert.py)
        adopt_hf_config(cfg)
        return
    run = RunDir.existing(cfg.model.init_from)
    source = build_config(read_config_file(run.config))
    if source.task != "lm" or source.model.arch != "gpt":
        raise GradwiseError(f"model.init_from {run.path} is a {source.task} run; start from a gradwise language-model "
                            "(GPT) run")
    if cfg.model.arch != "gpt":
        raise GradwiseError("model.init_from loads a GPT; set model.arch=gpt (the LSTM cannot start from it)")
    for key in ("n_layer", "n_head", "n_embd", "block_size", "bias", "tie_embeddings", "activation", "pos", "qk_norm",
                "logit_softcap"):  # the weights mean what they meant in the source (zero_init is only a start)
        setattr(cfg.model, key, getattr(source.model, key))
    cfg.data.tokenizer, cfg.data.vocab_size = source.data.tokenizer, source.data.vocab_size


def init_tokenizer(cfg: Config) -> Tokenizer | None:
    """The ``model.init_from`` source's tokenizer (None without one); ``cfg`` already carries its keys."""
    if not cfg.model.init_from:
        return None
    if not is_frozen(cfg):  # a config built but never resolved would build a model of its own shape, not the source's
        raise ValueError("model.init_from: resolve the config first (gradwise.training.run_config."
                         "resolve_train_config takes the source's shape and tokenizer keys into it)")
    if is_hf_source(cfg.model.init_from):
        return hf_init_tokenizer(cfg)
    tok = load_any_tokenizer(RunDir.existing(cfg.model.init_from).tokenizer)
    if isinstance(tok, CharTokenizer) and cfg.task == "classify":
        tok.skip_unknown = True  # labelled texts may hold characters the LM corpus never had
    return tok


def load_init_weights(cfg: Config, model: nn.Module) -> None:
    """Load the ``model.init_from`` run's best weights into the GPT (a classifier's backbone)."""
    target = model.backbone if isinstance(model, GPTClassifier) else model
    if is_hf_source(cfg.model.init_from):  # hf:DIR, a Hugging Face GPT-2 model (gradwise/hf/convert.py)
        load_hf_weights(cfg.model.init_from, target)
        return
    load_weights(RunDir.existing(cfg.model.init_from).best, target)
