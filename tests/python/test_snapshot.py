"""One snapshot per run (spec §10, issue 23): every run that reads the legacy tables reads them as of one moment,
whatever the application writes meanwhile, and the reference point it records is that same moment.

Two kinds of tests, on a real server, without mocks:

- Under traffic: an application simulator in a process of its own (app_writer.py) writes the legacy tables
  every few milliseconds while a dry run, a `promote --catch-up` and `sync --follow` rounds run. Each run
  must succeed (no test or check made to fail by a write), the dry-run outputs must equal the independent
  model of the spec (spec_model.py) run on the copy of the legacy rows the run read, and once the writer has
  stopped and one more round has run, the live tables and every dry-run output equal the model of the legacy
  data as it is then, with no trace of the profiles that lived less than a second ("ghosts").
- Deterministic: a write made at a precise point inside a run, from the run's own progress callback
  (orchestrator/feedback.py: ``advance(unique_id, status)`` is called as each dbt node finishes) or from the
  ``confirm`` callback that promote and a sync round call between their gates and their publish.

Why each would fail on the behaviour before #23 (the staging views and the scoped staging tables of a
partial rebuild read the legacy tables themselves, each at its own moment, and the digests of a run were
taken before its build): said in each test.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import app_writer
import legacy_generator
import psycopg
import pytest
import spec_model
from helpers import EVERYTHING, no_prompt, subprocess_env, wait_for
from psycopg import sql
from test_differential import compare, diff_table
from test_live_sync import differences, live_rows, read_legacy

from orchestrator import changes, dry_run, live, snapshot, sync
from orchestrator import promote as promoting
from orchestrator.config import ConnInfo, Settings

GENERATED = "legacy_snapshot_app"
WRITER = Path(__file__).with_name("app_writer.py")
GHOSTS = f"%{app_writer.GHOST_PREFIX}%"  # a ghost's ids, marker values and unmapped key all hold the prefix
FAILED = ("error", "fail", "runtime error", "warn")  # the project has no warn-severity test: none may warn


# -- the stage ----------------------------------------------------------------------------------------------


def fresh(database: ConnInfo, settings: Settings, seed: int, users: int) -> Settings:
    """Generated legacy data (legacy_generator) in GENERATED, which also holds the live tables; no dry run, no
    metadata, no copy of the legacy rows from an earlier test."""
    generated = dataclasses.replace(settings, legacy_schema=GENERATED, live_schema=GENERATED)
    with psycopg.connect(**database.kwargs()) as pg:
        legacy_generator.load(pg, GENERATED, legacy_generator.generate(seed, users))
        for schema in (
            settings.dry_run_schema,
            settings.meta_schema,
            settings.partial_schema,
            settings.snapshot_schema,
        ):
            pg.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(schema)))
        pg.commit()
    return generated


def read_rows(pg, schema: str) -> dict[str, list[dict]]:
    """The legacy rows of ``schema`` (the legacy tables, or the snapshot's copy of them) as spec_model reads
    them. Chat messages: the columns the copy keeps (the model reads their context profile only)."""
    return read_legacy(pg, schema, chat_text=False)


def legacy_now(conn: ConnInfo, schema: str = GENERATED) -> dict[str, list[dict]]:
    with psycopg.connect(**conn.kwargs()) as pg:
        return read_rows(pg, schema)


def differences_from(
    conn: ConnInfo, settings: Settings, legacy: dict, *, threshold: Decimal, live_too: bool
) -> list[str]:
    """Every dry-run output (and the live tables, with ``live_too``) against the model of the legacy rows
    ``legacy``: the data of one moment, not necessarily the legacy tables' now."""
    tables = legacy["User"], legacy["ContextProfile"], legacy["Profile"]
    expected = spec_model.migrate(*tables)
    expected["migration_summary"] = spec_model.summary(
        *tables, legacy["ChatMessage"], outputs=expected, max_conflict_rate=threshold
    )
    problems = []
    with psycopg.connect(**conn.kwargs()) as pg:
        if live_too:
            for table in ("profile", "context_intent"):
                columns, rows = live_rows(pg, settings, table)
                problems += [f"live {p}" for p in diff_table(table, columns, expected[table], rows)]
        _, found = compare(pg, settings.dry_run_schema, expected)
    return problems + [f"dry run {p}" for p in found]


def outputs_of_the_copy(conn: ConnInfo, settings: Settings, threshold: Decimal) -> list[str]:
    """The dry-run outputs against the model of the snapshot's copy: what the dry-run state read, as of its
    latest moment. Holds after every run, however busy the application (the run read that copy, and only it)."""
    copy = legacy_now(conn, settings.snapshot_schema)
    return differences_from(conn, settings, copy, threshold=threshold, live_too=False)


def copy_differs_from_legacy(conn: ConnInfo, settings: Settings) -> list[str]:
    """Once the application is quiet and a round found nothing more to do, the copy is the legacy data."""
    problems = []
    with psycopg.connect(**conn.kwargs()) as pg:
        for table, columns in snapshot.TABLES.items():
            names = sql.SQL("*") if columns is None else sql.SQL(", ").join(map(sql.Identifier, columns))

            def rows(schema: str, names=names, table=table) -> set[str]:
                return {
                    row[0]
                    for row in pg.execute(
                        sql.SQL("select row(t.*)::text from (select {} from {}) as t").format(
                            names, sql.Identifier(schema, table)
                        )
                    )
                }

            legacy, copy = rows(settings.legacy_schema), rows(settings.snapshot_schema)
            if legacy != copy:
                problems.append(
                    f"{table}: only in the legacy table {sorted(legacy - copy)[:3]}, only in the copy "
                    f"{sorted(copy - legacy)[:3]}"
                )
    return problems


def holding(conn: ConnInfo, pattern: str, schemas: list[str], tables: list[tuple[str, str]] = ()) -> dict[str, int]:
    """Rows whose text matches ``pattern``, per relation, in every table and view of ``schemas`` and in the
    relations ``tables``: only those that hold some."""
    found = {}
    with psycopg.connect(**conn.kwargs()) as pg:
        relations = pg.execute(
            "select n.nspname, c.relname from pg_class as c join pg_namespace as n on n.oid = c.relnamespace"
            " where n.nspname = any(%s) and c.relkind in ('r', 'v', 'm', 'p') order by 1, 2",
            [schemas],
        ).fetchall()
        for schema, table in [*relations, *tables]:
            count = pg.execute(
                sql.SQL("select count(*) from {} as t where t::text like %s").format(sql.Identifier(schema, table)),
                [pattern],
            ).fetchone()[0]
            if count:
                found[f"{schema}.{table}"] = count
    return found


def everywhere_but_the_legacy_tables(conn: ConnInfo, settings: Settings) -> tuple[list[str], list[tuple[str, str]]]:
    """Every schema the orchestrator writes (dry run, its partial rebuild, the snapshot's copy, the metadata),
    and the live tables (in the legacy schema)."""
    with psycopg.connect(**conn.kwargs()) as pg:
        schemas = [
            row[0]
            for row in pg.execute(
                "select nspname from pg_namespace where nspname <> all(%s) and nspname not like 'pg\\_%%'",
                [["information_schema", settings.legacy_schema]],
            )
        ]
    return schemas, [(settings.live_schema, table) for table in live.LIVE_TABLES.values()]


def files_holding(directory: Path, needles: list[str]) -> list[str]:
    """The files under ``directory`` (the orchestrator's home: dbt's logs and artifacts) naming a needle."""
    found = []
    for path in directory.rglob("*"):
        if path.is_file():
            with contextlib.suppress(OSError):
                text = path.read_bytes()
                if any(needle.encode() in text for needle in needles):
                    found.append(str(path))
    return found


def users_with_profiles(conn: ConnInfo, count: int) -> list[str]:
    """``count`` users with a context profile that holds a Profile, in byte order."""
    with psycopg.connect(**conn.kwargs()) as pg:
        users = [
            row[0]
            for row in pg.execute(
                sql.SQL(
                    "select u.id from {} as u where exists (select from {} as cp"
                    ' join {} as p on p."contextProfileId" = cp.id where cp."userId" = u.id)'
                    ' order by u.id collate "C"'
                ).format(
                    sql.Identifier(GENERATED, "User"),
                    sql.Identifier(GENERATED, "ContextProfile"),
                    sql.Identifier(GENERATED, "Profile"),
                )
            )
        ]
    assert len(users) >= count
    return users[:count]


def touch_blob(conn: ConnInfo, user: str, location: str) -> None:
    """An application write to one of ``user``'s profiles: the user changed."""
    with psycopg.connect(**conn.kwargs(), autocommit=True) as pg:
        updated = pg.execute(
            sql.SQL(
                "update {} set data = coalesce(data, '{{}}'::jsonb) || jsonb_build_object('location', %s::text)"
                ' where id = (select min(p.id collate "C") from {} as p join {} as cp on cp.id = p."contextProfileId"'
                " where cp.\"userId\" = %s and jsonb_typeof(p.data) = 'object')"
            ).format(
                sql.Identifier(GENERATED, "Profile"),
                sql.Identifier(GENERATED, "Profile"),
                sql.Identifier(GENERATED, "ContextProfile"),
            ),
            [location, user],
        ).rowcount
        if not updated:  # no object blob: give one of its profiles one
            updated = pg.execute(
                sql.SQL(
                    "update {} set data = jsonb_build_object('location', %s::text) where id = (select min(p.id"
                    ' collate "C") from {} as p join {} as cp on cp.id = p."contextProfileId" where cp."userId" = %s)'
                ).format(
                    sql.Identifier(GENERATED, "Profile"),
                    sql.Identifier(GENERATED, "Profile"),
                    sql.Identifier(GENERATED, "ContextProfile"),
                ),
                [location, user],
            ).rowcount
    assert updated == 1


def live_rows_of(conn: ConnInfo, users: list[str]) -> dict[str, int]:
    with psycopg.connect(**conn.kwargs()) as pg:
        return {
            table: pg.execute(
                sql.SQL('select count(*) from {} where "userId" = any(%s)').format(sql.Identifier(GENERATED, table)),
                [users],
            ).fetchone()[0]
            for table in live.LIVE_TABLES.values()
        }


def left_out_in_audit(conn: ConnInfo, settings: Settings, run_id: str) -> list[str] | None:
    with psycopg.connect(**conn.kwargs()) as pg:
        return pg.execute(
            sql.SQL("select left_out_users from {} where run_id = %s").format(
                sql.Identifier(settings.meta_schema, "runs")
            ),
            [run_id],
        ).fetchone()[0]


def by_bytes(ids) -> list[str]:
    return sorted(ids, key=str.encode)  # the orchestrator's order: COLLATE "C"


def failed_nodes(outcome: dry_run.DryRunOutcome) -> list[tuple[str, str]]:
    return [(node.unique_id, node.status) for node in outcome.dbt.nodes if node.status in FAILED]


# -- hooks inside a run ---------------------------------------------------------------------------------------


class Hook:
    """A Feedback (orchestrator/feedback.py) that runs ``action`` once, as dbt node ``node`` finishes in the
    ``bar``-th progress bar the run opens (``node`` None: the bar's first node). dbt swallows an exception
    raised in its callbacks: the hook keeps it, and ``check`` raises it (or says the hook never ran)."""

    def __init__(self, action, node: str | None = None, bar: int = 1):
        self.action, self.node, self.bar = action, node, bar
        self.bars = 0
        self.finished: list[tuple[int, str, str]] = []  # (bar, unique_id, status), in the order they finished
        self.fired_after: list[str] | None = None  # the nodes of the bar finished when the action ran
        self.error: BaseException | None = None
        self.notes: list[str] = []

    def note(self, text: str) -> None:
        self.notes.append(text)

    @contextlib.contextmanager
    def progress(self, label: str, total: int | None):
        self.bars += 1
        bar = self.bars

        def advance(unique_id: str, status: str) -> None:
            self.finished.append((bar, unique_id, status))
            if self.fired_after is None and bar == self.bar and self.node in (None, unique_id):
                self.fired_after = [node for b, node, _ in self.finished if b == bar]
                try:
                    self.action()
                except BaseException as exc:  # noqa: BLE001 (dbt would swallow it)
                    self.error = exc

        yield advance

    def check(self) -> None:
        assert self.fired_after is not None, f"node {self.node} never finished in bar {self.bar}: {self.finished}"
        if self.error is not None:
            raise self.error


# -- under traffic ----------------------------------------------------------------------------------------------


class AppProcess:
    """app_writer.py in a process of its own, writing GENERATED until ``stop``."""

    def __init__(self, conn: ConnInfo, home: Path, directory: Path, seed: int, min_ms: float, max_ms: float):
        self.ghost_log = directory / f"ghosts-{seed}.log"
        self.out_path, self.err_path = directory / f"writer-{seed}.out", directory / f"writer-{seed}.err"
        self.out, self.err = self.out_path.open("w"), self.err_path.open("w")
        self.process = subprocess.Popen(
            [
                sys.executable,
                str(WRITER),
                "--schema",
                GENERATED,
                "--seed",
                str(seed),
                "--min-ms",
                str(min_ms),
                "--max-ms",
                str(max_ms),
                "--ghost-log",
                str(self.ghost_log),
                "--seconds",
                "600",  # a safety net: a writer the test failed to stop ends by itself
            ],
            env=subprocess_env(conn, home),  # the password as PGPASSWORD, never on the command line
            stdout=self.out,
            stderr=self.err,
        )
        wait_for(lambda: "ready" in self.out_path.read_text() or self.process.poll() is not None, 30, "the writer")
        assert self.process.poll() is None, self.err_path.read_text()

    def stop(self) -> dict:
        """SIGTERM, then its summary: ``writes``, ``kinds``, ``ghosts``, ``errors``."""
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=60)
        self.close()
        assert code == 0, self.err_path.read_text()
        return json.loads(self.out_path.read_text().splitlines()[-1])

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.out.close()
        self.err.close()

    def markers(self) -> list[str]:
        return self.ghost_log.read_text().split() if self.ghost_log.exists() else []


