"""Hardening (docs/reliability.md, docs/security.md): faults, concurrency, stale input, hostile input,
least privilege and secrets, on a real server.

The fault tests run the real CLI in a subprocess (``python -m orchestrator promote --yes ...``) with
ORCHESTRATOR_FAULT naming a fault point (orchestrator/faults.py): ``sigkill`` kills a real process,
``pause`` stops it at the point so that the test can end its database session with
pg_terminate_backend from another connection. After every fault: the live tables hold exactly the old
or the new state (full dumps compared), the legacy tables are unchanged, the audit tells the truth (a
run left at ``started`` is reported ``died`` by the next run), no lock or half-made backup is left,
and the next promote or rollback works without any cleanup.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from typer.testing import CliRunner

from orchestrator import dry_run, faults, fixtures, locks, roles, verify
from orchestrator import promote as promoting
from orchestrator import reports as reporting
from orchestrator import rollback as rolling_back
from orchestrator.cli import app
from orchestrator.config import ConnInfo
from orchestrator.errors import CheckFailed, OrchestratorError

PROJECT_DIR = Path(__file__).resolve().parents[2]
LEGACY = "legacy_fixtures"
EVERYTHING = Decimal(1)
LIVE_TABLES = ("UserProfile", "ContextIntent")
LEGACY_TABLES = ("User", "ContextProfile", "Profile", "ChatMessage")
PROMOTE_ARGS = ["promote", "--yes", "--max-conflict-rate", "1"]

# The legacy change between the old and the new state: an update, a delete and an insert, so that the
# promote under fault updates, deletes and inserts live rows.
NEW_STATE_CHANGES = [
    """update legacy_fixtures."Profile" set data = data || '{"location": "Lisbon"}' where id = 'p02r'""",
    """delete from legacy_fixtures."Profile" where "contextProfileId" = 'cp09p'""",
    """delete from legacy_fixtures."ContextProfile" where id = 'cp09p'""",
    """insert into legacy_fixtures."ContextProfile" (id, "userId", "contextType", "createdAt", "updatedAt")
       values ('cp06f', 'u06', 'friendship', '2024-02-02 10:00', '2024-02-02 10:00')""",
    """insert into legacy_fixtures."Profile" (id, "contextProfileId", data, "createdAt", "updatedAt")
       values ('p06f', 'cp06f', '{"friendshipDepth": "casual", "location": "Oslo"}', '2024-03-02 10:00',
               '2024-03-02 10:00')""",
]


# -- helpers -------------------------------------------------------------------------------------------


def execute(conn: ConnInfo, statement, params=None) -> None:
    with psycopg.connect(**conn.kwargs(), autocommit=True) as pg:
        pg.execute(statement, params)


def query(conn: ConnInfo, statement, params=None) -> list[tuple]:
    with psycopg.connect(**conn.kwargs(), autocommit=True) as pg:
        return pg.execute(statement, params).fetchall()


def table_dump(pg, schema: str, table: str) -> list[str] | None:
    """Every row as text in id order (None: no such table). Equal dumps = identical rows and values."""
    if pg.execute("select to_regclass(format('%%I.%%I', %s::text, %s::text))", [schema, table]).fetchone()[0] is None:
        return None
    rows = pg.execute(
        sql.SQL('select t::text from {} as t order by t."id" collate "C"').format(sql.Identifier(schema, table))
    ).fetchall()
    return [row[0] for row in rows]


def dump(conn: ConnInfo, schema: str, tables) -> dict[str, list[str] | None]:
    with psycopg.connect(**conn.kwargs()) as pg:
        return {table: table_dump(pg, schema, table) for table in tables}


def audit(conn: ConnInfo, meta_schema: str) -> list[tuple[str, str, str]]:
    """(run_id, command, status) of every promote/rollback, oldest first."""
    return query(
        conn,
        sql.SQL("select run_id, command, status from {} order by started_at").format(
            sql.Identifier(meta_schema, "runs")
        ),
    )


def lock_holders(conn: ConnInfo) -> int:
    return query(
        conn,
        "select count(*) from pg_locks where locktype = 'advisory' and (classid::bigint << 32 | objid::bigint) = %s",
        [locks.LOCK_KEY],
    )[0][0]


def wait_for(predicate, timeout: float, what: str) -> float:
    """Seconds until ``predicate()`` held; fails after ``timeout``."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)
    return time.monotonic() - start


def no_prompt(_plan) -> None:
    return None


