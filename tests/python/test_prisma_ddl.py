"""The live tables are Prisma's own: our migration.sql has no drift from Prisma Migrate.

Prisma 6.19.3 (installed in prisma/ by `npm ci`, see .ci/install-extras) regenerates its own DDL
through prisma/diff.sh, offline, with this module's database as its driver adapter's connection:

- our orchestrator/sql/unified_profile_migration.sql is the very statements Prisma Migrate writes
  for schema.before.prisma -> schema.after.prisma (whitespace and comments aside);
- Prisma's empty -> schema.before.prisma builds exactly the tables of legacy_schema.sql (spec §1);
- in the catalog, our file on the legacy tables gives what Prisma's own migration gives.

Without Node or the installed Prisma these tests fail (they do not skip): CI installs both.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import shutil
import subprocess
import time
import urllib.parse

import psycopg
import pytest
from helpers import LIVE_TABLE_NAMES, PROJECT_DIR
from prisma_introspect import describe_live_tables
from psycopg import sql

from orchestrator.config import FIXTURES_SCHEMA, ConnInfo
from orchestrator.db import LEGACY_TABLES
from orchestrator.live import MIGRATION_FILE as MIGRATION_FILE_NAME

PRISMA_DIR = PROJECT_DIR / "prisma"
MIGRATION_FILE = PROJECT_DIR / "orchestrator" / "sql" / MIGRATION_FILE_NAME
LEGACY_FILE = PROJECT_DIR / "orchestrator" / "sql" / "legacy_schema.sql"

# Prisma's WASM engine creates the schema it diffs into; promote runs our file with search_path
# set to the live schema and creates no schema. The one statement we leave out of Prisma's output.
PRISMA_CREATE_SCHEMA = 'CREATE SCHEMA IF NOT EXISTS "public"'


# --- Prisma's output --------------------------------------------------------------------------


def prisma_url(conn: ConnInfo) -> str:
    """A postgresql:// URL for node-postgres (a Unix-socket directory goes in ``?host=``)."""
    credentials = urllib.parse.quote(conn.user, safe="")
    if conn.password:
        credentials += ":" + urllib.parse.quote(conn.password, safe="")
    dbname = urllib.parse.quote(conn.dbname, safe="")
    if conn.host.startswith("/"):
        query = urllib.parse.urlencode({"host": conn.host, "port": conn.port})
        return f"postgresql://{credentials}@/{dbname}?{query}"
    return f"postgresql://{credentials}@{conn.host}:{conn.port}/{dbname}"


def require_prisma() -> None:
    """Fail (never skip) with what to do when Node or the pinned Prisma is not installed."""
    install = "install it (CI: .ci/install-extras; by hand: `cd prisma && npm ci --ignore-scripts`)"
    for tool in ("node", "npx"):
        if shutil.which(tool) is None:
            pytest.fail(f"`{tool}` is not on PATH: these tests need Node.js 18.18+ with npm, and Prisma: {install}")
    pinned = json.loads((PRISMA_DIR / "package.json").read_text())["devDependencies"]
    for package in pinned:  # prisma, @prisma/adapter-pg, @prisma/client, pg
        manifest = PRISMA_DIR / "node_modules" / package / "package.json"
        if not manifest.exists():
            pytest.fail(f"npm package {package} is not installed in {PRISMA_DIR}/node_modules: {install}")
        installed = json.loads(manifest.read_text())["version"]
        if installed != pinned[package]:
            pytest.fail(
                f"{package} {installed} is installed in prisma/, package.json pins {pinned[package]}: {install}"
            )


