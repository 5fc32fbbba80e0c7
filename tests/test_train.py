"""End to end: real training runs on real text, through the API and the command line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from gradwise import generate_text, train
from gradwise.core.errors import GradwiseError
from gradwise.core.rundir import read_metrics
from tests.conftest import REPO, TINY, run_cli, shakespeare


def test_training_lowers_validation_loss_and_fills_the_run_directory(tmp_path: Path) -> None:
    result = train(None, overrides=[*TINY, f"out_dir={tmp_path}", "name=r", "train.max_steps=120",
                                    "train.eval_every=40", "optim.lr=3e-3"], quiet=True)
    run = result.run_dir
    s = result.summary
    records = read_metrics(run / "metrics.jsonl")
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [0, 40, 80, 120]
    assert evals[0]["val_loss"] == pytest.approx(math.log(s["vocab_size"]), rel=0.05)  # untrained start
    assert evals[-1]["val_loss"] < 0.7 * evals[0]["val_loss"]  # learned real structure of English text
    train_lines = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train_lines] == list(range(10, 121, 10))
    for key in ("step", "train_loss", "lr", "grad_norm", "tokens", "elapsed_s", "tokens_per_s"):
        assert key in train_lines[0], key
    assert train_lines[-1]["train_loss"] < train_lines[0]["train_loss"]

    for key in ("best_val_loss", "best_step", "test_loss", "steps", "tokens_seen", "train_seconds",
                "tokens_per_second", "stopped_because"):
        assert key in s, key
    assert s["stopped_because"] == "max_steps" and s["steps"] == 120
    assert s["tokens_seen"] == 120 * 8 * 32
    assert s["best_val_loss"] == min(r["val_loss"] for r in evals)
    assert math.isfinite(s["test_loss"]) and s["test_loss"] < evals[0]["val_loss"]
    assert json.loads((run / "summary.json").read_text())["best_step"] == s["best_step"]
    for name in ("config.yaml", "tokenizer.json", "loss.png", "checkpoints/best/model.safetensors",
                 "checkpoints/last/trainer.safetensors"):
        assert (run / name).is_file(), name
    assert (run / "loss.png").read_bytes()[:4] == b"\x89PNG"


def test_early_stopping_stops_and_keeps_the_best(tmp_path: Path) -> None:
    # min_delta far above any real improvement: the first evaluation after step 0 cannot count.
    result = train(None, overrides=[*TINY, f"out_dir={tmp_path}", "name=es", "train.max_steps=200",
                                    "train.patience=2", "train.min_delta=100"], quiet=True)
    s = result.summary
    assert s["stopped_because"] == "early_stopping"
    assert s["steps"] == 40  # evaluations at 0 (best), 20 and 40 (two without improvement)
    assert s["best_step"] == 0


def test_wall_clock_budget_stops_the_run(tmp_path: Path) -> None:
    result = train(None, overrides=[*TINY, f"out_dir={tmp_path}", "name=tb", "train.max_steps=1000000",
                                    "train.max_time=3s"], quiet=True)
    assert result.summary["stopped_because"] == "time_budget"
    assert 0 < result.summary["steps"] < 1000000
    assert math.isfinite(result.summary["test_loss"])


def test_a_run_the_clock_stops_has_decayed_when_its_schedule_follows_the_clock(tmp_path: Path) -> None:
    """Far more steps than 3 s train: with the step horizon the rate is still near its peak when the clock stops
    the run; with schedule.horizon=time it has decayed to the floor, whatever the machine's speed."""
    last = {}
    for horizon in ("steps", "time"):
        result = train(None, overrides=[*TINY, f"out_dir={tmp_path}", f"name={horizon}", "train.max_steps=1000000",
                                        "train.max_time=3s", "schedule.warmup_steps=0", "optim.lr=3e-3",
                                        "schedule.min_lr=1e-4", "train.log_every=1", f"schedule.horizon={horizon}"],
                       quiet=True)
        assert result.summary["stopped_because"] == "time_budget"
        last[horizon] = [r["lr"] for r in read_metrics(result.run_dir / "metrics.jsonl") if r["kind"] == "train"][-1]
    assert last["steps"] > 2.9e-3 and last["time"] < 2e-4, last


def test_an_existing_run_is_never_overwritten(tmp_path: Path) -> None:
    args = [*TINY, f"out_dir={tmp_path}", "name=same", "train.max_steps=2", "train.eval_every=2"]
    train(None, overrides=args, quiet=True)
    with pytest.raises(GradwiseError, match="already exists; continue it with --resume"):
        train(None, overrides=args, quiet=True)


def test_bpe_tokenizer_trains_end_to_end(tmp_path: Path, corpus_file: Path) -> None:
    result = train(None, overrides=[*TINY, f"out_dir={tmp_path}", "name=bpe", f"data.path={corpus_file}",
                                    "data.tokenizer=bpe", "data.vocab_size=300", "train.max_steps=20",
                                    "model.block_size=16"], quiet=True)
    assert result.summary["vocab_size"] == 300
    assert math.isfinite(result.summary["test_bits_per_byte"])


