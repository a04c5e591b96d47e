"""The metadata schema: dry-run records, the promote/rollback audit and the users of a partial promote
(spec §8, §9). Every statement that reads or writes these tables is here."""

from __future__ import annotations

import datetime
import getpass
import uuid
from decimal import Decimal

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from orchestrator import db

# Bump when metadata.sql changes: the schema's comment records the version its tables are at.
METADATA_VERSION = "orchestrator metadata 12"


def ensure(pg: psycopg.Connection, meta_schema: str) -> None:
    """Create (or upgrade) the metadata schema and tables; nobody but the owner may read them.

    At the current version it does nothing: DDL such as `alter table ... add column if not exists`
    takes a table lock even when there is nothing to do, and would queue behind a running promote."""
    comment = pg.execute(
        "select obj_description(oid, 'pg_namespace') from pg_namespace where nspname = %s", [meta_schema]
    ).fetchone()
    if comment is not None and comment[0] == METADATA_VERSION:
        return
    with pg.transaction():
        if comment is None:  # `create schema if not exists` alone needs CREATE on the database
            pg.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(meta_schema)))
        pg.execute(sql.SQL("revoke all on schema {} from public").format(sql.Identifier(meta_schema)))
        db.set_search_path(pg, meta_schema)
        pg.execute(db.packaged_sql("metadata.sql"))
        pg.execute(
            sql.SQL("comment on schema {} is {}").format(sql.Identifier(meta_schema), sql.Literal(METADATA_VERSION))
        )


def new_id() -> str:
    return uuid.uuid4().hex


def os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _table(meta_schema: str, name: str) -> sql.Identifier:
    return sql.Identifier(meta_schema, name)


# -- dry runs --------------------------------------------------------------------------------------


def start_dry_run(
    pg,
    meta_schema: str,
    *,
    legacy_schema: str,
    dry_run_schema: str,
    scope: str,
    fingerprint: dict | None,
    max_conflict_rate: Decimal,
    batches: int = 1,
    parent: dict | None = None,
) -> str:
    """Record a dry run (or, with ``parent``, a catch-up of that dry-run state: its models are the
    parent's) as started."""
    dry_run_id = new_id()
    pg.execute(
        sql.SQL(
            "insert into {} (dry_run_id, status, scope, legacy_schema, dry_run_schema, fingerprint_before,"
            " max_conflict_rate, batches, parent_dry_run_id, root_dry_run_id, models_version)"
            " values (%s, 'started', %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        ).format(_table(meta_schema, "dry_runs")),
        [
            dry_run_id,
            scope,
            legacy_schema,
            dry_run_schema,
            Jsonb(fingerprint) if fingerprint is not None else None,
            max_conflict_rate,
            batches,
            parent and parent["dry_run_id"],
            root_of(parent) if parent else dry_run_id,
            parent and parent["models_version"],
        ],
    )
    return dry_run_id


def root_of(dry_run: dict) -> str:
    """The full dry run a reviewer read that ``dry_run`` descends from (itself for a full dry run)."""
    return dry_run.get("root_dry_run_id") or dry_run["dry_run_id"]


def finish_dry_run(pg, meta_schema: str, dry_run_id: str, **fields) -> None:
    fields = {key: Jsonb(value) if isinstance(value, dict) else value for key, value in fields.items()}
    assignments = sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(key)) for key in fields)
    pg.execute(
        sql.SQL("update {} set finished_at = clock_timestamp(), {} where dry_run_id = %s").format(
            _table(meta_schema, "dry_runs"), assignments
        ),
        [*fields.values(), dry_run_id],
    )


def unit_tests_passed(pg, meta_schema: str, models_version: str | None) -> bool:
    """Whether a full dry run built by ``models_version`` finished with every error-severity test passing,
    unit tests included. Unit tests read fixed inputs, never the legacy data: their verdict depends on
    the models version alone."""
    if models_version is None or not db.table_exists(pg, meta_schema, "dry_runs"):
        return False
    return pg.execute(
        sql.SQL(
            "select exists (select from {} where scope = 'all' and status = 'built' and error_failures = 0"
            " and models_version = %s)"
        ).format(_table(meta_schema, "dry_runs")),
        [models_version],
    ).fetchone()[0]


