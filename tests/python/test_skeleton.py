"""The walking skeleton: the embedded server, configuration errors, fixtures, a dry run."""

from __future__ import annotations

import os
import socket

import psycopg
import pytest
from helpers import invoke

from orchestrator import dry_run, fixtures
from orchestrator.config import FIXTURES_SCHEMA
from orchestrator.embedded import ProjectServer


@pytest.fixture()
def project_home(tmp_path, monkeypatch):
    """A private orchestrator home, so the project's own embedded server is started from nothing."""
    home = tmp_path / "home"
    monkeypatch.setenv("ORCHESTRATOR_HOME", str(home))
    for key in ("PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE", "ORCHESTRATOR_PG_PORT"):
        monkeypatch.delenv(key, raising=False)
    yield home
    ProjectServer(home).destroy()


@pytest.mark.skipif(bool(os.environ.get("PGHOST")), reason="the embedded server is used only when PGHOST is unset")
def test_db_start_status_env_stop(project_home):
    started = invoke(["db", "start"])
    assert started.exit_code == 0, started.output
    assert "running on 127.0.0.1:" in started.output
    status = invoke(["db", "status"])
    assert "running" in status.output
    env = invoke(["db", "env"])
    exports = dict(line.removeprefix("export ").split("=", 1) for line in env.output.strip().splitlines())
    assert exports["PGHOST"] == "127.0.0.1"
    with psycopg.connect(
        host=exports["PGHOST"],
        port=int(exports["PGPORT"]),
        user=exports["PGUSER"],
        password=exports["PGPASSWORD"],
        dbname=exports["PGDATABASE"],
    ) as pg:
        assert pg.execute("select current_user").fetchone()[0] == "postgres"
    # a restart keeps the data and the password
    stopped = invoke(["db", "stop"])
    assert stopped.exit_code == 0 and stopped.output == "Embedded PostgreSQL stopped.\n"
    assert "stopped" in invoke(["db", "status"]).output
    again = invoke(["db", "stop"])
    assert again.exit_code == 0 and again.output == "Embedded PostgreSQL was not running.\n"
    restarted = invoke(["db", "start"])
    assert restarted.exit_code == 0 and restarted.output.startswith("Embedded PostgreSQL running on 127.0.0.1:")
    env_again = invoke(["db", "env"])
    assert "PGPASSWORD" in env_again.output and exports["PGPASSWORD"] in env_again.output


@pytest.mark.skipif(bool(os.environ.get("PGHOST")), reason="the embedded server is used only when PGHOST is unset")
def test_embedded_server_does_not_run_as_root(project_home):
    started = invoke(["db", "start"])
    assert started.exit_code == 0 and started.output.startswith("Embedded PostgreSQL running on 127.0.0.1:")
    cluster = ProjectServer(project_home).cluster()
    pid = int((cluster.data_dir / "postmaster.pid").read_text().splitlines()[0])
    uid = os.stat(f"/proc/{pid}").st_uid
    assert uid != 0
    assert uid == os.geteuid() or os.geteuid() == 0


def test_unreachable_server_is_one_line_exit_2(monkeypatch):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connection refused
        result = invoke(["demo"], env={"PGHOST": "127.0.0.1", "PGPORT": str(port), "PGPASSWORD": "s3cret-value"})
    assert result.exit_code == 2
    assert result.output.startswith("Error: cannot connect to PostgreSQL at 127.0.0.1:")
    assert "Traceback" not in result.output
    assert "s3cret-value" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_debug_shows_the_traceback():
    result = invoke(["--debug", "demo"], env={"PGHOST": "127.0.0.1", "PGPORT": "1"})
    assert result.exit_code == 2
    assert "Traceback" in result.output
    # the traceback comes first; the one-line error the user sees without --debug still ends the output
    assert result.output.strip().splitlines()[-1].startswith("Error: cannot connect to PostgreSQL at 127.0.0.1:1 ")


@pytest.mark.skipif(bool(os.environ.get("PGHOST")), reason="the embedded server is used only when PGHOST is unset")
def test_port_in_use_is_one_line_exit_2(project_home):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = invoke(["db", "start"], env={"ORCHESTRATOR_PG_PORT": str(port)})
    assert result.exit_code == 2
    assert f"port {port}" in result.output and "already in use" in result.output
    assert "Traceback" not in result.output


