"""The ``orchestrator`` command line. It parses options and calls the core; nothing else.

Exit codes: 0 done; 1 ran and a gate or check failed (nothing changed); 2 could not run.
"""

from __future__ import annotations

import dataclasses
import functools
import shlex
import sys
import traceback
from pathlib import Path
from typing import Annotated

import psycopg
import typer
from rich.console import Console

from orchestrator import __version__
from orchestrator.errors import CheckFailed, OrchestratorError

APP_HELP = """Migrate legacy context-scoped profiles to a unified Profile + ContextIntent, safely.

\b
The flow (README.md; the sign-off: docs/reviewing.md):
  orchestrator fixtures load          demo data (or set MIGRATION_LEGACY_SCHEMA)
  orchestrator dry-run                build and test it all in the dry-run schema
  orchestrator docs --serve           the lineage, legacy tables to live tables
  orchestrator report --format html   checks, conflicts, unmapped keys, scores
  orchestrator promote                publish into the live tables, gated
  orchestrator verify                 check the live tables
  orchestrator rollback               undo the last promote

Exit codes: 0 done; 1 ran and a gate or check failed (nothing changed); 2 could not run (bad
arguments or configuration, no database); 130 interrupted. With --json a command prints its
result as JSON on stdout; messages, progress and errors go to stderr.
"""

app = typer.Typer(
    help=APP_HELP,
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


def _json_default(value):
    import dataclasses
    import datetime
    from decimal import Decimal

    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, datetime.datetime | datetime.date):
        return value.isoformat()
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    return str(value)


def _print_json(value) -> None:
    """One JSON document on stdout (plain text: no markup or emoji rendering of user data)."""
    import json

    typer.echo(json.dumps(value, indent=2, default=_json_default))


JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]


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
    """Start the project's embedded PostgreSQL (initialising it on first use).

    \b
    Example:
      orchestrator db start
    """
    _refuse_if_external("start")
    conn = _project_server().ensure_running()
    out.print(f"Embedded PostgreSQL running on {conn.host}:{conn.port}, database {conn.dbname}.")


@db_app.command("stop")
@handles_errors
def db_stop() -> None:
    """Stop the embedded server (its data is kept).

    \b
    Example:
      orchestrator db stop
    """
    _refuse_if_external("stop")
    stopped = _project_server().stop()
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
    from orchestrator.config import external_conninfo, external_server_configured

    if external_server_configured():
        conn = external_conninfo()
        if json_output:
            _print_json({"server": "external", "host": conn.host, "port": conn.port, "database": conn.dbname})
            return
        out.print(f"Using the server named by PGHOST: {conn.host}:{conn.port}, database {conn.dbname}.")
        return
    status = _project_server().status()
    if json_output:
        _print_json({"server": "embedded", **status})
        return
    if not status["initialised"]:
        out.print("Embedded PostgreSQL: not initialised (`orchestrator db start` creates it).")
        return
    state = f"running on 127.0.0.1:{status['port']}" if status["running"] else "stopped"
    out.print(f"Embedded PostgreSQL: {state}; data in {status['cluster_dir']}.")


@db_app.command("env")
@handles_errors
def db_env() -> None:
    """Print shell exports for the embedded server, to run dbt or psql by hand.

    \b
    Example:
      eval "$(orchestrator db env)" && dbt build --target dry_run
    """
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
    """Stop the embedded server and delete its data.

    \b
    Example:
      orchestrator db destroy --yes
    """
    _refuse_if_external("destroy")
    _confirm("Delete the embedded PostgreSQL server and all its data?", yes)
    _project_server().destroy()
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

    settings, conn = _context()
    result = roles.grant_migration_role(settings, conn, role, os.environ.get(roles.PASSWORD_ENV) or None)
    out.print(
        f"Role {result.role} {'created' if result.created else 'updated'}: reads schema {settings.legacy_schema}, "
        f"owns {settings.dry_run_schema}, {settings.dry_run_schema}_users and {settings.meta_schema}, may create "
        f"the live tables in {settings.live_schema}" + (" (password set)." if result.password_set else ".")
    )


