"""End to end with the application's own client (issue #11; spec §7, §10).

A Prisma Client generated from prisma/schema.after.prisma (Prisma 6.19.3, @prisma/adapter-pg, the
WebAssembly query compiler: no native engine) plays the application through prisma/app_client.mjs,
on a real server, with the live tables in the fixtures schema (not `public`), so the adapter's
`schema` option is what finds them:

- after `promote`, and after a `sync` round that follows a legacy write, Prisma reads every live row
  with its relations, and each value is the one the live tables hold in SQL;
- once the application writes a profile through Prisma, no later round overwrites it: `sync` skips
  and lists that user (exit 1) while it writes the others, until `sync --force` (the cutover).

The tests run in order on one promoted database (the module's), each going on from the last.

Without Node or the installed Prisma these tests fail (they do not skip): CI installs both
(.ci/install-extras). The client is generated again by the test, from the schema as it is.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
from decimal import Decimal

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import set_json_loads
from test_large_values import essay
from test_live_sync import differences, execute, invoke
from test_prisma_ddl import PRISMA_DIR, prisma_url, require_prisma

from orchestrator import dry_run, fixtures, live, sync
from orchestrator import promote as promoting

EVERYTHING = Decimal(1)
FIXTURES = "legacy_fixtures"
APP_CLIENT = PRISMA_DIR / "app_client.mjs"


def no_prompt(_plan) -> None:
    return None


# --- the application: its Prisma Client, in Node ---------------------------------------------------


class App:
    """prisma/app_client.mjs on this module's database; the client is generated on first use, inside
    a test, so that a missing Node or Prisma shows as a failed test."""

    def __init__(self, database, schema: str):
        self._env = {
            **os.environ,
            "APP_DATABASE_URL": prisma_url(database),
            "APP_DATABASE_SCHEMA": schema,
            # an application server off UTC: DateTime (timestamp without time zone) must still read and
            # write as UTC, whatever the process's zone
            "TZ": "Asia/Kolkata",
        }
        self._generated = False

    def _generate(self) -> None:
        if self._generated:
            return
        require_prisma()
        result = subprocess.run(
            [str(PRISMA_DIR / "generate.sh")], capture_output=True, text=True, timeout=300, check=False
        )
        if result.returncode != 0:
            pytest.fail(f"prisma/generate.sh exited {result.returncode}\n{result.stderr}\n{result.stdout}")
        assert (PRISMA_DIR / "generated" / "query_compiler_bg.wasm").exists(), "not the WebAssembly query compiler"
        self._generated = True

    def run(self, *args: str, schema: str | None = None) -> subprocess.CompletedProcess:
        self._generate()
        env = self._env if schema is None else {**self._env, "APP_DATABASE_SCHEMA": schema}
        return subprocess.run(
            ["node", str(APP_CLIENT), *args], env=env, capture_output=True, text=True, timeout=120, check=False
        )

    def __call__(self, *args: str):
        result = self.run(*args)
        if result.returncode != 0:
            pytest.fail(f"node app_client.mjs {' '.join(args)} exited {result.returncode}\n{result.stderr}")
        return json.loads(result.stdout, parse_float=Decimal)

    def read(self) -> dict[str, dict]:
        """Every User with its profile and context intents, as Prisma returns them, by user id."""
        users = self("read")
        return {user["id"]: user for user in users}

    def write_location(self, user_id: str, location: str) -> dict:
        return self("write", user_id, location)


@pytest.fixture(scope="module")
def app(database) -> App:
    return App(database, FIXTURES)


# --- the same, read in SQL, in the shape Prisma returns ---------------------------------------------


def as_prisma_json(value):
    """A value read in SQL as Prisma's JSON shows it: DateTime (timestamp(3), taken as UTC) in ISO-8601
    with milliseconds and `Z`; jsonb, text[], text and the enum's label as they are."""
    if isinstance(value, datetime.datetime):
        assert value.tzinfo is None
        return value.isoformat(timespec="milliseconds") + "Z"
    return value