@pytest.mark.skipif(
    os.geteuid() != 0 or bool(os.environ.get("PGHOST")), reason="making a directory owned by another account needs root"
)
def test_data_dir_owned_by_someone_else(project_home):
    cluster_dir = ProjectServer(project_home).cluster().cluster_dir
    cluster_dir.mkdir(parents=True)
    (cluster_dir / "data").mkdir()
    os.chown(cluster_dir, 0, 0)  # root, not the server account
    try:
        result = invoke(["db", "start"])
    finally:
        cluster_dir.rmdir() if not any(cluster_dir.iterdir()) else None
    assert result.exit_code == 2
    assert "is owned by 'root'" in result.output
    assert "Traceback" not in result.output


def test_bad_schema_name_is_rejected(cli_env):
    result = invoke(["demo"], env={**cli_env, "MIGRATION_DRY_RUN_SCHEMA": 'x"; drop table "User"; --'})
    assert result.exit_code == 2
    assert "is not allowed" in result.output


def create_empty_schema(database, name: str) -> None:
    with psycopg.connect(**database.kwargs(), autocommit=True) as pg:
        pg.execute(f'create schema if not exists "{name}"')


def test_missing_legacy_tables(settings, database):
    create_empty_schema(database, "empty_legacy")
    empty = settings.__class__(**{**settings.__dict__, "legacy_schema": "empty_legacy"})
    with pytest.raises(Exception, match="has no table 'User', 'ContextProfile', 'Profile', 'ChatMessage'"):
        dry_run.dry_run(empty, database)
    absent = settings.__class__(**{**settings.__dict__, "legacy_schema": "no_such_schema"})
    with pytest.raises(Exception, match="the legacy schema 'no_such_schema' does not exist in database"):
        dry_run.dry_run(absent, database)


def test_missing_legacy_tables_via_cli(cli_env, database):
    result = invoke(["dry-run"], env={**cli_env, "MIGRATION_LEGACY_SCHEMA": "nothing_here"})
    assert result.exit_code == 2
    assert result.output.startswith("Error: the legacy schema 'nothing_here' does not exist in database ")
    assert "Traceback" not in result.output
    create_empty_schema(database, "empty_legacy")
    result = invoke(["dry-run"], env={**cli_env, "MIGRATION_LEGACY_SCHEMA": "empty_legacy"})
    assert result.exit_code == 2
    assert "has no table" in result.output and "Traceback" not in result.output


def test_fixtures_load_into_the_legacy_ddl(settings, database):
    counts = fixtures.load(settings, database, FIXTURES_SCHEMA)
    assert counts == {"User": 13, "ContextProfile": 28, "Profile": 29, "ChatMessage": 7}
    with psycopg.connect(**database.kwargs()) as pg:
        column_type = pg.execute(
            "select format_type(atttypid, atttypmod) from pg_attribute"
            " where attrelid = 'legacy_fixtures.\"Profile\"'::regclass and attname = 'data'"
        ).fetchone()[0]
        assert column_type == "jsonb"
        # SQL NULL and JSON null stay distinct; whitespace ids survive the CSV round trip
        rows = dict(
            pg.execute(
                "select id, case when data is null then 'sql null' else jsonb_typeof(data) end"
                " from legacy_fixtures.\"Profile\" where id in ('p08f', 'p08p', 'p08r', 'p08c')"
            ).fetchall()
        )
        assert rows == {"p08f": "sql null", "p08p": "null", "p08r": "array", "p08c": "string"}
        assert (
            pg.execute('select "userId" from legacy_fixtures."ContextProfile" where id = \'cpX3\'').fetchone()[0]
            == "u02 "
        )


def test_fixtures_refuse_a_schema_they_did_not_make(settings, database):
    with psycopg.connect(**database.kwargs(), autocommit=True) as pg:
        pg.execute("create schema app_data; create table app_data.keep_me (id int)")
    with pytest.raises(Exception, match="was not made by"):
        fixtures.load(settings, database, "app_data")
    with psycopg.connect(**database.kwargs()) as pg:
        assert pg.execute("select to_regclass('app_data.keep_me')").fetchone()[0] is not None