def _interactive() -> bool:
    """Whether a person can answer a prompt (standard input is a terminal)."""
    return sys.stdin.isatty()


def _confirm(question: str, yes: bool) -> None:
    from orchestrator.errors import Aborted

    if yes:
        return
    if not _interactive():
        raise OrchestratorError("this command changes data and there is no terminal to ask: use --yes")
    if not typer.confirm(question, default=False):
        raise Aborted("nothing was changed")


# -- fixtures and demo ----------------------------------------------------------------------------


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
    from orchestrator import pipeline
    from orchestrator.config import Settings, connect_info

    settings = Settings.load(legacy_schema=schema)
    counts = pipeline.load_fixtures(settings, connect_info(settings), schema)
    if json_output:
        _print_json({"schema": schema, "rows": counts})
        return
    out.print(f"Loaded fixtures into schema {schema}: " + ", ".join(f"{t} {n}" for t, n in counts.items()))


@app.command()
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
    from orchestrator import generate as generating
    from orchestrator.config import Settings, connect_info

    settings = Settings.load(legacy_schema=schema)
    conn = connect_info(settings)
    console = err if json_output else out
    result = generating.generate(
        conn, schema, users, seed, workers=workers, progress=lambda line: console.print(line, markup=False)
    )
    generating.remember_schema(settings.home, schema)
    if json_output:
        _print_json({"schema": schema, "users": users, "seed": seed, "rows": result.counts, "seconds": result.timings})
        return
    out.print(
        f"Generated {users:,} users (seed {seed}) into schema {schema} in {result.seconds:.1f} s: "
        + ", ".join(f"{t} {n:,}" for t, n in result.counts.items())
    )


def _context():
    from orchestrator.config import Settings, connect_info

    settings = Settings.load()
    return settings, connect_info(settings)


def _batch_count(value: str) -> str:
    from orchestrator.batches import MAX_BATCHES

    if value != "auto" and not (value.isdigit() and 1 <= int(value) <= MAX_BATCHES):
        raise typer.BadParameter(f"{value!r} is neither `auto` nor a whole number from 1 to {MAX_BATCHES}")
    return value


@app.command("dry-run")
@handles_errors
def dry_run_command(
    batches: Annotated[
        str,
        typer.Option(
            help="Build the per-user models in K hash batches of users, two at a time (the same rows; "
            "less memory and temp space per step, and both cores busy). `auto`: none below 500,000 "
            "users, else one per ~125,000 users (docs/performance.md).",
            metavar="K|auto",
            envvar="MIGRATION_BATCHES",
            callback=_batch_count,
        ),
    ] = "auto",
    json_output: JsonOption = False,
) -> None:
    """Build everything into the dry-run schema (`dbt build --target dry_run`), with every dbt test.

    Records a fingerprint of the legacy tables before and after the build, and prints the
    verification summary. Exit 1 when a dbt test fails (the dry run is then not promotable).
    The legacy tables are only read.

    \b
    Examples:
      orchestrator dry-run
      orchestrator dry-run --batches 8
      orchestrator dry-run --json | jq '.summary[] | select(.passed == false)'
    """
    from orchestrator import pipeline

    settings, conn = _context()
    count = None if batches == "auto" else int(batches)
    outcome = pipeline.dry_run(settings, conn, err if json_output else out, batches=count)
    if json_output:
        _print_json(_dry_run_json(outcome))
        return
    pipeline.print_dry_run(outcome, settings, out)


