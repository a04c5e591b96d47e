"""Differential test: the dbt dry run against an independent Python model of the spec (spec_model.py),
on seeded random messy legacy data (legacy_generator.py), then again with random reviewer decisions
imported through `orchestrator decisions import` (one made stale by a legacy change). Plus unit tests of
the model itself."""

from __future__ import annotations

import csv
import dataclasses
import json
import random
import unicodedata
from collections import Counter
from datetime import datetime
from decimal import Decimal

import legacy_generator
import psycopg
import pytest
import spec_model
from psycopg import sql
from spec_model import SQL_NULL

from orchestrator import decisions, dry_run

GENERATED_SCHEMA = "legacy_generated"
# (seed, users, --batches); the second PostgreSQL version runs the first and the batched one
SEEDS = [
    (101, 300, 1),
    pytest.param(202, 250, 1, marks=pytest.mark.slow),
    pytest.param(303, 200, 1, marks=pytest.mark.slow),
    (404, 300, 3),
]
TABLE_KEYS = {  # each table's natural key, to pair rows in a diff
    "profile": ("user_id",),
    "context_intent": ("user_id", "context_type"),
    "migration_conflicts": ("user_id", "context_type", "field"),
    "migration_unmapped_fields": ("legacy_profile_id", "key"),
    "migration_summary": ("metric",),
    "migration_decisions": ("user_id", "context_type", "field"),
}
# what the model knows of a decision; the dry run's table also says who, when, why and from which file
DECISION_COLUMNS = ("user_id", "context_type", "field", "decided_value", "status", "stale_reason")
SHOWN = 5  # differing rows shown per table


def parse_json(text: str):
    return json.loads(text, parse_float=Decimal)


def model_of(rows, decided=None):
    """The model's dry-run tables (the summary at the dbt var max_conflict_rate's default), with the
    reviewers' decisions ``decided``."""
    legacy = rows["User"], rows["ContextProfile"], rows["Profile"]
    out = spec_model.migrate(*legacy, decisions=decided)
    out["migration_summary"] = spec_model.summary(*legacy, rows["ChatMessage"], outputs=out)
    return out


# ---------------------------------------------------------------------------------------------
# The model on hand-made inputs (no database)

T = datetime(2024, 1, 1)


def one_user(*blobs, context_types=None):
    """A user with one ContextProfile + Profile per blob, in that context order."""
    context_types = context_types or ["romantic"] * len(blobs)
    users = [{"id": "u", "createdAt": T, "updatedAt": T}]
    contexts = [
        {"id": f"cp{i}", "userId": "u", "contextType": c, "createdAt": T.replace(hour=i), "updatedAt": T}
        for i, c in enumerate(context_types)
    ]
    profiles = [
        {"id": f"p{i}", "contextProfileId": f"cp{i}", "data": blob, "createdAt": T.replace(hour=i), "updatedAt": T}
        for i, blob in enumerate(blobs)
    ]
    return users, contexts, profiles


def test_model_spec_examples():
    out = spec_model.migrate(
        *one_user(
            {"location": " SF ", "coreValues": [30, "c"], "beliefs": {"x": {"a": 1, "b": 2}, "y": 30}},
            {"location": "NYC", "coreValues": ["30", " d", None, ""], "beliefs": {"x": {"b": 2, "a": 1}, "y": "30"}},
        )
    )
    (profile,) = out["profile"]
    assert profile["location"] == "SF"
    assert profile["core_values"] == ["30", "c", "d"]
    assert profile["beliefs"] == {"x": {"a": 1, "b": 2}, "y": 30}
    assert profile["missing"] == ["interactionStyle", "lifestyle", "constraints", "ageRange"]
    assert profile["completeness"] == 43  # 3/7 = 42.86
    conflicts = {c["field"]: c for c in out["migration_conflicts"]}
    assert set(conflicts) == {"location", "beliefs.y"}  # {"a":1,"b":2} = {"b":2,"a":1}
    assert conflicts["location"]["values"] == ["SF", "NYC"] and conflicts["location"]["chosen"] == "SF"
    assert conflicts["beliefs.y"]["values"] == [30, "30"] and conflicts["location"]["context_type"] is None
    assert out["migration_unmapped_fields"] == []


