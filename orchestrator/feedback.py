"""What long work tells the person waiting for it, without the core knowing about terminals.

The core calls a ``Feedback``; the CLI passes the console's (orchestrator/console.py), which draws
progress bars and prints lines; tests and library callers pass ``SILENT``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Protocol

# advance(unique_id, status): one dbt node finished
Advance = Callable[[str, str], None]


class Feedback(Protocol):
    def note(self, text: str) -> None:
        """One line for the person waiting (plain text: never markup)."""

    def progress(self, label: str, total: int | None) -> contextlib.AbstractContextManager[Advance]:
        """A progress bar over ``total`` dbt nodes (None: unknown), advanced by the function it yields."""


class _Silent:
    def note(self, text: str) -> None:
        pass

    @contextlib.contextmanager
    def progress(self, label: str, total: int | None) -> Iterator[Advance]:
        yield lambda unique_id, status: None


SILENT: Feedback = _Silent()
