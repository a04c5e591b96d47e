"""The project's own error types. The CLI maps each to an exit code and a one-line message."""


class OrchestratorError(Exception):
    """Could not run: bad configuration, no database, bad arguments (exit 2)."""

    exit_code = 2


class Busy(OrchestratorError):
    """Could not run now: another run, or the application's traffic, holds a lock it needs (exit 2).
    Nothing was changed; the same command can simply be retried (`sync --follow` does)."""


class Traffic(Busy):
    """Ran, and the application's traffic held a lock it needed or raced its write (a lock wait past its
    timeout, a deadlock, a user deleted or a row written meanwhile): nothing was changed (exit 1, like a
    refused gate: the application never makes a run fail). The next round, or a retry, does it again."""

    exit_code = 1


class CheckFailed(OrchestratorError):
    """Ran, and a gate or check failed; nothing was changed (exit 1)."""

    exit_code = 1


class Aborted(CheckFailed):
    """The user answered no at a prompt; nothing was changed (exit 1)."""