# the dry-run tables promote reads; a dry run records their oids (a dbt rebuild makes new tables)
DRY_RUN_TABLES = ("profile", "context_intent", "migration_summary")


def dry_run_relations(pg, dry_run_schema: str) -> dict[str, int]:
    """{table: oid} of the dry-run tables present in ``dry_run_schema``."""
    rows = pg.execute(
        "select c.relname, c.oid::bigint from pg_class as c join pg_namespace as n on n.oid = c.relnamespace"
        " where n.nspname = %s and c.relname = any(%s) and c.relkind in ('r', 'p')",
        [dry_run_schema, list(DRY_RUN_TABLES)],
    ).fetchall()
    return {name: oid for name, oid in sorted(rows)}


def latest_dry_run(pg, meta_schema: str, *, dry_run_schema: str, legacy_schema: str) -> dict | None:
    """The newest dry run built into ``dry_run_schema`` from ``legacy_schema``."""
    if not db.table_exists(pg, meta_schema, "dry_runs"):
        return None
    cur = pg.execute(
        sql.SQL(
            "select * from {} where dry_run_schema = %s and legacy_schema = %s order by started_at desc limit 1"
        ).format(_table(meta_schema, "dry_runs")),
        [dry_run_schema, legacy_schema],
    )
    row = cur.fetchone()
    return dict(zip([c.name for c in cur.description], row, strict=True)) if row else None


# -- the audit ---------------------------------------------------------------------------------------

# a promote or sync round that rollback can undo: committed, not rolled back, its backup kept
IN_EFFECT = sql.SQL("command in ('promote', 'sync') and status = 'committed' and rolled_back_by is null")
BACKUP_REMOVED = "not possible: backup removed"  # cleanup's mark: in effect, and no longer undoable
# a promote or sync round whose writes are in effect (cleanup may have removed its backup)
LIVE = sql.SQL(
    "command in ('promote', 'sync') and status = 'committed' and (rolled_back_by is null or rolled_back_by = {})"
).format(sql.Literal(BACKUP_REMOVED))


def record_run(
    pg,
    meta_schema: str,
    *,
    command: str,
    status: str,
    live_schema: str,
    scope: str,
    scope_users: int | None = None,
    dry_run: dict | None = None,
    gates: dict | None = None,
    message: str | None = None,
    run_id: str | None = None,
    max_conflict_rate: Decimal | None = None,
    reviewed_users: int | None = None,
    rebuilt_users: int | None = None,
) -> str:
    run_id = run_id or new_id()
    pg.execute(
        sql.SQL(
            "insert into {} (run_id, command, status, os_user, dry_run_id, dbt_invocation_id, live_schema,"
            " scope, scope_users, gates, message, max_conflict_rate, reviewed_users, rebuilt_users, finished_at)"
            " values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
            " case when %s = 'started' then null else clock_timestamp() end)"
        ).format(_table(meta_schema, "runs")),
        [
            run_id,
            command,
            status,
            os_user(),
            dry_run and dry_run["dry_run_id"],
            dry_run and dry_run["dbt_invocation_id"],
            live_schema,
            scope,
            scope_users,
            Jsonb(gates) if gates is not None else None,
            message,
            max_conflict_rate,
            reviewed_users,
            rebuilt_users,
            status,
        ],
    )
    return run_id


def finish_run(pg, meta_schema: str, run_id: str, status: str, **fields) -> None:
    fields = {key: Jsonb(value) if isinstance(value, dict) else value for key, value in fields.items()}
    assignments = sql.SQL("").join(sql.SQL(", {} = %s").format(sql.Identifier(key)) for key in fields)
    pg.execute(
        sql.SQL("update {} set status = %s, finished_at = clock_timestamp(){} where run_id = %s").format(
            _table(meta_schema, "runs"), assignments
        ),
        [status, *fields.values(), run_id],
    )


