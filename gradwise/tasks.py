"""Tasks: what is learned from which data. A task prepares its data, builds its model and objective,
draws training batches and evaluates a split; the loop and the API work the same for every task.

- ``lm``: language modelling on a token stream (GPT, next-token cross-entropy, bits per byte).
- ``classify``: text classification on labelled records (LSTM or GPT backbone, class cross-entropy or
  multi-label binary cross-entropy, accuracy and F1).

With ``model.init_from`` a task starts from a gradwise LM run: its tokenizer and GPT shape are taken over
here (so the saved config tells the truth) and its weights are loaded by :func:`load_init_weights`.
``model.init_from=hf:DIR`` does the same from a Hugging Face GPT-2 directory (gradwise/hf/convert.py).
``model.arch: hf`` trains any local Hugging Face causal LM as it is, with its own tokenizer (gradwise/hf/).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from gradwise.checkpoint import load_weights
from gradwise.config import Config, build_config, objective_terms, read_config_file
from gradwise.data import Corpus, Tokenizer, check_params, load_tokenizer, prepare_corpus, save_tokenizer
from gradwise.data.check import cached, check_lm, check_records, finish_report
from gradwise.data.dedupe import DedupedSource, dedupe_records
from gradwise.data.labelled import LabelledSplit, encode_split, label_set, read_records, stratified_split
from gradwise.data.sources import hash_file
from gradwise.data.store import default_cache_dir
from gradwise.data.tokenizers import BPETokenizer, CharTokenizer, fingerprint
from gradwise.distributed import Distributed
from gradwise.errors import GradwiseError
from gradwise.evaluate import evaluate
from gradwise.hf import is_hf_source
from gradwise.metrics import classification_report, multilabel_report
from gradwise.models import build_model, gpt_config
from gradwise.models.gpt_classifier import GPTClassifier
from gradwise.models.hf_causal import build_hf_model
from gradwise.models.lstm import LSTMClassifier, LSTMConfig
from gradwise.objectives import CausalLMObjective, ClassificationObjective
from gradwise.rundir import RunDir
from gradwise.step import autocast_context


@dataclass
class EvalReport:
    loss: float
    scalars: dict[str, float] = field(default_factory=dict)  # logged as val_<name> / test_<name>
    details: dict[str, Any] | None = None  # kept in summary.json (per-class metrics, confusion matrix)

    def shared(self, dist: Distributed) -> EvalReport:
        """Rank 0's report on every rank, so the best checkpoint and early stopping are decided alike."""
        return EvalReport(**dist.broadcast_json(asdict(self)))


class LMTask:
    kind = "lm"

    def __init__(self, cfg: Config, corpus: Corpus, run_dir: Path | None = None):
        self.cfg, self.corpus, self.run_dir = cfg, corpus, run_dir
        self.tokenizer = corpus.tokenizer
        self.byte_lengths = corpus.tokenizer.token_byte_lengths()

    @classmethod
    def prepare(cls, cfg: Config, run_dir: Path | None = None) -> LMTask:
        if run_dir:
            tok = load_tokenizer(run_dir / "tokenizer.json")
        elif cfg.model.arch == "hf":  # the Hugging Face model's own tokenizer (gradwise/hf/auto_tokenizer.py)
            from gradwise.hf.auto_tokenizer import load_hf_tokenizer

            tok = load_hf_tokenizer(cfg.model.hf_path)
        else:
            tok = adopt_init_run(cfg)
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

    def save(self, run_dir: Path) -> None:
        if self.cfg.model.arch == "hf":  # RUN/hf/: the model's config and tokenizer files, to rebuild the run
            from gradwise.hf.causal import save_run_files

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
                 fixed_subset: bool) -> EvalReport:
        t = self.cfg.train
        res = evaluate(model, self.corpus.split(split), self.cfg.model.block_size, t.batch_size, device,
                       self.byte_lengths, max_windows=t.eval_batches * t.batch_size if fixed_subset else None,
                       autocast_dtype=autocast_dtype, fused=t.fused_ce)
        return EvalReport(res.loss, {"perplexity": res.perplexity, "bits_per_byte": res.bits_per_byte},
                          {"tokens": res.tokens, "bytes": res.bytes})

    def describe(self) -> str:
        splits = ", ".join(f"{k} {s.n_tokens:,}" for k, s in self.corpus.splits.items())
        return (f"{self.corpus.source.describe()} | {self.tokenizer.kind} tokenizer, vocab "
                f"{self.tokenizer.vocab_size:,} | tokens: {splits}")

    def split_sizes(self) -> dict[str, int]:
        return {k: s.n_tokens for k, s in self.corpus.splits.items()}


