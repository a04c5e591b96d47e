"""The workflow: dry run, verify, report, demo. Each step calls dbt or the database; none transforms data."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import io
import json
import os
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import psycopg
from psycopg import sql
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from orchestrator import batches as user_batches
from orchestrator import db, fingerprint, fixtures, metadata
from orchestrator.config import Settings, connect_info, external_server_configured, validate_identifier
from orchestrator.dbt import DbtResult, preload, run_dbt
from orchestrator.embedded import ConnInfo
from orchestrator.errors import CheckFailed, OrchestratorError


@dataclasses.dataclass
class DryRunOutcome:
    dbt: DbtResult
    record: dict
    summary: list[dict]
    batches: int = 1


@contextlib.contextmanager
def dbt_progress(console: Console, label: str, total: int | None) -> Iterator:
    """A progress bar advanced on each finished dbt node."""
    columns = [
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[node]}"),
        TimeElapsedColumn(),
    ]
    with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as progress:
        task = progress.add_task(label, total=total, node="")

        def advance(unique_id: str, status: str) -> None:
            progress.update(task, advance=1, node=unique_id.split(".")[-1])

        yield advance


def _node_count(target_path: Path) -> int | None:
    """Nodes a build runs, from the previous manifest (None before the first build)."""
    try:
        manifest = json.loads((target_path / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    kinds = {"model", "seed", "test", "unit_test"}
    nodes = [n for n in manifest.get("nodes", {}).values() if n.get("resource_type") in kinds]
    enabled = [n for n in nodes if n.get("config", {}).get("enabled", True) and "fixtures" not in n.get("tags", [])]
    return len(enabled) + len(manifest.get("unit_tests", {}))


def models_version(target_path: Path) -> str | None:
    """A hash of what decides a dry run's content, from the manifest: which version of the models built this.

    Every model, seed and test checksum (the file), each enforced contract's checksum (column names
    and types live in YAML, not in the file), each test's severity settings, and the project's own
    macros (the normalisation rules and the generic tests live there).
    """
    try:
        manifest = json.loads((target_path / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    severity_keys = ("severity", "error_if", "warn_if", "where", "enabled")
    parts = [
        f"{uid}:{node.get('checksum', {}).get('checksum')}:{(node.get('contract') or {}).get('checksum')}:"
        + json.dumps({key: (node.get("config") or {}).get(key) for key in severity_keys}, sort_keys=True)
        for uid, node in manifest.get("nodes", {}).items()
    ]
    project = manifest.get("metadata", {}).get("project_name")
    parts += [
        f"{uid}:{hashlib.sha256((macro.get('macro_sql') or '').encode()).hexdigest()}"
        for uid, macro in manifest.get("macros", {}).items()
        if macro.get("package_name") == project
    ]
    return hashlib.sha256("\n".join(sorted(parts)).encode()).hexdigest()


def dry_run(
    settings: Settings,
    conn: ConnInfo,
    console: Console,
    *,
    scope_table: sql.Composable | None = None,
    pg: psycopg.Connection | None = None,
    batches: int | None = 1,
) -> DryRunOutcome:
    """``dbt build --target dry_run`` with every test, fingerprinting the legacy tables before and after.

    With ``scope_table`` (a partial promote), only those users are rebuilt, into ``<dry-run schema>_users``.
    With ``batches`` > 1, the per-user models are first built in that many hash batches of users
    (orchestrator/batches.py); the rows are the same. ``None`` picks the count from the number of
    users (``--batches auto``); a partial rebuild is never batched.
    """
    if batches is not None and not 1 <= batches <= user_batches.MAX_BATCHES:
        raise OrchestratorError(f"--batches must be between 1 and {user_batches.MAX_BATCHES}, not {batches}")
    if batches is not None and batches > 1 and scope_table is not None:
        raise OrchestratorError("a partial rebuild of a few users is not batched: drop --batches")
    dry_run_schema = settings.dry_run_schema if scope_table is None else partial_schema(settings)
    preload()  # import dbt while the lock and the fingerprint are taken
    with contextlib.ExitStack() as stack:
        if pg is None:
            pg = stack.enter_context(db.connect(conn, autocommit=True))
        from orchestrator.promote import dry_run_lock

        stack.enter_context(dry_run_lock(pg))  # two dbt builds at once would mix their tables
        db.require_legacy_tables(pg, settings.legacy_schema)
        if batches is None:
            batches = 1 if scope_table is not None else user_batches.auto_count_of(pg, settings.legacy_schema)
        metadata.ensure(pg, settings.meta_schema)
        before = fingerprint.legacy_fingerprint(pg, settings.legacy_schema, scope_table)
        record_id = metadata.start_dry_run(
            pg,
            settings.meta_schema,
            legacy_schema=settings.legacy_schema,
            dry_run_schema=dry_run_schema,
            scope="all" if scope_table is None else "users",
            fingerprint=before,
        )
        if scope_table is None:
            env, state_dir = dry_run_env(settings, dry_run_schema), settings.home
            dbt_vars = {"batch_count": batches} if batches > 1 else None
        else:
            env, state_dir, dbt_vars = partial_rebuild_dbt(settings)
        target_path = state_dir / "target" / "dry_run"
        result = None
        if scope_table is None:
            # batch tables of an earlier batched dry run: rebuilt below if this one is batched
            user_batches.drop_batch_relations(pg, dry_run_schema)
        if batches > 1:
            # the batches read the seeds (the field map): load them first, once
            result = run_dbt(settings.project_dir, conn, ["seed"], env=env, state_dir=state_dir, dbt_vars=dbt_vars)
            result = _build_user_batches(settings, conn, console, env, batches) if result.success else result
        if result is None:
            with dbt_progress(console, "dbt build", _node_count(target_path)) as advance:
                result = run_dbt(
                    settings.project_dir,
                    conn,
                    # a partial rebuild leaves the unit tests out when a full dry run of these models has
                    # passed them (below): they read fixed inputs, not the users it rebuilds
                    ["build", *(["--exclude-resource-type", "unit_test"] if scope_table is not None else [])],
                    env=env,
                    on_node_finished=advance,
                    state_dir=state_dir,
                    dbt_vars=dbt_vars,
                )
            if scope_table is not None and result.success:
                result = _unit_tests_unless_passed(settings, conn, pg, result, env, state_dir, dbt_vars)
        after = fingerprint.legacy_fingerprint(pg, settings.legacy_schema, scope_table)
        error_failures = sum(1 for node in result.nodes if node.status in ("error", "fail", "runtime error"))
        warn_failures = sum(1 for node in result.nodes if node.status == "warn")
        status = "built" if result.success and error_failures == 0 else "failed"
        if db.schema_exists(pg, dry_run_schema):
            pg.execute(sql.SQL("revoke all on schema {} from public").format(sql.Identifier(dry_run_schema)))
        metadata.finish_dry_run(
            pg,
            settings.meta_schema,
            record_id,
            status=status,
            dbt_invocation_id=result.invocation_id,
            models_version=models_version(result.target_path),
            dry_run_tables=metadata.dry_run_relations(pg, dry_run_schema),
            fingerprint_after=after,
            # verify compares the live tables' chat messages with the full dry run's; a partial rebuild needs none
            chat_fingerprint=None if scope_table else fingerprint.chat_fingerprint(pg, settings.legacy_schema),
            error_failures=error_failures,
            warn_failures=warn_failures,
            message=None if result.success else result.describe_failure(),
        )
        record = metadata.latest_dry_run(
            pg, settings.meta_schema, dry_run_schema=dry_run_schema, legacy_schema=settings.legacy_schema
        )
        summary = read_summary(pg, dry_run_schema)
    outcome = DryRunOutcome(dbt=result, record=record, summary=summary, batches=batches)
    if status != "built":
        raise CheckFailed(result.describe_failure() + ": the dry run is not promotable")
    if before != after:
        console.print(
            "Warning: the legacy tables changed during the dry run ("
            + fingerprint.describe_difference(before, after)
            + "): it is not promotable; run it again."
        )
    return outcome


def _unit_tests_unless_passed(
    settings: Settings,
    conn: ConnInfo,
    pg: psycopg.Connection,
    build: DbtResult,
    env: dict[str, str],
    state_dir: Path,
    dbt_vars: dict | None,
) -> DbtResult:
    """After a partial rebuild built without its unit tests: run them, unless a full dry run built by the
    same models version passed them already. The rebuild's result, with theirs if they ran."""
    if metadata.unit_tests_passed(pg, settings.meta_schema, models_version(build.target_path)):
        return build
    unit_tests = run_dbt(
        settings.project_dir,
        conn,
        ["test", "--resource-type", "unit_test"],
        env=env,
        state_dir=state_dir,
        dbt_vars=dbt_vars,
    )
    # the rebuild's invocation, unless the unit tests failed: then theirs, to describe the failure
    return dataclasses.replace(build if unit_tests.success else unit_tests, nodes=build.nodes + unit_tests.nodes)