def test_cli_train_eval_generate(tmp_path: Path) -> None:
    proc = run_cli("train", "--set", "train.max_steps=40", *sum((["--set", o] for o in TINY), []),
                   "--set", f"out_dir={tmp_path}", "--name", "cli", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "parameters" in out and "step     40/40" in out and "test loss" in out  # plain lines off a terminal
    run = tmp_path / "cli"
    summary = json.loads((run / "summary.json").read_text())

    ev = run_cli("eval", str(run), "--split", "test", "--json")
    assert ev.returncode == 0, ev.stderr
    res = json.loads(ev.stdout)
    assert res["loss"] == pytest.approx(summary["test_loss"], rel=1e-5)  # same number the run reported
    assert res["bits_per_byte"] > 0 and res["perplexity"] == pytest.approx(math.exp(res["loss"]), rel=1e-6)
    human = run_cli("eval", str(run), "--split", "val")
    assert "perplexity" in human.stdout and "bits/byte" in human.stdout

    gen = run_cli("generate", str(run), "--prompt", "The ", "--max-new-tokens", "30", "--top-k", "10",
                  "--num-samples", "2")
    assert gen.returncode == 0, gen.stderr
    assert gen.stdout.count("--- sample") == 2 and gen.stdout.count("The ") >= 2
    # One sample streams as it is made, well past the 32-token context, and is the text the API returns.
    one = run_cli("generate", str(run), "--prompt", "The ", "--max-new-tokens", "100", "--top-k", "10")
    assert one.returncode == 0, one.stderr
    pieces: list[str] = []
    text = generate_text(run, "The ", max_new_tokens=100, top_k=10, on_text=pieces.append)[0]
    assert one.stdout == text + "\n" and "".join(pieces) == text and len(pieces) > 50


def test_cli_help_and_module_entry_point() -> None:
    top = run_cli("--help")
    assert top.returncode == 0 and "train" in top.stdout and "generate" in top.stdout
    for cmd, option in (("train", "--resume"), ("eval", "--split"), ("generate", "--top-p")):
        proc = run_cli(cmd, "--help")
        assert proc.returncode == 0 and option in proc.stdout


def test_user_errors_are_one_line_without_traceback(tmp_path: Path) -> None:
    cases = [
        (("train", "--data", str(tmp_path / "missing.txt")), "does not exist"),
        (("eval", str(tmp_path)), "is not a gradwise run directory"),
        (("train", "--set", "model.block_size=100000", "--set", "train.max_steps=1"), "model.block_size"),
    ]
    for args, fragment in cases:
        proc = run_cli(*args, cwd=tmp_path)
        assert proc.returncode == 2, (args, proc.stderr)
        assert "Traceback" not in proc.stderr
        assert proc.stderr.startswith("gradwise: error: ") and fragment in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1


def test_diverging_run_stops_with_a_clear_message(tmp_path: Path) -> None:
    proc = run_cli("train", *sum((["--set", o] for o in TINY), []), "--set", "optim.lr=1e12",
                   "--set", "schedule.min_lr=0", "--set", "schedule.warmup_steps=0", "--set", "train.grad_clip=0",
                   "--set", "train.max_nonfinite=3", "--set", "optim.name=sgd", "--set", "optim.momentum=0",
                   "--set", f"out_dir={tmp_path}", cwd=tmp_path)
    assert proc.returncode == 3, proc.stderr
    assert "non-finite steps in a row" in proc.stderr and "Traceback" not in proc.stderr


def test_shakespeare_preset_runs_from_the_configs_directory(tmp_path: Path) -> None:
    data = shakespeare()
    result = train(REPO / "configs" / "shakespeare-char-cpu.yaml",
                   overrides=[f"data.path={data}", f"out_dir={tmp_path}", "name=sh", "train.max_steps=30",
                              "train.eval_every=30", "train.eval_batches=5"], quiet=True)
    assert result.summary["vocab_size"] == 66  # 65 characters + end-of-text
    assert result.summary["best_val_loss"] < math.log(66)


def test_bf16_autocast_path_trains(tmp_path: Path) -> None:
    """The precision path CUDA uses by default also runs on CPU, so CI exercises it."""
    result = train(None, overrides=[*TINY, f"out_dir={tmp_path}", "name=bf16", "train.dtype=bfloat16",
                                    "train.max_steps=20", "train.deterministic=false"], quiet=True)
    records = read_metrics(result.run_dir / "metrics.jsonl")
    evals = [r["val_loss"] for r in records if r["kind"] == "eval"]
    assert evals[-1] < evals[0]
    assert math.isfinite(result.summary["test_loss"])


def test_train_leaves_the_callers_determinism_setting_alone(tmp_path: Path) -> None:
    import torch

    assert not torch.are_deterministic_algorithms_enabled()
    train(None, overrides=[*TINY, f"out_dir={tmp_path}", "name=det", "train.max_steps=2", "train.eval_every=2"],
          quiet=True)
    assert not torch.are_deterministic_algorithms_enabled()
