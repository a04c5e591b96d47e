"""Stale input (docs/reliability.md, "Stale input"), on a real server: legacy rows inserted, updated or
deleted after the dry run, and a dry run built by other models (a model, a contract, a macro). Each is
refused and changes nothing; putting the row back exactly makes the same dry run promotable again.
A dry run that has not finished is refused too.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from helpers import PROJECT_DIR, PROMOTE_ARGS, dump, execute, invoke, query
from psycopg import sql

from orchestrator.config import FIXTURES_SCHEMA, ConnInfo
from orchestrator.db import LEGACY_TABLES
from orchestrator.errors import CheckFailed


def saved_row(conn: ConnInfo, table: str, key: str) -> str:
    """The row as JSON text (json, not jsonb: numbers keep their digits), to put back exactly."""
    return query(
        conn,
        sql.SQL("select row_to_json(t)::text from {} as t where id = %s").format(
            sql.Identifier(FIXTURES_SCHEMA, table)
        ),
        [key],
    )[0][0]


def put_back_row(conn: ConnInfo, table: str, row_json: str) -> None:
    relation = sql.Identifier(FIXTURES_SCHEMA, table)
    execute(
        conn,
        sql.SQL("insert into {} select * from json_populate_record(null::{}, %s::json)").format(relation, relation),
        [row_json],
    )


STALE_CHANGES = [
    # (what, change, undo (None: delete, put the saved row back), table, rows added)
    (
        "a Profile inserted",
        """insert into legacy_fixtures."Profile" (id, "contextProfileId", data, "updatedAt")
           values ('late', 'cp02r', '{"location": "Rome"}', now())""",
        """delete from legacy_fixtures."Profile" where id = 'late'""",
        "Profile",
        1,
    ),
    (
        "a Profile blob updated",
        """update legacy_fixtures."Profile" set data = data || '{"ageRange": "99"}' where id = 'p03r'""",
        """update legacy_fixtures."Profile" set data = data - 'ageRange' where id = 'p03r'""",
        "Profile",
        0,
    ),
    (
        "a ContextProfile deleted",
        """delete from legacy_fixtures."ContextProfile" where id = 'cp05s'""",
        None,
        "ContextProfile",
        -1,
    ),
    ("a Profile deleted", """delete from legacy_fixtures."Profile" where id = 'p11s'""", None, "Profile", -1),
    (
        "a User inserted",
        """insert into legacy_fixtures."User" (id, "updatedAt") values ('late', now())""",
        """delete from legacy_fixtures."User" where id = 'late'""",
        "User",
        1,
    ),
]


@pytest.mark.parametrize(("what", "change", "undo", "table", "added"), STALE_CHANGES, ids=[c[0] for c in STALE_CHANGES])
def test_legacy_changed_after_the_dry_run_is_refused(stage, what, change, undo, table, added):
    stage.go("old")
    rows = len(stage.legacy[table])
    saved = None
    if undo is None:
        key = re.search(r"where id = '(\w+)'", change).group(1)
        saved = saved_row(stage.conn, table, key)
    execute(stage.conn, change)
    refusal = re.escape(f"{table} ({rows} -> {rows + added} rows, contents changed)")
    try:
        with pytest.raises(CheckFailed, match=r"gate 'legacy data unchanged since the dry run' failed .*" + refusal):
            stage.promote()
    finally:
        if saved:
            put_back_row(stage.conn, table, saved)
        else:
            execute(stage.conn, undo)
    assert stage.state() == "old"
    assert stage.audit()[-1][1:] == ("promote", "refused")
    assert (
        dump(stage.conn, FIXTURES_SCHEMA, LEGACY_TABLES) == stage.legacy
    )  # put back exactly: the dry run is valid again


def project_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "project"
    shutil.copytree(
        PROJECT_DIR,
        copy,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", ".orchestrator", "target", "logs", "node_modules", "reports", "__pycache__", ".*cache"
        ),
    )
    return copy


def change_contract(copy: Path) -> None:
    """Change a column type of the profile model's enforced contract (YAML only, not the model file)."""
    path = copy / "models" / "marts" / "_marts__models.yml"
    text = path.read_text()
    column = re.search(r"\n( +)- name: location\n +data_type: text\n", text)
    assert column, "the profile contract's location column"
    path.write_text(text.replace(column.group(0), column.group(0).replace("data_type: text", "data_type: varchar")))


MODEL_CHANGES = {
    "a model file": lambda copy: (copy / "models" / "marts" / "profile.sql").write_text(
        (copy / "models" / "marts" / "profile.sql").read_text() + "\n-- changed\n"
    ),
    "a contract": change_contract,
    "a macro": lambda copy: (copy / "macros" / "normalise.sql").write_text(
        (copy / "macros" / "normalise.sql").read_text() + "\n{# changed #}\n"
    ),
}


def test_a_dry_run_built_by_other_models_is_refused(stage, tmp_path, cli_env):
    stage.go("old")
    copy = project_copy(tmp_path)
    env = {**cli_env, "MIGRATION_LEGACY_SCHEMA": FIXTURES_SCHEMA, "ORCHESTRATOR_PROJECT_DIR": str(copy)}
    env["ORCHESTRATOR_HOME"] = str(tmp_path / "home")
    unchanged = invoke(PROMOTE_ARGS, env)
    assert unchanged.exit_code == 0, unchanged.output  # the copy itself is the same version of the models
    assert f"Promoted (all users) into schema {FIXTURES_SCHEMA}: run " in unchanged.output
    for what, change in MODEL_CHANGES.items():
        change(copy)
        result = invoke(PROMOTE_ARGS, env)
        assert result.exit_code == 1, (what, result.output)
        assert "gate 'dry run built by the current models' failed (models version of the dry run" in result.output
        assert "run `orchestrator dry-run` again with the current models" in result.output
    assert stage.state() == "new"  # only the unchanged copy promoted


def test_an_unfinished_dry_run_is_not_promotable(stage):
    """A dry run still building, or killed while building, has a `started` record and no fingerprint after
    the build: promote refuses clearly (it used to fail with a KeyError describing the fingerprints)."""
    meta = sql.Identifier(stage.settings.meta_schema, "dry_runs")
    execute(
        stage.conn,
        sql.SQL(
            "insert into {} (dry_run_id, status, scope, legacy_schema, dry_run_schema, fingerprint_before)"
            " select 'unfinished', 'started', 'all', legacy_schema, dry_run_schema, fingerprint_after from {}"
            " where status = 'built' and scope = 'all' order by started_at desc limit 1"
        ).format(meta, meta),
    )
    try:
        with pytest.raises(CheckFailed) as refused:
            stage.promote()
    finally:
        execute(stage.conn, sql.SQL("delete from {} where dry_run_id = 'unfinished'").format(meta))
    assert re.search(
        r"dry run unfinished started at .* has not finished: it is still building, or it died", str(refused.value)
    )
    assert "the dry run did not finish, so there is no fingerprint" in str(refused.value)
