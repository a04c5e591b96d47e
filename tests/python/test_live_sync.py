"""A live application (spec §10): `promote --catch-up` and `sync`, on a real server.

The differential test drives random sequences of legacy writes (inserts, updates, deletes, moves of rows
between users, rows that become or stop being orphans, writes that change nothing) interleaved with sync
rounds and catch-up promotes; after each, the live tables (and, after a catch-up, every dry-run output
and the summary) must equal the independent Python model of the spec (spec_model.py) run from scratch on
the legacy data as it is then.
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from decimal import Decimal

import legacy_generator
import psycopg
import pytest
import spec_model
from helpers import EVERYTHING, invoke, no_prompt, query
from psycopg import sql
from spec_model import SQL_NULL
from test_differential import compare, diff_table, read_table

from orchestrator import changes, dry_run, fixtures, live, metadata, stream, sync
from orchestrator import promote as promoting
from orchestrator import rollback as rolling_back
from orchestrator.dbt import ParsedProjects
from orchestrator.errors import Busy, CheckFailed
from orchestrator.feedback import SILENT

GENERATED = "legacy_live_app"
FIXTURES = "legacy_fixtures"


def execute(conn, statement, params=None) -> None:
    with psycopg.connect(**conn.kwargs(), autocommit=True) as pg:
        pg.execute(statement, params)


def audit(conn, settings) -> list[tuple]:
    with psycopg.connect(**conn.kwargs()) as pg:
        return pg.execute(
            sql.SQL(
                "select command, status, scope_users, reviewed_users, rebuilt_users from {} order by started_at"
            ).format(sql.Identifier(settings.meta_schema, "runs"))
        ).fetchall()


# -- the legacy data as the model reads it, and the live tables as dry-run rows ----------------------------


def read_legacy(pg, schema: str, *, chat_text: bool = True) -> dict[str, list[dict]]:
    """The legacy rows of ``schema`` as spec_model reads them; without ``chat_text``, the chat messages'
    columns a snapshot's copy keeps (the model reads their context profile only)."""

    def rows(query: str) -> list[dict]:
        cur = pg.execute(sql.SQL(query).format(schema=sql.Identifier(schema)))
        return [dict(zip([c.name for c in cur.description], row, strict=True)) for row in cur.fetchall()]

    profiles = rows(
        'select id, "contextProfileId", data::text as data, completeness, missing, "createdAt", "updatedAt"'
        ' from {schema}."Profile"'
    )
    for profile in profiles:
        profile["data"] = SQL_NULL if profile["data"] is None else json.loads(profile["data"], parse_float=Decimal)
    return {
        "User": rows('select id, email, name, "createdAt", "updatedAt" from {schema}."User"'),
        "ContextProfile": rows(
            'select id, "userId", "contextType"::text as "contextType", "tonePreference", "createdAt", "updatedAt"'
            ' from {schema}."ContextProfile"'
        ),
        "Profile": profiles,
        "ChatMessage": rows(
            'select id, "contextProfileId", ' + ("role, content, " if chat_text else "") + '"createdAt"'
            ' from {schema}."ChatMessage"'
        ),
    }


def live_rows(pg, settings, table: str) -> tuple[dict[str, str], list[dict]]:
    """A live table read as its dry-run table (snake_case columns, the dry run's types)."""
    columns, _ = read_table(pg, settings.dry_run_schema, table)
    live_table = live.LIVE_TABLES[table]
    select = sql.SQL(", ").join(
        sql.SQL("{}::text as {}").format(sql.Identifier(live.camel(c)), sql.Identifier(c))
        if t in ("jsonb", "USER-DEFINED") or c == "context_type"
        else sql.SQL("{} as {}").format(sql.Identifier(live.camel(c)), sql.Identifier(c))
        for c, t in columns.items()
    )
    rows = []
    for record in pg.execute(
        sql.SQL("select {} from {}").format(select, sql.Identifier(settings.live_schema, live_table))
    ):
        row = dict(zip(columns, record, strict=True))
        for column, data_type in columns.items():
            if data_type == "jsonb":
                row[column] = SQL_NULL if row[column] is None else json.loads(row[column], parse_float=Decimal)
        rows.append(row)
    return columns, rows


