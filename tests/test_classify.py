"""Text classification: labelled data, stratified split, the LSTM, metrics, train/eval/predict end to end."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from gradwise import predict, train
from gradwise.config.load import classify_preset, load_config
from gradwise.core.errors import DataError, GradwiseError
from gradwise.core.rundir import read_metrics
from gradwise.data.labelled import read_labelled, stratified_split
from gradwise.inference import generate_text
from gradwise.models.lstm import LSTMClassifier, LSTMConfig
from gradwise.tasks.classify_metrics import classification_report
from tests.conftest import SHARED_DATA, run_cli

TOPICS = {"space": ["rocket", "orbit", "planet", "launch", "star"],
          "cooking": ["oven", "flour", "recipe", "bake", "salt"],
          "music": ["guitar", "melody", "chord", "drum", "song"]}
FILLER = ["the", "a", "of", "and", "to", "in", "is", "it", "that", "was", "for", "on", "with", "as", "this", "by"]


def make_dataset(path: Path, n: int = 360, seed: int = 0) -> Path:
    """Separable labelled texts: filler words plus a few keywords of the text's topic."""
    rng = random.Random(seed)
    with path.open("w") as fh:
        for i in range(n):
            label = list(TOPICS)[i % 3]
            words = rng.choices(FILLER, k=rng.randint(6, 14)) + rng.choices(TOPICS[label], k=rng.randint(2, 4))
            rng.shuffle(words)
            fh.write(json.dumps({"text": " ".join(words), "label": label}) + "\n")
    return path


SMALL = ["data.vocab_size=300", "model.n_embd=32", "model.hidden=32", "model.block_size=32", "train.batch_size=16",
         "train.max_steps=120", "train.eval_every=40", "train.log_every=20", "train.patience=null",
         "schedule.warmup_steps=5", "optim.lr=5e-3", "model.dropout=0.1"]


def test_stratified_split_keeps_every_class_in_every_split() -> None:
    labels = ["a"] * 80 + ["b"] * 15 + ["c"] * 5
    idx = stratified_split(labels, [0.8, 0.1, 0.1], seed=1)
    assert sorted(np.concatenate(list(idx.values())).tolist()) == list(range(100))
    for split in idx.values():
        assert {labels[i] for i in split} == {"a", "b", "c"}
    assert sum(labels[i] == "a" for i in idx["val"]) == 8
    again = stratified_split(labels, [0.8, 0.1, 0.1], seed=1)
    assert all(np.array_equal(idx[k], again[k]) for k in idx)


def test_labelled_readers_and_their_errors(tmp_path: Path) -> None:
    csv_file = tmp_path / "d.csv"
    csv_file.write_text('body,topic\n"hello, world",greet\nbye,leave\n')
    assert read_labelled(csv_file, "body", "topic") == (["hello, world", "bye"], ["greet", "leave"])
    with pytest.raises(DataError, match="has no column 'text'"):
        read_labelled(csv_file)
    jl = tmp_path / "d.jsonl"
    jl.write_text('{"text": "x", "label": 1}\n{"text": "y"}\n')
    with pytest.raises(DataError, match="d.jsonl:2 has no single label in field 'label'"):
        read_labelled(jl)
    jl.write_text('{"text": "x", "label": "a"}\n{"text": "y", "label": "a"}\n')
    with pytest.raises(DataError, match="only one label"):
        read_labelled(jl)


def test_classification_report_numbers() -> None:
    y = np.array([0, 0, 0, 1, 1, 2])
    p = np.array([0, 0, 1, 1, 1, 1])
    r = classification_report(y, p, ["a", "b", "c"])
    assert r["accuracy"] == pytest.approx(4 / 6)
    assert r["confusion"] == [[2, 1, 0], [0, 2, 0], [0, 1, 0]]
    assert r["per_class"]["a"] == {"precision": 1.0, "recall": pytest.approx(2 / 3), "f1": pytest.approx(0.8),
                                   "support": 3}
    assert r["per_class"]["b"]["precision"] == pytest.approx(0.5)
    assert r["per_class"]["c"]["f1"] == 0.0
    assert r["macro_f1"] == pytest.approx((0.8 + 2 / 3 + 0.0) / 3)


@pytest.mark.parametrize("pool", ["last", "mean"])
def test_lstm_never_reads_padding(pool: str) -> None:
    torch.manual_seed(0)
    model = LSTMClassifier(LSTMConfig(vocab_size=30, n_classes=3, pad_id=0, n_embd=8, hidden=8, pool=pool)).eval()
    short = torch.tensor([[5, 6, 7, 8, 0, 0]])
    longer = torch.tensor([[5, 6, 7, 8, 0, 0, 0, 0, 0, 0, 0]])
    assert torch.allclose(model(short), model(longer), atol=1e-6)
    assert model(torch.tensor([[5, 6, 7, 8, 9, 0]])).shape == (1, 3)


