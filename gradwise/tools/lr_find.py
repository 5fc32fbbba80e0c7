"""The learning-rate range test: a short run whose learning rate grows exponentially, and a suggestion.

Every step uses the next training batch and a learning rate ``start * (end / start) ** (i / (steps - 1))``;
the test stops once the loss (an exponential moving average, for the stop only) is ``stop_factor`` times
its minimum or goes non-finite. The finished curve is smoothed with a centred moving average (no lag, unlike
a moving average that only looks back) and the suggestion is the learning rate where that curve falls
fastest per decade, before its minimum: there the model learns quickest while still far from the rate at
which the loss turns ragged and blows up. (A tenth of the rate at the minimum, the other common rule, fails
when Adam and clipping give a long flat ragged valley: tests/test_diagnosis.py checks the suggestion beats
10x larger and 10x smaller rates on a real run.) All parameter groups are scaled together, so groups with
their own rate (embeddings, Muon) keep their ratio.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from gradwise.config.schema import Config
from gradwise.core.errors import ConfigError
from gradwise.core.rundir import check_dir_path, default_run_name, write_json
from gradwise.core.runtime import backends_for_training, seed_everything, select_device, select_dtype
from gradwise.tasks import prepare_task
from gradwise.tasks.init_from import load_init_weights
from gradwise.training.build import assemble
from gradwise.training.memory import check_memory
from gradwise.training.run_config import resolve_train_config


@dataclass
class LRFindResult:
    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    suggested_lr: float | None
    min_loss_lr: float | None
    steepest_lr: float | None  # where the smoothed loss falls fastest per decade (the suggestion)
    stopped_because: str  # "end" (reached end_lr), "diverged" (loss >= stop_factor x min) or "non-finite"
    seconds: float
    out_dir: str | None = None
    config_lr: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def lr_find(config: Config | str | Path | None = None, *, overrides: list[str] | None = None,
            start_lr: float = 1e-7, end_lr: float = 10.0, steps: int = 100, smooth: float = 0.9,
            stop_factor: float = 4.0, out_dir: str | Path | None = None, save: bool = True) -> LRFindResult:
    """Run the range test on ``config``'s model and data; write lr_find.json and lr_find.png to ``out_dir``."""

    if not 0 < start_lr < end_lr:
        raise ConfigError(f"the range must grow: --start {start_lr:g} and --end {end_lr:g}; use e.g. --start 1e-7 "
                          "--end 10")
    if steps < 10:
        raise ConfigError(f"--steps {steps} is too few to see a curve; use 50 or more")
    if not 0 <= smooth < 1:
        raise ConfigError(f"--smooth {smooth:g} must be in [0, 1), e.g. 0.98")
    cfg, _, stem = resolve_train_config(config, overrides)
    out = Path(out_dir) if out_dir is not None else Path(cfg.out_dir) / default_run_name(f"lr-find-{stem}")
    if save:
        check_dir_path(out, "--out")  # before any work
    device = select_device(cfg.train.device)
    with backends_for_training(device, cfg.train.deterministic):
        seed_everything(cfg.seed)
        task = prepare_task(cfg)
        task.check(("train",))
        check_memory(cfg, task.tokenizer.vocab_size, len(task.classes) if cfg.task == "classify" else 0, device,
                     select_dtype(cfg.train.dtype, device))
        model = task.build_model()
        if cfg.model.init_from:
            load_init_weights(cfg, model)
        result = _range_test(cfg, task, model, device, start_lr, end_lr, steps, smooth, stop_factor)
    if save:
        out.mkdir(parents=True, exist_ok=True)
        result.out_dir = str(out)
        write_json(out / "lr_find.json", result.to_json())
        plot_lr_find(result, out / "lr_find.png", title=f"learning-rate range test: {stem}")
    return result


def _range_test(cfg: Config, task: Any, model: torch.nn.Module, device: torch.device, start_lr: float,
                end_lr: float, steps: int, smooth: float, stop_factor: float) -> LRFindResult:
    base = cfg.optim.lr
    growth = (end_lr / start_lr) ** (1 / (steps - 1))
    # the step training runs (penalties, fp8, compile included) under an exponentially growing rate; every
    # step's loss is read, so the steps stay synchronous
    stepper = assemble(cfg, model, task.objective(), device, max_nonfinite=steps + 1, asynchronous=False,
                       scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(
                           opt, lambda i: start_lr * growth ** i / base)).step
    lrs: list[float] = []
    losses: list[float] = []
    smoothed: list[float] = []
    avg, best = 0.0, math.inf
    stopped = "end"
    t0 = time.perf_counter()
    for i in range(steps):
        batches = []
        for micro in range(cfg.train.grad_accum):
            x, y = task.micro_batch(i, micro)
            batches.append((torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)))
        r = stepper(batches)
        if r.skipped or not math.isfinite(r.loss):
            stopped = "non-finite"
            break
        avg = smooth * avg + (1 - smooth) * r.loss
        value = avg / (1 - smooth ** (i + 1))
        lrs.append(start_lr * growth ** i)  # the main rate (groups with their own keep their ratio)
        losses.append(r.loss)
        smoothed.append(value)
        best = min(best, value)
        if i >= 5 and value >= stop_factor * best:
            stopped = "diverged"
            break
    return _suggest(LRFindResult(lrs, losses, smoothed, None, None, None, stopped, time.perf_counter() - t0,
                                 config_lr=cfg.optim.lr))  # smoothed: replaced by the centred curve


