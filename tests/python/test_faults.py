"""The fault-injection matrix (docs/reliability.md, "Faults"): a promote or rollback killed at each
fault point, on a real server.

The tests run the real CLI in a subprocess (``python -m orchestrator promote --yes ...``) with
ORCHESTRATOR_FAULT naming a fault point (orchestrator/faults.py): ``sigkill`` kills a real process,
``pause`` stops it at the point so that the test can end its database session with
pg_terminate_backend from another connection. After every fault: the live tables hold exactly the old
or the new state (full dumps compared), the legacy tables are unchanged, the audit tells the truth (a
run left at ``started`` is reported ``died`` by the next run), no lock or half-made backup is left,
and the next promote or rollback works without any cleanup.

The tests share one stage (conftest.py, helpers.Stage) and run in file order: the faults that end
with no live tables come last, since the old state cannot be reached again after them.
"""

from __future__ import annotations

import re
import signal
from pathlib import Path

import pytest
from helpers import PROJECT_DIR, PROMOTE_ARGS, Stage, dump, lock_holders, query, run_cli, terminate_backend, wait_for

from orchestrator.config import FIXTURES_SCHEMA
from orchestrator.db import LEGACY_TABLES
from orchestrator.publish import FAULT_POINTS

# (fault point, live state after the fault, whether the killed run's `started` audit row is left behind)
PROMOTE_FAULTS = [
    ("promote:after-gates", "old", False),  # gates passed, nothing recorded yet
    ("promote:started", "old", True),  # `started` recorded, transaction not begun
    ("promote:mid-write", "old", True),  # first live table: changed rows deleted (backed up), not re-inserted
    ("promote:before-audit", "old", True),  # every live row written, snapshot refreshed
    ("promote:audit-row", "old", True),  # audit row set to `committed`, just before COMMIT
    ("promote:after-commit", "new", False),  # committed, the process dies before saying so
]
ROLLBACK_FAULTS = [
    ("rollback:started", "new", True),
    ("rollback:mid-restore", "new", True),  # first live table: promoted rows removed, old ones not restored
    ("rollback:before-commit", "new", True),  # everything restored, audit row `committed`, just before COMMIT
    ("rollback:after-commit", "old", False),
]
DROP_FAULTS = [("rollback:mid-drop", "new", True)]  # rollback --drop: one table dropped, not the other
CREATE_FAULTS = [("promote:mid-write", "none", True)]  # the first promote: tables created and half written
MODES = ("sigkill", "terminate")

# what the CLI says when its database session is terminated at a fault point, or after its commit
TERMINATED = "Error: the database refused an operation: terminating connection due to administrator command"
DONE = {"promote": f"Promoted (all users) into schema {FIXTURES_SCHEMA}: run ", "rollback": "Rolled back (run "}


def inject(stage: Stage, args: list[str], point: str, mode: str, fault_dir: Path):
    """Run the CLI with a fault at ``point``: SIGKILL, or its database session terminated there."""
    if mode == "sigkill":
        result = run_cli(args, stage.env, fault=f"{point}:sigkill", fault_dir=fault_dir)
        assert result.returncode == -signal.SIGKILL, result.stdout + result.stderr
        return result
    application = f"orchestrator {args[0]}"
    result = run_cli(
        args,
        stage.env,
        fault=f"{point}:pause",
        fault_dir=fault_dir,
        on_pause=lambda _process: terminate_backend(stage.conn, application),
    )
    if point.endswith("after-commit"):
        assert result.returncode == 0, result.stdout + result.stderr  # done before the session was cut
        assert DONE[args[0]] in result.stdout, result.stdout + result.stderr
    else:
        assert result.returncode == 2, result.stdout + result.stderr
        assert result.stderr.startswith(TERMINATED) and "Traceback" not in result.stderr, result.stderr
    return result


def check_after_fault(stage: Stage, runs_before, command: str, after: str, left_started: bool) -> str | None:
    """The state right after a fault; returns the id of the run left at `started`, if any."""
    waited = wait_for(lambda: lock_holders(stage.conn) == 0, 10, "the promote lock to be released")
    assert waited < 5
    assert stage.state() == after
    assert dump(stage.conn, FIXTURES_SCHEMA, LEGACY_TABLES) == stage.legacy
    new_runs = [run for run in stage.audit() if run not in runs_before]
    if left_started:
        assert [(c, s) for _, c, s in new_runs] == [(command, "started")]
        dead = new_runs[0][0]
        assert stage.backup_rows(dead) == 0  # nothing half-made is left for rollback to trip on
        return dead
    expected = [(command, "committed")] if after != stage_before_state(command) else []
    assert [(c, s) for _, c, s in new_runs] == expected
    return None