def test_classifier_trains_evaluates_and_predicts(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "topics.jsonl")
    result = train("classify-lstm", overrides=[*SMALL, f"data.path={data}", f"out_dir={tmp_path}", "name=cls"],
                   quiet=True)
    s = result.summary
    assert s["task"] == "classify" and s["test_accuracy"] >= 0.9 and s["test_macro_f1"] >= 0.9
    report = s["test_report"]
    assert report["classes"] == ["cooking", "music", "space"]
    assert sum(sum(row) for row in report["confusion"]) == s["split_sizes"]["test"]
    assert json.loads((result.run_dir / "labels.json").read_text())["classes"] == report["classes"]
    from gradwise.config.load import load_config
    from gradwise.models.cost import model_flops_per_token

    per_token = model_flops_per_token(load_config(result.run_dir / "config.yaml"), s["vocab_size"], 3)
    logged = [r for r in read_metrics(result.run_dir / "metrics.jsonl") if r["kind"] == "train"]
    assert per_token > 0 and logged and all(  # model FLOP/s on the classifier's log lines too
        r["model_tflops"] == pytest.approx(r["tokens_per_s"] * per_token / 1e12, abs=1e-3) for r in logged)

    preds = predict(result.run_dir, ["the rocket and the orbit of a star", "bake the flour in the oven"])
    assert [p.label for p in preds] == ["space", "cooking"]
    assert sum(preds[0].probabilities.values()) == pytest.approx(1.0)

    ev = run_cli("eval", str(result.run_dir), "--split", "test", "--json")
    assert ev.returncode == 0, ev.stderr
    assert json.loads(ev.stdout)["accuracy"] == pytest.approx(s["test_accuracy"])
    table = run_cli("eval", str(result.run_dir), "--split", "val")
    assert "macro-F1" in table.stdout and "confusion" in table.stdout
    cli = run_cli("predict", str(result.run_dir), "--text", "a melody on the guitar")
    assert cli.returncode == 0 and cli.stdout.startswith("music")
    with pytest.raises(GradwiseError, match="generate needs a language model"):
        generate_text(result.run_dir, "x")


def test_class_weights_must_match_the_classes(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "topics.jsonl", n=60)
    with pytest.raises(GradwiseError, match="objective.class_weights has 2 values for 3 classes"):
        train("classify-lstm", overrides=[*SMALL, f"data.path={data}", f"out_dir={tmp_path}", "name=w",
                                          "objective.class_weights=[1.0, 2.0]"], quiet=True)


def test_task_classify_takes_the_sequence_preset_when_the_arch_is_a_sequence_model(tmp_path: Path) -> None:
    """The n-gram default's tokenizer fits no other arch: --set model.arch=lstm (or gpt) must still just work."""
    data = make_dataset(tmp_path / "topics.jsonl")
    for arch, tokenizer in (("lstm", "bpe"), ("gpt", "bpe"), ("ngram", "ngram"), (None, "ngram")):
        sets = [] if arch is None else ["--set", f"model.arch={arch}"]
        proc = run_cli("plan", "--task", "classify", "--data", str(data), *sets, "--no-calibrate", "--json",
                       cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        plan = json.loads(proc.stdout)
        assert (plan["config"]["arch"], plan["data"]["tokenizer"]) == (arch or "ngram", tokenizer), plan["data"]
    assert classify_preset(["model.arch=gpt"]) == "classify-gpt" and classify_preset(["model.arch=lstm"]) == \
        "classify-lstm" and classify_preset(["model.arch=gpt", "model.arch=ngram"]) == "classify-ngram"
    gpt = load_config("classify-gpt")
    assert (gpt.task, gpt.model.arch, gpt.data.tokenizer) == ("classify", "gpt", "bpe")


def test_cli_task_classify_uses_the_classify_preset(tmp_path: Path) -> None:
    path = SHARED_DATA / "fortunes4.jsonl"
    if not path.is_file():
        path = make_dataset(tmp_path / "topics.jsonl")
    proc = run_cli("train", "--task", "classify", "--data", str(path), "--set", f"out_dir={tmp_path}",
                   "--name", "f", "--set", "train.max_steps=30", "--set", "train.eval_every=15",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "n-gram bag" in proc.stdout and "macro-F1" in proc.stdout and "confusion" in proc.stdout
    summary = json.loads((tmp_path / "f" / "summary.json").read_text())
    assert summary["test_report"]["classes"] and 0.0 <= summary["test_macro_f1"] <= 1.0