class Notes:
    """The feedback of ``sync.follow``: a refused round is a note."""

    def __init__(self):
        self.lines: list[str] = []

    def note(self, text: str) -> None:
        self.lines.append(text)

    @contextlib.contextmanager
    def progress(self, label: str, total: int | None):
        yield lambda unique_id, status: None


# (seed, users, write interval in ms, dry-run batches, follow rounds); the second PostgreSQL version runs the
# first (CI's), the others are heavier traffic or more data, a batched dry run among them
TRAFFIC = [
    pytest.param(41, 100, 20, 150, 1, 4, id="ci"),
    pytest.param(42, 300, 5, 40, 3, 6, id="busy-batched", marks=pytest.mark.slow),
    pytest.param(43, 150, 60, 400, 1, 6, id="slow-writes", marks=pytest.mark.slow),
    pytest.param(44, 250, 10, 60, 2, 5, id="busy-two-batches", marks=pytest.mark.slow),
]


@pytest.mark.parametrize(("seed", "users", "min_ms", "max_ms", "batches", "rounds"), TRAFFIC)
def test_every_run_reads_one_snapshot_under_traffic(
    seed, users, min_ms, max_ms, batches, rounds, database, settings, state_home, tmp_path
):
    """A dry run, `promote --catch-up` and `sync --follow` rounds while another process writes the legacy
    tables all the time. On the old behaviour the dry run's staging views were read model by model, minutes
    apart: a sign-up read by one model and not the next, a profile moved between two reads, a ghost read by
    one model only, made a test or a summary check fail (the dry run not promotable) or the outputs differ
    from any one moment's data; and the digests, taken before the build, did not describe what the build
    read, so a write racing the build could be missed for good (the final differences)."""
    generated = fresh(database, settings, seed, users)
    notes = Notes()
    app = AppProcess(database, state_home, tmp_path, seed, min_ms, max_ms)
    try:
        wait_for(lambda: len(app.markers()) >= 1, 30, "the writer's first ghost")
        outcome = dry_run.dry_run(generated, database, max_conflict_rate=EVERYTHING, batches=batches, feedback=notes)
        assert outcome.record["status"] == "built" and failed_nodes(outcome) == []
        # what the build read is the copy: its outputs are the model's of that one moment
        assert outputs_of_the_copy(database, generated, EVERYTHING) == []

        result = promoting.promote(generated, database, max_conflict_rate=EVERYTHING, catch_up=True, confirm=no_prompt)
        assert result.caught_up is not None and result.caught_up.changed  # the writer wrote since the snapshot
        assert result.caught_up.outcome.record["status"] == "built"
        assert outputs_of_the_copy(database, generated, EVERYTHING) == []

        done: list[sync.RoundResult] = []
        inconsistent: list[tuple[int, list[str]]] = []

        def on_round(round_: sync.RoundResult) -> None:
            done.append(round_)
            problems = outputs_of_the_copy(database, generated, EVERYTHING)
            if problems:
                inconsistent.append((len(done), problems))

        skipped = sync.follow(
            generated,
            database,
            interval=0.1,
            on_round=on_round,
            max_conflict_rate=EVERYTHING,
            rounds=rounds,
            feedback=notes,
        )
        # every round ran (none refused: no gate failed, no lock was held past the timeout) and most wrote
        assert [line for line in notes.lines if line.startswith("round refused")] == []
        assert skipped == [] and len(done) == rounds
        assert sum(1 for round_ in done if round_.run_id is not None) >= rounds // 2, [r.as_dict() for r in done]
        assert inconsistent == []
    except BaseException:
        app.close()  # killed: the failure above is the one to see
        raise
    summary = app.stop()
    # the writer wrote everything it should have (else this test tests less than it says)
    assert summary["ghosts"] > 0 and set(summary["kinds"]) == set(app_writer.KINDS), summary

    last = sync.sync_round(generated, database, max_conflict_rate=EVERYTHING, confirm=no_prompt)
    again = sync.sync_round(generated, database, max_conflict_rate=EVERYTHING, confirm=no_prompt)
    assert again.run_id is None and not again.changed, (last.as_dict(), again.as_dict())
    assert differences(database, generated, dry_run_too=True, threshold=EVERYTHING) == []
    assert copy_differs_from_legacy(database, generated) == []
    markers = app.markers()
    assert len(markers) == summary["ghosts"]
    schemas, live_tables = everywhere_but_the_legacy_tables(database, generated)
    assert {settings.dry_run_schema, settings.snapshot_schema} <= set(schemas)
    # no ghost in any table of the dry-run schema (outputs, both logs, the summary's inputs), nor in the copy,
    # the partial rebuild or the live tables; and the writer buried every one of them. Not the metadata: a
    # round whose snapshot caught a ghost alive published it (it existed at that reference point), so the next
    # round's rollback backup of those live rows and the rebuilt owners' ids may name it, as history
    assert holding(database, GHOSTS, [s for s in schemas if s != generated.meta_schema], live_tables) == {}
    assert holding(database, GHOSTS, [GENERATED]) == {}