def dry_run_env(settings: Settings, dry_run_schema: str) -> dict[str, str]:
    """The environment dbt's dry-run target reads (profiles.yml, the sources)."""
    return {
        **settings.dbt_env(),
        "MIGRATION_DRY_RUN_SCHEMA": dry_run_schema,
        "MIGRATION_META_SCHEMA": settings.meta_schema,
    }


def _build_user_batches(
    settings: Settings, conn: ConnInfo, console: Console, env: dict[str, str], batches: int
) -> DbtResult | None:
    """Build the per-user models in ``batches`` batches; the first failed batch's result, else None."""
    console.print(
        f"Building the per-user models in {batches} batches of users, {min(batches, user_batches.WORKERS)} at a time"
    )
    started = time.monotonic()

    def finished(outcome: user_batches.BatchOutcome) -> None:
        state = "built" if outcome.result.success else "FAILED"
        console.print(
            f"  batch {outcome.index + 1}/{batches} {state} in {outcome.seconds:.1f} s"
            f" ({time.monotonic() - started:.0f} s elapsed)"
        )

    outcomes = user_batches.build_batches(settings.project_dir, conn, env, settings.home, batches, finished)
    return next((outcome.result for outcome in outcomes if not outcome.result.success), None)


def partial_rebuild_dbt(settings: Settings) -> tuple[dict[str, str], Path, dict]:
    """A partial rebuild's dbt environment, state directory and vars.

    It keeps its own dbt state: it parses the project with other vars, and alternating with full dry
    runs in one target path would make dbt parse everything again each time (and overwrite the full
    dry run's run results).
    """
    return dry_run_env(settings, partial_schema(settings)), settings.home / "partial", {"user_scope": True}


