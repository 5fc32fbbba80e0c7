"""Fit diagnosis: read a run's own curves and say how it fits, with the numbers and what to do next.

A run is one or more of: diverged, unstable, overfitting, underfitting, still improving (stopped too
early), converged. Every verdict carries its evidence (the values and steps it was read from) and
concrete next actions with the config keys to change. The rules and their thresholds are below and in
docs/diagnosis.md; they read metrics.jsonl (train windows, evaluations), summary.json and config.yaml,
so they work on a finished run, a diverged one and one still training.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gradwise.config.keys import get_key
from gradwise.config.load import read_config_file
from gradwise.core.rundir import RunDir, read_metrics_checked
from gradwise.tasks.classify_baseline import against_baseline

# Thresholds (docs/diagnosis.md explains each one).
TAIL = 0.25  # "the end of the run": its last quarter of steps (at least its last three evaluations)
IMPROVING = 0.01  # validation best fell >= 1% over the tail: still improving
AT_BEST = 0.005  # ...and the last evaluation is within 0.5% of the best
OVERFIT_RISE = 0.01  # validation ended >= 1% above its minimum, >= 2 evaluations after it...
TRAIN_FELL = 0.01  # ...while training loss fell >= 1% since that minimum
MEMORIZING_GAP = 0.20  # plateaued validation >= 20% above training loss while training still falls >= 5%
SMALL_GAP = 0.05  # at a plateau, validation within 5% of training loss: capacity-limited
BARELY_LEARNED = 0.10  # best validation less than 10% below the untrained model's
LOSS_FLOOR = 1e-4  # relative changes of losses below this (a separable classifier reaches 0) are taken against it
SPIKE = 1.5  # a step's loss >= 1.5x the median of the 5 windows before it
GRAD_SPIKE = 5.0  # a step's gradient norm >= 5x the median of the 5 windows before it
MIN_EVALS = 3  # evaluations (with the untrained baseline) needed to judge anything

ORDER = ("diverged", "below_baseline", "unstable", "overfitting", "underfitting", "still_improving", "converged", "too_early")


@dataclass
class Verdict:
    kind: str  # one of ORDER
    title: str
    evidence: str
    actions: list[str] = field(default_factory=list)


@dataclass
class Diagnosis:
    run: str
    verdicts: list[Verdict]
    facts: dict[str, Any]  # the numbers the rules read (best step, gaps, tail change, spikes)

    @property
    def kinds(self) -> list[str]:
        return [v.kind for v in self.verdicts]

    def to_json(self) -> dict[str, Any]:
        return {"run": self.run, "verdicts": [asdict(v) for v in self.verdicts], "facts": self.facts}


@dataclass
class Curves:
    """A run's curves as the rules read them (non-finite values are None in metrics.jsonl: kept as nan)."""

    train_steps: list[int]
    train_loss: list[float]
    train_loss_max: list[float]
    grad_norm_max: list[float]
    skipped: int
    eval_steps: list[int]
    val_loss: list[float]
    stop_reason: str | None
    stop_step: int | None

    @classmethod
    def from_records(cls, records: list[dict[str, Any]]) -> Curves:
        def num(value: Any) -> float:
            return float(value) if isinstance(value, (int, float)) else math.nan

        train = [r for r in records if r.get("kind") == "train"]
        evals = [r for r in records if r.get("kind") == "eval"]
        stop = next((r for r in reversed(records) if r.get("kind") == "stop"), None)
        return cls(train_steps=[int(r["step"]) for r in train], train_loss=[num(r.get("train_loss")) for r in train],
                   train_loss_max=[num(r.get("train_loss_max", r.get("train_loss"))) for r in train],
                   grad_norm_max=[num(r.get("grad_norm_max", r.get("grad_norm"))) for r in train],
                   skipped=sum(int(r.get("skipped_steps") or 0) for r in train),
                   eval_steps=[int(r["step"]) for r in evals], val_loss=[num(r.get("val_loss")) for r in evals],
                   stop_reason=stop.get("reason") if stop else None, stop_step=stop.get("step") if stop else None)

    def train_near(self, step: int) -> float:
        """Mean training loss of the log windows ending in (step - a window, step + a window]: around ``step``."""
        finite = [(s, v) for s, v in zip(self.train_steps, self.train_loss, strict=True) if math.isfinite(v)]
        if not finite:
            return math.nan
        after = [v for s, v in finite if s >= step][:2]
        before = [v for s, v in finite if s < step][-1:]
        picked = before + after[:1] if after else before
        return sum(picked) / len(picked) if picked else finite[-1][1]

    def last_train(self, windows: int = 2) -> float:
        finite = [v for v in self.train_loss if math.isfinite(v)]
        tail = finite[-windows:]
        return sum(tail) / len(tail) if tail else math.nan


