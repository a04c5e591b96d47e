"""What the test modules share: the CLI run in-process (``invoke``) or in a process of its own
(``run_cli``), a few database helpers, table dumps that compare row for row, and the ``Stage``: the
fixtures with an old and a new live state, for the hardening modules (test_faults, test_concurrency,
test_stale_input, test_hostile_input; docs/reliability.md). The ``stage`` fixture is in conftest.py.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import psycopg
from psycopg import sql
from typer.testing import CliRunner

from orchestrator import dry_run, faults, fixtures, locks
from orchestrator import promote as promoting
from orchestrator import rollback as rolling_back
from orchestrator.cli import app
from orchestrator.config import FIXTURES_SCHEMA, ConnInfo
from orchestrator.db import LEGACY_TABLES
from orchestrator.live import LIVE_TABLES

PROJECT_DIR = Path(__file__).resolve().parents[2]
LIVE_TABLE_NAMES = tuple(LIVE_TABLES.values())  # "UserProfile", "ContextIntent"
EVERYTHING = Decimal(1)  # a conflict-rate threshold that every dry run passes
PROMOTE_ARGS = ["promote", "--yes", "--max-conflict-rate", "1"]


# -- the CLI -----------------------------------------------------------------------------------------------

_runner = CliRunner()


def invoke(args: list[str], env: dict[str, str] | None = None, input: str | None = None):
    """Run the CLI in this process; returns click's ``Result`` (exit code, output).

    Only exits come back as a result: typer's and click's (``SystemExit``), whatever their code. Any
    other exception is raised again, so a crash never passes as an expected failure (a bare
    ``CliRunner().invoke`` reports it as exit 1).
    """
    result = _runner.invoke(app, args, env=env, input=input, catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


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


def start_cli(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    """`python -m orchestrator <args>` in its own process, stdout and stderr captured as text."""
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator", *args],
        env=env,
        cwd=PROJECT_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_cli(args, env, *, fault: str | None = None, fault_dir: Path | None = None, on_pause=None, timeout=180):
    """Run the CLI in its own process. With a ``...:pause`` fault, call ``on_pause(process)`` while it
    stands at the point, then let it go on."""
    env = dict(env)
    if fault:
        env[faults.ENV] = fault
        env[faults.DIR_ENV] = str(fault_dir)
    process = start_cli(args, env)
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


def no_prompt(_plan) -> None:
    """The ``confirm`` of promote and rollback called from Python: go ahead without asking."""
    return None


# -- the database ------------------------------------------------------------------------------------------


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
    """Sessions holding the promote lock (orchestrator.locks.LOCK_KEY)."""
    return query(
        conn,
        "select count(*) from pg_locks where locktype = 'advisory' and (classid::bigint << 32 | objid::bigint) = %s",
        [locks.LOCK_KEY],
    )[0][0]


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


def wait_for(predicate, timeout: float, what: str) -> float:
    """Seconds until ``predicate()`` held; fails after ``timeout``."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)
    return time.monotonic() - start


# -- the stage: the fixtures, an old and a new live state ---------------------------------------------------

# The legacy change between the old and the new state: an update, a delete and an insert, so that a
# promote from the old state updates, deletes and inserts live rows.
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


@dataclasses.dataclass
class Stage:
    """The fixtures (schema FIXTURES_SCHEMA) with a dry run built, and the full dumps of two live states:
    ``old`` (the fixtures promoted) and ``new`` (after NEW_STATE_CHANGES, one promote further). The
    legacy data and the dry run are those of the new state; ``legacy`` is the legacy tables' dump."""

    settings: object
    conn: ConnInfo
    env: dict[str, str]  # for `python -m orchestrator` (run_cli) against this stage
    old: dict
    new: dict
    legacy: dict

    def live(self) -> dict:
        return dump(self.conn, self.settings.live_schema, LIVE_TABLE_NAMES)

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
        """Bring the live tables to ``target`` with ordinary promotes and rollbacks. The old state can be
        reached only from the new one (by rollbacks): not after a rollback --drop."""
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


def build_stage(settings, database: ConnInfo, state_home: Path) -> Stage:
    """Set the stage up in ``database`` from nothing and leave it in the old state."""
    execute(database, sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(settings.meta_schema)))
    execute(database, sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(settings.dry_run_schema)))
    fixtures.load(settings, database, FIXTURES_SCHEMA)
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
    env = subprocess_env(database, state_home, MIGRATION_LEGACY_SCHEMA=FIXTURES_SCHEMA)
    return Stage(settings, database, env, old, new, dump(database, FIXTURES_SCHEMA, LEGACY_TABLES))
