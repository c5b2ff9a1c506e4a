"""The loss-curve PNG of a run."""

from __future__ import annotations

import io
from pathlib import Path

from curate.io import atomic_write_bytes


def write_loss_curve(path: Path, metrics: list[dict], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    train = [(m["step"], m["loss"]) for m in metrics if "loss" in m]
    evaluation = [(m["step"], m["eval_loss"]) for m in metrics if "eval_loss" in m]
    figure = Figure(figsize=(7, 4), dpi=110)
    axes = figure.add_subplot()
    if train:
        axes.plot(*zip(*train), label="train loss", linewidth=1.2)
    if evaluation:
        axes.plot(*zip(*evaluation), "o-", label="eval loss", linewidth=1.2)
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("loss (assistant tokens)")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    atomic_write_bytes(path, buffer.getvalue())
