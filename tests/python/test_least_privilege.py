"""Least privilege and secrets (docs/security.md), on a real server: the whole flow run as the
migration role that `db grant-role` sets up, what that role cannot do, and no password in any output,
log, dbt artifact, report or audit row.
"""

from __future__ import annotations

import dataclasses
import re
import secrets

import legacy_generator
import psycopg
import pytest
from helpers import PROMOTE_ARGS, dump, execute, query, run_cli, subprocess_env
from psycopg import sql

from orchestrator import roles
from orchestrator.db import LEGACY_TABLES

ROLE = "lp_migrator"
LP_LEGACY, LP_DRY_RUN, LP_META = "lp_legacy", "lp_dry_run", "lp_meta"
LATE_USER = "lp-late"


def add_late_user(conn) -> None:
    """What the app does after the full promote: a new user, with one profile."""
    legacy = {name: sql.Identifier(LP_LEGACY, name) for name in ("User", "ContextProfile", "Profile")}
    execute(conn, sql.SQL('insert into {} (id, "updatedAt") values (%s, now())').format(legacy["User"]), [LATE_USER])
    execute(
        conn,
        sql.SQL(
            'insert into {} (id, "userId", "contextType", "updatedAt") values (%s, %s, \'friendship\', now())'
        ).format(legacy["ContextProfile"]),
        [f"{LATE_USER}-cp", LATE_USER],
    )
    execute(
        conn,
        sql.SQL('insert into {} (id, "contextProfileId", data, "updatedAt") values (%s, %s, %s, now())').format(
            legacy["Profile"]
        ),
        [f"{LATE_USER}-p", f"{LATE_USER}-cp", '{"location": "Lisbon"}'],
    )