def subprocess_env(conn: ConnInfo, home: Path, **extra: str) -> dict[str, str]:
    """A clean environment for `python -m orchestrator` against ``conn`` (the external-server path)."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PG", "MIGRATION_", "ORCHESTRATOR_", "DBT_"))
    }
    env.update({key: value for key, value in conn.libpq_env().items() if key != "DBT_ENV_SECRET_PGPASSWORD"})
    env["ORCHESTRATOR_HOME"] = str(home)
    env.update(extra)
    return env


def run_cli(args, env, *, fault: str | None = None, fault_dir: Path | None = None, on_pause=None, timeout=180):
    """Run the CLI in its own process. With a ``...:pause`` fault, call ``on_pause(process)`` while it
    stands at the point, then let it go on."""
    env = dict(env)
    if fault:
        env[faults.ENV] = fault
        env[faults.DIR_ENV] = str(fault_dir)
    process = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", *args],
        env=env,
        cwd=PROJECT_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        if fault and fault.endswith(":pause"):
            paused, resume = faults.marker_paths(fault.rpartition(":")[0], fault_dir)
            wait_for(lambda: paused.exists() or process.poll() is not None, 90, f"the process to reach {fault}")
            if not paused.exists():
                out, err = process.communicate()
                raise AssertionError(f"the process ended before {fault} (exit {process.returncode}): {out}{err}")
            try:
                on_pause(process)
            finally:
                resume.touch()
        out, err = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def terminate_backend(conn: ConnInfo, application_name: str) -> int:
    """End the session of a waiting orchestrator from another connection, as an administrator would."""
    with psycopg.connect(**conn.kwargs(), autocommit=True) as pg:
        pids = [
            row[0]
            for row in pg.execute(
                "select pid from pg_stat_activity where application_name = %s and datname = current_database()",
                [application_name],
            ).fetchall()
        ]
        assert len(pids) == 1, f"expected one {application_name!r} session, found {pids}"
        assert pg.execute("select pg_terminate_backend(%s, 10000)", [pids[0]]).fetchone()[0]
        return pids[0]


# -- the stage: the fixtures, an old and a new live state -----------------------------------------------


@dataclasses.dataclass
class Stage:
    settings: object
    conn: ConnInfo
    env: dict[str, str]
    old: dict
    new: dict
    legacy: dict

    def live(self) -> dict:
        return dump(self.conn, self.settings.live_schema, LIVE_TABLES)

    def state(self) -> str:
        """'old', 'new' or 'none' (no live tables); anything else fails: a mixed or partial state."""
        now = self.live()
        if all(rows is None for rows in now.values()):
            return "none"
        if now == self.old:
            return "old"
        if now == self.new:
            return "new"
        raise AssertionError(f"the live tables hold neither the old nor the new state: {summarise(now, self)}")

    def promote(self, **kwargs):
        kwargs.setdefault("max_conflict_rate", EVERYTHING)
        kwargs.setdefault("users", None)
        return promoting.promote(self.settings, self.conn, confirm=no_prompt, **kwargs)

    def rollback(self, drop: bool = False):
        return rolling_back.rollback(self.settings, self.conn, drop=drop, confirm=no_prompt)

    def go(self, target: str) -> None:
        """Bring the live tables to ``target`` with ordinary promotes and rollbacks."""
        for _ in range(4):
            current = self.state()
            if current == target:
                return
            if target == "new":
                self.promote()
            elif target == "none":
                self.rollback(drop=True)
            elif current == "new":
                self.rollback()  # undoes one promote; a no-op promote (new -> new) needs one more
            else:
                break
        assert self.state() == target, f"cannot reach the {target} state from {self.state()}: test order"

    def audit(self) -> list[tuple[str, str, str]]:
        return audit(self.conn, self.settings.meta_schema)

    def backup_rows(self, run_id: str) -> int:
        meta = self.settings.meta_schema
        total = 0
        for table in ("run_backups", "run_inserted_ids"):
            if query(self.conn, "select to_regclass(format('%%I.%%I', %s::text, %s::text))", [meta, table])[0][0]:
                total += query(
                    self.conn,
                    sql.SQL("select count(*) from {} where run_id = %s").format(sql.Identifier(meta, table)),
                    [run_id],
                )[0][0]
        return total


def summarise(now: dict, stage: Stage) -> str:
    parts = []
    for table, rows in now.items():
        rows = set(rows or [])
        parts.append(
            f"{table}: {len(rows)} rows, {len(rows - set(stage.old[table]))} not in old, "
            f"{len(rows - set(stage.new[table]))} not in new"
        )
    return "; ".join(parts)


@pytest.fixture(scope="module")
def stage(settings, database, state_home):
    execute(database, sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(settings.meta_schema)))
    execute(database, sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(settings.dry_run_schema)))
    fixtures.load(settings, database, LEGACY)
    dry_run.dry_run(settings, database)
    first = Stage(settings, database, {}, {}, {}, {})
    first.promote()  # creates the live tables: the old state
    old = first.live()
    for statement in NEW_STATE_CHANGES:
        execute(database, statement)
    dry_run.dry_run(settings, database)
    result = first.promote()
    assert all(result.plan[t]["inserted"] and result.plan[t]["deleted"] for t in ("ContextIntent",))
    assert result.plan["UserProfile"]["updated"] == 3
    new = first.live()
    first.rollback()
    assert first.live() == old != new
    env = subprocess_env(database, state_home, MIGRATION_LEGACY_SCHEMA=LEGACY)
    return Stage(settings, database, env, old, new, dump(database, LEGACY, LEGACY_TABLES))


# -- faults ----------------------------------------------------------------------------------------------

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
    else:
        assert result.returncode == 2, result.stdout + result.stderr
        assert result.stderr.startswith("Error: ") and "Traceback" not in result.stderr, result.stderr
    return result


def check_after_fault(stage: Stage, runs_before, command: str, after: str, left_started: bool) -> str | None:
    """The state right after a fault; returns the id of the run left at `started`, if any."""
    waited = wait_for(lambda: lock_holders(stage.conn) == 0, 10, "the promote lock to be released")
    assert waited < 5
    assert stage.state() == after
    assert dump(stage.conn, LEGACY, LEGACY_TABLES) == stage.legacy
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


# -- concurrency -----------------------------------------------------------------------------------------


def test_a_second_promote_or_rollback_refuses_while_one_runs(stage, tmp_path):
    stage.go("old")
    runs_before = stage.audit()
    seen = {}

    def meanwhile(_process):
        second = run_cli(PROMOTE_ARGS, stage.env)
        seen["promote"] = second
        with pytest.raises(OrchestratorError, match="another promote or rollback is running") as refused:
            stage.rollback()
        seen["rollback"] = str(refused.value)
        seen["live"] = stage.live()  # the first promote has not committed: no reader sees half of it

    # the first promote stands inside its transaction, between deleting and re-inserting rows
    first = run_cli(PROMOTE_ARGS, stage.env, fault="promote:mid-write:pause", fault_dir=tmp_path, on_pause=meanwhile)
    assert first.returncode == 0, first.stdout + first.stderr
    second = seen["promote"]
    assert second.returncode == 2
    assert re.match(
        r"Error: another promote or rollback is running on this database \(orchestrator promote, pid \d+, since "
        r"\d\d:\d\d:\d\d\): wait for it to finish, then retry",
        second.stderr,
    ), second.stderr
    assert seen["live"] == stage.old
    assert stage.state() == "new"
    assert [(c, s) for _, c, s in stage.audit() if (_, c, s) not in runs_before] == [("promote", "committed")]


def test_two_promotes_started_together_never_interleave(stage):
    stage.go("old")
    runs_before = stage.audit()
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "orchestrator", *PROMOTE_ARGS],
            env=stage.env,
            cwd=PROJECT_DIR,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [(p.returncode, *p.communicate(timeout=180)) for p in processes]
    results = [(p.returncode, out, err) for p, (_, out, err) in zip(processes, results, strict=True)]
    for code, out, err in results:
        assert code == 0 or (code == 2 and "another promote or rollback is running" in err), out + err
    committed = [run for run in stage.audit() if run not in runs_before]
    assert [(c, s) for _, c, s in committed] == [("promote", "committed")] * sum(r[0] == 0 for r in results)
    assert stage.state() == "new"


def swap_in_dry_run_table(conn: ConnInfo, schema: str, table: str, change: str) -> None:
    """What dbt's table materialization does: build `<table>__dbt_tmp`, then in one transaction rename the
    old table to `<table>__dbt_backup` and the new one into place (the old one is kept here, to put back)."""
    with psycopg.connect(**conn.kwargs()) as pg:
        tmp = sql.Identifier(schema, f"{table}__dbt_tmp")
        pg.execute(sql.SQL("create table {} as select * from {}").format(tmp, sql.Identifier(schema, table)))
        pg.execute(sql.SQL(change).format(tmp))
        pg.execute(
            sql.SQL("alter table {} rename to {}").format(
                sql.Identifier(schema, table), sql.Identifier(f"{table}__dbt_backup")
            )
        )
        pg.execute(sql.SQL("alter table {} rename to {}").format(tmp, sql.Identifier(table)))


def put_back_dry_run_table(conn: ConnInfo, schema: str, table: str) -> None:
    with psycopg.connect(**conn.kwargs()) as pg:
        pg.execute(sql.SQL("drop table {}").format(sql.Identifier(schema, table)))
        pg.execute(
            sql.SQL("alter table {} rename to {}").format(
                sql.Identifier(schema, f"{table}__dbt_backup"), sql.Identifier(table)
            )
        )


def test_dry_run_tables_replaced_after_the_gates_are_refused(stage, tmp_path):
    """A dbt build replacing the dry-run tables between the gates and the write (here: by hand, with
    other content) makes promote refuse: it writes only the very tables the gated dry run built."""
    stage.go("old")
    schema = stage.settings.dry_run_schema

    def rebuild_by_hand(_process):
        swap_in_dry_run_table(stage.conn, schema, "profile", "update {} set location = 'not gated'")

    try:
        result = run_cli(
            PROMOTE_ARGS, stage.env, fault="promote:started:pause", fault_dir=tmp_path, on_pause=rebuild_by_hand
        )
    finally:
        put_back_dry_run_table(stage.conn, schema, "profile")
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"the tables in schema {schema} are not the ones dry run" in result.stderr
    assert stage.state() == "old"
    assert stage.audit()[-1][1:] == ("promote", "refused")


def test_a_dry_run_rebuilt_while_promote_writes_waits_and_cannot_corrupt_it(stage, tmp_path):
    """A real dry run started while promote is inside its transaction: dbt's rename waits for the commit,
    the promote writes exactly the gated dry run, and a third dry run meanwhile is refused."""
    stage.go("old")
    schema = stage.settings.dry_run_schema
    fault = "promote:mid-write:pause"
    outcome = {}

    def meanwhile():
        try:
            # dbt has built its new tables and waits to rename them into place
            outcome["waited"] = wait_for(
                lambda: (
                    query(
                        stage.conn,
                        "select count(*) from pg_locks as l join pg_class as c on c.oid = l.relation"
                        " join pg_namespace as n on n.oid = c.relnamespace where not l.granted and n.nspname = %s",
                        [schema],
                    )[0][0]
                    > 0
                ),
                240,  # dbt builds every intermediate model first: generous for a loaded 2-core CI
                "the dry run to wait on the promote's lock",
            )
            try:
                dry_run.dry_run(stage.settings, stage.conn)
            except OrchestratorError as exc:
                outcome["third"] = str(exc)
        finally:
            faults.marker_paths(fault.rpartition(":")[0], tmp_path)[1].touch()  # let the promote go on

    def rebuild(_process):
        helper = threading.Thread(target=meanwhile)
        helper.start()
        try:
            outcome["record"] = dry_run.dry_run(stage.settings, stage.conn).record  # waits for the commit
        finally:
            helper.join(timeout=120)

    result = run_cli(PROMOTE_ARGS, stage.env, fault=fault, fault_dir=tmp_path, on_pause=rebuild)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "another dry run is building on this database" in outcome["third"]
    assert outcome["record"]["status"] == "built"
    assert stage.state() == "new"  # exactly the gated dry run, not a mix
    # the rebuilt dry run (same models, same legacy data) is promotable in turn: nothing to change
    assert stage.promote().plan["UserProfile"]["updated"] == 0


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


# -- stale input -------------------------------------------------------------------------------------------


def saved_row(conn: ConnInfo, table: str, key: str) -> str:
    """The row as JSON text (json, not jsonb: numbers keep their digits), to put back exactly."""
    return query(
        conn,
        sql.SQL("select row_to_json(t)::text from {} as t where id = %s").format(sql.Identifier(LEGACY, table)),
        [key],
    )[0][0]


def put_back_row(conn: ConnInfo, table: str, row_json: str) -> None:
    relation = sql.Identifier(LEGACY, table)
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
    assert dump(stage.conn, LEGACY, LEGACY_TABLES) == stage.legacy  # put back exactly: the dry run is valid again


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
    env = {**cli_env, "MIGRATION_LEGACY_SCHEMA": LEGACY, "ORCHESTRATOR_PROJECT_DIR": str(copy)}
    env["ORCHESTRATOR_HOME"] = str(tmp_path / "home")
    unchanged = CliRunner().invoke(app, [*PROMOTE_ARGS], env=env)
    assert unchanged.exit_code == 0, unchanged.output  # the copy itself is the same version of the models
    assert f"Promoted (all users) into schema {LEGACY}: run " in unchanged.output
    for what, change in MODEL_CHANGES.items():
        change(copy)
        result = CliRunner().invoke(app, [*PROMOTE_ARGS], env=env)
        assert result.exit_code == 1, (what, result.output)
        assert "gate 'dry run built by the current models' failed (models version of the dry run" in result.output
        assert "run `orchestrator dry-run` again with the current models" in result.output
    assert stage.state() == "new"  # only the unchanged copy promoted


# -- faults that end with no live tables (after these, the old state is gone) -------------------------------


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
    from orchestrator.publish import FAULT_POINTS

    used = {point for steps in FAULT_POINTS.values() for point in steps.values()}
    for path in (PROJECT_DIR / "orchestrator").glob("*.py"):
        used |= set(re.findall(r'fault_point\("([^"]+)"\)', path.read_text()))
    tested = {point for cases in (PROMOTE_FAULTS, ROLLBACK_FAULTS, DROP_FAULTS, CREATE_FAULTS) for point, *_ in cases}
    assert used == tested
    doc = (PROJECT_DIR / "docs" / "reliability.md").read_text()
    assert all(f"`{point}`" in doc for point in used)
    injected = 2 * sum(len(cases) for cases in (PROMOTE_FAULTS, ROLLBACK_FAULTS, DROP_FAULTS, CREATE_FAULTS))
    assert f"**{injected} faults injected, {injected} survived**" in doc


# -- hostile data (spec §1, §5) -----------------------------------------------------------------------------

HOSTILE = "legacy_hostile"
DEPTH = 1000
BIG = "x" * (1 << 20)  # 1 MiB
BIG_KEY = "K" * (1 << 20)
DEEP_OBJECT = '{"a": ' * DEPTH + '"bottom"' + "}" * DEPTH
DEEP_ARRAY = "[" * DEPTH + "1" + "]" * DEPTH
T = "2024-01-01 00:00:00"

ID_SQL = """x'); drop table "User"; --"""
ID_JINJA = '{{ var("x") }}'
ID_PERCENT = "%s %(x)s"
ID_UNICODE = "ünï-日本-😀"
ID_SPACED = " spaced id "
ID_SEMI = "semi;colon"
HOSTILE_USERS = ["h-plain", ID_SQL, ID_JINJA, ID_PERCENT, ID_UNICODE, ID_SPACED, ID_SEMI]

