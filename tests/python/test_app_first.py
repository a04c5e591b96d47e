"""The application comes first (spec §8–§10): no strong lock on a legacy table held for more than a moment,
rollback under churn, a cutover that finishes, one user's problem stays that user's.

Each test fails on the code before issue 24: the first promote dropped the live tables' foreign keys inside
its transaction (ACCESS EXCLUSIVE on "User" until its commit), rollback restored rows of deleted users
(a foreign-key error), a round listed the same application-written user forever, one stale decision refused
every round, and the drift check ran before the write with no row locked in between.
"""

from __future__ import annotations

import json
import threading
import time

import psycopg
import pytest
from helpers import EVERYTHING, execute, no_prompt, query
from psycopg import sql
from test_live_sync import FIXTURES, differences, lag_problems

from orchestrator import changes, decision_store, dry_run, fixtures, sync
from orchestrator import promote as promoting
from orchestrator import rollback as rolling_back
from orchestrator.errors import OrchestratorError

STRONG = ("ShareLock", "ShareRowExclusiveLock", "ExclusiveLock", "AccessExclusiveLock")


@pytest.fixture()
def built(settings, database):
    """Fixtures loaded and a dry run built (no live tables yet)."""
    for schema in (settings.meta_schema, settings.dry_run_schema):
        execute(database, sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(schema)))
    execute(database, sql.SQL('drop table if exists {}."ContextIntent", {}."UserProfile"').format(
        sql.Identifier(FIXTURES), sql.Identifier(FIXTURES)))  # fmt: skip
    fixtures.load(settings, database, FIXTURES)
    dry_run.dry_run(settings, database, max_conflict_rate=EVERYTHING)
    return settings, database


class LockWatcher(threading.Thread):
    """Samples pg_locks every few milliseconds: the strong locks (anything that holds the application's
    writes) any session but ``spare`` holds on the legacy "User" table, with how long each was seen."""

    def __init__(self, conn, spare: set[int] | None = None):
        super().__init__(daemon=True)
        self.conn, self.spare, self.stop, self.seen = conn, spare or set(), threading.Event(), {}

    def run(self) -> None:
        with psycopg.connect(**self.conn.kwargs(), autocommit=True) as pg:
            while not self.stop.is_set():
                rows = pg.execute(
                    "select l.pid, l.mode from pg_locks as l join pg_class as c on c.oid = l.relation"
                    " join pg_namespace as n on n.oid = c.relnamespace"
                    " where n.nspname = %s and c.relname = 'User' and l.granted and l.mode = any(%s)",
                    [FIXTURES, list(STRONG)],
                ).fetchall()
                now = time.monotonic()
                for pid, mode in rows:
                    if pid not in self.spare:
                        first, _ = self.seen.get((pid, mode), (now, now))
                        self.seen[(pid, mode)] = (first, now)
                time.sleep(0.002)

    def longest(self) -> dict[str, float]:
        held: dict[str, float] = {}
        for (_, mode), (first, last) in self.seen.items():
            held[mode] = max(held.get(mode, 0.0), last - first)
        return held


def test_the_first_promote_finishes_while_the_application_holds_a_read_lock_and_never_locks_user_out(built):
    settings, conn = built
    with psycopg.connect(**conn.kwargs()) as app:  # the application, in a transaction the whole time
        app.execute(sql.SQL("select id from {} for key share").format(sql.Identifier(FIXTURES, "User")))  # ROW SHARE
        watcher = LockWatcher(conn, {app.info.backend_pid})
        watcher.start()
        try:
            result = promoting.promote(settings, conn, confirm=no_prompt, lock_timeout="2s")
        finally:
            watcher.stop.set()
            watcher.join()
        app.rollback()
    assert result.created_tables
    held = watcher.longest()
    assert "AccessExclusiveLock" not in held, held  # before: held from the keys' drop to the commit
    assert all(seconds < 1.0 for seconds in held.values()), held
    keys = query(
        conn,
        "select conname, convalidated from pg_constraint where contype = 'f' and conrelid in"
        " (%s::regclass, %s::regclass) order by 1",
        [f'{FIXTURES}."ContextIntent"', f'{FIXTURES}."UserProfile"'],
    )
    assert keys == [("ContextIntent_userId_fkey", True), ("UserProfile_userId_fkey", True)]
    # the keys cascade: a deleted user's live rows go with it
    execute(conn, sql.SQL("delete from {} where id = 'u05'").format(sql.Identifier(FIXTURES, "User")))
    assert query(conn, sql.SQL('select count(*) from {} where "userId" = \'u05\'').format(
        sql.Identifier(FIXTURES, "UserProfile"))) == [(0,)]  # fmt: skip