def test_least_privilege_role_runs_the_whole_flow_and_leaks_no_secret(settings, database, tmp_path):
    password = f"Pw-{secrets.token_hex(12)}-Distinctive"
    wrong = f"Wrong-{secrets.token_hex(12)}-Password"
    rows = legacy_generator.generate(7, 25)
    with psycopg.connect(**database.kwargs()) as pg:
        legacy_generator.load(pg, LP_LEGACY, rows)
    legacy_before = dump(database, LP_LEGACY, LEGACY_TABLES)
    lp_settings = dataclasses.replace(
        settings, legacy_schema=LP_LEGACY, live_schema=LP_LEGACY, dry_run_schema=LP_DRY_RUN, meta_schema=LP_META
    )

    # the administrator sets the role up; the password reaches the server only as a SCRAM verifier
    admin_env = {
        **subprocess_env(database, tmp_path / "admin-home"),
        "MIGRATION_LEGACY_SCHEMA": LP_LEGACY,
        "MIGRATION_DRY_RUN_SCHEMA": LP_DRY_RUN,
        "MIGRATION_META_SCHEMA": LP_META,
    }
    granted = run_cli(["db", "grant-role", ROLE], {**admin_env, roles.PASSWORD_ENV: password})
    assert granted.returncode == 0, granted.stdout + granted.stderr
    assert query(database, "select rolsuper, rolcreatedb, rolcreaterole from pg_roles where rolname = %s", [ROLE]) == [
        (False, False, False)
    ]
    again = roles.grant_migration_role(lp_settings, database, ROLE, None)  # idempotent
    assert not again.created

    role_conn = dataclasses.replace(database, user=ROLE, password=password)
    home = tmp_path / "home"
    env = {
        **subprocess_env(role_conn, home),
        "MIGRATION_LEGACY_SCHEMA": LP_LEGACY,
        "MIGRATION_DRY_RUN_SCHEMA": LP_DRY_RUN,
        "MIGRATION_META_SCHEMA": LP_META,
    }
    reports = tmp_path / "reports"
    assert f"Role {ROLE} created: reads schema {LP_LEGACY}, owns {LP_DRY_RUN}" in granted.stdout
    outputs = [granted.stdout, granted.stderr]

    def run_as_the_role(steps) -> None:
        for args, says in steps:  # (command, what it says on stdout)
            result = run_cli(args, env)
            outputs.extend([result.stdout, result.stderr])
            assert result.returncode == 0, (args, result.stdout, result.stderr)
            assert re.search(says, result.stdout, re.MULTILINE), (args, says, result.stdout)

    run_as_the_role(
        [
            (["dry-run"], rf"^Dry run \w+ built into schema {LP_DRY_RUN}: \d+ nodes built, \d+ tests passed"),
            (PROMOTE_ARGS, rf"^Promoted \(all users\) into schema {LP_LEGACY}: run \S+ \(created the live tables\)\.$"),
            (["verify"], rf"Verification of the live tables in schema {LP_LEGACY}"),
            (
                ["report", "--format", "csv", "--out", str(reports)],
                rf"^Wrote {re.escape(str(reports))}/migration_summary",
            ),
        ]
    )
    assert dump(database, LP_LEGACY, LEGACY_TABLES) == legacy_before
    # the app adds a user after the full promote, so that the partial promote of that user writes a row and
    # the rollback has it to undo (rollback steps over a promote that changed nothing)
    add_late_user(database)
    legacy_before = dump(database, LP_LEGACY, LEGACY_TABLES)
    run_as_the_role(
        [
            # rebuilds into the partial dry-run schema
            ([*PROMOTE_ARGS, "--user", LATE_USER], rf"^Promoted \(1 user\) into schema {LP_LEGACY}: run \S+\.$"),
            (
                ["rollback", "--yes"],
                r"^Rolled back \(run \S+\): restored the live tables to their state before promote",
            ),
            (["cleanup", "--keep", "1"], r"^Removed the backups of 0 older promotes; kept 1 rollback level\(s\)\.$"),
            (["rollback", "--yes", "--drop"], r"^Rolled back \(run \S+\): dropped the live tables\.$"),
        ]
    )
    assert "Legacy tables verified unchanged" in outputs[-2]

    # with a wrong password: a clear one-line error, and the wrong password is not echoed either
    for args in (["dry-run"], ["--debug", "promote", "--yes"]):
        result = run_cli(args, {**env, "PGPASSWORD": wrong})
        outputs += [result.stdout, result.stderr]
        assert result.returncode == 2 and "password authentication failed" in result.stderr

    # the role cannot change a legacy table, create a schema, or read another role's nothing
    with psycopg.connect(**role_conn.kwargs(), autocommit=True) as pg:
        for statement in (
            f'update {LP_LEGACY}."Profile" set data = null',
            f'delete from {LP_LEGACY}."User"',
            f"""insert into {LP_LEGACY}."ChatMessage" (id, "contextProfileId", role, content)
                  values ('m', 'c', 'r', 'x')""",
            f'truncate {LP_LEGACY}."ContextProfile"',
            f'alter table {LP_LEGACY}."User" add column evil int',
            f'drop table {LP_LEGACY}."Profile"',
            f'create index on {LP_LEGACY}."User" (email)',
            "create schema evil",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                pg.execute(statement)
    # dry-run and metadata schemas: nobody else may read them
    execute(database, "drop role if exists lp_other")
    execute(database, "create role lp_other login password 'other-pw'")
    execute(database, sql.SQL("grant connect on database {} to lp_other").format(sql.Identifier(database.dbname)))
    other = dataclasses.replace(database, user="lp_other", password="other-pw")
    with psycopg.connect(**other.kwargs(), autocommit=True) as pg:
        for table in (f"{LP_META}.runs", f"{LP_DRY_RUN}.profile", f"{LP_DRY_RUN}.migration_unmapped_fields"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                pg.execute(f"select * from {table}")
    assert dump(database, LP_LEGACY, LEGACY_TABLES) == legacy_before

    # secrets: neither password in any output, log, dbt artifact, report or audit row
    # (dbt runs with --log-level none, so it writes no dbt.log today; whatever it writes is searched)
    files = [p for p in [*home.rglob("*"), *reports.rglob("*"), *(tmp_path / "admin-home").rglob("*")] if p.is_file()]
    assert {p.name for p in files} >= {"manifest.json", "run_results.json", "migration_unmapped_fields.csv"}
    stored = query(
        database,
        sql.SQL(
            "select (select string_agg(r::text, ' ') from {} as r) || (select string_agg(d::text, ' ') from {} as d)"
        ).format(sql.Identifier(LP_META, "runs"), sql.Identifier(LP_META, "dry_runs")),
    )[0][0]
    for secret in (password, wrong):
        assert not [text for text in outputs if secret in text]
        assert not [p for p in files if secret.encode() in p.read_bytes()]
        assert secret not in stored