PLAIN_BLOB = {
    "it's": 1,
    'a"b': "q",
    'x; drop table "User"; --': "v",
    "ключ 🔑": "ü",
    "{{ config(materialized='view') }}": "{% raw %}",
    "%s": "%(name)s",
    """'); delete from "Profile"; --""": "' or '1'='1",
    "": "empty key",
    "tab\tkey\nnewline\r": "x",
    "Location": "case differs",
    "friendshipDepth": "deep",
    "coreValues": [{"a": 1}],
    "nullKey": None,
    "location": """'); drop table "User"; --""",
    "name": "{{ env_var('PGPASSWORD') }}",
    "relationshipTimeline": "  soon \n",
}

# (profile id, context profile id, user id, context type, data as JSON text or None for SQL NULL)
HOSTILE_PROFILES = [
    ("hp-plain", "cp-plain", "h-plain", "romantic", json.dumps(PLAIN_BLOB, ensure_ascii=False)),
    (
        "hp-big",
        "cp-big",
        ID_SQL,
        "romantic",
        json.dumps({"bigKey": BIG, "location": "  " + BIG + " \n", BIG_KEY: 1}),
    ),
    (
        "hp-deep",
        "cp-deep",
        ID_JINJA,
        "romantic",
        '{"beliefs": {"deep": ' + DEEP_OBJECT + '}, "nested": ' + DEEP_ARRAY + "}",
    ),
    ("hp-array", "cp-array", ID_PERCENT, "romantic", '[1, "two", {"k": null}]'),
    ("hp-string", "cp-uni-r", ID_UNICODE, "romantic", '"just a string"'),
    ("hp-number", "cp-uni-f", ID_UNICODE, "friendship", "42"),
    ("hp-jsonnull", "cp-spaced-r", ID_SPACED, "romantic", "null"),
    ("hp-sqlnull", "cp-spaced-f", ID_SPACED, "friendship", None),
    (
        "hp-semi",
        "cp-semi",
        ID_SEMI,
        "romantic",
        '{"location": null, "ageRange": 1.50, "name": true, "coreValues": ["a", " a ", "a", 30, "30", null, ""]}',
    ),
    ("hp-orphan", "no-such-cp", None, None, """{"'; drop": 1}"""),
    ("hp-ghost", "cp-ghost", "ghost'); --", "romantic", '"str"'),
]