def centred_average(values: list[float], half: int) -> list[float]:
    """Mean over ``values[i - half : i + half + 1]`` (shrinking at the ends): smooths without shifting."""
    out = []
    for i in range(len(values)):
        lo, hi = max(0, i - half), min(len(values), i + half + 1)
        out.append(sum(values[lo:hi]) / (hi - lo))
    return out


def _suggest(res: LRFindResult) -> LRFindResult:
    """The steepest descent of the centred curve before its minimum; the minimum itself for the plot."""
    n = len(res.losses)
    if n < 8:
        res.notes.append("the loss blew up within the first steps: start the range lower (--start)")
        return res
    res.smoothed = centred_average(res.losses, max(2, n // 20))
    i_min = min(range(n), key=res.smoothed.__getitem__)
    res.min_loss_lr = res.lrs[i_min]
    if i_min == n - 1 and res.stopped_because == "end":
        res.notes.append("the loss was still falling at the end of the range: raise --end to see its minimum")
    logs = [math.log10(lr) for lr in res.lrs]
    slopes = [(res.smoothed[j + 1] - res.smoothed[j - 1]) / (logs[j + 1] - logs[j - 1]) for j in range(1, i_min)]
    if not slopes or min(slopes) >= 0:
        res.notes.append("the loss did not fall before its minimum: lower --start")
        return res
    j = 1 + min(range(len(slopes)), key=slopes.__getitem__)
    res.steepest_lr = res.suggested_lr = res.lrs[j]
    return res


def plot_lr_find(res: LRFindResult, path: Path, title: str = "") -> None:
    """Smoothed loss against the learning rate (log scale), the suggestion marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    if res.lrs:
        ax.plot(res.lrs, res.losses, color="0.75", linewidth=0.8, label="loss")
        ax.plot(res.lrs, res.smoothed, linewidth=1.6, label="smoothed")
        ax.set_xscale("log")
        low, high = min(res.smoothed), max(res.smoothed[: max(1, len(res.smoothed) // 10)])
        ax.set_ylim(low - 0.1 * (high - low), high + 0.2 * (high - low))
    if res.suggested_lr:
        ax.axvline(res.suggested_lr, color="tab:green", linestyle="--", label=f"suggested {res.suggested_lr:.2g}")
    if res.min_loss_lr:
        ax.axvline(res.min_loss_lr, color="tab:red", linestyle=":", label=f"lowest loss {res.min_loss_lr:.2g}")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def format_lr_find(res: LRFindResult) -> list[str]:
    """Terminal lines: the range covered, the minimum, the suggestion as an override."""
    if not res.lrs:
        return ["lr-find  no finite loss at all: check the config and data (gradwise data stats)"]
    why = {"end": "reached the end of the range", "diverged": "stopped: the loss blew up",
           "non-finite": "stopped: the loss went non-finite"}[res.stopped_because]
    lines = [f"lr-find  {len(res.lrs)} steps, lr {res.lrs[0]:.2g} -> {res.lrs[-1]:.2g} ({why}), {res.seconds:.1f} s"]
    if res.min_loss_lr is not None:
        lines.append(f"         smoothed loss {res.smoothed[0]:.4f} at the start, lowest {min(res.smoothed):.4f} "
                     f"at lr {res.min_loss_lr:.2g}")
    if res.suggested_lr is not None:
        lines.append(f"suggest  --set optim.lr={res.suggested_lr:.2g}   (where the loss falls fastest; "
                     f"the config has {res.config_lr:g})")
        if res.min_loss_lr and res.min_loss_lr > res.suggested_lr:
            lines.append(f"range    {res.suggested_lr:.2g} .. {res.min_loss_lr:.2g} is where it learns; with Muon or "
                         "SGD the upper part often trains faster. To search it: --space with optim.lr: "
                         f"{{type: float, low: {res.suggested_lr:.2g}, high: {res.min_loss_lr:.2g}, log: true}}")
    lines.extend(f"note     {n}" for n in res.notes)
    if res.out_dir:
        lines.append(f"saved    {res.out_dir}/ (lr_find.png, lr_find.json)")
    return lines