def test_model_normalisation_and_accounting():
    users, contexts, profiles = one_user(
        {
            "location": "\u00a0SF\v",  # U+00A0 is not trimmed, \v is
            "ageRange": Decimal("1.50"),
            "name": " \t\n\r\f\v",  # absent, still mapped
            "constraints": {"a": 1},  # type_mismatch
            "friendshipDepth": [1],  # wrong_context beats type_mismatch
            "Location": None,  # unknown_key, value JSON null
            "relationshipTimeline": Decimal("1E+2"),
        },
        [1, 2],
        SQL_NULL,
        None,
    )
    contexts.append({"id": "cp-orphan", "userId": "U", "contextType": "service", "createdAt": T, "updatedAt": T})
    profiles += [
        {"id": "p-oc", "contextProfileId": "cp-orphan", "data": "s", "createdAt": T, "updatedAt": T},
        {"id": "p-op", "contextProfileId": "nope", "data": {"k": 1}, "createdAt": T, "updatedAt": T},
    ]
    out = spec_model.migrate(users, contexts, profiles)
    (profile,) = out["profile"]
    assert (profile["location"], profile["age_range"], profile["name"]) == ("\u00a0SF", "1.50", None)
    (intent,) = out["context_intent"]
    assert intent["relationship_timeline"] == "100" and intent["complementary_skills"] is SQL_NULL
    assert intent["completeness"] == 25 and intent["created_at"] == T
    unmapped = {(u["legacy_profile_id"], u["key"]): (u["reason"], u["value"]) for u in out["migration_unmapped_fields"]}
    assert unmapped == {
        ("p0", "constraints"): ("type_mismatch", {"a": 1}),
        ("p0", "friendshipDepth"): ("wrong_context", [1]),
        ("p0", "Location"): ("unknown_key", None),
        ("p1", None): ("not_an_object", [1, 2]),
        ("p-oc", None): ("orphan_context_profile", "s"),
        ("p-op", "k"): ("orphan_profile", 1),
    }
    orphan = next(u for u in out["migration_unmapped_fields"] if u["reason"] == "orphan_profile")
    assert (orphan["user_id"], orphan["context_type"], orphan["context_profile_id"]) == (None, None, "nope")
    assert spec_model.key_accounting(users, contexts, profiles) == {
        "keys_seen": 8,
        "keys_mapped": 4,
        "keys_unmapped": 4,
        "non_object_blobs": 2,
    }


def test_model_context_order_ties_and_aliases():
    users, contexts, profiles = one_user({"location": "a"}, {"location": "B"})
    for row in contexts + profiles:
        row["createdAt"] = T  # ties: ids decide, in byte order ('B' < 'a')
    contexts[0]["id"], contexts[1]["id"] = "cp-a", "cp-B"
    profiles[0]["contextProfileId"], profiles[1]["contextProfileId"] = "cp-a", "cp-B"
    out = spec_model.migrate(users, contexts, profiles)
    assert out["profile"][0]["location"] == "B"
    assert out["migration_conflicts"][0]["values"] == ["B", "a"]
    # an alias added to the field map: taken after the key of higher priority, in the same blob
    field_map = spec_model.read_field_map()
    field_map.append(spec_model.MapRow(99, "city", "profile", None, "location", "scalar"))
    out = spec_model.migrate(*one_user({"city": "Oslo", "location": "Rome"}), field_map=field_map)
    assert out["migration_conflicts"][0]["values"] == ["Rome", "Oslo"]
    assert out["migration_unmapped_fields"] == []


