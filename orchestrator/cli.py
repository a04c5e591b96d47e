"""The ``orchestrator`` command line. It parses options and calls the core; nothing else.

Exit codes: 0 done; 1 ran and a gate or check failed (nothing changed); 2 could not run.
"""

from __future__ import annotations

import functools
import shlex
import sys
import traceback
from typing import Annotated

import psycopg
import typer
from rich.console import Console

from orchestrator import __version__
from orchestrator.errors import OrchestratorError

app = typer.Typer(
    help="Migrate legacy context-scoped profiles to a unified Profile + ContextIntent, safely.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
db_app = typer.Typer(help="The embedded PostgreSQL server (used when PGHOST is not set).", no_args_is_help=True)
fixtures_app = typer.Typer(help="The demo/test legacy dataset.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(fixtures_app, name="fixtures")

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)
_debug = {"on": False}


def handles_errors(command):
    """Turns the project's own errors into one `Error: ...` line and their exit code."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except OrchestratorError as exc:
            if _debug["on"]:
                traceback.print_exc()
            err.print(f"Error: {exc}", markup=False)
            raise typer.Exit(exc.exit_code) from None
        except psycopg.Error as exc:
            if _debug["on"]:
                traceback.print_exc()
            first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            err.print(
                f"Error: the database refused an operation: {first_line} (run with --debug for details)", markup=False
            )
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err.print("Interrupted.")
            raise typer.Exit(130) from None

    return wrapper


def _version(value: bool) -> None:
    if value:
        out.print(f"orchestrator {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    _debug["on"] = debug


# -- db ------------------------------------------------------------------------------------------


def _project_server():
    from orchestrator.config import orchestrator_home, project_dir
    from orchestrator.embedded import ProjectServer

    return ProjectServer(orchestrator_home(project_dir()))


def _refuse_if_external(action: str) -> None:
    from orchestrator.config import external_server_configured

    if external_server_configured():
        raise OrchestratorError(
            f"PGHOST is set, so the orchestrator uses that server and there is no embedded server to {action}: "
            f"unset PGHOST to use the embedded one"
        )


@db_app.command("start")
@handles_errors
def db_start() -> None:
    """Start the project's embedded PostgreSQL (initialising it on first use)."""
    _refuse_if_external("start")
    conn = _project_server().ensure_running()
    out.print(f"Embedded PostgreSQL running on {conn.host}:{conn.port}, database {conn.dbname}.")


@db_app.command("stop")
@handles_errors
def db_stop() -> None:
    """Stop the embedded server (its data is kept)."""
    _refuse_if_external("stop")
    stopped = _project_server().stop()
    out.print("Embedded PostgreSQL stopped." if stopped else "Embedded PostgreSQL was not running.")


@db_app.command("status")
@handles_errors
def db_status() -> None:
    """Say whether the embedded server is initialised and running, and where."""
    from orchestrator.config import external_conninfo, external_server_configured

    if external_server_configured():
        conn = external_conninfo()
        out.print(f"Using the server named by PGHOST: {conn.host}:{conn.port}, database {conn.dbname}.")
        return
    status = _project_server().status()
    if not status["initialised"]:
        out.print("Embedded PostgreSQL: not initialised (`orchestrator db start` creates it).")
        return
    state = f"running on 127.0.0.1:{status['port']}" if status["running"] else "stopped"
    out.print(f"Embedded PostgreSQL: {state}; data in {status['cluster_dir']}.")


@db_app.command("env")
@handles_errors
def db_env() -> None:
    """Print shell exports for the embedded server: eval "$(orchestrator db env)" then run dbt by hand."""
    from orchestrator.config import Settings

    _refuse_if_external("describe")
    server = _project_server()
    conn = server.ensure_running()
    settings = Settings.load()
    exports = {**conn.libpq_env(), **settings.dbt_env()}
    for key, value in exports.items():
        out.print(f"export {key}={shlex.quote(value)}", markup=False)


@db_app.command("destroy")
@handles_errors
def db_destroy(
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Stop the embedded server and delete its data."""
    _refuse_if_external("destroy")
    _confirm("Delete the embedded PostgreSQL server and all its data?", yes)
    _project_server().destroy()
    out.print("Embedded PostgreSQL deleted.")


def _confirm(question: str, yes: bool) -> None:
    from orchestrator.errors import Aborted

    if yes:
        return
    if not sys.stdin.isatty():
        raise OrchestratorError("this command changes data and there is no terminal to ask: use --yes")
    if not typer.confirm(question, default=False):
        raise Aborted("nothing was changed")


# -- fixtures and demo ----------------------------------------------------------------------------


@fixtures_app.command("load")
@handles_errors
def fixtures_load(
    schema: Annotated[str, typer.Option(help="The schema that plays the app's legacy schema.")] = "legacy_fixtures",
) -> None:
    """(Re)create a legacy-shaped schema holding the fixture dataset."""
    from orchestrator import fixtures
    from orchestrator.config import Settings, connect_info, external_server_configured

    settings = Settings.load(legacy_schema=schema)
    conn = connect_info(settings)
    counts = fixtures.load(settings, conn, schema)
    if not external_server_configured():
        _project_server().remember_legacy_schema(schema)
    out.print(f"Loaded fixtures into schema {schema}: " + ", ".join(f"{t} {n}" for t, n in counts.items()))


@app.command("dry-run")
@handles_errors
def dry_run_command() -> None:
    """Build everything into the dry-run schema (`dbt build --target dry_run`) with all dbt tests."""
    from orchestrator import pipeline
    from orchestrator.config import Settings, connect_info

    settings = Settings.load()
    conn = connect_info(settings)
    outcome = pipeline.dry_run(settings, conn, out)
    pipeline.print_dry_run(outcome, settings, out)


@app.command()
@handles_errors
def demo(
    schema: Annotated[str, typer.Option(help="The fixtures schema that plays the app's schema.")] = "legacy_fixtures",
) -> None:
    """Run the whole flow on the fixture dataset: start the server, load fixtures, dry run."""
    from orchestrator import pipeline

    pipeline.demo(schema, out)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
