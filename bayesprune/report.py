"""Figures of a training run, drawn from ``metrics.jsonl``."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def load_metrics(run_dir: Path) -> list[dict]:
    """The per-epoch records of a run."""
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def plot_training(run_dir: Path) -> Path:
    """Save ``training.png``: widths, test error, objective terms per epoch and the final θ."""
    records = load_metrics(run_dir)
    epochs = [r["epoch"] for r in records]
    summary_path = Path(run_dir) / "summary.json"
    start = (
        json.loads(summary_path.read_text())["initial_widths"] if summary_path.exists() else None
    )
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    ax = axes[0, 0]
    for i, name in enumerate(records[0]["theta"]):
        widths = [r["widths"][i] for r in records]
        ax.plot(([0] if start else []) + epochs, ([start[i]] if start else []) + widths,
                marker="o", label=name)  # fmt: skip
    ax.set(xlabel="epoch", ylabel="width", title="layer widths (epoch 0: start)", ylim=(0, None))
    ax.legend()
    ax = axes[0, 1]
    ax.plot(epochs, [100 * r["test_error"] for r in records], marker="o")
    ax.set(xlabel="epoch", ylabel="test error (%)", title="test error of the posterior mode")
    ax = axes[1, 0]
    ax.plot(epochs, [r["data_term"] for r in records], marker="o", label="data term / N")
    ax.plot(epochs, [r["prior_term"] for r in records], marker="o", label="prior term / N")
    ax.set(xlabel="epoch", ylabel="nats per example", title="objective terms")
    ax.legend()
    ax = axes[1, 1]
    thetas = [t for values in records[-1]["theta"].values() for t in values]
    ax.hist(thetas, bins=20, range=(0, 1))
    ax.set(xlabel="θ", ylabel="surviving units", title="gate probabilities at the end")
    fig.tight_layout()
    path = Path(run_dir) / "training.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
