"""The planner's time: the loop's wall time from a calibration of the real step (gradwise.plan.calibration),
and the ``--budget`` proposal (model size and steps that spend a time budget compute-optimally)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from gradwise.config.load import apply_overrides, build_config
from gradwise.config.schema import Config
from gradwise.config.validate import parse_duration
from gradwise.core.device_memory import available_memory
from gradwise.core.errors import ConfigError
from gradwise.models.cost import ModelSpec, flops_per_token, param_counts
from gradwise.plan.calibration import calibrate
from gradwise.plan.estimate import (
    CHINCHILLA_TOKENS_PER_PARAM,
    Plan,
    budget_seconds,
    model_spec,
    tokens_per_step,
)
from gradwise.tasks.lm_eval import AUTO_PILOT_BATCHES
from gradwise.training.memory import MEMORY_HEADROOM, fitting_micro_batch, memory_bytes

MAX_EPOCHS = 4.0  # repeated data is nearly as good as fresh up to ~4 epochs (Muennighoff et al. 2023)
MAX_CALIBRATIONS = 4  # model sizes calibrated while searching for a budget's proposal
MIN_STEPS = 10  # a proposal shorter than this is not a training run
EVAL_SHARE = 0.1  # a proposal spends at most this share of its budget on validation (when it has to choose)



# ---------------------------------------------------------------- wall time of the loop

def loop_time(cfg: Config, info: dict[str, Any], timing: dict[str, Any], micro: int,
              steps: int | None = None, eval_every: int | None = None) -> dict[str, Any]:
    """Wall time of ``train``: steps, validation (step 0, every eval_every, the last step), checkpoints and
    the one test evaluation, from calibrated seconds. The loop (``summary.json``'s train_seconds) is
    everything but the test evaluation. Best checkpoints are counted at every evaluation: an upper bound."""
    t = cfg.train
    steps = t.max_steps if steps is None else steps
    every = eval_every or t.eval_every
    evals = 1 + steps // every + (1 if steps % every else 0)
    ckpt_every = t.checkpoint_every or every
    saves = steps // ckpt_every + (1 if steps % ckpt_every else 0)
    val, test = _eval_batches(cfg, info, micro)
    out = {"steps": steps, "train_seconds": steps * timing["step_seconds"], "evals": evals, "val_batches": val,
           "eval_seconds": evals * val * timing["forward_seconds"], "checkpoints": saves + evals,
           "checkpoint_seconds": saves * timing["save_last_seconds"] + evals * timing["save_best_seconds"],
           "test_batches": test if t.test_eval else 0}
    out["test_seconds"] = out["test_batches"] * timing["forward_seconds"]
    out["loop_seconds"] = out["train_seconds"] + out["eval_seconds"] + out["checkpoint_seconds"]
    max_time = parse_duration(t.max_time)
    if max_time is not None and out["loop_seconds"] > max_time:
        out["capped_by_max_time"] = max_time
        out["loop_seconds"] = max_time
    out["total_seconds"] = out["loop_seconds"] + out["test_seconds"]
    return out


def _eval_batches(cfg: Config, info: dict[str, Any], micro: int) -> tuple[int, int]:
    """Batches per validation pass and in the test pass (LM: fixed windows; classify: every record)."""
    t = cfg.train
    if cfg.task == "lm":
        batches = AUTO_PILOT_BATCHES if t.eval_batches == "auto" else t.eval_batches  # auto: as until it chooses
        if "val_windows_all" not in info:
            return batches, batches
        val = min(info["val_windows_all"], batches * micro)
        return math.ceil(val / micro), math.ceil(info["test_windows_all"] / micro)
    splits = info.get("splits")
    if not splits:
        return (AUTO_PILOT_BATCHES, AUTO_PILOT_BATCHES) if t.eval_batches == "auto" else (t.eval_batches,) * 2
    return math.ceil(splits["val"] / micro), math.ceil(splits["test"] / micro)


def estimate_time(cfg: Config, spec: ModelSpec, info: dict[str, Any], task: Any, device: torch.device,
                  plan: Plan, say: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Calibrate at the micro-batch that fits (the configured one, or the suggestion) and add up the loop."""
    mem = plan.memory
    micro, accum = cfg.train.batch_size, cfg.train.grad_accum
    if not mem["fits"]:
        if mem["suggestion"] is None:
            return {"skipped": "not calibrated: the model does not fit in memory at any micro-batch"}
        micro, accum = mem["suggestion"]["batch_size"], mem["suggestion"]["grad_accum"]
    if cfg.train.compile and device.type == "cpu":  # compiling a model takes minutes on a few cores
        cfg = build_config(apply_overrides(cfg.to_dict(), ["train.compile=false"]))
        plan.notes.append("the step was timed without torch.compile: compiling on a CPU takes minutes, longer than "
                          "the calibration is allowed (a compiled step is usually no slower)")
    if say is not None:
        say(f"calibrating: timing real steps of micro-batch {micro} x {accum}" +
            ("" if mem["fits"] else " (the micro-batch that fits, not the configured one)"))
    timing = calibrate(cfg, spec, device, micro, accum, task, say)
    if timing["extrapolated"]:
        plan.notes.append(f"the step time is extrapolated from steps of {timing['extrapolated']['from_samples']} "
                          f"sample(s) to {timing['extrapolated']['to_samples']}: timing full steps here would take "
                          "minutes (gradwise plan bounds its calibration)")
    if device.type == "cpu" and timing["cores"] and timing["load"] > timing["cores"]:
        plan.notes.append(f"this machine is busy (load {timing['load']:g} on {timing['cores']} cores): the times "
                          "measured now are inflated and noisy; plan again when it is quieter")
    out = {**timing, **loop_time(cfg, info, timing, micro)}
    tokens = tokens_per_step(cfg)
    if "mean_tokens_per_record" in info:  # real batches: count the texts' mean length, not the upper bound
        tokens = cfg.train.batch_size * cfg.train.grad_accum * info["mean_tokens_per_record"]
    out["flops_per_second"] = plan.flops["per_token"] * tokens / timing["step_seconds"]
    out["tokens_per_second"] = tokens / timing["step_seconds"]
    return out


# ---------------------------------------------------------------- the budget proposal

def candidate_shapes() -> list[tuple[int, int, int]]:
    """(n_layer, n_head, n_embd) of a GPT family: ~64 width per layer as GPT-2 small (768 / 12) and nanoGPT's
    Shakespeare model (384 / 6), at least 2 layers; heads of width 32 below 256, 64 from there."""
    widths = [32, 48, 64, 96, 128, 160, 192, 224, 256, 320, 384, 448, 512, 640, 768, 896, 1024, 1280, 1536, 2048]
    out = []
    for c in widths:
        head = 64 if c >= 256 and c % 64 == 0 else 32 if c % 32 == 0 else c
        out.append((max(2, round(c / 64)), c // head, c))
    return out


class Throughput:
    """Seconds per step as a function of FLOPs per step, interpolated log-log between calibrated sizes and
    extrapolated at the nearest size's FLOP/s (so every proposal ends on a size that was really timed)."""

    def __init__(self) -> None:
        self.points: list[tuple[float, dict[str, Any]]] = []  # (flops per step, calibration)

    def add(self, flops: float, timing: dict[str, Any]) -> None:
        self.points.append((flops, timing))
        self.points.sort(key=lambda p: p[0])

    def predict(self, flops: float) -> dict[str, float]:
        """Step, forward and checkpoint seconds at this many FLOPs per step."""
        pts = self.points
        if flops <= pts[0][0] or len(pts) == 1 or flops >= pts[-1][0]:
            f0, near = pts[0] if flops <= pts[0][0] or len(pts) == 1 else pts[-1]
            return _scaled(near, flops / f0)
        i = next(k for k in range(1, len(pts)) if pts[k][0] >= flops)
        (fa, a), (fb, b) = pts[i - 1], pts[i]
        w = math.log(flops / fa) / math.log(fb / fa)
        step = math.exp((1 - w) * math.log(a["step_seconds"]) + w * math.log(b["step_seconds"]))
        return _scaled(a, step / a["step_seconds"])


def _scaled(timing: dict[str, Any], factor: float) -> dict[str, float]:
    keys = ("step_seconds", "forward_seconds", "save_last_seconds", "save_best_seconds")
    return {k: timing[k] * factor for k in keys}


def propose(cfg: Config, spec: ModelSpec, info: dict[str, Any], device: torch.device, bf16: bool,
            budget: str | float, plan: Plan, max_epochs: float | None = MAX_EPOCHS) -> dict[str, Any]:
    """A config that spends ``budget`` well: for a language model the size whose affordable tokens are
    closest to 20 per parameter (bounded by MAX_EPOCHS of the data and by memory); for a classifier the
    steps that fit (its size is the user's choice: Chinchilla's rule is about LM pretraining)."""
    seconds = budget_seconds(budget)  # already validated by plan_run
    limit = f"{int(seconds)}s" if not isinstance(budget, str) else budget.strip()
    train_tokens = (info.get("splits") or {}).get("train")
    max_tokens = max_epochs * train_tokens if train_tokens and max_epochs else math.inf
    base = plan.time if plan.time and "step_seconds" in plan.time else None
    if cfg.task != "lm" or cfg.model.init_from:
        why = ("classification: the model keeps its size; the budget sets the steps" if cfg.task != "lm" else
               "model.init_from fixes the model's size; the budget sets the steps")
        return _steps_only(cfg, spec, info, device, seconds, limit, plan, base, why)
    meter = Throughput()
    if base is not None:
        meter.add(flops_per_token(spec)[0] * tokens_per_step(cfg), base)
    candidates = [_candidate(cfg, shape, info, device, bf16) for shape in candidate_shapes()]
    candidates = [c for c in candidates if c["micro"] is not None]
    if not candidates:
        raise ConfigError("no model size fits in memory at this context and batch; lower model.block_size")
    n = plan.params["total"]  # nothing timed yet: start at the size closest to the configured model
    chosen = min(candidates, key=lambda c: abs(math.log(c["params"]["total"] / n))) if not meter.points else None
    for _ in range(MAX_CALIBRATIONS + 1):
        if meter.points:
            feasible = [s for c in candidates if (s := _schedule(cfg, c, info, meter, seconds, max_tokens))]
            if not feasible:
                break
            chosen = _closest_to_optimal(feasible)["cand"]
            if chosen.get("calibrated"):
                break
        if sum(1 for c in candidates if c.get("calibrated")) >= MAX_CALIBRATIONS:
            break
        _calibrate_candidate(chosen, device, meter)
    feasible = [s for c in candidates if c.get("calibrated") and (s := _schedule(cfg, c, info, meter, seconds,
                                                                                   max_tokens))]
    if not feasible:
        raise ConfigError(f"--budget {limit} is too short for {MIN_STEPS} steps of even the smallest model here")
    best = _closest_to_optimal(feasible)
    return _proposal(cfg, best, info, seconds, limit, candidates, [])


def _closest_to_optimal(scheduled: list[dict[str, Any]]) -> dict[str, Any]:
    """The scheduled size whose tokens per parameter is nearest 20, on a log scale (2x too many = 2x too few)."""
    return min(scheduled, key=lambda s: abs(math.log(s["tokens_per_param"] / CHINCHILLA_TOKENS_PER_PARAM)))


def _candidate(cfg: Config, shape: tuple[int, int, int], info: dict[str, Any], device: torch.device,
               bf16: bool) -> dict[str, Any]:
    """A model size of the family at the user's context, vocabulary, batch and optimizer, and the
    micro-batch that fits it (None: not even 1)."""
    layers, heads, width = shape
    sets = [f"model.n_layer={layers}", f"model.n_head={heads}", f"model.n_embd={width}"]
    ccfg = build_config(apply_overrides(cfg.to_dict(), sets))
    cspec = model_spec(ccfg, info["vocab_size"])
    t, o = ccfg.train, ccfg.optim
    available, _ = available_memory(device)
    micro = fitting_micro_batch(cspec, o.name, o.momentum, t.batch_size, t.grad_accum, bf16, device.type, available)
    return {"shape": shape, "overrides": sets, "cfg": ccfg, "spec": cspec, "micro": micro,
            "params": param_counts(cspec), "flops_per_step": flops_per_token(cspec)[0] * tokens_per_step(ccfg),
            "memory": memory_bytes(cspec, o.name, o.momentum, micro[0], bf16, device.type)["total"] if micro else None,
            "available": available}


def _calibrate_candidate(cand: dict[str, Any], device: torch.device, meter: Throughput) -> None:
    micro, accum = cand["micro"]
    timing = calibrate(cand["cfg"], cand["spec"], device, micro, accum)
    cand["calibrated"] = timing
    meter.add(cand["flops_per_step"], timing)


def _schedule(cfg: Config, cand: dict[str, Any], info: dict[str, Any], meter: Throughput, seconds: float,
              max_tokens: float) -> dict[str, Any] | None:
    """The most steps of this size that fit the budget and the data cap; None when fewer than MIN_STEPS."""
    timing = cand.get("calibrated") or meter.predict(cand["flops_per_step"])
    per_step = tokens_per_step(cand["cfg"])
    cap = math.floor(max_tokens / per_step) if math.isfinite(max_tokens) else None
    fit = _fit_steps(cfg, cand["cfg"], info, timing, cand["micro"][0], seconds, cap)
    if fit is None:
        return None
    tokens = fit["steps"] * per_step
    return {**cand, **fit, "cand": cand, "timing": timing, "tokens": tokens,
            "tokens_per_param": tokens / cand["params"]["non_embedding"]}


def _fit_steps(cfg: Config, run_cfg: Config, info: dict[str, Any], timing: dict[str, Any], micro: int,
               seconds: float, cap: int | None = None) -> dict[str, Any] | None:
    """The most steps of ``run_cfg`` within ``seconds`` (and ``cap``), evaluating at the user's cadence but at
    least ~4 times, and at most as often as EVAL_SHARE of the budget allows; None when fewer than MIN_STEPS fit."""
    run_cfg, sets = _eval_size(run_cfg, info, timing, micro, seconds)
    per_eval = _eval_batches(run_cfg, info, micro)[0] * timing["forward_seconds"]
    intervals = max(1, int(EVAL_SHARE * seconds / per_eval) - 1) if per_eval > 0 else 1 << 30

    def every(steps: int) -> int:
        return max(1, min(cfg.train.eval_every, steps // 4), math.ceil(steps / intervals))

    fit = max_steps_within(lambda n: loop_time(run_cfg, info, timing, micro, n, every(n))["total_seconds"], seconds)
    steps = min(fit, cap) if cap is not None else fit
    if steps < MIN_STEPS:
        return None
    return {"steps": steps, "data_limited": steps < fit, "sets": sets + _cadence_sets(cfg, steps, every(steps)),
            "time": loop_time(run_cfg, info, timing, micro, steps, every(steps))}


def _eval_size(run_cfg: Config, info: dict[str, Any], timing: dict[str, Any], micro: int,
               seconds: float) -> tuple[Config, list[str]]:
    """The config as the budget runs it (no train.max_time: the budget is the limit being planned), with fewer
    validation batches (LM) when two evaluations alone would take more than EVAL_SHARE of the budget."""
    sets: list[str] = []
    forward = timing["forward_seconds"]
    if run_cfg.task == "lm" and 2 * _eval_batches(run_cfg, info, micro)[0] * forward > EVAL_SHARE * seconds:
        sets = [f"train.eval_batches={max(1, int(EVAL_SHARE * seconds / (2 * forward)))}"]
    return build_config(apply_overrides(run_cfg.to_dict(), ["train.max_time=null", *sets])), sets


def max_steps_within(total_seconds: Callable[[int], float], seconds: float) -> int:
    """The largest step count whose estimated wall time stays within ``seconds`` (0 if none)."""
    lo, hi = 0, 1
    while total_seconds(hi) <= seconds and hi < 1 << 40:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if total_seconds(mid) <= seconds else (lo, mid)
    return lo


def _proposal(cfg: Config, best: dict[str, Any], info: dict[str, Any], seconds: float, limit: str,
              candidates: list[dict[str, Any]], notes: list[str]) -> dict[str, Any]:
    """The proposal as ``--set`` overrides with what it costs; ``best`` is a scheduled size."""
    steps, (micro, accum) = best["steps"], best["micro"]
    sets = list(best["overrides"]) + [f"train.max_steps={steps}"]
    sets += _batch_sets(cfg, micro, accum) + best["sets"] + [f"train.max_time={limit}"]
    train = (info.get("splits") or {}).get("train")
    seen = best["tokens"] if cfg.task == "lm" else steps * micro * accum  # tokens, or records
    if best["data_limited"]:
        notes.append(f"data-limited: {MAX_EPOCHS:g} epochs of the training split ({train:,} tokens) is all this "
                     f"proposal trains on; it uses {best['time']['total_seconds'] / seconds:.0%} of the budget "
                     "(more data would let a larger model use the rest)")
    if not info.get("read"):
        notes.append("corpus not read (--no-data): the proposal is not bounded by the data")
    calibrated = [{"n_layer": c["shape"][0], "n_head": c["shape"][1], "n_embd": c["shape"][2],
                   "params": c["params"]["total"], "step_seconds": c["calibrated"]["step_seconds"],
                   "flops_per_second": c["flops_per_step"] / c["calibrated"]["step_seconds"]}
                  for c in candidates if c.get("calibrated")]
    return {"budget_seconds": seconds, "n_layer": best["shape"][0], "n_head": best["shape"][1],
            "n_embd": best["shape"][2], "params": best["params"], "steps": steps, "tokens": best["tokens"],
            "tokens_per_param": best["tokens_per_param"], "epochs": seen / train if train else None,
            "data_limited": best["data_limited"], "estimated_seconds": best["time"]["total_seconds"],
            "time": best["time"], "step_seconds": best["timing"]["step_seconds"], "memory_total": best["memory"],
            "memory_available": best["available"], "fits": best["memory"] <= MEMORY_HEADROOM * best["available"],
            "calibrated": calibrated, "overrides": sets, "notes": notes}


def _batch_sets(cfg: Config, micro: int, accum: int) -> list[str]:
    t = cfg.train
    if micro == t.batch_size:
        return []
    return [f"train.batch_size={micro}"] + ([] if t.tokens_per_step is not None else [f"train.grad_accum={accum}"])


def _cadence_sets(cfg: Config, steps: int, every: int) -> list[str]:
    """The evaluation cadence, and a warmup of at most a tenth of the run, where they differ from the config."""
    out = [f"train.eval_every={every}"] if every != cfg.train.eval_every else []
    warmup = min(cfg.schedule.warmup_steps, max(1, steps // 10))
    if warmup != cfg.schedule.warmup_steps:
        out.append(f"schedule.warmup_steps={warmup}")
    return out


def _steps_only(cfg: Config, spec: ModelSpec, info: dict[str, Any], device: torch.device, seconds: float,
                limit: str, plan: Plan, base: dict[str, Any] | None, why: str) -> dict[str, Any]:
    """The model keeps its size; the budget decides the steps (and the micro-batch, if memory says so)."""
    mem = plan.memory
    if not mem["fits"] and mem["suggestion"] is None:
        raise ConfigError("the model does not fit in memory at any micro-batch; shrink it before budgeting")
    s = mem["suggestion"] or {"batch_size": cfg.train.batch_size, "grad_accum": cfg.train.grad_accum}
    micro, accum = s["batch_size"], s["grad_accum"]
    timing = base or calibrate(cfg, spec, device, micro, accum)
    memory = memory_bytes(spec, cfg.optim.name, cfg.optim.momentum, micro, mem["precision"] != "fp32", device.type)
    fit = _fit_steps(cfg, cfg, info, timing, micro, seconds)
    if fit is None:
        raise ConfigError(f"--budget {limit} is too short for {MIN_STEPS} steps of this model here")
    best = {**fit, "shape": (spec.n_layer, spec.n_head, spec.n_embd), "params": plan.params, "micro": (micro, accum),
            "overrides": [], "tokens": fit["steps"] * tokens_per_step(cfg), "tokens_per_param": None,
            "timing": timing, "memory": memory["total"], "available": mem["available"]}
    return _proposal(cfg, best, info, seconds, limit, [], [why])


def size_for_tokens(cfg: Config, info: dict[str, Any], tokens: float, device: torch.device,
                    bf16: bool, max_epochs: float | None = MAX_EPOCHS) -> dict[str, Any]:
    """The size of the family (at the config's context, batch and optimizer) whose non-embedding parameters are
    nearest ``tokens`` / 20 (``tokens`` capped at MAX_EPOCHS of the training split), and the micro-batch that
    fits it: a token budget sizes a model without timing anything."""
    train_tokens = (info.get("splits") or {}).get("train")
    seen = min(tokens, max_epochs * train_tokens) if train_tokens and max_epochs else tokens
    target = max(seen / CHINCHILLA_TOKENS_PER_PARAM, 1.0)
    fitting = [c for c in (_candidate(cfg, s, info, device, bf16) for s in candidate_shapes()) if c["micro"]]
    if not fitting:
        raise ConfigError("no model size fits in memory at this context and batch; lower model.block_size")
    best = min(fitting, key=lambda c: abs(math.log(c["params"]["non_embedding"] / target)))
    return {"n_layer": best["shape"][0], "n_head": best["shape"][1], "n_embd": best["shape"][2],
            "params": best["params"], "tokens": seen, "tokens_per_param": seen / best["params"]["non_embedding"],
            "overrides": list(best["overrides"]) + _batch_sets(cfg, *best["micro"])}
