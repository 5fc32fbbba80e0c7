"""Using a trained run: evaluate it on a split, sample text from an LM, classify new texts."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from gradwise.config.load import build_config, read_config_file
from gradwise.config.schema import Config
from gradwise.core.checkpoint import load_weights
from gradwise.core.errors import GradwiseError
from gradwise.core.rundir import RunDir
from gradwise.core.runtime import select_device, select_dtype
from gradwise.data import Tokenizer
from gradwise.tasks import model_for_run, prepare_task
from gradwise.tasks.base import EvalReport
from gradwise.tasks.classify import class_probabilities


@dataclass
class LoadedRun:
    cfg: Config
    run: RunDir
    model: nn.Module
    tokenizer: Tokenizer
    classes: list[str] | None
    device: torch.device


@dataclass
class Prediction:
    label: str  # the most probable class
    probabilities: dict[str, float]  # multi-label: each class's own probability (they need not sum to 1)
    labels: list[str]  # the predicted set: [label], or for multi-label every class with probability >= 0.5


def load_run(run_path: str | Path, checkpoint: str = "best", device: str = "auto") -> LoadedRun:
    """A trained model back from its run directory (config, tokenizer, labels, chosen checkpoint)."""
    run = RunDir.existing(run_path)
    cfg = build_config(read_config_file(run.config))
    model, tok, classes = model_for_run(cfg, run.path)
    dev = select_device(device)
    load_weights(run.checkpoint(checkpoint), model)
    return LoadedRun(cfg, run, model.to(dev).eval(), tok, classes, dev)


def evaluate_run(run_path: str | Path, split: str = "test", checkpoint: str = "best",
                 device: str = "auto") -> EvalReport:
    """A run's checkpoint on a whole split of its data: loss plus the task's metrics."""
    if split not in ("train", "val", "test"):
        raise GradwiseError(f"unknown split '{split}'; use train, val or test")
    loaded = load_run(run_path, checkpoint, device)
    task = prepare_task(loaded.cfg, loaded.run.path)
    task.check((split,))
    return task.evaluate(loaded.model, split, loaded.device, select_dtype(loaded.cfg.train.dtype, loaded.device),
                         fixed_subset=False)


def generate_text(run_path: str | Path, prompt: str = "", max_new_tokens: int = 200, temperature: float = 0.8,
                  top_k: int | None = None, top_p: float | None = None, num_samples: int = 1, seed: int = 0,
                  checkpoint: str = "best", device: str = "auto") -> list[str]:
    """Sample continuations of ``prompt`` from a language-model run (the prompt is included in each sample)."""
    if max_new_tokens < 0 or num_samples < 1:
        raise GradwiseError("--max-new-tokens must be >= 0 and --num-samples >= 1")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise GradwiseError(f"--top-p must be in (0, 1]; got {top_p}")
    if not (math.isfinite(temperature) and temperature >= 0):
        raise GradwiseError(f"--temperature must be a number >= 0 (0 is greedy); got {temperature}")
    if top_k is not None and top_k < 1:
        raise GradwiseError(f"--top-k must be at least 1 (or left out to sample from every token); got {top_k}")
    loaded = load_run(run_path, checkpoint, device)
    if loaded.cfg.task != "lm":
        raise GradwiseError(f"{run_path} is a {loaded.cfg.task} run; generate needs a language model "
                            f"(use `gradwise predict {run_path} --text ...` for a classifier)")
    tok, dev = loaded.tokenizer, loaded.device
    ids = tok.encode(prompt).tolist() if prompt else [tok.eot_id]
    idx = torch.tensor([ids] * num_samples, dtype=torch.long, device=dev)
    gen = torch.Generator(device=dev).manual_seed(seed)
    out = loaded.model.generate(idx, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                                generator=gen)
    start = 0 if prompt else len(ids)
    return [tok.decode(row[start:].tolist()) for row in out]


@torch.no_grad()
def predict(run_path: str | Path, texts: list[str], checkpoint: str = "best", device: str = "auto") -> list[Prediction]:
    """Class and class probabilities of each text, from a classification run."""
    loaded = load_run(run_path, checkpoint, device)
    if loaded.cfg.task != "classify" or loaded.classes is None:
        raise GradwiseError(f"{run_path} is a {loaded.cfg.task} run; predict needs a classification run "
                            "(train one with --task classify)")
    tok, classes = loaded.tokenizer, loaded.classes
    out = []
    for text in texts:
        ids = tok.encode(text)[: loaded.cfg.model.block_size]
        if len(ids) == 0:
            raise GradwiseError(f"the text {text[:30]!r} has no token the model knows")
        multi = loaded.cfg.data.multi_label
        probs = class_probabilities(loaded.model(torch.as_tensor(ids, device=loaded.device)[None])[0], multi).tolist()
        best = max(range(len(classes)), key=probs.__getitem__)
        chosen = [c for c, p in zip(classes, probs, strict=True) if p >= 0.5] if multi else [classes[best]]
        out.append(Prediction(classes[best], dict(zip(classes, probs, strict=True)), chosen))
    return out