def stage_before_state(command: str) -> str:
    return "old" if command == "promote" else "new"


@pytest.mark.slow  # kills our own process: the second PostgreSQL version adds little here
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("point", "after", "left_started"), PROMOTE_FAULTS)
def test_promote_survives_a_fault(stage, tmp_path, point, after, left_started, mode):
    stage.go("old")
    runs_before = stage.audit()
    inject(stage, PROMOTE_ARGS, point, mode, tmp_path)
    dead = check_after_fault(stage, runs_before, "promote", after, left_started)
    if point == "promote:mid-write" and mode == "sigkill":
        # the next promote, through the CLI, says that the killed run died
        result = run_cli(PROMOTE_ARGS, stage.env)
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"promote run {dead[:12]}" in result.stdout and "died before finishing" in result.stdout
    else:
        recovery = stage.promote()
        assert [run["run_id"] for run in recovery.dead_runs] == ([dead] if dead else [])
    assert stage.state() == "new"
    if dead:
        assert (dead, "promote", "died") in stage.audit()


@pytest.mark.slow  # kills our own process: the second PostgreSQL version adds little here
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("point", "after", "left_started"), ROLLBACK_FAULTS)
def test_rollback_survives_a_fault(stage, tmp_path, point, after, left_started, mode):
    stage.go("old")
    stage.promote()  # the promote to undo: old -> new
    runs_before = stage.audit()
    inject(stage, ["rollback", "--yes"], point, mode, tmp_path)
    dead = check_after_fault(stage, runs_before, "rollback", after, left_started)
    if after == "new":
        recovery = stage.rollback()
        assert [run["run_id"] for run in recovery.dead_runs] == ([dead] if dead else [])
        assert recovery.legacy_unchanged
    assert stage.state() == "old"
    if dead:
        assert (dead, "rollback", "died") in stage.audit()


# -- faults that end with no live tables (after these, the old state is gone: they come last) ---------------


@pytest.mark.slow  # kills our own process: the second PostgreSQL version adds little here
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("point", "after", "left_started"), DROP_FAULTS)
def test_rollback_drop_survives_a_fault(stage, tmp_path, point, after, left_started, mode):
    stage.go("new")
    runs_before = stage.audit()
    inject(stage, ["rollback", "--yes", "--drop"], point, mode, tmp_path)
    dead = check_after_fault(stage, runs_before, "rollback", after, left_started)
    recovery = stage.rollback(drop=True)
    assert [run["run_id"] for run in recovery.dead_runs] == [dead]
    assert stage.state() == "none"
    assert query(
        stage.conn, """select count(*) from pg_trigger where tgrelid = 'legacy_fixtures."User"'::regclass"""
    ) == [(0,)]
    stage.promote()  # back to the new state, in tables the promote created


@pytest.mark.slow  # kills our own process: the second PostgreSQL version adds little here
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("point", "after", "left_started"), CREATE_FAULTS)
def test_the_promote_that_creates_the_tables_survives_a_fault(stage, tmp_path, point, after, left_started, mode):
    stage.go("none")
    runs_before = stage.audit()
    inject(stage, PROMOTE_ARGS, point, mode, tmp_path)
    dead = check_after_fault(stage, runs_before, "promote", after, left_started)
    # not even an empty table or a foreign key trigger is left on "User"
    assert query(
        stage.conn, """select count(*) from pg_trigger where tgrelid = 'legacy_fixtures."User"'::regclass"""
    ) == [(0,)]
    recovery = stage.promote()
    assert recovery.created_tables and [run["run_id"] for run in recovery.dead_runs] == [dead]
    assert stage.state() == "new"


def test_every_fault_point_is_exercised_and_documented():
    from test_sync_faults import SYNC_FAULTS

    matrix = (PROMOTE_FAULTS, ROLLBACK_FAULTS, DROP_FAULTS, CREATE_FAULTS, SYNC_FAULTS)
    used = {point for steps in FAULT_POINTS.values() for point in steps.values()}
    for path in (PROJECT_DIR / "orchestrator").glob("*.py"):
        used |= set(re.findall(r'fault_point\("([^"]+)"\)', path.read_text()))
    tested = {point for cases in matrix for point, *_ in cases}
    assert used == tested
    doc = (PROJECT_DIR / "docs" / "reliability.md").read_text()
    assert all(f"`{point}`" in doc for point in used)
    injected = 2 * sum(len(cases) for cases in matrix)
    assert f"**{injected} faults injected, {injected} survived**" in doc