def mark_dead_runs(pg, meta_schema: str) -> list[dict]:
    """Runs left at 'started' died (the caller holds the promote lock, so none is running): say so."""
    cur = pg.execute(
        sql.SQL(
            "update {} set status = 'died', finished_at = clock_timestamp(),"
            " message = 'the process died before recording an outcome; nothing of it was committed'"
            " where status = 'started' returning run_id, command, started_at"
        ).format(_table(meta_schema, "runs"))
    )
    return [{"run_id": r[0], "command": r[1], "started_at": r[2]} for r in cur.fetchall()]


def last_committed_promote(pg, meta_schema: str) -> dict | None:
    """The newest committed promote, not rolled back, that changed the live tables: what rollback undoes."""
    cur = pg.execute(
        sql.SQL(
            "select * from {runs} where {in_effect} and changed is not false order by started_at desc limit 1"
        ).format(runs=_table(meta_schema, "runs"), in_effect=IN_EFFECT)
    )
    row = cur.fetchone()
    return dict(zip([c.name for c in cur.description], row, strict=True)) if row else None


def runs(pg, meta_schema: str, limit: int = 50) -> list[dict]:
    if not db.table_exists(pg, meta_schema, "runs"):
        return []
    cur = pg.execute(
        sql.SQL(
            "select run_id, command, status, started_at, finished_at, os_user, db_user, dry_run_id,"
            " dbt_invocation_id, live_schema, scope, scope_users, created_tables, gates, counts, message,"
            " rolled_back_by, undoes_run_id, max_conflict_rate, changed, reviewed_users, rebuilt_users"
            " from {} order by started_at desc limit %s"
        ).format(_table(meta_schema, "runs")),
        [limit],
    )
    return [dict(zip([c.name for c in cur.description], row, strict=True)) for row in cur.fetchall()]


def last_promote_of(pg, meta_schema: str, dry_run_id: str) -> dict | None:
    """The newest committed promote of dry run ``dry_run_id`` that is not rolled back, if any."""
    if not db.table_exists(pg, meta_schema, "runs"):
        return None
    cur = pg.execute(
        sql.SQL("select * from {runs} where {in_effect} and dry_run_id = %s order by started_at desc limit 1").format(
            runs=_table(meta_schema, "runs"), in_effect=LIVE
        ),
        [dry_run_id],
    )
    row = cur.fetchone()
    return dict(zip([c.name for c in cur.description], row, strict=True)) if row else None


def unchanged_promotes_since(pg, meta_schema: str, promote: dict | None) -> list[str]:
    """Committed promotes that changed nothing, not rolled back, after ``promote`` (None: all of them):
    rollback steps over them to the last promote that changed something."""
    rows = pg.execute(
        sql.SQL(
            "select run_id from {runs} where {in_effect} and changed is false and started_at > %s order by started_at"
        ).format(runs=_table(meta_schema, "runs"), in_effect=IN_EFFECT),
        [promote["started_at"] if promote else "-infinity"],
    ).fetchall()
    return [row[0] for row in rows]


def last_state_run(pg, meta_schema: str, dry_run_schema: str) -> dict | None:
    """The newest promote or sync round in effect that published a dry-run state of ``dry_run_schema`` (not
    a partial promote's rebuild): where the live tables come from."""
    if not db.table_exists(pg, meta_schema, "runs"):
        return None
    cur = pg.execute(
        sql.SQL(
            "select r.* from {runs} as r where {in_effect} and r.dry_run_id in"
            " (select d.dry_run_id from {dry_runs} as d where d.dry_run_schema = %s)"
            " order by r.started_at desc limit 1"
        ).format(runs=_table(meta_schema, "runs"), dry_runs=_table(meta_schema, "dry_runs"), in_effect=LIVE),
        [dry_run_schema],
    )
    row = cur.fetchone()
    return dict(zip([c.name for c in cur.description], row, strict=True)) if row else None


def dry_run(pg, meta_schema: str, dry_run_id: str) -> dict | None:
    cur = pg.execute(
        sql.SQL("select * from {} where dry_run_id = %s").format(_table(meta_schema, "dry_runs")), [dry_run_id]
    )
    row = cur.fetchone()
    return dict(zip([c.name for c in cur.description], row, strict=True)) if row else None


