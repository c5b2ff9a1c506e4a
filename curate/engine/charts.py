"""Small horizontal bar charts for the terminal (labels, formats, lengths)."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

BLOCKS = " ▏▎▍▌▋▊▉█"


def bar(fraction: float, width: int) -> str:
    """A bar of `fraction` * `width` cells using eighth blocks for the remainder."""
    fraction = min(max(fraction, 0.0), 1.0)
    eighths = round(fraction * width * 8)
    full, rest = divmod(eighths, 8)
    return "█" * full + (BLOCKS[rest] if rest else "")


def bar_chart(title: str, counts: dict[str, int], width: int = 30, limit: int = 12) -> Table:
    """A rich table: label, bar, count and share; the largest `limit` buckets, rest folded."""
    items = sorted(counts.items(), key=lambda item: -item[1])
    if len(items) > limit:
        other = sum(count for _, count in items[limit - 1 :])
        items = [*items[: limit - 1], (f"({len(counts) - limit + 1} more)", other)]
    total = sum(counts.values()) or 1
    peak = max((count for _, count in items), default=1) or 1
    table = Table(title=title, title_justify="left", show_header=False, box=None, padding=(0, 1))
    table.add_column("label", style="bold", no_wrap=True, max_width=32)
    table.add_column("bar", style="cyan", no_wrap=True)
    table.add_column("count", justify="right")
    table.add_column("share", justify="right", style="dim")
    for label, count in items:
        table.add_row(Text(str(label)), bar(count / peak, width), str(count), f"{count / total:.1%}")
    return table