def _dry_run_json(outcome) -> dict:
    record, nodes = outcome.record, outcome.dbt.nodes
    return {
        "dry_run_id": record["dry_run_id"],
        "status": record["status"],
        "legacy_schema": record["legacy_schema"],
        "dry_run_schema": record["dry_run_schema"],
        "dbt_invocation_id": outcome.dbt.invocation_id,
        "batches": outcome.batches,
        "legacy_unchanged_during_build": record["fingerprint_before"] == record["fingerprint_after"],
        "nodes": {
            "built": sum(1 for node in nodes if node.status == "success"),
            "tests_passed": sum(1 for node in nodes if node.status == "pass"),
            "warnings": sum(1 for node in nodes if node.status == "warn"),
        },
        "summary": outcome.summary,
    }


def _read_users(users: list[str] | None, users_file: Path | None) -> list[str] | None:
    if not users and users_file is None:
        return None
    ids = list(users or [])
    if users_file is not None:
        try:
            text = users_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise OrchestratorError(f"cannot read the users file {users_file}: {exc}") from None
        ids += [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not ids:
        raise OrchestratorError("no user ids given: --user and --users-file were empty")
    return list(dict.fromkeys(ids))


def _confirm_plan(yes: bool, live_schema: str, console: Console = out):
    def confirm(plan: dict) -> None:
        from rich.table import Table

        table = Table(title=f"Changes to the live tables in schema {live_schema}")
        for column in ("table", "insert", "update", "delete", "unchanged"):
            table.add_column(column, justify="left" if column == "table" else "right")
        for name, counts in plan.items():
            table.add_row(name, *(str(counts[k]) for k in ("inserted", "updated", "deleted", "unchanged")))
        console.print(table)
        _confirm("Promote these changes?", yes)

    return confirm


@app.command()
@handles_errors
def promote(
    max_conflict_rate: Annotated[
        float, typer.Option(help="Refuse when users with a conflict / all users exceeds this.", min=0.0, max=1.0)
    ] = 0.05,
    user: Annotated[
        list[str] | None,
        typer.Option(
            "--user",
            help="Only this user (repeatable): rebuilt from current legacy data; other users' live rows are untouched.",
        ),
    ] = None,
    users_file: Annotated[Path | None, typer.Option(help="A file of user ids, one per line (# comments).")] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite live rows the application changed since our last promote.")
    ] = False,
    lock_timeout: Annotated[str, typer.Option(help="How long to wait for a lock on the live tables.")] = "5s",
    json_output: JsonOption = False,
) -> None:
    """Publish the verified dry run into the live tables, atomically, if every gate holds.

    Gates: the dry run is complete and every error-severity dbt test passed; the key accounting
    reconciles; the conflict rate is at most --max-conflict-rate; the legacy data has not changed
    since the dry run. Shows the rows to insert/update/delete and asks unless --yes. Exit 1 when a
    gate fails (nothing is changed).

    \b
    Examples:
      orchestrator promote
      orchestrator promote --yes --json
      orchestrator promote --user u123 --user u456
      orchestrator promote --users-file ids.txt --max-conflict-rate 0.1
    """
    from decimal import Decimal

    from orchestrator import pipeline
    from orchestrator import promote as promoting

    settings, conn = _context()
    console = err if json_output else out
    users = _read_users(user, users_file)
    _refuse_without_terminal(yes)

    def rebuild(pg):
        # promote has filled the scope table with the users; rebuild them from current legacy data
        from psycopg import sql

        scope = sql.Identifier(settings.meta_schema, promoting.SCOPE_TABLE)
        try:
            return pipeline.dry_run(settings, conn, console, scope_table=scope, pg=pg).record
        except CheckFailed:
            from orchestrator import metadata

            return metadata.latest_dry_run(
                pg,
                settings.meta_schema,
                dry_run_schema=pipeline.partial_schema(settings),
                legacy_schema=settings.legacy_schema,
            )

    result = promoting.promote(
        settings,
        conn,
        max_conflict_rate=Decimal(str(max_conflict_rate)),
        users=users,
        confirm=_confirm_plan(yes, settings.live_schema, console),
        force=force,
        lock_timeout=lock_timeout,
        rebuild_scope=rebuild,
    )
    if json_output:
        _print_json(
            {
                "run_id": result.run_id,
                "live_schema": settings.live_schema,
                "scope": "users" if users else "all",
                "users": users,
                "created_tables": result.created_tables,
                "plan": result.plan,
                "gates": [gate.as_dict() for gate in result.gates],
                "dead_runs": result.dead_runs,
            }
        )
        return
    for run in result.dead_runs:
        out.print(
            f"Note: {run['command']} run {run['run_id'][:12]} started {run['started_at']:%Y-%m-%d %H:%M:%S} "
            f"died before finishing; nothing of it was committed (recorded as 'died')."
        )
    scope = f"{len(users)} users" if users else "all users"
    out.print(
        f"Promoted ({scope}) into schema {settings.live_schema}: run {result.run_id}"
        + (" (created the live tables)" if result.created_tables else "")
        + "."
    )


