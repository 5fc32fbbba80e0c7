"""The classic baseline every classification run is measured against: TF-IDF features with logistic regression.

A user with a few thousand labelled texts can fit this in ten lines of scikit-learn, so a neural model is only
worth having when it beats it. The baseline sees the run's own split: the vectorizers and the model are fitted on
the training texts alone, the regularization strength C is chosen on validation macro-F1, and the chosen model
is scored once on validation and once on test. It reads the whole texts (the neural model sees them cut to
``model.block_size`` tokens), as a user's own baseline would.

The scores are cached by corpus, fields and split (the fit is deterministic), so the trials of a study pay for it
once. Only validation decides anything; the test score is shown beside the model's at the end of a run.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np

from gradwise.core.errors import DataError
from gradwise.tasks.classify_metrics import classification_report, multilabel_report

BASELINE_VERSION = "1"  # part of the cache key: bump when the settings below change
C_GRID = (0.3, 1.0, 3.0, 10.0, 30.0, 100.0)  # each a fit from scratch: warm starts stop short of convergence
WORD_NGRAMS = (1, 2)
CHAR_NGRAMS = (2, 5)  # within word boundaries (scikit-learn's char_wb analyzer)
SETTINGS = {"model": "tfidf+logistic_regression", "word_ngrams": list(WORD_NGRAMS), "char_ngrams": list(CHAR_NGRAMS),
            "sublinear_tf": True, "char_min_df": 2, "class_weight": "balanced", "c_grid": list(C_GRID),
            "chosen_on": "val macro_f1", "fitted_on": "train"}


def fit_baseline(texts: dict[str, list[str]], labels: dict[str, np.ndarray], classes: list[str],
                 multi_label: bool) -> dict[str, Any]:
    """Fit on ``texts['train']``, choose C on ``'val'``, score ``'val'`` and ``'test'`` (when present).

    ``labels`` are class indices (N,), or multi-hot rows (N, C) for multi-label. Returns the JSON object a run's
    summary carries: the settings, the chosen C, the seconds taken and each split's accuracy and macro-F1. A
    training split the baseline cannot learn from (one class, no words) raises DataError naming why."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import FeatureUnion

    start = time.perf_counter()
    y_train = labels["train"]
    one_class = not y_train.any() if multi_label else len(np.unique(y_train)) < 2
    if one_class:
        raise DataError("the training split holds a single class: a classifier needs at least two")
    features = FeatureUnion([
        ("words", TfidfVectorizer(ngram_range=WORD_NGRAMS, sublinear_tf=True, dtype=np.float32)),
        ("chars", TfidfVectorizer(analyzer="char_wb", ngram_range=CHAR_NGRAMS, min_df=2, sublinear_tf=True,
                                  dtype=np.float32)),
    ])
    try:
        x = {"train": features.fit_transform(texts["train"])}
    except ValueError as exc:  # "empty vocabulary": texts with no word of two letters and no repeated n-gram
        raise DataError(f"the training texts give the baseline no features ({exc})") from None
    x.update({name: features.transform(t) for name, t in texts.items() if name != "train"})

    def model(c: float) -> Any:
        lr = LogisticRegression(C=c, max_iter=1000, class_weight="balanced")
        return OneVsRestClassifier(lr) if multi_label else lr

    def scores(fitted: Any, split: str) -> dict[str, Any]:
        if multi_label:
            predicted = fitted.predict_proba(x[split]) >= 0.5
            report = multilabel_report(labels[split].astype(bool), predicted, classes)
            return {"accuracy": report["accuracy"], "macro_f1": report["macro_f1"], "micro_f1": report["micro_f1"]}
        report = classification_report(labels[split], fitted.predict(x[split]), classes)
        return {"accuracy": report["accuracy"], "macro_f1": report["macro_f1"]}

    best: tuple[float, float, Any] | None = None  # (val macro-F1, C, that fit)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for c in C_GRID:
            fitted = model(c).fit(x["train"], y_train)
            val = scores(fitted, "val")["macro_f1"]
            if best is None or val > best[0]:
                best = (val, c, fitted)
    assert best is not None
    chosen = best[2]
    splits = {name: scores(chosen, name) for name in x if name != "train"}  # the chosen fit, scored once each
    return {**SETTINGS, "c": best[1], "seconds": round(time.perf_counter() - start, 2), **splits}


def baseline_line(b: dict[str, Any]) -> str:
    """The run header's line: what the baseline is and how it scores on validation."""
    if "skipped" in b:
        return f"skipped: {b['skipped']}"
    how = "cached" if b.get("cached") else f"fitted on train in {b['seconds']:.1f} s"
    return (f"TF-IDF + logistic regression (C={b['c']:g}, {how}): val macro-F1 {b['val']['macro_f1']:.4f}, "
            f"accuracy {b['val']['accuracy']:.4f}")


def against_baseline(summary: dict[str, Any]) -> dict[str, Any] | None:
    """The model beside the baseline on the most final split both were scored on (test when the run was
    tested, else validation at the best checkpoint); None without a baseline or a score to compare."""
    b = summary.get("baseline") or {}
    if "val" not in b:
        return None
    if summary.get("test_macro_f1") is not None and "test" in b:
        split, model = "test", {k: summary.get(f"test_{k}") for k in ("macro_f1", "accuracy")}
    elif (summary.get("best_val_metrics") or {}).get("macro_f1") is not None:
        split, model = "val", summary["best_val_metrics"]
    else:
        return None
    base = b[split]
    return {"split": split, "model_macro_f1": model["macro_f1"], "baseline_macro_f1": base["macro_f1"],
            "model_accuracy": model.get("accuracy"), "baseline_accuracy": base["accuracy"],
            "margin": model["macro_f1"] - base["macro_f1"], "c": b["c"]}


def footer_line(summary: dict[str, Any]) -> str | None:
    """The end of a run: the model's macro-F1 beside the baseline's, and which is better."""
    cmp = against_baseline(summary)
    if cmp is None:
        return None
    word = "above" if cmp["margin"] >= 0 else "below"
    return (f"{cmp['split']} macro-F1 {cmp['baseline_macro_f1']:.4f}, accuracy {cmp['baseline_accuracy']:.4f} "
            f"(TF-IDF + logistic regression, C={cmp['c']:g}) | this model {cmp['model_macro_f1']:.4f}: "
            f"{abs(cmp['margin']):.4f} {word} it")