def differences(conn, settings, *, dry_run_too: bool, threshold: Decimal) -> list[str]:
    """The live tables (and the dry-run outputs) against the model, from scratch, of the legacy data now."""
    with psycopg.connect(**conn.kwargs()) as pg:
        legacy = read_legacy(pg, settings.legacy_schema)
        tables = (legacy["User"], legacy["ContextProfile"], legacy["Profile"])
        expected = spec_model.migrate(*tables)
        problems = []
        for table in ("profile", "context_intent"):
            columns, rows = live_rows(pg, settings, table)
            problems += [f"live {p}" for p in diff_table(table, columns, expected[table], rows)]
        if dry_run_too:
            expected["migration_summary"] = spec_model.summary(
                *tables, legacy["ChatMessage"], outputs=expected, max_conflict_rate=threshold
            )
            _, found = compare(pg, settings.dry_run_schema, expected)
            problems += [f"dry run {p}" for p in found]
        problems += lag_problems(pg, settings)
    return problems


def lag_problems(pg, settings) -> list[str]:
    """The users the live tables lag behind the dry-run state by, as kept by difference (when known),
    against a full comparison of both states' reads."""
    known = pg.execute(
        sql.SQL("select exists (select from {})").format(sql.Identifier(settings.meta_schema, changes.LAG_KNOWN))
    ).fetchone()[0]
    if not known:
        return []
    kept = changes.lagging_users(pg, settings.meta_schema)
    counted = changes.differing_users(pg, settings.meta_schema, "live", "dry_run")
    return [] if kept == counted else [f"lagging users kept {kept}, counted {counted}"]


# -- random legacy writes -------------------------------------------------------------------------------

BLOBS = [
    '{"location": "Lisbon", "coreValues": ["kindness", "humour"]}',
    '{"location": " Oslo ", "beliefs": {"religion": "none", "politics": 1.50}, "friendshipDepth": "deep"}',
    '{"ageRange": "30-40", "relationshipTimeline": "soon", "unknownKey": [1, 2]}',
    '{"location": ["not", "a", "scalar"], "serviceType": "plumbing"}',
    '["not", "an", "object"]',
    "null",
    '{"name": "Bo", "lifestyle": {"pets": null, "smoker": false}, "partnershipType": "cofounder"}',
]
CONTEXTS = ["romantic", "friendship", "professional", "creative", "service"]


