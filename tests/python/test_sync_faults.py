"""The fault-injection matrix for a sync round (spec §10; docs/reliability.md, "Faults"): `orchestrator
sync --yes` killed at each point of a round, on a real server.

The stage: the fixtures dry-run and promoted (the old live state), then the legacy writes of
helpers.NEW_STATE_CHANGES made by the application, with no new dry run: a sync round brings the live
tables to the new state (what a promote of a dry run of that data gives). After every fault the live
tables hold exactly the old or the new state, the legacy tables are unchanged, the audit tells the truth,
no lock is left, and the next round completes the work; a rollback of that round brings the old state
back for the next case.
"""

from __future__ import annotations

import signal

import pytest
from helpers import (
    EVERYTHING,
    NEW_STATE_CHANGES,
    Stage,
    audit,
    dump,
    execute,
    lock_holders,
    no_prompt,
    run_cli,
    subprocess_env,
    terminate_backend,
    wait_for,
)
from psycopg import sql

from orchestrator import dry_run, fixtures, sync
from orchestrator import promote as promoting
from orchestrator import rollback as rolling_back
from orchestrator.config import FIXTURES_SCHEMA
from orchestrator.db import LEGACY_TABLES

# (fault point, live state after the fault, whether the killed round's `started` audit row is left behind)
SYNC_FAULTS = [
    # the change stream (orchestrator/stream.py): read, applied to the copy, committed before the slot advanced
    ("stream:read", "old", False),
    ("stream:applied", "old", False),
    ("stream:committed", "old", False),
    ("catch-up:after-splice", "old", False),  # the dry-run state caught up (recorded `started`), nothing live
    ("catch-up:counted", "old", False),  # ... and its summary built, the context profiles it counted still noted
    ("sync:started", "old", True),  # `started` recorded, transaction not begun
    ("promote:mid-write", "old", True),  # the round's users: changed rows deleted (backed up), not re-inserted
    ("sync:before-audit", "old", True),  # every row written, snapshot and reads recorded
    ("sync:audit-row", "old", True),  # audit row set to `committed`, just before COMMIT
    ("sync:after-commit", "new", False),  # committed, the process dies before saying so
]
MODES = ("sigkill", "terminate")
TERMINATED = "Error: the database refused an operation: terminating connection due to administrator command"
SYNC_ARGS = ["sync", "--yes"]


@pytest.fixture(scope="module")
def sync_stage(settings, database, state_home) -> Stage:
    for schema in (settings.meta_schema, settings.dry_run_schema):
        execute(database, sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(schema)))
    fixtures.load(settings, database, FIXTURES_SCHEMA)
    dry_run.dry_run(settings, database, max_conflict_rate=EVERYTHING)
    promoting.promote(settings, database, confirm=no_prompt)
    stage = Stage(settings, database, {}, {}, {}, {})
    old = stage.live()
    for statement in NEW_STATE_CHANGES:
        execute(database, statement)
    assert sync.sync_round(settings, database, confirm=no_prompt).run_id
    new = stage.live()
    rolling_back.rollback(settings, database, drop=False, confirm=no_prompt)
    assert stage.live() == old != new
    env = subprocess_env(database, state_home, MIGRATION_LEGACY_SCHEMA=FIXTURES_SCHEMA)
    return Stage(settings, database, env, old, new, dump(database, FIXTURES_SCHEMA, LEGACY_TABLES))


@pytest.mark.slow  # kills our own process: the second PostgreSQL version adds little here
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("point", "after", "left_started"), SYNC_FAULTS)
def test_a_sync_round_survives_a_fault(sync_stage, tmp_path, point, after, left_started, mode):
    stage = sync_stage
    assert stage.state() == "old"
    runs_before = audit(stage.conn, stage.settings.meta_schema)
    if mode == "sigkill":
        result = run_cli(SYNC_ARGS, stage.env, fault=f"{point}:sigkill", fault_dir=tmp_path)
        assert result.returncode == -signal.SIGKILL, result.stdout + result.stderr
    else:
        result = run_cli(
            SYNC_ARGS,
            stage.env,
            fault=f"{point}:pause",
            fault_dir=tmp_path,
            on_pause=lambda _process: terminate_backend(stage.conn, "orchestrator sync"),
        )
        if point.endswith("after-commit"):
            assert result.returncode == 0 and "sync run " in result.stdout, result.stdout + result.stderr
        else:
            assert result.returncode == 2, result.stdout + result.stderr
            assert result.stderr.startswith(TERMINATED) and "Traceback" not in result.stderr, result.stderr
    assert wait_for(lambda: lock_holders(stage.conn) == 0, 10, "the promote lock to be released") < 5
    assert stage.state() == after
    assert dump(stage.conn, FIXTURES_SCHEMA, LEGACY_TABLES) == stage.legacy
    new_runs = [run for run in audit(stage.conn, stage.settings.meta_schema) if run not in runs_before]
    if left_started:
        assert [(command, status) for _, command, status in new_runs] == [("sync", "started")]
        assert stage.backup_rows(new_runs[0][0]) == 0
    else:
        assert [(c, s) for _, c, s in new_runs] == ([("sync", "committed")] if after == "new" else [])
    # the next round completes the work (and reports a round left `started` as died)
    recovery = sync.sync_round(stage.settings, stage.conn, confirm=no_prompt)
    assert (recovery.run_id is not None) == (after == "old")
    assert stage.state() == "new"
    if left_started:
        assert (new_runs[0][0], "sync", "died") in audit(stage.conn, stage.settings.meta_schema)
    rolling_back.rollback(stage.settings, stage.conn, drop=False, confirm=no_prompt)  # the old state again
    assert stage.state() == "old"
