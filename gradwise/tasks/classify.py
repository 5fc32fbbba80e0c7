"""Text classification on labelled records: the n-gram bag, an LSTM, a GPT backbone or a local Hugging Face model;
class or multi-label cross-entropy, accuracy and F1."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from gradwise.config.schema import Config
from gradwise.config.validate import objective_terms
from gradwise.core.errors import DataError, GradwiseError
from gradwise.core.runtime import autocast_context
from gradwise.data import Tokenizer, check_params, save_tokenizer
from gradwise.data.labelled import LabelledSplit, encode_split, label_set, read_records, stratified_split
from gradwise.data.quality.check import cached, check_records, finish_report
from gradwise.data.quality.dedupe import dedupe_records
from gradwise.data.sources import hash_file
from gradwise.data.store import default_cache_dir
from gradwise.data.tokenizers import BPETokenizer, CharTokenizer, NgramTokenizer
from gradwise.hf.auto_tokenizer import load_any_tokenizer, load_hf_tokenizer
from gradwise.hf.causal import save_run_files
from gradwise.hf.classifier import build_hf_classifier, save_classifier_config
from gradwise.models import build_classifier
from gradwise.models.ngram import bag_weights
from gradwise.objectives.losses import ClassificationObjective
from gradwise.tasks.base import EvalReport
from gradwise.tasks.classify_baseline import BASELINE_VERSION, fit_baseline
from gradwise.tasks.classify_metrics import calibrated_loss, classification_report, multilabel_report
from gradwise.tasks.init_from import init_tokenizer


class ClassifyTask:
    kind = "classify"

    def __init__(self, cfg: Config, tokenizer: Tokenizer, classes: list[str], splits: dict[str, LabelledSplit]):
        self.cfg, self.tokenizer, self.classes, self.splits = cfg, tokenizer, classes, splits
        self.pad_id = tokenizer.eot_id
        self._corpus_hash: str | None = None
        self.run_dir: Path | None = None  # a resumed run's directory (a Hugging Face model is rebuilt from it)

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
            tokenizer = load_any_tokenizer(run_dir / "tokenizer.json")
            classes = json.loads((run_dir / "labels.json").read_text())["classes"]
            unknown = sorted(set(label_set(labels)) - set(classes))
            if unknown:
                raise GradwiseError(f"labels {unknown[:3]} were not in the run's training data; use the same corpus")
        else:
            tokenizer = load_hf_tokenizer(cfg.model.hf_path, classify=True) if cfg.model.arch == "hf" \
                else init_tokenizer(cfg)
            if tokenizer is None:
                train_texts = [texts[i] for i in index["train"]]  # the tokenizer never sees val/test text
                tokenizer = (CharTokenizer.train(train_texts, skip_unknown=True) if d.tokenizer == "char"
                             else NgramTokenizer() if d.tokenizer == "ngram"
                             else BPETokenizer.train(train_texts, d.vocab_size))
            classes = label_set(labels)
        splits = {name: encode_split(name, texts, labels, idx, classes, tokenizer, cfg.model.block_size)
                  for name, idx in index.items()}
        task = cls(cfg, tokenizer, classes, splits)
        task.records, task.index, task.dedupe, task.run_dir = records, index, dedupe, run_dir
        return task

    def _split_key(self) -> list[str]:
        """The corpus's content hash (read once per task) and what decides this split: the cache key of every
        result computed from the split alone (the data check, the baseline)."""
        if self._corpus_hash is None:
            self._corpus_hash = hash_file(hashlib.sha256(), Path(self.cfg.data.path).expanduser()).hexdigest()
        d = self.cfg.data
        return [self._corpus_hash, json.dumps([d.text_field, d.label_field, d.multi_label, d.label_separator,
                                               d.split, d.dedupe, self.cfg.seed])]

    def data_check(self) -> dict[str, Any]:
        """Duplicates and leakage across this task's split (cached by corpus, split and thresholds)."""
        d, r = self.cfg.data, self.records
        params = check_params(d)
        key = [*self._split_key(), json.dumps(params.to_dict())]
        report = cached(default_cache_dir(d.cache_dir), key, lambda: finish_report(
            check_records(r.texts, r.labels, self.index, r.lines, params), str(d.path), "classify", params))
        return {**report, "corpus": str(d.path)}  # the cache key is the file's content, not its name

    def baseline(self) -> dict[str, Any] | None:
        """TF-IDF + logistic regression fitted on this split's training texts (tasks.classify_baseline); cached by
        corpus and split, so a study's trials fit it once. A split it cannot learn from gives ``{"skipped": why}``."""
        d = self.cfg.data
        texts = {name: split.texts for name, split in self.splits.items()}  # whole texts, not cut to block_size
        labels = {name: split.labels for name, split in self.splits.items()}
        key = ["baseline", BASELINE_VERSION, *self._split_key(), json.dumps(self.classes)]

        def fit() -> dict[str, Any]:
            try:
                return fit_baseline(texts, labels, self.classes, self.multi_label)
            except DataError as exc:
                return {"skipped": str(exc)}

        return cached(default_cache_dir(d.cache_dir), key, fit)

    def check(self, splits: tuple[str, ...]) -> None:
        for name in splits:
            if len(self.splits[name]) == 0:
                raise GradwiseError(f"the {name} split holds no records; add data or change data.split")

    def save(self, run_dir: Path) -> None:
        if self.cfg.model.arch == "hf":  # RUN/hf/: the tokenizer files and the classifier's config, to rebuild it
            save_run_files(self.cfg.model.hf_path, run_dir)
            save_classifier_config(self.cfg.model.hf_path, self.classes, self.pad_id, run_dir)
        save_tokenizer(self.tokenizer, run_dir / "tokenizer.json")
        (run_dir / "labels.json").write_text(json.dumps({"classes": self.classes}, indent=1))

    @property
    def multi_label(self) -> bool:
        return self.cfg.data.multi_label

    def build_model(self) -> nn.Module:
        if self.cfg.model.arch == "hf":  # pretrained with a new head, or (resuming) rebuilt for the checkpoint
            return build_hf_classifier(self.cfg.model, self.classes, self.pad_id, self.tokenizer.vocab_size,
                                       self.run_dir)
        model = classifier(self.cfg, self.tokenizer.vocab_size, len(self.classes), self.pad_id)
        m = self.cfg.model
        if m.arch == "ngram" and (m.idf or m.nb):  # from the training split alone, as the baseline
            train = self.splits["train"]
            model.set_weights(bag_weights(train.ids, train.labels, self.tokenizer.vocab_size, m.idf, m.nb))
        return model

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
                 fixed_subset: bool, windows: int | None = None) -> EvalReport:  # every record, always
        data = self.splits[split]
        probs = self.predict(model, data, device, autocast_dtype)
        if self.multi_label:
            p = np.clip(probs, 1e-7, 1 - 1e-7)
            loss = float(0.0 - (data.labels * np.log(p) + (1 - data.labels) * np.log(1 - p)).mean())  # never -0.0
            report = multilabel_report(data.labels.astype(bool), probs >= 0.5, self.classes)
            return EvalReport(loss, {"accuracy": report["accuracy"], "macro_f1": report["macro_f1"],
                                     "micro_f1": report["micro_f1"]}, report)
        loss = float(0.0 - np.log(np.clip(probs[np.arange(len(data)), data.labels], 1e-12, None)).mean())  # never -0.0
        report = classification_report(data.labels, probs.argmax(-1), self.classes)
        calibrated, temperature = calibrated_loss(probs, data.labels)
        return EvalReport(loss, {"accuracy": report["accuracy"], "macro_f1": report["macro_f1"],
                                 "calibrated_loss": calibrated, "temperature": temperature}, report)

    def describe(self) -> str:
        counts = self.train_counts()
        sizes = ", ".join(f"{k} {len(s):,}" for k, s in self.splits.items())
        per_class = ", ".join(f"{c} {n}" for c, n in zip(self.classes, counts, strict=True))
        kind = "labels, multi-label" if self.multi_label else "classes"
        return (f"{self.cfg.data.path} | {len(self.classes)} {kind} (train: {per_class}) | {self.tokenizer.kind} "
                f"tokenizer, vocab {self.tokenizer.vocab_size:,} | records: {sizes}")

    def split_sizes(self) -> dict[str, int]:
        return {k: len(s) for k, s in self.splits.items()}


def class_probabilities(logits: torch.Tensor, multi_label: bool) -> torch.Tensor:
    """Class logits (..., C) -> probabilities: softmax over classes, or each class's own sigmoid (multi-label)."""
    return logits.float().sigmoid() if multi_label else logits.float().softmax(-1)


def classifier(cfg: Config, vocab_size: int, n_classes: int, pad_id: int) -> nn.Module:
    """The classifier ``model.arch`` names (gradwise.models.CLASSIFIERS): an LSTM, or a GPT backbone with a
    class head."""
    return build_classifier(cfg.model, vocab_size, n_classes, pad_id)
