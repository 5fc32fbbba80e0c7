"""``gradwise export`` of a ``model.arch: hf`` run: the trained model in its own architecture (a causal LM, or
a sequence classifier whose config names the run's classes in ``id2label``).

Nothing is converted: the checkpoint's weights are loaded into the model rebuilt from the run, LoRA
adapters (if any) are folded into the base weights with peft's ``merge_and_unload``, and transformers'
own ``save_pretrained`` writes a plain directory (config.json, model.safetensors, generation_config.json,
tokenizer files) that loads with ``AutoModelForCausalLM`` (``AutoModelForSequenceClassification``) without
peft. Files are written in a temporary
directory beside ``--out`` and moved in when complete.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from gradwise.core.errors import GradwiseError
from gradwise.core.rundir import RunDir, check_out_dir
from gradwise.hf.causal import quiet_transformers
from gradwise.hf.lora import is_peft, merged
from gradwise.inference import load_run


@dataclass
class HFRunExport:
    out: Path
    files: list[str]
    model_class: str
    params: int
    vocab_size: int
    lora_merged: bool

    def describe(self) -> str:
        merged_note = ", LoRA adapters merged" if self.lora_merged else ""
        return f"{self.model_class}, {self.params:,} parameters{merged_note}, its own tokenizer, vocab {self.vocab_size:,}"


def export_hf_run(run: RunDir, out: str | Path, checkpoint: str = "best", force: bool = False) -> HFRunExport:
    """Write a ``--model hf:DIR`` run's checkpoint as a Hugging Face directory (adapters merged)."""

    out = check_out_dir(out, force)
    loaded = load_run(run.path, checkpoint, device="cpu")
    wrapper = loaded.model
    lora = is_peft(wrapper.hf)
    model = merged(wrapper.hf) if lora else wrapper.hf
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        with quiet_transformers():
            model.save_pretrained(str(tmp))
            loaded.tokenizer.save_pretrained(tmp)
        if not (tmp / "model.safetensors").is_file() and not (tmp / "model.safetensors.index.json").is_file():
            raise GradwiseError(f"transformers wrote no safetensors weights for {run.path}; please report this")
        out.mkdir(parents=True, exist_ok=True)
        files = sorted(p.name for p in tmp.iterdir())
        for name in files:
            (tmp / name).replace(out / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return HFRunExport(out, files, type(model).__name__, sum(p.numel() for p in model.parameters()),
                       loaded.tokenizer.vocab_size, lora)


__all__ = ["HFRunExport", "export_hf_run"]