def test_model_decisions():
    """§11: a decision naming one of a conflict's values migrates it (the conflict's own JSON: 1.00 names
    the logged 1.0), in the output and as `chosen`; otherwise it is stale and the first value migrates."""
    blobs = (
        {"location": "SF", "beliefs": {"x": 2, "y": "a"}, "relationshipTimeline": "soon"},
        {"location": "NYC", "beliefs": {"x": Decimal("1.0"), "y": "b"}, "relationshipTimeline": "later"},
    )

    def decision(field, value, context_type=None):
        return {"user_id": "u", "context_type": context_type, "field": field, "value": value}

    decided = [
        decision("location", "NYC"),
        decision("beliefs.x", Decimal("1.00")),
        decision("beliefs.y", "c"),  # not among the values: stale
        decision("relationshipTimeline", "later", "friendship"),  # no such conflict: stale
    ]
    out = spec_model.migrate(*one_user(*blobs), decisions=decided)
    (profile,) = out["profile"]
    assert profile["location"] == "NYC"
    assert profile["beliefs"] == {"x": Decimal("1.0"), "y": "a"}
    assert str(profile["beliefs"]["x"]) == "1.0"  # the conflict's own JSON, not the decision's 1.00
    conflicts = {c["field"]: c for c in out["migration_conflicts"]}
    assert (conflicts["location"]["chosen"], conflicts["location"]["decided_by"]) == ("NYC", "reviewer")
    assert conflicts["beliefs.y"]["decided_by"] == "first_value" and conflicts["beliefs.y"]["chosen"] == "a"
    assert conflicts["relationshipTimeline"]["decided_by"] == "first_value"
    assert [(d["field"], d["status"], d["stale_reason"]) for d in out["migration_decisions"]] == [
        ("location", "applied", None),
        ("beliefs.x", "applied", None),
        ("beliefs.y", "stale", "value_not_among_values"),
        ("relationshipTimeline", "stale", "no_conflict"),
    ]
    users, contexts, profiles = one_user(*blobs)
    summary = {row["metric"]: row for row in spec_model.summary(users, contexts, profiles, [], outputs=out)}
    assert summary["conflicts_decided"]["value"] == 2
    assert (summary["decisions_stale"]["value"], summary["decisions_stale"]["passed"]) == (2, False)


def test_model_completeness_rounds_half_away_from_zero():
    assert spec_model.completeness({"a": 1}, ["a", "b", "c", "d", "e", "f", "g", "h"])[0] == 13  # 12.5
    assert spec_model.completeness({}, ["a"]) == (0, ["a"])
    assert spec_model.completeness({"a": 1, "b": 2}, ["a", "b"]) == (100, [])


