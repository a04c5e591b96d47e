"""The project's own error types. The CLI maps each to an exit code and a one-line message."""


class OrchestratorError(Exception):
    """Could not run: bad configuration, no database, bad arguments (exit 2)."""

    exit_code = 2


class CheckFailed(OrchestratorError):
    """Ran, and a gate or check failed; nothing was changed (exit 1)."""

    exit_code = 1


class Aborted(CheckFailed):
    """The user answered no at a prompt; nothing was changed (exit 1)."""
