"""The live tables: their DDL (Prisma's migration.sql), the dry-run -> live column mapping, the
change plan, the write, the rollback backups and the snapshot used to detect drift.

One place decides each thing: the live DDL is ``sql/unified_profile_migration.sql``; the column
mapping is derived (snake_case dry-run column -> camelCase live column) and checked against both
catalogs, never listed by hand.
"""

from __future__ import annotations

import dataclasses

import psycopg
from psycopg import sql

from orchestrator import db
from orchestrator.errors import OrchestratorError
from orchestrator.faults import fault_point

# dry-run mart -> live table
LIVE_TABLES = {"profile": "UserProfile", "context_intent": "ContextIntent"}
MIGRATION_FILE = "unified_profile_migration.sql"


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


@dataclasses.dataclass(frozen=True)
class Column:
    dry: str
    live: str
    live_type: str  # format_type() of the live column, as the server prints (and quotes) it


@dataclasses.dataclass(frozen=True)
class TablePair:
    dry_schema: str
    dry_table: str
    live_schema: str
    live_table: str
    columns: tuple[Column, ...]

    @property
    def dry(self) -> sql.Identifier:
        return sql.Identifier(self.dry_schema, self.dry_table)

    @property
    def live(self) -> sql.Identifier:
        return sql.Identifier(self.live_schema, self.live_table)

    def dry_values(self, alias: str) -> sql.Composable:
        """The dry-run row's values, cast to the live columns' types, in live column order."""
        return sql.SQL(", ").join(
            sql.SQL("cast({}.{} as {})").format(sql.Identifier(alias), sql.Identifier(c.dry), sql.SQL(c.live_type))
            for c in self.columns
        )

    def live_values(self, alias: str) -> sql.Composable:
        return sql.SQL(", ").join(
            sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(c.live)) for c in self.columns
        )

    def live_column_list(self) -> sql.Composable:
        return sql.SQL(", ").join(sql.Identifier(c.live) for c in self.columns)

    def same_row(self) -> sql.Composable:
        """True when dry-run row ``d`` and live row ``l`` are identical (values and id)."""
        return sql.SQL("row({}) is not distinct from row({})").format(self.dry_values("d"), self.live_values("l"))


def _columns(pg: psycopg.Connection, schema: str, table: str) -> list[tuple[str, str]]:
    return pg.execute(
        "select a.attname, format_type(a.atttypid, a.atttypmod) from pg_attribute as a"
        " join pg_class as c on c.oid = a.attrelid join pg_namespace as n on n.oid = c.relnamespace"
        " where n.nspname = %s and c.relname = %s and a.attnum > 0 and not a.attisdropped order by a.attnum",
        [schema, table],
    ).fetchall()


def live_tables_present(pg: psycopg.Connection, live_schema: str) -> dict[str, bool]:
    return {live: db.table_exists(pg, live_schema, live) for live in LIVE_TABLES.values()}


def table_pairs(pg: psycopg.Connection, dry_schema: str, live_schema: str) -> list[TablePair]:
    pairs = []
    for dry_table, live_table in LIVE_TABLES.items():
        dry_columns = [name for name, _ in _columns(pg, dry_schema, dry_table)]
        live_columns = dict(_columns(pg, live_schema, live_table))
        if not dry_columns:
            raise OrchestratorError(
                f"the dry-run table {dry_schema}.{dry_table} does not exist: run `orchestrator dry-run`"
            )
        mapped = {camel(name): name for name in dry_columns}
        if set(mapped) != set(live_columns):
            raise OrchestratorError(
                f'the live table {live_schema}."{live_table}" does not have the columns of the dry run '
                f"(missing: {sorted(set(mapped) - set(live_columns))}, unexpected: "
                f"{sorted(set(live_columns) - set(mapped))}): it was not created from {MIGRATION_FILE}"
            )
        columns = tuple(Column(mapped[live], live, live_type) for live, live_type in live_columns.items())
        pairs.append(TablePair(dry_schema, dry_table, live_schema, live_table, columns))
    return pairs


def live_only_pairs(pg: psycopg.Connection, dry_schema: str, live_schema: str) -> list[TablePair]:
    """Pairs for restoring, which needs only the live columns (the dry run may be gone)."""
    return [
        TablePair(
            dry_schema,
            dry_table,
            live_schema,
            live_table,
            tuple(Column(name, name, live_type) for name, live_type in _columns(pg, live_schema, live_table)),
        )
        for dry_table, live_table in LIVE_TABLES.items()
    ]