def test_model_summary():
    users, contexts, profiles = one_user({"location": "SF", "k": 1}, {"location": "NYC"}, [1], None)
    contexts[1]["contextType"] = "friendship"
    users += [{"id": "v", "createdAt": T, "updatedAt": T}, {"id": "w", "createdAt": T, "updatedAt": T}]
    contexts.append({"id": "cp-orphan", "userId": "U", "contextType": "service", "createdAt": T, "updatedAt": T})
    profiles += [
        {"id": "p-oc", "contextProfileId": "cp-orphan", "data": SQL_NULL, "createdAt": T, "updatedAt": T},
        {"id": "p-op", "contextProfileId": "nope", "data": "s", "createdAt": T, "updatedAt": T},
    ]
    messages = [
        {"id": f"m{i}", "contextProfileId": context_id}
        for i, context_id in enumerate(["cp0", "cp0", "cp3", "cp-orphan", "nope", "CP0"])
    ]
    rows = spec_model.summary(users, contexts, profiles, messages)
    got = {row["metric"]: (row["value"], row["expected"], row["passed"]) for row in rows}
    assert [row["metric"] for row in rows][:3] == ["users", "profiles", "users_with_one_profile"]
    assert got == {
        "users": (3, None, None),
        "profiles": (3, 3, True),
        "users_with_one_profile": (3, 3, True),
        "context_profiles": (5, None, None),
        "context_profiles_migrated": (4, None, None),
        "orphan_context_profiles": (1, None, None),
        "context_intents": (2, 2, True),  # romantic (cp0, cp2, cp3) and friendship (cp1)
        "duplicate_context_profiles": (2, None, None),
        "legacy_profiles": (6, None, None),
        "legacy_profiles_migrated": (4, None, None),
        "legacy_profiles_of_orphan_context_profiles": (1, None, None),
        "orphan_legacy_profiles": (1, None, None),
        "object_blobs": (2, None, None),
        "null_blobs": (2, None, None),  # p3 (JSON null) and p-oc (SQL NULL)
        "non_object_blobs": (2, 2, True),  # p2 and p-op
        "keys_seen": (3, None, None),
        "keys_mapped": (2, None, None),
        "keys_unmapped": (1, None, None),
        "keys_accounted": (3, 3, True),
        "conflicts": (1, None, None),
        "users_with_conflicts": (1, None, None),
        "conflict_rate": (Decimal("0.33333333333333333333"), Decimal("0.05"), False),  # 1 of ALL 3 users
        "conflicts_decided": (0, None, None),
        "decisions_stale": (0, 0, True),
        "completeness_out_of_range": (0, 0, True),
        "chat_messages": (6, None, None),
        "chat_messages_mapped_to_one_intent": (3, 3, True),
        "chat_messages_of_orphan_context_profiles": (1, None, None),
        "chat_messages_without_context_profile": (2, None, None),  # "nope", and "CP0" (ids match exactly)
    }
    assert all(isinstance(value, Decimal) for value, _, _ in got.values())
    relaxed = spec_model.summary(users, contexts, profiles, messages, max_conflict_rate=Decimal("0.5"))
    assert {r["metric"]: r for r in relaxed}["conflict_rate"]["passed"] is True
    nobody = spec_model.summary([], [], [], [])
    assert {r["metric"]: r["value"] for r in nobody}["conflict_rate"] == 0


def test_model_numeric_division_scales():
    division = spec_model.numeric_division
    assert str(division(3, 11)) == "0.27272727272727272727"
    assert str(division(5, 13)) == "0.38461538461538461538"
    assert str(division(2, 3)) == "0.66666666666666666667"  # the last digit rounded half away from zero
    assert str(division(12, 11)) == "1.0909090909090909"
    assert str(division(11, 11)) == "1.00000000000000000000"
    assert str(division(0, 7)) == "0E-20"  # the same value as PostgreSQL's 0.00000000000000000000


# ---------------------------------------------------------------------------------------------
# The model's assumptions about PostgreSQL, and the generator + loader, on the real server


def test_number_text_matches_jsonb(database):
    literals = ["30", "1.50", "1.500", "1e2", "1E+2", "1.50e1", "2.5e-3", "-0", "-0.0", "0e-7", "1e30",
                "12345678901234567890123", "-12.340", "0.1e1", "1E-7", "-5e-1"]  # fmt: skip
    with psycopg.connect(**database.kwargs()) as pg:
        for literal in literals:
            printed = pg.execute("select %s::jsonb #>> '{}'", [literal]).fetchone()[0]
            assert spec_model.number_text(parse_json(literal)) == printed, literal


def test_numeric_division_matches_postgresql(database):
    """The conflict rate's exact value and scale: integer counts divided as numeric, as the summary does."""
    pairs = [(0, 1), (0, 11), (1, 1), (3, 11), (5, 13), (2, 3), (1, 7), (12, 11), (7, 3), (1, 9999), (1, 10000),
             (9999, 10000), (10000, 10000), (10001, 10000), (1, 123456), (123456, 7), (99, 100), (100, 99),
             (1, 300), (37, 303), (1, 10**12), (10**12 - 1, 10**12), (12345678901234, 3), (5, 2), (1, 8)]  # fmt: skip
    with psycopg.connect(**database.kwargs()) as pg:
        for dividend, divisor in pairs:
            printed = pg.execute("select (%s::bigint)::numeric / %s::bigint", [dividend, divisor]).fetchone()[0]
            assert str(spec_model.numeric_division(dividend, divisor)) == str(printed), (dividend, divisor)  # scale too