class ClassifyTask:
    kind = "classify"

    def __init__(self, cfg: Config, tokenizer: Tokenizer, classes: list[str], splits: dict[str, LabelledSplit]):
        self.cfg, self.tokenizer, self.classes, self.splits = cfg, tokenizer, classes, splits
        self.pad_id = tokenizer.eot_id

    @classmethod
    def prepare(cls, cfg: Config, run_dir: Path | None = None) -> ClassifyTask:
        d = cfg.data
        if d.path is None:
            raise GradwiseError("classification needs labelled data: pass --data FILE.jsonl or FILE.csv with "
                                f"'{d.text_field}' and '{d.label_field}' fields")
        records = read_records(d.path, d.text_field, d.label_field, d.multi_label, d.label_separator)
        dedupe = None
        if d.dedupe:
            keep, dedupe = dedupe_records(records.texts, records.labels, check_params(d))
            records.texts = [records.texts[i] for i in keep]
            records.labels = [records.labels[i] for i in keep]
            records.lines = [records.lines[i] for i in keep]
        texts, labels = records.texts, records.labels
        index = stratified_split(labels, d.split, cfg.seed)
        if run_dir is not None:
            tokenizer = load_tokenizer(run_dir / "tokenizer.json")
            classes = json.loads((run_dir / "labels.json").read_text())["classes"]
            unknown = sorted(set(label_set(labels)) - set(classes))
            if unknown:
                raise GradwiseError(f"labels {unknown[:3]} were not in the run's training data; use the same corpus")
        else:
            tokenizer = adopt_init_run(cfg)
            if tokenizer is None:
                train_texts = [texts[i] for i in index["train"]]  # the tokenizer never sees val/test text
                tokenizer = (CharTokenizer.train(train_texts, skip_unknown=True) if d.tokenizer == "char"
                             else BPETokenizer.train(train_texts, d.vocab_size))
            classes = label_set(labels)
        splits = {name: encode_split(name, texts, labels, idx, classes, tokenizer, cfg.model.block_size)
                  for name, idx in index.items()}
        task = cls(cfg, tokenizer, classes, splits)
        task.records, task.index, task.dedupe = records, index, dedupe
        return task

    def data_check(self) -> dict[str, Any]:
        """Duplicates and leakage across this task's split (cached by corpus, split and thresholds)."""
        d, r = self.cfg.data, self.records
        params = check_params(d)
        key = [hash_file(hashlib.sha256(), Path(d.path).expanduser()).hexdigest(), json.dumps([d.text_field, d.label_field, d.multi_label, d.label_separator,
                                                      d.split, d.dedupe, self.cfg.seed, params.to_dict()])]
        report = cached(default_cache_dir(d.cache_dir), key, lambda: finish_report(
            check_records(r.texts, r.labels, self.index, r.lines, params), str(d.path), "classify", params))
        return {**report, "corpus": str(d.path)}  # the cache key is the file's content, not its name

    def check(self, splits: tuple[str, ...]) -> None:
        for name in splits:
            if len(self.splits[name]) == 0:
                raise GradwiseError(f"the {name} split holds no records; add data or change data.split")

    def save(self, run_dir: Path) -> None:
        save_tokenizer(self.tokenizer, run_dir / "tokenizer.json")
        (run_dir / "labels.json").write_text(json.dumps({"classes": self.classes}, indent=1))

    @property
    def multi_label(self) -> bool:
        return self.cfg.data.multi_label

    def build_model(self) -> nn.Module:
        return classifier(self.cfg, self.tokenizer.vocab_size, len(self.classes), self.pad_id)

    def train_counts(self) -> np.ndarray:
        """Training records per class (multi-label: records carrying each label)."""
        labels = self.splits["train"].labels
        if self.multi_label:
            return labels.sum(axis=0).astype(np.int64)
        return np.bincount(labels, minlength=len(self.classes))

    def class_weights(self) -> torch.Tensor | None:
        o = self.cfg.objective
        if o.class_weights is not None:
            if len(o.class_weights) != len(self.classes):
                raise GradwiseError(f"objective.class_weights has {len(o.class_weights)} values for "
                                    f"{len(self.classes)} classes ({', '.join(self.classes)})")
            return torch.tensor(o.class_weights, dtype=torch.float32)
        if o.balance_classes:
            counts = self.train_counts().astype(float)
            if self.multi_label:  # pos_weight: negatives per positive, so each label's two sides weigh alike
                n = len(self.splits["train"])
                weights = np.where(counts > 0, (n - counts) / np.maximum(counts, 1), 1.0)
            else:
                weights = np.where(counts > 0, counts.sum() / (len(counts) * np.maximum(counts, 1)), 0.0)
            return torch.tensor(weights, dtype=torch.float32)
        return None

    def objective(self) -> ClassificationObjective:
        return ClassificationObjective(objective_terms(self.cfg), self.class_weights(),
                                       self.cfg.objective.label_smoothing, self.pad_id)

    def micro_batch(self, step: int, micro: int) -> tuple[np.ndarray, np.ndarray]:
        return self.splits["train"].batch(self.cfg.seed, step, micro, self.cfg.train.batch_size, self.pad_id)

    @torch.no_grad()
    def predict(self, model: nn.Module, split: LabelledSplit, device: torch.device,
                autocast_dtype: torch.dtype | None = None) -> np.ndarray:
        """Class probabilities (N, C) for every record of ``split``, in order (multi-label: each class's own)."""
        was_training = model.training
        model.eval()
        probs = []
        order = np.arange(len(split))
        for i in range(0, len(order), self.cfg.train.batch_size):
            tokens, _ = split.padded(order[i:i + self.cfg.train.batch_size], self.pad_id)
            with autocast_context(device, autocast_dtype):
                logits = model(torch.from_numpy(tokens).to(device))
            probs.append(class_probabilities(logits, self.multi_label).cpu().numpy())
        model.train(was_training)
        return np.concatenate(probs)

    def evaluate(self, model: nn.Module, split: str, device: torch.device, autocast_dtype: torch.dtype | None,
                 fixed_subset: bool) -> EvalReport:
        data = self.splits[split]
        probs = self.predict(model, data, device, autocast_dtype)
        if self.multi_label:
            p = np.clip(probs, 1e-7, 1 - 1e-7)
            loss = float(-(data.labels * np.log(p) + (1 - data.labels) * np.log(1 - p)).mean())
            report = multilabel_report(data.labels.astype(bool), probs >= 0.5, self.classes)
            return EvalReport(loss, {"accuracy": report["accuracy"], "macro_f1": report["macro_f1"],
                                     "micro_f1": report["micro_f1"]}, report)
        loss = float(-np.log(np.clip(probs[np.arange(len(data)), data.labels], 1e-12, None)).mean())
        report = classification_report(data.labels, probs.argmax(-1), self.classes)
        return EvalReport(loss, {"accuracy": report["accuracy"], "macro_f1": report["macro_f1"]}, report)

    def describe(self) -> str:
        counts = self.train_counts()
        sizes = ", ".join(f"{k} {len(s):,}" for k, s in self.splits.items())
        per_class = ", ".join(f"{c} {n}" for c, n in zip(self.classes, counts, strict=True))
        kind = "labels, multi-label" if self.multi_label else "classes"
        return (f"{self.cfg.data.path} | {len(self.classes)} {kind} (train: {per_class}) | {self.tokenizer.kind} "
                f"tokenizer, vocab {self.tokenizer.vocab_size:,} | records: {sizes}")

    def split_sizes(self) -> dict[str, int]:
        return {k: len(s) for k, s in self.splits.items()}