# -- scope ---------------------------------------------------------------------------------------------


def scope_filter(column: sql.Composable, scope_table: sql.Composable | None) -> sql.Composable:
    """All rows (no scope), or those of the users listed in ``scope_table`` (a table of user_id)."""
    if scope_table is None:
        return sql.SQL("true")
    return sql.SQL("{} in (select user_id from {})").format(column, scope_table)


def lock_live_rows(pg: psycopg.Connection, live_schema: str, scope_table: sql.Composable) -> None:
    """Inside a publish's transaction: lock the live rows of the scope's users (FOR UPDATE, under the
    session's lock_timeout) until the commit, so that what the drift check sees of them is what the write
    replaces: an application write to them either committed before (and is seen) or waits for the commit."""
    for live_table in LIVE_TABLES.values():
        pg.execute(
            sql.SQL("select from {} as l where {} for update").format(
                sql.Identifier(live_schema, live_table),
                scope_filter(sql.SQL("l.{}").format(sql.Identifier("userId")), scope_table),
            )
        )


def written_by_us(pg: psycopg.Connection, meta_schema: str, users: list[str]) -> set[str]:
    """Those of ``users`` whose live rows we wrote (the snapshot of what we last left holds some of theirs)."""
    if not users:
        return set()
    return {
        row[0]
        for row in pg.execute(
            sql.SQL("select distinct user_id from {} where user_id = any(%s)").format(
                sql.Identifier(meta_schema, "live_snapshot")
            ),
            [users],
        ).fetchall()
    }


def write_scope(
    pg: psycopg.Connection,
    dry_schema: str,
    live_schema: str,
    legacy_schema: str,
    scope_table: sql.Composable | None,
    excluded: list[str] = (),
) -> tuple[list[str], sql.Composable | None]:
    """Inside a publish's transaction: the users of the scope (all without one) whose dry-run rows name a
    "User" that no longer exists (the application deleted it after the snapshot the rows were built from;
    their live rows went by the cascade), and the scope to write: without them and without ``excluded``
    (users held back or handed over). The scope as it was when there is nobody to leave out."""
    users = sql.Identifier(legacy_schema, "User")
    parts = [
        sql.SQL("select d.user_id from {} as d where {}").format(
            sql.Identifier(dry_schema, dry_table), scope_filter(sql.SQL("d.user_id"), scope_table)
        )
        for dry_table in LIVE_TABLES
    ]
    vanished = [
        user_id
        for (user_id,) in pg.execute(
            sql.SQL(
                "select o.user_id from ({}) as o where not exists (select from {} as u where u.{} = o.user_id)"
                ' group by o.user_id order by o.user_id collate "C"'
            ).format(sql.SQL(" union all ").join(parts), users, sql.Identifier("id"))
        ).fetchall()
    ]
    left_out = sorted({*vanished, *excluded})
    if not left_out:
        return [], scope_table
    # every user the write may touch (the dry run's and the live tables' own), but those
    owners = parts + [
        sql.SQL("select l.{} from {} as l where {}").format(
            sql.Identifier("userId"),
            sql.Identifier(live_schema, live_table),
            scope_filter(sql.SQL("l.{}").format(sql.Identifier("userId")), scope_table),
        )
        for live_table in LIVE_TABLES.values()
        if db.table_exists(pg, live_schema, live_table)
    ]
    remaining = sql.Identifier("pg_temp", "publish_scope")
    pg.execute(sql.SQL("drop table if exists {}").format(remaining))
    pg.execute(
        sql.SQL(
            "create temporary table {} as select distinct o.user_id from ({}) as o where o.user_id <> all(%s)"
        ).format(remaining, sql.SQL(" union ").join(owners)),
        [left_out],
    )
    pg.execute(sql.SQL("analyze {}").format(remaining))
    return vanished, remaining


# -- plan, write, backup, restore ---------------------------------------------------------------------


