"""Promote the verified dry run into the live tables, and roll back (spec §8, §9).

Order of a promote: take the promote lock (one promote or rollback at a time) → mark runs that
died → check the gates (read-only; one of them parses the project: the dry run must have been built
by the current models) → show the plan and ask → record `started` → one transaction: lock the
dry-run tables and check they are the ones the gated dry run built, re-check the legacy fingerprint,
check live drift, create the tables if absent, back up and write only the rows that differ, refresh
the snapshot, record `committed`. A failure records `failed`; a killed process leaves `started`,
which the next run reports and marks `died`. ``fault_point`` calls mark where the hardening tests
crash it (orchestrator/faults.py, docs/reliability.md).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from decimal import Decimal

import psycopg
from psycopg import sql

from orchestrator import db, fingerprint, live, metadata
from orchestrator.config import Settings
from orchestrator.embedded import ConnInfo
from orchestrator.errors import CheckFailed, OrchestratorError
from orchestrator.faults import fault_point

# pg_advisory_lock key: "orchestrator promote" (one promote or rollback at a time, per database)
LOCK_KEY = 0x6F7263_70726F6D
SCOPE_TABLE = "user_scope"  # in the metadata schema: the users of a partial promote, read by the dbt rebuild


@dataclasses.dataclass
class Gate:
    name: str
    passed: bool
    figure: str
    remedy: str

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class PromoteResult:
    run_id: str
    plan: dict[str, dict[str, int]]
    created_tables: bool
    gates: list[Gate]
    dead_runs: list[dict]


@contextlib.contextmanager
def promote_lock(conn: ConnInfo, what: str, lock_timeout: str | None = None) -> Iterator[psycopg.Connection]:
    """An autocommit connection holding the session-level promote lock (released when it closes, also
    when the process dies). With ``lock_timeout``, every statement of the session, planning included,
    gives up waiting for a table lock after that long rather than queueing behind application traffic."""
    with db.connect(conn, autocommit=True, application_name=f"orchestrator {what}") as pg:
        got = pg.execute("select pg_try_advisory_lock(%s)", [LOCK_KEY]).fetchone()[0]
        if not got:
            holder = pg.execute(
                "select a.pid, a.application_name, a.backend_start from pg_locks as l join pg_stat_activity as a"
                " on a.pid = l.pid where l.locktype = 'advisory' and l.granted"
                " and (l.classid::bigint << 32 | l.objid::bigint) = %s limit 1",
                [LOCK_KEY],
            ).fetchone()
            who = f" ({holder[1] or 'a session'}, pid {holder[0]}, since {holder[2]:%H:%M:%S})" if holder else ""
            raise OrchestratorError(
                f"another promote or rollback is running on this database{who}: wait for it to finish, then retry"
            )
        try:
            if lock_timeout is not None:
                pg.execute(sql.SQL("set lock_timeout = {}").format(sql.Literal(lock_timeout)))
            yield pg
        except psycopg.errors.LockNotAvailable:
            raise OrchestratorError(
                f"could not lock a table within {lock_timeout} (application traffic holds it); nothing was "
                f"changed: retry later or raise --lock-timeout"
            ) from None
        finally:
            with contextlib.suppress(psycopg.Error):
                pg.execute("select pg_advisory_unlock(%s)", [LOCK_KEY])


# pg_advisory_lock(class, 0): "orcd", one dry run (dbt build into a dry-run schema) at a time per database
DRY_RUN_LOCK = (0x6F726364, 0)


@contextlib.contextmanager
def dry_run_lock(pg: psycopg.Connection) -> Iterator[None]:
    """Held by a dry run on its (autocommit) connection while it builds: two dbt builds at once would
    replace each other's tables, and a dry run's record must describe the tables it leaves."""
    if not pg.execute("select pg_try_advisory_lock(%s, %s)", DRY_RUN_LOCK).fetchone()[0]:
        holder = pg.execute(
            "select a.pid, a.application_name from pg_locks as l join pg_stat_activity as a on a.pid = l.pid"
            " where l.locktype = 'advisory' and l.granted and l.classid = %s::bigint::oid"
            " and l.objid = %s::bigint::oid and l.objsubid = 2 limit 1",
            DRY_RUN_LOCK,
        ).fetchone()
        who = f" ({holder[1] or 'a session'}, pid {holder[0]})" if holder else ""
        raise OrchestratorError(f"another dry run is building on this database{who}: wait for it to finish, then retry")
    try:
        yield
    finally:
        with contextlib.suppress(psycopg.Error):
            pg.execute("select pg_advisory_unlock(%s, %s)", DRY_RUN_LOCK)


def fill_scope_table(pg: psycopg.Connection, meta_schema: str, users: list[str]) -> sql.Identifier:
    """The users of a partial promote, in a metadata table the dbt rebuild can read too (under the lock)."""
    table = sql.Identifier(meta_schema, SCOPE_TABLE)
    with pg.transaction():
        pg.execute(sql.SQL("create table if not exists {} (user_id text primary key)").format(table))
        pg.execute(sql.SQL("truncate {}").format(table))
        with pg.cursor().copy(sql.SQL("copy {} (user_id) from stdin").format(table)) as copy:
            for user_id in dict.fromkeys(users):
                copy.write_row([user_id])
        # with its real row count, the planner reaches the users' rows through the live tables' and the
        # snapshot's user indexes instead of scanning them (it assumed ~1,400 users in a fresh table)
        pg.execute(sql.SQL("analyze {}").format(table))
    return table


def summary_of(pg: psycopg.Connection, dry_run_schema: str) -> dict[str, dict]:
    if not db.table_exists(pg, dry_run_schema, "migration_summary"):
        return {}
    cur = pg.execute(
        sql.SQL("select metric, value, expected, passed from {}").format(
            sql.Identifier(dry_run_schema, "migration_summary")
        )
    )
    return {row[0]: {"value": row[1], "expected": row[2], "passed": row[3]} for row in cur.fetchall()}


def check_gates(
    pg: psycopg.Connection,
    settings: Settings,
    dry_run: dict | None,
    *,
    dry_run_schema: str,
    max_conflict_rate: Decimal,
    scope_table: sql.Composable | None,
    current_models_version: str | None = None,
    rebuilt_now: bool = False,
) -> list[Gate]:
    """The four gates of spec §8, each with its figure and what to do when it fails; with
    ``current_models_version`` (promote passes it), a fifth: the dry run was built by these models.
    ``rebuilt_now``: the dry run is a partial rebuild this same command just made, so its fingerprint
    after the build is the current one (promote compares it again inside its transaction)."""
    gates = []
    if dry_run is None:
        return [Gate("dry run complete", False, "no dry run recorded", "run `orchestrator dry-run` first")]
    complete = dry_run["status"] == "built" and (dry_run["error_failures"] or 0) == 0
    if dry_run["status"] == "started":
        gates.append(
            Gate(
                "dry run complete, every error-severity dbt test passed",
                False,
                f"dry run {dry_run['dry_run_id'][:12]} started at {dry_run['started_at']:%Y-%m-%d %H:%M:%S} has not"
                f" finished: it is still building, or it died",
                "wait for it to finish, or run `orchestrator dry-run` again",
            )
        )
    else:
        gates.append(
            Gate(
                "dry run complete, every error-severity dbt test passed",
                complete,
                f"status {dry_run['status']}, {dry_run['error_failures'] or 0} failing error-severity tests"
                f" (dry run {dry_run['dry_run_id'][:12]}, dbt invocation {dry_run['dbt_invocation_id']})",
                "fix what the failing tests report and run `orchestrator dry-run` again",
            )
        )
    if current_models_version is not None:
        built_by = dry_run.get("models_version")
        gates.append(
            Gate(
                "dry run built by the current models",
                built_by == current_models_version,
                "models version of the dry run "
                f"{(built_by or 'unknown')[:12]}, of the project now {current_models_version[:12]}"
                + ("" if built_by == current_models_version else " (a model, seed, test, macro or contract changed)"),
                "run `orchestrator dry-run` again with the current models, then promote",
            )
        )
    summary = summary_of(pg, dry_run_schema)
    accounted = summary.get("keys_accounted", {})
    gates.append(
        Gate(
            "key accounting reconciles",
            accounted.get("passed") is True,
            f"keys seen {accounted.get('expected')}, mapped + unmapped {accounted.get('value')}",
            "every legacy key must be mapped or logged: inspect migration_unmapped_fields and the models",
        )
    )
    rate = summary.get("conflict_rate", {}).get("value")
    gates.append(
        Gate(
            "conflict rate within threshold",
            rate is not None and Decimal(rate) <= max_conflict_rate,
            f"conflict rate {_percent(rate)} (threshold {_percent(max_conflict_rate)})",
            "review migration_conflicts (`orchestrator report`); to accept this rate, pass "
            "--max-conflict-rate with a higher value",
        )
    )
    if rebuilt_now and dry_run["fingerprint_after"] is not None:
        current = dry_run["fingerprint_after"]
    else:
        current = fingerprint.legacy_fingerprint(pg, settings.legacy_schema, scope_table)
    stable_during_build = dry_run["fingerprint_before"] == dry_run["fingerprint_after"]
    unchanged_since = dry_run["fingerprint_after"] == current
    if dry_run["fingerprint_after"] is None:  # the dry run never finished: nothing to compare with
        figure = "the dry run did not finish, so there is no fingerprint of the legacy tables after its build"
    elif not stable_during_build:
        figure = "the legacy tables changed while the dry run was building: " + fingerprint.describe_difference(
            dry_run["fingerprint_before"], dry_run["fingerprint_after"] or {}
        )
    elif not unchanged_since:
        figure = "the legacy tables changed since the dry run: " + fingerprint.describe_difference(
            dry_run["fingerprint_after"], current
        )
    else:
        figure = "legacy fingerprint unchanged since the dry run"
    gates.append(
        Gate(
            "legacy data unchanged since the dry run",
            stable_during_build and unchanged_since,
            figure,
            "run `orchestrator dry-run` again on the current data, then promote",
        )
    )
    return gates


def _percent(value) -> str:
    return "unknown" if value is None else f"{Decimal(value) * 100:.2f}%"


def promote(
    settings: Settings,
    conn: ConnInfo,
    *,
    max_conflict_rate: Decimal,
    users: list[str] | None,
    confirm: Callable[[dict], None],
    force: bool = False,
    lock_timeout: str = "5s",
    rebuild_scope: Callable[[psycopg.Connection], dict] | None = None,
) -> PromoteResult:
    """Publish the dry run (or, with ``users``, those users rebuilt from current legacy data)."""
    from orchestrator.dbt import preload

    preload()  # import dbt meanwhile: the gates parse the project (and a partial promote rebuilds)
    with promote_lock(conn, "promote", lock_timeout) as pg:
        metadata.ensure(pg, settings.meta_schema)
        dead = metadata.mark_dead_runs(pg, settings.meta_schema)
        scope_table = None
        dry_run_schema = settings.dry_run_schema
        if users is not None:
            scope_table = fill_scope_table(pg, settings.meta_schema, users)
            unknown = pg.execute(
                sql.SQL(
                    "select s.user_id from {} as s where not exists (select from {} as u where u.{} = s.user_id)"
                    " order by s.user_id limit 5"
                ).format(scope_table, sql.Identifier(settings.legacy_schema, "User"), sql.Identifier("id"))
            ).fetchall()
            if unknown:
                raise CheckFailed(
                    f"not legacy users: {', '.join(_shown_id(u[0]) for u in unknown)}: check the ids (they match "
                    f'"User"."id" byte for byte); nothing was changed'
                )
            dry_run = rebuild_scope(pg)
            dry_run_schema = dry_run["dry_run_schema"]
        else:
            dry_run = metadata.latest_dry_run(
                pg, settings.meta_schema, dry_run_schema=settings.dry_run_schema, legacy_schema=settings.legacy_schema
            )
        scope = "users" if users is not None else "all"
        gates = check_gates(
            pg,
            settings,
            dry_run,
            dry_run_schema=dry_run_schema,
            max_conflict_rate=max_conflict_rate,
            scope_table=scope_table,
            current_models_version=(
                current_models_version(settings, conn, after_partial_rebuild=users is not None)
                if dry_run is not None
                else None
            ),
            rebuilt_now=users is not None,
        )
        failed = [gate for gate in gates if not gate.passed]
        audit = {
            "command": "promote",
            "live_schema": settings.live_schema,
            "scope": scope,
            "scope_users": len(users) if users is not None else None,
            "dry_run": dry_run,
            "gates": {g.name: g.as_dict() for g in gates},
        }
        if failed:
            metadata.record_run(
                pg, settings.meta_schema, status="refused", message="; ".join(g.name for g in failed), **audit
            )
            raise CheckFailed(
                "promote refused, nothing was changed: "
                + "; ".join(f"gate '{g.name}' failed ({g.figure}): {g.remedy}" for g in failed)
            )
        fault_point("promote:after-gates")

        present = live.live_tables_present(pg, settings.live_schema)
        if any(present.values()) and not all(present.values()):
            raise OrchestratorError(
                f"only one of the live tables exists in schema {settings.live_schema} ({present}): "
                f"run `orchestrator rollback --drop` to start clean"
            )
        exists = all(present.values())
        pairs = live.table_pairs(pg, dry_run_schema, settings.live_schema) if exists else None
        change_plan = (
            {p.live_table: live.plan(pg, p, scope_table, True) for p in pairs}
            if exists
            else _plan_for_new_tables(pg, dry_run_schema, scope_table)
        )
        confirm(change_plan)

        run_id = metadata.record_run(pg, settings.meta_schema, status="started", **audit)
        if users is not None:
            pg.execute(
                sql.SQL("insert into {} (run_id, user_id) select %s, user_id from {}").format(
                    sql.Identifier(settings.meta_schema, "run_scope_users"), scope_table
                ),
                [run_id],
            )
        fault_point("promote:started")
        try:
            with pg.transaction():
                pg.execute(sql.SQL("set local lock_timeout = {}").format(sql.Literal(lock_timeout)))
                _hold_dry_run(pg, dry_run, dry_run_schema)
                current = fingerprint.legacy_fingerprint(pg, settings.legacy_schema, scope_table)
                if current != dry_run["fingerprint_after"]:
                    raise CheckFailed(
                        "promote refused, nothing was changed: the legacy tables changed after the gates were "
                        "checked ("
                        + fingerprint.describe_difference(dry_run["fingerprint_after"], current)
                        + "): run `orchestrator dry-run` again"
                    )
                if exists:
                    _refuse_drift(pg, settings, force, "promote", scope_table)
                    for pair in pairs:
                        live.write(pg, pair, scope_table, settings.meta_schema, run_id)
                    live.refresh_snapshot(pg, settings.meta_schema, settings.live_schema, scope_table)
                else:
                    live.create_live_tables(pg, settings.live_schema, settings.legacy_schema)
                    for pair in live.table_pairs(pg, dry_run_schema, settings.live_schema):
                        live.load_new(pg, pair, scope_table)
                    live.refresh_snapshot(pg, settings.meta_schema, settings.live_schema)
                fault_point("promote:before-audit")
                metadata.finish_run(
                    pg, settings.meta_schema, run_id, "committed", counts=change_plan, created_tables=not exists
                )
                fault_point("promote:audit-row")
        except BaseException as exc:
            _record_outcome_and_reraise(
                pg,
                settings,
                run_id,
                exc,
                lock_timeout,
                "the live tables (or the dry-run tables, while a dbt build replaces them)",
            )
        fault_point("promote:after-commit")
        return PromoteResult(run_id, change_plan, not exists, gates, dead)


def current_models_version(settings: Settings, conn: ConnInfo, *, after_partial_rebuild: bool = False) -> str:
    """The models version (pipeline.models_version) of the project as it is now: `dbt parse` into a
    target path of its own (a dry run building at the same time keeps its own). Right after a partial
    rebuild, into the rebuild's, with its settings (promote's lock keeps other partial rebuilds out): dbt
    then reads back the parse the rebuild just saved and parses only the files changed since, instead
    of the whole project."""
    from orchestrator.dbt import run_dbt
    from orchestrator.pipeline import models_version, partial_rebuild_dbt

    if after_partial_rebuild:
        env, state_dir, dbt_vars = partial_rebuild_dbt(settings)
    else:
        env = {**settings.dbt_env(), "MIGRATION_META_SCHEMA": settings.meta_schema}
        state_dir, dbt_vars = settings.home / "parse", None
    result = run_dbt(settings.project_dir, conn, ["parse"], env=env, state_dir=state_dir, dbt_vars=dbt_vars)
    version = models_version(result.target_path) if result.success else None
    if version is None:
        raise OrchestratorError(
            f"{result.describe_failure()}: cannot tell which version of the models the project holds, so promote "
            f"cannot check that the dry run was built by them; nothing was changed"
        )
    return version


def _hold_dry_run(pg: psycopg.Connection, dry_run: dict, dry_run_schema: str) -> None:
    """Inside the promote transaction: lock the dry-run tables promote reads (a dbt build replacing them
    waits until the commit: dbt renames in a transaction), and make sure they are the very tables the
    gated dry run built, not a later rebuild (another dry run, or dbt run by hand)."""
    present = [t for t in metadata.DRY_RUN_TABLES if db.table_exists(pg, dry_run_schema, t)]
    if present:
        pg.execute(
            sql.SQL("lock table {} in share mode").format(
                sql.SQL(", ").join(sql.Identifier(dry_run_schema, t) for t in present)
            )
        )
    now = metadata.dry_run_relations(pg, dry_run_schema)
    if not dry_run.get("dry_run_tables") or now != dry_run["dry_run_tables"]:
        raise CheckFailed(
            f"promote refused, nothing was changed: the tables in schema {dry_run_schema} are not the ones dry run "
            f"{dry_run['dry_run_id'][:12]} built and the gates checked (a later dbt build replaced them, or that dry "
            f"run is still building): run `orchestrator dry-run` again, then promote"
        )


def _plan_for_new_tables(pg, dry_run_schema: str, scope_table: sql.Composable | None) -> dict[str, dict[str, int]]:
    plan = {}
    for dry_table, live_table in live.LIVE_TABLES.items():
        count = pg.execute(
            sql.SQL("select count(*) from {} as d where {}").format(
                sql.Identifier(dry_run_schema, dry_table), live.scope_filter(sql.SQL("d.user_id"), scope_table)
            )
        ).fetchone()[0]
        plan[live_table] = {"inserted": count, "updated": 0, "deleted": 0, "unchanged": 0}
    return plan


def _refuse_drift(pg, settings: Settings, force: bool, command: str, scope_table: sql.Composable | None = None) -> None:
    differing = live.drift(pg, settings.meta_schema, settings.live_schema, scope_table)
    total = sum(differing.values())
    if total and not force:
        detail = ", ".join(f'"{table}" {count}' for table, count in differing.items() if count)
        raise CheckFailed(
            f"{command} refused, nothing was changed: the live tables changed since our last promote or rollback "
            f"({total} rows differ: {detail}), probably written by the application: check them, then use --force "
            f"to overwrite"
        )


def _shown_id(user_id: str) -> str:
    """A user id as a message shows it: repr (quotes, escapes), cut short when long."""
    if len(user_id) <= 80:
        return repr(user_id)
    return f"{user_id[:60]!r}... ({len(user_id)} characters)"


def _record_outcome_and_reraise(
    pg, settings: Settings, run_id: str, exc: BaseException, lock_timeout: str, what: str
) -> None:
    """A run's transaction failed: record `refused` (a check) or `failed`, then re-raise; a lock wait
    that ran out becomes a clear could-not-run error."""
    with contextlib.suppress(psycopg.Error):
        status = "refused" if isinstance(exc, CheckFailed) else "failed"
        metadata.finish_run(pg, settings.meta_schema, run_id, status, message=_one_line(exc))
    if isinstance(exc, psycopg.errors.LockNotAvailable):
        raise OrchestratorError(
            f"could not lock {what} within {lock_timeout} (application traffic holds them); nothing was changed: "
            f"retry later or raise --lock-timeout"
        ) from None
    raise exc


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:500] or type(exc).__name__


@dataclasses.dataclass
class RollbackResult:
    run_id: str
    undone_run_id: str | None
    dropped: bool
    counts: dict
    legacy_unchanged: bool
    dead_runs: list[dict]


def rollback(
    settings: Settings,
    conn: ConnInfo,
    *,
    drop: bool,
    confirm: Callable[[str], None],
    force: bool = False,
    lock_timeout: str = "5s",
) -> RollbackResult:
    with promote_lock(conn, "rollback", lock_timeout) as pg:
        metadata.ensure(pg, settings.meta_schema)
        dead = metadata.mark_dead_runs(pg, settings.meta_schema)
        last = metadata.last_committed_promote(pg, settings.meta_schema)
        present = live.live_tables_present(pg, settings.live_schema)
        if not drop and last is None:
            raise CheckFailed(
                "there is no promote to roll back: nothing was changed"
                + (" (use --drop to remove the live tables)" if any(present.values()) else "")
            )
        if drop and not any(present.values()):
            raise CheckFailed(f"there are no live tables in schema {settings.live_schema} to drop: nothing was changed")
        action = (
            "drop the live tables"
            if drop or last["created_tables"]
            else f"restore the live tables to their state before promote {last['run_id'][:12]}"
        )
        confirm(action)
        legacy_before = fingerprint.legacy_fingerprint(pg, settings.legacy_schema)
        run_id = metadata.record_run(
            pg,
            settings.meta_schema,
            command="rollback",
            status="started",
            live_schema=settings.live_schema,
            scope="all",
            message=action,
        )
        fault_point("rollback:started")
        try:
            with pg.transaction():
                pg.execute(sql.SQL("set local lock_timeout = {}").format(sql.Literal(lock_timeout)))
                if any(present.values()):
                    _refuse_drift(pg, settings, force, "rollback")
                counts: dict = {}
                if drop or last["created_tables"]:
                    live.drop_live_tables(pg, settings.live_schema)
                    undone = _undo_all(pg, settings, run_id) if drop else [last["run_id"]]
                else:
                    pairs = (
                        live.table_pairs(pg, settings.dry_run_schema, settings.live_schema)
                        if db.table_exists(pg, settings.dry_run_schema, "profile")
                        else _pairs_from_live(pg, settings)
                    )
                    for pair in pairs:
                        counts[pair.live_table] = live.restore(pg, pair, settings.meta_schema, last["run_id"])
                    undone = [last["run_id"]]
                for promote_id in undone:
                    pg.execute(
                        sql.SQL("update {} set rolled_back_by = %s where run_id = %s").format(
                            sql.Identifier(settings.meta_schema, "runs")
                        ),
                        [run_id, promote_id],
                    )
                live.forget_run(pg, settings.meta_schema, undone)
                live.refresh_snapshot(pg, settings.meta_schema, settings.live_schema)
                # before the commit: once committed, nothing may fail and make a done rollback look undone
                legacy_after = fingerprint.legacy_fingerprint(pg, settings.legacy_schema)
                metadata.finish_run(
                    pg,
                    settings.meta_schema,
                    run_id,
                    "committed",
                    counts=counts,
                    undoes_run_id=last["run_id"] if last else None,
                )
                fault_point("rollback:before-commit")
        except BaseException as exc:
            _record_outcome_and_reraise(pg, settings, run_id, exc, lock_timeout, "the live tables")
        fault_point("rollback:after-commit")
        return RollbackResult(
            run_id,
            last["run_id"] if last else None,
            drop or bool(last and last["created_tables"]),
            counts,
            legacy_before == legacy_after,
            dead,
        )


def _undo_all(pg, settings: Settings, rollback_id: str) -> list[str]:
    rows = pg.execute(
        sql.SQL(
            "select run_id from {} where command = 'promote' and status = 'committed' and rolled_back_by is null"
        ).format(sql.Identifier(settings.meta_schema, "runs"))
    ).fetchall()
    return [row[0] for row in rows]


def _pairs_from_live(pg, settings: Settings) -> list[live.TablePair]:
    """Restoring needs only the live columns (the dry run may be gone)."""
    pairs = []
    for dry_table, live_table in live.LIVE_TABLES.items():
        columns = live._columns(pg, settings.live_schema, live_table)
        pairs.append(
            live.TablePair(
                settings.dry_run_schema,
                dry_table,
                settings.live_schema,
                live_table,
                tuple(live.Column(name, name, live_type) for name, live_type in columns),
            )
        )
    return pairs


def cleanup(settings: Settings, conn: ConnInfo, keep: int) -> list[str]:
    """Remove rollback backups of all but the ``keep`` most recent committed promotes (keep >= 1)."""
    if keep < 1:
        raise OrchestratorError("--keep must be at least 1: rollback always keeps the state before the last promote")
    with promote_lock(conn, "cleanup") as pg:
        metadata.ensure(pg, settings.meta_schema)
        rows = pg.execute(
            sql.SQL(
                "select run_id from {} where command = 'promote' and status = 'committed' and rolled_back_by is null"
                " order by started_at desc offset %s"
            ).format(sql.Identifier(settings.meta_schema, "runs")),
            [keep],
        ).fetchall()
        old = [row[0] for row in rows]
        with pg.transaction():
            live.forget_run(pg, settings.meta_schema, old)
            pg.execute(
                sql.SQL(
                    "update {} set message = coalesce(message || '; ', '') || 'backup removed by cleanup',"
                    " rolled_back_by = 'not possible: backup removed' where run_id = any(%s)"
                ).format(sql.Identifier(settings.meta_schema, "runs")),
                [old],
            )
        return old