def diagnose_run(run_dir: str | Path) -> Diagnosis:
    """Diagnose the run in ``run_dir`` (finished, diverged or still training)."""
    run = RunDir.existing(run_dir)
    summary_path = run.summary
    summary = json.loads(summary_path.read_text(encoding="utf-8")) if summary_path.is_file() else None
    records, skipped = read_metrics_checked(run.metrics)
    d = diagnose(records, summary, read_config_file(run.config), str(run.path))
    if skipped:
        d.facts["skipped_metric_lines"] = skipped
    return d


def diagnose(records: list[dict[str, Any]], summary: dict[str, Any] | None, config: dict[str, Any],
             run: str = "") -> Diagnosis:
    """The verdicts for a run's metrics records, summary (None while it trains) and config (as a dict)."""
    c = Curves.from_records(records)
    advice = Advice(config)
    steps = (summary or {}).get("steps") or max(c.train_steps + c.eval_steps + [0])
    evals = [(s, v) for s, v in zip(c.eval_steps, c.val_loss, strict=True)]
    finite = [(s, v) for s, v in evals if math.isfinite(v)]
    facts: dict[str, Any] = {"steps": steps, "evaluations": len(evals), "skipped_steps": c.skipped,
                             "stopped_because": (summary or {}).get("stopped_because", "running")}
    verdicts: list[Verdict] = []

    diverged = _diverged(c, evals, finite, summary, advice)
    if diverged:
        verdicts.append(diverged)
    unstable = _unstable(c, finite, advice, facts, diverged is not None)
    if unstable:
        verdicts.append(unstable)
    below = _below_baseline(summary, advice, facts)
    if below:
        verdicts.append(below)
    if diverged or len(finite) < MIN_EVALS:
        if not verdicts:
            verdicts.append(Verdict("too_early", "too early to tell",
                                    f"{len(finite)} evaluation(s) so far; the rules need {MIN_EVALS} (with step 0)",
                                    [f"let it train past a few evaluations (every {advice.eval_every:,} steps)"]))
        return Diagnosis(run, _ordered(verdicts), facts)

    v0 = finite[0][1]
    best_step, best = min(finite, key=lambda e: (e[1], e[0]))
    last_step, last = finite[-1]
    # The tail: the last quarter of the steps, or the last three evaluations if that spans more of them.
    tail_start = min(steps - max(TAIL * steps, 1), finite[-3][0])
    before = [v for s, v in finite if s <= tail_start] or [v0]
    in_tail = [v for s, v in finite if s > tail_start] or [last]
    tail_gain = _relative(min(before) - min(in_tail), min(before))
    train_end = c.last_train()
    gap = (last - train_end) / train_end if math.isfinite(train_end) and train_end > 0 else math.nan
    rise = _relative(last - best, best)
    evals_after_best = sum(1 for s, _ in finite if s > best_step)
    train_at_best = c.train_near(best_step)
    train_fall = (train_at_best - train_end) / train_at_best if train_at_best > 0 else math.nan
    facts.update({"best_step": best_step, "best_val_loss": best, "last_val_loss": last, "untrained_val_loss": v0,
                  "val_change_in_tail": -tail_gain, "tail_steps": int(steps - tail_start), "train_loss_end": train_end,
                  "gap": gap, "rise_from_best": rise, "train_fall_since_best": train_fall})

    overfit = None
    if rise >= OVERFIT_RISE and evals_after_best >= 2 and train_fall >= TRAIN_FELL:
        overfit = Verdict(
            "overfitting", "overfitting",
            f"validation loss rose {rise:.1%} from its minimum {best:.4f} at step {best_step:,} to {last:.4f} at step "
            f"{last_step:,} while training loss fell {train_fall:.0%} ({train_at_best:.4f} -> {train_end:.4f})",
            advice.overfitting(best_step, best))
    elif gap >= MEMORIZING_GAP and tail_gain < IMPROVING and _train_tail_fall(c, tail_start) >= 0.05:
        overfit = Verdict(
            "overfitting", "overfitting (memorizing)",
            f"validation loss {last:.4f} is {gap:.0%} above training loss {train_end:.4f} and stopped improving "
            f"({-tail_gain:+.1%} over the last {int(steps - tail_start):,} steps) while training loss fell "
            f"{_train_tail_fall(c, tail_start):.0%}", advice.overfitting(best_step, best))
    if overfit:
        verdicts.append(overfit)

    improving = tail_gain >= IMPROVING and rise <= AT_BEST
    if improving:
        verdicts.append(Verdict(
            "still_improving", "still improving (stopped too early)",
            f"validation loss fell {tail_gain:.1%} over the last {int(steps - tail_start):,} steps "
            f"({min(before):.4f} -> {min(in_tail):.4f}) and its minimum is the last evaluation",
            advice.more_steps(steps)))
    elif not overfit:
        verdicts.append(Verdict(
            "converged", "converged (plateau)",
            f"validation loss changed {-tail_gain:+.1%} over the last {int(steps - tail_start):,} steps; best "
            f"{best:.4f} at step {best_step:,}", advice.converged(gap)))

    if _relative(best - v0, v0) > -BARELY_LEARNED:
        verdicts.append(Verdict(
            "underfitting", "underfitting (barely learned)",
            f"best validation loss {best:.4f} is only {_relative(v0 - best, v0):.1%} below the untrained model's {v0:.4f}",
            advice.barely_learned()))
    elif not improving and not overfit and math.isfinite(gap) and gap < SMALL_GAP and best > LOSS_FLOOR:
        fit = (f"training loss {train_end:.4f} is {'above' if gap < 0 else 'within ' + format(gap, '.1%') + ' of'} "
               f"validation {last:.4f}")
        verdicts.append(Verdict(
            "underfitting", "underfitting (capacity-limited)",
            f"{fit} and both stopped improving: the model fits its training data no better than unseen data",
            advice.underfitting()))
    return Diagnosis(run, _ordered(verdicts), facts)


