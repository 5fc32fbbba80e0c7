"""gradwise autofit: candidates from the diagnosis, the budget honoured, resume, failures recorded, and the test
split read exactly once."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

pytest.importorskip("optuna")

import gradwise.autofit.rounds as rounds  # noqa: E402
from gradwise.autofit import autofit  # noqa: E402
from gradwise.autofit.budget import MIN_STEPS, RunCost, parse_budget, plan_rungs  # noqa: E402
from gradwise.autofit.candidates import Candidate, within_noise  # noqa: E402
from gradwise.autofit.moves import Move, action_overrides, moves_from  # noqa: E402
from gradwise.cli.commands import main  # noqa: E402
from gradwise.config.load import load_config  # noqa: E402
from gradwise.core.errors import ConfigError, GradwiseError  # noqa: E402
from gradwise.training.diagnose import diagnose  # noqa: E402

SMALL = ["model.n_layer=1", "model.n_head=2", "model.n_embd=16", "model.block_size=16", "train.batch_size=4",
         "data.split_chunks=1", "data.dedupe=false", "data.check=false"]


def _curves(val: list[float], train: list[float], every: int = 100) -> list[dict]:
    records = [{"kind": "train", "step": (i + 1) * every // 2, "train_loss": v} for i, v in enumerate(train)]
    records += [{"kind": "eval", "step": i * every, "val_loss": v} for i, v in enumerate(val)]
    return records


def _verdicts(records: list[dict], config: dict, summary: dict | None = None) -> tuple[list[dict], dict]:
    d = diagnose(records, summary or {"steps": max(r["step"] for r in records)}, config)
    return d.to_json()["verdicts"], d.facts


def test_a_planted_overfitting_run_leads_to_a_regularized_candidate() -> None:
    config = load_config("default").to_dict()
    val = [4.0, 2.0, 1.5, 1.4, 1.5, 1.7, 1.9]  # falls to step 300, then climbs
    train = [3.5, 2.5, 1.8, 1.5, 1.3, 1.2, 1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.45, 0.4]
    verdicts, facts = _verdicts(_curves(val, train), config)
    assert "overfitting" in [v["kind"] for v in verdicts]
    moves = moves_from(verdicts, config, facts)
    regularized = [m for m in moves if m.changes.get("model.dropout", 0) > config["model"]["dropout"]
                   or m.changes.get("optim.weight_decay", 0) > config["optim"]["weight_decay"]]
    assert regularized and all("overfitting" in m.reason for m in regularized)
    assert not any("train.max_steps" in m.changes for m in moves)  # the rungs decide the length


def test_a_diverged_run_leads_to_a_lower_learning_rate() -> None:
    config = load_config("default").to_dict()
    records = _curves([4.0, 3.0, 3.5], [3.5, 3.0, 2.8, 50.0]) + [
        {"kind": "stop", "step": 200, "reason": "non-finite loss at step 200; lower optim.lr"}]
    verdicts, facts = _verdicts(records, config, {"steps": 200, "stopped_because": "diverged"})
    assert verdicts[0]["kind"] == "diverged"
    lrs = [m.changes["optim.lr"] for m in moves_from(verdicts, config, facts) if "optim.lr" in m.changes]
    assert lrs and max(lrs) < config["optim"]["lr"] and pytest.approx(config["optim"]["lr"] / 10) in lrs


def test_action_overrides_read_each_alternative() -> None:
    assert action_overrides("a bigger model: --set model.n_embd=256 or --set model.n_layer=6 (check it fits)") == [
        {"model.n_embd": 256}, {"model.n_layer": 6}]
    assert action_overrides("regularize more: --set model.dropout=0.1 --set optim.weight_decay=0.2") == [
        {"model.dropout": 0.1, "optim.weight_decay": 0.2}]
    assert action_overrides("train longer: --set train.max_steps=2400") == []


def test_budgets_parse_and_a_budget_too_small_names_what_is_enough() -> None:
    assert parse_budget("20m").amount == 1200 and parse_budget("5M tokens").amount == 5e6
    assert parse_budget("2e6 tokens").unit == "tokens"
    for bad in ("", "soon", "-5m", "0 tokens", "nan"):
        with pytest.raises(ConfigError, match="--budget"):
            parse_budget(bad)
    cost = RunCost("seconds", fixed=2.0, per_step=0.5, per_eval=0.2)
    plan = plan_rungs(cost, 600, 10)
    assert plan.first_steps >= MIN_STEPS and plan.planned <= (600 - 10) * 0.9
    with pytest.raises(ConfigError, match=r"too small.*needs about 4 min"):
        plan_rungs(cost, 20, 5)
    cheap = RunCost("seconds", fixed=0.5, per_step=0.05, per_eval=0.02)
    with pytest.raises(ConfigError, match=r"too small.*needs about \d+ s") as exc:
        plan_rungs(cheap, 5, 1)
    enough = int(str(exc.value).split("needs about ")[1].split(" s")[0])
    plan_rungs(cheap, enough, 1)  # what the refusal names is enough


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text("the cat sat on the mat. the dog sat on the log.\n" * 300, encoding="utf-8")
    return path


def test_autofit_keeps_its_budget_tests_once_and_records_every_decision(corpus: Path, tmp_path: Path,
                                                                        monkeypatch) -> None:
    tested = []
    real_eval = rounds.evaluate_run
    monkeypatch.setattr(rounds, "evaluate_run", lambda *a, **k: tested.append(a) or real_eval(*a, **k))
    started = time.monotonic()
    result = autofit("default", [*SMALL, f"data.path={corpus}"], budget="25s", out_dir=tmp_path / "af", name="lm")
    wall = time.monotonic() - started
    assert wall <= 25 * 1.1, wall
    assert len(tested) == 1 and result.test is not None and result.best is not None
    record = json.loads((result.out / "autofit.json").read_text())
    cands = [c for r in record["rounds"] for c in r["candidates"]]
    assert record["rounds"][0]["stage"] == "start" and any(r["stage"] == "promote" for r in record["rounds"])
    final = [c for r in record["rounds"] if r["stage"] == "final" for c in r["candidates"]]
    assert final and final[0]["state"] == "complete"  # sized by the winner's measured speed, and not skipped
    final_cfg = load_config(str(Path(final[0]["run"]) / "config.yaml"))
    assert final_cfg.schedule.horizon == "time" and final_cfg.train.max_time  # it decays before the clock stops it
    for c in cands:
        assert c["reason"] and c["state"] in ("complete", "failed", "skipped")
        if c["state"] == "complete":
            summary = json.loads((Path(c["run"]) / "summary.json").read_text())
            assert summary["test_loss"] is None  # only validation decided
            assert c["verdicts"] and c["score"] == pytest.approx(summary["best_val_loss"])
    assert result.best.score == min(c["score"] for c in cands if c["state"] == "complete")
    best = load_config(str(result.out / "best.yaml"))
    assert best.train.test_eval and best.train.max_steps == result.best.steps
    assert best.schedule.horizon == "steps" and best.train.max_time is None  # the budget's clock is not the user's
    page = (result.out / "report.html").read_text(encoding="utf-8")  # the page: every round, every candidate
    assert 'id="chart-rounds"' in page and "The winner beside the start" in page
    assert all(f">{c['slot']}<" in page for c in cands) and all(r["why"] in page for r in record["rounds"])


def test_the_report_command_rebuilds_an_autofit_page_and_refuses_a_damaged_record(tmp_path: Path, capsys) -> None:
    record = {"task": "lm", "budget": {"amount": 60, "unit": "seconds"}, "spent": 50.0, "best": "1.expand.0",
              "test": {"slot": "1.expand.0", "loss": 1.5}, "rounds": [
                  {"round": 0, "stage": "start", "level": 0, "steps": 8, "parent": None, "why": "the <start>",
                   "candidates": [{"slot": "0.start", "changes": {}, "reason": "start", "state": "complete",
                                   "score": 2.0, "verdicts": [{"kind": "still_improving"}], "cost": 3.0,
                                   "steps": 8, "run": str(tmp_path / "gone")}]},
                  {"round": 1, "stage": "expand", "level": 0, "steps": 8, "parent": "0.start", "why": "moves",
                   "candidates": [{"slot": "1.expand.0", "changes": {"optim.lr": 0.02}, "reason": "lr x 2",
                                   "state": "complete", "score": 1.5, "verdicts": [], "cost": 3.0, "steps": 8},
                                  {"slot": "1.expand.1", "changes": {"optim.lr": 0.5}, "reason": "TPE",
                                   "state": "failed", "score": None, "fail_reason": "diverged", "cost": 1.0,
                                   "steps": 8}]}]}
    (tmp_path / "autofit.json").write_text(json.dumps(record), encoding="utf-8")
    assert main(["report", str(tmp_path)]) == 0
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "the &lt;start&gt;" in page and "optim.lr=0.02" in page and "diverged" in page  # escaped, all shown
    (tmp_path / "autofit.json").write_text("{not json", encoding="utf-8")
    capsys.readouterr()
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "again.html")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "autofit.json is damaged" in err


def test_a_failing_candidate_is_recorded_and_skipped(corpus: Path, tmp_path: Path, monkeypatch) -> None:
    real = rounds.moves_from
    monkeypatch.setattr(rounds, "moves_from", lambda *a: [Move({"model.dropout": 7.0}, "planted: out of range"),
                                                          *real(*a)])
    result = autofit("default", [*SMALL, f"data.path={corpus}"], budget="60000 tokens", out_dir=tmp_path, name="f")
    cands = [c for r in result.record["rounds"] for c in r["candidates"]]
    failed = [c for c in cands if c["changes"] == {"model.dropout": 7.0}]
    assert failed and all(c["state"] == "failed" and "model.dropout" in c["fail_reason"] for c in failed)
    assert result.best is not None and result.best.overrides.get("model.dropout") != 7.0


def test_resume_after_an_interruption_continues_the_same_study(corpus: Path, tmp_path: Path, monkeypatch,
                                                               capsys) -> None:
    args = ["autofit", "--data", str(corpus), "--budget", "60000 tokens", "--out-dir", str(tmp_path), "--name", "r",
            *[x for s in SMALL for x in ("--set", s)]]
    real, trained = rounds.run_candidate, []

    def interrupt_fourth(cand, *a, **k):
        if len(trained) == 3 and rounds.find_recorded(a[1], cand.slot) is None:
            raise KeyboardInterrupt
        out = real(cand, *a, **k)
        trained.append(cand.slot)
        return out

    monkeypatch.setattr(rounds, "run_candidate", interrupt_fourth)
    assert main(args) == 130
    first = list(trained)
    monkeypatch.setattr(rounds, "run_candidate", real)
    assert main(args) == 2 and "already exists; add --resume" in capsys.readouterr().err
    retrained = []
    monkeypatch.setattr(rounds, "train", lambda *a, **k: pytest.fail("the probe ran again"))
    monkeypatch.setattr("gradwise.autofit.candidates.train",
                        lambda *a, **k: retrained.append(k["overrides"]) or rounds_train(*a, **k))
    assert main([*args, "--resume"]) == 0
    names = [next(o for o in sets if o.startswith("name=")) for sets in retrained]
    assert not any(n == f"name={slot}" for n in names for slot in first)  # the finished ones were not redone
    record = json.loads((tmp_path / "r" / "autofit.json").read_text())
    assert record["test"] is not None and len(first) == 3
    other = [*args, "--resume", "--set", "optim.lr=0.5"]
    assert main(other) == 2 and "is another autofit" in capsys.readouterr().err


def test_resume_after_a_kill_continues_the_same_study(corpus: Path, tmp_path: Path, monkeypatch) -> None:
    """SIGKILL mid-round (no handler runs): --resume takes every candidate the record and study hold, redoes the
    one in flight, and finishes."""
    import os
    import signal
    import subprocess
    import sys

    args = ["autofit", "--data", str(corpus), "--budget", "60000 tokens", "--out-dir", str(tmp_path), "--name", "k",
            *[x for s in SMALL for x in ("--set", s)]]
    record_path = tmp_path / "k" / "autofit.json"

    def finished() -> list[str]:
        try:
            record = json.loads(record_path.read_text())
        except (OSError, ValueError):
            return []
        return [c["slot"] for r in record["rounds"] for c in r["candidates"] if c["state"] == "complete"]

    proc = subprocess.Popen([sys.executable, "-m", "gradwise", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    deadline = time.time() + 240
    while len(finished()) < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    done = finished()
    assert len(done) >= 3 and json.loads(record_path.read_text())["test"] is None  # killed mid-way
    retrained = []
    monkeypatch.setattr(rounds, "train", lambda *a, **k: pytest.fail("the probe ran again"))
    monkeypatch.setattr("gradwise.autofit.candidates.train",
                        lambda *a, **k: retrained.append(k["overrides"]) or rounds_train(*a, **k))
    assert main([*args, "--resume"]) == 0
    names = {next(o for o in sets if o.startswith("name=")) for sets in retrained}
    assert not names & {f"name={slot}" for slot in done}  # what finished before the kill was not redone
    assert json.loads(record_path.read_text())["test"] is not None


def rounds_train(*a, **k):
    from gradwise.training.run import train

    return train(*a, **k)


def test_bad_budgets_are_one_line(tmp_path: Path, capsys) -> None:
    assert main(["autofit", "--budget", "soon", "--out-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--budget must be a duration" in err
    with pytest.raises(GradwiseError, match="holds no autofit"):
        autofit("default", SMALL, budget="1m", out_dir=tmp_path, name="none", resume=True)


def test_a_classifier_autofit_reports_its_test_score_beside_the_baseline(tmp_path: Path, capsys) -> None:
    import random

    rng = random.Random(0)
    words = {"sport": "ball goal team match", "food": "bread soup salt cook", "tech": "code chip disk byte"}
    rows = [{"text": " ".join(rng.choice(ws.split()) for _ in range(6)) + " " + rng.choice(["a", "the", "some"]),
             "label": label} for label, ws in words.items() for _ in range(60)]
    data = tmp_path / "texts.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    # A token budget: the schedule is the same on a loaded CI machine (a wall-clock one is tested on the LM above).
    assert main(["autofit", "--task", "classify", "--data", str(data), "--budget", "900k tokens", "--out-dir",
                 str(tmp_path / "af"), "--set", "train.batch_size=16"]) == 0
    out = capsys.readouterr().out
    assert "macro-F1" in out and "| baseline " in out, out
    record = json.loads(next((tmp_path / "af").glob("*/autofit.json")).read_text())
    assert record["task"] == "classify" and record["base"]["model"]["arch"] == "ngram"  # the classify default
    # Ranked on the val loss that chose each checkpoint, not on the noisier macro-F1 (the winner's curse).
    done = [c for r in record["rounds"] for c in r["candidates"] if c["state"] == "complete"]
    assert record["decides"] == "loss" and all(c["score"] == c["val"]["loss"] for c in done)
    assert record["best"] == min(done, key=lambda c: (c["score"], -c["steps"]))["slot"]
    assert record["baseline"]["test"]["macro_f1"] is not None and record["test"]["macro_f1"] is not None
    # The preset stops early (patience 4); its final run trains the rest of the budget all the same.
    final = [c for r in record["rounds"] if r["stage"] == "final" for c in r["candidates"]]
    assert final and final[0]["state"] == "complete", record["rounds"][-1]
    assert load_config(str(Path(final[0]["run"]) / "config.yaml")).train.patience is None
    summary = json.loads((Path(final[0]["run"]) / "summary.json").read_text())
    assert summary["stopped_because"] != "early_stopping" and summary["steps"] == final[0]["steps"]


def test_a_classifier_autofit_ranked_on_macro_f1_by_an_earlier_gradwise_is_not_resumed(tmp_path: Path) -> None:
    """Its scores are 1 - macro-F1, this one's val losses: one study cannot rank both, so it says so in one line."""
    from gradwise.autofit.record import open_record

    out = tmp_path / "old"
    out.mkdir()
    base = load_config("classify-ngram")
    (out / "autofit.json").write_text(json.dumps({"version": 1, "task": "classify", "base": base.to_dict(),
                                                  "budget": {"amount": 600, "unit": "seconds"}, "rounds": []}))
    with pytest.raises(GradwiseError, match="ranked its candidates on another score"):
        open_record(out, base, parse_budget("10m"), resume=True)
    fresh = open_record(tmp_path / "new", base, parse_budget("10m"), resume=False)
    assert fresh["decides"] == "loss" and fresh["version"] == 2