# -- deterministic: a write at a precise point of a run -----------------------------------------------------------


def test_a_sign_up_and_a_deletion_between_two_staging_reads_are_the_next_runs(database, settings):
    """A sign-up and an account deletion made as the dry run's `stg_legacy__users` finishes. On the old
    behaviour every model after that point read the legacy tables after the writes (the new user in the
    profiles, the deleted one gone from them, the deleted user's context profiles orphans), while the digests
    were taken before the build: the outputs were not those of the data before the writes."""
    generated = fresh(database, settings, 51, 30)
    before = legacy_now(database)
    victim = users_with_profiles(database, 1)[0]
    with psycopg.connect(**database.kwargs(), autocommit=True) as pg:
        app = app_writer.App(pg, GENERATED, 51)
        made: list[str] = []

        def sign_up_and_delete() -> None:
            with pg.transaction():
                made.append(app.sign_up())
            with pg.transaction():
                app.delete_account(victim, everything=False)  # the "User" row only: its contexts stay, orphans

        hook = Hook(sign_up_and_delete, node="model.migration.stg_legacy__users")
        outcome = dry_run.dry_run(generated, database, max_conflict_rate=EVERYTHING, feedback=hook)
    hook.check()
    after = legacy_now(database)
    assert {u["id"] for u in after["User"]} == {u["id"] for u in before["User"]} - {victim} | set(made)
    assert outcome.record["status"] == "built" and failed_nodes(outcome) == []
    assert outcome.counts()["tests_passed"] > 0
    assert outcome.as_dict()["legacy_unchanged_during_build"] is False  # the writes happened during the build
    assert differences_from(database, generated, before, threshold=EVERYTHING, live_too=False) == []

    # the catch-up rebuilds exactly the two users the writes changed, then everything is current
    result = promoting.promote(generated, database, max_conflict_rate=EVERYTHING, catch_up=True, confirm=no_prompt)
    assert result.caught_up.changed == changes.Changes(users=by_bytes([*made, victim]), profiles=[])
    assert result.left_out == []
    assert differences(database, generated, dry_run_too=True, threshold=EVERYTHING) == []


