"""The dbt project on its own, as a dbt user runs it: `dbt build --empty --target dry_run` on the fixtures,
and a bare `dbt build` / `dbt test` after `eval "$(orchestrator db env)"`; on a database the orchestrator
never prepared (no metadata schema, so no reviewer decisions table) and on one it did.

`--empty` reads every source and ref through `(select * from ... where false limit 0) <alias>`: a
model that aliases a relation directly (`from {{ ref(...) }} as x`) fails with a syntax error. The
build checks every model, macro, seed, data test and unit test compiles and runs without reading data.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from orchestrator import fixtures, metadata
from orchestrator.config import FIXTURES_SCHEMA
from orchestrator.dbt import DbtProject

STAGING = {
    "stg_legacy__users": "User",
    "stg_legacy__context_profiles": "ContextProfile",
    "stg_legacy__profiles": "Profile",
    "stg_legacy__chat_messages": "ChatMessage",
}


@pytest.fixture(scope="module")
def empty_build(settings, database):
    fixtures.load(settings, database, FIXTURES_SCHEMA)
    with psycopg.connect(**database.kwargs()) as pg:  # as on a database the orchestrator never touched
        assert pg.execute("select to_regnamespace(%s)", [settings.meta_schema]).fetchone()[0] is None
    # the full dry run's kind without its vars (an orchestrated run reads the snapshot's copy through
    # them), as plain `dbt build` runs: the legacy tables themselves
    return dataclasses.replace(DbtProject(settings, database).full(), vars={}).invoke(["build", "--empty"])


def test_dbt_build_empty_runs_every_node(empty_build, settings, database):
    assert empty_build.success, empty_build.describe_failure()
    statuses = {node.unique_id: node.status for node in empty_build.nodes}
    assert {status for uid, status in statuses.items() if not uid.startswith("exposure.")} == {"success", "pass"}
    kinds = {uid.split(".")[0] for uid in statuses}
    assert {"model", "seed", "test", "unit_test"} <= kinds
    assert "model.migration.migration_summary" in statuses and "model.migration.profile" in statuses
    with psycopg.connect(**database.kwargs()) as pg:
        # built, from no rows: the legacy tables were not read
        assert pg.execute(f'select count(*) from "{settings.dry_run_schema}".profile').fetchone()[0] == 0
        assert pg.execute(f'select count(*) from "{FIXTURES_SCHEMA}"."User"').fetchone()[0] > 0


def test_each_staging_model_reads_its_one_legacy_table(empty_build):
    """Without the orchestrator's vars, legacy_source() is the plain source(): the lineage shows one table."""
    manifest = json.loads((empty_build.target_path / "manifest.json").read_text())
    for model, table in STAGING.items():
        node = manifest["nodes"][f"model.migration.{model}"]
        assert node["depends_on"]["nodes"] == [f"source.migration.legacy.{table}"], model
        assert "var(" not in node["raw_code"] and f"legacy_source('{table}')" in node["raw_code"], model


def test_a_bare_dbt_build_and_test_after_db_env_build_the_dry_run(settings, database, tmp_path):
    """`orchestrator db env` exports what profiles.yml and the sources read, the dry run as dbt's default
    target (DBT_TARGET) included: a bare `dbt build` (no --target) builds the dry-run schema from the
    legacy schema, and a bare `dbt test` tests it, as a dbt user expects."""
    fixtures.load(settings, database, FIXTURES_SCHEMA)
    exports = DbtProject(settings, database).shell_env()
    assert exports["DBT_TARGET"] == "dry_run" and exports["MIGRATION_LEGACY_SCHEMA"] == FIXTURES_SCHEMA
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PG", "MIGRATION_", "DBT_"))}
    env.update(exports, DBT_TARGET_PATH=str(tmp_path / "target"), DBT_LOG_PATH=str(tmp_path / "logs"))
    dbt = Path(sys.executable).with_name("dbt")
    for command in (["build"], ["test"]):
        done = subprocess.run(
            [str(dbt), *command, "--quiet"], cwd=settings.project_dir, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with psycopg.connect(**database.kwargs()) as pg:
        users = pg.execute(f'select count(*) from "{settings.dry_run_schema}".profile').fetchone()[0]
        assert users == pg.execute(f'select count(*) from "{FIXTURES_SCHEMA}"."User"').fetchone()[0] > 0


def test_the_decisions_are_a_source_in_the_lineage_read_or_empty(empty_build, settings, database):
    """stg_review__decisions reads the source review.conflict_decisions (the lineage shows it); without the
    metadata table it reads an empty relation of its columns, and with the table (made by the orchestrator,
    empty) the plain build reads it."""
    manifest = json.loads((empty_build.target_path / "manifest.json").read_text())
    node = manifest["nodes"]["model.migration.stg_review__decisions"]
    assert node["depends_on"]["nodes"] == ["source.migration.review.conflict_decisions"]
    assert "user_batched" in node["tags"]  # built by the batches, which read it through int_field_values
    compiled = (empty_build.target_path / "compiled" / "migration" / node["original_file_path"]).read_text()
    assert "no_decisions" in compiled and "conflict_decisions" not in compiled
    with psycopg.connect(**database.kwargs(), autocommit=True) as pg:
        metadata.ensure(pg, settings.meta_schema)
    rebuilt = dataclasses.replace(DbtProject(settings, database).full(), vars={}).invoke(["build", "--empty"])
    assert rebuilt.success, rebuilt.describe_failure()
    compiled = (rebuilt.target_path / "compiled" / "migration" / node["original_file_path"]).read_text()
    assert f'"{settings.meta_schema}"."conflict_decisions"' in compiled and "no_decisions" not in compiled
