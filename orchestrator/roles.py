"""The migration role: least privilege for the whole flow (sql/migration_role.sql, docs/security.md).

Run by an administrator. The role's password comes only from the environment and never reaches the
server in clear text: libpq turns it into a SCRAM verifier on this side (PQencryptPasswordConn).
"""

from __future__ import annotations

import dataclasses

from psycopg import sql

from orchestrator import db
from orchestrator.config import ConnInfo, Settings, validate_identifier
from orchestrator.errors import OrchestratorError

ROLE_SQL = "migration_role.sql"
PASSWORD_ENV = "MIGRATION_ROLE_PASSWORD"


@dataclasses.dataclass
class GrantResult:
    role: str
    created: bool
    password_set: bool


def role_sql(settings: Settings, role: str, database: str) -> sql.Composed:
    """migration_role.sql with its placeholders bound (identifiers quoted, names as literals)."""
    schemas = {
        "legacy": settings.legacy_schema,
        "live": settings.live_schema,
        "dry_run": settings.dry_run_schema,
        "dry_run_users": settings.partial_schema,
        "dry_run_legacy": settings.snapshot_schema,
        "meta": settings.meta_schema,
    }
    names = {
        "role": sql.Identifier(role),
        "role_name": sql.Literal(role),
        "database": sql.Identifier(database),
        **{key: sql.Identifier(value) for key, value in schemas.items()},
        **{f"{key}_name": sql.Literal(value) for key, value in schemas.items()},
    }
    return sql.SQL(db.packaged_sql(ROLE_SQL)).format(**names)


def grant_migration_role(settings: Settings, conn: ConnInfo, role: str, password: str | None) -> GrantResult:
    """Create ``role`` (LOGIN) if absent, set its password if given, and grant what the flow needs."""
    role = validate_identifier(role, "role")
    with db.connect(conn) as pg:
        db.require_legacy_tables(pg, settings.legacy_schema)
        exists = pg.execute("select 1 from pg_roles where rolname = %s", [role]).fetchone() is not None
        if not exists and not password:
            raise OrchestratorError(
                f"role {role!r} does not exist: set {PASSWORD_ENV} to create it (LOGIN, with that password), "
                f"or create it yourself and run this again"
            )
        verifier = None
        if password:
            verifier = pg.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256").decode()
        with pg.transaction():
            if not exists:
                pg.execute(
                    sql.SQL("create role {} login password {}").format(sql.Identifier(role), sql.Literal(verifier))
                )
            elif verifier is not None:
                pg.execute(sql.SQL("alter role {} password {}").format(sql.Identifier(role), sql.Literal(verifier)))
            pg.execute(role_sql(settings, role, pg.info.dbname))
    return GrantResult(role, not exists, bool(password))
