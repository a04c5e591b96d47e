"""Hostile input (docs/reliability.md, "Hostile data" and "Hostile input to the CLI"), on a real
server: a legacy dataset of hostile keys, values, blobs and user ids (spec §1, §5) that must be
logged, migrated and promoted exactly, and hostile schema names, user ids and users files given to
the CLI, which must be refused (or reported unknown) before they reach SQL as anything but data.
"""

from __future__ import annotations

import csv
import dataclasses
import json

import psycopg
import pytest
from helpers import EVERYTHING, PROMOTE_ARGS, dump, execute, invoke, no_prompt
from psycopg import sql

from orchestrator import db, dry_run, verify
from orchestrator import promote as promoting
from orchestrator import reports as reporting
from orchestrator.config import FIXTURES_SCHEMA, ConnInfo
from orchestrator.db import LEGACY_TABLES

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
        pg.execute(db.packaged_sql("legacy_schema.sql"))
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
    partial = invoke(args, env)
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


def test_hostile_schema_names_are_refused_before_any_sql(stage, cli_env):
    tried = 0
    for variable, what in SCHEMA_SETTINGS.items():
        for name, reason in BAD_NAMES.items():
            for command in (["dry-run"], PROMOTE_ARGS, ["rollback", "--yes"], ["verify"], ["runs"]):
                result = invoke(command, {**cli_env, "MIGRATION_LEGACY_SCHEMA": FIXTURES_SCHEMA, variable: name})
                assert result.exit_code == 2, (variable, name, command, result.output)
                assert result.output.startswith(f"Error: the {what} name {name!r} {reason}"), result.output
                assert len(result.output.strip().splitlines()) == 1
                tried += 1
        # empty: the dry-run and metadata schema are refused; legacy and live fall back to their defaults
    for variable in ("MIGRATION_DRY_RUN_SCHEMA", "MIGRATION_META_SCHEMA"):
        result = invoke(["dry-run"], {**cli_env, "MIGRATION_LEGACY_SCHEMA": FIXTURES_SCHEMA, variable: ""})
        assert result.exit_code == 2 and "name is empty" in result.output
    result = invoke(["verify"], {**cli_env, "MIGRATION_LEGACY_SCHEMA": FIXTURES_SCHEMA, "MIGRATION_LIVE_SCHEMA": ""})
    assert result.exit_code == 0, result.output  # live = legacy, the default
    assert f"Verification of the live tables in schema {FIXTURES_SCHEMA}" in result.output
    for command in (["fixtures", "load", "--schema"], ["demo", "--schema"]):
        for name, reason in {**BAD_NAMES, "": None}.items():
            result = invoke([*command, name], cli_env)
            # an empty --schema passes the settings (an empty legacy schema means the default) to the loader
            message = f"the legacy schema name {name!r} {reason}" if reason else "the fixtures schema name is empty"
            assert result.exit_code == 2, (command, name, result.output)
            assert "\nError: " + message in "\n" + result.output, (command, name, result.output)
            tried += 1
    assert tried >= 200
    assert dump(stage.conn, FIXTURES_SCHEMA, LEGACY_TABLES) == stage.legacy  # every legacy table survived


def test_hostile_user_ids_are_reported_unknown_never_interpolated(stage, cli_env, tmp_path):
    env = {**cli_env, "MIGRATION_LEGACY_SCHEMA": FIXTURES_SCHEMA}
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
    assert dump(stage.conn, FIXTURES_SCHEMA, LEGACY_TABLES) == stage.legacy
    assert stage.live() == before
