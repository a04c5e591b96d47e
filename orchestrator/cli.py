"""The ``orchestrator`` command line: each command parses its options, makes one core call and renders
the result (orchestrator/console.py). No workflow logic lives here.

Exit codes: 0 done; 1 ran and a gate or check failed (nothing changed); 2 could not run.
"""

from __future__ import annotations

import atexit
import gc
import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer

from orchestrator import __version__, cli_common, cli_data, cli_decisions, console
from orchestrator.cli_common import JsonOption, LockTimeoutOption, YesOption, context, handles_errors, rate
from orchestrator.console import err, out
from orchestrator.errors import CheckFailed, OrchestratorError
from orchestrator.formats import plural, shortened, shown_repr

APP_HELP = """Migrate legacy context-scoped profiles to a unified Profile + ContextIntent, safely.

\b
The flow (README.md; the sign-off: docs/reviewing.md):
  orchestrator fixtures load          demo data (or set MIGRATION_LEGACY_SCHEMA)
  orchestrator dry-run                build and test it all in the dry-run schema
  orchestrator docs --serve           the lineage, legacy tables to live tables
  orchestrator report --format html   checks, conflicts, unmapped keys, scores
  orchestrator decisions template     reviewers decide conflicts, then import and dry-run again
  orchestrator promote                publish into the live tables, gated
  orchestrator sync --follow          follow the application's writes (docs/cutover.md)
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
app.add_typer(cli_data.db_app, name="db")
app.add_typer(cli_data.fixtures_app, name="fixtures")
app.add_typer(cli_decisions.decisions_app, name="decisions")
app.command()(cli_data.generate)


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
    cli_common.debug["on"] = debug


# -- dry run -----------------------------------------------------------------------------------------


def _batch_count(value: str) -> str:
    from orchestrator.batches import MAX_BATCHES

    # the length first: int() refuses more than 4300 digits, and a message quotes a long value shortened
    if value != "auto" and not (value.isdigit() and len(value.lstrip("0")) <= 6 and 1 <= int(value) <= MAX_BATCHES):
        raise typer.BadParameter(f"{shown_repr(value)} is neither `auto` nor a whole number from 1 to {MAX_BATCHES}")
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
    max_conflict_rate: Annotated[
        float | None,
        typer.Option(
            help="The threshold of the summary's conflict_rate check, and promote's default gate for this dry "
            "run. Default: the project's (dbt_project.yml var max_conflict_rate).",
            min=0.0,
            max=1.0,
        ),
    ] = None,
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
    from orchestrator import dry_run

    settings, conn = context()
    outcome = dry_run.dry_run(
        settings,
        conn,
        console.feedback(json_output),
        batches=None if batches == "auto" else int(batches),
        max_conflict_rate=rate(max_conflict_rate),
    )
    if json_output:
        console.print_json(outcome.as_dict())
    else:
        console.dry_run(outcome)


# -- promote and rollback ----------------------------------------------------------------------------


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


@app.command()
@handles_errors
def promote(
    max_conflict_rate: Annotated[
        float | None,
        typer.Option(
            help="Refuse when users with a conflict / all users exceeds this. Default: the threshold the dry "
            "run was built with (the project's, unless `dry-run --max-conflict-rate` set another).",
            min=0.0,
            max=1.0,
        ),
    ] = None,
    user: Annotated[
        list[str] | None,
        typer.Option(
            "--user",
            metavar="ID",
            help="Only this user (repeatable): rebuilt from current legacy data; other users' live rows are untouched.",
        ),
    ] = None,
    users_file: Annotated[Path | None, typer.Option(help="A file of user ids, one per line (# comments).")] = None,
    catch_up: Annotated[
        bool,
        typer.Option(
            "--catch-up",
            help="When the legacy data changed since the dry run: rebuild the users changed since (with every "
            "test) from the data as it is now, then promote it all in one transaction (docs/cutover.md).",
        ),
    ] = False,
    yes: YesOption = False,
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite live rows the application changed since our last promote.")
    ] = False,
    lock_timeout: LockTimeoutOption = "5s",
    json_output: JsonOption = False,
) -> None:
    """Publish the verified dry run into the live tables, atomically, if every gate holds.

    Gates: the dry run is complete and every error-severity dbt test passed; it was built by the
    current models; the key accounting reconciles; the conflict rate is at most --max-conflict-rate;
    the legacy data has not changed since the dry run (or, with --catch-up, the users changed since
    were rebuilt). Shows the rows to insert/update/delete and asks unless --yes. Exit 1 when a gate
    fails (nothing is changed).

    \b
    Examples:
      orchestrator promote
      orchestrator promote --catch-up --yes
      orchestrator promote --yes --json
      orchestrator promote --user u123 --user u456
      orchestrator promote --users-file ids.txt --max-conflict-rate 0.1
    """
    from orchestrator import promote as promoting

    settings, conn = context()
    users = _read_users(user, users_file)
    console.require_terminal_or_yes(yes)
    result = promoting.promote(
        settings,
        conn,
        max_conflict_rate=rate(max_conflict_rate),
        users=users,
        catch_up=catch_up,
        confirm=console.plan_confirmation(yes, settings.live_schema, err if json_output else out),
        force=force,
        lock_timeout=lock_timeout,
        feedback=console.feedback(json_output),
    )
    if json_output:
        console.print_json(result.as_dict(settings.live_schema))
    else:
        console.promoted(result, settings.live_schema)
    if result.held_back:
        raise CheckFailed(_held_back_message(result.held_back))


@app.command()
@handles_errors
def sync(
    follow: Annotated[bool, typer.Option("--follow", help="Repeat rounds until Ctrl-C or SIGTERM.")] = False,
    interval: Annotated[
        float, typer.Option(help="With --follow: seconds between the end of a round and the next.", min=0.0)
    ] = 10.0,
    max_conflict_rate: Annotated[
        float | None,
        typer.Option(
            help="Refuse a round whose combined result exceeds this conflict rate. Default: the one the last "
            "promote or round used.",
            min=0.0,
            max=1.0,
        ),
    ] = None,
    yes: YesOption = False,
    force: Annotated[
        bool,
        typer.Option("--force", help="Overwrite live rows the application changed since our last write."),
    ] = False,
    end: Annotated[
        bool,
        typer.Option(
            "--end",
            help="End the cutover: the application owns the live tables; drop the copy of the legacy rows the "
            "rounds read. Later rounds refuse until a new dry run is promoted.",
        ),
    ] = False,
    lock_timeout: LockTimeoutOption = "5s",
    json_output: JsonOption = False,
) -> None:
    """After a promote, re-migrate the users whose legacy rows changed since, and promote them.

    One round: the users changed since the last promote or round (inserts, updates, deletes, rows
    moved between users) are rebuilt from the legacy data as it is now, with every test, into the
    dry-run state, then their live rows are written in one transaction, audited as a `sync` run
    (`rollback` undoes one round at a time). A round with nothing to do writes nothing. Users whose
    live rows the application changed since our last write are handed over to it: listed once (exit 1)
    and not written or listed again unless their legacy rows change again (--force overwrites them). A
    user with a stale reviewer decision is held back and listed (exit 1); every other user is published.
    A user deleted after the round read the legacy tables is left out, and the next round handles it.
    With --follow, a refused round (a gate failed, or another run or the application's traffic held a
    lock) is reported and the next one tries again; each round's line lists the users it held back and
    how the changes were found: from the write-ahead log (a replication slot, where the server offers
    it) or by comparing every user's digests (MIGRATION_CHANGE_SOURCE). The dry-run state's summary is
    brought up to date for what changed (chat messages written while no user changed are counted by the
    next round that rebuilds someone). After a server crash, which empties the dry-run state's unlogged
    tables, a round refuses: run a new dry run. --follow parses the dbt project once: restart it after
    editing the models. docs/cutover.md is the runbook.

    \b
    Examples:
      orchestrator sync --yes
      orchestrator sync --follow --interval 5 --yes
      orchestrator sync --end --yes
    """
    from orchestrator import sync as syncing

    settings, conn = context()
    console.require_terminal_or_yes(yes)
    feedback = console.feedback(json_output)
    if end:
        ended = syncing.end_cutover(
            settings, conn, confirm=lambda action: console.confirm(f"{action[:1].upper()}{action[1:]}?", yes)
        )
        if json_output:
            console.print_json(ended.as_dict())
        else:
            console.out.print(
                f"Cutover ended: the live tables come from run {ended.run_id}; the copy of the legacy rows "
                f"(schema {ended.dropped_snapshot}) is dropped"
                + (f", and the change stream's replication slot {ended.dropped_slot}" if ended.dropped_slot else "")
                + ". `orchestrator sync` now refuses until a new dry run is promoted.",
                markup=False,
            )
        return
    if follow:
        console.confirm(f"Promote every round's changes into schema {settings.live_schema} until stopped?", yes)
        held_back: list[str] = []  # each round's line lists them
        skipped = syncing.follow(
            settings,
            conn,
            interval=interval,
            on_round=console.sync_line_printer(json_output),
            max_conflict_rate=rate(max_conflict_rate),
            force=force,
            lock_timeout=lock_timeout,
            feedback=feedback,
        )
    else:
        result = syncing.sync_round(
            settings,
            conn,
            confirm=console.plan_confirmation(yes, settings.live_schema, err if json_output else out),
            max_conflict_rate=rate(max_conflict_rate),
            force=force,
            lock_timeout=lock_timeout,
            feedback=feedback,
        )
        console.sync_line_printer(json_output)(result)
        skipped, held_back = result.skipped, result.held_back
    problems = []
    if skipped:
        problems.append(
            f"{plural(len(skipped), 'user was', 'users were')} handed over to the application, which changed "
            f"their live rows since our last write ({_ids(skipped)}): they are not written or listed again unless "
            f"their legacy rows change again; check them, or sync --force to overwrite them"
        )
    if held_back:
        problems.append(_held_back_message(held_back))
    if problems:
        raise CheckFailed("; ".join(problems))


def _ids(users: list[str]) -> str:
    return ", ".join(shortened(user) for user in users[:10]) + (", ..." if len(users) > 10 else "")


def _held_back_message(users: list[str]) -> str:
    return (
        f"{plural(len(users), 'user was', 'users were')} held back for a stale reviewer decision ({_ids(users)}): "
        f"their live rows stay as they were; see `orchestrator decisions list`, decide again or clear, and the "
        f"next round publishes them"
    )


@app.command()
@handles_errors
def rollback(
    drop: Annotated[bool, typer.Option("--drop", help="Remove the new live tables entirely.")] = False,
    yes: YesOption = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Roll back even if the application changed the live tables since our last promote."
        ),
    ] = False,
    lock_timeout: LockTimeoutOption = "5s",
    json_output: JsonOption = False,
) -> None:
    """Restore the live tables to their state before the last promote or sync round (dropping them if it created them).

    Legacy tables are never touched: their fingerprint is compared before and after, and reported
    (exit 1 if it changed: the application wrote to them meanwhile).

    \b
    Examples:
      orchestrator rollback
      orchestrator rollback --yes --json
      orchestrator rollback --drop --yes
    """
    from orchestrator import rollback as rolling_back

    settings, conn = context()
    console.require_terminal_or_yes(yes)
    result = rolling_back.rollback(
        settings,
        conn,
        drop=drop,
        confirm=console.rollback_confirmation(yes, settings.live_schema, err if json_output else out),
        force=force,
        lock_timeout=lock_timeout,
    )
    if json_output:
        console.print_json(result.as_dict(settings.live_schema))
    else:
        console.rolled_back(result)
    if not result.legacy_unchanged:
        raise CheckFailed("the rollback's transaction wrote to a legacy table: it must never; report this as a bug")


@app.command()
@handles_errors
def cleanup(
    keep: Annotated[int, typer.Option(help="Rollback levels to keep (at least 1).")] = 1,
    json_output: JsonOption = False,
) -> None:
    """Remove rollback backups older than the last --keep promotes and sync rounds, and the change stream's slot.

    \b
    Examples:
      orchestrator cleanup
      orchestrator cleanup --keep 3
    """
    from orchestrator import rollback as rolling_back

    settings, conn = context()
    removed, slot = rolling_back.cleanup(settings, conn, keep)
    if json_output:
        console.print_json({"removed_backups_of": removed, "kept": keep, "dropped_slot": slot})
        return
    out.print(f"Removed the backups of {len(removed)} older promotes; kept {keep} rollback level(s).")
    if slot:
        out.print(
            f"Dropped the change stream's replication slot {slot} (it held WAL back on the server); the next "
            f"catch-up or sync round compares every user's digests once and makes a new one.",
            markup=False,
        )


@app.command()
@handles_errors
def runs(
    limit: Annotated[int, typer.Option(help="How many runs to show.", min=1)] = 20,
    json_output: Annotated[bool, typer.Option("--json", help="Print the runs as JSON.")] = False,
) -> None:
    """Show the promote/sync/rollback audit history, newest first.

    \b
    Examples:
      orchestrator runs
      orchestrator runs --limit 5 --json
    """
    from orchestrator import db, metadata

    settings, conn = context()
    with db.connect(conn) as pg:
        history = metadata.runs(pg, settings.meta_schema, limit)
    if json_output:
        console.print_json(history)
    else:
        console.runs(history)


# -- checking and reviewing --------------------------------------------------------------------------


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
    from orchestrator import verify as verifying

    settings, conn = context()
    checks = verifying.verify(settings, conn)
    if json_output:
        console.print_json(checks)
    else:
        console.verification(checks, settings.live_schema)
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
        float | None,
        typer.Option(
            help="html: evaluate the gates at this threshold. Default: the one in force (the dry run's last "
            "promote's, else the dry run's).",
            min=0.0,
            max=1.0,
        ),
    ] = None,
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

    csv and json hold every value whole. md and html cut a value longer than 1,000 characters,
    saying how long it is, and then write the log as CSV beside them, where it is whole.

    \b
    Examples:
      orchestrator report
      orchestrator report --format html --out reports
      orchestrator report --format csv --out /secure/place --json
    """
    from orchestrator import reports

    settings, conn = context()
    with (err if json_output else out).status(f"Writing the {format} report", spinner="dots"):
        paths = reports.write(
            settings, conn, format, out_dir, max_conflict_rate=rate(max_conflict_rate), detail_rows=max_rows or None
        )
    if json_output:
        console.print_json({"format": format, "files": [str(path) for path in paths]})
        return
    for path in paths:
        out.print(f"Wrote {path}", markup=False)