def test_without_a_config_the_start_is_sized_for_the_budget_and_its_rate_range_tested(corpus: Path,
                                                                                        tmp_path: Path) -> None:
    """No config: the planner picks the language model's size for the longest run of the schedule and lr-find
    may raise its learning rate; the winner's config carries both unless a candidate changed them."""
    heard: list[str] = []
    user = ["model.block_size=16", "train.batch_size=4", "data.split_chunks=1", "data.dedupe=false",
            "data.check=false", f"data.path={corpus}"]
    result = autofit(None, user, budget="60000 tokens", out_dir=tmp_path, name="sized", on_event=heard.append)
    start = dict(o.split("=") for o in result.record["start_plan"]["overrides"])
    assert {"model.n_layer", "model.n_embd"} <= set(start) and result.record["start_plan"]["spent"] > 0
    preset_lr = load_config("default").optim.lr
    notes = " ".join(result.record["start_plan"]["notes"])
    assert float(start.get("optim.lr", preset_lr)) >= preset_lr  # the range test only raises a tuned rate
    assert "range test" in notes
    assert int(start["model.n_embd"]) < 128  # a 12k-token text and 60k tokens: far smaller than the preset
    assert any(h.startswith("start    sized by the planner") for h in heard)
    best = result.best_config
    assert best.model.n_embd == result.best.overrides.get("model.n_embd", int(start["model.n_embd"]))
    assert best.optim.lr == pytest.approx(result.best.overrides.get("optim.lr", float(start.get("optim.lr", preset_lr))))


