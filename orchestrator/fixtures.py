"""The demo/test legacy dataset: dbt seeds (raw text) loaded into the real §1 DDL in a fixtures schema."""

from __future__ import annotations

from psycopg import sql

from orchestrator import db
from orchestrator.config import ConnInfo, Settings, validate_identifier
from orchestrator.dbt import DbtProject, require_success
from orchestrator.errors import OrchestratorError

MARKER = "orchestrator fixtures: legacy-shaped demo data, safe to drop"

DECODE_FUNCTION = """
create function pg_temp.fixture_decode(cell text) returns text language sql immutable as $$
    select case when cell like 'b64:%' then convert_from(decode(substr(cell, 5), 'base64'), 'UTF8')
                else cell end
$$
"""


def seed_schema_for(schema: str) -> str:
    return validate_identifier(f"{schema}_seeds", "fixture seed schema")


def load(settings: Settings, conn: ConnInfo, schema: str, *, remember: bool = False) -> dict[str, int]:
    """(Re)create ``schema`` with the legacy DDL and the fixture rows; returns row counts per table.

    ``remember``: on the embedded server, later commands use ``schema`` as the legacy schema.
    """
    schema = validate_identifier(schema, "fixtures schema")
    seeds = seed_schema_for(schema)
    with db.connect(conn) as pg:
        refuse_foreign_schema(pg, schema)
    require_success(
        DbtProject(settings, conn).fixtures(seeds).invoke(["seed", "--select", "tag:fixtures", "--full-refresh"])
    )
    with db.connect(conn) as pg, pg.transaction():
        pg.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(schema)))
        pg.execute(sql.SQL("create schema {}").format(sql.Identifier(schema)))
        pg.execute(sql.SQL("comment on schema {} is {}").format(sql.Identifier(schema), sql.Literal(MARKER)))
        pg.execute(sql.SQL("revoke all on schema {} from public").format(sql.Identifier(seeds)))
        db.set_search_path(pg, schema)
        pg.execute(db.packaged_sql("legacy_schema.sql"))
        pg.execute(DECODE_FUNCTION)
        pg.execute(sql.SQL(db.packaged_sql("load_fixtures.sql")).format(seeds=sql.Identifier(seeds)))
        counts = {
            table: pg.execute(sql.SQL("select count(*) from {}").format(sql.Identifier(schema, table))).fetchone()[0]
            for table in db.LEGACY_TABLES
        }
    if remember:
        db.remember_legacy_schema(settings, schema)
    return counts


def refuse_foreign_schema(
    pg, schema: str, *, marker: str = MARKER, command: str = "orchestrator fixtures load"
) -> None:
    """Only a schema ``command`` made (its comment starts with ``marker``) or an empty one may be dropped and
    rebuilt; a refusal names the rows its legacy tables hold (spec §9). Shared with ``orchestrator generate``."""
    if not db.schema_exists(pg, schema):
        return
    comment, objects = pg.execute(
        "select obj_description(n.oid, 'pg_namespace'),"
        " (select count(*) from pg_class as c where c.relnamespace = n.oid)"
        " from pg_namespace as n where n.nspname = %s",
        [schema],
    ).fetchone()
    if not (comment or "").startswith(marker) and objects:
        rows = [f'"{table}" {count:,}' for table, count in _legacy_row_counts(pg, schema).items() if count]
        held = f" (its legacy tables hold rows it did not make: {', '.join(rows)})" if rows else ""
        raise OrchestratorError(
            f"schema {schema!r} already exists and was not made by `{command}`{held}: "
            f"choose another schema (--schema) instead of overwriting it"
        )


def _legacy_row_counts(pg, schema: str) -> dict[str, int]:
    counts = {}
    for table in db.LEGACY_TABLES:
        if db.table_exists(pg, schema, table):
            query = sql.SQL("select count(*) from {}").format(sql.Identifier(schema, table))
            counts[table] = pg.execute(query).fetchone()[0]
    return counts
