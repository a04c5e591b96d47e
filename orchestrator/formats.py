"""How figures are written for people, the same in the terminal, the JSON and every report."""

from __future__ import annotations

from decimal import Decimal


def percent(value) -> str:
    """A fraction as a percentage: 0.05 -> "5.00%"; None -> "unknown"."""
    return "unknown" if value is None else f"{Decimal(value) * 100:.2f}%"


def summary_value(metric: str, value) -> str:
    """A figure of migration_summary as people read it: the conflict rate as a percentage, every other
    figure as its exact number (no exponent)."""
    if value is None:
        return ""
    if metric == "conflict_rate":
        return percent(value)
    return f"{Decimal(value):f}"


def plural(count: int, word: str, words: str | None = None) -> str:
    """ "1 warning", "2 warnings"."""
    return f"{count} {word if count == 1 else (words or word + 's')}"