def sql_view(database, schema: str) -> dict[str, dict]:
    """Every User with its "UserProfile" row (or None) and its "ContextIntent" rows, read with `select *`
    (every column, whatever the models hold), by user id."""
    with psycopg.connect(**database.kwargs()) as pg:
        set_json_loads(lambda text: json.loads(text, parse_float=Decimal), pg)

        def rows(table: str) -> list[dict]:
            cur = pg.execute(sql.SQL("select * from {}").format(sql.Identifier(schema, table)))
            names = [column.name for column in cur.description]
            return [{n: as_prisma_json(v) for n, v in zip(names, row, strict=True)} for row in cur.fetchall()]

        users = {user["id"]: {**user, "profile": None, "contextIntents": []} for user in rows("User")}
        for profile in rows(live.LIVE_TABLES["profile"]):
            assert users[profile["userId"]]["profile"] is None
            users[profile["userId"]]["profile"] = profile
        for intent in rows(live.LIVE_TABLES["context_intent"]):
            users[intent["userId"]]["contextIntents"].append(intent)
    for user in users.values():
        user["contextIntents"].sort(key=lambda intent: intent["id"])
    return users


def canonical(value):
    """JSON values compared as jsonb compares them (1.5 = 1.50), but with true ≠ 1 (Python's == has
    True == 1) and key order ignored; lists keep their order."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return (type(value).__name__, value)
    if isinstance(value, int | Decimal):
        return ("number", Decimal(value).normalize())
    if isinstance(value, list):
        return ("list", [canonical(item) for item in value])
    if isinstance(value, dict):
        return ("object", {key: canonical(item) for key, item in value.items()})
    raise TypeError(f"not a JSON value: {value!r}")


def assert_prisma_reads_the_live_tables(app: App, database) -> dict[str, dict]:
    """Prisma's view (every User, include profile and contextIntents) equals the tables read in SQL:
    the same users, profile and intent ids, user ids, and every column value. Returns Prisma's view."""
    prismas = app.read()
    for user in prismas.values():
        user["contextIntents"].sort(key=lambda intent: intent["id"])  # Prisma sorts by the database's collation
    tables = sql_view(database, FIXTURES)
    assert sorted(prismas) == sorted(tables)
    for user_id, expected in tables.items():
        assert canonical(prismas[user_id]) == canonical(expected), user_id
    return prismas


def profile_of(view: dict[str, dict], user_id: str) -> dict:
    return view[user_id]["profile"]


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(tzinfo=None)


def parse_prisma_time(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.removesuffix("Z"))


# --- the tests (in order, on one promoted database) --------------------------------------------------


def legacy_write(database, profile_id: str, **keys) -> None:
    """The application's legacy write: ``keys`` merged into one legacy Profile's blob."""
    execute(
        database,
        sql.SQL("update {} set data = data || %s::jsonb where id = %s").format(sql.Identifier(FIXTURES, "Profile")),
        [json.dumps(keys), profile_id],
    )


@pytest.fixture(scope="module")
def promoted(settings, database):
    assert settings.live_schema == FIXTURES != "public"
    fixtures.load(settings, database, FIXTURES)
    dry_run.dry_run(settings, database, max_conflict_rate=EVERYTHING)
    promoting.promote(settings, database, confirm=no_prompt)
    return settings, database


def test_prisma_reads_every_promoted_row_with_its_relations(promoted, app):
    settings, database = promoted
    view = assert_prisma_reads_the_live_tables(app, database)
    # what the comparison covered (a vacuous one would pass too): every user has a profile (spec §7)
    assert len(view) == 13 and all(user["profile"] is not None for user in view.values())
    intents = [intent for user in view.values() for intent in user["contextIntents"]]
    assert len(intents) == len({intent["id"] for intent in intents}) > 10
    assert len({intent["contextType"] for intent in intents}) == 5  # every RelationshipContextType label
    u03 = profile_of(view, "u03")
    assert u03["location"] == "Paris" and u03["beliefs"] == {"religion": "buddhist", "politics": "green"}
    assert any(user["profile"]["missing"] for user in view.values())  # text[] with elements
    assert profile_of(view, "u04")["beliefs"]["x"] == {"a": 1, "b": 2}  # nested jsonb with numbers
    assert profile_of(view, "u09")["coreValues"] == ["30", "x", "true", "1.50"]  # normalised to strings (§3)
    assert profile_of(view, "u04")["createdAt"] == "2024-03-01T10:00:00.000Z"  # the legacy time, not shifted
    assert differences(database, settings, dry_run_too=False, threshold=EVERYTHING) == []


