"""The server and connections: which PostgreSQL to use, connecting, and catalog helpers.

Identifiers only ever reach SQL through ``psycopg.sql.Identifier``.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from importlib import resources

import psycopg
from psycopg import sql

from orchestrator.config import (
    ConnInfo,
    Settings,
    external_conninfo,
    external_server_configured,
    orchestrator_home,
    project_dir,
)
from orchestrator.embedded import ProjectServer
from orchestrator.errors import OrchestratorError

LEGACY_TABLES = ("User", "ContextProfile", "Profile", "ChatMessage")


# -- which server -------------------------------------------------------------------------------------


def load_settings(*, legacy_schema: str | None = None) -> Settings:
    """The settings from the environment; on the embedded server, the legacy schema it remembers (the
    last one `fixtures load` or `generate` filled) is the default."""
    remembered = None
    if legacy_schema is None and not external_server_configured():
        remembered = ProjectServer(orchestrator_home(project_dir())).remembered_legacy_schema()
    return Settings.load(legacy_schema=legacy_schema, remembered_legacy_schema=remembered)


def server(settings: Settings) -> ConnInfo:
    """The server to use: the one the PG* variables name, else the project's embedded server (started)."""
    if external_server_configured():
        conn = external_conninfo()
        check_reachable(conn)
        return conn
    return ProjectServer(settings.home).ensure_running()


def embedded_server(action: str) -> ProjectServer:
    """The project's embedded server, for `orchestrator db <action>`: refused when PGHOST names another."""
    if external_server_configured():
        raise OrchestratorError(
            f"PGHOST is set, so the orchestrator uses that server and there is no embedded server to {action}: "
            f"unset PGHOST to use the embedded one"
        )
    return ProjectServer(orchestrator_home(project_dir()))


def remember_legacy_schema(settings: Settings, schema: str) -> None:
    """On the embedded server, later commands use ``schema`` as the legacy schema."""
    if not external_server_configured():
        ProjectServer(settings.home).remember_legacy_schema(schema)


def check_reachable(conn: ConnInfo) -> None:
    try:
        with psycopg.connect(**conn.kwargs(), connect_timeout=5):
            pass
    except psycopg.OperationalError as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        if conn.password:
            reason = reason.replace(conn.password, "***")
        raise OrchestratorError(
            f"cannot connect to PostgreSQL at {conn.host}:{conn.port} as {conn.user} (database {conn.dbname}): "
            f"{reason} -- check PGHOST/PGPORT/PGUSER/PGPASSWORD/PGDATABASE, or unset PGHOST to use the embedded server"
        ) from None


# -- connections and the catalog ----------------------------------------------------------------------


@contextlib.contextmanager
def connect(
    conn: ConnInfo, *, autocommit: bool = False, application_name: str = "orchestrator"
) -> Iterator[psycopg.Connection]:
    with psycopg.connect(**conn.kwargs(), autocommit=autocommit, application_name=application_name) as pg:
        yield pg


def packaged_sql(name: str) -> str:
    return resources.files("orchestrator").joinpath("sql", name).read_text()


def packaged_sql_sections(name: str) -> dict[str, str]:
    """A packaged SQL file split at its ``-- name: ...`` lines, full-line comments removed."""
    parts = re.split(r"^-- name: (\w+)\s*$", packaged_sql(name), flags=re.MULTILINE)
    found = {}
    for section, body in zip(parts[1::2], parts[2::2], strict=True):
        lines = [line for line in body.splitlines() if not line.lstrip().startswith("--")]
        found[section] = "\n".join(lines).strip()
    return found


def schema_exists(pg: psycopg.Connection, schema: str) -> bool:
    return pg.execute("select 1 from pg_namespace where nspname = %s", [schema]).fetchone() is not None


def table_exists(pg: psycopg.Connection, schema: str, table: str) -> bool:
    row = pg.execute("select to_regclass(format('%%I.%%I', %s::text, %s::text))", [schema, table]).fetchone()
    return row[0] is not None


def set_search_path(pg: psycopg.Connection, schema: str) -> None:
    pg.execute(sql.SQL("set local search_path to {}").format(sql.Identifier(schema)))


def require_legacy_tables(pg: psycopg.Connection, schema: str) -> None:
    if not schema_exists(pg, schema):
        raise OrchestratorError(
            f"the legacy schema {schema!r} does not exist in database {pg.info.dbname}: set MIGRATION_LEGACY_SCHEMA "
            f"to the schema holding the app's tables, or load the demo data with `orchestrator fixtures load`"
        )
    missing = [table for table in LEGACY_TABLES if not table_exists(pg, schema, table)]
    if missing:
        raise OrchestratorError(
            f"the legacy schema {schema!r} has no table {', '.join(repr(t) for t in missing)}: set "
            f"MIGRATION_LEGACY_SCHEMA to the schema holding the app's tables, or load the demo data with "
            f"`orchestrator fixtures load`"
        )