def partial_schema(settings: Settings) -> str:
    return validate_identifier(f"{settings.dry_run_schema}_users", "partial dry-run schema")


def read_summary(pg: psycopg.Connection, dry_run_schema: str) -> list[dict]:
    if not db.table_exists(pg, dry_run_schema, "migration_summary"):
        return []
    cur = pg.execute(
        sql.SQL("select metric, value, expected, passed from {}").format(
            sql.Identifier(dry_run_schema, "migration_summary")
        )
    )
    return [dict(zip(("metric", "value", "expected", "passed"), row, strict=True)) for row in cur.fetchall()]


def format_value(metric: str, value) -> str:
    if value is None:
        return ""
    if metric == "conflict_rate":
        return f"{Decimal(value) * 100:.2f}%"
    return f"{Decimal(value):f}"


def print_summary(summary: list[dict], console: Console, title: str = "Verification summary") -> None:
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for column in ("metric", "value", "expected", "check"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for row in summary:
        check = {True: "pass", False: "FAIL", None: ""}[row["passed"]]
        table.add_row(
            row["metric"],
            format_value(row["metric"], row["value"]),
            format_value(row["metric"], row["expected"]),
            check,
        )
    console.print(table)


def print_dry_run(outcome: DryRunOutcome, settings: Settings, console: Console) -> None:
    nodes = outcome.dbt.nodes
    built = sum(1 for node in nodes if node.status == "success")
    passed = sum(1 for node in nodes if node.status == "pass")
    warned = sum(1 for node in nodes if node.status == "warn")
    console.print(
        f"Dry run {outcome.record['dry_run_id'][:12]} built into schema {outcome.record['dry_run_schema']}:"
        f" {built} nodes built, {passed} tests passed, {warned} warnings"
        + (f", per-user models in {outcome.batches} batches" if outcome.batches > 1 else "")
        + f" (dbt invocation {outcome.dbt.invocation_id})."
    )
    print_summary(outcome.summary, console)


# -- verify -------------------------------------------------------------------------------------------


def verify(settings: Settings, conn: ConnInfo) -> list[dict]:
    """The original plan's verification queries, on the live tables (spec §8)."""
    live_schema, legacy = settings.live_schema, settings.legacy_schema
    profile, intent = sql.Identifier(live_schema, "UserProfile"), sql.Identifier(live_schema, "ContextIntent")
    users, cps = sql.Identifier(legacy, "User"), sql.Identifier(legacy, "ContextProfile")
    messages = sql.Identifier(legacy, "ChatMessage")
    with db.connect(conn) as pg:
        if not (db.table_exists(pg, live_schema, "UserProfile") and db.table_exists(pg, live_schema, "ContextIntent")):
            raise CheckFailed(f"there are no live tables in schema {live_schema}: run `orchestrator promote` first")
        checks = [
            (
                "every user has exactly one profile",
                sql.SQL(
                    "select count(*) from {u} as u where (select count(*) from {p} as p where p.{uid} = u.{id}) <> 1"
                ),
                0,
            ),
            (
                "no profile without a user",
                sql.SQL(
                    "select count(*) from {p} as p where not exists (select 1 from {u} as u where u.{id} = p.{uid})"
                ),
                0,
            ),
            (
                "no context intent without a user",
                sql.SQL(
                    "select count(*) from {i} as i where not exists (select 1 from {u} as u where u.{id} = i.{uid})"
                ),
                0,
            ),
            (
                "no duplicate (user, context type)",
                sql.SQL("select count(*) from (select 1 from {i} group by {uid}, {ct} having count(*) > 1) as d"),
                0,
            ),
            (
                "profile completeness within 0-100",
                sql.SQL("select count(*) from {p} where completeness not between 0 and 100"),
                0,
            ),
            (
                "context intent completeness within 0-100",
                sql.SQL("select count(*) from {i} where completeness not between 0 and 100"),
                0,
            ),
            ("profile count = user count", sql.SQL("select count(*) from {p}"), sql.SQL("select count(*) from {u}")),
            (
                "context intent count = non-orphan (user, context type) pairs",
                sql.SQL("select count(*) from {i}"),
                sql.SQL(
                    "select count(*) from (select distinct cp.{cuid}, cp.{ct} from {cp} as cp"
                    " join {u} as u on u.{id} = cp.{cuid}) as pairs"
                ),
            ),
            (
                "every chat message of a migrated context profile maps to exactly one intent",
                sql.SQL(
                    "select count(*) from {m} as m join {cp} as cp on cp.{id} = m.{mcp}"
                    " join {u} as u on u.{id} = cp.{cuid}"
                    " where (select count(*) from {i} as i where i.{uid} = cp.{cuid} and i.{ct} = cp.{ct}) <> 1"
                ),
                0,
            ),
        ]
        names = {
            "u": users,
            "p": profile,
            "i": intent,
            "cp": cps,
            "m": messages,
            "id": sql.Identifier("id"),
            "uid": sql.Identifier("userId"),
            "cuid": sql.Identifier("userId"),
            "ct": sql.Identifier("contextType"),
            "mcp": sql.Identifier("contextProfileId"),
        }
        results = []
        for name, query, expected in checks:
            value = pg.execute(query.format(**names)).fetchone()[0]
            if isinstance(expected, sql.Composable):
                expected = pg.execute(expected.format(**names)).fetchone()[0]
            results.append({"check": name, "value": value, "expected": expected, "passed": value == expected})
        dry_run = metadata.latest_dry_run(
            pg, settings.meta_schema, dry_run_schema=settings.dry_run_schema, legacy_schema=legacy
        )
        if dry_run is not None and dry_run.get("chat_fingerprint"):
            now = fingerprint.chat_fingerprint(pg, legacy)
            then = dry_run["chat_fingerprint"]
            results.append(
                {
                    "check": "chat messages unchanged since the dry run",
                    "value": now["rows"],
                    "expected": then["rows"],
                    "passed": now == then,
                }
            )
    return results


# -- report -------------------------------------------------------------------------------------------

# table -> (columns, order): jsonb columns are rendered by the server (::text), so numbers keep
# their exact JSON text (1.50 stays 1.50) and a JSON string stays distinguishable from a number
REPORT_QUERIES = {
    "migration_summary": ("metric, value, expected, passed", 'metric collate "C"'),
    "migration_conflicts": (
        'user_id, context_type, field, "values"::text as "values", chosen::text as chosen',
        'user_id collate "C", context_type nulls first, field collate "C"',
    ),
    "migration_unmapped_fields": (
        "user_id, context_type, context_profile_id, legacy_profile_id, key, value::text as value, reason",
        'legacy_profile_id collate "C", key collate "C" nulls first',
    ),
}


def _private_file(path: Path) -> io.TextIOWrapper:
    """A new file only its owner can read (reports hold personal data)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    return os.fdopen(fd, "w", newline="", encoding="utf-8")


def report(settings: Settings, conn: ConnInfo, fmt: str, out_dir: Path, **html_options) -> list[Path]:
    """Export the conflict log, the unmapped-field log and the summary, with stable names and order.

    ``html`` is the visual report (orchestrator.reviewer.html_report, which takes ``html_options``).
    """
    if fmt == "html":
        from orchestrator import reviewer

        return reviewer.html_report(settings, conn, out_dir, **html_options)
    if fmt not in ("csv", "json", "md"):
        raise OrchestratorError(f"unknown report format {fmt!r}: use csv, json, md or html")
    tables = {}
    with db.connect(conn) as pg:
        for name, (columns, order) in REPORT_QUERIES.items():
            if not db.table_exists(pg, settings.dry_run_schema, name):
                raise OrchestratorError(
                    f"the dry-run table {settings.dry_run_schema}.{name} does not exist: run `orchestrator dry-run`"
                )
            query = sql.SQL("select {} from {} order by {}").format(
                sql.SQL(columns), sql.Identifier(settings.dry_run_schema, name), sql.SQL(order)
            )
            if fmt == "json":
                # the server writes the JSON: jsonb values nest as they are, numbers keep their text
                json_columns = sql.SQL(", ").join(
                    sql.SQL("{0}::jsonb as {0}").format(sql.Identifier(c)) if is_json else sql.Identifier(c)
                    for c, is_json in _column_names(columns)
                )
                text = pg.execute(
                    sql.SQL("select coalesce(json_agg(r), '[]')::text from (select {} from ({}) as t) as r").format(
                        json_columns, query
                    )
                ).fetchone()[0]
                tables[name] = text
            else:
                cur = pg.execute(query)
                tables[name] = ([c.name for c in cur.description], cur.fetchall())
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    if fmt == "md":
        path = out_dir / "migration_report.md"
        with _private_file(path) as handle:
            handle.write("# Migration report\n")
            for name, (columns, rows) in tables.items():
                handle.write(
                    f"\n## {name} ({len(rows)} rows)\n\n| "
                    + " | ".join(columns)
                    + " |\n|"
                    + "---|" * len(columns)
                    + "\n"
                )
                for row in rows:
                    handle.write("| " + " | ".join(_md_cell(v) for v in row) + " |\n")
        return [path]
    for name, content in tables.items():
        path = out_dir / f"{name}.{fmt}"
        with _private_file(path) as handle:
            if fmt == "csv":
                columns, rows = content
                writer = csv.writer(handle, lineterminator="\n")
                writer.writerow(columns)
                writer.writerows([_csv_cell(v) for v in row] for row in rows)
            else:
                handle.write(content + "\n")
        written.append(path)
    return written


def _column_names(columns: str) -> list[tuple[str, bool]]:
    """(name, is jsonb rendered as text) of each column of a REPORT_QUERIES select list."""
    return [(part.strip().split(" as ")[-1].strip('"'), "::text" in part) for part in columns.split(",")]


def _csv_cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return f"{value:f}"
    return str(value)


def _md_cell(value) -> str:
    return _csv_cell(value).replace("|", "\\|").replace("\n", " ")


# -- demo ---------------------------------------------------------------------------------------------


def load_fixtures(settings: Settings, conn: ConnInfo, schema: str) -> dict[str, int]:
    counts = fixtures.load(settings, conn, schema)
    if not external_server_configured():
        from orchestrator.embedded import ProjectServer

        ProjectServer(settings.home).remember_legacy_schema(schema)
    return counts


def demo(schema: str, console: Console, out_dir: Path) -> None:
    from orchestrator import promote as promoting

    settings = Settings.load(legacy_schema=schema)
    conn = connect_info(settings)
    console.print(f"PostgreSQL: {conn.host}:{conn.port}, database {conn.dbname}")
    counts = load_fixtures(settings, conn, schema)
    console.print(f"1. Fixtures loaded into schema {schema}: " + ", ".join(f"{t} {n}" for t, n in counts.items()))
    outcome = dry_run(settings, conn, console)
    console.print("2. ", end="")
    print_dry_run(outcome, settings, console)
    try:
        promoting.promote(settings, conn, max_conflict_rate=Decimal("0.05"), users=None, confirm=lambda plan: None)
    except CheckFailed as refusal:
        console.print(f"3. Promote with the default 5% conflict-rate gate is refused, as it should be: {refusal}")
    rate = next(row["value"] for row in outcome.summary if row["metric"] == "conflict_rate")
    threshold = max(Decimal("0.05"), Decimal(rate).quantize(Decimal("0.01"), rounding="ROUND_UP"))
    result = promoting.promote(settings, conn, max_conflict_rate=threshold, users=None, confirm=lambda plan: None)
    console.print(
        f"4. Promoted with --max-conflict-rate {threshold} (the fixtures are built to conflict): run "
        f"{result.run_id[:12]}, "
        + "; ".join(f'"{t}" +{c["inserted"]} ~{c["updated"]} -{c["deleted"]}' for t, c in result.plan.items())
    )
    checks = verify(settings, conn)
    console.print(f"5. Verify: {sum(c['passed'] for c in checks)}/{len(checks)} checks pass on the live tables.")
    paths = report(settings, conn, "md", out_dir)
    console.print(f"6. Report written to {', '.join(str(p) for p in paths)} (mode 0600).")
    console.print("Next: `orchestrator rollback --yes` undoes the promote; `orchestrator runs` shows the audit.")