@pytest.mark.slow  # CI runs it on one version: the traffic test [ci] runs deletions during a run on both versions
def test_a_user_deleted_before_the_publish_is_left_out_and_handled_next_round(database, settings):
    """Users deleted between a catch-up's rebuild (or a sync round's) and its publish: in promote's and the
    round's ``confirm`` callback, after the gates, before the publish transaction. On the old behaviour the
    publish wrote their rows all the same: a foreign-key violation on the live tables (their "User" is gone),
    the promote failed (exit 2), and so did every sync round until someone intervened."""
    generated = fresh(database, settings, 52, 30)
    dry_run.dry_run(generated, database, max_conflict_rate=EVERYTHING)
    rebuilt, reviewed = users_with_profiles(database, 2)
    touch_blob(database, rebuilt, "Lisbon")  # the catch-up rebuilds this one; the other is the review's

    def delete_both(plan) -> None:
        with psycopg.connect(**database.kwargs(), autocommit=True) as pg:
            app = app_writer.App(pg, GENERATED, 52)
            with pg.transaction():
                app.delete_account(rebuilt, everything=False)
            with pg.transaction():
                app.delete_account(reviewed, everything=True)

    # the first promote: it creates the live tables
    result = promoting.promote(generated, database, max_conflict_rate=EVERYTHING, catch_up=True, confirm=delete_both)
    assert result.caught_up.changed.users == [rebuilt]
    assert result.left_out == by_bytes([rebuilt, reviewed])
    assert result.as_dict(GENERATED)["left_out_users"] == result.left_out
    assert left_out_in_audit(database, generated, result.run_id) == result.left_out
    assert live_rows_of(database, [rebuilt, reviewed]) == {"UserProfile": 0, "ContextIntent": 0}
    with psycopg.connect(**database.kwargs()) as pg:  # (they are in the dry run: the users were written)
        assert (
            pg.execute(
                sql.SQL("select count(*) from {} where user_id = any(%s)").format(
                    sql.Identifier(settings.dry_run_schema, "profile")
                ),
                [[rebuilt, reviewed]],
            ).fetchone()[0]
            == 2
        )
    round_ = sync.sync_round(generated, database, confirm=no_prompt)
    assert set(round_.changed.users) == {rebuilt, reviewed} and round_.left_out == []
    assert differences(database, generated, dry_run_too=True, threshold=EVERYTHING) == []

    # the same in a sync round: two users changed, one deleted before the round's publish
    gone, kept = users_with_profiles(database, 2)
    touch_blob(database, gone, "Oslo")
    touch_blob(database, kept, "Bergen")

    def delete_one(plan) -> None:
        with psycopg.connect(**database.kwargs(), autocommit=True) as pg:
            app_writer.App(pg, GENERATED, 53).delete_account(gone, everything=True)

    round_ = sync.sync_round(generated, database, confirm=delete_one)
    assert round_.changed.users == by_bytes([gone, kept])
    assert round_.left_out == [gone] and round_.written_users == 1
    assert round_.as_dict()["left_out_users"] == [gone]
    assert left_out_in_audit(database, generated, round_.run_id) == [gone]
    assert live_rows_of(database, [gone]) == {"UserProfile": 0, "ContextIntent": 0}
    assert live_rows_of(database, [kept])["UserProfile"] == 1
    following = sync.sync_round(generated, database, confirm=no_prompt)
    assert following.changed.users == [gone] and following.left_out == []
    assert differences(database, generated, dry_run_too=True, threshold=EVERYTHING) == []
    assert sync.sync_round(generated, database, confirm=no_prompt).run_id is None