class Writer:
    """Random writes to the legacy tables, as the application would make them (seeded)."""

    def __init__(self, conn, schema: str, seed: int):
        self.conn, self.schema, self.rng, self.serial = conn, schema, random.Random(seed), 0

    def _table(self, name: str) -> sql.Identifier:
        return sql.Identifier(self.schema, name)

    def _pick(self, pg, table: str, where: str = "true") -> str | None:
        ids = [
            row[0]
            for row in pg.execute(
                sql.SQL("select id from {} where " + where + ' order by id collate "C"').format(self._table(table))
            ).fetchall()
        ]
        return self.rng.choice(ids) if ids else None

    def _new_id(self, prefix: str) -> str:
        self.serial += 1
        return f"{prefix}-w{self.rng.randrange(10**6)}-{self.serial}"

    def write(self, pg) -> str:
        """One random write; returns what it did."""
        kind = self.rng.choice(
            [
                "update blob",
                "update blob",
                "new user",
                "new context",
                "delete profile",
                "delete context",
                "delete user",
                "move profile",
                "move context",
                "orphan profile",
                "touch",
                "new message",
                "delete message",
                "move message",
            ]  # fmt: skip
        )
        user, context, profile = self._pick(pg, "User"), self._pick(pg, "ContextProfile"), self._pick(pg, "Profile")
        t = sql.SQL
        if kind == "update blob" and profile:
            pg.execute(t("update {} set data = %s::jsonb where id = %s").format(self._table("Profile")),
                       [self.rng.choice(BLOBS), profile])  # fmt: skip
        elif kind == "new user":
            user_id, context_id = self._new_id("u"), self._new_id("cp")
            pg.execute(t('insert into {} (id, "updatedAt") values (%s, now())').format(self._table("User")), [user_id])
            self._new_context(pg, user_id, context_id)
        elif kind == "new context" and user:
            self._new_context(pg, user, self._new_id("cp"))
        elif kind == "delete profile" and profile:
            pg.execute(t("delete from {} where id = %s").format(self._table("Profile")), [profile])
        elif kind == "delete context" and context:  # its Profiles become orphans
            pg.execute(t("delete from {} where id = %s").format(self._table("ContextProfile")), [context])
        elif kind == "delete user" and user:  # its live rows go through ON DELETE CASCADE
            pg.execute(t("delete from {} where id = %s").format(self._table("User")), [user])
        elif kind == "move profile" and profile and context:
            target = context if self.rng.random() < 0.8 else self._new_id("dangling")
            pg.execute(t('update {} set "contextProfileId" = %s where id = %s').format(self._table("Profile")),
                       [target, profile])  # fmt: skip
        elif kind == "move context" and context and user:
            pg.execute(t('update {} set "userId" = %s where id = %s').format(self._table("ContextProfile")),
                       [user, context])  # fmt: skip
        elif kind == "orphan profile":
            pg.execute(
                t(
                    'insert into {} (id, "contextProfileId", data, "updatedAt") values (%s, %s, %s::jsonb, now())'
                ).format(self._table("Profile")),
                [self._new_id("p"), self._new_id("gone"), self.rng.choice(BLOBS)],
            )
        elif kind == "new message":  # no owner changes: the summary's chat-message counts do
            target = context if context and self.rng.random() < 0.8 else self._new_id("dangling")
            pg.execute(t('insert into {} (id, "contextProfileId", role, content) values (%s, %s, %s, %s)')
                       .format(self._table("ChatMessage")), [self._new_id("m"), target, "user", "hello"])  # fmt: skip
        elif kind == "delete message" and (message := self._pick(pg, "ChatMessage")):
            pg.execute(t("delete from {} where id = %s").format(self._table("ChatMessage")), [message])
        elif kind == "move message" and context and (message := self._pick(pg, "ChatMessage")):
            pg.execute(t('update {} set "contextProfileId" = %s where id = %s').format(self._table("ChatMessage")),
                       [context, message])  # fmt: skip
        elif kind == "touch" and user:  # an update that changes nothing: a new row version all the same
            pg.execute(t('update {} set "updatedAt" = "updatedAt" where id = %s').format(self._table("User")), [user])
        return kind

    def _new_context(self, pg, user_id: str, context_id: str) -> None:
        pg.execute(
            sql.SQL('insert into {} (id, "userId", "contextType", "updatedAt") values (%s, %s, %s::{}, now())').format(
                self._table("ContextProfile"), sql.Identifier(self.schema, "RelationshipContextType")
            ),
            [context_id, user_id, self.rng.choice(CONTEXTS)],
        )
        pg.execute(
            sql.SQL(
                'insert into {} (id, "contextProfileId", data, "updatedAt") values (%s, %s, %s::jsonb, now())'
            ).format(self._table("Profile")),
            [self._new_id("p"), context_id, self.rng.choice(BLOBS)],
        )

    def writes(self, count: int) -> list[str]:
        with psycopg.connect(**self.conn.kwargs(), autocommit=True) as pg:
            return [self.write(pg) for _ in range(count)]


# -- the differential test --------------------------------------------------------------------------------