def plan(
    pg: psycopg.Connection, pair: TablePair, scope_table: sql.Composable | None, live_exists: bool
) -> dict[str, int]:
    """Rows the promote would insert / update / delete in this live table."""
    dry_scope = scope_filter(sql.SQL("d.user_id"), scope_table)
    if not live_exists:
        count = pg.execute(sql.SQL("select count(*) from {} as d where {}").format(pair.dry, dry_scope)).fetchone()[0]
        return {"inserted": count, "updated": 0, "deleted": 0, "unchanged": 0}
    live_scope = scope_filter(sql.SQL("l.{}").format(sql.Identifier("userId")), scope_table)
    query = sql.SQL(
        "select count(*) filter (where l.{id} is null), count(*) filter (where d.id is null),"
        " count(*) filter (where d.id is not null and l.{id} is not null and not ({same})),"
        " count(*) filter (where d.id is not null and l.{id} is not null and ({same}))"
        " from (select * from {dry} as d where {dry_scope}) as d"
        " full join (select * from {live} as l where {live_scope}) as l on d.id = l.{id}"
    ).format(
        id=sql.Identifier("id"),
        same=pair.same_row(),
        dry=pair.dry,
        dry_scope=dry_scope,
        live=pair.live,
        live_scope=live_scope,
    )
    inserted, deleted, updated, unchanged = pg.execute(query).fetchone()
    return {"inserted": inserted, "updated": updated, "deleted": deleted, "unchanged": unchanged}


def backups_table(meta_schema: str) -> sql.Identifier:
    """The rows a promote replaced or removed, as jsonb: independent of the live tables' types (the
    legacy enum may be dropped and recreated with its schema), restored with jsonb_populate_record."""
    return sql.Identifier(meta_schema, "run_backups")


def inserted_ids_table(meta_schema: str) -> sql.Identifier:
    return sql.Identifier(meta_schema, "run_inserted_ids")


WRITTEN = sql.Identifier("pg_temp", "publish_written")  # the users a publish's write touched (refresh_written)
_DIFF = sql.Identifier("pg_temp", "publish_diff")


def start_write(pg: psycopg.Connection) -> None:
    """Inside a publish's transaction, before its writes: an empty list of the users written."""
    pg.execute(sql.SQL("drop table if exists {}").format(WRITTEN))
    pg.execute(sql.SQL("create temporary table {} (user_id text)").format(WRITTEN))


def write(
    pg: psycopg.Connection, pair: TablePair, scope_table: sql.Composable | None, meta_schema: str, run_id: str
) -> int:
    """Make the live rows in scope identical to the dry run's, touching only rows that differ; the number
    of rows that differed (removed, replaced or added), and their users added to WRITTEN.

    One comparison of the scope's rows on both sides (for a scope, each side reached through its user
    index) finds the rows that differ; only those are removed and inserted. The rows replaced or removed
    go to run_backups and the ids written to run_inserted_ids, so that rollback can restore exactly the
    state before this run.
    """
    pg.execute(sql.SQL("drop table if exists {}").format(_DIFF))
    if scope_table is None:
        # every row compared: the planner, expecting every row out of the join, would run it on one core to
        # spare moving rows between processes; few differ (snapshot._replace_owners does the same)
        pg.execute("set local parallel_tuple_cost = 0")
    pg.execute(
        sql.SQL(
            "create temporary table {diff} as select d.id as dry_id, d.user_id as dry_user, l.{id} as live_id,"
            " l.{user_id} as live_user from (select * from {dry} as d where {dry_scope}) as d"
            " full join (select * from {live} as l where {live_scope}) as l on d.id = l.{id}"
            " where d.id is null or l.{id} is null or not ({same})"
        ).format(
            diff=_DIFF,
            id=sql.Identifier("id"),
            user_id=sql.Identifier("userId"),
            dry=pair.dry,
            dry_scope=scope_filter(sql.SQL("d.user_id"), scope_table),
            live=pair.live,
            live_scope=scope_filter(sql.SQL("l.{}").format(sql.Identifier("userId")), scope_table),
            same=pair.same_row(),
        )
    )
    pg.execute("reset parallel_tuple_cost")
    differing = pg.execute(sql.SQL("select count(*) from {}").format(_DIFF)).fetchone()[0]
    if differing:
        pg.execute(sql.SQL("analyze {}").format(_DIFF))
        pg.execute(
            sql.SQL(
                "with removed as (delete from {live} as l using {diff} as x where x.live_id = l.{id} returning l.*)"
                " insert into {backup} (run_id, table_name, row_data) select %s, %s, to_jsonb(removed) from removed"
            ).format(live=pair.live, diff=_DIFF, id=sql.Identifier("id"), backup=backups_table(meta_schema)),
            [run_id, pair.live_table],
        )
    fault_point("promote:mid-write")
    if not differing:
        return 0
    pg.execute(
        sql.SQL(
            "with added as (insert into {live} as l ({columns}) select {values} from {dry} as d where {dry_scope}"
            " and d.id in (select x.dry_id from {diff} as x where x.dry_id is not null)"
            " and not exists (select 1 from {live} as l where l.{id} = d.id) returning l.{id})"
            " insert into {inserted} select %s, %s, added.{id} from added"
        ).format(
            live=pair.live,
            columns=pair.live_column_list(),
            values=pair.dry_values("d"),
            dry=pair.dry,
            dry_scope=scope_filter(sql.SQL("d.user_id"), scope_table),
            diff=_DIFF,
            id=sql.Identifier("id"),
            inserted=inserted_ids_table(meta_schema),
        ),
        [run_id, pair.live_table],
    )
    pg.execute(
        sql.SQL(
            "insert into {written} select x.dry_user from {diff} as x where x.dry_user is not null"
            " union select x.live_user from {diff} as x where x.live_user is not null"
        ).format(written=WRITTEN, diff=_DIFF)
    )
    return differing