def test_a_profile_that_lived_between_two_reference_points_leaves_nothing(database, settings, state_home):
    """Ghosts (profiles inserted after a run's snapshot, as the run's partial rebuild starts, and deleted
    before the next round) in a changed user's context profile (in the rebuild's scope), in another user's,
    and naming no context profile; once during `promote --catch-up`, once during a sync round. On the old
    behaviour the rebuild's staging tables, read after the insert, took the in-scope ghost's values into the
    user's profile and its unmapped key into the log (and the summary rebuilt from the staging views counted
    every ghost), while the digests taken before the build never saw it: nothing afterwards ever removed it."""
    generated = fresh(database, settings, 53, 30)
    dry_run.dry_run(generated, database, max_conflict_rate=EVERYTHING)
    promoting.promote(generated, database, max_conflict_rate=EVERYTHING, confirm=no_prompt)
    markers: list[str] = []
    users = users_with_profiles(database, 4)
    with psycopg.connect(**database.kwargs(), autocommit=True) as pg:
        app = app_writer.App(pg, GENERATED, 53)
        for run, (changed, other) in (("catch-up", users[:2]), ("sync round", users[2:])):
            touch_blob(database, changed, f"before the {run}")
            with psycopg.connect(**database.kwargs()) as read:
                (context,) = read.execute(
                    sql.SQL('select min(id collate "C") from {} where "userId" = %s').format(
                        sql.Identifier(GENERATED, "ContextProfile")
                    ),
                    [changed],
                ).fetchone()

            def haunt(changed=changed, other=other, context=context) -> None:
                markers.append(app.ghost("existing", context=context))  # in the scope of the rebuild
                markers.append(app.ghost("own", user=other))  # another user's, with its own context profile
                markers.append(app.ghost("dangling"))  # an orphan Profile

            hook = Hook(haunt)  # the first node of the partial rebuild: after the run's snapshot
            if run == "catch-up":
                result = promoting.promote(
                    generated, database, max_conflict_rate=EVERYTHING, catch_up=True, confirm=no_prompt, feedback=hook
                )
                assert result.caught_up.changed == changes.Changes(users=[changed], profiles=[])
            else:
                round_ = sync.sync_round(generated, database, confirm=no_prompt, feedback=hook)
                assert round_.changed == changes.Changes(users=[changed], profiles=[])
            hook.check()
            with psycopg.connect(**database.kwargs()) as read:
                held = read.execute(
                    sql.SQL("select count(*) from {} where id like %s").format(sql.Identifier(GENERATED, "Profile")),
                    [GHOSTS],
                ).fetchone()[0]
            assert held == 3  # the ghosts were there while the run went on
            assert app.bury(everyone=True) == 3
            # the next round: the ghosts lived and died between two reference points, nothing changed
            nothing = sync.sync_round(generated, database, confirm=no_prompt)
            assert nothing.run_id is None and not nothing.changed, nothing.as_dict()
            schemas, live_tables = everywhere_but_the_legacy_tables(database, generated)
            assert holding(database, GHOSTS, schemas, live_tables) == {}, run
            assert files_holding(state_home, markers) == [], run  # nor in dbt's logs and artifacts
            assert differences(database, generated, dry_run_too=True, threshold=EVERYTHING) == [], run