# the second seed is more of the same SQL, and test_stream's fallbacks run the digests' SQL on both
# versions: the second PostgreSQL version runs the first seed only
@pytest.mark.parametrize(
    ("seed", "source"),
    [
        (11, "auto"),
        pytest.param(12, "auto", marks=pytest.mark.slow),
        pytest.param(13, "digests", marks=pytest.mark.slow),
    ],
)
def test_catch_up_and_sync_follow_random_writes(seed, source, database, settings, monkeypatch):
    """Dry run → writes → promote --catch-up → (writes → sync) x3 → new review → writes → catch-up → sync;
    after each step the live tables equal a from-scratch migration of the legacy data as it is then, and
    the dry-run state's summary (its counts kept by difference) equals one counted from scratch. With the
    change stream (the embedded server offers it) and with the digests."""
    monkeypatch.setenv(stream.SOURCE_VAR, source)
    generated = dataclasses.replace(settings, legacy_schema=GENERATED, live_schema=GENERATED)
    with psycopg.connect(**database.kwargs()) as pg:
        legacy_generator.load(pg, GENERATED, legacy_generator.generate(seed, 120))
        for schema in (settings.dry_run_schema, settings.meta_schema):
            pg.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(schema)))
        pg.commit()
    writer = Writer(database, GENERATED, seed)
    dry_run.dry_run(generated, database)
    writes = writer.writes(12)
    with pytest.raises(CheckFailed, match="--catch-up"):
        promoting.promote(generated, database, max_conflict_rate=EVERYTHING, confirm=no_prompt)
    result = promoting.promote(generated, database, max_conflict_rate=EVERYTHING, catch_up=True, confirm=no_prompt)
    assert result.caught_up is not None and result.caught_up.changed, writes
    assert differences(database, generated, dry_run_too=True, threshold=EVERYTHING) == [], writes

    for step in range(3):
        writes = writer.writes(8)
        round_ = sync.sync_round(generated, database, confirm=no_prompt)
        assert round_.changed, writes
        assert differences(database, generated, dry_run_too=True, threshold=EVERYTHING) == [], (step, writes)
        assert sync.sync_round(generated, database, confirm=no_prompt).run_id is None  # nothing left to do

    # a new review while the application writes on, then its catch-up promote and more rounds
    dry_run.dry_run(generated, database, max_conflict_rate=EVERYTHING)
    writes = writer.writes(10)
    promoting.promote(generated, database, catch_up=True, confirm=no_prompt)
    assert differences(database, generated, dry_run_too=True, threshold=EVERYTHING) == [], writes
    writes = writer.writes(10)
    sync.sync_round(generated, database, confirm=no_prompt)
    assert differences(database, generated, dry_run_too=True, threshold=EVERYTHING) == [], writes

    # rollback undoes one round at a time; the next round does its work again
    live_before = live_dump(database, GENERATED)
    writes = writer.writes(6)
    round_ = sync.sync_round(generated, database, confirm=no_prompt)
    undone = rolling_back.rollback(generated, database, drop=False, confirm=no_prompt)
    assert undone.undone_run_id == round_.run_id and undone.undone_command == "sync"
    # as before the round, but for the rows of users the writes deleted (they went by ON DELETE CASCADE)
    after = live_dump(database, GENERATED)
    users_now = {user for rows in after.values() for user, _ in rows} | existing_users(database)
    assert after == {t: [r for r in rows if r[0] in users_now] for t, rows in live_before.items()}, writes
    again = sync.sync_round(generated, database, confirm=no_prompt)
    assert set(again.changed.users) >= set(round_.changed.users)
    assert differences(database, generated, dry_run_too=True, threshold=EVERYTHING) == []


def live_dump(conn, schema: str) -> dict[str, list[tuple[str, str]]]:
    """Every live row as (user id, row text), in id order."""
    with psycopg.connect(**conn.kwargs()) as pg:
        return {
            table: pg.execute(
                sql.SQL('select t."userId", t::text from {} as t order by t.id collate "C"').format(
                    sql.Identifier(schema, table)
                )
            ).fetchall()
            for table in live.LIVE_TABLES.values()
        }


def existing_users(conn) -> set[str]:
    with psycopg.connect(**conn.kwargs()) as pg:
        return {row[0] for row in pg.execute(sql.SQL("select id from {}").format(sql.Identifier(GENERATED, "User")))}


# -- the rules, one at a time, on the fixtures ------------------------------------------------------------


@pytest.fixture()
def promoted(settings, database):
    """Fixtures loaded, a dry run built and promoted at a threshold that admits the fixtures' conflicts."""
    for schema in (settings.meta_schema, settings.dry_run_schema):
        execute(database, sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(schema)))
    fixtures.load(settings, database, FIXTURES)
    dry_run.dry_run(settings, database, max_conflict_rate=EVERYTHING)
    promoting.promote(settings, database, confirm=no_prompt)
    return settings, database