def _relative(change: float, ref: float) -> float:
    """A change as a fraction of ``ref``; a loss at (or rounded to) zero, which a separable classifier reaches,
    is measured against LOSS_FLOOR instead of dividing by zero."""
    return change / max(ref, LOSS_FLOOR)


def _ordered(verdicts: list[Verdict]) -> list[Verdict]:
    return sorted(verdicts, key=lambda v: ORDER.index(v.kind))


def _train_tail_fall(c: Curves, tail_start: float) -> float:
    pairs = [(s, v) for s, v in zip(c.train_steps, c.train_loss, strict=True) if math.isfinite(v)]
    before = [v for s, v in pairs if s <= tail_start][-2:]
    if not before or not pairs:
        return 0.0
    ref = sum(before) / len(before)
    return _relative(ref - c.last_train(), ref)


def _diverged(c: Curves, evals: list[tuple[int, float]], finite: list[tuple[int, float]],
              summary: dict[str, Any] | None, advice: Advice) -> Verdict | None:
    best = min(finite, key=lambda e: e[1]) if finite else None
    keep = (f"the best checkpoint (step {best[0]:,}, val {best[1]:.4f}) was saved before it went wrong"
            if best and best[0] > 0 else None)
    if c.stop_reason or (summary or {}).get("stopped_because") == "diverged":
        worst = max((v for v in c.train_loss_max if math.isfinite(v)), default=math.nan)
        evidence = (f"training stopped at step {c.stop_step or (summary or {}).get('steps', 0):,}: "
                    f"{(c.stop_reason or 'non-finite loss').split(';')[0]}")
        if math.isfinite(worst) and finite:
            evidence += f"; the worst finite step's loss was {worst:.4g} (untrained: {finite[0][1]:.4f})"
        return Verdict("diverged", "diverged", evidence, advice.diverged(keep))
    if len(evals) >= 2 and not math.isfinite(evals[-1][1]) and finite:
        return Verdict("diverged", "diverged", f"validation loss became non-finite at step {evals[-1][0]:,}",
                       advice.diverged(keep))
    if len(finite) >= 2 and finite[-1][1] >= finite[0][1] and finite[-1][0] > 0:
        low_step, low = best if best else finite[0]
        return Verdict("diverged", "diverged",
                       f"validation loss ended at {finite[-1][1]:.4f}, no better than the untrained model's "
                       f"{finite[0][1]:.4f} (lowest {low:.4f} at step {low_step:,})", advice.diverged(keep))
    return None