def test_generator_covers_the_drift_cases():
    rows = legacy_generator.generate(7, 60)
    out = model_of(rows)
    reasons = Counter(u["reason"] for u in out["migration_unmapped_fields"])
    assert set(reasons) == {"unknown_key", "wrong_context", "type_mismatch", "orphan_context_profile",
                            "orphan_profile", "not_an_object"}  # fmt: skip
    fields = {c["field"].split(".")[0] for c in out["migration_conflicts"]}
    assert {"location", "beliefs"} <= fields and any(c["context_type"] for c in out["migration_conflicts"])
    pairs = Counter((cp["userId"], cp["contextType"]) for cp in rows["ContextProfile"])
    assert max(pairs.values()) > 1
    assert max(Counter(p["contextProfileId"] for p in rows["Profile"]).values()) > 1
    assert legacy_generator.generate(7, 60) == rows  # deterministic


def test_generator_loads_exactly(database):
    rows = legacy_generator.generate(1, 20)
    with psycopg.connect(**database.kwargs()) as pg:
        counts = legacy_generator.load(pg, "legacy_generator_check", rows)
        assert counts == {table: len(rows[table]) for table in rows}
        stored = pg.execute(
            'select id, "contextProfileId", data::text, "createdAt", "updatedAt" from legacy_generator_check."Profile"'
        ).fetchall()
        # a second load replaces the schema it made, through a cursor too
        with pg.cursor() as cur:
            assert legacy_generator.load(cur, "legacy_generator_check", rows) == counts
    expected = {p["id"]: p for p in rows["Profile"]}
    for profile_id, context_id, data, created, updated in stored:
        want = expected[profile_id]
        assert (context_id, created, updated) == (want["contextProfileId"], want["createdAt"], want["updatedAt"])
        got = SQL_NULL if data is None else parse_json(data)
        assert canonical(got, "jsonb") == canonical(want["data"], "jsonb"), profile_id


def test_loader_refuses_a_foreign_schema(database):
    with psycopg.connect(**database.kwargs(), autocommit=True) as pg:
        pg.execute("create schema app_owned; create table app_owned.keep (id int)")
        with pytest.raises(RuntimeError, match="not made by legacy_generator"):
            legacy_generator.load(pg, "app_owned", legacy_generator.generate(1, 1))
        assert pg.execute("select to_regclass('app_owned.keep')").fetchone()[0] is not None


# ---------------------------------------------------------------------------------------------
# The differential test


def canonical(value, data_type: str):
    """A hashable form; jsonb compared as jsonb prints it (numbers by their text), SQL NULL apart."""
    if value is SQL_NULL:
        return ("SQL NULL",)
    if data_type == "jsonb":
        return spec_model.jsonb_exact_key(value)
    if isinstance(value, list):
        return tuple(value)
    return value


def expected_type(table: str, column: str, field_map) -> str:
    """The column's type per docs/decisions.md ("Output shapes")."""
    if table == "migration_summary":
        return {"value": "numeric", "expected": "numeric", "passed": "boolean"}.get(column, "text")
    jsonb = {spec_model.snake_case(r.field) for r in field_map if r.kind in ("array", "object")}
    if column in jsonb | {"values", "chosen", "value", "decided_value"}:
        return "jsonb"
    if column == "completeness":
        return "integer"
    if column == "missing":
        return "ARRAY"  # text[]
    if column in ("created_at", "updated_at"):
        return "timestamp(3)"
    return "text"


def read_table(pg, schema: str, table: str) -> tuple[dict[str, str], list[dict]]:
    """Column types and rows; jsonb read as text and parsed with Decimal numbers (SQL NULL → SQL_NULL)."""
    columns = {
        name: f"timestamp({precision})" if data_type.startswith("timestamp without") else data_type
        for name, data_type, precision in pg.execute(
            "select column_name, data_type, datetime_precision from information_schema.columns"
            " where table_schema = %s and table_name = %s order by ordinal_position",
            [schema, table],
        )
    }
    assert columns, f"{schema}.{table} does not exist"
    select = sql.SQL(", ").join(
        sql.SQL("{}::text").format(sql.Identifier(c)) if t == "jsonb" else sql.Identifier(c) for c, t in columns.items()
    )
    rows = []
    for record in pg.execute(sql.SQL("select {} from {}").format(select, sql.Identifier(schema, table))):
        row = {}
        for (column, data_type), value in zip(columns.items(), record, strict=True):
            if data_type == "jsonb":
                value = SQL_NULL if value is None else parse_json(value)
            row[column] = value
        rows.append(row)
    return columns, rows