def test_a_round_with_nothing_to_do_writes_nothing(promoted):
    settings, conn = promoted
    before = audit(conn, settings)
    result = sync.sync_round(settings, conn, confirm=no_prompt)
    assert result.run_id is None and not result.changed and result.plan == {}
    assert audit(conn, settings) == before


@pytest.mark.slow  # CI runs it on one version: the random-writes test checks the lag kept by difference on both
def test_a_refused_round_leaves_its_users_lagging_for_the_next(promoted):
    """A round whose gates refuse after its catch-up leaves the dry-run state ahead of the live tables for
    the users it rebuilt: the lag kept by difference says so (as a full comparison of the reads does), and
    the next round writes them."""
    settings, conn = promoted
    for value in ("Lisbon", "Porto"):  # the first round makes the slot, the second reads the stream
        execute(
            conn, f"""update {FIXTURES}."Profile" set data = data || '{{"location": "{value}"}}' where id = 'p02r'"""
        )
        sync.sync_round(settings, conn, confirm=no_prompt)
    execute(conn, f"""update {FIXTURES}."Profile" set data = data || '{{"location": "Faro"}}' where id = 'p03r'""")
    with pytest.raises(CheckFailed, match="conflict rate"):
        sync.sync_round(settings, conn, confirm=no_prompt, max_conflict_rate=Decimal(0))
    with psycopg.connect(**conn.kwargs()) as pg:
        assert lag_problems(pg, settings) == []
        assert changes.lagging_users(pg, settings.meta_schema) == ["u03"]
    assert sync.sync_round(settings, conn, confirm=no_prompt).changed.users == ["u03"]
    assert differences(conn, settings, dry_run_too=False, threshold=EVERYTHING) == []


def test_a_round_refuses_a_dry_run_state_a_crash_emptied(promoted):
    """A server crash empties every unlogged table (the intermediate ones, the per-owner counts): a round
    would splice into them and sum a summary of the rebuilt users alone. It refuses, saying what to do."""
    settings, conn = promoted
    live_before = live_dump(conn, FIXTURES)
    execute(conn, sql.SQL("truncate {}").format(sql.Identifier(settings.dry_run_schema, "migration_counts_by_owner")))
    execute(conn, f"""update {FIXTURES}."Profile" set data = data || '{{"location": "Lisbon"}}' where id = 'p02r'""")
    with pytest.raises(CheckFailed, match="lost its unlogged tables.*run `orchestrator dry-run` again"):
        sync.sync_round(settings, conn, confirm=no_prompt)
    assert live_dump(conn, FIXTURES) == live_before


@pytest.mark.slow  # CI runs it on one version: the audit record; the random-writes test runs a catch-up on both
def test_catch_up_records_what_it_reviewed_and_rebuilt(promoted):
    settings, conn = promoted
    dry_run.dry_run(settings, conn, max_conflict_rate=EVERYTHING)  # a new review
    execute(conn, """update legacy_fixtures."Profile" set data = data || '{"location": "Lisbon"}' where id = 'p02r'""")
    execute(
        conn,
        """insert into legacy_fixtures."Profile" (id, "contextProfileId", data, "updatedAt")
                     values ('p-orphan', 'cp-gone', '{"location": "x"}', now())""",
    )
    with pytest.raises(CheckFailed, match=r"promote with --catch-up"):
        promoting.promote(settings, conn, confirm=no_prompt)
    result = promoting.promote(settings, conn, catch_up=True, confirm=no_prompt)
    assert result.caught_up.as_dict()["reviewed_users"] == 13
    assert result.caught_up.changed == changes.Changes(users=["u02"], profiles=["p-orphan"])
    assert result.as_dict("x")["catch_up"]["rebuilt_users"] == 1
    assert audit(conn, settings)[-1] == ("promote", "committed", None, 13, 1)
    with psycopg.connect(**conn.kwargs()) as pg:
        kept = pg.execute(
            sql.SQL("select owner_kind, owner_id from {} where run_id = %s order by 1, 2").format(
                sql.Identifier(settings.meta_schema, "run_rebuilt_owners")
            ),
            [result.run_id],
        ).fetchall()
        assert kept == [("profile", "p-orphan"), ("user", "u02")]
        location = pg.execute('select location from legacy_fixtures."UserProfile" where "userId" = \'u02\'')
        assert location.fetchone()[0] == "Lisbon"
    assert differences(conn, settings, dry_run_too=True, threshold=EVERYTHING) == []
    # the caught-up dry run is the one a plain promote now checks: nothing changed since, it passes
    assert promoting.promote(settings, conn, confirm=no_prompt).caught_up is None


