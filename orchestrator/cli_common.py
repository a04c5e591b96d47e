"""What every command of the CLI shares: the error handler (the project's errors as one line and an exit
code), the common options, and the settings and server of a command."""

from __future__ import annotations

import functools
import traceback
from typing import Annotated

import psycopg
import typer

from orchestrator import console
from orchestrator.console import err
from orchestrator.errors import OrchestratorError

debug = {"on": False}  # --debug: show tracebacks


def handles_errors(command):
    """Turns the project's own errors into one `Error: ...` line and their exit code."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except OrchestratorError as exc:
            if debug["on"]:
                traceback.print_exc()
            console.error(str(exc))
            raise typer.Exit(exc.exit_code) from None
        except psycopg.Error as exc:
            if debug["on"]:
                traceback.print_exc()
            first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            console.error(f"the database refused an operation: {first_line} (run with --debug for details)")
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err.print("Interrupted.")
            raise typer.Exit(130) from None

    return wrapper


JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
YesOption = Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")]
LockTimeoutOption = Annotated[str, typer.Option(help="How long to wait for a lock on the live tables.")]


def context():
    from orchestrator import db

    settings = db.load_settings()
    return settings, db.server(settings)


def rate(value: float | None):
    from decimal import Decimal

    return None if value is None else Decimal(str(value))