# (legacy profile id, key, value as JSON text, reason, user id, context type, context profile id)
EXPECTED_UNMAPPED = [
    *[
        (
            "hp-plain",
            key,
            json.dumps(PLAIN_BLOB[key], ensure_ascii=False),
            "unknown_key",
            "h-plain",
            "romantic",
            "cp-plain",
        )
        for key in (
            "it's",
            'a"b',
            'x; drop table "User"; --',
            "ключ 🔑",
            "{{ config(materialized='view') }}",
            "%s",
            """'); delete from "Profile"; --""",
            "",
            "tab\tkey\nnewline\r",
            "Location",
            "nullKey",
        )
    ],
    ("hp-plain", "friendshipDepth", '"deep"', "wrong_context", "h-plain", "romantic", "cp-plain"),
    ("hp-plain", "coreValues", '[{"a": 1}]', "type_mismatch", "h-plain", "romantic", "cp-plain"),
    ("hp-big", "bigKey", json.dumps(BIG), "unknown_key", ID_SQL, "romantic", "cp-big"),
    ("hp-big", BIG_KEY, "1", "unknown_key", ID_SQL, "romantic", "cp-big"),
    ("hp-deep", "nested", DEEP_ARRAY, "unknown_key", ID_JINJA, "romantic", "cp-deep"),
    ("hp-array", None, '[1, "two", {"k": null}]', "not_an_object", ID_PERCENT, "romantic", "cp-array"),
    ("hp-string", None, '"just a string"', "not_an_object", ID_UNICODE, "romantic", "cp-uni-r"),
    ("hp-number", None, "42", "not_an_object", ID_UNICODE, "friendship", "cp-uni-f"),
    ("hp-orphan", "'; drop", "1", "orphan_profile", None, None, "no-such-cp"),
    ("hp-ghost", None, '"str"', "orphan_context_profile", "ghost'); --", "romantic", "cp-ghost"),
]


