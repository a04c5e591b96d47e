"""Where things live: the project, the schemas, and the PostgreSQL server to use.

Every schema name comes from the user (environment or options), so each is validated here once and
only ever reaches SQL through ``psycopg.sql.Identifier``.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

from orchestrator.embedded import ConnInfo, ProjectServer
from orchestrator.errors import OrchestratorError

IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_IDENTIFIER_BYTES = 63
FIXTURES_SCHEMA = "legacy_fixtures"


def validate_identifier(name: str, what: str) -> str:
    if name is None or name == "":
        raise OrchestratorError(f"the {what} name is empty: give a name such as 'public'")
    if len(name.encode()) > MAX_IDENTIFIER_BYTES:
        raise OrchestratorError(
            f"the {what} name {name!r} is longer than PostgreSQL's {MAX_IDENTIFIER_BYTES} bytes: choose a shorter one"
        )
    if not IDENTIFIER.fullmatch(name):
        raise OrchestratorError(
            f"the {what} name {name!r} is not allowed: use ASCII letters, digits and underscores, "
            f"not starting with a digit"
        )
    return name


def project_dir() -> Path:
    """The dbt project: $ORCHESTRATOR_PROJECT_DIR, else the checkout this package is installed from, else cwd."""
    explicit = os.environ.get("ORCHESTRATOR_PROJECT_DIR")
    candidates = [Path(explicit)] if explicit else [Path(__file__).resolve().parent.parent, Path.cwd()]
    for candidate in candidates:
        if (candidate / "dbt_project.yml").exists():
            return candidate.resolve()
    raise OrchestratorError(
        "cannot find the dbt project (dbt_project.yml): run from the project folder or set ORCHESTRATOR_PROJECT_DIR"
    )


def orchestrator_home(project: Path) -> Path:
    return Path(os.environ.get("ORCHESTRATOR_HOME") or project / ".orchestrator")


def external_server_configured() -> bool:
    return bool(os.environ.get("PGHOST"))


@dataclasses.dataclass(frozen=True)
class Settings:
    project_dir: Path
    legacy_schema: str
    live_schema: str
    dry_run_schema: str
    meta_schema: str

    @property
    def home(self) -> Path:
        return orchestrator_home(self.project_dir)

    @classmethod
    def load(cls, *, legacy_schema: str | None = None, project: Path | None = None) -> Settings:
        project = project or project_dir()
        remembered = None
        if not external_server_configured():
            remembered = ProjectServer(orchestrator_home(project)).remembered_legacy_schema()
        legacy = legacy_schema or os.environ.get("MIGRATION_LEGACY_SCHEMA") or remembered or "public"
        live = os.environ.get("MIGRATION_LIVE_SCHEMA") or legacy
        settings = cls(
            project_dir=project,
            legacy_schema=validate_identifier(legacy, "legacy schema"),
            live_schema=validate_identifier(live, "live schema"),
            dry_run_schema=validate_identifier(
                os.environ.get("MIGRATION_DRY_RUN_SCHEMA", "migration_dry_run"), "dry-run schema"
            ),
            meta_schema=validate_identifier(
                os.environ.get("MIGRATION_META_SCHEMA", "migration_meta"), "metadata schema"
            ),
        )
        reserved = {settings.dry_run_schema, settings.meta_schema}
        if len(reserved) < 2 or {settings.legacy_schema, settings.live_schema} & reserved:
            raise OrchestratorError(
                "the dry-run and metadata schemas must differ from each other and from the legacy and live schemas"
            )
        return settings

    def dbt_env(self) -> dict[str, str]:
        return {
            "MIGRATION_LEGACY_SCHEMA": self.legacy_schema,
            "MIGRATION_DRY_RUN_SCHEMA": self.dry_run_schema,
        }


def external_conninfo() -> ConnInfo:
    env = os.environ
    port_text = env.get("PGPORT", "5432")
    try:
        port = int(port_text)
    except ValueError:
        raise OrchestratorError(f"PGPORT={port_text!r} is not a port number") from None
    user = env.get("PGUSER") or os.environ.get("USER") or "postgres"
    return ConnInfo(env["PGHOST"], port, user, env.get("PGPASSWORD"), env.get("PGDATABASE") or user)


def connect_info(settings: Settings) -> ConnInfo:
    """The server to use: the one the PG* variables name, else the project's embedded server (started)."""
    if external_server_configured():
        conn = external_conninfo()
        check_reachable(conn)
        return conn
    return ProjectServer(settings.home).ensure_running()


def check_reachable(conn: ConnInfo) -> None:
    import psycopg

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
