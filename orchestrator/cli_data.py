"""The CLI's `db`, `fixtures` and `generate` commands: the embedded server and the legacy data to migrate."""

from __future__ import annotations

from typing import Annotated

import typer

from orchestrator import console
from orchestrator.cli_common import JsonOption, YesOption, context, handles_errors
from orchestrator.console import out

db_app = typer.Typer(help="The embedded PostgreSQL server (used when PGHOST is not set).", no_args_is_help=True)
fixtures_app = typer.Typer(help="The demo/test legacy dataset.", no_args_is_help=True)


# -- db ------------------------------------------------------------------------------------------


@db_app.command("start")
@handles_errors
def db_start() -> None:
    """Start the project's embedded PostgreSQL (initialising it on first use).

    \b
    Example:
      orchestrator db start
    """
    from orchestrator import db

    conn = db.embedded_server("start").ensure_running()
    out.print(f"Embedded PostgreSQL running on {conn.host}:{conn.port}, database {conn.dbname}.")


@db_app.command("stop")
@handles_errors
def db_stop() -> None:
    """Stop the embedded server (its data is kept).

    \b
    Example:
      orchestrator db stop
    """
    from orchestrator import db

    stopped = db.embedded_server("stop").stop()
    out.print("Embedded PostgreSQL stopped." if stopped else "Embedded PostgreSQL was not running.")


@db_app.command("status")
@handles_errors
def db_status(json_output: JsonOption = False) -> None:
    """Say whether the embedded server is initialised and running, and where.

    \b
    Examples:
      orchestrator db status
      orchestrator db status --json
    """
    from orchestrator import db
    from orchestrator.config import external_conninfo, external_server_configured

    if external_server_configured():
        conn = external_conninfo()
        if json_output:
            console.print_json({"server": "external", "host": conn.host, "port": conn.port, "database": conn.dbname})
        else:
            out.print(f"Using the server named by PGHOST: {conn.host}:{conn.port}, database {conn.dbname}.")
        return
    status = db.embedded_server("describe").status()
    if json_output:
        console.print_json({"server": "embedded", **status})
    elif not status["initialised"]:
        out.print("Embedded PostgreSQL: not initialised (`orchestrator db start` creates it).")
    else:
        state = f"running on 127.0.0.1:{status['port']}" if status["running"] else "stopped"
        out.print(f"Embedded PostgreSQL: {state}; data in {status['cluster_dir']}.", markup=False)


@db_app.command("env")
@handles_errors
def db_env() -> None:
    """Print shell exports to run dbt or psql by hand: the embedded server's PG* variables (when PGHOST
    is not set), the schema variables, and the dry run as dbt's default target (DBT_TARGET), so a bare
    `dbt build` or `dbt test` builds and tests the dry-run schema from the legacy schema, as
    `orchestrator dry-run` does.

    \b
    Example:
      eval "$(orchestrator db env)" && dbt build
    """
    import shlex

    from orchestrator import db
    from orchestrator.config import external_conninfo, external_server_configured
    from orchestrator.dbt import DbtProject

    settings = db.load_settings()
    if external_server_configured():  # the PG* variables are the user's own: export the rest only
        exports = DbtProject(settings, external_conninfo()).shell_env(server=False)
    else:
        exports = DbtProject(settings, db.embedded_server("describe").ensure_running()).shell_env()
    for key, value in exports.items():
        out.print(f"export {key}={shlex.quote(value)}", markup=False)


@db_app.command("destroy")
@handles_errors
def db_destroy(yes: YesOption = False) -> None:
    """Stop the embedded server and delete its data.

    \b
    Example:
      orchestrator db destroy --yes
    """
    from orchestrator import db

    server = db.embedded_server("destroy")
    console.confirm("Delete the embedded PostgreSQL server and all its data?", yes)
    server.destroy()
    out.print("Embedded PostgreSQL deleted.")


@db_app.command("grant-role")
@handles_errors
def db_grant_role(
    role: Annotated[str, typer.Argument(help="The migration role (created, LOGIN, if absent).")],
) -> None:
    """Set up a least-privilege migration role (docs/security.md); run as an administrator.

    The role may read the legacy tables, owns the dry-run and metadata schemas, may create the two
    live tables in the live schema, and nothing else. Its password comes from MIGRATION_ROLE_PASSWORD
    (required to create the role; sent to the server only as a SCRAM verifier).

    \b
    Example:
      MIGRATION_ROLE_PASSWORD=... orchestrator db grant-role migrator
    """
    import os

    from orchestrator import roles

    settings, conn = context()
    result = roles.grant_migration_role(settings, conn, role, os.environ.get(roles.PASSWORD_ENV) or None)
    out.print(
        f"Role {result.role} {'created' if result.created else 'updated'}: reads schema {settings.legacy_schema}, "
        f"owns {settings.dry_run_schema}, {settings.partial_schema}, {settings.snapshot_schema} and "
        f"{settings.meta_schema}, may create "
        f"the live tables in {settings.live_schema}" + (" (password set)." if result.password_set else "."),
        markup=False,
    )


# -- data --------------------------------------------------------------------------------------------


@fixtures_app.command("load")
@handles_errors
def fixtures_load(
    schema: Annotated[str, typer.Option(help="The schema that plays the app's legacy schema.")] = "legacy_fixtures",
    json_output: JsonOption = False,
) -> None:
    """(Re)create a legacy-shaped schema holding the fixture dataset.

    The embedded server remembers the schema, so later commands use it as the legacy schema.

    \b
    Examples:
      orchestrator fixtures load
      orchestrator fixtures load --schema my_legacy_copy
    """
    from orchestrator import db, fixtures

    settings = db.load_settings(legacy_schema=schema)
    counts = fixtures.load(settings, db.server(settings), schema, remember=True)
    if json_output:
        console.print_json({"schema": schema, "rows": counts})
        return
    out.print(f"Loaded fixtures into schema {schema}: " + ", ".join(f"{t} {n}" for t, n in counts.items()))


@handles_errors
def generate(
    users: Annotated[int, typer.Option("--users", help="How many users (1,000,000 takes a few minutes).", min=1)],
    seed: Annotated[int, typer.Option(help="The same seed gives byte-identical data.", min=0)] = 1,
    schema: Annotated[str, typer.Option(help="The schema that plays the app's legacy schema.")] = "legacy_generated",
    workers: Annotated[
        int | None, typer.Option(help="Concurrent connections (default: CPUs, at most 8).", min=1)
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """(Re)create a legacy-shaped schema holding a realistic generated dataset (set-based, reproducible).

    Refuses a schema whose tables hold rows it did not make (exit 2). The embedded server remembers
    the schema, so later commands use it as the legacy schema.

    \b
    Examples:
      orchestrator generate --users 100000
      orchestrator generate --users 1000000 --seed 7 --schema legacy_1m
    """
    from orchestrator import db
    from orchestrator import generate as generating

    settings = db.load_settings(legacy_schema=schema)
    result = generating.generate_as_legacy(
        settings, db.server(settings), schema, users, seed, workers=workers, feedback=console.feedback(json_output)
    )
    if json_output:
        console.print_json(
            {"schema": schema, "users": users, "seed": seed, "rows": result.counts, "seconds": result.timings}
        )
        return
    out.print(
        f"Generated {users:,} users (seed {seed}) into schema {schema} in {result.seconds:.1f} s: "
        + ", ".join(f"{t} {n:,}" for t, n in result.counts.items()),
        markup=False,
    )
