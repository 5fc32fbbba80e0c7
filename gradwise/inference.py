"""Using a trained run: evaluate it on a split, sample text from an LM, classify new texts."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from gradwise.config.load import build_config, read_config_file
from gradwise.config.schema import Config
from gradwise.core.checkpoint import load_weights
from gradwise.core.device_memory import refuse_beyond_free
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


MAX_NEW_TOKENS = 1_000_000  # one call's ceiling: the ids of every sample stay in memory, each token one forward


class TextStream:
    """Decoded text of one sample, handed out as its tokens arrive. A byte-level BPE token can end inside a
    UTF-8 character, so text ending in an incomplete character waits for the next token (a few at most)."""

    def __init__(self, tokenizer: Tokenizer, write: Callable[[str], None]):
        self.tokenizer, self.write, self.pending = tokenizer, write, []

    def __call__(self, next_id: torch.Tensor) -> None:
        self.pending.append(int(next_id[0, 0]))
        text = self.tokenizer.decode(self.pending)
        if not text.endswith("\ufffd") or len(self.pending) >= 8:
            self.write(text)
            self.pending = []

    def flush(self) -> None:
        if self.pending:
            self.write(self.tokenizer.decode(self.pending))
            self.pending = []


def check_generation_memory(model: nn.Module, samples: int, context: int, length: int, vocab: int,
                            device: torch.device) -> None:
    """Refuse a generation the loaded model has no room for. Each step is a forward over ``samples`` x
    ``context`` tokens that makes every position's logits (fp32) and, per layer, an input and output of the
    model's widest layer; the ids of every sample (``length`` each) are held twice while a step appends. An
    estimate of the peak beyond the weights, which are already loaded."""
    widest = max((d for p in model.parameters() if p.dim() == 2 for d in p.shape if d != vocab), default=1)
    per_sample = context * (vocab + 3 * widest) * 4 + 2 * length * 8

    def advice(usable: float) -> str:
        fit = int(usable // per_sample)
        if fit >= 1:
            return f"ask for fewer samples: {min(fit, samples - 1):,} fit in one call (--num-samples)"
        return "not even one sample fits beside the model; free memory or generate on another device (--device)"

    refuse_beyond_free(samples * per_sample, device, f"generating {samples:,} sample(s) of {length:,} tokens",
                       advice)


def generate_text(run_path: str | Path, prompt: str = "", max_new_tokens: int = 200, temperature: float = 0.8,
                  top_k: int | None = None, top_p: float | None = None, num_samples: int = 1, seed: int = 0,
                  checkpoint: str = "best", device: str = "auto", on_text: Callable[[str], None] | None = None,
                  on_token: Callable[[torch.Tensor], None] | None = None) -> list[str]:
    """Sample continuations of ``prompt`` from a language-model run (the prompt is included in each sample).

    ``on_text`` (one sample only) receives the prompt and then the text as it is generated, so a long
    generation streams; ``on_token`` sees each step's new ids (num_samples, 1), for a progress display. A
    Ctrl-C during generation raises KeyboardInterrupt after the text streamed so far."""
    if max_new_tokens < 0 or num_samples < 1:
        raise GradwiseError("--max-new-tokens must be >= 0 and --num-samples >= 1")
    if max_new_tokens > MAX_NEW_TOKENS:
        raise GradwiseError(f"--max-new-tokens {max_new_tokens:,} is beyond one call's ceiling of {MAX_NEW_TOKENS:,} "
                            "tokens (each is a forward pass over the model's context); generate in parts, feeding "
                            "the end of one as the next --prompt")
    if on_text is not None and num_samples != 1:
        raise GradwiseError("streaming the text (on_text) is for one sample; use num_samples=1")
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
    check_generation_memory(loaded.model, num_samples, min(len(ids) + max_new_tokens, loaded.cfg.model.block_size),
                            len(ids) + max_new_tokens, tok.vocab_size, dev)
    idx = torch.tensor([ids] * num_samples, dtype=torch.long, device=dev)
    gen = torch.Generator(device=dev).manual_seed(seed)
    stream = TextStream(tok, on_text) if on_text is not None else None
    if on_text is not None and prompt:
        on_text(tok.decode(ids))

    def each_token(next_id: torch.Tensor) -> None:
        if stream is not None:
            stream(next_id)
        if on_token is not None:
            on_token(next_id)

    out = loaded.model.generate(idx, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                                generator=gen, on_token=each_token)
    if stream is not None:
        stream.flush()
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