def lstm_classifier(cfg: Config, vocab_size: int, n_classes: int, pad_id: int) -> LSTMClassifier:
    m = cfg.model
    return LSTMClassifier(LSTMConfig(vocab_size=vocab_size, n_classes=n_classes, pad_id=pad_id, n_embd=m.n_embd,
                                     hidden=m.hidden or m.n_embd, n_layer=m.n_layer, bidirectional=m.bidirectional,
                                     dropout=m.dropout, pool=m.pool))


def class_probabilities(logits: torch.Tensor, multi_label: bool) -> torch.Tensor:
    """Class logits (..., C) -> probabilities: softmax over classes, or each class's own sigmoid (multi-label)."""
    return logits.float().sigmoid() if multi_label else logits.float().softmax(-1)


def classifier(cfg: Config, vocab_size: int, n_classes: int, pad_id: int) -> nn.Module:
    """The classifier ``model.arch`` names: an LSTM, or a GPT backbone with a class head."""
    if cfg.model.arch == "gpt":
        return GPTClassifier(gpt_config(cfg.model, vocab_size), n_classes, pad_id, cfg.model.pool)
    return lstm_classifier(cfg, vocab_size, n_classes, pad_id)


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
    tok = load_tokenizer(run.tokenizer)
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


def model_for_run(cfg: Config, run_dir: Path) -> tuple[nn.Module, Tokenizer, list[str] | None]:
    """An untrained model shaped like a run's (from its config, tokenizer and labels), with those."""
    tok = load_tokenizer(run_dir / "tokenizer.json")
    if cfg.task == "classify":
        classes = json.loads((run_dir / "labels.json").read_text())["classes"]
        return classifier(cfg, tok.vocab_size, len(classes), tok.eot_id), tok, classes
    if cfg.model.arch == "hf":
        return build_hf_model(cfg.model, tok.vocab_size, run_dir), tok, None
    return build_model(cfg.model, tok.vocab_size), tok, None


def prepare_task(cfg: Config, run_dir: Path | None = None) -> LMTask | ClassifyTask:
    """The task ``cfg.task`` names, with its data ready (using a run's tokenizer and labels when given)."""
    return (ClassifyTask if cfg.task == "classify" else LMTask).prepare(cfg, run_dir)
