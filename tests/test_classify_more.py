"""GPT-backbone classifier (fresh and from an LM run), weighted objective terms, and multi-label classification."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from gradwise import predict, train
from gradwise.config.load import load_config
from gradwise.core.errors import ConfigError, GradwiseError
from gradwise.core.rundir import read_metrics
from gradwise.data.labelled import read_labelled, stratified_split
from gradwise.models.gpt import GPTConfig
from gradwise.models.gpt_classifier import GPTClassifier
from gradwise.tasks import prepare_task
from gradwise.tasks.classify_metrics import calibrated_loss, format_report, multilabel_report
from gradwise.tasks.init_from import load_init_weights
from gradwise.training.run_config import resolve_train_config
from tests.conftest import TINY, run_cli
from tests.test_classify import FILLER, SMALL, TOPICS, make_dataset

GPT_SMALL = [*SMALL, "model.arch=gpt", "model.n_layer=2", "model.n_head=2", "model.dropout=0.0"]


@pytest.mark.parametrize("pool", ["last", "mean"])
def test_gpt_classifier_never_reads_padding(pool: str) -> None:
    torch.manual_seed(0)
    model = GPTClassifier(GPTConfig(vocab_size=30, block_size=16, n_layer=2, n_head=2, n_embd=16), 3, pad_id=0,
                          pool=pool).eval()
    short = torch.tensor([[5, 6, 7, 8, 0, 0]])
    longer = torch.tensor([[5, 6, 7, 8, 0, 0, 0, 0, 0, 0, 0]])
    assert torch.allclose(model(short), model(longer), atol=1e-6)
    assert not torch.allclose(model(short), model(torch.tensor([[5, 6, 7, 9, 0, 0]])), atol=1e-6)
    logits, lm = model(short, with_lm=True)
    assert logits.shape == (1, 3) and lm.shape == (1, 6, 30)


def test_gpt_classifier_with_auxiliary_lm_term_logs_both_parts(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "topics.jsonl")
    result = train("classify-lstm", overrides=[*GPT_SMALL, f"data.path={data}", f"out_dir={tmp_path}", "name=g",
                                               "objective.terms=[{name: classify}, {name: lm, weight: 0.5}]"],
                   quiet=True)
    s = result.summary
    assert s["test_accuracy"] >= 0.9, s
    rows = [r for r in read_metrics(result.run_dir / "metrics.jsonl") if r["kind"] == "train"]
    for r in rows:  # the logged total is exactly the weighted sum of the logged parts
        assert r["train_loss"] == pytest.approx(r["train_classify"] + 0.5 * r["train_lm"], rel=1e-5)
    assert rows[-1]["train_lm"] < rows[0]["train_lm"] - 0.5  # the auxiliary LM loss is really trained
    assert predict(result.run_dir, ["the rocket and the orbit of a star"])[0].label == "space"


def test_init_from_an_lm_run_loads_its_weights_tokenizer_and_shape(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    rng = random.Random(0)
    corpus.write_text("\n".join(" ".join(rng.choices(FILLER + sum(TOPICS.values(), []), k=12))
                                for _ in range(600)))
    lm = train("default", overrides=[*TINY, f"data.path={corpus}", f"out_dir={tmp_path}", "name=lm",
                                     "model.n_embd=48", "model.n_layer=3", "model.block_size=96"], quiet=True)
    data = make_dataset(tmp_path / "topics.jsonl")
    cfg, _, _ = resolve_train_config("classify-lstm", [*GPT_SMALL, f"data.path={data}",
                                                        f"model.init_from={lm.run_dir}"])  # resolved: shape taken over
    task = prepare_task(cfg)
    assert (cfg.model.n_embd, cfg.model.n_layer, cfg.data.tokenizer) == (48, 3, "char")  # the LM run's shape
    assert task.tokenizer.chars == json.loads((lm.run_dir / "tokenizer.json").read_text())["chars"]
    model = task.build_model()
    load_init_weights(cfg, model)
    saved = load_file(str(lm.run_dir / "checkpoints" / "best" / "model.safetensors"))
    assert torch.equal(model.backbone.blocks[1].mlp.fc.weight, saved["blocks.1.mlp.fc.weight"])

    proc = run_cli("train", "--task", "classify", "--data", str(data), "--init-from", str(lm.run_dir),
                   "--set", f"out_dir={tmp_path}", "--name", "ft", *[a for o in GPT_SMALL for a in ("--set", o)],
                   "--set", "optim.lr=2e-3", "--set", "train.max_steps=300", cwd=tmp_path)  # fine-tuning: lower lr
    assert proc.returncode == 0, proc.stderr
    assert f"from {lm.run_dir}" in proc.stdout
    summary = json.loads((tmp_path / "ft" / "summary.json").read_text())
    # char-level, 300 steps: it learns the topics (chance is 0.33). Seen: 0.83 (28/36 at 200 steps, still rising);
    # the margin absorbs rounding-level changes to the trajectory (the optimizer's precision, dropout seeding).
    assert summary["test_accuracy"] >= 0.75
    assert predict(tmp_path / "ft", ["bake the flour in the oven"])[0].label == "cooking"


def test_init_from_must_be_a_gpt_lm_run(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "topics.jsonl", n=60)
    cls = train("classify-lstm", overrides=[*SMALL, f"data.path={data}", f"out_dir={tmp_path}", "name=c",
                                            "train.max_steps=2"], quiet=True)
    with pytest.raises(GradwiseError, match="is a classify run; start from a gradwise language-model"):
        train("classify-lstm", overrides=[*GPT_SMALL, f"data.path={data}", f"out_dir={tmp_path}", "name=d",
                                          f"model.init_from={cls.run_dir}"], quiet=True)


@pytest.mark.parametrize(("overrides", "message"), [
    (["objective.terms=[{name: classify}, {name: lm}]"], "'lm' needs a GPT backbone"),
    (["model.arch=gpt", "data.multi_label=true", "objective.terms=[{name: classify}]"], "does not fit data.multi"),
    (["model.arch=gpt", "objective.terms=[{name: lm}]"], "must include 'classify'"),
    (["objective.terms=[{name: classify, weight: -1}]"], "weights must be >= 0"),
    (["objective.terms=[{name: clasify}]"], "must be one of lm, classify, multilabel"),
])
def test_objective_term_errors(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config("classify-lstm", overrides)


def test_lm_task_takes_only_the_lm_term() -> None:
    with pytest.raises(ConfigError, match="task lm minimises the lm term only"):
        load_config("default", ["objective.terms=[{name: lm}, {name: classify}]"])


# ---------------------------------------------------------------- multi-label

def make_multilabel(path: Path, n: int = 420, seed: int = 0) -> Path:
    """Texts about one or two topics; the label is the set of topics (JSON lists and joined strings mixed)."""
    rng = random.Random(seed)
    names = list(TOPICS)
    with path.open("w") as fh:
        for i in range(n):
            chosen = sorted(rng.sample(names, 1 + (i % 3 == 0)))
            words = rng.choices(FILLER, k=rng.randint(6, 12))
            for t in chosen:
                words += rng.choices(TOPICS[t], k=rng.randint(2, 3))
            rng.shuffle(words)
            label = chosen if i % 2 else ",".join(chosen)
            fh.write(json.dumps({"text": " ".join(words), "label": label}) + "\n")
    return path


def test_multilabel_reader_and_split(tmp_path: Path) -> None:
    p = tmp_path / "m.jsonl"
    p.write_text('{"text": "a", "label": ["x", "y"]}\n{"text": "b", "label": "y, z"}\n{"text": "c", "label": []}\n')
    texts, labels = read_labelled(p, multi_label=True)
    assert labels == [("x", "y"), ("y", "z"), ()]
    p.write_text('{"text": "a", "label": {"x": 1}}\n')
    with pytest.raises(GradwiseError, match="m.jsonl:1 has no list of labels"):
        read_labelled(p, multi_label=True)
    many = [("common", "rare")] * 5 + [("common",)] * 95
    idx = stratified_split(many, [0.6, 0.2, 0.2], seed=0)
    assert all(any(many[i] == ("common", "rare") for i in split) for split in idx.values())


def test_multilabel_report_numbers() -> None:
    y = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0]], dtype=bool)
    p = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 1]], dtype=bool)
    r = multilabel_report(y, p, ["a", "b", "c"])
    assert r["accuracy"] == pytest.approx(1 / 3)  # only the second record is exactly right
    assert r["per_class"]["a"]["f1"] == 1.0 and r["per_class"]["c"]["f1"] == 0.0
    assert r["micro_f1"] == pytest.approx(2 * 4 / (5 + 5))  # 4 true positives, 5 predicted, 5 true
    assert r["macro_f1"] == pytest.approx(2 / 3)
    assert "micro-F1" in format_report(r) and "confusion" not in format_report(r)


def test_multilabel_trains_evaluates_and_predicts_sets(tmp_path: Path) -> None:
    data = make_multilabel(tmp_path / "multi.jsonl")
    result = train("classify-lstm", overrides=[*SMALL, f"data.path={data}", f"out_dir={tmp_path}", "name=m",
                                               "data.multi_label=true", "train.max_steps=200"], quiet=True)
    s = result.summary
    assert s["test_report"]["multi_label"] and s["test_report"]["micro_f1"] >= 0.9, s["test_report"]
    assert s["test_accuracy"] >= 0.8  # exact match of the whole label set
    both, one = predict(result.run_dir, ["the rocket orbit and the guitar melody", "bake flour in the oven"])
    assert both.labels == ["music", "space"] and one.labels == ["cooking"]
    ev = run_cli("eval", str(result.run_dir), "--json")
    assert ev.returncode == 0 and json.loads(ev.stdout)["micro_f1"] == pytest.approx(s["test_report"]["micro_f1"])


def test_calibrated_loss_takes_the_confidence_out_and_keeps_the_ordering() -> None:
    """An overconfident model's val loss is mostly its confidence on the texts it gets wrong; at the best
    temperature it reads how well the model orders the classes, which is what its decisions depend on."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 400)
    logits = rng.normal(size=(400, 4))
    logits[np.arange(400), labels] += 1.5

    def probs(scale: float) -> np.ndarray:
        z = np.exp(logits * scale)
        return z / z.sum(axis=1, keepdims=True)

    def nll(p: np.ndarray) -> float:
        return float(-np.log(p[np.arange(400), labels]).mean())

    fitted, temperature = calibrated_loss(probs(1.0), labels)
    assert fitted <= nll(probs(1.0))  # never worse than the plain loss: T = 1 is a candidate
    loud, t_loud = calibrated_loss(probs(6.0), labels)  # the same ordering, six times as confident
    assert nll(probs(6.0)) > 2 * nll(probs(1.0))  # what the plain val loss says of it
    assert t_loud == pytest.approx(6.0 * temperature, rel=0.05) and loud == pytest.approx(fitted, abs=1e-4)
    assert calibrated_loss(probs(1.0)[:, ::-1], labels)[0] > fitted  # a worse ordering stays worse