def test_rollback_drop_takes_user_only_for_moments_and_waits_out_a_read_lock(built):
    settings, conn = built
    promoting.promote(settings, conn, confirm=no_prompt)
    waits: list[float] = []
    stop = threading.Event()

    def application() -> None:
        """A point update of "User" every 20 ms, each timed."""
        with psycopg.connect(**conn.kwargs(), autocommit=True) as pg:
            while not stop.is_set():
                started = time.monotonic()
                pg.execute(sql.SQL('update {} set "updatedAt" = "updatedAt" where id = \'u01\'').format(
                    sql.Identifier(FIXTURES, "User")))  # fmt: skip
                waits.append(time.monotonic() - started)
                time.sleep(0.02)

    def reader() -> None:
        """A transaction holding a read lock on "User" for 1.5 s: the drop waits it out, retrying."""
        with psycopg.connect(**conn.kwargs()) as pg:
            pg.execute(sql.SQL("select id from {} for key share").format(sql.Identifier(FIXTURES, "User")))
            time.sleep(1.5)
            pg.rollback()

    threads = [threading.Thread(target=application), threading.Thread(target=reader)]
    for thread in threads:
        thread.start()
    time.sleep(0.2)
    try:
        result = rolling_back.rollback(settings, conn, drop=True, confirm=no_prompt)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert result.dropped and result.legacy_unchanged
    assert max(waits) < 1.0, max(waits)  # before: every statement queued behind the drop's lock request
    assert query(conn, "select to_regclass(%s)", [f'{FIXTURES}."UserProfile"']) == [(None,)]


@pytest.fixture()
def promoted(built):
    settings, conn = built
    promoting.promote(settings, conn, confirm=no_prompt)
    return settings, conn


def _legacy(table: str) -> sql.Identifier:
    return sql.Identifier(FIXTURES, table)


def test_rollback_of_a_round_after_its_user_was_deleted(promoted):
    settings, conn = promoted
    execute(conn, sql.SQL("""update {} set data = data || '{{"location": "Kyiv"}}' where id = 'p02r'""").format(
        _legacy("Profile")))  # fmt: skip
    round_ = sync.sync_round(settings, conn, confirm=no_prompt)
    assert round_.changed.users == ["u02"]
    execute(conn, sql.SQL("delete from {} where id = 'u02'").format(_legacy("User")))  # cascade
    undone = rolling_back.rollback(settings, conn, drop=False, confirm=no_prompt)  # before: a foreign-key error
    assert undone.undone_run_id == round_.run_id
    assert undone.counts["UserProfile"]["not_restored_user_deleted"] == 1
    assert query(conn, sql.SQL("select count(*) from {} where \"userId\" = 'u02'").format(_legacy("UserProfile"))) == [
        (0,)
    ]
    sync.sync_round(settings, conn, confirm=no_prompt)
    assert differences(conn, settings, dry_run_too=True, threshold=EVERYTHING) == []


def test_the_cutover_finishes_once_the_application_writes_its_own_users(promoted):
    settings, conn = promoted
    # after its deploy, the application signs a user up and writes that user's profile itself
    execute(conn, sql.SQL("""insert into {} (id, "updatedAt") values ('u-app', now())""").format(_legacy("User")))
    execute(
        conn,
        sql.SQL("""insert into {} (id, "userId", "updatedAt") values ('up-app', 'u-app', now())""").format(
            _legacy("UserProfile")
        ),
    )
    first = sync.sync_round(settings, conn, confirm=no_prompt)
    # handed over quietly: only the application ever wrote its live rows, nothing for a person to check
    assert first.handed_over == ["u-app"] and first.skipped == []
    app_row = query(conn, sql.SQL("select id from {} where \"userId\" = 'u-app'").format(_legacy("UserProfile")))
    assert app_row == [("up-app",)]  # never overwritten
    second = sync.sync_round(settings, conn, confirm=no_prompt)
    assert second.run_id is None and second.skipped == []  # before: listed again by every round, exit 1 forever
    # a command ends the cutover: what it kept for its rounds goes, and later rounds refuse
    ended = sync.end_cutover(settings, conn, confirm=no_prompt)
    assert query(conn, "select to_regnamespace(%s)", [ended.dropped_snapshot]) == [(None,)]
    # and the change stream's slot, which would hold WAL back on the server for nobody
    assert ended.dropped_slot is not None
    assert query(conn, "select from pg_replication_slots where slot_name = %s", [ended.dropped_slot]) == []
    with pytest.raises(OrchestratorError, match="the cutover ended"):
        sync.sync_round(settings, conn, confirm=no_prompt)
    assert app_row == query(
        conn, sql.SQL("select id from {} where \"userId\" = 'u-app'").format(_legacy("UserProfile"))
    )


