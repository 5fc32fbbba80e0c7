"""Plots of a run's metrics, drawn with matplotlib (headless)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_losses(records: list[dict[str, Any]], path: Path, title: str = "") -> None:
    """Training and validation loss against step, written as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(r["step"], r["train_loss"]) for r in records if r.get("kind") == "train" and r.get("train_loss") is not None]
    val = [(r["step"], r["val_loss"]) for r in records if r.get("kind") == "eval" and r.get("val_loss") is not None]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    if train:
        ax.plot(*zip(*train, strict=True), label="train", linewidth=1.2)
    if val:
        ax.plot(*zip(*val, strict=True), label="validation", marker="o", markersize=3, linewidth=1.5)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats / token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
