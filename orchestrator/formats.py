"""How figures and values are written for people, the same in the terminal, the JSON and every report;
and JSON read back exactly, whatever its size.

A value of the legacy data can be as long as PostgreSQL holds (a jsonb value up to 256 MiB, a text up
to 1 GB). Files that are data (CSV, JSON, the decision template) hold it whole; what a person reads
shows its start and says how long it is (``shortened``): the terminal at ``TERMINAL_CHARS``, a
Markdown or HTML report's cell at ``CELL_CHARS`` (those reports point to the file with the whole value).
"""

from __future__ import annotations

import json
import sys
from decimal import Decimal

TERMINAL_CHARS = 200  # of one value in a terminal line (explain, console tables, error messages)
CELL_CHARS = 1_000  # of one value in a Markdown or HTML report's cell
ERROR_LINE_CHARS = 2_000  # of one line of an error message, whatever it quotes


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


def length_note(length: int) -> str:
    """What a shortened value says of itself: "… (2,097,152 characters)"."""
    return f"… ({length:,} characters)"


def shortened(text: str, limit: int = TERMINAL_CHARS, length: int | None = None) -> str:
    """``text`` whole when it has at most ``limit`` characters, else its first ``limit`` characters and how
    long it is: "Lorem ipsum… (2,097,152 characters)". ``length``: the whole value's, when ``text`` is
    already its start (read so from the database)."""
    length = len(text) if length is None else length
    if length <= limit:
        return text
    return text[:limit] + length_note(length)


def shown_repr(text: str, limit: int = TERMINAL_CHARS) -> str:
    """A name or value as an error message quotes it (repr: quotes and escapes), shortened like
    ``shortened``: 'xxxx'… (1,048,576 characters)."""
    if len(text) <= limit:
        return repr(text)
    return repr(text[:limit]) + length_note(len(text))


def _exact_int(text: str) -> int | Decimal:
    """A JSON integer: an int, or beyond Python's limit on converting digits to int (4300 by default,
    sys.get_int_max_str_digits) a Decimal, which keeps its text (jsonb numbers have up to 131,072 digits)."""
    limit = sys.get_int_max_str_digits()
    return Decimal(text) if limit and len(text.lstrip("-")) > limit else int(text)


def json_loads(text: str):
    """JSON as its values exactly: numbers keep their text (1.50 stays Decimal 1.50), and integers of any
    length are read (Python refuses more than 4300 digits to int())."""
    return json.loads(text, parse_float=Decimal, parse_int=_exact_int)