def load_hostile(conn: ConnInfo) -> None:
    with psycopg.connect(**conn.kwargs()) as pg:
        schema = sql.Identifier(HOSTILE)
        pg.execute(sql.SQL("drop schema if exists {} cascade").format(schema))
        pg.execute(sql.SQL("create schema {}").format(schema))
        pg.execute(sql.SQL("set local search_path to {}").format(schema))
        pg.execute((PROJECT_DIR / "orchestrator" / "sql" / "legacy_schema.sql").read_text())
        pg.execute("set local search_path to default")
        table = lambda name: sql.Identifier(HOSTILE, name)  # noqa: E731
        for user in HOSTILE_USERS:
            pg.execute(sql.SQL('insert into {} (id, "updatedAt") values (%s, %s)').format(table("User")), [user, T])
        for profile_id, cp_id, user_id, context, data in HOSTILE_PROFILES:
            if user_id is not None:
                pg.execute(
                    sql.SQL(
                        'insert into {} (id, "userId", "contextType", "createdAt", "updatedAt")'
                        " values (%s, %s, %s::{}, %s, %s)"
                    ).format(table("ContextProfile"), table("RelationshipContextType")),
                    [cp_id, user_id, context, T, T],
                )
            pg.execute(
                sql.SQL(
                    'insert into {} (id, "contextProfileId", data, "createdAt", "updatedAt")'
                    " values (%s, %s, %s::jsonb, %s, %s)"
                ).format(table("Profile")),
                [profile_id, cp_id, data, T, T],
            )
        pg.execute(
            sql.SQL('insert into {} (id, "contextProfileId", role, content) values (%s, %s, %s, %s)').format(
                table("ChatMessage")
            ),
            ["m-hostile", "cp-plain", "user", """'); drop table "ChatMessage"; -- {{ }} %s"""],
        )


