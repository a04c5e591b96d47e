"""Where things live: the project, the schemas, and the PostgreSQL server to use.

Every schema name comes from the user (environment or options), so each is validated here once and
only ever reaches SQL through ``psycopg.sql.Identifier``.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

from orchestrator.errors import OrchestratorError

IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_IDENTIFIER_BYTES = 63
FIXTURES_SCHEMA = "legacy_fixtures"


@dataclasses.dataclass(frozen=True)
class ConnInfo:
    """How to reach one PostgreSQL database (the embedded server's, or the one the PG* variables name)."""

    host: str
    port: int
    user: str
    password: str | None
    dbname: str

    def kwargs(self, dbname: str | None = None) -> dict:
        args = {"host": self.host, "port": self.port, "user": self.user, "dbname": dbname or self.dbname}
        if self.password:
            args["password"] = self.password
        return args

    def with_dbname(self, dbname: str) -> ConnInfo:
        return dataclasses.replace(self, dbname=dbname)

    def libpq_env(self) -> dict[str, str]:
        """The standard PG* variables, plus the password under the name dbt masks."""
        env = {"PGHOST": self.host, "PGPORT": str(self.port), "PGUSER": self.user, "PGDATABASE": self.dbname}
        if self.password:
            env["PGPASSWORD"] = self.password
            env["DBT_ENV_SECRET_PGPASSWORD"] = self.password
        return env


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

    @property
    def partial_schema(self) -> str:
        """Where a rebuild of a few users (a partial promote) builds its dry run."""
        return validate_identifier(f"{self.dry_run_schema}_users", "partial dry-run schema")

    @property
    def snapshot_schema(self) -> str:
        """Where every orchestrated run's copy of the legacy rows lives (orchestrator/snapshot.py): what the
        dry-run state read, as of one moment."""
        return validate_identifier(f"{self.dry_run_schema}_legacy", "legacy snapshot schema")

    @classmethod
    def load(
        cls,
        *,
        legacy_schema: str | None = None,
        project: Path | None = None,
        remembered_legacy_schema: str | None = None,
    ) -> Settings:
        """The settings from the environment. The legacy schema: ``legacy_schema``, else
        $MIGRATION_LEGACY_SCHEMA, else the one the embedded server remembers (``remembered_legacy_schema``,
        see db.load_settings), else ``public``."""
        project = project or project_dir()
        legacy = legacy_schema or os.environ.get("MIGRATION_LEGACY_SCHEMA") or remembered_legacy_schema or "public"
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


def external_conninfo() -> ConnInfo:
    env = os.environ
    port_text = env.get("PGPORT", "5432")
    try:
        port = int(port_text)
    except ValueError:
        raise OrchestratorError(f"PGPORT={port_text!r} is not a port number") from None
    user = env.get("PGUSER") or os.environ.get("USER") or "postgres"
    return ConnInfo(env["PGHOST"], port, user, env.get("PGPASSWORD"), env.get("PGDATABASE") or user)
