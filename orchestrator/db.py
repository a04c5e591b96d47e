"""Connections. Identifiers only ever reach SQL through ``psycopg.sql.Identifier``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from importlib import resources

import psycopg
from psycopg import sql

from orchestrator.embedded import ConnInfo
from orchestrator.errors import OrchestratorError

LEGACY_TABLES = ("User", "ContextProfile", "Profile", "ChatMessage")


@contextlib.contextmanager
def connect(
    conn: ConnInfo, *, autocommit: bool = False, application_name: str = "orchestrator"
) -> Iterator[psycopg.Connection]:
    with psycopg.connect(**conn.kwargs(), autocommit=autocommit, application_name=application_name) as pg:
        yield pg


def packaged_sql(name: str) -> str:
    return resources.files("orchestrator").joinpath("sql", name).read_text()


def schema_exists(pg: psycopg.Connection, schema: str) -> bool:
    return pg.execute("select 1 from pg_namespace where nspname = %s", [schema]).fetchone() is not None


def table_exists(pg: psycopg.Connection, schema: str, table: str) -> bool:
    row = pg.execute("select to_regclass(format('%%I.%%I', %s::text, %s::text))", [schema, table]).fetchone()
    return row[0] is not None


def set_search_path(pg: psycopg.Connection, schema: str) -> None:
    pg.execute(sql.SQL("set local search_path to {}").format(sql.Identifier(schema)))


def require_legacy_tables(pg: psycopg.Connection, schema: str) -> None:
    missing = [table for table in LEGACY_TABLES if not table_exists(pg, schema, table)]
    if missing:
        raise OrchestratorError(
            f"the legacy schema {schema!r} has no table {', '.join(repr(t) for t in missing)}: set "
            f"MIGRATION_LEGACY_SCHEMA to the schema holding the app's tables, or load the demo data with "
            f"`orchestrator fixtures load`"
        )