def _refuse_without_terminal(yes: bool) -> None:
    if not yes and not _interactive():
        raise OrchestratorError("this command changes the live tables and there is no terminal to ask: use --yes")


@app.command()
@handles_errors
def rollback(
    drop: Annotated[bool, typer.Option("--drop", help="Remove the new live tables entirely.")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Roll back even if the application changed the live tables since our last promote."
        ),
    ] = False,
    lock_timeout: Annotated[str, typer.Option(help="How long to wait for a lock on the live tables.")] = "5s",
    json_output: JsonOption = False,
) -> None:
    """Restore the live tables to their state before the last promote (dropping them if it created them).

    Legacy tables are never touched: their fingerprint is compared before and after, and reported
    (exit 1 if it changed: the application wrote to them meanwhile).

    \b
    Examples:
      orchestrator rollback
      orchestrator rollback --yes --json
      orchestrator rollback --drop --yes
    """
    from orchestrator import promote as promoting

    settings, conn = _context()
    _refuse_without_terminal(yes)
    console = err if json_output else out

    def confirm(action: str) -> None:
        console.print(f"Rollback will {action} in schema {settings.live_schema}.")
        _confirm("Roll back?", yes)

    result = promoting.rollback(settings, conn, drop=drop, confirm=confirm, force=force, lock_timeout=lock_timeout)
    if json_output:
        _print_json({"live_schema": settings.live_schema, **dataclasses.asdict(result)})
        if not result.legacy_unchanged:
            raise CheckFailed(
                "the legacy tables' fingerprint changed during the rollback: the application wrote to them"
            )
        return
    what = (
        "dropped the live tables"
        if result.dropped
        else "restored the live tables to their state before promote "
        f"{(result.undone_run_id or '')[:12]} ("
        + "; ".join(f'"{t}" -{c["removed"]} +{c["restored"]}' for t, c in result.counts.items())
        + ")"
    )
    out.print(f"Rolled back (run {result.run_id}): {what}.")
    if result.legacy_unchanged:
        out.print("Legacy tables verified unchanged (fingerprint of User, ContextProfile, Profile).")
    else:
        raise CheckFailed("the legacy tables' fingerprint changed during the rollback: the application wrote to them")


@app.command()
@handles_errors
def verify(
    json_output: Annotated[bool, typer.Option("--json", help="Print the checks as JSON.")] = False,
) -> None:
    """Run the original plan's verification queries on the live tables; exit 1 if any fails.

    \b
    Examples:
      orchestrator verify
      orchestrator verify --json
    """
    from orchestrator import pipeline

    settings, conn = _context()
    checks = pipeline.verify(settings, conn)
    if json_output:
        _print_json(checks)
    else:
        from rich.table import Table

        table = Table(title=f"Verification of the live tables in schema {settings.live_schema}")
        for column in ("check", "value", "expected", "result"):
            table.add_column(column)
        for check in checks:
            table.add_row(
                check["check"], str(check["value"]), str(check["expected"]), "pass" if check["passed"] else "FAIL"
            )
        out.print(table)
    failed = [c["check"] for c in checks if not c["passed"]]
    if failed:
        raise CheckFailed(f"{len(failed)} verification checks failed: {', '.join(failed)}")