def render(row: dict) -> str:
    def plain(value):
        if value is SQL_NULL:
            return "SQL_NULL"
        if isinstance(value, datetime):
            return value.isoformat(sep=" ", timespec="milliseconds")
        if isinstance(value, (list, dict, Decimal, bool)) or value is None:
            text = legacy_generator.to_json(value)
        else:
            text = repr(value)
        # 'café' (NFC) and 'café' (NFD) look alike: show escapes when it matters
        return text if unicodedata.is_normalized("NFC", text) else text.encode("ascii", "backslashreplace").decode()

    return ", ".join(f"{k}={plain(v)}" for k, v in row.items())


def diff_table(table: str, columns: dict[str, str], model_rows: list[dict], sql_rows: list[dict]) -> list[str]:
    """Compare as multisets of rows; describe the first few differences, paired by the natural key."""
    field_map = spec_model.read_field_map()
    model_columns = set(model_rows[0]) if model_rows else set(columns)
    if set(columns) != model_columns:
        return [f"{table}: columns: SQL has {sorted(columns)}, the model {sorted(model_columns)}"]
    problems = [
        f"{table}.{c}: type {t}, decisions.md says {expected_type(table, c, field_map)}"
        for c, t in columns.items()
        if t != expected_type(table, c, field_map)
    ]

    def canon(row):
        return tuple(sorted((c, canonical(row[c], columns[c])) for c in columns))

    def key_of(row):
        return tuple(row[c] for c in TABLE_KEYS[table])

    model_count, sql_count = Counter(map(canon, model_rows)), Counter(map(canon, sql_rows))
    if model_count == sql_count:
        return problems
    only_model = [r for r in model_rows if model_count[canon(r)] > sql_count[canon(r)]]
    only_sql = [r for r in sql_rows if sql_count[canon(r)] > model_count[canon(r)]]
    problems.append(
        f"{table}: {len(model_rows)} model rows, {len(sql_rows)} SQL rows; "
        f"{len(only_model)} only in the model, {len(only_sql)} only in SQL"
    )
    sql_by_key = {key_of(r): r for r in only_sql}
    paired = [(r, sql_by_key[key_of(r)]) for r in only_model if key_of(r) in sql_by_key]
    for mine, theirs in paired[:SHOWN]:
        changed = [c for c in columns if canonical(mine[c], columns[c]) != canonical(theirs[c], columns[c])]
        problems.append(
            f"  {key_of(mine)}: "
            + "; ".join(f"{render({c: mine[c]})} in the model, {render({c: theirs[c]})} in SQL" for c in changed)
        )
    paired_keys = {key_of(mine) for mine, _ in paired}
    problems += [f"  only in the model: {render(r)}" for r in only_model if key_of(r) not in paired_keys][:SHOWN]
    problems += [f"  only in SQL: {render(r)}" for r in only_sql if key_of(r) not in paired_keys][:SHOWN]
    return problems


def compare(pg, schema: str, expected: dict[str, list[dict]]) -> tuple[dict, list[str]]:
    """Every dry-run table against the model's: the tables as read, and the differences described."""
    actual = {table: read_table(pg, schema, table) for table in expected}
    columns, rows = actual["migration_decisions"]
    actual["migration_decisions"] = (
        {column: columns[column] for column in DECISION_COLUMNS},
        [{column: row[column] for column in DECISION_COLUMNS} for row in rows],
    )
    problems = []
    for table, (table_columns, sql_rows) in actual.items():
        problems += diff_table(table, table_columns, expected[table], sql_rows)
    return actual, problems


