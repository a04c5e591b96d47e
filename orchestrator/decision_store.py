"""The reviewers' decisions in the metadata schema (spec §11): every statement on them.

The table (orchestrator/sql/metadata.sql) is business data the models read as a dbt source
(models/staging/review); the statements are orchestrator/sql/decisions.sql. What a dry run made of
the decisions is its own table, ``migration_decisions``, read here to tell what changed since.
"""

from __future__ import annotations

import functools

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from orchestrator import db

TABLE = "conflict_decisions"
EVENTS = "decision_events"

# a conflict log or a build's decisions that do not exist (no dry run yet, or one built before decisions)
NO_CONFLICTS = sql.SQL(
    '(select null::text as user_id, null::text as context_type, null::text as field, null::jsonb as "values",'
    " null::jsonb as chosen, null::text as decided_by where false)"
)
NO_DECISIONS = sql.SQL(
    "(select null::text as user_id, null::text as context_type, null::text as field, null::jsonb as value where false)"
)
NO_BUILT_DECISIONS = sql.SQL(
    "(select null::text as user_id, null::text as context_type, null::text as field, null::jsonb as decided_value"
    " where false)"
)

# a decision cell as jsonb, or NULL when it is not JSON the server accepts (a per-row test, for small files)
DECISION_JSONB = """
create or replace function pg_temp.decision_jsonb(cell text) returns jsonb language plpgsql immutable as $$
begin
    return cell::jsonb;
exception when others then
    return null;
end
$$
"""


@functools.cache
def _statements() -> dict[str, str]:
    return db.packaged_sql_sections("decisions.sql")


def _statement(name: str, **parts: sql.Composable) -> sql.Composed:
    return sql.SQL(_statements()[name]).format(**parts)


def table(meta_schema: str) -> sql.Identifier:
    return sql.Identifier(meta_schema, TABLE)


def conflicts_of(pg: psycopg.Connection, dry_run_schema: str) -> sql.Composable | None:
    """The latest dry run's conflict log, None when there is none."""
    if not db.table_exists(pg, dry_run_schema, "migration_conflicts"):
        return None
    return sql.Identifier(dry_run_schema, "migration_conflicts")


def _rows(pg: psycopg.Connection, query: sql.Composable, params=None) -> list[dict]:
    with pg.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, params).fetchall()


def _users_filter(column: str, users: list[str] | None) -> tuple[sql.Composable, list]:
    if users is None:
        return sql.SQL("true"), []
    return sql.SQL("{} = any(%s::text[])").format(sql.Identifier(column)), [list(users)]


def template_rows(pg, conflicts: sql.Composable, users: list[str] | None, field: str | None) -> list[dict]:
    """The conflicts to decide (of ``users``, of ``field`` or its sub-keys), in a stable order."""
    return _rows(pg, _statement("template", conflicts=conflicts), {"users": users, "field": field})


def check(pg, conflicts: sql.Composable, rows: list[dict]) -> list[dict]:
    """Each deciding row (line, user_id, context_type, field, decision, position, listed_values) against
    the conflicts: found, value_count, conflict_values, malformed, listed_malformed, listed_match and the
    value it names (jsonb text, as the conflict logged it; None when it names none)."""
    pg.execute(DECISION_JSONB)
    pg.execute("drop table if exists pg_temp.decision_rows")
    pg.execute(
        "create temporary table decision_rows (line integer, user_id text, context_type text, field text,"
        " decision text, position integer, listed_values text)"
    )
    columns = ("line", "user_id", "context_type", "field", "decision", "position", "listed_values")
    copy_rows = sql.SQL("copy {} ({}) from stdin").format(
        sql.Identifier("pg_temp", "decision_rows"), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    with pg.cursor().copy(copy_rows) as copy:
        for row in rows:
            copy.write_row([row[column] for column in columns])
    return _rows(pg, _statement("check", conflicts=conflicts))


def store(pg, meta_schema: str, decisions: list[dict], *, reviewer: str, file_name: str, sha256: str) -> None:
    """Keep ``decisions`` (user_id, context_type, field, value as JSON text, note), each replacing the
    earlier decision of its conflict, and record the import: one transaction."""
    with pg.transaction():
        with pg.cursor() as cur:
            cur.executemany(
                _statement("store", decisions=table(meta_schema)),
                [{**decision, "reviewer": reviewer, "sha256": sha256} for decision in decisions],
            )
        _event(pg, meta_schema, "import", reviewer, len(decisions), file_name=file_name, sha256=sha256)


def count(pg, meta_schema: str, users: list[str] | None) -> int:
    where, params = _users_filter("user_id", users)
    query = sql.SQL("select count(*) from {} where {}").format(table(meta_schema), where)
    return pg.execute(query, params).fetchone()[0]


def clear(pg, meta_schema: str, users: list[str] | None, actor: str) -> int:
    """Remove the decisions (of ``users``; all without), recorded as one event; how many were removed."""
    where, params = _users_filter("user_id", users)
    with pg.transaction():
        removed = pg.execute(sql.SQL("delete from {} where {}").format(table(meta_schema), where), params).rowcount
        _event(pg, meta_schema, "clear", actor, removed, users=users)
    return removed


def _event(pg, meta_schema: str, action: str, actor: str, decisions: int, **details) -> None:
    from orchestrator import metadata

    pg.execute(
        sql.SQL(
            "insert into {} (event_id, action, actor, file_name, file_sha256, decisions, scope_users)"
            " values (%s, %s, %s, %s, %s, %s, %s)"
        ).format(sql.Identifier(meta_schema, EVENTS)),
        [
            metadata.new_id(),
            action,
            actor,
            details.get("file_name"),
            details.get("sha256"),
            decisions,
            details.get("users"),
        ],
    )


def listing(pg, meta_schema: str, dry_run_schema: str, users: list[str] | None = None) -> list[dict]:
    """Every decision (of ``users``) with its status in the latest dry run (None when there is none)."""
    if not db.table_exists(pg, meta_schema, TABLE):
        return []
    conflicts = conflicts_of(pg, dry_run_schema)
    where, params = _users_filter("user_id", users)
    where = sql.SQL("decisions.") + where if users is not None else where
    rows = _rows(
        pg,
        _statement("list", decisions=table(meta_schema), conflicts=conflicts or NO_CONFLICTS, scope=where),
        params,
    )
    if conflicts is None:
        for row in rows:
            row["status"] = None
    return rows


def changed_since_build(pg, meta_schema: str, dry_run_schema: str, scope_table: sql.Composable | None) -> int:
    """How many conflicts' decisions differ now from the ones the dry run's build read (of the users in
    ``scope_table``; all without): decided, re-decided or cleared since that dry run."""
    decisions = table(meta_schema) if db.table_exists(pg, meta_schema, TABLE) else NO_DECISIONS
    built = (
        sql.Identifier(dry_run_schema, "migration_decisions")
        if db.table_exists(pg, dry_run_schema, "migration_decisions")
        else NO_BUILT_DECISIONS
    )
    scope = (
        sql.SQL("true") if scope_table is None else sql.SQL("user_id in (select user_id from {})").format(scope_table)
    )
    query = _statement("changed_since_build", decisions=decisions, built=built, scope=scope)
    return pg.execute(query).fetchone()[0]