def run_prisma_diff(conn: ConnInfo, mode: str) -> tuple[str, float]:
    env = {**os.environ, "PRISMA_DIFF_DATABASE_URL": prisma_url(conn)}
    started = time.monotonic()
    result = subprocess.run(
        [str(PRISMA_DIR / "diff.sh"), mode], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    elapsed = time.monotonic() - started
    if result.returncode != 0 or not result.stdout.strip():
        pytest.fail(
            f"prisma/diff.sh {mode} exited {result.returncode} after {elapsed:.1f} s\n"
            f"stderr:\n{result.stderr}\nstdout:\n{result.stdout}"
        )
    return result.stdout, elapsed


class PrismaDiff:
    """Prisma's own SQL, regenerated on first use of each mode and kept for the module.

    Generated inside the tests, not in a fixture's setup, so that a missing Node or Prisma shows
    as a failed test: ``migration`` (before -> after) and ``legacy`` (empty -> before).
    """

    def __init__(self, conn: ConnInfo):
        self._conn = conn
        self._sql: dict[str, str] = {}

    def __call__(self, mode: str) -> str:
        if mode not in self._sql:
            require_prisma()
            self._sql[mode], elapsed = run_prisma_diff(self._conn, mode)
            print(f"prisma migrate diff ({mode}): {elapsed:.1f} s")
        return self._sql[mode]


@pytest.fixture(scope="module")
def prisma_sql(database) -> PrismaDiff:
    return PrismaDiff(database)


# --- statements ---------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
      (?P<comment>--[^\n]*|/\*.*?\*/)
    | (?P<quoted>'(?:[^']|'')*'|"(?:[^"]|"")*")
    | (?P<space>\s+)
    | (?P<semicolon>;)
    | (?P<other>[^\s'";-]+|-)
    """,
    re.VERBOSE | re.DOTALL,
)
_PUNCTUATION = set("(),")


def statements(text: str) -> list[str]:
    """The SQL statements of ``text``, with comments dropped and whitespace normalised.

    Whitespace runs outside quotes become one space, and none is kept next to ``(``, ``)`` or
    ``,``; nothing else changes (case, quoting and literals are compared as written).
    """
    found, current, pending_space = [], [], False
    for match in _TOKEN.finditer(text):
        kind, token = match.lastgroup, match.group()
        if kind in ("comment", "space"):
            pending_space = True
            continue
        if kind == "semicolon":
            if current:
                found.append("".join(current))
            current, pending_space = [], False
            continue
        if current and pending_space and current[-1][-1] not in _PUNCTUATION and token[0] not in _PUNCTUATION:
            current.append(" ")
        current.append(token)
        pending_space = False
    if current:
        found.append("".join(current))
    return found


def without_create_schema(found: list[str]) -> list[str]:
    return [statement for statement in found if statement != PRISMA_CREATE_SCHEMA]


def prisma_script(text: str) -> str:
    """Prisma's output as a script promote could run: its statements, less the CREATE SCHEMA."""
    return "".join(f"{statement};\n" for statement in without_create_schema(statements(text)))


def assert_same_statements(ours: list[str], prismas: list[str], ours_name: str) -> None:
    if ours == prismas:
        return

    def readable(found: list[str]) -> list[str]:
        return [line for statement in found for line in (statement.replace(",", ",\n    ") + ";\n").splitlines()]

    diff = "\n".join(
        difflib.unified_diff(readable(prismas), readable(ours), "Prisma Migrate", ours_name, lineterm="", n=2)
    )
    pytest.fail(f"{ours_name} is not Prisma Migrate's DDL (statements normalised, one clause per line):\n{diff}")


def test_statements_normalise_only_whitespace_and_comments():
    text = """-- CreateIndex
        CREATE UNIQUE INDEX "a b"  ON "T" ( "x",\n "y" ) ; /* note; */ ALTER TABLE "T" ADD x JSONB DEFAULT '[ ]';"""
    assert statements(text) == [
        'CREATE UNIQUE INDEX "a b" ON "T"("x","y")',
        "ALTER TABLE \"T\" ADD x JSONB DEFAULT '[ ]'",
    ]
    assert statements('create table "T"("x" text)') != statements('CREATE TABLE "T"("x" TEXT)')


# --- (a) our migration is Prisma's, statement by statement --------------------------------------


def test_unified_profile_migration_is_prisma_migrates_own(prisma_sql):
    prismas = without_create_schema(statements(prisma_sql("migration")))
    ours = statements(MIGRATION_FILE.read_text())
    assert_same_statements(ours, prismas, MIGRATION_FILE.relative_to(PROJECT_DIR).as_posix())
    # what spec §7 asks of the live tables is really in there (guards against two empty outputs)
    assert any(statement.startswith('CREATE TABLE "UserProfile"') for statement in ours)
    assert any(statement.startswith('CREATE TABLE "ContextIntent"') for statement in ours)
    assert sum("ON DELETE CASCADE" in statement for statement in ours) == 2


# --- (b) the legacy tables, (c) the migration: the same tables in the catalog -------------------


@pytest.fixture(scope="module")
def conn(database):
    with psycopg.connect(**database.kwargs(), autocommit=True) as connection:
        yield connection


def build_schema(conn: psycopg.Connection, schema: str, *ddl: str) -> None:
    """(Re)create ``schema`` and run each DDL text in it as promote does: unqualified, search_path set."""
    with conn.transaction():
        conn.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("create schema {}").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("set local search_path to {}").format(sql.Identifier(schema)))
        for text in ddl:
            conn.execute(text)


def assert_same_catalog(ours: dict, prismas: dict, what: str) -> None:
    if ours == prismas:
        return
    diff = "\n".join(
        difflib.unified_diff(
            json.dumps(prismas, indent=1, sort_keys=True).splitlines(),
            json.dumps(ours, indent=1, sort_keys=True).splitlines(),
            "Prisma Migrate",
            what,
            lineterm="",
            n=3,
        )
    )
    pytest.fail(f"{what} differs from what Prisma Migrate builds, in the catalog:\n{diff}")


def test_legacy_schema_is_prismas_before_schema(conn, prisma_sql):
    """legacy_schema.sql writes §1's inline `PRIMARY KEY`, Prisma a named table constraint: the
    text differs, so the comparison is in the catalog (PostgreSQL names both `"<table>_pkey"`)."""
    build_schema(conn, "prisma_legacy", prisma_script(prisma_sql("legacy")))
    build_schema(conn, "spec_legacy", LEGACY_FILE.read_text())
    prismas = describe_live_tables(conn, "prisma_legacy", tables=None)
    ours = describe_live_tables(conn, "spec_legacy", tables=None)
    assert sorted(prismas["tables"]) == sorted(LEGACY_TABLES)
    assert_same_catalog(ours, prismas, LEGACY_FILE.relative_to(PROJECT_DIR).as_posix())


def test_unified_profile_migration_builds_prismas_tables(conn, prisma_sql):
    legacy = LEGACY_FILE.read_text()
    build_schema(conn, "ours_before", legacy)
    legacy_before = describe_live_tables(conn, "ours_before", tables=LEGACY_TABLES)

    build_schema(conn, "prisma_after", legacy, prisma_script(prisma_sql("migration")))
    build_schema(conn, "ours_after", legacy, MIGRATION_FILE.read_text())
    prismas = describe_live_tables(conn, "prisma_after", tables=None)
    ours = describe_live_tables(conn, "ours_after", tables=None)
    assert_same_catalog(ours, prismas, MIGRATION_FILE.relative_to(PROJECT_DIR).as_posix())

    # the introspection sees what matters (a vacuous comparison would pass too)
    live = describe_live_tables(conn, "ours_after")
    assert sorted(live["tables"]) == sorted(LIVE_TABLE_NAMES)
    foreign_key = live["tables"]["UserProfile"]["constraints"]["UserProfile_userId_fkey"]["definition"]
    assert foreign_key == 'FOREIGN KEY ("userId") REFERENCES "User"(id) ON UPDATE CASCADE ON DELETE CASCADE'
    assert "ContextIntent_userId_contextType_key" in live["tables"]["ContextIntent"]["indexes"]
    labels = ["romantic", "friendship", "professional", "creative", "service"]
    assert live["enums"] == {"RelationshipContextType": labels}

    # the legacy tables' columns, constraints and indexes are untouched (spec §7)
    assert describe_live_tables(conn, "ours_after", tables=LEGACY_TABLES) == legacy_before


def test_describe_live_tables_sees_differences(conn):
    """Schemas that differ only in a type, a default, a constraint's name or persistence differ."""
    table = 'CREATE {kind} "T" ("id" TEXT NOT NULL, "n" {type} DEFAULT {default}, CONSTRAINT {pk} PRIMARY KEY ("id"))'
    prisma_like = {"kind": "TABLE", "type": "INTEGER", "default": "0", "pk": '"T_pkey"'}
    build_schema(conn, "probe_a", table.format(**prisma_like))
    reference = describe_live_tables(conn, "probe_a", tables=["T"])
    assert list(reference["tables"]) == ["T"]
    build_schema(conn, "probe_b", table.format(**prisma_like))
    assert describe_live_tables(conn, "probe_b", tables=["T"]) == reference  # the schema's own name does not matter
    for change in ({"type": "BIGINT"}, {"default": "1"}, {"pk": '"pk"'}, {"kind": "UNLOGGED TABLE"}):
        build_schema(conn, "probe_b", table.format(**{**prisma_like, **change}))
        assert describe_live_tables(conn, "probe_b", tables=["T"]) != reference, change


# --- the docs' model snippet is the after-schema's -----------------------------------------------


def model_blocks(text: str) -> dict[str, str]:
    return {m.group(1): m.group(0) for m in re.finditer(r"^model (\w+) \{.*?^\}", text, re.MULTILINE | re.DOTALL)}


def test_docs_model_snippet_is_the_after_schema():
    doc = (PROJECT_DIR / "docs" / "prisma.md").read_text()
    snippet = model_blocks(re.search(r"```prisma\n(.*?)```", doc, re.DOTALL).group(1))
    after = model_blocks((PRISMA_DIR / "schema.after.prisma").read_text())
    assert sorted(snippet) == sorted(["User", "LegacyProfile", "Profile", "ContextIntent"])
    for name, block in snippet.items():
        assert block == after[name], f"docs/prisma.md's model {name} is not schema.after.prisma's"


def test_promoted_live_tables_are_prismas_tables(conn, database, settings, prisma_sql):
    """After `promote`, the live tables are what Prisma's own migration builds on the legacy schema,
    and the legacy tables' structure is unchanged (only the foreign keys' triggers are added)."""

    from orchestrator import dry_run, fixtures
    from orchestrator import promote as promoting

    fixtures.load(settings, database, FIXTURES_SCHEMA)
    legacy_before = describe_live_tables(conn, FIXTURES_SCHEMA, tables=LEGACY_TABLES)
    dry_run.dry_run(settings, database)
    promoting.promote(settings, database, max_conflict_rate=1, users=None, confirm=lambda plan: None)

    build_schema(conn, "prisma_reference", LEGACY_FILE.read_text(), prisma_script(prisma_sql("migration")))
    prismas = describe_live_tables(conn, "prisma_reference")
    promoted = describe_live_tables(conn, FIXTURES_SCHEMA)
    assert_same_catalog(promoted, prismas, "the live tables after orchestrator promote")
    assert describe_live_tables(conn, FIXTURES_SCHEMA, tables=LEGACY_TABLES) == legacy_before
