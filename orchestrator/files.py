"""Files that hold personal data (reports, the decision template): new, and readable by their owner only."""

from __future__ import annotations

import io
import os
from pathlib import Path


def private_file(path: Path) -> io.TextIOWrapper:
    """A new file only its owner can read (mode 0600), replacing any file of that name."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    return os.fdopen(fd, "w", newline="", encoding="utf-8")
