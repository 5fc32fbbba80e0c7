"""Language modelling on a token stream: GPT (or a Hugging Face causal LM), next-token cross-entropy, bits per byte."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from gradwise.config.schema import Config
from gradwise.data import Corpus, check_params, prepare_corpus, save_tokenizer
from gradwise.data.quality.check import cached, check_lm, finish_report
from gradwise.data.quality.dedupe import DedupedSource
from gradwise.data.store import default_cache_dir
from gradwise.data.tokenizers import fingerprint
from gradwise.hf.auto_tokenizer import load_any_tokenizer, load_hf_tokenizer
from gradwise.hf.causal import save_run_files
from gradwise.hf.model import build_hf_model
from gradwise.models import build_model
from gradwise.objectives.losses import CausalLMObjective
from gradwise.tasks.base import EvalReport
from gradwise.tasks.init_from import init_tokenizer
from gradwise.tasks.lm_eval import AUTO_PILOT_BATCHES, evaluate


class LMTask:
    kind = "lm"

    def __init__(self, cfg: Config, corpus: Corpus, run_dir: Path | None = None):
        self.cfg, self.corpus, self.run_dir = cfg, corpus, run_dir
        self.tokenizer = corpus.tokenizer
        self.byte_lengths = corpus.tokenizer.token_byte_lengths()

    @classmethod
    def prepare(cls, cfg: Config, run_dir: Path | None = None) -> LMTask:
        if run_dir:
            tok = load_any_tokenizer(run_dir / "tokenizer.json")
        elif cfg.model.arch == "hf":  # the Hugging Face model's own tokenizer (gradwise/hf/auto_tokenizer.py)
            tok = load_hf_tokenizer(cfg.model.hf_path)
        else:
            tok = init_tokenizer(cfg)
        return cls(cfg, prepare_corpus(cfg.data, tokenizer=tok), run_dir)

    def check(self, splits: tuple[str, ...]) -> None:
        for name in splits:
            self.corpus.split(name).check_fits(self.cfg.model.block_size)

    @property
    def dedupe(self) -> dict[str, int] | None:
        source = self.corpus.source
        return source.plan()[1] if isinstance(source, DedupedSource) else None

    def data_check(self) -> dict[str, Any]:
        """Duplicates, leakage and contamination across this corpus's split (cached by corpus and split)."""
        d, c = self.cfg.data, self.corpus
        params = check_params(d)
        key = [c.source.fingerprint(), fingerprint(c.tokenizer), json.dumps([d.split, d.split_chunks,
                                                                             self.cfg.model.block_size, params.to_dict()])]
        report = cached(default_cache_dir(d.cache_dir), key, lambda: finish_report(
            check_lm(c, self.cfg.model.block_size, params), c.source.describe(), "lm", params))
        return {**report, "corpus": c.source.describe()}  # the cache key is the content, not the file's name

    def baseline(self) -> dict[str, Any] | None:
        return None  # a language model's run reports bits per byte; it has no classic baseline fitted beside it

    def save(self, run_dir: Path) -> None:
        if self.cfg.model.arch == "hf":  # RUN/hf/: the model's config and tokenizer files, to rebuild the run
            save_run_files(self.cfg.model.hf_path, run_dir)
        save_tokenizer(self.tokenizer, run_dir / "tokenizer.json")

    def build_model(self) -> nn.Module:
        """The model to train: pretrained (arch hf: the directory's weights) or, resuming, shaped for the checkpoint."""
        if self.cfg.model.arch == "hf":
            return build_hf_model(self.cfg.model, self.tokenizer.vocab_size, self.run_dir)
        return build_model(self.cfg.model, self.tokenizer.vocab_size)

    def objective(self) -> CausalLMObjective:
        return CausalLMObjective(self.cfg.objective.label_smoothing, self.cfg.objective.z_loss,
                                 fused=self.cfg.train.fused_ce)

    def micro_batch(self, step: int, micro: int) -> tuple[np.ndarray, np.ndarray]:
        c = self.cfg
        return self.corpus.split("train").batch(c.seed, step, micro, c.train.batch_size, c.model.block_size)

    def evaluate(self, model: nn.Module, split: str, device: torch.device, autocast_dtype: torch.dtype | None,
                 fixed_subset: bool, windows: int | None = None) -> EvalReport:
        """``fixed_subset``: ``windows`` evenly spaced windows (default eval_batches x batch_size), the same ones
        for the same count; else the whole split."""
        t = self.cfg.train
        if fixed_subset and windows is None:
            windows = (AUTO_PILOT_BATCHES if t.eval_batches == "auto" else t.eval_batches) * t.batch_size
        res = evaluate(model, self.corpus.split(split), self.cfg.model.block_size, t.batch_size, device,
                       self.byte_lengths, max_windows=windows if fixed_subset else None,
                       autocast_dtype=autocast_dtype, fused=t.fused_ce)
        return EvalReport(res.loss, {"perplexity": res.perplexity, "bits_per_byte": res.bits_per_byte,
                                     "loss_se": res.loss_se},
                          {"tokens": res.tokens, "bytes": res.bytes, "windows": res.windows,
                           "windows_all": res.windows_all})

    def describe(self) -> str:
        splits = ", ".join(f"{k} {s.n_tokens:,}" for k, s in self.corpus.splits.items())
        return (f"{self.corpus.source.describe()} | {self.tokenizer.kind} tokenizer, vocab "
                f"{self.tokenizer.vocab_size:,} | tokens: {splits}")

    def split_sizes(self) -> dict[str, int]:
        return {k: s.n_tokens for k, s in self.corpus.splits.items()}