@pytest.fixture(scope="module")
def hostile(settings, database):
    hostile_settings = dataclasses.replace(
        settings,
        legacy_schema=HOSTILE,
        live_schema=HOSTILE,
        dry_run_schema="hostile_dry_run",
        meta_schema="hostile_meta",
    )
    load_hostile(database)
    dry_run.dry_run(hostile_settings, database)  # raises if any dbt test fails
    return hostile_settings


def normalised_md5(pg, json_text: str) -> str:
    return pg.execute("select md5(%s::jsonb::text)", [json_text]).fetchone()[0]


def test_hostile_blobs_are_logged_exactly(hostile, database):
    with psycopg.connect(**database.kwargs()) as pg:
        actual = pg.execute(
            sql.SQL(
                "select legacy_profile_id, key, md5(value::text), value is null, reason, user_id, context_type,"
                " context_profile_id from {}"
            ).format(sql.Identifier(hostile.dry_run_schema, "migration_unmapped_fields"))
        ).fetchall()
        expected = [
            (profile, key, normalised_md5(pg, value), False, reason, user, context, cp)
            for profile, key, value, reason, user, context, cp in EXPECTED_UNMAPPED
        ]
        assert sorted(actual, key=repr) == sorted(expected, key=repr)
        # a key whose value is JSON null keeps jsonb null, not SQL NULL
        assert pg.execute(
            sql.SQL("select jsonb_typeof(value) from {} where key = 'nullKey'").format(
                sql.Identifier(hostile.dry_run_schema, "migration_unmapped_fields")
            )
        ).fetchone() == ("null",)
        summary = dict(
            pg.execute(
                sql.SQL("select metric, passed from {} where passed is not null").format(
                    sql.Identifier(hostile.dry_run_schema, "migration_summary")
                )
            ).fetchall()
        )
        assert summary and all(summary.values()), summary
        assert summary["keys_accounted"] is True


def test_hostile_values_land_verbatim_in_the_profiles(hostile, database):
    profile = sql.Identifier(hostile.dry_run_schema, "profile")
    with psycopg.connect(**database.kwargs()) as pg:

        def row(user_id):
            cur = pg.execute(
                sql.SQL(
                    "select location, name, age_range, core_values::text as core_values, md5(beliefs::text) as"
                    " beliefs_md5, length(location) as location_length, md5(location) as location_md5, completeness"
                    " from {} where user_id = %s"
                ).format(profile),
                [user_id],
            )
            return dict(zip([c.name for c in cur.description], cur.fetchone(), strict=True))

        assert pg.execute(sql.SQL("select count(*) from {}").format(profile)).fetchone() == (len(HOSTILE_USERS),)
        plain = row("h-plain")
        assert plain["location"] == """'); drop table "User"; --"""
        assert plain["name"] == "{{ env_var('PGPASSWORD') }}"  # data is never rendered as a template
        assert plain["core_values"] == "[]"
        big = row(ID_SQL)
        assert big["location_length"] == len(BIG)
        assert big["location_md5"] == pg.execute("select md5(%s)", [BIG]).fetchone()[0]
        deep = row(ID_JINJA)
        assert deep["beliefs_md5"] == normalised_md5(pg, '{"deep": ' + DEEP_OBJECT + "}")
        semi = row(ID_SEMI)
        assert (semi["location"], semi["age_range"], semi["name"], semi["core_values"]) == (
            None,
            "1.50",
            "true",
            '["a", "30"]',
        )
        for empty in (ID_SPACED, ID_PERCENT, ID_UNICODE):
            assert row(empty)["completeness"] == 0
        timeline = pg.execute(
            sql.SQL("select relationship_timeline from {} where user_id = 'h-plain'").format(
                sql.Identifier(hostile.dry_run_schema, "context_intent")
            )
        ).fetchone()
        assert timeline == ("soon",)


def test_hostile_report_round_trips(hostile, database, tmp_path):
    (path,) = [p for p in reporting.write(hostile, database, "csv", tmp_path) if p.name.startswith("migration_unm")]
    csv.field_size_limit(4 << 20)  # Python's csv reader refuses fields over 128 KiB by default
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    keys = sorted((r["legacy_profile_id"], r["key"]) for r in rows)
    expected = sorted((profile, key or "") for profile, key, *_ in EXPECTED_UNMAPPED)
    assert keys == expected  # quotes, newlines, tabs, carriage returns and a 1 MiB key survive the CSV