def load_new(pg: psycopg.Connection, pair: TablePair, scope_table: sql.Composable | None) -> None:
    """Fill a live table this same transaction created (without its foreign keys: ``add_foreign_keys``
    adds them after the commit): load it bare, then rebuild its primary key, unique keys and indexes from
    their own catalog definitions (same names and definitions, so the catalog stays exactly Prisma's).
    One bulk index build instead of per-row index maintenance; it locks only the new table. Rollback of
    such a run drops the tables, so nothing is recorded for it row by row."""
    table = pg.execute(
        "select to_regclass(format('%%I.%%I', %s::text, %s::text))::oid", [pair.live_schema, pair.live_table]
    ).fetchone()[0]
    constraints = pg.execute(
        "select conname, pg_get_constraintdef(oid) from pg_constraint where conrelid = %s order by conname",
        [table],
    ).fetchall()
    indexes = pg.execute(
        "select c.relname, pg_get_indexdef(i.indexrelid) from pg_index as i join pg_class as c on c.oid = i.indexrelid"
        " where i.indrelid = %s and not exists (select 1 from pg_constraint as k where k.conindid = i.indexrelid)"
        " order by c.relname",
        [table],
    ).fetchall()
    for name, _ in reversed(constraints):
        pg.execute(sql.SQL("alter table {} drop constraint {}").format(pair.live, sql.Identifier(name)))
    for name, _ in indexes:
        pg.execute(sql.SQL("drop index {}").format(sql.Identifier(pair.live_schema, name)))
    pg.execute(
        sql.SQL("insert into {live} ({columns}) select {values} from {dry} as d where {scope}").format(
            live=pair.live,
            columns=pair.live_column_list(),
            values=pair.dry_values("d"),
            dry=pair.dry,
            scope=scope_filter(sql.SQL("d.user_id"), scope_table),
        )
    )
    fault_point("promote:mid-write")
    for name, definition in constraints:
        pg.execute(
            sql.SQL("alter table {} add constraint {} {}").format(pair.live, sql.Identifier(name), sql.SQL(definition))
        )
    for _, definition in indexes:
        pg.execute(sql.SQL(definition))  # the server's own text of the index it had


def restore(
    pg: psycopg.Connection, pair: TablePair, meta_schema: str, run_id: str, legacy_schema: str
) -> dict[str, int]:
    """Undo one run's write: remove the rows it inserted, put back the rows it replaced or removed, but for
    the rows of users deleted since (the cascade would have removed them: they are counted, not restored)."""
    removed = pg.execute(
        sql.SQL(
            "delete from {live} as l using {inserted} as i where i.run_id = %s and i.table_name = %s and l.{id} = i.id"
        ).format(live=pair.live, inserted=inserted_ids_table(meta_schema), id=sql.Identifier("id")),
        [run_id, pair.live_table],
    ).rowcount
    fault_point("rollback:mid-restore")
    columns = pair.live_column_list()
    restored, gone = pg.execute(
        sql.SQL(
            "with backed_up as (select r.* from {backup} as b, jsonb_populate_record(null::{live}, b.row_data) as r"
            " where b.run_id = %s and b.table_name = %s),"
            " put_back as (insert into {live} ({columns}) select b.{columns_b} from backed_up as b"
            " where exists (select from {users} as u where u.{id} = b.{user_id}) returning 1)"
            " select (select count(*) from put_back),"
            " (select count(*) from backed_up) - (select count(*) from put_back)"
        ).format(
            live=pair.live,
            columns=columns,
            columns_b=sql.SQL(", b.").join(sql.Identifier(c.live) for c in pair.columns),
            backup=backups_table(meta_schema),
            users=sql.Identifier(legacy_schema, "User"),
            id=sql.Identifier("id"),
            user_id=sql.Identifier("userId"),
        ),
        [run_id, pair.live_table],
    ).fetchone()
    return {"removed": removed, "restored": restored, "not_restored_user_deleted": gone}