def live_promotes(pg, meta_schema: str) -> list[str]:
    """Committed promotes not rolled back yet, oldest first: what `rollback --drop` undoes."""
    rows = pg.execute(
        sql.SQL("select run_id from {runs} where {in_effect} order by started_at").format(
            runs=_table(meta_schema, "runs"), in_effect=LIVE
        )
    ).fetchall()
    return [row[0] for row in rows]


def mark_rolled_back(pg, meta_schema: str, rollback_id: str, promote_ids: list[str]) -> None:
    pg.execute(
        sql.SQL("update {} set rolled_back_by = %s where run_id = any(%s)").format(_table(meta_schema, "runs")),
        [rollback_id, promote_ids],
    )


def promotes_older_than(pg, meta_schema: str, keep: int) -> list[str]:
    """Committed promotes not rolled back, but for the ``keep`` most recent: whose backups cleanup removes."""
    rows = pg.execute(
        sql.SQL("select run_id from {runs} where {in_effect} order by started_at desc offset %s").format(
            runs=_table(meta_schema, "runs"), in_effect=IN_EFFECT
        ),
        [keep],
    ).fetchall()
    return [row[0] for row in rows]


def mark_backups_removed(pg, meta_schema: str, promote_ids: list[str]) -> None:
    pg.execute(
        sql.SQL(
            "update {} set message = coalesce(message || '; ', '') || 'backup removed by cleanup',"
            " rolled_back_by = %s where run_id = any(%s)"
        ).format(_table(meta_schema, "runs")),
        [BACKUP_REMOVED, promote_ids],
    )


# -- the users of a partial promote ------------------------------------------------------------------

SCOPE_TABLE = "user_scope"  # read by the dbt rebuild too (the source migration_meta.user_scope)
PROFILE_SCOPE_TABLE = "profile_scope"  # orphan Profiles a catch-up rebuilds (migration_meta.profile_scope)


def scope_table(meta_schema: str) -> sql.Identifier:
    return _table(meta_schema, SCOPE_TABLE)


def write_user_scope(pg, meta_schema: str, users: list[str], profiles: list[str] = ()) -> sql.Identifier:
    """The users of a partial rebuild (and the orphan Profiles a catch-up rebuilds), in the metadata
    tables the dbt rebuild reads (under the promote lock)."""
    table, profile_table = scope_table(meta_schema), _table(meta_schema, PROFILE_SCOPE_TABLE)
    with pg.transaction():
        pg.execute(sql.SQL("create table if not exists {} (user_id text primary key)").format(table))
        pg.execute(sql.SQL("create table if not exists {} (legacy_profile_id text primary key)").format(profile_table))
        pg.execute(sql.SQL("truncate {}, {}").format(table, profile_table))
        for target, ids in ((table, users), (profile_table, profiles)):
            with pg.cursor().copy(sql.SQL("copy {} from stdin").format(target)) as copy:
                for owner_id in dict.fromkeys(ids):
                    copy.write_row([owner_id])
            # with its real row count, the planner reaches the users' rows through the live tables' and the
            # snapshot's user indexes instead of scanning them (it assumed ~1,400 users in a fresh table)
            pg.execute(sql.SQL("analyze {}").format(target))
    return table


def unknown_scope_users(pg, meta_schema: str, legacy_schema: str, limit: int = 5) -> list[str]:
    """Ids in the scope table that are not legacy users (matched byte for byte), in order."""
    rows = pg.execute(
        sql.SQL(
            "select s.user_id from {} as s where not exists (select from {} as u where u.{} = s.user_id)"
            " order by s.user_id limit %s"
        ).format(scope_table(meta_schema), sql.Identifier(legacy_schema, "User"), sql.Identifier("id")),
        [limit],
    ).fetchall()
    return [row[0] for row in rows]