def random_decisions(seed: int, conflicts: list[dict], path) -> list[dict]:
    """Decide a random third of ``conflicts`` at a random position, half of them written as the value's JSON,
    into a decision file at ``path``; the decisions as the model takes them (the conflict's own value)."""
    rng = random.Random(seed)
    chosen = rng.sample(conflicts, max(1, len(conflicts) // 3)) if conflicts else []
    decided = []
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(decisions.HEADER)
        for conflict in chosen:
            position = rng.randint(1, len(conflict["values"]))
            value = conflict["values"][position - 1]
            # a whole number is a position: a number value is chosen by its position
            by_position = rng.random() < 0.5 or spec_model.is_number(value)
            cell = str(position) if by_position else legacy_generator.to_json(value)
            writer.writerow(
                [conflict["user_id"], conflict["context_type"] or "", conflict["field"], "", "", cell, "random"]
            )
            decided.append({key: conflict[key] for key in ("user_id", "context_type", "field")} | {"value": value})
    return decided


@pytest.mark.parametrize(("seed", "n_users", "batches"), SEEDS)
def test_dry_run_matches_the_model(seed, n_users, batches, database, settings, tmp_path):
    generated_settings = dataclasses.replace(settings, legacy_schema=GENERATED_SCHEMA)
    rows = legacy_generator.generate(seed, n_users)
    with psycopg.connect(**database.kwargs()) as pg:
        legacy_generator.load(pg, GENERATED_SCHEMA, rows)
        for schema in (settings.dry_run_schema, settings.meta_schema):  # and no decision of an earlier seed
            pg.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(schema)))
        pg.commit()  # no stale table from an earlier seed can pass for this one

    dry_run.dry_run(generated_settings, database, batches=batches)

    expected = model_of(rows)
    with psycopg.connect(**database.kwargs()) as pg:
        actual, problems = compare(pg, settings.dry_run_schema, expected)

    # §5 accounting: keys seen = keys mapped (model) + unmapped rows with a key (SQL, and the model's own)
    accounting = spec_model.key_accounting(rows["User"], rows["ContextProfile"], rows["Profile"])
    sql_keyed = sum(1 for row in actual["migration_unmapped_fields"][1] if row["key"] is not None)
    if accounting["keys_seen"] != accounting["keys_mapped"] + sql_keyed:
        problems.append(
            f"accounting: keys seen {accounting['keys_seen']} != model mapped {accounting['keys_mapped']}"
            f" + SQL unmapped with a key {sql_keyed}"
        )
    assert accounting["keys_seen"] == accounting["keys_mapped"] + accounting["keys_unmapped"]
    assert not problems, f"seed {seed}:\n" + "\n".join(problems)

    # §11: reviewers decide random conflicts (through the real import), then the legacy data changes under
    # one decided user (all their legacy profiles gone: their decisions go stale), and the dry run again
    decision_file = tmp_path / "decisions.csv"
    decided = random_decisions(seed, expected["migration_conflicts"], decision_file)
    imported = decisions.import_file(generated_settings, database, decision_file, reviewer="differential")
    assert imported.decided == len(decided) > 0
    gone = decided[0]["user_id"]
    gone_contexts = {cp["id"] for cp in rows["ContextProfile"] if cp["userId"] == gone}
    rows = {**rows, "Profile": [p for p in rows["Profile"] if p["contextProfileId"] not in gone_contexts]}
    with psycopg.connect(**database.kwargs()) as pg:
        legacy_generator.load(pg, GENERATED_SCHEMA, rows)
        pg.commit()

    dry_run.dry_run(generated_settings, database, batches=batches)

    expected = model_of(rows, decided)
    summary = {row["metric"]: row["value"] for row in expected["migration_summary"]}
    assert summary["conflicts_decided"] > 0 and summary["decisions_stale"] > 0  # the test tests both
    with psycopg.connect(**database.kwargs()) as pg:
        _, problems = compare(pg, settings.dry_run_schema, expected)
    assert not problems, f"seed {seed}, with {len(decided)} decisions:\n" + "\n".join(problems)
