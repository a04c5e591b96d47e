"""The dry run on the seeded fixtures gives exactly the rows the spec says, derived by hand.

Each expectation below was worked out from MIGRATION_SPEC.md and seeds/fixtures/*.csv (the
comments say which rule decides it), not copied from the output.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from decimal import Decimal
from functools import partial

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import set_json_loads

from orchestrator import dry_run, fixtures
from orchestrator.config import FIXTURES_SCHEMA
from orchestrator.dbt import DbtProject


def ts(month: int, hour: int) -> dt.datetime:
    return dt.datetime(2024, month, 1, hour)


def profile_id(user_id: str) -> str:
    return str(uuid.UUID(hashlib.md5(f"UserProfile/{user_id}".encode()).hexdigest()))


def intent_id(user_id: str, context_type: str) -> str:
    return str(uuid.UUID(hashlib.md5(f"ContextIntent/{user_id}/{context_type}".encode()).hexdigest()))


ALL_PROFILE = ["coreValues", "beliefs", "interactionStyle", "lifestyle", "constraints", "location", "ageRange"]


@pytest.fixture(scope="module")
def built(settings, database):
    fixtures.load(settings, database, FIXTURES_SCHEMA)
    dry_run.dry_run(settings, database)
    # autocommit: the tests' reads must hold no lock between tests (the ones below write the same tables)
    with psycopg.connect(**database.kwargs(), autocommit=True) as pg:
        set_json_loads(partial(json.loads, parse_float=Decimal), pg)

        def rows(query):
            cur = pg.execute(query)
            names = [c.name for c in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

        yield rows


def test_profiles(built):
    profiles = {row["user_id"]: row for row in built("select * from migration_dry_run.profile")}
    assert sorted(profiles) == [f"u{n:02d}" for n in range(1, 14)]  # one per User, orphans' users absent
    for user_id, row in profiles.items():
        assert row["id"] == profile_id(user_id)

    def check(user_id, **expected):
        row = profiles[user_id]
        actual = {key: row[key] for key in expected}
        assert actual == expected, user_id

    # u01: no context profiles at all -> an empty profile, completeness 0, the User's timestamps
    check(
        "u01",
        core_values=[],
        beliefs={},
        interaction_style={},
        lifestyle={},
        constraints=[],
        location=None,
        age_range=None,
        name=None,
        completeness=0,
        missing=ALL_PROFILE,
        created_at=ts(1, 9),
        updated_at=ts(1, 10),
    )
    # u02: one context, one complete profile
    check(
        "u02",
        core_values=["honesty", "kindness"],
        beliefs={"religion": "none", "politics": "moderate"},
        interaction_style={"pace": "slow"},
        lifestyle={"pets": "cat"},
        constraints=["no smoking"],
        location="Berlin",
        age_range="30-35",
        name="Ann",
        completeness=100,
        missing=[],
        created_at=ts(3, 10),
        updated_at=ts(3, 11),
    )
    # u03: three contexts; arrays unioned in context order (romantic, friendship, professional);
    # objects unioned; equal locations do not conflict; timestamps min/max over its three profiles
    check(
        "u03",
        core_values=["honesty", "curiosity", "loyalty"],
        beliefs={"religion": "buddhist", "politics": "green"},
        interaction_style={"meetings": "async"},
        lifestyle={"diet": "vegan"},
        constraints=["remote only"],
        location="Paris",
        age_range="40-45",
        name=None,
        completeness=100,
        missing=[],
        created_at=ts(3, 10),
        updated_at=ts(3, 13),
    )
    # u04: cp04f (friendship) is created first, so its values win; " Bo " trims to "Bo" (no conflict);
    # beliefs.x objects are equal whatever their key order
    check(
        "u04",
        location="NYC",
        age_range="25-30",
        name="Bo",
        beliefs={"religion": "atheist", "x": {"a": 1, "b": 2}},
        completeness=43,
        missing=["coreValues", "interactionStyle", "lifestyle", "constraints"],
    )
    # u05: the creative context has no Profile; the service one gives a location: 1/7 -> 14
    check("u05", location="Rome", completeness=14, created_at=ts(3, 10), updated_at=ts(3, 11))
    # u06: every shared key is a type mismatch or unknown -> nothing migrates
    check("u06", core_values=[], beliefs={}, location=None, completeness=0, missing=ALL_PROFILE)
    # u07: profile p07r1b (created 09:00) precedes p07r1 (10:00) in the same context profile
    check("u07", core_values=["b", "a"], completeness=14, created_at=ts(3, 9), updated_at=ts(3, 12))
    # u08: array / SQL NULL / JSON null / string blobs: nothing, but its profiles still date the row
    check("u08", core_values=[], completeness=0, created_at=ts(3, 10), updated_at=ts(3, 11))
    # u09: 30 and "30" are one value; " x " trims; null and "" dropped; true -> "true"; 1.50 -> "1.50"
    # (same text as "1.50"); whitespace-only location is absent; \v and \f are trimmed; a lone string
    # is a one-element array; an object whose only sub-value is null is absent
    check(
        "u09",
        core_values=["30", "x", "true", "1.50"],
        constraints=["solo"],
        age_range="30",
        name="Zoe",
        location=None,
        lifestyle={},
        interaction_style={"humour": "dry"},
        completeness=57,
        missing=["beliefs", "lifestyle", "location"],
    )
    # u10: equal createdAt: context profile ids in byte order, "cp10_B" < "cp10_b" -> Quito first
    check("u10", location="Quito", completeness=14)
    check("u11", completeness=100, missing=[], core_values=["a"], beliefs={"b": 1})
    # u12: three contexts, three distinct locations (" Dakar " trims to "Dakar"): the first in context
    # order (cp12r, 10:00) wins; the equal ageRange of p12r and p12p is no conflict: 2/7 -> 29
    check(
        "u12",
        location="Accra",
        age_range="20-25",
        completeness=29,
        missing=["coreValues", "beliefs", "interactionStyle", "lifestyle", "constraints"],
        created_at=ts(3, 10),
        updated_at=ts(3, 13),
    )
    # u13: cp13_a and cp13_B have the same createdAt, so the ContextProfile id decides (byte order,
    # "cp13_B" < "cp13_a") before the Profiles' createdAt (p13a 10:00 < p13B 11:00): Porto, not Lisbon
    check(
        "u13",
        location="Porto",
        age_range=None,
        completeness=14,
        missing=["coreValues", "beliefs", "interactionStyle", "lifestyle", "constraints", "ageRange"],
        created_at=ts(3, 10),
        updated_at=ts(3, 12),
    )


def test_context_intents(built):
    intents = {(r["user_id"], r["context_type"]): r for r in built("select * from migration_dry_run.context_intent")}
    # distinct non-orphan (user, type): u07's two romantic context profiles make one intent
    assert sorted(intents) == sorted(
        [
            ("u02", "romantic"),
            ("u03", "romantic"),
            ("u03", "friendship"),
            ("u03", "professional"),
            ("u04", "friendship"),
            ("u04", "romantic"),
            ("u05", "creative"),
            ("u05", "service"),
            ("u06", "romantic"),
            ("u07", "romantic"),
            ("u07", "friendship"),
            ("u08", "romantic"),
            ("u08", "friendship"),
            ("u08", "professional"),
            ("u08", "creative"),
            ("u09", "professional"),
            ("u10", "service"),
            ("u10", "creative"),
            ("u11", "service"),
            ("u12", "romantic"),
            ("u12", "friendship"),
            ("u12", "professional"),
            ("u13", "romantic"),
        ]
    )
    for (user_id, context_type), row in intents.items():
        assert row["id"] == intent_id(user_id, context_type)

    def check(key, **expected):
        row = intents[key]
        assert {k: row[k] for k in expected} == expected, key

    check(
        ("u02", "romantic"),
        relationship_timeline="open_to_soon",
        exclusivity_expectation="monogamous",
        family_intentions="want_kids",
        attraction_importance="important",
        friendship_depth=None,
        completeness=100,
        missing=[],
    )
    check(
        ("u03", "professional"),
        partnership_type="cofounder",
        complementary_skills=["sales", "design"],
        completeness=50,
        missing=["commitmentHorizon", "equityOrRevShare"],
    )
    check(
        ("u03", "friendship"),
        friendship_depth="close",
        group_activity_preference="small_group",
        emotional_support_expectation="moderate",
        completeness=100,
    )
    check(
        ("u03", "romantic"),
        complementary_skills=None,
        completeness=50,
        missing=["familyIntentions", "attractionImportance"],
    )
    # no Profile for cp05c: the intent takes its ContextProfile's timestamps
    check(
        ("u05", "creative"),
        completeness=0,
        created_at=ts(2, 10),
        updated_at=ts(2, 11),
        missing=["creativeType", "roleNeeded", "processStyle", "egoBalance", "compensationExpectation"],
    )
    # wrong-context friendshipDepth and the type-mismatched relationshipTimeline do not migrate
    check(
        ("u06", "romantic"),
        family_intentions="open",
        relationship_timeline=None,
        friendship_depth=None,
        completeness=25,
    )
    # two romantic context profiles merge in context order: open_to_soon (cp07r1) beats actively_looking
    check(
        ("u07", "romantic"),
        relationship_timeline="open_to_soon",
        exclusivity_expectation="monogamous",
        family_intentions="open",
        completeness=75,
        missing=["attractionImportance"],
        created_at=ts(3, 9),
        updated_at=ts(3, 12),
    )
    check(("u07", "friendship"), completeness=0, created_at=ts(3, 10), updated_at=ts(3, 11))
    # numbers and booleans as jsonb prints them; a JSON null partnershipType is absent
    check(
        ("u09", "professional"),
        equity_or_rev_share="1.500",
        commitment_horizon="true",
        complementary_skills=["python"],
        partnership_type=None,
        completeness=75,
        missing=["partnershipType"],
    )
    check(
        ("u11", "service"),
        service_type="offering",
        budget_range="flexible",
        timeline_needed="weeks",
        credentials_required="licensed",
        completeness=100,
    )
    # u12's profiles hold shared keys only: three empty intents, each dated by its own profile
    check(("u12", "friendship"), completeness=0, friendship_depth=None, created_at=ts(3, 11), updated_at=ts(3, 12))
    # u13's two romantic context profiles tie on createdAt: cp13_B (id "cp13_B" < "cp13_a") comes first,
    # although its Profile p13B was created after p13a
    check(
        ("u13", "romantic"),
        relationship_timeline="taking_my_time",
        completeness=25,
        missing=["exclusivityExpectation", "familyIntentions", "attractionImportance"],
        created_at=ts(3, 10),
        updated_at=ts(3, 12),
    )


def test_conflicts(built):
    rows = built(
        'select user_id, context_type, field, "values", chosen, decided_by from migration_dry_run.migration_conflicts'
    )
    # no reviewer decided anything: every conflict migrates its first value (spec §11)
    assert {row.pop("decided_by") for row in rows} == {"first_value"}
    assert built("select count(*) as decisions from migration_dry_run.migration_decisions") == [{"decisions": 0}]
    assert sorted(rows, key=lambda r: (r["user_id"], r["field"])) == [
        {
            "user_id": "u04",
            "context_type": None,
            "field": "beliefs.religion",
            "values": ["atheist", "catholic"],
            "chosen": "atheist",
        },
        {"user_id": "u04", "context_type": None, "field": "location", "values": ["NYC", "SF"], "chosen": "NYC"},
        {
            "user_id": "u07",
            "context_type": "romantic",
            "field": "relationshipTimeline",
            "values": ["open_to_soon", "actively_looking"],
            "chosen": "open_to_soon",
        },
        {"user_id": "u10", "context_type": None, "field": "location", "values": ["Quito", "Lima"], "chosen": "Quito"},
        # three distinct values are one conflict, values in context order (" Dakar " trimmed)
        {
            "user_id": "u12",
            "context_type": None,
            "field": "location",
            "values": ["Accra", "Dakar", "Abuja"],
            "chosen": "Accra",
        },
        # the ContextProfile id breaks the createdAt tie, before the Profile's createdAt
        {"user_id": "u13", "context_type": None, "field": "location", "values": ["Porto", "Lisbon"], "chosen": "Porto"},
        {
            "user_id": "u13",
            "context_type": "romantic",
            "field": "relationshipTimeline",
            "values": ["taking_my_time", "actively_looking"],
            "chosen": "taking_my_time",
        },
    ]


def test_unmapped_fields(built):
    rows = built("select * from migration_dry_run.migration_unmapped_fields")
    got = sorted(
        (
            r["legacy_profile_id"],
            r["key"] or "",
            r["reason"],
            r["user_id"],
            r["context_type"],
            r["context_profile_id"],
            json.dumps(r["value"], default=str),
        )
        for r in rows
    )
    u06 = ("p06r", "u06", "romantic", "cp06r")

    def row(base, key, reason, value):
        profile, user, context_type, context_profile = base
        return (profile, key, reason, user, context_type, context_profile, json.dumps(value))

    assert got == sorted(
        [
            row(u06, "favouriteColour", "unknown_key", "blue"),
            row(u06, "Location", "unknown_key", "Oslo"),  # keys match case-sensitively
            row(u06, "notes", "unknown_key", None),  # a JSON null value stays jsonb null
            row(u06, "friendshipDepth", "wrong_context", "close"),
            row(u06, "location", "type_mismatch", {"city": "Oslo"}),
            row(u06, "coreValues", "type_mismatch", {"a": 1}),
            row(u06, "beliefs", "type_mismatch", ["x"]),
            row(u06, "relationshipTimeline", "type_mismatch", ["soon"]),
            row(u06, "constraints", "type_mismatch", ["ok", {"bad": 1}]),
            row(("p08r", "u08", "romantic", "cp08r"), "", "not_an_object", ["not", "an", "object"]),
            row(("p08c", "u08", "creative", "cp08c"), "", "not_an_object", "just a string"),
            # the context profile's user does not exist: user_id is the dangling userId
            row(("pX1", "ghost", "romantic", "cpX1"), "location", "orphan_context_profile", "Nowhere"),
            row(("pX1", "ghost", "romantic", "cpX1"), "mystery", "orphan_context_profile", 1),
            # the context profile does not exist: no user, no type, the dangling contextProfileId
            row(("pX3", None, None, "cp_missing"), "location", "orphan_profile", "Lost"),
            row(("pX3", None, None, "cp_missing"), "friendshipDepth", "orphan_profile", "close"),
            row(("pX4", None, None, "cp_missing2"), "", "orphan_profile", 42),
        ]
    )


def test_summary(built):
    rows = built("select metric, value, expected, passed from migration_dry_run.migration_summary")
    summary = {r["metric"]: (r["value"], r["expected"], r["passed"]) for r in rows}
    assert len(rows) == len(summary)  # one row per metric

    def figure(value):
        return (Decimal(value), None, None)

    def check(value, expected, passed=True):
        return (Decimal(value), Decimal(expected), passed)

    # the whole table, exactly (a numeric compares as its value: 13 = 13.0)
    assert summary == {
        "users": figure(13),
        "profiles": check(13, 13),
        "users_with_one_profile": check(13, 13),
        "context_profiles": figure(28),
        "context_profiles_migrated": figure(25),
        "orphan_context_profiles": figure(3),  # ghost, "U02", "u02 "
        # distinct non-orphan (user, type): u07's two romantic context profiles make one intent, u13's too
        "context_intents": check(23, 23),
        "duplicate_context_profiles": figure(2),  # cp07r2, cp13_a (or cp13_B)
        "legacy_profiles": figure(29),
        "legacy_profiles_migrated": figure(25),
        "legacy_profiles_of_orphan_context_profiles": figure(2),  # pX1, pX2 (SQL NULL data, still counted)
        "orphan_legacy_profiles": figure(2),  # pX3, pX4
        "object_blobs": figure(23),  # 29 - 3 non-object - 3 null
        "null_blobs": figure(3),  # p08f, p08p, pX2
        "non_object_blobs": check(3, 3),  # p08r, p08c, pX4
        # keys: p02r 12, p03r 5, p03f 7, p03p 5, p04r 5, p04f 5, p05s 3, p06r 10, p07r1 2, p07r1b 3,
        # p07r2 2, p07f 0, p09p 11, p10b 2, p10B 2, p11s 11, p12r 2, p12f 1, p12p 2, p13a 2, p13B 2,
        # pX1 2, pX3 2
        "keys_seen": figure(98),
        "keys_mapped": figure(85),
        "keys_unmapped": figure(13),  # p06r 9, pX1 2, pX3 2 (the non-object blobs are counted apart)
        "keys_accounted": check(98, 98),
        "conflicts": figure(7),  # u04 2, u07 1, u10 1, u12 1, u13 2
        "users_with_conflicts": figure(5),
        # 5 of ALL 13 users (not of the users with data), as a fraction, at numeric division's scale;
        # expected: the dbt var max_conflict_rate's default; at warn severity, so the dry run is built
        "conflict_rate": check(Decimal("0.38461538461538461538"), Decimal("0.05"), passed=False),
        "conflicts_decided": figure(0),  # no reviewer decision (spec §11)
        "decisions_stale": check(0, 0),
        "completeness_out_of_range": check(0, 0),
        "chat_messages": figure(7),
        # m1, m2 (cp02r), m3 (cp03f), m4 (cp07r2), m5 (cp05c, no Profile but migrated)
        "chat_messages_mapped_to_one_intent": check(5, 5),
        "chat_messages_of_orphan_context_profiles": figure(1),  # m6 (cpX1)
        "chat_messages_without_context_profile": figure(1),  # m7 (cp_gone)
    }


@pytest.mark.parametrize(
    ("statement", "violation"),
    [
        ("insert into {s}.profile select * from {s}.profile limit 1", psycopg.errors.UniqueViolation),
        (
            "insert into {s}.profile select md5(id), user_id || 'x', core_values, beliefs, interaction_style,"
            " lifestyle, constraints, location, age_range, name, completeness, missing, created_at, updated_at"
            " from {s}.profile limit 1",
            None,  # the control: a row with new keys goes in
        ),
        ("update {s}.profile set user_id = (select max(user_id) from {s}.profile)", psycopg.errors.UniqueViolation),
        ("update {s}.profile set id = null", psycopg.errors.NotNullViolation),
        ("update {s}.profile set completeness = 101", psycopg.errors.CheckViolation),
        ("insert into {s}.context_intent select * from {s}.context_intent limit 1", psycopg.errors.UniqueViolation),
        (
            "update {s}.context_intent set id = md5(id) where context_type = 'friendship' and user_id = 'u03'",
            None,  # the control
        ),
        (
            "update {s}.context_intent set context_type = 'romantic' where context_type = 'friendship'"
            " and user_id in (select user_id from {s}.context_intent where context_type = 'romantic')",
            psycopg.errors.UniqueViolation,
        ),
        ("update {s}.context_intent set context_type = 'business'", psycopg.errors.CheckViolation),
        ("update {s}.context_intent set completeness = -1", psycopg.errors.CheckViolation),
        ("update {s}.context_intent set user_id = null", psycopg.errors.NotNullViolation),
    ],
)
def test_the_database_enforces_the_output_keys_and_ranges(built, settings, database, statement, violation):
    """The keys, not-nulls, context types and completeness range of profile and context_intent are the
    tables' own constraints and unique indexes (no data test scans them again): a build or a catch-up's
    splice that broke one would fail. Each statement runs in a transaction that is rolled back."""
    with psycopg.connect(**database.kwargs()) as pg:
        schema = sql.Identifier(settings.dry_run_schema).as_string(pg)
        try:
            _goes_in_or_is_refused(pg, statement.format(s=schema), violation, rows=1)
        finally:
            pg.rollback()


def _goes_in_or_is_refused(pg, statement: str, violation, rows: int) -> None:
    """The control (violation None) writes exactly `rows` rows; otherwise the database refuses the statement."""
    if violation is None:
        assert pg.execute(statement).rowcount == rows
    else:
        with pytest.raises(violation):
            pg.execute(statement)


@pytest.mark.parametrize(
    ("breakage", "model", "violation"),
    [
        (None, "profile", None),  # the controls: the models' own SQL, on the rows as built, goes in
        (None, "context_intent", None),
        (
            "insert into {s}.int_scored_rows select * from {s}.int_scored_rows where context_type is null limit 1",
            "profile",
            psycopg.errors.UniqueViolation,
        ),
        (
            "insert into {s}.int_scored_rows select * from {s}.int_scored_rows where context_type is not null limit 1",
            "context_intent",
            psycopg.errors.UniqueViolation,
        ),
        (
            "insert into {s}.int_context_intents select * from {s}.int_context_intents limit 1",
            "context_intent",
            psycopg.errors.UniqueViolation,
        ),
        (
            "update {s}.int_scored_rows set completeness = 101 where context_type is null",
            "profile",
            psycopg.errors.CheckViolation,
        ),
        (
            "update {s}.int_scored_rows set completeness = -1 where context_type is not null",
            "context_intent",
            psycopg.errors.CheckViolation,
        ),
    ],
)
def test_the_outputs_constraints_refuse_what_the_intermediate_tests_checked(
    built, settings, database, breakage, model, violation
):
    """int_scored_rows and int_context_intents have no data test of their grain or range (docs/decisions.md,
    "Tests and constraints"): each of their rows becomes one row of profile or context_intent, whose unique
    indexes and check constraints refuse a second row or a completeness out of range. Here the intermediate
    table is broken, then the output built again from it with the model's own compiled SQL, in a
    transaction that is rolled back."""
    compiled = DbtProject(settings, database).full().target_path / "compiled" / "migration" / "models" / "marts"
    select = (compiled / f"{model}.sql").read_text()
    with psycopg.connect(**database.kwargs()) as pg:
        schema = sql.Identifier(settings.dry_run_schema).as_string(pg)
        output = f"{schema}.{sql.Identifier(model).as_string(pg)}"
        try:
            pg.execute("set local lock_timeout = '10s'")  # a lock held elsewhere fails the test, never hangs it
            if breakage is not None:
                assert pg.execute(breakage.format(s=schema)).rowcount >= 1
            rows = pg.execute(f"select count(*) from {output}").fetchone()[0]
            pg.execute(f"truncate {output}")
            _goes_in_or_is_refused(pg, f"insert into {output} {select}", violation, rows)
        finally:
            pg.rollback()


def test_the_dry_runs_tables_are_not_vacuumed_for_their_inserts(built, settings, database):
    """Every table a dry run writes (dbt's, and the copy of the legacy rows) is written in bulk once: autovacuum
    must not read it whole for its inserts while the dry run goes on (macros/analyze.sql). Vacuums after
    deletes keep the server's settings."""
    with psycopg.connect(**database.kwargs()) as pg:
        tables = pg.execute(
            "select n.nspname, c.relname, coalesce(c.reloptions, '{}') from pg_class as c"
            " join pg_namespace as n on n.oid = c.relnamespace where c.relkind = 'r' and n.nspname in (%s, %s)",
            [settings.dry_run_schema, settings.snapshot_schema],
        ).fetchall()
    seeds = {"field_map", "required_fields"}  # loaded by `dbt seed`, a hundred rows
    built_tables = {(schema, name): options for schema, name, options in tables if name not in seeds}
    assert {schema for schema, _ in built_tables} == {settings.dry_run_schema, settings.snapshot_schema}
    assert (settings.dry_run_schema, "int_profile_keys_classified") in built_tables
    assert (settings.snapshot_schema, "Profile") in built_tables
    not_set = [key for key, options in built_tables.items() if "autovacuum_vacuum_insert_threshold=-1" not in options]
    assert not_set == []