@pytest.mark.slow  # CI runs it on one version: the traffic test [ci] runs writes during a catch-up on both versions
def test_a_context_inserted_during_a_catch_ups_rebuild_is_no_orphan(database, settings):
    """A context profile and its profile inserted for a user in the catch-up's scope as its partial rebuild's
    `stg_legacy__context_profiles` finishes. On the old behaviour the rebuild's scoped staging tables read the
    legacy tables one after the other: `stg_legacy__profiles`, built after the insert, held the new profile
    (its context profile is the user's), `stg_legacy__context_profiles` did not hold its context profile, and
    the catch-up logged the profile as an orphan_profile of a context profile that exists."""
    generated = fresh(database, settings, 54, 30)
    dry_run.dry_run(generated, database, max_conflict_rate=EVERYTHING)
    (user,) = users_with_profiles(database, 1)
    touch_blob(database, user, "Porto")
    moment = legacy_now(database)  # the catch-up's snapshot: the hook's insert is the only write after
    late_context, late_profile = "late-cp-54", "late-p-54"

    def add_a_context() -> None:
        with psycopg.connect(**database.kwargs(), autocommit=True) as pg:
            app = app_writer.App(pg, GENERATED, 54)
            with pg.transaction():
                app.insert_context(user, late_context, "service")
                app.insert_profile(late_profile, late_context, {"serviceType": "late", "location": "late"})

    hook = Hook(add_a_context, node="model.migration.stg_legacy__context_profiles")
    result = promoting.promote(
        generated, database, max_conflict_rate=EVERYTHING, catch_up=True, confirm=no_prompt, feedback=hook
    )
    hook.check()
    assert result.caught_up.changed == changes.Changes(users=[user], profiles=[])
    with psycopg.connect(**database.kwargs()) as pg:
        for schema in (settings.dry_run_schema, settings.partial_schema):
            logged = pg.execute(
                sql.SQL("select reason from {} where legacy_profile_id = %s or context_profile_id = %s").format(
                    sql.Identifier(schema, "migration_unmapped_fields")
                ),
                [late_profile, late_context],
            ).fetchall()
            assert logged == [], (schema, logged)
    # the catch-up's outputs, live and in the dry-run schema, are those of its moment: without the new context
    assert differences_from(database, generated, moment, threshold=EVERYTHING, live_too=True) == []
    round_ = sync.sync_round(generated, database, confirm=no_prompt)
    assert round_.changed == changes.Changes(users=[user], profiles=[])
    assert differences(database, generated, dry_run_too=True, threshold=EVERYTHING) == []
    with psycopg.connect(**database.kwargs()) as pg:
        (intents,) = pg.execute(
            sql.SQL("""select count(*) from {} where "userId" = %s and "serviceType" = 'late'""").format(
                sql.Identifier(GENERATED, "ContextIntent")
            ),
            [user],
        ).fetchone()
    assert intents == 1  # (the round took the new context in)


