"""Classification metrics: accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix;
for multi-label: exact-match accuracy, micro- and macro-F1 and per-class metrics; and the loss at the best
temperature, which shows how much of a rise in the validation loss is the model's confidence."""

from __future__ import annotations

from typing import Any

import numpy as np


def classification_report(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """Metrics of predictions against labels; a class never predicted has precision 0 (and says so by support)."""
    k = len(classes)
    confusion = np.zeros((k, k), dtype=np.int64)  # rows: true class, columns: predicted class
    np.add.at(confusion, (y_true, y_pred), 1)
    tp = np.diag(confusion).astype(float)
    predicted = confusion.sum(axis=0).astype(float)
    support = confusion.sum(axis=1).astype(float)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(k), where=denom > 0)
    present = support > 0
    return {
        "accuracy": float(tp.sum() / max(1, len(y_true))),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class": {c: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                          "support": int(support[i])} for i, c in enumerate(classes)},
        "confusion": confusion.tolist(),
        "classes": list(classes),
    }


# The temperature is searched on log T in this range; a model this far off calibration is clipped to its edge.
TEMPERATURE_RANGE = (0.05, 100.0)


def calibrated_loss(probs: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(the mean negative log-likelihood at the best temperature, that temperature T): each row's log
    probabilities divided by T and renormalised, which is temperature scaling of the logits (softmax is
    shift-invariant per row). Why: a classifier trained past its val-loss minimum grows confident, and its
    plain val loss rises on the few texts it gets wrong while its decisions keep improving (fortunes4: val loss
    0.44 at step 400 and 0.60 at step 3,100, macro-F1 0.71 and 0.75); one fitted scalar takes the confidence
    out and leaves how well the model orders the classes. A diagnostic: as a rule for choosing a checkpoint it
    did no better than the plain loss (bench/classify_selection.py). The loss is convex in 1/T, so a
    golden-section search on log T finds the minimum."""
    logp = np.log(np.clip(probs, 1e-12, None)).astype(np.float64)
    rows = np.arange(len(labels))

    def nll(log_t: float) -> float:
        z = logp / np.exp(log_t)
        z -= z.max(axis=1, keepdims=True)
        return float((np.log(np.exp(z).sum(axis=1)) - z[rows, labels]).mean())

    lo, hi = np.log(TEMPERATURE_RANGE[0]), np.log(TEMPERATURE_RANGE[1])
    ratio = (np.sqrt(5.0) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = nll(a), nll(b)
    for _ in range(60):  # the bracket shrinks by 0.618 a step: 60 steps leave about 1e-12 of it
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = nll(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = nll(b)
    best = min((nll(0.0), 0.0), (fa, a), (fb, b))  # T = 1 when it is as good: no change is the default
    return best[0], float(np.exp(best[1]))


def _f1(precision: np.ndarray, recall: np.ndarray) -> np.ndarray:
    denom = precision + recall
    return np.divide(2 * precision * recall, denom, out=np.zeros_like(denom, dtype=float), where=denom > 0)


def multilabel_report(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """Metrics of multi-hot predictions (N, C) against multi-hot labels (N, C).

    ``accuracy`` is exact match (every label of a record right); micro-F1 pools all decisions, macro-F1
    averages the classes that occur."""
    y_true, y_pred = y_true.astype(bool), y_pred.astype(bool)
    tp = (y_true & y_pred).sum(axis=0).astype(float)
    predicted = y_pred.sum(axis=0).astype(float)
    support = y_true.sum(axis=0).astype(float)
    precision = np.divide(tp, predicted, out=np.zeros(len(classes)), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(len(classes)), where=support > 0)
    f1 = _f1(precision, recall)
    micro_p = tp.sum() / predicted.sum() if predicted.sum() else 0.0
    micro_r = tp.sum() / support.sum() if support.sum() else 0.0
    present = support > 0
    return {
        "multi_label": True,
        "accuracy": float((y_true == y_pred).all(axis=1).mean()) if len(y_true) else 0.0,
        "micro_f1": float(_f1(np.array([micro_p]), np.array([micro_r]))[0]),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class": {c: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                          "support": int(support[i])} for i, c in enumerate(classes)},
        "classes": list(classes),
    }


def format_report(report: dict[str, Any]) -> str:
    """A plain-text table of a classification report (per class, then the confusion matrix)."""
    classes = report["classes"]
    width = max(10, *(len(c) for c in classes))
    lines = [f"{'class':<{width}}  precision  recall     f1  support"]
    for c in classes:
        m = report["per_class"][c]
        lines.append(f"{c:<{width}}  {m['precision']:9.3f}  {m['recall']:6.3f}  {m['f1']:5.3f}  {m['support']:7d}")
    if report.get("multi_label"):
        lines.append(f"exact-match accuracy {report['accuracy']:.4f} | micro-F1 {report['micro_f1']:.4f} | "
                     f"macro-F1 {report['macro_f1']:.4f}")
        return "\n".join(lines)
    lines.append(f"accuracy {report['accuracy']:.4f} | macro-F1 {report['macro_f1']:.4f}")
    lines.append("confusion (rows: true, columns: predicted)")
    lines.append(" " * (width + 2) + " ".join(f"{c[:8]:>8}" for c in classes))
    for c, row in zip(classes, report["confusion"], strict=True):
        lines.append(f"{c:<{width}}  " + " ".join(f"{v:>8d}" for v in row))
    return "\n".join(lines)