def _below_baseline(summary: dict[str, Any] | None, advice: Advice, facts: dict[str, Any]) -> Verdict | None:
    """A classifier that scores below TF-IDF + logistic regression fitted on its own split (summary's baseline)."""
    cmp = against_baseline(summary or {})
    if cmp is None:
        return None
    facts["against_baseline"] = cmp
    if cmp["margin"] >= 0:
        return None
    return Verdict(
        "below_baseline", "worse than the baseline",
        f"{cmp['split']} macro-F1 {cmp['model_macro_f1']:.4f}, baseline {cmp['baseline_macro_f1']:.4f}: this model is "
        f"worse than a linear baseline (TF-IDF + logistic regression, C={cmp['c']:g}, fitted on the same training "
        "split)", advice.below_baseline())


def _unstable(c: Curves, finite: list[tuple[int, float]], advice: Advice, facts: dict[str, Any],
              diverged: bool) -> Verdict | None:
    """Loss spikes the run recovered from; skipped non-finite steps (those of a divergence are its own)."""
    spikes: list[tuple[int, float, float]] = []  # (step, value, median before)
    grad_spikes = 0
    end = len(c.train_steps) - (2 if diverged else 0)  # a divergence's last windows are its own, not spikes
    for i in range(3, end):
        prev = [v for v in c.train_loss[max(0, i - 5):i] if math.isfinite(v)]
        prev_g = [v for v in c.grad_norm_max[max(0, i - 5):i] if math.isfinite(v)]
        if len(prev) >= 3 and math.isfinite(c.train_loss_max[i]):
            ref = statistics.median(prev)
            if c.train_loss_max[i] >= SPIKE * ref:
                spikes.append((c.train_steps[i], c.train_loss_max[i], ref))
        if len(prev_g) >= 3 and math.isfinite(c.grad_norm_max[i]) and c.grad_norm_max[i] >= GRAD_SPIKE * statistics.median(prev_g):
            grad_spikes += 1
    facts.update({"loss_spikes": len(spikes), "grad_norm_spikes": grad_spikes})
    skipped = 0 if diverged else c.skipped
    if not spikes and not skipped and grad_spikes < 2:
        return None
    parts = []
    if spikes:
        step, value, ref = max(spikes, key=lambda s: s[1] / s[2])
        parts.append(f"{len(spikes)} loss spike(s) (largest {value:.4f} at step {step:,}, {value / ref - 1:.0%} above "
                     f"the {ref:.4f} before it)")
    if grad_spikes:
        parts.append(f"{grad_spikes} gradient-norm spike(s) of {GRAD_SPIKE:g}x or more")
    if skipped:
        parts.append(f"{skipped} non-finite step(s) skipped")
    return Verdict("unstable", "unstable (loss spikes)", "; ".join(parts), advice.unstable())


