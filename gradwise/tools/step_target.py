"""What `gradwise step` steps on: a gradwise run, or a local Hugging Face causal-LM directory.

Either way the result is a model whose ``forward(ids)`` returns next-token logits, a function from text to
token ids, the context length, and a way to save the stepped model in the format it came in (a gradwise run
directory, or a Hugging Face directory via ``save_pretrained``).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from gradwise.core.checkpoint import save_checkpoint
from gradwise.core.errors import GradwiseError
from gradwise.hf.causal import load_pretrained, max_positions, quiet_transformers
from gradwise.hf.model import HFCausalLM
from gradwise.inference import load_run


@dataclass
class StepTarget:
    model: nn.Module  # forward(ids (B, T)) -> logits (B, T, V)
    encode: Callable[[str], list[int]]
    block_size: int
    kind: str  # "gradwise" or "hf"
    source: Path
    describe: str
    save: Callable[[Path], None]


def load_step_target(path: str | Path, device: torch.device) -> StepTarget:
    """A gradwise run directory (its best checkpoint) or a local Hugging Face causal-LM directory."""
    p = Path(path).expanduser()
    if (p / "config.yaml").is_file():
        return _gradwise_target(p, device)
    if (p / "config.json").is_file():
        return _hf_target(p, device)
    if not p.exists():
        raise GradwiseError(f"--model {path}: no such directory; give a gradwise run (runs/NAME) or a local "
                            "Hugging Face model directory (config.json, weights, tokenizer files)")
    raise GradwiseError(f"--model {path} is neither a gradwise run (no config.yaml) nor a Hugging Face model "
                        "directory (no config.json)")


def _gradwise_target(p: Path, device: torch.device) -> StepTarget:
    loaded = load_run(p, "best", str(device))
    if loaded.cfg.task != "lm":
        raise GradwiseError(f"--model {p} is a {loaded.cfg.task} run; `gradwise step` steps language models "
                            "(a gradwise LM run or a Hugging Face causal LM)")
    model = loaded.model

    def save(out: Path) -> None:
        """A copy of the run whose best and last checkpoints hold the stepped weights (no optimizer state)."""
        out.mkdir(parents=True, exist_ok=True)
        for name in ("config.yaml", "tokenizer.json", "summary.json"):
            if (p / name).is_file():
                shutil.copy2(p / name, out / name)
        for which in ("best", "last"):
            save_checkpoint(out / "checkpoints" / which, model, {"step": 0, "kind": which, "stepped_from": str(p)})

    m = loaded.cfg.model
    tokenizer = loaded.tokenizer
    return StepTarget(model, lambda text: [int(i) for i in tokenizer.encode(text)], m.block_size, "gradwise", p,
                      f"gradwise run {p} (GPT {m.n_layer} layers, width {m.n_embd}, {loaded.cfg.data.tokenizer} "
                      "tokenizer)", save)


def _hf_target(p: Path, device: torch.device) -> StepTarget:
    """The directory's causal LM (safetensors only, fp32) behind the same wrapper training uses."""

    hf_model = load_pretrained(p)
    with quiet_transformers() as transformers:
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(p, local_files_only=True)
        except Exception as exc:  # noqa: BLE001 - transformers raises many kinds; all mean "no usable tokenizer"
            raise GradwiseError(f"--model {p}: its tokenizer cannot be loaded ({str(exc).splitlines()[0][:160]})") \
                from None
    block = max_positions(hf_model.config) or 1024

    def encode(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    def save(out: Path) -> None:
        hf_model.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)

    model = HFCausalLM(hf_model, block).to(device)
    n = sum(q.numel() for q in hf_model.parameters())
    return StepTarget(model, encode, block, "hf", p, f"Hugging Face {hf_model.config.model_type} {p} ({n:,} "
                      "parameters)", save)
