"""``gradwise export`` of a gradwise GPT run: a GPT-2 directory transformers loads with ``from_pretrained``."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from gradwise.core.errors import GradwiseError
from gradwise.core.rundir import RunDir, check_out_dir
from gradwise.data.tokenizers import CharTokenizer
from gradwise.hf import require
from gradwise.hf.convert import CONFIG_FILE, WEIGHTS_FILE, gpt2_cannot_hold, gpt_to_hf_state, hf_config
from gradwise.hf.tokenizer import write_tokenizer
from gradwise.inference import load_run
from gradwise.models.gpt import GPT, GPTConfig


@dataclass
class ExportResult:
    out: Path
    files: list[str]
    config: GPTConfig
    tokenizer: str  # char or bpe
    params: int

    def describe(self) -> str:
        c = self.config
        return (f"{c.n_layer} layers, {c.n_embd} wide, {self.params:,} parameters, {self.tokenizer} tokenizer, "
                f"vocab {c.vocab_size:,}")


def export_gpt2(run: RunDir, out: str | Path, checkpoint: str = "best", force: bool = False) -> ExportResult:
    """Write a gradwise GPT language-model run as a GPT-2 directory (weights, config, tokenizer files)."""
    out = check_out_dir(out, force)
    loaded = load_run(run.path, checkpoint, device="cpu")
    model = loaded.model
    if not isinstance(model, GPT):
        raise GradwiseError(f"{run.path} does not hold a GPT language model; export writes GPT-2 models only")
    gcfg = model.cfg
    unheld = gpt2_cannot_hold(gcfg)
    if unheld:
        raise GradwiseError(f"{run.path}: GPT-2's format has no place for {', '.join(unheld)}, so transformers "
                            "could not load the export as this model; train without them to export, or use the run "
                            "with gradwise generate, eval and predict")
    eps = {m.eps for m in model.modules() if isinstance(m, torch.nn.LayerNorm)}
    if len(eps) != 1:
        raise GradwiseError(f"{run.path}: the model's LayerNorms use different eps values {sorted(eps)}; GPT-2 has one")
    out.mkdir(parents=True, exist_ok=True)
    tensors = gpt_to_hf_state(model.state_dict(), gcfg)
    _write_atomic(out / WEIGHTS_FILE, lambda p: save_file(tensors, str(p), metadata={"format": "pt"}))
    provenance = {"run": run.path.name, "checkpoint": checkpoint, "tokenizer": loaded.tokenizer.kind}
    config = hf_config(gcfg, loaded.tokenizer.eot_id, eps.pop(), provenance)
    _write_atomic(out / CONFIG_FILE, lambda p: p.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8"))
    gen = {"bos_token_id": loaded.tokenizer.eot_id, "eos_token_id": loaded.tokenizer.eot_id}
    _write_atomic(out / "generation_config.json",
                  lambda p: p.write_text(json.dumps(gen, indent=2) + "\n", encoding="utf-8"))
    files = [CONFIG_FILE, "generation_config.json", WEIGHTS_FILE, *write_tokenizer(loaded.tokenizer, out, gcfg.block_size)]
    return ExportResult(out, files, gcfg, loaded.tokenizer.kind, model.num_params())


def _write_atomic(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def verify_export(run_path: str | Path, out: str | Path, checkpoint: str = "best", seed: int = 0,
                  texts: list[str] | None = None) -> dict[str, Any]:
    """Load an export with transformers and compare it with the run: max abs logit difference on random ids
    (fp32, eval mode) and whether AutoTokenizer encodes ``texts`` to the same ids. Needs transformers."""
    transformers = require("transformers", "checking an export (--verify)")

    transformers.logging.set_verbosity_error()  # no progress bars or length notices around our one-line report
    transformers.logging.disable_progress_bar()
    loaded = load_run(run_path, checkpoint, device="cpu")
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(out)).float().eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(out))
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, loaded.tokenizer.vocab_size, (2, min(loaded.cfg.model.block_size, 64)), generator=gen)
    with torch.no_grad():
        diff = (hf(input_ids=ids).logits - loaded.model(ids)).abs().max().item()
    tok = loaded.tokenizer
    if texts is None:
        sample = "".join(tok.chars[:200]) if isinstance(tok, CharTokenizer) else "Hello, world!\n\n  tabs\tand ünïcödé ✓"
        texts = [sample, sample[::-1], ""]
    mismatched = [t for t in texts if hf_tok(t, add_special_tokens=False)["input_ids"] != tok.encode(t).tolist()]
    return {"max_abs_logit_diff": diff, "tokenizer_matches": not mismatched, "texts": len(texts)}