def forget_run(pg: psycopg.Connection, meta_schema: str, run_ids: list[str]) -> None:
    """Drop the backups of runs that can no longer be rolled back."""
    for table in (backups_table(meta_schema), inserted_ids_table(meta_schema)):
        pg.execute(sql.SQL("delete from {} where run_id = any(%s)").format(table), [run_ids])


# -- snapshot and drift -------------------------------------------------------------------------------


def _row_hashes(live: sql.Identifier, scope_table: sql.Composable | None) -> sql.Composable:
    return sql.SQL(
        "select l.{id} as id, l.{user_id} as user_id, md5(l::text) as row_hash from {live} as l where {scope}"
    ).format(
        id=sql.Identifier("id"),
        user_id=sql.Identifier("userId"),
        live=live,
        scope=scope_filter(sql.SQL("l.{}").format(sql.Identifier("userId")), scope_table),
    )


SNAPSHOT_INDEX = "live_snapshot_user_id"  # created by sql/metadata.sql, rebuilt by a full refresh


def refresh_snapshot(
    pg: psycopg.Connection, meta_schema: str, live_schema: str, scope_table: sql.Composable | None = None
) -> None:
    """Record what the live tables hold now, as we left them (for a partial promote: its users' rows).
    A full refresh rewrites every row: its user_id index is dropped and built again after the load
    (inside the caller's transaction), instead of being updated row by row, and the live tables and
    the snapshot are analysed."""
    snapshot = sql.Identifier(meta_schema, "live_snapshot")
    if scope_table is None:
        pg.execute(sql.SQL("drop index if exists {}").format(sql.Identifier(meta_schema, SNAPSHOT_INDEX)))
        pg.execute(sql.SQL("delete from {}").format(snapshot))
    else:
        pg.execute(
            sql.SQL("delete from {} as s where {}").format(snapshot, scope_filter(sql.SQL("s.user_id"), scope_table))
        )
    for live_table in LIVE_TABLES.values():
        if db.table_exists(pg, live_schema, live_table):
            pg.execute(
                sql.SQL(
                    "insert into {} (table_name, id, user_id, row_hash)"
                    " select %s, h.id, h.user_id, h.row_hash from ({}) as h"
                ).format(snapshot, _row_hashes(sql.Identifier(live_schema, live_table), scope_table)),
                [live_table],
            )
            if scope_table is None:
                # Statistics now, in this transaction: after a full promote of 1M users autovacuum had
                # not analysed these tables minutes later, so a partial promote's plans took them for
                # small and scanned them instead of reaching their users' rows through the userId indexes.
                pg.execute(sql.SQL("analyze {}").format(sql.Identifier(live_schema, live_table)))
    if scope_table is None:
        pg.execute(sql.SQL("create index {} on {} (user_id)").format(sql.Identifier(SNAPSHOT_INDEX), snapshot))
        pg.execute(sql.SQL("analyze {}").format(snapshot))


def refresh_written(
    pg: psycopg.Connection, meta_schema: str, live_schema: str, rows_written: int, *, whole: bool
) -> None:
    """After a publish's writes (nothing drifted, or the drifted users left out): the snapshot of the users
    written (WRITTEN) refreshed; every other row of the scope is as the snapshot has it, since the drift
    check found it so and the write left it. When a write of every user (``whole``) replaced a large part
    of the live tables, one full refresh is cheaper than replacing that many users' rows."""
    if not rows_written:
        return
    live_rows = sum(
        pg.execute(
            "select greatest(c.reltuples, 0)::bigint from pg_class as c"
            " join pg_namespace as n on n.oid = c.relnamespace where n.nspname = %s and c.relname = %s",
            [live_schema, live_table],
        ).fetchone()[0]
        for live_table in LIVE_TABLES.values()
    )
    if whole and rows_written * FULL_REFRESH_SHARE > live_rows:
        refresh_snapshot(pg, meta_schema, live_schema)
        return
    pg.execute(sql.SQL("analyze {}").format(WRITTEN))
    refresh_snapshot(pg, meta_schema, live_schema, WRITTEN)


