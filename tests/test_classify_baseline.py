"""The TF-IDF + logistic regression baseline beside every classification run: fitted on the run's training split
only, scored on its own validation and test split, in summary.json, the footer, diagnose and the report."""

from __future__ import annotations

import json
import random
import warnings
from pathlib import Path

import numpy as np
import pytest

from gradwise import train
from gradwise.core.errors import DataError
from gradwise.data.labelled import read_records, stratified_split
from gradwise.tasks.classify_baseline import fit_baseline
from gradwise.training.diagnose import diagnose
from tests.conftest import run_cli
from tests.test_classify import SMALL, make_dataset


def test_the_baseline_learns_from_the_training_split_alone() -> None:
    """Validation and test carry their label in words the training texts never use: a baseline whose
    vectorizer or model saw those splits would score them well; one fitted on train alone cannot."""
    rng = random.Random(0)
    filler = ["alpha", "beta", "gamma", "delta", "omega", "sigma"]
    secret = {"x": ["zebra", "zulu"], "y": ["yak", "yodel"]}
    texts: dict[str, list[str]] = {}
    labels: dict[str, np.ndarray] = {}
    for split, n in (("train", 200), ("val", 60), ("test", 60)):
        y = np.array([i % 2 for i in range(n)])
        rows = [rng.choices(filler, k=8) for _ in range(n)]
        if split != "train":  # the only signal: words of each class that training never shows
            rows = [r + secret["xy"[c]] for r, c in zip(rows, y, strict=True)]
        texts[split], labels[split] = [" ".join(r) for r in rows], y
    b = fit_baseline(texts, labels, ["x", "y"], multi_label=False)
    assert b["fitted_on"] == "train" and b["c"] in b["c_grid"]
    assert b["val"]["macro_f1"] < 0.75 and b["test"]["macro_f1"] < 0.75

    # The same texts with the signal in training too: now it is learned, so the check above could fail.
    texts["train"] = [t + " " + " ".join(secret["xy"[c]]) for t, c in zip(texts["train"], labels["train"], strict=True)]
    assert fit_baseline(texts, labels, ["x", "y"], multi_label=False)["test"]["macro_f1"] == 1.0


def test_a_training_split_of_one_class_is_refused_by_name() -> None:
    texts = {"train": ["a b c", "b c d"], "val": ["a b"]}
    labels = {"train": np.array([0, 0]), "val": np.array([1])}
    with pytest.raises(DataError, match="single class"):
        fit_baseline(texts, labels, ["p", "q"], multi_label=False)


def test_every_classify_run_carries_the_baseline_scored_on_its_own_split(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "topics.jsonl", n=240)
    result = train("classify-lstm", overrides=[*SMALL, f"data.path={data}", f"out_dir={tmp_path}", "name=b",
                                               "train.max_steps=40", "train.eval_every=20", "seed=7"], quiet=True)
    b = result.summary["baseline"]
    assert set(b) >= {"model", "c", "val", "test", "word_ngrams", "char_ngrams", "seconds"}
    assert result.summary["best_val_metrics"]["macro_f1"] is not None

    # An independent fit on the split the run says it used (seed 7, 80/10/10) gives the same test score.
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.pipeline import FeatureUnion, make_pipeline

    records = read_records(data, "text", "label", False, ",")
    index = stratified_split(records.labels, [0.8, 0.1, 0.1], 7)
    pick = lambda split: ([records.texts[i] for i in index[split]], [records.labels[i] for i in index[split]])  # noqa: E731
    pipe = make_pipeline(FeatureUnion([
        ("w", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, dtype=np.float32)),
        ("c", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=2, sublinear_tf=True, dtype=np.float32))]),
        LogisticRegression(C=b["c"], max_iter=1000, class_weight="balanced"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe.fit(*pick("train"))
    x_test, y_test = pick("test")
    assert b["test"]["macro_f1"] == pytest.approx(f1_score(y_test, pipe.predict(x_test), average="macro"))
    assert result.summary["split_sizes"]["test"] == len(y_test)


def test_a_model_below_the_baseline_is_told_so_everywhere(tmp_path: Path) -> None:
    """Two steps at a tiny learning rate leave the model at chance; the baseline separates the topics."""
    data = make_dataset(tmp_path / "topics.jsonl", n=240)
    proc = run_cli("train", "classify-lstm", "--data", str(data), "--name", "weak", "--set", f"out_dir={tmp_path}",
                   *[x for o in SMALL for x in ("--set", o)], "--set", "train.max_steps=4", "--set",
                   "train.eval_every=2", "--set", "optim.lr=1e-6", "--set", "schedule.min_lr=0", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "baseline TF-IDF + logistic regression (C=" in proc.stdout  # the bar, before training starts
    assert "worse than the baseline: test macro-F1" in proc.stdout and "below it" in proc.stdout
    summary = json.loads((tmp_path / "weak" / "summary.json").read_text())
    assert summary["diagnosis"][0]["kind"] == "below_baseline"
    assert summary["baseline"]["test"]["macro_f1"] > summary["test_macro_f1"]

    diag = run_cli("diagnose", str(tmp_path / "weak"))
    assert diag.returncode == 0 and "worse than the baseline" in diag.stdout
    page = run_cli("report", str(tmp_path / "weak"), "--out", str(tmp_path / "weak.html"))
    assert page.returncode == 0, page.stderr
    html = (tmp_path / "weak.html").read_text()
    assert "TF-IDF + logistic regression" in html and "worse than the baseline" in html


def test_the_verdict_reads_validation_when_the_run_was_not_tested() -> None:
    summary = {"best_val_metrics": {"macro_f1": 0.80, "accuracy": 0.9}, "test_macro_f1": None,
               "baseline": {"c": 3.0, "val": {"macro_f1": 0.85, "accuracy": 0.9}}}
    d = diagnose([], summary, {})
    assert "below_baseline" in d.kinds and d.facts["against_baseline"]["split"] == "val"
    summary["best_val_metrics"]["macro_f1"] = 0.90
    assert "below_baseline" not in diagnose([], summary, {}).kinds


def test_data_baseline_false_turns_it_off(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "topics.jsonl", n=120)
    result = train("classify-lstm", overrides=[*SMALL, f"data.path={data}", f"out_dir={tmp_path}", "name=nobase",
                                               "train.max_steps=4", "train.eval_every=2", "data.baseline=false"],
                   quiet=True)
    assert "baseline" not in result.summary
    assert all(v["kind"] != "below_baseline" for v in result.summary["diagnosis"])