@app.command()
@handles_errors
def explain(
    user: Annotated[str, typer.Option("--user", help="The legacy user id (matched byte for byte).")],
    json_output: Annotated[bool, typer.Option("--json", help="Print everything as JSON.")] = False,
) -> None:
    """Where every piece of one user's legacy data went: each key's original and normalised value,
    its target field and outcome (chosen, lost a conflict and to what, de-duplicated, absent,
    unmapped and why), then the resulting rows in the dry run and, once promoted, the live tables.
    A value longer than 200 characters is shown cut, saying how long it is; --json has it whole.

    Example: orchestrator explain --user u04
    """
    from orchestrator import explain as explaining

    settings, conn = context()
    result = explaining.explain(settings, conn, user)
    if json_output:
        console.print_exact_json(result)
    else:
        console.explain(result)


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
    from orchestrator import docs_site

    settings, conn = context()
    feedback = console.feedback(json_output)
    site = docs_site.build(settings, conn, out_dir, feedback)
    server = docs_site.server(out_dir, port) if serve else None
    if json_output:
        console.print_json({**site.as_dict(), "url": docs_site.url(server) if server else None})
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
        docs_site.serve(server, feedback)


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
    from orchestrator import demo as demoing

    demoing.demo(schema, out_dir, console.feedback(False))


def main() -> None:
    # When the process ends, Python collects every object still alive: after a dbt run (its parsed
    # project, millions of objects) that took 0.8-1.2 s of a command's time, 0.1 s frozen first. Log
    # files and connections are closed explicitly (logging's own exit handler runs after this one).
    atexit.register(gc.freeze)
    try:
        app()
    except Exception:  # noqa: BLE001 (a bug: show it, and exit "could not run", never "check failed")
        traceback.print_exc()
        console.error("internal error (a bug in the orchestrator): the traceback is above.")
        sys.exit(2)


if __name__ == "__main__":
    main()