def test_the_writer_stops_cleanly_and_buries_its_ghosts(database, settings, state_home, tmp_path):
    """app_writer.py itself: it writes every kind of write, logs each ghost, and on SIGTERM deletes the ghosts
    still alive and exits 0 (the traffic tests rely on both)."""
    fresh(database, settings, 55, 20)
    app = AppProcess(database, state_home, tmp_path, 55, 1, 5)
    try:
        wait_for(lambda: len(app.markers()) >= 5, 60, "five ghosts")
    finally:
        summary = app.stop()
    assert summary["ghosts"] == len(app.markers()) >= 5 and summary["writes"] > 0
    assert holding(database, GHOSTS, [GENERATED]) == {}
    assert os.path.getsize(app.ghost_log) > 0
    # a count of writes stops it too
    counted = subprocess.run(
        [
            sys.executable,
            str(WRITER),
            "--schema",
            GENERATED,
            "--seed",
            "56",
            "--count",
            "20",
            "--min-ms",
            "0",
            "--max-ms",
            "1",
        ],  # fmt: skip
        env=subprocess_env(database, state_home),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert counted.returncode == 0, counted.stderr
    assert json.loads(counted.stdout.splitlines()[-1])["writes"] == 20
    assert holding(database, GHOSTS, [GENERATED]) == {}
