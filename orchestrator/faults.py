"""Fault injection for the hardening tests (tests/python/test_faults.py, docs/reliability.md).

``fault_point(name)`` marks a place in promote/rollback where a crash must be survivable. It does
nothing unless the environment variable ORCHESTRATOR_FAULT names that point, as
``<point>:<action>`` (the point itself contains colons, e.g. ``promote:mid-write:sigkill``):

- ``sigkill``: the process kills itself with SIGKILL (no cleanup, no ``finally``, no exit handler);
- ``raise``: raises ``InjectedFault`` (an ordinary failure: the ``failed`` path of the audit);
- ``pause``: writes ``<dir>/<point>.paused`` (holding the pid) and waits until ``<dir>/<point>.resume``
  exists (at most ORCHESTRATOR_FAULT_TIMEOUT seconds, default 120), so that a test can act while the
  process stands still at that point, e.g. terminate its database backend. ``<dir>`` is
  ORCHESTRATOR_FAULT_DIR (default: the temporary directory); ``:`` in the point becomes ``_``.

Production runs never set ORCHESTRATOR_FAULT; an unknown action is ignored rather than failing a run.
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
from pathlib import Path

ENV = "ORCHESTRATOR_FAULT"
DIR_ENV = "ORCHESTRATOR_FAULT_DIR"
TIMEOUT_ENV = "ORCHESTRATOR_FAULT_TIMEOUT"


class InjectedFault(RuntimeError):
    """Raised at a fault point by the ``raise`` action."""


def marker_paths(point: str, directory: Path | None = None) -> tuple[Path, Path]:
    """(paused marker, resume file) of a point."""
    directory = directory or Path(os.environ.get(DIR_ENV) or tempfile.gettempdir())
    stem = point.replace(":", "_")
    return directory / f"{stem}.paused", directory / f"{stem}.resume"


def fault_point(name: str) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    point, _, action = spec.rpartition(":")
    if point != name:
        return
    if action == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(10)  # SIGKILL is asynchronous: never run past the point
    elif action == "raise":
        raise InjectedFault(f"injected fault at {name}")
    elif action == "pause":
        paused, resume = marker_paths(name)
        paused.write_text(str(os.getpid()))
        deadline = time.monotonic() + float(os.environ.get(TIMEOUT_ENV) or 120)
        while not resume.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
