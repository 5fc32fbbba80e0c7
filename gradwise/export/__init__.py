"""``gradwise export``: a run's model in Hugging Face's format. A gradwise GPT becomes a GPT-2 directory
(``gpt2``); a ``model.arch: hf`` run, language model or classifier, is saved in its own architecture, LoRA
merged (``causal``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gradwise.config import build_config, read_config_file
from gradwise.core.errors import GradwiseError
from gradwise.core.rundir import RunDir
from gradwise.export.causal import export_hf_run
from gradwise.export.gpt2 import ExportResult, export_gpt2, verify_export

__all__ = ["ExportResult", "export_hf", "verify_export"]


def export_hf(run_path: str | Path, out: str | Path, checkpoint: str = "best", force: bool = False) -> Any:
    """Write a gradwise LM run as a GPT-2 directory transformers loads with ``from_pretrained(out)`` (an
    ``ExportResult``); a ``model.arch: hf`` run as its own architecture, LoRA merged (``HFRunExport``)."""
    run = RunDir.existing(run_path)
    cfg = build_config(read_config_file(run.config))
    if cfg.model.arch == "hf":  # a Hugging Face model trained as it is (an LM or a classifier): save_pretrained
        return export_hf_run(run, out, checkpoint, force)
    if cfg.task != "lm" or cfg.model.arch != "gpt":
        what = f"{cfg.task} run" if cfg.task != "lm" else f"{cfg.model.arch} model"
        raise GradwiseError(f"{run.path} is a {what}; export writes gradwise language models (task lm, GPT) "
                            "as GPT-2, and runs of Hugging Face models (--model hf:DIR) in their own architecture")
    return export_gpt2(run, out, checkpoint, force)