@app.command()
@handles_errors
def report(
    format: Annotated[
        str,
        typer.Option(
            "--format", help="md, csv, json (the logs and the summary as tables) or html (the visual report)."
        ),
    ] = "md",
    out_dir: Annotated[Path, typer.Option("--out", help="Directory for the report files.")] = Path("reports"),
    max_conflict_rate: Annotated[
        float,
        typer.Option(help="html: the promote gate's threshold to show the conflict rate against.", min=0.0, max=1.0),
    ] = 0.05,
    max_rows: Annotated[
        int, typer.Option(help="html: at most this many detail rows per table (0: all).", min=0)
    ] = 10_000,
    json_output: Annotated[bool, typer.Option("--json", help="Print the written files as JSON.")] = False,
) -> None:
    """Export the conflict log, the unmapped-field log and the verification summary (files mode 0600).

    --format html writes one self-contained page, migration_report.html (no script, no external
    reference): the checks, the promote gates, the key accounting, the conflict rate against the
    gate, conflicts by field, unmapped keys by reason and by key, completeness distributions, and
    every conflict and unmapped row. The files hold personal data: keep them private.

    \b
    Examples:
      orchestrator report
      orchestrator report --format html --out reports
      orchestrator report --format csv --out /secure/place --json
    """
    from decimal import Decimal

    from orchestrator import pipeline

    settings, conn = _context()
    options = {}
    if format == "html":
        options = {"max_conflict_rate": Decimal(str(max_conflict_rate)), "detail_rows": max_rows or None}
    with (err if json_output else out).status(f"Writing the {format} report", spinner="dots"):
        paths = pipeline.report(settings, conn, format, out_dir, **options)
    if json_output:
        _print_json({"format": format, "files": [str(path) for path in paths]})
        return
    for path in paths:
        out.print(f"Wrote {path}")


@app.command()
@handles_errors
def runs(
    limit: Annotated[int, typer.Option(help="How many runs to show.", min=1)] = 20,
    json_output: Annotated[bool, typer.Option("--json", help="Print the runs as JSON.")] = False,
) -> None:
    """Show the promote/rollback audit history, newest first.

    \b
    Examples:
      orchestrator runs
      orchestrator runs --limit 5 --json
    """
    from orchestrator import db, metadata

    settings, conn = _context()
    with db.connect(conn) as pg:
        history = metadata.runs(pg, settings.meta_schema, limit)
    if json_output:
        _print_json(history)
        return
    if not history:
        out.print("No promote or rollback has run yet.")
        return
    from rich.table import Table

    table = Table(title="Promote / rollback audit")
    for column in ("started", "command", "status", "run", "who", "scope", "dbt invocation", "note"):
        table.add_column(column)
    for run in history:
        note = run["message"] or ("rolled back" if run["rolled_back_by"] else "")
        table.add_row(
            f"{run['started_at']:%Y-%m-%d %H:%M:%S}",
            run["command"],
            run["status"],
            run["run_id"][:12],
            run["os_user"],
            run["scope"] + (f" ({run['scope_users']})" if run["scope_users"] else ""),
            run["dbt_invocation_id"] or "",
            note[:80],
        )
    out.print(table)


@app.command()
@handles_errors
def cleanup(
    keep: Annotated[int, typer.Option(help="Rollback levels to keep (at least 1).")] = 1,
    json_output: JsonOption = False,
) -> None:
    """Remove rollback backups older than the last --keep promotes.

    \b
    Examples:
      orchestrator cleanup
      orchestrator cleanup --keep 3
    """
    from orchestrator import promote as promoting

    settings, conn = _context()
    removed = promoting.cleanup(settings, conn, keep)
    if json_output:
        _print_json({"removed_backups_of": removed, "kept": keep})
        return
    out.print(f"Removed the backups of {len(removed)} older promotes; kept {keep} rollback level(s).")