# a write of every user that replaced more than one row in this many of the live tables refreshes the
# whole snapshot
FULL_REFRESH_SHARE = 10


def drift(
    pg: psycopg.Connection,
    meta_schema: str,
    live_schema: str,
    legacy_schema: str,
    scope_table: sql.Composable | None = None,
) -> dict[str, int]:
    """Rows of each live table that differ from what we last left there (added, changed or removed);
    for a partial promote, among its users' rows only (it touches no other row). A row that vanished
    with its legacy "User" went through the live tables' ON DELETE CASCADE: that is not drift."""
    return {
        live_table: count
        for live_table, count in drifted(pg, meta_schema, live_schema, legacy_schema, scope_table, per="table")
    }


def drifted(pg, meta_schema: str, live_schema: str, legacy_schema: str, scope_table, *, per: str) -> list[tuple]:
    snapshot = sql.Identifier(meta_schema, "live_snapshot")
    parts = []
    for live_table in LIVE_TABLES.values():
        if not db.table_exists(pg, live_schema, live_table):
            continue
        if (
            scope_table is None
            and per == "table"
            and _same_as_recorded(pg, meta_schema, live_schema, legacy_schema, live_table)
        ):
            continue  # nothing differs: no row to count
        parts.append(
            sql.SQL(
                "select {table}::text as table_name, coalesce(h.user_id, s.user_id) as user_id"
                " from ({hashes}) as h full join (select * from {snapshot} as s where s.table_name = {table}"
                " and {scope}) as s on h.id = s.id where h.row_hash is distinct from s.row_hash"
                " and not (h.id is null and not exists (select from {users} as u where u.{id} = s.user_id))"
            ).format(
                table=sql.Literal(live_table),
                hashes=_row_hashes(sql.Identifier(live_schema, live_table), scope_table),
                snapshot=snapshot,
                scope=scope_filter(sql.SQL("s.user_id"), scope_table),
                users=sql.Identifier(legacy_schema, "User"),
                id=sql.Identifier("id"),
            )
        )
    if not parts and per == "table":
        return [(table, 0) for table in LIVE_TABLES.values() if db.table_exists(pg, live_schema, table)]
    if not parts:
        return []
    differing = sql.SQL(" union all ").join(parts)
    if per == "table":
        counts = dict(
            pg.execute(
                sql.SQL("select table_name, count(*) from ({}) as d group by table_name").format(differing)
            ).fetchall()
        )
        return [
            (table, counts.get(table, 0)) for table in LIVE_TABLES.values() if db.table_exists(pg, live_schema, table)
        ]
    return pg.execute(
        sql.SQL('select user_id, count(*) from ({}) as d group by user_id order by user_id collate "C"').format(
            differing
        )
    ).fetchall()


def _same_as_recorded(pg, meta_schema: str, live_schema: str, legacy_schema: str, live_table: str) -> bool:
    """Whether every row of ``live_table`` is as the snapshot recorded it (the snapshot rows of users
    deleted since left out: the cascade removed their rows): one pass over each side, the count and an
    order-free sum of each row's hash, instead of joining them row by row. Equal sums of 64-bit hashes of
    different rows are a chance of 2^-64; when they differ, the caller counts the rows that do."""
    totals = sql.SQL("select count(*), coalesce(sum(hashtextextended(h.id || '/' || h.row_hash, 0)), 0)")
    live_side = pg.execute(
        sql.SQL("{} from ({}) as h").format(totals, _row_hashes(sql.Identifier(live_schema, live_table), None))
    ).fetchone()
    recorded_side = pg.execute(
        sql.SQL(
            "{} from {} as h where h.table_name = %s and exists (select from {} as u where u.{} = h.user_id)"
        ).format(
            totals,
            sql.Identifier(meta_schema, "live_snapshot"),
            sql.Identifier(legacy_schema, "User"),
            sql.Identifier("id"),
        ),
        [live_table],
    ).fetchone()
    return live_side == recorded_side