def test_sync_hands_over_users_whose_live_rows_the_application_wrote(promoted, cli_env):
    settings, conn = promoted
    # after its deploy the application writes the live tables itself
    execute(conn, """update legacy_fixtures."UserProfile" set location = 'set by the app' where "userId" = 'u03'""")
    for profile in ("p03r", "p04r"):  # a new object sub-key: it reaches the merged profile whatever the order
        execute(
            conn,
            """update legacy_fixtures."Profile" set data = data || '{"lifestyle": {"cutover": "yes"}}' where id = %s""",
            [profile],
        )
    env = {**cli_env, "MIGRATION_LEGACY_SCHEMA": FIXTURES}
    result = invoke(["sync", "--yes"], env)
    assert result.exit_code == 1, result.output
    assert "1 user was handed over" in result.output and "u03" in result.output and "--force" in result.output
    assert "2 users changed" in result.output and "1 user handed over" in result.output
    with psycopg.connect(**conn.kwargs()) as pg:
        rows = {
            user: (location, lifestyle)
            for user, location, lifestyle in pg.execute(
                'select "userId", location, lifestyle from legacy_fixtures."UserProfile"'
                " where \"userId\" in ('u03', 'u04')"
            )
        }
    assert rows["u03"][0] == "set by the app" and "cutover" not in rows["u03"][1]  # left alone
    assert rows["u04"][1]["cutover"] == "yes"  # written
    # handed over: listed once and recorded; the next round neither rebuilds nor lists u03, and exits 0
    handed_over = sql.SQL("select user_id, differing_rows from {}").format(
        sql.Identifier(settings.meta_schema, "handed_over_users")
    )
    assert query(conn, handed_over) == [("u03", 1)]
    again = invoke(["sync", "--yes"], env)
    assert again.exit_code == 0 and "nothing changed" in again.output, again.output
    # its legacy rows change again: listed again; --force takes the legacy data's side on purpose
    execute(
        conn, """update legacy_fixtures."Profile" set data = data || '{"lifestyle": {"again": 1}}' where id = 'p03r'"""
    )
    listed = invoke(["sync", "--yes"], env)
    assert listed.exit_code == 1 and "u03" in listed.output, listed.output
    execute(
        conn, """update legacy_fixtures."Profile" set data = data || '{"lifestyle": {"again": 2}}' where id = 'p03r'"""
    )
    forced = invoke(["sync", "--yes", "--force"], env)
    assert forced.exit_code == 0, forced.output
    assert differences(conn, settings, dry_run_too=False, threshold=EVERYTHING) == []


def test_a_deleted_user_goes_by_cascade_and_is_not_live_drift(promoted):
    settings, conn = promoted
    execute(conn, """delete from legacy_fixtures."User" where id = 'u05'""")
    result = sync.sync_round(settings, conn, confirm=no_prompt)
    assert result.changed.users == ["u05"] and result.skipped == []
    assert differences(conn, settings, dry_run_too=True, threshold=EVERYTHING) == []
    # rollback of that round: no drift either, and the state before it (u05's rows are gone for good)
    rolling_back.rollback(settings, conn, drop=False, confirm=no_prompt)


def test_sync_refuses_without_a_promote_in_effect(settings, database, cli_env):
    for schema in (settings.meta_schema, settings.dry_run_schema):
        execute(database, sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(schema)))
    fixtures.load(settings, database, FIXTURES)
    env = {**cli_env, "MIGRATION_LEGACY_SCHEMA": FIXTURES}
    before = invoke(["sync", "--yes"], env)
    assert before.exit_code == 2 and "there is nothing to sync" in before.output and "promote" in before.output
    dry_run.dry_run(settings, database, max_conflict_rate=EVERYTHING)
    promoting.promote(settings, database, confirm=no_prompt)
    rolling_back.rollback(settings, database, drop=True, confirm=no_prompt)
    after = invoke(["sync", "--yes"], env)
    assert after.exit_code == 2 and "there is nothing to sync" in after.output


