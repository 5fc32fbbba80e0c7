"""``gradwise plan``: the command line of the compute planner (gradwise/plan/estimate.py, gradwise/plan/budget.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from gradwise.cli.args import add_config_options, add_json, config_and_overrides
from gradwise.core.device_memory import fmt_bytes
from gradwise.core.errors import GradwiseError, say
from gradwise.plan.estimate import Plan, fmt_count

LABEL = 13  # width of the label column


def add_plan_parser(sub: Any) -> None:
    p = sub.add_parser("plan", help="what a run will cost: parameters, FLOPs, memory, time; --budget proposes one",
                       description="Before training: parameters, FLOPs per token and in total, memory (weights, "
                       "gradients, optimizer state, activations) and whether it fits, tokens per parameter "
                       "against the compute-optimal ~20, and the wall time here from a few calibrated steps. "
                       "With --budget: the model size and steps that spend that time compute-optimally.")
    add_config_options(p, overrides="override any config key, e.g. --set model.n_layer=6 (repeatable)")
    p.add_argument("--budget", metavar="DURATION", help="propose a config that trains within this wall time "
                   "on this device, e.g. 10m or 2h")
    p.add_argument("--out", metavar="FILE", help="with --budget: write the proposed config as YAML here")
    p.add_argument("--no-data", action="store_true", help="do not read the corpus (sizes from the config only; "
                   "no epochs, no data bound on --budget)")
    p.add_argument("--no-calibrate", action="store_true", help="skip timing the configured model (no wall-time estimate; "
                   "--budget still times the sizes it considers)")
    add_json(p, "print the plan as JSON")


def cmd_plan(args: argparse.Namespace) -> int:
    from gradwise.api import plan_run
    from gradwise.plan.planner import resolve_config

    if args.out and not args.budget:
        raise GradwiseError("--out writes the --budget proposal; add --budget DURATION (e.g. --budget 10m)")
    config, overrides = config_and_overrides(args)
    plan = plan_run(config, overrides, args.budget, data=not args.no_data, calibrate=not args.no_calibrate,
                    progress=say)  # the calibration's stages on stderr: a slow one is seen, never silent
    if args.out:
        write_proposal(resolve_config(config, overrides + plan.budget["overrides"]), Path(args.out), args.budget)
    if args.json:
        print(json.dumps(plan.to_json(), indent=1))
    else:
        print(format_plan(plan, config or "default"))
        if args.out:
            print(f"{'written':<{LABEL}}{args.out} (gradwise train {args.out})")
    return 0


def write_proposal(cfg: Any, path: Path, budget: str) -> None:
    """The whole proposed config (every key, like a run's config.yaml), ready for ``gradwise train FILE``."""
    import yaml

    text = f"# gradwise plan --budget {budget}: the proposed config (run it: gradwise train {path.name})\n"
    try:
        path.write_text(text + yaml.safe_dump(cfg.to_dict(), sort_keys=False), encoding="utf-8")
    except OSError as exc:
        raise GradwiseError(f"cannot write --out {path}: {exc.strerror}") from None


# ---------------------------------------------------------------- text

def format_plan(plan: Plan, name: str) -> str:
    """The plan as aligned lines: one label per question, numbers first, conventions after them."""
    c, p, f, d, m = plan.config, plan.params, plan.flops, plan.data, plan.memory
    rows = [("plan", f"{name} | {_shape(c)} | {c['optimizer']} | {c['device']} {c['precision']}"),
            ("parameters", f"{p['total']:,} total | {p['non_embedding']:,} non-embedding"),
            ("FLOPs/token", f"{fmt_count(f['per_token'])} | {fmt_count(f['per_step'])} per step | "
                            f"{fmt_count(f['total'])} for {c['max_steps']:,} steps"
                            + (" (full-length texts: an upper bound)" if c["task"] == "classify" else "")),
            ("", f"formula: {f['formula']}")]
    rows += _data_rows(c, d)
    rows += _memory_rows(m)
    if plan.time is not None:
        rows += _time_rows(plan.time)
    if plan.budget is not None:
        rows += _budget_rows(plan.budget, c["task"])
    rows += [("note", n) for n in plan.notes]
    return "\n".join(f"{label:<{LABEL}}{text}".rstrip() for label, text in rows)


def _shape(c: dict[str, Any]) -> str:
    if c["arch"] == "hf":
        lora = f", LoRA r={c['lora_r']}" if c["lora_r"] else ""
        return (f"hf:{c['hf_path']} ({c['model_type']}{lora}) {c['n_layer']} layers, {c['n_head']} heads, "
                f"width {c['n_embd']}, context {c['block_size']}, vocab {c['vocab_size']:,}")
    if c["arch"] == "lstm":
        return (f"LSTM {c['n_layer']} layer(s), hidden {c['hidden']}{', bidirectional' if c['bidirectional'] else ''}, "
                f"embedding {c['n_embd']}, texts cut to {c['block_size']}, {c['n_classes']} classes")
    if c["arch"] == "ngram":
        return (f"n-gram bag, vectors of {c['n_embd']}, {c['vocab_size']:,} hashed n-grams, at most "
                f"{c['block_size']} per text, {c['n_classes']} classes")
    kind = f"GPT classifier ({c['n_classes']} classes)" if c["task"] == "classify" else "GPT"
    return (f"{kind} {c['n_layer']} layers, {c['n_head']} heads, width {c['n_embd']}, context {c['block_size']}, "
            f"vocab {c['vocab_size']:,}")


def _data_rows(c: dict[str, Any], d: dict[str, Any]) -> list[tuple[str, str]]:
    rows = []
    if d.get("read"):
        splits = ", ".join(f"{k} {v:,}" for k, v in d["splits"].items())
        rows.append(("data", f"{d['source']} | {d['unit']}: {splits}"))
    else:
        rows.append(("data", "corpus not read (--no-data)"))
    per = "records x block_size, an upper bound" if c["task"] == "classify" else \
        f"{c['batch_size']} x {c['grad_accum']} x {c['block_size']}"
    rows.append(("tokens", f"{fmt_count(d['planned_tokens'])} planned ({d['tokens_per_step']:,} per step: {per})"))
    if c["arch"] == "hf":  # fine-tuning a pretrained model: tokens per parameter are about pretraining
        if "epochs" in d:
            rows.append(("epochs", f"{d['epochs']:.2f} over the training split"))
    elif c["task"] == "lm":
        epochs = f" | {d['epochs']:.2f} epochs of train" if "epochs" in d else ""
        rows.append(("tokens/param", f"{d['tokens_per_param']:.3g} (compute-optimal ~20: "
                                     f"{fmt_count(d['compute_optimal_tokens'])} tokens){epochs}"))
    elif "epochs" in d:
        mean = d.get("mean_tokens_per_record")
        rows.append(("epochs", f"{d['epochs']:.2f} over the training records" +
                     (f" | mean {mean:.0f} tokens per record" if mean else "")))
    return rows


def _memory_rows(m: dict[str, Any]) -> list[tuple[str, str]]:
    verdict = "fits" if m["fits"] else "DOES NOT FIT"
    if not m.get("activations_counted", True):
        verdict += " (activations not counted)"
    rows = [("memory", f"weights {fmt_bytes(m['weights'])} | grads {fmt_bytes(m['grads'])} | optimizer "
                       f"{fmt_bytes(m['optimizer'])} (fp32 parameters, gradients and state)"),
            ("", f"activations per micro-batch {fmt_bytes(m['activations_fp32'])} fp32 | "
                 f"{fmt_bytes(m['activations_bf16'])} bf16 autocast (this run: {m['precision']})")]
    extra = [f"logits {fmt_bytes(m['logits'])}"] if m["logits"] else []
    if m["autocast_weights"]:
        extra.append(f"bf16 weight copies {fmt_bytes(m['autocast_weights'])}")
    rows.append(("", (" | ".join(extra) + " | " if extra else "") + f"total {fmt_bytes(m['total'])} of "
                 f"{fmt_bytes(m['available'])} free ({m['available_source']}): {verdict}"))
    if m["suggestion"]:
        s = m["suggestion"]
        rows.append(("", f"fits with --set train.batch_size={s['batch_size']} --set train.grad_accum={s['grad_accum']}"
                         " (same global batch)"))
    return rows


def _time_rows(t: dict[str, Any]) -> list[tuple[str, str]]:
    from gradwise.core.progress import format_seconds

    if "skipped" in t:
        return [("time", t["skipped"])]
    x = t.get("extrapolated")
    how = (f"extrapolated from steps of {' and '.join(map(str, x['from_samples']))} sample(s) to {x['to_samples']}"
           if x else f"median of {len(t['samples'])} timed steps after {t['warmup_steps']} warm-up")
    rows = [("calibration", f"{t['step_seconds'] * 1000:.1f} ms/step ({how}, micro-batch {t['micro_batch']} x "
                            f"{t['grad_accum']}, {t['batches']}) | {fmt_count(t['flops_per_second'])} FLOP/s | "
                            f"{t['tokens_per_second']:,.0f} tokens/s")]
    if "peak_memory_measured" in t:
        rows.append(("", f"measured peak memory {fmt_bytes(t['peak_memory_measured'])}"))
    rows.append(("time", f"{format_seconds(t['total_seconds'])} = train {format_seconds(t['train_seconds'])} + "
                         f"validation {t['evals']} x {t['val_batches']} batches {format_seconds(t['eval_seconds'])} + "
                         f"{t['checkpoints']} checkpoints {format_seconds(t['checkpoint_seconds'])} + test "
                         f"{t['test_batches']} batches {format_seconds(t['test_seconds'])}"))
    if "capped_by_max_time" in t:
        rows.append(("", f"train.max_time stops the loop at {format_seconds(t['capped_by_max_time'])}"))
    return rows


def _budget_rows(b: dict[str, Any], task: str) -> list[tuple[str, str]]:
    from gradwise.core.progress import format_seconds

    tpp = f" | {b['tokens_per_param']:.3g} tokens/param" if b["tokens_per_param"] else ""
    epochs = f" | {b['epochs']:.2f} epochs" if b["epochs"] else ""
    model = f"GPT {b['n_layer']} layers, {b['n_head']} heads, width {b['n_embd']}" if task == "lm" else \
        "the configured model"
    rows = [("budget", f"{format_seconds(b['budget_seconds'])}: {model} ({b['params']['total']:,} parameters) x "
                       f"{b['steps']:,} steps = {fmt_count(b['tokens'])} tokens{tpp}{epochs}"),
            ("", f"estimated {format_seconds(b['estimated_seconds'])} ({b['step_seconds'] * 1000:.1f} ms/step) | "
                 f"memory {fmt_bytes(b['memory_total'])} of {fmt_bytes(b['memory_available'])}")]
    for c in b["calibrated"]:
        rows.append(("", f"calibrated {c['n_layer']}x{c['n_embd']} ({fmt_count(c['params'])} params): "
                         f"{c['step_seconds'] * 1000:.1f} ms/step, {fmt_count(c['flops_per_second'])} FLOP/s"))
    rows.append(("proposal", " ".join(f"--set {o}" for o in b["overrides"])))
    rows += [("note", n) for n in b["notes"]]
    return rows