def test_hostile_data_promotes_and_verifies(hostile, database, cli_env, tmp_path):
    result = promoting.promote(hostile, database, max_conflict_rate=EVERYTHING, users=None, confirm=no_prompt)
    assert result.plan["UserProfile"]["inserted"] == len(HOSTILE_USERS)
    assert [c["check"] for c in verify.verify(hostile, database) if not c["passed"]] == []
    with psycopg.connect(**database.kwargs()) as pg:
        assert pg.execute(
            sql.SQL('select location from {} where "userId" = %s').format(sql.Identifier(HOSTILE, "UserProfile")),
            ["h-plain"],
        ).fetchone() == ("""'); drop table "User"; --""",)
    # a partial promote of the odd ids: they reach dbt and SQL only as data
    execute(
        database,
        sql.SQL("""update {} set data = '{{"location": "Rome"}}' where id = 'hp-array'""").format(
            sql.Identifier(HOSTILE, "Profile")
        ),
    )
    users_file = tmp_path / "ids.txt"
    users_file.write_text(f"{ID_UNICODE}\n\n{ID_SEMI}\n{ID_SEMI}\n# a comment\n", encoding="utf-8")
    env = {
        **cli_env,
        "MIGRATION_LEGACY_SCHEMA": HOSTILE,
        "MIGRATION_DRY_RUN_SCHEMA": hostile.dry_run_schema,
        "MIGRATION_META_SCHEMA": hostile.meta_schema,
    }
    args = [*PROMOTE_ARGS, "--users-file", str(users_file)]
    for user in (ID_SQL, ID_JINJA, ID_PERCENT, ID_SPACED):
        args += ["--user", user]
    partial = CliRunner().invoke(app, args, env=env)
    assert partial.exit_code == 0, partial.output
    assert "Promoted (6 users)" in partial.output
    with psycopg.connect(**database.kwargs()) as pg:
        locations = dict(
            pg.execute(
                sql.SQL('select "userId", location from {}').format(sql.Identifier(HOSTILE, "UserProfile"))
            ).fetchall()
        )
    assert locations[ID_PERCENT] == "Rome" and locations["h-plain"] == """'); drop table "User"; --"""


# -- hostile input to the CLI ------------------------------------------------------------------------------

BAD_NAMES = {
    'with"quote': "is not allowed",
    'legacy_fixtures"; drop table "legacy_fixtures"."User"; --': "is not allowed",
    "semi;colon": "is not allowed",
    "with space": "is not allowed",
    "ünïcode": "is not allowed",
    "9starts_with_digit": "is not allowed",
    "x" * 64: "is longer than PostgreSQL's 63 bytes",
    "é" * 32: "is longer than PostgreSQL's 63 bytes",  # 32 characters, 64 bytes
    " ": "is not allowed",
}
SCHEMA_SETTINGS = {
    "MIGRATION_LEGACY_SCHEMA": "legacy schema",
    "MIGRATION_LIVE_SCHEMA": "live schema",
    "MIGRATION_DRY_RUN_SCHEMA": "dry-run schema",
    "MIGRATION_META_SCHEMA": "metadata schema",
}
runner = CliRunner()