@pytest.mark.slow  # CI runs it on one version: a refusal read from our own records
def test_sync_refuses_while_a_newer_review_waits_for_its_promote(promoted):
    settings, conn = promoted
    dry_run.dry_run(settings, conn, max_conflict_rate=EVERYTHING)
    with pytest.raises(CheckFailed, match=r"has not been promoted: promote it \(`orchestrator promote --catch-up`\)"):
        sync.sync_round(settings, conn, confirm=no_prompt)


def test_a_second_sync_refuses_while_one_holds_the_lock(promoted):
    from orchestrator import locks

    settings, conn = promoted
    notes: list[str] = []

    class Notes:
        def note(self, text: str) -> None:
            notes.append(text)

        progress = SILENT.progress

    with locks.promote_lock(conn, "promote"):
        with pytest.raises(Busy, match="another promote, sync round or rollback is running"):
            sync.sync_round(settings, conn, confirm=no_prompt)
        # following, a busy round is reported and the next one tries again: the loop goes on
        assert sync.follow(settings, conn, interval=0, on_round=lambda r: None, rounds=2, feedback=Notes()) == []
    assert len(notes) == 2 and all(n.startswith("round refused: another promote, sync round") for n in notes)


@pytest.mark.slow  # CI runs it on one version: the random-writes test runs catch-up and cleanup SQL on both
def test_a_catch_up_with_nothing_changed_and_a_cleanup_leave_sync_working(promoted):
    """A sync round's state has no fingerprint: `promote --catch-up` judges it by the per-user reads alone
    (a plain promote asks for --catch-up). A cleanup that removes the full promote's backup leaves the live
    tables coming from it: sync goes on."""
    settings, conn = promoted
    execute(conn, """update legacy_fixtures."Profile" set data = data || '{"location": "Oslo"}' where id = 'p02r'""")
    assert sync.sync_round(settings, conn, confirm=no_prompt).run_id is not None
    with pytest.raises(CheckFailed, match="--catch-up"):
        promoting.promote(settings, conn, confirm=no_prompt)
    caught = promoting.promote(settings, conn, catch_up=True, confirm=no_prompt)
    assert not caught.caught_up.changed and caught.caught_up.outcome is None
    assert "nothing changed since dry run" in caught.caught_up.describe()
    promoting.promote(settings, conn, users=["u03"], confirm=no_prompt)  # a partial promote: not a state
    assert rolling_back.cleanup(settings, conn, 1)[0]
    execute(conn, """update legacy_fixtures."Profile" set data = data || '{"location": "Bergen"}' where id = 'p02r'""")
    # u02 changed; u03, promoted with --user from the change stream's copy, is rebuilt once more: cleanup dropped
    # the stream's slot, and a digest comparison finds every user the stream last rebuilt (docs/decisions.md)
    assert set(sync.sync_round(settings, conn, confirm=no_prompt).changed.users) - {"u03"} == {"u02"}
    assert differences(conn, settings, dry_run_too=False, threshold=EVERYTHING) == []


@pytest.mark.slow  # CI runs it on one version: the runs listing; test_app_first rolls a round back on both
def test_runs_show_sync_rounds_and_rollback_undoes_one_at_a_time(promoted, cli_env):
    settings, conn = promoted
    env = {**cli_env, "MIGRATION_LEGACY_SCHEMA": FIXTURES}
    for value in ("Rome", "Paris"):
        execute(conn, """update legacy_fixtures."Profile" set data = data || %s::jsonb where id = 'p02r'""",
                [json.dumps({"location": value})])  # fmt: skip
        line = invoke(["sync", "--yes"], env)
        assert line.exit_code == 0 and "1 user changed, 1 row written" in line.output, line.output
    history = invoke(["runs"], env).output
    assert history.count(" sync ") == 2
    rolled = invoke(["rollback", "--yes"], env)
    assert rolled.exit_code == 0 and "before sync round" in rolled.output
    with psycopg.connect(**conn.kwargs()) as pg:
        assert pg.execute('select location from legacy_fixtures."UserProfile" where "userId" = \'u02\'').fetchone() == (
            "Rome",
        )
    # the next round writes Paris again
    assert "1 user changed" in invoke(["sync", "--yes"], env).output