@app.command()
@handles_errors
def explain(
    user: Annotated[str, typer.Option("--user", help="The legacy user id (matched byte for byte).")],
    json_output: Annotated[bool, typer.Option("--json", help="Print everything as JSON.")] = False,
) -> None:
    """Where every piece of one user's legacy data went: each key's original and normalised value,
    its target field and outcome (chosen, lost a conflict and to what, de-duplicated, absent,
    unmapped and why), then the resulting rows in the dry run and, once promoted, the live tables.

    Example: orchestrator explain --user u04
    """
    from orchestrator import explain as explaining

    settings, conn = _context()
    result = explaining.explain(settings, conn, user)
    if json_output:
        out.print(explaining.to_json(result), markup=False)
    else:
        explaining.render(result, out)


@app.command()
@handles_errors
def docs(
    out_dir: Annotated[
        Path, typer.Option("--out", help="Directory for the site (its index.html); git-ignored by default.")
    ] = Path("reports/docs"),
    serve: Annotated[bool, typer.Option("--serve", help="Then serve it on 127.0.0.1 until Ctrl-C.")] = False,
    port: Annotated[int, typer.Option(help="With --serve: the port (0: a free one).", min=0, max=65535)] = 0,
    json_output: JsonOption = False,
) -> None:
    """Build the lineage docs: every source, seed, model, column, macro, test and exposure, one page.

    Runs `dbt docs generate --static` against the current server (the catalog reads the dry-run
    and legacy schemas: run `orchestrator dry-run` first for column types) and writes one
    self-contained index.html. The graph runs from the legacy sources through staging,
    intermediate and marts to the live tables and the report (exposures).

    \b
    Examples:
      orchestrator docs
      orchestrator docs --serve
      orchestrator docs --out /tmp/lineage --serve --port 8080
    """
    from orchestrator import reviewer

    settings, conn = _context()
    console = err if json_output else out
    site = reviewer.build_docs(settings, conn, console, out_dir)
    server = reviewer.docs_server(out_dir, port) if serve else None
    if json_output:
        _print_json({**site.as_dict(), "url": reviewer.server_url(server) if server else None})
    else:
        out.print(
            f"Wrote {site.index}: {site.nodes_compiled} nodes compiled, {site.catalog_relations} relations in the "
            f"catalog (dbt invocation {site.dbt.invocation_id}).",
            markup=False,
        )
        if site.catalog_relations == 0:
            out.print("Note: nothing is built yet, so the docs have no column types: run `orchestrator dry-run`.")
        if server is None:
            out.print(f"Open it in a browser, or serve it: orchestrator docs --out {out_dir} --serve", markup=False)
    if server is not None:
        reviewer.serve(server, console)


@app.command()
@handles_errors
def demo(
    schema: Annotated[str, typer.Option(help="The fixtures schema that plays the app's schema.")] = "legacy_fixtures",
    out_dir: Annotated[Path, typer.Option("--out", help="Where to write the report.")] = Path("reports"),
) -> None:
    """The whole flow on the fixture dataset: fixtures -> dry run -> promote -> verify -> report.

    \b
    Example:
      orchestrator demo && orchestrator report --format html && orchestrator docs --serve
    """
    from orchestrator import pipeline

    pipeline.demo(schema, out, out_dir)


def main() -> None:
    try:
        app()
    except Exception:  # noqa: BLE001 (a bug: show it, and exit "could not run", never "check failed")
        traceback.print_exc()
        err.print("Error: internal error (a bug in the orchestrator): the traceback is above.")
        sys.exit(2)


if __name__ == "__main__":
    main()
