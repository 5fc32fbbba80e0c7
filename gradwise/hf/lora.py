"""LoRA on a Hugging Face model through peft: ``--lora r=8,alpha=16[,dropout=0.05,targets=c_attn+c_proj]``.

peft freezes the base weights and adds a pair of low-rank matrices (A: r x in, B: out x r, B starting at
zero) beside each targeted layer, so only ``r * (in + out)`` numbers per layer train and the optimizer
sees only those (gradwise's optimizers take trainable parameters only). Targets are module names matched
against the end of each module's path, peft's rule: ``c_proj`` adapts every layer whose name ends so.
Without targets, peft's default for the architecture is used, or, for an architecture peft does not
know, every Linear/Conv1D layer inside attention modules.
"""

from __future__ import annotations

import warnings
from typing import Any

from torch import nn

from gradwise.core.errors import ConfigError, GradwiseError
from gradwise.hf import require

LORA_KEYS = {"r": int, "alpha": float, "dropout": float, "targets": str}
ATTENTION_HINTS = ("attn", "attention")


def parse_lora(spec: str) -> dict[str, Any]:
    """``r=8,alpha=16,dropout=0.05,targets=c_attn+c_proj`` -> the ``model.lora`` mapping."""
    out: dict[str, Any] = {}
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or key not in LORA_KEYS:
            raise ConfigError(f"--lora '{item}': use KEY=VALUE with keys {', '.join(LORA_KEYS)}, for example "
                              "--lora r=8,alpha=16,targets=c_attn+c_proj")
        if key == "targets":
            out[key] = [t.strip() for t in raw.split("+") if t.strip()]
            continue
        try:
            out[key] = LORA_KEYS[key](raw)
        except ValueError:
            raise ConfigError(f"--lora {key}={raw}: not a {'whole number' if key == 'r' else 'number'}") from None
    return out


def linear_like(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"  # GPT-2's transposed Linear


def attention_targets(model: nn.Module) -> list[str]:
    """The names of the Linear/Conv1D layers inside attention modules (the fallback targets)."""
    names = {name.rsplit(".", 1)[-1] for name, mod in model.named_modules()
             if linear_like(mod) and any(h in name.rsplit(".", 1)[0].lower() for h in ATTENTION_HINTS)}
    return sorted(names)


def apply_lora(model: nn.Module, r: int, alpha: float, dropout: float = 0.0,
               targets: list[str] | None = None, task: str = "CAUSAL_LM",
               trained_in_full: list[str] | None = None) -> tuple[nn.Module, list[str]]:
    """``model`` wrapped by peft with LoRA adapters (base frozen); returns it and the targets used. ``task`` is
    peft's task type: ``SEQ_CLS`` (a classifier) also trains the new class head in full, as it does the modules
    ``trained_in_full`` names (weights the pretrained file lacks: frozen, they would stay random)."""
    peft = require("peft", "--lora (model.lora)")
    chosen = targets
    with warnings.catch_warnings():  # peft's and transformers' deprecation notices are not the user's to fix
        warnings.simplefilter("ignore")
        if chosen is None:
            try:
                wrapped = peft.get_peft_model(model, _config(peft, model, r, alpha, dropout, None, task, trained_in_full))
                return wrapped, sorted(wrapped.peft_config["default"].target_modules)
            except ValueError:  # peft has no default for this architecture
                chosen = attention_targets(model)
                if not chosen:
                    raise GradwiseError("--lora: no attention Linear layer found and peft has no default for this "
                                        "model; name the layers, e.g. --lora r=8,alpha=16,targets=q_proj+v_proj") from None
        try:
            wrapped = peft.get_peft_model(model, _config(peft, model, r, alpha, dropout, chosen, task, trained_in_full))
        except ValueError as exc:
            names = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if linear_like(m)})
            raise GradwiseError(f"--lora targets {'+'.join(chosen)}: {str(exc).strip().splitlines()[0][:120]}; "
                                f"layer names here: {', '.join(names[:12])}") from None
    return wrapped, list(chosen)


def _config(peft: Any, model: nn.Module, r: int, alpha: float, dropout: float, targets: list[str] | None,
            task: str, trained_in_full: list[str] | None) -> Any:
    conv1d = any(type(m).__name__ == "Conv1D" for m in model.modules())  # Conv1D stores (in, out): tell peft
    return peft.LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets,
                           fan_in_fan_out=conv1d, task_type=task,
                           modules_to_save=trained_in_full or None)


def merged(model: nn.Module) -> nn.Module:
    """The plain transformers model with the adapters folded into its weights (peft's merge_and_unload)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.merge_and_unload()


def is_peft(model: nn.Module) -> bool:
    return hasattr(model, "merge_and_unload") and hasattr(model, "get_base_model")


__all__ = ["apply_lora", "attention_targets", "is_peft", "merged", "parse_lora"]