class Advice:
    """Next actions as `--set` overrides computed from the run's own config."""

    def __init__(self, config: dict[str, Any]):
        self.cfg = config
        get = self._get
        self.lr = float(get("optim.lr", 1e-3))
        self.eval_every = int(get("train.eval_every", 250))
        self.max_steps = int(get("train.max_steps", 0))
        self.arch = get("model.arch", "gpt")

    def _get(self, dotted: str, default: Any = None) -> Any:
        value = get_key(self.cfg, dotted, None)
        return default if value is None else value

    def diverged(self, keep: str | None) -> list[str]:
        out = [keep] if keep else []
        out.append(f"lower the learning rate: --set optim.lr={self.lr / 10:.3g} (or find one: gradwise lr-find)")
        warmup = int(self._get("schedule.warmup_steps", 0))
        if warmup < max(1, self.max_steps // 20):
            out.append(f"warm up longer: --set schedule.warmup_steps={max(100, self.max_steps // 20)}")
        if float(self._get("train.grad_clip", 1.0)) <= 0:
            out.append("clip gradients: --set train.grad_clip=1.0")
        return out

    def unstable(self) -> list[str]:
        out = [f"lower the learning rate: --set optim.lr={self.lr / 2:.3g}"]
        clip = float(self._get("train.grad_clip", 1.0))
        if clip <= 0 or clip > 1.0:
            out.append("clip gradients harder: --set train.grad_clip=1.0")
        out.append(f"average over more data per step: --set train.grad_accum={2 * int(self._get('train.grad_accum', 1))}")
        return out

    def overfitting(self, best_step: int, best: float) -> list[str]:
        out = [f"keep the best checkpoint (step {best_step:,}, val {best:.4f}): gradwise already evaluates that one "
               "on test"]
        reg = []
        dropout = float(self._get("model.dropout", 0.0))
        if dropout < 0.3 and self.arch != "hf":  # a Hugging Face model's dropout lives in its config.json
            reg.append(f"--set model.dropout={min(0.3, round(dropout + 0.1, 2)):g}")
        wd = float(self._get("optim.weight_decay", 0.0))
        reg.append(f"--set optim.weight_decay={0.1 if wd < 0.1 else round(wd * 2, 4):g}")
        out.append("regularize more: " + " ".join(reg))
        if self._get("train.patience") is None:
            out.append("stop at the minimum next time: --set train.patience=3")
        out.append("or give it more (deduplicated) data, or a smaller model")
        return out

    def more_steps(self, steps: int) -> list[str]:
        return [f"train longer: --set train.max_steps={2 * max(steps, self.max_steps):,}".replace(",", ""),
                "a decaying schedule re-plans on a new run; `--resume` with a higher max_steps continues this one"]

    def converged(self, gap: float) -> list[str]:
        if math.isfinite(gap) and gap >= SMALL_GAP:
            return ["the best checkpoint is the one to keep; to go lower, regularize more or add data "
                    f"(validation is {gap:.0%} above training)"]
        return ["the best checkpoint is the one to keep; more steps will not help at this size"]

    def underfitting(self) -> list[str]:
        out = []
        if self.arch == "lstm":
            hidden = int(self._get("model.hidden") or self._get("model.n_embd", 128))
            out.append(f"a bigger model: --set model.hidden={2 * hidden}")
        elif self.arch == "ngram":  # a bag of n-gram vectors has no layers to add
            out.append(f"wider n-gram vectors: --set model.n_embd={2 * int(self._get('model.n_embd', 16))}")
        elif self.arch == "hf":
            out.append("a bigger model: a larger checkpoint (--model hf:DIR)" +
                       (", or a higher LoRA rank (--lora r=...)" if self._get("model.lora") else ""))
        else:
            out.append(f"a bigger model: --set model.n_embd={2 * int(self._get('model.n_embd', 128))} or "
                       f"--set model.n_layer={int(self._get('model.n_layer', 4)) + 2} (check it fits: gradwise plan)")
        less = []
        if float(self._get("model.dropout", 0.0)) > 0:
            less.append("--set model.dropout=0")
        if float(self._get("regularization.l2", 0.0)) > 0 or float(self._get("regularization.l1", 0.0)) > 0:
            less.append("--set regularization.l2=0 --set regularization.l1=0")
        if less:
            out.append("regularize less: " + " ".join(less))
        return out

    def below_baseline(self) -> list[str]:
        out = []
        if self.arch != "ngram":
            out.append("a model made for a few thousand labelled texts: the classify-ngram preset (gradwise train "
                       "classify-ngram --data FILE), a bag of the baseline's hashed n-grams trained by gradwise's step")
        out.append("search its recipe on validation: gradwise tune (dropout, weight decay, lr, steps)")
        out.append("or keep the baseline: summary.json's baseline holds its settings (scikit-learn)")
        return out

    def barely_learned(self) -> list[str]:
        return [f"a larger learning rate (now {self.lr:g}): find one with gradwise lr-find",
                "check the data: a corpus of noise or broken records cannot be learned (gradwise data stats)",
                *self.underfitting()[:1]]


def format_diagnosis(d: Diagnosis, indent: str = "         ") -> list[str]:
    """Terminal lines: one per verdict with its evidence, then its actions."""
    return format_verdicts([asdict(v) for v in d.verdicts], indent)


def format_verdicts(verdicts: list[dict[str, Any]], indent: str = "         ") -> list[str]:
    """The same from verdicts as summary.json keeps them."""
    lines = []
    for v in verdicts:
        lines.append(f"{v['title']}: {v['evidence']}")
        lines.extend(f"{indent}-> {a}" for a in v["actions"])
    return lines