def test_one_stale_decision_holds_back_one_user(built, tmp_path):
    settings, conn = built
    conflicts = query(
        conn,
        sql.SQL('select user_id, context_type, field, "values" from {} order by 1, 3 limit 1').format(
            sql.Identifier(settings.dry_run_schema, "migration_conflicts")
        ),
    )
    user, context_type, field, values = conflicts[0]
    decision = {"user_id": user, "context_type": context_type, "field": field, "value": json.dumps(values[1]),
                "note": None}  # fmt: skip
    with psycopg.connect(**conn.kwargs(), autocommit=True) as pg:
        decision_store.store(pg, settings.meta_schema, [decision], reviewer="test", file_name="t.csv", sha256="0")
    dry_run.dry_run(settings, conn, max_conflict_rate=EVERYTHING)
    promoting.promote(settings, conn, confirm=no_prompt)
    # the application rewrites the decided user's blobs (the conflict is gone), and another user's
    blobs_of = sql.SQL(
        'update {} set data = %s::jsonb where "contextProfileId" in (select id from {} where "userId" = %s)'
    )
    blobs_of = blobs_of.format(_legacy("Profile"), _legacy("ContextProfile"))
    execute(conn, blobs_of, ['{"location": "one place"}', user])
    other = "u02" if user != "u02" else "u03"
    execute(conn, blobs_of, ['{"ageRange": "99-100"}', other])
    round_ = sync.sync_round(settings, conn, confirm=no_prompt)  # before: refused for everyone
    assert round_.held_back == [user] and round_.run_id is not None
    age = query(conn, sql.SQL('select "ageRange" from {} where "userId" = %s').format(_legacy("UserProfile")), [other])
    assert age == [("99-100",)]
    again = sync.sync_round(settings, conn, confirm=no_prompt)
    assert again.held_back == [user]  # listed again until a reviewer decides or clears it
    with psycopg.connect(**conn.kwargs()) as pg:  # the live tables lag behind for that user: kept by difference
        assert changes.lagging_users(pg, settings.meta_schema) == [user]
        assert lag_problems(pg, settings) == []


def test_an_application_write_between_the_drift_check_and_the_write_is_never_overwritten(promoted):
    settings, conn = promoted
    execute(conn, sql.SQL("""update {} set data = data || '{{"location": "Quito"}}' where id = 'p02r'""").format(
        _legacy("Profile")))  # fmt: skip

    def app_writes_now(_plan) -> None:  # after the round's rebuild and gates, just before its transaction
        execute(conn, sql.SQL("""update {} set location = 'the app' where "userId" = 'u02'""").format(
            _legacy("UserProfile")))  # fmt: skip

    round_ = sync.sync_round(settings, conn, confirm=app_writes_now)
    assert round_.skipped == ["u02"]
    location = query(conn, sql.SQL("""select location from {} where "userId" = 'u02'""").format(_legacy("UserProfile")))
    assert location == [("the app",)]


@pytest.mark.slow  # CI runs it on one version: the audit record
def test_the_audit_after_a_refused_catch_up_names_the_review_and_every_user_rebuilt_since(built):
    from orchestrator.errors import CheckFailed

    settings, conn = built
    review = query(conn, sql.SQL("select dry_run_id from {} where scope = 'all'").format(
        sql.Identifier(settings.meta_schema, "dry_runs")))[0][0]  # fmt: skip
    blob = sql.SQL("""update {} set data = data || '{{"ageRange": "77-78"}}' where id = %s""").format(
        _legacy("Profile")
    )
    execute(conn, blob, ["p02r"])
    with pytest.raises(CheckFailed, match="conflict rate"):  # refused after its catch-up was spliced
        promoting.promote(settings, conn, catch_up=True, max_conflict_rate=0, confirm=no_prompt)
    execute(conn, blob, ["p03r"])
    result = promoting.promote(settings, conn, catch_up=True, max_conflict_rate=EVERYTHING, confirm=no_prompt)
    caught = result.caught_up.as_dict()
    # before: the refused attempt's state was "reviewed", and u02, rebuilt by it, was left out
    assert caught["reviewed_dry_run_id"] == review and caught["reviewed_users"] == 13
    assert result.caught_up.changed.users == ["u03"] and result.caught_up.rebuilt.users == ["u02", "u03"]
    assert caught["rebuilt_users"] == 2
    assert differences(conn, settings, dry_run_too=True, threshold=EVERYTHING) == []