def test_the_adapter_schema_option_finds_the_live_tables(promoted, app):
    """PrismaPg ignores `?schema=` in the URL: in `public` (the adapter's default) there are no tables."""
    result = app.run("read", schema="public")
    assert result.returncode == 1 and "P2021" in result.stderr and "does not exist" in result.stderr, result.stderr


def test_prisma_reads_what_a_sync_round_writes(promoted, app):
    settings, database = promoted
    legacy_write(database, "p02r", location="Lisbon")
    legacy_write(database, "p03f", friendshipDepth="best_friend")
    round_ = sync.sync_round(settings, database, confirm=no_prompt)
    assert round_.changed.users == ["u02", "u03"] and round_.skipped == []
    assert differences(database, settings, dry_run_too=False, threshold=EVERYTHING) == []
    view = assert_prisma_reads_the_live_tables(app, database)
    assert profile_of(view, "u02")["location"] == "Lisbon"
    friendship = [i for i in view["u03"]["contextIntents"] if i["contextType"] == "friendship"]
    assert [intent["friendshipDepth"] for intent in friendship] == ["best_friend"]


@pytest.mark.slow  # CI runs it on one version: the hand-over runs on both versions in test_live_sync
def test_a_round_never_overwrites_what_the_application_wrote(promoted, app, cli_env):
    """The cutover (spec §10): the application writes u03's profile through Prisma; u03's and u04's
    legacy data change; a round hands u03 over (listed once, exit 1) and writes u04; a later round leaves
    u03 alone (exit 0), until its legacy rows change and `sync --force` takes their side."""
    settings, database = promoted
    env = {**cli_env, "MIGRATION_LEGACY_SCHEMA": FIXTURES}
    before = profile_of(app.read(), "u03")
    written = app.write_location("u03", "set by the app")
    assert written["location"] == "set by the app" and written["id"] == before["id"]
    moved = parse_prisma_time(written["updatedAt"])
    assert moved != parse_prisma_time(before["updatedAt"])  # Prisma's @updatedAt, set by the client
    assert abs(moved - utc_now()) < datetime.timedelta(minutes=5)
    assert canonical(assert_prisma_reads_the_live_tables(app, database)["u03"]["profile"]) == canonical(written)

    legacy_write(database, "p03r", ageRange="99")
    legacy_write(database, "p04f", ageRange="99")  # u04's first profile in context order (§4): its value wins
    # handed over, listed once (exit 1); a later round neither lists nor overwrites it (exit 0)
    for expected in (1, 0):
        result = invoke(["sync", "--yes"], env)
        assert result.exit_code == expected, result.output
        if expected == 1:
            assert "1 user was handed over" in result.output and "u03" in result.output and "--force" in result.output
        view = assert_prisma_reads_the_live_tables(app, database)
        assert canonical(view["u03"]["profile"]) == canonical(written)  # every column as the application left it
        assert profile_of(view, "u04")["ageRange"] == "99"  # the other user was written

    legacy_write(database, "p03r", ageRange="98")  # u03's legacy rows change again: --force takes their side
    forced = invoke(["sync", "--yes", "--force"], env)
    assert forced.exit_code == 0, forced.output
    view = assert_prisma_reads_the_live_tables(app, database)
    assert profile_of(view, "u03")["location"] == "Paris"  # the legacy data's side, on purpose
    assert differences(database, settings, dry_run_too=False, threshold=EVERYTHING) == []


def test_prisma_reads_values_of_any_size_the_migration_writes(promoted, app):
    """A 10 MB text and a 1 MB JSON value (issue #27) reach the application whole. Prisma Client reads a
    value through node-postgres, which cannot make a string of more than 536,870,888 bytes (Node's
    limit: the process dies with ERR_STRING_TOO_LONG); the migration writes none that long, as every live
    value comes from a legacy jsonb value, which PostgreSQL keeps under 268,435,455 bytes
    (docs/prisma.md)."""
    settings, database = promoted
    long_text, long_json = essay(10 << 20, "ten megabytes "), {"essay": essay(1 << 20, "one megabyte "), "n": 1.5}
    legacy_write(database, "p02r", location=long_text, beliefs=long_json)
    round_ = sync.sync_round(settings, database, confirm=no_prompt)
    assert round_.changed.users == ["u02"] and round_.skipped == []
    view = assert_prisma_reads_the_live_tables(app, database)
    assert profile_of(view, "u02")["location"] == long_text
    assert profile_of(view, "u02")["beliefs"] == long_json