def invoke(args, env):
    result = runner.invoke(app, args, env=env, catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def test_hostile_schema_names_are_refused_before_any_sql(stage, cli_env):
    tried = 0
    for variable, what in SCHEMA_SETTINGS.items():
        for name, reason in BAD_NAMES.items():
            for command in (["dry-run"], PROMOTE_ARGS, ["rollback", "--yes"], ["verify"], ["runs"]):
                result = invoke(command, {**cli_env, "MIGRATION_LEGACY_SCHEMA": LEGACY, variable: name})
                assert result.exit_code == 2, (variable, name, command, result.output)
                assert result.output.startswith(f"Error: the {what} name {name!r} {reason}"), result.output
                assert len(result.output.strip().splitlines()) == 1
                tried += 1
        # empty: the dry-run and metadata schema are refused; legacy and live fall back to their defaults
    for variable in ("MIGRATION_DRY_RUN_SCHEMA", "MIGRATION_META_SCHEMA"):
        result = invoke(["dry-run"], {**cli_env, "MIGRATION_LEGACY_SCHEMA": LEGACY, variable: ""})
        assert result.exit_code == 2 and "name is empty" in result.output
    result = invoke(["verify"], {**cli_env, "MIGRATION_LEGACY_SCHEMA": LEGACY, "MIGRATION_LIVE_SCHEMA": ""})
    assert result.exit_code == 0, result.output  # live = legacy, the default
    assert f"Verification of the live tables in schema {LEGACY}" in result.output
    for command in (["fixtures", "load", "--schema"], ["demo", "--schema"]):
        for name, reason in {**BAD_NAMES, "": None}.items():
            result = invoke([*command, name], cli_env)
            # an empty --schema passes the settings (an empty legacy schema means the default) to the loader
            message = f"the legacy schema name {name!r} {reason}" if reason else "the fixtures schema name is empty"
            assert result.exit_code == 2, (command, name, result.output)
            assert "\nError: " + message in "\n" + result.output, (command, name, result.output)
            tried += 1
    assert tried >= 200
    assert dump(stage.conn, LEGACY, LEGACY_TABLES) == stage.legacy  # every legacy table survived


def test_hostile_user_ids_are_reported_unknown_never_interpolated(stage, cli_env, tmp_path):
    env = {**cli_env, "MIGRATION_LEGACY_SCHEMA": LEGACY}
    before = stage.live()
    injection = """x'); drop table "User"; --"""
    cases = {
        injection: f"not legacy users: {injection!r}",
        'u02\'; delete from "UserProfile"; --': "not legacy users:",
        " u02": "not legacy users: ' u02'",  # ids match byte for byte: no trimming
        "U02": "not legacy users: 'U02'",
        "ü日本😀": "not legacy users: 'ü日本😀'",
        "{{ var('x') }}": "not legacy users:",
        "%s%(x)s": "not legacy users:",
        "": "not legacy users: ''",
    }
    for user, message in cases.items():
        result = invoke([*PROMOTE_ARGS, "--user", user], env)
        assert result.exit_code == 1, (user, result.output)
        assert message in result.output and "nothing was changed" in result.output
    files = {
        "blank lines, duplicates, comments, CRLF and an unknown id": (
            b"u02\r\n\r\n# comment\r\nu02\r\n  \r\nnobody\r\n",
            1,
            "not legacy users: 'nobody'",
        ),
        "10 000 unknown ids": (
            "\n".join(f"ghost-{i}" for i in range(10_000)).encode(),
            1,
            "not legacy users: 'ghost-0'",
        ),
        "a NUL byte": (b"u02\nab\x00c\n", 2, "cannot contain NUL"),
        "a byte order mark (kept: ids match byte for byte)": (
            b"\xef\xbb\xbfu02\n",
            1,
            "not legacy users: '\\ufeffu02'",
        ),
        "a 20 000-character id": (b"y" * 20_000, 1, "not legacy users: 'yyyy"),
        "non-UTF-8 bytes": (b"u02\n\xff\xfe bad\n", 2, "cannot read the users file"),
        "nothing but comments": (b"# nobody\n\n", 2, "no user ids given"),
    }
    for what, (content, code, message) in files.items():
        path = tmp_path / "ids.txt"
        path.write_bytes(content)
        result = invoke([*PROMOTE_ARGS, "--users-file", str(path)], env)
        assert result.exit_code == code, (what, result.output)
        assert message in result.output, (what, result.output)
    long_id = invoke([*PROMOTE_ARGS, "--user", "z" * 20_000], env)
    assert long_id.exit_code == 1 and "... (20000 characters)" in long_id.output and len(long_id.output) < 400
    missing = invoke([*PROMOTE_ARGS, "--users-file", str(tmp_path / "absent.txt")], env)
    assert missing.exit_code == 2 and "cannot read the users file" in missing.output
    assert dump(stage.conn, LEGACY, LEGACY_TABLES) == stage.legacy
    assert stage.live() == before


# -- least privilege and secrets ---------------------------------------------------------------------------

ROLE = "lp_migrator"
LP_LEGACY, LP_DRY_RUN, LP_META = "lp_legacy", "lp_dry_run", "lp_meta"


def test_least_privilege_role_runs_the_whole_flow_and_leaks_no_secret(settings, database, tmp_path):
    import legacy_generator

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
    first_user = sorted(row["id"] for row in rows["User"])[0]
    assert f"Role {ROLE} created: reads schema {LP_LEGACY}, owns {LP_DRY_RUN}" in granted.stdout
    flow = [  # (command, what it says on stdout)
        (["dry-run"], rf"^Dry run \w+ built into schema {LP_DRY_RUN}: \d+ nodes built, \d+ tests passed"),
        (PROMOTE_ARGS, rf"^Promoted \(all users\) into schema {LP_LEGACY}: run \S+ \(created the live tables\)\.$"),
        (["verify"], rf"Verification of the live tables in schema {LP_LEGACY}"),
        (["report", "--format", "csv", "--out", str(reports)], rf"^Wrote {re.escape(str(reports))}/migration_summary"),
        # rebuilds into the partial dry-run schema
        ([*PROMOTE_ARGS, "--user", first_user], rf"^Promoted \(1 users\) into schema {LP_LEGACY}: run \S+\.$"),
        (["rollback", "--yes"], r"^Rolled back \(run \S+\): restored the live tables to their state before promote"),
        (["cleanup", "--keep", "1"], r"^Removed the backups of 0 older promotes; kept 1 rollback level\(s\)\.$"),
        (["rollback", "--yes", "--drop"], r"^Rolled back \(run \S+\): dropped the live tables\.$"),
    ]
    outputs = [granted.stdout, granted.stderr]
    for args, says in flow:
        result = run_cli(args, env)
        outputs += [result.stdout, result.stderr]
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        assert re.search(says, result.stdout, re.MULTILINE), (args, says, result.stdout)
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