def test_reads_are_per_owner_and_only_read(promoted):
    """The digests: every insert, update (even to the same values), delete and move changes the owners
    involved, and the legacy tables are only read."""
    settings, conn = promoted
    with psycopg.connect(**conn.kwargs(), autocommit=True) as pg:
        changes.take(pg, FIXTURES, settings.meta_schema, name="reference")
        writes = [
            """update legacy_fixtures."User" set "updatedAt" = "updatedAt" where id = 'u01'""",  # same values
            """update legacy_fixtures."ContextProfile" set "userId" = 'u08' where id = 'cp02r'""",  # u02 -> u08
            """delete from legacy_fixtures."Profile" where id = 'p03f'""",
            """insert into legacy_fixtures."Profile" (id, "contextProfileId", "updatedAt")
               values ('px', 'cpx', now())""",
        ]
        for write in writes:
            pg.execute(write)
        changes.take(pg, FIXTURES, settings.meta_schema)
        rows = pg.execute(
            "select coalesce(n.owner_kind, r.owner_kind), coalesce(n.owner_id, r.owner_id) from legacy_reads_now as n"
            " full join reference as r using (owner_kind, owner_id) where n.digest is distinct from r.digest"
            " order by 1, 2"
        ).fetchall()
    assert rows == [("profile", "px"), ("user", "u01"), ("user", "u02"), ("user", "u03"), ("user", "u08")]
    assert metadata.SCOPE_TABLE == "user_scope"  # (the partial rebuild reads the scope from there)


@pytest.mark.slow  # CI runs it on one version: test_snapshot's traffic test [ci] runs sync --follow on both
def test_sync_follow_under_load_loses_no_write(database, settings):
    """A writer thread updates, inserts, deletes and moves rows while `sync --follow` runs rounds; once it
    stops and one more round has run, the live tables equal a from-scratch migration: no write was lost."""
    import threading

    generated = dataclasses.replace(settings, legacy_schema=GENERATED, live_schema=GENERATED)
    with psycopg.connect(**database.kwargs()) as pg:
        legacy_generator.load(pg, GENERATED, legacy_generator.generate(21, 80))
        for schema in (settings.dry_run_schema, settings.meta_schema):
            pg.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(schema)))
        pg.commit()
    dry_run.dry_run(generated, database, max_conflict_rate=EVERYTHING)
    promoting.promote(generated, database, confirm=no_prompt)

    writer, made, writing_done, stop = Writer(database, GENERATED, 21), [], threading.Event(), threading.Event()

    def write_while_following() -> None:
        with psycopg.connect(**database.kwargs(), autocommit=True) as pg:
            while len(made) < 60:
                made.append(writer.write(pg))
                time.sleep(0.1)
        writing_done.set()

    rounds: list[sync.RoundResult] = []

    def on_round(result: sync.RoundResult) -> None:
        rounds.append(result)
        if writing_done.is_set() and len(rounds) >= 3:
            stop.set()

    thread = threading.Thread(target=write_while_following)
    thread.start()
    parsed = ParsedProjects()
    try:
        skipped = sync.follow(generated, database, interval=0.2, on_round=on_round, stop=stop, parsed=parsed)
    finally:
        thread.join()
    assert skipped == [] and len(made) == 60
    assert sum(1 for result in rounds if result.run_id) >= 2  # rounds wrote while the writer wrote
    # dbt parsed the project once per kind of run (the rebuild of the changed users, the summary), not per round
    assert parsed.parses == 2 and len(parsed.manifests) == 2
    last = sync.sync_round(generated, database, confirm=no_prompt)  # the writes after the last round
    assert differences(database, generated, dry_run_too=True, threshold=EVERYTHING) == [], (made, last)
    assert sync.sync_round(generated, database, confirm=no_prompt).run_id is None  # nothing was left behind