@pytest.mark.parametrize(("shape", "suggested", "sized", "lr"), [
    ((4, 160), 2.2e-3, False, None),  # 1.56x the preset's parameters, a lower rate: the preset as it is
    ((2, 64), 2e-2, True, 2e-2),  # an eighth of the preset, a higher rate: both taken
], ids=["near the preset", "far from it"])
def test_the_start_keeps_the_presets_measured_shape_and_only_raises_its_rate(
        shape: tuple[int, int], suggested: float, sized: bool, lr: float | None,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    import gradwise.autofit.start as start
    from gradwise.autofit.budget import Budget

    proposal = [f"model.n_layer={shape[0]}", f"model.n_embd={shape[1]}", "model.n_head=4"]
    monkeypatch.setattr(start, "_size", lambda *a: (proposal, shape))
    monkeypatch.setattr(start, "lr_find", lambda cfg, steps, save: SimpleNamespace(
        suggested_lr=suggested, lrs=[0.0] * steps, notes=[], stopped_because="done"))
    base = load_config("default")  # 4 layers x 128, Muon lr 8e-3
    plan = start.plan_start(base, [], Budget(600.0, "seconds"), lambda _: None)
    assert ("model.n_embd=" + str(shape[1]) in plan.overrides) == sized
    assert [o for o in plan.overrides if o.startswith("optim.lr=")] == ([f"optim.lr={lr}"] if lr else [])


def test_the_start_keeps_what_the_user_set() -> None:
    from gradwise.autofit.budget import Budget
    from gradwise.autofit.start import plan_start, wants_sizing

    base = load_config("default", ["model.n_embd=32", "optim.lr=0.01", "model.block_size=16"])
    assert wants_sizing(None, base) and not wants_sizing("default", base)
    plan = plan_start(base, ["model.n_embd=32", "optim.lr=0.01"], Budget(60.0, "seconds"), lambda _: None)
    assert plan.overrides == [] and plan.spent < 1  # nothing left to the default: no planner, no range test


def test_under_a_wall_clock_budget_a_rung_is_ranked_by_what_each_run_learned_per_second() -> None:
    """A model three times slower per step that ends lower wins per step but loses at the same seconds; under a
    token budget the same steps are the same spending, and it wins."""
    from types import SimpleNamespace

    from gradwise.autofit.budget import Budget
    from gradwise.autofit.candidates import Candidate
    from gradwise.autofit.rounds import _State

    fast = Candidate("1.expand.0", {}, {}, 100, "0.start", "", "rule", state="complete", score=2.0,
                     curve=[[0.0, 4.0], [5.0, 2.5], [10.0, 2.0]])
    wide = Candidate("1.expand.1", {"model.n_embd": 320}, {}, 100, "0.start", "", "diagnosis", state="complete",
                     score=1.8, curve=[[0.0, 4.0], [15.0, 2.3], [30.0, 1.8]])
    assert wide.score_at(10.0) == pytest.approx(4.0 + 10 / 15 * (2.3 - 4.0))  # interpolated in time
    state = _State.__new__(_State)
    state.done = {c.slot: c for c in (fast, wide)}
    for unit, first in (("seconds", fast), ("tokens", wide)):
        state.clock = SimpleNamespace(budget=Budget(600.0, unit))
        assert state._best_at(100) is first


def test_a_level_no_better_than_its_parent_beyond_noise_ends_the_rounds() -> None:
    """The LM benchmark's first level: six rates within 0.005 nats of the start, its standard error 0.009."""
    def cand(slot: str, score: float | None, state: str = "complete", **val: float) -> Candidate:
        return Candidate(slot, {}, {}, 38, "0.start", "tpe", "tpe", state=state, score=score, val=val)

    parent = cand("0.start", 2.5321, loss=2.5321, loss_se=0.0093)
    level = [cand("1.expand.0", 2.5331), cand("1.expand.3", 2.5276), cand("1.expand.5", 2.7041)]
    assert within_noise(parent, level) == pytest.approx(0.0186)
    assert within_noise(parent, [*level, cand("1.expand.6", 2.50)]) is None  # 0.032 better: worth a longer rung
    assert within_noise(parent, [cand("1.expand.0", None, "failed")]) is None  # nothing finished: nothing said
    from gradwise.report.autofit import summary_html

    shown = summary_html({"task": "lm", "budget": {"amount": 600, "unit": "seconds"}, "rounds": [],
                          "explore_stop": "no candidate beat 0.start by more than 0.0186"})
    assert "rounds stopped" in shown and "no candidate beat 0.start" in shown  # the page says why
    classifier = cand("0.start", 0.28, loss=0.61, loss_se=0.01, macro_f1=0.72)  # ranked on 1 - macro-F1 (best_on)
    assert within_noise(classifier, [cand("1.expand.0", 0.279)], decides="macro_f1") is None
