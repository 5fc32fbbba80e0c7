"""Validation of a typed config: every value in its domain and coherent with the rest, in one line that names the key."""

from __future__ import annotations

import math
import re

from gradwise.config.keys import get_key
from gradwise.config.schema import Config
from gradwise.core.errors import ConfigError


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
    """Reject impossible values with a message that names the key and the fix. Pure: it changes nothing (the
    derived values are gradwise.config.resolve's)."""
    m, o, s, t, d = cfg.model, cfg.optim, cfg.schedule, cfg.train, cfg.data
    for key, value in [("model.n_layer", m.n_layer), ("model.n_head", m.n_head), ("model.n_embd", m.n_embd),
                       ("model.block_size", m.block_size), ("train.batch_size", t.batch_size),
                       ("train.grad_accum", t.grad_accum), ("train.max_steps", t.max_steps),
                       ("train.eval_every", t.eval_every),
                       ("train.eval_batches", 1 if t.eval_batches == "auto" else t.eval_batches),
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
    _require(m.hidden is None or m.hidden >= 1, f"model.hidden must be at least 1; got {m.hidden}")
    _require(cfg.objective.class_weights is None or all(w >= 0 for w in cfg.objective.class_weights),
             f"objective.class_weights must be >= 0; got {cfg.objective.class_weights}")
    _require(m.n_embd % m.n_head == 0 or m.arch != "gpt",
             f"model.n_embd ({m.n_embd}) must be divisible by model.n_head ({m.n_head}); "
             f"try n_embd={m.n_head * max(1, round(m.n_embd / m.n_head))}")
    _require(m.pos != "rope" or m.n_embd // max(m.n_head, 1) % 2 == 0,
             f"model.pos rope rotates channel pairs: the head width n_embd / n_head ({m.n_embd // max(m.n_head, 1)}) "
             "must be even; change model.n_embd or model.n_head")
    _require(m.logit_softcap is None or (math.isfinite(m.logit_softcap) and m.logit_softcap > 0),
             f"model.logit_softcap must be a positive number (e.g. 15) or null for none; got {m.logit_softcap}")
    for key in ("dropout", "embd_dropout", "attn_dropout", "resid_dropout"):
        value = getattr(m, key)
        _require(value is None or 0.0 <= value < 1.0, f"model.{key} must be in [0, 1); got {value}")
    _require(0.0 <= cfg.objective.label_smoothing < 1.0,
             f"objective.label_smoothing must be in [0, 1); got {cfg.objective.label_smoothing}")
    for key in ("objective.z_loss", "regularization.l1", "regularization.l2"):
        value = get_key(cfg, key)
        _require(value >= 0 and math.isfinite(value), f"{key} must be >= 0; got {value}")
    _require(t.eval_target_se > 0 and math.isfinite(t.eval_target_se),
             f"train.eval_target_se must be a positive number of nats, e.g. 0.005; got {t.eval_target_se}")
    _require(o.lr > 0 and math.isfinite(o.lr), f"optim.lr must be a positive number; got {o.lr}")
    _require(o.weight_decay >= 0, f"optim.weight_decay must be >= 0; got {o.weight_decay}")
    _require(o.eps > 0, f"optim.eps must be positive; got {o.eps}")
    _require(len(o.betas) == 2 and all(0.0 <= b < 1.0 for b in o.betas),
             f"optim.betas must be two numbers in [0, 1), for example [0.9, 0.99]; got {o.betas}")
    _require(0.0 <= o.momentum < 1.0, f"optim.momentum must be in [0, 1); got {o.momentum}")
    _require(0.0 <= o.muon_momentum < 1.0, f"optim.muon_momentum must be in [0, 1); got {o.muon_momentum}")
    _require(1 <= o.muon_ns_steps <= 10, f"optim.muon_ns_steps must be 1 to 10; got {o.muon_ns_steps}")
    for key, value in (("optim.embedding_lr", o.embedding_lr), ("optim.muon_lr", o.muon_lr)):
        _require(value is None or (value > 0 and math.isfinite(value)), f"{key} must be a positive number; got {value}")
    _require(0.0 < s.decay_fraction <= 1.0, f"schedule.decay_fraction must be in (0, 1]; got {s.decay_fraction}")
    if t.tokens_per_step is not None:
        per_micro = t.batch_size * m.block_size
        _require(t.tokens_per_step >= per_micro,
                 f"train.tokens_per_step ({t.tokens_per_step}) is less than one micro-batch "
                 f"(train.batch_size x model.block_size = {per_micro}); raise it or lower train.batch_size")
    _require(s.warmup_steps >= 0, f"schedule.warmup_steps must be >= 0; got {s.warmup_steps}")
    _require(s.min_lr >= 0, f"schedule.min_lr must be >= 0; got {s.min_lr}")
    _require(s.min_lr <= o.lr, f"schedule.min_lr ({s.min_lr}) must not exceed optim.lr ({o.lr})")
    _require(s.decay_steps is None or s.decay_steps >= 1,
             f"schedule.decay_steps must be at least 1; got {s.decay_steps}")
    _require(t.grad_clip >= 0, f"train.grad_clip must be >= 0 (0 disables clipping); got {t.grad_clip}")
    _require(t.patience is None or t.patience >= 1, f"train.patience must be at least 1; got {t.patience}")
    _require(t.min_delta >= 0, f"train.min_delta must be >= 0; got {t.min_delta}")
    _require(t.ema is None or 0.0 < t.ema < 1.0, f"train.ema is the decay of the weights' moving average, between 0 "
             f"and 1 (such as 0.995); got {t.ema}")
    _require(t.ema is None or t.parallel != "fsdp", "train.ema keeps a whole copy of the weights, which FSDP shards: "
             "use train.parallel=ddp, or leave train.ema out")
    _require(t.best_on == "loss" or cfg.task == "classify",
             f"train.best_on={t.best_on} is a classifier's metric; a language model picks its best checkpoint on "
             "loss (leave train.best_on out)")
    _require(t.checkpoint_every is None or t.checkpoint_every >= 1,
             f"train.checkpoint_every must be at least 1; got {t.checkpoint_every}")
    parse_duration(t.max_time)
    _require(s.horizon == "steps" or t.max_time is not None,
             "schedule.horizon=time follows the clock of train.max_time, which is not set; set train.max_time "
             "(for example train.max_time=10m) or leave schedule.horizon at steps")
    _require(len(d.split) == 3 and all(x > 0 for x in d.split) and abs(sum(d.split) - 1.0) < 1e-6,
             f"data.split must be three positive fractions (train, val, test) summing to 1; got {d.split}")
    _require((d.tokenizer == "ngram") == (m.arch == "ngram") or m.arch == "hf" or cfg.task == "lm",
             "data.tokenizer ngram (a bag of hashed n-grams) and model.arch ngram (a classifier of such bags) go "
             f"together; got tokenizer {d.tokenizer} with arch {m.arch}: use the classify-ngram preset")
    for key in ("idf", "nb"):
        _require(not getattr(m, key) or m.arch == "ngram", f"model.{key} weighs the n-grams of model.arch ngram; got "
                 f"arch {m.arch}: drop model.{key} or use the classify-ngram preset")
    _require(d.tokenizer != "ngram" or cfg.task == "classify",
             "data.tokenizer ngram is for classification (--task classify): its ids cannot be decoded to text")
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