def record_rebuilt_owners(pg, meta_schema: str, run_id: str, users: list[str], profiles: list[str]) -> None:
    """Keep the owners a catch-up or sync round rebuilt with its audit row (spec §10)."""
    with pg.cursor().copy(
        sql.SQL("copy {} (run_id, owner_kind, owner_id) from stdin").format(_table(meta_schema, "run_rebuilt_owners"))
    ) as copy:
        for kind, ids in (("user", users), ("profile", profiles)):
            for owner_id in ids:
                copy.write_row([run_id, kind, owner_id])


def record_scope_users(pg, meta_schema: str, run_id: str) -> None:
    """Keep the users of partial promote ``run_id`` with its audit row."""
    pg.execute(
        sql.SQL("insert into {} (run_id, user_id) select %s, user_id from {}").format(
            _table(meta_schema, "run_scope_users"), scope_table(meta_schema)
        ),
        [run_id],
    )


def record_handed_over(pg, meta_schema: str, run_id: str, users: list[tuple[str, int]]) -> None:
    """Keep the users a sync round handed over to the application (spec §10), with their differing rows."""
    with pg.cursor().copy(
        sql.SQL("copy {} (user_id, run_id, differing_rows) from stdin").format(_table(meta_schema, "handed_over_users"))
    ) as copy:
        for user_id, rows in users:
            copy.write_row([user_id, run_id, rows])


def written_users(pg, meta_schema: str, run: dict) -> sql.Identifier:
    """A temporary table of the users a partial promote or sync round ``run`` wrote: its scope, but for
    those it left out, held back or handed over (its rollback checks and restores those alone)."""
    table = sql.Identifier("pg_temp", "rollback_scope")
    not_written = [*(run.get("left_out_users") or []), *(run.get("held_back_users") or [])]
    not_written += run.get("handed_over_users") or []
    pg.execute(sql.SQL("drop table if exists {}").format(table))
    pg.execute(
        sql.SQL("create temporary table {} as select user_id from {} where run_id = %s and user_id <> all(%s)").format(
            table, _table(meta_schema, "run_scope_users")
        ),
        [run["run_id"], not_written],
    )
    return table


def record_state_rebuilt(pg, meta_schema: str, dry_run_id: str, users: list[str], profiles: list[str]) -> None:
    """Keep the owners catch-up state ``dry_run_id`` rebuilt (in the transaction of its splice)."""
    with pg.cursor().copy(
        sql.SQL("copy {} (dry_run_id, owner_kind, owner_id) from stdin").format(
            _table(meta_schema, "dry_run_rebuilt_owners")
        )
    ) as copy:
        for kind, ids in (("user", users), ("profile", profiles)):
            for owner_id in dict.fromkeys(ids):
                copy.write_row([dry_run_id, kind, owner_id])


def rebuilt_since(pg, meta_schema: str, root_dry_run_id: str) -> tuple[list[str], list[str]]:
    """Every owner (user ids, orphan Profile ids) rebuilt by a catch-up state descending from the reviewed
    dry run ``root_dry_run_id``, across attempts, in id order."""
    rows = pg.execute(
        sql.SQL(
            "select o.owner_kind, o.owner_id from {} as o join {} as d on d.dry_run_id = o.dry_run_id"
            " where d.root_dry_run_id = %s group by o.owner_kind, o.owner_id"
            ' order by o.owner_kind, o.owner_id collate "C"'
        ).format(_table(meta_schema, "dry_run_rebuilt_owners"), _table(meta_schema, "dry_runs")),
        [root_dry_run_id],
    ).fetchall()
    return [o for kind, o in rows if kind == "user"], [o for kind, o in rows if kind == "profile"]


def end_cutover(pg, meta_schema: str, run_id: str) -> None:
    pg.execute(
        sql.SQL("insert into {} (os_user, run_id) values (%s, %s)").format(_table(meta_schema, "cutover_ends")),
        [os_user(), run_id],
    )


def cutover_ended(pg, meta_schema: str, since: datetime.datetime) -> datetime.datetime | None:
    """When a cutover ended after ``since`` (the live tables' promote), if one did."""
    return pg.execute(
        sql.SQL("select max(ended_at) from {} where ended_at > %s").format(_table(meta_schema, "cutover_ends")),
        [since],
    ).fetchone()[0]
